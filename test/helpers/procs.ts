// Processes as /proc shows them, for tests that check what a daemon left running.
import { readFileSync } from "node:fs";

/** Alive and not a zombie (PID 1 here may take seconds to reap a killed orphan). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}
