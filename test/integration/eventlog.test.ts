// The log's reader over a real nats-server: a message's headers as ck reads them straight from
// its bytes equal what nats.js's own decoder gives, for every shape of header block.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, headers as natsHeaders, type Msg } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { startTestNats } from "../helpers/nats.js";
import { rejectsClass } from "../helpers/errors.js";
import { EventLog, isWrongLastSequence, messageHeaders } from "../../src/eventstore/log.js";

test("headers read from the message's bytes equal nats.js's decoding", async () => {
  const nats = await startTestNats();
  const nc = await connect({ servers: nats.url });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "HDR_TEST", subjects: ["hdr.>"] });
    const js = jetstream(nc);
    const shapes: [string, string][][] = [
      [["Ck-Origin", "command"]],
      [["Ck-Origin", "  publish  "], ["X-Colon", "a: b: c"], ["x-lower", "v"]],
      [["Repeated", "first"], ["Repeated", "second"], ["Unicode", "é ✓"]],
      [["Empty", ""], ["toString", "a header like any other"]],
    ];
    for (const [i, shape] of shapes.entries()) {
      const h = natsHeaders();
      for (const [k, v] of shape) h.append(k, v);
      await js.publish(`hdr.${i}`, new Uint8Array([i]), { headers: h });
    }
    await js.publish("hdr.none", new Uint8Array([9]));

    const consumer = await js.consumers.get("HDR_TEST");
    const got = await consumer.fetch({ max_messages: shapes.length + 1, expires: 5000 });
    let n = 0;
    for await (const m of got) {
      // The fast path applies: the internals it reads are there.
      const core = (m as unknown as { msg: Msg & { _rdata?: unknown; _msg?: { hdr?: unknown } } }).msg;
      assert.ok(core._rdata instanceof Uint8Array && typeof core._msg?.hdr === "number", "nats.js internals as expected");
      const expected: Record<string, string> = {};
      for (const [k, v] of m.headers ?? []) expected[k] = v[0] ?? "";
      assert.deepEqual({ ...messageHeaders(core) }, expected, `message ${m.seq}`);
      // And the fallback, through nats.js's decoder, agrees.
      assert.deepEqual({ ...messageHeaders({ headers: m.headers }) }, expected);
      n++;
    }
    assert.equal(n, shapes.length + 1);

    // Through the log's reader, as the projector reads.
    const log = await EventLog.open({ url: nats.url, stream: "HDR_TEST" });
    try {
      const ac = new AbortController();
      const seen: Record<string, string>[] = [];
      for await (const m of log.read({ signal: ac.signal })) {
        seen.push({ ...m.headers });
        if (seen.length === shapes.length + 1) ac.abort();
      }
      assert.deepEqual(seen[1], { "Ck-Origin": "publish", "X-Colon": "a: b: c", "x-lower": "v" });
      assert.deepEqual(seen[2], { Repeated: "first", Unicode: "é ✓" });
      assert.deepEqual(seen[3], { Empty: "", toString: "a header like any other" });
      assert.deepEqual(seen[4], {});
    } finally {
      await log.close();
    }
  } finally {
    await nc.close();
    await nats.cleanup();
  }
});

test("appends: acknowledged with their sequence; a repeated message id is a duplicate; a failed expectation is JetStream's error; no stream, a quick failure", async () => {
  const nats = await startTestNats();
  const log = await EventLog.open({ url: nats.url, publishTimeoutMs: 2000 });
  try {
    const first = await log.append("containerd.io.pub.a", Buffer.from("1"), { msgId: "one", expectLastSeq: 0 });
    assert.deepEqual(first, { seq: 1, duplicate: false });
    // Pipelined: each expects the one before it, by sequence and message id.
    const acks = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        log.append("containerd.io.pub.a", Buffer.from(String(i)), { msgId: `m${i}`, expectLastSeq: i + 1, expectLastMsgId: i === 0 ? "one" : `m${i - 1}`, headers: { "Ck-Origin": "command" } }),
      ),
    );
    assert.deepEqual(acks.map((a) => a.seq), Array.from({ length: 50 }, (_, i) => i + 2));
    assert.deepEqual(await log.append("containerd.io.pub.a", Buffer.from("again"), { msgId: "m49" }), { seq: 51, duplicate: true });
    await assert.rejects(log.append("containerd.io.pub.a", Buffer.from("stale"), { msgId: "stale", expectLastSeq: 7 }), (err: unknown) => isWrongLastSequence(err));
    await assert.rejects(log.append("containerd.io.pub.a", Buffer.from("stale"), { msgId: "stale2", expectLastMsgId: "m3" }), (err: unknown) => isWrongLastSequence(err));
    // The stored message carries the headers given and the message id.
    for await (const m of log.read({ fromSeq: 2 })) {
      assert.deepEqual([m.headers["Ck-Origin"], m.headers["Nats-Msg-Id"], Buffer.from(m.data).toString()], ["command", "m0", "0"]);
      break;
    }
    // A subject no stream takes: the server says no responders at once, not at the timeout.
    const t0 = Date.now();
    await rejectsClass(log.append("elsewhere.x", Buffer.from("x"), { msgId: "x" }), "Unavailable", /no JetStream stream answers/);
    assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
    assert.equal(await log.lastSeq(), 51, "nothing refused was stored");
    // An inbox subscription the server ended (a permissions error, say) is made again, not
    // left to time every later append out.
    (log as unknown as { publisher: { sub: { unsubscribe(): void } } }).publisher.sub.unsubscribe();
    assert.deepEqual(await log.append("containerd.io.pub.a", Buffer.from("after"), { msgId: "after" }), { seq: 52, duplicate: false });
    // An append made while the log closes fails at once; it is not left pending (and stored).
    const closing = log.close();
    const t1 = Date.now();
    await rejectsClass(log.append("containerd.io.pub.a", Buffer.from("late"), { msgId: "late" }), "Unavailable");
    assert.ok(Date.now() - t1 < 1500, `took ${Date.now() - t1} ms`);
    await closing;
    const check = await EventLog.open({ url: nats.url });
    assert.equal(await check.lastSeq(), 52, "the late append was not stored");
    await check.close();
  } finally {
    await log.close();
    await nats.cleanup();
  }
});

test("a second stream for containerd.io.> on one server: opening it says another stream takes those subjects, and creates nothing", async () => {
  const nats = await startTestNats();
  const first = await EventLog.open({ url: nats.url, stream: "CK_FIRST" });
  try {
    await assert.rejects(EventLog.open({ url: nats.url, stream: "CK_SECOND" }), (err: Error) => {
      assert.match(err.message, /cannot create stream CK_SECOND: another stream on this NATS server already takes containerd\.io\.>/);
      assert.match(err.message, /--stream/);
      return true;
    });
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      const names: string[] = [];
      for await (const s of jsm.streams.list()) names.push(s.config.name);
      assert.deepEqual(names, ["CK_FIRST"]);
    } finally {
      await nc.close();
    }
  } finally {
    await first.close();
    await nats.cleanup();
  }
});
