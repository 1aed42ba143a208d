// What /proc says of a process: its state, parent and start time (which tells a process from
// a later one given the same pid), and whether it is alive (a zombie is not: a parent that
// never reaps may leave one for good); and where a program is. Shared by the managed
// nats-server's supervision and the task runtime.
import { accessSync, constants, readFileSync, statSync } from "node:fs";
import { delimiter, join } from "node:path";

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

/**
 * Where an executable named `binary` is: a path as given (if it is an executable file), a
 * bare name in PATH and then in `extraDirs`. Undefined when nowhere.
 */
export function findExecutable(binary: string, extraDirs: readonly string[] = []): string | undefined {
  const candidates = binary.includes("/") ? [binary] : [...(process.env.PATH ?? "").split(delimiter).filter(Boolean), ...extraDirs].map((d) => join(d, binary));
  for (const c of candidates) {
    try {
      if (!statSync(c).isFile()) continue;
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * A program named by name, as containerd's opt plugin finds it: `<bin>/<name>` when that is an
 * executable file, else the name (looked up in PATH when run). A path is kept as given.
 */
export function optBinary(name: string, bin: string | undefined): string {
  if (!bin || name.includes("/")) return name;
  return findExecutable(join(bin, name)) ?? name;
}

/** A process as ck's pid files keep it: its pid and start time (which tells it from a later one of its pid). */
export interface KeptProcess {
  pid: number;
  since: number;
}

/** The line a pid file of ck's holds for `pid`; undefined when /proc does not know it (then none is kept). */
export function keptProcessLine(pid: number | undefined): string | undefined {
  const since = pid ? procStat(pid)?.startTime : undefined;
  return pid && since ? `${pid} ${since}\n` : undefined;
}

/** The process a pid file of ck's names (whether or not it still runs); undefined when none is named. */
export function readKeptProcess(file: string): KeptProcess | undefined {
  let text = "";
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  const [pid, since] = text.trim().split(" ").map(Number);
  return pid! > 0 && since! > 0 ? { pid: pid!, since: since! } : undefined;
}

/** The process a pid file of ck's names, if that very process still runs. */
export function runningKeptProcess(file: string): KeptProcess | undefined {
  const p = readKeptProcess(file);
  return p && isSameProcess(p.pid, p.since) ? p : undefined;
}

/** Waits (at most `ms`) for a kept process to end; whether it has. */
export async function keptProcessGone(p: KeptProcess, ms: number, stepMs = 20): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (isSameProcess(p.pid, p.since)) {
    if (performance.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return true;
}
