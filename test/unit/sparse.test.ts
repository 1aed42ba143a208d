// Sparse file maps (src/diff/sparse.ts), hand-written in each of GNU tar's forms: what they
// read as, and every map Go's archive/tar refuses refused (InvalidArgument naming the entry).
// The files themselves, from GNU tar's archives, are in diff-apply.test.ts.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { decodePax } from "../../src/diff/pax.js";
import { checkSparse, MAX_SPARSE_MAP, sparseHeader, SparseMapReader, type SparseHeader } from "../../src/diff/sparse.js";
import { invalid } from "../helpers/errors.js";

/** PAX 0.1 records for `map` (offset,size pairs). */
const pax01 = (map: number[], extra: Record<string, string> = {}) => ({
  "GNU.sparse.major": "0",
  "GNU.sparse.minor": "1",
  "GNU.sparse.size": "100",
  "GNU.sparse.numblocks": String(map.length / 2),
  "GNU.sparse.map": map.join(","),
  ...extra,
});

/** One PAX record, its length counting itself. */
const record = (key: string, value: string) => {
  const rec = ` ${key}=${value}\n`;
  let len = rec.length + 1;
  while (String(len).length + rec.length > len) len++;
  return `${len}${rec}`;
};

/** An old GNU sparse header block: `entries` (at most 4) in octal, the extended flag, the real size. */
function gnuHeader(entries: [string, string][], extended: boolean, realSize: string, magic = "ustar  \0"): Buffer {
  const b = Buffer.alloc(512);
  b.write("file", 0);
  b[156] = 0x53;
  b.write(magic, 257, "latin1");
  entries.forEach(([off, size], i) => {
    b.write(off, 386 + i * 24, "latin1");
    b.write(size, 398 + i * 24, "latin1");
  });
  b[482] = extended ? 1 : 0;
  b.write(realSize, 483, "latin1");
  return b;
}

/** An extension block of up to 21 entries. */
function extensionBlock(entries: [number, number][], extended: boolean): Buffer {
  const b = Buffer.alloc(512);
  entries.forEach(([off, size], i) => {
    b.write(off.toString(8).padStart(11, "0") + "\0", i * 24, "latin1");
    b.write(size.toString(8).padStart(11, "0") + "\0", i * 24 + 12, "latin1");
  });
  b[504] = extended ? 1 : 0;
  return b;
}

/** Pushes `data` through a reader in chunks of `step` bytes; the data after the map, and the reader. */
function readMap(head: SparseHeader, data: Buffer, step: number): { reader: SparseMapReader; after: Buffer } {
  const reader = new SparseMapReader(head);
  const after: Buffer[] = [];
  let complete = false;
  for (let i = 0; i < data.length; i += step) {
    const chunk = data.subarray(i, i + step);
    if (complete) {
      after.push(chunk);
      continue;
    }
    const rest = reader.push(chunk);
    if (rest !== undefined) {
      complete = true;
      after.push(rest);
    }
  }
  return { reader, after: Buffer.concat(after) };
}

describe("sparse maps from PAX records (0.0, 0.1)", () => {
  test("no GNU.sparse records: not a sparse file", () => {
    assert.equal(sparseHeader("f", null), undefined);
    assert.equal(sparseHeader("f", { mtime: "1", "SCHILY.xattr.user.a": "b" }), undefined);
  });

  test("0.1: the map, the real name (GNU.sparse.name), the real size (GNU.sparse.size before GNU.sparse.realsize)", () => {
    const h = sparseHeader("./GNUSparseFile.7/f", pax01([0, 10, 20, 5, 100, 0], { "GNU.sparse.name": "dir/f", "GNU.sparse.realsize": "50" }));
    assert.deepEqual(h, {
      name: "dir/f",
      realSize: 100,
      fragments: [{ offset: 0, size: 10 }, { offset: 20, size: 5 }, { offset: 100, size: 0 }],
      rest: "none",
    });
    // No version records (GNU tar's 0.0 and 0.1 write none): a map makes it one.
    const { "GNU.sparse.major": _, "GNU.sparse.minor": __, "GNU.sparse.size": ___, ...bare } = pax01([4, 4]);
    assert.deepEqual(sparseHeader("f", { ...bare, "GNU.sparse.realsize": "8" }), { name: "f", realSize: 8, fragments: [{ offset: 4, size: 4 }], rest: "none" });
    // An explicit version and no fragments: all hole.
    assert.deepEqual(sparseHeader("f", pax01([])), { name: "f", realSize: 100, fragments: [], rest: "none" });
  });

  test("0.0: repeated GNU.sparse.offset / GNU.sparse.numbytes records, joined in order as Go joins them", () => {
    const records = decodePax(Buffer.from(
      record("GNU.sparse.size", "8192") + record("GNU.sparse.numblocks", "2") +
      record("GNU.sparse.offset", "0") + record("GNU.sparse.numbytes", "512") +
      record("GNU.sparse.offset", "4096") + record("GNU.sparse.numbytes", "100"),
    ));
    assert.equal(records["GNU.sparse.map"], "0,512,4096,100");
    assert.equal(records["GNU.sparse.offset"], undefined);
    assert.deepEqual(sparseHeader("f", records)?.fragments, [{ offset: 0, size: 512 }, { offset: 4096, size: 100 }]);
    // Out of turn, or a comma in one: refused (Go's parsePAX).
    for (const bad of [
      record("GNU.sparse.numbytes", "1"),
      record("GNU.sparse.offset", "0") + record("GNU.sparse.offset", "1"),
      record("GNU.sparse.offset", "0,1") + record("GNU.sparse.numbytes", "1"),
    ]) {
      assert.throws(() => decodePax(Buffer.from(bad)), /invalid tar PAX record: GNU\.sparse\.(offset|numbytes) .* out of turn/);
    }
  });

  test("refused: numbers that are not decimal, a count that does not match, unknown versions, no map, no real size", () => {
    const cases: [Record<string, string>, RegExp][] = [
      [pax01([0, 10, 20, 5], { "GNU.sparse.numblocks": "3" }), /GNU\.sparse\.map has 4 numbers where GNU\.sparse\.numblocks=3 needs 6/],
      [pax01([0, 10], { "GNU.sparse.map": "0,0x10" }), /fragment size "0x10" is not a decimal number/],
      [pax01([0, 10], { "GNU.sparse.map": "0, 10" }), /fragment size " 10" is not a decimal number/],
      [pax01([0, 10], { "GNU.sparse.map": "0,99999999999999999999" }), /fragment size 99999999999999999999 is out of range/],
      [pax01([0, 10], { "GNU.sparse.numblocks": "-1" }), /GNU\.sparse\.numblocks -1 is negative/],
      [pax01([0, 10], { "GNU.sparse.numblocks": "one" }), /GNU\.sparse\.numblocks "one" is not a decimal number/],
      [pax01([0, 10], { "GNU.sparse.size": "1e3" }), /real size "1e3" is not a decimal number/],
      [{ ...pax01([0, 10]), "GNU.sparse.major": "2" }, /unknown GNU sparse format version 2\.1/],
      [{ "GNU.sparse.minor": "0", "GNU.sparse.realsize": "5" }, /unknown GNU sparse format version \.0/],
      [{ "GNU.sparse.name": "x", "GNU.sparse.size": "5" }, /GNU\.sparse records without a sparse map or a format version/],
      [{ "GNU.sparse.map": "0,1", "GNU.sparse.numblocks": "1" }, /no GNU\.sparse\.size or GNU\.sparse\.realsize record/],
      [{ "GNU.sparse.map": "0,1", "GNU.sparse.size": "1" }, /no GNU\.sparse\.numblocks record/],
    ];
    for (const [pax, re] of cases) invalid(() => sparseHeader("f", pax), new RegExp(`^entry "f": sparse file: ${re.source}`));
  });
});

describe("checking a map (Go's validateSparseEntries, and the data's size)", () => {
  const file = (fragments: [number, number][], realSize = 100) => ({ name: "dir/f", realSize, fragments: fragments.map(([offset, size]) => ({ offset, size })) });

  test("in order, adjacent, empty, ending at the real size: taken", () => {
    checkSparse(file([[0, 10], [10, 5], [50, 0], [90, 10], [100, 0]]), 25);
    checkSparse(file([]), 0);
    checkSparse(file([], 0), 0);
  });

  test("overlapping, out of order, negative, past the real size, data not matching: refused, naming the entry", () => {
    const cases: [ReturnType<typeof file>, number, RegExp][] = [
      [file([[0, 10], [5, 10]]), 20, /fragment 1 \(offset 5, size 10\) overlaps the one before or is out of order/],
      [file([[50, 10], [0, 10]]), 20, /fragment 1 \(offset 0, size 10\) overlaps the one before or is out of order/],
      [file([[-1, 10]]), 10, /fragment 0 \(offset -1, size 10\): negative/],
      [file([[0, -1]]), -1, /fragment 0 \(offset 0, size -1\): negative/],
      [file([[95, 10]]), 10, /fragment 0 \(offset 95, size 10\) ends past the real size 100/],
      [file([[100, 1]]), 1, /fragment 0 \(offset 100, size 1\) ends past the real size 100/],
      [file([], -5), 0, /real size -5 is negative/],
      [file([[0, 10], [20, 10]]), 21, /its fragments add up to 20 bytes, the archive holds 21 bytes of data for them/],
      [file([[0, 10]]), 9, /its fragments add up to 10 bytes, the archive holds 9 bytes of data for them/],
    ];
    for (const [f, dataSize, re] of cases) invalid(() => checkSparse(f, dataSize), new RegExp(`^entry "dir/f": sparse file: ${re.source}`));
  });
});

describe("PAX 1.0: the map at the start of the data", () => {
  const head = (realSize = 10_000): SparseHeader => {
    const h = sparseHeader("./GNUSparseFile.1/f", { "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "f", "GNU.sparse.realsize": String(realSize) });
    assert.ok(h);
    return h;
  };
  const mapBlocks = (text: string, blocks = 1) => {
    const b = Buffer.alloc(512 * blocks);
    b.write(text, "latin1");
    return b;
  };

  test("read in any chunks: the map takes whole blocks, the fragments follow", () => {
    assert.deepEqual(head(), { name: "f", realSize: 10_000, fragments: [], rest: "pax-1.0" });
    const fragments = Buffer.from("abcdefgh");
    const data = Buffer.concat([mapBlocks("2\n10\n3\n9000\n5\n"), fragments]);
    for (const step of [1, 7, 511, 512, 513, data.length]) {
      const { reader, after } = readMap(head(), data, step);
      assert.equal(reader.used, 512, `step ${step}`);
      assert.deepEqual(after, fragments, `step ${step}`);
      assert.deepEqual(reader.finish(data.length), { name: "f", realSize: 10_000, fragments: [{ offset: 10, size: 3 }, { offset: 9000, size: 5 }] });
    }
  });

  test("a map longer than a block takes the blocks up to its last newline; what follows it there is padding", () => {
    const pairs = Array.from({ length: 100 }, (_, i) => `${i * 100}\n1\n`).join("");
    const text = `100\n${pairs}`;
    assert.ok(text.length > 512 && text.length < 1024);
    const data = Buffer.concat([mapBlocks(text + "junk after the map", 2), Buffer.alloc(100, 1)]);
    const { reader, after } = readMap(head(), data, 100);
    assert.equal(reader.used, 1024);
    assert.equal(after.length, 100);
    assert.equal(reader.finish(data.length).fragments.length, 100);
  });

  test("no fragments (all hole); the last block of the map need not be in the same chunk as its newline", () => {
    const { reader, after } = readMap(head(), mapBlocks("0\n"), 2);
    assert.equal(after.length, 0);
    assert.deepEqual(reader.finish(512).fragments, []);
  });

  test("refused: tokens that are not decimal, a negative count, a map past the data, a map past MAX_SPARSE_MAP, fragments not matching the data", () => {
    const throwsOn = (text: string, re: RegExp) =>
      invalid(() => readMap(head(), mapBlocks(text), 512), new RegExp(`^entry "f": sparse file: ${re.source}`));
    throwsOn("x\n", /fragment count "x" is not a decimal number/);
    throwsOn("-1\n", /fragment count -1 is negative/);
    throwsOn("1\n0\n1 \n", /fragment size "1 " is not a decimal number/);
    throwsOn("1\n\0\n1\n", /fragment offset "\\u0000" is not a decimal number/);
    // The data ends before the map does, or inside its last block.
    const short = readMap(head(), Buffer.from("2\n0\n1\n"), 512);
    invalid(() => short.reader.finish(6), /^entry "f": sparse file: its sparse map runs past the end of its data/);
    const cut = readMap(head(), Buffer.from("1\n0\n1\nx"), 512);
    invalid(() => cut.reader.finish(7), /its sparse map runs past the end of its data/);
    // Digits without a newline go on no further than the limit.
    const reader = new SparseMapReader(head());
    const digits = Buffer.alloc(1 << 20, "1");
    invalid(() => {
      for (let i = 0; i <= MAX_SPARSE_MAP / digits.length; i++) reader.push(digits);
    }, /its sparse map is longer than/);
    // The map is fine, the data is not what it places.
    const { reader: r } = readMap(head(), Buffer.concat([mapBlocks("1\n0\n4\n"), Buffer.from("abc")]), 512);
    invalid(() => r.finish(515), /its fragments add up to 4 bytes, the archive holds 3 bytes of data for them/);
    const { reader: past } = readMap(head(10), Buffer.concat([mapBlocks("1\n8\n4\n"), Buffer.from("abcd")]), 512);
    invalid(() => past.finish(516), /fragment 0 \(offset 8, size 4\) ends past the real size 10/);
  });
});

describe("old GNU ('S'): the map in the header and its extension blocks", () => {
  test("the header's four entries, octal between spaces and NULs, base-256; the real size at 483", () => {
    const h = sparseHeader("f", null, gnuHeader([["00000000000\0", "00000001000\0"], ["   2000 ", "\0\0 10\0"], ["\0\0\0\0", "7"]], false, "\x80" + "\0".repeat(9) + "\x01\x00"));
    // An entry whose offset starts with a NUL ends the header's entries.
    assert.deepEqual(h, { name: "f", realSize: 256, fragments: [{ offset: 0, size: 512 }, { offset: 1024, size: 8 }], rest: "none" });
    // PAX sparse records on an 'S' entry are Go's to ignore: the header's map is the one.
    assert.deepEqual(sparseHeader("f", { "GNU.sparse.map": "junk" }, gnuHeader([], false, "10"))?.realSize, 8);
  });

  test("extension blocks of 21 entries, in any chunks, each saying whether another follows", () => {
    const head = sparseHeader("f", null, gnuHeader([["0", "1"], ["2", "1"], ["4", "1"], ["6", "1"]], true, "1000"));
    assert.equal(head?.rest, "gnu-extension");
    const first = Array.from({ length: 21 }, (_, i): [number, number] => [10 + i * 2, 1]);
    const data = Buffer.concat([extensionBlock(first, true), extensionBlock([[100, 3], [200, 0]], false), Buffer.from("x".repeat(28))]);
    for (const step of [1, 5, 504, 505, 512, 1000, data.length]) {
      const { reader, after } = readMap(head!, data, step);
      assert.equal(reader.used, 1024, `step ${step}`);
      assert.equal(after.toString(), "x".repeat(28), `step ${step}`);
      const file = reader.finish(data.length);
      assert.equal(file.fragments.length, 4 + 21 + 2);
      assert.deepEqual(file.fragments.at(-2), { offset: 100, size: 3 });
    }
  });

  test("refused: a header of another format (star's 'S'), numbers that are not octal, negative base-256, a bad map", () => {
    invalid(() => sparseHeader("f", null, gnuHeader([], false, "10", "ustar\x0000")), /^entry "f": sparse file: a GNU sparse \('S'\) header not in GNU format/);
    invalid(() => sparseHeader("f", null, gnuHeader([["0", "9"]], false, "10")), /fragment size "9" is not an octal number/);
    invalid(() => sparseHeader("f", null, gnuHeader([], false, "1 2")), /real size "1 2" is not an octal number/);
    invalid(() => sparseHeader("f", null, gnuHeader([], false, "\xff" + "\xff".repeat(11))), /real size is negative/);
    const head = sparseHeader("f", null, gnuHeader([["10", "4"], ["0", "4"]], false, "100"))!;
    invalid(() => new SparseMapReader(head).finish(8), /fragment 1 \(offset 0, size 4\) overlaps the one before or is out of order/);
  });
});
