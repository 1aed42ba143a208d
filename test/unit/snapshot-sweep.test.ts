// The rule behind Snapshots.Cleanup and GC's sweep of snapshot directories no record names
// (src/snapshots/sweep.ts): what is kept, and how long a directory whose recording append's
// outcome is unknown stays claimed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { keepSnapshotDir, UnsettledIds } from "../../src/snapshots/sweep.js";

const OLD = "mi8x2k3a-0123456789abcdef";

test("kept: an id a record names, a claimed id and its temporary names; anything else is a leftover", () => {
  const owned = new Set(["own1abcd", OLD]);
  const claims = (claimed: string[]) => ({ owned: (id: string) => owned.has(id), claimed: () => claimed });
  const c = claims(["busy1234", "unset567"]);
  for (const name of ["own1abcd", OLD, "busy1234", ".new-busy1234-0a1b2c3d", ".rm-busy1234-0a1b2c3d", "unset567"]) assert.ok(keepSnapshotDir(name, c), name);
  for (const name of ["gone0000", ".new-gone0000-0a1b2c3d", ".rm-own1abcd-0a1b2c3d", ".new-busy12345-00000000", "busy123", ".probe-x"]) assert.ok(!keepSnapshotDir(name, c), name);
  // A temporary name of an old-form id (it holds a dash) is matched whole, not by its start.
  assert.ok(keepSnapshotDir(`.new-${OLD}-00112233`, claims([OLD])));
  assert.ok(!keepSnapshotDir(`.new-${OLD}-00112233`, claims(["mi8x2k3a"])));
});

test("an unknown outcome stays claimed until a sweep that started after it saw the projection catch up", () => {
  const u = new UnsettledIds();
  u.add("early000");
  const sweep = u.mark(); // a sweep asks whether the projection caught up...
  u.add("late0000"); // ...while another append's outcome turns unknown
  assert.deepEqual(u.held(sweep), ["late0000"], "the sweep read the log past early000 only");
  assert.ok(u.has("early000") && u.has("late0000"), "both are taken for new ids meanwhile");
  u.settle(sweep);
  assert.ok(!u.has("early000"), "settled: its record is in the projection by now, or it never will be");
  assert.deepEqual(u.held(sweep), ["late0000"]);
  // A sweep put off (the log unreachable) settles nothing: the id stays taken.
  u.mark();
  assert.ok(u.has("late0000"));
  // The next sweep started after its append failed: not held; settled once it caught up.
  const next = u.mark();
  assert.deepEqual(u.held(next), []);
  u.settle(next);
  assert.equal(u.size, 0);
});
