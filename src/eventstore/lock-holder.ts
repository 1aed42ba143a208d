// Who holds a lock kept in NATS (the bases' lock), told well enough that a taker on the same
// machine can see the holder is gone: a process killed outright (SIGKILL, OOM, a crash)
// never releases its lock, and waiting for it to go stale costs half an hour. A process is
// named by its pid and its start time (clock ticks since boot, /proc/<pid>/stat), so a pid
// reused since is not mistaken for the holder; the machine by its boot id, and the process
// table by its pid namespace, so a holder in another container on the same kernel (its pids
// not ours to look up) or before a reboot is never judged by our /proc.
import { readFileSync, readlinkSync } from "node:fs";
import { hostname } from "node:os";

export interface HolderIdentity {
  host: string;
  /** /proc/sys/kernel/random/boot_id: one per boot of one kernel. */
  boot?: string;
  /** The pid namespace, as /proc/self/ns/pid names it (`pid:[4026531836]`). */
  pidns?: string;
  pid: number;
  /** Field 22 of /proc/<pid>/stat: the start time in clock ticks since boot. */
  start?: string;
}

/** A lock message's body as read back (JSON: any field may be missing or of another type). */
export type LockBody = { readonly [K in keyof HolderIdentity]?: unknown } & { readonly holder?: unknown; readonly released?: unknown };

/** Field 22 (starttime) of a /proc/<pid>/stat line; undefined when it does not parse. */
export function startTimeOf(stat: string): string | undefined {
  // The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
  const close = stat.lastIndexOf(")");
  if (close < 0) return undefined;
  const rest = stat.slice(close + 2).split(" ");
  // rest[0] is field 3 (state): starttime, field 22, is rest[19].
  const v = rest[19];
  return v !== undefined && /^\d+$/.test(v) ? v : undefined;
}

function readOr<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch {
    return undefined;
  }
}

/** This process's identity (what it can read of it; Linux's /proc, else host and pid only). */
export function ownIdentity(): HolderIdentity {
  return {
    host: hostname(),
    boot: readOr(() => readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()),
    pidns: readOr(() => readlinkSync("/proc/self/ns/pid")),
    pid: process.pid,
    start: readOr(() => startTimeOf(readFileSync(`/proc/${process.pid}/stat`, "utf8"))),
  };
}

/** What /proc says of a pid now: its start time, or undefined when no such process runs. */
export function processStart(pid: number): { running: boolean; start?: string } {
  try {
    return { running: true, start: startTimeOf(readFileSync(`/proc/${pid}/stat`, "utf8")) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { running: false };
    // Unreadable for another reason: say it runs (the lock is then left to go stale).
    return { running: true };
  }
}

/**
 * Whether a lock's holder is known to be gone: it ran on this boot of this machine, in this
 * process table, and no process with its pid and start time runs now. Anything unknown (an
 * older lock without the identity, another machine or container, a /proc that cannot be
 * read) says no: such a lock is only taken over once stale, or by --break-lock.
 */
export function holderGone(held: LockBody, here: HolderIdentity, look: (pid: number) => { running: boolean; start?: string }): boolean {
  if (!here.boot || !here.pidns) return false;
  if (held.boot !== here.boot || held.pidns !== here.pidns) return false;
  const { pid, start } = held;
  if (typeof pid !== "number" || !Number.isSafeInteger(pid) || pid <= 0 || typeof start !== "string") return false;
  if (pid === here.pid && start === here.start) return false; // ourselves
  const now = look(pid);
  if (!now.running) return true;
  // A process runs with that pid: the holder only if it started when the holder did.
  return now.start !== undefined && now.start !== start;
}
