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

/** tar-stream's decodePax (stops at the first malformed record, as it does), byte-valued xattrs. */
export function decodePax(buf: Uint8Array): Record<string, string> {
  const result: Record<string, string> = {};
  let b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  while (b.length > 0) {
    const space = b.indexOf(0x20);
    if (space <= 0) return result;
    const len = parseInt(b.subarray(0, space).toString("latin1"), 10);
    if (!len || len > b.length || len <= space + 1) return result;
    const rec = b.subarray(space + 1, len - 1); // without the trailing newline
    const eq = rec.indexOf(0x3d);
    if (eq < 0) return result;
    const key = rec.subarray(0, eq).toString("utf8");
    result[key] = rec.subarray(eq + 1).toString(isByteValued(key) ? "latin1" : "utf8");
    b = b.subarray(len);
  }
  return result;
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
