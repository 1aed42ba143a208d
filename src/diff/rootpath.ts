// Paths inside a root directory evaluated as if the root were "/": symlinks are followed with
// absolute targets re-rooted and ".." clamped at the root, so a resolved path never leaves it.
// This is how layer entries and hard-link targets are placed (containerd's fs.RootPath).
import fss from "node:fs";
import path from "node:path";
import { invalidArgument } from "../errdefs/errdefs.js";

/** Symlinks followed while resolving one path, as Linux's MAXSYMLINKS. */
const MAX_SYMLINKS = 40;

/**
 * A tar entry name as a clean path relative to the root: leading "/" and "." removed, ".."
 * clamped at the root (`../../etc/x` is `etc/x`). "" means the root itself.
 */
export function cleanEntryName(name: string): string {
  return path.posix.normalize("/" + name).slice(1).replace(/\/+$/, "");
}

function components(p: string): string[] {
  return p.split("/").filter((c) => c !== "" && c !== ".");
}

/**
 * The absolute path of `rel` inside `root` with every symlink in it resolved within `root`.
 * With `followLast: false` the last component is kept as it is (the entry itself is never
 * followed, only its parents). Components that do not exist are taken literally.
 */
export async function resolveInRoot(
  root: string,
  rel: string,
  opts: { followLast: boolean },
): Promise<string> {
  const resolved: string[] = [];
  const queue = components(rel);
  let links = 0;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === "..") {
      resolved.pop();
      continue;
    }
    if (queue.length === 0 && !opts.followLast) {
      resolved.push(c);
      break;
    }
    const candidate = path.join(root, ...resolved, c);
    let st;
    try {
      st = fss.lstatSync(candidate);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") {
        resolved.push(c);
        continue;
      }
      throw err;
    }
    if (!st.isSymbolicLink()) {
      resolved.push(c);
      continue;
    }
    if (++links > MAX_SYMLINKS) {
      throw invalidArgument(`path "${rel}": too many levels of symbolic links`);
    }
    const target = fss.readlinkSync(candidate);
    if (target.startsWith("/")) resolved.length = 0;
    queue.unshift(...components(target));
  }
  const out = path.join(root, ...resolved);
  assertInside(root, out, rel);
  return out;
}

/** Throws unless `p` is `root` or below it; the last guard before any write. */
export function assertInside(root: string, p: string, what: string): void {
  const r = path.resolve(root);
  const q = path.resolve(p);
  if (q !== r && !q.startsWith(r + path.sep)) {
    throw invalidArgument(`entry "${what}" resolves outside the root`);
  }
}
