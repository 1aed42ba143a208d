// The path past one machine, as DESIGN.md draws it: ckd on a three-node JetStream cluster with
// a replicated (R3) stream. Against real nats-server processes on loopback: writes through two
// ckds go on across a kill -9 of the stream's leader, nothing acknowledged is lost or stored
// twice, both projections end identical and replay verifies them; a node whose store is lost
// catches up from its peers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { TestNatsCluster } from "../helpers/nats-cluster.js";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestDaemon, runNode, CK_REPLAY, CKD } from "../helpers/daemon.js";
import { freePort } from "../../src/eventstore/nats-server.js";
import { CkError } from "../../src/errdefs/errdefs.js";
import { ProjectionDb } from "../../src/projections/db.js";
import { compareProjections } from "../../tools/replay/replay.js";
import { rootPaths } from "../../src/api/daemon.js";
import { DEFAULT_STREAM } from "../../src/eventstore/log.js";
import type { ApiClient } from "../../src/cli/client.js";

const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "c".repeat(64), size: 10 };
const NS = "cl";

/** Creates images `<prefix>:<i>` for i in [from, to), each labelled with its number. */
async function createImages(c: ApiClient, prefix: string, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) await c.call("images", "Create", { image: { name: `${prefix}:${i}`, target, labels: { i: String(i) } } });
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface WriteLog {
  acked: Set<string>;
  /** Calls refused as Unavailable (retried), by class of what the client saw. */
  refused: Map<string, number>;
  /** Longest run of refusals one writer saw before a call succeeded again, in ms. */
  longestOutage: number;
}

/**
 * One writer: creates its names one after the other, retrying a refused call as a client of
 * a cluster would. A retry answered AlreadyExists means an earlier attempt was stored (its
 * answer lost with the leader): that name counts as written.
 */
async function writer(c: ApiClient, names: Iterable<string>, log: WriteLog, deadline: number): Promise<void> {
  for (const name of names) {
    let since = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        await c.call("images", "Create", { image: { name, target } }, { deadlineMs: 10_000 });
        log.acked.add(name);
        break;
      } catch (err) {
        const cls = err instanceof CkError ? err.errorClass : String(err);
        if (cls === "AlreadyExists" && attempt > 0) {
          log.acked.add(name);
          break;
        }
        log.refused.set(cls, (log.refused.get(cls) ?? 0) + 1);
        if (cls !== "Unavailable" && cls !== "DeadlineExceeded") throw err;
        if (Date.now() > deadline) throw new Error(`${name}: still refused at the deadline (${(err as Error).message})`);
        since ||= Date.now();
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    if (since) log.longestOutage = Math.max(log.longestOutage, Date.now() - since);
  }
}

test("ckd on a three-node cluster (R3): writes through two ckds go on across a kill -9 of the stream leader; nothing lost or doubled; a wiped node catches up", async () => {
  const cluster = await TestNatsCluster.start(3);
  let a: TestDaemon | undefined;
  let b: TestDaemon | undefined;
  let c: TestDaemon | undefined;
  const clients: ApiClient[] = [];
  let newLeader = "";
  let killed = "";
  try {
    // a is given every node; b only n2 (it learns the others from the cluster).
    a = await TestDaemon.start({ natsUrl: cluster.url, extraArgs: ["--replicas", "3"] });
    b = await TestDaemon.start({ natsUrl: cluster.node("n2").url });
    const info0 = await cluster.streamInfo(DEFAULT_STREAM);
    assert.equal(info0.config.num_replicas, 3);
    const ready = a.logLines().find((l) => l.msg === "event log ready");
    assert.match(String(ready?.durability), /^replicated \(R3\)/);
    const ca = a.client(NS);
    const cb = b.client(NS);
    clients.push(ca, cb);

    // Three writers per ckd write without pause until the leader has died, the writes have
    // gone on without it and it is back.
    const writers = 3;
    let stopped = false;
    const names = (d: string, w: number) =>
      (function* () {
        for (let i = 0; !stopped; i++) yield `cl/${d}${w}:${i}`;
      })();
    const log: WriteLog = { acked: new Set(), refused: new Map(), longestOutage: 0 };
    const deadline = Date.now() + 120_000;
    const writing = Promise.all([
      ...Array.from({ length: writers }, (_, w) => writer(ca, names("a", w), log, deadline)),
      ...Array.from({ length: writers }, (_, w) => writer(cb, names("b", w), log, deadline)),
    ]);
    try {
      await until("200 written", async () => (log.acked.size >= 200 ? true : undefined), 60_000);
      const leader = await cluster.leaderOf(DEFAULT_STREAM);
      await cluster.kill9(leader);
      const atKill = log.acked.size;
      await until("200 written after the leader's death", async () => (log.acked.size >= atKill + 200 ? true : undefined), 60_000);
      newLeader = await until("a new leader", async () => {
        const l = await cluster.leaderOf(DEFAULT_STREAM);
        return l !== leader ? l : undefined;
      });
      cluster.restart(leader);
      killed = leader;
      const atRestart = log.acked.size;
      await until("100 written after the restart", async () => (log.acked.size >= atRestart + 100 ? true : undefined), 60_000);
    } finally {
      stopped = true;
      await writing;
    }
    const all = [...log.acked];

    // Both projections hold every name; the log holds each create once.
    for (const [which, cl] of [["a", ca], ["b", cb]] as const) {
      let seen = 0;
      await until("every name in both projections", async () => {
        const imgs = (await cl.call("images", "List", {})).images as { name: string }[];
        seen = imgs.length;
        return imgs.length === all.length ? imgs : undefined;
      }).catch((err) => {
        throw new Error(`${which}: ${seen} of ${all.length} names: ${(err as Error).message}`);
      });
    }
    const la = ((await ca.call("images", "List", {})).images as { name: string }[]).map((i) => i.name).sort();
    assert.deepEqual(la, [...all].sort());
    const info1 = await cluster.streamInfo(DEFAULT_STREAM);
    assert.ok(all.length >= 500, `${all.length} creates`);
    assert.equal(info1.state.subjects?.[`containerd.io.${NS}.images.create`], all.length, "each create stored exactly once");

    // The restarted node catches up; then a node whose store is lost does too.
    const current = async (name: string) => {
      const info = await cluster.streamInfo(DEFAULT_STREAM);
      const r = info.cluster?.replicas?.find((p) => p.name === name);
      return info.cluster?.leader === name || (r?.current && (r.lag ?? 0) === 0) ? true : undefined;
    };
    await until(`${killed} current again`, () => current(killed));
    const follower = cluster.nodes.map((n) => n.name).find((n) => n !== newLeader && n !== killed)!;
    await cluster.kill9(follower);
    await cluster.wipe(follower);
    cluster.restart(follower);
    await until(`wiped ${follower} current`, () => current(follower), 60_000);
    // With the leader gone again the two others (one of them the wiped node) hold the log:
    // a new ckd on a fresh root rebuilds every name from them.
    await cluster.kill9(newLeader);
    // The two left elect leaders again, one of them freshly wiped: seen to take from a few
    // seconds to ~45 s under load. c starts then (a ckd started meanwhile waits up to 60 s).
    const electedByTwo = await until("a leader elected by the two left", async () => {
      const l = await cluster.leaderOf(DEFAULT_STREAM);
      return l !== newLeader ? l : undefined;
    }, 60_000).catch(() => undefined);
    if (!electedByTwo) {
      // Seen once in about fifteen runs: nats-server 2.9's two nodes, one freshly wiped, elected
      // nothing in 120 s. Said, and the killed node brought back: c then rebuilds from three.
      console.log(`cluster: the two left (${killed}, wiped ${follower}) elected no leader in 60 s; ${newLeader} restarted`);
      cluster.restart(newLeader);
      await until("a leader after the restart", () => cluster.leaderOf(DEFAULT_STREAM), 120_000);
    }
    c = await TestDaemon.start({ natsUrl: cluster.url });
    const cc = c.client(NS);
    clients.push(cc);
    await until("a fresh ckd rebuilt every name", async () => {
      const imgs = (await cc.call("images", "List", {})).images as unknown[];
      return imgs.length === all.length ? true : undefined;
    });
    // Written while the cluster may still be electing: retried as the writers above do.
    await writer(cc, ["cl/after:1"], { acked: new Set(), refused: new Map(), longestOutage: 0 }, Date.now() + 60_000);

    // a and b followed the log through every change (b knows only n2 by its flag).
    for (const cl of [ca, cb]) {
      await until("the last write in a and b", async () => ((await cl.call("images", "Get", { name: "cl/after:1" })).image ? true : undefined));
    }
    for (const cl of clients) cl.close();
    await a.stop();
    await b.stop();
    await c.stop();
    const dbs = await Promise.all([a, b, c].map((d) => ProjectionDb.open(rootPaths(d.root).meta)));
    try {
      assert.deepEqual(await compareProjections(dbs[0]!, dbs[1]!), []);
      assert.deepEqual(await compareProjections(dbs[0]!, dbs[2]!), []);
    } finally {
      for (const d of dbs) await d.close();
    }
    const r = await runNode(CK_REPLAY, ["verify", "--root", a.root]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /verify OK/);
    console.log(`cluster: ${all.length} creates; refused and retried: ${JSON.stringify(Object.fromEntries(log.refused))}; longest outage one writer saw ${log.longestOutage} ms`);
  } catch (err) {
    // What the daemons said about the log (reader replacements, waits) explains most failures here.
    for (const [n, d] of [["a", a], ["b", b], ["c", c]] as const) {
      const lines = d?.logLines().filter((l) => l.level >= 40 || /log reader|event log|projection/.test(String(l.msg))) ?? [];
      const other = d?.logText().split("\n").filter((l) => l && !l.startsWith("{")) ?? [];
      console.error(`ckd ${n}:\n` + lines.slice(-40).map((l) => JSON.stringify(l)).join("\n") + "\n" + other.slice(-20).join("\n"));
    }
    throw err;
  } finally {
    for (const cl of clients) cl.close();
    await a?.cleanup();
    await b?.cleanup();
    await c?.cleanup();
    await cluster.cleanup();
  }
});

test("ckd given NATS servers that all refuse connections, or none, exits at once naming them, and writes nothing", async () => {
  const [p1, p2] = [await freePort(), await freePort()];
  for (const url of [`nats://127.0.0.1:${p1},nats://127.0.0.1:${p2}`, " , "]) {
    const root = await mkdtemp(join(tmpdir(), "ck-test-root-"));
    try {
      const t0 = Date.now();
      const r = await runNode(CKD, ["--root", root, "--address", join(root, "ck.sock"), "--nats", url]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const named = url.replace(/[.]/g, "\\.");
      if (url.trim() === ",") assert.match(r.stderr, /--nats \(nats\): no NATS server in " , "/);
      else assert.match(r.stderr, new RegExp(`cannot connect to NATS at ${named}: `));
      assert.ok(Date.now() - t0 < 30_000, "it does not wait for servers that refuse");
      for (const f of ["ck.sock", "ckd.json", "meta"]) assert.equal(existsSync(join(root, f)), false, `${f} was made`);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  }
});

test("compaction on a three-node cluster (R3): the bases stream is replicated like the log, no sync wait, and a fresh ckd on another node starts from the base", async () => {
  const cluster = await TestNatsCluster.start(3);
  let a: TestDaemon | undefined;
  let b: TestDaemon | undefined;
  try {
    a = await TestDaemon.start({ natsUrl: cluster.url, extraArgs: ["--replicas", "3"] });
    const ca = a.client(NS);
    await createImages(ca, "cl/base", 0, 30);
    for (let i = 0; i < 30; i += 3) await ca.call("images", "Delete", { name: `cl/base:${i}` });
    const last = (await cluster.streamInfo(DEFAULT_STREAM)).state.last_seq;
    const r = await runNode(CK_REPLAY, ["compact", "--nats", cluster.url, "--keep", "0"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout, /waiting/, "a replicated stream waited for a sync");
    assert.match(r.stdout, new RegExp(`^base at sequence ${last} `));
    assert.equal((await cluster.streamInfo(DEFAULT_STREAM)).state.first_seq, last + 1);
    assert.equal((await cluster.streamInfo(`${DEFAULT_STREAM}_BASES`)).config.num_replicas, 3);
    await ca.call("images", "Create", { image: { name: "cl/after-cut", target } });
    const want = (await ca.call("images", "List", {})).images.map((i: any) => [i.name, i.labels]);
    ca.close();
    // A fresh ckd given only the third node: its projection needs the history, which is gone.
    b = await TestDaemon.start({ natsUrl: cluster.node("n3").url });
    const cb = b.client(NS);
    assert.deepEqual((await cb.call("images", "List", {})).images.map((i: any) => [i.name, i.labels]), want);
    cb.close();
    assert.ok(b.logLines().some((l) => l.msg === "loading the projection from a base: the log's history before it was compacted"));
  } finally {
    await a?.cleanup();
    await b?.cleanup();
    await cluster.cleanup();
  }
});

test("compaction while the log's leader is killed: it completes, or fails having cut nothing a whole base does not cover; run again it completes, and a fresh ckd starts from the base", async (t) => {
  const { EventLog } = await import("../../src/eventstore/log.js");
  const { BaseStore } = await import("../../src/eventstore/base-store.js");
  const cluster = await TestNatsCluster.start(3);
  let a: TestDaemon | undefined;
  let b: TestDaemon | undefined;
  try {
    a = await TestDaemon.start({ natsUrl: cluster.url, extraArgs: ["--replicas", "3"] });
    const ca = a.client(NS);
    await createImages(ca, "cl/lc", 0, 60);
    // A base first (the bases stream made and replicated), then more events: the compaction
    // below must fold and store a base of its own, not reuse this one.
    const first = await runNode(CK_REPLAY, ["base", "--nats", cluster.url]);
    assert.equal(first.code, 0, first.stdout + first.stderr);
    await createImages(ca, "cl/lc", 60, 90);
    const want = (await ca.call("images", "List", {})).images.map((i: any) => [i.name, i.labels]);
    ca.close();
    assert.equal(await a.stop(), 0);
    // The log's leader dies and a compaction starts at once, while the cluster elects another.
    const leader = await cluster.leaderOf(DEFAULT_STREAM);
    await cluster.kill9(leader);
    const during = await runNode(CK_REPLAY, ["compact", "--nats", cluster.url, "--keep", "0"]);
    t.diagnostic(`compaction during the election: exit ${during.code}; ${(during.stdout + during.stderr).trim().split("\n").slice(-2).join(" | ")}`);
    // Whatever it did: the log holds everything after some base that reads back whole (read
    // again while the cluster may still be electing).
    const seen = await until("the log and its bases readable", async () => {
      const log = await EventLog.open({ url: cluster.url, stream: DEFAULT_STREAM, readyTimeoutMs: 5_000 });
      try {
        const store = new BaseStore(log);
        const firstSeq = (await log.info()).state.first_seq;
        const covering = (await store.list()).filter((m) => m.seq >= firstSeq - 1);
        // A read that fails (the election) is asked again; a damaged base fails the wait.
        if (covering.length) await store.verify(covering[0]!);
        const whole = covering.length > 0;
        return { firstSeq, covering: covering.map((m) => m.seq), whole };
      } finally {
        await log.close();
      }
    }, 90_000);
    if (seen.firstSeq > 1) assert.ok(seen.whole, `cut to ${seen.firstSeq} with no base covering it (bases at ${JSON.stringify(seen.covering)}; compact: ${during.code} ${during.stdout} ${during.stderr})`);
    // The node back, the compaction run again (a lock its killed run may have left is taken
    // over: the holder's process is gone) completes.
    cluster.restart(leader);
    await cluster.waitReplicated();
    const last = (await cluster.streamInfo(DEFAULT_STREAM)).state.last_seq;
    const again = await until("a compaction that completes", async () => {
      const r = await runNode(CK_REPLAY, ["compact", "--nats", cluster.url, "--keep", "0"]);
      return r.code === 0 ? r : undefined;
    }, 90_000);
    assert.match(again.stdout, new RegExp(`^base at sequence ${last} `, "m"), again.stdout);
    assert.equal((await cluster.streamInfo(DEFAULT_STREAM)).state.first_seq, last + 1);
    // A fresh ckd on the node that was killed: the history is gone, the base gives the state.
    b = await TestDaemon.start({ natsUrl: cluster.node(leader).url });
    const cb = b.client(NS);
    assert.deepEqual((await cb.call("images", "List", {})).images.map((i: any) => [i.name, i.labels]), want);
    cb.close();
  } finally {
    await a?.cleanup();
    await b?.cleanup();
    await cluster.cleanup();
  }
});
