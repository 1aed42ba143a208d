// The core against a real nats-server and RocksDB through ckd's gRPC API: read-your-writes,
// CRUD with filters, events over gRPC and plain NATS, and bad input that writes nothing.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runNode, CK, CK_REPLAY } from "../helpers/daemon.js";
import { EventLog } from "../../src/eventstore/log.js";
import type { ErrorClass } from "../../src/errdefs/errdefs.js";
import { loadProtos } from "../../src/protos/protos.js";
import type { ApiClient } from "../../src/cli/client.js";
import { rejectsClass } from "../helpers/errors.js";

const DIGEST = "sha256:" + "c".repeat(64);
const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: DIGEST, size: 1234 };
const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from("{}") };

describe("ckd core", () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let daemon: TestDaemon;
  let api: ApiClient;
  let log: EventLog;

  before(async () => {
    nats = await startTestNats();
    daemon = await TestDaemon.start({ natsUrl: nats.url });
    api = daemon.client("default");
    log = await EventLog.open({ url: nats.url });
  });

  after(async () => {
    api?.close();
    await log?.close();
    await daemon?.cleanup();
    await nats?.cleanup();
  });

  test("read-your-writes: every mutation is visible to the next read", async () => {
    const c = daemon.client("ryw");
    try {
      for (let i = 0; i < 50; i++) {
        const name = `ryw/img:${i}`;
        await c.call("images", "Create", { image: { name, target } });
        const got = await c.call("images", "Get", { name });
        assert.equal(got.image.name, name);
        await c.call("images", "Update", { image: { name, labels: { n: String(i) } }, update_mask: { paths: ["labels.n"] } });
        assert.equal((await c.call("images", "Get", { name })).image.labels.n, String(i));
        await c.call("images", "Delete", { name });
        await rejectsClass(c.call("images", "Get", { name }), "NotFound");
      }
    } finally {
      c.close();
    }
  });

  test("namespaces: create, get, list, label, delete only when empty; implicit creation by a write", async () => {
    await api.call("namespaces", "Create", { namespace: { name: "ns-a", labels: { team: "x" } } });
    await rejectsClass(api.call("namespaces", "Create", { namespace: { name: "ns-a" } }), "AlreadyExists");
    const got = await api.call("namespaces", "Get", { name: "ns-a" });
    assert.deepEqual(got.namespace.labels, { team: "x" });
    await api.call("namespaces", "Update", { namespace: { name: "ns-a", labels: { env: "prod" } }, update_mask: { paths: ["labels.env"] } });
    assert.deepEqual((await api.call("namespaces", "Get", { name: "ns-a" })).namespace.labels, { env: "prod", team: "x" });

    const inB = daemon.client("ns-b");
    try {
      await inB.call("images", "Create", { image: { name: "b/img:1", target } });
      // Writing into an unknown namespace created it.
      assert.equal((await api.call("namespaces", "Get", { name: "ns-b" })).namespace.name, "ns-b");
      await rejectsClass(api.call("namespaces", "Delete", { name: "ns-b" }), "FailedPrecondition", /must be empty, but it still has images/);
      await inB.call("images", "Delete", { name: "b/img:1" });
      await api.call("namespaces", "Delete", { name: "ns-b" });
      // As containerd's store: Get of a namespace nothing holds answers it with no labels
      // (its Go client asks for the default namespace's labels when it connects).
      assert.deepEqual((await api.call("namespaces", "Get", { name: "ns-b" })).namespace, { name: "ns-b", labels: {} });
      // Nor does it check the name: one that is no identifier is answered so too.
      assert.deepEqual((await api.call("namespaces", "Get", { name: "Bad..Name" })).namespace, { name: "Bad..Name", labels: {} });
      await rejectsClass(api.call("namespaces", "Delete", { name: "Bad..Name" }), "NotFound");
    } finally {
      inB.close();
    }
    const names = (await api.call("namespaces", "List", {})).namespaces.map((n: any) => n.name);
    assert.ok(names.includes("ns-a") && !names.includes("ns-b"));
  });

  test("images and containers list with containerd filters; namespaces isolate", async () => {
    const c = daemon.client("filters");
    const other = daemon.client("filters-other");
    try {
      for (let i = 0; i < 10; i++) {
        await c.call("images", "Create", { image: { name: `reg.local/app:${i}`, labels: { "com.example/group": i % 2 ? "odd" : "even" }, target } });
      }
      await other.call("images", "Create", { image: { name: "reg.local/app:0", target } });
      const all = (await c.call("images", "List", {})).images;
      assert.equal(all.length, 10);
      const even = (await c.call("images", "List", { filters: ['labels."com.example/group"==even'] })).images;
      assert.equal(even.length, 5);
      const re = (await c.call("images", "List", { filters: ["name~=app:[12]$"] })).images;
      assert.deepEqual(re.map((i: any) => i.name).sort(), ["reg.local/app:1", "reg.local/app:2"]);
      const or = (await c.call("images", "List", { filters: ["name==reg.local/app:3", "name==reg.local/app:4"] })).images;
      assert.equal(or.length, 2);
      assert.equal((await other.call("images", "List", {})).images.length, 1);
      // List replies are framed from per-record encodings kept between calls: an update or a
      // delete shows in the very next List, filtered or not.
      await c.call("images", "Update", { image: { name: "reg.local/app:3", labels: { "com.example/group": "even" } }, update_mask: { paths: ["labels"] } });
      await c.call("images", "Delete", { name: "reg.local/app:4" });
      const after = (await c.call("images", "List", {})).images;
      assert.equal(after.length, 9);
      assert.deepEqual(after.find((i: any) => i.name === "reg.local/app:3").labels, { "com.example/group": "even" });
      const evenAfter = (await c.call("images", "List", { filters: ['labels."com.example/group"==even'] })).images.map((i: any) => i.name);
      assert.ok(evenAfter.includes("reg.local/app:3") && !evenAfter.includes("reg.local/app:4"), evenAfter.join(","));

      await c.call("containers", "Create", { container: { id: "web-1", image: "reg.local/app:1", runtime: { name: "io.containerd.runc.v2" }, spec, labels: { tier: "web" } } });
      await c.call("containers", "Create", { container: { id: "db-1", image: "reg.local/app:2", runtime: { name: "io.containerd.runc.v2" }, spec } });
      const web = (await c.call("containers", "List", { filters: ["labels.tier==web"] })).containers;
      assert.deepEqual(web.map((x: any) => x.id), ["web-1"]);
      const streamed: string[] = [];
      for await (const m of c.stream("containers", "ListStream", {})) streamed.push(m.container.id);
      assert.deepEqual(streamed.sort(), ["db-1", "web-1"]);
      const got = (await c.call("containers", "Get", { id: "web-1" })).container;
      assert.equal(got.runtime.name, "io.containerd.runc.v2");
      assert.equal(got.spec.type_url, spec.type_url);
      await rejectsClass(other.call("containers", "Get", { id: "web-1" }), "NotFound");
      await c.call("containers", "Update", { container: { id: "web-1", labels: { tier: "" } }, update_mask: { paths: ["labels.tier"] } });
      assert.deepEqual((await c.call("containers", "Get", { id: "web-1" })).container.labels, {});
      assert.deepEqual((await c.call("containers", "List", { filters: ["labels.tier==web"] })).containers, [], "List sees the update");
      await c.call("containers", "Delete", { id: "web-1" });
      await rejectsClass(c.call("containers", "Get", { id: "web-1" }), "NotFound");
      assert.deepEqual((await c.call("containers", "List", {})).containers.map((x: any) => x.id), ["db-1"]);
    } finally {
      c.close();
      other.close();
    }
  });

  test("bad input: the right class, a message naming the field, and nothing appended", async () => {
    const c = daemon.client("badinput");
    const bare = daemon.client("");
    try {
      await c.call("images", "Create", { image: { name: "exists", target } });
      const before = await log.lastSeq();
      const cases: [() => Promise<unknown>, ErrorClass, RegExp][] = [
        [() => api.call("namespaces", "Create", { namespace: { name: "Bad..Name" } }), "InvalidArgument", /namespace/],
        [() => api.call("namespaces", "Create", { namespace: { name: "x".repeat(77) } }), "InvalidArgument", /namespace/],
        [() => c.call("images", "Create", { image: { name: "", target } }), "InvalidArgument", /name/],
        [() => c.call("images", "Create", { image: { name: "a", target: { ...target, digest: "sha256:1234" } } }), "InvalidArgument", /[Dd]igest/],
        [() => c.call("images", "Create", { image: { name: "a", target: { ...target, digest: "md5:" + "0".repeat(32) } } }), "InvalidArgument", /[Dd]igest/],
        [() => c.call("images", "Create", { image: { name: "a", labels: { k: "v".repeat(5000) }, target } }), "InvalidArgument", /label/i],
        [() => c.call("images", "List", { filters: ["name=="] }), "InvalidArgument", /filter|parse/i],
        [() => c.call("images", "List", { filters: ["name~=("] }), "InvalidArgument", /regex|filter|pars/i],
        [() => c.call("images", "Update", { image: { name: "exists" }, update_mask: { paths: ["created_at"] } }), "InvalidArgument", /created_at/],
        [() => c.call("containers", "Create", { container: { id: "bad/id", runtime: { name: "r" }, spec } }), "InvalidArgument", /ID|identifier/i],
        [() => c.call("containers", "Create", { container: { id: "ok", runtime: { name: "" }, spec } }), "InvalidArgument", /Runtime/],
        // The map key __proto__ (JavaScript's prototype): refused, not lost.
        [() => c.call("images", "Create", { image: { name: "p", labels: JSON.parse('{"__proto__":"x"}'), target } }), "InvalidArgument", /image\.Labels: the key "__proto__"/],
        [() => c.call("images", "Create", { image: { name: "p", target: { ...target, annotations: JSON.parse('{"__proto__":"x"}') } } }), "InvalidArgument", /Target\.Annotations: the key "__proto__"/],
        [() => c.call("containers", "Create", { container: { id: "p", runtime: { name: "r" }, spec, extensions: JSON.parse('{"__proto__":{"type_url":"x"}}') } }), "InvalidArgument", /container\.Extensions: the key "__proto__"/],
        // A label is checked as given, with no value too (containerd's Validate), though not stored.
        [() => c.call("images", "Create", { image: { name: "q", labels: { ["k".repeat(5000)]: "" }, target } }), "InvalidArgument", /label/i],
        // containerd's NamespaceRequired: FailedPrecondition.
        [() => bare.call("images", "Create", { image: { name: "a", target } }), "FailedPrecondition", /namespace is required/],
        [() => bare.call("images", "List", {}), "FailedPrecondition", /namespace is required/],
        [() => c.call("images", "Create", { image: { name: "exists", target } }), "AlreadyExists", /image "exists"/],
      ];
      for (const [i, [call, cls, re]] of cases.entries()) {
        await rejectsClass(call(), cls, re).catch((err: Error) => {
          throw new Error(`case ${i}: ${err.message}`, { cause: err });
        });
      }
      assert.equal(await log.lastSeq(), before, "a refused call appended to the log");
    } finally {
      c.close();
      bare.close();
    }
  });

  /** A live Subscribe with `filters` that collects `n` envelopes, then ends; resolves once it is live. */
  async function subscribeFor(filters: string[], n: number, metadata?: Record<string, string>): Promise<{ got: any[]; reading: Promise<void> }> {
    const abort = new AbortController();
    const got: any[] = [];
    let live!: () => void;
    const ready = new Promise<void>((r) => (live = r));
    const reading = (async () => {
      for await (const env of api.stream("events", "Subscribe", { filters }, { signal: abort.signal, onMetadata: () => live(), ...(metadata ? { metadata } : {}) })) {
        got.push(env);
        if (got.length === n) abort.abort();
      }
    })();
    await ready;
    return { got, reading };
  }

  test("events: ck's own event types reach a Subscribe only with ck-events: all (containerd's clients cannot decode them; ck events asks for them)", async () => {
    const plain = await subscribeFor(['namespace=="ev-own"'], 1);
    const all = await subscribeFor(['namespace=="ev-own"'], 2, { "ck-events": "all" });
    const c = daemon.client("ev-own");
    try {
      await c.call("leases", "Create", { id: "own-lease" });
      await c.call("images", "Create", { image: { name: "own-1", target } });
      await Promise.all([plain.reading, all.reading]);
      await c.call("leases", "Delete", { id: "own-lease" });
    } finally {
      c.close();
    }
    assert.deepEqual(plain.got.map((e) => e.topic), ["/images/create"]);
    assert.deepEqual(all.got.map((e) => [e.topic, e.event.type_url]), [
      ["/leases/create", "ck.events.LeaseCreate"],
      ["/images/create", "containerd.services.images.v1.ImageCreate"],
    ]);
  });

  test("events: a View is ck's own /snapshot/view (containerd publishes none): a ctr-like Subscribe and containerd's snapshot.prepare subject see nothing of it, ck events sees it, Stat says View", async () => {
    const first = (await log.lastSeq()) + 1;
    const nc = await connect({ servers: nats.url });
    const prepares: string[] = [];
    const sub = nc.subscribe("containerd.io.ev-view.snapshot.prepare");
    void (async () => {
      for await (const m of sub) prepares.push(loadProtos().decode("containerd.services.events.v1.Envelope", m.data).topic);
    })();
    await nc.flush();
    const plain = await subscribeFor(['namespace=="ev-view"'], 3);
    const all = await subscribeFor(['namespace=="ev-view"'], 4, { "ck-events": "all" });
    const c = daemon.client("ev-view");
    const sn = { snapshotter: "native" };
    try {
      // gc.root, as ctr sets it: a collection another test's delete sets off must not take A.
      const root = { labels: { "containerd.io/gc.root": "1" } };
      await c.call("snapshots", "Prepare", { ...sn, key: "a", ...root });
      await c.call("snapshots", "Commit", { ...sn, key: "a", name: "A", ...root });
      await c.call("snapshots", "View", { ...sn, key: "v", parent: "A", ...root });
      assert.equal((await c.call("snapshots", "Stat", { ...sn, key: "v" })).info.kind, 1, "a View (containerd's Kind 1)");
      await c.call("snapshots", "Remove", { ...sn, key: "v" });
      await Promise.all([plain.reading, all.reading]);
      await c.call("snapshots", "Remove", { ...sn, key: "A" });
    } finally {
      c.close();
    }
    assert.deepEqual(plain.got.map((e) => e.topic), ["/snapshot/prepare", "/snapshot/commit", "/snapshot/remove"]);
    assert.deepEqual(all.got.map((e) => [e.topic, e.event.type_url]), [
      ["/snapshot/prepare", "containerd.events.SnapshotPrepare"],
      ["/snapshot/commit", "containerd.events.SnapshotCommit"],
      ["/snapshot/view", "ck.events.SnapshotView"],
      ["/snapshot/remove", "containerd.events.SnapshotRemove"],
    ]);
    await nc.flush();
    await nc.close();
    assert.deepEqual(prepares, ["/snapshot/prepare"], "containerd's subject carries the Prepare only");
    const { spawn } = await import("node:child_process");
    const p = spawn(process.execPath, [CK, "--address", daemon.address, "events", "--namespace", "ev-view", "--from-seq", String(first)]);
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    for (const until = Date.now() + 15_000; out.split("\n").filter(Boolean).length < 5 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 50));
    p.kill("SIGTERM");
    const topics = out.split("\n").filter(Boolean).map((l) => l.split(" ").slice(5).join(" "));
    assert.match(topics[2]!, /^\/snapshot\/view \{"key":"v","parent":"A","snapshotter":"native","id":"[0-9a-z]{8}","labels":\{"containerd\.io\/gc\.root":"1"\}\}$/, out);
    assert.deepEqual(topics.map((t) => t.split(" ")[0]), ["/snapshot/prepare", "/snapshot/commit", "/snapshot/view", "/snapshot/remove", "/snapshot/remove"]);
  });

  test("events: Subscribe filtered by namespace gets only that namespace; plain NATS sees the same envelopes", async () => {
    const protos = loadProtos();
    const nc = await connect({ servers: nats.url });
    const natsSeen: Buffer[] = [];
    const sub = nc.subscribe("containerd.io.ev-foo.>");
    void (async () => {
      for await (const m of sub) natsSeen.push(Buffer.from(m.data));
    })();
    await nc.flush();
    const { got, reading } = await subscribeFor(['namespace=="ev-foo"'], 3);
    const foo = daemon.client("ev-foo");
    const bar = daemon.client("ev-bar");
    try {
      await bar.call("images", "Create", { image: { name: "bar-1", target } });
      await foo.call("images", "Create", { image: { name: "foo-1", target } });
      await bar.call("images", "Create", { image: { name: "bar-2", target } });
      await foo.call("images", "Update", { image: { name: "foo-1", labels: { a: "b" } }, update_mask: { paths: ["labels.a"] } });
      await foo.call("images", "Delete", { name: "foo-1" });
      await reading;
    } finally {
      foo.close();
      bar.close();
    }
    assert.deepEqual(got.map((e) => [e.namespace, e.topic]), [
      ["ev-foo", "/images/create"],
      ["ev-foo", "/images/update"],
      ["ev-foo", "/images/delete"],
    ]);
    assert.equal(got[0].event.type_url, "containerd.services.images.v1.ImageCreate");
    const deadline = Date.now() + 5000;
    while (natsSeen.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(natsSeen.length, 3);
    const decoded = natsSeen.map((b) => protos.decode("containerd.services.events.v1.Envelope", b));
    assert.deepEqual(decoded.map((e: any) => e.topic), ["/images/create", "/images/update", "/images/delete"]);
    assert.deepEqual(Buffer.from(decoded[0].event.value), Buffer.from(got[0].event.value));
    await nc.close();
  });

  test("events: a message on containerd.io.> that is not an envelope (anyone may publish there) is skipped; the subscription goes on", async () => {
    const nc = await connect({ servers: nats.url });
    const js = jetstream(nc);
    const { got, reading } = await subscribeFor(['namespace=="ev-junk"'], 2);
    const junk = daemon.client("ev-junk");
    try {
      await junk.call("images", "Create", { image: { name: "junk-1", target } });
      await js.publish("containerd.io.ev-junk.junk", Buffer.from([0xff, 0xff, 0xff, 0x07]));
      await junk.call("images", "Create", { image: { name: "junk-2", target } });
      await reading;
    } finally {
      junk.close();
      await nc.close();
    }
    assert.deepEqual(got.map((e) => [e.namespace, e.topic]), [
      ["ev-junk", "/images/create"],
      ["ev-junk", "/images/create"],
    ]);
  });

  test("ck events --namespace with --from-seq replays history first, only that namespace", async () => {
    const first = (await log.lastSeq()) + 1;
    const foo = daemon.client("hist-foo");
    const bar = daemon.client("hist-bar");
    try {
      await foo.call("images", "Create", { image: { name: "h1", target } });
      await bar.call("images", "Create", { image: { name: "h2", target } });
      await foo.call("images", "Delete", { name: "h1" });
      // One of ck's own events, which ck events asks for (ctr is not sent them).
      await foo.call("leases", "Create", { id: "hist-lease" });
    } finally {
      foo.close();
      bar.close();
    }
    const { spawn } = await import("node:child_process");
    const p = spawn(process.execPath, [CK, "--address", daemon.address, "events", "--namespace", "hist-foo", "--from-seq", String(first)]);
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    const deadline = Date.now() + 15_000;
    while (out.split("\n").filter(Boolean).length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    p.kill("SIGTERM");
    const lines = out.split("\n").filter(Boolean);
    assert.equal(lines.length, 3, out);
    assert.match(lines[0]!, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC hist-foo \/images\/create \{"name":"h1"\}$/);
    assert.match(lines[1]!, / hist-foo \/images\/delete \{"name":"h1"\}$/);
    assert.match(lines[2]!, / hist-foo \/leases\/create \{.*"id":"hist-lease"/);
  });

  test("ck events: a bad --from-seq or --since is refused naming the flag the user gave (not ckd's metadata key), exit 1", async () => {
    for (const [args, said] of [
      [["--from-seq", "abc"], /^ck: --from-seq "abc" must be a sequence number, 1 or more: invalid argument\n$/],
      [["--from-seq", "0"], /^ck: --from-seq "0" must be a sequence number/],
      [["--since", "2026-12-03"], /^ck: --since "2026-12-03" must be an RFC 3339 time with its zone/],
      [["--from-seq", "1", "--since", "2026-12-03T00:00:00Z"], /^ck: --from-seq and --since are exclusive: invalid argument\n$/],
    ] as const) {
      const r = await runNode(CK, ["--address", daemon.address, "events", ...args]);
      assert.equal(r.code, 1, args.join(" "));
      assert.match(r.stderr, said, args.join(" "));
      assert.doesNotMatch(r.stderr, /ck-from-seq|ck-since/);
    }
  });

  test("ck CLI: namespaces, images and containers, ctr-like tables", async () => {
    const env = { CK_ADDRESS: daemon.address, CONTAINERD_NAMESPACE: "cli" };
    // No daemon on the socket: said plainly, not in grpc-js's words.
    const away = await runNode(CK, ["--address", `${daemon.address}.none`, "namespaces", "ls"]);
    assert.equal(away.code, 1);
    assert.match(away.stderr, /^ck: cannot reach ckd: connect ENOENT \S+\.none: is it running, and is --address \(CK_ADDRESS\) its socket\?\n\(unavailable\)\n$/);
    let r = await runNode(CK, ["namespaces", "create", "cli", "owner=me"], env);
    assert.equal(r.code, 0, r.stderr);
    r = await runNode(CK, ["images", "create", "docker.io/library/x:1", "--digest", DIGEST, "--size", "1234", "--media-type", target.media_type], env);
    assert.equal(r.code, 0, r.stderr);
    r = await runNode(CK, ["images", "tag", "docker.io/library/x:1", "docker.io/library/x:2"], env);
    assert.equal(r.code, 0, r.stderr);
    r = await runNode(CK, ["images", "ls"], env);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0]!, /^REF\s+TYPE\s+DIGEST\s+SIZE/);
    assert.equal(lines.length, 3);
    assert.ok(lines[1]!.includes(DIGEST));
    r = await runNode(CK, ["images", "ls", "-q"], env);
    assert.deepEqual(r.stdout.trim().split("\n"), ["docker.io/library/x:1", "docker.io/library/x:2"]);
    // CK_TRACE: each API call on stderr with its outcome and duration; stdout unchanged.
    const traced = await runNode(CK, ["images", "ls", "-q"], { ...env, CK_TRACE: "1" });
    assert.equal(traced.stdout, r.stdout);
    assert.match(traced.stderr, /^\[ck trace +\d+ ms\] images\.List OK \d+\.\d ms$/m);
    // A stream the command ends itself (Content.Write's ingest) is traced too.
    const ingest = await runNode(CK, ["content", "ingest", "traced-ref"], { ...env, CK_TRACE: "1" }, "traced bytes\n");
    assert.equal(ingest.code, 0, ingest.stderr);
    assert.match(ingest.stderr, /^\[ck trace +\d+ ms\] content\.Write \(stream\) OK( \(client ended\))? \d+\.\d ms$/m);
    assert.equal((await runNode(CK, ["images", "ls", "-q"], env)).stderr, "", "no trace without CK_TRACE");
    r = await runNode(CK, ["namespaces", "ls"], env);
    assert.match(r.stdout, /^NAME\s+LABELS\n/);
    assert.match(r.stdout, /\ncli\s+owner=me\n/);
    r = await runNode(CK, ["namespaces", "rm", "cli"], env);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /must be empty/);
    // Container records (ck containers create makes them from a pulled image: see tasks.test.ts).
    const record = (id: string, labels: Record<string, string>, args: string[]) => ({
      container: { id, image: "docker.io/library/x:1", labels, runtime: { name: "io.containerd.runc.v2" }, spec: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from(JSON.stringify({ process: { args } })) } },
    });
    await api.call("containers", "Create", record("c1", {}, ["echo", "hi"]), { namespace: "cli" });
    await api.call("containers", "Create", record("c2", { a: "1", b: "2" }, ["sh"]), { namespace: "cli" });
    r = await runNode(CK, ["containers", "info", "c2"], env);
    assert.deepEqual([JSON.parse(r.stdout).Image, JSON.parse(r.stdout).Labels], ["docker.io/library/x:1", { a: "1", b: "2" }]);
    r = await runNode(CK, ["images", "create", "--label", "k=v", "docker.io/library/x:3", "--digest", DIGEST, "--size", "1", "--media-type", target.media_type], env);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await api.call("images", "Get", { name: "docker.io/library/x:3" }, { namespace: "cli" })).image.labels, { k: "v" });
    r = await runNode(CK, ["containers", "ls"], env);
    assert.match(r.stdout, /^CONTAINER\s+IMAGE\s+RUNTIME\n/);
    assert.match(r.stdout, /c1\s+docker.io\/library\/x:1\s+io.containerd.runc.v2/);
    r = await runNode(CK, ["containers", "info", "c1"], env);
    assert.deepEqual(JSON.parse(r.stdout).Spec.process.args, ["echo", "hi"]);
    r = await runNode(CK, ["images", "create", "bad", "--digest", "nope", "--size", "1", "--media-type", "x"], env);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /invalid argument/);
    // A failing id does not stop the others (as ctr); the exit status says it failed.
    r = await runNode(CK, ["containers", "rm", "nope-x", "c2"], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /failed to delete container "nope-x"/);
    assert.doesNotMatch((await runNode(CK, ["containers", "ls", "-q"], env)).stdout, /c2/);
    for (const args of [["containers", "rm", "c1"], ["images", "rm", "docker.io/library/x:1", "docker.io/library/x:2", "docker.io/library/x:3"], ["namespaces", "rm", "cli"]]) {
      r = await runNode(CK, args, env);
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    }
  });

  test("ck images, content, containers and snapshot label print the resulting labels as ctr does (k=v,k=v); a bare key is key=true", async () => {
    const env = { CK_ADDRESS: daemon.address, CONTAINERD_NAMESPACE: "cli-label" };
    const ck = (args: string[], input?: string) => runNode(CK, args, env, input);
    let r = await ck(["images", "create", "--label", "keep=1", "docker.io/library/lbl:1", "--digest", DIGEST, "--size", "1", "--media-type", target.media_type]);
    assert.equal(r.code, 0, r.stderr);
    r = await ck(["images", "label", "docker.io/library/lbl:1", "b=2", "flag"]);
    assert.deepEqual([r.code, r.stdout], [0, "b=2,flag=true,keep=1\n"], r.stderr);
    // The blob is referenced by nothing: let a GC run an earlier delete scheduled finish first.
    assert.equal((await ck(["gc"])).code, 0);
    r = await ck(["content", "ingest", "lbl-ref"], "label me\n");
    assert.equal(r.code, 0, r.stderr);
    const digest = (await ck(["content", "ls", "-q"])).stdout.trim();
    r = await ck(["content", "label", digest, "x=y", "z"]);
    assert.deepEqual([r.code, r.stdout], [0, "x=y,z=true\n"], r.stderr);
    r = await ck(["content", "label", digest, "x="]);
    assert.deepEqual([r.code, r.stdout], [0, "z=true\n"], r.stderr);
    await api.call("containers", "Create", { container: { id: "lbl-c", image: "docker.io/library/lbl:1", labels: { a: "1" }, runtime: { name: "io.containerd.runc.v2" }, spec: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from("{}") } } }, { namespace: "cli-label" });
    r = await ck(["containers", "label", "lbl-c", "c=3"]);
    assert.deepEqual([r.code, r.stdout], [0, "a=1,c=3\n"], r.stderr);
    // Snapshots too, as ctr snapshots label prints them (prepare labels gc.root itself).
    assert.equal((await ck(["snapshot", "--snapshotter", "native", "prepare", "lbl-s"])).code, 0);
    r = await ck(["snapshot", "--snapshotter", "native", "label", "lbl-s", "k=1", "m"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^containerd\.io\/gc\.root=[^,\n]+,k=1,m=true\n$/);
    r = await ck(["snapshot", "--snapshotter", "native", "label", "lbl-s", "k=", "m="]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^containerd\.io\/gc\.root=[^,\n]+\n$/);
    assert.equal((await ck(["snapshot", "--snapshotter", "native", "rm", "lbl-s"])).code, 0);
    for (const args of [["containers", "rm", "lbl-c"], ["images", "rm", "docker.io/library/lbl:1"], ["content", "rm", digest]]) {
      r = await ck(args);
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    }
  });

  test("ck containers rm removes the container's snapshot too, as ctr's (at once, not at a later GC); --keep-snapshot keeps it", async () => {
    const env = { CK_ADDRESS: daemon.address, CONTAINERD_NAMESPACE: "cli-crm" };
    const ck = (args: string[]) => runNode(CK, args, env);
    const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from("{}") };
    const keys = async () => (await ck(["snapshot", "--snapshotter", "native", "ls"])).stdout.split("\n").slice(1).map((l) => l.split(/\s+/)[0]).filter(Boolean);
    for (const id of ["crm-a", "crm-b"]) {
      // Labelled gc.root, so that no collection takes it: only the removal asked for does.
      await api.call("snapshots", "Prepare", { snapshotter: "native", key: id, labels: { "containerd.io/gc.root": "x" } }, { namespace: "cli-crm" });
      await api.call("containers", "Create", { container: { id, image: "x", runtime: { name: "io.containerd.runc.v2" }, spec, snapshotter: "native", snapshot_key: id } }, { namespace: "cli-crm" });
    }
    let r = await ck(["containers", "rm", "crm-a"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await keys(), ["crm-b"], "crm-a's snapshot went with it");
    r = await ck(["containers", "rm", "--keep-snapshot", "crm-b"]);
    assert.equal(r.code, 0, r.stderr);
    await rejectsClass(api.call("containers", "Get", { id: "crm-b" }, { namespace: "cli-crm" }), "NotFound");
    assert.ok((await api.call("snapshots", "Stat", { snapshotter: "native", key: "crm-b" }, { namespace: "cli-crm" })).info, "kept");
    await api.call("snapshots", "Remove", { snapshotter: "native", key: "crm-b" }, { namespace: "cli-crm" });
    r = await ck(["containers", "rm", "crm-none"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^ck: failed to delete container "crm-none": container "crm-none" in namespace "cli-crm": not found/);
  });

  test("introspection lists the plugins that loaded (ck plugins ls too); version answers", async () => {
    const p = await api.call("introspection", "Plugins", { filters: ["type==io.containerd.grpc.v1"] });
    const ids = p.plugins.map((x: any) => x.id);
    for (const id of ["namespaces", "images", "containers", "events", "healthcheck"]) assert.ok(ids.includes(id), id);
    // Platforms only where containerd's plugins give them: snapshotters (ctr matches images
    // against them), differs, runtimes; none on the services.
    assert.ok(p.plugins.every((x: any) => x.platforms.length === 0), "no platforms on grpc plugins");
    const sn = (await api.call("introspection", "Plugins", { filters: ["type==io.containerd.snapshotter.v1"] })).plugins;
    assert.ok(sn.length >= 2 && sn.every((x: any) => x.platforms.length === 1 && x.platforms[0].os === "linux"), JSON.stringify(sn));
    const v = await api.call("version", "Version", {});
    // A semver, as containerd's (clients parse it); the revision names ck.
    assert.match(v.version, /^\d+\.\d+\.\d+$/);
    assert.equal(v.version, JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")).version);
    assert.match(v.revision, /^ck-/);
    const s = await api.call("introspection", "Server", {});
    assert.match(s.uuid, /^[0-9a-f-]{36}$/);
    // ck plugins ls, as ctr's: the table, -q ids, filters, -d what each exports.
    const ck = (args: string[]) => runNode(CK, ["--address", daemon.address, "plugins", "ls", ...args]);
    let r = await ck([]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^TYPE +ID +PLATFORMS +STATUS\n/);
    assert.match(r.stdout, /^io\.containerd\.grpc\.v1 +images +- +ok$/m);
    assert.match(r.stdout, /^io\.containerd\.snapshotter\.v1 +native +linux\/\w+ +ok$/m);
    r = await ck(["-q", "type==io.containerd.event.v1"]);
    assert.deepEqual([r.code, r.stdout], [0, "jetstream\n"], r.stderr);
    r = await ck(["-d", "id==jetstream"]);
    assert.match(r.stdout, /^Type: +io\.containerd\.event\.v1\nID: +jetstream\nExports: +durability=.*, stream=CK_EVENTS\n$/);
  });

  test("gRPC health (as containerd serves it; its Go client's IsServing asks): SERVING; an unknown service NotFound; Watch says NOT_SERVING and ends when ckd stops", async () => {
    assert.deepEqual(await api.call("health", "Check", { service: "" }), { status: 1 });
    await rejectsClass(api.call("health", "Check", { service: "containerd.nope" }), "NotFound", /unknown service "containerd\.nope"/);
    const other = await TestDaemon.start({ natsUrl: nats.url });
    const c = other.client("default");
    try {
      const seen: number[] = [];
      const watched = (async () => {
        for await (const m of c.stream("health", "Watch", { service: "" })) seen.push(m.status);
      })();
      const unknown = c.stream("health", "Watch", { service: "x" })[Symbol.asyncIterator]();
      assert.deepEqual((await unknown.next()).value, { status: 3 }, "SERVICE_UNKNOWN");
      await unknown.return?.(undefined);
      for (const until = Date.now() + 5000; seen.length === 0 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(seen, [1]);
      await other.stop();
      await watched;
      assert.deepEqual(seen, [1, 2], "NOT_SERVING, then the stream ended");
    } finally {
      c.close();
      await other.stop().catch(() => undefined);
    }
  });

  test("ck events, when ckd stops: the subscription ends Unavailable saying ckd is stopping (not a call cancelled), ck exits 1", async () => {
    const other = await TestDaemon.start({ natsUrl: nats.url });
    const c = other.client("stop-ev");
    const { spawn } = await import("node:child_process");
    let p: import("node:child_process").ChildProcess | undefined;
    try {
      p = spawn(process.execPath, [CK, "--address", other.address, "events", "--namespace", "stop-ev"]);
      let out = "";
      let err = "";
      p.stdout!.on("data", (d) => (out += d));
      p.stderr!.on("data", (d) => (err += d));
      const exited = new Promise<number | null>((r) => p!.once("exit", (code) => r(code)));
      // Live once an event created after ck started reaches it.
      const deadline = Date.now() + 15_000;
      for (let i = 0; !out.includes("/images/create") && Date.now() < deadline; i++) {
        await c.call("images", "Create", { image: { name: `stop-ev-${i}`, target } });
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.match(out, /stop-ev \/images\/create/);
      await other.stop();
      assert.equal(await exited, 1, err);
      assert.match(err, /^ck: ckd is stopping: the subscription ended; subscribe again once it serves: unavailable\n$/);
    } finally {
      if (p && p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
      c.close();
      await other.cleanup().catch(() => undefined);
    }
  });

  test("everything the tests above wrote replays to the live projection, byte for byte (ck-replay verify)", async () => {
    // The live projection took ckd's own events as the sequencer folded them when deciding;
    // a rebuild folds them from the log's bytes: both must give the same records.
    api.close();
    await daemon.stop();
    const r = await runNode(CK_REPLAY, ["verify", "--root", daemon.root]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /verify OK/);
  });
});
