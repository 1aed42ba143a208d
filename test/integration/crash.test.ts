// Acknowledged means durable: kill -9 of ckd, then of nats-server, in the middle of writes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runNode, CK_REPLAY } from "../helpers/daemon.js";
import { CkError } from "../../src/errdefs/errdefs.js";
import type { ApiClient } from "../../src/cli/client.js";

const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "e".repeat(64), size: 10 };

/** Creates images name-0..name-(n-1) at a concurrency, recording which were acknowledged. */
async function writeMany(c: ApiClient, prefix: string, n: number, concurrency: number, onAck?: (count: number) => void) {
  const acked: string[] = [];
  const failed: { name: string; err: unknown }[] = [];
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const name = `${prefix}-${next++}`;
      try {
        await c.call("images", "Create", { image: { name, target } }, { deadlineMs: 20_000 });
        acked.push(name);
        onAck?.(acked.length);
      } catch (err) {
        failed.push({ name, err });
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { acked, failed };
}

test("kill -9 of ckd during 5,000 writes: acknowledged writes survive, the projection resumes from its checkpoint, replay verify passes", async () => {
  const nats = await startTestNats();
  const d = await TestDaemon.start({ natsUrl: nats.url });
  try {
    const c = d.client("crash");
    let killed = false;
    const run = writeMany(c, "crash/img", 5000, 32, (count) => {
      if (count === 2500 && !killed) {
        killed = true;
        void d.kill9();
      }
    });
    const { acked, failed } = await run;
    c.close();
    assert.ok(killed, "ckd was not killed during the writes");
    assert.ok(acked.length >= 2500 && acked.length < 5000, `acked ${acked.length}`);
    assert.ok(failed.length > 0);

    await d.launch();
    const caughtUp = d.logLines().filter((l) => l.msg === "projection caught up");
    const last = caughtUp[caughtUp.length - 1]!;
    assert.ok(last.resumedFrom > 0, `resumed from ${last.resumedFrom}, expected the checkpoint`);
    assert.equal(last.rebuilt, false);

    const c2 = d.client("crash");
    try {
      const names = new Set((await c2.call("images", "List", {})).images.map((i: any) => i.name));
      for (const n of acked) assert.ok(names.has(n), `acknowledged ${n} lost`);
      // Nothing twice: every name is one key; the count is at most what was attempted.
      assert.ok(names.size >= acked.length && names.size <= 5000);
      // The daemon keeps working after the restart.
      await c2.call("images", "Create", { image: { name: "after-restart", target } });
    } finally {
      c2.close();
    }
    assert.equal(await d.stop(), 0);
    const r = await runNode(CK_REPLAY, ["verify", "--root", d.root]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /verify OK/);
  } finally {
    await d.cleanup();
    await nats.cleanup();
  }
});

test("kill -9 of nats-server during writes: calls fail fast with Unavailable, succeed once it is back, nothing lost or duplicated", async () => {
  const nats = await startTestNats();
  const d = await TestDaemon.start({ natsUrl: nats.url });
  const c = d.client("natskill");
  try {
    const first = await writeMany(c, "before", 300, 16);
    assert.equal(first.failed.length, 0);

    // Kill the server in the middle of a burst.
    const burst = writeMany(c, "burst", 2000, 16, (n) => {
      if (n === 200) void nats.server.kill9();
    });
    const { acked: burstAcked } = await burst;

    // While it is down: Unavailable, and fast.
    const t0 = Date.now();
    await assert.rejects(c.call("images", "Create", { image: { name: "while-down", target } }), (err: unknown) => {
      assert.ok(err instanceof CkError);
      assert.equal(err.errorClass, "Unavailable", err.message);
      return true;
    });
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms to fail`);
    // A Prepare whose append fails Unavailable keeps its directory (such an append may have
    // been stored: a record without its directory could not be mended); GC's cleanup removes
    // it once the log is back and no record names it.
    const snapDir = join(d.root, "snapshots", "native", "snapshots");
    const dirs = () => (existsSync(snapDir) ? readdirSync(snapDir) : []);
    const dirsBefore = dirs();
    await assert.rejects(c.call("snapshots", "Prepare", { snapshotter: "native", key: "while-down" }), (err: unknown) => err instanceof CkError && err.errorClass === "Unavailable");
    assert.equal(dirs().length, dirsBefore.length + 1);
    // Reads keep being served from the projection.
    assert.ok((await c.call("images", "List", {})).images.length >= 300);

    await nats.server.restart();
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await c.call("images", "Create", { image: { name: "after-back", target } });
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const after = await writeMany(c, "after", 300, 16);
    assert.equal(after.failed.length, 0, String(after.failed[0]?.err));

    const names = (await c.call("images", "List", {})).images.map((i: any) => i.name);
    assert.equal(new Set(names).size, names.length, "a name listed twice");
    const have = new Set(names);
    for (const n of [...first.acked, ...burstAcked, ...after.acked, "after-back"]) assert.ok(have.has(n), `acknowledged ${n} lost`);
    assert.ok(!have.has("while-down"));
    await c.call("gc", "Collect", {});
    assert.deepEqual(dirs(), dirsBefore, "the directory no record names is gone");
  } finally {
    c.close();
    await d.cleanup();
    await nats.cleanup();
  }
});
