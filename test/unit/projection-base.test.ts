// Bases (the projected state at one sequence, kept beside the log): the framing of their
// records across chunk boundaries, and which base a rebuild starts from.
import { test } from "node:test";
import assert from "node:assert/strict";
import { frameRecords, RecordParser, chooseBase } from "../../src/projections/base.js";
import type { BaseMarker } from "../../src/eventstore/base-store.js";
import { PROJECTION_FORMAT } from "../../src/projections/db.js";

function records(n: number): [string, Buffer][] {
  const out: [string, Buffer][] = [];
  for (let i = 0; i < n; i++) out.push([`ns\u0000images\u0000näme-${i}`, Buffer.alloc((i * 37) % 300, i & 0xff)]);
  return out;
}

test("framed records come back whole whatever the chunk size, across chunk boundaries", () => {
  const recs = records(200);
  for (const size of [1, 3, 7, 64, 4096, 1 << 20]) {
    const chunks = [...frameRecords(recs, size)];
    assert.ok(chunks.slice(0, -1).every((c) => c.length === size), `every chunk but the last is ${size} bytes`);
    const p = new RecordParser();
    const back: [string, Buffer][] = [];
    for (const c of chunks) back.push(...p.push(c));
    p.end();
    assert.deepEqual(back, recs, `chunk size ${size}`);
  }
});

test("a value larger than a chunk, an empty value and no records at all", () => {
  const recs: [string, Buffer][] = [["a", Buffer.alloc(10_000, 7)], ["b", Buffer.alloc(0)]];
  const p = new RecordParser();
  const back = [...frameRecords(recs, 1000)].flatMap((c) => p.push(c));
  p.end();
  assert.deepEqual(back, recs);
  assert.deepEqual([...frameRecords([], 1000)], []);
});

test("a base cut short inside a record is refused", () => {
  const chunks = [...frameRecords(records(3), 1 << 20)];
  const p = new RecordParser();
  p.push(chunks[0]!.subarray(0, chunks[0]!.length - 1));
  assert.throws(() => p.end(), /ends inside a record \(\d+ bytes left over\)/);
});

const identity = { stream: "CK_EVENTS", created: "2026-12-01T00:00:00Z" };
function base(seq: number, over: Partial<BaseMarker> = {}): BaseMarker {
  return {
    id: `b${seq}`,
    seq,
    seqTime: new Date(Date.UTC(2026, 11, 1, 0, 0, seq)).toISOString(),
    ...identity,
    format: PROJECTION_FORMAT,
    records: 1,
    bytes: 1,
    chunks: 1,
    sha256: "x",
    taken: "2026-12-01T01:00:00Z",
    firstChunk: 1,
    ...over,
  };
}

test("chooseBase: the latest base of this log and format that the log's messages follow on from", () => {
  const bases = [base(100), base(500), base(900)];
  // History from 501 on: 500 and 900 qualify; the latest wins.
  assert.equal((chooseBase(bases, { firstSeq: 501, identity }) as { base: BaseMarker }).base.seq, 900);
  // A point in time between them: the latest not past it.
  assert.equal((chooseBase(bases, { firstSeq: 501, identity, untilSeq: 899 }) as { base: BaseMarker }).base.seq, 500);
  assert.equal((chooseBase(bases, { firstSeq: 501, identity, untilTime: new Date(Date.UTC(2026, 11, 1, 0, 0, 600)) }) as { base: BaseMarker }).base.seq, 500);
});

test("chooseBase says why no base will do", () => {
  const bases = [base(100), base(500)];
  // Before the cut: the history is gone and no base is that old.
  const tooEarly = chooseBase(bases, { firstSeq: 501, identity, untilSeq: 400 });
  assert.match((tooEarly as { error: string }).error, /history before sequence 501 was compacted away: the earliest state it can show is at sequence 500/);
  // A base the log's messages do not follow on from (100 < 500) cannot start a rebuild.
  const gap = chooseBase([base(100)], { firstSeq: 501, identity });
  assert.match((gap as { error: string }).error, /no base of this log covers it \(1 base stored\)/);
  // Another log's bases (same name, recreated) do not count.
  const other = chooseBase([base(900, { created: "2025-01-01T00:00:00Z" })], { firstSeq: 501, identity });
  assert.match((other as { error: string }).error, /no base of this log covers it/);
  // Another projection format cannot be loaded.
  const format = chooseBase([base(900, { format: PROJECTION_FORMAT + 1 })], { firstSeq: 501, identity });
  assert.match((format as { error: string }).error, new RegExp(`in projection format ${PROJECTION_FORMAT + 1} \\(a newer format: written by a later ck\\); this ck reads format ${PROJECTION_FORMAT}`));
});

test("records split at arbitrary places (empty chunks too) come back whole", () => {
  // A small deterministic generator: the same splits on every run.
  let state = 12345;
  const rand = (n: number) => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state % n;
  };
  for (let round = 0; round < 200; round++) {
    const recs: [string, Buffer][] = [];
    const n = rand(20);
    for (let i = 0; i < n; i++) recs.push([`k${round}-${i}-${"x".repeat(rand(40))}`, Buffer.alloc(rand(3) === 0 ? rand(5000) : rand(50), i)]);
    const whole = Buffer.concat([...frameRecords(recs, 1 << 20)]);
    const p = new RecordParser();
    const back: [string, Buffer][] = [];
    let at = 0;
    while (at < whole.length) {
      const len = rand(4) === 0 ? 0 : 1 + rand(rand(2) ? 7 : 3000);
      back.push(...p.push(whole.subarray(at, at + len)));
      at += len;
    }
    p.end();
    assert.deepEqual(back, recs, `round ${round}`);
  }
});

test("anchorSeq: the k-th newest base, the new one counted; none when there are fewer", async () => {
  const { anchorSeq } = await import("../../tools/replay/replay.js");
  assert.equal(anchorSeq([100, 500], 900, 1), 900);
  assert.equal(anchorSeq([100, 500], 900, 2), 500);
  assert.equal(anchorSeq([100, 500, 900], 900, 2), 500, "the new base stored already counts once");
  assert.equal(anchorSeq([100, 500], 900, 3), 100);
  assert.equal(anchorSeq([100, 500], 900, 4), undefined);
  assert.equal(anchorSeq([100, 1200], 900, 2), 100, "a base past the new one is not counted");
});
