// Paths inside a root directory evaluated as if the root were "/": symlinks are followed with
// absolute targets re-rooted and ".." clamped at the root, so a resolved path never leaves it.
// This is how layer entries and hard-link targets are placed (containerd's fs.RootPath).
import fss from "node:fs";
import path from "node:path";
import { getAttributeSync } from "@napi-rs/xattr";
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

/** An overlayfs whiteout: a character device 0/0. */
export const isWhiteout = (st: fss.Stats) => st.isCharacterDevice() && st.rdev === 0;

/**
 * An overlayfs opaque directory (`trusted.overlay.opaque=y`): the layers below it are hidden.
 * Read synchronously, as the apply's other per-entry calls are (a promise costs more than the
 * read).
 */
export function isOpaque(dir: string): boolean {
  try {
    return getAttributeSync(dir, "trusted.overlay.opaque")?.toString() === "y";
  } catch {
    return false;
  }
}

/**
 * resolveInRoot over an overlay's layers, as the mounted overlay would resolve the path:
 * `root` is the upper directory, `lowers` the lower ones, nearest first. Each component is
 * looked up in the layers from the top; the first that has the name decides what it is (a
 * whiteout there hides it), a symlink is read from that layer, and a directory that is opaque
 * in a layer hides the layers below it for what lies under it. A component no layer shows,
 * and everything after it, is taken literally. The result is a path in `root`.
 *
 * `consulted`, if given, receives every name (relative to the layers' roots) whose entry in
 * the layers the answer depends on: only a change at one of those names in `root` (the one
 * layer that can change) can change the answer.
 */
export async function resolveInLayers(root: string, lowers: readonly string[], rel: string, consulted?: Set<string>): Promise<string> {
  const layers = [root, ...lowers];
  const resolved: string[] = [];
  /** How many layers (from the top) show what lies under each resolved directory. */
  const visible: number[] = [];
  const queue = components(rel);
  let links = 0;
  let missing = false;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === "..") {
      resolved.pop();
      visible.pop();
      continue;
    }
    const shown = visible.length > 0 ? visible[visible.length - 1]! : layers.length;
    if (missing) {
      resolved.push(c);
      visible.push(shown);
      continue;
    }
    consulted?.add(path.posix.join(...resolved, c));
    let found: { layer: number; st: fss.Stats } | undefined;
    for (let i = 0; i < shown && !found; i++) {
      const st = fss.lstatSync(path.join(layers[i]!, ...resolved, c), { throwIfNoEntry: false });
      if (st) found = { layer: i, st };
    }
    if (!found || isWhiteout(found.st)) {
      missing = true;
      resolved.push(c);
      visible.push(shown);
      continue;
    }
    if (found.st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) throw invalidArgument(`path "${rel}": too many levels of symbolic links`);
      const target = fss.readlinkSync(path.join(layers[found.layer]!, ...resolved, c));
      if (target.startsWith("/")) {
        resolved.length = 0;
        visible.length = 0;
      }
      queue.unshift(...components(target));
      continue;
    }
    // A directory shows itself in the layers from here down to the first that is opaque, or
    // that has something else (or a whiteout) under this name.
    let below = shown;
    if (found.st.isDirectory()) {
      for (let i = found.layer; i < shown; i++) {
        const p = path.join(layers[i]!, ...resolved, c);
        const st = i === found.layer ? found.st : fss.lstatSync(p, { throwIfNoEntry: false });
        if (!st) continue;
        if (!st.isDirectory()) {
          below = i;
          break;
        }
        if (isOpaque(p)) {
          below = i + 1;
          break;
        }
      }
    } else {
      missing = true; // nothing lies under a file
    }
    resolved.push(c);
    visible.push(below);
  }
  const out = path.join(root, ...resolved);
  assertInside(root, out, rel);
  return out;
}

/**
 * What the overlay of `layers` (nearest first) shows at `rel`, taken literally (no symlink on
 * the way is followed: a component some layer has as a symlink or a file shows nothing under
 * it): the entry of the nearest layer that has the name, as long as every directory above it
 * shows through (not opaque, not whited out or replaced in a nearer layer). Undefined when
 * nothing shows there or a whiteout does. Every lstat is made under directories known to be
 * real directories in that layer, so none leaves the layer.
 */
export async function shownInLowers(layers: readonly string[], rel: string): Promise<{ path: string; st: fss.Stats } | undefined> {
  const parts = components(rel);
  if (parts.length === 0) return undefined;
  /** Layers whose path so far is a real directory; below `visible`, the layers hidden. */
  const open = layers.map(() => true);
  let visible = layers.length;
  for (let k = 0; k < parts.length; k++) {
    const rels = parts.slice(0, k + 1);
    let shown: { path: string; st: fss.Stats } | undefined;
    for (let i = 0; i < visible; i++) {
      if (!open[i]) continue;
      const p = path.join(layers[i]!, ...rels);
      const st = fss.lstatSync(p, { throwIfNoEntry: false });
      if (!st) {
        open[i] = false;
        continue;
      }
      if (!shown) {
        if (isWhiteout(st)) return undefined;
        shown = { path: p, st };
        if (k === parts.length - 1) return shown;
        if (!st.isDirectory()) return undefined;
      } else if (!st.isDirectory()) {
        // A file, symlink or whiteout under a directory of a nearer layer: hidden, and so is
        // everything below it.
        visible = i;
        break;
      }
      if (isOpaque(p)) {
        visible = i + 1;
        break;
      }
    }
    if (!shown) return undefined;
  }
  return undefined;
}

/** Throws unless `p` is `root` or below it; the last guard before any write. */
export function assertInside(root: string, p: string, what: string): void {
  const r = path.resolve(root);
  const q = path.resolve(p);
  if (q !== r && !q.startsWith(r + path.sep)) {
    throw invalidArgument(`entry "${what}" resolves outside the root`);
  }
}
