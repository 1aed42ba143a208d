// ck-replay diff: which records are the user's, what changed between two projections' records,
// and the key order the side-by-side walk relies on (RocksDB's, not JavaScript's).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { changedFields, diffRecords, entryOf, formatDiff, jsonBytes } from "../../tools/replay/diff.js";
import { ProjectionDb, compareKeys, encodeValue, META_PREFIX } from "../../src/projections/db.js";
import { keys } from "../../src/projections/views.js";

test("entryOf names the user's records and leaves bookkeeping and internal indexes out", () => {
  assert.deepEqual(entryOf(keys.namespace("a")), { kind: "namespace", namespace: "a", name: "a" });
  assert.deepEqual(entryOf(keys.image("a", "reg.local/x:1")), { kind: "image", namespace: "a", name: "reg.local/x:1" });
  assert.deepEqual(entryOf(keys.container("a", "c1")), { kind: "container", namespace: "a", name: "c1" });
  assert.deepEqual(entryOf(keys.blob("a", "sha256:00")), { kind: "content", namespace: "a", name: "sha256:00" });
  assert.deepEqual(entryOf(keys.lease("a", "l")), { kind: "lease", namespace: "a", name: "l" });
  assert.deepEqual(entryOf(keys.leaseResource("a", "l", { type: "content", id: "sha256:00" })), { kind: "lease resource", namespace: "a", name: "l/content/sha256:00" });
  assert.deepEqual(entryOf(keys.snapshot("a", "overlayfs", "k")), { kind: "snapshot", namespace: "a", name: "overlayfs/k" });
  assert.deepEqual(entryOf(keys.task("a", "c1")), { kind: "task", namespace: "a", name: "c1" });
  assert.equal(entryOf(`${META_PREFIX}applied`), undefined);
  assert.equal(entryOf(keys.snapshotId("overlayfs", "1")), undefined);
  assert.equal(entryOf(keys.snapshotChain("overlayfs", "c", "1")), undefined);
});

test("jsonBytes: bytes in a record (an Any's value) as base64 in --json output", () => {
  const v = { spec: { type_url: "t", value: Buffer.from("{}") }, labels: { a: "1" } };
  assert.equal(JSON.stringify(v, jsonBytes), '{"spec":{"type_url":"t","value":{"base64":"e30="}},"labels":{"a":"1"}}');
});

test("changedFields: the top-level fields whose values differ, added and removed ones included", () => {
  assert.deepEqual(changedFields({ a: 1, b: { x: 1 }, c: 3 }, { a: 1, b: { x: 2 }, d: 4 }), ["b", "c", "d"]);
  assert.deepEqual(changedFields({ a: [1, 2] }, { a: [1, 2] }), []);
});

const rec = (v: unknown) => encodeValue(v);
function* records(entries: [string, unknown][]): Generator<[string, Buffer]> {
  for (const [k, v] of [...entries].sort(([a], [b]) => compareKeys(a, b))) yield [k, rec(v)];
}

test("diffRecords: added, removed and changed records in key order; unchanged and internal ones not shown; one namespace", () => {
  const before: [string, unknown][] = [
    [keys.image("a", "x"), { name: "x", labels: {} }],
    [keys.image("a", "y"), { name: "y", labels: { v: "1" } }],
    [keys.image("b", "z"), { name: "z", labels: {} }],
    [keys.snapshotId("overlayfs", "1"), { owners: [] }],
    [`${META_PREFIX}applied`, 2],
  ];
  const after: [string, unknown][] = [
    [keys.image("a", "y"), { name: "y", labels: { v: "2" } }],
    [keys.image("b", "z"), { name: "z", labels: {} }],
    [keys.container("b", "c"), { id: "c" }],
    [keys.snapshotId("overlayfs", "2"), { owners: [] }],
    [`${META_PREFIX}applied`, 5],
  ];
  const lines = [...diffRecords(records(before), records(after))];
  assert.deepEqual(
    lines.map((l) => [l.op, l.kind, l.namespace, l.name, l.fields]),
    [
      ["+", "container", "b", "c", undefined],
      ["-", "image", "a", "x", undefined],
      ["~", "image", "a", "y", ["labels"]],
    ],
  );
  assert.deepEqual(lines[2]!.before, { name: "y", labels: { v: "1" } });
  assert.deepEqual(lines[2]!.after, { name: "y", labels: { v: "2" } });
  assert.deepEqual([...diffRecords(records(before), records(after), "b")].map((l) => l.name), ["c"]);
  assert.deepEqual(formatDiff(lines), ["+ container  b  c", "- image      a  x", "~ image      a  y  (labels)"]);
});

test("compareKeys is RocksDB's order (by code point), which JavaScript's < is not past U+FFFF", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-keys-"));
  const db = await ProjectionDb.open(join(dir, "p"));
  try {
    const ks = ["img\u0000a\u0000x\uffff", "img\u0000a\u0000x\u{1F600}", "img\u0000a\u0000x\u00e9", "img\u0000a\u0000x"];
    await db.loadRaw(ks.map((k) => [k, rec(1)]));
    const stored = [...db.scanRaw("img")].map(([k]) => k);
    assert.deepEqual([...ks].sort(compareKeys), stored);
    assert.notDeepEqual([...ks].sort(), stored, "JavaScript's own order differs here (else this test shows nothing)");
    // Side by side with a projection lacking one of them, the walk stays in step: one removal,
    // not the run of spurious additions and removals a walk in JavaScript's order gives.
    const all = [...db.scanRaw("")];
    const fewer = all.filter(([k]) => k !== "img\u0000a\u0000x\uffff");
    assert.deepEqual(
      [...diffRecords(all[Symbol.iterator](), fewer[Symbol.iterator]())].map((l) => [l.op, l.name]),
      [["-", "x\uffff"]],
    );
  } finally {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  }
});
