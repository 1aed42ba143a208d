// How far a log reader lets the server send ahead of it: a byte budget with room for two of the
// largest message the server takes, and a reply subject's delivery info as the reader reads it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pullBudget, READER_PULL_BYTES, READER_PULL_MESSAGES, DELIVERY_OVERHEAD_BYTES } from "../../src/eventstore/pull-bounds.js";
import { parseAckSubject } from "../../src/eventstore/log-consumer.js";

const MiB = 1 << 20;

test("a reader's budget: 4 MiB ahead on a server with NATS's default 1 MiB max_payload, 4,096 messages a pull", () => {
  assert.equal(READER_PULL_BYTES, 4 * MiB);
  assert.equal(READER_PULL_MESSAGES, 4096);
  assert.equal(pullBudget(MiB), 4 * MiB);
  // Room for two whole messages of the largest size (max_payload plus its subject, headers and reply).
  assert.ok(pullBudget(MiB) >= 2 * (MiB + DELIVERY_OVERHEAD_BYTES));
});

test("a server that takes larger messages than half the budget: the budget grows to two of them, never a pull too small for one", () => {
  for (const maxPayload of [2 * MiB, 8 * MiB, 64 * MiB]) {
    assert.equal(pullBudget(maxPayload), 2 * (maxPayload + DELIVERY_OVERHEAD_BYTES), `${maxPayload}`);
  }
});

test("small messages (a server with a 16 KiB max_payload): the budget stays as given", () => {
  assert.equal(pullBudget(16 * 1024), 4 * MiB);
  assert.equal(pullBudget(16 * 1024, MiB), MiB);
});

test("a delivery's reply subject: stream sequence, delivery sequence, time and pending, in the old and the new (domain, account hash, token) forms", () => {
  const ns = 1_796_312_768_048_466_125n;
  assert.deepEqual(parseAckSubject(`$JS.ACK.S.c.1.42.7.${ns}.3`), { seq: 42, delivery: 7, timeMs: 1_796_312_768_048, pending: 3 });
  assert.deepEqual(parseAckSubject(`$JS.ACK._.ACCHASH.S.c.1.42.7.${ns}.0.tok`), { seq: 42, delivery: 7, timeMs: 1_796_312_768_048, pending: 0 });
  assert.deepEqual(parseAckSubject(`$JS.ACK.hub.ACCHASH.S.c.2.9.9.${ns}.11`), { seq: 9, delivery: 9, timeMs: 1_796_312_768_048, pending: 11 });
  for (const not of ["_INBOX.abc.1", "$JS.ACK.S.c.1.x.7.1.3", "$JS.NAK.S.c.1.42.7.1.3", "$JS.ACK.S.c.1.42.7.1", ""]) {
    assert.equal(parseAckSubject(not), undefined, not);
  }
});
