// containerd v1 Tasks service on ck's runc runtime (src/runtime/runc.ts), without a shim, as
// ../shared/CTR-COMPAT.md section 4 describes what ctr needs: Create makes the bundle and
// records /tasks/create; Start runs the init and records /tasks/start; its exit is recorded as
// /tasks/exit by the ckd that started it or, after a restart, the one that adopted it; Delete
// removes the bundle and records /tasks/delete.
// Every state a task's client reads (Get, List, Wait's answer) is the projection's, folded from
// those events; exec processes are the service's own (see src/commands/tasks.ts). Metrics are
// read from the cgroup hierarchy (v1, or the unified v2); Update is `runc update`. Checkpoints answer NotImplemented.
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { alreadyExists, canceled, failedPrecondition, invalidArgument, isClass, isNotFound, notFound, notImplemented, unavailable } from "../errdefs/errdefs.js";
import { surelyNotStored, type Decide, type Sequencer } from "../commands/sequencer.js";
import { checkCreateTask, checkDeleteTask, decideTransition, execHandlers, existingTask, requireStatus, taskHandlers, validateExecId, validateTaskId, type TaskIo } from "../commands/tasks.js";
import type { Queries } from "../projections/queries.js";
import type { TaskRecord, TaskStatus, Timestamp } from "../projections/views.js";
import type { RuncOptions, RuncRuntime, Started } from "../runtime/runc.js";
import { findExecutable, optBinary } from "../runtime/proc.js";
import path from "node:path";
import type { Mount } from "../snapshots/types.js";
import type { Protos } from "../protos/protos.js";
import { parseFilters } from "../projections/filters.js";
import { namespaceOf, unary } from "./grpc.js";
import { mountsFromApi } from "../snapshots/mount.js";
import { GO_ZERO_TIME_SECONDS, toTimestamp } from "../emitter/envelope.js";

export interface TasksDeps {
  sequencer: Sequencer;
  queries: Queries;
  runtime: RuncRuntime;
  logger: Logger;
  /** For the Metrics' payload (io.containerd.cgroups.v1.Metrics). */
  protos: Protos;
  /** Why runc cannot run here (ckd checked at start), if it cannot: Create refuses, saying so. */
  runcProblem?: string;
}

/** containerd.v1.types.Status */
const STATUS: Record<TaskStatus, number> = { CREATED: 1, RUNNING: 2, STOPPED: 3, PAUSED: 4 };
/** Signals whose default action ends a process (what Kill of a never-started task honours). */
// Real-time signals (34-64) terminate by default too.
const TERMINATING = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 24, 25, 26, 27, 29, 30, 31, ...Array.from({ length: 31 }, (_, i) => 34 + i)]);
/** A task's new resources, as containerd's client sends them (runtime-spec JSON). */
const LINUX_RESOURCES_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/** What containerd's runc shim says of an exec's pid in ListPids. */
const PROCESS_DETAILS_TYPE = "containerd.runc.v1.ProcessDetails";
/** The exit status containerd reports when a task's process was lost (its shim gone). */
const LOST_EXIT_STATUS = 255;
/** How long a task's recorded end waits for its exec processes' (stopped with it) to be recorded. */
const EXEC_END_WAIT_MS = 10_000;
const EXEC_END_WAIT_STOPPING_MS = 2_000;

const ts = toTimestamp;

/**
 * Go's zero time (0001-01-01) as a Timestamp: containerd's exit time of a process that has
 * not exited, so that a Go client's ExitTime.IsZero() holds (the Unix epoch would not).
 */
const NOT_EXITED = { seconds: GO_ZERO_TIME_SECONDS, nanos: 0 };

/** An exit time as the API answers it: Go's zero time where there is none. */
function exitTime(at: Timestamp | undefined): Timestamp {
  return at && (Number(at.seconds) !== 0 || Number(at.nanos) !== 0) ? at : NOT_EXITED;
}

/** containerd.v1.types.Process of a task's init (id = the container's) or of an exec. */
function apiProcess(containerId: string, id: string, p: Pick<TaskRecord, "pid" | "status" | "stdin" | "stdout" | "stderr" | "terminal" | "exit_status" | "exited_at">) {
  const { pid, status, stdin, stdout, stderr, terminal, exit_status, exited_at } = p;
  return { container_id: containerId, id, pid, status: STATUS[status], stdin, stdout, stderr, terminal, exit_status, exited_at: status === "STOPPED" ? exitTime(exited_at) : NOT_EXITED };
}

const taskProcess = (t: TaskRecord) => apiProcess(t.container_id, t.container_id, t);

/**
 * A created init's watch: its end is recorded with runc's status, or Kill's (a number), or by
 * Start's own watch once Start takes over; a Delete drops it unrecorded ("taken" for both).
 */
interface CreatedWatch {
  fate: "taken" | number | undefined;
  recorded: Promise<void>;
}

/**
 * An exec process, as the service knows it (see src/commands/tasks.ts: not projected). It is
 * also kept, as JSON, in the exec's directory of the bundle (as a shim keeps its execs through
 * containerd's restarts), so the next ckd knows it: see restoreExecs.
 */
interface ExecState {
  status: "CREATED" | "RUNNING" | "STOPPED";
  pid: number;
  io: TaskIo;
  exit_status: number;
  exited_at: Timestamp;
}

/** An exec record as an earlier ckd wrote it, or undefined when it is not one. */
function execStateOf(v: unknown): ExecState | undefined {
  const r = v as Partial<ExecState> | undefined;
  if (!r || typeof r !== "object" || !["CREATED", "RUNNING", "STOPPED"].includes(r.status as string)) return undefined;
  const io = (r.io ?? {}) as Partial<TaskIo>;
  const str = (x: unknown) => (typeof x === "string" ? x : "");
  const at = (r.exited_at ?? {}) as Partial<Timestamp>;
  return {
    status: r.status!,
    pid: Number(r.pid) || 0,
    io: { stdin: str(io.stdin), stdout: str(io.stdout), stderr: str(io.stderr), terminal: io.terminal === true },
    exit_status: Number(r.exit_status) || 0,
    exited_at: { seconds: Number(at.seconds) || 0, nanos: Number(at.nanos) || 0 },
  };
}

function mounts(list: readonly unknown[] | undefined): Mount[] {
  const out = mountsFromApi(list);
  out.forEach((m, i) => {
    if (!m.type) throw invalidArgument(`rootfs[${i}].type must be set`);
  });
  return out;
}

/** The runtimes ck runs on runc (a container created without one, too). */
const RUNC_RUNTIMES = new Set(["", "io.containerd.runc.v2", "io.containerd.runc.v1", "io.containerd.runtime.v1.linux"]);
const RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options";


/**
 * The runc options a container's task runs with: its runtime must be runc's, and the options
 * (the Create request's when it has them, as containerd's shim takes them over the
 * container's runtime options; else the container's) containerd's runc options, whose binary,
 * state root, cgroup driver, no-pivot and keyring settings ck follows (the shim's own
 * settings have no shim to apply to here). `field` names where they came from.
 */
async function runcOptions(id: string, runtimeName: string, any: { type_url?: string; value?: Uint8Array } | null | undefined, field: string, defaults: RuncOptions, protos: Protos, optBin?: string): Promise<RuncOptions> {
  if (!RUNC_RUNTIMES.has(runtimeName)) throw notImplemented(`container "${id}": runtime "${runtimeName}": ck runs tasks on runc only (io.containerd.runc.v2)`);
  if (!any?.type_url) return defaults;
  if (any.type_url !== RUNC_OPTIONS_TYPE) throw invalidArgument(`container "${id}": ${field} are ${any.type_url}, not ${RUNC_OPTIONS_TYPE}`);
  let o: { binary_name?: string; root?: string; systemd_cgroup?: boolean; no_pivot_root?: boolean; no_new_keyring?: boolean };
  try {
    o = protos.decode(RUNC_OPTIONS_TYPE, any.value ?? new Uint8Array());
  } catch (err) {
    throw invalidArgument(`container "${id}": ${field}: not a ${RUNC_OPTIONS_TYPE}: ${(err as Error).message}`);
  }
  const binary = o.binary_name || defaults.binary;
  // Run as found (a name only in sbin, or with no PATH, would not be found again at launch).
  // The opt directory first (ctr install), as containerd's PATH has it.
  const found = findExecutable(optBinary(binary, optBin), ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]);
  if (!found) throw failedPrecondition(`container "${id}": ${field}.binary_name "${binary}" is not an executable here`);
  if (o.root && !path.isAbsolute(o.root)) throw invalidArgument(`container "${id}": ${field}.root "${o.root}" must be absolute`);
  return { binary: found, root: o.root || defaults.root, systemdCgroup: o.systemd_cgroup === true, noPivotRoot: o.no_pivot_root === true, noNewKeyring: o.no_new_keyring === true };
}

/** A stdio path as sent: absolute, or (stdout/stderr) a URI the runtime judges (file:// only). */
function ioPath(field: string, p: string | undefined): string {
  const v = p ?? "";
  const uri = field !== "stdin" && /^[a-z][a-z0-9+.-]*:\/\//i.test(v);
  if (v && !v.startsWith("/") && !uri) {
    throw invalidArgument(`${field} ${JSON.stringify(v)}: an absolute FIFO or file path${field === "stdin" ? "" : ", or a file:// or binary:// URI"}`);
  }
  return v;
}

function ioOf(req: { stdin?: string; stdout?: string; stderr?: string; terminal?: boolean }): TaskIo {
  return { stdin: ioPath("stdin", req.stdin), stdout: ioPath("stdout", req.stdout), stderr: ioPath("stderr", req.stderr), terminal: req.terminal === true };
}

/** The Tasks service and what ckd's start and stop do with tasks. */
/** One task's cgroup statistics: io.containerd.cgroups.v1.Metrics or v2.Metrics, as built (before encoding). */
export interface TaskStats {
  id: string;
  namespace: string;
  /** The container's runtime name (the `runtime` label containerd gives a task's series). */
  runtime: string;
  at: Date;
  type: string;
  data: Record<string, unknown>;
}

export class Tasks {
  /** Callers of Wait, by namespace/id, woken once the task's exit is recorded. */
  private readonly waiters = new Map<string, Array<() => void>>();
  /** Exits being recorded (stop waits for them). */
  private readonly recording = new Set<Promise<void>>();
  /** Exec processes by namespace/id/exec. */
  private readonly execs = new Map<string, ExecState>();
  /** Per exec (namespace/id/exec): its record's writes, in order (see keepExec). */
  private readonly execWrites = new Map<string, Promise<void>>();
  /** Per task (namespace/id): its started execs' ends, until recorded (see execsEnded). */
  private readonly execEnds = new Map<string, Set<Promise<void>>>();
  /** Created, not yet started inits of this ckd, by namespace/id (see watchCreated). */
  private readonly created = new Map<string, CreatedWatch>();
  /** Per task: the request that changes it now (see serial). */
  private readonly locks = new Map<string, Promise<unknown>>();
  private stopping = false;

  /** Out-of-memory kills seen per task (namespace/id/pid), for /tasks/oom. */
  private readonly oomSeen = new Map<string, number>();
  private oomTimer: NodeJS.Timeout | undefined;
  private oomLook: Promise<void> | undefined;

  constructor(private readonly d: TasksDeps) {}

  /**
   * Watches the tasks this ckd runs for out-of-memory kills in their cgroups (every
   * `intervalMs`; cgroup v1 offers them only through an eventfd, which Node cannot open) and
   * records each new one as containerd's /tasks/oom. A task whose init is itself killed may
   * have its cgroup removed by runc before the next look: that one is seen in its exit (137).
   */
  watchOom(intervalMs = 1000): void {
    this.oomTimer = setInterval(() => {
      if (this.oomLook || this.stopping) return;
      this.oomLook = this.lookForOom().finally(() => (this.oomLook = undefined));
    }, intervalMs);
    this.oomTimer.unref();
  }

  private async lookForOom(): Promise<void> {
    const live = new Set<string>();
    for (const { ns, id, adopted } of this.d.runtime.startedInits()) {
      const task = await this.d.queries.findTask(ns, id).catch(() => undefined);
      if (!task || (task.status !== "RUNNING" && task.status !== "PAUSED") || !(task.pid > 0)) continue;
      const key = `${ns}/${id}/${task.pid}`;
      live.add(key);
      const kills = await this.d.runtime.oomKills(ns, id, task.pid);
      if (kills === undefined) continue;
      // A task started here had none before; an adopted one's earlier kills were the earlier ckd's.
      const seen = this.oomSeen.get(key) ?? (adopted ? kills : 0);
      if (kills <= seen) {
        this.oomSeen.set(key, kills);
        continue;
      }
      // Seen once recorded: a kill that could not be (the log away) is tried again next time.
      await this.d.sequencer.submit(taskHandlers.oom({ namespace: ns, container_id: id })).then(
        () => this.oomSeen.set(key, kills),
        (err) => this.d.logger.warn({ err, namespace: ns, id }, "an out-of-memory kill was not recorded yet"),
      );
    }
    for (const key of [...this.oomSeen.keys()]) if (!live.has(key)) this.oomSeen.delete(key);
  }

  /**
   * The last look for out-of-memory kills in an ended init's cgroup (kept until the task's
   * deletion), so that a kill in a task that ends before the next look is still recorded
   * (containerd's /tasks/oom comes before the exit). `baseline`: the kills counted before this
   * ckd looked (0 for a task it started; undefined: not known, nothing recorded).
   */
  private async oomAtExit(ns: string, id: string, pid: number, baseline: number | undefined): Promise<void> {
    // After a look under way, which may be recording this very kill.
    await this.oomLook;
    const seen = this.oomSeen.get(`${ns}/${id}/${pid}`) ?? baseline;
    if (seen === undefined) return;
    const kills = await this.d.runtime.oomKills(ns, id, pid, true).catch(() => undefined);
    if (kills === undefined || kills <= seen) return;
    await this.d.sequencer.submit(taskHandlers.oom({ namespace: ns, container_id: id })).catch((err) => this.d.logger.warn({ err, namespace: ns, id }, "an out-of-memory kill was not recorded"));
  }

  service(): grpc.UntypedServiceImplementation {
    const d = this.d;
    const unsupported = (method: string, why: string) =>
      unary(async (call) => {
        namespaceOf(call);
        throw notImplemented(`tasks.${method}: ${why}`);
      });
    return {
      Create: unary(async (call) => {
        const ns = namespaceOf(call);
        const req = call.request;
        const id: string = req.container_id ?? "";
        validateTaskId(id);
        if (req.checkpoint?.digest) throw notImplemented("tasks.Create from a checkpoint: ck has no checkpoint support (CRIU)");
        const io = ioOf(req);
        const rootfs = mounts(req.rootfs);
        return this.serial(ns, id, async () => {
          const container = checkCreateTask(id, await d.queries.getContainer(ns, id).catch((err) => (isNotFound(err) ? undefined : Promise.reject(err))), await d.queries.findTask(ns, id));
          if (d.runcProblem) throw failedPrecondition(`tasks cannot run here: ${d.runcProblem}`);
          if (!container.spec?.value?.length) throw invalidArgument(`container "${id}" has no spec`);
          const fromTask = Boolean(req.options?.type_url);
          const options = await runcOptions(id, container.runtime?.name ?? "", fromTask ? req.options : container.runtime?.options, fromTask ? "options" : "runtime.options", d.runtime.defaultOptions(), d.protos, d.runtime.optBin);
          const bundle = await d.runtime.prepare(ns, id, container.spec.value, rootfs, io.terminal, options);
          let created: Started;
          try {
            await d.runtime.openIo(ns, id, io);
            created = await d.runtime.create(ns, id);
            await d.sequencer.submit(taskHandlers.create({ namespace: ns, container_id: id, bundle, rootfs, io, pid: created.pid }));
          } catch (err) {
            await d.runtime.cleanup(ns, id).catch((e) => d.logger.warn({ err: e, namespace: ns, id }, "a refused task's bundle was not removed"));
            throw err;
          }
          this.watchCreated(ns, id, created);
          return { container_id: id, pid: created.pid };
        });
      }),

      Start: unary(async (call) => {
        const ns = namespaceOf(call);
        const id: string = call.request.container_id ?? "";
        const exec: string = call.request.exec_id ?? "";
        if (exec) return this.serial(ns, id, () => this.startExec(ns, id, exec));
        return this.serial(ns, id, async () => {
          const task = requireStatus(existingTask(id, await d.queries.findTask(ns, id)), "CREATED");
          this.owned(task);
          return { pid: await this.start(ns, task) };
        });
      }),

      Wait: unary(async (call) => {
        const ns = namespaceOf(call);
        const id: string = call.request.container_id ?? "";
        validateTaskId(id);
        const exec: string = call.request.exec_id ?? "";
        // The task from the projection, an exec from the service's own state; one way to wait.
        const what = exec ? `exec "${exec}" of task "${id}"` : `task "${id}"`;
        const read = async () => (exec ? this.execs.get(`${ns}/${id}/${exec}`) : await d.queries.findTask(ns, id));
        for (let first = true; ; first = false) {
          // Listening before reading: an exit recorded in between still wakes this call.
          const woken = this.waitFor(ns, exec ? `${id}/${exec}` : id);
          const found = await read();
          if (!found || found.status === "STOPPED") {
            woken.cancel();
            // A missing exec in the shim's words (containerd's getProcess).
            if (!found) throw notFound(first ? (exec ? `process does not exist ${exec}` : what) : `${what} was deleted`);
            return { exit_status: found.exit_status, exited_at: found.exited_at };
          }
          // Another ckd's task: its exit arrives through the log, seen at the next look.
          await Promise.race([woken.promise, new Promise((r) => setTimeout(r, 1000))]);
          woken.cancel();
          if (call.cancelled) throw canceled(`wait for ${what}: the client went away`);
        }
      }),

      Get: unary(async (call) => {
        const ns = namespaceOf(call);
        const id: string = call.request.container_id ?? "";
        const exec: string = call.request.exec_id ?? "";
        if (exec) {
          const e = this.exec(ns, id, exec);
          return { process: apiProcess(id, exec, { ...e, ...e.io }) };
        }
        return { process: taskProcess(existingTask(id, await d.queries.findTask(ns, id))) };
      }),

      List: unary(async (call) => ({ tasks: d.queries.listTasks(namespaceOf(call)).map(taskProcess) })),

      Kill: unary(async (call) => {
        const ns = namespaceOf(call);
        const id: string = call.request.container_id ?? "";
        const signal = Number(call.request.signal ?? 0);
        if (!Number.isInteger(signal) || signal < 0 || signal > 64) throw invalidArgument(`signal ${signal} is not a signal number`);
        const exec: string = call.request.exec_id ?? "";
        if (exec) return this.serial(ns, id, () => this.killExec(ns, id, exec, signal));
        return this.serial(ns, id, async () => {
          const task = existingTask(id, await d.queries.findTask(ns, id));
          if (task.status === "STOPPED") throw notFound("process already finished");
          this.owned(task);
          if (task.status === "CREATED") {
            // Never started: its init waits before its program. A signal that would end a
            // process ends it, its exit (128 + signal) recorded before this answers; any other
            // changes nothing.
            if (!TERMINATING.has(signal)) return {};
            const key = `${ns}/${id}`;
            const watch = this.created.get(key);
            if (watch) {
              watch.fate = 128 + signal;
              await d.runtime.stopCreated(ns, id);
              await watch.recorded;
            } else {
              await this.recordExit(ns, id, task.pid, 128 + signal, new Date());
            }
            return {};
          }
          await d.runtime.kill(ns, id, signal, call.request.all === true);
          return {};
        });
      }),

      Delete: unary(async (call) => {
        const ns = namespaceOf(call);
        const id: string = call.request.container_id ?? "";
        return this.serial(ns, id, async () => {
          const task = checkDeleteTask(id, await d.queries.findTask(ns, id));
          this.owned(task);
          // A created init stopped by the cleanup goes with the task: no exit of its own.
          const watch = this.created.get(`${ns}/${id}`);
          if (watch) watch.fate = "taken";
          // Its execs' records are written no more (their directories go with the bundle).
          const execKeys = [...this.execs.keys()].filter((key) => key.startsWith(`${ns}/${id}/`));
          const forgotten = execKeys.map((key) => [key, this.execs.get(key)!] as const);
          for (const key of execKeys) await this.forgetExec(key);
          // Nor does a later task of this id wait for their ends.
          this.execEnds.delete(`${ns}/${id}`);
          try {
            await d.runtime.cleanup(ns, id);
          } catch (err) {
            // The init is gone with the cleanup's first step, the task not deleted: its end is
            // recorded, so that Wait answers and the next Delete finds it stopped.
            if (task.status === "CREATED") await this.recordExit(ns, id, task.pid, LOST_EXIT_STATUS, new Date());
            // The task stays, and so do its execs (Get, DeleteProcess), as they were.
            for (const [key, e] of forgotten) if (!this.execs.has(key)) this.execs.set(key, e);
            throw err;
          }
          for (const key of execKeys) this.wake(ns, key.slice(ns.length + 1));
          const deleted = await d.sequencer.submit(taskHandlers.delete({ namespace: ns, container_id: id }));
          this.wake(ns, id);
          return { id, pid: deleted.pid, exit_status: deleted.exit_status, exited_at: exitTime(deleted.exited_at) };
        });
      }),

      Pause: this.transition("PAUSED", (ns, id) => d.runtime.pause(ns, id), (ns, id) => d.runtime.resume(ns, id), taskHandlers.pause),
      Resume: this.transition("RUNNING", (ns, id) => d.runtime.resume(ns, id), (ns, id) => d.runtime.pause(ns, id), taskHandlers.resume),

      ListPids: unary(async (call) => {
        const ns = namespaceOf(call);
        const id: string = call.request.container_id ?? "";
        const task = existingTask(id, await d.queries.findTask(ns, id));
        // A created task's init waits at ckd's gate, before runc knows the container: itself.
        if (task.status === "CREATED" && task.pid > 0 && this.created.has(`${ns}/${id}`)) return { processes: [{ pid: task.pid }] };
        if (task.status !== "RUNNING" && task.status !== "PAUSED") return { processes: [] };
        this.owned(task);
        const pids = await d.runtime.pids(ns, id).catch((err) => (isClass(err, "NotFound") ? [] : Promise.reject(err)));
        // As containerd's shim: an exec's pid says which exec it is (containerd.runc.v1.ProcessDetails).
        const execOf = new Map<number, string>();
        for (const [key, e] of this.execs) {
          if (e.status === "RUNNING" && key.startsWith(`${ns}/${id}/`)) execOf.set(e.pid, key.slice(ns.length + id.length + 2));
        }
        return {
          processes: pids.map((pid) => {
            const exec_id = execOf.get(pid);
            return exec_id === undefined ? { pid } : { pid, info: { type_url: PROCESS_DETAILS_TYPE, value: d.protos.encode(PROCESS_DETAILS_TYPE, { exec_id }) } };
          }),
        };
      }),

      CloseIO: unary(async (call) => {
        const ns = namespaceOf(call);
        const id: string = call.request.container_id ?? "";
        const exec: string = call.request.exec_id ?? "";
        if (exec) this.exec(ns, id, exec);
        else existingTask(id, await d.queries.findTask(ns, id));
        if (call.request.stdin) await d.runtime.closeStdin(ns, id, exec || undefined);
        return {};
      }),

      Exec: unary(async (call) => {
        const ns = namespaceOf(call);
        const req = call.request;
        const id: string = req.container_id ?? "";
        const exec: string = req.exec_id ?? "";
        validateTaskId(id);
        validateExecId(exec);
        if (!req.spec?.value?.length) throw invalidArgument(`exec "${exec}": spec must be set`);
        const io = ioOf(req);
        return this.serial(ns, id, async () => {
          const task = requireStatus(existingTask(id, await d.queries.findTask(ns, id)), "RUNNING");
          this.owned(task);
          const key = `${ns}/${id}/${exec}`;
          if (this.execs.has(key) || exec === id) throw alreadyExists(`id ${exec}${exec === id ? ": the task's own process has that id" : ""}`);
          await d.runtime.prepareExec(ns, id, exec, req.spec.value, io.terminal);
          try {
            await d.runtime.openIo(ns, id, io, exec);
            await d.sequencer.submit(execHandlers.added({ namespace: ns, container_id: id, exec_id: exec }));
          } catch (err) {
            await d.runtime.removeExec(ns, id, exec);
            throw err;
          }
          const e: ExecState = { status: "CREATED", pid: 0, io, exit_status: 0, exited_at: { seconds: 0, nanos: 0 } };
          this.execs.set(key, e);
          await this.keepExec(ns, id, exec, e);
          return {};
        });
      }),

      DeleteProcess: unary(async (call) => {
        const ns = namespaceOf(call);
        const id: string = call.request.container_id ?? "";
        const exec: string = call.request.exec_id ?? "";
        validateExecId(exec);
        return this.serial(ns, id, async () => {
          const e = this.exec(ns, id, exec);
          if (e.status === "RUNNING") throw failedPrecondition(`exec "${exec}" of task "${id}" must be stopped before deletion: running`);
          await this.forgetExec(`${ns}/${id}/${exec}`);
          await d.runtime.removeExec(ns, id, exec);
          this.wake(ns, `${id}/${exec}`);
          return { id: exec, pid: e.pid, exit_status: e.exit_status, exited_at: exitTime(e.exited_at) };
        });
      }),
      ResizePty: unary(async (call) => {
        const ns = namespaceOf(call);
        const { container_id: id = "", exec_id: exec = "", width = 0, height = 0 } = call.request as { container_id?: string; exec_id?: string; width?: number; height?: number };
        validateTaskId(id);
        if (exec) validateExecId(exec);
        for (const [field, v] of [["width", width], ["height", height]] as const) {
          if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw invalidArgument(`${field} ${v}: a console is at most 65535 columns and rows`);
        }
        if (exec) this.exec(ns, id, exec);
        else this.owned(existingTask(id, await d.queries.findTask(ns, id)));
        // A process that has ended (or has no console) has nothing to resize, as in containerd;
        // nor does a 0x0 size (what some terminals report), which containerd passes on.
        if (width > 0 && height > 0) await d.runtime.resize(ns, id, exec || undefined, width, height);
        return {};
      }),
      Checkpoint: unsupported("Checkpoint", "ck has no checkpoint support (CRIU)"),
      Update: unary(async (call) => {
        const ns = namespaceOf(call);
        const id: string = call.request.container_id ?? "";
        validateTaskId(id);
        const any = call.request.resources as { type_url?: string; value?: Uint8Array } | null | undefined;
        // Annotations alone change nothing runc knows of (containerd's shim ignores them too).
        if (!any?.type_url) {
          existingTask(id, await d.queries.findTask(ns, id));
          return {};
        }
        if (any.type_url !== LINUX_RESOURCES_TYPE) throw invalidArgument(`resources are ${any.type_url}, not ${LINUX_RESOURCES_TYPE}`);
        let resources: unknown;
        try {
          resources = JSON.parse(Buffer.from(any.value ?? []).toString("utf8"));
        } catch (err) {
          throw invalidArgument(`resources: not runtime-spec LinuxResources JSON: ${(err as Error).message}`);
        }
        if (!resources || typeof resources !== "object" || Array.isArray(resources)) throw invalidArgument("resources: not a runtime-spec LinuxResources object");
        return this.serial(ns, id, async () => {
          const task = existingTask(id, await d.queries.findTask(ns, id));
          if (task.status !== "RUNNING" && task.status !== "PAUSED") throw failedPrecondition(`task "${id}" is ${task.status.toLowerCase()}: only a running or paused task's resources can change`);
          this.owned(task);
          // The client's bytes as sent: a JSON round trip would round limits past 2^53.
          await d.runtime.update(ns, id, any.value ?? new Uint8Array());
          return {};
        });
      }),
      Metrics: unary(async (call) => {
        const ns = namespaceOf(call);
        // containerd's filters on the task: id (the container's) and status.
        const filter = parseFilters(call.request.filters ?? []);
        const field = (t: TaskRecord, fp: string[]) => (fp.length !== 1 ? undefined : fp[0] === "id" ? t.container_id : fp[0] === "namespace" ? ns : fp[0] === "status" ? t.status.toLowerCase() : undefined);
        const tasks = d.queries.listTasks(ns).filter((t) => filter.match((fp) => ({ value: field(t, fp) ?? "", present: field(t, fp) !== undefined })));
        const metrics = (await this.statsOf(ns, tasks)).map((s) => ({ timestamp: ts(s.at), id: s.id, data: { type_url: s.type, value: d.protos.encodeBuilt(s.type, s.data) } }));
        return { metrics };
      }),
    };
  }

  /**
   * The cgroup statistics of those of `tasks` whose cgroups exist (a created task's already, its
   * init waiting at ckd's gate, as under containerd; a stopped one's until its deletion, where
   * known here). As containerd, a task whose statistics cannot be read is left out.
   */
  async statsOf(ns: string, tasks: readonly TaskRecord[]): Promise<TaskStats[]> {
    const d = this.d;
    const out: TaskStats[] = [];
    for (const t of tasks) {
      const live =
        t.status === "RUNNING" ||
        t.status === "PAUSED" ||
        (t.status === "CREATED" && this.created.has(`${ns}/${t.container_id}`)) ||
        (t.status === "STOPPED" && d.runtime.knowsCgroups(ns, t.container_id, t.pid));
      if (!live || !d.runtime.owns(t.bundle)) continue;
      const data = await d.runtime.metrics(ns, t.container_id, t.pid, t.status === "STOPPED").catch((err) => {
        d.logger.warn({ err, namespace: ns, id: t.container_id }, "task metrics not read");
        return undefined;
      });
      if (!data) continue;
      const runtime = await d.queries.getContainer(ns, t.container_id).then(
        (c) => c.runtime?.name ?? "",
        () => "",
      );
      out.push({ id: t.container_id, namespace: ns, runtime, at: new Date(), type: data.type, data: data.data });
    }
    return out;
  }

  /** statsOf every namespace's tasks (what containerd's metrics endpoint collects). */
  async allStats(): Promise<TaskStats[]> {
    const out: TaskStats[] = [];
    for (const n of await this.d.queries.listNamespaces()) out.push(...(await this.statsOf(n.name, this.d.queries.listTasks(n.name))));
    return out;
  }

  /** An exec process of the task, or NotFound in containerd's shim's words. */
  private exec(ns: string, id: string, exec: string): ExecState {
    validateTaskId(id);
    validateExecId(exec);
    const e = this.execs.get(`${ns}/${id}/${exec}`);
    if (!e) throw notFound(`process does not exist ${exec}`);
    return e;
  }

  private async startExec(ns: string, id: string, exec: string): Promise<{ pid: number }> {
    const e = this.exec(ns, id, exec);
    if (e.status !== "CREATED") throw failedPrecondition(`exec "${exec}" of task "${id}" is ${e.status.toLowerCase()}, not created`);
    let started: Started;
    try {
      started = await this.d.runtime.start(ns, id, exec);
    } catch (err) {
      // As containerd's: an exec that could not start is done, and its Waits answer.
      Object.assign(e, { status: "STOPPED", exit_status: LOST_EXIT_STATUS, exited_at: ts(new Date()) });
      this.wake(ns, `${id}/${exec}`);
      await this.keepExec(ns, id, exec, e);
      throw err;
    }
    e.status = "RUNNING";
    e.pid = started.pid;
    const recorded = this.d.sequencer.submit(execHandlers.started({ namespace: ns, container_id: id, exec_id: exec, pid: started.pid }));
    this.trackExecEnd(
      ns,
      id,
      started.exited.then(async (exit) => {
        await recorded.catch(() => undefined);
        await this.recordExit(ns, id, started.pid, exit.status, exit.at, exec);
      }),
    );
    try {
      await recorded;
    } catch (err) {
      // Not recorded as started: it must not run unrecorded.
      await this.d.runtime.signalExec(ns, id, exec, started.pid, 9).catch(() => undefined);
      throw err;
    }
    // Kept as running once the log says it started (a next ckd finding it "created" under a
    // keeper knows its start may not be recorded).
    await this.keepExec(ns, id, exec, e);
    return { pid: started.pid };
  }

  private async killExec(ns: string, id: string, exec: string, signal: number): Promise<object> {
    const e = this.exec(ns, id, exec);
    if (e.status === "STOPPED") throw notFound("process already finished");
    if (e.status === "CREATED") throw failedPrecondition(`exec "${exec}" of task "${id}" is not started`);
    await this.d.runtime.signalExec(ns, id, exec, e.pid, signal);
    return {};
  }

  /**
   * Pause and Resume: the runtime's change, then its event (decideTransition: either may be
   * done already, after an append whose outcome was not known).
   */
  private transition(
    want: "PAUSED" | "RUNNING",
    change: (ns: string, id: string) => Promise<void>,
    undo: (ns: string, id: string) => Promise<void>,
    handler: (cmd: { namespace: string; container_id: string }) => Decide<void>,
  ): grpc.handleUnaryCall<any, any> {
    return unary(async (call) => {
      const ns = namespaceOf(call);
      const id: string = call.request.container_id ?? "";
      return this.serial(ns, id, async () => {
        // Read through the sequencer: an earlier append of unknown outcome is settled first, so
        // a record that is only late is not taken for one that lags.
        const task = existingTask(id, await this.d.sequencer.submit(taskHandlers.read({ namespace: ns, container_id: id })));
        if (task.status !== "RUNNING" && task.status !== "PAUSED") requireStatus(task, want === "PAUSED" ? "RUNNING" : "PAUSED");
        this.owned(task);
        const steps = decideTransition(task, await this.d.runtime.status(ns, id), want);
        if (steps.change) await change(ns, id);
        if (!steps.record) return {};
        try {
          await this.d.sequencer.submit(handler({ namespace: ns, container_id: id }));
        } catch (err) {
          // Surely not recorded: not done either, so the record and the process agree. An
          // append that may have been stored leaves the change in place; the task's next
          // Pause or Resume finds where they differ and brings the lagging side along.
          if (steps.change && surelyNotStored(err)) {
            await undo(ns, id).catch((e) => this.d.logger.warn({ err: e, namespace: ns, id }, "undoing an unrecorded pause or resume failed"));
          }
          throw err;
        }
        return {};
      });
    });
  }

  /**
   * Runs requests that change one task one after another (two Starts, a Delete racing a
   * Start or another Delete): each sees what the one before it left, in the runtime and the
   * projection alike.
   */
  private serial<T>(ns: string, id: string, fn: () => Promise<T>): Promise<T> {
    const key = `${ns}/${id}`;
    const guarded = () => (this.stopping ? Promise.reject(unavailable("ckd is stopping")) : fn());
    const run = (this.locks.get(key) ?? Promise.resolve()).then(guarded, guarded);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    void tail.then(() => {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    });
    return run;
  }

  /** A task made by another ckd (on the same log) is that ckd's to run. */
  private owned(task: TaskRecord): void {
    if (!this.d.runtime.owns(task.bundle)) {
      throw failedPrecondition(`task "${task.container_id}" belongs to the ckd whose bundle is ${task.bundle}`);
    }
  }

  /**
   * A created init's end before Start (killed, or runc gave up) is recorded when it comes,
   * with the status Kill chose if Kill ended it; once Start takes over, Start's own watch does.
   */
  private watchCreated(ns: string, id: string, created: Started): void {
    const key = `${ns}/${id}`;
    const watch: CreatedWatch = { fate: undefined, recorded: Promise.resolve() };
    this.created.set(key, watch);
    watch.recorded = created.exited.then(async (exit) => {
      if (this.created.get(key) === watch) this.created.delete(key);
      if (watch.fate === "taken") return;
      await this.recordExit(ns, id, created.pid, watch.fate ?? exit.status, exit.at);
    });
  }

  private async start(ns: string, task: TaskRecord): Promise<number> {
    const d = this.d;
    const id = task.container_id;
    const watch = this.created.get(`${ns}/${id}`);
    if (watch) watch.fate = "taken";
    let started: Started;
    try {
      started = await d.runtime.start(ns, id);
    } catch (err) {
      // The created init is gone with the failed start (runc said why), or was not here to
      // start: its end is recorded (once: a recorded exit is not recorded again).
      await this.recordExit(ns, id, task.pid, LOST_EXIT_STATUS, new Date());
      throw err;
    }
    const recorded = d.sequencer.submit(taskHandlers.start({ namespace: ns, container_id: id, pid: started.pid }));
    // The exit is recorded after the start, however quickly the process ends; an
    // out-of-memory kill in its cgroup since the last look, before it (none before this start).
    void started.exited.then(async (exit) => {
      await recorded.catch(() => undefined);
      await this.recordExit(ns, id, started.pid, exit.status, exit.at, undefined, () => this.oomAtExit(ns, id, started.pid, 0));
    });
    try {
      await recorded;
    } catch (err) {
      // Not recorded as started: it must not run unrecorded.
      await d.runtime.kill(ns, id, 9, true).catch(() => undefined);
      throw err;
    }
    return started.pid;
  }

  /**
   * Records an exit (retrying while the log is away) and wakes the task's waiters. `first`
   * runs before (an init's last look for out-of-memory kills), as part of it for ckd's stop.
   */
  private recordExit(ns: string, id: string, pid: number, status: number, at: Date, exec?: string, first?: () => Promise<void>): Promise<void> {
    const p = (async () => {
      if (first) await first().catch((err) => this.d.logger.warn({ err, namespace: ns, id }, "before recording an exit"));
      // As containerd's shim: a task's exec processes' ends come before its init's (the init's
      // end has stopped them, so they are near).
      if (!exec) await this.execsEnded(ns, id);
      for (let attempt = 0; ; attempt++) {
        try {
          const exit = { namespace: ns, container_id: id, pid, exit_status: status, exited_at: ts(at) };
          if (exec) await this.d.sequencer.submit(execHandlers.exit({ ...exit, exec_id: exec }));
          else await this.d.sequencer.submit(taskHandlers.exit(exit));
          break;
        } catch (err) {
          if (attempt >= 50 || !(isClass(err, "Unavailable") || isClass(err, "Aborted"))) {
            this.d.logger.error({ err, namespace: ns, id, exec, status }, "could not record an exit");
            break;
          }
          await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** Math.min(attempt, 6))));
        }
      }
      if (!exec) for (const key of [...this.oomSeen.keys()]) if (key.startsWith(`${ns}/${id}/`)) this.oomSeen.delete(key);
      // An exec is stopped once its exit is in the log (or could not be put there).
      const e = exec ? this.execs.get(`${ns}/${id}/${exec}`) : undefined;
      if (e && e.pid === pid) {
        Object.assign(e, { status: "STOPPED", exit_status: status, exited_at: ts(at) });
        await this.keepExec(ns, id, exec!, e);
      }
      this.wake(ns, exec ? `${id}/${exec}` : id);
    })();
    this.recording.add(p);
    void p.finally(() => this.recording.delete(p));
    return p;
  }

  private waitFor(ns: string, id: string): { promise: Promise<void>; cancel(): void } {
    const key = `${ns}/${id}`;
    let wake!: () => void;
    const promise = new Promise<void>((r) => (wake = r));
    this.waiters.set(key, [...(this.waiters.get(key) ?? []), wake]);
    return {
      promise,
      cancel: () => {
        const left = (this.waiters.get(key) ?? []).filter((w) => w !== wake);
        if (left.length) this.waiters.set(key, left);
        else this.waiters.delete(key);
      },
    };
  }

  private wake(ns: string, id: string): void {
    const key = `${ns}/${id}`;
    const list = this.waiters.get(key);
    this.waiters.delete(key);
    for (const w of list ?? []) w();
  }

  /**
   * At start, the tasks of an earlier ckd on this root that are not stopped: a started one
   * whose keeper still runs it (or left its exit) is adopted, its exit recorded when it comes
   * (before anyone can ask, if it came while no ckd ran); any other (created, or
   * without a keeper) lost its process with that ckd: what is left of it is stopped and its
   * exit recorded as containerd records a task whose shim is gone (255). Bundles without a
   * task record are removed.
   */
  async reconcile(): Promise<number> {
    // A bundle without a task record: made by a Create whose ckd died before recording it.
    for (const [ns, id] of await this.d.runtime.bundles()) {
      if (await this.d.queries.findTask(ns, id)) continue;
      await this.d.runtime.cleanup(ns, id).catch((err) => this.d.logger.warn({ err, namespace: ns, id }, "a left-over bundle was not removed"));
    }
    let n = 0;
    for (const { name } of await this.d.queries.listNamespaces()) {
      for (const task of this.d.queries.listTasks(name)) {
        if (task.status === "STOPPED" || !this.d.runtime.owns(task.bundle)) continue;
        const id = task.container_id;
        // A started task under its keeper: adopted, its exit recorded when it comes (or now,
        // if it ended while no ckd ran).
        const adopted = task.status === "CREATED" ? undefined : this.d.runtime.adopt(name, id);
        if (adopted) {
          // Its exec processes too (their ends are recorded before the init's: see
          // recordExit); those that ended while no ckd ran, before anyone can ask.
          await this.restoreExecs(name, id, true);
          // Kills looked for once this ckd ran it: an earlier ckd's were its own to record.
          const recorded = adopted.exited.then((exit) => this.recordExit(name, id, task.pid, exit.status, exit.at, undefined, () => this.oomAtExit(name, id, task.pid, undefined)));
          // One that ended while no ckd ran is recorded before anyone can ask.
          if (adopted.endedAlready) await recorded;
          continue;
        }
        // Without a keeper (created, or an older ckd's), its container may still
        // run (or wait at its gate), unsupervised since the earlier ckd went: stopped now,
        // its execs with it (their ends recorded first).
        await this.d.runtime.stopOrphan(name, id).catch((err) => this.d.logger.warn({ err, namespace: name, id }, "a created task's gate was not released"));
        await this.d.runtime.forceDelete(name, id);
        await this.restoreExecs(name, id, false);
        await this.recordExit(name, id, task.pid, LOST_EXIT_STATUS, new Date());
        n++;
      }
    }
    return n;
  }

  /**
   * Keeps an exec's state in its bundle for the next ckd (a failure is logged: it runs on).
   * An exec's writes go in order, and none once it is forgotten (deleted): see forgetExec.
   */
  private keepExec(ns: string, id: string, exec: string, e: ExecState): Promise<void> {
    const key = `${ns}/${id}/${exec}`;
    const write = (this.execWrites.get(key) ?? Promise.resolve()).then(async () => {
      if (this.execs.get(key) !== e) return;
      await this.d.runtime.writeExecRecord(ns, id, exec, e).catch((err) => this.d.logger.warn({ err, namespace: ns, id, exec }, "an exec's record was not kept"));
    });
    this.execWrites.set(key, write);
    void write.then(() => {
      if (this.execWrites.get(key) === write) this.execWrites.delete(key);
    });
    return write;
  }

  /** An exec deleted: no more writes of its record; resolves once the last one is done. */
  private async forgetExec(key: string): Promise<void> {
    this.execs.delete(key);
    await this.execWrites.get(key);
  }

  /** Until its exit is recorded, a started exec's end holds back its task's (see recordExit). */
  private trackExecEnd(ns: string, id: string, ended: Promise<void>): void {
    const key = `${ns}/${id}`;
    const set = this.execEnds.get(key) ?? new Set<Promise<void>>();
    this.execEnds.set(key, set);
    set.add(ended);
    void ended.finally(() => {
      set.delete(ended);
      if (set.size === 0 && this.execEnds.get(key) === set) this.execEnds.delete(key);
    });
  }

  /** The task's started execs' ends recorded (bounded: EXEC_END_WAIT_MS, an exec that will not end is not waited for). */
  private async execsEnded(ns: string, id: string): Promise<void> {
    const pending = [...(this.execEnds.get(`${ns}/${id}`) ?? [])];
    if (pending.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    // While ckd stops, within its stop's own wait (the task's end must be recorded before it goes).
    const waitMs = this.stopping ? EXEC_END_WAIT_STOPPING_MS : EXEC_END_WAIT_MS;
    await Promise.race([Promise.allSettled(pending), new Promise((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
  }

  /**
   * A task's exec processes, as the earlier ckd kept them: a started one under its keeper is
   * adopted as the init is (its exit recorded when it comes; at once, before this resolves, if
   * it came while no ckd ran); one whose end is recorded stays for Get, Wait and
   * DeleteProcess; one started without a keeper (an older ckd's) is recorded as lost (255); one never
   * started gets its stdio again and can still be started while its task runs (else it ends
   * unstarted, 255, with its exit event); one spawned whose start the earlier
   * ckd may not have recorded (kept as created, under a keeper) is killed, its end recorded. A
   * directory without a record (an Exec cut short before it answered) is removed.
   */
  private async restoreExecs(ns: string, id: string, taskKept: boolean): Promise<void> {
    const endedAlready: Promise<void>[] = [];
    for (const left of await this.d.runtime.execRecords(ns, id)) {
      const { exec } = left;
      const e = execStateOf(left.record);
      if (!e) {
        await this.d.runtime.removeExec(ns, id, exec);
        continue;
      }
      const key = `${ns}/${id}/${exec}`;
      this.execs.set(key, e);
      if (e.status === "STOPPED") continue;
      const adopted = left.kept ? this.d.runtime.adopt(ns, id, exec) : undefined;
      if (adopted) {
        const cutShort = e.status === "CREATED";
        Object.assign(e, { status: "RUNNING", pid: e.pid || left.pid || 0 });
        const recorded = adopted.exited.then((exit) => this.recordExit(ns, id, e.pid, exit.status, exit.at, exec));
        this.trackExecEnd(ns, id, recorded);
        if (adopted.endedAlready) endedAlready.push(recorded);
        else if (cutShort) await this.d.runtime.signalExec(ns, id, exec, e.pid, 9).catch(() => undefined);
      } else if (e.status === "RUNNING") {
        // Without a keeper (an older ckd's): what it ran may run on (nothing left tells it from another process).
        endedAlready.push(this.recordExit(ns, id, e.pid, LOST_EXIT_STATUS, new Date(), exec));
      } else if (taskKept && (await this.reopenIo(ns, id, exec, e))) {
        // Created, never started: nothing of it ran, so only its stdio went with the earlier
        // ckd (a shim keeps it open through containerd's restarts). Opened again, it starts
        // as if ckd had never gone.
      } else {
        // Its task is gone, or its stdio is: it never runs, and ends as a process whose
        // shim went (255), its exit in the log as any stopped process's.
        endedAlready.push(this.recordExit(ns, id, e.pid, LOST_EXIT_STATUS, new Date(), exec));
      }
    }
    await Promise.all(endedAlready);
  }

  /** A created exec's stdio opened again by a next ckd; false (logged) when it cannot be. */
  private async reopenIo(ns: string, id: string, exec: string, e: ExecState): Promise<boolean> {
    try {
      await this.d.runtime.openIo(ns, id, e.io, exec);
      return true;
    } catch (err) {
      this.d.logger.warn({ err, namespace: ns, id, exec }, "a created exec's stdio could not be opened again: it ends unstarted");
      return false;
    }
  }

  /**
   * At stop: started tasks and exec processes, on a console or not, run on under their
   * keepers, for the next ckd to adopt (as containerd's shims keep them through its restarts).
   * What cannot outlive ckd ends with it, its exit recorded: created inits never started
   * (killed by ckd: 137).
   */
  async stop(timeoutMs = 5000): Promise<void> {
    // No Start from now on; one under way finishes first, so that its process is seen to.
    this.stopping = true;
    clearInterval(this.oomTimer);
    await this.oomLook;
    await Promise.race([Promise.all([...this.locks.values()]), new Promise((r) => setTimeout(r, timeoutMs))]);
    for (const watch of this.created.values()) watch.fate ??= 137;
    await this.d.runtime.stopOwnedByCkd();
    const deadline = Date.now() + timeoutMs;
    // A timer each turn (never only promises already settled): the exits arrive as events.
    while ((this.d.runtime.activeOwnedByCkd > 0 || this.recording.size > 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
