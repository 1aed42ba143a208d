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
