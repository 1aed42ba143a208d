// Given/when/then specifications of leases and garbage collection: pure decide functions and
// the mark, folded with evolve, no server involved.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  decideAddLeaseResource,
  decideLeaseContentIfPresent,
  decideCreateLease,
  decideDeleteLease,
  decideDeleteLeaseResource,
  decideExpireLease,
  isLeaseExpired,
  leaseExpiry,
  leaseHandlers,
} from "../../src/commands/leases.js";
import { decideCollectContent, decideReleaseHost, gcMark, ingestCollectable, ingestRefsHeld, labelRefs, unreferencedContent, type NamespaceGcState } from "../../src/commands/gc.js";
import { decideCommitContent, decideUpdateContent } from "../../src/commands/content.js";
import { decideCreateImage } from "../../src/commands/images.js";
import { decideDeleteNamespace, deleteNamespace, namespaceHandlers, type LeasesFirst } from "../../src/commands/namespaces.js";
import { keys, TYPE, type BlobRecord, type ImageRecord, type LeaseRecord, type LeaseResource } from "../../src/projections/views.js";
import { Given as BaseGiven, T0 } from "../helpers/given.js";
import { rejectsClass, throwsClass } from "../helpers/errors.js";
import { namespaceLeaseCost, stringCost } from "../../src/commands/event-size.js";
import { loadProtos } from "../../src/protos/protos.js";

const NOW = new Date("2030-01-01T00:00:00Z");
const d = (c: string) => "sha256:" + c.repeat(64);
const NS = "ns1";

class Given extends BaseGiven {
  lease(id: string): LeaseRecord | undefined {
    return this.get<LeaseRecord>(keys.lease(NS, id));
  }
  /** A lease's resources, from their own records, in key order (type, then id). */
  resources(id: string): LeaseResource[] {
    const prefix = keys.leaseResourcesPrefix(NS, id);
    return [...this.state.entries()].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => (a < b ? -1 : 1)).map(([, v]) => v as LeaseResource);
  }
  holds(id: string, r: LeaseResource): boolean {
    return this.state.has(keys.leaseResource(NS, id, r));
  }
  gcState(): NamespaceGcState {
    const of = <T>(prefix: string) => [...this.state.entries()].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => (a < b ? -1 : 1)).map(([, v]) => v as T);
    return {
      images: of<ImageRecord>(keys.imagesPrefix(NS)),
      containers: of(keys.containersPrefix(NS)),
      blobs: new Map(of<BlobRecord>(keys.blobsPrefix(NS)).map((b) => [b.digest, b])),
      leases: of<LeaseRecord>(keys.leasesPrefix(NS)).map((l) => ({ ...l, resources: this.resources(l.id) })),
    };
  }
  commit(digest: string, labels: Record<string, string> = {}, lease?: string, host?: string) {
    this.apply(decideCommitContent({ namespace: NS, digest, size: 10, labels, lease, host }, this.get(keys.blob(NS, digest)), lease ? this.lease(lease) : undefined).event);
  }
}

describe("leases", () => {
  test("create: emits ck.events.LeaseCreate; the record holds id, labels, created_at, no resources", () => {
    const g = new Given();
    const dec = decideCreateLease({ namespace: NS, id: "mnt/dir", labels: { a: "1", e: "" }, now: T0 }, undefined);
    assert.deepEqual(dec.event, { namespace: NS, topic: "/leases/create", typeName: TYPE.LeaseCreate, payload: { id: "mnt/dir", labels: { a: "1" }, created_at: T0 } });
    g.apply(dec.event);
    assert.deepEqual(g.lease("mnt/dir"), { id: "mnt/dir", labels: { a: "1" }, created_at: T0 });
    assert.deepEqual(g.resources("mnt/dir"), []);
    // Writing into a namespace creates it implicitly.
    assert.ok(g.get(keys.namespace(NS)));
  });

  test("given a lease, create again is AlreadyExists; empty id, NUL and oversized labels are InvalidArgument", () => {
    const g = new Given();
    g.apply(decideCreateLease({ namespace: NS, id: "l1", labels: {}, now: T0 }, undefined).event);
    throwsClass(() => decideCreateLease({ namespace: NS, id: "l1", labels: {}, now: T0 }, g.lease("l1")), "AlreadyExists", /lease "l1"/);
    throwsClass(() => decideCreateLease({ namespace: NS, id: "", labels: {}, now: T0 }, undefined), "InvalidArgument", /lease id/);
    throwsClass(() => decideCreateLease({ namespace: NS, id: "a\u0000b", labels: {}, now: T0 }, undefined), "InvalidArgument");
    throwsClass(() => decideCreateLease({ namespace: NS, id: "l2", labels: { k: "v".repeat(4096) }, now: T0 }, undefined), "InvalidArgument", /label/);
  });

  test("delete: NotFound when absent; removes the record and the resource records the event lists", () => {
    const g = new Given();
    throwsClass(() => decideDeleteLease({ namespace: NS, id: "nope" }, undefined), "NotFound", /lease "nope"/);
    g.apply(decideCreateLease({ namespace: NS, id: "l1", labels: {}, now: T0 }, undefined).event);
    g.apply(decideAddLeaseResource({ namespace: NS, id: "l1", resource: { id: d("a"), type: "content" } }, g.lease("l1")).event);
    const dec = decideDeleteLease({ namespace: NS, id: "l1" }, g.lease("l1"), g.resources("l1"));
    assert.deepEqual(dec.event!.payload, { id: "l1", resources: [{ id: d("a"), type: "content" }] });
    g.apply(dec.event);
    assert.equal(g.lease("l1"), undefined);
    assert.deepEqual([...g.state.keys()].filter((k) => k !== keys.namespace(NS)), [], "no resource record is left behind");
  });

  test("delete of a lease whose resources do not fit in one event: the ones past it go first, then the delete lists the rest", () => {
    const g = new Given();
    g.apply(decideCreateLease({ namespace: NS, id: "big", labels: {}, now: T0 }, undefined).event);
    for (let i = 0; i < 30; i++) g.apply(decideAddLeaseResource({ namespace: NS, id: "big", resource: { id: "sha256:" + i.toString(16).padStart(64, "0"), type: "content" } }, g.lease("big")).event);
    // Room for 10 resources (71 + 7 + 10 bytes each) besides the event's 1,024.
    const maxEventBytes = 1024 + 10 * 88;
    const first = decideDeleteLease({ namespace: NS, id: "big", maxEventBytes }, g.lease("big"), g.resources("big"));
    assert.equal(first.event, undefined, "no delete that the log would refuse");
    const trim = (first.result as { trim: { id: string; type: string }[] }).trim;
    assert.equal(trim.length, 20);
    for (const resource of trim) g.apply(decideDeleteLeaseResource({ namespace: NS, id: "big", resource }, g.lease("big"), true).event);
    const then = decideDeleteLease({ namespace: NS, id: "big", maxEventBytes }, g.lease("big"), g.resources("big"));
    assert.equal((then.event!.payload as { resources: unknown[] }).resources.length, 10);
    g.apply(then.event);
    assert.deepEqual([...g.state.keys()].filter((k) => k !== keys.namespace(NS)), []);
    // Expiry the same way.
    g.apply(decideCreateLease({ namespace: NS, id: "old", labels: { "containerd.io/gc.expire": "2000-01-01T00:00:00Z" }, now: T0 }, undefined).event);
    for (let i = 0; i < 30; i++) g.apply(decideAddLeaseResource({ namespace: NS, id: "old", resource: { id: "sha256:" + i.toString(16).padStart(64, "0"), type: "content" } }, g.lease("old")).event);
    const expiry = decideExpireLease({ namespace: NS, id: "old", now: new Date("2030-01-01T00:00:00Z"), maxEventBytes }, g.lease("old"), g.resources("old"));
    assert.equal(expiry.event, undefined);
    assert.equal((expiry.result as { trim: unknown[] }).trim.length, 20);
  });

  test("resources: add keeps them sorted and unique, delete removes, absent ones give no event", () => {
    const g = new Given();
    g.apply(decideCreateLease({ namespace: NS, id: "l1", labels: {}, now: T0 }, undefined).event);
    const add = (id: string, type: string) => decideAddLeaseResource({ namespace: NS, id: "l1", resource: { id, type } }, g.lease("l1"), g.holds("l1", { id, type }));
    g.apply(add("k2", "snapshots/overlayfs").event);
    g.apply(add(d("b"), "content").event);
    g.apply(add(d("a"), "content").event);
    g.apply(add("ref", "ingests").event);
    assert.equal(add(d("a"), "content").event, undefined, "adding a held resource changes nothing");
    assert.deepEqual(g.resources("l1"), [
      { id: d("a"), type: "content" },
      { id: d("b"), type: "content" },
      { id: "ref", type: "ingests" },
      { id: "k2", type: "snapshots/overlayfs" },
    ]);
    const del = (id: string, type: string) => decideDeleteLeaseResource({ namespace: NS, id: "l1", resource: { id, type } }, g.lease("l1"), g.holds("l1", { id, type }));
    g.apply(del(d("b"), "content").event);
    assert.equal(del(d("b"), "content").event, undefined);
    assert.deepEqual(g.resources("l1").map((r) => r.id), [d("a"), "ref", "k2"]);
  });

  test("given a blob seen in the namespace and collected before it is leased: lease-if-present says gone and appends nothing; present, it is leased once", () => {
    const g = new Given();
    g.apply(decideCreateLease({ namespace: NS, id: "l1", labels: {}, now: T0 }, undefined).event);
    g.commit(d("a"));
    const cmd = { namespace: NS, id: "l1", resource: { id: d("a"), type: "content" } };
    const leaseIt = () => decideLeaseContentIfPresent(cmd, g.lease("l1"), g.get(keys.blob(NS, d("a"))) !== undefined, g.holds("l1", cmd.resource));
    // Collected by a GC between the writer's look and its lease.
    g.apply(decideCollectContent({ namespace: NS, now: NOW }, g.gcState()).event);
    assert.equal(g.get(keys.blob(NS, d("a"))), undefined);
    assert.deepEqual(leaseIt(), { result: false });
    // Committed again (by the writer, as new): now it is there and gets leased, once.
    g.commit(d("a"));
    const dec = leaseIt();
    assert.equal(dec.result, true);
    assert.equal(dec.event?.topic, "/leases/resource/add");
    g.apply(dec.event);
    assert.deepEqual(leaseIt(), { result: true });
    throwsClass(() => decideLeaseContentIfPresent({ ...cmd, id: "nope" }, undefined, true, false), "NotFound", /lease "nope"/);
  });

  test("resources: NotFound lease, InvalidArgument for malformed, NotImplemented for unknown kinds", () => {
    const g = new Given();
    throwsClass(() => decideAddLeaseResource({ namespace: NS, id: "x", resource: { id: d("a"), type: "content" } }, undefined), "NotFound", /lease "x"/);
    throwsClass(() => decideDeleteLeaseResource({ namespace: NS, id: "x", resource: { id: d("a"), type: "content" } }, undefined), "NotFound");
    g.apply(decideCreateLease({ namespace: NS, id: "l1", labels: {}, now: T0 }, undefined).event);
    const add = (id: string, type: string) => () => decideAddLeaseResource({ namespace: NS, id: "l1", resource: { id, type } }, g.lease("l1"));
    throwsClass(add("sha256:nope", "content"), "InvalidArgument", /invalid content resource id/);
    throwsClass(add(d("a"), "content/x"), "InvalidArgument", /invalid resource type/);
    throwsClass(add("k", "snapshots"), "InvalidArgument", /invalid snapshot resource type/);
    throwsClass(add("k", "snapshots/a/b"), "InvalidArgument");
    throwsClass(add("", "ingests"), "InvalidArgument", /resource id/);
    throwsClass(add("x", "containers"), "NotImplemented", /not supported/);
  });

  test("leases go with their namespace: NamespaceDelete lists them (ck_leases) and removes their records", () => {
    const g = new Given();
    g.apply(decideCreateLease({ namespace: NS, id: "a/b", labels: {}, now: T0 }, undefined).event);
    g.apply(decideCreateLease({ namespace: NS, id: "c", labels: {}, now: T0 }, undefined).event);
    g.apply(decideAddLeaseResource({ namespace: NS, id: "c", resource: { id: "ref", type: "ingests" } }, g.lease("c")).event);
    const held = ["a/b", "c"].map((id) => ({ id, resources: g.resources(id) }));
    const dec = decideDeleteNamespace({ name: NS }, g.get(keys.namespace(NS)), [], ["a/b", "c"], held);
    assert.deepEqual(dec.event!.payload, { name: NS, ck_leases: ["a/b", "c"], ck_lease_resources: [{ id: "c", resources: [{ id: "ref", type: "ingests" }] }] });
    g.apply(dec.event);
    assert.deepEqual([...g.state.keys()], []);
    // Without leases the event is containerd's own.
    assert.deepEqual(decideDeleteNamespace({ name: "x" }, { name: "x", labels: {} }, []).event!.payload, { name: "x" });
  });

  /** Leases "big" (30 blobs), "mid" (10), "small" (1) and "bare" (none) in NS. */
  const namespaceOfLeases = () => {
    const g = new Given();
    const sizes: [string, number][] = [["big", 30], ["mid", 10], ["small", 1], ["bare", 0]];
    for (const [id, n] of sizes) {
      g.apply(decideCreateLease({ namespace: NS, id, labels: {}, now: T0 }, undefined).event);
      for (let i = 0; i < n; i++) g.apply(decideAddLeaseResource({ namespace: NS, id, resource: { id: "sha256:" + i.toString(16).padStart(64, "0"), type: "content" } }, g.lease(id)).event);
    }
    return g;
  };
  // In a NamespaceDelete a blob costs 84 bytes (its 71-byte digest, "content", tags and
  // lengths); a lease its id and, holding any, one LeaseResources: big 2,535 bytes, mid 855,
  // small 102, bare 7 (3,499 together). Besides those: the event's 1,024 and the name's 5.
  const room = (bytes: number) => 1024 + 5 + bytes;

  test("what a lease adds to a NamespaceDelete is what it adds to the encoded event, to the byte", () => {
    const g = namespaceOfLeases();
    const encoded = (ids: string[]) => {
      const held = ids.map((id) => ({ id, resources: g.resources(id) }));
      const payload = decideDeleteNamespace({ name: NS }, g.get(keys.namespace(NS)), [], ids, held).event!.payload;
      return loadProtos().type(TYPE.NamespaceDelete).encode(payload).finish().length;
    };
    assert.equal(encoded([]), stringCost(NS));
    for (const id of ["big", "mid", "small", "bare"]) assert.equal(encoded([id]) - encoded([]), namespaceLeaseCost({ id, resources: g.resources(id) }), id);
    assert.equal(encoded(["big", "mid", "small", "bare"]), 5 + 3499);
    // Long snapshot keys (two-byte lengths) and a long lease id.
    const id = "l".repeat(200);
    const resources = Array.from({ length: 100 }, (_, i) => ({ id: "k".repeat(300) + i, type: "snapshots/overlayfs" }));
    const big = loadProtos().type(TYPE.NamespaceDelete).encode({ name: NS, ck_leases: [id], ck_lease_resources: [{ id, resources }] }).finish().length;
    assert.equal(big, stringCost(NS) + namespaceLeaseCost({ id, resources }));
  });

  test("a namespace whose leases fit in one event: deleted in that event, leases and resources with it", async () => {
    const g = namespaceOfLeases();
    const dec = await namespaceHandlers.delete({ name: NS, maxEventBytes: room(3499) })(g);
    assert.deepEqual((dec.event!.payload as { ck_leases: string[] }).ck_leases, ["bare", "big", "mid", "small"]);
    g.apply(dec.event);
    assert.deepEqual([...g.state.keys()], []);
  });

  test("a namespace whose leases do not fit in one event: the biggest go first (leasesFirst, no event), then the delete lists the rest", async () => {
    const g = namespaceOfLeases();
    // One byte short: the biggest lease alone goes first.
    const first = await namespaceHandlers.delete({ name: NS, maxEventBytes: room(3498) })(g);
    assert.equal(first.event, undefined, "no delete that the log would refuse");
    assert.deepEqual(first.result, { leasesFirst: ["big"] });
    // Room for less than what is left without it (964): the next biggest too.
    const two = await namespaceHandlers.delete({ name: NS, maxEventBytes: room(900) })(g);
    assert.deepEqual(two.result, { leasesFirst: ["big", "mid"] });
    for (const id of (two.result as LeasesFirst).leasesFirst) g.apply(decideDeleteLease({ namespace: NS, id }, g.lease(id), g.resources(id)).event);
    const then = await namespaceHandlers.delete({ name: NS, maxEventBytes: room(900) })(g);
    assert.deepEqual(then.event!.payload, {
      name: NS,
      ck_leases: ["bare", "small"],
      ck_lease_resources: [{ id: "small", resources: [{ id: "sha256:" + "0".repeat(64), type: "content" }] }],
    });
    g.apply(then.event);
    assert.deepEqual([...g.state.keys()], []);
  });

  test("a namespace that is not empty is FailedPrecondition however big its leases: none goes first", async () => {
    const g = namespaceOfLeases();
    g.apply(decideCreateImage({ namespace: NS, image: { name: "img", labels: {}, target: { media_type: "m", digest: d("3"), size: 10, annotations: {} } }, now: T0 }, undefined).event);
    await rejectsClass(Promise.resolve().then(() => namespaceHandlers.delete({ name: NS, maxEventBytes: room(100) })(g)), "FailedPrecondition", /must be empty, but it still has images/);
    throwsClass(() => decideDeleteNamespace({ name: NS, maxEventBytes: 1 }, g.get(keys.namespace(NS)), ["images"], ["big"], [{ id: "big", resources: g.resources("big") }]), "FailedPrecondition");
  });

  test("deleteNamespace: deletes the leases it is told to first, through the lease delete (itself split), then the namespace; a writer adding leases every round is Aborted after 8", async () => {
    const g = namespaceOfLeases();
    const topics: string[] = [];
    let addEachRound = false;
    let rounds = 0;
    const sequencer = {
      maxEventBytes: room(900),
      submit: async <T>(decide: (v: Given) => unknown): Promise<T> => {
        const dec = (await decide(g)) as { event?: { topic: string }; result: T };
        if (dec.event) topics.push(dec.event.topic);
        g.apply(dec.event as Parameters<Given["apply"]>[0]);
        const r = dec.result as Partial<LeasesFirst> | undefined;
        if (addEachRound && r?.leasesFirst) {
          rounds++;
          const id = `new-${rounds}`;
          g.apply(decideCreateLease({ namespace: NS, id, labels: {}, now: T0 }, undefined).event);
          for (let i = 0; i < 12; i++) g.apply(decideAddLeaseResource({ namespace: NS, id, resource: { id: "sha256:" + i.toString(16).padStart(64, "1"), type: "content" } }, g.lease(id)).event);
        }
        return dec.result;
      },
    };
    await deleteNamespace(sequencer as never, { name: NS });
    // "big" does not fit in one LeaseDelete either (room for 10 of its 30): 20 go first.
    assert.deepEqual(topics.filter((t) => t === "/leases/resource/delete").length, 20);
    assert.deepEqual(topics.filter((t) => t !== "/leases/resource/delete"), ["/leases/delete", "/leases/delete", "/namespaces/delete"]);
    assert.deepEqual([...g.state.keys()], []);

    const h = namespaceOfLeases();
    g.state = h.state;
    addEachRound = true;
    await rejectsClass(deleteNamespace(sequencer as never, { name: NS }), "Aborted", /namespace "ns1": its leases still did not fit/);
    assert.equal(rounds, 8);
  });

  test("a content commit under a lease adds the blob to it in the same event; NotFound lease writes nothing", () => {
    const g = new Given();
    throwsClass(() => decideCommitContent({ namespace: NS, digest: d("a"), size: 1, labels: {}, lease: "nope" }, undefined, undefined), "NotFound", /lease "nope"/);
    g.apply(decideCreateLease({ namespace: NS, id: "l1", labels: {}, now: T0 }, undefined).event);
    const dec = decideCommitContent({ namespace: NS, digest: d("a"), size: 1, labels: {}, lease: "l1" }, undefined, g.lease("l1"));
    assert.equal((dec.event!.payload as any).lease, "l1");
    g.apply(dec.event);
    assert.deepEqual(g.resources("l1"), [{ id: d("a"), type: "content" }]);
    assert.ok(g.get(keys.blob(NS, d("a"))));
    // Without a lease, the payload carries none.
    assert.equal("lease" in (decideCommitContent({ namespace: NS, digest: d("b"), size: 1, labels: {} }, undefined).event!.payload as object), false);
  });

  test("gc.expire: RFC 3339 in the past expires; absent or malformed never does; expire gives no event otherwise", () => {
    assert.equal(leaseExpiry({ "containerd.io/gc.expire": "2020-01-02T03:04:05Z" })?.toISOString(), "2020-01-02T03:04:05.000Z");
    assert.equal(leaseExpiry({ "containerd.io/gc.expire": "2020-01-02T05:04:05+02:00" })?.toISOString(), "2020-01-02T03:04:05.000Z");
    assert.equal(leaseExpiry({ "containerd.io/gc.expire": "tomorrow" }), undefined);
    assert.equal(leaseExpiry({ "containerd.io/gc.expire": "2020-01-02" }), undefined);
    // Fields out of range: Go's time.Parse refuses them (containerd keeps such a lease); no roll-over.
    for (const bad of ["2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2020-01-02T24:00:00Z", "2020-13-01T00:00:00Z", "2020-01-02T03:60:00Z", "2020-01-02T03:04:60Z", "2020-01-02T03:04:05+24:00"]) {
      assert.equal(leaseExpiry({ "containerd.io/gc.expire": bad }), undefined, bad);
    }
    assert.equal(leaseExpiry({ "containerd.io/gc.expire": "2024-02-29T23:59:59.5Z" })?.toISOString(), "2024-02-29T23:59:59.500Z", "a leap day is a day");
    const g = new Given();
    g.apply(decideCreateLease({ namespace: NS, id: "old", labels: { "containerd.io/gc.expire": "2020-01-01T00:00:00Z" }, now: T0 }, undefined).event);
    g.apply(decideCreateLease({ namespace: NS, id: "new", labels: { "containerd.io/gc.expire": "2040-01-01T00:00:00Z" }, now: T0 }, undefined).event);
    g.apply(decideCreateLease({ namespace: NS, id: "bad", labels: { "containerd.io/gc.expire": "soon" }, now: T0 }, undefined).event);
    for (const id of ["new", "bad", "gone"]) {
      const dec = decideExpireLease({ namespace: NS, id, now: NOW }, g.lease(id));
      assert.deepEqual(dec, { result: false });
    }
    const dec = decideExpireLease({ namespace: NS, id: "old", now: NOW }, g.lease("old"));
    assert.equal(dec.result, true);
    assert.equal(dec.event!.typeName, TYPE.LeaseDelete);
    g.apply(dec.event);
    assert.equal(g.lease("old"), undefined);
  });
});

describe("garbage collection", () => {
  const manifestLabels = (config: string, ...layers: string[]) => ({
    "containerd.io/gc.ref.content.config": config,
    ...Object.fromEntries(layers.map((l, i) => [`containerd.io/gc.ref.content.l.${i}`, l])),
  });

  test("labelRefs: gc.ref.content, .x and /x name content (digests only); gc.ref.snapshot.<sn>[/x] names snapshots", () => {
    assert.deepEqual(
      labelRefs({
        "containerd.io/gc.ref.content": d("a"),
        "containerd.io/gc.ref.content.m.0": d("b"),
        "containerd.io/gc.ref.content/x": d("c"),
        "containerd.io/gc.ref.contentx": d("d"),
        "containerd.io/gc.ref.content.bad": "not-a-digest",
        "containerd.io/gc.ref.snapshot.overlayfs": "chain",
        "containerd.io/gc.ref.snapshot.native/1": "k",
        other: d("e"),
      }),
      [
        { kind: "content", key: d("a") },
        { kind: "content", key: d("b") },
        { kind: "content", key: d("c") },
        { kind: "snapshot", key: "overlayfs/chain" },
        { kind: "snapshot", key: "native/k" },
      ],
    );
  });

  test("given an image → manifest → config/layers, a leased blob, a gc.root blob and garbage: only the garbage is collected", () => {
    const g = new Given();
    g.commit(d("1")); // config
    g.commit(d("2")); // layer
    g.commit(d("3"), manifestLabels(d("1"), d("2"))); // manifest
    g.apply(decideCreateImage({ namespace: NS, image: { name: "img", labels: {}, target: { media_type: "m", digest: d("3"), size: 10, annotations: {} } }, now: T0 }, undefined).event);
    g.apply(decideCreateLease({ namespace: NS, id: "l1", labels: {}, now: T0 }, undefined).event);
    g.commit(d("4"), {}, "l1");
    g.commit(d("5"), { "containerd.io/gc.root": "x" });
    g.commit(d("6"), manifestLabels(d("7"))); // unreferenced, and so is what it refers to
    g.commit(d("7"));
    g.commit(d("8"), { "containerd.io/gc.ref.content.x": "garbage-value" });
    assert.deepEqual(unreferencedContent(g.gcState(), NOW), [d("6"), d("7"), d("8")]);
    const dec = decideCollectContent({ namespace: NS, now: NOW }, g.gcState());
    assert.deepEqual(dec.event, { namespace: NS, topic: "/gc/content", typeName: TYPE.ContentCollect, payload: { digests: [d("6"), d("7"), d("8")] } });
    assert.deepEqual(dec.result, { digests: [d("6"), d("7"), d("8")], size: 30, more: false });
    g.apply(dec.event);
    assert.deepEqual([...g.gcState().blobs.keys()].sort(), [d("1"), d("2"), d("3"), d("4"), d("5")]);
    // Nothing left to collect: no event.
    assert.deepEqual(decideCollectContent({ namespace: NS, now: NOW }, g.gcState()), { result: { digests: [], size: 0, more: false } });
  });

  test("hosts: a host collects what its store holds, marked over every host's records; the record stays for the other hosts holding it", () => {
    const g = new Given();
    g.commit(d("1"), {}, undefined, "A"); // A's only, unreferenced
    g.commit(d("2"), {}, undefined, "B"); // B's only, unreferenced
    g.commit(d("3"), {}, undefined, "A"); // both, unreferenced
    g.commit(d("3"), {}, undefined, "B");
    g.commit(d("4"), { "containerd.io/gc.root": "x" }, undefined, "A"); // A's, refers on to 5
    g.apply(decideUpdateContent({ namespace: NS, digest: d("4"), labels: { "containerd.io/gc.ref.content.l.0": d("5") }, paths: ["labels.containerd.io/gc.ref.content.l.0"], now: T0, host: "A" }, g.get(keys.blob(NS, d("4")))).event);
    g.commit(d("5"), {}, undefined, "B"); // B's, kept by A's root's reference
    const dec = decideCollectContent({ namespace: NS, now: NOW, host: "B" }, g.gcState());
    assert.deepEqual(dec.event, { namespace: NS, topic: "/gc/content", typeName: TYPE.ContentCollect, payload: { digests: [d("2"), d("3")], host: "B" } });
    g.apply(dec.event);
    assert.equal(g.get(keys.blob(NS, d("2"))), undefined);
    assert.deepEqual(g.get<BlobRecord>(keys.blob(NS, d("3")))!.hosts, ["A"]);
    assert.deepEqual(g.get<BlobRecord>(keys.blob(NS, d("5")))!.hosts, ["B"]);
    assert.deepEqual(decideCollectContent({ namespace: NS, now: NOW, host: "B" }, g.gcState()).event, undefined);
    g.apply(decideCollectContent({ namespace: NS, now: NOW, host: "A" }, g.gcState()).event);
    assert.deepEqual([...g.gcState().blobs.keys()].sort(), [d("4"), d("5")]);
    // A writer on B that found the blob committed leases it only if B's store still holds it.
    g.apply(decideCreateLease({ namespace: NS, id: "l1", labels: {}, now: T0 }, undefined).event);
    const cmd = { namespace: NS, id: "l1", resource: { id: d("4"), type: "content" } };
    assert.deepEqual(g.run(leaseHandlers.leaseContentIfPresent(cmd, "B")), false);
    assert.equal(g.holds("l1", cmd.resource), false);
    assert.deepEqual(g.run(leaseHandlers.leaseContentIfPresent(cmd, "A")), true);
    assert.equal(g.holds("l1", cmd.resource), true);
  });

  test("hosts: a host released takes itself out of every record that names it, referenced or not; records without hosts stay; a large release goes in several events", () => {
    const g = new Given();
    g.commit(d("1"), { "containerd.io/gc.root": "x" }, undefined, "A");
    g.commit(d("1"), {}, undefined, "B");
    g.commit(d("2"), { "containerd.io/gc.root": "x" }, undefined, "B");
    g.commit(d("3"), {}); // before hosts: every host's
    const blobs = () => [...g.gcState().blobs.values()];
    throwsClass(() => decideReleaseHost({ namespace: NS, host: "" }, blobs()), "InvalidArgument", /^host: /);
    const dec = decideReleaseHost({ namespace: NS, host: "B" }, blobs());
    assert.deepEqual(dec.event, { namespace: NS, topic: "/gc/content", typeName: TYPE.ContentCollect, payload: { digests: [d("1"), d("2")], host: "B" } });
    g.apply(dec.event);
    assert.deepEqual(g.get<BlobRecord>(keys.blob(NS, d("1")))!.hosts, ["A"]);
    assert.equal(g.get(keys.blob(NS, d("2"))), undefined);
    assert.ok(g.get(keys.blob(NS, d("3"))));
    assert.deepEqual(decideReleaseHost({ namespace: NS, host: "B" }, blobs()), { result: { digests: [], more: false } });
    // Room for two digests (73 bytes each on the wire) besides the envelope and the host: 2, 1.
    for (let i = 4; i <= 6; i++) g.commit(d(String(i)), {}, undefined, "C");
    const maxEventBytes = 1024 + 3 + 2 * 73;
    const rounds: number[] = [];
    for (let more = true; more; ) {
      const r = decideReleaseHost({ namespace: NS, host: "C", maxEventBytes }, blobs());
      g.apply(r.event);
      rounds.push(r.result.digests.length);
      more = r.result.more;
    }
    assert.deepEqual(rounds, [2, 1]);
    assert.deepEqual(blobs().filter((b) => b.hosts?.includes("C")), []);
  });

  test("a collection larger than one event takes goes in several, each decided on what the one before left, until nothing is left", () => {
    const g = new Given();
    const many = Array.from({ length: 50 }, (_, i) => "sha256:" + i.toString(16).padStart(64, "0"));
    for (const x of many) g.commit(x);
    // Room for 20 digests (73 bytes each on the wire) besides the envelope's 1,024.
    const maxEventBytes = 1024 + 20 * 73;
    const rounds: number[] = [];
    for (;;) {
      const dec = decideCollectContent({ namespace: NS, now: NOW, maxEventBytes }, g.gcState());
      if (!dec.event) break;
      rounds.push(dec.result.digests.length);
      g.apply(dec.event);
      assert.equal(dec.result.more, g.gcState().blobs.size > 0);
    }
    assert.deepEqual(rounds, [20, 20, 10]);
    assert.equal(g.gcState().blobs.size, 0);
  });

  test("an expired lease keeps nothing; a gc.flat lease keeps its blobs but not what they refer to", () => {
    const g = new Given();
    g.apply(decideCreateLease({ namespace: NS, id: "old", labels: { "containerd.io/gc.expire": "2020-01-01T00:00:00Z" }, now: T0 }, undefined).event);
    g.apply(decideCreateLease({ namespace: NS, id: "flat", labels: { "containerd.io/gc.flat": "true" }, now: T0 }, undefined).event);
    g.commit(d("1"), {}, "old");
    g.commit(d("3"));
    g.commit(d("2"), manifestLabels(d("3")), "flat");
    assert.deepEqual(unreferencedContent(g.gcState(), NOW), [d("1"), d("3")]);
    assert.ok(gcMark(g.gcState(), NOW).has(`content\u0000${d("2")}`));
  });

  test("containers' gc.ref labels are roots; a reference added before the collect is decided is respected", () => {
    const g = new Given();
    g.commit(d("1"));
    g.commit(d("2"));
    g.state.set(keys.container(NS, "c1"), { id: "c1", labels: { "containerd.io/gc.ref.content.spec": d("1") }, snapshotter: "", snapshot_key: "" });
    assert.deepEqual(unreferencedContent(g.gcState(), NOW), [d("2")]);
    // Between a pre-mark and the command, d2 got a gc.root label: the command marks again.
    g.state.set(keys.blob(NS, d("2")), { ...g.get<BlobRecord>(keys.blob(NS, d("2")))!, labels: { "containerd.io/gc.root": "now" } });
    assert.deepEqual(decideCollectContent({ namespace: NS, now: NOW }, g.gcState()).event, undefined);
  });

  test("ContentCollect deletes only the listed blob keys of its namespace", () => {
    const g = new Given();
    g.commit(d("1"));
    g.commit(d("2"));
    g.apply({ namespace: "other", topic: "/content/commit", typeName: TYPE.ContentCommit, payload: { digest: d("1"), size: 1, labels: {} } });
    const changes = g.apply({ namespace: NS, topic: "/gc/content", typeName: TYPE.ContentCollect, payload: { digests: [d("1")] } });
    assert.deepEqual(changes, [[keys.blob(NS, d("1")), undefined]]);
    assert.ok(g.get(keys.blob("other", d("1"))));
    assert.ok(g.get(keys.blob(NS, d("2"))));
  });
});

describe("ingests and leases", () => {
  const DAY = 24 * 3600_000;
  const given = () => {
    const g = new Given();
    g.apply(decideCreateLease({ namespace: NS, id: "pull", labels: {}, now: T0 }, undefined).event);
    g.apply(decideCreateLease({ namespace: NS, id: "old", labels: { "containerd.io/gc.expire": "2020-01-01T00:00:00Z" }, now: T0 }, undefined).event);
    g.apply(decideCreateLease({ namespace: NS, id: "holder", labels: {}, now: T0 }, undefined).event);
    g.apply(decideAddLeaseResource({ namespace: NS, id: "holder", resource: { type: "ingests", id: "named" } }, g.lease("holder")).event!);
    g.apply(decideAddLeaseResource({ namespace: NS, id: "old", resource: { type: "ingests", id: "named-by-expired" } }, g.lease("old")).event!);
    const live = (key: string) => {
      const [ns, id] = key.split("\u0000");
      const l = ns === NS ? g.lease(id!) : undefined;
      return l !== undefined && !isLeaseExpired(l, NOW);
    };
    return { leases: { has: live }, refs: ingestRefsHeld([[NS, g.gcState().leases]], NOW) };
  };

  test("ingestRefsHeld: the ingest refs live leases name; an expired lease's do not count", () => {
    assert.deepEqual([...given().refs], [`${NS}\u0000named`]);
  });

  /** An ingest as GC sees it; `expires`: opened without a lease at least once. */
  const ingest = (ref: string, leases: string[], idleMs: number, expires = leases.length === 0, namespace: string | undefined = NS) => ({ namespace, ref, leases, expires, idleMs });

  test("an ingest written under a live lease is kept however idle; only ever leased, it goes once its leases are gone (deleted, expired)", () => {
    const h = given();
    assert.equal(ingestCollectable(ingest("layer-1", ["pull"], 2 * DAY), h, DAY), false);
    assert.equal(ingestCollectable(ingest("layer-1", ["deleted", "pull"], 2 * DAY), h, DAY), false);
    assert.equal(ingestCollectable(ingest("layer-1", ["deleted"], 0), h, DAY), true);
    assert.equal(ingestCollectable(ingest("layer-1", ["old"], 0), h, DAY), true);
    assert.equal(ingestCollectable(ingest("layer-1", [], 0), h, DAY), false, "opened without a lease: it expires instead");
    assert.equal(ingestCollectable(ingest("layer-1", [], 0, false), h, DAY), true, "its lease let go of it (DeleteResource)");
    assert.equal(ingestCollectable(ingest("layer-1", ["pull"], 0, false, "other-ns"), h, DAY), true, "leases are per namespace");
  });

  test("also opened without a lease, it outlives its leases until idle past the limit; a named one is kept; a nameless one goes by idle time", () => {
    const h = given();
    assert.equal(ingestCollectable(ingest("mixed", ["deleted"], DAY - 1, true), h, DAY), false);
    assert.equal(ingestCollectable(ingest("mixed", ["deleted"], DAY, true), h, DAY), true);
    assert.equal(ingestCollectable(ingest("named", [], 2 * DAY), h, DAY), false);
    assert.equal(ingestCollectable(ingest("named", ["deleted"], 2 * DAY, false), h, DAY), false);
    assert.equal(ingestCollectable(ingest("user-ref", [], DAY - 1), h, DAY), false);
    assert.equal(ingestCollectable(ingest("user-ref", [], DAY), h, DAY), true);
    assert.equal(ingestCollectable({ namespace: undefined, ref: undefined, leases: [], expires: true, idleMs: DAY - 1 }, h, DAY), false);
    assert.equal(ingestCollectable({ namespace: undefined, ref: undefined, leases: [], expires: true, idleMs: DAY }, h, DAY), true);
  });
});
