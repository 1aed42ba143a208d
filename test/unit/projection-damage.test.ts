// A damaged projection is found and told as such (src/projections/db.ts: isCorruption, verify,
// onCorruption, the damage mark), and a checkpoint names the message it is at, so that a start
// can tell a log that lost its tail and was written past it (src/api/daemon.ts:
// checkpointToConfirm, checkpointMismatch). Over real RocksDB where it matters.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { closeSync, existsSync, fstatSync, openSync, readdirSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DAMAGE_MARK, isCorruption, isLockedByOther, messageIdentity, ProjectionDb, type MessageLike } from "../../src/projections/db.js";
import { checkpointMismatch, checkpointToConfirm } from "../../src/api/daemon.js";

/** The binding's error for RocksDB's Corruption status, as it throws it. */
function levelError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

test("isCorruption: RocksDB's Corruption status, bare or under a wrapper; not a full disk, an I/O error, a lock or a closed database", () => {
  const checksum = levelError("LEVEL_CORRUPTION", "Corruption: block checksum mismatch: stored(context removed) = 4027644300, computed = 96035142, type = 4  in /r/meta/000008.sst offset 1616936 size 4075");
  assert.equal(isCorruption(checksum), true);
  // The message alone (an error rebuilt from another, its code lost).
  assert.equal(isCorruption(new Error("Corruption: truncated block read from /r/meta/000011.sst offset 0, expected 4096 bytes, got 12")), true);
  // An open's failure, under abstract-level's wrapper.
  assert.equal(isCorruption(Object.assign(new Error("Database is not open", { cause: levelError("LEVEL_CORRUPTION", "Corruption: bad record length") }), { code: "LEVEL_DATABASE_NOT_OPEN" })), true);
  for (const other of [
    levelError("LEVEL_IO_ERROR", "IO error: No space left on device: While appending to file: /r/meta/000012.log"),
    levelError("LEVEL_IO_ERROR", "IO error: /r/meta/000009.sst: Input/output error"),
    new Error("Database is not open", { cause: new Error("IO error: While lock file: /r/meta/LOCK: Resource temporarily unavailable") }),
    levelError("LEVEL_DATABASE_NOT_OPEN", "Database is not open"),
    new Error("projection gap: applied 4, next message in the log 9"),
    // A message merely mentioning the word is not RocksDB's status.
    new Error("image name: Corruption: not a status"),
  ]) {
    assert.equal(isCorruption(other), false, other.message);
  }
  assert.equal(isCorruption("Corruption: a string"), false);
  assert.equal(isCorruption(undefined), false);
  // The two questions never both answer yes.
  assert.equal(isLockedByOther(checksum), false);
});

test("messageIdentity: the Nats-Msg-Id (through header() when the message has it), else the sha256 of the data", () => {
  const data = Buffer.from("envelope bytes");
  assert.equal(messageIdentity({ data, headers: { "Nats-Msg-Id": "6d2c…", "Ck-Origin": "command" } }), "msgid:6d2c…");
  // header() is asked instead of building headers (the bulk reader's messages make them lazily).
  const lazy = {
    data,
    get headers(): Record<string, string> {
      throw new Error("headers built");
    },
    header: (name: string) => (name === "Nats-Msg-Id" ? "abc" : undefined),
  };
  assert.equal(messageIdentity(lazy), "msgid:abc");
  const hashed = messageIdentity({ data, headers: {} });
  assert.match(hashed, /^sha256:[0-9a-f]{64}$/);
  assert.equal(messageIdentity({ data: Buffer.from("envelope bytes"), headers: { "Ck-Origin": "publish" } }), hashed, "the same bytes, the same identity");
  assert.notEqual(messageIdentity({ data: Buffer.from("other bytes"), headers: {} }), hashed);
  assert.equal(messageIdentity({ data, headers: {}, header: () => undefined }), hashed, "no id through header() either: the hash");
});

test("checkpointToConfirm: the applied sequence when its message was recorded and the log still keeps it; else nothing to look up", () => {
  const at5 = { seq: 5, id: "msgid:a" };
  assert.equal(checkpointToConfirm(5, at5, 1), 5);
  assert.equal(checkpointToConfirm(5, at5, 5), 5, "the first message kept");
  assert.equal(checkpointToConfirm(5, at5, 6), undefined, "compacted away: nothing to compare with");
  assert.equal(checkpointToConfirm(0, undefined, 0), undefined, "nothing applied");
  assert.equal(checkpointToConfirm(5, undefined, 1), undefined, "not recorded (an older projection, a base): unknown");
  assert.equal(checkpointToConfirm(7, at5, 1), undefined, "recorded for another sequence (written without it since): unknown");
});

test("checkpointMismatch: the same message passes; another one, or none where the log should have one, is a projection not of this log", () => {
  const rec = { seq: 5, id: "msgid:a" };
  assert.equal(checkpointMismatch(rec, "msgid:a"), undefined);
  assert.match(checkpointMismatch(rec, "msgid:b")!, /the log's message at the projection's applied sequence 5 is msgid:b, not msgid:a it applied: the log lost messages the projection holds and was written past them/);
  assert.match(checkpointMismatch(rec, null)!, /the log has no message at the projection's applied sequence 5 \(it applied msgid:a\)/);
});

function message(seq: number, id?: string): MessageLike {
  return { seq, data: Buffer.from(`event ${seq}`), headers: id ? { "Nats-Msg-Id": id } : {} };
}

test("the checkpoint records its message in the same batch; an apply by sequence alone leaves it unknown past it", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-projdmg-"));
  const location = join(dir, "meta");
  try {
    let db = await ProjectionDb.open(location);
    assert.equal(db.appliedMessage, undefined);
    await db.apply([["k\u00001", { n: 1 }]], message(1, "id-1"));
    await db.apply([["k\u00002", { n: 2 }]], message(2));
    assert.deepEqual(db.appliedMessage, { seq: 2, id: messageIdentity(message(2)) });
    await db.close();
    db = await ProjectionDb.open(location);
    assert.equal(db.appliedSeq, 2);
    assert.deepEqual(db.appliedMessage, { seq: 2, id: messageIdentity(message(2)) }, "read back with the sequence");
    // Written by sequence alone (a base's load, an older ckd): the recorded message is not this
    // sequence's any more, so it is not offered.
    await db.apply([["k\u00003", { n: 3 }]], 3);
    assert.equal(db.appliedMessage, undefined);
    await db.close();
    db = await ProjectionDb.open(location);
    assert.equal(db.appliedMessage, undefined);
    assert.equal(await db.verify(), 5, "three records, the checkpoint and its message");
    await db.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** A projection of `records` records whose first table has 64 bytes overwritten a third of the way in. */
async function corruptedProjection(location: string, records: number): Promise<void> {
  let db = await ProjectionDb.open(location);
  await db.setLogIdentity({ stream: "S", created: "c" });
  for (let b = 0; b < records / 1000; b++) {
    const changes: [string, unknown][] = [];
    for (let i = 0; i < 1000; i++) changes.push([`img\u0000default\u0000name-${b}-${i}`, { name: `n${b}-${i}`, pad: "x".repeat(200) }]);
    await db.apply(changes, message((b + 1) * 1000, `id-${b}`));
  }
  await db.close();
  // Opened again: RocksDB flushes what its WAL holds into a table.
  db = await ProjectionDb.open(location);
  await db.close();
  const sst = readdirSync(location).filter((f) => f.endsWith(".sst"));
  assert.ok(sst.length > 0, "a table was written");
  const fd = openSync(join(location, sst[0]!), "r+");
  try {
    writeSync(fd, Buffer.alloc(64, 0xff), 0, 64, Math.floor(fstatSync(fd).size / 3));
  } finally {
    closeSync(fd);
  }
}

test("a damaged table: the open succeeds, verify reads every block and throws the corruption; reads after it tell onCorruption once", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-projdmg-"));
  const location = join(dir, "meta");
  try {
    await corruptedProjection(location, 5000);
    const db = await ProjectionDb.open(location);
    try {
      // What an open alone sees: all well.
      assert.equal(db.appliedSeq, 5000);
      assert.equal((await db.logIdentity())?.stream, "S");
      const err = await db.verify().then(
        () => assert.fail("verify passed a damaged table"),
        (e: Error) => e,
      );
      assert.equal(isCorruption(err), true, err.message);
      assert.match(err.message, /^Corruption: block checksum mismatch/);
      // Not yet told: verify's caller decides (ckd at its start sets the projection aside).
      const told: Error[] = [];
      db.onCorruption = (e) => told.push(e);
      assert.throws(() => [...db.scan("img\u0000")], /Corruption: block checksum mismatch/);
      assert.throws(() => [...db.scanRaw("")], /Corruption/);
      assert.equal(told.length, 1, "told once");
      assert.equal(isCorruption(told[0]), true);
    } finally {
      await db.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("the damage mark lives in the projection's directory and goes aside with it; setAside keeps one of each", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-projdmg-"));
  const location = join(dir, "meta");
  try {
    let db = await ProjectionDb.open(location);
    await db.apply([["k\u00001", { n: 1 }]], message(1, "id-1"));
    assert.equal(ProjectionDb.damageMark(location), undefined);
    ProjectionDb.markDamaged(location, "Corruption: block checksum mismatch in 000008.sst");
    await db.close();
    assert.match(ProjectionDb.damageMark(location)!, /^\S+Z Corruption: block checksum mismatch in 000008\.sst$/);
    // RocksDB opens a directory with the mark in it, and leaves it there.
    db = await ProjectionDb.open(location);
    assert.equal(db.appliedSeq, 1);
    await db.close();
    assert.ok(existsSync(join(location, DAMAGE_MARK)));
    assert.equal(await ProjectionDb.setAside(location, "damaged"), `${location}.damaged`);
    assert.ok(!existsSync(location));
    assert.ok(existsSync(join(`${location}.damaged`, DAMAGE_MARK)), "the mark went with it");
    // A second one replaces the first.
    db = await ProjectionDb.open(location);
    await db.apply([["k\u00002", { n: 2 }]], message(2, "id-2"));
    await db.close();
    await ProjectionDb.setAside(location, "damaged");
    db = await ProjectionDb.open(`${location}.damaged`);
    assert.equal(db.appliedSeq, 2, "the latest one set aside is kept");
    await db.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
