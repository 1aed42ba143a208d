// Gaps in the log (src/projections/log-gaps.ts): where a fold meets missing sequences, what
// they are (cut from the front, deleted from inside), what a caught-up fold does at the log's
// end (a deleted tail passed), and the last message stored from a stream's state.
import { test } from "node:test";
import assert from "node:assert/strict";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { LogGapError, atLogEnd, describeGaps, describeSeqs, gapBefore, gapKind, gapsIn, gapsOfDeleted, isLogGapError } from "../../src/projections/log-gaps.js";
import { lastStoredSeq } from "../../src/eventstore/log.js";
import { fromGrpcError, toGrpcError } from "../../src/errdefs/errdefs.js";
import { projectionFailureReport } from "../../src/api/daemon.js";

test("gapBefore and gapsIn: every message must directly follow the one before it (or the checkpoint)", () => {
  assert.equal(gapBefore(4, 5), undefined);
  assert.deepEqual(gapBefore(4, 6), { from: 5, to: 5, next: 6 });
  assert.deepEqual(gapBefore(0, 9), { from: 1, to: 8, next: 9 });
  // A run that stops at an until: only what is missing up to it counts.
  assert.deepEqual(gapBefore(4, 9, 6), { from: 5, to: 6, next: 9 });
  assert.equal(gapBefore(6, 9, 6), undefined);
  assert.equal(gapBefore(4, 5, 4), undefined);
  assert.deepEqual(gapsIn(0, []), []);
  assert.deepEqual(gapsIn(0, [1, 2, 3]), []);
  // Every gap of a batch, not only one before its first message.
  assert.deepEqual(gapsIn(3, [4, 6, 7, 10]), [
    { from: 5, to: 5, next: 6 },
    { from: 8, to: 9, next: 10 },
  ]);
  assert.deepEqual(gapsIn(3, [5]), [{ from: 4, to: 4, next: 5 }]);
});

test("gapsOfDeleted: the gaps a fold from a checkpoint to the last stored message would meet, from the stream's deleted list, as gapsIn finds them from the stored ones", () => {
  assert.deepEqual(gapsOfDeleted(0, 10, []), []);
  // Runs merged, unsorted and repeated input taken, next the message after each run.
  assert.deepEqual(gapsOfDeleted(0, 10, [7, 3, 4, 4, 8]), [
    { from: 3, to: 4, next: 5 },
    { from: 7, to: 8, next: 9 },
  ]);
  assert.deepEqual(gapsOfDeleted(0, 10, [3, 4, 7, 8]), gapsIn(0, [1, 2, 5, 6, 9, 10]));
  // At or before the checkpoint (behind the base it starts from): not met.
  assert.deepEqual(gapsOfDeleted(4, 10, [3, 4, 7]), [{ from: 7, to: 7, next: 8 }]);
  // A deleted tail (after the last stored message) is none.
  assert.deepEqual(gapsOfDeleted(0, 8, [9, 10, 5]), [{ from: 5, to: 5, next: 6 }]);
  assert.deepEqual(gapsOfDeleted(0, 0, [1, 2]), []);
});

test("gapKind: a gap beginning before the log's first stored message was cut from its front; any other was deleted from inside it", () => {
  // A projection at 3 behind a purge to 8 (compaction): the messages it needs are before the first.
  assert.equal(gapKind({ from: 4, to: 7, next: 8 }, 8), "compacted");
  // The first stored message itself deleted afterwards: still the front.
  assert.equal(gapKind({ from: 4, to: 8, next: 9 }, 9), "compacted");
  // A message deleted with earlier ones still stored.
  assert.equal(gapKind({ from: 5, to: 5, next: 6 }, 1), "deleted");
  assert.equal(gapKind({ from: 5, to: 5, next: 6 }, 5), "deleted");
});

test("atLogEnd: a fold that applied every stored message passes a deleted tail (to the last sequence, or its until); one behind a cut with nothing stored after it cannot catch up", () => {
  const end = { first: 1, last: 10, lastStored: 8 };
  assert.equal(atLogEnd(7, end), undefined, "a message still to fold");
  assert.deepEqual(atLogEnd(8, end), { pass: 10 });
  assert.deepEqual(atLogEnd(9, end), { pass: 10 }, "one it applied before it was deleted");
  assert.equal(atLogEnd(10, end), undefined);
  assert.deepEqual(atLogEnd(8, end, 9), { pass: 9 }, "not past its until");
  assert.equal(atLogEnd(8, end, 8), undefined);
  assert.equal(atLogEnd(0, { first: 0, last: 0, lastStored: 0 }), undefined, "a stream never written");
  assert.equal(atLogEnd(10, { first: 11, last: 10, lastStored: 0 }), undefined, "everything purged after it was applied");
  assert.deepEqual(atLogEnd(3, { first: 11, last: 10, lastStored: 0 }), { cut: { from: 4, to: 10, next: 11 } });
});

test("lastStoredSeq: the last sequence stored at or before a bound, from the stream's state and its deleted list", () => {
  const whole = { first_seq: 1, last_seq: 10, messages: 10 };
  assert.equal(lastStoredSeq(whole), 10);
  assert.equal(lastStoredSeq(whole, 4), 4);
  assert.equal(lastStoredSeq(whole, 40), 10);
  const cut = { first_seq: 5, last_seq: 10, messages: 6 };
  assert.equal(lastStoredSeq(cut, 4), 0, "before the first stored message: none");
  const holes = { first_seq: 1, last_seq: 10, messages: 6, deleted: [3, 8, 9, 10] };
  assert.equal(lastStoredSeq(holes), 7);
  assert.equal(lastStoredSeq(holes, 9), 7);
  assert.equal(lastStoredSeq(holes, 3), 2);
  assert.equal(lastStoredSeq({ first_seq: 11, last_seq: 10, messages: 0 }), 0);
  assert.equal(lastStoredSeq({ first_seq: 0, last_seq: 0, messages: 0 }), 0);
});

test("describing gaps: one sequence or a range; a long list is cut short", () => {
  assert.equal(describeSeqs({ from: 5, to: 5 }), "sequence 5");
  assert.equal(describeSeqs({ from: 5, to: 9 }), "sequences 5 to 9");
  const many = Array.from({ length: 12 }, (_, i) => ({ from: 10 * i + 2, to: 10 * i + 2, next: 10 * i + 3 }));
  assert.equal(describeGaps(many.slice(0, 2)), "sequence 2, sequence 12");
  assert.match(describeGaps(many), /^sequence 2, .*sequence 92 and 2 more$/);
});

test("LogGapError: DataLoss, naming the stream and the sequences, saying a restart does not help; the class survives the wire", () => {
  const err = new LogGapError("CK_EVENTS", { from: 5, to: 9, next: 10 }, 4);
  assert.ok(isLogGapError(err));
  assert.ok(!isLogGapError(new Error("x")));
  assert.equal(err.errorClass, "DataLoss");
  assert.equal(
    err.message,
    "event log CK_EVENTS: sequences 5 to 9 were deleted from inside the log (message 10 after them is still there), so the state cannot be rebuilt exactly from it: the projection at sequence 4 does not fold past them, and a restart does not get past this (ck-replay rebuild --allow-gaps folds across it, without what the deleted messages did): data loss",
  );
  const wire = toGrpcError(err);
  assert.equal(wire.code, GrpcStatus.DATA_LOSS);
  assert.equal(fromGrpcError({ code: wire.code, details: wire.details }).errorClass, "DataLoss");
});

test("ckd's report of a projection that stopped: for a gap deleted from inside the log, what it is and the operator's way on, not a restart", () => {
  const gap = projectionFailureReport(new LogGapError("CK_EVENTS", { from: 7, to: 7, next: 8 }, 6), "/var/lib/ck", "/var/lib/ck/meta");
  assert.equal(gap.msg, "the event log lost messages from inside it: the projection cannot go on, and a restart will not get past this");
  assert.deepEqual(gap.fields.deleted, { from: 7, to: 7 });
  assert.equal(gap.fields.stream, "CK_EVENTS");
  assert.match(String(gap.fields.fix), /ck-replay rebuild --root \/var\/lib\/ck --out \/var\/lib\/ck\/meta --allow-gaps/);
  const other = projectionFailureReport(new Error("projection gap: applied 3, next message in the log 8 (...)"), "/r", "/r/meta");
  assert.equal(other.msg, "projection failed; exiting");
  assert.equal(other.fields.fix, undefined);
});
