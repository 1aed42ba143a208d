// The catch-up reader's pull requests (PullLedger): at most a byte budget owed at once, each
// request with room for the largest message seen, requests ended by their messages, their
// bytes (silently, when used exactly) or a status, so that the reader never stalls on a
// request the server no longer serves.
import { test } from "node:test";
import assert from "node:assert/strict";
import { messageSize, PullLedger } from "../../src/eventstore/pull-bounds.js";

const MiB = 1 << 20;

test("a message's size as the server counts it against max_bytes: subject, reply subject, headers and data", () => {
  // nats-server 2.9.10: 1,000 bytes on t.a with a 46-byte reply subject left 2,500 - 2 x 1,049.
  assert.equal(messageSize(3, 46, 1000), 1049);
});

test("small messages: requests of a batch each, asked again once half have come, never more than the budget owed", () => {
  const l = new PullLedger(4 * MiB, MiB + 65536, 2048);
  const first = l.ask(1);
  assert.deepEqual(first, { batch: 2048, max_bytes: 4 * MiB });
  assert.equal(l.ask(2), undefined, "nothing more while the first owes it all");
  for (let i = 0; i < 1023; i++) l.delivered(500);
  assert.equal(l.ask(2), undefined, "more than half the messages still owed, and little room");
  l.delivered(500);
  const second = l.ask(2);
  assert.ok(second, "asked again at half");
  assert.equal(second.max_bytes, 1024 * 500, "the room the first one's deliveries freed");
  assert.ok(l.bytes <= 4 * MiB);
  for (let i = 0; i < 1024; i++) l.delivered(500); // the first ends on its messages
  assert.equal(l.requests, 1);
  assert.equal(l.messages, 2048);
});

test("large messages: a request ends at its bytes (409) and the next is asked with the room freed; owed bytes never pass the budget", () => {
  const l = new PullLedger(4 * MiB, MiB + 65536, 2048);
  l.ask(1);
  let owedMax = 0;
  let id = 1;
  for (let k = 0; k < 50; k++) {
    l.delivered(900_000);
    // The request whose room is now smaller than a message ends with a 409 from the server.
    if (l.requests && l.bytes < 900_000) l.ended(id, true);
    const next = l.ask(id + 1);
    if (next) {
      id++;
      assert.ok(next.max_bytes >= 900_000, `a request with room for the largest message seen: ${next.max_bytes}`);
    }
    owedMax = Math.max(owedMax, l.bytes);
    if (!l.requests) assert.fail("no request left: the reader would stall");
  }
  assert.ok(owedMax <= 4 * MiB, `${owedMax} bytes owed`);
});

test("a request whose bytes are used exactly ends silently; a message too large for the oldest request's rest goes to the next", () => {
  const l = new PullLedger(4000, 3000, 10);
  assert.deepEqual(l.ask(1), { batch: 10, max_bytes: 4000 });
  l.delivered(1000);
  l.delivered(1000);
  l.delivered(2000); // exactly used: the server says nothing
  assert.equal(l.requests, 0);
  assert.deepEqual(l.ask(2), { batch: 10, max_bytes: 4000 });
  l.delivered(1500);
  const third = l.ask(3);
  assert.equal(third, undefined, "room 1,500 is less than a request needs (the largest message, 3,000)");
  l.delivered(1500);
  // Request 2 has 1,000 left; had its end been missed, a 2,000-byte message goes to the next.
  assert.ok(l.ask(3));
  l.delivered(2000);
  assert.equal(l.requests, 1, "request 2 taken as ended");
});

test("a request too small for the next message (409 with nothing delivered): the next asks for more room, at most the largest message", () => {
  const l = new PullLedger(8 * MiB, 2 * MiB, 100);
  l.ask(1);
  l.ended(1, true); // nothing delivered: the next needs more room than 8 MiB, bounded by the largest message
  const r = l.ask(2);
  assert.ok(r && r.max_bytes === 8 * MiB);
  for (let i = 0; i < 3; i++) l.delivered(2 * MiB); // 6 MiB used, 2 MiB left in request 2
  l.ended(2, true);
  // The largest seen is 2 MiB: a request needs that much room.
  const next = l.ask(3)!;
  assert.equal(next.max_bytes, 8 * MiB);
  // Expiry (408) ends a request without changing what the next needs.
  l.ended(3, false);
  assert.equal(l.requests, 0);
  assert.ok(l.ask(4));
});

test("what the reader holds for its caller counts against the budget: nothing is asked while it holds the room, the next once its caller took enough", () => {
  const l = new PullLedger(4 * MiB, MiB + 65536, 4096);
  assert.deepEqual(l.ask(1), { batch: 4096, max_bytes: 4 * MiB });
  // Four messages of 900 KB delivered; the fifth did not fit (409): held, not taken.
  for (let i = 0; i < 4; i++) l.delivered(900_000);
  l.ended(1, true);
  assert.equal(l.requests, 0);
  assert.equal(l.ask(2, 3_600_000), undefined, "no room while the caller has not taken them");
  // The caller took two: room for one more of the largest message seen.
  const next = l.ask(2, 1_800_000);
  assert.ok(next && next.max_bytes === 4 * MiB - 1_800_000, JSON.stringify(next));
  assert.ok(l.bytes + 1_800_000 <= 4 * MiB);
});
