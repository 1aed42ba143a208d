// `ck tasks ls|start|kill|ps|pause|resume|rm` over the Tasks API, as ctr's tasks commands.
// `start` in the foreground does what ctr's does: FIFOs for the task's stdio in a temporary
// directory, copied to and from this terminal, CloseIO at the end of stdin, and the task's
// exit status as ck's own; `-d` starts it detached, its output dropped or appended to --log.
import { execFileSync } from "node:child_process";
import { closeSync, constants as fsc, fstatSync, mkdtempSync, openSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { Command } from "commander";
import type { ApiClient } from "./client.js";
import { CkError, isNotFound } from "../errdefs/errdefs.js";
import { collect, table } from "./format.js";
import { withEnv } from "./spec.js";
import { userInTask } from "./image-user.js";
import { checkCwd, containerOptions, createContainer, STOP_SIGNAL_LABEL, type ContainerOptions } from "./container-create.js";

type Action<A extends unknown[]> = (fn: (api: ApiClient, ...args: A) => Promise<void>) => (...args: unknown[]) => Promise<void>;

const STATUS = ["UNKNOWN", "CREATED", "RUNNING", "STOPPED", "PAUSED", "PAUSING"];

/** Signal names ctr accepts (SIGKILL, KILL, 9). */
export function parseSignal(s: string): number {
  if (/^\d+$/.test(s)) return Number(s);
  const name = s.toUpperCase().replace(/^SIG/, "");
  // Real-time signals as ctr names them (moby's table: RTMIN is 34, RTMAX 64, as glibc has them).
  const rt = /^RT(MIN|MAX)(?:([+-])(\d+))?$/.exec(name);
  if (rt) {
    const n = (rt[1] === "MIN" ? 34 : 64) + (rt[2] === "-" ? -1 : 1) * Number(rt[3] ?? 0);
    if (n >= 34 && n <= 64) return n;
    throw new CkError("InvalidArgument", `unknown signal "${s}": invalid argument`);
  }
  const n = os.constants.signals[`SIG${name}` as keyof typeof os.constants.signals];
  if (n === undefined) throw new CkError("InvalidArgument", `unknown signal "${s}": invalid argument`);
  return n;
}

/** The rootfs mounts of a container's snapshot (none when it has no snapshot). */
async function rootfsOf(api: ApiClient, id: string): Promise<unknown[]> {
  const c = (await api.call("containers", "Get", { id })).container;
  if (!c.snapshot_key) return [];
  return (await api.call("snapshots", "Mounts", { snapshotter: c.snapshotter, key: c.snapshot_key })).mounts ?? [];
}

/** A FIFO read until every writer is gone; a writer of our own holds it open until `release`. */
function fifoReader(file: string, to: NodeJS.WritableStream): { done: Promise<void>; release(): void } {
  const fd = openSync(file, fsc.O_RDONLY | fsc.O_NONBLOCK);
  let hold: number | undefined = openSync(file, fsc.O_WRONLY | fsc.O_NONBLOCK);
  const sock = new net.Socket({ fd, readable: true, writable: false });
  sock.pipe(to, { end: false });
  const done = new Promise<void>((resolve) => {
    sock.once("end", resolve);
    sock.once("error", () => resolve());
  });
  return {
    done,
    release() {
      if (hold !== undefined) closeSync(hold);
      hold = undefined;
    },
  };
}

/** A container's runtime spec (its JSON), {} when it has none. */
async function containerSpec(api: ApiClient, id: string): Promise<{ process?: Record<string, unknown> & { terminal?: boolean } }> {
  const c = (await api.call("containers", "Get", { id })).container;
  return JSON.parse(Buffer.from(c.spec?.value ?? []).toString("utf8") || "{}");
}

/**
 * An existing FIFO of a task's, read into `to` (another reader may share it); undefined when
 * the path is not a FIFO (a plain file the task appends to has nothing to attach to).
 */
function attachReader(file: string, to: NodeJS.WritableStream): { sock: net.Socket; done: Promise<void> } | undefined {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch {
    return undefined;
  }
  if (!fstatSync(fd).isFIFO()) {
    closeSync(fd);
    return undefined;
  }
  const sock = new net.Socket({ fd, readable: true, writable: false });
  sock.on("error", () => undefined);
  sock.pipe(to, { end: false });
  const done = new Promise<void>((resolve) => {
    sock.once("end", resolve);
    sock.once("close", () => resolve());
  });
  return { sock, done };
}

/** A task's init, or one exec process in it: how to make, start, wait for, signal and drop it. */
function processCalls(api: ApiClient, id: string, exec?: { id: string; spec: unknown }) {
  const ref = exec ? { container_id: id, exec_id: exec.id } : { container_id: id };
  return {
    create: async (io: { stdin?: string; stdout: string; stderr: string; terminal?: boolean }) =>
      exec ? api.call("tasks", "Exec", { ...ref, spec: exec.spec, ...io }) : api.call("tasks", "Create", { ...ref, rootfs: await rootfsOf(api, id), ...io }),
    start: () => api.call("tasks", "Start", ref),
    resize: (width: number, height: number) => api.call("tasks", "ResizePty", { ...ref, width, height }),
    wait: () => api.call("tasks", "Wait", ref),
    closeStdin: () => api.call("tasks", "CloseIO", { ...ref, stdin: true }),
    kill: (signal: number) => api.call("tasks", "Kill", { ...ref, signal }),
    remove: () => (exec ? api.call("tasks", "DeleteProcess", ref) : api.call("tasks", "Delete", ref)),
  };
}

/**
 * This terminal's size as a process spec's consoleSize (containerd's oci.WithTTYSize): runc
 * makes the console at that size before the program runs. Nothing without a terminal here.
 */
function consoleSizeHere(): { consoleSize?: { height: number; width: number } } {
  const out = process.stdout;
  return out.isTTY && out.columns > 0 && out.rows > 0 ? { consoleSize: { height: out.rows, width: out.columns } } : {};
}

/**
 * This terminal in raw mode (keys go to the console as typed, ^C included) and its size sent
 * to the task's console, as ctr does for -t; `stop` undoes it. The first size is sent before
 * the process starts (ckd gives it to the console it starts with), later ones as this terminal
 * changes. Without a terminal here, nothing to do.
 */
async function followTerminal(resize: (w: number, h: number) => Promise<unknown>): Promise<() => void> {
  const input = process.stdin as NodeJS.ReadStream;
  const out = process.stdout;
  const send = () => (out.isTTY && out.columns > 0 && out.rows > 0 ? resize(out.columns, out.rows) : Promise.resolve());
  await send();
  const later = () => void send().catch(() => undefined);
  out.on("resize", later);
  const raw = input.isTTY === true;
  if (raw) input.setRawMode(true);
  return () => {
    out.off("resize", later);
    if (raw) input.setRawMode(false);
  };
}

/**
 * Creates and starts a container's task (or, given `exec`, an exec process in its running
 * task). Detached: prints the pid and returns 0. Otherwise, as ctr: FIFOs for its stdio in a
 * temporary directory, copied to and from this process's, CloseIO at the end of stdin,
 * ^C/SIGTERM/SIGHUP forwarded, and its exit status returned once it ended and was deleted.
 * With `tty`, the process has a console (its spec must say so too): stdout carries it, this
 * terminal is put in raw mode (^C is then a key the console's program reads, not a signal
 * here) and its size follows.
 */
export async function runTask(api: ApiClient, id: string, opts: { detach?: boolean; log?: string; logUri?: string; tty?: boolean; exec?: { id: string; spec: unknown } }): Promise<number> {
  const p = processCalls(api, id, opts.exec);
  const terminal = opts.tty === true;
  checkOutputFlags(opts);
  if (opts.detach || opts.logUri) {
    // As ctr --log-uri: the process's output goes where the URI says (file://, or binary://
    // for a logging program ckd starts), in the foreground too, with no stdin.
    const logUri = opts.logUri ?? (opts.log ? pathToFileURL(path.resolve(opts.log)).href : "");
    await p.create({ stdout: logUri, stderr: terminal ? "" : logUri, terminal });
    const waited = opts.detach ? undefined : p.wait();
    waited?.catch(() => undefined);
    try {
      const { pid } = await p.start();
      if (!waited) {
        process.stdout.write(`${pid}\n`);
        return 0;
      }
    } catch (err) {
      await p.remove().catch(() => undefined);
      throw err;
    }
    return await untilEnded(p, waited!);
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "ck-fifo-"));
  try {
    // Fixed names in a directory of its own: nothing the user typed becomes a path.
    const [stdin, stdout, stderr] = ["stdin", "stdout", "stderr"].map((n) => path.join(dir, n)) as [string, string, string];
    execFileSync("mkfifo", ["-m", "0600", stdin, stdout, ...(terminal ? [] : [stderr])]);
    const outR = fifoReader(stdout, process.stdout);
    // A console has one output.
    const errR = terminal ? undefined : fifoReader(stderr, process.stderr);
    await p.create({ stdin, stdout, stderr: terminal ? "" : stderr, terminal });
    // ckd reads stdin from Create on: our writer opens now without waiting.
    const inFd = openSync(stdin, fsc.O_WRONLY | fsc.O_NONBLOCK);
    const inSock = new net.Socket({ fd: inFd, readable: false, writable: true });
    inSock.on("error", () => undefined);
    process.stdin.pipe(inSock);
    process.stdin.once("end", () => {
      inSock.end();
      void p.closeStdin().catch(() => undefined);
    });
    const waited = p.wait();
    // A failed Start deletes the process, which ends this Wait with NotFound: not the error to show.
    waited.catch(() => undefined);
    let unfollow = () => undefined as void;
    try {
      if (terminal) unfollow = await followTerminal(p.resize);
      await p.start();
    } catch (err) {
      unfollow();
      await p.remove().catch(() => undefined);
      throw err;
    } finally {
      outR.release();
      errR?.release();
    }
    return await untilEnded(
      p,
      waited,
      async () => {
        await Promise.all([outR.done, errR?.done]);
        // This terminal back to how it was while stdin can still be told.
        unfollow();
        process.stdin.unpipe(inSock);
        process.stdin.destroy();
        inSock.destroy();
      },
      unfollow,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A started process in the foreground, as ctr: ^C, SIGTERM and SIGHUP go to it, which decides
 * what they mean (on a console ^C is a key it reads); once it has ended (and `ended` is done)
 * it is deleted, as it is whatever else ended the wait; its exit status.
 */
async function untilEnded(p: ReturnType<typeof processCalls>, waited: Promise<{ exit_status?: number }>, ended = async () => undefined as void, always = () => undefined as void): Promise<number> {
  const forward = (sig: NodeJS.Signals) => void p.kill(os.constants.signals[sig]).catch(() => undefined);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, forward);
  try {
    const { exit_status } = await waited;
    await ended();
    await p.remove();
    return exit_status ?? 0;
  } catch (err) {
    await p.remove().catch(() => undefined);
    throw err;
  } finally {
    always();
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.off(sig, forward);
  }
}

/** `ck run` flags. */
interface RunOptions extends ContainerOptions {
  rm?: boolean;
  detach?: boolean;
  log?: string;
  logUri?: string;
}


/** Where a process's output goes: one of --log and --log-uri, and no --log-uri on a console (as ctr tasks exec). */
function checkOutputFlags(opts: { log?: string; logUri?: string; tty?: boolean; detach?: boolean }): void {
  if (opts.log && opts.logUri) throw new CkError("InvalidArgument", "--log and --log-uri cannot be used together: invalid argument");
  if (opts.log && !opts.detach) throw new CkError("InvalidArgument", "--log is for -d (in the foreground the output comes here; --log-uri file:///PATH sends it to a file): invalid argument");
  if (opts.tty && opts.logUri) throw new CkError("InvalidArgument", "--log-uri and --tty cannot be used together: invalid argument");
}

/**
 * The program and its arguments, given after `--`: without it the parser would take the
 * program's own options (`-d`, `-n`, `-c`) as ck's.
 */
export function commandAfterDashes(args: string[] | undefined, usage: string): string[] {
  if (args?.length && !process.argv.includes("--")) {
    throw new CkError("InvalidArgument", `give the program and its arguments after --: ${usage}: invalid argument`);
  }
  return args ?? [];
}

export function registerTaskCommands(program: Command, action: Action<any[]>, out: (s: string) => void): void {
  const tasks = program.command("tasks").alias("task").alias("t").description("manage tasks (a container's running process, on runc)");
  tasks
    .command("ls")
    .alias("list")
    .option("-q, --quiet", "print only ids")
    .description("list tasks: TASK PID STATUS")
    .action(
      action(async (api, opts: { quiet?: boolean }) => {
        const list: any[] = (await api.call("tasks", "List", {})).tasks ?? [];
        if (opts.quiet) return out(list.map((t) => t.container_id + "\n").join(""));
        out(table([["TASK", "PID", "STATUS"], ...list.map((t) => [t.container_id, String(t.pid ?? 0), STATUS[t.status ?? 0] ?? String(t.status)])]));
      }),
    );
  tasks
    .command("start <id>")
    .description("start a container's task; in the foreground, with this terminal's stdio, exiting with its status")
    .option("-d, --detach", "start it and return")
    .option("--log <file>", "with -d: append the task's output to this file")
    .option("--log-uri <uri>", "the task's output to a file:// or binary:// (logging program) URI, as ctr's --log-uri")
    .action(
      action(async (api, id: string, opts: { detach?: boolean; log?: string; logUri?: string }) => {
        // As ctr: a console when the container's process spec asks for one.
        const tty = (await containerSpec(api, id)).process?.terminal === true;
        process.exitCode = await runTask(api, id, { ...opts, tty });
      }),
    );
  containerOptions(
    program
      .command("run <image> <id> [args...]")
      .description("create a container from an image (unpacked first if it is not) and run its task (as ctr run); on a console (-t) this terminal, raw, its size followed")
      .option("--rm", "remove the container and its snapshot when the task ends")
      .option("-d, --detach", "start the task and return")
      .option("--log <file>", "with -d: append the task's output to this file")
      .option("--log-uri <uri>", "the task's output to a file:// or binary:// (logging program) URI, as ctr's --log-uri"),
    "run",
  )
    .action(
      action(async (api, image: string, id: string, args: string[], opts: RunOptions) => {
        // First: without --, the program's own options may have been taken as ck's (-d here).
        args = commandAfterDashes(args, "ck run IMAGE ID -- PROGRAM [ARGS...]");
        if (opts.rm && opts.detach) throw new CkError("InvalidArgument", "--rm and --detach cannot be used together: invalid argument");
        checkOutputFlags(opts);
        await createContainer(api, image, id, args ?? [], opts, consoleSizeHere);
        let status = 0;
        try {
          status = await runTask(api, id, opts);
        } finally {
          if (opts.rm) {
            await api.call("tasks", "Delete", { container_id: id }).catch(() => undefined);
            // The snapshot first, as ctr does: once the container is gone, a garbage collection
            // may take the snapshot before we could (then it is gone already: fine).
            await api.call("snapshots", "Remove", { snapshotter: opts.snapshotter, key: id }).catch((err) => {
              if (!isNotFound(err)) throw err;
            });
            await api.call("containers", "Delete", { id });
          }
        }
        process.exitCode = status;
      }),
    );
  tasks
    .command("exec <id> [args...]")
    .description("run a further process in a running task, with the container's process settings (as ctr tasks exec)")
    .requiredOption("--exec-id <id>", "the exec process's id")
    .option("-d, --detach", "start it and return")
    .option("-t, --tty", "give the process a console (this terminal, raw, its size followed)")
    .option("--cwd <dir>", "working directory in the container")
    .option("--env <KEY=VALUE>", "set an environment variable (KEY alone unsets it) over the container's; repeatable", collect, [])
    .option("-u, --user <user[:group]>", "run as this user (a name or uid, and group), looked up in the container's /etc/passwd and /etc/group")
    .option("--log-uri <uri>", "the process's output to a file:// or binary:// (logging program) URI, as ctr's --log-uri")
    .action(
      action(async (api, id: string, args: string[], opts: { execId: string; detach?: boolean; tty?: boolean; cwd?: string; env: string[]; user?: string; logUri?: string }) => {
        args = commandAfterDashes(args, "ck tasks exec --exec-id E ID -- PROGRAM [ARGS...]");
        if (!args.length) throw new CkError("InvalidArgument", "exec needs the program to run: invalid argument");
        checkCwd(opts.cwd);
        const spec = await containerSpec(api, id);
        const tty = opts.tty === true;
        const env = withEnv((spec.process?.env as string[] | undefined) ?? [], opts.env);
        // As ctr tasks exec --user: the names as the running container has them.
        const user = opts.user === undefined ? {} : { user: await userInTask(opts.user, (await api.call("tasks", "Get", { container_id: id })).process?.pid ?? 0, "--user") };
        const proc = { ...(spec.process ?? {}), args, env, terminal: tty, ...(tty ? consoleSizeHere() : {}), ...(opts.cwd ? { cwd: opts.cwd } : {}), ...user };
        const any = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process", value: Buffer.from(JSON.stringify(proc)) };
        process.exitCode = await runTask(api, id, { detach: opts.detach, tty, logUri: opts.logUri, exec: { id: opts.execId, spec: any } });
      }),
    );
  tasks
    .command("kill <id>")
    .description("signal a task (default: the container's stop signal, the image's STOPSIGNAL, else SIGTERM)")
    .option("-s, --signal <signal>", "signal name or number")
    .option("-a, --all", "signal every process of the task")
    .option("--exec-id <id>", "signal this exec process instead of the task's init (as ctr tasks kill --exec-id)")
    .action(
      action(async (api, id: string, opts: { signal?: string; all?: boolean; execId?: string }) => {
        if (opts.all && opts.execId !== undefined) throw new CkError("InvalidArgument", "specify an exec-id or all; not both: invalid argument");
        // As ctr: without -s, the signal the container's label names (containerd.GetStopSignal),
        // for an exec process too.
        const name = opts.signal ?? (await api.call("containers", "Get", { id })).container.labels?.[STOP_SIGNAL_LABEL] ?? "SIGTERM";
        await api.call("tasks", "Kill", { container_id: id, exec_id: opts.execId ?? "", signal: parseSignal(name), all: opts.all === true });
      }),
    );
  tasks
    .command("attach <id>")
    .description("attach to a running task's stdio (its FIFOs) until it exits, exiting with its status (as ctr tasks attach)")
    .action(
      action(async (api, id: string) => {
        const p = (await api.call("tasks", "Get", { container_id: id })).process;
        const fifo = (f: string | undefined) => (f && f.startsWith("/") ? f : undefined);
        const [stdout, stderr] = [fifo(p.stdout), fifo(p.stderr)];
        if (!stdout && !stderr) throw new CkError("FailedPrecondition", `task "${id}" has no stdio FIFOs to attach to (started detached without them?): failed precondition`);
        const waited = api.call("tasks", "Wait", { container_id: id });
        const readers = [stdout ? attachReader(stdout, process.stdout) : undefined, stderr && stderr !== stdout ? attachReader(stderr, process.stderr) : undefined].filter((r) => r !== undefined);
        if (readers.length === 0) throw new CkError("FailedPrecondition", `task "${id}": its stdio is not FIFOs (a file the task appends to?): failed precondition`);
        // stdin, when the task has one that still has a reader (ckd's, until the first writer closed it).
        let stdin: net.Socket | undefined;
        try {
          if (fifo(p.stdin)) stdin = new net.Socket({ fd: openSync(p.stdin, fsc.O_WRONLY | fsc.O_NONBLOCK), readable: false, writable: true });
        } catch {
          stdin = undefined;
        }
        stdin?.on("error", () => undefined);
        if (stdin) process.stdin.pipe(stdin);
        const unfollow = p.terminal ? await followTerminal((width, height) => api.call("tasks", "ResizePty", { container_id: id, width, height })) : () => undefined;
        // As ctr's attach: signals go to the task (on a console ^C is a key, raw mode).
        const forward = (sig: NodeJS.Signals) => void api.call("tasks", "Kill", { container_id: id, signal: os.constants.signals[sig] }).catch(() => undefined);
        for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, forward);
        try {
          const { exit_status } = await waited;
          // What is still in the FIFOs, for a reader that lags (bounded: another reader of the
          // same FIFO may hold it open).
          await Promise.race([Promise.all(readers.map((r) => r.done)), new Promise((res) => setTimeout(res, 1000))]);
          process.exitCode = exit_status ?? 0;
        } finally {
          for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.off(sig, forward);
          unfollow();
          if (stdin) process.stdin.unpipe(stdin);
          process.stdin.destroy();
          stdin?.destroy();
          for (const r of readers) r.sock.destroy();
        }
      }),
    );
  tasks
    .command("metrics <id>")
    .description("a task's cgroup statistics, as ctr tasks metrics prints them")
    .option("--format <format>", "table or json", "table")
    .action(
      action(async (api, id: string, opts: { format: string }) => {
        if (opts.format !== "table" && opts.format !== "json") throw new CkError("InvalidArgument", `--format ${opts.format}: table or json: invalid argument`);
        const m = (await api.call("tasks", "Metrics", { filters: [`id==${id}`] })).metrics?.[0];
        // As containerd: no statistics for a task that does not run (or is not there).
        if (!m) throw new CkError("NotFound", `task "${id}": no metrics (not running?): not found`);
        const type = m.data?.type_url;
        if (type !== "io.containerd.cgroups.v1.Metrics" && type !== "io.containerd.cgroups.v2.Metrics") throw new CkError("NotImplemented", `metrics of type ${type}: not implemented`);
        const data = api.protos.decode(type, m.data.value);
        // uint64s past 2^53 (an unlimited memory limit) printed whole, as ctr prints them; a
        // float of 2^64 can only be cgroup v2's 2^64-1 ("max"), rounded up by the decoding.
        const int = (n: unknown) => (typeof n === "number" && Number.isInteger(n) && !Number.isSafeInteger(n) ? (n >= 2 ** 64 ? "18446744073709551615" : BigInt(n).toString()) : String(n ?? 0));
        if (opts.format === "json") return out(JSON.stringify(data, null, 2) + "\n");
        const rows: string[][] = [["METRIC", "VALUE"]];
        if (type === "io.containerd.cgroups.v2.Metrics") {
          // ctr's rows for the unified hierarchy.
          if (data.pids) rows.push(["pids.current", int(data.pids.current)], ["pids.limit", int(data.pids.limit)]);
          if (data.cpu) for (const k of ["usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec"]) rows.push([`cpu.${k}`, int(data.cpu[k])]);
          if (data.memory) for (const k of ["usage", "usage_limit", "swap_usage", "swap_limit"]) rows.push([`memory.${k}`, int(data.memory[k])]);
        } else {
          if (data.memory) rows.push(["memory.usage_in_bytes", int(data.memory.usage?.usage)], ["memory.limit_in_bytes", int(data.memory.usage?.limit)], ["memory.stat.cache", int(data.memory.total_cache)]);
          if (data.cpu) rows.push(["cpuacct.usage", int(data.cpu.usage?.total)], ["cpuacct.usage_percpu", `[${(data.cpu.usage?.per_cpu ?? []).map(int).join(" ")}]`]);
          if (data.pids) rows.push(["pids.current", int(data.pids.current)], ["pids.limit", int(data.pids.limit)]);
        }
        const at = new Date(Number(m.timestamp?.seconds ?? 0) * 1000 + Math.floor((m.timestamp?.nanos ?? 0) / 1e6)).toISOString();
        out(table([["ID", "TIMESTAMP"], [m.id, at]]) + "\n" + table(rows));
      }),
    );
  tasks
    .command("ps <id>")
    .description("list the processes of a task: PID INFO (an exec process's id, as ctr tasks ps)")
    .action(
      action(async (api, id: string) => {
        const ps: any[] = (await api.call("tasks", "ListPids", { container_id: id })).processes ?? [];
        // ctr prints the info's Go struct (&ProcessDetails{ExecID:e1,...}); ck the exec's id.
        const info = (p: any): string => {
          if (!p.info?.type_url) return "-";
          try {
            const { value } = api.protos.unpackAny(p.info);
            return value?.exec_id ? `exec ${value.exec_id}` : "-";
          } catch {
            return p.info.type_url;
          }
        };
        out(table([["PID", "INFO"], ...ps.map((p) => [String(p.pid), info(p)])]));
      }),
    );
  for (const [verb, method] of [
    ["pause", "Pause"],
    ["resume", "Resume"],
  ] as const) {
    tasks
      .command(`${verb} <id>`)
      .description(`${verb} a task`)
      .action(
        action(async (api, id: string) => {
          await api.call("tasks", method, { container_id: id });
        }),
      );
  }
  tasks
    .command("rm <ids...>")
    .alias("delete")
    .description("delete stopped tasks, printing a non-zero exit status")
    .action(
      action(async (api, ids: string[]) => {
        // As ctr: every id is tried; a failure is reported and makes the exit status 1.
        let failed = false;
        for (const id of ids) {
          try {
            const r = await api.call("tasks", "Delete", { container_id: id });
            if (r.exit_status) process.stderr.write(`ck: task ${id} exited with status ${r.exit_status}\n`);
          } catch (err) {
            failed = true;
            process.stderr.write(`ck: unable to delete ${id}: ${(err as Error).message}\n`);
          }
        }
        if (failed) process.exitCode = 1;
      }),
    );
}
