// The look-up of a task's program that runc's init makes before it runs it (Go's
// exec.LookPath), made by ckd at Create while the init waits at ckd's gate: runc makes it only
// after the gate, so without this a missing program failed at Start, where containerd's
// `runc create` fails at Create (with no task events).
//
// It may only refuse what runc would refuse: where it cannot tell (no PATH, a relative PATH
// entry or cwd, an error it does not expect, a file system that does not answer in time), it
// lets the program through and runc decides at Start as before. It does not repeat runc's
// access(2) check as the container's user: ckd is not that user, and root's answer differs
// from it both ways (noexec mounts, NFS root squashing); such a program fails at Start.
import { promises as fs, type Stats } from "node:fs";
import path from "node:path";

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
 * and cwd. A name with a "/" is that path as given (relative ones under cwd, not cleaned: the
 * kernel takes ".." after following symlinks); a bare name is looked for in each directory of
 * PATH (joined and cleaned, as Go's filepath.Join). Undefined where the look-up cannot be
 * judged from outside: no program, a relative cwd (runc refuses it), no PATH in the env
 * (runc's init has no other), or a relative PATH entry (Go 1.19 and later refuse what they
 * find there, older ones take it).
 */
export function programCandidates(p: ProgramSpec): ProgramCandidates | undefined {
  const program = p.args?.[0];
  if (!program) return undefined;
  const cwd = p.cwd ?? "/";
  if (!cwd.startsWith("/")) return undefined;
  if (program.includes("/")) return { kind: "path", program, at: program.startsWith("/") ? program : `${cwd}/${program}` };
  // The last PATH wins, as os.Setenv of each entry in turn leaves it.
  const pathVar = (p.env ?? []).filter((e) => e.startsWith("PATH=")).pop()?.slice(5);
  if (pathVar === undefined) return undefined;
  const dirs = pathVar.split(":");
  if (dirs.some((d) => !d.startsWith("/"))) return undefined;
  return { kind: "search", program, at: dirs.map((d) => path.posix.join(d, program)) };
}

/** Symlinks followed while resolving one path, as Linux's MAXSYMLINKS. */
const MAX_SYMLINKS = 40;

/**
 * resolveInRoot's walk (src/diff/rootpath.ts), asynchronous and reporting what is missing: a
 * container's volume that does not answer must hold neither ckd's event loop nor its Create.
 * `at` inside `root` as the kernel resolves it once `root` is "/": symlinks followed there
 * (absolute targets re-rooted), ".." taken after them and clamped at the root. Every
 * component is looked at with lstat, the last one too, so nothing outside `root` is followed.
 * The file's stats, or why it is missing (ENOENT, ENOTDIR); undefined for anything else.
 */
async function lookUp(root: string, at: string): Promise<{ st: Stats } | { missing: string } | undefined> {
  const parts = (p: string) => p.split("/").filter((c) => c !== "" && c !== ".");
  const resolved: string[] = [];
  const queue = parts(at);
  let links = 0;
  let st: Stats | undefined;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === "..") {
      resolved.pop();
      st = undefined;
      continue;
    }
    const candidate = path.join(root, ...resolved, c);
    try {
      st = await fs.lstat(candidate);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return code === "ENOENT" || code === "ENOTDIR" ? { missing: code } : undefined;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) return undefined;
      const target = await fs.readlink(candidate).catch(() => undefined);
      if (target === undefined) return undefined;
      if (target.startsWith("/")) resolved.length = 0;
      queue.unshift(...parts(target));
      st = undefined;
      continue;
    }
    if (queue.length > 0 && !st.isDirectory()) return { missing: "ENOTDIR" };
    resolved.push(c);
  }
  // Ends at the root itself (or at a directory through ".."): a directory, not a program.
  st ??= await fs.lstat(path.join(root, ...resolved)).catch(() => undefined);
  return st ? { st } : undefined;
}

type Found = "ok" | "missing" | "not-executable" | "unknown";

/** One candidate inside `root`, as Go's findExecutable: it exists, is not a directory, has an x bit. */
async function examine(root: string, at: string): Promise<{ found: Found; code?: string }> {
  const r = await lookUp(root, at);
  if (!r) return { found: "unknown" };
  if ("missing" in r) return { found: "missing", code: r.missing };
  if (r.st.isDirectory() || (r.st.mode & 0o111) === 0) return { found: "not-executable" };
  return { found: "ok" };
}

const ERRNO_TEXT: Record<string, string> = { ENOENT: "no such file or directory", ENOTDIR: "not a directory" };

/** How long the look-up may take (a volume that does not answer): then runc decides. */
const LOOKUP_MS = 2000;

/**
 * Looks the task's program up in `root` (the container's root directory as ckd reaches it) as
 * runc's init will. Undefined when runc would find it or this cannot tell (within `deadlineMs`);
 * otherwise the text of runc's error (Go's words: `exec: "x": executable file not found in
 * $PATH`).
 */
export async function missingProgram(root: string, p: ProgramSpec, deadlineMs = LOOKUP_MS): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), deadlineMs);
    timer.unref();
  });
  try {
    return await Promise.race([judge(root, p), late]);
  } finally {
    clearTimeout(timer);
  }
}

async function judge(root: string, p: ProgramSpec): Promise<string | undefined> {
  const c = programCandidates(p);
  if (!c) return undefined;
  const top = await fs.stat(root).catch(() => undefined);
  if (!top?.isDirectory()) return undefined;
  if (c.kind === "path") {
    const r = await examine(root, c.at);
    if (r.found === "missing") return `exec: "${c.program}": stat ${c.program}: ${ERRNO_TEXT[r.code!]}`;
    if (r.found === "not-executable") return `exec: "${c.program}": permission denied`;
    return undefined;
  }
  for (const at of c.at) {
    const r = await examine(root, at);
    if (r.found === "ok" || r.found === "unknown") return undefined;
  }
  return `exec: "${c.program}": executable file not found in $PATH`;
}
