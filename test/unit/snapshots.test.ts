// Given/when/then specifications of the snapshots aggregate and its garbage collection: pure
// decide functions folded with evolve, no server and no filesystem involved.
import { describe, test } from "node:test";
import { createHash } from "node:crypto";
import assert from "node:assert/strict";
import {
  chainIdOf,
  checkParentStands,
  decideCommitSnapshot,
  decidePrepareSnapshot,
  decideRemoveSnapshot,
  decideUpdateSnapshot,
  parentIds,
  snapshotHandlers,
  type PrepareSnapshot,
} from "../../src/commands/snapshots.js";
import { decideCollectSnapshots, gcMark, leavesFirst, loadGcState, unreferencedSnapshots } from "../../src/commands/gc.js";
import { decideCreateLease } from "../../src/commands/leases.js";
import { keys, type LeaseRecord, type SnapshotRecord } from "../../src/projections/views.js";
import { Given as BaseGiven, T0 } from "../helpers/given.js";
import { throwsClass } from "../helpers/errors.js";
import { chainIds } from "../../src/cli/unpack.js";
import { checkMountsUnder } from "../../src/snapshots/store.js";
import { readOnly } from "../../src/diff/diff.js";
import { loadProtos } from "../../src/protos/protos.js";
import { encodeEnvelope, ORIGIN_COMMAND, ORIGIN_HEADER, toLoggedEvent, type EventDraft } from "../../src/emitter/envelope.js";
import { subjectFor } from "../../src/emitter/subjects.js";

const NS = "ns1";
const SN = "overlayfs";

class Given extends BaseGiven {
  snap(key: string, sn = SN): SnapshotRecord | undefined {
    return this.get(keys.snapshot(NS, sn, key));
  }
}

const prep = (key: string, parent = "", over: Partial<PrepareSnapshot> = {}): PrepareSnapshot => ({
  namespace: NS,
  snapshotter: SN,
  key,
  parent,
  kind: "Active",
  id: `id-${key.replace(/[^A-Za-z0-9]/g, "_")}`,
  labels: {},
  now: T0,
  ...over,
});
const commit = (key: string, name: string, labels: Record<string, string> = {}) => ({ namespace: NS, snapshotter: SN, key, name, labels, now: T0 });

/** A committed chain base <- mid, with an active `top` on mid. */
function chain(): Given {
  const g = new Given();
  g.run(snapshotHandlers.prepare(prep("extract-1 base")));
  g.run(snapshotHandlers.commit(commit("extract-1 base", "base")));
  g.run(snapshotHandlers.prepare(prep("extract-2 mid", "base")));
  g.run(snapshotHandlers.commit(commit("extract-2 mid", "mid")));
  g.run(snapshotHandlers.prepare(prep("top", "mid")));
  return g;
}

describe("snapshots: prepare, view, commit", () => {
  test("given nothing, when Prepare with a key holding spaces and slashes, then one /snapshot/prepare event records kind, id and labels", () => {
    const d = decidePrepareSnapshot(prep("extract-1 sha256:x/y", "", { labels: { a: "b", empty: "" } }), undefined, undefined, undefined, false);
    assert.equal(d.event?.topic, "/snapshot/prepare");
    assert.deepEqual(d.event?.payload, { key: "extract-1 sha256:x/y", parent: "", ck_snapshotter: SN, ck_kind: "Active", ck_id: "id-extract_1_sha256_x_y", ck_labels: { labels: { a: "b" } } });
    const g = new Given();
    g.apply(d.event);
    assert.equal(g.snap("extract-1 sha256:x/y")?.kind, "Active");
    assert.deepEqual(g.get(keys.snapshotId(SN, "id-extract_1_sha256_x_y")), { owners: [{ namespace: NS, key: "extract-1 sha256:x/y" }] });
  });

  test("given a committed chain, when Commit of the active key, then the key is gone and the name is Committed with the same id and parent", () => {
    const g = chain();
    assert.equal(g.snap("extract-2 mid"), undefined);
    const mid = g.snap("mid")!;
    assert.equal(mid.kind, "Committed");
    assert.equal(mid.parent, "base");
    assert.equal(mid.id, "id-extract_2_mid");
    assert.deepEqual(g.get(keys.snapshotId(SN, mid.id)), { owners: [{ namespace: NS, key: "mid" }] });
    assert.deepEqual(parentIds((k) => g.snap(k), g.snap("top")!), ["id-extract_2_mid", "id-extract_1_base"]);
  });

  test("given a parent removed and committed again under its name while a child was made on the old one, when the child is decided, then Aborted, no event; on the parent it was built on, recorded", () => {
    const g = chain();
    const mid = g.snap("mid")!;
    throwsClass(() => g.run(snapshotHandlers.prepare(prep("child", "mid", { parentId: "id-some-older-mid" }))), "Aborted", /parent snapshot "mid" was replaced/);
    assert.equal(g.snap("child"), undefined);
    g.run(snapshotHandlers.prepare(prep("child", "mid", { parentId: mid.id })));
    assert.equal(g.snap("child")?.parent, "mid");
  });

  test("when View on a committed parent, then the kind is View", () => {
    const g = chain();
    g.run(snapshotHandlers.prepare(prep("v", "mid", { kind: "View" })));
    assert.equal(g.snap("v")?.kind, "View");
  });

  test("when View, then ck's own /snapshot/view event (containerd publishes none for a View), not a /snapshot/prepare", () => {
    const g = chain();
    const d = snapshotHandlers.prepare(prep("v", "mid", { kind: "View", labels: { a: "b" } }))(g);
    assert.equal(d.event?.topic, "/snapshot/view");
    assert.equal(d.event?.typeName, "ck.events.SnapshotView");
    assert.equal(subjectFor(NS, d.event!.topic), "containerd.io.ns1.snapshot.view", "not on containerd's snapshot.prepare subject");
    assert.deepEqual(d.event?.payload, { key: "v", parent: "mid", snapshotter: SN, id: "id-v", labels: { a: "b" } });
  });

  test("a View logged as ck's SnapshotView and one logged before it (/snapshot/prepare, ck_kind View) fold, from their stored bytes, to the same records", () => {
    const protos = loadProtos();
    // Through the log's bytes, as the projector reads them: encoded, then decoded.
    const stored = (draft: EventDraft, seq: number) =>
      toLoggedEvent(protos, { seq, subject: subjectFor(draft.namespace, draft.topic), data: encodeEnvelope(protos, draft, T0), headers: { [ORIGIN_HEADER]: ORIGIN_COMMAND }, time: new Date(), pending: 0 })!;
    const withLease = () => {
      const g = chain();
      g.apply(decideCreateLease({ namespace: NS, id: "L", labels: {}, now: T0 }, undefined).event);
      return g;
    };
    const now = withLease();
    const view = snapshotHandlers.prepare(prep("v", "mid", { kind: "View", labels: { a: "b" }, lease: "L" }))(now).event!;
    now.fold(stored(view, 100));
    const before = withLease();
    const oldForm: EventDraft = {
      namespace: NS,
      topic: "/snapshot/prepare",
      typeName: "containerd.events.SnapshotPrepare",
      payload: { key: "v", parent: "mid", ck_snapshotter: SN, ck_kind: "View", ck_id: "id-v", ck_labels: { labels: { a: "b" } }, ck_lease: "L" },
    };
    before.fold(stored(oldForm, 100));
    assert.equal(now.snap("v")?.kind, "View");
    assert.deepEqual(now.snap("v"), { ...before.snap("v")! });
    assert.deepEqual([...now.state.entries()].sort(), [...before.state.entries()].sort(), "the same records, lease resource and id owners");
    assert.ok(now.get(keys.leaseResource(NS, "L", { id: "v", type: `snapshots/${SN}` })), "the view joined the lease");
    // A Prepare still folds to an Active snapshot.
    now.fold(stored(snapshotHandlers.prepare(prep("a", "mid"))(now).event!, 101));
    assert.equal(now.snap("a")?.kind, "Active");
  });

  test("after the disk work on a parent failed: gone, NotFound as containerd words it; replaced, Aborted; standing as it was, the disk error stands", () => {
    const g = chain();
    const mid = g.snap("mid")!;
    const cause = new Error("ENOENT: no such file or directory, stat '/x/snapshots/1/fs'");
    throwsClass(() => checkParentStands({ parent: "mid", parentId: mid.id }, undefined, cause), "NotFound", /^parent snapshot mid does not exist: not found$/);
    throwsClass(() => checkParentStands({ parent: "mid", parentId: "id-older" }, mid, cause), "Aborted", /parent snapshot "mid" was replaced/);
    assert.doesNotThrow(() => checkParentStands({ parent: "mid", parentId: mid.id }, mid, cause));
  });

  test("bad input: empty key, NUL, bad snapshotter name, missing or uncommitted parent, taken key or id, missing lease: errors, no event", () => {
    const g = chain();
    throwsClass(() => decidePrepareSnapshot(prep(""), undefined, undefined, undefined, false), "InvalidArgument", /key must not be empty/);
    throwsClass(() => decidePrepareSnapshot(prep("a\u0000b"), undefined, undefined, undefined, false), "InvalidArgument");
    throwsClass(() => decidePrepareSnapshot(prep("k", "", { snapshotter: "Bad/Name" }), undefined, undefined, undefined, false), "InvalidArgument");
    throwsClass(() => g.run(snapshotHandlers.prepare(prep("k", "missing"))), "NotFound", /parent snapshot missing does not exist/);
    throwsClass(() => g.run(snapshotHandlers.prepare(prep("k", "top"))), "InvalidArgument", /not a committed snapshot/);
    throwsClass(() => g.run(snapshotHandlers.prepare(prep("top", "mid"))), "AlreadyExists");
    throwsClass(() => g.run(snapshotHandlers.prepare(prep("other", "", { id: "id-top" }))), "AlreadyExists", /snapshot id/);
    throwsClass(() => g.run(snapshotHandlers.prepare(prep("k", "", { id: "../escape" }))), "InvalidArgument");
    throwsClass(() => g.run(snapshotHandlers.prepare(prep("k", "", { lease: "nope" }))), "NotFound", /lease/);
    throwsClass(() => g.run(snapshotHandlers.commit(commit("mid", "x"))), "FailedPrecondition", /not active/);
    throwsClass(() => g.run(snapshotHandlers.commit(commit("top", "base"))), "AlreadyExists");
    throwsClass(() => g.run(snapshotHandlers.commit(commit("nope", "x"))), "NotFound");
    throwsClass(() => g.run(snapshotHandlers.commit(commit("top", ""))), "InvalidArgument");
    // Labels too big, named as containerd's snapshot store names them (`ctr snapshots label` prints it).
    const tooBig = /^info\.Labels: label key and value greater than maximum size \(4096 bytes\), key: kkkkkkkkkk: invalid argument$/;
    const big = { ["k".repeat(5000)]: "y" };
    throwsClass(() => g.run(snapshotHandlers.prepare(prep("k", "", { labels: big }))), "InvalidArgument", tooBig);
    throwsClass(() => g.run(snapshotHandlers.commit(commit("top", "x", big))), "InvalidArgument", tooBig);
    assert.equal(g.seq, 5, "no event was written");
  });

  test("under a lease, Prepare adds the key to it; Commit moves it to the name and Remove takes the key out (as containerd's metadata store)", () => {
    const g = new Given();
    g.apply(decideCreateLease({ namespace: NS, id: "L", labels: {}, now: T0 }, undefined).event);
    const prefix = keys.leaseResourcesPrefix(NS, "L");
    const resources = () => [...g.state.entries()].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => (a < b ? -1 : 1)).map(([, v]) => v);
    g.run(snapshotHandlers.prepare(prep("extract x", "", { lease: "L" })));
    assert.deepEqual(resources(), [{ id: "extract x", type: `snapshots/${SN}` }]);
    g.run(snapshotHandlers.commit({ ...commit("extract x", "x"), lease: "L" }));
    assert.ok(g.get<LeaseRecord>(keys.lease(NS, "L")));
    assert.deepEqual(resources(), [{ id: "x", type: `snapshots/${SN}` }]);
    g.run(snapshotHandlers.prepare(prep("work", "x", { lease: "L" })));
    g.run(snapshotHandlers.remove({ namespace: NS, snapshotter: SN, key: "work", lease: "L" }));
    assert.deepEqual(resources(), [{ id: "x", type: `snapshots/${SN}` }]);
  });

  test("a commit event written before ck recorded the lease's move (no ck_lease_moves) leaves the key in the lease, as it did", () => {
    const g = new Given();
    g.apply(decideCreateLease({ namespace: NS, id: "L", labels: {}, now: T0 }, undefined).event);
    g.run(snapshotHandlers.prepare(prep("extract y", "", { lease: "L" })));
    const d = decideCommitSnapshot({ ...commit("extract y", "y"), lease: "L" }, g.snap("extract y"), undefined, g.get<LeaseRecord>(keys.lease(NS, "L")));
    delete (d.event!.payload as Record<string, unknown>).ck_lease_moves;
    g.apply(d.event);
    const prefix = keys.leaseResourcesPrefix(NS, "L");
    assert.deepEqual([...g.state.keys()].filter((k) => k.startsWith(prefix)).length, 2);
  });
});

describe("snapshots: remove and update", () => {
  test("given a parent with a child, when Remove of the parent, then FailedPrecondition and nothing written; leaves first succeeds", () => {
    const g = chain();
    throwsClass(() => g.run(snapshotHandlers.remove({ namespace: NS, snapshotter: SN, key: "mid" })), "FailedPrecondition", /cannot remove snapshot with child/);
    throwsClass(() => g.run(snapshotHandlers.remove({ namespace: NS, snapshotter: SN, key: "nope" })), "NotFound");
    const removed = g.run(snapshotHandlers.remove({ namespace: NS, snapshotter: SN, key: "top" }));
    assert.equal(removed.id, "id-top");
    assert.equal(g.get(keys.snapshotId(SN, "id-top")), undefined);
    g.run(snapshotHandlers.remove({ namespace: NS, snapshotter: SN, key: "mid" }));
    g.run(snapshotHandlers.remove({ namespace: NS, snapshotter: SN, key: "base" }));
    assert.deepEqual(g.scan(keys.snapshotsPrefix(NS)), []);
    assert.deepEqual(g.scan(keys.snapshotIdsPrefix(SN)), []);
  });

  test("children are per snapshotter: a native snapshot does not hold an overlayfs one", () => {
    const d = decideRemoveSnapshot({ namespace: NS, snapshotter: SN, key: "k" }, { ...chain().snap("base")!, key: "k" }, []);
    assert.equal(d.event?.topic, "/snapshot/remove");
  });

  test("Update with a field mask sets and removes single labels; other paths are InvalidArgument", () => {
    const g = chain();
    g.run(snapshotHandlers.update({ namespace: NS, snapshotter: SN, key: "mid", labels: { a: "1", b: "2" }, paths: [], now: T0 }));
    g.run(snapshotHandlers.update({ namespace: NS, snapshotter: SN, key: "mid", labels: { c: "3" }, paths: ["labels.c", "labels.a"], now: T0 }));
    assert.deepEqual(g.snap("mid")!.labels, { b: "2", c: "3" });
    throwsClass(() => decideUpdateSnapshot({ namespace: NS, snapshotter: SN, key: "mid", labels: {}, paths: ["parent"], now: T0 }, g.snap("mid")), "InvalidArgument", /cannot update "parent"/);
    throwsClass(() => decideUpdateSnapshot({ namespace: NS, snapshotter: SN, key: "x", labels: {}, paths: [], now: T0 }, undefined), "NotFound");
    // Only the labels the mask writes are validated, as containerd validates the result.
    const big = { ["k".repeat(5000)]: "y" };
    assert.deepEqual(decideUpdateSnapshot({ namespace: NS, snapshotter: SN, key: "mid", labels: { c: "3", ...big }, paths: ["labels.c"], now: T0 }, g.snap("mid")).result.labels.c, "3");
    throwsClass(() => decideUpdateSnapshot({ namespace: NS, snapshotter: SN, key: "mid", labels: big, paths: ["labels"], now: T0 }, g.snap("mid")), "InvalidArgument", /^info\.Labels: label key and value greater/);
  });

  test("decideCommitSnapshot keeps the active snapshot's id and takes the commit's labels", () => {
    const g = chain();
    const d = decideCommitSnapshot(commit("top", "T", { "containerd.io/gc.root": "now" }), g.snap("top"), undefined, undefined);
    assert.deepEqual(d.event?.payload, { key: "top", name: "T", ck_snapshotter: SN, ck_labels: { labels: { "containerd.io/gc.root": "now" } }, ck_id: "id-top" });
  });

  test("decideCommitSnapshot: a name taken is AlreadyExists before a missing active key is NotFound, as containerd's order", () => {
    const g = chain();
    throwsClass(() => decideCommitSnapshot(commit("gone", "mid"), undefined, g.snap("mid"), undefined), "AlreadyExists", /snapshot "mid"/);
    throwsClass(() => decideCommitSnapshot(commit("gone", "free"), undefined, undefined, undefined), "NotFound", /snapshot gone does not exist/);
  });
});

describe("snapshots: garbage collection", () => {
  const NOW = new Date("2030-01-01T00:00:00Z");

  test("a collection larger than one event takes: several events, children always before their parents, until nothing is left", () => {
    const g = chain(); // base <- mid <- top, all unreferenced
    const rounds: string[][] = [];
    for (;;) {
      // Room for one snapshot's key and id at a time besides the envelope.
      const d = decideCollectSnapshots({ namespace: NS, snapshotter: SN, now: NOW, maxEventBytes: 1024 + 30 }, loadGcState(NS, (p) => g.scan(p)));
      if (!d.event) break;
      rounds.push((d.event.payload as { keys: string[] }).keys);
      g.apply(d.event);
    }
    assert.deepEqual(rounds, [["top"], ["mid"], ["base"]]);
    assert.equal(g.snap("base"), undefined);
  });

  test("unreferenced snapshots are collected children first; a gc.root keeps a snapshot and its parents", () => {
    const g = chain();
    const all = unreferencedSnapshots(loadGcState(NS, (p) => g.scan(p)), NOW).get(SN)!;
    assert.deepEqual(all.map((r) => r.key), ["top", "mid", "base"]);
    g.run(snapshotHandlers.update({ namespace: NS, snapshotter: SN, key: "mid", labels: { "containerd.io/gc.root": "x" }, paths: [], now: T0 }));
    const d = decideCollectSnapshots({ namespace: NS, snapshotter: SN, now: NOW }, loadGcState(NS, (p) => g.scan(p)));
    assert.deepEqual(d.event?.payload, { snapshotter: SN, keys: ["top"], ids: ["id-top"] });
    assert.equal(d.result.more, false);
    g.apply(d.event);
    assert.ok(g.snap("mid") && g.snap("base"));
    assert.equal(g.snap("top"), undefined);
    assert.equal(g.get(keys.snapshotId(SN, "id-top")), undefined);
  });

  test("content labelled gc.ref.snapshot.<sn> keeps the chain; a snapshot's gc.ref.content keeps content; leases and containers are roots", () => {
    const g = chain();
    const digest = "sha256:" + "c".repeat(64);
    g.state.set(keys.blob(NS, digest), { digest, size: 1, labels: { "containerd.io/gc.root": "1", [`containerd.io/gc.ref.snapshot.${SN}`]: "mid" }, created_at: T0, updated_at: T0 });
    let left = unreferencedSnapshots(loadGcState(NS, (p) => g.scan(p)), NOW).get(SN)!;
    assert.deepEqual(left.map((r) => r.key), ["top"]);
    g.state.set(keys.container(NS, "c1"), { id: "c1", labels: {}, snapshotter: SN, snapshot_key: "top" });
    assert.equal(unreferencedSnapshots(loadGcState(NS, (p) => g.scan(p)), NOW).get(SN), undefined);
    g.state.delete(keys.container(NS, "c1"));
    g.apply(decideCreateLease({ namespace: NS, id: "L", labels: {}, now: T0 }, undefined).event);
    g.state.set(keys.leaseResource(NS, "L", { id: "top", type: `snapshots/${SN}` }), { id: "top", type: `snapshots/${SN}` });
    assert.equal(unreferencedSnapshots(loadGcState(NS, (p) => g.scan(p)), NOW).get(SN), undefined);
    left = leavesFirst([g.snap("base")!, g.snap("top")!, g.snap("mid")!]);
    assert.deepEqual(left.map((r) => r.key), ["top", "mid", "base"]);
  });

  test("a gc.flat lease holding an active snapshot keeps its parents (flat: not what their labels name), as containerd's resourceSnapshotFlat", () => {
    const g = chain();
    const digest = "sha256:" + "d".repeat(64);
    g.state.set(keys.blob(NS, digest), { digest, size: 1, labels: {}, created_at: T0, updated_at: T0 });
    // mid names the blob by a gc.ref label.
    g.state.set(keys.snapshot(NS, SN, "mid"), { ...g.snap("mid")!, labels: { "containerd.io/gc.ref.content.x": digest } });
    g.apply(decideCreateLease({ namespace: NS, id: "F", labels: { "containerd.io/gc.flat": "yes" }, now: T0 }, undefined).event);
    g.state.set(keys.leaseResource(NS, "F", { id: "top", type: `snapshots/${SN}` }), { id: "top", type: `snapshots/${SN}` });
    const state = loadGcState(NS, (p) => g.scan(p));
    assert.equal(unreferencedSnapshots(state, NOW).get(SN), undefined, "top, mid and base all kept");
    assert.ok(!gcMark(state, NOW).has(`content\u0000${digest}`), "a flat chain's labels are not followed");
  });
});

describe("unpack helpers", () => {
  test("chain IDs follow the OCI rule: the first is the diff_id, then sha256 of `<parent> <diff_id>`", () => {
    const a = "sha256:" + "a".repeat(64);
    const b = "sha256:" + "b".repeat(64);
    const [c0, c1] = chainIds([a, b]);
    assert.equal(c0, a);
    assert.equal(c1, "sha256:" + createHash("sha256").update(`${a} ${b}`).digest("hex"));
  });

  test("a tree is read through its mounts read-only: an active overlay's upper becomes its top lower, without a work directory", () => {
    assert.deepEqual(readOnly({ type: "overlay", source: "overlay", options: ["index=off", "workdir=/s/1/work", "upperdir=/s/1/fs", "lowerdir=/s/2/fs:/s/3/fs"] }), {
      type: "overlay",
      source: "overlay",
      options: ["index=off", "lowerdir=/s/1/fs:/s/2/fs:/s/3/fs", "ro"],
    });
    assert.deepEqual(readOnly({ type: "bind", source: "/s/1/fs", options: ["rw", "rbind"] }), { type: "bind", source: "/s/1/fs", options: ["rbind", "ro"] });
  });

  test("Diff mounts must be this daemon's snapshot directories", () => {
    const roots = ["/var/lib/ck/snapshots/native"];
    checkMountsUnder([{ type: "bind", source: "/var/lib/ck/snapshots/native/snapshots/x/fs", options: ["rw", "rbind"] }], roots);
    throwsClass(() => checkMountsUnder([{ type: "bind", source: "/", options: ["rw", "rbind"] }], roots), "InvalidArgument");
    throwsClass(() => checkMountsUnder([{ type: "bind", source: "/var/lib/ck/snapshots/native/../../etc", options: ["rbind"] }], roots), "InvalidArgument");
    throwsClass(() => checkMountsUnder([{ type: "overlay", source: "overlay", options: ["upperdir=/etc", "workdir=/var/lib/ck/snapshots/native/w"] }], roots), "InvalidArgument");
    throwsClass(() => checkMountsUnder([{ type: "tmpfs", source: "tmpfs", options: [] }], roots), "InvalidArgument");
  });
});

describe("snapshots: ckd's verified unpack and sharing across namespaces", () => {
  const L0 = "sha256:" + "a".repeat(64);
  const L1 = "sha256:" + "b".repeat(64);
  const D0 = "sha256:" + "c".repeat(64);
  const D1 = "sha256:" + "d".repeat(64);
  const C0 = chainIdOf("", D0);
  const C1 = chainIdOf(C0, D1);
  const unpack = (ns: string, name: string, parent: string, id: string, share: boolean, v?: { layer: string; parent_id: string; diff_id: string }) =>
    snapshotHandlers.unpack({ namespace: ns, snapshotter: SN, name, parent, id, share, verified: v, labels: {}, now: T0 });
  const rec = (g: Given, ns: string, key: string) => g.get<SnapshotRecord>(keys.snapshot(ns, SN, key));

  function twoNamespaces(): Given {
    const g = new Given();
    g.run(unpack("A", C0, "", "id0", false, { layer: L0, parent_id: "", diff_id: D0 }));
    g.run(unpack("A", C1, C0, "id1", false, { layer: L1, parent_id: "id0", diff_id: D1 }));
    g.run(unpack("B", C0, "", "id0", true, { layer: L0, parent_id: "", diff_id: D0 }));
    g.run(unpack("B", C1, C0, "id1", true, { layer: L1, parent_id: "id0", diff_id: D1 }));
    return g;
  }

  test("a direct commit is one /snapshot/commit event with an empty key; a share refers to the same id; the id has both owners", () => {
    const d = snapshotHandlers.unpack({ namespace: "A", snapshotter: SN, name: C0, parent: "", id: "id0", share: false, verified: { layer: L0, parent_id: "", diff_id: D0 }, labels: {}, now: T0 })(new Given());
    assert.deepEqual(d.event?.payload, { key: "", name: C0, ck_snapshotter: SN, ck_labels: { labels: {} }, ck_id: "id0", ck_parent: "", ck_verified: { layer: L0, parent_id: "", diff_id: D0 } });
    const g = twoNamespaces();
    assert.equal(rec(g, "A", C1)?.id, "id1");
    assert.equal(rec(g, "B", C1)?.id, "id1");
    assert.equal(rec(g, "B", C1)?.verified, true);
    assert.equal(rec(g, "B", C1)?.parent, C0);
    assert.deepEqual(g.get(keys.snapshotId(SN, "id1")), { owners: [{ namespace: "A", key: C1 }, { namespace: "B", key: C1 }], verified: { chain: C1, parent_id: "id0", layer: L1 } });
    assert.deepEqual(g.scan(keys.snapshotChainPrefix(SN, C1)).map(([, v]) => v), [{ id: "id1", parent_id: "id0", layer: L1 }]);
  });

  test("remove in one namespace drops only its owner; the last owner takes the id record and the chain index entry", () => {
    const g = twoNamespaces();
    g.run(snapshotHandlers.remove({ namespace: "A", snapshotter: SN, key: C1 }));
    g.run(snapshotHandlers.remove({ namespace: "A", snapshotter: SN, key: C0 }));
    assert.deepEqual(g.get(keys.snapshotId(SN, "id1")), { owners: [{ namespace: "B", key: C1 }], verified: { chain: C1, parent_id: "id0", layer: L1 } });
    assert.equal(g.scan(keys.snapshotChainPrefix(SN, C0)).length, 1);
    const collect = decideCollectSnapshots({ namespace: "B", snapshotter: SN, now: new Date("2030-01-01T00:00:00Z") }, loadGcState("B", (p) => g.scan(p)));
    g.apply(collect.event);
    assert.deepEqual(g.scan(keys.snapshotIdsPrefix(SN)), []);
    assert.deepEqual(g.scan("snapchain\u0000"), []);
  });

  test("a share must match a verified directory: same chain, layer and parent directory, still owned; a fresh id must be unowned", () => {
    const g = twoNamespaces();
    throwsClass(() => g.run(unpack("C", C0, "", "id0", true, { layer: L1, parent_id: "", diff_id: D0 })), "FailedPrecondition", /not a verified/);
    throwsClass(() => g.run(unpack("C", C0, "", "id9", true, { layer: L0, parent_id: "", diff_id: D0 })), "FailedPrecondition", /not a verified/);
    throwsClass(() => g.run(unpack("C", C0, "", "id0", false, { layer: L0, parent_id: "", diff_id: D0 })), "AlreadyExists", /snapshot id/);
    throwsClass(() => g.run(unpack("C", C0, "", "id0", true)), "FailedPrecondition", /not a verified/);
    throwsClass(() => g.run(unpack("C", C1, "", "idx", false, { layer: L1, parent_id: "", diff_id: D1 })), "InvalidArgument", /chain ID/);
    throwsClass(() => g.run(unpack("A", C0, "", "idx", false, { layer: L0, parent_id: "", diff_id: D0 })), "AlreadyExists");
    // A client-committed parent is not verified: nothing on it is.
    g.run(snapshotHandlers.prepare({ ...prep("extract x"), namespace: "C", id: "idc" }));
    g.run(snapshotHandlers.commit({ ...commit("extract x", C0), namespace: "C" }));
    assert.equal(rec(g, "C", C0)?.verified, undefined);
    throwsClass(() => g.run(unpack("C", C1, C0, "id1", true, { layer: L1, parent_id: "idc", diff_id: D1 })), "FailedPrecondition");
    throwsClass(() => g.run(unpack("C", C1, C0, "idy", false, { layer: L1, parent_id: "idc", diff_id: D1 })), "FailedPrecondition", /not the verified/);
    const plain = g.run(unpack("C", C1, C0, "idy", false));
    assert.equal(plain.verified, undefined);
    assert.equal(g.scan(keys.snapshotChainPrefix(SN, C1)).length, 1, "an unverified direct commit is not indexed");
  });
});
