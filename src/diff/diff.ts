// Computing a layer: the changes from a lower tree to an upper tree as an uncompressed OCI
// tar (added and changed entries, deletions as `.wh.` whiteouts), with its digest and size.
// Two ways in: two directories compared side by side (native snapshots, or any two mounted
// trees), or an overlayfs upper directory alone, whose whiteout devices and opaque markers
// already say what was deleted.
import { constants as fsConstants, createReadStream, promises as fs, type BigIntStats } from "node:fs";
import path from "node:path";
import { once } from "node:events";
import type { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { getAttribute, listAttributes } from "@napi-rs/xattr";
import tar from "tar-stream";
import { XATTR_PAX_PREFIX } from "./pax.js";
import { withTempMount } from "../snapshots/mount.js";
import type { Mount } from "../snapshots/types.js";
import type { Applied } from "./apply.js";
import { Digester } from "./digest.js";
import { isOpaque } from "./rootpath.js";

/** A layer written: the digest and size of the uncompressed tar. */
type Written = Pick<Applied, "digest" | "size">;

const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_WHITEOUT = ".wh..wh..opq";

type Header = Partial<tar.Header> & { name: string; pax?: Record<string, string> };

interface DiffState {
  pack: tar.Pack;
  upper: string;
  /** Directories already written, so each change's parents precede it exactly once. */
  emittedDirs: Set<string>;
  /** First path written for each multiply-linked inode: later ones become hard links. */
  links: Map<string, string>;
  overlay: boolean;
}

async function lstat(p: string): Promise<BigIntStats | null> {
  try {
    return await fs.lstat(p, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

async function names(dir: string | undefined): Promise<string[]> {
  if (dir === undefined) return [];
  return (await fs.readdir(dir)).sort(byteOrder);
}

/**
 * Writes the changes from `lower` (undefined: nothing, every entry of `upper` is new) to
 * `upper` as an uncompressed tar on `out`, and resolves with its digest and size.
 */
export async function writeDiff(lower: string | undefined, upper: string, out: Writable): Promise<Written> {
  return writeTar(upper, out, false, (st) => compareDir(st, "", lower, upper));
}

/**
 * Writes an overlayfs upper directory as a layer: 0/0 character devices become `.wh.`
 * whiteouts and directories marked `trusted.overlay.opaque=y` get an opaque marker.
 */
export async function writeOverlayDiff(upper: string, out: Writable): Promise<Written> {
  return writeTar(upper, out, true, (st) => compareDir(st, "", undefined, upper));
}

async function writeTar(
  upper: string,
  out: Writable,
  overlay: boolean,
  walk: (st: DiffState) => Promise<void>,
): Promise<Written> {
  const pack = tar.pack();
  const digester = new Digester();
  const writing = pipeline(pack, digester, out);
  writing.catch(() => undefined);
  const state: DiffState = { pack, upper, emittedDirs: new Set(), links: new Map(), overlay };
  try {
    await walk(state);
    pack.finalize();
    await writing;
  } catch (err) {
    pack.destroy(err as Error);
    await writing.catch(() => undefined);
    throw err;
  }
  return { digest: digester.digest(), size: digester.size };
}

async function compareDir(st: DiffState, rel: string, lowerDir: string | undefined, upperDir: string): Promise<void> {
  const up = await names(upperDir);
  const low = await names(lowerDir);
  const upSet = new Set(up);
  const all = [...new Set([...up, ...low])].sort(byteOrder);
  if (st.overlay && rel !== "" && isOpaque(upperDir)) {
    await ensureParents(st, rel + "/x");
    await addWhiteout(st, rel, OPAQUE_WHITEOUT, upperDir);
  }
  for (const name of all) {
    const childRel = rel === "" ? name : `${rel}/${name}`;
    const uPath = path.join(upperDir, name);
    const lPath = lowerDir === undefined ? undefined : path.join(lowerDir, name);
    const u = upSet.has(name) ? await lstat(uPath) : null;
    const l = lPath === undefined ? null : await lstat(lPath);
    if (!u) {
      if (l) await addWhiteout(st, rel, WHITEOUT_PREFIX + name, upperDir);
      continue;
    }
    if (st.overlay && u.isCharacterDevice() && u.rdev === 0n) {
      await addWhiteout(st, rel, WHITEOUT_PREFIX + name, upperDir);
      continue;
    }
    if (u.isDirectory()) {
      const bothDirs = l?.isDirectory() ?? false;
      if (!bothDirs || !sameMeta(l!, u)) await addEntry(st, childRel, uPath, u);
      await compareDir(st, childRel, bothDirs ? lPath : undefined, uPath);
      continue;
    }
    if (!l || !(await sameEntry(l, lPath!, u, uPath))) await addEntry(st, childRel, uPath, u);
  }
}

function kind(s: BigIntStats): string {
  if (s.isFile()) return "file";
  if (s.isDirectory()) return "dir";
  if (s.isSymbolicLink()) return "symlink";
  if (s.isCharacterDevice()) return "char";
  if (s.isBlockDevice()) return "block";
  if (s.isFIFO()) return "fifo";
  return "other";
}

function sameMeta(a: BigIntStats, b: BigIntStats): boolean {
  return (
    kind(a) === kind(b) &&
    (a.mode & 0o7777n) === (b.mode & 0o7777n) &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    a.mtimeNs === b.mtimeNs
  );
}

async function sameEntry(l: BigIntStats, lPath: string, u: BigIntStats, uPath: string): Promise<boolean> {
  if (l.dev === u.dev && l.ino === u.ino) return true;
  if (!sameMeta(l, u) || l.size !== u.size) return false;
  if (u.isSymbolicLink()) return (await fs.readlink(lPath)) === (await fs.readlink(uPath));
  // A capability set or dropped (setcap) changes neither size nor mtime: compared as
  // containerd's differ compares it.
  if (!(await sameCapability(lPath, uPath))) return false;
  if (u.isCharacterDevice() || u.isBlockDevice()) return l.rdev === u.rdev;
  if (!u.isFile()) return true;
  // Same size and nanosecond mtime is taken as unchanged, unless the mtime has no sub-second
  // part (a tar-applied or truncated time), where a rewrite could hide: compare the bytes.
  if (u.mtimeNs % 1_000_000_000n !== 0n) return true;
  return sameBytes(lPath, uPath);
}

async function sameCapability(a: string, b: string): Promise<boolean> {
  const read = (p: string) => getAttribute(p, "security.capability").catch(() => null);
  const [ca, cb] = await Promise.all([read(a), read(b)]);
  if (!ca || !cb) return !ca && !cb;
  return ca.equals(cb);
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  const [fa, fb] = await Promise.all([fs.open(a, "r"), fs.open(b, "r")]);
  try {
    const ba = Buffer.alloc(65536);
    const bb = Buffer.alloc(65536);
    for (;;) {
      const [ra, rb] = await Promise.all([fa.read(ba, 0, ba.length), fb.read(bb, 0, bb.length)]);
      if (ra.bytesRead !== rb.bytesRead) return false;
      if (ra.bytesRead === 0) return true;
      if (!ba.subarray(0, ra.bytesRead).equals(bb.subarray(0, rb.bytesRead))) return false;
    }
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

/** Writes the not yet written directories above `rel`, from the upper tree. */
async function ensureParents(st: DiffState, rel: string): Promise<void> {
  const parts = rel.split("/");
  for (let i = 1; i < parts.length; i++) {
    const dir = parts.slice(0, i).join("/");
    if (st.emittedDirs.has(dir)) continue;
    const p = path.join(st.upper, dir);
    await addEntry(st, dir, p, (await lstat(p))!);
  }
}

function put(st: DiffState, h: Header, body?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    quiet(st.pack.entry(h, body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve())));
  });
}

/**
 * An entry of the pack: its error reaches the entry's callback; a destroyed pack also makes
 * every pending entry emit it as an 'error' event, which unheard would end the process.
 */
function quiet<T extends { on(ev: "error", fn: (err: Error) => void): unknown }>(entry: T): T {
  entry.on("error", () => undefined);
  return entry;
}

async function addWhiteout(st: DiffState, parentRel: string, base: string, upperParent: string): Promise<void> {
  const name = parentRel === "" ? base : `${parentRel}/${base}`;
  await ensureParents(st, name);
  // The parent's mtime, not the clock: the same trees always give the same bytes.
  const ps = await lstat(upperParent);
  // Mode 0, as containerd's and Docker's differs write whiteouts: tar-stream takes a mode of
  // 0 for "none given" (0644) and writes only the permission bits, so the file-type bit says 0.
  await put(st, { name, type: "file", mode: fsConstants.S_IFREG, uid: 0, gid: 0, size: 0, mtime: toDate(ps!.mtimeNs) });
}

function toDate(ns: bigint): Date {
  return new Date(Number(ns / 1_000_000_000n) * 1000);
}

async function xattrPax(p: string, s: BigIntStats): Promise<Record<string, string> | undefined> {
  if (s.isSymbolicLink()) return undefined;
  const keys = await listAttributes(p).catch(() => [] as string[]);
  const pax: Record<string, string> = {};
  for (const k of keys.sort()) {
    if (k.startsWith("trusted.overlay.")) continue; // overlayfs' own bookkeeping
    const v = await getAttribute(p, k).catch(() => null);
    if (v === null) continue;
    // Byte-valued (./pax.ts): binary values (security.capability) are written as they are.
    pax[XATTR_PAX_PREFIX + k] = v.toString("latin1");
  }
  return Object.keys(pax).length > 0 ? pax : undefined;
}

function devNumbers(rdev: bigint): { devmajor: number; devminor: number } {
  const r = Number(rdev);
  return {
    devmajor: ((r >>> 8) & 0xfff) | Number((rdev >> 32n) & ~0xfffn),
    devminor: (r & 0xff) | Number((rdev >> 12n) & ~0xffn),
  };
}

async function addEntry(st: DiffState, rel: string, p: string, s: BigIntStats): Promise<void> {
  await ensureParents(st, rel);
  const h: Header = {
    name: rel,
    mode: Number(s.mode & 0o7777n),
    uid: Number(s.uid),
    gid: Number(s.gid),
    mtime: toDate(s.mtimeNs),
  };
  const pax = await xattrPax(p, s);
  if (pax) h.pax = pax;
  if (s.isDirectory()) {
    st.emittedDirs.add(rel);
    return put(st, { ...h, name: rel + "/", type: "directory" }); // "/" as Go's tar writer does
  }
  if (s.isSymbolicLink()) return put(st, { ...h, type: "symlink", linkname: await fs.readlink(p) });
  if (s.isCharacterDevice() || s.isBlockDevice()) {
    return put(st, { ...h, type: s.isCharacterDevice() ? "character-device" : "block-device", ...devNumbers(s.rdev) });
  }
  if (s.isFIFO()) return put(st, { ...h, type: "fifo" });
  if (!s.isFile()) return; // sockets and the like have no place in a layer
  if (s.nlink > 1n) {
    const key = `${s.dev}:${s.ino}`;
    const first = st.links.get(key);
    if (first !== undefined) return put(st, { ...h, type: "link", linkname: first });
    st.links.set(key, rel);
  }
  await putFile(st, { ...h, type: "file", size: Number(s.size) }, p);
}

/**
 * A regular file's entry, its bytes read from `p`. Settles only once the file is closed: an
 * open descriptor would keep a temporary mount busy for its unmount.
 */
async function putFile(st: DiffState, h: Header, p: string): Promise<void> {
  let entry!: ReturnType<ReturnType<typeof tar.pack>["entry"]>;
  const written = new Promise<void>((resolve, reject) => {
    entry = quiet(st.pack.entry(h, (err) => (err ? reject(err) : resolve())));
  });
  written.catch(() => undefined);
  const file = createReadStream(p);
  try {
    for await (const chunk of file) {
      // A destroyed entry (the layer's output failed) emits close, never drain; its callback
      // has the error.
      if (!entry.write(chunk)) await drainOrClose(entry);
      if (entry.destroying) break;
    }
    // Fewer or more bytes than its header said (the file changed under the walk): the entry
    // fails ("Size mismatch"), as Go's tar writer refuses them.
    if (!entry.destroying) entry.end(undefined);
  } catch (err) {
    entry.destroy(err as Error);
  } finally {
    file.destroy();
    if (!file.closed) await once(file, "close");
  }
  await written;
}

/** Until a (streamx) writable wants more, or is closed. */
function drainOrClose(w: { once(ev: string, fn: () => void): unknown; off(ev: string, fn: () => void): unknown }): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      w.off("drain", done);
      w.off("close", done);
      resolve();
    };
    w.once("drain", done);
    w.once("close", done);
  });
}

/** Read-only directories for `mounts`: a bind mount's source as it is, else a temp mount. */
async function withTree<T>(mounts: readonly Mount[] | undefined, fn: (dir: string | undefined) => Promise<T>): Promise<T> {
  if (mounts === undefined || mounts.length === 0) return fn(undefined);
  const m = mounts[0];
  if (mounts.length === 1 && (m.type === "bind" || m.options.includes("rbind") || m.options.includes("bind"))) {
    return fn(m.source);
  }
  return withTempMount(mounts.map(readOnly), (dir) => fn(dir));
}

/**
 * A mount to read a tree through, never to write (containerd's WithReadonlyTempMount): an
 * active overlay's upper directory becomes its top lower one, without its work directory, so
 * a running container's overlay is never mounted read-write a second time.
 */
export function readOnly(m: Mount): Mount {
  if (m.type !== "overlay") return { ...m, options: [...m.options.filter((o) => o !== "rw" && o !== "ro"), "ro"] };
  const opt = (k: string) => m.options.find((o) => o.startsWith(`${k}=`))?.slice(k.length + 1);
  const upper = opt("upperdir");
  const lower = opt("lowerdir");
  const rest = m.options.filter((o) => !/^(upperdir|workdir|lowerdir)=/.test(o) && o !== "rw" && o !== "ro");
  const lowers = [upper, lower].filter((x): x is string => !!x).join(":");
  return { ...m, options: [...rest, `lowerdir=${lowers}`, "ro"] };
}

/**
 * The changes between two mount sets as a layer (containerd's walking differ): each side is
 * read through its mounts, the lower one optional (a base layer).
 */
export async function writeDiffFromMounts(
  lower: readonly Mount[] | undefined,
  upper: readonly Mount[],
  out: Writable,
): Promise<Written> {
  return withTree(lower, (l) => withTree(upper, (u) => writeDiff(l, u!, out)));
}
