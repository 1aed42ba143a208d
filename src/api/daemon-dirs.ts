// Where ckd puts its API socket and its root, checked before anything is started, and their
// directories made one level at a time. Node's recursive mkdir never returns where mkdir says
// ENOENT under a directory that exists (any path under /proc or /sys): `ckd --address
// /proc/nope/ck.sock` hung there for good.
import { lstat, mkdir, mkdtemp, rmdir, stat } from "node:fs/promises";
import type { Stats } from "node:fs";
import { dirname, join } from "node:path";

/** Bytes a unix socket's path holds at most (Linux's sun_path: 108 with its NUL). */
export const MAX_SOCKET_PATH = 107;

/** The flag (and config key) that gives the socket's path. */
const ADDRESS = "--address (address)";

/** What an errno says, in a few words, where its code alone would not. */
function why(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case "EACCES":
    case "EPERM":
      return `permission denied (${code})`;
    case "EROFS":
      return "a read-only file system (EROFS)";
    case "ENOENT":
      // Its parent exists (made or found just before): a file system that makes no directories.
      return "its file system makes no directories there (ENOENT)";
    case "ENOTDIR":
      return "a part of it is not a directory (ENOTDIR)";
    default:
      return code ?? (err as Error).message;
  }
}

/** `path`'s status, or undefined where nothing is (or a part of it is a file). */
async function statOf(path: string, how: typeof stat = stat): Promise<Stats | undefined> {
  try {
    return await how(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw err;
  }
}

/** The nearest directory at or above `dir` that exists; throws (`named`) when what is there is not a directory. */
async function nearestDir(dir: string, named: (what: string) => string): Promise<string> {
  for (let d = dir; ; d = dirname(d)) {
    const st = await statOf(d).catch((err: unknown) => {
      throw new Error(named(`cannot look at ${d}: ${why(err)}`));
    });
    if (st) {
      if (!st.isDirectory()) throw new Error(named(`${d} is not a directory`));
      return d;
    }
    if (dirname(d) === d) return d;
  }
}

/**
 * Refuses, saying why and naming --address, a socket path ckd could not bind: longer than a
 * unix socket's path holds, with something other than a socket there (ckd replaces a socket
 * left by an earlier one, nothing else), under a file, or under a directory that takes no new
 * one: a directory is made in the nearest that exists and removed again, as the socket's
 * staging will be (access() would let root by under /proc, where mkdir says ENOENT). Leaves
 * nothing behind.
 */
export async function checkSocketAddress(address: string): Promise<void> {
  const named = (what: string) => `${ADDRESS} ${address}: ${what}`;
  const bytes = Buffer.byteLength(address);
  if (bytes > MAX_SOCKET_PATH) throw new Error(named(`${bytes} bytes long; a unix socket's path holds at most ${MAX_SOCKET_PATH}`));
  const there = await statOf(address, lstat).catch((err: unknown) => {
    throw new Error(named(`cannot look at it: ${why(err)}`));
  });
  if (there && !there.isSocket()) throw new Error(named(`${there.isDirectory() ? "a directory" : there.isSymbolicLink() ? "a symbolic link" : "a file"} is there, not a socket (ckd replaces only a socket)`));
  const dir = await nearestDir(dirname(address), named);
  try {
    await rmdir(await mkdtemp(join(dir, ".ck-sock-")));
  } catch (err) {
    throw new Error(named(`cannot make ${dir === dirname(address) ? "the socket" : "its directory"} in ${dir}: ${why(err)}`));
  }
}

/**
 * mkdir -p, one level at a time: Node's recursive mkdir never returns for a path under /proc
 * (seen with Node 20: it retries the parent's ENOENT forever).
 */
export async function makeDirs(dir: string, mode: number): Promise<void> {
  const missing: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    try {
      await stat(d);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || dirname(d) === d) throw err;
      missing.unshift(d);
    }
  }
  for (const d of missing) {
    await mkdir(d, { mode }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "EEXIST") throw err;
    });
  }
}

/** makeDirs(dir), what it cannot do said naming the setting (`flag`) and its value (`given`). */
export async function makeDirsFor(flag: string, given: string, dir: string, mode: number): Promise<void> {
  try {
    await makeDirs(dir, mode);
  } catch (err) {
    throw new Error(`${flag} ${given}: cannot make the directory ${dir}: ${why(err)}`);
  }
  const st = await stat(dir);
  if (!st.isDirectory()) throw new Error(`${flag} ${given}: ${dir} is not a directory`);
}

/** Makes the socket's directory (checkSocketAddress first). */
export function makeSocketDir(address: string): Promise<void> {
  return makeDirsFor(ADDRESS, address, dirname(address), 0o711);
}
