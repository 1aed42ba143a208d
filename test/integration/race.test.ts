// No lost updates across processes: two ckd on one stream race to create the same names.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon } from "../helpers/daemon.js";
import { CkError } from "../../src/errdefs/errdefs.js";
import { ProjectionDb } from "../../src/projections/db.js";
import { compareProjections } from "../../tools/replay/replay.js";
import { rootPaths } from "../../src/api/daemon.js";

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
  } finally {
    ca.close();
    cb.close();
    await a.stop();
    await b.stop();
  }
  const da = await ProjectionDb.open(rootPaths(a.root).meta);
  const db = await ProjectionDb.open(rootPaths(b.root).meta);
  try {
    assert.equal(da.appliedSeq, db.appliedSeq);
    assert.deepEqual(await compareProjections(da, db), []);
  } finally {
    await da.close();
    await db.close();
    await a.cleanup();
    await b.cleanup();
    await nats.cleanup();
  }
});
