// Compaction: a base (the projected state at one sequence, kept in NATS beside the log) lets
// the log's history before it go. ckds behind the cut and ckds that lost their projection
// load the base and fold on; ck-replay rebuilds, verifies and shows past states from it, and
// says what it cannot show any more. Real nats-server, real ckds, real RocksDB.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { TestDaemon, runNode, CK, CKD, CK_REPLAY } from "../helpers/daemon.js";
import { startTestNats } from "../helpers/nats.js";
import { rootPaths } from "../../src/api/daemon.js";
import { CkError } from "../../src/errdefs/errdefs.js";

const target = (n: number) => ({ media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + n.toString(16).padStart(64, "0"), size: 100 + n });
const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from(JSON.stringify({ ociVersion: "1.0.2", process: { args: ["sh"] } })) };

/** Everything the API shows of the namespaces written here, in a comparable shape. */
async function state(d: TestDaemon): Promise<unknown> {
  const c = d.client("default");
  const out: Record<string, unknown> = {};
  try {
    const names = (await c.call("namespaces", "List", {})).namespaces.map((n: any) => ({ name: n.name, labels: n.labels }));
    out.namespaces = names.sort((a: any, b: any) => (a.name < b.name ? -1 : 1));
    for (const ns of ["alpha", "beta"]) {
      const cn = d.client(ns);
      try {
        out[`${ns}/images`] = (await cn.call("images", "List", {})).images.map((i: any) => [i.name, i.target.digest, i.labels]);
        out[`${ns}/containers`] = (await cn.call("containers", "List", {})).containers.map((x: any) => [x.id, x.image, x.labels]);
        out[`${ns}/leases`] = (await cn.call("leases", "List", {})).leases.map((l: any) => [l.id, l.labels]).sort();
      } finally {
        cn.close();
      }
    }
  } finally {
    c.close();
  }
  return out;
}

async function writeSome(d: TestDaemon, from: number, n: number): Promise<void> {
  for (const ns of ["alpha", "beta"]) {
    const c = d.client(ns);
    try {
      for (let i = from; i < from + n; i++) {
        await c.call("images", "Create", { image: { name: `reg.local/${ns}/app:${i}`, target: target(i), labels: { i: String(i) } } });
        if (i % 3 === 0) await c.call("images", "Delete", { name: `reg.local/${ns}/app:${i}` });
        if (i % 4 === 1 && i % 3 !== 0) await c.call("images", "Update", { image: { name: `reg.local/${ns}/app:${i}`, labels: { touched: "yes" } }, update_mask: { paths: ["labels"] } });
        if (i % 5 === 0) await c.call("containers", "Create", { container: { id: `c-${i}`, image: `reg.local/${ns}/app:${i}`, runtime: { name: "io.containerd.runc.v2" }, spec, labels: { n: String(i) } } });
        if (i % 7 === 0) await c.call("leases", "Create", { id: `lease-${i}`, labels: { why: "test" } });
      }
    } finally {
      c.close();
    }
  }
}

test("compaction: a base at the last sequence, the history before it gone; ckds behind the cut or without a projection load the base, ck-replay rebuilds and verifies from it", async () => {
  const nats = await startTestNats();
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  const d1 = await TestDaemon.start({ natsUrl: nats.url });
  const d2 = await TestDaemon.start({ natsUrl: nats.url });
  try {
    const c = d1.client("default");
    await c.call("namespaces", "Create", { namespace: { name: "alpha", labels: { team: "a" } } });
    await c.call("namespaces", "Create", { namespace: { name: "beta" } });
    await c.call("namespaces", "Create", { namespace: { name: "gone" } });
    await c.call("namespaces", "Delete", { name: "gone" });
    c.close();
    await writeSome(d1, 0, 30);
    // The second ckd stops here: it will be behind the cut.
    assert.equal(await d2.stop(), 0);
    await writeSome(d1, 30, 20);
    const before = (await jsm.streams.info("CK_EVENTS")).state;
    assert.equal(before.first_seq, 1);

    // Compact while the first ckd runs, found from its root's record.
    const r = await runNode(CK_REPLAY, ["compact", "--root", d1.root, "--keep", "0", "--sync-wait", "0"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const L = before.last_seq;
    assert.match(r.stdout, new RegExp(`base at sequence ${L} \\(`));
    assert.match(r.stdout, new RegExp(`removed ${L} messages; the log now holds no message \\(next is ${L + 1}\\)`));
    let now = (await jsm.streams.info("CK_EVENTS")).state;
    assert.equal(now.first_seq, L + 1);
    assert.equal(now.messages, 0);
    const bases = await runNode(CK_REPLAY, ["bases", "--nats", nats.url]);
    assert.equal(bases.code, 0, bases.stderr);
    assert.match(bases.stdout, /^SEQUENCE\s+AT\s+RECORDS\s+BYTES\s+FORMAT\s+TAKEN\n/);
    assert.equal(bases.stdout.trim().split("\n").length, 2, bases.stdout);
    assert.match(bases.stdout, new RegExp(`\\n${L}\\s`));
    // Asking again at the same sequence stores nothing new.
    const again = await runNode(CK_REPLAY, ["base", "--nats", nats.url]);
    assert.match(again.stdout, new RegExp(`^already stored: base at sequence ${L} `));

    // The running ckd goes on: writes after the cut, read back at once.
    await writeSome(d1, 50, 10);
    const want = await state(d1);

    // The stopped ckd is behind the cut: it loads the base and folds the rest.
    await d2.launch();
    assert.deepEqual(await state(d2), want);
    const loaded = d2.logLines().find((l) => l.msg === "loading the projection from a base: the log's history before it was compacted");
    assert.ok(loaded, "d2 did not say it loaded a base");
    assert.equal(loaded.base, L);

    // Determinism: d1 folded everything from sequence 1 (it never stopped); a rebuild from the
    // base plus the messages after it must equal that projection byte for byte.
    assert.equal(await d1.stop(), 0);
    const v0 = await runNode(CK_REPLAY, ["verify", "--root", d1.root]);
    assert.equal(v0.code, 0, v0.stdout + v0.stderr);
    assert.match(v0.stdout, /verify OK/);
    // A ckd whose projection is lost rebuilds from the base too, and ck-replay verify agrees.
    await rm(rootPaths(d1.root).meta, { recursive: true, force: true });
    await d1.launch();
    assert.deepEqual(await state(d1), want);
    assert.equal(await d1.stop(), 0);
    const v = await runNode(CK_REPLAY, ["verify", "--root", d1.root]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.match(v.stdout, /verify OK/);
    // The events from before the cut are gone, and said to be.
    const evs = await runNode(CK_REPLAY, ["events", "--nats", nats.url, "--from", "1"]);
    assert.equal(evs.code, 0, evs.stderr);
    const firstNow = (await jsm.streams.info("CK_EVENTS")).state.first_seq;
    assert.match(evs.stderr, new RegExp(`the log's history before sequence ${firstNow} was compacted away; events from ${firstNow} on`));
    const seqs = evs.stdout.split("\n").filter(Boolean).map((l) => Number(l.split(" ")[0]));
    assert.equal(seqs[0], firstNow, evs.stdout);
    assert.ok(seqs.every((s) => s >= firstNow));
    // Wholly before the cut: nothing to show, and the cut said.
    const gone = await runNode(CK_REPLAY, ["events", "--nats", nats.url, "--from", "1", "--to", "2"]);
    assert.equal(gone.stdout, "");
    assert.match(gone.stderr, /compacted away/);
    const rb = await runNode(CK_REPLAY, ["rebuild", "--nats", nats.url]);
    assert.equal(rb.code, 0, rb.stderr);
    // The rate is the fold's alone: the base's load is timed on its own.
    assert.match(rb.stdout, new RegExp(`from the base at sequence ${L} \\(loaded in \\d+\\.\\d{3} s\\) to a temporary directory \\(removed; --out DIR keeps one\\) in \\d+\\.\\d{3} s \\(\\d+ events/s\\), applied sequence ${(await jsm.streams.info("CK_EVENTS")).state.last_seq}`));

    // Past states: at the base and after it, yes; before it, a clear refusal.
    const atBase = await runNode(CK_REPLAY, ["show", "--nats", nats.url, "--namespace", "alpha", "--until", String(L)]);
    assert.equal(atBase.code, 0, atBase.stderr);
    assert.equal(JSON.parse(atBase.stdout).sequence, L);
    const tooOld = await runNode(CK_REPLAY, ["show", "--nats", nats.url, "--until", String(L - 5)]);
    assert.equal(tooOld.code, 2);
    assert.match(tooOld.stderr, new RegExp(`history before sequence ${L + 1} was compacted away: the earliest state it can show is at sequence ${L}`));

    // Bad input: refused by name, nothing cut, no base written.
    const basesBefore = (await jsm.streams.info("CK_EVENTS_BASES")).state.messages;
    for (const [flag, v, unit] of [["--keep", "-1", "messages"], ["--keep", "x", "messages"], ["--keep", "1.5", "messages"], ["--sync-wait", "soon", "seconds"]]) {
      const bad = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, flag!, v!]);
      assert.equal(bad.code, 2, bad.stdout);
      assert.match(bad.stderr, new RegExp(`${flag}: expected a number of ${unit} \\(0 or more\\), got "${v!.replace(".", "\\.")}"`));
    }
    // Another compaction at work (its lock fresh): refused, nothing cut, no base written.
    const lockAck = await jetstream(nc).publish("ck.bases.CK_EVENTS.lock", JSON.stringify({ holder: "someone else", since: new Date().toISOString() }));
    const busy = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--sync-wait", "0"]);
    assert.equal(busy.code, 2, busy.stdout);
    assert.match(busy.stderr, /another base or compaction is at work on CK_EVENTS \(someone else, last seen [^)]+\); try again once it is done, or pass --break-lock if it died/);
    await jetstream(nc).publish("ck.bases.CK_EVENTS.lock", JSON.stringify({ holder: "someone else", since: new Date().toISOString(), released: true }), { expect: { lastSubjectSequence: lockAck.seq } });
    const basesAfterRefusals = (await jsm.streams.info("CK_EVENTS_BASES")).state.messages;
    assert.equal(basesAfterRefusals, basesBefore + 2, "only the two lock messages of the test were added");
    const mid = (await jsm.streams.info("CK_EVENTS")).state;
    assert.equal(mid.first_seq, L + 1);

    // A second compaction keeping some history, while d1 takes writes: every acknowledged
    // write survives, and the old base, which can no longer start a rebuild, goes.
    await d1.launch();
    await writeSome(d1, 60, 5);
    // A writer that stopped half way left a chunk no marker names: the next compaction removes it.
    await jetstream(nc).publish("ck.bases.CK_EVENTS.chunks.0123456789abcdef01234567", new Uint8Array(100));
    const acked: string[] = [];
    let writing = true;
    const writer = (async () => {
      const cw = d1.client("beta");
      try {
        for (let i = 0; writing; i++) {
          await cw.call("images", "Create", { image: { name: `reg.local/during:${i}`, target: target(i) } });
          acked.push(`reg.local/during:${i}`);
        }
      } finally {
        cw.close();
      }
    })();
    const r2 = await runNode(CK_REPLAY, ["compact", "--root", d1.root, "--keep", "3", "--sync-wait", "2"]);
    writing = false;
    await writer;
    assert.equal(r2.code, 0, r2.stdout + r2.stderr);
    assert.match(r2.stdout, /^waiting [12] s until nats-server has synced the base to disk/m);
    const B2 = Number(/base at sequence (\d+) /.exec(r2.stdout)![1]);
    assert.match(r2.stdout, new RegExp(`the log now holds sequences ${B2 - 2} to \\d+; 1 older base removed`));
    assert.ok(acked.length > 0, "no write was acknowledged during the compaction");
    now = (await jsm.streams.info("CK_EVENTS")).state;
    assert.equal(now.first_seq, B2 - 2);
    const chunkSubjects = (await jsm.streams.info("CK_EVENTS_BASES", { subjects_filter: "ck.bases.CK_EVENTS.chunks.>" })).state.subjects ?? {};
    assert.deepEqual(Object.keys(chunkSubjects).length, 1, JSON.stringify(chunkSubjects));
    assert.ok(!("ck.bases.CK_EVENTS.chunks.0123456789abcdef01234567" in chunkSubjects));
    const bases2 = await runNode(CK_REPLAY, ["bases", "--nats", nats.url]);
    assert.equal(bases2.stdout.trim().split("\n").length, 2, bases2.stdout);
    assert.match(bases2.stdout, new RegExp(`\\n${B2}\\s`));
    const want2 = await state(d1);
    assert.equal(await d1.stop(), 0);
    await rm(rootPaths(d1.root).meta, { recursive: true, force: true });
    await d1.launch();
    const c1 = d1.client("beta");
    const names = new Set((await c1.call("images", "List", { filters: ['name~="^reg.local/during:"'] })).images.map((i: any) => i.name));
    c1.close();
    assert.deepEqual(acked.filter((n) => !names.has(n)), [], "acknowledged writes lost");
    assert.deepEqual(await state(d1), want2);
    // A point inside the kept history but before the base: no base reaches back there.
    const inKept = await runNode(CK_REPLAY, ["show", "--nats", nats.url, "--until", String(B2 - 1)]);
    assert.equal(inKept.code, 2);
    assert.match(inKept.stderr, /the earliest state it can show is at sequence/);
    // Events from before the cut: refused (OutOfRange), not a history with a hole at its start,
    // said in the flag the user gave (not ckd's metadata key), with where the log now starts.
    const first = B2 - 2;
    const ev = await runNode(CK, ["--address", d1.address, "events", "--namespace", "alpha", "--from-seq", "1"]);
    assert.equal(ev.code, 1);
    assert.equal(
      ev.stderr,
      `ck: --from-seq 1: the log now starts at sequence ${first}, the history before it compacted away (ck-replay compact): ask for --from-seq ${first} or later, or leave --from-seq out for new events only: out of range\n`,
    );
    const evSince = await runNode(CK, ["--address", d1.address, "events", "--since", "2020-01-01T00:00:00Z"]);
    assert.equal(evSince.code, 1);
    assert.match(
      evSince.stderr,
      new RegExp(`^ck: --since 2020-01-01T00:00:00Z: the log now starts at sequence ${first}, the history before it compacted away \\(ck-replay compact\\), events up to (\\S+) with it: ask for a --since after \\1, or --from-seq ${first}: out of range\n$`),
    );
    // Asked for as the metadata ck sends: a client of the API is told in its keys, and given
    // where the log starts (trailing metadata ck-first-seq) to act on.
    const api = d1.client("alpha");
    try {
      for (const [md, said] of [
        [{ "ck-from-seq": "1" }, new RegExp(`^ck-from-seq 1: the log now starts at sequence ${first}, the history before it compacted away \\(ck-replay compact\\); subscribe with ck-from-seq ${first} or later \\(ck events --from-seq ${first}\\), or without it for new events only: out of range$`)],
        [{ "ck-since": "2020-01-01T00:00:00Z" }, new RegExp(`^ck-since 2020-01-01T00:00:00.000Z: the log now starts at sequence ${first}, .* subscribe with a later ck-since \\(ck events --since\\), or with ck-from-seq ${first}: out of range$`)],
      ] as const) {
        const refused = await (async () => {
          for await (const _ of api.stream("events", "Subscribe", {}, { metadata: md })) assert.fail("an event delivered");
        })().then(
          () => assert.fail("not refused"),
          (err: unknown) => err as CkError,
        );
        assert.ok(refused instanceof CkError, String(refused));
        assert.equal(refused.errorClass, "OutOfRange");
        assert.match(refused.message, said);
        assert.equal(refused.facts["ck-first-seq"], String(first), JSON.stringify(md));
      }
    } finally {
      api.close();
    }

    // A marker whose bytes do not add up is passed over for the next base, by a rebuild and by
    // a compaction, which writes a good one instead of cutting on it.
    const js = jetstream(nc);
    const real = JSON.parse(new TextDecoder().decode((await jsm.streams.getMessage("CK_EVENTS_BASES", { last_by_subj: "ck.bases.CK_EVENTS.markers" }))!.data));
    const cA = d1.client("alpha");
    await cA.call("images", "Create", { image: { name: "reg.local/after-base", target: target(999) } });
    cA.close();
    const L3 = (await jsm.streams.info("CK_EVENTS")).state.last_seq;
    await js.publish("ck.bases.CK_EVENTS.markers", JSON.stringify({ ...real, seq: L3, sha256: "0".repeat(64) }));
    const damagedMsg = `base at sequence ${L3} \\(${real.id}\\) is damaged: read ${real.chunks} chunks, ${real.bytes} bytes, sha256 ${real.sha256}; its marker says ${real.chunks}, ${real.bytes}, 0{64}`;
    const passed = await runNode(CK_REPLAY, ["rebuild", "--nats", nats.url]);
    assert.equal(passed.code, 0, passed.stdout + passed.stderr);
    assert.match(passed.stdout, new RegExp(`from the base at sequence ${real.seq} `));
    assert.match(passed.stderr, new RegExp(`passed over: ${damagedMsg}`));
    // The dry run reads the stored base back as the real run does: not "a base is stored".
    const dry3 = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--dry-run"]);
    assert.equal(dry3.code, 0, dry3.stdout + dry3.stderr);
    assert.match(dry3.stdout, new RegExp(`^dry run: would store a base at sequence ${L3} in place of the damaged one stored there; `));
    assert.match(dry3.stderr, new RegExp(`warning: ${damagedMsg}`));
    const r3 = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--sync-wait", "0"]);
    assert.equal(r3.code, 0, r3.stdout + r3.stderr);
    assert.match(r3.stdout, new RegExp(`^base at sequence ${L3} `));
    const after = await runNode(CK_REPLAY, ["rebuild", "--nats", nats.url]);
    assert.equal(after.code, 0, after.stdout + after.stderr);
    assert.match(after.stdout, new RegExp(`rebuilt 0 events from the base at sequence ${L3} `));
    assert.equal(after.stderr, "");
  } finally {
    await d1.cleanup();
    await d2.cleanup();
    await nc.close();
    await nats.cleanup();
  }
});

test("a running projection behind a compaction stops with a gap, not folding on past the missing messages", async () => {
  const { EventLog } = await import("../../src/eventstore/log.js");
  const { ProjectionDb } = await import("../../src/projections/db.js");
  const { Projector } = await import("../../src/projections/projector.js");
  const { loadProtos } = await import("../../src/protos/protos.js");
  const { mkdtemp } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const nats = await startTestNats();
  const dir = await mkdtemp(join(tmpdir(), "ck-gap-"));
  const log = await EventLog.open({ url: nats.url, stream: "GAP_TEST" });
  const db = await ProjectionDb.open(dir);
  try {
    const append = (i: number) => log.append("containerd.io.gap.x", Buffer.from(String(i)), { msgId: `m${i}`, headers: { "Ck-Origin": "publish" } });
    for (let i = 1; i <= 3; i++) await append(i);
    const first = new Projector(db, log, loadProtos());
    first.start();
    await first.catchUp();
    await first.stop();
    assert.equal(db.appliedSeq, 3);
    for (let i = 4; i <= 10; i++) await append(i);
    assert.equal(await log.purgeBefore(8), 7);
    const failed = new Promise<Error>((resolve) => {
      const p = new Projector(db, log, loadProtos(), { onError: resolve });
      p.start();
    });
    const err = await failed;
    assert.match(err.message, /^projection gap: applied 3, next message in the log 8 \(the messages between were removed, by ck-replay compact or a purge: a fresh start from the latest base gets past them\)$/);
    assert.equal(db.appliedSeq, 3, "folded past the gap");
  } finally {
    await db.close();
    await log.close();
    await rm(dir, { recursive: true, force: true });
    await nats.cleanup();
  }
});

test("a ckd that cannot start from a base (only bases of another projection format) refuses to start and leaves its projection as it was", async () => {
  const { ProjectionDb } = await import("../../src/projections/db.js");
  const nats = await startTestNats();
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  const { freePort } = await import("../../src/eventstore/nats-server.js");
  const port = await freePort();
  const d = await TestDaemon.start({ natsUrl: nats.url, extraArgs: ["--metrics-address", `127.0.0.1:${port}`] });
  try {
    await writeSome(d, 0, 10);
    const L0 = (await jsm.streams.info("CK_EVENTS")).state.last_seq;
    // The default --keep (1,000) keeps a short log whole: said without a sequence before 1.
    const kept = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--dry-run"]);
    assert.equal(
      kept.stdout,
      `dry run: would store a base at sequence ${L0}; nothing would be cut (with --keep 1000, every message from the log's first, sequence 1, stays); 0 older bases would be removed; nothing was changed\n`,
    );
    const dry = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--dry-run"]);
    assert.equal(
      dry.stdout,
      `dry run: would store a base at sequence ${L0}; would remove ${L0} messages (sequences 1 to ${L0}), cutting after the base at sequence ${L0}; the log would hold no message (next is ${L0 + 1}); 0 older bases would be removed; nothing was changed\n`,
    );
    const r = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--sync-wait", "0"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // The metrics show the cut: the log's first sequence is past its last.
    const text = await (await fetch(`http://127.0.0.1:${port}/v1/metrics`)).text();
    const gauge = (name: string) => Number(new RegExp(`^${name}\\{stream="CK_EVENTS"\\} (\\d+)$`, "m").exec(text)?.[1]);
    assert.equal(gauge("ck_log_first_sequence"), gauge("ck_log_last_sequence") + 1, text);
    assert.equal(await d.stop(), 0);
    // The only base is now one of a format this ck does not read.
    const m = (await jsm.streams.getMessage("CK_EVENTS_BASES", { last_by_subj: "ck.bases.CK_EVENTS.markers" }))!;
    const marker = JSON.parse(new TextDecoder().decode(m.data));
    await jsm.streams.deleteMessage("CK_EVENTS_BASES", m.seq);
    await jetstream(nc).publish("ck.bases.CK_EVENTS.markers", JSON.stringify({ ...marker, format: 99 }));
    // The projection was written by an older ck (another format): it would be rebuilt, and
    // the history it would be rebuilt from is gone.
    const meta = rootPaths(d.root).meta;
    let db = await ProjectionDb.open(meta);
    const applied = db.appliedSeq;
    const identity = (await db.logIdentity())!;
    await db.setLogIdentity({ ...identity, format: 1 });
    await db.close();
    await assert.rejects(d.launch(), (err: Error) => {
      assert.match(err.message, /the projection \(projection was built in format 1, this ckd writes format \d+\) cannot catch up with the log: the log's history before sequence \d+ was compacted away, and its base is in projection format 99 \(a newer format: written by a later ck\); this ck reads format \d+ and has no migration from it/);
      return true;
    });
    db = await ProjectionDb.open(meta);
    try {
      assert.equal(db.appliedSeq, applied, "the projection was removed or changed");
      assert.equal((await db.logIdentity())!.format, 1);
    } finally {
      await db.close();
    }
  } finally {
    await d.cleanup();
    await nc.close();
    await nats.cleanup();
  }
});

test("a base of an older projection format loads through the migrations from it, record by record; a failing migration leaves the projection as it was", async () => {
  const { ProjectionDb, PROJECTION_FORMAT } = await import("../../src/projections/db.js");
  const { EventLog } = await import("../../src/eventstore/log.js");
  const { BaseStore } = await import("../../src/eventstore/base-store.js");
  const { loadBestBase } = await import("../../src/projections/base.js");
  const { keys } = await import("../../src/projections/views.js");
  const { mkdtemp } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const nats = await startTestNats();
  const d = await TestDaemon.start({ natsUrl: nats.url });
  const dir = await mkdtemp(join(tmpdir(), "ck-migrate-"));
  const log = await EventLog.open({ url: nats.url, stream: "CK_EVENTS" });
  try {
    await writeSome(d, 0, 12);
    const r = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--sync-wait", "0"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const live = rootPaths(d.root).meta;
    assert.equal(await d.stop(), 0);
    // What the base holds, as ckd's projection has it (format PROJECTION_FORMAT).
    const before = await ProjectionDb.open(live);
    const records = [...before.scan("")].filter(([k]) => !k.startsWith("\u0000meta"));
    await before.close();
    const images = records.filter(([k]) => k.startsWith("img\u0000"));
    assert.ok(images.length > 5 && records.length > images.length, `${images.length} images of ${records.length} records`);

    const info = await log.info();
    const identity = { stream: "CK_EVENTS", created: String(info.created) };
    const wanted = { firstSeq: info.state.first_seq, identity, untilSeq: info.state.last_seq };
    const next = PROJECTION_FORMAT + 1;
    // A next format that labels every image and moves the alpha namespace's to a new name.
    const migrations = new Map([
      [
        PROJECTION_FORMAT,
        {
          record: (k: string, v: unknown): [string, unknown][] => {
            if (!k.startsWith("img\u0000")) return [[k, v]];
            const img = v as { name: string; labels: Record<string, string> };
            return [[k.replace("img\u0000alpha\u0000", "img\u0000alpha2\u0000"), { ...img, labels: { ...img.labels, migrated: String(next) } }]];
          },
        },
      ],
    ]);
    const store = new BaseStore(log);
    // Without a migration: refused by name.
    await assert.rejects(loadBestBase(join(dir, "none"), store, { ...wanted, format: next, migrations: new Map() }, identity), new RegExp(`its base is in projection format ${PROJECTION_FORMAT}; this ck reads format ${next} and has no migration from it`));

    const loaded = await loadBestBase(join(dir, "p"), store, { ...wanted, format: next, migrations }, identity);
    try {
      assert.equal(loaded.db.appliedSeq, loaded.base.seq);
      assert.equal((await loaded.db.logIdentity())!.format, next, "the projection says the format it is in now");
      const after = [...loaded.db.scan("")].filter(([k]) => !k.startsWith("\u0000meta"));
      assert.equal(after.length, records.length);
      const expected = records.map(([k, v]) => migrations.get(PROJECTION_FORMAT)!.record(k, v)[0]!).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      assert.deepEqual(after, expected);
      const moved = after.filter(([k]) => k.startsWith(keys.imagesPrefix("alpha2")));
      assert.ok(moved.length > 0 && moved.every(([, v]) => (v as { labels: Record<string, string> }).labels.migrated === String(next)));
      assert.equal(after.filter(([k]) => k.startsWith(keys.imagesPrefix("alpha"))).length, 0);
    } finally {
      await loaded.db.close();
    }

    // A migration that fails on one record: the load fails naming it, and the projection
    // already at the location is left as it was.
    const failing = new Map([[PROJECTION_FORMAT, { record: (k: string, v: unknown): [string, unknown][] => {
      if (k === keys.image("beta", "reg.local/beta/app:4")) throw new Error("cannot read this one");
      return [[k, v]];
    } }]]);
    await assert.rejects(
      loadBestBase(join(dir, "p"), store, { ...wanted, format: next, migrations: failing }, identity),
      /base at sequence \d+: migrating record "img\\u0000beta\\u0000reg.local\/beta\/app:4" from format \d+ to \d+: cannot read this one/,
    );
    const still = await ProjectionDb.open(join(dir, "p"));
    try {
      assert.equal((await still.logIdentity())!.format, next);
      assert.ok(still.getSync(keys.image("alpha2", "reg.local/alpha/app:1")), "the earlier load is still there");
    } finally {
      await still.close();
    }
  } finally {
    await log.close();
    await d.cleanup();
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
});

test("the bases' lock: a holder that stops refreshing is taken over, its next step fails; one killed outright is taken over at once; --break-lock takes over a fresh one; a ckd passes over a damaged base at start", async () => {
  const { EventLog } = await import("../../src/eventstore/log.js");
  const { BaseStore } = await import("../../src/eventstore/base-store.js");
  const nats = await startTestNats();
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  const d = await TestDaemon.start({ natsUrl: nats.url });
  const log = await EventLog.open({ url: nats.url });
  try {
    await writeSome(d, 0, 8);
    const store = new BaseStore(log);
    const first = await store.lock("first holder");
    await assert.rejects(store.lock("second holder"), /another base or compaction is at work on CK_EVENTS \(first holder, last seen /);
    // Stale (here: at once): taken over; the first holder's next step is refused.
    const second = await store.lock("second holder", { staleMs: 0 });
    await assert.rejects(first.refresh(), /the lock on CK_EVENTS's bases was taken over/);
    await second.refresh();
    // A compaction while the second holds it: refused; with --break-lock: done.
    const busy = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--sync-wait", "0"]);
    assert.equal(busy.code, 2, busy.stdout);
    assert.match(busy.stderr, /\(second holder, last seen /);
    assert.equal((await jsm.streams.info("CK_EVENTS")).state.first_seq, 1, "cut while refused");
    const broke = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--sync-wait", "0", "--break-lock"]);
    assert.equal(broke.code, 0, broke.stdout + broke.stderr);
    await assert.rejects(second.refresh(), /taken over/);
    const L = (await jsm.streams.info("CK_EVENTS")).state.last_seq;
    assert.equal((await jsm.streams.info("CK_EVENTS")).state.first_seq, L + 1);

    // A newer marker at the same sequence whose bytes do not add up: ckd's start passes it over.
    const m = (await jsm.streams.getMessage("CK_EVENTS_BASES", { last_by_subj: "ck.bases.CK_EVENTS.markers" }))!;
    const marker = JSON.parse(new TextDecoder().decode(m.data));
    await jetstream(nc).publish("ck.bases.CK_EVENTS.markers", JSON.stringify({ ...marker, sha256: "f".repeat(64) }));
    const want = await state(d);
    assert.equal(await d.stop(), 0);
    await rm(rootPaths(d.root).meta, { recursive: true, force: true });
    await d.launch();
    assert.deepEqual(await state(d), want);
    const loaded = d.logLines().find((l) => l.msg === "loading the projection from a base: the log's history before it was compacted");
    assert.ok(loaded, "no base loaded");
    assert.equal(loaded.base, L);
    assert.equal(loaded.passedOver.length, 1);
    assert.match(loaded.passedOver[0], new RegExp(`base at sequence ${L} \\(${marker.id}\\) is damaged: .* its marker says \\d+, \\d+, f{64}`));

    // Chunks that do not sit at consecutive sequences (another message between) read back whole.
    const parts = [new Uint8Array(3000).fill(1), new Uint8Array(3000).fill(2), new Uint8Array(10).fill(3)];
    const interleaved = await store.write(
      { seq: 1, seqTime: new Date().toISOString(), stream: "CK_EVENTS", created: "test", format: 0 },
      (async function* () {
        for (const p of parts) {
          yield p;
          await jetstream(nc).publish("ck.bases.CK_EVENTS.chunks.between", new Uint8Array(5));
        }
      })(),
      () => 0,
    );
    const back: number[] = [];
    for await (const c of store.chunks(interleaved)) back.push(...c);
    assert.deepEqual(back, parts.flatMap((p) => [...p]));
    // ...and a chunk missing in the middle is a damaged base, not a shorter one.
    await jsm.streams.deleteMessage("CK_EVENTS_BASES", interleaved.firstChunk + 2);
    await assert.rejects(store.verify(interleaved), /is damaged: read 2 chunks, 3010 bytes/);

    // A compaction stopped (SIGTERM, as ckd stops its scheduled one) while it waits for the
    // sync: nothing cut, and its lock released on the way out.
    await writeSome(d, 20, 2);
    const waiting = spawn(process.execPath, [CK_REPLAY, "compact", "--nats", nats.url, "--keep", "0", "--sync-wait", "60"], { stdio: ["ignore", "pipe", "pipe"] });
    let waitOut = "";
    await new Promise<void>((resolve, reject) => {
      waiting.stdout!.on("data", (b: Buffer) => {
        waitOut += b;
        if (/^waiting \d+ s until nats-server has synced/m.test(waitOut)) resolve();
      });
      waiting.once("exit", (code) => reject(new Error(`ck-replay exited ${code} before waiting: ${waitOut}`)));
    });
    const firstBefore = (await jsm.streams.info("CK_EVENTS")).state.first_seq;
    const exited = new Promise<number | null>((r) => waiting.once("exit", (code) => r(code)));
    waiting.kill("SIGTERM");
    assert.equal(await exited, 143);
    assert.equal((await jsm.streams.info("CK_EVENTS")).state.first_seq, firstBefore, "cut after SIGTERM");
    const lockNow = JSON.parse(new TextDecoder().decode((await jsm.streams.getMessage("CK_EVENTS_BASES", { last_by_subj: "ck.bases.CK_EVENTS.lock" }))!.data));
    assert.equal(lockNow.released, true, JSON.stringify(lockNow));

    // One killed outright (SIGKILL: no release) leaves its lock, which names its process: the
    // next compaction on this machine sees that process gone and takes the lock over at once.
    const killed = spawn(process.execPath, [CK_REPLAY, "compact", "--nats", nats.url, "--keep", "0", "--sync-wait", "60"], { stdio: ["ignore", "pipe", "pipe"] });
    let killedOut = "";
    await new Promise<void>((resolve, reject) => {
      killed.stdout!.on("data", (b: Buffer) => {
        killedOut += b;
        if (/^waiting \d+ s until nats-server has synced/m.test(killedOut)) resolve();
      });
      killed.once("exit", (code) => reject(new Error(`ck-replay exited ${code} before waiting: ${killedOut}`)));
    });
    const killedExit = new Promise<NodeJS.Signals | null>((r) => killed.once("exit", (_code, signal) => r(signal)));
    killed.kill("SIGKILL");
    assert.equal(await killedExit, "SIGKILL");
    const left = JSON.parse(new TextDecoder().decode((await jsm.streams.getMessage("CK_EVENTS_BASES", { last_by_subj: "ck.bases.CK_EVENTS.lock" }))!.data));
    assert.equal(left.released, undefined, "the killed compaction's lock is left held");
    assert.equal(left.pid, killed.pid);
    assert.equal((await jsm.streams.info("CK_EVENTS")).state.first_seq, firstBefore, "cut by the killed compaction");
    const afterKill = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--sync-wait", "0"]);
    assert.equal(afterKill.code, 0, afterKill.stdout + afterKill.stderr);
    assert.match(afterKill.stdout, new RegExp(`warning: took over the bases' lock from ck-replay compact on [^,]+, pid ${killed.pid} \\(no longer running; last seen `));
    assert.ok((await jsm.streams.info("CK_EVENTS")).state.first_seq > firstBefore, "the next compaction cut the log");

    // A base that cannot be made durable (its server's store cannot be synced) cuts nothing.
    const { compact } = await import("../../tools/replay/replay.js");
    await writeSome(d, 8, 3);
    const before = (await jsm.streams.info("CK_EVENTS")).state;
    await assert.rejects(compact(log, { keep: 0, storeDir: join(nats.dir, "no-such-store"), syncWaitMs: 0 }), /sync --file-system .*no-such-store/);
    const after = (await jsm.streams.info("CK_EVENTS")).state;
    assert.equal(after.first_seq, before.first_seq);
    assert.equal(after.messages, before.messages);
  } finally {
    await log.close();
    await d.cleanup();
    await nc.close();
    await nats.cleanup();
  }
});

test("ckd compacts on a schedule (compact_interval_seconds) through ck-replay, and refuses bad schedule settings before touching the root", async () => {
  const { mkdtemp, writeFile } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { existsSync } = await import("node:fs");
  // Bad values, by flag and by config key: refused by name, no root made.
  const none = join(await mkdtemp(join(tmpdir(), "ck-compact-bad-")), "root");
  const conf = join(dirname(none), "ckd.toml");
  for (const [args, re] of [
    [["--compact-interval", "soon"], /--compact-interval "soon" must be a whole number >= 0/],
    [["--compact-keep", "-3"], /--compact-keep "-3" must be a whole number >= 0/],
    [["--compact-keep-bases", "0"], /--compact-keep-bases must be 1 or more/],
    [["--config", conf + ".keepbases"], /compact_keep_bases must be a whole number >= 1, got 0/],
    [["--config", conf], /compact_interval_seconds must be a whole number >= 0, got "daily"/],
  ] as const) {
    await writeFile(conf, `compact_interval_seconds = "daily"\n`);
    await writeFile(conf + ".keepbases", `compact_keep_bases = 0\n`);
    const r = await runNode(CKD, ["--root", none, "--address", join(dirname(none), "s.sock"), ...args]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, re);
    assert.equal(existsSync(none), false, "root made for a refused setting");
  }
  await rm(dirname(none), { recursive: true, force: true });

  // ckd's own nats-server: the scheduled run syncs its store, no waiting.
  const d = await TestDaemon.start({ extraArgs: ["--compact-interval", "2", "--compact-keep", "0"] });
  try {
    await writeSome(d, 0, 10);
    const deadline = Date.now() + 60_000;
    let done: Record<string, any> | undefined;
    while (!done && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      done = d.logLines().find((l) => l.msg === "log compaction done");
      const failed = d.logLines().find((l) => l.msg?.startsWith("log compaction failed"));
      assert.equal(failed, undefined, JSON.stringify(failed));
    }
    assert.ok(done, "no scheduled compaction in 60 s");
    assert.match(done.output, /^synced the file system of .* \(sync --file-system\)\nbase at sequence \d+ .*\nremoved \d+ messages; the log now holds/);
    // Writes go on; a start without the projection loads the base the schedule stored.
    await writeSome(d, 10, 3);
    const want = await state(d);
    assert.equal(await d.stop(), 0);
    await rm(rootPaths(d.root).meta, { recursive: true, force: true });
    await d.launch();
    assert.deepEqual(await state(d), want);
    assert.ok(d.logLines().some((l) => l.msg === "loading the projection from a base: the log's history before it was compacted"));
  } finally {
    await d.cleanup();
  }
});

test("compact --keep-bases 2: the cut follows the previous base, so states since it can still be shown", async () => {
  const nats = await startTestNats();
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  const d = await TestDaemon.start({ natsUrl: nats.url });
  const compact2 = () => runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--keep-bases", "2", "--sync-wait", "0"]);
  const showAt = (seq: number) => runNode(CK_REPLAY, ["show", "--nats", nats.url, "--namespace", "alpha", "--until", String(seq)]);
  const imagesAt = async (seq: number) => {
    const r = await showAt(seq);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout).namespaces[0].images.map((i: any) => i.name).sort();
  };
  try {
    // An empty log: nothing to compact, said so, not an error.
    const empty = await compact2();
    assert.equal(empty.code, 0, empty.stdout + empty.stderr);
    assert.equal(empty.stdout, "the log (CK_EVENTS) holds no message yet: nothing to compact\n");
    // A base of an empty log: refused, nothing written (no lock, no bases stream).
    const emptyBase = await runNode(CK_REPLAY, ["base", "--nats", nats.url]);
    assert.equal(emptyBase.code, 2, emptyBase.stdout);
    assert.match(emptyBase.stderr, /the log \(CK_EVENTS\) holds no message yet: nothing to keep a base of/);
    await assert.rejects(jsm.streams.info("CK_EVENTS_BASES"), /stream not found/);
    // A bases stream made without direct gets (by an earlier ck) is given them by the first base.
    await jsm.streams.add({ name: "CK_EVENTS_BASES", subjects: ["ck.bases.CK_EVENTS.>"], storage: "file" as never });
    assert.notEqual((await jsm.streams.info("CK_EVENTS_BASES")).config.allow_direct, true);
    await writeSome(d, 0, 5);
    const B1 = (await jsm.streams.info("CK_EVENTS")).state.last_seq;
    const wantAtB1 = await imagesAt(B1);
    const r1 = await compact2();
    assert.equal(r1.code, 0, r1.stdout + r1.stderr);
    assert.match(r1.stdout, /\nfewer than 2 bases: nothing cut yet; removed 0 messages; the log now holds sequences 1 to \d+;/);
    assert.equal((await jsm.streams.info("CK_EVENTS_BASES")).config.allow_direct, true);
    assert.equal((await jsm.streams.info("CK_EVENTS")).state.first_seq, 1);

    await writeSome(d, 5, 5);
    const mid = (await jsm.streams.info("CK_EVENTS")).state.last_seq;
    const wantAtMid = await imagesAt(mid);
    await writeSome(d, 10, 5);
    const B2 = (await jsm.streams.info("CK_EVENTS")).state.last_seq;
    // A damaged copy of the base the cut would follow, stored after it: the dry run reads that
    // base back as the real run does before its cut, and fails with the same error.
    const goodB1 = (await jsm.streams.getMessage("CK_EVENTS_BASES", { last_by_subj: "ck.bases.CK_EVENTS.markers" }))!;
    const badB1 = await jetstream(nc).publish("ck.bases.CK_EVENTS.markers", JSON.stringify({ ...JSON.parse(new TextDecoder().decode(goodB1.data)), sha256: "f".repeat(64) }));
    const dryBad = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--keep-bases", "2", "--dry-run"]);
    assert.notEqual(dryBad.code, 0, dryBad.stdout);
    assert.match(dryBad.stderr, new RegExp(`base at sequence ${B1} \\(\\S+\\) is damaged: .* its marker says \\d+, \\d+, f{64}`));
    await jsm.streams.deleteMessage("CK_EVENTS_BASES", badB1.seq);
    // A dry run says what the compaction will do, and changes nothing.
    const basesBeforeDry = (await jsm.streams.info("CK_EVENTS_BASES")).state.messages;
    const dry = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "0", "--keep-bases", "2", "--dry-run"]);
    assert.equal(dry.code, 0, dry.stdout + dry.stderr);
    assert.equal(
      dry.stdout,
      `dry run: would store a base at sequence ${B2}; would remove ${B1} messages (sequences 1 to ${B1}), cutting after the base at sequence ${B1}; the log would hold sequences ${B1 + 1} to ${B2}; 0 older bases would be removed; nothing was changed\n`,
    );
    assert.equal((await jsm.streams.info("CK_EVENTS")).state.first_seq, 1);
    assert.equal((await jsm.streams.info("CK_EVENTS_BASES")).state.messages, basesBeforeDry);
    const r2 = await compact2();
    assert.equal(r2.code, 0, r2.stdout + r2.stderr);
    assert.match(r2.stdout, new RegExp(`\\ncut after the base at sequence ${B1} \\(--keep-bases 2\\): states from it on can still be shown; removed ${B1} messages; the log now holds sequences ${B1 + 1} to ${B2}; 0 older bases removed`));
    // States from B1 on: from the base at B1 and the history after it, as before the cut.
    assert.deepEqual(await imagesAt(B1), wantAtB1);
    assert.deepEqual(await imagesAt(mid), wantAtMid);
    const before = await showAt(B1 - 1);
    assert.equal(before.code, 2);

    await writeSome(d, 15, 3);
    const r3 = await compact2();
    assert.equal(r3.code, 0, r3.stdout + r3.stderr);
    assert.match(r3.stdout, new RegExp(`cut after the base at sequence ${B2} \\(--keep-bases 2\\).*; 1 older base removed`));
    assert.equal((await jsm.streams.info("CK_EVENTS")).state.first_seq, B2 + 1);
    assert.equal((await showAt(mid)).code, 2, "a state before the kept base was shown");
    // Bad input: refused by name, nothing cut.
    const bad = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep-bases", "0"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--keep-bases: expected a number of bases \(1 or more\), got "0"/);
    assert.equal((await jsm.streams.info("CK_EVENTS")).state.first_seq, B2 + 1);

    // A cut that keeps history before its base: the stored time of the last message it
    // removed is recorded, so events --since just after it are served, and from it refused.
    const c = d.client("alpha");
    await c.call("images", "Create", { image: { name: "reg.local/alpha/t1", target: target(501) } });
    const tCut = (await jsm.streams.getMessage("CK_EVENTS", { seq: (await jsm.streams.info("CK_EVENTS")).state.last_seq }))!.time;
    await new Promise((r) => setTimeout(r, 100));
    await c.call("images", "Create", { image: { name: "reg.local/alpha/t2", target: target(502) } });
    await c.call("images", "Create", { image: { name: "reg.local/alpha/t3", target: target(503) } });
    const r4 = await runNode(CK_REPLAY, ["compact", "--nats", nats.url, "--keep", "2", "--sync-wait", "0"]);
    assert.equal(r4.code, 0, r4.stdout + r4.stderr);
    const L4 = (await jsm.streams.info("CK_EVENTS")).state.last_seq;
    assert.equal((await jsm.streams.info("CK_EVENTS")).state.first_seq, L4 - 1);
    const subscribe = async (since: Date) => {
      const abort = new AbortController();
      const got: string[] = [];
      let live!: () => void;
      const isLive = new Promise<void>((r) => (live = r));
      const reading = (async () => {
        for await (const env of c.stream("events", "Subscribe", { filters: ['namespace=="alpha"'] }, { metadata: { "ck-since": since.toISOString() }, signal: abort.signal, onMetadata: () => live() })) {
          got.push(env.topic);
          if (got.length === 2) abort.abort();
        }
      })();
      await Promise.race([isLive, reading]);
      await reading.catch((err) => {
        if (!abort.signal.aborted) throw err;
      });
      return got;
    };
    // Just after the last removed message: served, the two kept creates first.
    assert.deepEqual(await subscribe(new Date(tCut.getTime() + 50)), ["/images/create", "/images/create"]);
    // At it: refused, that time named.
    await assert.rejects(subscribe(tCut), (err: Error) => {
      assert.match(err.message, new RegExp(`events up to ${tCut.toISOString().replace(/\./g, "\\.")} with it`));
      assert.equal((err as { errorClass?: string }).errorClass, "OutOfRange");
      return true;
    });
    c.close();
  } finally {
    await d.cleanup();
    await nc.close();
    await nats.cleanup();
  }
});

test("a subscriber of the whole log lagging behind a compaction's cut is told (OutOfRange) instead of silently missing events; one narrowed to a namespace is not told of other namespaces' removed sequences", async () => {
  const { EventLog } = await import("../../src/eventstore/log.js");
  const { EventSubscriptions } = await import("../../src/emitter/subscriptions.js");
  const { encodeEnvelope, nowTimestamp } = await import("../../src/emitter/envelope.js");
  const { loadProtos } = await import("../../src/protos/protos.js");
  const protos = loadProtos();
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url, stream: "SUB_GAP" });
  try {
    const append = (i: number, ns = i % 2 === 0 ? "even" : "odd") => {
      const data = encodeEnvelope(protos, { namespace: ns, topic: "/images/create", typeName: "containerd.services.images.v1.ImageCreate", payload: { name: `img-${i}` } }, nowTimestamp());
      return log.append(`containerd.io.${ns}.images.create`, data, { msgId: `m${i}`, headers: { "Ck-Origin": "publish" } });
    };
    for (let i = 1; i <= 4; i++) await append(i);
    const subs = new EventSubscriptions(log, protos);
    const events = await subs.subscribe({ filters: [], fromSeq: 1 });
    const seen: number[] = [(await events.next()).value!.seq];
    // While it lags, the log grows far past what its consumer takes ahead (4,096), and is cut.
    const before = await log.lastSeq();
    await Promise.all(Array.from({ length: 12_000 }, (_, k) => append(before + 1 + k)));
    const cut = (await log.lastSeq()) - 5;
    await log.purgeBefore(cut);
    await assert.rejects(
      (async () => {
        for (;;) {
          const r = await events.next();
          if (r.done) break;
          seen.push(r.value.seq);
        }
      })(),
      (err: Error & { errorClass?: string }) => {
        assert.equal(err.errorClass, "OutOfRange", err.message);
        assert.match(err.message, /^events from sequence \d+ were removed from the log \(cut by a compaction \(ck-replay compact\)\) before this subscription read them; it resumes at \d+/);
        return true;
      },
      `read ${seen.length} events to ${seen.at(-1)} and no gap was reported`,
    );
    assert.ok(seen.at(-1)! < cut, "nothing past the cut was delivered before the error");
    await events.return(undefined);

    // Deleted from inside the log (not a compaction's cut): said so.
    const base = await log.lastSeq();
    for (let i = 1; i <= 3; i++) await append(300_000 + i);
    await log.jsm.streams.deleteMessage(log.stream, base + 2);
    const whole = await subs.subscribe({ filters: [], fromSeq: base + 1 });
    assert.equal((await whole.next()).value!.seq, base + 1);
    await assert.rejects(whole.next(), (err: Error & { errorClass?: string }) => {
      assert.equal(err.errorClass, "OutOfRange", err.message);
      assert.match(err.message, new RegExp(`^events from sequence ${base + 2} were removed from the log \\(deleted from inside it\\) before this subscription read them; it resumes at ${base + 3}`));
      return true;
    });
    await whole.return(undefined);

    // Narrowed to a quiet namespace, caught up: the others' events are cut from under it, and
    // its next event arrives as usual.
    const quiet = await subs.subscribe({ filters: ['namespace=="quiet"'] });
    await append(100_000, "quiet");
    assert.equal((await quiet.next()).value!.envelope.namespace, "quiet");
    const last = await log.lastSeq();
    await Promise.all(Array.from({ length: 2_000 }, (_, k) => append(200_000 + k, "busy")));
    await log.purgeBefore((await log.lastSeq()) - 5);
    assert.ok((await log.info()).state.first_seq > last + 1, "sequences after its last event were removed");
    await append(100_001, "quiet");
    const next = await quiet.next();
    assert.equal(next.value!.envelope.namespace, "quiet", "delivered, not a gap error");
    await quiet.return(undefined);
  } finally {
    await log.close();
    await nats.cleanup();
  }
});
