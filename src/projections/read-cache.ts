// The projection database's read cache: what RocksDB holds under recently read or written
// keys, so that the write path's decisions, Gets and the fold's reads of hot keys (a
// namespace, a lease, a name just created) do not each pay a native MultiGet (~9 us here, a
// hit in the memtable) and a decode. The projector is the database's only writer and every
// write goes through ProjectionDb, which tells the cache what it wrote (or that a key may
// have changed) once the write is in RocksDB: a cached entry is always what RocksDB holds.
// Entries keep the stored bytes and are decoded on first use; decoded values are shared by
// every reader and frozen, so a caller that would change one fails loudly instead of
// changing what the next reader sees.

/** What a cache entry records for a key RocksDB does not hold. */
export const ABSENT = Symbol("absent");

export interface CacheEntry {
  /** The stored bytes (a copy of its own), or ABSENT. */
  readonly raw: Buffer | typeof ABSENT;
  decoded: boolean;
  value: unknown;
}

/** Bytes an entry is taken to cost beyond its stored bytes (key, map slot, objects). */
const OVERHEAD = 128;
/** A decoded record is taken to cost twice its stored bytes. */
const DECODED_FACTOR = 2;

export class ReadCache {
  private readonly entries = new Map<string, CacheEntry>();
  private bytes = 0;

  /**
   * At most `maxEntries` entries and about `maxBytes` of memory; past either, the entries
   * least recently stored go first (a hit does not reorder: FIFO, cheap on the hot path).
   */
  constructor(
    private readonly decode: (raw: Buffer) => unknown,
    private readonly maxEntries = 32_768,
    private readonly maxBytes = 16 << 20,
  ) {}

  lookup(key: string): CacheEntry | undefined {
    return this.entries.get(key);
  }

  /** The entry's value, decoded (and frozen) on first use; undefined for ABSENT. */
  value(e: CacheEntry): unknown {
    if (!e.decoded) {
      e.decoded = true;
      if (e.raw !== ABSENT) {
        e.value = deepFreeze(this.decode(e.raw));
        this.bytes += DECODED_FACTOR * e.raw.length;
      }
    }
    return e.value;
  }

  /** Records what RocksDB now holds under `key`: bytes the cache may keep (not to be changed), or ABSENT. */
  store(key: string, raw: Buffer | typeof ABSENT): CacheEntry {
    this.forget(key);
    const e: CacheEntry = { raw, decoded: false, value: undefined };
    this.entries.set(key, e);
    this.bytes += costOf(key, e);
    if (this.entries.size > this.maxEntries || this.bytes > this.maxBytes) this.evict();
    return e;
  }

  /** Drops what is known of `key` (it may change, or changed in a way not recorded here). */
  forget(key: string): void {
    const old = this.entries.get(key);
    if (old === undefined) return;
    this.entries.delete(key);
    this.bytes -= costOf(key, old);
  }

  clear(): void {
    this.entries.clear();
    this.bytes = 0;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Memory the entries are taken to cost. */
  get cost(): number {
    return this.bytes;
  }

  private evict(): void {
    // Down to three quarters of either bound, so that eviction runs now and then, not at every store.
    const entries = (this.maxEntries * 3) >> 2;
    const bytes = (this.maxBytes * 3) >> 2;
    for (const [key, e] of this.entries) {
      if (this.entries.size <= entries && this.bytes <= bytes) break;
      this.entries.delete(key);
      this.bytes -= costOf(key, e);
    }
  }
}

function costOf(key: string, e: CacheEntry): number {
  if (e.raw === ABSENT) return OVERHEAD + key.length;
  return OVERHEAD + key.length + e.raw.length * (e.decoded ? 1 + DECODED_FACTOR : 1);
}

/** Freezes a decoded record and everything in it (byte strings aside: a view cannot be frozen). */
export function deepFreeze<T>(v: T): T {
  if (v === null || typeof v !== "object" || ArrayBuffer.isView(v) || Object.isFrozen(v)) return v;
  Object.freeze(v);
  for (const x of Object.values(v as object)) deepFreeze(x);
  return v;
}
