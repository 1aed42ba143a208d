// When ckd restarts its own nats-server: JetStream silent while the connection is up, three
// probes in a row.
import { test } from "node:test";
import assert from "node:assert/strict";
import { watchVerdict } from "../../src/api/jetstream-watchdog.js";

test("watchVerdict: three silent probes in a row restart the server; an answer resets the count; a lost connection does not count", () => {
  let s = { failures: 0 };
  const step = (o: "answered" | "silent" | "disconnected") => {
    const v = watchVerdict(s, o, 3);
    s = v.state;
    return v.restart;
  };
  assert.equal(step("silent"), false);
  assert.equal(step("silent"), false);
  assert.equal(step("answered"), false, "an answer in between");
  assert.equal(s.failures, 0);
  assert.equal(step("silent"), false);
  assert.equal(step("disconnected"), false, "the server is down: its supervision's business");
  assert.equal(s.failures, 1, "a lost connection neither counts nor resets");
  assert.equal(step("silent"), false);
  assert.equal(step("silent"), true, "the third silent probe in a row");
  assert.equal(s.failures, 0, "counted afresh after a restart");
  assert.equal(step("silent"), false);
});
