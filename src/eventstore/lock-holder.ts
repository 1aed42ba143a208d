// Who holds a lock kept in NATS (the bases' lock), told well enough that a taker on the same
// machine can see the holder is gone: a process killed outright (SIGKILL, OOM, a crash)
// never releases its lock, and waiting for it to go stale costs half an hour. A process is
// named by its pid and its start time (clock ticks since boot, /proc/<pid>/stat), so a pid
// reused since is not mistaken for the holder; the machine by its boot id, and the process
// table by its pid namespace, so a holder in another container on the same kernel (its pids
// not ours to look up) or before a reboot is never judged by our /proc; and only a holder of
// the same user, whose processes /proc shows even when mounted with hidepid.
import { readFileSync, readlinkSync } from "node:fs";
import { hostname } from "node:os";
import { procStat } from "../runtime/proc.js";

export interface HolderIdentity {
  host: string;
  /** /proc/sys/kernel/random/boot_id: one per boot of one kernel. */
  boot?: string;
  /** The pid namespace, as /proc/self/ns/pid names it (`pid:[4026531836]`). */
  pidns?: string;
  /** The user the process runs as. */
  uid?: number;
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

/** This process's identity (what it can read of it; Linux's /proc, else host and pid only). */
export function ownIdentity(): HolderIdentity {
  return {
    host: hostname(),
    boot: readOr(() => readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()),
    pidns: readOr(() => readlinkSync("/proc/self/ns/pid")),
    uid: process.getuid?.(),
    pid: process.pid,
    start: procStat(process.pid)?.startTime,
  };
}

/** What /proc says of a pid now: its start time, or undefined when no process has it (or only a zombie). */
export function processStart(pid: number): number | undefined {
  const st = procStat(pid);
  return st && st.state !== "Z" && st.state !== "X" ? st.startTime : undefined;
}

/**
 * Whether a lock's holder is known to be gone: it ran on this boot of this machine, in this
 * process table, as this user, and no process with its pid and start time runs now. Anything
 * unknown (an older lock without the identity, another machine, container or user, a /proc
 * this process cannot read of itself) says no: such a lock is only taken over once stale, or
 * by --break-lock.
 */
export function holderGone(held: LockBody, here: HolderIdentity, look: (pid: number) => number | undefined): boolean {
  if (!here.boot || !here.pidns || here.uid === undefined || here.start === undefined) return false;
  if (held.boot !== here.boot || held.pidns !== here.pidns || held.uid !== here.uid) return false;
  const { pid, start } = held;
  if (typeof pid !== "number" || !Number.isSafeInteger(pid) || pid <= 0 || typeof start !== "number") return false;
  if (pid === here.pid && start === here.start) return false; // ourselves
  // No process with its pid, or one started at another time (the pid reused since).
  return look(pid) !== start;
}
