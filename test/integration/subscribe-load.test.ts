// Events.Subscribe readers replaying large events while ckd writes: a subscriber's pace never
// affects writes. Subscribe readers pull a bounded number of bytes ahead, on a NATS connection
// of their own; the connection appends go through is never the server's slow consumer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon } from "../helpers/daemon.js";

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Connz {
  connections?: { cid: number; name?: string; reason?: string }[];
}

test("subscribers replaying large events from sequence 1 and reading slowly, while ckd writes (a server with a 16 MB max_pending): no write fails, ckd's writing connection is never cut, each subscriber gets every event in order", { timeout: 240_000 }, async () => {
  // The server cuts a client as a slow consumer once more than max_pending is waiting for it:
  // 16 MB is less than the 4,096 events of 900 KB that a reader once asked for at a time.
  const nats = await startTestNats({ config: "max_pending: 16MB\nhttp_port: -1" });
  const serverLog = () => readFileSync(join(nats.dir, "nats-server.log"), "utf8");
  const monitor = /Starting http monitor on [^\s]+:(\d+)/.exec(serverLog())?.[1];
  assert.ok(monitor, "the server's monitoring port");
  const connz = async (state: "open" | "closed"): Promise<NonNullable<Connz["connections"]>> =>
    ((await (await fetch(`http://127.0.0.1:${monitor}/connz?state=${state}&limit=1024`)).json()) as Connz).connections ?? [];
  const d = await TestDaemon.start({ natsUrl: nats.url });
  const big = d.client("big");
  const w = d.client("w");
  const ac = new AbortController();
  try {
    const N = 60;
    const SIZE = 900_000;
    for (let i = 0; i < N; i += 4) {
      await Promise.all(
        Array.from({ length: Math.min(4, N - i) }, (_, k) => {
          const value = Buffer.alloc(SIZE, 7);
          value.writeUInt32BE(i + k, 0);
          return big.call("events", "Publish", { topic: "/big/blob", event: { type_url: "x.Y", value } });
        }),
      );
    }
    const writer = (await connz("open")).find((c) => c.name?.startsWith("ckd ") && !c.name.endsWith(" readers"));
    assert.ok(writer, JSON.stringify(await connz("open")));

    // Two subscribers from the start of the log, each taking ~100 ms per event.
    const subscriber = async (): Promise<number[]> => {
      const got: number[] = [];
      for await (const e of big.stream("events", "Subscribe", { filters: ["namespace==big"] }, { metadata: { "ck-from-seq": "1" }, signal: ac.signal })) {
        got.push(Buffer.from(e.event.value).readUInt32BE(0));
        if (got.length === N) break;
        await settle(100);
      }
      return got;
    };
    const subscribers = [subscriber(), subscriber()];
    let ok = 0;
    const failed: string[] = [];
    const t0 = Date.now();
    while (Date.now() - t0 < 6000) {
      try {
        await w.call("namespaces", "Create", { namespace: { name: `n${ok}-${failed.length}` } }, { deadlineMs: 5000 });
        ok++;
      } catch (err) {
        failed.push(`${(err as { errorClass?: string }).errorClass} ${(err as Error).message}`);
      }
    }
    const expected = Array.from({ length: N }, (_, i) => i);
    for (const got of await Promise.all(subscribers)) assert.deepEqual(got, expected, "every event, in order, once");
    assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${ok + failed.length} writes failed`);
    assert.ok(ok >= 20, `${ok} writes in 6 s`);

    // The connection ckd appends through stayed up: the same one at the end, never closed by the server.
    assert.ok((await connz("open")).some((c) => c.cid === writer.cid && c.name === writer.name), "ckd's writing connection replaced");
    const cut = (await connz("closed")).filter((c) => c.name === writer.name);
    assert.deepEqual(cut, [], "ckd's writing connection was closed");
    const slow = serverLog()
      .split("\n")
      .filter((l) => l.includes("Slow Consumer") && l.includes(`:${writer.name}"`));
    assert.deepEqual(slow, [], "the server took ckd's writing connection for a slow consumer");
    // The subscribers read on a connection of their own.
    assert.ok((await connz("open")).some((c) => c.name === `${writer.name} readers`), "no readers' connection");

    // Ended subscribers leave no consumer behind: the projector's remains.
    ac.abort();
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      const count = async () => (await jsm.streams.info("CK_EVENTS")).state.consumer_count;
      for (const until = Date.now() + 10_000; (await count()) > 1; await settle(200)) assert.ok(Date.now() < until, `${await count()} consumers left`);
    } finally {
      await nc.close();
    }
  } finally {
    ac.abort();
    big.close();
    w.close();
    await d.cleanup();
    await nats.cleanup();
  }
});

test("a ckd catching up over large events in its own thread (a server with a 16 MB max_pending): the connection it appends through is never cut as a slow consumer, and it then follows the live tail", { timeout: 240_000 }, async () => {
  // The projector's reader once pulled 4,096 messages at a time from the start: 80 containers
  // of 900 KB were ~72 MB asked for at once, on the connection appends go through.
  const nats = await startTestNats({ config: "max_pending: 16MB" });
  const serverLog = () => readFileSync(join(nats.dir, "nats-server.log"), "utf8");
  const N = 80;
  const spec = (i: number) => {
    const value = Buffer.alloc(900_000, 65);
    value.writeUInt32BE(i, 0);
    return { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value };
  };
  const first = await TestDaemon.start({ natsUrl: nats.url });
  let second: TestDaemon | undefined;
  try {
    const c1 = first.client("big");
    for (let i = 0; i < N; i += 4) {
      await Promise.all(Array.from({ length: 4 }, (_, k) => c1.call("containers", "Create", { container: { id: `c${i + k}`, runtime: { name: "io.containerd.runc.v2" }, spec: spec(i + k) } })));
    }
    // A second ckd with a root of its own folds them all before it serves (fewer than its
    // catch-up thread's threshold: in its main thread, on its appending connection).
    second = await TestDaemon.start({ natsUrl: nats.url });
    const c2 = second.client("big");
    const got = await c2.call("containers", "Get", { id: `c${N - 1}` });
    assert.equal(Buffer.from(got.container.spec.value).readUInt32BE(0), N - 1);
    await c2.call("containers", "Create", { container: { id: "after", runtime: { name: "io.containerd.runc.v2" }, spec: spec(N) } });
    // Caught up, it follows what the other ckd appends (its reader then pulls counted).
    await c1.call("containers", "Create", { container: { id: "tail", runtime: { name: "io.containerd.runc.v2" }, spec: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from("{}") } } });
    for (const until = Date.now() + 10_000; ; await settle(100)) {
      const seen = await c2.call("containers", "Get", { id: "tail" }).then(
        () => true,
        () => false,
      );
      if (seen) break;
      assert.ok(Date.now() < until, "the second ckd did not follow the first's append");
    }
    c1.close();
    c2.close();
    const slow = serverLog()
      .split("\n")
      .filter((l) => l.includes("Slow Consumer"));
    assert.deepEqual(slow, [], "the server cut a connection as a slow consumer");
  } finally {
    await second?.cleanup();
    await first.cleanup();
    await nats.cleanup();
  }
});

test("a ckd on the live tail that falls behind by a burst of large events (another ckd's container creates, appended while its process was stopped; a server with a 16 MB max_pending): its connection is never cut as a slow consumer, every event is applied, and it writes on", { timeout: 240_000 }, async () => {
  // Its reader once pulled 4,096 messages at a time on the tail, counted: 40 containers of
  // 900 KB appended meanwhile were ~36 MB sent at once on the connection appends go through.
  // (The write deadline is long: a stopped process reads nothing, and the test is about
  // max_pending.)
  const nats = await startTestNats({ config: "max_pending: 16MB\nwrite_deadline: \"120s\"\nhttp_port: -1" });
  const serverLog = () => readFileSync(join(nats.dir, "nats-server.log"), "utf8");
  const monitor = /Starting http monitor on [^\s]+:(\d+)/.exec(serverLog())?.[1];
  assert.ok(monitor, "the server's monitoring port");
  const connz = async (state: "open" | "closed"): Promise<NonNullable<Connz["connections"]>> =>
    ((await (await fetch(`http://127.0.0.1:${monitor}/connz?state=${state}&limit=1024`)).json()) as Connz).connections ?? [];
  const N = 40;
  const spec = (i: number) => {
    const value = Buffer.alloc(900_000, 66);
    value.writeUInt32BE(i, 0);
    return { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value };
  };
  const writer = await TestDaemon.start({ natsUrl: nats.url });
  let follower: TestDaemon | undefined;
  let stopped = false;
  try {
    const cw = writer.client("big");
    await cw.call("containers", "Create", { container: { id: "first", runtime: { name: "io.containerd.runc.v2" }, spec: spec(0) } });
    const before = new Set((await connz("open")).map((c) => c.name));
    follower = await TestDaemon.start({ natsUrl: nats.url });
    const cf = follower.client("big");
    // Caught up: it follows what the writer appends.
    await cw.call("containers", "Create", { container: { id: "tail", runtime: { name: "io.containerd.runc.v2" }, spec: spec(1) } });
    for (const until = Date.now() + 10_000; ; await settle(100)) {
      const seen = await cf.call("containers", "Get", { id: "tail" }).then(
        () => true,
        () => false,
      );
      if (seen) break;
      assert.ok(Date.now() < until, "the follower did not follow the writer's append");
    }
    const conn = (await connz("open")).find((c) => c.name?.startsWith("ckd ") && !c.name.endsWith(" readers") && !before.has(c.name));
    assert.ok(conn, JSON.stringify(await connz("open")));

    // Its event loop held up (here: its process stopped) while the writer appends the burst.
    process.kill(follower.pid, "SIGSTOP");
    stopped = true;
    for (let i = 0; i < N; i += 4) {
      await Promise.all(Array.from({ length: 4 }, (_, k) => cw.call("containers", "Create", { container: { id: `c${i + k}`, runtime: { name: "io.containerd.runc.v2" }, spec: spec(i + k) } })));
    }
    process.kill(follower.pid, "SIGCONT");
    stopped = false;

    // Every one applied, in its own projection.
    for (const until = Date.now() + 60_000; ; await settle(200)) {
      const seen = await cf.call("containers", "Get", { id: `c${N - 1}` }).then(
        () => true,
        () => false,
      );
      if (seen) break;
      assert.ok(Date.now() < until, "the follower did not apply the burst");
    }
    for (let i = 0; i < N; i++) {
      const got = await cf.call("containers", "Get", { id: `c${i}` });
      assert.equal(Buffer.from(got.container.spec.value).readUInt32BE(0), i);
    }
    // It writes on, through the same connection, never cut.
    await cf.call("namespaces", "Create", { namespace: { name: "after-burst" } }, { deadlineMs: 10_000 });
    assert.ok((await connz("open")).some((c) => c.cid === conn.cid && c.name === conn.name), "the follower's connection replaced");
    assert.deepEqual((await connz("closed")).filter((c) => c.name === conn.name), [], "the follower's connection was closed");
    const slow = serverLog()
      .split("\n")
      .filter((l) => l.includes("Slow Consumer"));
    assert.deepEqual(slow, [], "the server cut a connection as a slow consumer");
    cw.close();
    cf.close();
  } finally {
    if (stopped && follower) process.kill(follower.pid, "SIGCONT");
    await follower?.cleanup();
    await writer.cleanup();
    await nats.cleanup();
  }
});
