// The List memo (src/projections/record-memo.ts): an entry is reused only while the stored
// bytes are unchanged; a change of bytes means a fresh decode and no stale derived value.
import { test } from "node:test";
import assert from "node:assert/strict";
import { RecordMemo } from "../../src/projections/record-memo.js";
import { encodeValue } from "../../src/projections/db.js";

test("same bytes: the same entry, derived value kept; changed bytes: decoded again, derived dropped", () => {
  const memo = new RecordMemo();
  const a = memo.entry("k", encodeValue({ name: "a", labels: { x: "1" } }));
  a.derived = Buffer.from("wire-a");
  const again = memo.entry("k", encodeValue({ name: "a", labels: { x: "1" } }));
  assert.equal(again, a, "equal bytes (a different Buffer) reuse the entry");
  assert.equal(again.derived?.toString(), "wire-a");
  const changed = memo.entry("k", encodeValue({ name: "a", labels: { x: "2" } }));
  assert.notEqual(changed, a);
  assert.deepEqual(changed.record, { name: "a", labels: { x: "2" } });
  assert.equal(changed.derived, undefined, "a derived value never outlives the bytes it came from");
});

test("bounded: past maxEntries the memo starts over instead of growing", () => {
  const memo = new RecordMemo(3);
  for (let i = 0; i < 3; i++) memo.entry(`k${i}`, encodeValue(i));
  assert.equal(memo.size, 3);
  memo.entry("k0", encodeValue(0)); // known key: no growth
  assert.equal(memo.size, 3);
  const e = memo.entry("k3", encodeValue(3));
  assert.equal(memo.size, 1);
  assert.equal(e.record, 3);
});

test("bounded by memory too: large records make it start over sooner", () => {
  const memo = new RecordMemo(1000, 64 << 10);
  const big = encodeValue({ spec: "x".repeat(10_000) });
  memo.entry("a", big);
  assert.equal(memo.size, 1);
  memo.entry("b", encodeValue({ spec: "y".repeat(10_000) }));
  assert.equal(memo.size, 1, "two 40 KiB entries do not fit in 64 KiB: the memo started over");
  memo.entry("c", encodeValue("small"));
  assert.equal(memo.size, 2);
});
