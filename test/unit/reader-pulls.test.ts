// How far a client-paced log reader (an Events.Subscribe) lets the server send ahead of it:
// bounded in bytes, with room in every pull for the largest message the server takes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { boundedPullOptions, READER_PULL_BYTES } from "../../src/eventstore/pull-bounds.js";

const MiB = 1 << 20;

test("a client-paced reader's pulls: 4 MiB ahead on a server with NATS's default 1 MiB max_payload, asked again with room for one more of the largest message", () => {
  const o = boundedPullOptions(MiB);
  assert.equal(READER_PULL_BYTES, 4 * MiB);
  assert.equal(o.max_bytes, 4 * MiB);
  // What a pull may ask for once what is owed fell to the threshold: one whole message of the
  // largest size (max_payload plus its subject, headers and reply subject) at least.
  assert.ok(o.max_bytes - o.threshold_bytes >= MiB + 1024, JSON.stringify(o));
  assert.ok(o.threshold_bytes >= 2 * MiB, `asked again only once half of it is used: ${JSON.stringify(o)}`);
});

test("a server that takes larger messages than half the budget: the budget grows to two of them, never a pull too small for one", () => {
  for (const maxPayload of [2 * MiB, 8 * MiB, 64 * MiB]) {
    const o = boundedPullOptions(maxPayload);
    assert.ok(o.max_bytes >= 2 * maxPayload, `${maxPayload}: ${JSON.stringify(o)}`);
    assert.ok(o.max_bytes - o.threshold_bytes >= maxPayload, `${maxPayload}: ${JSON.stringify(o)}`);
    // nats.js takes a threshold of 0 for "not given" (75% of max_bytes): never 0.
    assert.ok(o.threshold_bytes > 0, `${maxPayload}: ${JSON.stringify(o)}`);
  }
});

test("small messages (a server with a 16 KiB max_payload): the budget stays 4 MiB, asked again soon after a pull's worth is taken", () => {
  const o = boundedPullOptions(16 * 1024);
  assert.equal(o.max_bytes, 4 * MiB);
  assert.ok(o.threshold_bytes > 3.5 * MiB && o.threshold_bytes < 4 * MiB, JSON.stringify(o));
  // Another budget, as a caller may give.
  const small = boundedPullOptions(16 * 1024, MiB);
  assert.equal(small.max_bytes, MiB);
  assert.ok(small.max_bytes - small.threshold_bytes >= 16 * 1024);
});
