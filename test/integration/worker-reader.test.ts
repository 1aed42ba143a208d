// Reading the log in a worker thread, over a real nats-server: the batches carry exactly what
// the in-thread reader gives (sequence, subject, headers, data, time), in order, from any
// sequence, live appends included; stopping ends the thread; a log that cannot be reached
// fails the reader with the server's error. A projector uses it to catch up and hands the live
// tail back to its own thread.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestNats } from "../helpers/nats.js";
import { EventLog, type StoredMessage } from "../../src/eventstore/log.js";
import { packBatch, readInWorker, unpackBatch } from "../../src/eventstore/worker-reader.js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProjectionDb } from "../../src/projections/db.js";
import { Projector } from "../../src/projections/projector.js";
import { loadProtos } from "../../src/protos/protos.js";
import { PullSetupError, pullServerAddresses, readPacked } from "../../src/eventstore/pull-reader.js";
import { freePort, resolveNatsServerBinary } from "../../src/eventstore/nats-server.js";
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type AddressInfo } from "node:net";
import { connect, headers as natsHeaders } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";

function plain(m: StoredMessage) {
  return { seq: m.seq, subject: m.subject, data: Buffer.from(m.data).toString("hex"), headers: { ...m.headers }, time: m.time.getTime() };
}

test("a packed batch unpacks to the same messages", () => {
  const msgs: StoredMessage[] = [
    { seq: 1, subject: "containerd.io.a.images.create", data: new Uint8Array([1, 2, 3]), headers: { "Ck-Origin": "command", "Nats-Msg-Id": "x" }, time: new Date(1_700_000_000_123), pending: 2 },
    { seq: 2, subject: "containerd.io.é✓.t", data: new Uint8Array(0), headers: {}, time: new Date(0), pending: 1 },
    { seq: 9_007_199_254_740_000, subject: "s", data: new Uint8Array(70_000).fill(7), headers: { toString: "a header like any other", Empty: "" }, time: new Date(1), pending: 0 },
  ];
  const back = unpackBatch(packBatch(msgs));
  assert.deepEqual(back.map(plain), msgs.map(plain));
  assert.deepEqual(back.map((m) => m.pending), [2, 1, 0]);
  // One header without the map, as the fold asks for its origin.
  assert.equal(back[0]!.header?.("Ck-Origin"), "command");
  assert.equal(back[0]!.header?.("Nats-Msg-Id"), "x");
  assert.equal(back[0]!.header?.("Ck-Origi"), undefined);
  assert.equal(back[1]!.header?.("Ck-Origin"), undefined);
  assert.equal(back[2]!.header?.("toString"), "a header like any other");
  assert.equal(back[2]!.header?.("Empty"), "");
  assert.deepEqual(unpackBatch(packBatch([])), []);
});

for (const engine of ["pull", "nats.js"] as const) {
  test(`the worker reader (${engine}) gives what the in-thread reader gives, in batches, live appends included`, async () => {
    const nats = await startTestNats();
    const log = await EventLog.open({ url: nats.url });
    try {
      const n = 700;
      for (let i = 0; i < n; i++) {
        await log.append(`containerd.io.ns${i % 3}.t${i}`, Buffer.from(`event ${i} ✓`), { msgId: `m${i}`, headers: { "Ck-Origin": i % 2 ? "command" : "publish" } });
      }
      // Headers as other writers may send them: a name twice, a value with spaces around it,
      // no headers at all, a subject beyond ASCII, and an empty body.
      const h = natsHeaders();
      h.append("X-Twice", "first");
      h.append("X-Twice", "second");
      h.set("X-Spaced", "  padded  value ");
      await log.js.publish("containerd.io.other.t", Buffer.from("foreign"), { headers: h });
      await log.js.publish("containerd.io.é✓.t", new Uint8Array(0));
      // A message larger than any socket read: it arrives in many chunks.
      await log.js.publish("containerd.io.big.t", Buffer.alloc(900 * 1024, "b"));
      const total = n + 3;
      const inThread: StoredMessage[] = [];
      const ac0 = new AbortController();
      for await (const m of log.read({ fromSeq: 1, signal: ac0.signal })) {
        inThread.push(m);
        if (m.seq === total) ac0.abort();
      }
      assert.equal(inThread[n]!.headers["X-Twice"], "first");
      assert.equal(inThread[n + 2]!.data.length, 900 * 1024);
      assert.equal(inThread[n]!.headers["X-Spaced"], "padded  value");

      const ac = new AbortController();
      const got: StoredMessage[] = [];
      const sizes: number[] = [];
      let appendedLive = false;
      for await (const batch of readInWorker({ url: log.url, stream: log.stream, fromSeq: 1, signal: ac.signal, maxBatch: 100, engine })) {
        sizes.push(batch.length);
        got.push(...batch);
        if (got.at(-1)!.seq === total && !appendedLive) {
          appendedLive = true;
          await log.append("containerd.io.live.t", Buffer.from("live"), { msgId: "live", headers: { "Ck-Origin": "command" } });
        }
        if (got.at(-1)!.seq === total + 1) ac.abort();
      }
      assert.deepEqual(
        got.map((m) => m.header?.("X-Twice") ?? null).slice(0, total),
        inThread.map((m) => m.headers["X-Twice"] ?? null),
        "one header read from the bytes is the map's first value",
      );
      assert.deepEqual(got.slice(0, total).map(plain), inThread.map(plain));
      assert.equal(got.length, total + 1);
      assert.equal(Buffer.from(got[total]!.data).toString(), "live");
      assert.ok(sizes.every((s) => s >= 1 && s <= 100), `batch sizes ${sizes.join(",")}`);
      assert.equal(got[total - 1]!.pending, 0, "the caught-up batch ends where the stream ended");
      assert.deepEqual(got.map((m) => m.pending).slice(0, 3), inThread.map((m) => m.pending).slice(0, 3));

      // From a later sequence; breaking out of the loop stops the thread as an abort does.
      const from: number[] = [];
      for await (const batch of readInWorker({ url: log.url, stream: log.stream, fromSeq: 650, engine })) {
        from.push(...batch.map((m) => m.seq));
        if (from.at(-1) === total + 1) break;
      }
      assert.deepEqual(from, Array.from({ length: total + 2 - 650 }, (_, i) => 650 + i));
    } finally {
      await log.close();
      await nats.cleanup();
    }
  });
}

test("the pull reader: what it cannot use falls back to nats.js, a server that goes away fails the read, credentials in the URL", async () => {
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url });
  const dir = await mkdtemp(join(tmpdir(), "ck-auth-"));
  let authServer: ChildProcess | undefined;
  try {
    for (let i = 0; i < 3000; i++) void log.append(`containerd.io.x.t`, Buffer.from(String(i)), { msgId: `p${i}` });
    await new Promise((r) => setTimeout(r, 0));
    while ((await log.lastSeq()) < 3000) await new Promise((r) => setTimeout(r, 20));

    // A cluster's list of servers: the pull reader reads from the first that connects (here
    // the first refuses), and so does nats.js.
    const list = `nats://127.0.0.1:${await freePort()},${nats.url}`;
    for (const engine of ["pull", "nats.js"] as const) {
      const seqs: number[] = [];
      for await (const batch of readInWorker({ url: list, stream: log.stream, fromSeq: 2990, engine })) {
        seqs.push(...batch.map((m) => m.seq));
        if (seqs.at(-1) === 3000) break;
      }
      assert.deepEqual(seqs, Array.from({ length: 11 }, (_, i) => 2990 + i), engine);
    }
    await assert.rejects(readInWorker({ url: `nats://127.0.0.1:${await freePort()}`, stream: log.stream, fromSeq: 1, engine: "pull" }).next(), /connect to 127\.0\.0\.1:\d+: /);
    assert.throws(() => pullServerAddresses("tls://127.0.0.1:4222"), PullSetupError);
    assert.deepEqual(pullServerAddresses("nats://u%40x:p%3A@[::1]:5000"), [{ host: "::1", port: 5000, user: "u@x", pass: "p:" }]);
    assert.deepEqual(pullServerAddresses("localhost"), [{ host: "localhost", port: 4222 }]);
    assert.deepEqual(pullServerAddresses("nats://secret@127.0.0.1:1,nats://secret@127.0.0.1:2"), [
      { host: "127.0.0.1", port: 1, token: "secret" },
      { host: "127.0.0.1", port: 2, token: "secret" },
    ]);
    assert.throws(() => pullServerAddresses("nats://u:sec ret@h:1/x"), (err: Error) => err instanceof PullSetupError && !err.message.includes("sec"));

    // The server stops while the reader holds a connection: the read fails, after the batches
    // it had, in order; it does not hang. How it ends depends on who sees the stop first: the
    // socket closing, or the server's own 409 Server Shutdown to the pull in flight.
    const got: number[] = [];
    const failed = (async () => {
      for await (const batch of readInWorker({ url: nats.url, stream: log.stream, fromSeq: 1, maxBatch: 16, engine: "pull" })) {
        got.push(...batch.map((m) => m.seq));
        if (got.length === 16) await nats.server.stop();
      }
    })();
    await assert.rejects(failed, /connection to the log closed|ECONNRESET|409 Server Shutdown/);
    assert.ok(got.length < 3000, `read ${got.length} messages`);
    assert.deepEqual(got, Array.from({ length: got.length }, (_, i) => i + 1));

    // A server with a user and password: read with them in the URL; refused without.
    const port = await freePort("127.0.0.1");
    authServer = spawn(resolveNatsServerBinary(), ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", join(dir, "js"), "--user", "ck", "--pass", "s3cret"], { stdio: "ignore" });
    const nc = await retry(() => connect({ servers: `127.0.0.1:${port}`, user: "ck", pass: "s3cret" }));
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "AUTH", subjects: ["a.>"] });
    await jetstream(nc).publish("a.b", Buffer.from("x"));
    await nc.close();
    const authed: string[] = [];
    for await (const batch of readInWorker({ url: `nats://ck:s3cret@127.0.0.1:${port}`, stream: "AUTH", fromSeq: 1, engine: "pull" })) {
      authed.push(...batch.map((m) => `${m.seq} ${m.subject} ${Buffer.from(m.data).toString()}`));
      break;
    }
    assert.deepEqual(authed, ["1 a.b x"]);
    await assert.rejects(readInWorker({ url: `nats://ck:wrong@127.0.0.1:${port}`, stream: "AUTH", fromSeq: 1, engine: "pull" }).next(), /Authorization/i);
  } finally {
    authServer?.kill();
    await log.close();
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
});

test("the pull reader: a server that hangs with the connection open fails the read after three missed heartbeats", { timeout: 30_000 }, async () => {
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url });
  const pid = nats.server.pid!;
  try {
    await log.append("containerd.io.hb.t", Buffer.from("x"), { msgId: "hb" });
    const ac = new AbortController();
    const it = readPacked({ url: nats.url, stream: log.stream, fromSeq: 1, maxBatch: 16, name: "hb-test", signal: ac.signal, heartbeatMs: 300 });
    assert.equal(unpackBatch((await it.next()).value as ArrayBuffer).length, 1);
    // Caught up: the pull waits, and heartbeats keep it alive past three intervals.
    const waiting = it.next();
    await new Promise((r) => setTimeout(r, 1500));
    process.kill(pid, "SIGSTOP");
    try {
      const t0 = Date.now();
      await assert.rejects(waiting, /no message or heartbeat from the log/);
      assert.ok(Date.now() - t0 < 5000, `failed after ${Date.now() - t0} ms`);
    } finally {
      process.kill(pid, "SIGCONT");
    }
  } finally {
    await log.close();
    await nats.cleanup();
  }
});

test("the pull reader: expired pulls are asked again, a stream whose first messages were removed is read from its first, a silent server fails the setup, stopping is quick", { timeout: 30_000 }, async () => {
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url });
  const silent = createServer(() => undefined); // accepts, never says INFO
  try {
    for (let i = 1; i <= 5; i++) await log.append("containerd.io.exp.t", Buffer.from(String(i)), { msgId: `e${i}` });
    await log.jsm.streams.purge(log.stream, { seq: 3 }); // keeps 3, 4, 5
    const ac = new AbortController();
    const it = readPacked({ url: nats.url, stream: log.stream, fromSeq: 1, maxBatch: 16, name: "exp-test", signal: ac.signal, heartbeatMs: 200, pullExpiresMs: 400 });
    const first = unpackBatch((await it.next()).value as ArrayBuffer);
    assert.deepEqual(first.map((m) => m.seq), [3, 4, 5]);
    // Caught up: the pull expires (408) more than once; later appends still arrive.
    await new Promise((r) => setTimeout(r, 1300));
    await log.append("containerd.io.exp.t", Buffer.from("late"), { msgId: "late" });
    const late = unpackBatch((await it.next()).value as ArrayBuffer);
    assert.deepEqual(late.map((m) => [m.seq, Buffer.from(m.data).toString()]), [[6, "late"]]);
    const t0 = Date.now();
    await it.return(undefined);
    assert.ok(Date.now() - t0 < 400, `stopping took ${Date.now() - t0} ms`);
    const consumers: unknown[] = [];
    for await (const c of log.jsm.consumers.list(log.stream)) consumers.push(c);
    assert.deepEqual(consumers, [], "the reader's consumer is gone with it");

    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as AddressInfo).port;
    const t1 = Date.now();
    await assert.rejects(
      readPacked({ url: `nats://127.0.0.1:${port}`, stream: log.stream, fromSeq: 1, maxBatch: 16, name: "silent", signal: new AbortController().signal, setupTimeoutMs: 300 }).next(),
      (err: Error) => err instanceof PullSetupError && /no answer/.test(err.message),
    );
    assert.ok(Date.now() - t1 < 2000, `gave up after ${Date.now() - t1} ms`);
  } finally {
    silent.close();
    await log.close();
    await nats.cleanup();
  }
});

test("the pull reader over large messages: a caller that does not take them has at most its byte budget and its ready batches sent ahead, each batch bounded in bytes; every message then arrives in order", { timeout: 60_000 }, async () => {
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url });
  try {
    const N = 120;
    const SIZE = 500_000;
    for (let i = 1; i <= N; i++) {
      const data = Buffer.alloc(SIZE, i & 0xff);
      data.writeUInt32BE(i, 0);
      await log.append("containerd.io.big.t", data, { msgId: `b${i}` });
    }
    // A small message in the middle, and one that fills most of the budget's room.
    await log.append("containerd.io.big.t", Buffer.from("small"), { msgId: "small" });
    await log.append("containerd.io.big.t", Buffer.alloc(1_000_000, 1), { msgId: "near-max" });
    const ac = new AbortController();
    const it = readPacked({ url: nats.url, stream: log.stream, fromSeq: 1, maxBatch: 256, name: "big-test", signal: ac.signal });
    const first = unpackBatch((await it.next()).value as ArrayBuffer);
    // A batch ends past 4 MiB: nine messages of 500 KB at most, not 256.
    assert.ok(first.length >= 1 && first.length <= 9, `${first.length} messages in the first batch`);
    // The caller pauses: the server sends ahead what the reader asked for (4 MiB at once) and
    // the reader keeps four batches ready; with 4,096 messages asked at a time it was all of them.
    await new Promise((r) => setTimeout(r, 1000));
    let delivered = 0;
    for await (const c of log.jsm.consumers.list(log.stream)) delivered = Math.max(delivered, c.delivered.stream_seq);
    const ahead = Math.ceil((5 * (4 << 20)) / SIZE) + first.length + 10;
    assert.ok(delivered > first.length && delivered <= ahead, `${delivered} of ${N + 2} messages sent while the caller paused (at most ${ahead})`);
    const seqs = first.map((m) => m.seq);
    while (seqs.length < N + 2) {
      const batch = unpackBatch((await it.next()).value as ArrayBuffer);
      const bytes = batch.reduce((n, m) => n + m.data.length, 0);
      assert.ok(bytes <= (4 << 20) + 1_000_000, `a batch of ${bytes} bytes`);
      for (const m of batch) {
        if (m.seq <= N) assert.equal(Buffer.from(m.data).readUInt32BE(0), m.seq);
        seqs.push(m.seq);
      }
    }
    assert.deepEqual(seqs, Array.from({ length: N + 2 }, (_, i) => i + 1));
    await it.return(undefined);
  } finally {
    await log.close();
    await nats.cleanup();
  }
});

async function retry<T>(f: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await f();
    } catch (err) {
      if (i >= 100) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

test("a log the worker cannot reach fails the reader with the connection's error", async () => {
  const nats = await startTestNats();
  const url = nats.url;
  await nats.cleanup(); // the port is free again: nothing listens there
  const it = readInWorker({ url, stream: "CK_EVENTS", fromSeq: 1 });
  await assert.rejects(it.next(), (err: Error) => /CONNECTION_REFUSED|ECONNREFUSED|connect/i.test(err.message));
});

test("a projector far behind catches up through the bulk source, follows the live tail in its own thread, and falls back when the bulk source fails", async () => {
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url });
  const dirs: string[] = [];
  const open = async () => {
    const dir = await mkdtemp(join(tmpdir(), "ck-bulk-"));
    dirs.push(dir);
    return ProjectionDb.open(dir);
  };
  try {
    // Messages ck's commands did not write are passed over, but they advance the checkpoint.
    for (let i = 0; i < 50; i++) await log.append(`containerd.io.x.t${i}`, Buffer.from([i]), { msgId: `b${i}` });

    const db = await open();
    const worker = (fromSeq: number, signal: AbortSignal) => readInWorker({ url: log.url, stream: log.stream, fromSeq, signal, maxBatch: 16 });
    const p = new Projector(db, log, loadProtos(), { bulk: { threshold: 10, source: worker } });
    p.start();
    await p.catchUp();
    assert.equal(p.appliedSeq, 50);
    assert.ok(p.bulkBatches >= 4, `bulk batches ${p.bulkBatches}`);
    const after = p.bulkBatches;
    await log.append("containerd.io.x.live", Buffer.from("live"), { msgId: "live" });
    await p.catchUp();
    assert.equal(p.appliedSeq, 51);
    assert.equal(p.bulkBatches, after, "the live tail came through the projector's own reader");
    await p.stop();
    await db.close();

    // Below the threshold the bulk source is not used at all.
    const db2 = await open();
    const p2 = new Projector(db2, log, loadProtos(), { bulk: { threshold: 1000, source: worker } });
    p2.start();
    await p2.catchUp();
    assert.equal(p2.appliedSeq, 51);
    assert.equal(p2.bulkBatches, 0);
    await p2.stop();
    await db2.close();

    // A bulk source that fails part way: the projector goes on in its own thread.
    const db3 = await open();
    const failing = async function* (fromSeq: number, signal: AbortSignal) {
      for await (const batch of worker(fromSeq, signal)) {
        yield batch.slice(0, 5);
        throw new Error("bulk reader lost");
      }
    };
    const p3 = new Projector(db3, log, loadProtos(), { bulk: { threshold: 10, source: failing } });
    p3.start();
    await p3.catchUp();
    assert.equal(p3.appliedSeq, 51);
    assert.equal(p3.error, undefined);
    assert.equal(p3.bulkFailed?.message, "bulk reader lost");
    assert.equal(p3.bulkBatches, 1);
    await p3.stop();
    await db3.close();
  } finally {
    await log.close();
    await nats.cleanup();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
});
