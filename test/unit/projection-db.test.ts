// The projection database (src/projections/db.ts) over real RocksDB: atomic batches with the
// applied sequence, and no resource left behind per batch.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProjectionDb } from "../../src/projections/db.js";

/** abstract-level's set of open resources (iterators, chained batches) of a database. */
function openResources(db: ProjectionDb): Set<unknown> {
  const level = (db as unknown as { db: object }).db;
  const sym = Object.getOwnPropertySymbols(level).find((s) => s.description === "resources");
  assert.ok(sym, "abstract-level keeps its open resources under Symbol(resources)");
  return (level as Record<symbol, Set<unknown>>)[sym];
}

test("apply writes changes and the applied sequence together, and leaves no batch open", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-projdb-"));
  try {
    let db = await ProjectionDb.open(join(dir, "meta"));
    for (let seq = 1; seq <= 500; seq++) {
      await db.apply([[`k\u0000${seq}`, { seq }], [`k\u0000${seq - 1}`, undefined]], seq);
    }
    // Before the fix, every apply left its chained batch (and the bytes it held) attached.
    assert.equal(openResources(db).size, 0);
    await db.setLogIdentity({ stream: "S", created: "now" });
    assert.equal(openResources(db).size, 0);
    assert.equal(db.appliedSeq, 500);
    assert.deepEqual(db.getSync("k\u0000500"), { seq: 500 });
    assert.equal(db.getSync("k\u0000499"), undefined, "deletes apply in the same batch");
    await db.close();
    db = await ProjectionDb.open(join(dir, "meta"));
    assert.equal(db.appliedSeq, 500, "the checkpoint was written with the changes");
    assert.deepEqual((await db.logIdentity())?.stream, "S");
    await db.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("generation: steady while nothing under the prefix changes, new after a change under it, never reused after eviction", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-projdb-"));
  try {
    const db = await ProjectionDb.open(join(dir, "meta"));
    const a = db.generation("img\u0000a\u0000");
    const b = db.generation("img\u0000b\u0000");
    assert.equal(db.generation("img\u0000a\u0000"), a, "no write: the same generation");
    await db.apply([["img\u0000b\u0000x", { n: 1 }]], 1);
    assert.equal(db.generation("img\u0000a\u0000"), a, "a write under another prefix leaves it");
    const b2 = db.generation("img\u0000b\u0000");
    assert.notEqual(b2, b, "a write under the prefix moves it");
    await db.apply([["img\u0000b\u0000x", undefined]], 2);
    assert.notEqual(db.generation("img\u0000b\u0000"), b2, "a delete moves it too");
    // Watching more prefixes than the bound drops the earlier ones; watched again, a prefix
    // gets a number no earlier call returned.
    const seen = new Set([a, b, b2]);
    for (let i = 0; i < 200; i++) seen.add(db.generation(`p${i}\u0000`));
    const again = db.generation("img\u0000a\u0000");
    assert.ok(!seen.has(again), "an evicted prefix never comes back with an old number");
    await db.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
