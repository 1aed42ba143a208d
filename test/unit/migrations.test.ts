// Bases across projection formats: the chain of migrations from a base's format to this ck's,
// one record at a time, and which bases a rebuild may start from with them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FIRST_BASE_FORMAT, MIGRATIONS, migrateRecord, migrationChain, type FormatMigration } from "../../src/projections/migrations.js";
import { chooseBase, frameRecords, loadBase } from "../../src/projections/base.js";
import type { BaseMarker, BaseStore } from "../../src/eventstore/base-store.js";
import { META_PREFIX, PROJECTION_FORMAT, encodeValue } from "../../src/projections/db.js";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

test("every projection format since bases were first taken comes with a migration from the one before", () => {
  // Fails when PROJECTION_FORMAT moves on without one: bases of the old format (the only way
  // to a compacted log's state) would strand every compacted log at the upgrade.
  for (let f = FIRST_BASE_FORMAT; f < PROJECTION_FORMAT; f++) assert.ok(MIGRATIONS.has(f), `no migration from format ${f} to ${f + 1}`);
  assert.ok(migrationChain(FIRST_BASE_FORMAT, PROJECTION_FORMAT), "a chain from the first base format to this one");
});

// Format 7 keeps images as { name, labels }; 8 adds a label to each; 9 moves images under a
// new key prefix and drops records of a retired kind.
const to8: FormatMigration = { record: (k, v) => (k.includes("\u0000images\u0000") ? [[k, { ...(v as object), labels: { ...(v as { labels: object }).labels, migrated: "8" } }]] : [[k, v]]) };
const to9: FormatMigration = {
  record: (k, v) => {
    if (k.includes("\u0000retired\u0000")) return [];
    return [[k.replace("\u0000images\u0000", "\u0000images2\u0000"), v]];
  },
};
const table = new Map([
  [7, to8],
  [8, to9],
]);

test("migrationChain: the migrations in order, none for the same format, undefined for a gap or a newer format", () => {
  assert.deepEqual(migrationChain(7, 9, table), [to8, to9]);
  assert.deepEqual(migrationChain(9, 9, table), []);
  assert.equal(migrationChain(6, 9, table), undefined);
  assert.equal(migrationChain(10, 9, table), undefined);
  assert.equal(migrationChain(7, 10, table), undefined);
  assert.equal(migrationChain(Number.NaN, 9, table), undefined);
});

test("migrateRecord: one record through the chain: changed, moved, dropped", () => {
  const chain = migrationChain(7, 9, table)!;
  assert.deepEqual(migrateRecord(chain, "ns\u0000images\u0000a", { name: "a", labels: { x: "1" } }), [["ns\u0000images2\u0000a", { name: "a", labels: { x: "1", migrated: "8" } }]]);
  assert.deepEqual(migrateRecord(chain, "ns\u0000retired\u0000b", { any: 1 }), []);
  assert.deepEqual(migrateRecord(chain, "ns\u0000containers\u0000c", { id: "c" }), [["ns\u0000containers\u0000c", { id: "c" }]]);
  // Split: one record may become several, each migrated on by the rest of the chain.
  const split: FormatMigration = { record: (k, v) => [[k + "/1", v], [k + "/2", v]] };
  assert.deepEqual(migrateRecord([split, to9], "ns\u0000images\u0000s", 1), [["ns\u0000images2\u0000s/1", 1], ["ns\u0000images2\u0000s/2", 1]]);
});

const identity = { stream: "CK_EVENTS", created: "2026-12-01T00:00:00Z" };
function base(seq: number, format: number, markerSeq = seq): BaseMarker {
  return { id: `b${seq}-${format}`, seq, seqTime: new Date(Date.UTC(2026, 11, 1, 0, 0, seq)).toISOString(), stream: identity.stream, created: identity.created, format, records: 1, bytes: 1, chunks: 1, sha256: "", taken: "", firstChunk: 1, markerSeq };
}

test("chooseBase with migrations: a base of an older format the chain leads from will do; the latest still wins", () => {
  // Only a base of format 7, and this ck reads 9: chosen, the loader migrates it.
  assert.equal((chooseBase([base(900, 7)], { firstSeq: 501, identity, format: 9, migrations: table }) as { base: BaseMarker }).base.id, "b900-7");
  // The latest wins, whatever its format (fewer messages to fold after it).
  assert.equal((chooseBase([base(500, 9), base(900, 8)], { firstSeq: 501, identity, format: 9, migrations: table }) as { base: BaseMarker }).base.id, "b900-8");
  // A format with no way here (a gap in the chain, or newer than this ck): passed over...
  assert.equal((chooseBase([base(500, 9), base(900, 6)], { firstSeq: 501, identity, format: 9, migrations: table }) as { base: BaseMarker }).base.id, "b500-9");
  // ...and when only such bases are left, the reason names them.
  const none = chooseBase([base(900, 6), base(800, 10)], { firstSeq: 501, identity, format: 9, migrations: table });
  assert.match((none as { error: string }).error, /its bases are in projection format 6, 10 \(a newer format: written by a later ck\); this ck reads format 9 and has no migration from them/);
});

test("chooseBase: of two bases at one sequence, the one in this format (nothing to migrate), whichever was written last", () => {
  const older = { ...base(900, 8), markerSeq: 20 };
  const current = { ...base(900, 9), markerSeq: 10 };
  assert.equal((chooseBase([current, older], { firstSeq: 501, identity, format: 9, migrations: table }) as { base: BaseMarker }).base.id, "b900-9");
  assert.equal((chooseBase([older, current], { firstSeq: 501, identity, format: 9, migrations: table }) as { base: BaseMarker }).base.id, "b900-9");
  // A base of a newer format (a downgrade) is named as such.
  assert.match((chooseBase([base(900, 10)], { firstSeq: 501, identity, format: 9, migrations: table }) as { error: string }).error, /format 10 \(a newer format: written by a later ck\)/);
});

test("loadBase through migrations: the records in the new format; a migration's bad output refused; a damaged base told as damaged", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-migrate-"));
  const recs: [string, Buffer][] = [
    ["ns\u0000images\u0000x", encodeValue({ name: "x", labels: {} })],
    ["ns\u0000images\u0000y", encodeValue({ name: "y", labels: {} })],
  ];
  const chunks = [...frameRecords(recs, 1 << 20)];
  const store = (damaged: boolean) =>
    ({
      async *chunks() {
        for (const c of chunks) yield c;
        if (damaged) throw new Error("base at sequence 5 is damaged: its sha256 is not its marker's");
      },
    }) as unknown as BaseStore;
  const marker = { ...base(5, 7), records: 2 };
  const id = { stream: identity.stream, created: identity.created };
  const load = (where: string, damaged: boolean, m: ReadonlyMap<number, FormatMigration>) => loadBase(join(dir, where), store(damaged), marker, id, undefined, { format: 9, migrations: m });
  try {
    const db = await load("ok", false, table);
    try {
      assert.equal(db.appliedSeq, 5);
      assert.equal((await db.logIdentity())!.format, 9);
      // Through both: labelled (7 to 8), moved (8 to 9).
      assert.deepEqual([...db.scan("ns")], [
        ["ns\u0000images2\u0000x", { name: "x", labels: { migrated: "8" } }],
        ["ns\u0000images2\u0000y", { name: "y", labels: { migrated: "8" } }],
      ]);
    } finally {
      await db.close();
    }
    const failing = new Map([[7, { record: (): [string, unknown][] => { throw new Error("cannot read it"); } }], [8, to9]]);
    await assert.rejects(load("f", false, failing), /base at sequence 5: migrating record "ns\\u0000images\\u0000x" from format 7 to 9: cannot read it/);
    // The same migration over a damaged base: the damage is what is told.
    await assert.rejects(load("d", true, failing), /base at sequence 5 is damaged/);
    const onto = new Map([[7, { record: (_k: string, v: unknown): [string, unknown][] => [["ns\u0000same", v]] }], [8, { record: (k: string, v: unknown): [string, unknown][] => [[k, v]] }]]);
    await assert.rejects(load("s", false, onto), /it gave the key "ns\\u0000same" of another record/);
    const meta = new Map([[7, { record: (_k: string, v: unknown): [string, unknown][] => [[`${META_PREFIX}applied`, v]] }], [8, to9]]);
    await assert.rejects(load("m", false, meta), /it gave a bookkeeping key/);
    // None of the failed loads left a projection behind.
    for (const w of ["f", "d", "s", "m"]) assert.equal(existsSync(join(dir, w)) || existsSync(join(dir, `${w}.loading`)), false, w);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
