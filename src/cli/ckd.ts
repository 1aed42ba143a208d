#!/usr/bin/env node
// ckd: the daemon. Serves the containerd v1 gRPC API on a unix socket, backed by the event
// log (its own nats-server by default, or --nats URL) and RocksDB projections.
import { Command } from "commander";
import { setFlagsFromString } from "node:v8";
import { readFile } from "node:fs/promises";
import { rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parse as parseToml } from "smol-toml";
import { pino } from "pino";
import { Daemon, checkDisabledPlugins, type DaemonConfig } from "../api/daemon.js";
import { defaultAddress, defaultRoot } from "./defaults.js";
import { natsConnectOptions, natsFilesOf } from "../eventstore/log.js";
import { SystemdNotifier } from "./sd-notify.js";
import { keepInspectorShut } from "./inspector-signal.js";
import { stat } from "node:fs/promises";

interface Flags {
  root?: string;
  address?: string;
  nats?: string;
  natsTlsCa?: string;
  natsTlsCert?: string;
  natsTlsKey?: string;
  natsCreds?: string;
  natsNkey?: string;
  metricsAddress?: string;
  socketGroup?: string;
  stream?: string;
  replicas?: string;
  config?: string;
  logLevel?: string;
  gcExpiryInterval?: string;
  compactInterval?: string;
  compactKeep?: string;
  compactKeepBases?: string;
}

/** Keys a config file may set, all optional; flags win over the file. */
interface FileConfig {
  root?: string;
  address?: string;
  nats?: string;
  nats_tls_ca?: string;
  nats_tls_cert?: string;
  nats_tls_key?: string;
  nats_creds?: string;
  nats_nkey?: string;
  metrics_address?: string;
  socket_group?: string | number;
  stream?: string;
  replicas?: number;
  log_level?: string;
  stale_ingest_hours?: number;
  gc_expiry_interval_seconds?: number;
  /** As containerd's: full names of API plugins not to load. */
  disabled_plugins?: string[];
  /** At start, read the log in a worker thread when the projection is this many events behind. */
  catch_up_thread_events?: number;
  /** Content.Write ingests on disk bypass the page cache where the filesystem allows (default true). */
  content_write_through?: boolean;
  /** Run ck-replay compact every this many seconds (0: never, the default). */
  compact_interval_seconds?: number;
  /** Messages before the base a scheduled compaction keeps. */
  compact_keep?: number;
  /** A scheduled compaction cuts after the k-th newest base (1 or more). */
  compact_keep_bases?: number;
  opt_path?: string;
  nats_watchdog_seconds?: number;
}

async function loadConfigFile(path: string): Promise<FileConfig> {
  let raw: Record<string, unknown>;
  try {
    raw = parseToml(await readFile(path, "utf8")) as Record<string, unknown>;
  } catch (err) {
    // smol-toml's own words say where in the file, not which file.
    throw new Error(`config ${path}: ${(err as Error).message}`);
  }
  const known = new Set(["root", "address", "nats", "nats_tls_ca", "nats_tls_cert", "nats_tls_key", "nats_creds", "nats_nkey", "metrics_address", "socket_group", "stream", "replicas", "log_level", "stale_ingest_hours", "gc_expiry_interval_seconds", "disabled_plugins", "catch_up_thread_events", "content_write_through", "compact_interval_seconds", "compact_keep", "compact_keep_bases", "opt_path", "nats_watchdog_seconds"]);
  for (const k of Object.keys(raw)) {
    if (!known.has(k)) throw new Error(`config ${path}: unknown key "${k}" (known: ${[...known].join(", ")})`);
  }
  const kb = raw.compact_keep_bases;
  if (kb !== undefined && !(typeof kb === "number" && Number.isSafeInteger(kb) && kb >= 1)) {
    throw new Error(`config ${path}: compact_keep_bases must be a whole number >= 1, got ${JSON.stringify(kb)}`);
  }
  for (const k of ["catch_up_thread_events", "compact_interval_seconds", "compact_keep", "nats_watchdog_seconds"]) {
    const v = raw[k];
    if (v !== undefined && !(typeof v === "number" && Number.isSafeInteger(v) && v >= 0)) {
      throw new Error(`config ${path}: ${k} must be a whole number >= 0, got ${JSON.stringify(v)}`);
    }
  }
  const gcEvery = raw.gc_expiry_interval_seconds;
  if (gcEvery !== undefined && !(typeof gcEvery === "number" && Number.isFinite(gcEvery) && gcEvery >= 0)) {
    throw new Error(`config ${path}: gc_expiry_interval_seconds must be a number of seconds >= 0, got ${JSON.stringify(gcEvery)}`);
  }
  const stale = raw.stale_ingest_hours;
  if (stale !== undefined && !(typeof stale === "number" && Number.isFinite(stale) && stale > 0)) {
    throw new Error(`config ${path}: stale_ingest_hours must be a number of hours > 0, got ${JSON.stringify(stale)}`);
  }
  if (raw.replicas !== undefined) replicasOf(`config ${path}: replicas`, raw.replicas);
  if (typeof raw.log_level === "string") logLevelOf(`config ${path}: log_level`, raw.log_level);
  for (const k of ["root", "address", "stream", "log_level", "nats", "nats_tls_ca", "nats_tls_cert", "nats_tls_key", "nats_creds", "nats_nkey", "metrics_address", "opt_path"]) {
    if (raw[k] !== undefined && typeof raw[k] !== "string") throw new Error(`config ${path}: ${k} must be a string, got ${JSON.stringify(raw[k])}`);
  }
  const g = raw.socket_group;
  if (g !== undefined && !(typeof g === "string" || (typeof g === "number" && Number.isSafeInteger(g) && g >= 0))) {
    throw new Error(`config ${path}: socket_group must be a group name or number, got ${JSON.stringify(g)}`);
  }
  const w = raw.content_write_through;
  if (w !== undefined && typeof w !== "boolean") {
    throw new Error(`config ${path}: content_write_through must be true or false, got ${JSON.stringify(w)}`);
  }
  try {
    checkDisabledPlugins(raw.disabled_plugins);
  } catch (err) {
    throw new Error(`config ${path}: ${(err as Error).message}`);
  }
  return raw as FileConfig;
}

// A larger young generation: ckd allocates many short-lived request objects, and the
// default 16 MiB semi-space makes scavenges frequent enough to show in tail latencies.
setFlagsFromString("--max-semi-space-size=64");

function secondsToMs(v: string | number | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === "string" && v.trim() === "" ? NaN : Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--gc-expiry-interval (gc_expiry_interval_seconds) "${v}" must be a number of seconds >= 0`);
  return n * 1000;
}

/** pino's levels: another name would fail in pino's own words, naming no flag. */
const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];
function logLevelOf(what: string, v: string): string {
  if (!LOG_LEVELS.includes(v)) throw new Error(`${what} "${v}" must be one of ${LOG_LEVELS.join(", ")}`);
  return v;
}

/** A flag's whole number >= 0 (else the config file's), times `scale`; a bad flag is refused by name. */
/** A stream's replica count: JetStream takes 1 to 5. */
function replicasOf(what: string, v: unknown): number {
  const n = typeof v === "string" && /^\d+$/.test(v) ? Number(v) : v;
  if (!(typeof n === "number" && Number.isInteger(n) && n >= 1 && n <= 5)) throw new Error(`${what} must be a whole number from 1 to 5, got ${JSON.stringify(v)}`);
  return n;
}

function wholeNumber(flag: string, fromFlag: string | undefined, fromFile: number | undefined, scale: number): number | undefined {
  if (fromFlag === undefined) return fromFile === undefined ? undefined : fromFile * scale;
  if (!/^\d+$/.test(fromFlag) || !Number.isSafeInteger(Number(fromFlag))) throw new Error(`${flag} "${fromFlag}" must be a whole number >= 0`);
  return Number(fromFlag) * scale;
}

/** Files holding a secret (a NATS password in the config file, a key) that others may read. */
async function exposedSecrets(config: DaemonConfig, configPath: string | undefined, natsInFile: string | undefined): Promise<{ file: string; holds: string }[]> {
  const candidates: { file: string | undefined; holds: string }[] = [
    { file: config.natsFiles?.credsFile, holds: "the NATS credentials file holds a key" },
    { file: config.natsFiles?.nkeyFile, holds: "the NKEY seed file holds a key" },
    { file: config.natsFiles?.keyFile, holds: "the TLS key file holds a key" },
  ];
  if (configPath && natsInFile) {
    let withSecret = false;
    try {
      const t = natsConnectOptions(natsInFile);
      withSecret = t.pass !== undefined || t.token !== undefined;
    } catch {
      // refused by ckd's start, naming it
    }
    if (withSecret) candidates.push({ file: configPath, holds: "the config file holds a NATS password or token" });
  }
  const out: { file: string; holds: string }[] = [];
  for (const c of candidates) {
    if (!c.file) continue;
    const mode = await stat(c.file).then((st) => st.mode, () => 0);
    if (mode & 0o004) out.push({ file: c.file, holds: c.holds });
  }
  return out;
}

async function main(): Promise<void> {
  // Before anything else: from its start, a SIGUSR1 would open Node's inspector (see there).
  let onUsr1 = (): unknown => process.stderr.write("ckd: SIGUSR1 ignored (no stack dump; Node's inspector stays shut)\n");
  keepInspectorShut(() => onUsr1());
  const program = new Command("ckd")
    .description("ck daemon: the containerd v1 API over an event-sourced store")
    .option("--root <dir>", "state directory (projections, managed nats-server store)")
    .option("--address <socket>", "unix socket to serve the API on")
    .option("--nats <url>", "use this NATS server (or cluster: URLs separated by commas; credentials as nats://user:password@host:port, best given in $CK_NATS or the config file, off the command line) instead of starting one")
    .option("--nats-tls-ca <file>", "CA certificate(s) (PEM) the NATS server's certificate must chain to")
    .option("--nats-tls-cert <file>", "client certificate (PEM) for a NATS server that verifies clients")
    .option("--nats-tls-key <file>", "the client certificate's key (PEM)")
    .option("--nats-creds <file>", "log in to NATS with a user's JWT credentials file (.creds)")
    .option("--nats-nkey <file>", "log in to NATS with a user NKEY seed read from this file")
    .option("--socket-group <group>", "group of the API socket (a name or number; mode 0660 lets its members in), as containerd's [grpc] gid")
    .option("--metrics-address <host:port>", "serve Prometheus metrics at http://HOST:PORT/v1/metrics (as containerd's [metrics] address)")
    .option("--stream <name>", "JetStream stream holding the log (default CK_EVENTS)")
    .option("--replicas <n>", "replicas for a stream ckd creates (3 on a cluster)")
    .option("--config <file>", "TOML file with the same options (root, address, nats, nats_tls_ca, nats_tls_cert, nats_tls_key, nats_creds, nats_nkey, metrics_address, socket_group, stream, replicas, log_level, compact_interval_seconds, compact_keep, compact_keep_bases) and stale_ingest_hours, gc_expiry_interval_seconds, disabled_plugins, catch_up_thread_events, content_write_through, opt_path and nats_watchdog_seconds")
    .option("--log-level <level>", "trace, debug, info (the default), warn, error, fatal or silent", undefined)
    .option("--gc-expiry-interval <seconds>", "how often leases are checked for expiry (default 60; 0 = off)")
    .option("--compact-interval <seconds>", "run ck-replay compact on this root every this many seconds (default 0: never; see README, Compaction)")
    .option("--compact-keep <n>", "messages before the base a scheduled compaction keeps (default 10000)")
    .option("--compact-keep-bases <k>", "a scheduled compaction cuts after the k-th newest base, keeping the history since it (default 1)")
    .version("0.1.0");
  program.parse();
  const flags = program.opts<Flags>();
  const file = flags.config ? await loadConfigFile(flags.config) : {};
  // Recorded in ckd.json for ck-replay: absolute, a config file's relative to the file.
  const pathFrom = (flag: string | undefined, fromFile: string | undefined) =>
    flag ? resolve(flag) : fromFile ? resolve(dirname(resolve(flags.config!)), fromFile) : undefined;
  // Absolute: the opt directory under it is exported to clients, and children resolve paths
  // from their own working directories.
  const root = pathFrom(flags.root, file.root) ?? defaultRoot();
  const config: DaemonConfig = {
    root,
    // As --nats: the flag, then the environment ($CK_ADDRESS, which ck reads too), then the file.
    // Absolute: a unix:// URI would read a relative one's first component as a host.
    address: resolve(flags.address ?? (process.env.CK_ADDRESS || undefined) ?? pathFrom(undefined, file.address) ?? defaultAddress(root)),
    // CK_NATS, or the config file (mode 0600), keep a password off the command line.
    natsUrl: flags.nats ?? (process.env.CK_NATS || undefined) ?? file.nats,
    natsFiles: natsFilesOf({
      caFile: pathFrom(flags.natsTlsCa, file.nats_tls_ca),
      certFile: pathFrom(flags.natsTlsCert, file.nats_tls_cert),
      keyFile: pathFrom(flags.natsTlsKey, file.nats_tls_key),
      credsFile: pathFrom(flags.natsCreds, file.nats_creds),
      nkeyFile: pathFrom(flags.natsNkey, file.nats_nkey),
    }),
    metricsAddress: flags.metricsAddress ?? file.metrics_address,
    socketGroup: flags.socketGroup ?? (file.socket_group !== undefined ? String(file.socket_group) : undefined),
    stream: flags.stream ?? file.stream,
    replicas: flags.replicas !== undefined ? replicasOf("--replicas", flags.replicas) : file.replicas,
    staleIngestMs: file.stale_ingest_hours !== undefined ? file.stale_ingest_hours * 3600_000 : undefined,
    gcExpiryIntervalMs: secondsToMs(flags.gcExpiryInterval ?? file.gc_expiry_interval_seconds),
    disabledPlugins: file.disabled_plugins,
    catchUpThreadEvents: file.catch_up_thread_events,
    contentWriteThrough: file.content_write_through,
    compactIntervalMs: wholeNumber("--compact-interval", flags.compactInterval, file.compact_interval_seconds, 1000),
    compactKeep: wholeNumber("--compact-keep", flags.compactKeep, file.compact_keep, 1),
    compactKeepBases: wholeNumber("--compact-keep-bases", flags.compactKeepBases, file.compact_keep_bases, 1),
    natsWatchdogMs: wholeNumber("nats_watchdog_seconds", undefined, file.nats_watchdog_seconds, 1000),
    optPath: file.opt_path === undefined || file.opt_path === "" ? file.opt_path : pathFrom(undefined, file.opt_path),
  };
  if (config.compactKeepBases === 0) throw new Error(`--compact-keep-bases must be 1 or more`);
  // A Node timer's longest wait: past it, setInterval fires every millisecond.
  if ((config.natsWatchdogMs ?? 0) > 2 ** 31 - 1) throw new Error(`nats_watchdog_seconds must be at most ${Math.floor((2 ** 31 - 1) / 1000)}`);
  const logger = pino({ level: flags.logLevel !== undefined ? logLevelOf("--log-level", flags.logLevel) : (file.log_level ?? "info") }, pino.destination(2));
  // Secrets other users can read: said at start (ckd still starts; the administrator decides).
  for (const { file: path, holds } of await exposedSecrets(config, flags.config, file.nats)) {
    logger.warn({ file: path }, `${holds}, and other users can read the file: chmod o-r it`);
  }
  // Read (and taken out of the environment, before anything is started) at once.
  const notifier = SystemdNotifier.fromEnv(logger);
  // Handled from the start: a catch-up can outlast a service manager's patience, and a signal
  // that killed ckd outright while starting would leave its nats-server running. Stopped
  // while starting, ckd exits at once (its exit hooks stop the server it started; what the
  // projection holds is as after a kill -9: consistent, caught up on the next start).
  let daemon: Daemon | undefined;
  // The API socket once it is in place: a stop before start() returns removes it too.
  let socket: string | undefined;
  config.onSocket = (path) => (socket = path);
  let signals = 0;
  const shutdown = (sig: string) => {
    signals++;
    if (signals > 1) process.exit(1);
    notifier?.stopping(`stopping (${sig})`);
    if (!daemon) {
      logger.info({ signal: sig }, "stopped while starting");
      if (socket) rmSync(socket, { force: true });
      process.exit(0);
    }
    logger.info({ signal: sig }, "shutting down");
    daemon.stop().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  // SIGHUP too: a terminal that closes under a ckd started from it would otherwise end it
  // outright (Node's default, as Go's for containerd), leaving its nats-server and socket.
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(sig, () => shutdown(sig));
  onUsr1 = () => logger.info({ signal: "SIGUSR1", memory: process.memoryUsage(), activeResources: process.getActiveResourcesInfo().length }, "signal ignored: ckd has no stack dump (containerd's SIGUSR1); Node's inspector stays shut");
  notifier?.starting("starting: opening the log and catching up with it");
  daemon = await Daemon.start(config, logger);
  notifier?.ready(`serving the containerd v1 API on ${config.address}`);
}

main().catch((err) => {
  process.stderr.write(`ckd: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
