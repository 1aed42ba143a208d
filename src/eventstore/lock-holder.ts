// Who holds a lock kept in NATS (the bases' lock), told well enough that a taker on the same
// machine can see the holder is gone: a process killed outright (SIGKILL, OOM, a crash)
// never releases its lock, and waiting for it to go stale costs half an hour. A process is
// named by its pid and its start time (clock ticks since boot, /proc/<pid>/stat), so a pid
// reused since is not mistaken for the holder; the machine by its boot id, and the process
// table by its pid namespace, so a holder in another container on the same kernel (its pids
// not ours to look up) or before a reboot is never judged by our /proc. Whether a pid exists
// is asked of the kernel (kill(pid, 0)), not of /proc, which may hide other processes (hidepid,
// ProtectProc=invisible): a holder counts as gone only when its pid exists no more, or /proc
// shows the pid running a process started at another time.
import { readFileSync, readlinkSync } from "node:fs";
import { hostname } from "node:os";
import { procStat } from "../runtime/proc.js";

export interface HolderIdentity {
  host: string;
  /** /proc/sys/kernel/random/boot_id: one per boot of one kernel. */
  boot?: string;
  /** The pid namespace, as /proc/self/ns/pid names it (`pid:[4026531836]`). */
  pidns?: string;
  pid: number;
  /** Field 22 of /proc/<pid>/stat: the start time in clock ticks since boot. */
  start?: number;
}

/** A lock message's body as read back (JSON: any field may be missing or of another type). */
export type LockBody = { readonly [K in keyof HolderIdentity]?: unknown } & { readonly holder?: unknown; readonly released?: unknown };

function readOr<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch {
    return undefined;
  }
}

/**
 * This process's identity (what it can read of it; Linux's /proc, else host and pid only). No
 * pid namespace when the /proc mounted here is another namespace's (`unshare -p` without
 * `--mount-proc`: its pids are not ours), so nothing is judged by it.
 */
export function ownIdentity(): HolderIdentity {
  const ownProc = readOr(() => readlinkSync("/proc/self")) === String(process.pid);
  return {
    host: hostname(),
    boot: readOr(() => readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()),
    pidns: ownProc ? readOr(() => readlinkSync("/proc/self/ns/pid")) : undefined,
    pid: process.pid,
    start: procStat(process.pid)?.startTime,
  };
}

/** A pid now: whether it exists (the kernel's answer) and, when /proc shows it, its process's start time. */
export interface PidNow {
  exists: boolean;
  start?: number;
}

export function processNow(pid: number): PidNow {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // ESRCH: no process (nor zombie) has the pid. EPERM: one does, not ours to signal.
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return { exists: false };
  }
  const st = procStat(pid);
  // A zombie holds its pid until reaped, but runs nothing: its lock is as good as released.
  if (st && (st.state === "Z" || st.state === "X")) return { exists: false };
  return { exists: true, start: st?.startTime };
}

/**
 * Whether a lock's holder is known to be gone: it ran on this boot of this machine, in this
 * process table, and no process with its pid and start time runs now. Anything
 * unknown (an older lock without the identity, another machine or container, a /proc
 * that does not show the pid or this process) says no: such a lock is only taken over once
 * stale, or by --break-lock.
 */
export function holderGone(held: LockBody, here: HolderIdentity, look: (pid: number) => PidNow): boolean {
  if (!here.boot || !here.pidns || here.start === undefined) return false;
  // The host too: clones of one machine image may share a boot id and namespace.
  if (held.host !== here.host || held.boot !== here.boot || held.pidns !== here.pidns) return false;
  const { pid, start } = held;
  if (typeof pid !== "number" || !Number.isSafeInteger(pid) || pid <= 0 || typeof start !== "number") return false;
  if (pid === here.pid && start === here.start) return false; // ourselves
  // No process with its pid, or one /proc shows started at another time (the pid reused since);
  // a pid that exists while /proc does not show it: unknown.
  const now = look(pid);
  return !now.exists || (now.start !== undefined && now.start !== start);
}
