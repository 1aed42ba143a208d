// The projection database: RocksDB holding the namespaced views, values encoded with cbor-x,
// and the stream sequence of the last applied event, written in the same atomic batch as the
// view changes that event caused. Only the projector writes here, and only by applying events.
import { RocksLevel } from "@nxtedition/rocksdb";
import { Encoder } from "cbor-x";
import { rm } from "node:fs/promises";

/** Keys under this prefix are bookkeeping, not views. */
export const META_PREFIX = "\u0000meta\u0000";
const APPLIED_KEY = `${META_PREFIX}applied`;
const LOG_KEY = `${META_PREFIX}log`;

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

  private constructor(
    private readonly db: RocksLevel,
    readonly location: string,
    private applied: number,
  ) {}

  static async open(location: string): Promise<ProjectionDb> {
    const db = new RocksLevel(location, {});
    await db.open({ createIfMissing: true, ...TUNING });
    const raw = (await db.getMany([APPLIED_KEY], BUF))[0] as Buffer | undefined;
    const applied = raw ? Number(decodeValue(raw)) : 0;
    return new ProjectionDb(db, location, applied);
  }

  /** Removes a projection directory entirely (for a rebuild). */
  static async destroy(location: string): Promise<void> {
    await rm(location, { recursive: true, force: true });
  }

  /** Stream sequence of the last event whose changes are in this database. */
  get appliedSeq(): number {
    return this.applied;
  }

  async logIdentity(): Promise<LogIdentity | undefined> {
    const raw = (await this.db.getMany([LOG_KEY], BUF))[0] as Buffer | undefined;
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
  private async writeEncoded<V>(ops: [key: string, value: V | undefined][], encode: (v: V) => Buffer, sync: boolean): Promise<void> {
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
    const raws = (this.db as unknown as { _getManySync(k: string[], o: object): (Buffer | undefined)[] })._getManySync(keys, BUF);
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
      const { rows } = (this.db as unknown as { querySync(o: object): { rows: unknown[] } }).querySync({
        ...range,
        limit,
        keyEncoding: "utf8",
        valueEncoding: "buffer",
      });
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
        const batch = (await it.nextv(64)) as [string, unknown][];
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
   * projector leaves it off and relies on replay from the checkpoint after a crash.
   */
  async apply(changes: KeyChange[], appliedSeq: number, sync = false): Promise<void> {
    const ops: [string, unknown][] = [...changes, [APPLIED_KEY, appliedSeq]];
    await this.writeEncoded(ops, encodeValueView, sync);
    // After the write: a List between the write and this bump caches what the write left
    // under the old generation, which the bump then retires; never the other way round.
    if (this.generations.size > 0) this.bumpGenerations(changes);
    this.applied = appliedSeq;
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
