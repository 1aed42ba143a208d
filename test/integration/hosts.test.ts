// Several ckd on one log: each is a host with its own content store. A blob's record names
// the hosts whose stores hold its bytes; each ckd answers for its own only.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runNode, CK } from "../helpers/daemon.js";
import { rejectsClass } from "../helpers/errors.js";
import { writeBlob } from "../../src/cli/content-commands.js";
import type { ApiClient } from "../../src/cli/client.js";

const NS = "hosts";
const sha = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");
const blobFile = (root: string, digest: string) => join(root, "content", "blobs", "sha256", digest.slice(7));
const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "d".repeat(64), size: 10 };

async function listed(c: ApiClient): Promise<string[]> {
  const out: string[] = [];
  for await (const m of c.stream<any>("content", "List", {})) out.push(...m.info.map((i: { digest: string }) => i.digest));
  return out;
}

/** Writes a marker image through `from` and waits until `to` lists it: `to` has applied all `from` wrote before. */
async function synced(from: ApiClient, to: ApiClient, name: string): Promise<void> {
  await from.call("images", "Create", { image: { name, target } });
  const deadline = Date.now() + 20_000;
  for (;;) {
    const found = await to.call("images", "Get", { name }).then(
      () => true,
      () => false,
    );
    if (found) return;
    if (Date.now() > deadline) throw new Error(`${name} never reached the other ckd`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Two ckd (two hosts: roots of their own) on one nats-server, with clients in NS; all stopped after `fn`. */
async function withTwoHosts(fn: (h: { a: TestDaemon; b: TestDaemon; ca: ApiClient; cb: ApiClient }) => Promise<void>): Promise<void> {
  const nats = await startTestNats();
  const a = await TestDaemon.start({ natsUrl: nats.url });
  const b = await TestDaemon.start({ natsUrl: nats.url });
  const ca = a.client(NS);
  const cb = b.client(NS);
  try {
    await fn({ a, b, ca, cb });
  } finally {
    ca.close();
    cb.close();
    await a.cleanup();
    await b.cleanup();
    await nats.cleanup();
  }
}

test("two ckd on one log: a blob is found only on the host that holds it; another host writes its own copy, deletes it without touching the first's, and a namespace delete names blobs held elsewhere", () =>
  withTwoHosts(async ({ a, b, ca, cb }) => {
    const data = randomBytes(200_000);
    const digest = sha(data);
    const labels = { "containerd.io/gc.root": "test" };
    assert.equal(await writeBlob(ca, "on-a", data, { expected: digest, labels }), digest);
    await synced(ca, cb, "marker/1:a");

    // B has the record but not the bytes: to its clients the blob is not there.
    await rejectsClass(cb.call("content", "Info", { digest }), "NotFound", /content digest/);
    assert.deepEqual(await listed(cb), []);
    await rejectsClass(cb.call("content", "Delete", { digest }), "NotFound");
    await rejectsClass(cb.call("content", "Update", { info: { digest, labels: { k: "v" } }, update_mask: { paths: ["labels.k"] } }), "NotFound");
    // So a client writes it (a pull fetches it): B's store gets the bytes, the record B.
    const w = cb.lockstep<object>("content", "Write");
    const st: any = await w.send({ action: 0, ref: "on-b", total: data.length, expected: digest });
    assert.equal(Number(st.offset), 0, "B starts from nothing: the bytes are not on its disk");
    w.end();
    assert.equal(await writeBlob(cb, "on-b-write", data, { expected: digest, labels: { ...labels, b: "1" } }), digest);
    assert.ok(existsSync(blobFile(b.root, digest)));
    assert.equal((await cb.call("content", "Info", { digest })).info.labels.b, "1");
    await rejectsClass(cb.lockstep<object>("content", "Write").send({ action: 0, ref: "again", total: data.length, expected: digest }), "AlreadyExists");
    await synced(cb, ca, "marker/2:b");
    assert.equal(Number((await ca.call("content", "Info", { digest })).info.size), data.length);

    // B's delete removes its copy only.
    await cb.call("content", "Delete", { digest });
    await rejectsClass(cb.call("content", "Info", { digest }), "NotFound");
    assert.ok(!existsSync(blobFile(b.root, digest)), "B's bytes go with B's reference");
    await synced(cb, ca, "marker/3:b");
    assert.equal(Number((await ca.call("content", "Info", { digest })).info.size), data.length);
    assert.ok(existsSync(blobFile(a.root, digest)), "A's bytes stay");
    assert.deepEqual(await listed(ca), [digest]);

    // B restarted is the same host (its uuid is in its root): it still holds nothing.
    await b.restart();
    const cb2 = b.client(NS);
    try {
      await rejectsClass(cb2.call("content", "Info", { digest }), "NotFound");
      // The namespace is not empty: its blobs are on another host, and the refusal says so.
      for (const name of ["marker/1:a", "marker/2:b", "marker/3:b"]) await cb2.call("images", "Delete", { name });
      await rejectsClass(b.client().call("namespaces", "Delete", { name: NS }), "FailedPrecondition", /still has blobs \(held in other hosts' content stores only\)/);
      assert.equal(Number((await ca.call("content", "Info", { digest })).info.size), data.length);
    } finally {
      cb2.close();
    }
  }));

test("an image deleted through one ckd: each host's GC collects its own copy of what it referenced", () =>
  withTwoHosts(async ({ a, b, ca, cb }) => {
    const data = randomBytes(50_000);
    const digest = sha(data);
    // The image first: the blob is referenced from the moment it is written, on both hosts.
    await ca.call("images", "Create", { image: { name: "gc/img:1", target: { media_type: "application/vnd.oci.image.manifest.v1+json", digest, size: data.length } } });
    await synced(ca, cb, "marker/gc:1");
    assert.equal(await writeBlob(ca, "gc-a", data, { expected: digest }), digest);
    assert.equal(await writeBlob(cb, "gc-b", data, { expected: digest }), digest);
    await synced(cb, ca, "marker/gc:2");
    assert.deepEqual(await listed(ca), [digest]);
    assert.deepEqual(await listed(cb), [digest]);
    // Deleted through A, waiting for A's collection: A's copy goes at once.
    await ca.call("images", "Delete", { name: "gc/img:1", sync: true });
    assert.deepEqual(await listed(ca), []);
    assert.ok(!existsSync(blobFile(a.root, digest)));
    // B's GC runs on the delete it applied from the log, and takes B's copy.
    const deadline = Date.now() + 20_000;
    while ((await listed(cb)).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await listed(cb), []);
    assert.ok(!existsSync(blobFile(b.root, digest)), "B's bytes go with its collection");
  }));

test("a root restored without its uuid: ckd warns, finds none of its blobs, and keeps their bytes; with the uuid back they are its own again", async () => {
  const nats = await startTestNats();
  const d = await TestDaemon.start({ natsUrl: nats.url });
  try {
    const c = d.client(NS);
    const data = randomBytes(30_000);
    const digest = sha(data);
    assert.equal(await writeBlob(c, "r", data, { expected: digest, labels: { "containerd.io/gc.root": "1" } }), digest);
    c.close();
    await d.stop();
    const uuidFile = join(d.root, "uuid");
    const uuid = readFileSync(uuidFile, "utf8");
    rmSync(uuidFile);
    // Old enough for the orphan sweep (its grace is 10 minutes).
    const past = new Date(Date.now() - 11 * 60_000);
    utimesSync(blobFile(d.root, digest), past, past);
    await d.launch();
    assert.match(d.logText(), /the root holds blobs but had no uuid file/);
    const c2 = d.client(NS);
    assert.deepEqual(await listed(c2), []);
    const r = await runNode(CK, ["--address", d.address, "-n", NS, "gc"]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(blobFile(d.root, digest)), "the orphan sweep kept bytes a record names");
    c2.close();
    await d.stop();
    writeFileSync(uuidFile, uuid);
    await d.launch();
    const c3 = d.client(NS);
    assert.deepEqual(await listed(c3), [digest]);
    c3.close();
  } finally {
    await d.cleanup();
    await nats.cleanup();
  }
});

test("a host gone for good is released through another ckd: it leaves every record, what only it held goes, the namespace can be deleted; no ckd releases itself", () =>
  withTwoHosts(async ({ a, b, ca, cb }) => {
    const x = randomBytes(20_000);
    const y = randomBytes(20_000);
    const root = { "containerd.io/gc.root": "1" };
    assert.equal(await writeBlob(ca, "x-a", x, { expected: sha(x), labels: root }), sha(x));
    assert.equal(await writeBlob(cb, "x-b", x, { expected: sha(x), labels: root }), sha(x));
    assert.equal(await writeBlob(cb, "y-b", y, { expected: sha(y), labels: root }), sha(y));
    await synced(cb, ca, "marker/rel:1");
    const hostB = readFileSync(join(b.root, "uuid"), "utf8").trim();
    const hostA = readFileSync(join(a.root, "uuid"), "utf8").trim();
    await b.stop();
    await ca.call("images", "Delete", { name: "marker/rel:1" });
    await ca.call("content", "Delete", { digest: sha(x) });
    // Only B's records are left: A cannot delete the namespace, nor delete what it does not hold.
    await rejectsClass(a.client().call("namespaces", "Delete", { name: NS }), "FailedPrecondition", /blobs \(held in other hosts' content stores only\)/);
    const r = await runNode(CK, ["--address", a.address, "content", "release-host", hostB]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `NAMESPACE BLOBS\n${NS}     2\nreleased ${hostB} from 2 blob records\n`);
    await a.client().call("namespaces", "Delete", { name: NS });
    // Refused: this ckd's own id, and none at all; an unknown host releases nothing.
    await rejectsClass(a.client().call("gc", "ReleaseHost", { host: hostA }), "FailedPrecondition", /this ckd's own/);
    await rejectsClass(a.client().call("gc", "ReleaseHost", { host: "" }), "InvalidArgument", /^host: /);
    assert.deepEqual((await a.client().call("gc", "ReleaseHost", { host: "no-such-host" })).namespaces ?? [], []);
  }));
