// Messages deleted from the log other than by compaction (`nats stream rmm`, a subject purge):
// from inside it, a gap no fold may cross silently (DataLoss, naming it, for the projector in
// either thread, ckd at start and every ck-replay command; ck-replay --allow-gaps crosses it
// with a warning); at its end, a deleted tail that JetStream keeps numbering past, which no
// reader may wait for. Removal from the log's front (compaction) is log-compaction.test.ts's.
// Real nats-server, real ckds, real RocksDB.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestDaemon, runNode, CK_REPLAY } from "../helpers/daemon.js";
import { startTestNats } from "../helpers/nats.js";
import { EventLog } from "../../src/eventstore/log.js";
import { ProjectionDb } from "../../src/projections/db.js";
import { Projector, type BatchSource } from "../../src/projections/projector.js";
import { Sequencer } from "../../src/commands/sequencer.js";
import { imageHandlers } from "../../src/commands/images.js";
import { loadProtos } from "../../src/protos/protos.js";
import { encodeEnvelope, nowTimestamp } from "../../src/emitter/envelope.js";
import { keys, TYPE } from "../../src/projections/views.js";
import { readInWorker } from "../../src/eventstore/worker-reader.js";
import { rebuild } from "../../tools/replay/replay.js";
import { rootPaths } from "../../src/api/daemon.js";
import { BaseStore } from "../../src/eventstore/base-store.js";
import { isLogGapError, type LogGap } from "../../src/projections/log-gaps.js";

const protos = loadProtos();
const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "d".repeat(64), size: 1, annotations: {} };

/** Appends an image create as ckd would (a real envelope, folded into the views). */
function appendImage(log: EventLog, name: string) {
  const draft = { namespace: "gaps", topic: "/images/create", typeName: TYPE.ImageCreate, payload: { name, ck_image: { name, labels: {}, target } } };
  const data = encodeEnvelope(protos, draft, nowTimestamp());
  return log.append(`containerd.io.gaps.images.create`, data, { msgId: `${name}-${Math.random()}`, headers: { "Ck-Origin": "command" } });
}

function imageNames(db: ProjectionDb): string[] {
  return [...db.scan(keys.image("gaps", ""))].map(([, v]) => (v as { name: string }).name).sort();
}

/** Waits for a projector to stop for good; the error it stopped with. */
function failure(p: Projector): Promise<Error> {
  return new Promise((resolve) => {
    const t = setInterval(() => {
      if (p.error) {
        clearInterval(t);
        resolve(p.error);
      }
    }, 20);
  });
}

test("a message deleted from inside the log: the projector (in its own thread and through the catch-up thread, both engines) stops before it with DataLoss naming it; allowGaps folds across it, telling it", { timeout: 60_000 }, async () => {
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url, stream: "GAPS" });
  const dir = await mkdtemp(join(tmpdir(), "ck-gaps-"));
  let n = 0;
  const fresh = async () => ProjectionDb.open(join(dir, `p${n++}`));
  // Stopped before the log closes, whatever failed (a projector left following a closed log
  // spins looking for it again).
  const started: Projector[] = [];
  const projector = (db: ProjectionDb, opts: ConstructorParameters<typeof Projector>[3]) => {
    const p = new Projector(db, log, protos, opts);
    started.push(p);
    p.start();
    return p;
  };
  try {
    for (let i = 1; i <= 10; i++) await appendImage(log, `img${i}`);
    await log.jsm.streams.deleteMessage("GAPS", 5, false);
    await log.jsm.streams.deleteMessage("GAPS", 7, false);
    await log.jsm.streams.deleteMessage("GAPS", 8, false);
    const worker = (engine: "pull" | "nats.js"): BatchSource => (fromSeq, signal) => readInWorker({ url: log.url, stream: log.stream, fromSeq, signal, maxBatch: 3, engine });
    for (const [what, bulk] of [
      ["in-thread", undefined],
      ["pull", { source: worker("pull"), threshold: 0 }],
      ["nats.js", { source: worker("nats.js"), threshold: 0 }],
    ] as const) {
      const db = await fresh();
      const p = projector(db, { bulk });
      await assert.rejects(p.catchUp(), (err: Error) => {
        assert.ok(isLogGapError(err), `${what}: ${err.message}`);
        assert.equal(err.errorClass, "DataLoss");
        assert.deepEqual(err.gap, { from: 5, to: 5, next: 6 });
        assert.equal(
          err.message,
          "event log GAPS: sequence 5 was deleted from inside the log (message 6 after it is still there), so the state cannot be rebuilt exactly from it: the projection at sequence 4 does not fold past it, and a restart does not get past this (ck-replay rebuild --allow-gaps folds across it, without what the deleted messages did): data loss",
        );
        return true;
      });
      assert.equal(db.appliedSeq, 4, `${what}: what came before the gap is folded, nothing after it`);
      assert.deepEqual(imageNames(db), ["img1", "img2", "img3", "img4"]);
      // The catch-up thread's reader passed the gap on to the fold, which refused it: not a
      // failure of the thread that the main thread's reader then read past.
      assert.equal(p.bulkFailed, undefined, `${what}: ${p.bulkFailed?.message}`);
      await p.stop();

      // A projection stopped before the gap meets it again from its checkpoint.
      const again = projector(db, {});
      assert.ok(isLogGapError(await failure(again)));
      assert.equal(db.appliedSeq, 4);
      await again.stop();
      await db.close();

      // Allowed (ck-replay --allow-gaps): folded across, each gap told once.
      const db2 = await fresh();
      const told: LogGap[] = [];
      const p2 = projector(db2, { bulk, allowGaps: (g) => told.push(g) });
      await p2.catchUp();
      assert.equal(db2.appliedSeq, 10);
      assert.deepEqual(told, [{ from: 5, to: 5, next: 6 }, { from: 7, to: 8, next: 9 }], what);
      assert.deepEqual(imageNames(db2), ["img1", "img10", "img2", "img3", "img4", "img6", "img9"]);
      await p2.stop();
      await db2.close();
    }

    // A run bounded inside a gap: the messages before its until are missing, with one after
    // it; refused, and allowed, the checkpoint is the until.
    for (const allow of [false, true]) {
      const db = await fresh();
      const told: LogGap[] = [];
      const p = projector(db, { untilSeq: 7, allowGaps: allow ? (g) => told.push(g) : undefined });
      if (allow) {
        await p.catchUp();
        assert.equal(db.appliedSeq, 7);
        assert.deepEqual(told, [{ from: 5, to: 5, next: 6 }, { from: 7, to: 7, next: 9 }]);
      } else {
        await assert.rejects(p.catchUp(), (err: Error) => isLogGapError(err) && err.gap.from === 5);
      }
      await p.stop();
      await db.close();
    }
  } finally {
    for (const p of started) await p.stop();
    await log.close();
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
});

test("ckd whose projection is before a message deleted from inside the log: exits 70 saying so (not a restart's fix); ck-replay rebuild, show, base and compact refuse, naming it, and cut nothing; --allow-gaps folds across it with a warning, and a projection rebuilt so lets ckd start", { timeout: 180_000 }, async () => {
  const nats = await startTestNats();
  const writer = await EventLog.open({ url: nats.url });
  const d = await TestDaemon.start({ natsUrl: nats.url });
  try {
    const c = d.client("gaps");
    for (const i of [1, 2, 3]) await c.call("images", "Create", { image: { name: `before-${i}`, target } });
    c.close();
    assert.equal(await d.stop(), 0);
    const applied = (await writer.info()).state.last_seq;
    for (let i = 1; i <= 6; i++) await appendImage(writer, `after-${i}`);
    const deleted = applied + 2; // after-2
    await writer.jsm.streams.deleteMessage(writer.stream, deleted, false);
    const last = (await writer.info()).state.last_seq;

    // ckd at start: the same exit as before (70), with the right words.
    await assert.rejects(d.launch(), /ckd exited early \(70\)/);
    const fatal = d.logLines().find((l) => l.level === 60);
    assert.ok(fatal, d.logText().slice(-2000));
    assert.equal(fatal.msg, "the event log lost messages from inside it: the projection cannot go on, and a restart will not get past this");
    assert.match(fatal.err.message, new RegExp(`^event log CK_EVENTS: sequence ${deleted} was deleted from inside the log \\(message ${deleted + 1} after it is still there\\)`));
    assert.equal(fatal.err.errorClass, "DataLoss");
    assert.deepEqual(fatal.deleted, { from: deleted, to: deleted });
    assert.equal(fatal.applied, deleted - 1);
    assert.match(fatal.fix, new RegExp(`ck-replay rebuild --root ${d.root} --out ${rootPaths(d.root).meta} --allow-gaps`));
    assert.doesNotMatch(d.logText(), /a fresh start from the latest base gets past them/);

    const named = new RegExp(`sequence ${deleted} was deleted from inside the log .*data loss`);
    for (const args of [["rebuild"], ["show"], ["base"], ["compact", "--keep", "0", "--sync-wait", "0"]]) {
      const r = await runNode(CK_REPLAY, [...args, "--root", d.root]);
      assert.equal(r.code, 2, `${args[0]}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, named, args[0]);
    }
    const state = (await writer.info()).state;
    assert.equal(state.first_seq, 1, "compact cut nothing");
    assert.equal(state.messages, last - 1);
    const bases = await runNode(CK_REPLAY, ["bases", "--root", d.root]);
    assert.equal(bases.stdout.trim().split("\n").length, 1, `no base was stored: ${bases.stdout}`);

    // --allow-gaps: folded across, with a warning listing the gap.
    const warning = new RegExp(`^ck-replay: warning: the state was folded across messages deleted from inside the log CK_EVENTS \\(--allow-gaps\\): sequence ${deleted}; it lacks whatever they did`, "m");
    const r = await runNode(CK_REPLAY, ["rebuild", "--root", d.root, "--allow-gaps"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, warning);
    assert.match(r.stdout, new RegExp(`applied sequence ${last}\\n$`));
    const shown = await runNode(CK_REPLAY, ["show", "--root", d.root, "--namespace", "gaps", "--allow-gaps"]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stderr, warning);
    const images = JSON.parse(shown.stdout).namespaces[0].images.map((i: { name: string }) => i.name).sort();
    assert.deepEqual(images, ["after-1", "after-3", "after-4", "after-5", "after-6", "before-1", "before-2", "before-3"]);

    // The operator's way on, as ckd said it: its projection rebuilt across the gap.
    const fix = await runNode(CK_REPLAY, ["rebuild", "--root", d.root, "--out", rootPaths(d.root).meta, "--allow-gaps"]);
    assert.equal(fix.code, 0, fix.stderr);
    await d.launch();
    const c2 = d.client("gaps");
    try {
      const listed = (await c2.call("images", "List", {})).images.map((i: { name: string }) => i.name).sort();
      assert.deepEqual(listed, images);
      await c2.call("images", "Create", { image: { name: "after-fix", target } });
    } finally {
      c2.close();
    }
  } finally {
    await d.cleanup();
    await writer.close();
    await nats.cleanup();
  }
});

test("the log's last messages deleted: catch-up, rebuild and the sequencer's resync end (at the last stored message, the deleted tail passed); the next append follows; a fold that had not passed the tail then meets it as a gap", { timeout: 20_000 }, async () => {
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url, stream: "TAIL" });
  const dir = await mkdtemp(join(tmpdir(), "ck-tail-"));
  let p: Projector | undefined;
  try {
    for (let i = 1; i <= 6; i++) await appendImage(log, `img${i}`);
    await log.jsm.streams.deleteMessage("TAIL", 6, false);
    await log.jsm.streams.deleteMessage("TAIL", 5, false);
    assert.deepEqual(await log.end(), { first: 1, last: 6, lastStored: 4 });
    assert.deepEqual(await log.end(3), { first: 1, last: 6, lastStored: 3 });

    // A rebuild ends at the last stored message, the deleted tail passed: not a gap.
    const r = await rebuild(log, join(dir, "r1"));
    assert.equal(r.appliedSeq, 6);
    assert.deepEqual(r.gaps, []);
    assert.deepEqual(imageNames(r.db), ["img1", "img2", "img3", "img4"]);
    await r.db.close();

    // The sequencer's first command resyncs: the projector catches up (to 4), passes the
    // deleted tail, and the append (expecting the last sequence, 6) is stored at 7, applied.
    const db = await ProjectionDb.open(join(dir, "live"));
    p = new Projector(db, log, protos);
    p.start();
    const sequencer = new Sequencer(log, p, protos);
    const create = (s: Sequencer, name: string) => s.submit(imageHandlers.create({ namespace: "gaps", image: { name, labels: {}, target }, now: nowTimestamp() }));
    await create(sequencer, "img7");
    assert.equal(db.appliedSeq, 7, "the append after the deleted tail is numbered after it, and applied");
    assert.deepEqual(imageNames(db), ["img1", "img2", "img3", "img4", "img7"]);
    assert.equal(await sequencer.caughtUp(), true);

    // Deleted again, after this projection applied it: a new sequencer (as at a start) resyncs
    // and appends after it; the projector's own catch-up ends too.
    await log.jsm.streams.deleteMessage("TAIL", 7, false);
    assert.deepEqual(await p.catchUp(), { first: 1, last: 7, lastStored: 4 });
    await create(new Sequencer(log, p!, protos), "img8");
    assert.equal(db.appliedSeq, 8);
    assert.deepEqual(imageNames(db), ["img1", "img2", "img3", "img4", "img7", "img8"]);
    await p.stop();
    await db.close();

    // Now that a later message exists, the deleted ones are a gap like any other to a fold
    // that had not passed them.
    await assert.rejects(rebuild(log, join(dir, "r2")), (err: Error) => isLogGapError(err) && err.gap.from === 5 && err.gap.to === 7 && err.gap.next === 8);
    const r3 = await rebuild(log, join(dir, "r3"), {}, { allowGaps: true });
    assert.deepEqual(r3.gaps, [{ from: 5, to: 7, next: 8 }]);
    assert.equal(r3.appliedSeq, 8);
    assert.deepEqual(imageNames(r3.db), ["img1", "img2", "img3", "img4", "img8"]);
    await r3.db.close();
  } finally {
    await p?.stop();
    await log.close();
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
});

test("ckd whose log's last message was deleted while it was stopped (before it applied it): it starts, serves what is stored, writes after it; ck-replay rebuild, base and events end; after the write the deleted message is a gap to ck-replay", { timeout: 120_000 }, async () => {
  const nats = await startTestNats();
  const jsmLog = await EventLog.open({ url: nats.url });
  const d = await TestDaemon.start({ natsUrl: nats.url });
  try {
    const c = d.client("gaps");
    for (const i of [1, 2]) await c.call("images", "Create", { image: { name: `img${i}`, target } });
    c.close();
    assert.equal(await d.stop(), 0);
    // Appended by another writer while this ckd was stopped, then deleted: it never saw it.
    const { seq: last } = await appendImage(jsmLog, "img3");
    await jsmLog.jsm.streams.deleteMessage(jsmLog.stream, last, false);

    // ck-replay, ckd stopped: each command ends (they waited for ever for the last sequence).
    const rb = await runNode(CK_REPLAY, ["rebuild", "--root", d.root]);
    assert.equal(rb.code, 0, rb.stderr);
    assert.match(rb.stdout, new RegExp(`applied sequence ${last}\\n$`));
    const base = await runNode(CK_REPLAY, ["base", "--root", d.root]);
    assert.equal(base.code, 0, base.stderr);
    assert.match(base.stdout, new RegExp(`^stored base at sequence ${last} \\(`));
    const ev = await runNode(CK_REPLAY, ["events", "--root", d.root, "--namespace", "gaps", "--topic", "/images/create"]);
    assert.equal(ev.code, 0, ev.stderr);
    assert.deepEqual(ev.stdout.trim().split("\n").map((l) => JSON.parse(l.split(" ").slice(7).join(" ")).name), ["img1", "img2"]);

    const t0 = Date.now();
    await d.launch();
    assert.ok(Date.now() - t0 < 30_000);
    const caught = d.logLines().filter((l) => l.msg === "projection caught up").at(-1);
    assert.equal(caught?.applied, last, "the deleted tail is passed");
    const c2 = d.client("gaps");
    try {
      assert.deepEqual((await c2.call("images", "List", {})).images.map((i: { name: string }) => i.name).sort(), ["img1", "img2"]);
      await c2.call("images", "Create", { image: { name: "img4", target } });
      assert.deepEqual((await c2.call("images", "List", {})).images.map((i: { name: string }) => i.name).sort(), ["img1", "img2", "img4"]);
    } finally {
      c2.close();
    }
    assert.equal((await jsmLog.info()).state.last_seq, last + 1, "the write is numbered after the deleted message");
    // ckd itself goes on across restarts (its checkpoint is past the deleted message) ...
    await d.restart();
    assert.equal(await d.stop(), 0);
    // ... but to a fold from sequence 1 the deleted message is now inside the log.
    const refused = await runNode(CK_REPLAY, ["verify", "--root", d.root]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, new RegExp(`sequence ${last} was deleted from inside the log \\(message ${last + 1} after it is still there\\)`));
    const verified = await runNode(CK_REPLAY, ["verify", "--root", d.root, "--allow-gaps"]);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    assert.match(verified.stdout, /verify OK/);
    assert.match(verified.stderr, new RegExp(`warning: the rebuild it is compared with was folded across .*: sequence ${last};`));
  } finally {
    await d.cleanup();
    await jsmLog.close();
    await nats.cleanup();
  }
});

test("ck-replay compact --dry-run meets the gap the real compact would refuse on (DataLoss naming it, the same words and exit), from sequence 1 and from a base, and changes nothing; with --allow-gaps it lists it; a deleted tail is none; history cut past every base is refused alike", { timeout: 120_000 }, async () => {
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url, stream: "DRY" });
  const replay = (...args: string[]) => runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--stream", "DRY", "--keep", "0", "--sync-wait", "0", ...args]);
  const bases = async () => (await log.jsm.streams.list().next()).map((s) => s.config.name).filter((n) => n === "DRY_BASES").length;
  try {
    for (let i = 1; i <= 6; i++) await appendImage(log, `img${i}`);
    await log.jsm.streams.deleteMessage("DRY", 3, false);
    await log.jsm.streams.deleteMessage("DRY", 4, false);
    const before = (await log.info()).state;

    // From sequence 1: the fold the base needs would stop at 3.
    const named = "ck-replay: event log DRY: sequences 3 to 4 were deleted from inside the log (message 5 after them is still there), so the state cannot be rebuilt exactly from it: the projection at sequence 2 does not fold past them";
    const dry = await replay("--dry-run");
    assert.equal(dry.code, 2, dry.stdout + dry.stderr);
    assert.equal(dry.stdout, "");
    assert.ok(dry.stderr.startsWith(named), dry.stderr);
    assert.equal(await bases(), 0, "the dry run made no bases stream");
    const real = await replay();
    assert.equal(real.code, dry.code);
    assert.equal(real.stderr, dry.stderr, "the dry run refuses with the real run's words");
    assert.deepEqual((await log.info()).state, before, "nothing cut");
    assert.deepEqual(await new BaseStore(log).list(), [], "no base stored");

    // --allow-gaps: the dry run lists the gap (as the real run warns of it) and still changes nothing.
    const allowed = await replay("--dry-run", "--allow-gaps");
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.equal(allowed.stderr, "ck-replay: warning: the base would be folded across messages deleted from inside the log DRY (--allow-gaps): sequences 3 to 4; it lacks whatever they did, and is not one the log recorded\n");
    assert.match(allowed.stdout, /^dry run: would store a base at sequence 6; would remove 4 messages \(sequences 1 to 6\)/);
    assert.deepEqual((await log.info()).state, before);
    const cut = await replay("--allow-gaps");
    assert.equal(cut.code, 0, cut.stderr);
    assert.match(cut.stderr, /folded across messages deleted from inside the log DRY \(--allow-gaps\): sequences 3 to 4;/);
    assert.match(cut.stdout, /removed 4 messages; the log now holds no message \(next is 7\)/, "as many as the dry run said");

    // From the base at 6: 8 deleted between 7 and 9; 10 deleted at the end is a tail, not a gap.
    for (let i = 7; i <= 10; i++) await appendImage(log, `img${i}`);
    await log.jsm.streams.deleteMessage("DRY", 8, false);
    await log.jsm.streams.deleteMessage("DRY", 10, false);
    const after = (await log.info()).state;
    const dry2 = await replay("--dry-run");
    assert.equal(dry2.code, 2, dry2.stdout + dry2.stderr);
    assert.match(dry2.stderr, /^ck-replay: event log DRY: sequence 8 was deleted from inside the log \(message 9 after it is still there\), .* the projection at sequence 7 does not fold past it/);
    const real2 = await replay();
    assert.equal(real2.code, dry2.code);
    assert.equal(real2.stderr, dry2.stderr);
    assert.deepEqual((await log.info()).state, after, "nothing cut");

    // A deleted tail is no gap: a base at 10 (across 8, allowed), then 11 stored and 12 deleted.
    assert.equal((await replay("--allow-gaps")).code, 0);
    await appendImage(log, "img11");
    await appendImage(log, "img12");
    await log.jsm.streams.deleteMessage("DRY", 12, false);
    const dry3 = await replay("--dry-run");
    assert.equal(dry3.code, 0, dry3.stderr);
    assert.equal(dry3.stderr, "");
    assert.match(dry3.stdout, /^dry run: would store a base at sequence 12; would remove 1 message \(sequences 11 to 12\)/);
    const real3 = await replay();
    assert.equal(real3.code, 0, real3.stderr);
    assert.match(real3.stdout, /removed 1 message; /);

    // History cut from the front past every base (a purge, not compact): no base to start the
    // fold from, for the real run and the dry run alike.
    for (let i = 13; i <= 15; i++) await appendImage(log, `img${i}`);
    await log.purgeBefore(15);
    const dry4 = await replay("--dry-run");
    assert.equal(dry4.code, 2);
    assert.match(dry4.stderr, /the log's history before sequence 15 was compacted away/);
    const real4 = await replay();
    assert.equal(real4.code, 2);
    assert.equal(real4.stderr, dry4.stderr);
  } finally {
    await log.close();
    await nats.cleanup();
  }
});
