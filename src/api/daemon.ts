// ckd's wiring: the event log (an existing NATS server or ckd's own managed one), the
// projection (resumed from its checkpoint, rebuilt when missing, damaged or from another
// log), the sequencer, and the gRPC services on a unix socket. Plugins are a list; each says
// what it is, and introspection reports what loaded.
import * as grpc from "@grpc/grpc-js";
import { randomUUID } from "node:crypto";
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Logger } from "pino";
import { EventLog, DEFAULT_STREAM, duplicateWindowProblem, checkNatsFiles, natsConnectOptions, redactNatsUrl, type NatsFiles } from "../eventstore/log.js";
import type { StreamInfo } from "@nats-io/jetstream";
import { validateStreamName } from "@nats-io/jetstream/internal";
import { CLIENT_URL_FILE, MANAGED_INBOX_PREFIX, NatsServerProcess } from "../eventstore/nats-server.js";
import { Metrics, METRICS_PATH } from "./metrics.js";
import { checkSocketAddress, makeDirs, makeDirsFor, makeSocketDir } from "./daemon-dirs.js";
import { checkSocketFree } from "./socket-in-use.js";
import { parseGroup } from "../cli/image-user.js";
import { isCorruption, isLockedByOther, messageIdentity, ProjectionDb, PROJECTION_FORMAT, type AppliedMessage } from "../projections/db.js";
import { CkError } from "../errdefs/errdefs.js";
import { optBinary } from "../runtime/proc.js";
import { JetStreamWatchdog } from "./jetstream-watchdog.js";
import { JetStreamApiError } from "@nats-io/jetstream";
import { Projector } from "../projections/projector.js";
import { isLogGapError } from "../projections/log-gaps.js";
import { loadBestBase } from "../projections/base.js";
import { BaseStore } from "../eventstore/base-store.js";
import { readInWorker } from "../eventstore/worker-reader.js";
import { Queries } from "../projections/queries.js";
import { Sequencer } from "../commands/sequencer.js";
import { EventSubscriptions } from "../emitter/subscriptions.js";
import { loadProtos, type Protos } from "../protos/protos.js";
import { namespacesService, imagesService, containersService } from "./metadata-services.js";
import { eventsService } from "./events-service.js";
import { Tasks } from "./tasks-service.js";
import { RuncRuntime } from "../runtime/runc.js";
import { runCommand, useTempMountDir } from "../snapshots/mount.js";
import { contentService } from "./content-service.js";
import { LocalContentStore } from "../content/local-store.js";
import type { ContentStore } from "../content/types.js";
import { healthService, introspectionService, versionService, CK_VERSION, type PluginInfo } from "./info-services.js";
import { V1_CONTAINER_METRICS, V2_CONTAINER_METRICS } from "./container-metrics.js";
import { CK_REVISION } from "../version.js";
import { isCgroupV1 } from "../runtime/cgroups-v1.js";
import { leasesService, gcService } from "./leases-service.js";
import { GcScheduler } from "./gc-scheduler.js";
import { CompactScheduler } from "./compact-scheduler.js";
import { NamespacedBlobs } from "../content/namespaced.js";
import { snapshotsService } from "./snapshots-service.js";
import { diffService } from "./diff-service.js";
import { fetchService } from "./fetch-service.js";
import { unpackService } from "./unpack-service.js";
import { SnapshotStore, type SnapshotterEntry } from "../snapshots/store.js";
import { NativeSnapshotter } from "../snapshots/native.js";
import { OverlaySnapshotter } from "../snapshots/overlay.js";

export interface DaemonConfig {
  root: string;
  /** Unix socket path. */
  address: string;
  /**
   * An existing NATS server or cluster (credentials as `nats://user:password@host`); without it
   * ckd runs its own nats-server, which asks its clients for a password (see NatsServerProcess).
   */
  natsUrl?: string;
  /** TLS, creds or NKEY files for the connection to natsUrl. */
  natsFiles?: NatsFiles;
  /** Serve Prometheus metrics at http://HOST:PORT/v1/metrics (containerd's `[metrics] address`). */
  metricsAddress?: string;
  /**
   * The API socket's group (a name from /etc/group or a number), as containerd's `[grpc] gid`:
   * its members may use the socket (mode 0660) without being root.
   */
  socketGroup?: string;
  /**
   * Told once the API socket is in place, before start() returns: what a start stopped after
   * that point must remove (ckd's SIGTERM while starting).
   */
  onSocket?: (path: string) => void;
  stream?: string;
  /** Stream replicas when ckd creates the stream (3 on a cluster for power-loss durability). */
  replicas?: number;
  /** Ingests idle this long are removed (default 24 h). */
  staleIngestMs?: number;
  /** How often leases are checked for expiry (default 60 s; 0 turns the check off). */
  gcExpiryIntervalMs?: number;
  /**
   * API plugins not to load, by full plugin name (`io.containerd.grpc.v1.diff`), as
   * containerd's `disabled_plugins`: the service is not served (clients get Unimplemented) and
   * introspection does not list it.
   */
  disabledPlugins?: string[];
  /**
   * A projection at least this many events behind its log at start catches up through a
   * worker thread (default BULK_CATCH_UP; 0: always).
   */
  catchUpThreadEvents?: number;
  /**
   * Content.Write ingests on disk write whole blocks past the page cache (O_DIRECT) where the
   * filesystem allows it (default true): large uploads go 1.6x faster here, and a layer
   * uploaded then unpacked (ctr pull, ck pull --client-fetch) is read back from disk.
   */
  contentWriteThrough?: boolean;
  /**
   * Every this often, `ck-replay compact --root <root>` in a child process (0 or absent: never;
   * see CompactScheduler).
   */
  compactIntervalMs?: number;
  /** Messages before the base each scheduled compaction keeps (default 10,000). */
  compactKeep?: number;
  /** Each scheduled compaction cuts after the k-th newest base (default 1). */
  compactKeepBases?: number;
  /**
   * containerd's opt directory (`ctr install` puts an image's bin/ there, and lib/ with
   * --libs): a runc or runtime binary named by name is looked up in its bin/ first. Default:
   * <root>/opt (containerd's is /opt/containerd; ck keeps what is its own under its root); ""
   * turns it off.
   */
  optPath?: string;
  /**
   * How often JetStream on ckd's own nats-server is asked whether it answers (default 10 s; 0:
   * never); three silent answers in a row while connected restart the server (JetStreamWatchdog).
   */
  natsWatchdogMs?: number;
}

/** Subject ends of the events after which a GC run may find something to collect (delete), or may soon (update). */
const REFERENCE_DELETES = [".images.delete", ".containers.delete", ".content.delete", ".leases.delete", ".snapshot.remove", ".namespaces.delete"];
const REFERENCE_UPDATES = [".images.update", ".containers.update", ".content.update"];

/** containerd's name for the opt plugin: disabled_plugins may name it (as opt_path = ""). */
export const OPT_PLUGIN = "io.containerd.internal.v1.opt";

/** The opt directory a config asks for ("" when off). */
export function optPathOf(config: Pick<DaemonConfig, "optPath" | "root" | "disabledPlugins">): string {
  if (Array.isArray(config.disabledPlugins) && config.disabledPlugins.includes(OPT_PLUGIN)) return "";
  return config.optPath ?? join(config.root, "opt");
}

/**
 * containerd's opt plugin, narrowed: makes <path>/bin and <path>/lib (0711) and returns bin/,
 * where the task runtime looks up runc (and a runtime's binary) by name first. containerd puts
 * them first in its own PATH and LD_LIBRARY_PATH; ckd runs other programs by name (mount, cp,
 * chattr, nats-server, its keepers' shells), which an installed image must not replace, so it
 * leaves its environment alone. Returns why the directory is unsafe to run from, if it is
 * (writable by others than ckd's user).
 */
export async function setUpOpt(path: string): Promise<{ bin: string; unsafe?: string }> {
  const bin = join(path, "bin");
  for (const dir of [bin, join(path, "lib")]) {
    try {
      await makeDirs(dir, 0o711);
    } catch (err) {
      throw new Error(`opt_path ${path}: cannot make ${dir}: ${(err as Error).message}`);
    }
  }
  for (const dir of [path, bin]) {
    const st = await stat(dir);
    if (st.mode & 0o022 || (process.getuid && st.uid !== process.getuid())) {
      return { bin, unsafe: `${dir} is writable by others than ckd's user (mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}): a runc placed there would run as ckd` };
    }
  }
  return { bin };
}

/** The API plugins ckd can run without, by full plugin name, and the gRPC service each serves. */
export const SERVICE_PLUGINS: ReadonlyMap<string, string> = new Map([
  ["io.containerd.grpc.v1.namespaces", "containerd.services.namespaces.v1.Namespaces"],
  ["io.containerd.grpc.v1.images", "containerd.services.images.v1.Images"],
  ["io.containerd.grpc.v1.containers", "containerd.services.containers.v1.Containers"],
  ["io.containerd.grpc.v1.events", "containerd.services.events.v1.Events"],
  ["io.containerd.grpc.v1.content", "containerd.services.content.v1.Content"],
  ["io.containerd.grpc.v1.leases", "containerd.services.leases.v1.Leases"],
  ["io.containerd.grpc.v1.ck.gc", "ck.services.gc.v1.GC"],
  ["io.containerd.grpc.v1.snapshots", "containerd.services.snapshots.v1.Snapshots"],
  ["io.containerd.grpc.v1.diff", "containerd.services.diff.v1.Diff"],
  ["io.containerd.grpc.v1.ck.unpack", "ck.services.unpack.v1.Unpack"],
  ["io.containerd.grpc.v1.ck.fetch", "ck.services.fetch.v1.Fetch"],
  ["io.containerd.grpc.v1.tasks", "containerd.services.tasks.v1.Tasks"],
  ["io.containerd.grpc.v1.version", "containerd.services.version.v1.Version"],
  ["io.containerd.grpc.v1.introspection", "containerd.services.introspection.v1.Introspection"],
]);

/**
 * Checks a `disabled_plugins` list: each entry must name one of SERVICE_PLUGINS (the log, the
 * projection, the content store and the snapshotters are what everything else stands on).
 */
export function checkDisabledPlugins(list: unknown): string[] {
  if (list === undefined) return [];
  if (!Array.isArray(list) || list.some((p) => typeof p !== "string")) {
    throw new Error(`disabled_plugins must be a list of plugin names, got ${JSON.stringify(list)}`);
  }
  for (const p of list as string[]) {
    if (!SERVICE_PLUGINS.has(p) && p !== OPT_PLUGIN) {
      throw new Error(`disabled_plugins: "${p}" is not a plugin ckd can run without (these can be disabled: ${[...SERVICE_PLUGINS.keys(), OPT_PLUGIN].join(", ")})`);
    }
  }
  return list as string[];
}

/** What ckd records under its root so tools (ck-replay) find the log without flags. */
export interface RootRecord {
  /** Without its password or token (`***` in their place). */
  natsUrl: string;
  natsFiles?: NatsFiles;
  stream: string;
  managed: boolean;
  natsStoreDir?: string;
  pid: number;
  startedAt: string;
}

export const ROOT_RECORD = "ckd.json";

/**
 * A projection at least this many events behind its log at start catches up through a worker
 * thread (NATS there, folding here); below it, starting the thread costs more than it saves.
 * Measured 2026-12-03 (small events, alternating runs): the two ways equal at 5,000 events
 * behind (~260 ms); at 2,000 the thread ~50 ms slower, at 19,000 ~100 ms faster than the
 * main thread's byte-bounded catch-up of then (nats.js's pulls of 100 messages). The main
 * thread's reader now pulls 4,096 at a time (log-consumer.ts), faster at 19,000 in each of 14
 * alternating pairs; at 5,000 the two ways were still even (docs/performance.md).
 */
export const BULK_CATCH_UP = 5_000;

export function rootPaths(root: string) {
  return {
    record: join(root, ROOT_RECORD),
    uuid: join(root, "uuid"),
    meta: join(root, "meta"),
    natsStore: join(root, "nats"),
    natsLog: join(root, "nats-server.log"),
    content: join(root, "content"),
    snapshots: join(root, "snapshots"),
    tmpmounts: join(root, "tmpmounts"),
  };
}

export async function readRootRecord(root: string): Promise<RootRecord | undefined> {
  try {
    return JSON.parse(await readFile(rootPaths(root).record, "utf8")) as RootRecord;
  } catch {
    return undefined;
  }
}

/**
 * max_payload of ckd's own nats-server: a record travels whole in its event, and containerd
 * takes requests of up to 16 MiB (its gRPC limit, and ckd's), so a container whose spec is
 * over NATS's default 1 MiB must fit too; the rest is room for the envelope and headers.
 */
export const MANAGED_MAX_PAYLOAD = (16 << 20) + (1 << 20);

/**
 * Which log message to look up to confirm a projection's checkpoint (its applied sequence),
 * or undefined when none can be: nothing applied, no identity recorded with it (a projection
 * written before it was, or loaded from a base, until its next apply), or the message was
 * compacted away (before the log's first sequence).
 */
export function checkpointToConfirm(applied: number, recorded: AppliedMessage | undefined, logFirstSeq: number): number | undefined {
  if (applied === 0 || recorded === undefined || recorded.seq !== applied) return undefined;
  if (applied < logFirstSeq) return undefined;
  return applied;
}

/**
 * Why the projection is not of this log any more, given the identity of the log's message at
 * its applied sequence (null: the log has none there, though its first sequence says it
 * should), or undefined when it is the message the projection applied. A log that lost its
 * tail (a power loss on a single nats-server, a stream restored from a backup) and was written
 * past it again passes every check on sequences alone; the projection would keep the lost
 * events and miss the new ones.
 */
export function checkpointMismatch(recorded: AppliedMessage, logId: string | null): string | undefined {
  if (logId === null) {
    return `the log has no message at the projection's applied sequence ${recorded.seq} (it applied ${recorded.id}): the log lost messages the projection holds`;
  }
  if (logId !== recorded.id) {
    return `the log's message at the projection's applied sequence ${recorded.seq} is ${logId}, not ${recorded.id} it applied: the log lost messages the projection holds and was written past them`;
  }
  return undefined;
}

/** The identity of the log's message at `seq` (messageIdentity), or null when it has none. */
async function logMessageIdentity(log: EventLog, seq: number): Promise<string | null> {
  const m = await log.jsm.streams.getMessage(log.stream, { seq });
  if (!m) return null;
  // nats.js answers "" for a header that is not there.
  return messageIdentity({ data: m.data, headers: {}, header: (name) => m.header?.get(name) || undefined });
}

/**
 * Opens the projection for a log: resumes from its checkpoint when it was built from this
 * very stream, otherwise (missing, unreadable, damaged, other log, ahead of the log or past a
 * message the log no longer has) starts over. A damaged projection (RocksDB finds corruption
 * opening it, a block fails its checksum, or ckd marked it when a read met corruption) is set
 * aside as `<location>.damaged`, one that holds what the log lost as `<location>.diverged`;
 * the others (unreadable for another reason, another log, another format) are removed.
 */
export async function openProjection(
  location: string,
  log: EventLog,
  logger?: Pick<Logger, "info" | "warn">,
  streamInfo?: StreamInfo,
): Promise<{ db: ProjectionDb; rebuilt: boolean; reason?: string }> {
  const info = streamInfo ?? (await log.info());
  const identity = { stream: log.stream, created: String(info.created) };
  let db: ProjectionDb | undefined;
  let reason: string | undefined;
  /** Where a projection that is not merely stale goes instead of being removed. */
  let aside: "damaged" | "diverged" | undefined;
  // The projection holds what the log holds (container specs and their environment): root's
  // only, as the log's own store is. RocksDB makes its files 0644; the directory keeps others
  // out (tightened in roots made before, and made so again after a rebuild removed it).
  const privateDir = async (dir = location) => {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
  };
  try {
    await privateDir();
    db = await ProjectionDb.open(location);
    const have = await db.logIdentity();
    const marked = ProjectionDb.damageMark(location);
    if (!have && db.appliedSeq > 0) reason = "projection has no log identity";
    else if (have && (have.stream !== identity.stream || have.created !== identity.created)) {
      reason = `projection was built from another log (${have.stream} created ${have.created})`;
    } else if (have && (have.format ?? 1) !== PROJECTION_FORMAT) {
      reason = `projection was built in format ${have.format ?? 1}, this ckd writes format ${PROJECTION_FORMAT}`;
    } else if (marked !== undefined) {
      reason = `projection damaged (marked by an earlier ckd: ${marked})`;
      aside = "damaged";
    } else if (db.appliedSeq > info.state.last_seq) {
      reason = `projection is ahead of the log (${db.appliedSeq} > ${info.state.last_seq})`;
      aside = "diverged";
    }
  } catch (err) {
    // In use by another process (a second ckd on this root, ck-replay verify): not damaged,
    // and no reason to remove it.
    if (isLockedByOther(err)) {
      throw new CkError("FailedPrecondition", `projection ${location} is in use by another process (another ckd on this root, or ck-replay on it): ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}: failed precondition`);
    }
    // The binding wraps an open's failure ("Database is not open"): RocksDB's words are the cause.
    const cause = (err as Error).cause instanceof Error ? `: ${((err as Error).cause as Error).message}` : "";
    // Damaged bytes are kept for a look; a projection RocksDB cannot open for another reason
    // (a file missing, no space to open it in) goes, as it always did: keeping it could hold
    // the space its rebuild needs.
    const damaged = isCorruption(err);
    reason = `projection ${damaged ? "damaged" : "unreadable"}: ${(err as Error).message}${cause}`;
    if (damaged) aside = "damaged";
  }
  // The checkpoint's message, looked up in the log: the same one, or the log changed under it.
  const recorded = reason === undefined ? db?.appliedMessage : undefined;
  const confirm = db ? checkpointToConfirm(db.appliedSeq, recorded, info.state.first_seq) : undefined;
  if (confirm !== undefined) {
    let mismatch;
    try {
      mismatch = checkpointMismatch(recorded!, await logMessageIdentity(log, confirm));
    } catch (err) {
      await db?.close().catch(() => undefined);
      throw new Error(`looking up the projection's last applied message (sequence ${confirm}) in the log: ${(err as Error).message}`);
    }
    if (mismatch) {
      reason = `projection is not of this log any more: ${mismatch}`;
      aside = "diverged";
    }
  }
  /** Sets the projection aside (closed), or removes it; says where it went. */
  const clear = async (): Promise<string | undefined> => {
    await db?.close().catch(() => undefined);
    if (aside && existsSync(location)) {
      const to = await ProjectionDb.setAside(location, aside);
      logger?.warn({ reason, movedTo: to }, `the ${aside} projection is kept aside (remove it when no longer wanted)`);
      return to;
    }
    await ProjectionDb.destroy(location);
    return undefined;
  };
  // The log's history before its first message was compacted away: a projection that needs
  // any of it starts from a base, loaded beside it and swapped in only when whole, so a ckd
  // that cannot start from one (none of its format, say) leaves the projection as it found it.
  const first = info.state.first_seq;
  if (first > 1 && (reason !== undefined || !db || first > db.appliedSeq + 1)) {
    await db?.close().catch(() => undefined);
    // Set aside first (loadBase removes what is at `location`), and put back if no base loads.
    const setAside = reason !== undefined && aside ? await clear() : undefined;
    let loaded;
    try {
      // Not past the log's end: a base that outlived the log's last messages (a power loss on
      // a single server, which syncs the two streams on timers of their own) would be ahead of it.
      loaded = await loadBestBase(location, new BaseStore(log), { firstSeq: first, identity, untilSeq: info.state.last_seq }, identity, privateDir);
    } catch (err) {
      if (setAside) await rename(setAside, location).catch(() => undefined);
      throw new Error(`the projection (${reason ?? `at sequence ${db?.appliedSeq ?? 0}`}) cannot catch up with the log: ${(err as Error).message}`);
    }
    db = loaded.db;
    logger?.warn(
      {
        reason,
        logFirstSeq: first,
        base: loaded.base.seq,
        baseTaken: loaded.base.taken,
        ...(loaded.base.format !== PROJECTION_FORMAT ? { migratedFromFormat: loaded.base.format } : {}),
        passedOver: loaded.passedOver.length ? loaded.passedOver : undefined,
      },
      "loading the projection from a base: the log's history before it was compacted",
    );
    reason ??= `history before sequence ${first} compacted: loaded the base at sequence ${loaded.base.seq}`;
  } else if (reason || !db) {
    logger?.warn({ reason }, "rebuilding projection from sequence 1");
    await clear();
    await privateDir();
    db = await ProjectionDb.open(location);
  }
  if (!db) throw new Error("projection not opened"); // each branch above opens one
  await db.setLogIdentity(identity);
  return { db, rebuilt: reason !== undefined, reason };
}

/**
 * What ckd logs when its projection stops for good (it then exits 70). Most such failures a
 * restart gets past (it resumes from the checkpoint, or loads a base when the history was
 * cut); messages deleted from inside the log it does not, and the report says so, with the
 * operator's way on.
 */
export function projectionFailureReport(err: Error, root: string, meta: string): { msg: string; fields: Record<string, unknown> } {
  if (!isLogGapError(err)) return { msg: "projection failed; exiting", fields: { err } };
  return {
    msg: "the event log lost messages from inside it: the projection cannot go on, and a restart will not get past this",
    fields: {
      err,
      stream: err.stream,
      deleted: { from: err.gap.from, to: err.gap.to },
      applied: err.applied,
      fix: `stop ckd (and its restarts), then either restore the stream from a backup that still holds them, or accept the loss: ck-replay rebuild --root ${root} --out ${meta} --allow-gaps (a projection folded across the gap, without what the deleted messages did), then start ckd`,
    },
  };
}

export function durabilityOf(serverVersion: string, replicas: number): string {
  if (replicas >= 3) return `replicated (R${replicas}): acknowledged writes survive the loss of one server`;
  return `single nats-server ${serverVersion}: acknowledged writes survive kill -9 of ckd or nats-server; a power loss can lose writes not yet synced (JetStream syncs every 2 min)`;
}

export class Daemon {
  private server: grpc.Server | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping: Promise<unknown> | undefined;
  private stopping: Promise<void> | undefined;
  /** Told when the stop begins (health watchers say NOT_SERVING). */
  private readonly onStopping: Array<() => void> = [];
  private stopBegun = false;
  /** The API socket as bound (device and inode): stop removes it only while it is still this one. */
  private boundSocket: { dev: number; ino: number } | undefined;
  private gc: GcScheduler | undefined;
  private tasks: Tasks | undefined;
  private compaction: CompactScheduler | undefined;
  private watchdog: JetStreamWatchdog | undefined;

  private constructor(
    readonly config: DaemonConfig,
    readonly logger: Logger,
    readonly protos: Protos,
    readonly log: EventLog,
    readonly db: ProjectionDb,
    readonly projector: Projector,
    readonly sequencer: Sequencer,
    readonly uuid: string,
    readonly plugins: PluginInfo[],
    private readonly nats: NatsServerProcess | undefined,
    readonly content: ContentStore,
    private readonly snapshotters: ReadonlyMap<string, SnapshotterEntry>,
    private readonly metrics: Metrics | undefined,
  ) {}

  static async start(config: DaemonConfig, logger: Logger): Promise<Daemon> {
    const disabled = new Set(checkDisabledPlugins(config.disabledPlugins));
    // Checked before the root is touched: a bad setting writes nothing.
    if (config.natsFiles && !config.natsUrl) {
      throw new Error("--nats-tls-*, --nats-creds and --nats-nkey (nats_tls_*, nats_creds, nats_nkey) are for a NATS server given with --nats; ckd's own nats-server listens on loopback and asks for its own password");
    }
    if (config.natsUrl !== undefined) {
      try {
        natsConnectOptions(config.natsUrl);
      } catch (err) {
        throw new Error(`--nats (nats): ${(err as Error).message}`);
      }
      if (config.natsFiles) await checkNatsFiles(config.natsFiles, config.natsUrl);
    }
    const rootStat = await stat(config.root).catch(() => undefined);
    if (rootStat && !rootStat.isDirectory()) throw new Error(`--root (root) ${config.root}: not a directory`);
    if (!config.natsUrl && (config.replicas ?? 1) > 1) {
      throw new Error(`--replicas (replicas) ${config.replicas}: ckd's own nats-server is one server, which keeps one replica; more need a JetStream cluster given with --nats`);
    }
    if (config.stream !== undefined) {
      try {
        validateStreamName(config.stream);
      } catch (err) {
        throw new Error(`--stream (stream) ${JSON.stringify(config.stream)}: ${(err as Error).message}`);
      }
    }
    const socketGid = config.socketGroup !== undefined ? await groupId(config.socketGroup) : undefined;
    await checkSocketAddress(config.address);
    // Another ckd serving on the socket: refused now, and again as it is bound (a start racing).
    await checkSocketFree(config.address);
    // Bound now, before the root is touched: a taken port fails the start, writing nothing.
    // An empty address is off, as containerd's default.
    const metrics = config.metricsAddress ? await Metrics.listen(config.metricsAddress) : undefined;
    try {
      return await Daemon.startWith(config, logger, disabled, metrics, socketGid);
    } catch (err) {
      await metrics?.close();
      throw err;
    }
  }

  /**
   * startWith, undoing what it had started when it fails part way (a managed nats-server left
   * running, supervised, would outlive the start that failed; a projection left open would keep
   * its lock).
   */
  private static async startWith(config: DaemonConfig, logger: Logger, disabled: Set<string>, metrics: Metrics | undefined, socketGid: number | undefined): Promise<Daemon> {
    const undo: (() => Promise<unknown>)[] = [];
    try {
      return await Daemon.startUndoably(config, logger, disabled, metrics, socketGid, undo);
    } catch (err) {
      for (const u of undo.reverse()) await u().catch((e: unknown) => logger.warn({ err: e }, "undoing a failed start"));
      throw err;
    }
  }

  private static async startUndoably(
    config: DaemonConfig,
    logger: Logger,
    disabled: Set<string>,
    metrics: Metrics | undefined,
    socketGid: number | undefined,
    undo: (() => Promise<unknown>)[],
  ): Promise<Daemon> {
    const paths = rootPaths(config.root);
    // The uuid is written once the log answers: a server that refuses leaves the root as it was.
    const { uuid, isNew: newUuid } = await readUuid(paths.uuid);
    const protos = loadProtos();
    const stream = config.stream ?? DEFAULT_STREAM;

    let nats: NatsServerProcess | undefined;
    let natsUrl = config.natsUrl;
    if (!natsUrl) {
      await makeDirsFor("--root (root)", config.root, config.root, 0o711);
      nats = await NatsServerProcess.start({
        storeDir: paths.natsStore,
        logFile: paths.natsLog,
        supervise: true,
        onExit: (code, signal) => logger.warn({ code, signal }, "managed nats-server exited; restarting"),
        onOrphansStopped: (pids) => logger.warn({ pids }, "stopped the nats-server an earlier ckd left running on this root (it ended without stopping it: kill -9?); starting a fresh one on the same store"),
        onRestart: () => logger.info("managed nats-server restarted"),
        auth: true,
        maxPayload: MANAGED_MAX_PAYLOAD,
      });
      const started = nats;
      undo.push(() => started.stop());
      natsUrl = nats.url;
    }
    // On ckd's own server the read-only user may subscribe to _INBOX.>: ck's replies go elsewhere.
    const inboxPrefix = nats ? MANAGED_INBOX_PREFIX : undefined;
    const shownUrl = redactNatsUrl(natsUrl);
    const log = await EventLog.open({
      url: natsUrl,
      files: config.natsFiles,
      inboxPrefix,
      stream,
      replicas: config.replicas,
      name: `ckd ${uuid}`,
      onWait: (err) => logger.warn({ nats: shownUrl, err: err.message }, "waiting for JetStream to answer"),
      onReaderEvent: (e) => {
        if (e.kind === "retrying") logger.warn({ err: e.err.message, attempt: e.attempt }, "log reader: creating its consumer again");
        else if (e.kind === "replacing") logger.warn({ fromSeq: e.fromSeq, why: e.why }, "log reader: replacing its consumer");
        else logger.info({ fromSeq: e.fromSeq, ms: e.ms }, "log reader: consumer replaced");
      },
    });
    undo.push(() => log.close());
    const streamInfo = await log.info();
    const shortWindow = duplicateWindowProblem(streamInfo);
    if (shortWindow) throw new Error(shortWindow);
    // (For an external server, the root is made only now that the log answered.)
    await makeDirsFor("--root (root)", config.root, config.root, 0o711);
    if (newUuid) {
      // Blob records name their host by this uuid: a root that holds blobs but no uuid was
      // restored or copied without it, and this ckd will not find what it committed before.
      const blobs = await readdir(join(paths.content, "blobs", "sha256")).catch(() => []);
      if (blobs.length > 0) {
        logger.warn({ uuid, blobs: blobs.length, file: paths.uuid }, "the root holds blobs but had no uuid file: a new one names this ckd, and content recorded under the old one is not found here; if the root was restored, stop ckd and restore its uuid file");
      }
      await writeFile(paths.uuid, uuid + "\n");
    }
    const replicas = streamInfo.config.num_replicas ?? 1;
    const durability = durabilityOf(log.serverVersion, replicas);
    // Where NATS clients find the managed server's password (the URL to connect with).
    const credentials = nats ? join(paths.natsStore, CLIENT_URL_FILE) : undefined;
    logger.info({ nats: shownUrl, managed: !!nats, credentials, stream, durability }, "event log ready");

    const record: RootRecord = {
      // Never a password: the file is readable by more than root. ck-replay takes a managed
      // server's credentials from its store (NatsServerProcess.clientUrlOf).
      natsUrl: shownUrl,
      natsFiles: config.natsFiles,
      stream,
      managed: !!nats,
      natsStoreDir: nats ? paths.natsStore : undefined,
      pid: process.pid,
      startedAt: new Date().toISOString(),
    };
    const t0 = performance.now();
    const { db, rebuilt } = await openProjection(paths.meta, log, logger, streamInfo);
    undo.push(() => db.close());
    // Damage met while running (a List, a Get, a fold, or a write once a compaction met it):
    // the same bytes would fail every time, so the projection is marked for the next start
    // to set aside and rebuild, and ckd stops as for a projection that cannot advance.
    db.onCorruption = (err) => {
      try {
        ProjectionDb.markDamaged(paths.meta, err.message);
      } catch (markErr) {
        logger.error({ err: markErr }, "marking the projection damaged failed (the next start reads every block again once serving)");
      }
      logger.fatal({ err }, "projection damaged; exiting: the next start sets it aside and rebuilds it");
      process.exit(70);
    };
    const openMs = Math.round(performance.now() - t0);
    // Written once the projection is ours: a second ckd on this root (refused at its open)
    // does not point ck-replay at its log instead.
    await writeFile(paths.record, JSON.stringify(record, null, 2) + "\n");
    const projector = new Projector(db, log, protos, {
      // Far behind the log (a rebuild, a long stop): NATS in a worker thread until caught up.
      bulk: {
        threshold: config.catchUpThreadEvents ?? BULK_CATCH_UP,
        source: (fromSeq, signal) => readInWorker({ url: log.url, files: log.files, inboxPrefix: log.inboxPrefix, stream: log.stream, fromSeq, signal, name: "ckd-catch-up" }),
      },
      // Said, not hidden: the catch-up goes on in this thread, slower.
      onBulkFailed: (err) => logger.warn({ err: err.message, applied: db.appliedSeq }, "log reader thread failed; catching up in the main thread from the checkpoint"),
      // A projection that cannot advance would serve stale reads forever: stop, so that a
      // supervisor restarts ckd, which resumes (or rebuilds) from the checkpoint; or, for
      // messages deleted from inside the log, says what a restart cannot do.
      onError: (err) => {
        const r = projectionFailureReport(err, config.root, paths.meta);
        logger.fatal(r.fields, r.msg);
        process.exit(70);
      },
    });
    const from = db.appliedSeq;
    projector.start();
    undo.push(() => projector.stop());
    await projector.catchUp();
    const catchUpMs = Math.round(performance.now() - t0) - openMs;
    logger.info({ resumedFrom: from, applied: projector.appliedSeq, rebuilt, openMs, catchUpMs, catchUpThread: projector.bulkBatches > 0 }, "projection caught up");

    const sequencer = new Sequencer(log, projector, protos);
    // Temporary mounts (Diff, Apply) under the root: what a killed ckd left mounted goes now.
    const swept = await useTempMountDir(paths.tmpmounts);
    if (swept.removed > 0) logger.info({ dir: paths.tmpmounts, removed: swept.removed }, "temporary mounts left by an earlier ckd removed");
    if (swept.failed.length > 0) logger.warn({ failed: swept.failed }, "temporary mounts left by an earlier ckd could not be removed");
    const content = await LocalContentStore.open(paths.content, { directWrites: config.contentWriteThrough !== false });
    // Whether tasks can run here, found out while the snapshotters load.
    // What `ctr install` put in opt/bin comes first for runc.
    const optPath = optPathOf(config);
    const opt = optPath ? await setUpOpt(optPath) : undefined;
    if (opt?.unsafe) logger.warn({ opt: optPath, reason: opt.unsafe }, "opt directory");
    const runcChecked = runCommand(optBinary("runc", opt?.bin), ["--version"]).then(
      () => undefined,
      (err: Error) => `runc is not usable: ${err.message}`,
    );
    // Snapshotters load as plugins: one that cannot run here is listed with the reason and skipped.
    const snapshotters = new Map<string, SnapshotterEntry>();
    const placement = new Map<string, string>();
    for (const sn of [new OverlaySnapshotter(join(paths.snapshots, "overlayfs")), new NativeSnapshotter(join(paths.snapshots, "native"))]) {
      const a = await sn.available();
      snapshotters.set(sn.name, a.ok ? { sn } : { sn, unavailable: a.reason ?? "not available" });
      if (!a.ok) {
        logger.warn({ snapshotter: sn.name, reason: a.reason }, "snapshotter skipped");
        continue;
      }
      const unspread = await sn.prepareStorage();
      placement.set(sn.name, unspread ? `packed (${unspread})` : "spread (chattr +T)");
      if (unspread) logger.info({ snapshotter: sn.name, reason: unspread }, "snapshot directories are not spread over block groups");
    }
    const runcProblem = await runcChecked;
    if (runcProblem) logger.warn({ reason: runcProblem }, "tasks cannot run");
    const allPlugins: PluginInfo[] = [
      { type: "io.containerd.event.v1", id: "jetstream", exports: { stream, durability } },
      ...(optPath ? [{ type: "io.containerd.internal.v1", id: "opt", exports: { path: optPath } }] : []),
      { type: "io.containerd.metadata.v1", id: "rocksdb", requires: ["io.containerd.event.v1"] },
      { type: "io.containerd.content.v1", id: "content", exports: { root: paths.content } },
      { type: "io.containerd.gc.v1", id: "scheduler", requires: ["io.containerd.metadata.v1"], exports: { expiry_interval_ms: String(config.gcExpiryIntervalMs ?? 60_000) } },
      ...["namespaces", "images", "containers", "content", "leases", "events", "version", "introspection"].map((id) => ({
        type: "io.containerd.grpc.v1",
        id,
        requires: ["io.containerd.metadata.v1"],
      })),
      // Tasks on runc without a shim process: started tasks outlive ckd under keepers.
      { type: "io.containerd.runtime.v2", id: "task", exports: { runtime: "runc", shim: "none" }, ...(runcProblem ? { initError: runcProblem } : {}) },
      { type: "io.containerd.grpc.v1", id: "tasks", requires: ["io.containerd.runtime.v2", "io.containerd.metadata.v1"] },
      { type: "io.containerd.grpc.v1", id: "ck.gc", requires: ["io.containerd.gc.v1"] },
      // grpc.health.v1, listed under containerd's name for it (always served).
      { type: "io.containerd.grpc.v1", id: "healthcheck" },
      ...[...snapshotters.values()].map((e): PluginInfo => ({
        type: "io.containerd.snapshotter.v1",
        id: e.sn.name,
        exports: { root: e.sn.root, ...(placement.has(e.sn.name) ? { placement: placement.get(e.sn.name)! } : {}) },
        // containerd's snapshotters skip themselves with plugin.ErrSkipPlugin ("…: skip plugin"),
        // which ctr plugins ls shows as STATUS skip.
        ...(e.unavailable ? { initError: `${e.unavailable}: skip plugin` } : {}),
      })),
      { type: "io.containerd.differ.v1", id: "walking", requires: ["io.containerd.content.v1"] },
      { type: "io.containerd.grpc.v1", id: "snapshots", requires: ["io.containerd.snapshotter.v1", "io.containerd.metadata.v1"] },
      { type: "io.containerd.grpc.v1", id: "diff", requires: ["io.containerd.differ.v1"] },
      // ckd's own unpack, whose verified snapshots are shared across namespaces.
      { type: "io.containerd.grpc.v1", id: "ck.unpack", requires: ["io.containerd.snapshotter.v1", "io.containerd.differ.v1", "io.containerd.content.v1"] },
      // ckd's own download of registry blobs into the content store.
      { type: "io.containerd.grpc.v1", id: "ck.fetch", requires: ["io.containerd.content.v1"] },
    ];
    const plugins = allPlugins.filter((p) => !disabled.has(`${p.type}.${p.id}`));
    if (disabled.size) logger.info({ disabled: [...disabled] }, "plugins disabled by configuration");
    const d = new Daemon(config, logger, protos, log, db, projector, sequencer, uuid, plugins, nats, content, snapshotters, metrics);
    // From here the daemon's own stop undoes everything, what serve started included.
    undo.splice(0, undo.length, () => d.stop());
    await d.serve(socketGid);
    return d;
  }

  private get staleIngestMs(): number {
    return this.config.staleIngestMs ?? 24 * 3600_000;
  }

  /**
   * Ingests nobody holds (their leases ended, or written without one and idle past
   * `stale_ingest_hours`) are removed by every GC run, and besides now and then every hour
   * (or sooner, when the idle limit is short).
   */
  private sweepIngests(gc: GcScheduler): void {
    const sweep = () =>
      gc.sweepIngests().then(
        (n) => n && this.logger.info({ ingests: n }, "removed ingests nobody holds"),
        (err) => this.logger.warn({ err }, "ingest sweep failed"),
      );
    // The one running is kept, for stop() to wait for (it reads the projection).
    const run = () => {
      this.sweeping ??= sweep().finally(() => (this.sweeping = undefined));
    };
    run();
    this.sweeper = setInterval(run, Math.min(3600_000, Math.max(1000, this.staleIngestMs / 4)));
    this.sweeper.unref();
  }

  /** `socketGid`: the socket's group (--socket-group, resolved at start). */
  private async serve(socketGid: number | undefined): Promise<void> {
    const server = new grpc.Server({
      "grpc.max_receive_message_length": 16 << 20,
      "grpc.max_send_message_length": 16 << 20,
      // Only with metrics on: an interceptor is a layer on every call.
      interceptors: this.metrics ? [this.metrics.interceptor()] : [],
    });
    // This ckd's uuid is its host id: its content records name it (several ckd may share a log).
    const queries = new Queries(this.db, this.uuid);
    const blobs = new NamespacedBlobs(this.sequencer, queries, this.content);
    const snapshots = new SnapshotStore(this.sequencer, queries, this.snapshotters);
    const gc = new GcScheduler(
      { sequencer: this.sequencer, queries, blobs, snapshots, logger: this.logger, ingests: { store: this.content, maxIdleMs: this.staleIngestMs } },
      { expiryIntervalMs: this.config.gcExpiryIntervalMs },
    );
    gc.start();
    this.gc = gc;
    // Deletes and updates another ckd on the log makes drop references too, and only this
    // host's GC collects the copies its store holds (content is host-scoped): as its own.
    this.projector.onApplied((msgs) => {
      for (const m of msgs) {
        if (REFERENCE_DELETES.some((t) => m.subject.endsWith(t))) gc.trigger();
        else if (REFERENCE_UPDATES.some((t) => m.subject.endsWith(t))) gc.mutated();
      }
    });
    this.sweepIngests(gc);
    if (this.config.compactIntervalMs) {
      this.compaction = new CompactScheduler(
        {
          intervalMs: this.config.compactIntervalMs,
          keep: this.config.compactKeep ?? 10_000,
          keepBases: this.config.compactKeepBases ?? 1,
          root: this.config.root,
          natsUrl: this.config.natsUrl,
          lastTaken: async () => {
            const taken = (await new BaseStore(this.log).list()).filter((b) => b.stream === this.log.stream).map((b) => new Date(b.taken).getTime());
            return taken.length ? new Date(Math.max(...taken)) : undefined;
          },
        },
        this.logger,
      );
      this.compaction.start();
      this.logger.info({ everySeconds: this.config.compactIntervalMs / 1000, keep: this.config.compactKeep ?? 10_000, keepBases: this.config.compactKeepBases ?? 1 }, "log compaction scheduled");
    }
    const afterUpdate = () => gc.mutated();
    const optPath = optPathOf(this.config);
    const runtime = new RuncRuntime(this.config.root, "runc", optPath ? join(optPath, "bin") : undefined);
    const deps = { sequencer: this.sequencer, queries, afterDelete: (sync: boolean) => gc.afterDelete(sync), afterUpdate, namespaceDeleted: (ns: string) => runtime.namespaceDeleted(ns) };
    const disabled = new Set([...SERVICE_PLUGINS].filter(([p]) => this.config.disabledPlugins?.includes(p)).map(([, svc]) => svc));
    const add = (name: string, impl: grpc.UntypedServiceImplementation) => {
      if (!disabled.has(name)) server.addService(this.protos.serviceDefinition(name), impl);
    };
    add("containerd.services.namespaces.v1.Namespaces", namespacesService(deps));
    add("containerd.services.images.v1.Images", imagesService(deps));
    add("containerd.services.containers.v1.Containers", containersService(deps));
    add(
      "containerd.services.events.v1.Events",
      eventsService({ sequencer: this.sequencer, subscriptions: new EventSubscriptions(this.log, this.protos), historyStart: (withTime) => new BaseStore(this.log).historyStart(withTime), onStopping: (fn) => this.onStopping.push(fn) }),
    );
    add(
      "containerd.services.content.v1.Content",
      contentService({ sequencer: this.sequencer, queries, store: this.content, blobs, afterDelete: () => gc.trigger(), afterUpdate }),
    );
    add("containerd.services.leases.v1.Leases", leasesService({ sequencer: this.sequencer, queries, gc, ingests: this.content }));
    add("ck.services.gc.v1.GC", gcService({ gc, sequencer: this.sequencer, queries, host: this.uuid }));
    add("containerd.services.snapshots.v1.Snapshots", snapshotsService({ snapshots, afterDelete: () => gc.trigger(), afterUpdate }));
    add("containerd.services.diff.v1.Diff", diffService({ sequencer: this.sequencer, queries, store: this.content, blobs, roots: () => snapshots.roots(), snapshots, afterUpdate }));
    add("ck.services.unpack.v1.Unpack", unpackService({ queries, store: this.content, snapshots, sequencer: this.sequencer, afterUpdate }));
    add("ck.services.fetch.v1.Fetch", fetchService({ sequencer: this.sequencer, queries, store: this.content, blobs, userAgent: `ckd/${CK_VERSION}` }));
    const runcProblem = this.plugins.find((p) => p.type === "io.containerd.runtime.v2")?.initError;
    const tasks = new Tasks({ sequencer: this.sequencer, queries, runtime, logger: this.logger, runcProblem, protos: this.protos });
    this.tasks = tasks;
    add("containerd.services.tasks.v1.Tasks", tasks.service());
    add("containerd.services.version.v1.Version", versionService());
    add("containerd.services.introspection.v1.Introspection", introspectionService({ uuid: this.uuid, plugins: () => this.plugins }));
    // gRPC's health service, as containerd serves it (not a plugin: it cannot be disabled).
    server.addService(this.protos.serviceDefinition("grpc.health.v1.Health"), healthService({ stopping: () => this.stopBegun, onStopping: (fn) => this.onStopping.push(fn) }));

    // Tasks of an earlier ckd: adopted when their keeper still runs them (or left their exit),
    // else stopped, before anyone can ask.
    const lost = await tasks.reconcile();
    if (lost) this.logger.warn({ tasks: lost }, "tasks of an earlier ckd without a keeper stopped (exit status 255)");
    tasks.watchOom();

    const sock = this.config.address;
    await makeSocketDir(sock);
    // Another ckd serving on it (a start racing this one) is refused; a socket an earlier ckd
    // left is replaced (checkSocketAddress refused anything else there).
    await checkSocketFree(sock);
    if ((await lstat(sock).catch(() => undefined))?.isSocket()) await rm(sock, { force: true });
    // Bound in a directory only root can enter, given its mode and group there, then moved
    // into place: the socket (root's power, tasks run as root) is never reachable with the
    // mode a umask would give it.
    // (A unix socket's path holds at most 107 bytes: one that long is bound where it goes.)
    const staging = Buffer.byteLength(join(dirname(sock), ".ck-sock-XXXXXX", "s")) <= 107 ? await mkdtemp(join(dirname(sock), ".ck-sock-")) : undefined;
    try {
      if (staging) await chmod(staging, 0o700);
      const bound = staging ? join(staging, "s") : sock;
      await new Promise<void>((resolve, reject) =>
        server.bindAsync(`unix://${bound}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
      );
      await chmod(bound, 0o660);
      if (socketGid !== undefined) await chown(bound, -1, socketGid);
      if (bound !== sock) await rename(bound, sock);
      const st = await stat(sock);
      this.boundSocket = { dev: st.dev, ino: st.ino };
      this.config.onSocket?.(sock);
    } finally {
      if (staging) await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    }
    widenFlowControl(server);
    this.server = server;
    this.logger.info({ address: sock }, "serving containerd v1 API");
    // Every block of the projection read once, in the background: an open reads only the
    // tables' index blocks, so a damaged data block would show only when a List or a fold
    // reached it. Found here, it goes the way of damage met by a read (onCorruption: marked,
    // exit 70, set aside and rebuilt at the next start). Not before serving: 100,000 records
    // took 85-230 ms, on every start, growing with the projection.
    const db = this.db;
    void db.verify().then(
      (records) => this.logger.debug({ records }, "projection read through: no damage"),
      (err: unknown) => {
        if (isCorruption(err)) db.onCorruption?.(err as Error);
        else if (!this.stopBegun) this.logger.warn({ err }, "reading the projection through failed");
      },
    );
    // Watched once serving (a watch started before would outlive a start that failed).
    const nats = this.nats;
    const watchMs = this.config.natsWatchdogMs ?? 10_000;
    if (nats && watchMs > 0) {
      this.watchdog = new JetStreamWatchdog({
        probe: () => this.log.info().then(
          () => "answered" as const,
          // An error JetStream sent (a removed stream, say) is an answer: the server is not wedged.
          (err: unknown) => (err instanceof JetStreamApiError ? ("answered" as const) : ("silent" as const)),
        ),
        connected: () => this.log.connectionState === "connected",
        restart: () => nats.restart(),
        logger: this.logger,
        everyMs: watchMs,
      });
      this.watchdog.start();
    }
    if (this.metrics) {
      this.metrics.attach({
        stream: this.log.stream,
        appliedSeq: () => this.projector.appliedSeq,
        logState: async () => {
          const { state } = await this.log.info();
          return { lastSeq: state.last_seq, firstSeq: state.first_seq, bytes: state.bytes };
        },
        connected: () => this.log.connectionState === "connected",
        sequencer: this.sequencer,
        activeIngests: async () => (await this.content.listStatuses()).length,
        build: { version: CK_VERSION, revision: CK_REVISION },
        // containerd's per-container series, from the collector of this host's cgroup version.
        containers: { table: (await isCgroupV1()) ? V1_CONTAINER_METRICS : V2_CONTAINER_METRICS, stats: () => tasks.allStats() },
      });
      this.logger.info({ address: `http://${this.config.metricsAddress}${METRICS_PATH}` }, "serving metrics");
    }
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.stopBegun = true;
    // First: scrapes would read a log and a database being closed.
    await this.metrics?.close().catch(() => undefined);
    for (const fn of this.onStopping) fn();
    // The API first: calls in flight finish with the collector, compaction and watch still
    // there (a delete with sync waits for its collection), and no call comes after them.
    const server = this.server;
    if (server) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    clearInterval(this.sweeper);
    await this.sweeping?.catch(() => undefined);
    await this.gc?.stop().catch(() => undefined);
    await this.compaction?.stop().catch(() => undefined);
    await this.watchdog?.stop().catch(() => undefined);
    try {
      // Started tasks run on under their keepers; what cannot (created inits) ends, recorded.
      await this.tasks?.stop().catch((err) => this.logger.warn({ err }, "stopping tasks failed"));
      await this.projector.stop().catch((err) => this.logger.warn({ err }, "stopping the projector failed"));
      await this.log.close().catch(() => undefined);
      await this.db.close().catch(() => undefined);
      // Its state file written on a full disk may fail: the socket still goes.
      await this.nats?.stop();
    } finally {
      // Only the socket this ckd bound: one put there since (by a ckd started after it) stays.
      const st = this.boundSocket && (await lstat(this.config.address).catch(() => undefined));
      if (st && st.dev === this.boundSocket!.dev && st.ino === this.boundSocket!.ino) await rm(this.config.address, { force: true }).catch(() => undefined);
    }
    this.logger.info("stopped");
  }
}

/**
 * HTTP/2's default 64 KiB stream window makes a client that sends 1 MiB Content.Write
 * messages wait for ~16 window updates per message. grpc-js has no server option for it, so
 * each new session is given larger windows through Node's public http2 session API.
 */
export function widenFlowControl(server: grpc.Server): void {
  const servers = (server as unknown as { http2Servers?: Map<import("node:net").Server, unknown> }).http2Servers;
  if (!servers) return;
  for (const h2 of servers.keys()) {
    h2.on("session", (session: import("node:http2").ServerHttp2Session) => {
      try {
        session.settings({ initialWindowSize: 4 << 20 });
        session.setLocalWindowSize(32 << 20);
      } catch {
        // a session closing as it opens: nothing to widen
      }
    });
  }
}

/** A group name (from /etc/group) or number, as `socket_group` takes it. */
export async function groupId(value: string): Promise<number> {
  let gid: number;
  if (/^\d+$/.test(value)) {
    gid = Number(value);
    // 2^32-1 is chown's "leave as it is"; more is no gid.
    if (gid > 0xfffffffe) throw new Error(`--socket-group (socket_group) "${value}": not a group id (0 to 4294967294)`);
  } else {
    const text = await readFile("/etc/group", "utf8").catch(() => "");
    const found = parseGroup(text).find((g) => g.name === value);
    if (!found) throw new Error(`--socket-group (socket_group) "${value}": no such group in /etc/group (a name or a number)`);
    gid = found.gid;
  }
  // Only root gives a file to any group; others to their own.
  if (process.getuid?.() !== 0 && gid !== process.getegid?.() && !process.getgroups?.().includes(gid)) {
    throw new Error(`--socket-group (socket_group) "${value}": ckd is not root and not in that group, so it cannot give the socket to it`);
  }
  return gid;
}

/** The daemon's uuid from its root, or a new one (isNew: not written yet). */
async function readUuid(path: string): Promise<{ uuid: string; isNew: boolean }> {
  try {
    const v = (await readFile(path, "utf8")).trim();
    if (v) return { uuid: v, isNew: false };
  } catch {
    // first start
  }
  return { uuid: randomUUID(), isNew: true };
}
