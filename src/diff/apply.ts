// Applying an OCI image layer (a tar, plain, gzip or zstd) onto a directory or onto a
// snapshot's mounts: OCI whiteouts, modes, owners, times, xattrs, links. The answer is the
// digest of the uncompressed tar, the layer's diff_id. Hostile entries are contained: every
// path is placed inside the root with its parents' symlinks resolved as if the root were "/",
// entries themselves are never followed, and device nodes are not made.
import fss, { constants as fsc, type Stats } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { Readable, Transform, type TransformCallback, type TransformOptions } from "node:stream";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { pipeline } from "node:stream/promises";
import { createGunzip, type ZlibOptions } from "node:zlib";
import { getAttributeSync, listAttributesSync, setAttribute, setAttributeSync } from "@napi-rs/xattr";
import { Decompress as ZstdDecompressor } from "fzstd";
import tar from "tar-stream";
import { goTarReading, XATTR_PAX_PREFIX } from "./pax.js";
import { sparseHeader, SparseMapReader, type SparseFile, type SparseHeader } from "./sparse.js";
import {
  CkError,
  type ErrorClass,
  failedPrecondition,
  invalidArgument,
  isClass,
  notImplemented,
} from "../errdefs/errdefs.js";
import { runCommand, withTempMount } from "../snapshots/mount.js";
import type { Mount } from "../snapshots/types.js";
import { Digester } from "./digest.js";
import { assertInside, cleanEntryName, isWhiteout, resolveInLayers, resolveInRoot, shownInLowers } from "./rootpath.js";
import { ZstdFrameScanner } from "./zstd-frames.js";
import type { ApplyCancel, ApplyReply, ApplyRequest } from "./apply-worker.js";

export interface ApplyOptions {
  /** The layer descriptor's media type; only used to name the layer in errors. */
  mediaType?: string;
  /**
   * How OCI whiteouts land: "delete" removes what they name (a plain or native tree);
   * "overlay" writes overlayfs whiteouts (0/0 character devices, `trusted.overlay.opaque=y`)
   * into an overlayfs upper directory, as containerd does when applying onto an overlay mount.
   */
  whiteouts?: "delete" | "overlay";
  /**
   * With "overlay": the lower directories, nearest first. A parent directory missing from the
   * upper directory is created with the attributes it has in the nearest lower one.
   */
  parents?: readonly string[];
  /**
   * Files of the root that this apply did not create may be hard links shared with another
   * tree (a native snapshot whose files link its parent's: Snapshotter.prepare's linkFiles).
   * Entries replace files and never write into one, but a hard link entry's metadata lands on
   * the inode it links to: such a file is first copied, with every name it has in the root.
   */
  sharedInodes?: boolean;
  /**
   * Stops the apply at its next entry or chunk of data once aborted (the caller gone), failing
   * with the signal's reason; what was applied so far stays, as containerd's apply leaves it.
   */
  signal?: AbortSignal;
}

export interface Applied {
  /** sha256 of the uncompressed tar: the layer's diff_id. */
  digest: string;
  /** Bytes of the uncompressed tar. */
  size: number;
  /**
   * Directories the apply had to create because an entry needed them and the layer has no
   * entry of its own for them (relative to the root, parents first). With overlay whiteouts
   * and no `parents` they were made with default attributes: inheritLowerAttributes gives them
   * the attributes of the lower layers once those are known.
   */
  implicitDirs: string[];
  /**
   * Every directory the apply made for an entry's sake, relative to the root, including those
   * an entry of their own came for later (which implicitDirs no longer lists).
   */
  madeForEntries: string[];
  /** What the layer's whiteout entries removed, relative to the root. */
  whiteouts: string[];
  /** The directories the layer made opaque, relative to the root. */
  opaques: string[];
  /** Character and block device entries, not made (relative to the root). */
  skippedDevices: string[];
}

const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_WHITEOUT = ".wh..wh..opq";

/** Decompressed bytes buffered ahead of the tar reader. */
const INFLATE_AHEAD = 8 << 20;

/**
 * zstd decompression on fzstd (Node 20's zlib has none). Every frame's header is checked by a
 * ZstdFrameScanner before fzstd sees it: fzstd allocates the window a frame asks for, and a
 * layer's later frames may ask for more than its first.
 */
class ZstdDecompress extends Transform {
  private readonly z = new ZstdDecompressor((data) => {
    if (data.length > 0) this.push(Buffer.from(data));
  });
  private readonly frames: ZstdFrameScanner;
  constructor(opts: TransformOptions, mediaType: string | undefined) {
    super(opts);
    this.frames = new ZstdFrameScanner(mediaType ? `zstd layer of media type "${mediaType}"` : "zstd layer");
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.frames.push(chunk);
      this.z.push(chunk);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }
  override _flush(cb: TransformCallback): void {
    try {
      // The scanner first: a stream cut inside a frame is reported in its words, naming the frame.
      this.frames.end();
      this.z.push(new Uint8Array(0), true);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }
}

type Compression = "none" | "gzip" | "zstd";

function detect(head: Buffer, mediaType: string | undefined): Compression {
  const what = mediaType ? `layer of media type "${mediaType}"` : "layer";
  if (mediaType?.endsWith("+encrypted")) throw notImplemented(`${what}: encrypted layers`);
  const starts = (...b: number[]) => head.length >= b.length && b.every((x, i) => head[i] === x);
  if (starts(0x1f, 0x8b, 0x08)) return "gzip";
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return "zstd";
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) throw notImplemented(`${what}: xz compression`);
  if (starts(0x42, 0x5a, 0x68)) throw notImplemented(`${what}: bzip2 compression`);
  return "none";
}

/** The layer's bytes, decompressed according to their magic number. */
async function decompressed(layer: Readable, mediaType: string | undefined): Promise<Readable> {
  const it = layer[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const chunks: Buffer[] = [];
  let have = 0;
  let done = false;
  while (have < 6) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    chunks.push(r.value);
    have += r.value.length;
  }
  const head = Buffer.concat(chunks);
  const compression = detect(head, mediaType);
  const raw = Readable.from(
    (async function* () {
      if (head.length > 0) yield head;
      while (!done) {
        const r = await it.next();
        if (r.done) break;
        yield r.value;
      }
    })(),
    { objectMode: false },
  );
  if (compression === "none") return raw;
  // A large buffer lets decompression (zlib works on the thread pool) run ahead of the file
  // writes on this thread instead of taking turns with them.
  const inflater = compression === "gzip" ? createGunzip({ chunkSize: 128 << 10, highWaterMark: INFLATE_AHEAD } as ZlibOptions) : new ZstdDecompress({ highWaterMark: INFLATE_AHEAD }, mediaType);
  raw.on("error", (err) => inflater.destroy(err));
  return raw.pipe(inflater);
}

interface ApplyState {
  root: string;
  /** ApplyOptions.mediaType, to name the layer in errors. */
  mediaType?: string;
  whiteouts: "delete" | "overlay";
  parents: readonly string[];
  asRoot: boolean;
  /** See ApplyOptions.sharedInodes. */
  sharedInodes: boolean;
  /** The root's names of each inode with several (`dev:ino`), read at the first unshareInode. */
  sharedNames?: Map<string, string[]>;
  /** The root with its symlinks resolved (for checking that a name leads where it says). */
  realRoot?: string;
  /** Paths this layer wrote: an opaque marker keeps them, whatever order the tar has. */
  unpacked: Set<string>;
  /** Directory times are set last, since creating children changes them. */
  dirTimes: { path: string; rel: string; atime: number; mtime: number; generation: number }[];
  /**
   * Parent directories already resolved and known to be real directories, by clean relative
   * name. Only a removal or a replaced entry can change how a name resolves, and both clear
   * it; see rememberParent for the resolutions kept in throughLowers instead.
   */
  resolvedParents: Map<string, string>;
  /**
   * Parent directories resolved through a lower layer's symlink (see rememberParent), and the
   * names in the root those resolutions looked at (`consulted`): creating something at one of
   * those names clears both (createdInRoot), as does everything that clears resolvedParents.
   */
  throughLowers: Map<string, string>;
  consulted: Set<string>;
  /** One overlay whiteout inode per owner (`uid:gid`), which later whiteouts link to. */
  whiteoutInodes: Map<string, { path: string; dev: number; ino: number }>;
  signal?: AbortSignal;
  /**
   * Directories this apply created (mkdir on a name that did not exist), by absolute path.
   * Nothing else writes into the root while a layer is applied, so a name in one of them
   * exists only if this apply put it there (`made`): no lstat is needed to know it is new.
   * Cleared by every removal, as resolvedParents is.
   */
  fresh: Set<string>;
  /** Every name this apply created (entries and overlay whiteouts), by absolute path. */
  made: Set<string>;
  /** Bumped by every removal and every new symlink: both can change how a path resolves. */
  generation: number;
  /** Directories made for an entry's sake, by relative name, until an entry of their own comes. */
  implicit: Set<string>;
  /** Applied.madeForEntries, relative. */
  madeForEntries: Set<string>;
  /** Applied.whiteouts and Applied.opaques, by absolute path. */
  removedByWhiteouts: Set<string>;
  opaques: Set<string>;
  skippedDevices: string[];
}

type Header = Partial<tar.Header> & {
  name: string;
  pax?: Record<string, string> | null;
  /** An old GNU sparse header's raw block (./pax.ts keeps it; typeflag 'S', type null here). */
  gnuSparseHeader?: Buffer;
};
/** An entry's data, as tar-stream hands it out (a streamx stream, async-iterable). */
type Body = AsyncIterable<Buffer>;

function writeAll(fd: number, chunk: Buffer): void {
  for (let off = 0; off < chunk.length; ) off += fss.writeSync(fd, chunk, off);
}

/** Writes `chunk` at `position` of the file (pwrite), whatever the file's offset. */
function writeAllAt(fd: number, chunk: Buffer, position: number): void {
  for (let off = 0; off < chunk.length; ) off += fss.writeSync(fd, chunk, off, chunk.length - off, position + off);
}

// The file system calls below are synchronous on purpose: each is a few microseconds, while
// a promise-based call costs a thread-pool round trip (~70us measured here), which made
// applying a layer of small files 20x slower than tar(1). The event loop still turns
// between entries, since each entry's data arrives asynchronously.
async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return fss.lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

/**
 * Applies the layer read from `layer` onto directory `root` (which must exist). Resolves
 * with the diff_id and size of the uncompressed tar; rejects with InvalidArgument naming the
 * entry for a refused or malformed entry, NotImplemented for an unsupported compression.
 */
export async function applyLayer(root: string, layer: Readable, opts: ApplyOptions = {}): Promise<Applied> {
  return applyLayerStream(root, layer, opts);
}

async function applyLayerStream(root: string, layer: Readable, opts: ApplyOptions): Promise<Applied> {
  const rootDir = fss.realpathSync(root);
  const st = fss.statSync(rootDir);
  if (!st.isDirectory()) throw invalidArgument(`apply root ${root}: not a directory`);
  const state: ApplyState = {
    root: rootDir,
    mediaType: opts.mediaType,
    whiteouts: opts.whiteouts ?? "delete",
    parents: opts.parents ?? [],
    asRoot: process.getuid?.() === 0,
    sharedInodes: opts.sharedInodes === true,
    unpacked: new Set(),
    dirTimes: [],
    resolvedParents: new Map(),
    throughLowers: new Map(),
    consulted: new Set(),
    whiteoutInodes: new Map(),
    signal: opts.signal,
    fresh: new Set(),
    made: new Set(),
    generation: 0,
    implicit: new Set(),
    madeForEntries: new Set(),
    removedByWhiteouts: new Set(),
    opaques: new Set(),
    skippedDevices: [],
  };
  const source = await decompressed(layer, opts.mediaType);
  const digester = new Digester();
  const extract = tar.extract();
  goTarReading(extract);
  const feeding = pipeline(source, digester, extract);
  feeding.catch(() => undefined); // awaited below; a failure also ends the entry loop
  try {
    for await (const entry of extract) {
      opts.signal?.throwIfAborted();
      const consumed = await applyEntry(state, entry.header as Header, entry as AsyncIterable<Buffer>);
      if (!consumed) for await (const _ of entry) opts.signal?.throwIfAborted();
    }
    await feeding;
  } catch (err) {
    source.destroy();
    extract.destroy();
    await feeding.catch(() => undefined);
    // Whatever stopped it then (the layer cut short by the caller's going), it was the abort.
    const reason: unknown = opts.signal?.aborted ? opts.signal.reason : undefined;
    if (reason !== undefined) throw reason instanceof CkError ? reason : new CkError("Canceled", "apply layer: the caller went away", { cause: reason });
    throw asCkError(err, opts.mediaType);
  }
  for (const d of state.dirTimes) {
    // A later removal or symlink may have changed what the recorded path resolves to (a
    // parent replaced by a link pointing out of the root): then resolve it again, in the root.
    // Nothing removed or replaced since it was recorded: it is still that directory.
    if (d.generation === state.generation) {
      fss.lutimesSync(d.path, d.atime, d.mtime);
      continue;
    }
    const again = await resolveInRoot(state.root, d.rel, { followLast: false });
    if (again !== d.path) continue;
    const s = await lstatOrNull(d.path);
    if (s?.isDirectory()) fss.lutimesSync(d.path, d.atime, d.mtime);
  }
  const rel = (set: Set<string>) => [...set].map((p) => path.relative(state.root, p));
  return {
    digest: digester.digest(),
    size: digester.size,
    implicitDirs: [...state.implicit],
    madeForEntries: [...state.madeForEntries],
    whiteouts: rel(state.removedByWhiteouts),
    opaques: rel(state.opaques),
    skippedDevices: state.skippedDevices,
  };
}

/**
 * A failure while the layer is read (between entries, or in an entry's data: `entry` names it):
 * a system call's (reading the layer's file) is Unknown; anything else comes from the tar
 * parser or the decompressor, wherever the damage falls: the layer is malformed.
 */
function asCkError(err: unknown, mediaType: string | undefined, entry?: string): CkError {
  if (err instanceof CkError) return err;
  const e = err as NodeJS.ErrnoException;
  const at = entry === undefined ? "" : `entry ${JSON.stringify(entry)}: `;
  if (e && typeof e.syscall === "string") {
    return new CkError("Unknown", `apply layer: ${at}${e.message}`, { cause: err });
  }
  const what = mediaType ? `layer of media type "${mediaType}"` : "layer";
  return invalidArgument(`${what}: malformed: ${at}${e?.message ?? String(err)}`, { cause: err });
}

/**
 * An entry's data as the layer gives it, failing as asCkError classes a failure between
 * entries: a corrupt or cut-short layer is InvalidArgument whether the damage falls in an
 * entry's data or after it. Only the reading goes through here: a failure of what the caller
 * does with a chunk (ENOSPC writing the file) stays the file system's.
 */
async function* entryData(state: ApplyState, name: string, body: Body): AsyncIterable<Buffer> {
  let chunk: Buffer;
  try {
    for await (chunk of body) {
      // A caller gone stops the apply inside one large (or endlessly inflating) file too.
      state.signal?.throwIfAborted();
      yield chunk;
    }
  } catch (err) {
    if (state.signal?.aborted && err === state.signal.reason) throw err;
    throw asCkError(err, state.mediaType, name);
  }
}

/** A sparse file's entry: the file (real name and size, fragments: checked) and its fragments' data. */
interface SparseEntry {
  file: SparseFile;
  data: AsyncIterable<Buffer>;
}

/**
 * An entry's sparse file (tar --sparse, in any of GNU's forms: ./sparse.ts), read and checked
 * before anything of the entry is written, as Go's archive/tar expands it for containerd. Its
 * map is in its header, or opens its data: then it is read off the data here, through the
 * iterator that goes on to give the fragments. `head`: what its header says (sparseHeader).
 */
async function readSparse(state: ApplyState, h: Header, head: SparseHeader, body: Body): Promise<SparseEntry> {
  // Go refuses sparse records on a header-only type (a link, a directory, a device), and
  // containerd an unknown typeflag whatever its records say.
  const regular = h.type === "file" || h.type === "contiguous-file" || h.type === undefined || (h.type === null && h.gnuSparseHeader !== undefined);
  if (!regular) throw invalidArgument(`entry ${JSON.stringify(h.name)}: sparse file records on a ${h.type ?? "non-file"} entry`);
  const reader = new SparseMapReader(head);
  if (reader.done) return { file: reader.finish(h.size ?? 0), data: entryData(state, head.name, body) };
  const it = entryData(state, head.name, body)[Symbol.asyncIterator]();
  let rest: Buffer | undefined;
  while (rest === undefined) {
    const r = await it.next();
    if (r.done) break;
    rest = reader.push(r.value);
  }
  // The size as it is now: old GNU extension blocks are counted into it as they are read
  // (./pax.ts), each before its bytes come through here. Throws if the data ended before the map.
  const file = reader.finish(h.size ?? 0);
  const after = rest ?? Buffer.alloc(0);
  const data = (async function* () {
    if (after.length > 0) yield after;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  })();
  return { file, data };
}

/** Applies one entry; true if it read the entry's data. */
async function applyEntry(state: ApplyState, h: Header, body: Body): Promise<boolean> {
  const head = sparseHeader(h.name, h.pax, h.gnuSparseHeader);
  if (!head) return applyNamed(state, h, body);
  const sparse = await readSparse(state, h, head, body);
  // Under its real name. Its data went through one iterator: the rest of it too, whatever the
  // entry turned out to be (a whiteout reads none).
  if (!(await applyNamed(state, { ...h, name: sparse.file.name }, body, sparse))) for await (const _ of sparse.data) void _;
  return true;
}

/** applyEntry for an entry under its name; `sparse` for a sparse file (readSparse). */
async function applyNamed(state: ApplyState, h: Header, body: Body, sparse?: SparseEntry): Promise<boolean> {
  const name = h.name;
  const rel = cleanEntryName(name);
  if (rel === "") return false; // the root itself ("./"): containerd ignores it too
  const parentRel = path.posix.dirname(rel);
  const base = path.posix.basename(rel);
  let parent = parentRel === "." ? state.root : (state.resolvedParents.get(parentRel) ?? state.throughLowers.get(parentRel));
  const known = parent !== undefined;
  const consulted = new Set<string>();
  if (parent === undefined) parent = await resolveParent(state, parentRel, consulted);
  const target = path.join(parent, base);
  assertInside(state.root, target, name);
  try {
    if (!known) {
      await makeParent(state, parent, name);
      rememberParent(state, parentRel, parent, consulted);
    }
    if (base === OPAQUE_WHITEOUT) {
      await opaque(state, parent);
      return false;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      const gone = base.slice(WHITEOUT_PREFIX.length);
      if (gone === "" || gone === "." || gone === "..") {
        throw invalidArgument(`entry "${name}": invalid whiteout name`);
      }
      await whiteout(state, path.join(parent, gone), h);
      return false;
    }
    if (h.type === "character-device" || h.type === "block-device") {
      // Not made, and the rest of the layer applies (containerd makes them as root, and skips
      // them in a user namespace): a runtime makes the /dev a container sees, and a device
      // node is the one entry whose mere existence in a snapshot reaches outside it.
      state.skippedDevices.push(rel);
      return false;
    }
    const consumed = await createEntry(state, target, h, body, sparse);
    createdInRoot(state, target);
    if (!consumed) await applyMetadata(state, target, h); // a file's was set on its descriptor
    state.unpacked.add(target);
    state.made.add(target);
    // A directory this entry made or kept is where its path resolves to, for its children.
    if (h.type === "directory") {
      rememberParent(state, rel, target);
      state.implicit.delete(path.relative(state.root, target));
    }
    return consumed;
  } catch (err) {
    if (err instanceof CkError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e?.code === "ENOTDIR" || e?.code === "EISDIR" || e?.code === "ELOOP") {
      throw invalidArgument(`entry "${name}": ${e.message}`, { cause: err });
    }
    throw new CkError("Unknown", `entry "${name}": ${e?.message ?? String(err)}`, { cause: err });
  }
}

/**
 * Keeps where directory `rel` resolved (`dir`, a real directory of the root) for the entries
 * under it. Every name on the path is then a directory of the root, so only replacing one of
 * them (which clears the cache) can change the answer; except onto an upper directory, where
 * a lower layer's symlink on the path is followed (`lib/x` in `usr/lib/x` for a lower `lib ->
 * usr/lib`): `lib` is not in the root, and an entry that then creates it there (a directory or
 * a symlink) replaces nothing. Such a resolution is kept with the names it looked at
 * (`consulted`, from resolveInLayers) in throughLowers, which an entry created at one of those
 * names clears (createdInRoot); a directory entry's own (no `consulted`) is not kept: its first
 * child resolves it. Looked up again for every entry, a layer of many files under such a path
 * over many lower layers took seconds.
 */
function rememberParent(state: ApplyState, rel: string, dir: string, consulted?: ReadonlySet<string>): void {
  if (state.whiteouts === "overlay" && state.parents.length > 0 && dir !== path.join(state.root, rel)) {
    if (!consulted) return;
    state.throughLowers.set(rel, dir);
    for (const c of consulted) state.consulted.add(c);
    return;
  }
  state.resolvedParents.set(rel, dir);
}

/** Something was created at `p` (absolute, in the root) where nothing was. */
function createdInRoot(state: ApplyState, p: string): void {
  if (state.consulted.size === 0 || !state.consulted.has(path.relative(state.root, p))) return;
  state.throughLowers.clear();
  state.consulted.clear();
}

/**
 * Where a directory of the layer is, resolved inside the root. Onto an overlay upper directory
 * with known lower layers, as the mounted overlay resolves it: a symlink a lower layer has on
 * the path is followed (`lib/x` lands in `usr/lib/x` where a lower layer has `lib -> usr/lib`),
 * as containerd's apply through the mounted overlay does.
 */
function resolveParent(state: ApplyState, rel: string, consulted?: Set<string>): Promise<string> {
  if (state.whiteouts === "overlay" && state.parents.length > 0) return resolveInLayers(state.root, state.parents, rel, consulted);
  return resolveInRoot(state.root, rel, { followLast: true });
}

/** Ensures `dir` (already resolved inside the root) exists as a directory. */
async function makeParent(state: ApplyState, dir: string, name: string): Promise<void> {
  const st = await lstatOrNull(dir);
  if (st) {
    if (st.isDirectory()) return;
    throw invalidArgument(`entry "${name}": parent ${path.relative(state.root, dir)} is not a directory`);
  }
  const up = path.dirname(dir);
  if (up !== state.root) await makeParent(state, up, name);
  const rel = path.relative(state.root, dir);
  // Onto an upper directory, the merged tree decides: a lower layer's file there is no parent.
  const lower = state.whiteouts === "overlay" ? await shownUnderUpper(state, rel) : undefined;
  if (lower && !lower.st.isDirectory()) throw invalidArgument(`entry "${name}": parent ${rel} is not a directory`);
  fss.mkdirSync(dir, { mode: 0o755 });
  createdInRoot(state, dir);
  // 0755 whatever ckd's umask, as containerd's mkparent chmods it.
  fss.chmodSync(dir, 0o755);
  state.fresh.add(dir);
  state.made.add(dir);
  state.implicit.add(rel);
  state.madeForEntries.add(rel);
  // A directory of a lower layer, created in the upper one: keep its attributes, since
  // overlayfs shows the upper directory's.
  if (lower) copyDirectoryAttributes(dir, lower, state.asRoot);
}

/**
 * Gives directory `dir` (named `rel` in its layer) the owner, mode, times and xattrs of the
 * directory of that name in the nearest of `lowers` that has the name, if that is a directory.
 */
async function inheritDirectory(dir: string, rel: string, lowers: readonly string[], asRoot: boolean): Promise<void> {
  // What the lowers, merged, show there (read without following any symlink).
  const shown = await shownInLowers(lowers, rel);
  if (shown?.st.isDirectory()) copyDirectoryAttributes(dir, shown, asRoot);
}

/** What containerd's mkparent copies from the lower directory: copyDirInfo, then copyUpXAttrs. */
function copyDirectoryAttributes(dir: string, from: { path: string; st: fss.Stats }, asRoot: boolean): void {
  if (asRoot) fss.lchownSync(dir, from.st.uid, from.st.gid);
  fss.chmodSync(dir, from.st.mode & 0o7777);
  fss.lutimesSync(dir, from.st.atime, from.st.mtime);
  copyDirectoryXattrs(dir, from.path);
}

/**
 * Copies the xattrs of lower directory `from` onto `dir`, made in its place: the mount shows
 * the upper directory's, so without them the directory would lose the lower one's ACLs,
 * security labels, user.* data. trusted.* ones are skipped, as containerd's copyUpXAttrs skips
 * them (the lower layer's opaque marker is no marker of the upper's). One `dir` already has (a
 * default ACL it inherited) is kept, as containerd only creates. Best effort, as setXattrs: a
 * namespace or filesystem without xattrs is skipped (the binding's errors carry no code).
 */
function copyDirectoryXattrs(dir: string, from: string): void {
  const list = (p: string) => {
    try {
      return listAttributesSync(p);
    } catch {
      return [];
    }
  };
  const names = list(from);
  if (names.length === 0) return;
  const have = new Set(list(dir));
  for (const name of names) {
    if (isAdminXattr(name) || have.has(name)) continue;
    try {
      const value = getAttributeSync(from, name);
      if (value) setAttributeSync(dir, name, value);
    } catch {
      // skipped, as above
    }
  }
}

/** The code of the error for a hard link whose target is nowhere in the root (it crosses the worker). */
const MISSING_LINK_TARGET = "CK_MISSING_LINK_TARGET";

/**
 * Whether an apply failed on a hard link entry whose target is nowhere in the root: applied
 * before its lower layers were known, a layer that links a lower layer's file fails so.
 */
export function isMissingLinkTarget(err: unknown): boolean {
  return isClass(err, "InvalidArgument") && (err as NodeJS.ErrnoException).code === MISSING_LINK_TARGET;
}

/**
 * Whether a layer applied into a directory of its own before its lower layers were known made
 * a directory for its entries (Applied.madeForEntries) where those layers do not show a
 * directory: a symlink on the path, which an apply with the lowers known follows
 * (resolveInLayers), or a file, which it refuses as a parent, as containerd does. Merged onto
 * the lowers, the directory would hide either. Such a layer is applied again onto them.
 */
export async function needsItsLowers(implicitDirs: readonly string[], lowers: readonly string[]): Promise<boolean> {
  if (lowers.length === 0) return false;
  for (const rel of implicitDirs) {
    if ((await resolveInLayers(lowers[0]!, lowers.slice(1), rel)) !== path.join(lowers[0]!, rel)) return true;
    if (await lowerNonDirectory(lowers, rel)) return true;
  }
  return false;
}

/** Whether the lower layers (nearest first), merged, show something other than a directory at `rel`. */
async function lowerNonDirectory(lowers: readonly string[], rel: string): Promise<boolean> {
  const shown = await shownInLowers(lowers, rel);
  return shown !== undefined && !shown.st.isDirectory();
}

/**
 * For a layer applied into overlay upper directory `upper` before its lower layers were known
 * (no `parents`): gives each of its implicit directories (Applied.implicitDirs) the attributes
 * it has in the nearest of `lowers` (nearest first), as an apply with `parents` does while it
 * runs. Names that are no longer directories of the upper layer are skipped.
 */
export async function inheritLowerAttributes(upper: string, implicitDirs: readonly string[], lowers: readonly string[]): Promise<void> {
  if (lowers.length === 0 || implicitDirs.length === 0) return;
  const root = fss.realpathSync(upper);
  const asRoot = process.getuid?.() === 0;
  for (const rel of implicitDirs) {
    const dir = await resolveInRoot(root, rel, { followLast: false });
    assertInside(root, dir, rel);
    if (!(await lstatOrNull(dir))?.isDirectory()) continue;
    await inheritDirectory(dir, rel, lowers, asRoot);
  }
}

/** Forgets everything a removal or a new symlink may have made stale. */
function pathsChanged(state: ApplyState): void {
  state.resolvedParents.clear();
  state.throughLowers.clear();
  state.consulted.clear();
  state.fresh.clear();
  state.generation++;
}

async function opaque(state: ApplyState, dir: string): Promise<void> {
  pathsChanged(state);
  state.opaques.add(dir);
  if (state.whiteouts === "overlay") {
    await setAttribute(dir, "trusted.overlay.opaque", Buffer.from("y"));
    return;
  }
  const prune = async (d: string): Promise<void> => {
    for (const e of fss.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (!state.unpacked.has(p)) fss.rmSync(p, { recursive: true, force: true });
      else if (e.isDirectory()) await prune(p);
    }
  };
  await prune(dir);
}

async function whiteout(state: ApplyState, gone: string, h: Header): Promise<void> {
  pathsChanged(state);
  state.removedByWhiteouts.add(gone);
  // fs.rm never follows a symlink: it removes the link itself.
  fss.rmSync(gone, { recursive: true, force: true });
  if (state.whiteouts === "overlay") {
    await makeWhiteout(state, gone, ownerOf(h));
    state.made.add(gone);
  }
}

/**
 * An overlay whiteout at `p` (where nothing is), owned as containerd's apply owns it: a hard
 * link to this apply's whiteout of that owner where it has one, as overlayfs itself links its
 * whiteouts to one inode of its work directory; else a new one, by mknod(1) (Node has no
 * mknod), which took ~12 ms a whiteout. The earlier whiteout is linked only while its name
 * still leads to that very inode (a later entry may have replaced it).
 */
async function makeWhiteout(state: ApplyState, p: string, owner: { uid: number; gid: number }): Promise<void> {
  const key = `${owner.uid}:${owner.gid}`;
  const w = state.whiteoutInodes.get(key);
  if (w) {
    const st = fss.lstatSync(w.path, { throwIfNoEntry: false });
    if (st && st.dev === w.dev && st.ino === w.ino && isWhiteout(st)) {
      try {
        fss.linkSync(w.path, p);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EMLINK") throw err; // the inode is full: a new one
      }
    }
  }
  await runCommand("mknod", ["-m", "0", p, "c", "0", "0"]);
  fss.lchownSync(p, owner.uid, owner.gid);
  const st = fss.lstatSync(p);
  state.whiteoutInodes.set(key, { path: p, dev: st.dev, ino: st.ino });
}

function ownerOf(h: Header): { uid: number; gid: number } {
  const pax = h.pax ?? {};
  return {
    uid: pax.uid !== undefined ? Number(pax.uid) : (h.uid ?? 0),
    gid: pax.gid !== undefined ? Number(pax.gid) : (h.gid ?? 0),
  };
}

/**
 * Writes the new file `target` (O_EXCL|O_NOFOLLOW: always new, never something a link points
 * at) with `fill`, then the entry's metadata through its descriptor (no path lookups, nothing
 * to follow). `removeIfFailed`: a file `fill` fails to fill is removed (a sparse file has its
 * full size from the start: a half-written one would pass for whole).
 */
async function writeFile(state: ApplyState, target: string, h: Header, fill: (fd: number) => Promise<void>, removeIfFailed = false): Promise<void> {
  const fd = fss.openSync(target, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  try {
    await fill(fd);
  } catch (err) {
    fss.closeSync(fd);
    if (removeIfFailed) fss.rmSync(target, { force: true });
    throw err;
  }
  try {
    if (state.asRoot) fss.fchownSync(fd, ownerOf(h).uid, ownerOf(h).gid);
    await setXattrs(target, h);
    fss.fchmodSync(fd, (h.mode ?? 0o644) & 0o7777);
    const t = timesOf(h);
    fss.futimesSync(fd, t.atime, t.mtime);
  } finally {
    fss.closeSync(fd);
  }
}

/**
 * A sparse file's content: its real size first (holes throughout), then each fragment's data
 * written at its offset, so that the holes stay holes (containerd writes them out as zeros:
 * the same content, on more disk). readSparse checked that the data fills the fragments exactly.
 */
async function writeSparse(fd: number, sparse: SparseEntry): Promise<void> {
  const { name, realSize, fragments } = sparse.file;
  fss.ftruncateSync(fd, realSize);
  let i = 0;
  let done = 0; // of fragment i
  for await (const chunk of sparse.data) {
    for (let at = 0; at < chunk.length; ) {
      while (i < fragments.length && done === fragments[i]!.size) {
        i++;
        done = 0;
      }
      const f = fragments[i];
      if (!f) throw invalidArgument(`entry ${JSON.stringify(name)}: sparse file: more data than its map places`);
      const n = Math.min(chunk.length - at, f.size - done);
      writeAllAt(fd, chunk.subarray(at, at + n), f.offset + done);
      at += n;
      done += n;
    }
  }
}

async function createEntry(state: ApplyState, target: string, h: Header, body: Body, sparse?: SparseEntry): Promise<boolean> {
  const name = h.name;
  // In a directory this apply created, only what it made there exists.
  const isNew = state.fresh.has(path.dirname(target)) && !state.made.has(target);
  const existing = isNew ? null : await lstatOrNull(target);
  const replace = async () => {
    if (!existing) return;
    pathsChanged(state);
    fss.rmSync(target, { recursive: true, force: true });
  };
  if (sparse) {
    // A regular file (readSparse checked its type): an old GNU one's typeflag is 'S'.
    await replace();
    await writeFile(state, target, h, (fd) => writeSparse(fd, sparse), true);
    return true;
  }
  switch (h.type) {
    case "directory":
      if (!existing?.isDirectory()) {
        await replace();
        fss.mkdirSync(target, { mode: 0o700 });
        state.fresh.add(target);
      }
      return false;
    case null:
      // A typeflag neither tar-stream nor containerd knows (GNU sparse `S` is read, as a sparse
      // file, above): containerd refuses it ("unhandled tar header type"); written as a plain
      // file it would differ.
      throw invalidArgument(`tar entry ${JSON.stringify(h.name)}: unhandled tar header type`);
    case "file":
    case "contiguous-file":
    case undefined:
      await replace();
      await writeFile(state, target, h, async (fd) => {
        for await (const chunk of entryData(state, name, body)) writeAll(fd, chunk);
      });
      return true;
    case "symlink":
      // Only a replaced entry can change what a remembered parent resolves to (replace()
      // forgets them then): every name on a remembered parent's path is an existing directory
      // of the root (rememberParent), so a link made where nothing was cannot lie on it.
      await replace();
      fss.symlinkSync(h.linkname ?? "", target);
      return false;
    case "link": {
      const linkRel = cleanEntryName(h.linkname ?? "");
      if (linkRel === "") throw invalidArgument(`entry "${name}": hard link to the root directory`);
      const dir = path.posix.dirname(linkRel);
      const src = path.join(dir === "." ? state.root : await resolveParent(state, dir), path.posix.basename(linkRel));
      assertInside(state.root, src, name);
      let s = await lstatOrNull(src);
      // An overlay whiteout (this layer's, or one the upper directory had) is no file: the name
      // shows nothing, as after a whiteout in delete mode, where the link fails.
      if (s && state.whiteouts === "overlay" && isWhiteout(s)) s = null;
      // A file of a lower layer: copied up first, as overlayfs does before it links one.
      if (!s && (await copyUp(state, src, name))) s = await lstatOrNull(src);
      if (!s) throw Object.assign(invalidArgument(`entry "${name}": hard link target "${h.linkname}" does not exist inside the layer root`), { code: MISSING_LINK_TARGET });
      if (s.isDirectory()) throw invalidArgument(`entry "${name}": hard link to directory "${h.linkname}"`);
      // Before anything else, a link to itself too: the entry's metadata lands on this inode.
      if (state.sharedInodes && s.nlink > 1 && !state.made.has(src)) await unshareInode(state, src, s);
      if (src === target) return false;
      await replace();
      fss.linkSync(src, target); // link(2) does not follow a symlink source
      return false;
    }
    case "fifo":
      // A named pipe reaches nothing outside the snapshot. mknod(1) creates it where nothing
      // is (it fails on an existing path, so it never follows one); metadata follows as for
      // a directory or a symlink.
      await replace();
      await runCommand("mknod", ["-m", "0600", target, "p"]);
      return false;
    default:
      throw invalidArgument(`entry "${name}": unsupported tar entry type ${h.type}`);
  }
}

/**
 * Gives the file `src` (not made by this apply, with other names) an inode of its own in the
 * root, for every name the inode has there: a copy with its data, metadata and xattrs, linked
 * in place of each. What other trees link to stays as it was; within the root, the names
 * stay one file, as in a copied tree. Rare: a hard link entry to a file of a lower layer.
 */
async function unshareInode(state: ApplyState, src: string, s: fss.Stats): Promise<void> {
  // One walk of the root per apply, however many such entries the layer has. A name the apply
  // replaced since no longer has the inode, and is left alone.
  state.sharedNames ??= namesOfSharedInodes(state.root);
  const key = `${s.dev}:${s.ino}`;
  // A name whose directories the layer has since replaced by a symlink would lead elsewhere
  // (into another snapshot): only names still reached without one are taken.
  state.realRoot ??= fss.realpathSync(state.root);
  const realRoot = state.realRoot;
  const names = (state.sharedNames.get(key) ?? []).filter((p) => {
    let dir: string;
    try {
      dir = fss.realpathSync(path.dirname(p));
    } catch {
      return false; // gone
    }
    if (dir !== path.join(realRoot, path.relative(state.root, path.dirname(p)))) return false;
    const st = fss.lstatSync(p, { throwIfNoEntry: false });
    return st !== undefined && st.ino === s.ino && st.dev === s.dev;
  });
  state.sharedNames.delete(key);
  // A name no layer can guess (one it planted as a symlink would take cp's copy elsewhere).
  const copy = path.join(path.dirname(src), `.ck-unshare-${randomBytes(12).toString("hex")}`);
  await runCommand("cp", ["-a", "--", src, copy]);
  try {
    for (const name of names) {
      fss.rmSync(name);
      fss.linkSync(copy, name);
      state.made.add(name);
    }
  } finally {
    fss.rmSync(copy, { force: true });
  }
}

/** The names under `root` of every inode that has more than one, by `dev:ino`. */
function namesOfSharedInodes(root: string): Map<string, string[]> {
  const byInode = new Map<string, string[]>();
  const walk = (dir: string) => {
    for (const e of fss.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        walk(p);
        continue;
      }
      const st = fss.lstatSync(p);
      if (st.nlink < 2) continue;
      const key = `${st.dev}:${st.ino}`;
      const names = byInode.get(key);
      if (names) names.push(p);
      else byInode.set(key, [p]);
    }
  };
  walk(root);
  return byInode;
}

/**
 * What the mounted overlay shows at `rel` (taken literally), for a name the upper directory
 * (the root) does not have: the nearest lower layer's entry, unless the upper directory hides
 * it. The upper counts too: a whiteout or an opaque directory this layer (or an earlier apply)
 * made there hides the lower layers' names, as the mount hides them.
 */
function shownUnderUpper(state: ApplyState, rel: string): Promise<{ path: string; st: fss.Stats } | undefined> {
  return shownInLowers([state.root, ...state.parents], rel);
}

/**
 * Onto an overlay upper directory with known lower layers: copies `src` (a path in the root)
 * from the nearest lower layer that shows it, with its metadata, into the root, its missing
 * parent directories made as for an entry. False when the overlay shows no lower non-directory
 * there (a hidden one is not brought back: the link fails, as it does in delete mode).
 */
async function copyUp(state: ApplyState, src: string, name: string): Promise<boolean> {
  if (state.whiteouts !== "overlay" || state.parents.length === 0) return false;
  const shown = await shownUnderUpper(state, path.relative(state.root, src));
  if (!shown || shown.st.isDirectory()) return false;
  await makeParent(state, path.dirname(src), name);
  await runCommand("cp", ["-a", "--", shown.path, src]);
  createdInRoot(state, src);
  state.made.add(src);
  return true;
}

/** containerd's latest settable time (archive/time.go maxTime, 64-bit timespec), in seconds. */
const MAX_TIME = Number(2n ** 63n - 1n) / 1e9;

/**
 * A time as containerd's boundTime sets it: one before the Unix epoch or past MAX_TIME is the
 * epoch. Handed on as it is, a negative time would be taken by utimes as "now" (not even the
 * same for every entry), and one past MAX_TIME is refused or wrapped by the kernel.
 */
const boundTime = (t: number) => (t < 0 || t > MAX_TIME ? 0 : t);

/** An entry's times as containerd sets them: atime the later of its atime and mtime, both bound. */
function timesOf(h: Header): { atime: number; mtime: number } {
  const pax = h.pax ?? {};
  const mtime = pax.mtime !== undefined ? Number(pax.mtime) : (h.mtime?.getTime() ?? 0) / 1000;
  const atime = pax.atime !== undefined ? Math.max(Number(pax.atime), mtime) : mtime;
  return { atime: boundTime(atime), mtime: boundTime(mtime) };
}

/**
 * trusted.* xattrs are overlayfs's own (opaque, redirect, metacopy...) and other admin-only
 * state: ckd runs as root, so a layer's record would be set, and in an upper directory it
 * would change what the mounted overlay shows (hide or reveal a lower layer's files) without
 * any whiteout. containerd refuses them from an archive ("admin attributes from archive not
 * supported") and skips them with a warning; so does ck.
 */
const isAdminXattr = (name: string) => name.startsWith("trusted.");

async function setXattrs(target: string, h: Header): Promise<void> {
  for (const [key, value] of Object.entries(h.pax ?? {})) {
    if (!key.startsWith(XATTR_PAX_PREFIX)) continue;
    const name = key.slice(XATTR_PAX_PREFIX.length);
    if (isAdminXattr(name)) continue;
    // Best effort, as "where the filesystem allows": unsupported namespaces (user.* on a
    // symlink, a filesystem without xattrs) are skipped.
    // The binding uses lsetxattr, so a symlink is never followed.
    // Byte-valued (./pax.ts): a binary value such as security.capability arrives intact.
    await setAttribute(target, name, Buffer.from(value, "latin1")).catch(() => undefined);
  }
}

async function applyMetadata(state: ApplyState, target: string, h: Header): Promise<void> {
  // createEntry just made a directory or a symlink of these types; a hard link may name any
  // kind of inode, so it is looked at.
  const st = h.type === "directory" || h.type === "symlink" ? undefined : fss.lstatSync(target);
  const isDirectory = h.type === "directory" || st?.isDirectory() === true;
  const isSymlink = h.type === "symlink" || st?.isSymbolicLink() === true;
  if (state.asRoot) {
    const { uid, gid } = ownerOf(h);
    fss.lchownSync(target, uid, gid);
  }
  await setXattrs(target, h);
  // chmod follows symlinks, and a hard link may name a symlink's inode: never chmod those.
  if (!isSymlink) fss.chmodSync(target, (h.mode ?? 0o644) & 0o7777);
  const { atime, mtime } = timesOf(h);
  if (isDirectory) state.dirTimes.push({ path: target, rel: path.relative(state.root, target), atime, mtime, generation: state.generation });
  else fss.lutimesSync(target, atime, mtime);
}

function mountOption(m: Mount, key: string): string | undefined {
  const o = m.options.find((x) => x.startsWith(key + "="));
  return o?.slice(key.length + 1);
}

/** How many layers are applied at once in worker threads; more wait for a free worker. */
const MAX_APPLY_WORKERS = 4;
const WORKER_FILE = new URL("./apply-worker.js", import.meta.url);

interface PoolWorker {
  worker: Worker;
  pending?: { id: number; resolve: (r: Applied) => void; reject: (e: unknown) => void };
}

const idleWorkers: PoolWorker[] = [];
let liveWorkers = 0;
const waitingForWorker: ((w: PoolWorker) => void)[] = [];
let nextRequest = 1;

function spawnWorker(): PoolWorker {
  const pw: PoolWorker = { worker: new Worker(WORKER_FILE) };
  liveWorkers++;
  pw.worker.unref();
  pw.worker.on("message", (m: ApplyReply) => {
    const p = pw.pending;
    if (!p || p.id !== m.id) return;
    pw.pending = undefined;
    releaseWorker(pw);
    if (m.ok) p.resolve({ digest: m.digest, size: m.size, implicitDirs: m.implicitDirs, madeForEntries: m.madeForEntries, whiteouts: m.whiteouts, opaques: m.opaques, skippedDevices: m.skippedDevices });
    else if (m.errorClass) p.reject(Object.assign(new CkError(m.errorClass as ErrorClass, m.message), m.code ? { code: m.code } : {}));
    else p.reject(Object.assign(new CkError("Unknown", `apply layer: ${m.message}`), { code: m.code }));
  });
  const dead = (err: unknown) => {
    liveWorkers--;
    const i = idleWorkers.indexOf(pw);
    if (i >= 0) idleWorkers.splice(i, 1);
    const p = pw.pending;
    pw.pending = undefined;
    p?.reject(new CkError("Unknown", `apply layer: worker thread ended: ${(err as Error)?.message ?? err}`));
    // Someone waiting for a worker gets a new one in this one's place.
    const w = waitingForWorker.shift();
    if (w) w(spawnWorker());
  };
  pw.worker.on("error", dead);
  pw.worker.on("exit", (code) => {
    if (pw.pending || idleWorkers.includes(pw)) dead(new Error(`exit code ${code}`));
  });
  return pw;
}

function releaseWorker(pw: PoolWorker): void {
  const w = waitingForWorker.shift();
  if (w) w(pw);
  else idleWorkers.push(pw);
}

function takeWorker(): Promise<PoolWorker> {
  const idle = idleWorkers.pop();
  if (idle) return Promise.resolve(idle);
  if (liveWorkers < MAX_APPLY_WORKERS) return Promise.resolve(spawnWorker());
  return new Promise((resolve) => waitingForWorker.push(resolve));
}

/**
 * applyLayer with the layer read from the file `file`, run in a worker thread so that the
 * caller's event loop stays free while the (synchronous) file system calls run. Where the
 * worker script is not there (a bundle), it runs in this thread.
 */
export async function applyLayerFile(root: string, file: string, opts: ApplyOptions = {}): Promise<Applied> {
  opts.signal?.throwIfAborted();
  if (!fss.existsSync(fileURLToPath(WORKER_FILE))) {
    const layer = fss.createReadStream(file, { highWaterMark: 1 << 20 });
    try {
      return await applyLayer(root, layer, opts);
    } finally {
      layer.destroy();
    }
  }
  const pw = await takeWorker();
  const id = nextRequest++;
  const signal = opts.signal;
  // The worker is told, and stops before its next entry; it answers with the error then.
  const cancel = () => pw.worker.postMessage({ cancel: id } satisfies ApplyCancel);
  return new Promise<Applied>((resolve, reject) => {
    const settled = () => {
      signal?.removeEventListener("abort", cancel);
      pw.worker.unref();
    };
    pw.pending = {
      id,
      // Referenced while it works (an idle one must not keep the process alive).
      resolve: (r) => (settled(), resolve(r)),
      reject: (e) => (settled(), reject(e)),
    };
    pw.worker.ref();
    const req: ApplyRequest = {
      id,
      root,
      file,
      opts: { mediaType: opts.mediaType, whiteouts: opts.whiteouts, parents: opts.parents ? [...opts.parents] : undefined, sharedInodes: opts.sharedInodes },
    };
    pw.worker.postMessage(req);
    // After the request: the worker reads its messages in order.
    if (signal?.aborted) cancel();
    else signal?.addEventListener("abort", cancel, { once: true });
  });
}

/**
 * Applies a layer onto a snapshot's mounts, as containerd's Diff.Apply: a single overlay
 * mount is applied straight into its upperdir with overlay whiteouts; a single bind mount
 * into its source; anything else is mounted on a temporary directory first.
 */
export async function applyLayerToMounts(
  mounts: readonly Mount[],
  layer: Readable | { file: string },
  opts: { mediaType?: string; sharedInodes?: boolean; signal?: AbortSignal } = {},
): Promise<Applied> {
  const applyLayer = (root: string, l: Readable | { file: string }, o: ApplyOptions) =>
    l instanceof Readable ? applyLayerStream(root, l, o) : applyLayerFile(root, l.file, o);
  if (mounts.length === 1) {
    const m = mounts[0];
    if (m.options.includes("ro")) throw failedPrecondition(`apply layer: mount of ${m.source} is read-only`);
    const upper = m.type === "overlay" ? mountOption(m, "upperdir") : undefined;
    if (m.type === "overlay" && upper === undefined) {
      throw failedPrecondition("apply layer: overlay mount without upperdir is read-only");
    }
    if (upper !== undefined) {
      const lower = mountOption(m, "lowerdir")?.split(":") ?? [];
      return applyLayer(upper, layer, { ...opts, whiteouts: "overlay", parents: lower });
    }
    if (m.type === "bind" || m.options.includes("bind") || m.options.includes("rbind")) {
      return applyLayer(m.source, layer, opts);
    }
  }
  return withTempMount(mounts, (dir) => applyLayer(dir, layer, opts));
}
