// Decoded records remembered by key for hot List paths. An entry is trusted only while the
// bytes stored under its key are byte for byte the ones it was made from, so it needs no
// invalidation: the projector may change anything at any time and a List still sees exactly
// what the database holds. A caller may attach one derived value (a List service keeps the
// record's wire encoding there); it goes with the entry when the bytes change.
import { decodeValue } from "./db.js";

export interface MemoEntry {
  /** The stored bytes the entry was made from. */
  readonly raw: Buffer;
  /** The decoded record: shared, never to be mutated. */
  readonly record: unknown;
  /** What the caller derived from the record (for example its protobuf encoding). */
  derived?: Buffer;
}

/**
 * What an entry is taken to cost: its stored bytes, the decoded record and a derived encoding
 * of about the same size (a container's spec makes some records tens of kilobytes).
 */
const costOf = (raw: Buffer) => 4 * raw.length + 200;

export class RecordMemo {
  private entries = new Map<string, MemoEntry>();
  private bytes = 0;

  /**
   * At most `maxEntries` entries and about `maxBytes` of memory are kept; past either the memo
   * starts over (entries of deleted keys leave with it).
   */
  constructor(
    private readonly maxEntries = 20_000,
    private readonly maxBytes = 32 << 20,
  ) {}

  /** The entry for a key as stored now: reused when the bytes are unchanged, else decoded. */
  entry(key: string, raw: Buffer): MemoEntry {
    const known = this.entries.get(key);
    if (known && known.raw.equals(raw)) return known;
    const fresh: MemoEntry = { raw, record: decodeValue(raw) };
    if (known) this.bytes -= costOf(known.raw);
    if ((!known && this.entries.size >= this.maxEntries) || this.bytes + costOf(raw) > this.maxBytes) {
      this.entries = new Map();
      this.bytes = 0;
    }
    this.entries.set(key, fresh);
    this.bytes += costOf(raw);
    return fresh;
  }

  get size(): number {
    return this.entries.size;
  }
}
