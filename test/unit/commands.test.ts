// Given/when/then specifications of the write side: pure decide functions, folded with
// evolve, no server involved.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { decideCreateNamespace, decideDeleteNamespace, decideUpdateNamespace, namespaceHandlers } from "../../src/commands/namespaces.js";
import { decideCreateImage, decideDeleteImage, decideUpdateImage } from "../../src/commands/images.js";
import { decideCreateContainer, decideDeleteContainer, decideUpdateContainer, type ContainerInput } from "../../src/commands/containers.js";
import { keys, TYPE, type ImageRecord, type ContainerRecord, type NamespaceRecord, type BlobRecord } from "../../src/projections/views.js";
import { decideCommitContent, decideDeleteContent, decideUpdateContent } from "../../src/commands/content.js";
import { throwsClass } from "../helpers/errors.js";
import { Given, T0 } from "../helpers/given.js";

const T1 = { seconds: 1_700_000_100, nanos: 5 };
const DIGEST = "sha256:" + "a".repeat(64);
const DIGEST2 = "sha256:" + "b".repeat(64);
/** A message exactly `text`. */
const exactly = (text: string) => new RegExp(`^${text.replace(/[.*+?^$()|[\]{}\\]/g, "\\$&")}$`);
const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: DIGEST, size: 100, annotations: {} };

describe("namespaces", () => {
  test("create: emits /namespaces/create under the caller's namespace with name and labels", () => {
    const d = decideCreateNamespace({ caller: "default", name: "foo", labels: { a: "1" } }, undefined);
    assert.deepEqual(d.event, { namespace: "default", topic: "/namespaces/create", typeName: TYPE.NamespaceCreate, payload: { name: "foo", labels: { a: "1" } } });
  });

  test("given foo exists, create foo is AlreadyExists", () => {
    const g = new Given();
    g.apply(decideCreateNamespace({ caller: "default", name: "foo", labels: {} }, undefined).event);
    throwsClass(() => decideCreateNamespace({ caller: "default", name: "foo", labels: {} }, g.get(keys.namespace("foo"))), "AlreadyExists", /namespace "foo"/);
  });

  test("invalid identifiers and oversized labels are InvalidArgument", () => {
    for (const name of ["", "-a", "a..b", "A b", "x".repeat(77), "a/b"]) {
      throwsClass(() => decideCreateNamespace({ caller: "default", name, labels: {} }, undefined), "InvalidArgument");
    }
    throwsClass(() => decideCreateNamespace({ caller: "default", name: "ok", labels: { k: "v".repeat(4096) } }, undefined), "InvalidArgument");
  });

  test("refusals are in containerd's store's words (labels as namespace.Labels), a bad name led by its field (containerd's gives the identifier's error alone)", () => {
    const MUST_MATCH = String.raw`must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument`;
    throwsClass(() => decideCreateNamespace({ caller: "default", name: "Bad!", labels: {} }, undefined), "InvalidArgument", exactly(`namespace: identifier "Bad!" ${MUST_MATCH}`));
    const big = { k: "v".repeat(4096) };
    const tooBig = exactly("namespace.Labels: label key and value greater than maximum size (4096 bytes), key: k: invalid argument");
    throwsClass(() => decideCreateNamespace({ caller: "default", name: "ok", labels: big }, undefined), "InvalidArgument", tooBig);
    throwsClass(() => decideUpdateNamespace({ caller: "default", name: "ok", labels: big, paths: ["labels.k"] }, undefined), "InvalidArgument", tooBig);
    // containerd's SetLabel checks no name (an update makes the namespace: 'ctr namespaces
    // label Bad! k=v' makes one no later call can delete); ck refuses it, as it refuses a create.
    throwsClass(() => decideUpdateNamespace({ caller: "default", name: "Bad!", labels: { k: "v" }, paths: ["labels.k"] }, undefined), "InvalidArgument", exactly(`namespace: identifier "Bad!" ${MUST_MATCH}`));
  });

  test("update with labels.<k> sets one key; empty value removes it; other paths are refused", () => {
    const g = new Given();
    g.apply(decideCreateNamespace({ caller: "default", name: "foo", labels: { a: "1", b: "2" } }, undefined).event);
    let d = decideUpdateNamespace({ caller: "default", name: "foo", labels: { c: "3" }, paths: ["labels.c"] }, g.get(keys.namespace("foo")));
    g.apply(d.event);
    assert.deepEqual(g.get<NamespaceRecord>(keys.namespace("foo"))!.labels, { a: "1", b: "2", c: "3" });
    // The event says what was asked, as containerd's does; the result rides in ck_labels.
    assert.deepEqual(d.event!.payload, { name: "foo", labels: { c: "3" }, ck_labels: { labels: { a: "1", b: "2", c: "3" } } });
    d = decideUpdateNamespace({ caller: "default", name: "foo", labels: { a: "" }, paths: ["labels.a"] }, g.get(keys.namespace("foo")));
    g.apply(d.event);
    assert.deepEqual(g.get<NamespaceRecord>(keys.namespace("foo"))!.labels, { b: "2", c: "3" });
    assert.deepEqual(d.event!.payload.labels, { a: "" });
    throwsClass(() => decideUpdateNamespace({ caller: "default", name: "foo", labels: {}, paths: ["name"] }, g.get(keys.namespace("foo"))), "InvalidArgument", /cannot update "name"/);
    throwsClass(() => decideUpdateNamespace({ caller: "default", name: "foo", labels: {}, paths: ["labels"] }, g.get(keys.namespace("foo"))), "InvalidArgument", /cannot update "labels"/);
    // Only the labels the mask writes are validated (containerd validates the result).
    assert.deepEqual(decideUpdateNamespace({ caller: "default", name: "foo", labels: { e: "5", ["k".repeat(5000)]: "y" }, paths: ["labels.e"] }, g.get(keys.namespace("foo"))).result.labels.e, "5");
    throwsClass(() => decideUpdateNamespace({ caller: "default", name: "foo", labels: { ["k".repeat(5000)]: "y" }, paths: [] }, g.get(keys.namespace("foo"))), "InvalidArgument", /greater than maximum size/);
    // A path naming a label the request lacks removes it, even one named like an Object member.
    d = decideUpdateNamespace({ caller: "default", name: "foo", labels: {}, paths: ["labels.constructor", "labels.toString", "labels.b"] }, g.get(keys.namespace("foo")));
    g.apply(d.event);
    assert.deepEqual(g.get<NamespaceRecord>(keys.namespace("foo"))!.labels, { c: "3" });
    // As containerd's store: an update of a namespace that does not exist creates it.
    d = decideUpdateNamespace({ caller: "default", name: "fresh", labels: { k: "v", gone: "" }, paths: ["labels.k", "labels.gone"] }, undefined);
    assert.equal(d.event!.topic, "/namespaces/update");
    g.apply(d.event);
    assert.deepEqual(g.get<NamespaceRecord>(keys.namespace("fresh")), { name: "fresh", labels: { k: "v" } });
  });

  test("an update logged before ck_labels (its labels the result) folds as it did", () => {
    const g = new Given();
    g.apply({ namespace: "default", topic: "/namespaces/update", typeName: TYPE.NamespaceUpdate, payload: { name: "old", labels: { a: "1", b: "2" } } });
    assert.deepEqual(g.get<NamespaceRecord>(keys.namespace("old"))!.labels, { a: "1", b: "2" });
    // One with the extension takes it, even when it holds no labels.
    g.apply({ namespace: "default", topic: "/namespaces/update", typeName: TYPE.NamespaceUpdate, payload: { name: "old", labels: { a: "" }, ck_labels: { labels: {} } } });
    assert.deepEqual(g.get<NamespaceRecord>(keys.namespace("old"))!.labels, {});
  });

  test("delete: NotFound when missing, FailedPrecondition naming what remains, else /namespaces/delete under the deleted namespace", () => {
    throwsClass(() => decideDeleteNamespace({ name: "foo" }, undefined, []), "NotFound");
    const rec = { name: "foo", labels: {} };
    throwsClass(() => decideDeleteNamespace({ name: "foo" }, rec, ["images", "containers"]), "FailedPrecondition", /must be empty, but it still has images, containers/);
    const d = decideDeleteNamespace({ name: "foo" }, rec, []);
    assert.equal(d.event!.namespace, "foo");
    assert.equal(d.event!.topic, "/namespaces/delete");
  });
});

describe("images", () => {
  test("create then evolve: the record holds target and timestamps; the namespace appears implicitly", () => {
    const g = new Given();
    const d = decideCreateImage({ namespace: "ns1", image: { name: "docker.io/library/a:1", labels: { x: "y" }, target }, now: T0 }, undefined);
    assert.equal(d.event!.topic, "/images/create");
    assert.equal(d.event!.typeName, TYPE.ImageCreate);
    g.apply(d.event);
    const rec = g.get<ImageRecord>(keys.image("ns1", "docker.io/library/a:1"))!;
    assert.deepEqual(rec.target, target);
    assert.deepEqual(rec.created_at, T0);
    assert.deepEqual(g.get(keys.namespace("ns1")), { name: "ns1", labels: {} });
  });

  test("given an image, create again is AlreadyExists; bad targets are InvalidArgument", () => {
    const g = new Given();
    g.apply(decideCreateImage({ namespace: "n", image: { name: "a", labels: {}, target }, now: T0 }, undefined).event);
    throwsClass(() => decideCreateImage({ namespace: "n", image: { name: "a", labels: {}, target }, now: T0 }, g.get(keys.image("n", "a"))), "AlreadyExists", /image "a"/);
    throwsClass(() => decideCreateImage({ namespace: "n", image: { name: "", labels: {}, target }, now: T0 }, undefined), "InvalidArgument");
    throwsClass(() => decideCreateImage({ namespace: "n", image: { name: "b", labels: {}, target: { ...target, digest: "sha256:xyz" } }, now: T0 }, undefined), "InvalidArgument", /digest/i);
    throwsClass(() => decideCreateImage({ namespace: "n", image: { name: "b", labels: {}, target: { ...target, media_type: "" } }, now: T0 }, undefined), "InvalidArgument");
    throwsClass(() => decideCreateImage({ namespace: "n", image: { name: "b", labels: {}, target: { ...target, size: 0 } }, now: T0 }, undefined), "InvalidArgument");
  });

  test("update labels.<k> does not validate an empty target from the request (ctr images label)", () => {
    const g = new Given();
    g.apply(decideCreateImage({ namespace: "n", image: { name: "a", labels: {}, target }, now: T0 }, undefined).event);
    const empty = { media_type: "", digest: "", size: 0, annotations: {} };
    const d = decideUpdateImage({ namespace: "n", image: { name: "a", labels: { k: "v" }, target: empty }, paths: ["labels.k"], now: T1 }, g.get(keys.image("n", "a")));
    g.apply(d.event);
    const rec = g.get<ImageRecord>(keys.image("n", "a"))!;
    assert.deepEqual(rec.labels, { k: "v" });
    assert.deepEqual(rec.target, target);
    assert.deepEqual(rec.created_at, T0);
    assert.deepEqual(rec.updated_at, T1);
    // Paths naming labels the request lacks, named like Object members: removed (absent here), no error.
    const d2 = decideUpdateImage({ namespace: "n", image: { name: "a", labels: {}, target: empty }, paths: ["labels.toString", "labels.constructor"], now: T1 }, g.get(keys.image("n", "a")));
    g.apply(d2.event);
    assert.deepEqual(g.get<ImageRecord>(keys.image("n", "a"))!.labels, { k: "v" });
  });

  test("update target replaces it; unknown mask paths are InvalidArgument; missing image NotFound", () => {
    const g = new Given();
    g.apply(decideCreateImage({ namespace: "n", image: { name: "a", labels: {}, target }, now: T0 }, undefined).event);
    const t2 = { ...target, digest: DIGEST2 };
    g.apply(decideUpdateImage({ namespace: "n", image: { name: "a", labels: {}, target: t2 }, paths: ["target"], now: T1 }, g.get(keys.image("n", "a"))).event);
    assert.equal(g.get<ImageRecord>(keys.image("n", "a"))!.target.digest, DIGEST2);
    throwsClass(() => decideUpdateImage({ namespace: "n", image: { name: "a", labels: {}, target }, paths: ["name"], now: T1 }, g.get(keys.image("n", "a"))), "InvalidArgument", /cannot update "name" field on image "a"/);
    throwsClass(() => decideUpdateImage({ namespace: "n", image: { name: "zz", labels: {}, target }, paths: [], now: T1 }, undefined), "NotFound");
  });

  test("delete removes the record; deleting a missing image is NotFound", () => {
    const g = new Given();
    g.apply(decideCreateImage({ namespace: "n", image: { name: "a", labels: {}, target }, now: T0 }, undefined).event);
    g.apply(decideDeleteImage({ namespace: "n", name: "a" }, g.get(keys.image("n", "a"))).event);
    assert.equal(g.get(keys.image("n", "a")), undefined);
    throwsClass(() => decideDeleteImage({ namespace: "n", name: "a" }, undefined), "NotFound");
  });
});

describe("containers", () => {
  const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from("{}") };
  const base = (): ContainerInput => ({
    id: "c1",
    labels: {},
    image: "docker.io/library/a:1",
    runtime: { name: "io.containerd.runc.v2", options: null },
    spec,
    snapshotter: "overlayfs",
    snapshot_key: "c1",
    extensions: {},
  });

  test("create, then update labels and spec under a mask, then delete", () => {
    const g = new Given();
    g.apply(decideCreateContainer({ namespace: "n", container: base(), now: T0 }, undefined).event);
    const spec2 = { type_url: spec.type_url, value: Buffer.from('{"a":1}') };
    const d = decideUpdateContainer({ namespace: "n", container: { ...base(), labels: { l: "1" }, spec: spec2 }, paths: ["labels.l", "spec"], now: T1 }, g.get(keys.container("n", "c1")));
    g.apply(d.event);
    const rec = g.get<ContainerRecord>(keys.container("n", "c1"))!;
    assert.deepEqual(rec.labels, { l: "1" });
    assert.equal(Buffer.from(rec.spec!.value).toString(), '{"a":1}');
    assert.deepEqual(rec.created_at, T0);
    g.apply(decideDeleteContainer({ namespace: "n", id: "c1" }, rec).event);
    assert.equal(g.get(keys.container("n", "c1")), undefined);
  });

  test("validation: id, runtime, spec, snapshotter with key, immutable fields, unknown paths", () => {
    throwsClass(() => decideCreateContainer({ namespace: "n", container: { ...base(), id: "bad id" }, now: T0 }, undefined), "InvalidArgument");
    throwsClass(() => decideCreateContainer({ namespace: "n", container: { ...base(), runtime: { name: "", options: null } }, now: T0 }, undefined), "InvalidArgument", /Runtime.Name/);
    throwsClass(() => decideCreateContainer({ namespace: "n", container: { ...base(), spec: null }, now: T0 }, undefined), "InvalidArgument", /Spec/);
    throwsClass(() => decideCreateContainer({ namespace: "n", container: { ...base(), snapshotter: "" }, now: T0 }, undefined), "InvalidArgument", /Snapshotter/);
    const g = new Given();
    g.apply(decideCreateContainer({ namespace: "n", container: base(), now: T0 }, undefined).event);
    const cur = g.get<ContainerRecord>(keys.container("n", "c1"));
    throwsClass(() => decideCreateContainer({ namespace: "n", container: base(), now: T0 }, cur), "AlreadyExists");
    throwsClass(() => decideUpdateContainer({ namespace: "n", container: { ...base(), runtime: { name: "other", options: null } }, paths: [], now: T1 }, cur), "InvalidArgument", /immutable/);
    throwsClass(() => decideUpdateContainer({ namespace: "n", container: base(), paths: ["runtime"], now: T1 }, cur), "InvalidArgument", /cannot update "runtime"/);
    throwsClass(() => decideDeleteContainer({ namespace: "n", id: "nope" }, undefined), "NotFound");
  });

  test("validation's refusals are led as containerd's store leads them: create container failed validation, update failed validation; labels as containers.Labels", () => {
    const big = { k: "v".repeat(4096) };
    const labels = "containers.Labels: label key and value greater than maximum size (4096 bytes), key: k: invalid argument";
    const at = (lead: string, rest: string) => exactly(`${lead}: ${rest}`);
    throwsClass(() => decideCreateContainer({ namespace: "n", container: { ...base(), labels: big }, now: T0 }, undefined), "InvalidArgument", at("create container failed validation", labels));
    throwsClass(
      () => decideCreateContainer({ namespace: "n", container: { ...base(), id: "bad id!" }, now: T0 }, undefined),
      "InvalidArgument",
      at("create container failed validation", String.raw`container.ID: identifier "bad id!" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument`),
    );
    throwsClass(() => decideCreateContainer({ namespace: "n", container: { ...base(), spec: null }, now: T0 }, undefined), "InvalidArgument", at("create container failed validation", "container.Spec must be set: invalid argument"));
    const g = new Given();
    g.apply(decideCreateContainer({ namespace: "n", container: base(), now: T0 }, undefined).event);
    const cur = g.get<ContainerRecord>(keys.container("n", "c1"));
    throwsClass(() => decideUpdateContainer({ namespace: "n", container: { ...base(), labels: big }, paths: ["labels.k"], now: T1 }, cur), "InvalidArgument", at("update failed validation", labels));
    // What the mask checks itself comes before, unled, as in containerd's store.
    throwsClass(() => decideUpdateContainer({ namespace: "n", container: base(), paths: ["runtime"], now: T1 }, cur), "InvalidArgument", /^cannot update "runtime"/);
  });
});

describe("evolve", () => {
  test("is deterministic: label order in the request does not change the record", () => {
    const a = new Given();
    const b = new Given();
    a.apply(decideCreateNamespace({ caller: "d", name: "x", labels: { a: "1", b: "2" } }, undefined).event);
    b.apply(decideCreateNamespace({ caller: "d", name: "x", labels: { b: "2", a: "1" } }, undefined).event);
    assert.equal(JSON.stringify(a.get(keys.namespace("x"))), JSON.stringify(b.get(keys.namespace("x"))));
  });
});

describe("content metadata", () => {
  test("commit makes a blob visible in one namespace; committing it again there is AlreadyExists; another namespace is independent", () => {
    const g = new Given();
    g.apply(decideCommitContent({ namespace: "a", digest: DIGEST, size: 4, labels: { k: "v" } }, undefined).event);
    const rec = g.get<BlobRecord>(keys.blob("a", DIGEST))!;
    assert.equal(rec.size, 4);
    assert.deepEqual(rec.labels, { k: "v" });
    assert.deepEqual(rec.created_at, T0);
    throwsClass(() => decideCommitContent({ namespace: "a", digest: DIGEST, size: 4, labels: {} }, rec), "AlreadyExists");
    assert.equal(g.get(keys.blob("b", DIGEST)), undefined);
    g.apply(decideCommitContent({ namespace: "b", digest: DIGEST, size: 4, labels: {} }, undefined).event);
    assert.ok(g.get(keys.blob("b", DIGEST)));
  });

  test("labels update under a mask; bad digests, unknown paths and missing blobs are refused", () => {
    const g = new Given();
    g.apply(decideCommitContent({ namespace: "a", digest: DIGEST, size: 4, labels: { k: "v" } }, undefined).event);
    g.apply(decideUpdateContent({ namespace: "a", digest: DIGEST, labels: { "containerd.io/gc.ref.content.l.0": DIGEST2, k: "" }, paths: ["labels.containerd.io/gc.ref.content.l.0", "labels.k"], now: T1 }, g.get(keys.blob("a", DIGEST))).event);
    // The answer carries the update's time, as the stored record does.
    assert.deepEqual(g.get<BlobRecord>(keys.blob("a", DIGEST))!.updated_at, T1);
    assert.deepEqual(g.get<BlobRecord>(keys.blob("a", DIGEST))!.labels, { "containerd.io/gc.ref.content.l.0": DIGEST2 });
    throwsClass(() => decideCommitContent({ namespace: "a", digest: "sha256:abc", size: 1, labels: {} }, undefined), "InvalidArgument", /digest/);
    throwsClass(() => decideUpdateContent({ namespace: "a", digest: DIGEST, labels: {}, paths: ["size"], now: T1 }, g.get(keys.blob("a", DIGEST))), "InvalidArgument", /cannot update "size"/);
    throwsClass(() => decideUpdateContent({ namespace: "a", digest: DIGEST2, labels: {}, paths: [], now: T1 }, undefined), "NotFound");
    g.apply(decideDeleteContent({ namespace: "a", digest: DIGEST }, g.get(keys.blob("a", DIGEST))).event);
    assert.equal(g.get(keys.blob("a", DIGEST)), undefined);
    throwsClass(() => decideDeleteContent({ namespace: "a", digest: DIGEST }, undefined), "NotFound");
  });

  test("update validates the labels its mask writes, not others the request carries (containerd validates the updated info)", () => {
    const g = new Given();
    g.apply(decideCommitContent({ namespace: "a", digest: DIGEST, size: 4, labels: { k: "v" } }, undefined).event);
    const big = { huge: "v".repeat(5000), keep: "x" };
    // Only labels.keep is named: the oversized label in the request is not applied, nor checked.
    const d = decideUpdateContent({ namespace: "a", digest: DIGEST, labels: big, paths: ["labels.keep"], now: T1 }, g.get(keys.blob("a", DIGEST)));
    assert.deepEqual(d.result.labels, { k: "v", keep: "x" });
    // Named (one key, the whole map, or no mask at all): refused, naming the field.
    for (const paths of [["labels.huge"], ["labels"], []]) {
      throwsClass(() => decideUpdateContent({ namespace: "a", digest: DIGEST, labels: big, paths, now: T1 }, g.get(keys.blob("a", DIGEST))), "InvalidArgument", /^info\.Labels: label key and value greater than maximum size \(4096 bytes\), key: huge: invalid argument$/);
    }
    // A named key too long to be a label is refused even when the update would remove it.
    const longKey = "k".repeat(5000);
    throwsClass(() => decideUpdateContent({ namespace: "a", digest: DIGEST, labels: {}, paths: [`labels.${longKey}`], now: T1 }, g.get(keys.blob("a", DIGEST))), "InvalidArgument", /label key and value greater than maximum size/);
  });

  test("a namespace holding blobs cannot be deleted", () => {
    throwsClass(() => decideDeleteNamespace({ name: "a" }, { name: "a", labels: {} }, ["blobs"]), "FailedPrecondition", /still has blobs/);
  });

  test("hosts: a blob is held by the hosts that committed it; each sees, updates and deletes its own, the record goes with the last", () => {
    const g = new Given();
    const blob = () => g.get<BlobRecord>(keys.blob("a", DIGEST));
    g.apply(decideCommitContent({ namespace: "a", digest: DIGEST, size: 4, labels: { k: "v" }, host: "A" }, undefined).event);
    assert.deepEqual(blob()!.hosts, ["A"]);
    throwsClass(() => decideCommitContent({ namespace: "a", digest: DIGEST, size: 4, labels: {}, host: "A" }, blob()), "AlreadyExists");
    // Host B has not got the bytes: not found there, and its own commit goes through.
    throwsClass(() => decideUpdateContent({ namespace: "a", digest: DIGEST, labels: {}, paths: [], now: T1, host: "B" }, blob()), "NotFound", /content digest/);
    throwsClass(() => decideDeleteContent({ namespace: "a", digest: DIGEST, host: "B" }, blob()), "NotFound", /content digest/);
    const d = decideCommitContent({ namespace: "a", digest: DIGEST, size: 4, labels: { b: "1" }, host: "B" }, blob());
    assert.equal(d.event!.payload.host, "B");
    g.apply(d.event);
    assert.deepEqual(blob()!.hosts, ["A", "B"]);
    assert.deepEqual(blob()!.labels, { b: "1", k: "v" }, "B's labels set over A's");
    assert.deepEqual(d.result.hosts, blob()!.hosts, "the decision answers as the record is stored");
    // A delete on A leaves B's; B's delete removes the record.
    const del = decideDeleteContent({ namespace: "a", digest: DIGEST, host: "A" }, blob());
    assert.equal(del.event!.payload.ck_host, "A");
    g.apply(del.event);
    assert.deepEqual(blob()!.hosts, ["B"]);
    throwsClass(() => decideDeleteContent({ namespace: "a", digest: DIGEST, host: "A" }, blob()), "NotFound");
    g.apply(decideDeleteContent({ namespace: "a", digest: DIGEST, host: "B" }, blob()).event);
    assert.equal(blob(), undefined);
  });

  test("hosts: a record committed without a host (before hosts were recorded) is every host's, and goes with any host's delete", () => {
    const g = new Given();
    const blob = () => g.get<BlobRecord>(keys.blob("a", DIGEST));
    g.apply(decideCommitContent({ namespace: "a", digest: DIGEST, size: 4, labels: {} }, undefined).event);
    assert.equal("hosts" in blob()!, false, "stored as before: the same bytes as an older ckd's record");
    throwsClass(() => decideCommitContent({ namespace: "a", digest: DIGEST, size: 4, labels: {}, host: "A" }, blob()), "AlreadyExists");
    decideUpdateContent({ namespace: "a", digest: DIGEST, labels: {}, paths: [], now: T1, host: "B" }, blob());
    g.apply(decideDeleteContent({ namespace: "a", digest: DIGEST, host: "B" }, blob()).event);
    assert.equal(blob(), undefined);
  });

  test("hosts: a namespace whose blobs other hosts hold says so when its delete is refused", async () => {
    const g = new Given();
    g.apply(decideCreateNamespace({ caller: "", name: "a", labels: {} }, undefined).event);
    g.apply(decideCommitContent({ namespace: "a", digest: DIGEST, size: 4, labels: {}, host: "A" }, undefined).event);
    await assert.rejects(namespaceHandlers.delete({ name: "a", host: "B" })(g), /must be empty, but it still has blobs \(held in other hosts' content stores only\)/);
    await assert.rejects(namespaceHandlers.delete({ name: "a", host: "A" })(g), /must be empty, but it still has blobs: failed precondition$/);
  });
});
