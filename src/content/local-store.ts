// The content store on a local filesystem: committed blobs under `<root>/blobs/sha256/<hex>`,
// ingests under `<root>/ingest/<sha256(ref)>/{data,ref.json}`, made visible by one rename.
// A small ingest stays in memory while its writer is open and reaches disk once, at commit
// (via `<root>/ingest/tmp-<random>/<sha256(ref)>.tmp`, a directory of this process's own: see
// placement.ts) or at close; directory fsyncs are shared by commits.
import { createHash, randomBytes, type Hash } from "node:crypto";
import { constants as fsc, promises as fs, statSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
  outOfRange,
  unavailable,
} from "../errdefs/errdefs.js";
import { validateDigest } from "../commands/validation.js";
import { spreadSubdirectories } from "./placement.js";
import { SyncBatcher, type SyncTicket } from "./sync-batcher.js";
import { AlignedBuffers, DirectAppender, isErrno, readAll, writeAll } from "./direct-io.js";
import type {
  BlobInfo,
  CommitOptions,
  ContentStore,
  IngestCandidate,
  IngestStatus,
  IngestWriter,
  ReaderAt,
  WriterOptions,
} from "./types.js";

const DATA_FILE = "data";
const REF_FILE = "ref.json";
/** `ingest/tmp-<random>/<key>.tmp`: a small ingest's bytes between their one write and their rename. */
const TEMP_SUFFIX = ".tmp";
/** The directories of those temp files, one per store opened (older ones: leftovers). */
const TEMP_DIR = /^tmp-[a-f0-9]{16}$/;
const HEX64 = /^[a-f0-9]{64}$/;
/** Chunk size for re-hashing a partial ingest after a restart. */
const REHASH_CHUNK = 1 << 20;

/** What `ref.json` holds: enough to list and resume an ingest after a restart. */
interface RefFile {
  ref: string;
  total: number;
  expected?: string;
  startedAt: string;
  /** Leases the ingest was written under (absent: none). */
  leases?: string[];
  /** Opened without a lease at least once (absent, as in files from before leases: true). */
  expires?: boolean;
}

/**
 * What the store remembers of an ingest between writers, so a resume in the same process
 * continues the running hash instead of re-reading the bytes.
 */
interface IngestState {
  readonly ref: string;
  /** sha256(ref) in hex: the ingest's directory name and its lock key. */
  readonly key: string;
  readonly dir: string;
  total: number;
  expected: string | undefined;
  startedAt: Date;
  updatedAt: Date;
  offset: number;
  hash: Hash;
  /** Leases the ingest was written under (containerd's ingest leases), oldest first. */
  leases: string[];
  /** A writer opened it without a lease: it expires once idle (see IngestStatus). */
  expires: boolean;
  /**
   * The bytes of an ingest that lives in memory only (small, never closed, no directory on
   * disk yet); undefined once it has its directory.
   */
  pending: Buffer[] | undefined;
}

/** What a writer needs from its store. */
interface WriterHost {
  blobPath(hex: string): string;
  /** Where a small in-memory ingest is written before its rename into blobs/. */
  commitTempPath(key: string): Promise<string>;
  /** Largest ingest kept in memory until commit or close. */
  readonly memoryIngestMaxBytes: number;
  /** A place in the next grouped fsync of blobs/sha256. */
  blobDirSync(): SyncTicket;
  /** Lets go of the lock if `holder` still has it; `forget` also drops the remembered state. */
  release(holder: LocalIngestWriter, forget: boolean): void;
  /** Staging memory for writes past the page cache; undefined: every write is buffered. */
  readonly directBuffers: AlignedBuffers | undefined;
}


/** The hex of a sha256 digest; InvalidArgument naming `field` for anything else. */
function sha256Hex(field: string, digest: string): string {
  validateDigest(field, digest);
  if (!digest.startsWith("sha256:")) {
    throw invalidArgument(`${field} ${JSON.stringify(digest)} invalid: unsupported digest algorithm`);
  }
  return digest.slice("sha256:".length);
}

function optionalDigest(field: string, digest: string | undefined): string | undefined {
  if (digest === undefined || digest === "") return undefined;
  sha256Hex(field, digest);
  return digest;
}

function checkCount(field: string, n: number | undefined): number {
  if (n === undefined) return 0;
  if (!Number.isSafeInteger(n) || n < 0) throw invalidArgument(`${field} ${n} must be a non-negative integer`);
  return n;
}

function checkRef(ref: unknown): string {
  if (typeof ref !== "string" || ref.length === 0) throw invalidArgument("ref must not be empty");
  return ref;
}

const refKey = (ref: string): string => createHash("sha256").update(ref, "utf8").digest("hex");

/** sha256 of the first `size` bytes of `fh`, read once. */
async function hashFile(fh: FileHandle, size: number): Promise<Hash> {
  const hash = createHash("sha256");
  const buf = Buffer.allocUnsafe(Math.min(REHASH_CHUNK, Math.max(size, 1)));
  for (let pos = 0; pos < size; ) {
    const want = Math.min(buf.length, size - pos);
    const got = await readAll(fh, buf.subarray(0, want), pos);
    if (got === 0) break;
    hash.update(buf.subarray(0, got));
    pos += got;
  }
  return hash;
}

class LocalReaderAt implements ReaderAt {
  constructor(
    private readonly fh: FileHandle,
    readonly size: number,
  ) {}

  async read(offset: number, length: number): Promise<Buffer> {
    checkCount("offset", offset);
    checkCount("length", length);
    if (offset >= this.size || length === 0) return Buffer.alloc(0);
    const buf = Buffer.allocUnsafe(Math.min(length, this.size - offset));
    const got = await readAll(this.fh, buf, offset);
    return buf.subarray(0, got);
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/**
 * A ref as error messages show it: refs are any strings, and ckd's own are `<namespace>\0<ref>`
 * (content/namespaced.ts): the client's part is what its user gave.
 */
const shown = (ref: string): string => (ref.includes("\u0000") ? ref.slice(ref.indexOf("\u0000") + 1) : ref);

class LocalIngestWriter implements IngestWriter {
  private queue: Promise<unknown> = Promise.resolve();
  private phase: "open" | "closed" | "aborted" = "open";
  /** Writes to the data file past the page cache (direct-io.ts), once the ingest is on disk. */
  private appender: DirectAppender | undefined;

  /** `fh` is the open data file, absent while the ingest still lives in memory. */
  constructor(
    private readonly host: WriterHost,
    private readonly ingest: IngestState,
    private fh: FileHandle | undefined,
    /** Whole blocks past the page cache (WriterOptions.writeThrough), where the store allows. */
    private readonly writeThrough = false,
  ) {}

  get ref(): string {
    return this.ingest.ref;
  }
  get key(): string {
    return this.ingest.key;
  }
  get offset(): number {
    return this.ingest.offset;
  }
  get total(): number {
    return this.ingest.total;
  }
  get expected(): string | undefined {
    return this.ingest.expected;
  }
  get startedAt(): Date {
    return this.ingest.startedAt;
  }
  get updatedAt(): Date {
    return this.ingest.updatedAt;
  }

  digest(): string {
    return "sha256:" + this.ingest.hash.copy().digest("hex");
  }

  write(offset: number, data: Buffer): Promise<number> {
    return this.serial(async () => {
      this.assertOpen();
      checkCount("offset", offset);
      const ingest = this.ingest;
      if (offset !== ingest.offset) {
        if (offset !== 0) {
          throw outOfRange(`write @${offset} must occur at current offset ${ingest.offset}`);
        }
        await this.restart();
      }
      if (ingest.pending !== undefined && ingest.offset + data.length <= this.host.memoryIngestMaxBytes) {
        ingest.pending.push(Buffer.from(data)); // a copy: callers may reuse their buffer
        ingest.hash.update(data);
      } else {
        const fh = this.fh ?? (await this.spill());
        // Hash on this thread while the write runs on the pool; undo the hash if the write fails.
        const before = ingest.hash.copy();
        const written = this.append(fh, data, offset);
        ingest.hash.update(data);
        try {
          await written;
        } catch (err) {
          ingest.hash = before;
          await this.dropAppender();
          // A short write leaves bytes past the offset we report; cut them so file and hash
          // agree. Where even that fails this writer stops: the next one hashes what the file holds.
          await fh.truncate(ingest.offset).catch(() => this.stop());
          throw err;
        }
      }
      ingest.offset += data.length;
      ingest.updatedAt = new Date();
      return ingest.offset;
    });
  }

  private async append(fh: FileHandle, data: Buffer, offset: number): Promise<void> {
    const buffers = this.writeThrough ? this.host.directBuffers : undefined;
    if (!buffers) return writeAll(fh, data, offset);
    this.appender ??= await DirectAppender.open(path.join(this.ingest.dir, DATA_FILE), fh, offset, buffers);
    await this.appender.write(data, offset);
  }

  private async dropAppender(): Promise<void> {
    const a = this.appender;
    this.appender = undefined;
    await a?.close().catch(() => undefined);
  }

  truncate(size: 0): Promise<void> {
    return this.serial(async () => {
      this.assertOpen();
      if (size !== 0) throw invalidArgument(`truncate to ${size}: only 0 is supported`);
      await this.restart();
    });
  }

  commit(opts: CommitOptions = {}): Promise<BlobInfo> {
    return this.serial(async () => {
      this.assertOpen();
      const ingest = this.ingest;
      // The size this commit declares (the stream's total), as containerd's: not one an earlier
      // writer of the ref declared, which would refuse a resume that declares none forever.
      const size = checkCount("size", opts.size);
      const expected = optionalDigest("expected", opts.expected) ?? ingest.expected;
      if (size > 0 && size !== ingest.offset) {
        // In containerd's words, the ref first (ctr prints it as it is).
        throw failedPrecondition(`${JSON.stringify(shown(ingest.ref))} failed size validation: ${ingest.offset} != ${size}`);
      }
      const digest = this.digest();
      if (expected !== undefined && digest !== expected) {
        throw failedPrecondition(`unexpected commit digest ${digest}, expected ${expected}`);
      }
      // From here on the writer is spent whatever happens; a failure keeps the ingest for a retry.
      this.phase = "closed";
      let forget = false;
      // Taken before our fdatasync, so a directory round that waits for it sees our rename.
      const ticket = this.host.blobDirSync();
      try {
        let source: string;
        if (ingest.pending !== undefined) {
          // Small ingest: its bytes go to disk once, in one write, straight into a temp file.
          // O_DSYNC makes that write return only once data and size are on disk: the same
          // guarantee as write + fdatasync, one threadpool hop fewer.
          source = await this.host.commitTempPath(ingest.key);
          const fh = await fs.open(source, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_DSYNC, 0o644);
          try {
            await writeAll(fh, Buffer.concat(ingest.pending), 0);
          } finally {
            await fh.close();
          }
        } else {
          source = path.join(ingest.dir, DATA_FILE);
          await this.dropAppender();
          const fh = this.fh ?? (await fs.open(source, fsc.O_RDWR));
          this.fh = undefined;
          try {
            // The bytes hashed are the bytes committed: a file holding more (a failed write's
            // remains) is not renamed under a digest it does not have.
            const held = (await fh.stat()).size;
            if (held !== ingest.offset) throw failedPrecondition(`ingest "${shown(ingest.ref)}" holds ${held} bytes on disk, ${ingest.offset} written`);
            // Committed now, as containerd's Chtimes at commit: the orphan sweep's grace (a blob
            // whose commit event never came) counts from here, not from the ingest's last write.
            const now = new Date();
            await fh.utimes(now, now);
            await fh.datasync();
          } finally {
            await fh.close();
          }
        }
        const target = this.host.blobPath(digest.slice("sha256:".length));
        if (exists(target)) {
          ticket.cancel();
          forget = true;
          if (ingest.pending !== undefined) await fs.rm(source, { force: true });
          else await fs.rm(ingest.dir, { recursive: true, force: true });
          throw alreadyExists(`content ${digest}`);
        }
        await fs.rename(source, target);
        forget = true;
        await Promise.all([ticket.sync(), ingest.pending === undefined ? removeIngestDir(ingest.dir) : undefined]);
        return { digest, size: ingest.offset };
      } catch (err) {
        ticket.cancel();
        throw err;
      } finally {
        this.host.release(this, forget);
      }
    });
  }

  close(): Promise<void> {
    return this.serial(async () => {
      if (this.phase !== "open") return;
      this.phase = "closed";
      try {
        // What was kept in memory goes to disk now, so a later writer (or process) can resume.
        if (this.ingest.pending !== undefined) await this.spill();
      } finally {
        try {
          await this.dropAppender();
          await this.fh?.close();
        } finally {
          this.fh = undefined;
          this.host.release(this, false);
        }
      }
    });
  }

  /** Ends this writer after a failure that left the file unlike the ingest's state (see write). */
  private async stop(): Promise<void> {
    this.phase = "closed";
    await this.dropAppender();
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
    this.host.release(this, false);
  }

  /**
   * Saves the ingest's ref.json (its leases changed) in this writer's turn, if it still holds
   * the ref (false: it let go first); an ingest in memory saves it when it spills.
   */
  saveRef(): Promise<boolean> {
    return this.serial(async () => {
      // Closed, committed or aborted: the lock is not this writer's any more.
      if (this.phase !== "open") return false;
      if (this.ingest.pending === undefined) await writeRefFile(this.ingest);
      return true;
    });
  }

  /** The ingest was aborted under this writer: fail what follows and let go of the file. */
  kill(): Promise<void> {
    const wasOpen = this.phase === "open";
    if (wasOpen) this.phase = "aborted";
    return this.serial(async () => {
      if (!wasOpen) return;
      await this.dropAppender();
      await this.fh?.close().catch(() => undefined);
      this.fh = undefined;
    });
  }

  /** Moves an in-memory ingest to its directory on disk; returns the open data file. */
  private async spill(): Promise<FileHandle> {
    const ingest = this.ingest;
    const pending = ingest.pending ?? [];
    await fs.mkdir(ingest.dir, { recursive: true });
    const dataPath = path.join(ingest.dir, DATA_FILE);
    const [opened, ref] = await Promise.allSettled([fs.open(dataPath, fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC, 0o644), writeRefFile(ingest)]);
    if (opened.status === "rejected" || ref.status === "rejected") {
      if (opened.status === "fulfilled") await opened.value.close().catch(() => undefined);
      throw opened.status === "rejected" ? opened.reason : (ref as PromiseRejectedResult).reason;
    }
    const fh = opened.value;
    try {
      await writeAll(fh, Buffer.concat(pending), 0);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
    ingest.pending = undefined;
    this.fh = fh;
    return fh;
  }

  private async restart(): Promise<void> {
    await this.dropAppender();
    if (this.ingest.pending !== undefined) this.ingest.pending = [];
    else await (this.fh ?? (await this.spill())).truncate(0);
    this.ingest.offset = 0;
    this.ingest.hash = createHash("sha256");
    this.ingest.updatedAt = new Date();
  }

  private assertOpen(): void {
    if (this.phase === "aborted") throw notFound(`ingest ref "${shown(this.ingest.ref)}" was aborted`);
    if (this.phase !== "open") throw failedPrecondition(`writer for ref "${shown(this.ingest.ref)}" is closed`);
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.queue.then(op, op);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/**
 * Existence checks run on the calling thread: a lookup in our own hot directories is a few
 * microseconds of kernel time, while a threadpool hop queues behind the fdatasyncs of
 * concurrent commits (measured: ~1.7 ms per check at 16 concurrent small ingests) and a
 * missing file costs an Error. Other errors (EACCES, ENOTDIR, EIO) still throw.
 */
function lookup(file: string): { size: number; mtime: Date } | undefined {
  return statSync(file, { throwIfNoEntry: false });
}

function exists(file: string): boolean {
  return lookup(file) !== undefined;
}

async function removeIngestDir(dir: string): Promise<void> {
  for (const name of [REF_FILE, `${REF_FILE}.tmp`]) {
    await fs.unlink(path.join(dir, name)).catch((err: unknown) => {
      if (!isErrno(err, "ENOENT")) throw err;
    });
  }
  await fs.rmdir(dir).catch((err: unknown) => {
    if (!isErrno(err, "ENOENT")) throw err;
  });
}

export interface LocalContentStoreOptions {
  /**
   * Ingests up to this many bytes stay in memory while their writer is open and reach disk
   * once, at commit (one write, one fdatasync, one rename) or at close (for a later resume).
   * Default 64 KiB; 0 puts every ingest on disk from its first write.
   */
  memoryIngestMaxBytes?: number;
  /**
   * Longest a directory fsync waits for commits still fsyncing their files, to share one fsync
   * with them (default 0: a round starts at once and gathers only what arrived meanwhile).
   */
  syncGroupDelayMs?: number;
  /**
   * Let writers opened with `writeThrough` write past the page cache where the filesystem
   * allows it (direct-io.ts). Default true.
   */
  directWrites?: boolean;
}

/** A maintenance operation (abort, cleanup) holding a ref's lock. */
type LockHolder = LocalIngestWriter | { readonly maintenance: string };

export class LocalContentStore implements ContentStore {
  readonly root: string;
  private readonly blobDir: string;
  private readonly ingestRoot: string;
  /** One holder per ingest key (sha256 of the ref); one ckd owns a root, so in-process suffices. */
  private readonly locks = new Map<string, LockHolder>();
  /** Remembered ingests by key, kept across writers for cheap resume. */
  private readonly states = new Map<string, IngestState>();
  private readonly dirSync: SyncBatcher;
  private readonly host: WriterHost;
  /**
   * This process's directory for small ingests' temp files, made on first use under a random
   * name: its inodes then come from a block group picked afresh, not from the one where the
   * files of a store removed a minute ago were (see placement.ts).
   */
  private readonly tempDir: string;
  private tempDirMade: Promise<void> | undefined;

  private constructor(
    root: string,
    private readonly blobDirHandle: FileHandle,
    opts: LocalContentStoreOptions,
  ) {
    this.root = root;
    this.blobDir = path.join(root, "blobs", "sha256");
    this.ingestRoot = path.join(root, "ingest");
    this.tempDir = path.join(this.ingestRoot, `tmp-${randomBytes(8).toString("hex")}`);
    this.dirSync = new SyncBatcher(() => this.blobDirHandle.sync(), { maxDelayMs: opts.syncGroupDelayMs });
    this.host = {
      blobPath: (hex) => path.join(this.blobDir, hex),
      commitTempPath: async (key) => {
        this.tempDirMade ??= fs.mkdir(this.tempDir, { recursive: true }).then(() => undefined);
        this.tempDirMade.catch(() => (this.tempDirMade = undefined));
        await this.tempDirMade;
        return path.join(this.tempDir, key + TEMP_SUFFIX);
      },
      memoryIngestMaxBytes: checkCount("memoryIngestMaxBytes", opts.memoryIngestMaxBytes ?? 64 * 1024),
      blobDirSync: () => this.dirSync.ticket(),
      release: (holder, forget) => {
        if (this.locks.get(holder.key) === holder) this.locks.delete(holder.key);
        if (forget) this.states.delete(holder.key);
      },
      directBuffers: opts.directWrites === false ? undefined : new AlignedBuffers(),
    };
  }

  /**
   * Opens (creating if needed) the store at `root`. Partial ingests left by a crash stay
   * resumable; blobs/ only ever received fsynced files by rename, so nothing there is partial.
   */
  static async open(root: string, opts: LocalContentStoreOptions = {}): Promise<LocalContentStore> {
    const abs = path.resolve(root);
    const blobDir = path.join(abs, "blobs", "sha256");
    await fs.mkdir(blobDir, { recursive: true });
    await fs.mkdir(path.join(abs, "ingest"), { recursive: true });
    // Ingest directories and the temp directory each get a block group of their own.
    await spreadSubdirectories(path.join(abs, "ingest"));
    // Make the directories themselves durable once, so later renames have a durable parent.
    for (const dir of [abs, path.join(abs, "blobs"), blobDir]) {
      const fh = await fs.open(dir, fsc.O_RDONLY);
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    return new LocalContentStore(abs, await fs.open(blobDir, fsc.O_RDONLY), opts);
  }

  /** Directory fsyncs run vs. asked for since open. */
  get syncStats(): { rounds: number; requests: number } {
    return this.dirSync.stats;
  }

  async close(): Promise<void> {
    await this.blobDirHandle.close();
  }

  // ---- Provider ----

  async readerAt(digest: string): Promise<ReaderAt> {
    const file = this.path(digest);
    let fh: FileHandle;
    try {
      fh = await fs.open(file, fsc.O_RDONLY);
    } catch (err) {
      if (isErrno(err, "ENOENT")) throw notFound(`content digest ${digest}`);
      throw err;
    }
    try {
      const { size } = await fh.stat();
      return new LocalReaderAt(fh, size);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  // ---- BlobManager ----

  path(digest: string): string {
    return path.join(this.blobDir, sha256Hex("digest", digest));
  }

  async stat(digest: string): Promise<BlobInfo | undefined> {
    const st = lookup(this.path(digest));
    return st === undefined ? undefined : { digest, size: st.size, modifiedAt: st.mtime };
  }

  async delete(digest: string): Promise<void> {
    const file = this.path(digest);
    try {
      await fs.unlink(file);
    } catch (err) {
      if (isErrno(err, "ENOENT")) throw notFound(`content digest ${digest}`);
      throw err;
    }
  }

  async *walk(): AsyncIterable<BlobInfo> {
    const dir = await fs.opendir(this.blobDir);
    for await (const entry of dir) {
      if (!entry.isFile() || !HEX64.test(entry.name)) continue;
      try {
        const st = await fs.stat(path.join(this.blobDir, entry.name));
        yield { digest: `sha256:${entry.name}`, size: st.size, modifiedAt: st.mtime };
      } catch (err) {
        if (!isErrno(err, "ENOENT")) throw err; // deleted while walking
      }
    }
  }

  // ---- Ingester ----

  async writer(opts: WriterOptions): Promise<IngestWriter> {
    const ref = checkRef(opts.ref);
    const expected = optionalDigest("expected", opts.expected);
    const total = checkCount("total", opts.total);
    const key = refKey(ref);
    if (this.locks.has(key)) throw unavailable(`ref "${shown(ref)}" locked`);
    // Lock before looking for the blob: a holder commits under the lock, so whoever gets the
    // lock next sees its blob and never writes the bytes a second time.
    const claim = { maintenance: "opening writer" };
    this.locks.set(key, claim);
    let fh: FileHandle | undefined;
    try {
      if (expected !== undefined && (await this.stat(expected)) !== undefined) {
        throw alreadyExists(`content ${expected}`);
      }
      const opened = await this.openIngest(ref, key, total, expected, opts.lease || undefined);
      fh = opened.fh;
      // Abort and cleanup leave a claimed key alone, so the claim is still ours.
      const w = new LocalIngestWriter(this.host, opened.state, fh, opts.writeThrough === true);
      this.locks.set(key, w);
      return w;
    } catch (err) {
      await fh?.close().catch(() => undefined);
      if (this.locks.get(key) === claim) this.locks.delete(key);
      throw err;
    }
  }

  /**
   * Finds the ingest in memory or on disk (checking its hash state), or starts a new one in
   * memory. Returns the open data file when the ingest is on disk.
   */
  private async openIngest(
    ref: string,
    key: string,
    total: number,
    expected: string | undefined,
    lease: string | undefined,
  ): Promise<{ state: IngestState; fh: FileHandle | undefined }> {
    const dir = path.join(this.ingestRoot, key);
    let state = this.states.get(key);
    if (state === undefined && !exists(dir)) {
      const now = new Date();
      state = {
        ref, key, dir, total, expected,
        startedAt: now, updatedAt: now, offset: 0, hash: createHash("sha256"), pending: [],
        leases: lease === undefined ? [] : [lease],
        expires: lease === undefined,
      };
      this.states.set(key, state);
      return { state, fh: undefined };
    }

    let persist = false;
    if (state === undefined) {
      // Left by an earlier process: take what ref.json says (rewrite it if a crash lost it).
      const saved = await readRefFile(dir);
      persist = saved === undefined || saved.ref !== ref;
      const now = new Date();
      state = {
        ref,
        key,
        dir,
        total: saved?.total ?? 0,
        expected: saved?.expected,
        startedAt: saved ? new Date(saved.startedAt) : now,
        updatedAt: now,
        offset: -1, // unknown until hashed below
        hash: createHash("sha256"),
        pending: undefined,
        leases: saved?.leases ?? [],
        expires: saved?.expires ?? true,
      };
    }
    if (lease !== undefined && !state.leases.includes(lease)) {
      state.leases = [...state.leases, lease];
      persist = true;
    }
    if (lease === undefined && !state.expires) {
      state.expires = true;
      persist = true;
    }
    // As containerd's local store (a resume that fails, as one for another total does, recreates
    // the ingest): the ingest is begun again, under the lock this writer holds, rather than
    // refused on every open until an Abort (which ctr has none of) or the idle sweep. Its
    // leases still hold the ref, as containerd's metadata keeps them.
    let startOver = false;
    if (total > 0 && state.total > 0 && total !== state.total) {
      const now = new Date();
      state.startedAt = now;
      state.updatedAt = now;
      state.offset = 0;
      state.hash = createHash("sha256");
      if (state.pending !== undefined) state.pending = [];
      startOver = true;
      persist = true;
    }
    if (total > 0 && state.total !== total) {
      state.total = total;
      persist = true;
    }
    // The expected digest is this writer's, as the one containerd's Commit is given: one
    // declared by an earlier writer of the ref (a failed try, say) is not held against it.
    if (state.expected !== expected) {
      state.expected = expected;
      persist = true;
    }
    if (state.pending !== undefined) return { state, fh: undefined };

    const fh = await fs.open(path.join(dir, DATA_FILE), fsc.O_RDWR | fsc.O_CREAT, 0o644);
    try {
      // (Should this fail, the file and the state disagree: the next open hashes the file.)
      if (startOver) await fh.truncate(0);
      const st = await fh.stat();
      const size = st.size;
      if (size !== state.offset) {
        // After a restart (or if the file changed under us): hash the bytes held, once.
        state.hash = await hashFile(fh, size);
        state.offset = size;
        state.updatedAt = modifiedAt(st);
      }
      if (persist) await writeRefFile(state);
    } catch (err) {
      await fh.close();
      throw err;
    }
    this.states.set(key, state);
    return { state, fh };
  }

  // ---- IngestManager ----

  async status(ref: string): Promise<IngestStatus> {
    const key = refKey(checkRef(ref));
    const st = await this.statusByKey(key);
    if (st === undefined) throw notFound(`ingest ref "${shown(ref)}"`);
    return st;
  }

  async listStatuses(): Promise<IngestStatus[]> {
    const keys = await this.ingestKeys();
    const all = await Promise.all(keys.map((k) => this.statusByKey(k)));
    return all.filter((s): s is IngestStatus => s !== undefined).sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
  }

  async abort(ref: string, opts: { unlessWritten?: boolean } = {}): Promise<void> {
    const key = refKey(checkRef(ref));
    const holder = this.locks.get(key);
    if (holder !== undefined && opts.unlessWritten) return;
    if (holder !== undefined && !(holder instanceof LocalIngestWriter)) {
      throw unavailable(`ref "${shown(ref)}" locked`);
    }
    const claim = { maintenance: "abort" };
    this.locks.set(key, claim);
    try {
      const inMemory = this.states.get(key)?.pending !== undefined;
      if (holder !== undefined) await holder.kill();
      this.states.delete(key);
      try {
        await fs.rm(path.join(this.ingestRoot, key), { recursive: true, force: inMemory });
      } catch (err) {
        if (isErrno(err, "ENOENT")) throw notFound(`ingest ref "${shown(ref)}"`);
        throw err;
      }
    } finally {
      if (this.locks.get(key) === claim) this.locks.delete(key);
    }
  }

  /**
   * Removes unlocked ingests idle for at least `maxIdleMs`, and temp files a crash left. Returns
   * the refs removed; an ingest whose ref.json a crash lost is removed too, unnamed.
   */
  cleanupStale(maxIdleMs: number): Promise<string[]> {
    checkCount("maxIdleMs", maxIdleMs);
    return this.cleanup((c) => c.idleMs >= maxIdleMs, maxIdleMs);
  }

  async cleanup(collectable: (c: IngestCandidate) => boolean, tempMaxIdleMs: number): Promise<string[]> {
    checkCount("tempMaxIdleMs", tempMaxIdleMs);
    const removed: string[] = [];
    const idleMs = (t: Date | undefined) => (t === undefined ? 0 : Date.now() - t.getTime());
    for (const key of await this.ingestKeys()) {
      if (this.locks.has(key)) continue;
      const dir = path.join(this.ingestRoot, key);
      const known = this.states.get(key);
      const seenUpdated = known?.updatedAt.getTime();
      const saved = known ? undefined : await readRefFile(dir);
      const candidate: IngestCandidate = {
        ref: known?.ref ?? saved?.ref,
        leases: known?.leases ?? saved?.leases ?? [],
        expires: known?.expires ?? saved?.expires ?? true,
        idleMs: idleMs(known?.updatedAt ?? (await lastModified(dir))),
      };
      if (!collectable(candidate)) continue;
      if (this.locks.has(key)) continue; // a writer took it while we looked
      // A writer that opened, wrote and closed while we looked left another state (or a newer
      // write): the ingest is not idle any more.
      const now = this.states.get(key);
      if (now !== known || (known !== undefined && known.updatedAt.getTime() !== seenUpdated)) continue;
      const claim = { maintenance: "cleanup" };
      this.locks.set(key, claim);
      try {
        this.states.delete(key);
        await fs.rm(dir, { recursive: true, force: true });
        if (candidate.ref !== undefined) removed.push(candidate.ref);
      } finally {
        if (this.locks.get(key) === claim) this.locks.delete(key);
      }
    }
    // Temp files a crash left between their write and their rename (in the ingest directory
    // itself before temp directories existed), then the empty temp directories of earlier runs.
    const tempDirs: string[] = [];
    const removeStaleTemps = async (dir: string) => {
      for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
        const key = name.slice(0, -TEMP_SUFFIX.length);
        if (!name.endsWith(TEMP_SUFFIX) || !HEX64.test(key) || this.locks.has(key)) continue;
        const file = path.join(dir, name);
        const mtime = await fs.stat(file).then(modifiedAt, () => undefined);
        if (mtime !== undefined && idleMs(mtime) >= tempMaxIdleMs && !this.locks.has(key)) await fs.rm(file, { force: true });
      }
    };
    for (const name of await fs.readdir(this.ingestRoot)) if (TEMP_DIR.test(name)) tempDirs.push(path.join(this.ingestRoot, name));
    await removeStaleTemps(this.ingestRoot);
    for (const dir of tempDirs) {
      await removeStaleTemps(dir);
      if (dir !== this.tempDir) await fs.rmdir(dir).catch(() => undefined); // ENOTEMPTY: a file still young
    }
    return removed;
  }

  /**
   * Drops a lease from an ingest's leases, under the ref's lock as every change to an ingest's
   * directory: a writer holding it saves ref.json in its own turn (a commit in flight may have
   * removed the directory by then); a short maintenance claim (a writer opening, an abort, the
   * cleanup) is waited for, up to a few seconds.
   */
  async releaseLease(ref: string, lease: string): Promise<void> {
    const key = refKey(checkRef(ref));
    // Dropped from the remembered state already, but not saved (its writer let go meanwhile).
    let unsaved = false;
    for (let waited = 0; ; ) {
      const holder = this.locks.get(key);
      if (holder instanceof LocalIngestWriter) {
        const known = this.states.get(key);
        if (known === undefined) break;
        if (known.leases.includes(lease)) {
          known.leases = known.leases.filter((l) => l !== lease);
          unsaved = true;
        }
        if (!unsaved || (await holder.saveRef())) return;
        continue; // closed (or committed) before its turn came: saved below, under a claim
      }
      if (holder === undefined) break;
      if (waited >= 5000) throw unavailable(`ref "${shown(ref)}" locked (${holder.maintenance})`);
      await new Promise((r) => setTimeout(r, 10));
      waited += 10;
    }
    const claim = { maintenance: "releasing a lease" };
    this.locks.set(key, claim);
    try {
      const known = this.states.get(key);
      if (known !== undefined) {
        if (!known.leases.includes(lease) && !unsaved) return;
        known.leases = known.leases.filter((l) => l !== lease);
        // An ingest still in memory writes its ref.json when it reaches disk.
        if (known.pending === undefined) await writeRefFile(known);
        return;
      }
      const dir = path.join(this.ingestRoot, key);
      const saved = await readRefFile(dir);
      if (saved === undefined) throw notFound(`ingest ref "${shown(ref)}"`);
      if (!saved.leases?.includes(lease)) return;
      await saveRefFile(dir, { ...saved, leases: saved.leases.filter((l) => l !== lease) });
    } finally {
      if (this.locks.get(key) === claim) this.locks.delete(key);
    }
  }

  /** Keys of every ingest, on disk or in memory. */
  private async ingestKeys(): Promise<string[]> {
    const keys = new Set((await fs.readdir(this.ingestRoot)).filter((n) => HEX64.test(n)));
    for (const key of this.states.keys()) keys.add(key);
    return [...keys];
  }

  private async statusByKey(key: string): Promise<IngestStatus | undefined> {
    const known = this.states.get(key);
    if (known !== undefined) {
      const { ref, offset, total, expected, startedAt, updatedAt, leases, expires } = known;
      if (offset >= 0) return { ref, offset, total, expected, startedAt, updatedAt, leases: [...leases], expires };
    }
    const dir = path.join(this.ingestRoot, key);
    const saved = await readRefFile(dir);
    if (saved === undefined) return undefined;
    let offset = 0;
    let updatedAt = new Date(saved.startedAt);
    try {
      const st = await fs.stat(path.join(dir, DATA_FILE));
      offset = st.size;
      updatedAt = modifiedAt(st);
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
    }
    return {
      ref: saved.ref,
      offset,
      total: saved.total,
      expected: saved.expected,
      startedAt: new Date(saved.startedAt),
      updatedAt,
      leases: saved.leases ?? [],
      expires: saved.expires ?? true,
    };
  }
}

async function writeRefFile(state: IngestState): Promise<void> {
  const { ref, total, expected, leases, expires } = state;
  await saveRefFile(state.dir, { ref, total, expected, startedAt: state.startedAt.toISOString(), leases, expires });
}

/** Writes `ref.json`, leaving out an absent expected digest and an empty lease list. */
async function saveRefFile(dir: string, f: RefFile): Promise<void> {
  const body: RefFile = { ref: f.ref, total: f.total, startedAt: f.startedAt };
  if (f.expected !== undefined) body.expected = f.expected;
  if (f.leases !== undefined && f.leases.length > 0) body.leases = f.leases;
  body.expires = f.expires ?? true;
  // Whole or not at all: a reader (a restart, a status, the cleanup) never sees half a file.
  const tmp = path.join(dir, `${REF_FILE}.tmp`);
  await fs.writeFile(tmp, JSON.stringify(body));
  await fs.rename(tmp, path.join(dir, REF_FILE));
}

/** ref.json of an ingest dir, or undefined when absent or unreadable (a crash mid-write). */
async function readRefFile(dir: string): Promise<RefFile | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path.join(dir, REF_FILE), "utf8");
  } catch (err) {
    if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return undefined;
    throw err;
  }
  try {
    const v = JSON.parse(text) as Partial<RefFile>;
    if (typeof v.ref !== "string" || v.ref === "" || typeof v.startedAt !== "string") return undefined;
    if (Number.isNaN(Date.parse(v.startedAt))) return undefined;
    return {
      ref: v.ref,
      total: typeof v.total === "number" && v.total >= 0 ? v.total : 0,
      expected: typeof v.expected === "string" && v.expected !== "" ? v.expected : undefined,
      startedAt: v.startedAt,
      leases: Array.isArray(v.leases) ? v.leases.filter((l): l is string => typeof l === "string" && l !== "") : undefined,
      expires: typeof v.expires === "boolean" ? v.expires : undefined,
    };
  } catch {
    return undefined;
  }
}

/**
 * mtime truncated to the millisecond, as Date.now() is (Node's `stat.mtime` rounds, which can
 * put a file written this instant a millisecond in the future).
 */
const modifiedAt = (st: { mtimeMs: number }): Date => new Date(Math.floor(st.mtimeMs));

/** The latest mtime among an ingest dir and its files, or undefined if the dir is gone. */
async function lastModified(dir: string): Promise<Date | undefined> {
  const times: number[] = [];
  for (const p of [dir, path.join(dir, DATA_FILE), path.join(dir, REF_FILE)]) {
    try {
      times.push(modifiedAt(await fs.stat(p)).getTime());
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
      if (p === dir) return undefined;
    }
  }
  return new Date(Math.max(...times));
}
