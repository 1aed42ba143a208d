// The tasks aggregate: a container's task (its init process) goes CREATED -> RUNNING (<->
// PAUSED) -> STOPPED -> deleted. The process is the runtime's (src/runtime); what it did is
// recorded here as containerd's own task events, so the log says when each task started, how
// it exited and when it went. decide* are pure; the handlers load and call.
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../errdefs/errdefs.js";
import { keys, TYPE, type ContainerRecord, type TaskRecord, type TaskStatus, type Timestamp } from "../projections/views.js";
import type { Mount } from "../snapshots/types.js";
import { validateIdentifier } from "./validation.js";
import type { Decision, StateView } from "./sequencer.js";

export interface TaskIo {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface CreateTask {
  namespace: string;
  container_id: string;
  /** Where the runtime made the task's bundle (absolute). */
  bundle: string;
  rootfs: Mount[];
  io: TaskIo;
  /** The init's pid: it exists from Create on, held before its program runs. */
  pid: number;
}
export interface StartTask {
  namespace: string;
  container_id: string;
  pid: number;
}
export interface TaskExited {
  namespace: string;
  container_id: string;
  pid: number;
  exit_status: number;
  exited_at: Timestamp;
}
export interface TaskRef {
  namespace: string;
  container_id: string;
}

export function validateTaskId(id: string): void {
  if (!id) throw invalidArgument("container_id must be set");
  validateIdentifier("container_id", id);
}

/** What a task request needs before the runtime touches anything: the container, no task yet. */
export function checkCreateTask(id: string, container: ContainerRecord | undefined, current: TaskRecord | undefined): ContainerRecord {
  validateTaskId(id);
  if (!container) throw notFound(`container "${id}"`);
  if (current) throw alreadyExists(`task "${id}"`);
  return container;
}

export function decideCreateTask(cmd: CreateTask, container: ContainerRecord | undefined, current: TaskRecord | undefined): Decision<void> {
  checkCreateTask(cmd.container_id, container, current);
  if (!cmd.bundle.startsWith("/")) throw invalidArgument(`bundle ${JSON.stringify(cmd.bundle)} must be absolute`);
  return {
    event: event(cmd.namespace, "/tasks/create", TYPE.TaskCreate, { container_id: cmd.container_id, bundle: cmd.bundle, rootfs: cmd.rootfs, io: cmd.io, pid: cmd.pid }),
    result: undefined,
  };
}

/** The task, or NotFound naming it. */
export function existingTask(id: string, current: TaskRecord | undefined): TaskRecord {
  validateTaskId(id);
  if (!current) throw notFound(`task ${id} not found`);
  return current;
}

/** The task when it is in state `want`, else FailedPrecondition saying what it is. */
export function requireStatus(task: TaskRecord, want: TaskStatus): TaskRecord {
  if (task.status !== want) throw failedPrecondition(`task "${task.container_id}" is ${task.status.toLowerCase()}, not ${want.toLowerCase()}`);
  return task;
}

function event(namespace: string, topic: string, typeName: string, payload: Record<string, unknown>) {
  return { namespace, topic, typeName, payload };
}

/** What /tasks/exit and /tasks/delete say of the process's end. */
function ending(id: string, pid: number, exit_status: number, exited_at: Timestamp) {
  return { container_id: id, id, pid, exit_status, exited_at };
}

export function decideStartTask(cmd: StartTask, current: TaskRecord | undefined): Decision<void> {
  requireStatus(existingTask(cmd.container_id, current), "CREATED");
  return { event: event(cmd.namespace, "/tasks/start", TYPE.TaskStart, { container_id: cmd.container_id, pid: cmd.pid }), result: undefined };
}

/**
 * An exit is recorded once, and only for the process it is of: a task already stopped, gone,
 * or started since as another process (another pid) gives no event.
 */
export function decideTaskExit(cmd: TaskExited, current: TaskRecord | undefined): Decision<boolean> {
  if (!current || current.status === "STOPPED" || current.pid !== cmd.pid) return { result: false };
  return { event: event(cmd.namespace, "/tasks/exit", TYPE.TaskExit, ending(cmd.container_id, cmd.pid, cmd.exit_status, cmd.exited_at)), result: true };
}

export function decidePauseTask(cmd: TaskRef, current: TaskRecord | undefined): Decision<void> {
  requireStatus(existingTask(cmd.container_id, current), "RUNNING");
  return { event: event(cmd.namespace, "/tasks/paused", TYPE.TaskPaused, { container_id: cmd.container_id }), result: undefined };
}

export function decideResumeTask(cmd: TaskRef, current: TaskRecord | undefined): Decision<void> {
  requireStatus(existingTask(cmd.container_id, current), "PAUSED");
  return { event: event(cmd.namespace, "/tasks/resumed", TYPE.TaskResumed, { container_id: cmd.container_id }), result: undefined };
}

/**
 * Pause or Resume (`want`: PAUSED or RUNNING) of a task whose record says `recorded` and whose
 * runtime says `actual`: what to change. They differ only after a change whose event's
 * append had an unknown outcome (the log lost meanwhile): the change was kept, and the event
 * may or may not be in the log. The call then brings the lagging side along, so the task ends
 * where the caller asked, record and process alike. Both already there: FailedPrecondition,
 * as for any task not in the state the call starts from.
 */
export function decideTransition(
  task: TaskRecord,
  runtime: string,
  want: "RUNNING" | "PAUSED",
): { change: boolean; record: boolean } {
  const from = want === "PAUSED" ? "RUNNING" : "PAUSED";
  if (task.status !== from && task.status !== want) requireStatus(task, from);
  // runc's own word ("running", "paused"; "stopped" for a process gone whose exit is not
  // recorded yet, which neither call can change).
  const actual = runtime === "paused" ? "PAUSED" : runtime === "running" ? "RUNNING" : undefined;
  if (actual === undefined) throw failedPrecondition(`task "${task.container_id}" is ${runtime || "unknown"} in runc, not ${from.toLowerCase()}`);
  if (task.status === want && actual === want) requireStatus(task, from);
  return { change: actual !== want, record: task.status !== want };
}

/** Deleting needs a task that is not running: stopped, or created and never started. */
export function checkDeleteTask(id: string, current: TaskRecord | undefined): TaskRecord {
  const task = existingTask(id, current);
  if (task.status === "RUNNING" || task.status === "PAUSED") {
    throw failedPrecondition(`task "${id}" must be stopped before deletion: ${task.status.toLowerCase()}`);
  }
  return task;
}

export function decideDeleteTask(cmd: TaskRef, current: TaskRecord | undefined): Decision<TaskRecord> {
  const task = checkDeleteTask(cmd.container_id, current);
  // Without the process id, as containerd's shim sends it for a task's own process (its
  // /tasks/exit has one).
  const { id: _id, ...deleted } = ending(cmd.container_id, task.pid, task.exit_status, task.exited_at);
  return { event: event(cmd.namespace, "/tasks/delete", TYPE.TaskDelete, deleted), result: task };
}

const currentTask = (view: StateView, ns: string, id: string) => (id.includes("\u0000") ? undefined : view.get<TaskRecord>(keys.task(ns, id)));
const currentContainer = (view: StateView, ns: string, id: string) =>
  id.includes("\u0000") ? undefined : view.get<ContainerRecord>(keys.container(ns, id));

export const taskHandlers = {
  /**
   * The task as the log has it once every append in flight has settled (a read through the
   * sequencer: an append of unknown outcome is looked up first; Unavailable while the log is
   * down). Appends nothing.
   */
  read: (cmd: TaskRef) => (view: StateView) => ({ result: currentTask(view, cmd.namespace, cmd.container_id) }),
  create: (cmd: CreateTask) => (view: StateView) =>
    decideCreateTask(cmd, currentContainer(view, cmd.namespace, cmd.container_id), currentTask(view, cmd.namespace, cmd.container_id)),
  start: (cmd: StartTask) => (view: StateView) => decideStartTask(cmd, currentTask(view, cmd.namespace, cmd.container_id)),
  oom: (cmd: TaskRef) => (view: StateView) => decideTaskOOM(cmd, currentTask(view, cmd.namespace, cmd.container_id)),
  exit: (cmd: TaskExited) => (view: StateView) => decideTaskExit(cmd, currentTask(view, cmd.namespace, cmd.container_id)),
  pause: (cmd: TaskRef) => (view: StateView) => decidePauseTask(cmd, currentTask(view, cmd.namespace, cmd.container_id)),
  resume: (cmd: TaskRef) => (view: StateView) => decideResumeTask(cmd, currentTask(view, cmd.namespace, cmd.container_id)),
  delete: (cmd: TaskRef) => (view: StateView) => decideDeleteTask(cmd, currentTask(view, cmd.namespace, cmd.container_id)),
};

// --- exec processes: extra processes in a running task's container. Their events are
// containerd's (/tasks/exec-added, /tasks/exec-started, /tasks/exit with the exec's id); the
// projection does not fold them (an exec ends with the ckd that runs it, like the task, and
// containerd publishes nothing when one is deleted), so the service keeps their state.

export interface ExecRef {
  namespace: string;
  container_id: string;
  exec_id: string;
}

export function validateExecId(id: string): void {
  if (!id) throw invalidArgument("exec_id must be set");
  validateIdentifier("exec_id", id);
}

export function decideExecAdded(cmd: ExecRef, current: TaskRecord | undefined): Decision<void> {
  validateExecId(cmd.exec_id);
  requireStatus(existingTask(cmd.container_id, current), "RUNNING");
  return { event: event(cmd.namespace, "/tasks/exec-added", TYPE.TaskExecAdded, { container_id: cmd.container_id, exec_id: cmd.exec_id }), result: undefined };
}

export function decideExecStarted(cmd: ExecRef & { pid: number }, current: TaskRecord | undefined): Decision<void> {
  existingTask(cmd.container_id, current);
  return {
    event: event(cmd.namespace, "/tasks/exec-started", TYPE.TaskExecStarted, { container_id: cmd.container_id, exec_id: cmd.exec_id, pid: cmd.pid }),
    result: undefined,
  };
}

export function decideExecExit(cmd: ExecRef & { pid: number; exit_status: number; exited_at: Timestamp }): Decision<void> {
  return {
    event: event(cmd.namespace, "/tasks/exit", TYPE.TaskExit, { container_id: cmd.container_id, id: cmd.exec_id, pid: cmd.pid, exit_status: cmd.exit_status, exited_at: cmd.exited_at }),
    result: undefined,
  };
}

/**
 * An out-of-memory kill in a task's cgroup (containerd's /tasks/oom): recorded while the task
 * is running or paused; it changes no state.
 */
export function decideTaskOOM(cmd: TaskRef, current: TaskRecord | undefined): Decision<boolean> {
  if (!current || (current.status !== "RUNNING" && current.status !== "PAUSED")) return { result: false };
  return { event: event(cmd.namespace, "/tasks/oom", TYPE.TaskOOM, { container_id: cmd.container_id }), result: true };
}

export const execHandlers = {
  added: (cmd: ExecRef) => (view: StateView) => decideExecAdded(cmd, currentTask(view, cmd.namespace, cmd.container_id)),
  started: (cmd: ExecRef & { pid: number }) => (view: StateView) => decideExecStarted(cmd, currentTask(view, cmd.namespace, cmd.container_id)),
  exit: (cmd: ExecRef & { pid: number; exit_status: number; exited_at: Timestamp }) => () => decideExecExit(cmd),
};
