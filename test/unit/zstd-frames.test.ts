// ZstdFrameScanner: the frames of a zstd stream walked as its bytes come, split anywhere; every
// frame's window checked (not only the first's), skippable frames passed over, corrupt and
// cut-short streams refused. Real streams come from zstd(1); hostile headers are made by hand.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { Decompress, decompress } from "fzstd";
import { ZSTD_MAX_WINDOW, ZstdFrameScanner, zstdWindowSize } from "../../src/diff/zstd-frames.js";
import { throwsClass } from "../helpers/errors.js";

const haveZstd = spawnSync("zstd", ["--version"]).status === 0;
const needsZstd = { skip: haveZstd ? false : "no zstd(1) here to make a fixture" };

/** zstd(1)'s frame of `input`. */
function zstd(input: Buffer, ...args: string[]): Buffer {
  const r = spawnSync("zstd", ["-c", "-q", ...args], { input, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr?.toString());
  return r.stdout;
}

/** Bytes that compress somewhat: compressed blocks, not only raw or RLE ones. */
function text(n: number, seed: number): Buffer {
  const words = ["layer", "frame", "block", "window", "zstd", "tar", "entry", "ck"];
  const rnd = random(seed);
  const parts: string[] = [];
  let len = 0;
  while (len < n) {
    const w = words[rnd(words.length)]! + (rnd(10) === 0 ? "\n" : " ");
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join("")).subarray(0, n);
}

/** A small deterministic generator: integers in [0, n). */
function random(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
}

/** fzstd's streaming decompression of `bytes` (as apply.ts uses it), output dropped. */
function fzstdStream(bytes: Buffer): void {
  const z = new Decompress(() => {});
  z.push(bytes);
  z.push(new Uint8Array(0), true);
}

/** A block header (RFC 8878 3.1.1.2.1): last-block bit, type, size; 3 bytes little-endian. */
function blockHeader(last: boolean, type: number, size: number): Buffer {
  const b = Buffer.alloc(3);
  b.writeUIntLE((size << 3) | (type << 1) | (last ? 1 : 0), 0, 3);
  return b;
}

/** A frame with window descriptor `wd` (no checksum, no dictionary) holding `data` as one raw block. */
function rawFrame(wd: number, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, wd]), blockHeader(true, 0, data.length), data]);
}

/** A skippable frame of magic 0x184D2A5`nibble` holding `data`. */
function skippable(nibble: number, data: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a50 + nibble, 0);
  h.writeUInt32LE(data.length, 4);
  return Buffer.concat([h, data]);
}

/** Feeds `bytes` in chunks of the sizes `size` gives, then ends the stream. */
function scan(bytes: Buffer, size: () => number = () => bytes.length): void {
  const s = new ZstdFrameScanner();
  for (let i = 0; i < bytes.length; ) {
    const n = Math.max(1, size());
    s.push(bytes.subarray(i, i + n));
    i += n;
  }
  s.end();
}

/** Every way of feeding `bytes` the tests use: whole, byte by byte, random chunk sizes. */
function scanEveryWay(bytes: Buffer): void {
  scan(bytes);
  scan(bytes, () => 1);
  for (const seed of [1, 2, 3]) {
    const rnd = random(seed);
    scan(bytes, () => 1 + rnd(40));
  }
  const rnd = random(7);
  scan(bytes, () => 1 + rnd(300_000));
}

/** The scanner refuses `bytes` (at a push or at the end) InvalidArgument, matching `re`. */
function refused(bytes: Buffer, re: RegExp, size?: () => number): void {
  throwsClass(() => scan(bytes, size), "InvalidArgument", re);
}

const GiB = 2 ** 30;
/** Window descriptor: exponent 20 (2^(10+20)), mantissa 0. */
const WD_1GIB = 20 << 3;
/** Window descriptor: exponent 19, the 512 MiB limit exactly. */
const WD_512MIB = 19 << 3;

describe("ZstdFrameScanner", () => {
  test("one frame within the limit passes, whole or split anywhere; the limit itself is allowed", { ...needsZstd }, () => {
    const input = text(10_000, 1);
    const frame = zstd(input);
    assert.ok((zstdWindowSize(frame) ?? Infinity) <= ZSTD_MAX_WINDOW);
    scanEveryWay(frame);
    scanEveryWay(rawFrame(WD_512MIB, Buffer.from("at the limit")));
    assert.equal(zstdWindowSize(rawFrame(WD_512MIB, Buffer.alloc(0))), ZSTD_MAX_WINDOW);
  });

  test("real multi-frame streams (zstd(1) outputs concatenated, with and without checksums, several blocks) pass byte by byte and in random chunks", { ...needsZstd }, () => {
    const a = text(400_000, 2); // more than one 128 KiB block
    const b = text(5_000, 3);
    const c = Buffer.alloc(200_000, 0x61); // RLE blocks
    const stream = Buffer.concat([zstd(a, "-3"), zstd(b, "--no-check", "-19"), zstd(c, "--check"), zstd(Buffer.alloc(0))]);
    // fzstd reads it as one stream of several frames, as the scanner does.
    assert.deepEqual(Buffer.from(decompress(stream)), Buffer.concat([a, b, c]));
    scanEveryWay(stream);
    // Incompressible data: zstd(1) stores it in raw blocks.
    const noise = Buffer.alloc(300_000);
    const rnd = random(9);
    for (let i = 0; i < noise.length; i++) noise[i] = rnd(256);
    scanEveryWay(Buffer.concat([zstd(noise), zstd(b)]));
  });

  test("a later frame asking for a 1 GiB window is refused at its header, naming the frame, the window and the limit", { ...needsZstd }, () => {
    const first = zstd(text(3_000, 4));
    const stream = Buffer.concat([first, rawFrame(WD_1GIB, Buffer.from("late"))]);
    assert.equal(zstdWindowSize(stream.subarray(first.length)), GiB);
    const re = new RegExp(`zstd layer: frame 2 \\(at byte ${first.length}\\) asks for a ${GiB} byte window, more than the ${ZSTD_MAX_WINDOW} bytes allowed`);
    refused(stream, re);
    // Byte by byte: the push of its window descriptor is the one refused, before its blocks.
    const s = new ZstdFrameScanner();
    for (let i = 0; i < first.length + 5; i++) s.push(stream.subarray(i, i + 1));
    throwsClass(() => s.push(stream.subarray(first.length + 5, first.length + 6)), "InvalidArgument", re);
    for (const seed of [5, 6]) {
      const rnd = random(seed);
      refused(stream, re, () => 1 + rnd(50));
    }
    // Behind skippable frames too.
    refused(Buffer.concat([first, skippable(0, Buffer.alloc(10)), rawFrame(WD_1GIB, Buffer.alloc(0))]), /frame 3 .* asks for a 1073741824 byte window/);
  });

  test("a single-segment frame whose content size is over the limit is refused: its window is its content size", () => {
    // Descriptor 0xA0: single segment, 4-byte content size.
    const fcs4 = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0, 0, 0, 0x40]);
    refused(Buffer.concat([fcs4, blockHeader(true, 1, GiB >> 10), Buffer.from("x")]), /frame 1 \(at byte 0\) asks for a 1073741824 byte window/);
    // Descriptor 0xE1: single segment, 8-byte content size, a 1-byte dictionary id.
    const fcs8 = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xe1, 7]), Buffer.from([0, 0, 0, 0, 0, 1, 0, 0])]);
    refused(Buffer.concat([rawFrame(0, Buffer.from("ok")), fcs8]), /frame 2 \(at byte 11\) asks for a 1099511627776 byte window/, () => 1);
    // Within the limit, split anywhere.
    const small = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x20, 5]), blockHeader(true, 0, 5), Buffer.from("hello")]);
    assert.equal(Buffer.from(decompress(small)).toString(), "hello");
    scanEveryWay(small);
  });

  test("skippable frames (any of the 16 magics, empty or not) before, between and after frames are passed over unread", { ...needsZstd }, () => {
    const a = text(2_000, 5);
    const b = text(70_000, 6);
    // A skippable frame's data is not parsed: here it looks like a frame asking for 1 GiB.
    const stream = Buffer.concat([
      skippable(0, Buffer.alloc(0)),
      zstd(a),
      skippable(0xf, rawFrame(WD_1GIB, Buffer.from("skipped"))),
      skippable(7, Buffer.alloc(100_000, 0xff)),
      zstd(b),
      skippable(3, Buffer.from("trailer")),
    ]);
    assert.deepEqual(Buffer.from(decompress(stream)), Buffer.concat([a, b]));
    scanEveryWay(stream);
  });

  test("a reserved block type, a reserved descriptor bit, or bytes that are not a frame are InvalidArgument", () => {
    const ok = rawFrame(0, Buffer.from("fine"));
    refused(Buffer.concat([ok, Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0]), blockHeader(true, 3, 0)]), /malformed: frame 2 \(at byte 13\): block at byte 19 has the reserved block type/);
    refused(Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0]), blockHeader(false, 0, 1), Buffer.from("a"), blockHeader(true, 3, 1)]), /reserved block type/, () => 1);
    refused(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x08, 0, 1, 0, 0]), /malformed: frame 1 .*reserved bit/);
    refused(Buffer.concat([ok, Buffer.from("garbage")]), /malformed: frame 2 \(at byte 13\): not a zstd frame \(magic 0x62726167\)/);
  });

  test("a stream cut anywhere inside a frame fails at end(), as fzstd's unexpected EOF; cut between frames it passes", { ...needsZstd }, () => {
    const first = zstd(text(300, 7)); // with a checksum
    const second = rawFrame(0, Buffer.from("second"));
    const third = skippable(1, Buffer.from("skip"));
    const stream = Buffer.concat([first, second, third]);
    const boundaries = new Set([0, first.length, first.length + second.length, stream.length]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const bytes = stream.subarray(0, cut);
      if (boundaries.has(cut)) {
        scan(bytes, () => 1);
        continue;
      }
      const s = new ZstdFrameScanner();
      s.push(bytes);
      throwsClass(() => s.end(), "InvalidArgument", /malformed: frame \d \(at byte \d+\): unexpected EOF inside the frame/);
      // fzstd, which the scanner's end() comes before, says the same of the cut.
      assert.throws(() => fzstdStream(bytes), /unexpected EOF/, `cut at ${cut}`);
    }
  });
});
