// The projection database: RocksDB holding the namespaced views, values encoded with cbor-x,
// and the stream sequence of the last applied event (and which message that was), written in
// the same atomic batch as the view changes that event caused. Only the projector writes here,
// and only by applying events.
import { RocksLevel } from "@nxtedition/rocksdb";
import { Encoder } from "cbor-x";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { join } from "node:path";

/** Keys under this prefix are bookkeeping, not views. */
export const META_PREFIX = "\u0000meta\u0000";
const APPLIED_KEY = `${META_PREFIX}applied`;
const LOG_KEY = `${META_PREFIX}log`;
/** Which message the applied sequence is (AppliedMessage), written in the same batch. */
const LAST_KEY = `${META_PREFIX}last`;

/**
 * A file in the projection's directory saying it is damaged (RocksDB leaves files it does not
 * name alone): written when a read or a write at run time met corruption, so that the next
 * start sets the projection aside and rebuilds it, whatever its own check at open finds.
 */
export const DAMAGE_MARK = "CK-DAMAGED";

/** Identity of the log a projection was built from: a different log means rebuild. */
/**
 * The layout of the views (keys and record shapes). A projection written with another one is
 * rebuilt from the log on start. 2: lease resources became records of their own.
 */
export const PROJECTION_FORMAT = 2;

export interface LogIdentity {
  stream: string;
  /** The stream's creation time as the server reports it. */
  created: string;
  /** PROJECTION_FORMAT of the code that built the views (absent before format 2). */
  format?: number;
}

// One encoder with fixed options: the same value always gives the same bytes.
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, pack: false, variableMapSize: false });

export function encodeValue(v: unknown): Buffer {
  // cbor-x returns a view into a buffer it reuses for the next encode: copy it out.
  return Buffer.from(encodeValueView(v));
}
/** The encoding as a view into cbor-x's buffer, valid only until the next encode. */
const encodeValueView = (v: unknown): Buffer => cbor.encode(v);
export function decodeValue(b: Uint8Array): unknown {
  return cbor.decode(b);
}

export type KeyChange = [key: string, value: unknown | undefined];

/**
 * The open failed because another process (or another handle here) holds the database's
 * lock: RocksDB's "While lock file: …/LOCK: Resource temporarily unavailable", under the
 * binding's "Database is not open". Such a projection is in use, not damaged.
 */
export function isLockedByOther(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (/While lock file: .*LOCK: Resource temporarily unavailable|lock hold by current process/i.test(e.message)) return true;
  }
  return false;
}

/**
 * The error says the projection's bytes are damaged: RocksDB's Corruption status (a block
 * whose checksum does not match, a table cut short, a bad record), which the binding throws
 * as LEVEL_CORRUPTION with RocksDB's "Corruption: …" message, possibly under a wrapper (an
 * open's "Database is not open"). Reading the same bytes again fails again: such a projection
 * is set aside and rebuilt, not retried. Other failures (a full disk, an I/O error, a closed
 * database) say nothing about the bytes already there.
 */
export function isCorruption(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if ((e as { code?: unknown }).code === "LEVEL_CORRUPTION" || /^Corruption: /.test(e.message)) return true;
  }
  return false;
}

/**
 * Which message a checkpoint is at: its stream sequence and the message's identity
 * (messageIdentity). A sequence alone cannot tell a log that lost its tail and was written
 * past it again (a power loss on a single nats-server, a stream restored from a backup) from
 * the log the projection was folded from.
 */
export interface AppliedMessage {
  seq: number;
  id: string;
}

/** What the projection needs of a message to know it again. */
export interface MessageLike {
  seq: number;
  data: Uint8Array;
  headers: Record<string, string>;
  /** One header's first value, where that is cheaper than making `headers`. */
  header?(name: string): string | undefined;
}

/**
 * A message's identity: its Nats-Msg-Id (ck gives every append a random one, its dedupe id),
 * or for a message appended without one (any NATS client may publish to the stream) the
 * sha256 of its data.
 */
export function messageIdentity(m: Pick<MessageLike, "data" | "headers" | "header">): string {
  const id = m.header ? m.header("Nats-Msg-Id") : m.headers["Nats-Msg-Id"];
  if (id) return `msgid:${id}`;
  return `sha256:${createHash("sha256").update(m.data).digest("hex")}`;
}

/**
 * RocksDB's order of keys (bytewise, of their UTF-8): by code point, which JavaScript's `<`
 * (UTF-16 code units) is not past U+FFFF. For walking two projections side by side.
 */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

const BUF = { valueEncoding: "buffer" } as const;

/**
 * The binding's chained batch, which its typings leave out: abstract-level's put/del (key and
 * value checks, encoding lookups, an options copy and a JS-side copy of every operation per
 * call) under the binding's own _put/_del/_writeSync, which go straight to the native batch.
 */
interface ChainedBatch {
  put(key: string, value: Buffer, opts: typeof BUF): unknown;
  del(key: string): unknown;
  _put?(key: string, value: Buffer, opts: object): void;
  _del?(key: string, opts: object): void;
  _writeSync?(opts: { sync: boolean }): void;
  /** Writes and closes the batch. */
  write(opts: { sync: boolean }): Promise<void>;
  close(): Promise<void>;
}
const NO_OPTIONS = {};

/**
 * RocksDB settings for a projection: small, rebuilt from the log when lost, read by point
 * lookups (the write path's decisions, Gets, the fold's reads of keys that mostly do not exist
 * yet) and prefix scans (Lists). The binding's defaults compress the WAL and every table
 * with zstd, CPU on two shared cores for a few megabytes saved. "point-lookup" adds a
 * whole-key bloom filter to the memtable, where a rebuild's reads of absent keys land, and a
 * hash index to data blocks. Rebuilding 100,000 image creates: 60-65k -> 66-70k events/s
 * (2026-11-30, six alternating runs each, Intel Xeon 2 vCPU).
 */
const TUNING = { walCompression: false, compression: false, optimize: "point-lookup" } as const;

/** How many key prefixes ProjectionDb.generation watches at most. */
const MAX_WATCHED = 64;

export class ProjectionDb {
  private readonly generations = new Map<string, number>();
  private clock = 0;

  /**
   * Told, once, of the first read or write that failed with corruption (isCorruption), before
   * the error goes on to its caller: ckd marks the projection damaged and stops.
   */
  onCorruption: ((err: Error) => void) | undefined;
  private corruptionTold = false;

  private constructor(
    private readonly db: RocksLevel,
    readonly location: string,
    private applied: number,
    private last: AppliedMessage | undefined,
  ) {}

  static async open(location: string): Promise<ProjectionDb> {
    const db = new RocksLevel(location, {});
    await db.open({ createIfMissing: true, ...TUNING });
    const [raw, rawLast] = (await db.getMany([APPLIED_KEY, LAST_KEY], BUF)) as (Buffer | undefined)[];
    const applied = raw ? Number(decodeValue(raw)) : 0;
    // Absent in a projection written before it was recorded, or loaded from a base.
    const last = rawLast ? (decodeValue(rawLast) as AppliedMessage) : undefined;
    return new ProjectionDb(db, location, applied, last);
  }

  /** Removes a projection directory entirely (for a rebuild). */
  static async destroy(location: string): Promise<void> {
    await rm(location, { recursive: true, force: true });
  }

  /**
   * Moves a (closed) projection directory to `<location>.<suffix>`, in place of any earlier
   * one there, and returns where it went: what a damaged or diverged projection held stays
   * for a look, one of each at most.
   */
  static async setAside(location: string, suffix: string): Promise<string> {
    const to = `${location}.${suffix}`;
    await rm(to, { recursive: true, force: true });
    await rename(location, to);
    return to;
  }

  /**
   * Marks the projection at `location` damaged (DAMAGE_MARK, holding why). Synchronous: it
   * is written before ckd, told of the damage in the middle of a read, exits.
   */
  static markDamaged(location: string, why: string): void {
    writeFileSync(join(location, DAMAGE_MARK), `${new Date().toISOString()} ${why}\n`);
  }

  /** Why the projection at `location` was marked damaged, if it was. */
  static damageMark(location: string): string | undefined {
    try {
      return readFileSync(join(location, DAMAGE_MARK), "utf8").trim() || "marked damaged";
    } catch {
      return undefined;
    }
  }

  /**
   * Reads every record, which makes RocksDB read every data block of every table and check
   * its checksum: an open only reads the tables' index and filter blocks, so a damaged data
   * block would otherwise show only when a List or a fold reaches it. Throws RocksDB's
   * error (isCorruption). Keys only, as strings (Buffers cost twice the time), in pages of
   * 1,024; the iterator leaves the block cache as it was. 100,000 image records (36 MiB):
   * 85-155 ms with the table in the page cache, 210-230 ms without; ckd runs it in the
   * background once serving (README, "How the projection stays honest").
   */
  async verify(): Promise<number> {
    const it = this.db.iterator({ keyEncoding: "utf8", values: false, fillCache: false } as never);
    let n = 0;
    try {
      for (;;) {
        const rows = (await it.nextv(1024)) as unknown[];
        if (rows.length === 0) return n;
        n += rows.length;
      }
    } finally {
      await it.close();
    }
  }

  /** Stream sequence of the last event whose changes are in this database. */
  get appliedSeq(): number {
    return this.applied;
  }

  /**
   * Which message the applied sequence is, as recorded with it (undefined when it was not:
   * a projection from before this was recorded, or loaded from a base, until its next apply).
   */
  get appliedMessage(): AppliedMessage | undefined {
    return this.last?.seq === this.applied ? this.last : undefined;
  }

  /** Runs `fn`, telling onCorruption of a corruption it throws. */
  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      this.tellCorruption(err);
      throw err;
    }
  }

  private async guardAsync<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      this.tellCorruption(err);
      throw err;
    }
  }

  private tellCorruption(err: unknown): void {
    if (this.corruptionTold || !this.onCorruption || !isCorruption(err)) return;
    this.corruptionTold = true;
    this.onCorruption(err as Error);
  }

  async logIdentity(): Promise<LogIdentity | undefined> {
    const raw = (await this.guardAsync(() => this.db.getMany([LOG_KEY], BUF)))[0] as Buffer | undefined;
    return raw ? (decodeValue(raw) as LogIdentity) : undefined;
  }

  async setLogIdentity(id: LogIdentity): Promise<void> {
    await this.write([[LOG_KEY, encodeValue({ stream: id.stream, created: id.created, format: id.format ?? PROJECTION_FORMAT })]], true);
  }

  /**
   * Writes puts (a Buffer) and deletes (undefined) atomically. Through a chained batch that
   * `write()` closes: the binding's `db.batch(ops)` writes a chained batch it never closes, so
   * every call left the batch, its native write batch and its bytes attached to the database
   * until close (a leak of every applied event's bytes in a long-running ckd).
   */
  private async write(ops: [key: string, value: Buffer | undefined][], sync: boolean): Promise<void> {
    await this.writeEncoded(ops, (v) => v, sync);
  }

  /**
   * Writes `ops` in one batch, each value made bytes by `encode` (undefined: delete). On the
   * binding's fast path each encoding goes into the native batch, which copies it, before the
   * next is made: cbor-x's reused buffer needs no copy of its own there.
   */
  private writeEncoded<V>(ops: [key: string, value: V | undefined][], encode: (v: V) => Buffer, sync: boolean): Promise<void> {
    // A write fails with corruption once RocksDB met it in the background (a compaction
    // reading a damaged table stops all writes).
    return this.guardAsync(() => this.writeBatch(ops, encode, sync));
  }

  private async writeBatch<V>(ops: [key: string, value: V | undefined][], encode: (v: V) => Buffer, sync: boolean): Promise<void> {
    const batch = (this.db as unknown as { batch(): ChainedBatch }).batch();
    if (batch._put && batch._del && batch._writeSync) {
      // Keys are strings and values Buffers: nothing for abstract-level to encode.
      try {
        for (const [key, value] of ops) {
          if (value === undefined) batch._del(key, NO_OPTIONS);
          else batch._put(key, encode(value), NO_OPTIONS);
        }
        batch._writeSync({ sync });
      } finally {
        await batch.close();
      }
      return;
    }
    for (const [key, value] of ops) {
      if (value === undefined) batch.del(key);
      else batch.put(key, Buffer.from(encode(value)), BUF);
    }
    await batch.write({ sync });
  }

  /**
   * Reads one key synchronously. RocksDB answers from its memtable or block cache in
   * microseconds, a tenth of an async round trip; the write path's decisions use it.
   */
  getSync(key: string): unknown | undefined {
    return this.getManySync([key])[0];
  }

  /** Reads many keys in one synchronous call (the binding's getManySync). */
  getManySync(keys: string[]): (unknown | undefined)[] {
    const raws = this.guard(() => (this.db as unknown as { _getManySync(k: string[], o: object): (Buffer | undefined)[] })._getManySync(keys, BUF));
    return raws.map((raw) => (raw === undefined ? undefined : decodeValue(raw)));
  }

  /** One key; read synchronously (no thread-pool hop), which keeps Get latency flat. */
  async get(key: string): Promise<unknown | undefined> {
    return this.getSync(key);
  }

  /** Iterates every key with a prefix, in key order, values decoded (synchronously). */
  *scan(prefix: string, opts: { limit?: number } = {}): Generator<[string, unknown]> {
    for (const [k, v] of this.scanRaw(prefix, opts)) yield [k, decodeValue(v)];
  }

  /**
   * Iterates keys and raw value bytes with a prefix (or all keys when prefix is ""), in
   * pages read synchronously by the binding's querySync: three times faster than an async
   * iterator for List-sized ranges, and a page never holds more than PAGE rows.
   */
  *scanRaw(prefix: string, opts: { limit?: number } = {}): Generator<[string, Buffer]> {
    const PAGE = 4096;
    let remaining = opts.limit ?? Infinity;
    const lt = prefix === "" ? undefined : prefixEnd(prefix);
    let after: string | undefined;
    while (remaining > 0) {
      const range: Record<string, string> = {};
      if (after !== undefined) range.gt = after;
      else if (prefix !== "") range.gte = prefix;
      if (lt !== undefined) range.lt = lt;
      const limit = Math.min(PAGE, remaining);
      const { rows } = this.guard(() =>
        (this.db as unknown as { querySync(o: object): { rows: unknown[] } }).querySync({
          ...range,
          limit,
          keyEncoding: "utf8",
          valueEncoding: "buffer",
        }),
      );
      const n = rows.length / 2;
      for (let i = 0; i < rows.length; i += 2) yield [rows[i] as string, rows[i + 1] as Buffer];
      if (n < limit) return;
      remaining -= n;
      after = rows[rows.length - 2] as string;
    }
  }

  /** True when any key starts with the prefix, skipping keys for which `ignore` says so. */
  async hasPrefix(prefix: string, ignore?: (key: string) => boolean): Promise<boolean> {
    const it = this.db.iterator({ gte: prefix, lt: prefixEnd(prefix), keyEncoding: "utf8", values: false });
    try {
      for (;;) {
        const batch = (await this.guardAsync(() => it.nextv(64))) as [string, unknown][];
        if (batch.length === 0) return false;
        for (const [k] of batch) if (!ignore || !ignore(k)) return true;
      }
    } finally {
      await it.close();
    }
  }

  /**
   * Writes the changes of one or more events and the new applied sequence in one atomic
   * batch. `sync` makes RocksDB fsync its WAL; the log is the source of truth, so the
   * projector leaves it off and relies on replay from the checkpoint after a crash. Given
   * the last message applied (the projector does), its identity goes in the same batch (one
   * small key), for the next start to find it in the log again.
   */
  async apply(changes: KeyChange[], applied: number | MessageLike, sync = false): Promise<void> {
    const seq = typeof applied === "number" ? applied : applied.seq;
    const last = typeof applied === "number" ? undefined : { seq, id: messageIdentity(applied) };
    const ops: [string, unknown][] = [...changes, [APPLIED_KEY, seq]];
    if (last) ops.push([LAST_KEY, last]);
    await this.writeEncoded(ops, encodeValueView, sync);
    // After the write: a List between the write and this bump caches what the write left
    // under the old generation, which the bump then retires; never the other way round.
    if (this.generations.size > 0) this.bumpGenerations(changes);
    this.applied = seq;
    if (last) this.last = last;
  }

  /**
   * Writes records as raw bytes (a base being loaded), and with the last batch the sequence
   * the base is at. Only for a fresh database: nothing here is folded.
   */
  async loadRaw(records: [key: string, value: Buffer][], appliedSeq?: number): Promise<void> {
    const ops: [string, Buffer][] = records;
    if (appliedSeq !== undefined) ops.push([APPLIED_KEY, encodeValue(appliedSeq)]);
    await this.write(ops, false);
    if (appliedSeq !== undefined) this.applied = appliedSeq;
  }

  /**
   * A generation for the keys under `prefix`: two calls return the same number only if no
   * key under it changed in between. Watching starts at the first call; at most
   * MAX_WATCHED prefixes are watched, and a prefix dropped and watched again gets a number
   * it never had before, so a value remembered from earlier never matches by accident.
   */
  generation(prefix: string): number {
    const g = this.generations.get(prefix);
    if (g !== undefined) return g;
    if (this.generations.size >= MAX_WATCHED) this.generations.clear();
    const fresh = ++this.clock;
    this.generations.set(prefix, fresh);
    return fresh;
  }

  private bumpGenerations(changes: KeyChange[]): void {
    for (const prefix of this.generations.keys()) {
      for (const [key] of changes) {
        if (key.startsWith(prefix)) {
          this.generations.set(prefix, ++this.clock);
          break;
        }
      }
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

/** The smallest string greater than every string starting with prefix. */
export function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}
