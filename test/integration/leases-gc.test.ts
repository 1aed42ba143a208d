// Leases and garbage collection over ckd, against a real nats-server: the Leases API (and ck's
// and ctr's leases commands), content committed under the containerd-lease header, GC after
// deletions and on demand (`ck gc`), lease expiry, `ctr images rm --sync` then
// `ctr namespaces rm`, and ContentCollect events replaying to an identical projection.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runCommand, runNode, CK, CK_REPLAY } from "../helpers/daemon.js";
import { rejectsClass } from "../helpers/errors.js";
import { writeBlob } from "../../src/cli/content-commands.js";
import { ApiClient } from "../../src/cli/client.js";
import { EventLog } from "../../src/eventstore/log.js";
import { toLoggedEvent } from "../../src/emitter/envelope.js";
import { loadProtos } from "../../src/protos/protos.js";

const CTR = "/usr/bin/ctr";
const sha = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";

describe("leases and garbage collection", () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let daemon: TestDaemon;
  let log: EventLog;
  const clients: ApiClient[] = [];
  const client = (ns: string, lease?: string) => {
    const c = new ApiClient({ address: daemon.address, namespace: ns, metadata: lease ? { "containerd-lease": lease } : undefined });
    clients.push(c);
    return c;
  };
  const onDisk = (digest: string) => existsSync(join(daemon.root, "content", "blobs", "sha256", digest.slice(7)));
  const ck = (args: string[], ns: string) => runNode(CK, ["--address", daemon.address, "-n", ns, ...args]);
  const ctr = (args: string[], ns: string) => runCommand(CTR, ["--address", daemon.address, "--namespace", ns, ...args], {}, undefined, 30_000);
  /** Writes a blob and returns its digest. */
  const blob = async (c: ApiClient, data: Buffer, labels: Record<string, string> = {}) => {
    const digest = sha(data);
    assert.equal(await writeBlob(c, `ref-${digest}`, data, { expected: digest, labels }), digest);
    return digest;
  };
  const visible = async (c: ApiClient, digest: string) =>
    c.call("content", "Info", { digest }).then(
      () => true,
      () => false,
    );

  before(async () => {
    nats = await startTestNats();
    daemon = await TestDaemon.start({ natsUrl: nats.url });
    log = await EventLog.open({ url: nats.url });
  });
  after(async () => {
    for (const c of clients) c.close();
    await log?.close();
    await daemon?.cleanup();
    await nats?.cleanup();
  });

  test("leases: create, list with filters, resources, delete; bad input writes nothing", async () => {
    const c = client("lns");
    const created = (await c.call("leases", "Create", { id: "mnt/some/dir", labels: { team: "a", "containerd.io/gc.expire": "2099-01-01T00:00:00Z" } })).lease;
    assert.equal(created.id, "mnt/some/dir");
    assert.ok(Number(created.created_at.seconds) > 0);
    const generated = (await c.call("leases", "Create", { labels: { team: "b" } })).lease.id;
    assert.match(generated, /^\d+-[A-Za-z0-9_-]+$/);
    const ids = async (filters: string[] = []) => (await c.call("leases", "List", { filters })).leases.map((l: any) => l.id).sort();
    assert.deepEqual(await ids(), [generated, "mnt/some/dir"].sort());
    assert.deepEqual(await ids(["id==mnt/some/dir"]), ["mnt/some/dir"]);
    assert.deepEqual(await ids(["labels.team==b"]), [generated]);
    assert.deepEqual(await ids(['labels."containerd.io/gc.expire"']), ["mnt/some/dir"]);
    // Leases are per namespace.
    assert.deepEqual((await client("lns-other").call("leases", "List", {})).leases, []);

    const dg = "sha256:" + "c".repeat(64);
    await c.call("leases", "AddResource", { id: "mnt/some/dir", resource: { id: dg, type: "content" } });
    await c.call("leases", "AddResource", { id: "mnt/some/dir", resource: { id: "chain-1", type: "snapshots/overlayfs" } });
    assert.deepEqual((await c.call("leases", "ListResources", { id: "mnt/some/dir" })).resources, [
      { id: dg, type: "content" },
      { id: "chain-1", type: "snapshots/overlayfs" },
    ]);
    await c.call("leases", "DeleteResource", { id: "mnt/some/dir", resource: { id: dg, type: "content" } });
    assert.deepEqual((await c.call("leases", "ListResources", { id: "mnt/some/dir" })).resources, [{ id: "chain-1", type: "snapshots/overlayfs" }]);

    const before = await log.lastSeq();
    await rejectsClass(c.call("leases", "Create", { id: "mnt/some/dir" }), "AlreadyExists", /lease "mnt\/some\/dir"/);
    await rejectsClass(c.call("leases", "Create", { id: "big", labels: { k: "v".repeat(5000) } }), "InvalidArgument", /label/);
    await rejectsClass(c.call("leases", "Delete", { id: "nope" }), "NotFound");
    await rejectsClass(c.call("leases", "AddResource", { id: "nope", resource: { id: dg, type: "content" } }), "NotFound");
    await rejectsClass(c.call("leases", "DeleteResource", { id: "nope", resource: { id: dg, type: "content" } }), "NotFound");
    await rejectsClass(c.call("leases", "ListResources", { id: "nope" }), "NotFound");
    await rejectsClass(c.call("leases", "AddResource", { id: "mnt/some/dir", resource: { id: "sha256:xyz", type: "content" } }), "InvalidArgument", /content resource id/);
    await rejectsClass(c.call("leases", "AddResource", { id: "mnt/some/dir", resource: { id: "k", type: "snapshots" } }), "InvalidArgument");
    await rejectsClass(c.call("leases", "AddResource", { id: "mnt/some/dir", resource: { id: "k", type: "containers" } }), "NotImplemented");
    await rejectsClass(c.call("leases", "List", { filters: ["id=="] }), "InvalidArgument");
    await rejectsClass(writeBlob(client("lns", "nope"), "r-nope", Buffer.from("under a missing lease")), "NotFound", /lease "nope"/);
    assert.equal(await log.lastSeq(), before, "a refused call appended to the log");

    await c.call("leases", "Delete", { id: generated });
    await c.call("leases", "Delete", { id: "mnt/some/dir", sync: true });
    assert.deepEqual(await ids(), []);
  });

  test("ck leases create/ls/rm and ctr leases ls/rm agree", async () => {
    let r = await ck(["leases", "create", "--id", "cli-1", "--expires", "1h", "owner=me"], "lcli");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "cli-1\n");
    r = await ck(["leases", "create", "--expires", "0"], "lcli");
    assert.equal(r.code, 0, r.stderr);
    const generated = r.stdout.trim();
    r = await ck(["leases", "ls"], "lcli");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ID\s+CREATED AT\s+LABELS\n/);
    assert.match(r.stdout, /cli-1\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+containerd\.io\/gc\.expire=\d{4}-[^,]+,owner=me\n/);
    assert.match(r.stdout, new RegExp(`${generated}\\s+\\S+\\s+-\\n`));
    r = await ctr(["leases", "ls", "-q"], "lcli");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n").sort(), ["cli-1", generated].sort());
    r = await ctr(["leases", "create", "--id", "from-ctr"], "lcli");
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["leases", "rm", "from-ctr", generated], "lcli");
    assert.equal(r.code, 0, r.stderr);
    r = await ck(["leases", "rm", "--sync", "cli-1"], "lcli");
    assert.equal(r.code, 0, r.stderr);
    r = await ck(["leases", "ls", "-q"], "lcli");
    assert.equal(r.stdout, "");
    r = await ck(["leases", "rm", "cli-1"], "lcli");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not found/);
  });

  test("a blob committed under a lease survives GC until the lease is deleted, then its file is gone", async () => {
    const c = client("lgc");
    await c.call("leases", "Create", { id: "pull-1" });
    const leased = client("lgc", "pull-1");
    const data = randomBytes(50_000);
    const digest = await blob(leased, data);
    assert.deepEqual((await c.call("leases", "ListResources", { id: "pull-1" })).resources, [{ id: digest, type: "content" }]);
    // Writing the same blob again under a second lease: AlreadyExists for the client, and
    // the blob is added to that lease too (containerd's writer does the same).
    await c.call("leases", "Create", { id: "pull-2" });
    assert.equal(await blob(client("lgc", "pull-2"), data), digest);
    assert.deepEqual((await c.call("leases", "ListResources", { id: "pull-2" })).resources, [{ id: digest, type: "content" }]);

    let r = await ck(["gc"], "lgc");
    assert.equal(r.code, 0, r.stderr);
    assert.ok(await visible(c, digest));
    assert.ok(onDisk(digest));
    await c.call("leases", "Delete", { id: "pull-1", sync: true });
    assert.ok(await visible(c, digest), "still held by pull-2");
    await c.call("leases", "Delete", { id: "pull-2", sync: true });
    assert.equal(await visible(c, digest), false);
    assert.equal(onDisk(digest), false);
    r = await ck(["gc"], "lgc");
    assert.equal(r.code, 0, r.stderr);
    // Nothing left to collect: the totals alone, no header over an empty table.
    assert.equal(r.stdout, "removed 0 blob files, freed 0B\n");
    // A snapshot held only by an expired lease: ck gc says it removed it (the daemon counted
    // it, the API dropped the count), with the lease.
    await c.call("leases", "Create", { id: "lgc-snap", labels: { "containerd.io/gc.expire": "2000-01-01T00:00:00Z" } });
    await client("lgc", "lgc-snap").call("snapshots", "Prepare", { snapshotter: "native", key: "lgc-s" });
    r = await ck(["gc"], "lgc");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "NAMESPACE BLOBS LEASES SNAPSHOTS\nlgc       0     1      1\nremoved 0 blob files, freed 0B\n");
    await rejectsClass(c.call("snapshots", "Stat", { snapshotter: "native", key: "lgc-s" }), "NotFound");
  });

  test("Content.Delete under a lease lets that lease go of the digest (as containerd's removeContentLease); another lease keeps it", async () => {
    const c = client("ldel");
    for (const id of ["del-1", "del-2"]) await c.call("leases", "Create", { id });
    const data = randomBytes(1000);
    const digest = await blob(client("ldel", "del-1"), data);
    assert.equal(await blob(client("ldel", "del-2"), data), digest);
    await client("ldel", "del-1").call("content", "Delete", { digest });
    assert.deepEqual((await c.call("leases", "ListResources", { id: "del-1" })).resources, [], "the deleting call's lease let go");
    assert.deepEqual((await c.call("leases", "ListResources", { id: "del-2" })).resources, [{ id: digest, type: "content" }]);
    // Committed again: del-1 does not hold it again behind its owner's back.
    assert.equal(await blob(c, data), digest);
    assert.deepEqual((await c.call("leases", "ListResources", { id: "del-1" })).resources, []);
    for (const id of ["del-1", "del-2"]) await c.call("leases", "Delete", { id });
  });

  test("snapshots under a lease: Prepare adds the key, Commit moves the lease to the name, Remove takes the key out (as containerd)", async () => {
    const c = client("lsnap");
    await c.call("leases", "Create", { id: "unpack-1" });
    const leased = client("lsnap", "unpack-1");
    const snapshotter = "native";
    const resources = async () => (await c.call("leases", "ListResources", { id: "unpack-1" })).resources;
    await leased.call("snapshots", "Prepare", { snapshotter, key: "extract-1 layer" });
    assert.deepEqual(await resources(), [{ id: "extract-1 layer", type: `snapshots/${snapshotter}` }]);
    await leased.call("snapshots", "Commit", { snapshotter, key: "extract-1 layer", name: "layer" });
    assert.deepEqual(await resources(), [{ id: "layer", type: `snapshots/${snapshotter}` }]);
    await leased.call("snapshots", "Prepare", { snapshotter, key: "work", parent: "layer" });
    await leased.call("snapshots", "Remove", { snapshotter, key: "work" });
    assert.deepEqual(await resources(), [{ id: "layer", type: `snapshots/${snapshotter}` }]);
    await c.call("leases", "Delete", { id: "unpack-1", sync: true });
  });

  test("an ingest written under a lease is held by it (ListResources: ingests) until committed or the lease goes; one without stays", async () => {
    const c = client("ling");
    await c.call("leases", "Create", { id: "pull-i" });
    const leased = client("ling", "pull-i");
    const refs = async () => (await c.call("content", "ListStatuses", { filters: [] })).statuses.map((s: any) => s.ref).sort();
    /** Starts an ingest, writes `n` bytes and drops the connection, as a killed pull does. */
    const interrupted = async (api: ApiClient, ref: string, data: Buffer, n: number) => {
      const w = api.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref, total: data.length, expected: sha(data) });
      await w.send({ action: 1, offset: 0, data: data.subarray(0, n) });
      w.cancel();
      for (let i = 0; i < 100; i++) {
        const st = await c.call("content", "Status", { ref }).catch(() => undefined);
        if (Number(st?.status.offset) === n) return;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.fail(`ingest ${ref} never showed offset ${n}`);
    };
    const layer = randomBytes(200_000);
    const config = randomBytes(3_000);
    await interrupted(leased, "layer-a", layer, 70_000);
    await interrupted(leased, "config-a", config, 1_000);
    await interrupted(c, "unleased", randomBytes(5_000), 2_000);
    const resources = async () => (await c.call("leases", "ListResources", { id: "pull-i" })).resources;
    assert.deepEqual(await resources(), [
      { id: "config-a", type: "ingests" },
      { id: "layer-a", type: "ingests" },
    ].sort((a, b) => (a.id < b.id ? -1 : 1)));
    assert.deepEqual((await client("ling-other").call("content", "ListStatuses", { filters: [] })).statuses, []);

    // GC keeps them all: the lease lives; the unleased ingest is far from a day idle.
    let r = await ck(["gc"], "ling");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await refs(), ["config-a", "layer-a", "unleased"]);

    // Resumed and committed under the lease: the ingest is gone, the blob is held instead.
    const w = leased.lockstep<object>("content", "Write");
    const st: any = await w.send({ action: 0, ref: "config-a", total: config.length, expected: sha(config) });
    assert.equal(Number(st.offset), 1_000);
    await w.send({ action: 1, offset: 1_000, data: config.subarray(1_000) });
    await w.send({ action: 2, offset: config.length, total: config.length, expected: sha(config) });
    w.end();
    assert.deepEqual(await resources(), [
      { id: sha(config), type: "content" },
      { id: "layer-a", type: "ingests" },
    ]);

    // DeleteResource lets go of an ingest; AddResource (an event) holds one explicitly.
    await c.call("leases", "DeleteResource", { id: "pull-i", resource: { id: "layer-a", type: "ingests" } });
    assert.deepEqual(await resources(), [{ id: sha(config), type: "content" }]);
    await c.call("leases", "AddResource", { id: "pull-i", resource: { id: "layer-a", type: "ingests" } });
    assert.deepEqual(await resources(), [{ id: sha(config), type: "content" }, { id: "layer-a", type: "ingests" }]);

    // The lease goes: GC removes the ingest it held, not the unleased one.
    await c.call("leases", "Delete", { id: "pull-i", sync: true });
    assert.deepEqual(await refs(), ["unleased"]);
    r = await ck(["gc"], "ling");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await refs(), ["unleased"]);
    await c.call("content", "Abort", { ref: "unleased" });
  });

  test("ck gc reports the ingests it removed (held by a lease that expired)", async () => {
    const c = client("ling2");
    const expiry = Date.now() + 1500;
    await c.call("leases", "Create", { id: "short", labels: { "containerd.io/gc.expire": new Date(expiry).toISOString() } });
    const w = client("ling2", "short").lockstep<object>("content", "Write");
    await w.send({ action: 0, ref: "partial", total: 100 });
    await w.send({ action: 1, offset: 0, data: Buffer.alloc(10) });
    w.cancel();
    for (let i = 0; i < 100 && !(await c.call("content", "Status", { ref: "partial" }).catch(() => undefined)); i++) await new Promise((res) => setTimeout(res, 20));
    await new Promise((res) => setTimeout(res, Math.max(0, expiry + 100 - Date.now())));
    const r = await ck(["gc"], "ling2");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ling2\s+0\s+1\s+0$/m, "the expired lease was deleted");
    assert.match(r.stdout, /removed 1 ingests/);
    await rejectsClass(c.call("content", "Status", { ref: "partial" }), "NotFound");
  });

  test("image → manifest → config/layers stays; after images rm + ck gc its blobs go, shared ones stay", async () => {
    const c = client("gcimg");
    const other = client("gcother");
    // As a pull does: blobs written under a lease, the images created, the lease dropped.
    await c.call("leases", "Create", { id: "build" });
    const w = client("gcimg", "build");
    const [config1, config2, layer1, layer2, junk] = [0, 1, 2, 3, 4].map(() => randomBytes(20_000));
    const c1 = await blob(w, config1!);
    const c2 = await blob(w, config2!);
    const l1 = await blob(w, layer1!);
    const l2 = await blob(w, layer2!);
    const ref = (cfg: string, ...layers: string[]) => ({
      "containerd.io/gc.ref.content.config": cfg,
      ...Object.fromEntries(layers.map((l, i) => [`containerd.io/gc.ref.content.l.${i}`, l])),
    });
    const m1 = await blob(w, Buffer.from(JSON.stringify({ m: 1, c1, l1, l2 })), ref(c1, l1, l2));
    const m2 = await blob(w, Buffer.from(JSON.stringify({ m: 2, c2, l2 })), ref(c2, l2));
    await c.call("images", "Create", { image: { name: "example.com/one:1", target: { media_type: MANIFEST, digest: m1, size: 100 } } });
    await c.call("images", "Create", { image: { name: "example.com/two:1", target: { media_type: MANIFEST, digest: m2, size: 100 } } });
    // layer1's bytes are also committed in another namespace, kept there by a gc.root label.
    assert.equal(await blob(other, layer1!, { "containerd.io/gc.root": "yes" }), l1);
    const u = await blob(c, junk!); // nothing refers to it
    await c.call("leases", "Delete", { id: "build", sync: true });
    assert.equal(await visible(c, u), false);
    assert.equal(onDisk(u), false);
    for (const dg of [c1, c2, l1, l2, m1, m2]) assert.ok(await visible(c, dg), `${dg} collected while referenced`);

    await c.call("images", "Delete", { name: "example.com/one:1" });
    const r = await ck(["gc"], "gcimg");
    assert.equal(r.code, 0, r.stderr);
    for (const dg of [m1, c1, l1]) assert.equal(await visible(c, dg), false, `${dg} still visible`);
    for (const dg of [m1, c1]) assert.equal(onDisk(dg), false, `${dg} still on disk`);
    assert.ok(onDisk(l1), "bytes shared with another namespace stay");
    assert.ok(await visible(other, l1));
    for (const dg of [m2, c2, l2]) {
      assert.ok(await visible(c, dg), `${dg} of the second image collected`);
      assert.ok(onDisk(dg));
    }
  });

  test("GC runs by itself after a deletion (content rm of an unrelated blob collects the garbage)", async () => {
    const c = client("gcauto");
    const keep = await blob(c, randomBytes(1000), { "containerd.io/gc.root": "1" });
    const junk = await blob(c, randomBytes(1000));
    const gone = await blob(c, randomBytes(1000));
    await c.call("content", "Delete", { digest: gone });
    const deadline = Date.now() + 10_000;
    while ((await visible(c, junk)) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    assert.equal(await visible(c, junk), false);
    assert.ok(await visible(c, keep));
    await c.call("content", "Delete", { digest: keep });
  });

  test("ck gc removes orphaned blob files (bytes whose commit event never came) once 10 minutes old, nothing else", async () => {
    const c = client("orphans");
    const kept = await blob(c, randomBytes(1000), { "containerd.io/gc.root": "1" });
    // What a ckd killed between moving the bytes into place and appending the commit leaves.
    const file = (digest: string) => join(daemon.root, "content", "blobs", "sha256", digest.slice(7));
    const sha = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");
    const old = randomBytes(2000);
    const young = randomBytes(2000);
    const past = new Date(Date.now() - 11 * 60_000);
    writeFileSync(file(sha(old)), old);
    utimesSync(file(sha(old)), past, past);
    writeFileSync(file(sha(young)), young);
    utimesSync(file(kept), past, past); // old, but a namespace has it
    try {
      const r = await ck(["gc"], "orphans");
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /removed 1 blob files \(1 orphaned\), freed 2kB\n/);
      assert.equal(onDisk(sha(old)), false);
      assert.equal(onDisk(sha(young)), true, "a young file's commit may still be on its way");
      assert.equal(onDisk(kept), true);
      assert.ok(await visible(c, kept));
    } finally {
      rmSync(file(sha(young)), { force: true });
      await c.call("content", "Delete", { digest: kept });
    }
  });

  test("an expired lease is deleted by GC and what it held is collected", async () => {
    const c = client("gcexp");
    // Expiring in two seconds: time to write under it before any GC may delete it.
    const expires = Date.now() + 2000;
    await c.call("leases", "Create", { id: "old", labels: { "containerd.io/gc.expire": new Date(expires).toISOString() } });
    await c.call("leases", "Create", { id: "fresh", labels: { "containerd.io/gc.expire": new Date(Date.now() + 3600_000).toISOString() } });
    const a = await blob(client("gcexp", "old"), randomBytes(3000));
    const b = await blob(client("gcexp", "fresh"), randomBytes(3000));
    await new Promise((res) => setTimeout(res, Math.max(0, expires - Date.now() + 100)));
    const r = await ck(["gc"], "gcexp");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /gcexp\s+1\s+1\s+0\n/);
    assert.match(r.stdout, /removed 1 blob files, freed 3kB\n/);
    assert.deepEqual((await c.call("leases", "List", {})).leases.map((l: any) => l.id), ["fresh"]);
    assert.equal(await visible(c, a), false);
    assert.equal(onDisk(a), false);
    assert.ok(await visible(c, b));
    await c.call("leases", "Delete", { id: "fresh", sync: true });
    assert.equal(await visible(c, b), false);
  });

  test("ctr images rm --sync, then ctr namespaces rm succeeds", async () => {
    const c = client("ctrgc");
    await c.call("leases", "Create", { id: "import" });
    const w = client("ctrgc", "import");
    const cfg = await blob(w, randomBytes(2000));
    const layer = await blob(w, randomBytes(2000));
    const m = await blob(w, Buffer.from(`{"ctr":"${cfg}"}`), { "containerd.io/gc.ref.content.config": cfg, "containerd.io/gc.ref.content.l.0": layer });
    await c.call("images", "Create", { image: { name: "docker.io/library/gc:1", target: { media_type: MANIFEST, digest: m, size: 50 } } });
    await c.call("leases", "Create", { id: "left/over" }); // leases do not keep a namespace alive
    let r = await ctr(["leases", "rm", "--sync", "import"], "ctrgc");
    assert.equal(r.code, 0, r.stderr);
    for (const dg of [cfg, layer, m]) assert.ok(await visible(c, dg));
    r = await ctr(["namespaces", "rm", "ctrgc"], "default");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /must be empty/);
    r = await ctr(["images", "rm", "--sync", "docker.io/library/gc:1"], "ctrgc");
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["namespaces", "rm", "ctrgc"], "default");
    assert.equal(r.code, 0, r.stderr);
    for (const dg of [cfg, layer, m]) assert.equal(onDisk(dg), false);
    r = await ctr(["namespaces", "ls", "-q"], "default");
    assert.ok(!r.stdout.split("\n").includes("ctrgc"));
    // Its leases went with it: a namespace of the same name starts without them.
    r = await ctr(["namespaces", "create", "ctrgc"], "default");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await c.call("leases", "List", {})).leases, []);
  });

  test("lease and ContentCollect events replay to an identical projection (ck-replay verify)", async () => {
    assert.equal(await daemon.stop(), 0);
    const r = await runNode(CK_REPLAY, ["verify", "--root", daemon.root]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /verify OK/);
    await daemon.launch();
  });
});

test("the periodic expiry check deletes an expired lease without any deletion or request", async () => {
  const nats = await startTestNats();
  const d = await TestDaemon.start({ natsUrl: nats.url, extraArgs: ["--gc-expiry-interval", "0.5"] });
  const c = d.client("tick");
  try {
    const expires = Date.now() + 1000;
    await c.call("leases", "Create", { id: "short", labels: { "containerd.io/gc.expire": new Date(expires).toISOString() } });
    const leased = new ApiClient({ address: d.address, namespace: "tick", metadata: { "containerd-lease": "short" } });
    const digest = await writeBlob(leased, "r", randomBytes(500)).finally(() => leased.close());
    assert.ok(await c.call("content", "Info", { digest }));
    const deadline = Date.now() + 10_000;
    let left: unknown[] = ["short"];
    while (left.length > 0 && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 100));
      left = (await c.call("leases", "List", {})).leases;
    }
    assert.deepEqual(left, []);
    assert.ok(Date.now() >= expires, "deleted before it expired");
    await rejectsClass(c.call("content", "Info", { digest }), "NotFound");
    const plugins = (await c.call("introspection", "Plugins", { filters: ["type==io.containerd.gc.v1"] })).plugins;
    assert.deepEqual(plugins.map((p: any) => [p.id, p.exports.expiry_interval_ms]), [["scheduler", "500"]]);
  } finally {
    c.close();
    await d.cleanup();
    await nats.cleanup();
  }
});

test("GC and lease deletion bigger than one event (a server with a 16 KiB max_payload): collected in several events, in every namespace; a lease of 250 resources deleted; expired ones too", async () => {
  const nats = await startTestNats({ config: "max_payload: 16384" });
  const daemon = await TestDaemon.start({ natsUrl: nats.url });
  const big = new ApiClient({ address: daemon.address, namespace: "aaa" });
  const other = new ApiClient({ address: daemon.address, namespace: "zzz" });
  try {
    // 400 unreferenced blobs: one ContentCollect listing them would be ~29 KB.
    const digests: string[] = [];
    for (let i = 0; i < 400; i++) {
      const data = Buffer.from(`unreferenced ${i}`);
      digests.push(await writeBlob(big, `r${i}`, data, { expected: sha(data) }));
    }
    const lone = Buffer.from("alone in zzz");
    assert.equal(await writeBlob(other, "lone", lone, { expected: sha(lone) }), sha(lone));
    // A lease of 250 resources (~22 KB in one LeaseDelete), and an expired one as big.
    for (const id of ["held", "expired"]) {
      await big.call("leases", "Create", { id, labels: id === "expired" ? { "containerd.io/gc.expire": "2000-01-01T00:00:00Z" } : {} });
      for (let i = 0; i < 250; i += 50) {
        await Promise.all(Array.from({ length: 50 }, (_, k) => big.call("leases", "AddResource", { id, resource: { id: `sha256:${(i + k).toString(16).padStart(64, "0")}`, type: "content" } })));
      }
    }
    await big.call("leases", "Delete", { id: "held" });
    const report = await big.call("gc", "Collect", {});
    assert.ok(report, "GC ran to its end");
    assert.deepEqual((await big.call("leases", "List", {})).leases, [], "both leases gone");
    const left: string[] = [];
    for await (const m of big.stream("content", "List", {})) for (const inf of m.info ?? []) left.push(inf.digest);
    assert.deepEqual(left, [], "every unreferenced blob of aaa collected");
    for (const d of [digests[0]!, digests[399]!]) await rejectsClass(big.call("content", "Info", { digest: d }), "NotFound");
    await rejectsClass(other.call("content", "Info", { digest: sha(lone) }), "NotFound");
    const blobsDir = join(daemon.root, "content", "blobs", "sha256");
    assert.ok(!existsSync(join(blobsDir, digests[0]!.slice(7))) && !existsSync(join(blobsDir, sha(lone).slice(7))), "the bytes are gone");
  } finally {
    big.close();
    other.close();
    await daemon.cleanup();
    await nats.cleanup();
  }
});

test("a namespace whose leases do not fit in one delete event (a server with a 16 KiB max_payload): Namespaces.Delete deletes the big lease first, then the namespace", async () => {
  const nats = await startTestNats({ config: "max_payload: 16384" });
  const daemon = await TestDaemon.start({ natsUrl: nats.url });
  const c = new ApiClient({ address: daemon.address, namespace: "bigns" });
  const admin = new ApiClient({ address: daemon.address, namespace: "default" });
  const log = await EventLog.open({ url: nats.url });
  try {
    // A lease of 250 resources (~21 KB in one NamespaceDelete, as in one LeaseDelete) and two
    // small ones, which still fit in the namespace's event.
    await c.call("leases", "Create", { id: "held" });
    for (let i = 0; i < 250; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, k) => c.call("leases", "AddResource", { id: "held", resource: { id: `sha256:${(i + k).toString(16).padStart(64, "0")}`, type: "content" } })));
    }
    await c.call("leases", "Create", { id: "small" });
    await c.call("leases", "AddResource", { id: "small", resource: { id: "ref-1", type: "ingests" } });
    await c.call("leases", "Create", { id: "bare" });
    const before = await log.lastSeq();

    await admin.call("namespaces", "Delete", { name: "bigns" });
    assert.ok(!(await admin.call("namespaces", "List", {})).namespaces.some((n: any) => n.name === "bigns"), "namespace gone");
    assert.deepEqual((await c.call("leases", "List", {})).leases, [], "leases gone");
    await rejectsClass(c.call("leases", "ListResources", { id: "held" }), "NotFound");

    const last = await log.lastSeq();
    const events: { topic: string; payload: any }[] = [];
    for await (const m of log.read({ fromSeq: before + 1 })) {
      const ev = toLoggedEvent(loadProtos(), m);
      if (ev?.namespace === "bigns") events.push({ topic: ev.topic, payload: ev.payload });
      if (m.seq >= last) break;
    }
    const topics = events.map((e) => e.topic);
    // "held" lets go of what one LeaseDelete cannot list, is deleted, then the namespace.
    assert.ok(topics.slice(0, -2).every((t) => t === "/leases/resource/delete") && topics.length > 2, topics.join(" "));
    assert.deepEqual(topics.slice(-2), ["/leases/delete", "/namespaces/delete"]);
    assert.equal(events.at(-2)!.payload.id, "held");
    assert.deepEqual(events.at(-1)!.payload.ck_leases, ["bare", "small"]);
  } finally {
    c.close();
    admin.close();
    await log.close();
    await daemon.cleanup();
    await nats.cleanup();
  }
});
