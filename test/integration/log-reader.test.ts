// The log's reader over a real nats-server: a consumer the server lost is replaced (and the
// stopped one stays stopped, as nats.js's own ordered consumer did not); an abort after a
// reconnect ends the reader; a caller that stops taking messages does not make it pull on and
// on; every pull is bounded in messages and bytes, and sized as the server counts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { connect as netConnect, createServer, type AddressInfo, type Socket } from "node:net";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { startTestNats } from "../helpers/nats.js";
import { EventLog, type ReaderEvent } from "../../src/eventstore/log.js";
import { deliveredSize } from "../../src/eventstore/log-consumer.js";

const LOG_JS = new URL("../../src/eventstore/log.js", import.meta.url).href;

/** The connection's subscriptions, as nats.js holds them (each sent again at a reconnect). */
function subscriptions(log: EventLog): number {
  return (log.nc as unknown as { protocol: { subscriptions: { size(): number } } }).protocol.subscriptions.size();
}

async function appendMany(log: EventLog, n: number, from = 0): Promise<void> {
  for (let i = 0; i < n; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, n - i) }, (_, k) => log.append("containerd.io.rd.x", new Uint8Array([1, 2, 3]), { msgId: `m-${from + i + k}` })));
  }
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("a reader whose consumer the server lost (deleted; its server restarted) replaces it and reads on in order; nats.js does not bring the stopped one back", async () => {
  const nats = await startTestNats();
  const events: ReaderEvent[] = [];
  const log = await EventLog.open({ url: nats.url, stream: "RD_LOST", onReaderEvent: (e) => events.push(e) });
  const ac = new AbortController();
  try {
    await appendMany(log, 5);
    const it = await log.reader({ fromSeq: 1, signal: ac.signal });
    for (let seq = 1; seq <= 5; seq++) assert.equal((await it.next()).value?.seq, seq);
    const base = subscriptions(log);
    const jsm = await jetstreamManager(log.nc);

    // Deleted while the reader waits: a consumer of its own, from the next message on.
    let waiting = it.next();
    await settle(300);
    for (const c of await jsm.consumers.list("RD_LOST").next()) await jsm.consumers.delete("RD_LOST", c.name);
    await appendMany(log, 1, 5);
    assert.equal((await waiting).value?.seq, 6);
    assert.ok(events.some((e) => e.kind === "replaced"), JSON.stringify(events));

    // Its server restarted (an ordered consumer lives in the server's memory only).
    waiting = it.next();
    await nats.server.kill9();
    await nats.server.restart();
    for (const until = Date.now() + 30_000; log.connectionState !== "connected"; await settle(20)) assert.ok(Date.now() < until);
    await appendMany(log, 1, 6);
    assert.equal((await waiting).value?.seq, 7);

    // nats.js's own repair of a consumer ck already stopped would add a subscription (and a
    // consumer nobody pulls) here, and keep it for good.
    await settle(3000);
    assert.equal(subscriptions(log), base, "subscriptions after the replacements");
    ac.abort();
    assert.equal((await it.next()).done, true);
    await settle(500);
    assert.equal(subscriptions(log), base - 1, "the reader's subscription is gone once it ended");
  } finally {
    ac.abort();
    await log.close();
    await nats.cleanup();
  }
});

test("a reader aborted after a reconnect while its caller was busy ends (it once spun, holding the event loop)", { timeout: 60_000 }, async () => {
  const nats = await startTestNats();
  try {
    // In a process of its own: a spinning reader holds that process's event loop, and only a
    // timeout from outside ends it.
    const script = join(nats.dir, "abort-after-reconnect.mjs");
    await writeFile(
      script,
      `import { EventLog } from ${JSON.stringify(LOG_JS)};
const log = await EventLog.open({ url: ${JSON.stringify(nats.url)}, stream: "RD_ABORT" });
await log.append("containerd.io.rd.x", new Uint8Array([1]), { msgId: "a1" });
const ac = new AbortController();
const it = await log.reader({ fromSeq: 1, signal: ac.signal });
await it.next();
// The caller is busy (no next() outstanding) through a reconnect, then gives up.
const back = new Promise((r) => { const off = log.onConnectionState((s) => { if (s === "connected") { off(); r(); } }); });
log.nc.reconnect();
await back;
ac.abort();
const r = await it.next();
console.log(JSON.stringify({ done: r.done }));
await log.close();
`,
    );
    const child = spawn(process.execPath, [script], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout!.on("data", (d) => (out += d));
    child.stderr!.on("data", (d) => (err += d));
    const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
    clearTimeout(killer);
    assert.equal(code, 0, `exit ${code}: ${err}`);
    assert.deepEqual(JSON.parse(out.trim()), { done: true });
  } finally {
    await nats.cleanup();
  }
});

test("a caller that stops taking messages: its reader asks for no more than a bounded number ahead meanwhile, keeps its consumer, and reads on in order when it comes back", { timeout: 120_000 }, async () => {
  const nats = await startTestNats();
  const events: ReaderEvent[] = [];
  const log = await EventLog.open({ url: nats.url, stream: "RD_BEHIND", onReaderEvent: (e) => events.push(e) });
  const { connect } = await import("@nats-io/transport-node");
  const spy = await connect({ servers: nats.url });
  let asked = 0;
  const sub = spy.subscribe("$JS.API.CONSUMER.MSG.NEXT.RD_BEHIND.>", { callback: (_e, m) => void (asked += m.json<{ batch: number }>().batch) });
  await spy.flush();
  const ac = new AbortController();
  try {
    const total = 30_000;
    await appendMany(log, total);
    const it = await log.reader({ fromSeq: 1, signal: ac.signal });
    assert.equal((await it.next()).value?.seq, 1);
    // Away for a while. nats.js's consume() took each missed heartbeat for a lost pull and asked
    // for 4,096 more a second, all sent once the caller drained what it held; the reader now
    // asks only while it holds less than a pull's worth for its caller.
    await settle(4000);
    await spy.flush();
    assert.ok(asked <= 2 * 4096, `${asked} messages asked for while the caller took one`);
    // Back: the same consumer reads on from message 2.
    let expected = 2;
    while (expected <= total) {
      const r = await it.next();
      assert.equal(r.value?.seq, expected, "in order, nothing skipped or twice");
      expected++;
    }
    assert.deepEqual(events, [], "its consumer was replaced");
  } finally {
    ac.abort();
    sub.unsubscribe();
    await spy.close();
    await log.close();
    await nats.cleanup();
  }
});

test("client-paced readers whose callers hold all they may (many small events; a few large ones) for longer than their consumers' inactive threshold keep those consumers with pulls that deliver nothing, and read on without a replacement, every message once and in order", { timeout: 120_000 }, async () => {
  const nats = await startTestNats();
  const events: ReaderEvent[] = [];
  // A 5 s threshold for the 30 s of ckd's Subscribes.
  const log = await EventLog.open({ url: nats.url, stream: "RD_PAUSED", onReaderEvent: (e) => events.push(e), clientReaderInactiveMs: 5000 });
  const { connect } = await import("@nats-io/transport-node");
  const spy = await connect({ servers: nats.url });
  const pulls: { batch?: number; max_bytes?: number; no_wait?: boolean }[] = [];
  const sub = spy.subscribe("$JS.API.CONSUMER.MSG.NEXT.RD_PAUSED.>", { callback: (_e, m) => void pulls.push(m.json()) });
  await spy.flush();
  /** The stream's consumers by the subject they filter on. */
  const consumers = async () => {
    const by = new Map<string, string>();
    for await (const c of log.jsm.consumers.list(log.stream)) by.set(c.config.filter_subject ?? "", c.name);
    return by;
  };
  const ac = new AbortController();
  try {
    // Small ones: the caller holds a pull's 4,096 messages. Large ones: it holds the 4 MiB budget.
    const small = 6000;
    await appendMany(log, small);
    const big = Buffer.alloc(600_000, 5);
    const bigs = 12;
    for (let i = 0; i < bigs; i++) await log.append("containerd.io.rd.big", big, { msgId: `big-${i}` });
    const few = await log.reader({ fromSeq: 1, filterSubject: "containerd.io.rd.x", signal: ac.signal, clientPaced: true });
    const large = await log.reader({ fromSeq: 1, filterSubject: "containerd.io.rd.big", signal: ac.signal, clientPaced: true });
    assert.equal((await few.next()).value?.seq, 1);
    assert.equal((await large.next()).value?.seq, small + 1);
    const before = await consumers();
    assert.equal(before.size, 2);
    // What both asked for arrives; then they ask for nothing more until their callers take some.
    await settle(1000);
    await spy.flush();
    const pausedAt = pulls.length;

    // Away for more than two thresholds (the server checks every threshold and up to a second).
    await settle(13_000);
    await spy.flush();
    const meanwhile = pulls.slice(pausedAt);
    assert.ok(meanwhile.length >= 4, `keep-alives while away: ${JSON.stringify(meanwhile)}`);
    for (const p of meanwhile) assert.deepEqual(p, { batch: 1, max_bytes: 1, no_wait: true }, "a pull sent while the callers were away delivers nothing");
    assert.deepEqual(await consumers(), before, "the consumers while the callers were away");

    // Back: the same consumers read on, nothing lost or twice, and follow the live tail.
    for (let seq = 2; seq <= small; seq++) assert.equal((await few.next()).value?.seq, seq, "in order, nothing skipped or twice");
    for (let seq = small + 2; seq <= small + bigs; seq++) {
      const m = (await large.next()).value!;
      assert.equal(m.seq, seq, "in order, nothing skipped or twice");
      assert.equal(m.data.length, big.length);
    }
    await appendMany(log, 1, small);
    assert.equal((await few.next()).value?.seq, small + bigs + 1);
    await log.append("containerd.io.rd.big", big, { msgId: `big-${bigs}` });
    assert.equal((await large.next()).value?.seq, small + bigs + 2);
    assert.deepEqual(events, [], "a consumer replaced");
    assert.deepEqual(await consumers(), before, "the consumers once back");
  } finally {
    ac.abort();
    sub.unsubscribe();
    await spy.close();
    await log.close();
    await nats.cleanup();
  }
});

/** The stream's consumers, as the server lists them. */
async function consumerNames(log: EventLog): Promise<string[]> {
  const names: string[] = [];
  for await (const c of log.jsm.consumers.list(log.stream)) names.push(c.name);
  return names;
}

/** Polls `check` until it holds, or fails after `ms`. */
async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  for (const until = Date.now() + ms; !(await check()); await settle(100)) assert.ok(Date.now() < until, what);
}

/** A TCP proxy in front of a NATS server that can cut every client off, and keep them off, while the server stays up. */
async function startCutter(upstream: string): Promise<{ url: string; cut(): void; resume(): void; close(): Promise<void> }> {
  const { hostname, port } = new URL(upstream);
  const sockets = new Set<Socket>();
  let refusing = false;
  const server = createServer((client) => {
    if (refusing) return void client.destroy();
    const up = netConnect(Number(port), hostname);
    for (const [a, b] of [[client, up], [up, client]] as const) {
      sockets.add(a);
      a.pipe(b);
      a.on("error", () => b.destroy());
      a.on("close", () => {
        sockets.delete(a);
        b.destroy();
      });
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `nats://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut() {
      refusing = true;
      for (const s of sockets) s.destroy();
    },
    resume() {
      refusing = false;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

test("readers that end while their connection is down have their consumers removed once it is back, not left for their inactivity threshold; client-paced readers read on a connection of their own", { timeout: 60_000 }, async () => {
  const nats = await startTestNats();
  const cutter = await startCutter(nats.url);
  const log = await EventLog.open({ url: cutter.url, stream: "RD_ORPHAN" });
  try {
    await appendMany(log, 3);
    // A reader of the connection appends go through (the projector's kind), and a client-paced
    // one (an Events.Subscribe's), on the readers' connection.
    const ac = new AbortController();
    const own = await log.reader({ fromSeq: 1, signal: ac.signal });
    const paced = await log.reader({ fromSeq: 1, signal: ac.signal, clientPaced: true });
    assert.equal((await own.next()).value?.seq, 1);
    assert.equal((await paced.next()).value?.seq, 1);
    assert.equal((await consumerNames(log)).length, 2);

    // Both end while cut off from the server (a Subscribe cancelled then): their consumers
    // cannot be deleted now.
    cutter.cut();
    await eventually("disconnected", async () => log.connectionState === "disconnected");
    ac.abort();
    // (What nats.js held for them may still come before the end.)
    while (!(await own.next()).done);
    while (!(await paced.next()).done);
    cutter.resume();
    await eventually("reconnected", async () => log.connectionState === "connected");
    // Once back, they are; not left for 5 minutes (30 s for a client-paced reader's).
    await eventually("the ended readers' consumers removed", async () => (await consumerNames(log)).length === 0);
    const readers = await log.readersNats();
    assert.ok(readers && readers !== log.nc, "a connection of its own");

    // The readers' connection cut on its own (as a slow consumer would be): the log's is not
    // touched, and a client-paced reader reads on, in order.
    const tail = await log.reader({ fromSeq: 3, clientPaced: true });
    assert.equal((await tail.next()).value?.seq, 3);
    const down = (async () => {
      for await (const s of readers.status()) if (s.type === "disconnect") return;
    })();
    readers.reconnect();
    await down;
    assert.equal(log.connectionState, "connected");
    await appendMany(log, 2, 3);
    assert.equal((await tail.next()).value?.seq, 4);
    assert.equal((await tail.next()).value?.seq, 5);
    assert.equal(await log.readersNats(), readers, "the same connection, reconnected");

    await log.close();
    assert.equal(readers.isClosed(), true, "the readers' connection closed with the log");
    assert.equal((await tail.next()).done, true);
  } finally {
    await log.close();
    await cutter.close();
    await nats.cleanup();
  }
});

test("every pull a reader sends asks for 4,096 messages and at most 4 MiB: catching up over large events, and on the live tail over many small ones and then a burst of large ones; every message once, in order, no consumer replaced", { timeout: 120_000 }, async () => {
  const nats = await startTestNats();
  const events: ReaderEvent[] = [];
  const log = await EventLog.open({ url: nats.url, stream: "RD_PULLS", onReaderEvent: (e) => events.push(e) });
  // The pull requests as the server gets them, seen by a plain subscriber of the JetStream API.
  const { connect } = await import("@nats-io/transport-node");
  const spy = await connect({ servers: nats.url });
  const pulls: { batch?: number; max_bytes?: number }[] = [];
  const sub = spy.subscribe("$JS.API.CONSUMER.MSG.NEXT.RD_PULLS.>", { callback: (_e, m) => void pulls.push(m.json()) });
  await spy.flush();
  const bounded = (p: { batch?: number; max_bytes?: number }) => p.batch === 4096 && (p.max_bytes ?? 0) > 0 && (p.max_bytes ?? 0) <= 4 << 20;
  const ac = new AbortController();
  try {
    const big = Buffer.alloc(300_000, 9);
    for (let i = 0; i < 30; i++) await log.append("containerd.io.rd.big", big, { msgId: `b-${i}` });
    const it = await log.reader({ fromSeq: 1, signal: ac.signal });
    for (let seq = 1; seq <= 30; seq++) {
      const m = (await it.next()).value!;
      assert.equal(m.seq, seq);
      assert.equal(m.data.length, 300_000);
    }
    await spy.flush();
    const caughtUp = pulls.length;
    assert.ok(caughtUp >= 1, "no pull seen");
    for (const p of pulls) assert.ok(bounded(p), `a catching-up pull: ${JSON.stringify(p)}`);
    // The live tail: many small events, then a burst of large ones (another writer's container
    // creates). nats.js's consume() pulled 4,096 there with no byte limit (the burst asked for
    // at once); given both limits, its running totals left its pulls no room after the small
    // ones, and it stalled until two heartbeats were missed.
    await appendMany(log, 9000);
    for (let seq = 31; seq <= 9030; seq++) assert.equal((await it.next()).value?.seq, seq);
    const huge = Buffer.alloc(900_000, 7);
    await Promise.all(Array.from({ length: 40 }, (_, i) => log.append("containerd.io.rd.big", huge, { msgId: `h-${i}` })));
    for (let seq = 9031; seq <= 9070; seq++) {
      const m = (await it.next()).value!;
      assert.equal(m.seq, seq);
      assert.equal(m.data.length, 900_000);
    }
    await spy.flush();
    const tail = pulls.slice(caughtUp);
    assert.ok(tail.length >= 2, `the tail's pulls: ${JSON.stringify(tail)}`);
    for (const p of tail) assert.ok(bounded(p), `a pull on the tail: ${JSON.stringify(p)}`);
    assert.deepEqual(events, [], "a consumer replaced");
    const jsm = await jetstreamManager(log.nc);
    assert.equal((await jsm.streams.info("RD_PULLS")).state.consumer_count, 1);

    // Its consumer lost (the server's restart, say): the replacement reads on, bounded as well.
    const [tailConsumer] = await jsm.consumers.list("RD_PULLS").next();
    const lostAt = pulls.length;
    await jsm.consumers.delete("RD_PULLS", tailConsumer!.name);
    for (let i = 30; i < 40; i++) await log.append("containerd.io.rd.big", big, { msgId: `b-${i}` });
    for (let seq = 9071; seq <= 9080; seq++) assert.equal((await it.next()).value?.seq, seq);
    await spy.flush();
    const replaced = pulls.slice(lostAt);
    assert.ok(replaced.length >= 1 && replaced.every(bounded), `the replacement's pulls: ${JSON.stringify(replaced)}`);
    assert.ok((events as ReaderEvent[]).some((e) => e.kind === "replaced"), "the replacement was not reported");
    // One consumer left: the lost one's deletion was asked for, the replacement's is there.
    for (const until = Date.now() + 5000; (await jsm.streams.info("RD_PULLS")).state.consumer_count !== 1; await settle(100)) {
      assert.ok(Date.now() < until, "consumers left behind");
    }
  } finally {
    ac.abort();
    sub.unsubscribe();
    await spy.close();
    await log.close();
    await nats.cleanup();
  }
});

test("a delivered message's size as the reader counts it is the server's, against a pull's max_bytes (nats.js's Msg.size(), which the pull ledger depends on)", async () => {
  const nats = await startTestNats();
  const { connect, createInbox } = await import("@nats-io/transport-node");
  const nc = await connect({ servers: nats.url });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "RD_SIZE", subjects: ["containerd.io.size.>"] });
    const log = await EventLog.open({ url: nats.url, stream: "RD_SIZE" });
    try {
      // Headers as ck writes them, and data of several sizes.
      for (const [i, n] of [1000, 1000, 2500, 40, 100_000].entries()) await log.append(`containerd.io.size.m${i}`, new Uint8Array(n), { msgId: `s-${i}`, headers: { "Ck-Origin": "command" } });
    } finally {
      await log.close();
    }
    await jsm.consumers.add("RD_SIZE", { name: "sz", ack_policy: "none" as never, deliver_policy: "all" as never, mem_storage: true });
    const inbox = createInbox();
    const got: { size: number; sized: boolean; left?: number }[] = [];
    const done = new Promise<void>((resolve) => {
      nc.subscribe(inbox, {
        callback: (_e, m) => {
          const status = m.headers?.code ?? 0;
          if (status === 0) got.push({ size: deliveredSize(m), sized: typeof (m as { size?: unknown }).size === "function" });
          else if (status !== 100) {
            got.push({ size: 0, sized: true, left: status === 409 ? Number(m.headers!.get("Nats-Pending-Bytes")) : -status });
            resolve();
          }
        },
      });
    });
    // Room for the first four, not the fifth: the server ends the request (409) and says how
    // many bytes it had left.
    const room = 50_000;
    nc.publish("$JS.API.CONSUMER.MSG.NEXT.RD_SIZE.sz", JSON.stringify({ batch: 10, max_bytes: room, expires: 5e9 }), { reply: inbox });
    await done;
    const delivered = got.filter((g) => g.left === undefined);
    assert.equal(delivered.length, 4, JSON.stringify(got));
    assert.ok(delivered.every((g) => g.sized), "nats.js's message no longer has size(): the ledger would count from an estimate");
    const left = got.at(-1)!.left!;
    assert.equal(room - delivered.reduce((n, g) => n + g.size, 0), left, "the bytes the server says the request had left");
  } finally {
    await nc.close();
    await nats.cleanup();
  }
});
