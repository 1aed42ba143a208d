// Sparse files in a layer, read as Go's archive/tar (containerd's tar reader) reads them. GNU
// tar stores a sparse file as its data fragments only, concatenated, with a map saying where
// each goes; the file is `realSize` bytes, holes everywhere else. The map comes in four forms:
// - PAX 0.0: GNU.sparse.offset / GNU.sparse.numbytes records, repeated (./pax.ts's decodePax
//   joins them into GNU.sparse.map, as Go's reader does), with GNU.sparse.numblocks;
// - PAX 0.1: GNU.sparse.map "offset,size,offset,size,...", with GNU.sparse.numblocks;
// - PAX 1.0 (GNU.sparse.major=1, GNU.sparse.minor=0): the map opens the entry's data, decimal
//   numbers each ended by a newline (the count, then offset and size pairs), padded to whole
//   512-byte blocks; the fragments follow;
// - old GNU (typeflag 'S'): up to four entries in the header, more in 512-byte extension
//   blocks between the header and the data (./pax.ts counts them into the entry's data).
// A PAX one's real name is GNU.sparse.name where given (0.1 and 1.0 put a made-up
// `GNUSparseFile.N/name` in the tar name), its real size GNU.sparse.size or, failing that,
// GNU.sparse.realsize. Nothing here touches the file system: apply.ts writes what this returns.
import { invalidArgument } from "../errdefs/errdefs.js";

/** One run of data: `size` bytes of the entry's data, at `offset` in the file. */
export interface Fragment {
  offset: number;
  size: number;
}

/** A sparse file as it is written: its real name and size, and its data's fragments in order. */
export interface SparseFile {
  name: string;
  realSize: number;
  fragments: Fragment[];
}

/** What an entry's header says of it as a sparse file (apply.ts reads the rest of its map with SparseMapReader). */
export interface SparseHeader extends SparseFile {
  /**
   * Where the rest of the map is: at the start of the entry's data ("pax-1.0"), in extension
   * blocks there ("gnu-extension": `fragments` are the header's), or nowhere: the header gave
   * it all ("none").
   */
  rest: "none" | "pax-1.0" | "gnu-extension";
}

export const SPARSE_PAX_PREFIX = "GNU.sparse.";

/**
 * The longest map read from an entry's data (PAX 1.0, old GNU extension blocks), ~2.7 million
 * fragments. Go's reader has no limit but the entry's size; the map is held in memory here.
 */
export const MAX_SPARSE_MAP = 64 << 20;

const BLOCK = 512;
/** Old GNU header: four entries of 12 + 12 bytes from 386, the "extended" flag at 482, the real size at 483. */
const GNU_ENTRIES_AT = 386;
const GNU_HEADER_ENTRIES = 4;
const GNU_EXTENDED_AT = 482;
const GNU_REAL_SIZE_AT = 483;
/** An extension block: 21 entries from 0, its own "extended" flag at 504. */
const EXTENSION_ENTRIES = 21;
export const EXTENSION_EXTENDED_AT = 504;
const GNU_MAGIC = "ustar  \0";

const fail = (entry: string, why: string) => invalidArgument(`entry ${JSON.stringify(entry)}: sparse file: ${why}`);

/** Whether `block`, an old GNU sparse header (or one of its extension blocks), has an extension block after it. */
export function gnuSparseExtended(block: Uint8Array, isHeader: boolean): boolean {
  if (isHeader) return Buffer.from(block.buffer, block.byteOffset, block.byteLength).toString("latin1", 257, 265) === GNU_MAGIC && block[GNU_EXTENDED_AT] !== 0;
  return block[EXTENSION_EXTENDED_AT] !== 0;
}

/**
 * A decimal number as Go's strconv.ParseInt(s, 10, 64) takes it (a sign allowed, nothing
 * else), within what a JavaScript number holds exactly.
 */
function decimal(entry: string, what: string, s: string): number {
  if (!/^[+-]?[0-9]+$/.test(s)) throw fail(entry, `${what} ${JSON.stringify(s)} is not a decimal number`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw fail(entry, `${what} ${s} is out of range`);
  return n;
}

/**
 * An old GNU header's number as Go's parseNumeric reads it: base-256 when the first byte's
 * high bit is set, else octal between spaces and NULs (up to the first NUL left).
 */
function gnuNumber(entry: string, what: string, field: Uint8Array): number {
  if ((field[0]! & 0x80) !== 0) {
    if ((field[0]! & 0x40) !== 0) throw fail(entry, `${what} is negative`);
    let n = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) {
      n = n * 256 + field[i]!;
      if (n > Number.MAX_SAFE_INTEGER) throw fail(entry, `${what} is out of range`);
    }
    return n;
  }
  let s = Buffer.from(field.buffer, field.byteOffset, field.byteLength).toString("latin1").replace(/^[ \0]+|[ \0]+$/g, "");
  const nul = s.indexOf("\0");
  if (nul >= 0) s = s.slice(0, nul);
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw fail(entry, `${what} ${JSON.stringify(s)} is not an octal number`);
  const n = parseInt(s, 8);
  if (!Number.isSafeInteger(n)) throw fail(entry, `${what} ${s} is out of range`);
  return n;
}

/**
 * The entries of an old GNU sparse header or extension block: `count` pairs of 12-byte numbers
 * from `at`. An entry whose offset starts with a NUL ends them (as in GNU and Go).
 */
function gnuEntries(entry: string, block: Uint8Array, at: number, count: number): Fragment[] {
  const out: Fragment[] = [];
  for (let i = 0; i < count; i++) {
    const e = at + i * 24;
    if (block[e] === 0) break;
    out.push({ offset: gnuNumber(entry, "fragment offset", block.subarray(e, e + 12)), size: gnuNumber(entry, "fragment size", block.subarray(e + 12, e + 24)) });
  }
  return out;
}

/** The sparse map of a PAX 0.0 or 0.1 entry: GNU.sparse.map, as many pairs as GNU.sparse.numblocks says. */
function paxMap(entry: string, pax: Record<string, string>): Fragment[] {
  const count = pax["GNU.sparse.numblocks"];
  if (count === undefined) throw fail(entry, "no GNU.sparse.numblocks record");
  const n = decimal(entry, "GNU.sparse.numblocks", count);
  if (n < 0) throw fail(entry, `GNU.sparse.numblocks ${n} is negative`);
  const map = pax["GNU.sparse.map"] ?? "";
  const numbers = map === "" ? [] : map.split(",");
  if (numbers.length !== 2 * n) throw fail(entry, `GNU.sparse.map has ${numbers.length} numbers where GNU.sparse.numblocks=${n} needs ${2 * n}`);
  const out: Fragment[] = [];
  for (let i = 0; i < numbers.length; i += 2) {
    out.push({ offset: decimal(entry, "fragment offset", numbers[i]!), size: decimal(entry, "fragment size", numbers[i + 1]!) });
  }
  return out;
}

/**
 * What the header of entry `name` (tar-stream's name: PAX path or GNU long name applied) says
 * of it as a sparse file; undefined if it is none. `pax` are its PAX records, `gnuHeader` its
 * raw header block when its typeflag is 'S' (./pax.ts keeps it). As Go's reader: an 'S'
 * header is read for its own map (PAX sparse records are then ignored), and must be GNU's;
 * PAX records make a sparse file with version 0.0, 0.1 or 1.0, or without a version but with
 * a map. GNU.sparse.* records that are neither (another version, no map), which Go reads as a
 * plain file of the encoded data, are refused here rather than written as that.
 */
export function sparseHeader(name: string, pax: Record<string, string> | null | undefined, gnuHeader?: Uint8Array): SparseHeader | undefined {
  if (gnuHeader) {
    if (Buffer.from(gnuHeader.buffer, gnuHeader.byteOffset, gnuHeader.byteLength).toString("latin1", 257, 265) !== GNU_MAGIC) {
      throw fail(name, "a GNU sparse ('S') header not in GNU format");
    }
    return {
      name,
      realSize: gnuNumber(name, "real size", gnuHeader.subarray(GNU_REAL_SIZE_AT, GNU_REAL_SIZE_AT + 12)),
      fragments: gnuEntries(name, gnuHeader, GNU_ENTRIES_AT, GNU_HEADER_ENTRIES),
      rest: gnuHeader[GNU_EXTENDED_AT] !== 0 ? "gnu-extension" : "none",
    };
  }
  if (!pax || !Object.keys(pax).some((k) => k.startsWith(SPARSE_PAX_PREFIX))) return undefined;
  const major = pax["GNU.sparse.major"];
  const minor = pax["GNU.sparse.minor"];
  let version: "0.x" | "1.0";
  if (major === "1" && minor === "0") version = "1.0";
  else if (major === "0" && (minor === "0" || minor === "1")) version = "0.x";
  else if (major !== undefined || minor !== undefined) throw fail(name, `unknown GNU sparse format version ${major ?? ""}.${minor ?? ""}`);
  else if (pax["GNU.sparse.map"]) version = "0.x"; // 0.0 and 0.1 wrote no version
  else throw fail(name, "GNU.sparse records without a sparse map or a format version");
  const realName = pax["GNU.sparse.name"] || name;
  const size = pax["GNU.sparse.size"] ?? pax["GNU.sparse.realsize"];
  if (size === undefined) throw fail(realName, "no GNU.sparse.size or GNU.sparse.realsize record");
  const realSize = decimal(realName, "real size", size);
  if (version === "1.0") return { name: realName, realSize, fragments: [], rest: "pax-1.0" };
  return { name: realName, realSize, fragments: paxMap(realName, pax), rest: "none" };
}

/**
 * Checks a sparse map as Go's validateSparseEntries does (what BSD tar checks too), and that
 * the fragments take exactly the `dataSize` bytes of data the archive holds for them (Go's
 * reader fails at the end of such a file's data otherwise: data missing or left over).
 */
export function checkSparse(file: SparseFile, dataSize: number): void {
  const { name, realSize, fragments } = file;
  if (realSize < 0) throw fail(name, `real size ${realSize} is negative`);
  let end = 0;
  let total = 0;
  fragments.forEach((f, i) => {
    const what = `fragment ${i} (offset ${f.offset}, size ${f.size})`;
    if (f.offset < 0 || f.size < 0) throw fail(name, `${what}: negative`);
    if (f.offset + f.size > realSize) throw fail(name, `${what} ends past the real size ${realSize}`);
    if (f.offset < end) throw fail(name, `${what} overlaps the one before or is out of order`);
    end = f.offset + f.size;
    total += f.size;
  });
  if (total !== dataSize) throw fail(name, `its fragments add up to ${total} bytes, the archive holds ${dataSize} bytes of data for them`);
}

/**
 * Reads the rest of a sparse map from the start of the entry's data (PAX 1.0's map block, old
 * GNU's extension blocks), a chunk at a time as it arrives. push() answers the data after the
 * map once the map is complete (possibly empty, and then the data goes on in the next chunks),
 * undefined while more is needed; `used` is then what the map took of the data.
 */
export class SparseMapReader {
  readonly fragments: Fragment[];
  /** Bytes of the entry's data the map takes (whole blocks); known once complete. */
  used = 0;
  /** Bytes of data seen so far. */
  private seen = 0;
  private complete: boolean;
  /** PAX 1.0: the token being read, the number of entries once read, the numbers read since. */
  private token = "";
  private count: number | undefined;
  private numbers: number[] = [];
  /** Old GNU: the extension block being read. */
  private block: Buffer[] = [];
  private blockBytes = 0;

  constructor(private readonly head: SparseHeader) {
    this.fragments = [...head.fragments];
    this.complete = head.rest === "none";
  }

  /** Whether the map is known without any of the data. */
  get done(): boolean {
    return this.complete && this.used <= this.seen;
  }

  push(chunk: Buffer): Buffer | undefined {
    const start = this.seen;
    this.seen += chunk.length;
    if (!this.complete) {
      if (this.head.rest === "pax-1.0") this.readTokens(chunk, start);
      else this.readExtensions(chunk, start);
    }
    if (!this.complete) {
      if (this.seen > MAX_SPARSE_MAP) throw fail(this.head.name, `its sparse map is longer than ${MAX_SPARSE_MAP} bytes`);
      return undefined;
    }
    // The map's last block may go on into the next chunks.
    if (this.used > this.seen) return undefined;
    return chunk.subarray(Math.max(0, this.used - start));
  }

  /**
   * The file, checked, once the data has ended or the map is complete: `dataSize` is the
   * entry's whole data (the map included).
   */
  finish(dataSize: number): SparseFile {
    if (!this.complete || this.used > dataSize) throw fail(this.head.name, "its sparse map runs past the end of its data");
    const file = { name: this.head.name, realSize: this.head.realSize, fragments: this.fragments };
    checkSparse(file, dataSize - this.used);
    return file;
  }

  /**
   * PAX 1.0: newline-ended decimal tokens, the count then 2 x count numbers. As Go reads them,
   * the map takes whole blocks, up to the one holding the newline of its last token.
   */
  private readTokens(chunk: Buffer, start: number): void {
    let at = 0;
    while (at < chunk.length) {
      const nl = chunk.indexOf(0x0a, at);
      if (nl < 0) {
        this.token += chunk.toString("latin1", at);
        return;
      }
      const token = this.token + chunk.toString("latin1", at, nl);
      this.token = "";
      at = nl + 1;
      if (this.count === undefined) {
        this.count = decimal(this.head.name, "fragment count", token);
        if (this.count < 0) throw fail(this.head.name, `fragment count ${this.count} is negative`);
      } else {
        this.numbers.push(decimal(this.head.name, this.numbers.length % 2 === 0 ? "fragment offset" : "fragment size", token));
      }
      if (this.numbers.length === 2 * this.count) {
        for (let i = 0; i < this.numbers.length; i += 2) this.fragments.push({ offset: this.numbers[i]!, size: this.numbers[i + 1]! });
        this.numbers = [];
        this.used = Math.ceil((start + at) / BLOCK) * BLOCK;
        this.complete = true;
        return;
      }
    }
  }

  /** Old GNU: 512-byte extension blocks of 21 entries each, until one without the "extended" flag. */
  private readExtensions(chunk: Buffer, start: number): void {
    let at = 0;
    while (at < chunk.length) {
      const take = Math.min(BLOCK - this.blockBytes, chunk.length - at);
      this.block.push(chunk.subarray(at, at + take));
      this.blockBytes += take;
      at += take;
      if (this.blockBytes < BLOCK) return;
      const block = Buffer.concat(this.block);
      this.block = [];
      this.blockBytes = 0;
      this.fragments.push(...gnuEntries(this.head.name, block, 0, EXTENSION_ENTRIES));
      if (!gnuSparseExtended(block, false)) {
        this.used = start + at;
        this.complete = true;
        return;
      }
    }
  }
}
