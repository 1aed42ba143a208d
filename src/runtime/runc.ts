// Tasks on runc, without a shim process: each task's `runc run` (foreground) runs under a
// keeper, a shell that is ckd's child while ckd runs and outlives it, waits for runc (the
// parent of the container's init) and leaves runc's exit status in the bundle; so ckd learns
// every exit status, and the next ckd adopts the task (see adopt, and reconcile in
// src/api/tasks-service.ts). Exec processes run under keepers of their own the same way, and
// a process on a console under a console keeper (console-keeper.ts, a Node process holding
// its pty). Layout under ckd's root:
//   tasks/<namespace>/<id>/        the bundle: config.json (the container's spec and ckd's gate
//                                  hook), rootfs/ (the task's rootfs mounts), init.pid, the
//                                  keeper's shim.pid and exit, runc.log, ck-runc.json
//     (and start.fifo, created.json: the gate; update-*.json; a console's console.err,
//     console.pid, console.log; a logging program's logger.pid)
//   consoles/<hash>.sock           console keepers' sockets (see consoleSocket)
//     execs/<exec>/                an exec process: process.json (its spec), pid (runc's pid
//                                  file), its keeper's shim.pid and exit, runc.log, and
//                                  state.json (the service's record of it, see writeExecRecord)
//   runc/<namespace>/              runc's state directory (`runc --root`), one per namespace
//                                  as containerd's, so ids need only be unique in a namespace
//                                  (a container's runc options may name another root)
import { spawn, type ChildProcess } from "node:child_process";
import { constants as fsc, promises as fs, openSync, closeSync, existsSync, fstatSync, lstatSync, mkdirSync, readFileSync, readlinkSync, readSync, realpathSync, writeFileSync, writeSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { failedPrecondition, invalidArgument, notFound, notImplemented, unavailable, unknown } from "../errdefs/errdefs.js";
import { isMountPoint, mountAll, runCommand, unmountAll } from "../snapshots/mount.js";
import { CGROUP_ROOT, controllerPaths, isCgroupV1, METRICS_V1_TYPE, parseKeyValues, readMetricsV1 } from "./cgroups-v1.js";
import { isSameProcess, keptProcessGone, keptProcessLine, optBinary, procStat, readKeptProcess, runningKeptProcess } from "./proc.js";
import { METRICS_V2_TYPE, readMetricsV2, unifiedPath } from "./cgroups-v2.js";
import { missingProgram, type ProgramSpec } from "./lookpath.js";
import { firstUnsearchable, remappedRoot, type UserNsSpec } from "./userns.js";
import type { Mount } from "../snapshots/types.js";

import type { TaskIo } from "../commands/tasks.js";
import { CONSOLE_ERR, CONSOLE_LOG, CONSOLE_RUNC_PID, KEEPER_EXIT, consoleSocket, tail, ttySocket, type ConsoleKeeperConfig, type Exit, type Launched } from "./console.js";

export type { Exit } from "./console.js";

/** A started task: its init's pid and, once it ends, how. */
export interface Started {
  pid: number;
  exited: Promise<Exit>;
}

interface Running {
  /** runc's own pid (the leader of its process group), once spawned. */
  pid: number | undefined;
  launched?: Launched;
  /** A process on a console: its keeper's socket (resize, stdin's start and end). */
  console?: ConsoleChannel;
  /** A process on a console: its directory (where its keeper leaves runc's pid). */
  consoleDir?: string;
  /** A created init's gate FIFO (ckd's end), until Start or the process's end. */
  gate?: number;
  /** The container process's pid (the init's or the exec's), once known. */
  proc?: number;
}

interface TaskStdin {
  /** A console's stdin: the FIFO's reader (non-blocking), handed to its keeper, which types it into the pty. */
  reader?: number;
  /** Any other process's stdin: a blocking reader of the FIFO, handed to runc as it is. */
  direct?: number;
  /** Our own writer on the FIFO until the client's surely connected (see openIo). */
  holder: number | undefined;
}

/** A task's stdio from openIo until its process ends (or the task goes unstarted). */
interface TaskIoHandles {
  out: number | undefined;
  err: number | undefined;
  stdin: TaskStdin | undefined;
  /** A console (ctr -t): runc runs on its keeper's pty; stdout carries its output. */
  terminal: boolean;
  /** The console's size, from a ResizePty before its launch. */
  size?: { cols: number; rows: number };
  /** The output paths that are FIFOs (see drainStuckOutput). */
  fifos: string[];
}

/** node-pty, loaded when the first terminal task starts (a native addon). */
let ptyModule: Promise<typeof import("node-pty")> | undefined;
async function loadPty(): Promise<typeof import("node-pty")> {
  ptyModule ??= import("node-pty").then((m) => ((m as { default?: typeof import("node-pty") }).default ?? m));
  return ptyModule.catch((err) => {
    throw failedPrecondition(`terminals need the node-pty module, which did not load: ${(err as Error).message}`);
  });
}

const PID_WAIT_MS = 10_000;
const CREATE_WAIT_MS = 60_000;

/**
 * The shell keeper (where ck-reaper was not built, or for a task with a user namespace): a
 * shell between ckd and runc in the foreground that outlives ckd, waits for runc and leaves
 * its exit status in the bundle, so the next ckd can adopt the task (runc's status, 128 +
 * signal for a killed one, as runc reports its container's). `$1` is the exit file, the rest
 * runc's command line.
 */
// TERM, HUP and INT sent to the keeper alone do not end it under a running runc (a trap with
// a command, not an ignored signal: runc and the container get the default dispositions); a
// service manager that signals ckd's whole cgroup reaches runc too (run ckd with systemd's
// KillMode=process, as containerd's unit does). runc stays in the foreground, so its stdin is
// the keeper's (a background job's would be /dev/null, with INT and QUIT ignored).
const SHIM_SCRIPT = 'f=$1; shift; trap : TERM HUP INT; "$@"; s=$?; echo $s > "$f.tmp" && mv "$f.tmp" "$f"; exit $s';
/** bash: closes every descriptor past `last` that the shell inherited. */
const closePast = (last: number) => `for fd in /proc/$$/fd/*; do n=\${fd##*/}; [ "$n" -gt ${last} ] && eval "exec $n>&-"; done; `;
const CLOSE_INHERITED = closePast(2);
/**
 * The keeper's shell: bash where there is one (Debian's is essential), which first closes
 * every descriptor it inherited past stdio (anything not close-on-exec, which a keeper
 * outliving ckd would otherwise hold for good). dash cannot name descriptors past 9.
 */
const BASH = existsSync("/bin/bash");
const KEEPER = BASH ? { shell: "/bin/bash", script: `${CLOSE_INHERITED}${SHIM_SCRIPT}` } : { shell: "/bin/sh", script: SHIM_SCRIPT };
/**
 * A console's runc is started through bash (where there is one), which closes what it
 * inherited past stdio and then becomes runc (same pid): other consoles' pty masters would
 * otherwise stay open in it, and their ptys allocated, for as long as it runs. The console's
 * keeper (a Node process, console-keeper.js) is started the same way, keeping its fds 3-5.
 */
const CONSOLE_KEEPER = fileURLToPath(new URL("./console-keeper.js", import.meta.url));
/**
 * The keeper of a task's init and of an exec process (not on a console) where it was built
 * (npm run build; ck-reaper.c): a child subreaper running `runc run|exec --detach`, which
 * waits for the process itself and copies its output, so its end is seen whatever else still
 * holds its output. Without it, the shell keeper and runc in the foreground, whose end waits
 * for every holder of the output to let go.
 */
const REAPER_PATH = fileURLToPath(new URL("../../ck-reaper", import.meta.url));
const REAPER = existsSync(REAPER_PATH) ? REAPER_PATH : undefined;
/** Whether process `pid` runs ck-reaper (also one built over since it started: "(deleted)"). */
function isReaper(pid: number): boolean {
  if (REAPER === undefined) return false;
  try {
    const exe = readlinkSync(`/proc/${pid}/exe`);
    return exe === REAPER_REAL || exe === `${REAPER_REAL} (deleted)`;
  } catch {
    return false;
  }
}
const REAPER_REAL = REAPER === undefined ? "" : realpathSync(REAPER);
const CONSOLE_EXEC = BASH ? { shell: "/bin/bash", script: `${CLOSE_INHERITED}exec "$@"` } : undefined;
/** In a bundle: the keeper's pid and start time, the exit status it left, runc's own log. */
const SHIM_PID = "shim.pid";
const EXIT_FILE = KEEPER_EXIT;
const RUNC_LOG = "runc.log";
/**
 * A process's binary:// logger (in the bundle, or the exec's directory): its pid and start
 * time, so that whichever ckd deletes the process can end it; and the FIFOs its pipes are
 * made from (removed once open; left only by a crash in between).
 */
const LOGGER_PID = "logger.pid";
const LOGGER_FIFOS = ["log-stdout", "log-stderr", "log-ready"];
/** How long a logger may take to say it is ready (containerd's shim waits without a bound). */
const LOGGER_READY_MS = 30_000;
/** How long a logger has to end after SIGTERM when its process is deleted (containerd: 12 s). */
const LOGGER_TERM_MS = 12_000;
/** In an exec's directory: its process spec, runc's pid file, the service's record of it. */
const EXEC_SPEC = "process.json";
const EXEC_PID = "pid";
const EXEC_RECORD = "state.json";
/**
 * Every file ck puts in an exec's directory (runc's temporary pid file among them), its
 * record first: a removal cut short leaves no record of a deleted exec for the next ckd.
 */
const EXEC_FILES = [EXEC_RECORD, `${EXEC_RECORD}.tmp`, EXEC_SPEC, EXEC_PID, `.${EXEC_PID}`, SHIM_PID, EXIT_FILE, `${EXIT_FILE}.tmp`, RUNC_LOG, LOGGER_PID, ...LOGGER_FIFOS, CONSOLE_ERR, CONSOLE_LOG, CONSOLE_RUNC_PID];

/** What an earlier ckd left of an exec process (see execRecords). */
export interface ExecLeft {
  exec: string;
  /** The service's record (writeExecRecord), undefined when none was written. */
  record: unknown;
  /** The process's pid, from runc's pid file, once it was started. */
  pid: number | undefined;
  /** Whether it was started under a keeper (which adopt can take over). */
  kept: boolean;
}
/** How often an adopted task's exit file is looked for. */
const ADOPTED_POLL_MS = 250;

/** In a bundle: the FIFO a created init's hook waits at, and the state the hook saved. */
const GATE = "start.fifo";
const CREATED = "created.json";
/**
 * ckd's createRuntime hook (runc runs it with the container's state on stdin, the init's pid
 * in it): saves the state whole, then waits for a line at the gate; anything but "start"
 * fails the hook, and runc then kills the init and exits.
 */
const GATE_SCRIPT = 'cat > "$1.tmp" && mv "$1.tmp" "$1" && read -r go < "$2" && [ "$go" = start ]';

/**
 * How a task's runc is run: what ck reads of containerd's runc options
 * (containerd.runc.v1.Options on the container's runtime).
 */
export interface RuncOptions {
  /** The runc binary: a name looked up on PATH, or a path. */
  binary: string;
  /** runc's state root; the namespace is appended, as containerd's shim does. */
  root: string;
  systemdCgroup: boolean;
  noPivotRoot: boolean;
  noNewKeyring: boolean;
}

/**
 * A failure of runc itself, as containerd's shim reports one: class Unknown, its message led
 * as the shim's (pkg/process): `OCI runtime create|start|exec|pause|resume failed`, `unknown
 * error after kill`; go-runc's error alone for the rest (update, ps, state). A create's is led
 * as containerd's runtime manager wraps the shim's (runtime/v2/manager.go): `failed to create
 * shim task: OCI runtime create failed: …`.
 */
function runtimeFailed(op: string, detail: string) {
  const lead = RUNTIME_LEADS.get(op);
  return unknown(lead ? `${lead}: ${detail}` : detail);
}
const RUNTIME_LEADS = new Map([
  ["create", "failed to create shim task: OCI runtime create failed"],
  ...["start", "exec", "pause", "resume"].map((o): [string, string] => [o, `OCI runtime ${o} failed`]),
  ["kill", "unknown error after kill"],
]);

/** What ckd reads of a bundle's config.json once it is written. */
interface BundleSpec {
  root?: { path?: string };
  process?: ProgramSpec;
  hooks?: { createContainer?: unknown[] };
  linux?: { namespaces?: Array<{ type?: string; path?: string }> };
}

/** Where a bundle keeps the options its task's runc runs with (for every later runc command). */
const OPTIONS_FILE = "ck-runc.json";
/** An Update's resources on their way to `runc update` (removed after; swept with the bundle). */
const UPDATE_PREFIX = "update-";

export class RuncRuntime {
  private readonly running = new Map<string, Running>();
  private readonly ios = new Map<string, TaskIoHandles>();
  /** Whether the host's cgroups are v1 (or hybrid), once looked at. */
  private cgroupV1: Promise<boolean> | undefined;
  /** Each task's runc options, by namespace/id (from its bundle after a restart). */
  private readonly options = new Map<string, RuncOptions>();
  /** The cgroups of each task's init, as /proc/PID/cgroup gave them (see cgroupText). */
  private readonly cgroups = new Map<string, { pid: number; text: string }>();
  /** Whether each runtime binary takes `run --keep`, by its path. */
  private readonly keepFlag = new Map<string, Promise<boolean>>();

  /** ckd's root (absolute): bundles and runc's state live under it. */
  readonly root: string;

  constructor(
    root: string,
    readonly runc = "runc",
    /** The opt directory's bin/ (`ctr install`): runc binaries named by name are looked up there first, at each use. */
    readonly optBin?: string,
  ) {
    this.root = path.resolve(root);
  }

  bundleDir(ns: string, id: string): string {
    return path.join(this.root, "tasks", ns, id);
  }

  /** An exec process's directory in its task's bundle (exec ids are identifiers: one name each). */
  private execDir(ns: string, id: string, exec: string): string {
    return path.join(this.bundleDir(ns, id), "execs", exec);
  }

  /** The options a new task's runc runs with when its container names none. */
  defaultOptions(): RuncOptions {
    return { binary: this.runc, root: path.join(this.root, "runc"), systemdCgroup: false, noPivotRoot: false, noNewKeyring: false };
  }

  /** A task's runc options: as its Create set them, or as its bundle recorded them. */
  private optionsOf(ns: string, id: string): RuncOptions {
    const key = procKey(ns, id);
    let o = this.options.get(key);
    if (!o) {
      let text: string | undefined;
      try {
        text = readFileSync(path.join(this.bundleDir(ns, id), OPTIONS_FILE), "utf8");
      } catch (err) {
        // No bundle, or one made before ck recorded options: the defaults, as then.
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw failedPrecondition(`task "${id}": its runc options (${OPTIONS_FILE}) cannot be read: ${(err as Error).message}`);
      }
      try {
        o = { ...this.defaultOptions(), ...(text === undefined ? {} : (JSON.parse(text) as Partial<RuncOptions>)) };
      } catch (err) {
        throw failedPrecondition(`task "${id}": its runc options (${OPTIONS_FILE}) are damaged: ${(err as Error).message}`);
      }
      this.options.set(key, o);
    }
    return o;
  }

  /** runc's binary and global flags for a task: its state root (one per namespace), its cgroup driver. */
  private runcOf(ns: string, id: string): { binary: string; globals: string[]; root: string } {
    const o = this.optionsOf(ns, id);
    const root = path.join(o.root, ns);
    return { binary: optBinary(o.binary, this.optBin), root, globals: ["--root", root, ...(o.systemdCgroup ? ["--systemd-cgroup"] : [])] };
  }

  /** Whether a bundle path is this runtime's (a task another ckd created is not). */
  owns(bundle: string): boolean {
    return bundle.startsWith(path.join(this.root, "tasks") + path.sep);
  }

  /**
   * Makes the bundle: config.json from the container's spec (runtime-spec JSON, as containerd
   * stores it), rootfs/ with the task's mounts on it. Undone entirely when any step fails.
   */
  async prepare(ns: string, id: string, spec: Uint8Array, rootfs: readonly Mount[], terminal: boolean, options: RuncOptions = this.defaultOptions()): Promise<string> {
    const parsed = parseJson<{ process?: { args?: unknown[]; terminal?: unknown }; hooks?: Record<string, unknown> }>(spec, `container "${id}": spec is not runtime-spec JSON`);
    checkArgs(parsed.process?.args, `container "${id}": spec.process.args must name the program to run`);
    checkTerminal(parsed.process?.terminal, terminal, `container "${id}": spec.process.terminal`);
    if (parsed.hooks !== undefined && (typeof parsed.hooks !== "object" || parsed.hooks === null || Array.isArray(parsed.hooks))) {
      throw invalidArgument(`container "${id}": spec.hooks must be an object`);
    }
    // runc's decoder matches keys without regard to case (the last one winning): spelled
    // otherwise, a key could replace the hooks ckd adds.
    const odd = (o: object, canonical: string[]) => Object.keys(o).find((k) => canonical.some((c) => c.toLowerCase() === k.toLowerCase() && c !== k));
    const oddKey = odd(parsed, ["hooks"]) ?? (parsed.hooks ? odd(parsed.hooks, ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]) : undefined);
    if (oddKey) throw invalidArgument(`container "${id}": spec key "${oddKey}" must be spelled as the runtime spec does`);
    const createRuntime = parsed.hooks?.createRuntime ?? [];
    if (!Array.isArray(createRuntime)) throw invalidArgument(`container "${id}": spec.hooks.createRuntime must be a list`);
    const bundle = this.bundleDir(ns, id);
    const nsDir = path.dirname(bundle);
    // The directories above bundles 0711 (made 0700 by ck before 2026-12-02), as containerd's
    // state directories: a container with a user namespace has runc's init, as its mapped
    // root, pass through them to the rootfs.
    const makeNsDir = async () => {
      await fs.mkdir(nsDir, { recursive: true, mode: 0o711 });
      for (const d of [path.dirname(nsDir), nsDir]) await fs.chmod(d, 0o711);
    };
    await makeNsDir();
    const userRoot = remappedRoot(parsed as UserNsSpec);
    if (userRoot) {
      // What runc's init walks through as that root: the directories above the rootfs (the
      // bundle itself, made below, is given to its group).
      const rootfs = path.resolve(bundle, (parsed as BundleSpec).root?.path ?? "rootfs");
      const above = rootfs.startsWith(bundle + path.sep) ? nsDir : path.dirname(rootfs);
      const blocked = firstUnsearchable(above, userRoot);
      if (blocked) {
        throw failedPrecondition(
          `container "${id}" has a user namespace: its root (host uid ${userRoot.uid}, gid ${userRoot.gid}) cannot pass through ${blocked.dir} (mode ${blocked.mode.toString(8).padStart(4, "0")}) to the rootfs, so runc could not mount it; let others search it (chmod o+x ${blocked.dir}), as ckd's own root is made 0711`,
        );
      }
    }
    // 0700: the bundle exposes the rootfs (setuid binaries among it) and the spec (its env);
    // with a user namespace 0710 and the mapped root's group, as containerd's bundles.
    for (let attempt = 0; ; attempt++) {
      try {
        await fs.mkdir(bundle, { mode: 0o700 });
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EEXIST") throw failedPrecondition(`bundle ${bundle} exists: a task of "${id}" was not cleaned up`);
        // The namespace's directory removed meanwhile (the namespace deleted and made again).
        if (code === "ENOENT" && attempt === 0) {
          await makeNsDir();
          continue;
        }
        throw err;
      }
    }
    try {
      if (userRoot && userRoot.gid !== 0) {
        await fs.chown(bundle, -1, userRoot.gid);
        await fs.chmod(bundle, 0o710);
      }
      // The container's spec, with ckd's gate last among its createRuntime hooks (after the
      // container's own, which have run by the time Create answers): the init's pid handed
      // over, then a wait for Start.
      const gate = {
        path: "/bin/sh",
        args: ["sh", "-c", GATE_SCRIPT, "ck-gate", path.join(bundle, CREATED), path.join(bundle, GATE)],
        env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
      };
      await runCommand("mkfifo", ["-m", "0600", path.join(bundle, GATE)]);
      await fs.writeFile(path.join(bundle, "config.json"), withHooks(spec, parsed, { ...parsed.hooks, createRuntime: [...createRuntime, gate] }));
      await fs.writeFile(path.join(bundle, OPTIONS_FILE), JSON.stringify(options), { mode: 0o600 });
      this.options.set(procKey(ns, id), options);
      // runc's state directory for the namespace, once here rather than at every launch.
      await fs.mkdir(path.join(options.root, ns), { recursive: true, mode: 0o700 });
      if (rootfs.length > 0) {
        const target = path.join(bundle, "rootfs");
        await fs.mkdir(target, { mode: 0o700 });
        await mountAll(rootfs, target);
      }
    } catch (err) {
      await this.cleanup(ns, id).catch(() => undefined);
      throw err;
    }
    return bundle;
  }

  /**
   * Opens the task's stdio as containerd's shim does at create: stdout and stderr are the
   * FIFOs (or files) the client named, opened read-write so that writing never fails for want
   * of a reader; stdin's FIFO has a reader from now on (the client may write, and even close
   * its end, before Start): a blocking one handed to runc as the process's stdin (so it does
   * not depend on ckd), or, for a console, a reader its keeper types into the pty. The client's writer
   * opens only once a reader exists, so a writer of our own keeps the FIFO from reading as
   * ended until the client's has surely connected: Start (the client waited for Create before
   * its own writer could be left out), CloseIO, or (a console) its first bytes. From then on
   * stdin ends when the client closes it, after every byte.
   */
  async openIo(ns: string, id: string, io: TaskIo, exec?: string): Promise<void> {
    const key = procKey(ns, id, exec);
    const logger = binaryLogger(io.stdout);
    const fds: number[] = [];
    try {
      let out: number | undefined;
      let err: number | undefined;
      if (logger) {
        // As containerd's shim: stdout's scheme decides; a logging binary takes both outputs
        // (and stdin is not used, but on a console). It starts now, with the process's IO.
        const pipes = await startLogger(logger, exec ?? id, ns, exec ? this.execDir(ns, id, exec) : this.bundleDir(ns, id), this.bundleDir(ns, id));
        out = pipes.out;
        fds.push(pipes.out);
        if (io.terminal) closeSync(pipes.err);
        else fds.push((err = pipes.err));
      } else {
        out = openOutput(io.stdout, fds);
        // A console has one output, stdout, as containerd's shim copies it.
        err = io.terminal ? undefined : openOutput(io.stderr, fds);
      }
      // The client's output FIFOs (a logging program's pipes are read by it).
      const fifos: string[] = [];
      if (!logger) {
        for (const [fd, p] of [[out, io.stdout], [err, io.stderr]] as const) {
          if (fd !== undefined && fstatSync(fd).isFIFO()) fifos.push(p.startsWith("file://") ? fileURLToPath(p) : p);
        }
      }
      let stdin: TaskStdin | undefined;
      if (io.stdin && (!logger || io.terminal)) {
        if (!path.isAbsolute(io.stdin)) throw invalidArgument(`io path ${JSON.stringify(io.stdin)} must be absolute`);
        const reader = openWithContext(io.stdin, fsc.O_RDONLY | fsc.O_NONBLOCK);
        fds.push(reader);
        if (!fstatSync(reader).isFIFO()) throw invalidArgument(`stdin ${io.stdin} is not a FIFO`);
        const holder = openWithContext(io.stdin, fsc.O_WRONLY | fsc.O_NONBLOCK);
        fds.push(holder);
        if (io.terminal) {
          // Read by the console's keeper (which lets our writer go at its first bytes too).
          stdin = { reader, holder };
        } else {
          // The process reads the FIFO itself (through runc), so its stdin does not depend on
          // ckd: a blocking reader (opened at once: our writer is there), the other one closed.
          const direct = openWithContext(io.stdin, fsc.O_RDONLY);
          fds.push(direct);
          closeSync(reader);
          fds.splice(fds.indexOf(reader), 1);
          stdin = { direct, holder };
        }
      }
      this.ios.set(key, { out, err, stdin, terminal: io.terminal, fifos });
    } catch (e) {
      for (const fd of fds) closeSync(fd);
      throw e;
    }
  }

  private closeIoHandles(key: string): void {
    const io = this.ios.get(key);
    if (!io) return;
    this.ios.delete(key);
    for (const fd of [io.out, io.err]) if (fd !== undefined) closeSync(fd);
    if (io.stdin) {
      for (const fd of [io.stdin.holder, io.stdin.direct, io.stdin.reader]) if (fd !== undefined) closeSync(fd);
    }
  }

  /**
   * Makes the task's init process, as `runc create` would, but as ckd's child: `runc run
   * --detach` under ck-reaper (runc in the foreground on a console, without the reaper, or
   * with a user namespace), held by a createRuntime hook of ckd's (see prepare) once the container's
   * namespaces and cgroups exist and before its program runs. The hook hands over the init's
   * pid and waits at the bundle's gate FIFO for start (or stop). Runs on the stdio openIo
   * opened; a terminal process's runc on its console keeper's pty (runc makes the container's
   * console and relays it to that pty, raw, resized on SIGWINCH; the keeper copies stdin in
   * and the output to stdout). Failures of runc (a spec it refuses, a rootfs it cannot use)
   * surface here.
   */
  async create(ns: string, id: string): Promise<Started> {
    const key = procKey(ns, id);
    const bundle = this.bundleDir(ns, id);
    // Read once: for how runc runs, and for the program's look-up below.
    const spec = this.bundleSpec(ns, id);
    // Open before the hook can look (read-write: never blocks, and what is written stays
    // until read, however late the hook opens it): the pipe lives while ckd holds it.
    const gate = openSync(path.join(bundle, GATE), fsc.O_RDWR | fsc.O_NONBLOCK);
    let launch: Awaited<ReturnType<RuncRuntime["launch"]>>;
    try {
      const o = this.optionsOf(ns, id);
      const flags = [...(o.noPivotRoot ? ["--no-pivot"] : []), ...(o.noNewKeyring ? ["--no-new-keyring"] : [])];
      // Under ck-reaper where it was built (as an exec; not with a user namespace unless on a
      // console): `run --detach` leaves once the init runs, the reaper waits for the init
      // itself and copies its output (a console's from the master runc sends to its socket),
      // so the init's end is its own whatever holds its output,
      // and runc's failure text is not copied into it. In the foreground, --keep where the
      // runtime has it (runc 1.1, crun; not an older runc or runsc). Either way the container,
      // its cgroups with it, stays once the init has ended, until the task's deletion, as
      // containerd's shim keeps it: its statistics and out-of-memory count can still be read.
      const pidFile = path.join(bundle, "init.pid");
      const detach = this.reaperFlags(bundle, this.ios.get(key)?.terminal === true, spec.linux?.namespaces ?? []);
      const keep = !detach && (await this.supportsKeep(this.runcOf(ns, id).binary)) ? ["--keep"] : [];
      launch = await this.launch(ns, id, undefined, ["run", ...(detach ?? keep), ...flags, "--bundle", bundle, "--pid-file", pidFile, id], detach ? pidFile : undefined);
    } catch (err) {
      closeSync(gate);
      throw err;
    }
    const { running } = launch;
    if (running.launched?.ended()) closeSync(gate);
    else running.gate = gate;
    // The container's own createRuntime hooks (networking, devices) run before ckd's: a minute.
    const pid = await this.awaitPid("create", ns, id, undefined, launch, () => readCreatedPid(path.join(bundle, CREATED)), CREATE_WAIT_MS);
    setProc(running, pid);
    // Its cgroups (runc made them before its gate), known while the pid is surely its.
    await this.cgroupText(ns, id, pid);
    if (this.running.get(key) !== running) throw failedPrecondition(`task "${id}" ended while it was created`);
    // runc looks the program up only after the gate: looked up here, in the init's view of
    // its root (its mounts made), so a missing one fails Create as under containerd. Not
    // when the container has createContainer hooks, which runc runs after the gate (they may
    // put the program there). The caller's cleanup stops the held init.
    if (!spec.hooks?.createContainer?.length) {
      const missing = await missingProgram(path.join(`/proc/${pid}/root`, path.resolve(bundle, spec.root?.path ?? "rootfs")), spec.process ?? {});
      // In runc's words, as `runc create` refuses it under containerd.
      if (missing) throw runtimeFailed("create", `runc create failed: unable to start container process: ${missing}`);
    }
    return { pid, exited: launch.launched.exited };
  }

  /**
   * Starts a created task's init (the hook lets runc go on), or, given `exec`, that exec
   * process with `runc exec` in the foreground (prepared by prepareExec) on its stdio.
   */
  async start(ns: string, id: string, exec?: string): Promise<Started> {
    const bundle = this.bundleDir(ns, id);
    if (exec) {
      const dir = this.execDir(ns, id, exec);
      const pidFile = path.join(dir, EXEC_PID);
      const io = this.ios.get(procKey(ns, id, exec));
      const detach = this.reaperFlags(dir, io?.terminal === true, this.specNamespaces(ns, id));
      // A size asked for before Start: runc's init makes the console at that size before the
      // program runs (the process spec's consoleSize), not just after.
      if (io?.terminal && io.size) await withConsoleSize(path.join(dir, EXEC_SPEC), io.size);
      const launch = await this.launch(ns, id, exec, ["exec", ...(detach ?? []), "--process", path.join(dir, EXEC_SPEC), "--pid-file", pidFile, id], detach ? pidFile : undefined);
      this.startedStdin(procKey(ns, id, exec));
      const pid = await this.awaitPid("exec", ns, id, exec, launch, () => readPid(pidFile));
      setProc(launch.running, pid);
      launch.launched.started();
      return { pid, exited: launch.launched.exited };
    }
    const running = this.running.get(procKey(ns, id));
    if (!running?.launched || running.gate === undefined) {
      throw failedPrecondition(`task "${id}" has no created process here${running ? ": it is already started" : ""}`);
    }
    const launch = { running, launched: running.launched, args: ["run"] };
    this.startedStdin(procKey(ns, id));
    writeSync(running.gate, "start\n");
    // After the gate, runc still runs the container's createContainer and startContainer
    // hooks: as long as Create allows for its own.
    const pid = await this.awaitPid("start", ns, id, undefined, launch, () => readPid(path.join(bundle, "init.pid")), CREATE_WAIT_MS);
    closeGate(running);
    setProc(running, pid);
    running.launched.started();
    return { pid, exited: running.launched.exited };
  }

  /**
   * A created (never started) init ended: its hook told to stop, so runc kills the init and
   * exits; killed outright if it has not within a few seconds. Nothing when there is none.
   */
  async stopCreated(ns: string, id: string): Promise<void> {
    const running = this.running.get(procKey(ns, id));
    if (!running?.launched || running.gate === undefined) return;
    writeSync(running.gate, "stop\n");
    const gone = await Promise.race([running.launched.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
    if (!gone && running.pid) {
      killRunning(running);
      await running.launched.exited;
    }
  }

  /** Spawns runc for a process (plain or on a pty), registered as running until it exits. */
  private async launch(ns: string, id: string, exec: string | undefined, args: string[], reapedPidFile?: string): Promise<{ running: Running; launched: Launched; args: string[] }> {
    const key = procKey(ns, id, exec);
    const what = `task "${id}"${exec ? ` exec "${exec}"` : ""}`;
    if (this.running.has(key)) throw failedPrecondition(`${what} is already started`);
    const io = this.ios.get(key);
    if (!io) throw failedPrecondition(`${what} has no stdio here: it was created by an earlier ckd`);
    // Without ck-reaper a console's keeper is a Node process running node-pty: said here,
    // before anything runs, if it cannot load.
    if (io.terminal && !(reapedPidFile && REAPER)) {
      // Without bash nothing could close what node-pty's child inherits (stdin's holder among it).
      if (!BASH) throw failedPrecondition(`${what}: consoles need /bin/bash where ck-reaper was not built`);
      await loadPty();
    }
    // Checked again after the wait; from here to the spawn, synchronously: no second
    // Create or Start, no Delete in between.
    if (this.running.has(key) || this.ios.get(key) !== io) throw failedPrecondition(`${what} is already started`);
    const runc = this.runcOf(ns, id);
    const argv = [...runc.globals, ...args];
    const running: Running = { pid: undefined };
    // Only what is still this launch's is let go: a later task of the same id has its own.
    const release = () => {
      closeGate(running);
      running.console?.close();
      if (this.running.get(key) !== running) return;
      this.running.delete(key);
      if (this.ios.get(key) === io) this.closeIoHandles(key);
    };
    // A started process outlives ckd through its keeper (a console's holds its console).
    const dir = exec ? this.execDir(ns, id, exec) : this.bundleDir(ns, id);
    const launched = io.terminal ? launchConsole(runc.binary, argv, io, running, dir, consoleSocket(this.root, dir), reapedPidFile) : launchPlain(runc.binary, argv, io, running, { bundle: dir, reapedPidFile });
    // An init's end (the container's, runc's own, or its keeper killed under it) is reported
    // once what it ran is stopped: runc killed or crashed leaves no one else to stop it. It
    // stays running here until then, so ckd's stop waits for it too.
    if (!exec) {
      const ended = launched.exited;
      launched.exited = ended.then(async (exit) => {
        await this.stopEnded(ns, id);
        return exit;
      });
    }
    running.launched = launched;
    this.running.set(key, running);
    // The reaper bounds its own copy of the output (2 s after the process's end): nothing to watch.
    if (!io.terminal && io.fifos.length > 0 && !(reapedPidFile && REAPER)) watchStuckOutput(running, launched, io.fifos);
    void launched.exited.then(release);
    launched.failed.catch(release);
    return { running, launched, args };
  }

  /**
   * The pid `read` finds once runc wrote it; runc's own error when runc exited first. A pid
   * that does not come in time: what runc runs is killed, nothing of it may run unrecorded.
   */
  private async awaitPid(op: "create" | "start" | "exec", ns: string, id: string, exec: string | undefined, launch: { running: Running; launched: Launched; args: string[] }, read: () => Promise<number | undefined>, waitMs = PID_WAIT_MS): Promise<number> {
    const { running, launched, args } = launch;
    const pid = await Promise.race([waitFor(read, launched.exited, waitMs), launched.failed]).catch(async (e) => {
      if (running.pid && !launched.ended()) {
        killRunning(running);
        if (!exec) await this.forceDelete(ns, id);
        await launched.exited;
      }
      throw e;
    });
    if (pid !== undefined) return pid;
    const exit = await launched.exited;
    // All of runc's own error text: its output has ended once the child is closed.
    await Promise.race([launched.closed, new Promise((r) => setTimeout(r, 1000))]);
    const runcErr = launched.errorText();
    throw runtimeFailed(op, `runc ${args[0]} ${id}${exec ? ` (exec "${exec}")` : ""} failed (exit ${exit.status})${runcErr ? `: ${runcErr}` : ""}`);
  }

  /**
   * ResizePty: a terminal process's console takes the size (runc passes it on to the
   * container's); before Start, the size it starts with. Processes without one ignore it, as
   * containerd's do. False when there is no such process here.
   */
  async resize(ns: string, id: string, exec: string | undefined, cols: number, rows: number): Promise<boolean> {
    const key = procKey(ns, id, exec);
    const running = this.running.get(key);
    if (running) {
      // Answered once the console has its size.
      await answered(this.consoleOf(ns, id, exec, running)?.request(`resize ${cols} ${rows}`));
      return true;
    }
    const io = this.ios.get(key);
    if (io?.terminal) io.size = { cols, rows };
    return io !== undefined;
  }

  /**
   * At Start, the client's stdin writer is surely there (it waited for Create, after which
   * ckd reads): our own writer lets go, so stdin ends when the client's does.
   */
  private startedStdin(key: string): void {
    const stdin = this.ios.get(key)?.stdin;
    if (stdin) releaseHolder(stdin);
  }

  /** CloseIO: the task's stdin ends once what was written to it is read. */
  async closeStdin(ns: string, id: string, exec?: string): Promise<void> {
    const key = procKey(ns, id, exec);
    const stdin = this.ios.get(key)?.stdin;
    if (stdin) releaseHolder(stdin);
    // A console's stdin is its keeper's.
    const running = this.running.get(key);
    if (running) await answered(this.consoleOf(ns, id, exec, running)?.request("closeio"));
  }

  /**
   * The keeper's socket of a process on a console: the one launched here, or (adopted from an
   * earlier ckd) connected on first use. Undefined for any other process.
   */
  private consoleOf(ns: string, id: string, exec: string | undefined, running: Running): ConsoleChannel | undefined {
    if (running.console || running.launched) return running.console;
    const sock = consoleSocket(this.root, exec ? this.execDir(ns, id, exec) : this.bundleDir(ns, id));
    if (existsSync(sock)) running.console = new ConsoleChannel(sock, () => false);
    return running.console;
  }

  async kill(ns: string, id: string, signal: number, all: boolean): Promise<void> {
    await this.runcCommand(ns, id, ["kill", ...(all ? ["--all"] : []), id, String(signal)]);
  }

  /** `runc update`: a running task's resources (runtime-spec LinuxResources JSON) changed. */
  async update(ns: string, id: string, resources: Uint8Array): Promise<void> {
    const file = path.join(this.bundleDir(ns, id), `${UPDATE_PREFIX}${process.pid}-${Date.now()}.json`);
    await fs.writeFile(file, resources, { mode: 0o600 });
    try {
      await this.runcCommand(ns, id, ["update", "--resources", file, id]);
    } finally {
      await fs.unlink(file).catch(() => undefined);
    }
  }

  /** The status runc gives the task's container (`runc state`: created, running, paused, stopped). */
  async status(ns: string, id: string): Promise<string> {
    const out = await this.runcCommand(ns, id, ["state", id]);
    try {
      return String((JSON.parse(out) as { status?: unknown } | null)?.status ?? "");
    } catch {
      throw failedPrecondition(`runc state ${id}: not the JSON runc prints: ${out.slice(0, 200)}`);
    }
  }

  async pause(ns: string, id: string): Promise<void> {
    await this.runcCommand(ns, id, ["pause", id]);
  }

  async resume(ns: string, id: string): Promise<void> {
    await this.runcCommand(ns, id, ["resume", id]);
  }

  /** Whether a runtime binary takes `run --keep` (asked once per binary). */
  private supportsKeep(binary: string): Promise<boolean> {
    let known = this.keepFlag.get(binary);
    if (!known) {
      known = runCommand(binary, ["run", "--help"]).then(
        (out) => /(^|\s)--keep\b/m.test(out),
        () => false,
      );
      this.keepFlag.set(binary, known);
    }
    return known;
  }

  /**
   * The cgroups of a task's init (`/proc/PID/cgroup`), kept from when it ran: they stay until
   * the task's deletion (runc run --keep), after the init has ended. `keptOnly`: for an init
   * that has ended, whose pid may be another process's now: only what was kept. "" when not
   * known.
   */
  private async cgroupText(ns: string, id: string, pid: number, keptOnly = false): Promise<string> {
    const key = procKey(ns, id);
    const kept = this.cgroups.get(key);
    if (kept?.pid === pid) return kept.text;
    if (keptOnly || !(pid > 0)) return "";
    const text = await fs.readFile(`/proc/${pid}/cgroup`, "utf8").catch(() => "");
    if (text) this.cgroups.set(key, { pid, text });
    return text;
  }

  /**
   * Whether the cgroups of the task's ended init `pid` are known here and kept: not under
   * systemd's cgroup driver, whose scope systemd removes once it is empty.
   */
  knowsCgroups(ns: string, id: string, pid: number): boolean {
    const key = procKey(ns, id);
    return this.cgroups.get(key)?.pid === pid && this.options.get(key)?.systemdCgroup !== true;
  }

  /**
   * The task's cgroup statistics, from the cgroups its init is in (/proc/<pid>/cgroup, as
   * containerd's shim finds them): io.containerd.cgroups.v1.Metrics on a v1 (or hybrid) host,
   * io.containerd.cgroups.v2.Metrics on a unified one.
   */
  async metrics(ns: string, id: string, pid: number, keptOnly = false): Promise<{ type: string; data: Record<string, unknown> }> {
    const text = await this.cgroupText(ns, id, pid, keptOnly);
    const gone = () => notFound(`task "${id}": no cgroup statistics (process ${pid} gone?)`);
    // The hierarchy does not change while ckd runs: looked at once.
    this.cgroupV1 ??= isCgroupV1();
    if (!(await this.cgroupV1)) {
      // The unified hierarchy (cgroup v2): containerd's io.containerd.cgroups.v2.Metrics.
      const at = unifiedPath(text);
      const data = at === undefined ? undefined : await readMetricsV2(at);
      if (!data) throw gone();
      return { type: METRICS_V2_TYPE, data };
    }
    const data = await readMetricsV1(controllerPaths(text));
    if (Object.keys(data).length === 0) throw gone();
    return { type: METRICS_V1_TYPE, data };
  }

  /**
   * How many processes the kernel's out-of-memory killer has killed in the cgroup of `pid`
   * (memory.oom_control's oom_kill on cgroup v1, memory.events' on v2); undefined when that
   * cannot be read (the process or its cgroup gone).
   */
  async oomKills(ns: string, id: string, pid: number, keptOnly = false): Promise<number | undefined> {
    const text = await this.cgroupText(ns, id, pid, keptOnly);
    this.cgroupV1 ??= isCgroupV1();
    const file = (await this.cgroupV1)
      ? ((at) => (at === undefined ? undefined : path.join(CGROUP_ROOT, "memory", path.join("/", at), "memory.oom_control")))(controllerPaths(text).get("memory"))
      : ((at) => (at === undefined ? undefined : path.join(CGROUP_ROOT, path.join("/", at), "memory.events")))(unifiedPath(text));
    if (!file) return undefined;
    const kv = parseKeyValues(await fs.readFile(file, "utf8").catch(() => ""));
    return kv.get("oom_kill");
  }

  /** The tasks whose started init this runtime runs or adopted (`adopted`: from an earlier ckd). */
  startedInits(): Array<{ ns: string; id: string; adopted: boolean }> {
    const out: Array<{ ns: string; id: string; adopted: boolean }> = [];
    for (const [key, r] of this.running) {
      const [ns, id, exec] = key.split("/") as [string, string, string | undefined];
      if (exec === undefined && r.gate === undefined) out.push({ ns, id, adopted: r.launched === undefined });
    }
    return out;
  }

  /** The pids in the task's container (`runc ps`). */
  async pids(ns: string, id: string): Promise<number[]> {
    const out = await this.runcCommand(ns, id, ["ps", "--format", "json", id]);
    const pids = JSON.parse(out || "[]") as unknown;
    return Array.isArray(pids) ? pids.map(Number) : [];
  }

  private async runcCommand(ns: string, id: string, args: string[]): Promise<string> {
    try {
      const runc = this.runcOf(ns, id);
      return await runCommand(runc.binary, [...runc.globals, ...args]);
    } catch (err) {
      const msg = (err as { stderr?: string }).stderr ?? (err as Error).message;
      if (/does not exist|not exist|container not running/i.test(msg)) throw notFound(`task "${id}": ${msg}`);
      throw runtimeFailed(args[0]!, `runc ${args[0]} ${id}: ${msg}`);
    }
  }

  /** Writes an exec's process spec (runtime-spec Process JSON) where `runc exec` reads it. */
  async prepareExec(ns: string, id: string, exec: string, spec: Uint8Array, terminal: boolean): Promise<void> {
    const parsed = parseJson<{ args?: unknown[]; terminal?: unknown }>(spec, `exec "${exec}": spec is not a runtime-spec Process`);
    checkArgs(parsed.args, `exec "${exec}": spec.args must name the program to run`);
    checkTerminal(parsed.terminal, terminal, `exec "${exec}": spec.terminal`);
    await fs.mkdir(path.join(this.bundleDir(ns, id), "execs"), { mode: 0o700 }).catch((err) => {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    });
    const dir = this.execDir(ns, id, exec);
    // What an exec of this id left (one whose Exec was cut short by a crash) goes first.
    await removeExecFiles(dir);
    await fs.mkdir(dir, { mode: 0o700 });
    await fs.writeFile(path.join(dir, EXEC_SPEC), spec, { mode: 0o600 });
  }

  /** Drops what an exec left: its stdio, its logging binary, its directory. */
  async removeExec(ns: string, id: string, exec: string): Promise<void> {
    const key = procKey(ns, id, exec);
    this.closeIoHandles(key);
    const dir = this.execDir(ns, id, exec);
    await Promise.all([stopLogger(dir), this.stopLeftKeeper(dir)]);
    await removeExecFiles(dir).catch(() => undefined);
  }

  /**
   * Keeps the service's record of an exec (JSON) in its directory, so that the next ckd knows
   * it (see execRecords). Nothing when the exec's directory is gone (deleted meanwhile).
   */
  async writeExecRecord(ns: string, id: string, exec: string, record: unknown): Promise<void> {
    const file = path.join(this.execDir(ns, id, exec), EXEC_RECORD);
    try {
      await fs.writeFile(`${file}.tmp`, JSON.stringify(record), { mode: 0o600 });
      await fs.rename(`${file}.tmp`, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }

  /** The exec processes an earlier ckd left in a task's bundle: records, pids, keepers. */
  async execRecords(ns: string, id: string): Promise<ExecLeft[]> {
    const top = path.join(this.bundleDir(ns, id), "execs");
    const out: ExecLeft[] = [];
    for (const entry of await fs.readdir(top, { withFileTypes: true }).catch(() => [])) {
      if (!entry.isDirectory()) continue;
      const dir = path.join(top, entry.name);
      const text = readFileSafe(path.join(dir, EXEC_RECORD));
      let record: unknown;
      try {
        record = text === undefined ? undefined : JSON.parse(text);
      } catch {
        record = undefined; // damaged: as if none was written
      }
      out.push({ exec: entry.name, record, pid: await readPid(path.join(dir, EXEC_PID)), kept: existsSync(path.join(dir, SHIM_PID)) });
    }
    return out;
  }

  /**
   * Signals an exec's process, only while it is still the child of the `runc exec` that its
   * keeper runs and that has not yet ended (runc makes it so), or, under the reaper, the
   * reaper's own child not yet reaped: a pid freed since, perhaps another process's now, is
   * never signalled.
   */
  async signalExec(ns: string, id: string, exec: string, pid: number, signal: number): Promise<void> {
    const running = this.running.get(procKey(ns, id, exec));
    const gone = () => notFound("process already finished");
    if (!running?.pid || pid <= 0) throw gone();
    const parent = procStat(pid)?.ppid;
    // runc is the keeper's child (a plain keeper's, or a console keeper's on its pty); once
    // `runc exec --detach` has left, the reaper holds the process itself (only the reaper: a
    // shell keeper forks again after runc, a child that could be given the freed pid).
    const ours = parent !== undefined && ((parent === running.pid && isReaper(parent)) || procStat(parent)?.ppid === running.pid);
    if (!ours) throw gone();
    try {
      process.kill(pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ESRCH") throw gone();
      throw err;
    }
  }

  /**
   * Removes what a task left: runc's state (killing what still runs), the rootfs mounts, the
   * bundle. Unmounting comes before any removal, and the rootfs directory is removed with
   * rmdir, never recursively: a failed unmount must not delete through into a snapshot.
   */
  async cleanup(ns: string, id: string): Promise<void> {
    // A created init is told to stop (or killed); one an earlier ckd created, waiting at its
    // gate since, is told through the FIFO in its bundle.
    if (this.running.get(procKey(ns, id))?.gate !== undefined) await this.stopCreated(ns, id);
    else await this.stopOrphan(ns, id);
    const mine = (key: string) => key === `${ns}/${id}` || key.startsWith(`${ns}/${id}/`);
    for (const key of [...this.ios.keys()]) if (mine(key)) this.closeIoHandles(key);
    const bundle = this.bundleDir(ns, id);
    await this.forceDelete(ns, id);
    // The processes' logging binaries, as containerd's shim ends them at the deletion, and
    // consoles' keepers still giving a lagging reader the last output.
    const execDirs = (await fs.readdir(path.join(bundle, "execs"), { withFileTypes: true }).catch(() => [])).filter((e) => e.isDirectory());
    await Promise.all([bundle, ...execDirs.map((e) => path.join(bundle, "execs", e.name))].flatMap((dir) => [stopLogger(dir), this.stopLeftKeeper(dir)]));
    await unmountAll(path.join(bundle, "rootfs"));
    await removeBundle(bundle);
    this.options.delete(procKey(ns, id));
    this.cgroups.delete(procKey(ns, id));
  }

  /**
   * A keeper still running in `dir` when its process is deleted (its process is over): a
   * console's, still giving a lagging reader the last output, or one an earlier ckd's Create
   * left as it died. Ended (what none read is dropped), waited for, its socket removed.
   */
  private async stopLeftKeeper(dir: string): Promise<void> {
    const keeper = runningKeptProcess(path.join(dir, SHIM_PID));
    if (keeper) {
      killGroup(keeper.pid);
      killConsoleRunc(dir);
      await keptProcessGone(keeper, 2000);
    }
    await fs.unlink(consoleSocket(this.root, dir)).catch(() => undefined);
  }

  /** What an earlier ckd's created, never started init left waiting at its gate: stopped. */
  async stopOrphan(ns: string, id: string): Promise<void> {
    if (!this.running.has(procKey(ns, id))) await stopOrphanGate(path.join(this.bundleDir(ns, id), GATE));
  }

  /**
   * What an init's end leaves. Ended as runc saw it (run --detach, or --keep): the container stays,
   * stopped, with its cgroup, until the task's deletion; what the init left in it (without a
   * pid namespace of its own) is killed, as containerd's shim does. Otherwise (runc gone under
   * a running container, or before it was one) it is stopped and deleted now.
   */
  private async stopEnded(ns: string, id: string): Promise<void> {
    const state = await this.status(ns, id).catch(() => "");
    if (state !== "stopped") {
      this.cgroups.delete(procKey(ns, id));
      await this.forceDelete(ns, id);
    } else if (!this.specNamespaces(ns, id).some((n) => n.type === "pid" && !n.path)) {
      // With a pid namespace of its own, the kernel ended everything with the init; without,
      // what it left runs on (a kill --all of a cgroup shared with others is not wanted).
      await this.runcCommand(ns, id, ["kill", "--all", id, "KILL"]).catch(() => undefined);
    }
  }

  /**
   * The namespaces the task's spec gives it (its bundle's config.json; none when it cannot be
   * read). A user namespace keeps its processes' runc in the foreground, whose pipes runc gives
   * to the container's root (the reaper's belong to the host's, which such a container could
   * not reopen as /dev/stdout); one of its own for pids (not joined by path) ends everything
   * with the init.
   */
  /**
   * runc's flags for a process left to ck-reaper (`run|exec --detach`, a console's with the
   * socket its keeper takes the console on), or undefined where runc stays in the foreground:
   * no reaper built, or a process not on a console in a user namespace (runc in the
   * foreground gives the namespace's root pipes it owns; a console is made in the container,
   * the reaper's pipes play no part in it).
   */
  private reaperFlags(dir: string, terminal: boolean, namespaces: ReadonlyArray<{ type?: string }>): string[] | undefined {
    if (REAPER === undefined || (!terminal && namespaces.some((n) => n.type === "user"))) return undefined;
    return ["--detach", ...(terminal ? ["--console-socket", ttySocket(consoleSocket(this.root, dir))] : [])];
  }

  private specNamespaces(ns: string, id: string): Array<{ type?: string; path?: string }> {
    return this.bundleSpec(ns, id).linux?.namespaces ?? [];
  }

  /** The parts of a bundle's spec ckd reads after Create ({} when it cannot be read). */
  private bundleSpec(ns: string, id: string): BundleSpec {
    try {
      return JSON.parse(readFileSync(path.join(this.bundleDir(ns, id), "config.json"), "utf8")) as BundleSpec;
    } catch {
      return {};
    }
  }

  /**
   * A deleted namespace's directories: its bundles' and runc's default state root for it,
   * where empty (a bundle whose cleanup failed stays, with its directory).
   */
  async namespaceDeleted(ns: string): Promise<void> {
    for (const dir of [path.join(this.root, "tasks", ns), path.join(this.defaultOptions().root, ns)]) {
      await fs.rmdir(dir).catch(() => undefined);
    }
  }

  /** `runc delete --force`: kills what the container still runs and drops runc's state for it. */
  async forceDelete(ns: string, id: string): Promise<void> {
    const runc = this.runcOf(ns, id);
    await runCommand(runc.binary, [...runc.globals, "delete", "--force", id]).catch(() => undefined);
  }

  /** Every bundle directory under this runtime's root, as [namespace, id]. */
  async bundles(): Promise<Array<[string, string]>> {
    const out: Array<[string, string]> = [];
    const top = path.join(this.root, "tasks");
    for (const ns of await fs.readdir(top).catch(() => [] as string[])) {
      for (const id of await fs.readdir(path.join(top, ns)).catch(() => [] as string[])) out.push([ns, id]);
    }
    return out;
  }

  /**
   * At ckd's stop: what cannot outlive it ends: created inits are stopped (their gate is
   * ckd's). Started processes, on a console or not, run on under their keepers, for the next
   * ckd to adopt.
   */
  async stopOwnedByCkd(): Promise<void> {
    await Promise.all(
      [...this.running].map(([key, running]) => {
        const [ns, id, exec] = key.split("/") as [string, string, string | undefined];
        return exec === undefined && running.gate !== undefined ? this.stopCreated(ns, id) : undefined;
      }),
    );
    for (const running of this.running.values()) running.console?.close();
  }

  /** Inits created and not started: what dies with ckd. */
  get activeOwnedByCkd(): number {
    return [...this.running].filter(([, r]) => r.gate !== undefined).length;
  }

  /**
   * A started process (a task's init, or given `exec` one of its exec processes) an earlier
   * ckd ran, taken over: its exit, once its keeper has left it (at once if it ended while no
   * ckd ran; 255 if the keeper is gone without one, as containerd records a task whose shim
   * is gone). Undefined when it has no keeper (one of an older ckd): nothing
   * to adopt.
   */
  adopt(ns: string, id: string, exec?: string): { exited: Promise<Exit>; endedAlready: boolean } | undefined {
    const bundle = exec ? this.execDir(ns, id, exec) : this.bundleDir(ns, id);
    // An init's end stops what its container still runs (runc itself may have died); an
    // exec's is its own.
    const stopAll = () => (exec ? Promise.resolve() : this.stopEnded(ns, id));
    const keeper = readKeptProcess(path.join(bundle, SHIM_PID));
    if (!keeper) return undefined;
    const { pid, since } = keeper;
    // A zombie (its new parent never reaped it) has ended too.
    const alive = () => isSameProcess(pid, since);
    const left = async (name: string): Promise<Exit | undefined> => {
      const file = path.join(bundle, name);
      const exit = parseExitFile(await fs.readFile(file, "utf8").catch(() => undefined));
      if (exit) return { status: exit.status, at: exit.at ?? (await fs.stat(file).catch(() => undefined))?.mtime ?? new Date() };
      return undefined;
    };
    const key = procKey(ns, id, exec);
    const running: Running = { pid };
    const endedAlready = existsSync(path.join(bundle, EXIT_FILE)) || !alive();
    const exited = (async (): Promise<Exit> => {
      for (;;) {
        const exit = await left(EXIT_FILE);
        if (exit) {
          await stopAll();
          return exit;
        }
        if (!alive()) {
          // Gone between writing its status and moving it into place, or without one: what it
          // ran may still run (a keeper killed outright), and is stopped first.
          const last = (await left(EXIT_FILE)) ?? (await left(`${EXIT_FILE}.tmp`));
          await stopAll();
          return last ?? { status: 255, at: new Date() };
        }
        await new Promise((r) => setTimeout(r, ADOPTED_POLL_MS).unref());
      }
    })();
    // Registered as running (so that nothing starts or stops it twice), until its exit.
    this.running.set(key, running);
    void exited.then(() => {
      running.console?.close();
      if (this.running.get(key) === running) this.running.delete(key);
    });
    return { exited, endedAlready };
  }

}

/**
 * Removes a bundle whose rootfs is unmounted: the files ck put there, then the directories,
 * each with rmdir, never recursively, so nothing can delete through a mount that stayed.
 */
async function removeBundle(bundle: string): Promise<void> {
  try {
    await removeBundleFiles(bundle);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOTEMPTY") throw failedPrecondition(`bundle ${bundle} holds files ck did not put there; not removed`);
    throw err;
  }
}

/** An exec's directory: the files ck put there, then the directory (ENOTEMPTY if others are). */
async function removeExecFiles(dir: string): Promise<void> {
  for (const f of EXEC_FILES) {
    await fs.unlink(path.join(dir, f)).catch((err) => {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    });
  }
  await fs.rmdir(dir).catch((err) => {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  });
}

async function removeBundleFiles(bundle: string): Promise<void> {
  const execs = path.join(bundle, "execs");
  for (const entry of await fs.readdir(execs, { withFileTypes: true }).catch(() => [])) {
    if (entry.isDirectory()) await removeExecFiles(path.join(execs, entry.name));
    // An exec's spec and pid file as ckd kept them before execs had directories.
    else if (/\.(json|pid)$/.test(entry.name)) await fs.unlink(path.join(execs, entry.name));
  }
  await fs.rmdir(execs).catch((err) => {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  });
  // An Update's resources left by a ckd that died before removing them.
  for (const f of await fs.readdir(bundle).catch(() => [] as string[])) {
    if (f.startsWith(UPDATE_PREFIX) && f.endsWith(".json")) await fs.unlink(path.join(bundle, f));
  }
  // .init.pid: runc's temporary pid file, left when runc died between writing and renaming it.
  for (const f of ["config.json", "init.pid", ".init.pid", GATE, CREATED, `${CREATED}.tmp`, OPTIONS_FILE, SHIM_PID, EXIT_FILE, `${EXIT_FILE}.tmp`, RUNC_LOG, LOGGER_PID, ...LOGGER_FIFOS, CONSOLE_ERR, CONSOLE_LOG, CONSOLE_RUNC_PID]) {
    await fs.unlink(path.join(bundle, f)).catch((err) => {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    });
  }
  // What else is there was written by the task's logging program, which runs in the bundle
  // (as containerd's shim runs it): removed once the rootfs is surely not mounted, as
  // containerd removes the bundle; never through a mounted rootfs.
  const rootfs = path.join(bundle, "rootfs");
  const others = (await fs.readdir(bundle).catch(() => [] as string[])).filter((f) => f !== "rootfs");
  if (others.length > 0 && !(await isMountPoint(rootfs).catch(() => true))) {
    for (const f of others) await fs.rm(path.join(bundle, f), { recursive: true, force: true });
  }
  for (const d of [rootfs, bundle]) {
    await fs.rmdir(d).catch((err) => {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    });
  }
}

/** A JSON object from a spec's bytes, or InvalidArgument with `what` and the parser's reason. */
function parseJson<T>(bytes: Uint8Array, what: string): T {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (err) {
    throw invalidArgument(`${what}: ${(err as Error).message}`);
  }
  if (!v || typeof v !== "object") throw invalidArgument(`${what}: not a JSON object`);
  return v as T;
}

/**
 * The spec's own text with `hooks` set, appended as the object's last member (runc's decoder
 * takes the last of a repeated key): the rest stays byte for byte, so numbers past 2^53
 * (rlimits, memory limits, seccomp masks) are not rounded by a JSON round trip.
 */
function withHooks(spec: Uint8Array, parsed: object, hooks: object): string {
  const text = Buffer.from(spec).toString("utf8").trimEnd();
  const open = text.slice(0, -1); // without the final "}" (the text parsed as an object)
  return `${open}${Object.keys(parsed).length ? "," : ""}"hooks":${JSON.stringify(hooks)}}`;
}

function checkArgs(args: unknown[] | undefined, message: string): void {
  if (!Array.isArray(args) || args.length === 0) throw invalidArgument(message);
}

/**
 * A process's spec and its request must agree on a terminal (containerd's runc refuses the
 * mismatch at create too: a console socket without a tty, or a tty with no console socket).
 */
function checkTerminal(inSpec: unknown, requested: boolean, field: string): void {
  if (inSpec !== undefined && typeof inSpec !== "boolean") throw invalidArgument(`${field} must be a boolean`);
  if ((inSpec === true) !== requested) {
    throw invalidArgument(`${field} is ${inSpec === true} but the request's terminal is ${requested}: they must agree`);
  }
}

/** The runtime's key of a task's init (`ns/id`) or of one of its execs (`ns/id/exec`). */
function procKey(ns: string, id: string, exec?: string): string {
  return exec ? `${ns}/${id}/${exec}` : `${ns}/${id}`;
}

function releaseHolder(stdin: TaskStdin): void {
  if (stdin.holder === undefined) return;
  closeSync(stdin.holder);
  stdin.holder = undefined;
}

/** An output path as a descriptor for the child, or undefined for none. */
function openOutput(p: string, fds: number[]): number | undefined {
  if (!p) return undefined;
  let fd: number;
  if (p.startsWith("file://")) {
    let file: string;
    try {
      file = fileURLToPath(p);
    } catch (err) {
      throw invalidArgument(`io ${p}: ${(err as Error).message}`);
    }
    fd = openForOutput(file, fsc.O_CREAT); // made if absent, as containerd makes it
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(p)) {
    throw notImplemented(`io ${p}: only FIFO or file paths, file:// URIs and (for stdout) binary:// URIs are supported`);
  } else {
    if (!path.isAbsolute(p)) throw invalidArgument(`io path ${JSON.stringify(p)} must be absolute`);
    fd = openForOutput(p, 0);
  }
  fds.push(fd);
  return fd;
}

/**
 * Read-write first: a FIFO opens without waiting for a reader (never blocking ckd's event
 * loop in open(2)) and never fails for lack of one. A plain file is then appended to, as
 * containerd does.
 */
function openForOutput(file: string, create: number): number {
  const fd = openWithContext(file, fsc.O_RDWR | create);
  if (fstatSync(fd).isFIFO()) return fd;
  closeSync(fd);
  return openWithContext(file, fsc.O_WRONLY | fsc.O_APPEND);
}

function openWithContext(p: string, flags: number): number {
  try {
    return openSync(p, flags, 0o644);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw invalidArgument(`io path ${p} does not exist`);
    throw invalidArgument(`io path ${p}: ${(err as Error).message}`);
  }
}

/**
 * A `binary://` stdout URI (containerd's logging binaries), or undefined for any other
 * stdout. Malformed, or without a program path: InvalidArgument naming the field.
 */
function binaryLogger(stdout: string): { uri: URL; program: string } | undefined {
  if (!/^binary:/i.test(stdout)) return undefined;
  const bad = (why: string) => invalidArgument(`stdout ${JSON.stringify(stdout)}: ${why}`);
  let uri: URL;
  let program: string;
  try {
    uri = new URL(stdout);
    program = decodeURIComponent(uri.pathname);
  } catch (err) {
    throw bad(`not a URI: ${(err as Error).message}`);
  }
  if (!path.isAbsolute(program) || program === "/" || program.includes("\0")) throw bad("a binary:// URI names the logging program's absolute path");
  return { uri, program };
}

/**
 * A pipe made from a FIFO in `dir` (Node has no pipe(2)): a blocking reader and writer, the
 * FIFO removed once both are open (a read-write opener first, so neither open waits).
 */
async function fifoPipe(dir: string, name: string, fds: number[]): Promise<{ r: number; w: number }> {
  const file = path.join(dir, name);
  await fs.unlink(file).catch(() => undefined);
  await runCommand("mkfifo", ["-m", "0600", file]);
  try {
    const rw = openSync(file, fsc.O_RDWR);
    try {
      const r = openSync(file, fsc.O_RDONLY);
      fds.push(r);
      const w = openSync(file, fsc.O_WRONLY);
      fds.push(w);
      return { r, w };
    } finally {
      closeSync(rw);
    }
  } finally {
    await fs.unlink(file).catch(() => undefined);
  }
}

/**
 * Starts a process's logging binary as containerd's shim does: the URI's path run with each
 * query key and its (first) value as arguments, an environment of CONTAINER_ID (the process's
 * id: the container's, or the exec's) and CONTAINER_NAMESPACE only, the process's stdout pipe
 * on fd 3, its stderr pipe on fd 4, and fd 5 a pipe it closes (or writes to) once ready,
 * which is waited for. It runs detached, outliving ckd as the task does; its pid is kept in
 * `dir` for the deletion (stopLogger). Resolves with the pipes' write ends, for the process.
 */
async function startLogger({ uri, program }: { uri: URL; program: string }, id: string, ns: string, dir: string, bundle: string): Promise<{ out: number; err: number }> {
  // Looked at first: started through a shell, a missing program would only seem to end at once.
  await fs.access(program, fsc.X_OK).catch((e: Error) => {
    throw failedPrecondition(`stdout ${uri.href}: the logging binary ${program} did not start: ${e.message}`);
  });
  const args: string[] = [];
  const seen = new Set<string>();
  for (const [k, v] of uri.searchParams) {
    if (seen.has(k)) continue;
    seen.add(k);
    args.push(k, v);
  }
  const fds: number[] = [];
  let child: ChildProcess | undefined;
  try {
    const out = await fifoPipe(dir, LOGGER_FIFOS[0]!, fds);
    const err = await fifoPipe(dir, LOGGER_FIFOS[1]!, fds);
    // Read through a socket below (libuv makes its end non-blocking).
    const { r: readyR, w: readyW } = await fifoPipe(dir, LOGGER_FIFOS[2]!, fds);
    let spawned: ChildProcess;
    try {
      // Through bash where there is one: what the logger inherits past its three pipes (ckd's
      // consoles' pty masters, which node-pty opens without close-on-exec) is closed first; env
      // -i, as bash would add variables of its own. Run in the task's bundle, as containerd's
      // shim runs it.
      const [file, argv] = BASH
        ? ["/bin/bash", ["-c", `${closePast(5)}exec /usr/bin/env -i "CONTAINER_ID=$1" "CONTAINER_NAMESPACE=$2" "\${@:3}"`, "ck-logger", id, ns, program, ...args]]
        : [program, args];
      spawned = spawn(file, argv, {
        stdio: ["ignore", "ignore", "ignore", out.r, err.r, readyW],
        env: { CONTAINER_ID: id, CONTAINER_NAMESPACE: ns },
        cwd: bundle,
        detached: true,
      });
    } catch (e) {
      throw failedPrecondition(`stdout ${uri.href}: the logging binary ${program} did not start: ${(e as Error).message}`);
    }
    child = spawned;
    // Kept at once: whichever ckd deletes the process ends it, even if this one goes now.
    const kept = keptProcessLine(spawned.pid);
    if (kept) await fs.writeFile(path.join(dir, LOGGER_PID), kept, { mode: 0o600 });
    // Its ends are the logger's now (the readers, and the ready pipe's writer, whose closing
    // is the sign).
    for (const fd of [out.r, err.r, readyW]) {
      closeSync(fd);
      fds.splice(fds.indexOf(fd), 1);
    }
    const ready = new net.Socket({ fd: readyR, readable: true, writable: false });
    fds.splice(fds.indexOf(readyR), 1);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(failedPrecondition(`stdout ${uri.href}: the logging binary did not get ready within ${LOGGER_READY_MS / 1000} s`)), LOGGER_READY_MS);
        const done = () => {
          clearTimeout(timer);
          resolve();
        };
        ready.once("data", done).once("end", done).once("close", done).on("error", () => undefined);
        spawned.once("error", (e) => {
          clearTimeout(timer);
          reject(failedPrecondition(`stdout ${uri.href}: the logging binary ${program} did not start: ${e.message}`));
        });
        ready.resume();
      });
    } finally {
      ready.destroy();
    }
    spawned.unref();
    return { out: out.w, err: err.w };
  } catch (e) {
    for (const fd of fds) closeSync(fd);
    if (child?.pid) killGroup(child.pid);
    throw e;
  }
}

/**
 * Ends the logging binary a process's directory names, as containerd's shim does at the
 * deletion: SIGTERM, then SIGKILL if it has not ended within LOGGER_TERM_MS. Most have ended
 * already (their pipes closed with the process). Nothing when there is none.
 */
async function stopLogger(dir: string): Promise<void> {
  const logger = runningKeptProcess(path.join(dir, LOGGER_PID));
  if (!logger) return;
  try {
    process.kill(logger.pid, "SIGTERM");
  } catch {
    return;
  }
  if (!(await keptProcessGone(logger, LOGGER_TERM_MS, 50))) killGroup(logger.pid);
}

/** What `read` finds (a pid), once there; undefined when runc exited first. */
async function waitFor(read: () => Promise<number | undefined>, exited: Promise<Exit>, waitMs: number): Promise<number | undefined> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = performance.now() + waitMs;
  for (let delay = 2; ; delay = Math.min(delay * 2, 50)) {
    const pid = await read();
    if (pid !== undefined && pid > 0) return pid;
    if (gone) return undefined;
    if (performance.now() > deadline) throw unavailable(`runc gave no pid within ${waitMs / 1000} s`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** A pid file's pid (runc's --pid-file), undefined until written. */
async function readPid(file: string): Promise<number | undefined> {
  const pid = Number.parseInt(await fs.readFile(file, "utf8").catch(() => ""), 10);
  return pid > 0 ? pid : undefined;
}

/** The pid in the state the createRuntime hook saved (runtime-spec State JSON), once saved. */
async function readCreatedPid(file: string): Promise<number | undefined> {
  const text = await fs.readFile(file, "utf8").catch(() => "");
  if (!text) return undefined;
  const pid = Number((JSON.parse(text) as { pid?: unknown }).pid);
  return pid > 0 ? pid : undefined;
}

/**
 * The gate of a bundle whose init an earlier ckd created and never started: its hook, if one
 * still waits there (a write-only open finds a reader, or fails with ENXIO), reads "stop" and
 * fails, so its runc kills the init and exits. Waits (bounded) until that runc has let go.
 */
async function stopOrphanGate(file: string): Promise<void> {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_WRONLY | fsc.O_NONBLOCK);
  } catch {
    return; // no FIFO, or nothing waits at it
  }
  try {
    if (!fstatSync(fd).isFIFO()) return;
    writeSync(fd, "stop\n");
  } catch {
    return; // the reader went in between (EPIPE): nothing waits any more
  } finally {
    closeSync(fd);
  }
  // Gone once no reader is left (the hook has read and exited; runc follows).
  const deadline = performance.now() + 5000;
  while (performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    try {
      closeSync(openSync(file, fsc.O_WRONLY | fsc.O_NONBLOCK));
    } catch {
      return;
    }
  }
}

/**
 * A keeper's exit file: "STATUS" (the shell and console keepers) or "STATUS SECONDS.NANOS"
 * (ck-reaper: when the process ended).
 */
export function parseExitFile(text: string | undefined): { status: number; at?: Date } | undefined {
  const m = /^\s*(-?\d+)(?:\s+(\d+)\.(\d{9}))?\s*$/.exec(text ?? "");
  if (!m) return undefined;
  const at = m[2] === undefined ? undefined : new Date(Number(m[2]) * 1000 + Math.floor(Number(m[3]) / 1e6));
  return { status: Number(m[1]), ...(at ? { at } : {}) };
}

function readFileSafe(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}


function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // gone already
  }
}

/** Sets an exec's process spec's consoleSize (what runc's init sizes the console to). */
async function withConsoleSize(file: string, size: { cols: number; rows: number }): Promise<void> {
  const spec = JSON.parse(await fs.readFile(file, "utf8")) as Record<string, unknown>;
  spec.consoleSize = { height: size.rows, width: size.cols };
  await fs.writeFile(file, JSON.stringify(spec), { mode: 0o600 });
}

function closeGate(running: Running): void {
  if (running.gate === undefined) return;
  closeSync(running.gate);
  running.gate = undefined;
}

/**
 * runc with the task's stdio: stdin the FIFO's blocking reader itself, stdout and stderr
 * the descriptors openIo opened (the child holds its own copies; ours close at once).
 */
function launchPlain(runc: string, argv: string[], io: TaskIoHandles, running: Running, keeper?: { bundle: string; reapedPidFile?: string }): Launched {
  // Through a keeper, runc logs to the bundle (nothing of runc's may write to a pipe of ckd's:
  // it would break with ckd); its stderr is the task's, or nothing.
  const log = keeper ? path.join(keeper.bundle, RUNC_LOG) : undefined;
  const runcArgs = [runc, "--log", log!, "--log-format", "json", ...argv];
  const [file, args] = keeper?.reapedPidFile && REAPER
    ? // Output to the client's FIFOs goes through the reaper's pipes; a logger's as it is.
      [REAPER, [...(io.fifos.length > 0 ? ["--relay"] : []), path.join(keeper.bundle, EXIT_FILE), keeper.reapedPidFile, ...runcArgs]]
    : keeper
      ? [KEEPER.shell, ["-c", KEEPER.script, "ck-shim", path.join(keeper.bundle, EXIT_FILE), ...runcArgs]]
      : [runc, argv];
  const child: ChildProcess = spawn(file, args, {
    stdio: [io.stdin?.direct ?? "ignore", io.out ?? "ignore", io.err ?? (keeper ? "ignore" : "pipe")],
    // Its own process group: a ^C meant for ckd is not the container's.
    detached: true,
  });
  running.pid = child.pid;
  // Without its start time a keeper could not be told from a later process of its pid: none.
  const kept = keeper ? keptProcessLine(child.pid) : undefined;
  if (keeper && kept) writeFileSync(path.join(keeper.bundle, SHIM_PID), kept, { mode: 0o600 });
  for (const fd of [io.out, io.err, io.stdin?.direct]) if (fd !== undefined) closeSync(fd);
  io.out = io.err = undefined;
  if (io.stdin) io.stdin.direct = undefined;
  const said = tail();
  if (child.stderr) child.stderr.on("data", (b: Buffer) => said.add(b));
  const errorText = log ? () => runcLogErrors(log) || said.text() : said.text;
  const exited = new Promise<Exit>((resolve) => {
    child.once("exit", (code, signal) => {
      // What the keeper left: the reaper, the time its process ended (it exits up to 2 s
      // later, once the output is copied); a keeper killed after it left the status, that
      // status, not its own death.
      const left = keeper ? parseExitFile(readFileSafe(path.join(keeper.bundle, EXIT_FILE))) : undefined;
      const status = signal && left ? left.status : (code ?? 128 + (signal ? (os.constants.signals[signal] ?? 127) : 127));
      resolve({ status, at: left?.at ?? new Date() });
    });
  });
  // A spawn that fails (no runc) emits 'error' and never 'exit'.
  const failed = new Promise<never>((_, reject) => child.once("error", (e) => reject(unavailable(`runc: ${e.message}`))));
  failed.catch(() => undefined);
  return {
    exited,
    failed,
    closed: new Promise((resolve) => child.once("close", resolve)),
    ended: () => child.exitCode !== null || child.signalCode !== null,
    errorText,
    started: () => undefined,
  };
}

/** The error messages runc logged (JSON lines), joined; "" when none. */
function runcLogErrors(file: string): string {
  let text = "";
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return "";
  }
  const msgs: string[] = [];
  for (const line of text.split("\n")) {
    try {
      const e = JSON.parse(line) as { level?: string; msg?: string };
      if ((e.level === "error" || e.level === "fatal") && e.msg) msgs.push(e.msg);
    } catch {
      // not a JSON line
    }
  }
  return msgs.join("; ").slice(-4096);
}

/** Keeps the container process's pid, and tells a console's keeper (its paced copy watches it). */
/** How long a process may be gone with its runc still writing its output before it is drained. */
export const STUCK_OUTPUT_MS = 2000;
const STUCK_CHECK_MS = 500;

/**
 * runc in the foreground copies a process's output through pipes of its own and exits only
 * once that copy is written: into a FIFO nobody reads (a client gone, `ctr run -d`), a full
 * FIFO keeps runc, and so the process's end, from ever being seen, though the process is gone
 * (containerd's shim reaps the process whatever its output does). Once the process has been
 * gone this long and runc has not ended, what its FIFOs hold is read and dropped, until runc
 * ends: output of an ended process that no reader took in that time.
 */
function watchStuckOutput(running: Running, launched: Launched, fifos: readonly string[]): void {
  let goneSince: number | undefined;
  const timer = setInterval(() => {
    if (launched.ended()) return clearInterval(timer);
    if (running.proc === undefined || processAlive(running.proc)) {
      goneSince = undefined;
      return;
    }
    goneSince ??= Date.now();
    if (Date.now() - goneSince >= STUCK_OUTPUT_MS) for (const f of fifos) drainFifo(f);
  }, STUCK_CHECK_MS);
  timer.unref();
  void launched.exited.finally(() => clearInterval(timer));
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Reads what a FIFO holds now (at most 16 MiB) and drops it; never waits. */
function drainFifo(file: string): void {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch {
    return; // gone: a client removed its FIFOs
  }
  try {
    const buf = Buffer.allocUnsafe(64 << 10);
    for (let total = 0; total < 16 << 20; ) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) break;
      total += n;
    }
  } catch {
    // EAGAIN: empty for now
  } finally {
    closeSync(fd);
  }
}

function setProc(running: Running, pid: number): void {
  running.proc = pid;
  void running.console?.request(`proc ${pid}`);
}

/**
 * runc on a console, under its keeper, given stdout (fd 3) and stdin (fds 4, 5: the FIFO's
 * reader and our holding writer). With `reapedPidFile` (runc `--detach --console-socket`) the
 * keeper is ck-reaper (`--console`), which takes the console from runc and relays it; else a
 * Node process of its own (console-keeper.js, started through bash closing what it inherited
 * past fd 5) running runc in the foreground on a pty of its own, which it copies. The keeper
 * leaves the exit status in `dir` and outlives ckd, as the plain keepers do. ckd speaks to it
 * over its socket (resize, start, CloseIO) and hears its exit there (or from the exit file,
 * if the keeper itself was ended).
 */
function launchConsole(runc: string, argv: string[], io: TaskIoHandles, running: Running, dir: string, sock: string, reapedPidFile: string | undefined): Launched {
  let keeperFile: string;
  let keeperArgs: string[];
  if (reapedPidFile !== undefined && REAPER !== undefined) {
    // ck-reaper is the keeper (it closes what it inherited past fd 5 itself), in a socket
    // directory that is ckd's user's own.
    const sockDir = path.dirname(sock);
    mkdirSync(sockDir, { recursive: true, mode: 0o700 });
    const at = lstatSync(sockDir);
    if (!at.isDirectory() || at.uid !== (process.getuid?.() ?? 0) || (at.mode & 0o077) !== 0) {
      throw failedPrecondition(`${sockDir} (the consoles' sockets) must be a directory of ckd's user's own, closed to others (mode ${(at.mode & 0o7777).toString(8).padStart(4, "0")})`);
    }
    // The size a ResizePty before Start asked for, applied as the console arrives; else none
    // (the process spec's consoleSize, as runc made it, until the client resizes).
    [keeperFile, keeperArgs] = [REAPER, ["--console", sock, ttySocket(sock), dir, reapedPidFile, String(io.size?.cols ?? 0), String(io.size?.rows ?? 0), runc, ...argv]];
  } else {
    // The keeper's pty has a size from the start: 80x24 until resized.
    const size = io.size ?? { cols: 80, rows: 24 };
    const cfg: ConsoleKeeperConfig = {
      file: CONSOLE_EXEC ? CONSOLE_EXEC.shell : runc,
      args: CONSOLE_EXEC ? ["-c", CONSOLE_EXEC.script, "ck-console", runc, ...argv] : argv,
      dir,
      sock,
      cols: size.cols,
      rows: size.rows,
      out: io.out !== undefined,
      stdin: io.stdin?.reader !== undefined,
      holder: io.stdin?.reader !== undefined && io.stdin.holder !== undefined,
    };
    const node = [process.execPath, CONSOLE_KEEPER, JSON.stringify(cfg)];
    [keeperFile, keeperArgs] = BASH ? ["/bin/bash", ["-c", `${closePast(5)}exec "$@"`, "ck-console-keeper", ...node]] : [node[0]!, node.slice(1)];
  }
  const log = openSync(path.join(dir, CONSOLE_LOG), fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT, 0o600);
  let child: ChildProcess;
  try {
    child = spawn(keeperFile, keeperArgs, {
      stdio: ["ignore", log, log, io.out ?? "ignore", io.stdin?.reader ?? "ignore", io.stdin?.holder ?? "ignore"],
      // Its own process group: a ^C meant for ckd is not the container's.
      detached: true,
    });
  } finally {
    closeSync(log);
  }
  // The keeper holds them now.
  for (const fd of [io.out, io.stdin?.reader, io.stdin?.holder]) if (fd !== undefined) closeSync(fd);
  io.out = undefined;
  if (io.stdin) io.stdin.reader = io.stdin.holder = undefined;
  running.pid = child.pid;
  running.consoleDir = dir;
  const kept = keptProcessLine(child.pid);
  if (kept) writeFileSync(path.join(dir, SHIM_PID), kept, { mode: 0o600 });
  let ended = false;
  // Reached for as long as the keeper runs (it makes its socket as it starts).
  const channel = new ConsoleChannel(sock, () => !ended);
  running.console = channel;
  // The time the process ended, where the keeper left it (the reaper does).
  const left = () => parseExitFile(readFileSafe(path.join(dir, EXIT_FILE)));
  const exited = new Promise<Exit>((resolve) => {
    channel.onExit = (status) => {
      ended = true;
      resolve({ status, at: left()?.at ?? new Date() });
    };
    child.once("exit", (_code, signal) => {
      ended = true;
      // Its status as the keeper left it; a keeper killed outright, 128 + signal as for the
      // shell keepers; one that failed without leaving it, lost (255).
      const was = left();
      resolve({ status: was ? was.status : signal ? 128 + (os.constants.signals[signal] ?? 127) : 255, at: was?.at ?? new Date() });
    });
  });
  const failed = new Promise<never>((_, reject) => child.once("error", (e) => reject(unavailable(`console keeper: ${e.message}`))));
  failed.catch(() => undefined);
  return {
    exited,
    failed,
    closed: exited,
    ended: () => ended,
    // runc's last words, as the keeper left them; its own failure, in its log.
    errorText: () => readFileSafe(path.join(dir, CONSOLE_ERR))?.trim() || (readFileSafe(path.join(dir, CONSOLE_LOG)) ?? "").trim().slice(-4096),
    started: () => void channel.request("start"),
  };
}

/** A console keeper's answer, waited for at most 2 s (a keeper without its socket never answers). */
async function answered(request: Promise<void> | undefined): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([request, new Promise((r) => (timer = setTimeout(r, 2000)))]);
  clearTimeout(timer);
}

/** Kills what runs for a process: its keeper's group and, for a console, runc's own session. */
function killRunning(running: Running): void {
  if (running.pid) killGroup(running.pid);
  if (running.consoleDir) killConsoleRunc(running.consoleDir);
}

/** A console keeper's runc (its own session's leader, as the keeper left its pid and start time), killed if it still runs. */
function killConsoleRunc(dir: string): void {
  const runc = runningKeptProcess(path.join(dir, CONSOLE_RUNC_PID));
  if (runc) killGroup(runc.pid);
}

/** How long ckd tries to reach an adopted console keeper's socket. */
const CONSOLE_CONNECT_MS = 10_000;

/**
 * ckd's end of a console keeper's socket: requests (one per line) are sent once connected,
 * in order, each answered `ok` by the keeper; `exit STATUS` is handed to onExit. It tries to
 * connect while `keeperRuns()` says so (a keeper ckd started) or for CONSOLE_CONNECT_MS (one
 * adopted); requests left then are answered as if done (the console went with its keeper).
 */
class ConsoleChannel {
  private sock: net.Socket | undefined;
  private pending: string[] = [];
  private answers: Array<() => void> = [];
  private closed = false;
  onExit: ((status: number) => void) | undefined;

  constructor(
    private readonly file: string,
    private readonly keeperRuns: () => boolean,
  ) {
    this.connect(performance.now() + CONSOLE_CONNECT_MS);
  }

  private connect(deadline: number): void {
    const s = net.createConnection(this.file);
    s.on("connect", () => {
      if (this.closed) return void s.destroy();
      this.sock = s;
      for (const line of this.pending) s.write(line);
      this.pending = [];
    });
    s.on("error", () => {
      if (this.sock === s || this.closed) return;
      if (this.keeperRuns() || performance.now() < deadline) setTimeout(() => this.connect(deadline), 20).unref();
      else this.giveUp();
    });
    s.on("close", () => {
      if (this.sock !== s) return;
      this.sock = undefined;
      this.giveUp();
    });
    let buf = "";
    s.on("data", (d) => {
      buf += d.toString("utf8");
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const [word, status] = buf.slice(0, nl).split(" ");
        buf = buf.slice(nl + 1);
        if (word === "ok") this.answers.shift()?.();
        else if (word === "exit" && Number.isInteger(Number(status))) this.onExit?.(Number(status));
      }
    });
    s.unref();
  }

  /** Sends a request; resolves once the keeper has done it (or is gone). */
  request(line: string): Promise<void> {
    if (this.closed) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.answers.push(resolve));
    if (this.sock && !this.sock.destroyed) this.sock.write(`${line}\n`);
    else this.pending.push(`${line}\n`);
    return done;
  }

  private giveUp(): void {
    this.closed = true;
    this.pending = [];
    for (const answer of this.answers.splice(0)) answer();
  }

  close(): void {
    this.giveUp();
    this.sock?.destroy();
  }
}

