// One nats-server child process with JetStream: the event log ckd runs for itself when it is
// not given --nats. Starts it on a loopback port over a store directory, waits until JetStream
// answers, supervises it, and replaces an orphan left behind by a daemon that was kill -9'ed.
//
// Files it keeps inside the store directory (next to nats-server's own `jetstream/`):
//   nats-server.json  the state file (NatsServerState): pid, port, owner; read to find orphans
//                     and to reuse the same port after a restart, so clients' URLs stay stable
//   nats-server.pid   written by nats-server itself (--pid), a second place to find an orphan
//                     whose owner died before it could write the state file
// and, with `auth` (ckd's own server: a loopback port is open to every local user, and the log
// is what every view and every task's spec is rebuilt from), both mode 0600:
//   nats-server.conf  the server's authorization block: users `ck` and `reader` with random
//                     passwords, given in a file because a command line is readable by every user
//   client.url        the URL ck connects with, password included
//                     (`nats://ck:<password>@127.0.0.1:<port>`); the password is kept in it
//                     across starts
// and, mode 0640 (for a group an administrator gives it to):
//   reader.url        the same for user `reader`, who may follow the events and read the
//                     stream's messages (not through consumers) and not change anything; its
//                     group is kept when it is rewritten (chgrp it to share it)
//
// Linux only for orphan handling: a pid is trusted only when /proc/<pid>/cmdline shows a
// nats-server over exactly this store directory, so a reused pid is never killed.
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, fchmodSync, openSync, readFileSync, statSync } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { basename, dirname, join, resolve } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { findExecutable, isAlive, isSameProcess, procStat } from "../runtime/proc.js";
import { failedPrecondition, unavailable } from "../errdefs/errdefs.js";
import { natsConnectOptions, type NatsFiles } from "./log.js";

export const STATE_FILE = "nats-server.json";
export const PID_FILE = "nats-server.pid";
export const CONFIG_FILE = "nats-server.conf";
export const CLIENT_URL_FILE = "client.url";
export const READER_URL_FILE = "reader.url";
/** The user of a server started with `auth` that may do anything (ckd). */
export const AUTH_USER = "ck";
/** The user that may only read the log. */
export const READER_USER = "reader";

/**
 * What user `reader` may do: subscribe to the events as they come, and read the stream's
 * messages by sequence or subject (JetStream's message get and direct get) and its info. No
 * consumer API: in nats-server 2.9 creating a consumer under an existing name updates it, and
 * fetching or acknowledging works on any consumer, so a reader could change or drain ckd's own.
 * Replies come on `_INBOX.>`, where ck's own connections never receive (MANAGED_INBOX_PREFIX).
 */
const READER_PERMISSIONS = {
  publish: ["$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "$JS.API.STREAM.MSG.GET.*", "$JS.API.DIRECT.GET.>"],
  subscribe: ["containerd.io.>", "_INBOX.>"],
};

/**
 * The reply-subject prefix of ck's connections to its own server: not `_INBOX`, which the
 * reader may subscribe to (it would see ck's acknowledgements and JetStream replies).
 */
export const MANAGED_INBOX_PREFIX = "_CK_INBOX";

export interface NatsServerOptions {
  /** JetStream store directory (`-sd`); created if missing. */
  storeDir: string;
  /** Client port; 0 or undefined picks the port recorded in the state file if free, else a free one. */
  port?: number;
  /** Address to bind; default 127.0.0.1. */
  host?: string;
  /** The server's stdout and stderr are appended here; without it they are discarded. */
  logFile?: string;
  /** Default: `ck-` + a hash of the store directory, so readiness checks know their own server. */
  serverName?: string;
  /** The nats-server executable; a bare name is looked up in PATH and then the sbin directories. */
  binary?: string;
  /** Restart the server (same port, same store) when it exits without stop() being asked. */
  supervise?: boolean;
  /** Called on every exit that stop() or restart() did not ask for. */
  onExit?: (code: number | null, signal: NodeJS.Signals | null) => void;
  /** Told the pids of servers a dead owner left running on the store, stopped before this one starts. */
  onOrphansStopped?: (pids: number[]) => void;
  /** Called when supervision has brought the server back. */
  onRestart?: () => void;
  /** Called when a supervised restart attempt fails; supervision keeps trying. */
  onRestartError?: (err: Error, attempt: number) => void;
  /** How long to wait for JetStream to answer after spawning; default 60 s. */
  readyTimeoutMs?: number;
  /** How long stop() waits after SIGTERM before SIGKILL; default 10 s. */
  stopTimeoutMs?: number;
  /**
   * Clients must log in (user `ck`, or `reader` to read only; random passwords kept in the
   * store, see the top of this file); `url` then carries ck's password. Without it the server
   * lets every client in.
   */
  auth?: boolean;
  /**
   * The server's max_payload (absent: NATS's default, 1 MiB): the largest message, so the
   * largest event the log takes.
   */
  maxPayload?: number;
  /** More of nats-server's configuration (TLS, other users), written to its config file. */
  config?: string;
  /** TLS files the readiness check connects with (a server whose `config` turns TLS on). */
  clientFiles?: NatsFiles;
}

/** The state file's contents (`<storeDir>/nats-server.json`). */
export interface NatsServerState {
  storeDir: string;
  host: string;
  port: number;
  /** Without a password (see client.url for the one to connect with). */
  url: string;
  binary: string;
  serverName: string;
  /** The server's pid while it runs; absent after a clean stop(). */
  pid?: number;
  /** Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22). */
  pidStartTime?: number;
  /** The process that spawned and supervises it. */
  ownerPid?: number;
  ownerStartTime?: number;
  startedAt?: string;
  stoppedAt?: string;
}

export interface OrphanReclaim {
  /** The state file as found, if any. */
  state: NatsServerState | undefined;
  /** Pids of orphaned nats-servers on this store that were killed (and have exited). */
  killed: number[];
}

const DEFAULT_HOST = "127.0.0.1";
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 5_000;
/** A server that ran at least this long before dying starts the backoff over. */
const BACKOFF_RESET_AFTER_MS = 10_000;
/** How long a restart on a fixed port waits for the port to become free. */
const FIXED_PORT_WAIT_MS = 10_000;
/** How long a recorded (preferred, not required) port is waited for. */
const RECORDED_PORT_WAIT_MS = 2_000;

export class NatsServerProcess {
  private child: ChildProcess | undefined;
  /** The child once JetStream answered: only its exits count as crashes (start-up failures throw). */
  private readyChild: ChildProcess | undefined;
  private childExit: Promise<void> = Promise.resolve();
  private launchedAt = 0;
  /** Exits of these children were asked for (stop, restart): no onExit, no supervision. */
  private readonly expectedExits = new WeakSet<ChildProcess>();
  /** Set by stop(), cleared by restart(): supervision is off while set. */
  private stopped = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private backoffMs = BACKOFF_FIRST_MS;
  private attempts = 0;
  /** Lifecycle operations (launch, stop, restart, supervised restart) run one at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  /**
   * If the owner exits without stop() (an uncaught error, process.exit), the server is told
   * to shut down rather than left as an orphan. A kill -9 of the owner skips this; that is
   * what reclaimOrphan is for.
   */
  private readonly stopOnOwnerExit = () => {
    if (isRunning(this.child)) this.child!.kill("SIGTERM");
  };

  private constructor(
    readonly storeDir: string,
    readonly host: string,
    readonly port: number,
    readonly binary: string,
    readonly serverName: string,
    private readonly opts: NatsServerOptions,
    /** Set with `auth`: the passwords of users `ck` and `reader`. */
    private readonly passwords: Passwords | undefined,
  ) {}

  /**
   * Starts a nats-server with JetStream over `opts.storeDir` and resolves once JetStream
   * answers. An orphan left on the same store by a dead owner is killed first (see
   * reclaimOrphan), and its port reused when free.
   */
  static async start(opts: NatsServerOptions): Promise<NatsServerProcess> {
    const storeDir = resolve(opts.storeDir);
    await mkdir(storeDir, { recursive: true, mode: 0o750 });
    const binary = resolveNatsServerBinary(opts.binary);
    const host = opts.host ?? DEFAULT_HOST;
    const serverName = opts.serverName ?? defaultServerName(storeDir);
    const { state, killed } = existsSync(join(storeDir, STATE_FILE)) || existsSync(join(storeDir, PID_FILE))
      ? await reclaimOrphan(storeDir)
      : { state: undefined, killed: [] };
    if (killed.length > 0) opts.onOrphansStopped?.(killed);
    const password = opts.auth
      ? { ck: await loadOrCreatePassword(storeDir, CLIENT_URL_FILE, AUTH_USER), reader: await loadOrCreatePassword(storeDir, READER_URL_FILE, READER_USER) }
      : undefined;
    if (password || opts.config || opts.maxPayload) await writePrivate(join(storeDir, CONFIG_FILE), serverConfig(password, opts.config, opts.maxPayload));

    if (opts.port) {
      const s = new NatsServerProcess(storeDir, host, opts.port, binary, serverName, opts, password);
      await s.serialized(() => s.launch(FIXED_PORT_WAIT_MS)).catch(rethrowPublic);
      return s;
    }
    if (state?.port && state.host === host && (await waitPortFree(state.port, host, RECORDED_PORT_WAIT_MS))) {
      const s = new NatsServerProcess(storeDir, host, state.port, binary, serverName, opts, password);
      try {
        await s.serialized(() => s.launch(0));
        return s;
      } catch (err) {
        if (!(err instanceof PortTakenError)) throw err;
      }
    }
    // A free port can be taken between probing it and the server binding it: try a few.
    let last: unknown;
    for (let i = 0; i < 3; i++) {
      const s = new NatsServerProcess(storeDir, host, await freePort(host), binary, serverName, opts, password);
      try {
        await s.serialized(() => s.launch(0));
        return s;
      } catch (err) {
        if (!(err instanceof PortTakenError)) throw err;
        last = err;
      }
    }
    return rethrowPublic(last);
  }

  /**
   * For a daemon that was kill -9'ed: kills the nats-server it left running on `storeDir`
   * (only if /proc shows exactly that), then starts a new one on the recorded port if it is
   * free, else on a fresh one.
   */
  static async adoptOrReplace(storeDir: string, opts: Omit<NatsServerOptions, "storeDir"> = {}): Promise<NatsServerProcess> {
    return NatsServerProcess.start({ ...opts, storeDir });
  }

  /** The URL to connect with: with `auth`, user and password included. */
  get url(): string {
    return natsUrl(this.host, this.port, this.passwords && { user: AUTH_USER, password: this.passwords.ck });
  }

  /** With `auth`: the URL of user `reader` (read only); else the same as url. */
  get readerUrl(): string {
    return natsUrl(this.host, this.port, this.passwords && { user: READER_USER, password: this.passwords.reader });
  }

  /** The URL without credentials, for logs and the state file. */
  get address(): string {
    return natsUrl(this.host, this.port);
  }

  /**
   * The URL (password included) of the server a `auth` NatsServerProcess ran last on
   * `storeDir`, from its client.url (or reader.url); undefined when there is none.
   */
  static async clientUrlOf(storeDir: string, which: typeof CLIENT_URL_FILE | typeof READER_URL_FILE = CLIENT_URL_FILE): Promise<string | undefined> {
    const file = join(resolve(storeDir), which);
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new Error(`cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): the password of ckd's own nats-server is root's to read`);
    }
    return text.trim() || undefined;
  }


  /** Pid of the current server process (the latest one after restarts); 0 if never spawned. */
  get pid(): number {
    return this.child?.pid ?? 0;
  }

  get running(): boolean {
    return isRunning(this.child);
  }

  /** SIGTERM, then SIGKILL after stopTimeoutMs; waits for the exit. Turns supervision off. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelRestart();
    await this.serialized(async () => {
      await this.terminate();
      await this.recordStopped();
      process.removeListener("exit", this.stopOnOwnerExit);
    });
  }

  /** SIGKILL and wait for the exit, as a crash would; a supervised server comes back. */
  async kill9(): Promise<void> {
    const child = this.child;
    if (!isRunning(child)) return;
    const exited = this.childExit;
    child!.kill("SIGKILL");
    await exited;
  }

  /**
   * Stops the server if it runs and starts it again on the same port and store. A supervised
   * server whose new start fails is left to supervision, which tries again with its backoff
   * (the error is still thrown to the caller).
   */
  async restart(): Promise<void> {
    this.stopped = false;
    this.cancelRestart();
    await this.serialized(async () => {
      await this.terminate();
      try {
        await this.launch(FIXED_PORT_WAIT_MS);
      } catch (err) {
        this.scheduleRestart();
        rethrowPublic(err);
      }
      this.backoffMs = BACKOFF_FIRST_MS;
      this.attempts = 0;
    });
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Spawns the server and waits until JetStream answers; the caller holds the queue. */
  private async launch(portWaitMs: number): Promise<void> {
    if (portWaitMs > 0 && !(await waitPortFree(this.port, this.host, portWaitMs))) {
      throw new PortTakenError(`port ${this.host}:${this.port} is in use`);
    }
    const args = [
      ...(this.passwords || this.opts.config || this.opts.maxPayload ? ["-c", join(this.storeDir, CONFIG_FILE)] : []),
      "-js",
      "-a", this.host,
      "-p", String(this.port),
      "-sd", this.storeDir,
      "--pid", join(this.storeDir, PID_FILE),
      "--server_name", this.serverName,
    ];
    const logFile = this.opts.logFile;
    let logOffset = 0;
    let out: number | "ignore" = "ignore";
    if (logFile) {
      await mkdir(dirname(logFile), { recursive: true });
      out = openSync(logFile, "a", 0o640);
      fchmodSync(out, 0o640); // also a log made before, by an older ckd
      logOffset = statSync(logFile).size;
    }
    let child: ChildProcess;
    try {
      // Output goes to a file, never a pipe: a Go program writing to a broken pipe on fd 1/2
      // dies of SIGPIPE, so a pipe would kill an orphan as soon as it logged. Its own process
      // group keeps a terminal's Ctrl-C away from it: the owner stops it in order.
      child = spawn(this.binary, args, { stdio: ["ignore", out, out], detached: true });
    } finally {
      if (typeof out === "number") closeSync(out);
    }
    const spawnError = new Promise<never>((_, reject) => child.once("error", reject));
    spawnError.catch(() => undefined);
    let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    const exited = new Promise<void>((r) =>
      child.once("exit", (code, signal) => {
        exitInfo = { code, signal };
        r();
        this.onChildExit(child, code, signal);
      }),
    );
    this.child = child;
    this.childExit = exited;
    this.launchedAt = Date.now();
    process.removeListener("exit", this.stopOnOwnerExit);
    process.on("exit", this.stopOnOwnerExit);
    const earlyExit = exited.then(() => {
      throw new EarlyExitError(exitInfo!.code, exitInfo!.signal);
    });
    earlyExit.catch(() => undefined);

    const deadline = Date.now() + (this.opts.readyTimeoutMs ?? 60_000);
    try {
      if (child.pid === undefined) await spawnError;
      await this.recordRunning(child.pid!);
      await Promise.race([spawnError, earlyExit, this.waitReady(deadline, exited)]);
      if (this.passwords) {
        await writePrivate(join(this.storeDir, CLIENT_URL_FILE), this.url + "\n");
        await writePrivate(join(this.storeDir, READER_URL_FILE), this.readerUrl + "\n", 0o640, { keepGroup: true });
      }
      this.readyChild = child;
      if (!isRunning(child)) throw new EarlyExitError(child.exitCode, child.signalCode);
    } catch (err) {
      this.expectedExits.add(child);
      if (isRunning(child)) {
        child.kill("SIGKILL");
        await exited;
      }
      const tail = logFile ? readTail(logFile, logOffset) : "";
      const detail = tail ? `; log:\n${tail}` : logFile ? "" : " (pass logFile to see its output)";
      if (err instanceof EarlyExitError) {
        const msg = `nats-server on ${this.host}:${this.port} exited during start-up (${err.code ?? err.signal})${detail}`;
        // A port conflict is the one start-up failure that another port can fix.
        if (!(await portFree(this.port, this.host))) throw new PortTakenError(msg);
        throw unavailable(msg);
      }
      if (err instanceof PortTakenError) throw err;
      throw unavailable(`nats-server on ${this.host}:${this.port}: ${(err as Error).message}${detail}`, { cause: err });
    }
  }

  /** Polls until the server on our port is ours (by name) and JetStream answers its API. */
  private async waitReady(deadline: number, exited: Promise<void>): Promise<void> {
    let gone = false;
    void exited.then(() => (gone = true));
    let lastErr: unknown;
    while (!gone) {
      if (Date.now() > deadline) throw new Error(`JetStream not ready in time: ${String(lastErr)}`);
      let nc: Awaited<ReturnType<typeof connect>> | undefined;
      try {
        nc = await connect({ ...natsConnectOptions(this.url, this.opts.clientFiles), reconnect: false, timeout: 1_000, name: "ck nats-server readiness" });
        const name = nc.info?.server_name;
        if (name !== this.serverName) throw new PortTakenError(`port ${this.port} is served by another nats-server ("${name}")`);
        await jetstreamManager(nc, { timeout: 2_000 }); // checks $JS.API.INFO
        return;
      } catch (err) {
        if (err instanceof PortTakenError) throw err;
        lastErr = err;
      } finally {
        await nc?.close().catch(() => undefined);
      }
      await sleep(20);
    }
  }

  /** Asked-for stop of the current child: SIGTERM, SIGKILL after the timeout. */
  private async terminate(): Promise<void> {
    const child = this.child;
    if (!isRunning(child)) return;
    this.expectedExits.add(child!);
    const exited = this.childExit;
    child!.kill("SIGTERM");
    const t = setTimeout(() => child!.kill("SIGKILL"), this.opts.stopTimeoutMs ?? 10_000);
    await exited;
    clearTimeout(t);
  }

  private onChildExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.readyChild || this.expectedExits.has(child)) return;
    this.opts.onExit?.(code, signal);
    if (Date.now() - this.launchedAt >= BACKOFF_RESET_AFTER_MS) {
      this.backoffMs = BACKOFF_FIRST_MS;
      this.attempts = 0;
    }
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    if (!this.opts.supervise || this.stopped || this.restartTimer) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.serialized(async () => {
        if (this.stopped || isRunning(this.child)) return;
        const attempt = ++this.attempts;
        try {
          await this.launch(FIXED_PORT_WAIT_MS);
        } catch (err) {
          this.opts.onRestartError?.(publicError(err), attempt);
          this.scheduleRestart();
          return;
        }
        this.opts.onRestart?.();
      });
    }, delay);
  }

  private cancelRestart(): void {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
  }

  private baseState(): NatsServerState {
    return {
      storeDir: this.storeDir,
      host: this.host,
      port: this.port,
      url: this.address,
      binary: this.binary,
      serverName: this.serverName,
    };
  }

  private async recordRunning(pid: number): Promise<void> {
    await writeState(this.storeDir, {
      ...this.baseState(),
      pid,
      pidStartTime: procStat(pid)?.startTime,
      ownerPid: process.pid,
      ownerStartTime: procStat(process.pid)?.startTime,
      startedAt: new Date().toISOString(),
    });
  }

  private async recordStopped(): Promise<void> {
    await writeState(this.storeDir, { ...this.baseState(), stoppedAt: new Date().toISOString() });
  }
}

/**
 * Finds a nats-server left running on `storeDir` by an owner that died (its pid from the
 * state file or the pid file), and kills it by that pid: SIGTERM, SIGKILL after 5 s, then
 * waits for it to be gone. A pid is only touched if /proc/<pid>/cmdline shows a nats-server
 * over exactly this store directory. Refuses (FailedPrecondition) when the recorded owner is
 * alive: that process still supervises the server and a second one would share the store.
 */
export async function reclaimOrphan(storeDir: string, opts: { termTimeoutMs?: number } = {}): Promise<OrphanReclaim> {
  const dir = resolve(storeDir);
  const state = await readState(dir);
  const candidates = new Set<number>();
  if (state?.pid) candidates.add(state.pid);
  const fromPidFile = Number((await readFile(join(dir, PID_FILE), "utf8").catch(() => "")).trim());
  if (Number.isInteger(fromPidFile) && fromPidFile > 0) candidates.add(fromPidFile);
  const binaries = state?.binary ? [state.binary] : [];
  const live = [...candidates].filter((pid) => isNatsServerFor(pid, dir, binaries));

  if (state?.ownerPid && state.pid && isSameProcess(state.ownerPid, state.ownerStartTime)) {
    if (state.ownerPid !== process.pid) {
      // Its program's name only: a command line may hold a password.
      const argv = readCmdline(state.ownerPid) ?? [];
      const program = basename(argv.find((a, i) => i > 0 && !a.startsWith("-")) ?? argv[0] ?? "?");
      throw failedPrecondition(`nats-server store ${dir} is managed by live process ${state.ownerPid} (${program}): another ckd, or a ck-replay, runs on this root; stop it first (one at a time per root)`);
    }
    if (live.length > 0) {
      throw failedPrecondition(`nats-server store ${dir} is already served by pid ${live.join(", ")} started by this process`);
    }
  }
  const killed: number[] = [];
  for (const pid of live) {
    await killAndWait(pid, opts.termTimeoutMs ?? 5_000);
    killed.push(pid);
  }
  return { state, killed };
}

/** Reads `<storeDir>/nats-server.json`; undefined if missing or unreadable. */
export async function readState(storeDir: string): Promise<NatsServerState | undefined> {
  try {
    return JSON.parse(await readFile(join(resolve(storeDir), STATE_FILE), "utf8")) as NatsServerState;
  } catch {
    return undefined;
  }
}

/**
 * True if `pid` is alive and its command line is a nats-server whose store directory is
 * exactly `storeDir` (`-sd DIR`, `--store_dir DIR`, or the `=` forms).
 */
export function isNatsServerFor(pid: number, storeDir: string, binaries: string[] = []): boolean {
  if (!isAlive(pid)) return false;
  const argv = readCmdline(pid);
  if (!argv || argv.length === 0) return false;
  const names = new Set(["nats-server", ...binaries.map((b) => basename(b))]);
  if (!names.has(basename(argv[0]!))) return false;
  const want = resolve(storeDir);
  const flags = new Set(["-sd", "--sd", "-store_dir", "--store_dir"]);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf("=");
    if (eq > 0 && flags.has(a.slice(0, eq))) {
      if (resolve(a.slice(eq + 1)) === want) return true;
    } else if (flags.has(a) && i + 1 < argv.length) {
      if (resolve(argv[i + 1]!) === want) return true;
    }
  }
  return false;
}

/** The server's version from `nats-server --version`, without the `v`: "2.9.10". */
export async function versionOf(binary = "nats-server"): Promise<string> {
  const exe = resolveNatsServerBinary(binary);
  const stdout = await new Promise<string>((res, rej) =>
    execFile(exe, ["--version"], { timeout: 10_000 }, (err, out) => (err ? rej(err) : res(String(out)))),
  );
  const m = /v?(\d+\.\d+\.\d+[^\s]*)/.exec(stdout);
  if (!m) throw new Error(`cannot parse the output of "${exe} --version": ${stdout.trim()}`);
  return m[1]!;
}

/**
 * A bare name is searched in PATH and then in the sbin directories, where Debian installs
 * nats-server and which a non-root PATH usually lacks. A path is returned as given.
 */
export function resolveNatsServerBinary(binary = "nats-server"): string {
  if (binary.includes("/")) return binary;
  const found = findExecutable(binary, ["/usr/sbin", "/usr/local/sbin", "/sbin"]);
  if (!found) throw failedPrecondition(`${binary} not found in PATH or /usr/sbin (Debian package nats-server)`);
  return found;
}

/** Binds port 0 on `host`, reads the port the kernel chose, and releases it. */
export async function freePort(host = DEFAULT_HOST): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen({ port: 0, host, exclusive: true }, () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === "object" ? res(addr.port) : rej(new Error("no port"))));
    });
  });
}

interface Passwords {
  ck: string;
  reader: string;
}

function natsUrl(host: string, port: number, login?: { user: string; password: string }): string {
  const h = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return `nats://${login ? `${login.user}:${login.password}@` : ""}${h.includes(":") ? `[${h}]` : h}:${port}`;
}

/** A password of this shape only: it goes into a URL and a config string unescaped. */
const PASSWORD_SHAPE = /^[A-Za-z0-9_-]{32,}$/;

/** The password of `user` kept in the store's `file` (client.url, reader.url), or a new random one (256 bits). */
async function loadOrCreatePassword(storeDir: string, file: typeof CLIENT_URL_FILE | typeof READER_URL_FILE, user: string): Promise<string> {
  const kept = await NatsServerProcess.clientUrlOf(storeDir, file);
  if (kept) {
    try {
      const u = new URL(kept);
      if (u.username === user && PASSWORD_SHAPE.test(u.password)) return u.password;
    } catch {
      // unreadable: a new one
    }
  }
  return randomBytes(32).toString("base64url");
}

function serverConfig(passwords: Passwords | undefined, extra: string | undefined, maxPayload?: number): string {
  const lines = ["# Written by ck at every start of this server (changes are overwritten)."];
  if (maxPayload) lines.push(`max_payload: ${maxPayload}`);
  if (passwords) {
    const list = (subjects: string[]) => `[${subjects.map((x) => JSON.stringify(x)).join(", ")}]`;
    lines.push(
      `# Clients log in as user ${AUTH_USER} (${CLIENT_URL_FILE} next to this file has the URL to connect with),`,
      `# or as ${READER_USER} to follow and replay the log only (${READER_URL_FILE}).`,
      "authorization {",
      "  users = [",
      `    { user: "${AUTH_USER}", password: "${passwords.ck}" }`,
      `    { user: "${READER_USER}", password: "${passwords.reader}", permissions: {`,
      `        publish: { allow: ${list(READER_PERMISSIONS.publish)} }`,
      `        subscribe: { allow: ${list(READER_PERMISSIONS.subscribe)} }`,
      "    } }",
      "  ]",
      "}",
    );
  }
  if (extra) lines.push(extra);
  return lines.join("\n") + "\n";
}

/**
 * Writes a file only its owner (by default) can read: a fresh temporary file (never one left over, whose
 * mode could be another), synced, then renamed over the old one and the directory synced, so
 * that a crash leaves the old file or the new one.
 */
async function writePrivate(path: string, text: string, mode = 0o600, opts: { keepGroup?: boolean } = {}): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await rm(tmp, { force: true });
  const gid = opts.keepGroup ? await stat(path).then((st) => st.gid, () => undefined) : undefined;
  const fh = await open(tmp, "wx", 0o600);
  try {
    // The group an administrator gave the old file, then the mode (not left to the umask).
    if (gid !== undefined) await fh.chown(-1, gid);
    await fh.chmod(mode);
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  const dir = await open(dirname(path), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

function defaultServerName(storeDir: string): string {
  return "ck-" + createHash("sha256").update(storeDir).digest("hex").slice(0, 16);
}

function portFree(port: number, host: string): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once("error", () => res(false));
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => res(true)));
  });
}

async function waitPortFree(port: number, host: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await portFree(port, host)) return true;
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
}

async function writeState(storeDir: string, state: NatsServerState): Promise<void> {
  const path = join(storeDir, STATE_FILE);
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(state, null, 2) + "\n", { mode: 0o640 });
  await rename(tmp, path);
}

function readCmdline(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return raw.split("\0").filter((a, i, all) => a !== "" || i < all.length - 1);
  } catch {
    return undefined;
  }
}

async function killAndWait(pid: number, termTimeoutMs: number): Promise<void> {
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  };
  signal("SIGTERM");
  if (await waitGone(pid, termTimeoutMs)) return;
  signal("SIGKILL");
  if (!(await waitGone(pid, 5_000))) throw unavailable(`orphaned nats-server pid ${pid} did not exit after SIGKILL`);
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

function isRunning(child: ChildProcess | undefined): boolean {
  return !!child && child.pid !== undefined && child.exitCode === null && child.signalCode === null;
}

function readTail(file: string, from: number, max = 3000): string {
  try {
    const text = readFileSync(file, "utf8").slice(from);
    return text.slice(-max).trim();
  } catch {
    return "";
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Start-up failed because the port belongs to someone else; another port may work. */
class PortTakenError extends Error {
  override name = "PortTakenError";
}

/** Errors leave this module as errdefs errors; PortTakenError is internal. */
function publicError(err: unknown): Error {
  if (err instanceof PortTakenError) return unavailable(err.message, { cause: err });
  return err as Error;
}

function rethrowPublic(err: unknown): never {
  throw publicError(err);
}

class EarlyExitError extends Error {
  constructor(
    readonly code: number | null,
    readonly signal: NodeJS.Signals | null,
  ) {
    super(`exited with ${code ?? signal}`);
  }
}
