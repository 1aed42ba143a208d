// What /proc says of a process: its state, parent and start time (which tells a process from
// a later one given the same pid), and whether it is alive (a zombie is not: a parent that
// never reaps may leave one for good). Shared by the managed nats-server's supervision and
// the task runtime.
import { readFileSync } from "node:fs";

/** /proc/<pid>/stat: state letter, parent pid, start time in clock ticks since boot. */
export function procStat(pid: number): { state: string; ppid: number; startTime: number } | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    const rest = raw.slice(raw.lastIndexOf(")") + 2).split(" ");
    return { state: rest[0]!, ppid: Number(rest[1]), startTime: Number(rest[19]) };
  } catch {
    return undefined;
  }
}

/** Alive means it exists and is not a zombie waiting for a parent that may never reap it. */
export function isAlive(pid: number): boolean {
  const st = procStat(pid);
  return st !== undefined && st.state !== "Z" && st.state !== "X";
}

/** Alive, and (given one) with this start time: the same process, not a later one of its pid. */
export function isSameProcess(pid: number, startTime: number | undefined): boolean {
  const st = procStat(pid);
  if (!st || st.state === "Z" || st.state === "X") return false;
  return startTime === undefined || st.startTime === startTime;
}
