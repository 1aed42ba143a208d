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
  assert.equal(s.failures, 0, "a lost connection starts the count afresh (a new process)");
  assert.equal(step("silent"), false);
  assert.equal(step("silent"), false);
  assert.equal(step("silent"), true, "the third silent probe in a row");
  assert.equal(s.failures, 0, "counted afresh after a restart");
  assert.equal(step("silent"), false);
});

test("JetStreamWatchdog: ticks never overlap, a failed restart is logged and counted afresh, nothing after stop", async () => {
  const { JetStreamWatchdog } = await import("../../src/api/jetstream-watchdog.js");
  const logged: string[] = [];
  const logger = { warn: (_o: unknown, m?: string) => logged.push(String(m ?? _o)), info: (_o: unknown, m?: string) => logged.push(String(m ?? _o)), error: (_o: unknown, m?: string) => logged.push(String(m ?? _o)) };
  let probes = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let restarts = 0;
  const w = new JetStreamWatchdog({
    probe: async () => {
      probes++;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setTimeout(r, 25)); // longer than the interval
      inFlight--;
      return "silent";
    },
    connected: () => true,
    restart: async () => {
      restarts++;
      if (restarts === 1) throw new Error("the disk is still full");
    },
    logger: logger as never,
    everyMs: 5,
  });
  w.start();
  const deadline = Date.now() + 5000;
  while (restarts < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  await w.stop();
  assert.equal(maxInFlight, 1, "ticks overlapped");
  assert.equal(restarts, 2, "a failed restart, then another after three more silent probes");
  assert.ok(probes >= 6, `${probes} probes`);
  assert.ok(logged.includes("restarting ckd's own nats-server failed; its supervision keeps trying"), logged.join("\n"));
  assert.equal(w.restarts, 1, "only the restart that worked counted");
  const after = probes;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(probes, after, "probed after stop");
});
