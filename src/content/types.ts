// The content store's roles, split as containerd splits them: a provider that reads blobs, an
// ingester that writes them, a manager of committed blobs and a tracker of active ingests.
// Bytes only: namespaces, labels and events belong to the metadata projection above it.

/** A committed blob, by its digest (`sha256:<hex>`) and size in bytes. */
export interface BlobInfo {
  digest: string;
  size: number;
  /** When the bytes were last written (the store's file time), where the store knows it. */
  modifiedAt?: Date;
}

/** Random access to one committed blob. */
export interface ReaderAt {
  readonly size: number;
  /** Up to `length` bytes from `offset`; fewer at the end of the blob, none at or past it. */
  read(offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

export interface Provider {
  /** NotFound when the blob is absent. */
  readerAt(digest: string): Promise<ReaderAt>;
}

export interface WriterOptions {
  /** Names the ingest; any non-empty string. One writer per ref at a time. */
  ref: string;
  /** Digest the committed blob must have; if that blob already exists, AlreadyExists. */
  expected?: string;
  /** Declared size; 0 or absent means unknown (containerd's convention). */
  total?: number;
  /**
   * The lease the writer works under: it holds the ingest (containerd's ingest leases) and is
   * remembered with it, across restarts, until the ingest is committed or removed.
   */
  lease?: string;
  /**
   * The bytes will not be read again soon (a client's upload, not a download about to be
   * unpacked): a store may write them past the page cache.
   */
  writeThrough?: boolean;
}

export interface Ingester {
  /**
   * Opens (or resumes) the ingest `ref`. Unavailable `ref "<ref>" locked` while another writer
   * holds it; AlreadyExists when `expected` is already committed (callers treat it as success).
   */
  writer(opts: WriterOptions): Promise<IngestWriter>;
}

export interface BlobManager {
  stat(digest: string): Promise<BlobInfo | undefined>;
  /** NotFound when absent. */
  delete(digest: string): Promise<void>;
  walk(): AsyncIterable<BlobInfo>;
  /** Where the blob lives (or would live) on disk. */
  path(digest: string): string;
}

export interface IngestStatus {
  ref: string;
  /** Bytes held so far. */
  offset: number;
  /** Declared size, 0 when unknown. */
  total: number;
  expected: string | undefined;
  startedAt: Date;
  updatedAt: Date;
  /** Leases the ingest was written under, oldest first; empty when none. */
  leases: string[];
  /**
   * A writer opened it without a lease at least once: it expires once idle past the limit
   * (containerd's 24 h expireAt). An ingest only ever written under leases has no expiry and
   * lives exactly as long as a lease holds it.
   */
  expires: boolean;
}

/** What a cleanup decides on: one ingest not held by a writer. */
export interface IngestCandidate {
  /** undefined when a crash lost the ingest's name. */
  ref: string | undefined;
  leases: readonly string[];
  expires: boolean;
  /** Time since the last write. */
  idleMs: number;
}

export interface IngestManager {
  /** NotFound when no ingest has that ref. */
  status(ref: string): Promise<IngestStatus>;
  listStatuses(): Promise<IngestStatus[]>;
  /**
   * Drops the ingest and its bytes, even under an active writer (which then fails), unless
   * `unlessWritten` (then one a writer holds is left alone). NotFound if absent.
   */
  abort(ref: string, opts?: { unlessWritten?: boolean }): Promise<void>;
  /** Removes unlocked ingests not written for `maxIdleMs`; returns their refs. */
  cleanupStale(maxIdleMs: number): Promise<string[]>;
  /**
   * Removes the unlocked ingests `collectable` picks, and temp files a crash left (once idle as
   * long as `tempMaxIdleMs`); returns the refs removed (unnamed ones are removed, not listed).
   */
  cleanup(collectable: (c: IngestCandidate) => boolean, tempMaxIdleMs: number): Promise<string[]>;
  /** Forgets that `lease` holds the ingest (Leases.DeleteResource); no error when it did not. NotFound without the ingest. */
  releaseLease(ref: string, lease: string): Promise<void>;
}

export interface CommitOptions {
  /** Size the blob must have; 0 or absent falls back to the declared total, if any. */
  size?: number;
  /** Digest the blob must have; absent falls back to the writer's `expected`, if any. */
  expected?: string;
}

/** One open ingest. Operations run one at a time, in call order. */
export interface IngestWriter {
  readonly ref: string;
  /** Bytes held. */
  readonly offset: number;
  readonly total: number;
  readonly expected: string | undefined;
  /** When the ingest began (not this writer: a resumed ingest keeps its start), as its status. */
  readonly startedAt: Date;
  /** When its bytes last changed, as its status. */
  readonly updatedAt: Date;
  /** Running sha256 of the bytes held, `sha256:<hex>`. */
  digest(): string;
  /**
   * Appends `data` at `offset`, which must be the current offset (else OutOfRange); offset 0
   * while data is held restarts the ingest. Returns the new offset.
   */
  write(offset: number, data: Buffer): Promise<number>;
  /** Drops the bytes held, restarting the ingest under the same lock. */
  truncate(size: 0): Promise<void>;
  /**
   * Verifies size and digest (FailedPrecondition, ingest kept), then makes the blob durable and
   * visible atomically and drops the ingest. AlreadyExists when the blob was already there.
   */
  commit(opts?: CommitOptions): Promise<BlobInfo>;
  /** Releases the lock; the bytes stay for a later resume. */
  close(): Promise<void>;
}

export type ContentStore = Provider & Ingester & BlobManager & IngestManager;
