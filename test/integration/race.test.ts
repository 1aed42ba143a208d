// No lost updates across processes: two ckd on one stream race to create the same names.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon } from "../helpers/daemon.js";
import { CkError } from "../../src/errdefs/errdefs.js";
import { ProjectionDb } from "../../src/projections/db.js";
import { compareProjections } from "../../tools/replay/replay.js";
import { rootPaths } from "../../src/api/daemon.js";
import { EventLog, isWrongLastSequence } from "../../src/eventstore/log.js";

const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "d".repeat(64), size: 10 };

test("two ckd on one stream, 200 racing creates of 50 names: one winner each, losers AlreadyExists, identical projections", async () => {
  const nats = await startTestNats();
  const a = await TestDaemon.start({ natsUrl: nats.url });
  const b = await TestDaemon.start({ natsUrl: nats.url });
  const ca = a.client("race");
  const cb = b.client("race");
  try {
    const names = Array.from({ length: 50 }, (_, i) => `race/img:${i}`);
    const attempts: { name: string; via: "a" | "b" }[] = [];
    for (let round = 0; round < 2; round++) {
      for (const name of names) attempts.push({ name, via: "a" }, { name, via: "b" });
    }
    assert.equal(attempts.length, 200);
    const outcomes = await Promise.all(
      attempts.map(async ({ name, via }) => {
        const c = via === "a" ? ca : cb;
        try {
          await c.call("images", "Create", { image: { name, labels: { via }, target } });
          return { name, ok: true as const };
        } catch (err) {
          return { name, ok: false as const, err };
        }
      }),
    );
    const wins = new Map<string, number>();
    for (const o of outcomes) {
      if (o.ok) wins.set(o.name, (wins.get(o.name) ?? 0) + 1);
      else {
        assert.ok(o.err instanceof CkError, String(o.err));
        assert.equal(o.err.errorClass, "AlreadyExists", o.err.message);
      }
    }
    for (const n of names) assert.equal(wins.get(n), 1, `${n} created ${wins.get(n) ?? 0} times`);

    // Read-your-writes holds per daemon; the other catches up by following the stream.
    const deadline = Date.now() + 20_000;
    let la: any[] = [];
    let lb: any[] = [];
    while (Date.now() < deadline) {
      la = (await ca.call("images", "List", {})).images;
      lb = (await cb.call("images", "List", {})).images;
      if (la.length === 50 && lb.length === 50) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(la.length, 50);
    assert.deepEqual(la, lb);
    ca.close();
    cb.close();
    await a.stop();
    await b.stop();
    const da = await ProjectionDb.open(rootPaths(a.root).meta);
    const db = await ProjectionDb.open(rootPaths(b.root).meta);
    try {
      assert.equal(da.appliedSeq, db.appliedSeq);
      assert.deepEqual(await compareProjections(da, db), []);
    } finally {
      await da.close();
      await db.close();
    }
  } finally {
    // Whatever failed above, nothing is left running.
    ca.close();
    cb.close();
    await a.cleanup();
    await b.cleanup();
    await nats.cleanup();
  }
});

test("a pipelined append whose predecessor was refused is refused too, even when another writer filled its expected sequence", async () => {
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url, stream: "CK_PIPELINE" });
  try {
    const subject = "containerd.io.p.images.create";
    const first = await log.append(subject, Buffer.from("seed"), { msgId: "seed" });
    // Writer A gets in first; B had pipelined b1 (expecting `first`) and b2 (expecting b1).
    await log.append(subject, Buffer.from("a1"), { msgId: "a1", expectLastSeq: first.seq });
    const b1 = log.append(subject, Buffer.from("b1"), { msgId: "b1", expectLastSeq: first.seq, expectLastMsgId: "seed" });
    const b2 = log.append(subject, Buffer.from("b2"), { msgId: "b2", expectLastSeq: first.seq + 1, expectLastMsgId: "b1" });
    const [r1, r2] = await Promise.allSettled([b1, b2]);
    assert.equal(r1.status, "rejected");
    assert.ok(isWrongLastSequence((r1 as PromiseRejectedResult).reason));
    // Without the message id expectation b2 would be stored: A's a1 sits at the sequence b2 expects.
    assert.equal(r2.status, "rejected", "b2 must not be stored on top of a1");
    assert.ok(isWrongLastSequence((r2 as PromiseRejectedResult).reason), String((r2 as PromiseRejectedResult).reason));
    assert.equal(await log.lastSeq(), first.seq + 1);
  } finally {
    await log.close();
    await nats.cleanup();
  }
});
