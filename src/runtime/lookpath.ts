// The look-up of a task's program that runc's init makes before it runs it (Go's
// exec.LookPath, then access(2) with X_OK), made by ckd at Create while the init waits at ckd's
// gate: runc makes it only after the gate, so without this a missing program failed at Start,
// where containerd's `runc create` fails at Create (with no task events).
//
// It may only refuse what runc would refuse: where it cannot tell (no PATH, a relative PATH
// entry, a root it cannot read, an error it does not know), it lets the program through and
// runc decides at Start as before.
import fss from "node:fs";
import path from "node:path";
import { resolveInRoot } from "../diff/rootpath.js";

/** The parts of an OCI spec's `process` the look-up reads. */
export interface ProgramSpec {
  args?: string[];
  env?: string[];
  cwd?: string;
}

/** Where runc's init looks for the program, as paths inside the container. */
export type ProgramCandidates =
  | { kind: "path"; program: string; at: string }
  | { kind: "search"; program: string; at: string[] };

/**
 * Pure: the container paths Go's exec.LookPath tries for `args[0]` in a process with this env
 * and cwd. A name with a "/" is that path (relative to cwd); a bare name is looked for in each
 * directory of PATH. Undefined where the look-up cannot be judged from outside: no program, no
 * PATH in the env (runc's init has no other), or a relative PATH entry (Go 1.19 and later
 * refuse what they find there, older ones take it).
 */
export function programCandidates(p: ProgramSpec): ProgramCandidates | undefined {
  const program = p.args?.[0];
  if (!program) return undefined;
  const cwd = path.posix.resolve("/", p.cwd ?? "/");
  if (program.includes("/")) return { kind: "path", program, at: path.posix.resolve(cwd, program) };
  // The last PATH wins, as os.Setenv of each entry in turn leaves it.
  const pathVar = (p.env ?? []).filter((e) => e.startsWith("PATH=")).pop()?.slice(5);
  if (pathVar === undefined) return undefined;
  const dirs = pathVar.split(":");
  if (dirs.some((d) => !d.startsWith("/"))) return undefined;
  return { kind: "search", program, at: dirs.map((d) => path.posix.join(d, program)) };
}

/** missing: no such file; not-executable: a directory or no x bit; denied: access(X_OK) refused. */
type Found = "ok" | "missing" | "not-executable" | "denied" | "unknown";

/** One candidate inside `root`: Go's findExecutable (exists, not a directory, an x bit) and access(X_OK). */
async function examine(root: string, at: string): Promise<{ found: Found; code?: string }> {
  let resolved: string;
  try {
    resolved = await resolveInRoot(root, at, { followLast: true });
  } catch {
    return { found: "unknown" };
  }
  let st: fss.Stats;
  try {
    st = fss.statSync(resolved);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === "ENOENT" || code === "ENOTDIR" ? { found: "missing", code } : { found: "unknown" };
  }
  if (st.isDirectory() || (st.mode & 0o111) === 0) return { found: "not-executable" };
  // Not as another user: access(2) would answer for that user, not the container's.
  if (process.getuid?.() !== 0) return { found: "ok" };
  try {
    // As root: denied only on a noexec mount (runc's init checks as the container's user,
    // which can only refuse more).
    fss.accessSync(resolved, fss.constants.X_OK);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EACCES" ? { found: "denied" } : { found: "unknown" };
  }
  return { found: "ok" };
}

const ERRNO_TEXT: Record<string, string> = { ENOENT: "no such file or directory", ENOTDIR: "not a directory" };

/**
 * Looks the task's program up in `root` (the container's root directory as ckd reaches it) as
 * runc's init will. Undefined when runc would find it or this cannot tell; otherwise the text
 * of runc's error (Go's words: `exec: "x": executable file not found in $PATH`).
 */
export async function missingProgram(root: string, p: ProgramSpec): Promise<string | undefined> {
  const c = programCandidates(p);
  if (!c) return undefined;
  try {
    if (!fss.statSync(root).isDirectory()) return undefined;
  } catch {
    return undefined;
  }
  if (c.kind === "path") {
    const r = await examine(root, c.at);
    if (r.found === "missing") return `exec: "${c.program}": stat ${c.program}: ${ERRNO_TEXT[r.code!]}`;
    if (r.found === "not-executable") return `exec: "${c.program}": permission denied`;
    if (r.found === "denied") return `exec ${c.program}: permission denied`;
    return undefined;
  }
  // The first candidate with an x bit is the one runc's init then checks with access(2).
  for (const at of c.at) {
    const r = await examine(root, at);
    if (r.found === "ok" || r.found === "unknown") return undefined;
    if (r.found === "denied") return `exec ${at}: permission denied`;
  }
  return `exec: "${c.program}": executable file not found in $PATH`;
}
