// The sequencer in process, over a real nats-server and RocksDB: what it keeps between
// commands stays bounded by the commands in flight (it once kept the id of every append).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestNats, type TestNats } from "../helpers/nats.js";
import { EventLog } from "../../src/eventstore/log.js";
import { ProjectionDb } from "../../src/projections/db.js";
import { Projector } from "../../src/projections/projector.js";
import { Sequencer, surelyNotStored } from "../../src/commands/sequencer.js";
import { loadProtos } from "../../src/protos/protos.js";
import { imageHandlers } from "../../src/commands/images.js";
import { nowTimestamp } from "../../src/emitter/envelope.js";
import { keys } from "../../src/projections/views.js";
import { rejectsClass } from "../helpers/errors.js";

/** A sequencer over its own test nats-server, stream and projection, torn down after `fn`. */
async function withSequencer(
  stream: string,
  fn: (s: { log: EventLog; db: ProjectionDb; sequencer: Sequencer; nats: TestNats }) => Promise<void>,
  opts: { natsConfig?: string; publishTimeoutMs?: number } = {},
): Promise<void> {
  const nats = await startTestNats(opts.natsConfig ? { config: opts.natsConfig } : {});
  const dir = await mkdtemp(join(tmpdir(), "ck-seq-"));
  const log = await EventLog.open({ url: nats.url, stream, ...(opts.publishTimeoutMs ? { publishTimeoutMs: opts.publishTimeoutMs } : {}) });
  const db = await ProjectionDb.open(join(dir, "meta"));
  const protos = loadProtos();
  const projector = new Projector(db, log, protos);
  projector.start();
  try {
    await fn({ log, db, sequencer: new Sequencer(log, projector, protos), nats });
  } finally {
    await projector.stop();
    await db.close();
    await log.close();
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "e".repeat(64), size: 1, annotations: {} };

test("1,000 pipelined commands: all applied, nothing of them kept once they settled", () =>
  withSequencer("SEQ_TEST", async ({ db, sequencer }) => {
    const create = (i: number) => sequencer.submit(imageHandlers.create({ namespace: "seq", image: { name: `seq/img:${i}`, labels: {}, target }, now: nowTimestamp() }));
    // 32 callers at a time, as a busy daemon sees them.
    let next = 0;
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (next < 1000) await create(next++);
    }));
    assert.equal(db.appliedSeq, 1000);
    for (const i of [0, 499, 999]) assert.ok(db.getSync(keys.image("seq", `seq/img:${i}`)), `image ${i} is read back`);
    const internals = sequencer as unknown as { appliedIds: Map<string, number>; watchedIds: Set<string>; inflight: unknown[]; overlay: Map<string, unknown> };
    assert.equal(internals.inflight.length, 0);
    assert.equal(internals.appliedIds.size, 0, "no applied id kept");
    assert.equal(internals.watchedIds.size, 0, "no append left watched");
    assert.equal(internals.overlay.size, 0, "the overlay is empty once everything is applied");
  }));

test("a writer racing another that appends without pause is not starved: it keeps deciding again within its retry budget", async () => {
  const nats = await startTestNats();
  const dir = await mkdtemp(join(tmpdir(), "ck-seq-"));
  const protos = loadProtos();
  const side = async (name: string, opts: { maxAttempts: number; retryBudgetMs: number }) => {
    const log = await EventLog.open({ url: nats.url, stream: "SEQ_RACE" });
    const db = await ProjectionDb.open(join(dir, name));
    const projector = new Projector(db, log, protos);
    projector.start();
    return { log, db, projector, sequencer: new Sequencer(log, projector, protos, opts) };
  };
  // Few attempts, a long budget: only the budget can carry the slow side through.
  // (With retryBudgetMs 0, as before the budget, several of its commands ended Aborted.)
  const slow = await side("slow", { maxAttempts: 3, retryBudgetMs: 20_000 });
  const busy = await side("busy", { maxAttempts: 20, retryBudgetMs: 15_000 });
  const create = (s: Sequencer, name: string) => s.submit(imageHandlers.create({ namespace: "race", image: { name, labels: {}, target }, now: nowTimestamp() }));
  try {
    // The busy side: 16 callers creating without pause until the slow side is done.
    let done = false;
    let n = 0;
    let appended = 0;
    const busyRun = Promise.all(Array.from({ length: 16 }, async () => {
      while (!done) {
        await create(busy.sequencer, `race/busy:${n++}`);
        appended++;
      }
    }));
    // The race starts once the busy side is in full swing (its first creates pay the JIT).
    const swing = Date.now() + 30_000;
    while (appended < 32) {
      assert.ok(Date.now() < swing, `the busy side appended only ${appended} in 30 s`);
      await Promise.race([busyRun, new Promise((r) => setTimeout(r, 5))]);
    }
    const appendedBefore = appended;
    let during = 0;
    const outcomes: string[] = [];
    try {
      for (let i = 0; i < 30; i++) {
        await create(slow.sequencer, `race/slow:${i}`).then(
          () => outcomes.push("ok"),
          (err: Error) => outcomes.push(err.message),
        );
      }
    } finally {
      during = appended - appendedBefore;
      done = true;
      await busyRun;
    }
    assert.deepEqual(outcomes.filter((o) => o !== "ok"), [], "every command of the slow side went through");
    // Only that the race was on: how many the busy side gets in meanwhile moves with the
    // machine (16 seen once here, on a loaded machine, with every slow command through).
    assert.ok(during >= 10, `the busy side appended meanwhile (${during})`);
    await slow.projector.waitFor(await slow.log.lastSeq());
    for (let i = 0; i < 30; i++) assert.ok(slow.db.getSync(keys.image("race", `race/slow:${i}`)));
  } finally {
    for (const s of [slow, busy]) {
      await s.projector.stop();
      await s.db.close();
      await s.log.close();
    }
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
});

test("an event larger than the server's max_payload: InvalidArgument at once naming the sizes, nothing appended, the appends around it unharmed", () =>
  withSequencer("SEQ_BIG", async ({ log, db, sequencer }) => {
    const create = (name: string, labels: Record<string, string> = {}) => sequencer.submit(imageHandlers.create({ namespace: "seq", image: { name, labels, target }, now: nowTimestamp() }));
    // Labels of 4 KiB each (the most one may hold): 300 of them make an event over 1 MiB.
    const big = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`k${i}`, "v".repeat(4000)]));
    const t0 = Date.now();
    const results = await Promise.allSettled([create("before"), create("huge", big), create("after")]);
    assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
    assert.equal(results[0]!.status, "fulfilled");
    assert.equal(results[2]!.status, "fulfilled", "the append queued behind it went through");
    await rejectsClass(Promise.reject((results[1] as PromiseRejectedResult).reason), "InvalidArgument", /the \/images\/create event would be \d+ bytes, more than the log takes \(the NATS server's max_payload 1048576 bytes/);
    assert.equal(await log.lastSeq(), 2, "nothing of the refused event was appended");
    assert.equal(db.getSync(keys.image("seq", "huge")), undefined);
  }));

test("an answer that appends nothing (AlreadyExists here) comes only once the append it rests on is applied: the record it names is readable then", () =>
  withSequencer("SEQ_NOOP", async ({ db, sequencer }) => {
    const create = (name: string) => sequencer.submit(imageHandlers.create({ namespace: "seq", image: { name, labels: {}, target }, now: nowTimestamp() }));
    for (let i = 0; i < 20; i++) {
      const first = create(`dup-${i}`);
      let seenAtRefusal: unknown = "not refused";
      const second = create(`dup-${i}`).catch((err) => {
        seenAtRefusal = db.getSync(keys.image("seq", `dup-${i}`));
        throw err;
      });
      await first;
      await rejectsClass(second, "AlreadyExists");
      assert.ok(seenAtRefusal && typeof seenAtRefusal === "object", `round ${i}: refused before the image it names was readable`);
    }
  }));

const createIn = (sequencer: Sequencer, namespace: string, name: string) =>
  sequencer.submit(imageHandlers.create({ namespace, image: { name, labels: {}, target }, now: nowTimestamp() }));

test("a stream whose store is full: ResourceExhausted at once with JetStream's words, surely not stored, no retrying; appends go through again once there is room", () =>
  withSequencer(
    "SEQ_FULL",
    async ({ log, db, sequencer }) => {
      // 16 callers until the store refuses: every call after the first refusal fails too.
      const failures: unknown[] = [];
      let created = 0;
      let next = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (failures.length === 0 && next < 5000) {
          await createIn(sequencer, "full", `full/img:${next++}`).then(
            () => created++,
            (err) => failures.push(err),
          );
        }
      }));
      assert.ok(failures.length > 0, `the store took all ${created} images`);
      for (const err of failures) {
        await rejectsClass(Promise.reject(err), "ResourceExhausted", /refused by JetStream \(10023\): insufficient resources/);
        assert.ok(surelyNotStored(err), "a refusal is known not to be stored");
      }
      // A refusal is not retried: the appends chained on a refused one are decided again once
      // (a wrong last sequence each), not thousands of times until the retry budget runs out.
      assert.equal(sequencer.stats.aborted, 0);
      // (Each refusal sends the appends chained on it round again: at most 16 x 16 here.)
      assert.ok(sequencer.stats.refused <= 16 * 16, `${sequencer.stats.refused} appends refused for a wrong sequence`);
      assert.equal(await log.lastSeq(), created, "the stream holds exactly the acknowledged creates");
      assert.equal(db.appliedSeq, created);
      await rejectsClass(createIn(sequencer, "full", "full/still"), "ResourceExhausted");
      // Room again (the old messages purged): the same sequencer appends again.
      await log.purgeBefore(created);
      await createIn(sequencer, "full", "full/after");
      assert.ok(db.getSync(keys.image("full", "full/after")));
      assert.equal(db.getSync(keys.image("full", "full/still")), undefined);
    },
    { natsConfig: "jetstream { max_file_store: 65536 }" },
  ));

test("appends the server's permissions drop: PermissionDenied as soon as the server says so (not at the acknowledgement timeout), surely not stored; other namespaces unharmed", () =>
  withSequencer(
    "SEQ_PERM",
    async ({ log, db, sequencer }) => {
      const t0 = Date.now();
      const results = await Promise.allSettled([
        ...Array.from({ length: 8 }, (_, i) => createIn(sequencer, "open", `open/img:${i}`)),
        createIn(sequencer, "denied", "denied/img"),
        ...Array.from({ length: 8 }, (_, i) => createIn(sequencer, "open", `open/img:${8 + i}`)),
      ]);
      // The acknowledgement timeout is a minute here: only the server's word can end it sooner.
      assert.ok(Date.now() - t0 < 30_000, `took ${Date.now() - t0} ms`);
      const refused = results[8] as PromiseRejectedResult;
      assert.equal(refused.status, "rejected");
      await rejectsClass(Promise.reject(refused.reason), "PermissionDenied", /may not publish to containerd\.io\.denied\.images\.create/);
      assert.ok(surelyNotStored(refused.reason));
      for (const [i, r] of results.entries()) if (i !== 8) assert.equal(r.status, "fulfilled", `create ${i}: ${(r as PromiseRejectedResult).reason}`);
      assert.equal(await log.lastSeq(), 16);
      assert.equal(db.getSync(keys.image("denied", "denied/img")), undefined);
    },
    {
      publishTimeoutMs: 60_000,
      natsConfig: [
        `authorization { users = [ { user: ck, password: ck, permissions: { publish: { deny: ["containerd.io.denied.>"] } } } ] }`,
        // Clients that give no user (the readiness check, and this test's log) are that user.
        "no_auth_user: ck",
      ].join("\n"),
    },
  ));

test("the connection to the log lost with appends in flight: they fail at once (not after a request timeout), and the first command after the reconnect goes through without waiting", () =>
  withSequencer("SEQ_LOST", async ({ log, db, sequencer, nats }) => {
    for (let i = 0; i < 20; i++) await createIn(sequencer, "lost", `lost/before:${i}`);
    const burst = Array.from({ length: 64 }, (_, i) => createIn(sequencer, "lost", `lost/burst:${i}`));
    // Handled from the start: they may fail while the kill is still being waited for.
    const settled = Promise.allSettled(burst);
    await new Promise((r) => setImmediate(r)); // the burst's appends are sent
    const t0 = Date.now();
    await nats.server.kill9();
    const outcomes = await settled;
    // Before: the recovery asked the stream's state while disconnected; nats.js drops such a
    // request at the reconnect, and everything waited for its 5 s timeout.
    assert.ok(Date.now() - t0 < 2500, `the burst took ${Date.now() - t0} ms to settle after the kill`);
    const acked = new Set<number>();
    outcomes.forEach((o, i) => {
      if (o.status === "fulfilled") acked.add(i);
      else assert.equal((o.reason as { errorClass?: string }).errorClass, "Unavailable", String(o.reason));
    });
    await rejectsClass(createIn(sequencer, "lost", "lost/while-down"), "Unavailable");
    await nats.server.restart();
    const up = Date.now() + 30_000;
    while (log.connectionState !== "connected") {
      assert.ok(Date.now() < up, "no reconnect in 30 s");
      await new Promise((r) => setTimeout(r, 20));
    }
    const t1 = Date.now();
    await createIn(sequencer, "lost", "lost/after");
    assert.ok(Date.now() - t1 < 2500, `the first command after the reconnect took ${Date.now() - t1} ms`);
    for (const i of acked) assert.ok(db.getSync(keys.image("lost", `lost/burst:${i}`)), `acknowledged burst:${i} lost`);
    assert.ok(db.getSync(keys.image("lost", "lost/after")));
    assert.equal(db.getSync(keys.image("lost", "lost/while-down")), undefined);
    assert.equal(db.appliedSeq, await log.lastSeq());
  }));
