// PAX records whose values are bytes, not text. tar-stream reads and writes every PAX record
// as UTF-8, which garbles binary xattr values (`SCHILY.xattr.security.capability` is a
// binary struct: a file capability would not survive). containerd (Go's archive/tar) keeps
// them as bytes. This replaces tar-stream's two PAX functions, for this process, with ones
// that carry `SCHILY.xattr.*` values as latin1 strings (one char per byte, any byte value),
// and every other record as UTF-8 as before. Callers convert with Buffer.from(v, "latin1").
// Its header decode is replaced too, to keep an old GNU sparse header's block (./sparse.ts
// reads its map), and goTarReading makes an extract read the rest as Go's reader does.
import { createRequire } from "node:module";
import path from "node:path";
import { EXTENSION_EXTENDED_AT, gnuSparseExtended } from "./sparse.js";

export const XATTR_PAX_PREFIX = "SCHILY.xattr.";

const isByteValued = (key: string) => key.startsWith(XATTR_PAX_PREFIX);

const SPARSE_OFFSET = "GNU.sparse.offset";
const SPARSE_NUMBYTES = "GNU.sparse.numbytes";

/** One `<len> <key>=<value>\n` record; `len` counts its own digits. */
function record(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, "utf8"), value, Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length > len) len++;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** tar-stream's encodePax, with byte-valued xattr records. */
export function encodePax(opts: { name?: string; linkname?: string; pax?: Record<string, string> | null }): Buffer {
  const out: Buffer[] = [];
  if (opts.name) out.push(record("path", Buffer.from(opts.name, "utf8")));
  if (opts.linkname) out.push(record("linkpath", Buffer.from(opts.linkname, "utf8")));
  for (const [key, value] of Object.entries(opts.pax ?? {})) {
    out.push(record(key, Buffer.from(value, isByteValued(key) ? "latin1" : "utf8")));
  }
  return Buffer.concat(out);
}

/**
 * tar-stream's decodePax with byte-valued xattrs, and as strict as Go's archive/tar (which
 * containerd reads layers with): a malformed record is an error, not the end of the records
 * (an entry would otherwise fall back to its ustar name where containerd refuses the layer).
 * NUL padding after the last record is allowed, as Go allows it.
 */
const PAX_TIME = /^[+-]?[0-9]+(\.[0-9]*)?$/;
const PAX_INTEGER = /^[+-]?[0-9]+$/;
const PAX_NUMBERS: Record<string, RegExp> = { mtime: PAX_TIME, atime: PAX_TIME, ctime: PAX_TIME, size: PAX_INTEGER, uid: PAX_INTEGER, gid: PAX_INTEGER };

export function decodePax(buf: Uint8Array): Record<string, string> {
  const result: Record<string, string> = {};
  let b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const bad = (why: string) => new Error(`invalid tar PAX record: ${why}`);
  // A PAX 0.0 sparse map: GNU.sparse.offset and GNU.sparse.numbytes records, repeated, in
  // turn. Go's reader joins them, in order, into GNU.sparse.map (./sparse.ts reads that), and
  // refuses them out of turn or holding a comma; a record of each would keep only the last.
  const sparseMap: string[] = [];
  while (b.length > 0) {
    if (b.every((x) => x === 0)) break;
    const space = b.indexOf(0x20);
    if (space <= 0 || !/^[0-9]+$/.test(b.subarray(0, space).toString("latin1"))) throw bad("no length");
    const len = parseInt(b.subarray(0, space).toString("latin1"), 10);
    if (!len || len > b.length || len <= space + 1) throw bad(`length ${len} out of range`);
    if (b[len - 1] !== 0x0a) throw bad("no newline at its end");
    const rec = b.subarray(space + 1, len - 1); // without the trailing newline
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw bad("no key=value");
    const key = rec.subarray(0, eq).toString("utf8");
    const value = rec.subarray(eq + 1).toString(isByteValued(key) ? "latin1" : "utf8");
    // Numbers as Go's tar reader parses them (strconv.ParseInt, parsePAXTime), so a layer
    // containerd refuses at its header is refused here too, not read as NaN later.
    const form = PAX_NUMBERS[key];
    if (form && !form.test(value)) throw bad(`${key} ${JSON.stringify(value)} is not a decimal ${key.endsWith("time") ? "time" : "number"}`);
    if (key === SPARSE_OFFSET || key === SPARSE_NUMBYTES) {
      if ((sparseMap.length % 2 === 0) !== (key === SPARSE_OFFSET) || value.includes(",")) throw bad(`${key} ${JSON.stringify(value)} out of turn (${SPARSE_OFFSET} and ${SPARSE_NUMBYTES} alternate, one number each)`);
      sparseMap.push(value);
    } else {
      result[key] = value;
    }
    b = b.subarray(len);
  }
  if (sparseMap.length > 0) result["GNU.sparse.map"] = sparseMap.join(",");
  return result;
}

const BLOCK = 512;

/** Entry types that carry no data in Go's archive/tar, whatever their header's size says. */
const HEADER_ONLY = new Set(["link", "symlink", "character-device", "block-device", "fifo"]);

/** tar-stream's Extract internals that goTarReading hooks (tar-stream 3.x). */
interface ExtractInternals {
  _consumeHeader(): boolean;
  _decodeLongHeader(buf: Uint8Array): void;
  _final(cb: (err?: Error | null) => void): void;
  _continueWrite(err: Error | null): void;
  _header: { type?: string | null; size?: number; gnuSparseHeader?: Buffer } | null;
  _applyLongHeaders(): void;
  _consumeStream(): boolean;
  _stream: { push(data: Uint8Array | null): boolean } | null;
  _missing: number;
  _locked: boolean;
  _buffer: { buffered: number; shift(n: number): Uint8Array | null; shiftFirst(n: number): Uint8Array | null };
}

/**
 * Makes a tar-stream extract read as Go's archive/tar does, where they differ:
 * - two zero blocks end the archive: whatever follows is not extracted (containerd drains it
 *   for the digest only; tar-stream would go on extracting entries hidden past the end), and
 *   a zero block followed by a header is an invalid archive;
 * - a global PAX header (`g`) is not merged into later entries (Go hands it to the caller,
 *   containerd ignores it), though it must still parse;
 * - links, symlinks, devices and fifos are header-only whatever size their header claims (Go's
 *   isHeaderOnlyType): tar-stream skipped that many bytes, so a layer could hide entries
 *   (a whiteout, say) from ck that containerd and every Go-based scanner apply, under the same
 *   diff_id;
 * - an old GNU sparse header ('S') with its "extended" flag set is followed by extension blocks
 *   of its sparse map that its size does not count (Go reads them with the header): tar-stream
 *   would read them as the data and the data's end as the next header. They are counted into
 *   the entry's data instead, one at a time as each one's flag is seen, so that the entry's
 *   data is the extension blocks, then the fragments (./sparse.ts reads it so).
 */
export function goTarReading(extract: unknown): void {
  const x = extract as ExtractInternals;
  if (typeof x._consumeHeader !== "function" || typeof x._decodeLongHeader !== "function" || typeof x._final !== "function" || typeof x._continueWrite !== "function" || typeof x._applyLongHeaders !== "function" || typeof x._consumeStream !== "function" || typeof x._buffer?.shiftFirst !== "function") {
    throw new Error("tar-stream's Extract no longer has the internals goTarReading hooks: tar reading needs a look");
  }
  const consume = x._consumeHeader;
  const decodeLong = x._decodeLongHeader;
  const final = x._final;
  const applyLong = x._applyLongHeaders;
  const consumeStream = x._consumeStream;
  /** The old GNU sparse entry whose extension blocks are being read, and the bytes to the next one's flag. */
  let extension: { header: NonNullable<ExtractInternals["_header"]>; untilFlag: number } | undefined;
  x._applyLongHeaders = function (this: ExtractInternals) {
    applyLong.call(this);
    if (this._header && HEADER_ONLY.has(this._header.type ?? "")) this._header.size = 0;
    const gnu = this._header?.gnuSparseHeader;
    if (this._header && gnu && gnuSparseExtended(gnu, true)) {
      this._header.size = (this._header.size ?? 0) + BLOCK;
      extension = { header: this._header, untilFlag: EXTENSION_EXTENDED_AT + 1 };
    }
  };
  // tar-stream's _consumeStream, taking an extension block's data no further than its flag
  // byte, so that the next block is counted in (or the count ends) before the entry's data
  // could be seen to end: `_missing` still holds the block's last bytes then.
  x._consumeStream = function (this: ExtractInternals) {
    const ext = extension;
    if (ext === undefined || this._header !== ext.header) {
      extension = undefined;
      return consumeStream.call(this);
    }
    const buf = this._buffer.shiftFirst(Math.min(this._missing, ext.untilFlag));
    if (buf === null) return false;
    this._missing -= buf.byteLength;
    ext.untilFlag -= buf.byteLength;
    if (ext.untilFlag === 0) {
      if (buf[buf.byteLength - 1] !== 0) {
        this._missing += BLOCK;
        ext.header.size = (ext.header.size ?? 0) + BLOCK;
        ext.untilFlag = BLOCK;
      } else {
        extension = undefined;
      }
    }
    return this._stream!.push(buf);
  };
  let zeroBlock = false;
  let ended = false;
  x._consumeHeader = function (this: ExtractInternals) {
    if (this._locked) return false;
    if (ended) {
      this._buffer.shift(this._buffer.buffered);
      return true;
    }
    const r = consume.call(this);
    if (this._header === null && r === true) {
      if (zeroBlock) ended = true;
      zeroBlock = true;
    } else if (this._header !== null && zeroBlock) {
      // (As tar-stream reports its own header errors: the write fails, the extract with it.)
      this._continueWrite(new Error("invalid tar archive: a header after a zero block (one zero block does not end an archive)"));
      return false;
    }
    return r;
  };
  x._decodeLongHeader = function (this: ExtractInternals, buf: Uint8Array) {
    if (this._header?.type === "pax-global-header") {
      decodePax(buf);
      return;
    }
    decodeLong.call(this, buf);
  };
  x._final = function (this: ExtractInternals, cb: (err?: Error | null) => void) {
    if (ended) return cb(null);
    final.call(this, cb);
  };
}

let installed = false;

type DecodeHeader = (buf: Uint8Array, filenameEncoding: string, allowUnknownFormat: boolean) => Record<string, unknown> | null;

/**
 * tar-stream's header decode, keeping the raw block of an old GNU sparse header (typeflag 'S',
 * which tar-stream reads as type null) as `gnuSparseHeader`: its sparse map is there, which
 * tar-stream does not read (./sparse.ts does).
 */
function keepingGnuSparseHeader(decode: DecodeHeader): DecodeHeader {
  return (buf, filenameEncoding, allowUnknownFormat) => {
    const h = decode(buf, filenameEncoding, allowUnknownFormat);
    // A copy: the block is a view of the layer's chunk.
    if (h && buf[156] === 0x53 /* 'S' */) h.gnuSparseHeader = Buffer.from(buf);
    return h;
  };
}

/**
 * Puts the two PAX functions in place of tar-stream's (the module its extract and pack call),
 * and its header decode by one that keeps an old GNU sparse header's block.
 */
export function installBytePax(): void {
  if (installed) return;
  const require = createRequire(import.meta.url);
  const headers = require(path.join(path.dirname(require.resolve("tar-stream")), "headers.js")) as {
    encodePax: unknown;
    decodePax: unknown;
    decode: unknown;
  };
  if (typeof headers.encodePax !== "function" || typeof headers.decodePax !== "function" || typeof headers.decode !== "function") {
    throw new Error("tar-stream's headers module no longer has encodePax/decodePax/decode: xattr and sparse file handling need a look");
  }
  headers.encodePax = encodePax;
  headers.decodePax = decodePax;
  headers.decode = keepingGnuSparseHeader(headers.decode as DecodeHeader);
  installed = true;
}

installBytePax();
