// PAX records whose values are bytes, not text. tar-stream reads and writes every PAX record
// as UTF-8, which garbles binary xattr values (`SCHILY.xattr.security.capability` is a
// binary struct: a file capability would not survive). containerd (Go's archive/tar) keeps
// them as bytes. This replaces tar-stream's two PAX functions, for this process, with ones
// that carry `SCHILY.xattr.*` values as latin1 strings (one char per byte, any byte value),
// and every other record as UTF-8 as before. Callers convert with Buffer.from(v, "latin1").
import { createRequire } from "node:module";
import path from "node:path";

export const XATTR_PAX_PREFIX = "SCHILY.xattr.";

const isByteValued = (key: string) => key.startsWith(XATTR_PAX_PREFIX);

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
    result[key] = value;
    b = b.subarray(len);
  }
  return result;
}

/** Entry types that carry no data in Go's archive/tar, whatever their header's size says. */
const HEADER_ONLY = new Set(["link", "symlink", "character-device", "block-device", "fifo"]);

/** tar-stream's Extract internals that goTarReading hooks (tar-stream 3.x). */
interface ExtractInternals {
  _consumeHeader(): boolean;
  _decodeLongHeader(buf: Uint8Array): void;
  _final(cb: (err?: Error | null) => void): void;
  _continueWrite(err: Error | null): void;
  _header: { type?: string | null; size?: number } | null;
  _applyLongHeaders(): void;
  _locked: boolean;
  _buffer: { buffered: number; shift(n: number): Uint8Array | null };
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
 *   diff_id.
 */
export function goTarReading(extract: unknown): void {
  const x = extract as ExtractInternals;
  if (typeof x._consumeHeader !== "function" || typeof x._decodeLongHeader !== "function" || typeof x._final !== "function" || typeof x._continueWrite !== "function" || typeof x._applyLongHeaders !== "function" || !x._buffer) {
    throw new Error("tar-stream's Extract no longer has the internals goTarReading hooks: tar reading needs a look");
  }
  const consume = x._consumeHeader;
  const decodeLong = x._decodeLongHeader;
  const final = x._final;
  const applyLong = x._applyLongHeaders;
  x._applyLongHeaders = function (this: ExtractInternals) {
    applyLong.call(this);
    if (this._header && HEADER_ONLY.has(this._header.type ?? "")) this._header.size = 0;
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

/** Puts the two functions in place of tar-stream's (the module its extract and pack call). */
export function installBytePax(): void {
  if (installed) return;
  const require = createRequire(import.meta.url);
  const headers = require(path.join(path.dirname(require.resolve("tar-stream")), "headers.js")) as {
    encodePax: unknown;
    decodePax: unknown;
  };
  if (typeof headers.encodePax !== "function" || typeof headers.decodePax !== "function") {
    throw new Error("tar-stream's headers module no longer has encodePax/decodePax: xattr handling needs a look");
  }
  headers.encodePax = encodePax;
  headers.decodePax = decodePax;
  installed = true;
}

installBytePax();
