// Differential: the same calls, in the same order, against a throwaway containerd 1.6 and
// against ckd, each answer compared (timestamps aside; errors by errdefs class). Where ck
// answers otherwise on purpose, the case names both answers and why, so that a change on
// either side is seen. Covers the metadata services a containerd client drives: namespaces,
// images, containers, leases, content's metadata calls, events' validation; and ctr's own
// listings of the same state.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { execFile, spawn } from "node:child_process";
import { gunzipSync } from "node:zlib";
import tar from "tar-stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestDaemon, runCommand } from "../helpers/daemon.js";
import { containerdMissing, startContainerd, type TestContainerd } from "../helpers/containerd.js";
import { buildImage, startRegistry } from "../helpers/registry.js";
import { archiveListing, blob, dockerArchive, ociArchive, platformImage, sha256 } from "../helpers/archives.js";
import { ApiClient } from "../../src/cli/client.js";
import { freePort } from "../../src/eventstore/nats-server.js";

const missing = containerdMissing();
const CTR = "/usr/bin/ctr";
const D = "sha256:" + "a".repeat(64);
const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: D, size: 100 };
const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from("{}") };
const box = { id: "c1", labels: { a: "1" }, image: "docker.io/library/x:1", runtime: { name: "io.containerd.runc.v2" }, spec, snapshotter: "overlayfs", snapshot_key: "c1" };

/** An answer, comparable across the two daemons. */
type Outcome = { ok: unknown } | { err: string; msg: string };

const TIMES = new Set(["created_at", "updated_at", "started_at", "exited_at"]);
/** Timestamps become whether they are set; bytes become hex; keys sorted. */
function normal(v: unknown): unknown {
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return `hex:${Buffer.from(v).toString("hex")}`;
  if (Array.isArray(v)) return v.map(normal);
  if (v && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k];
      out[k] = TIMES.has(k) ? (x ? "<set>" : x) : normal(x);
    }
    return out;
  }
  return v;
}

async function outcome(p: Promise<unknown>): Promise<Outcome> {
  try {
    return { ok: normal(await p) };
  } catch (err) {
    const e = err as { errorClass?: string; message?: string };
    return { err: e.errorClass ?? String(err), msg: e.message ?? "" };
  }
}

const same = (a: Outcome, b: Outcome) => ("ok" in a && "ok" in b ? isDeepStrictEqual(a.ok, b.ok) : "err" in a && "err" in b && a.err === b.err);
const show = (o: Outcome) => JSON.stringify(o).slice(0, 600);

interface Case {
  name: string;
  call: (c: ApiClient) => Promise<unknown>;
  /**
   * Where ck answers otherwise on purpose: each side's answer (a class, or a check of the
   * value) and why.
   */
  differs?: { containerd: string | ((v: any) => boolean); ck: string | ((v: any) => boolean); why: string };
}

const ns = (namespace: string) => ({ namespace });
const cases: Case[] = [];
const c = (name: string, call: Case["call"], differs?: Case["differs"]) => cases.push({ name, call, differs });

// ---- namespaces (containerd publishes their events in the caller's namespace: ctr sends one)
const N = ns("default");
c("namespace create with labels", (a) => a.call("namespaces", "Create", { namespace: { name: "n1", labels: { a: "1" } } }, N));
c("namespace create again: AlreadyExists", (a) => a.call("namespaces", "Create", { namespace: { name: "n1" } }, N));
for (const [what, name] of [
  ["empty", ""],
  ["two dots in a row", "a..b"],
  ["77 characters", "a".repeat(77)],
  ["a leading dash", "-ab"],
  ["a slash", "a/b"],
] as const) {
  c(`namespace create, name with ${what}: InvalidArgument`, (a) => a.call("namespaces", "Create", { namespace: { name } }, N));
}
c("namespace create, upper case and 76 characters allowed", async (a) => [
  await a.call("namespaces", "Create", { namespace: { name: "N1" } }, N),
  await a.call("namespaces", "Create", { namespace: { name: "a".repeat(76) } }, N),
  await a.call("namespaces", "Create", { namespace: { name: "a_b-c.d" } }, N),
]);
c("namespace create, label of 4096 bytes: InvalidArgument", (a) => a.call("namespaces", "Create", { namespace: { name: "n2", labels: { k: "v".repeat(4096) } } }, N));
c("namespace create, label of 4095 bytes", (a) => a.call("namespaces", "Create", { namespace: { name: "n3", labels: { k: "v".repeat(4095) } } }, N));
c("namespace create, empty label key", (a) => a.call("namespaces", "Create", { namespace: { name: "n4", labels: { "": "v" } } }, N), {
  containerd: "Unknown",
  ck: "InvalidArgument",
  why: "containerd's labels.Validate lets an empty key through and its bbolt store fails the write (\"key required\"); ck refuses it as bad input",
});
c("namespace get", (a) => a.call("namespaces", "Get", { name: "n1" }, N));
c("namespace get, missing: NotFound", (a) => a.call("namespaces", "Get", { name: "nope" }, N));
c("namespace get, a name that is no identifier: answered with no labels", (a) => a.call("namespaces", "Get", { name: "Bad!" }, N));
c("namespace get, empty name: answered with no labels", (a) => a.call("namespaces", "Get", { name: "" }, N));
c("namespace delete, a name that is no identifier: NotFound", (a) => a.call("namespaces", "Delete", { name: "Bad!" }, N));
const nsUpdate = (namespace: object, paths?: string[]) => (a: ApiClient) => a.call("namespaces", "Update", { namespace, ...(paths ? { update_mask: { paths } } : {}) }, N);
const emptyNamespace = (v: any) => v?.namespace?.name === "";
const filledNamespace = (v: any) => typeof v?.namespace?.name === "string" && v.namespace.name !== "";
const updateAnswer = { containerd: emptyNamespace, ck: filledNamespace, why: "containerd 1.6's Namespaces.Update answers an empty Namespace; ck answers the updated one" };
c("namespace update labels.b", nsUpdate({ name: "n1", labels: { b: "2" } }, ["labels.b"]), updateAnswer);
c("namespace update, no mask: labels replaced", nsUpdate({ name: "n1", labels: { c: "3" } }), updateAnswer);
c("namespace update, mask labels: InvalidArgument (only labels.<key>)", nsUpdate({ name: "n1", labels: { d: "4" } }, ["labels"]));
c("namespace update labels.d", nsUpdate({ name: "n1", labels: { d: "4" } }, ["labels.d"]), updateAnswer);
c("namespace update, mask name: InvalidArgument", nsUpdate({ name: "n1" }, ["name"]));
c("namespace update labels.d with no value clears it", nsUpdate({ name: "n1", labels: {} }, ["labels.d"]), updateAnswer);
c("namespace update of a missing namespace creates it (as containerd's store does)", nsUpdate({ name: "made-by-update", labels: { u: "1" } }, ["labels.u"]), updateAnswer);
c("namespace get after the updates", (a) => a.call("namespaces", "Get", { name: "n1" }, N));
c("namespace get of the one an update made", (a) => a.call("namespaces", "Get", { name: "made-by-update" }, N));
c("namespace list", (a) => a.call("namespaces", "List", {}, N));
c("namespace list with a filter", (a) => a.call("namespaces", "List", { filter: "labels.c==3" }, N), {
  containerd: (v) => v.namespaces.length > 1,
  ck: (v) => v.namespaces.length === 1 && v.namespaces[0].name === "n1",
  why: "containerd 1.6 ignores ListNamespacesRequest.filter; ck applies it",
});

// ---- images
const I = ns("n1");
const image = (name: string, extra: object = {}) => ({ image: { name, target, ...extra } });
c("image create", (a) => a.call("images", "Create", image("docker.io/library/x:1", { labels: { l: "1" } }), I));
c("image create again: AlreadyExists", (a) => a.call("images", "Create", image("docker.io/library/x:1"), I));
c("image create without a target: InvalidArgument", (a) => a.call("images", "Create", { image: { name: "docker.io/library/y:1" } }, I));
c("image create, malformed digest: InvalidArgument", (a) => a.call("images", "Create", { image: { name: "y:1", target: { ...target, digest: "sha256:abc" } } }, I));
c("image create, no media type: InvalidArgument", (a) => a.call("images", "Create", { image: { name: "y:2", target: { ...target, media_type: "" } } }, I));
c("image create, size 0 allowed", (a) => a.call("images", "Create", { image: { name: "y:3", target: { ...target, size: 0 } } }, I));
c("image create, empty name: InvalidArgument", (a) => a.call("images", "Create", image(""), I));
c("image create, a name that is no reference is allowed", (a) => a.call("images", "Create", image("hello world"), I));
c("image create without a namespace: FailedPrecondition", (a) => a.call("images", "Create", image("z"), ns("")));
c("image create in a namespace that does not exist makes it", async (a) => [await a.call("images", "Create", image("z"), ns("made-by-image")), await a.call("namespaces", "Get", { name: "made-by-image" }, N)]);
c("image create with target annotations", (a) => a.call("images", "Create", { image: { name: "ann", target: { ...target, annotations: { x: "y" } } } }, I));
c("image create, an annotation with no value is not stored", async (a) => [
  await a.call("images", "Create", { image: { name: "ann-empty", target: { ...target, annotations: { e: "", f: "1" } } } }, I),
  await a.call("images", "Get", { name: "ann-empty" }, I),
  (await a.call("images", "List", { filters: ["annotations.e"] }, I)).images ?? [],
]);
c("image create, a label with no value is still checked: InvalidArgument", (a) => a.call("images", "Create", image("big-empty-label", { labels: { ["k".repeat(5000)]: "" } }), I));
c("image create, a label named __proto__", async (a) => {
  const created = await a.call("images", "Create", image("proto", { labels: JSON.parse('{"__proto__":"x"}') }), I);
  await a.call("images", "Delete", { name: "proto" }, I);
  return Object.keys(created.image.labels);
}, {
  containerd: (v) => isDeepStrictEqual(v, ["__proto__"]),
  ck: "InvalidArgument",
  why: "in JavaScript __proto__ names an object's prototype: ck refuses the key rather than lose it without a word",
});
c("image get", (a) => a.call("images", "Get", { name: "docker.io/library/x:1" }, I));
c("image get, missing: NotFound", (a) => a.call("images", "Get", { name: "nope" }, I));
c("image get, empty name: NotFound", (a) => a.call("images", "Get", { name: "" }, I));
c("image delete, empty name: NotFound", (a) => a.call("images", "Delete", { name: "" }, I));
c("image update, missing, with a mask path it does not know: NotFound", (a) => a.call("images", "Update", { image: { name: "nope", labels: { a: "1" } }, update_mask: { paths: ["foo"] } }, I));
c("image update, unmasked: an annotation with no value is not stored", async (a) => [
  await a.call("images", "Update", { image: { name: "ann-empty", target: { ...target, annotations: { g: "", h: "2" } } } }, I),
  await a.call("images", "Update", { image: { name: "ann-empty", target: { ...target, annotations: { i: "", j: "3" } } }, update_mask: { paths: ["target"] } }, I),
]);
const imgUpdate = (img: object, paths?: string[]) => (a: ApiClient) => a.call("images", "Update", { image: { name: "docker.io/library/x:1", ...img }, ...(paths ? { update_mask: { paths } } : {}) }, I);
c("image update labels.m", imgUpdate({ labels: { m: "2" } }, ["labels.m"]));
c("image update target", imgUpdate({ target: { ...target, size: 7 } }, ["target"]));
c("image update target, malformed digest: InvalidArgument", imgUpdate({ target: { ...target, digest: "nope" } }, ["target"]));
c("image update, no mask: all replaced", imgUpdate({ labels: { q: "1" }, target }));
c("image update, no mask and no target: InvalidArgument", imgUpdate({ labels: { q: "1" } }));
c("image update annotations", imgUpdate({ target: { ...target, annotations: { z: "1" } } }, ["annotations"]));
c("image update annotations.z", imgUpdate({ target: { ...target, annotations: { z: "2" } } }, ["annotations.z"]));
c("image update name: InvalidArgument", imgUpdate({}, ["name"]));
c("image update unknown path: InvalidArgument", imgUpdate({}, ["foo"]));
c("image update, missing: NotFound", (a) => a.call("images", "Update", { image: { name: "nope", labels: { a: "1" } }, update_mask: { paths: ["labels.a"] } }, I));
c("image get after the updates", (a) => a.call("images", "Get", { name: "docker.io/library/x:1" }, I));
const names = (v: any) => v.images.map((i: { name: string }) => i.name).sort();
for (const f of [
  "name==docker.io/library/x:1",
  "name~=x",
  "name~=\"x\"",
  "name==\"docker.io/library/x:1\"",
  "name!=ann",
  "labels.l==1",
  "labels.q",
  'labels."q"==1',
  `target.digest==${D}`,
  "target.mediatype==application/vnd.oci.image.manifest.v1+json",
  "labels.q==1,name~=x",
  "annotations.x==y",
  "size==100",
]) {
  c(`image list ${f}`, async (a) => names(await a.call("images", "List", { filters: [f] }, I)));
}
c("image list, two filters (either)", async (a) => names(await a.call("images", "List", { filters: ["name==ann", "labels.q==1"] }, I)));
for (const f of ["name==", "==x", "name=~x", "name~=/x/"]) c(`image list, bad filter ${f}: InvalidArgument`, (a) => a.call("images", "List", { filters: [f] }, I));
c("image list, a regular expression that does not compile", (a) => a.call("images", "List", { filters: ["name~=["] }, I), {
  containerd: (v) => v.images.length === 0,
  ck: "InvalidArgument",
  why: "containerd 1.6 logs the regular expression's error and matches nothing; ck refuses the filter",
});
c("image delete, missing: NotFound", (a) => a.call("images", "Delete", { name: "nope" }, I));
c("image delete", (a) => a.call("images", "Delete", { name: "ann" }, I));
c("image delete, sync", (a) => a.call("images", "Delete", { name: "y:3", sync: true }, I));
c("namespace delete, not empty: FailedPrecondition", (a) => a.call("namespaces", "Delete", { name: "n1" }, N));
c("namespace delete, missing: NotFound", (a) => a.call("namespaces", "Delete", { name: "nope" }, N));

// ---- containers
const ctrCreate = (container: object) => (a: ApiClient) => a.call("containers", "Create", { container }, I);
c("container create", ctrCreate(box));
c("container create again: AlreadyExists", ctrCreate(box));
c("container create without a runtime: InvalidArgument", ctrCreate({ ...box, id: "c2", runtime: undefined }));
c("container create without a spec: InvalidArgument", ctrCreate({ ...box, id: "c3", spec: undefined }));
c("container create, snapshot key without snapshotter: InvalidArgument", ctrCreate({ ...box, id: "c4", snapshotter: "" }));
c("container create, snapshotter without a key allowed", ctrCreate({ ...box, id: "c5", snapshot_key: "" }));
c("container create, bad id: InvalidArgument", ctrCreate({ ...box, id: "C!" }));
c("container create without an image allowed", ctrCreate({ ...box, id: "c6", image: "" }));
c("container create with extensions", ctrCreate({ ...box, id: "c7", extensions: { e: { type_url: "x", value: Buffer.from("1") } } }));
c("container create with a sandbox", ctrCreate({ ...box, id: "c8", sandbox: "s" }));
c("container get", (a) => a.call("containers", "Get", { id: "c1" }, I));
c("container get, missing: NotFound", (a) => a.call("containers", "Get", { id: "nope" }, I));
c("container get, empty id: NotFound", (a) => a.call("containers", "Get", { id: "" }, I));
c("container delete, an id that is no identifier: NotFound", (a) => a.call("containers", "Delete", { id: "C!" }, I));
c("container update, missing, with a mask path it does not know: NotFound", (a) => a.call("containers", "Update", { container: { id: "nope" }, update_mask: { paths: ["foo"] } }, I));
const ctrUpdate = (container: object, paths?: string[]) => (a: ApiClient) => a.call("containers", "Update", { container: { id: "c1", ...container }, ...(paths ? { update_mask: { paths } } : {}) }, I);
c("container update labels.b", ctrUpdate({ labels: { b: "2" } }, ["labels.b"]));
c("container update image", ctrUpdate({ image: "other" }, ["image"]));
c("container update snapshotter: InvalidArgument", ctrUpdate({ snapshotter: "native" }, ["snapshotter"]));
c("container update snapshotkey", ctrUpdate({ snapshot_key: "k2" }, ["snapshotkey"]));
c("container update runtime: InvalidArgument", ctrUpdate({ runtime: { name: "other" } }, ["runtime"]));
c("container update spec", ctrUpdate({ spec: { ...spec, value: Buffer.from('{"a":1}') } }, ["spec"]));
c("container update extensions.e", ctrUpdate({ extensions: { e: { type_url: "x", value: Buffer.from("2") } } }, ["extensions.e"]));
c("container update, no mask: labels, spec, image, key replaced", ctrUpdate({ ...box, labels: { z: "1" } }));
c("container update, no mask, another snapshotter: InvalidArgument", ctrUpdate({ ...box, snapshotter: "native" }));
c("container update, no mask, another runtime: InvalidArgument", ctrUpdate({ ...box, runtime: { name: "other" } }));
c("container update id: InvalidArgument", ctrUpdate({}, ["id"]));
c("container update sandbox: InvalidArgument", ctrUpdate({ sandbox: "x" }, ["sandbox"]));
c("container update, missing: NotFound", (a) => a.call("containers", "Update", { container: { id: "nope", labels: { a: "1" } }, update_mask: { paths: ["labels.a"] } }, I));
const extensionsAre = (keys: string) => (v: any) => Object.keys(v.container.extensions ?? {}).sort().join() === keys;
const keptExtensions = "containerd 1.6's store never removes an extension once written (its Update answers what the mask asked, a later Get shows the old ones too); ck keeps what the mask asked";
c("container get after the updates", (a) => a.call("containers", "Get", { id: "c1" }, I), { containerd: extensionsAre("e"), ck: extensionsAre(""), why: keptExtensions });
c("container update extensions replaces them", (a) => a.call("containers", "Update", { container: { id: "c7", extensions: { f: { type_url: "x", value: Buffer.from("2") } } }, update_mask: { paths: ["extensions"] } }, I));
c("container get after its extensions were replaced", (a) => a.call("containers", "Get", { id: "c7" }, I), { containerd: extensionsAre("e,f"), ck: extensionsAre("f"), why: keptExtensions });
const ids = (v: any) => v.containers.map((x: { id: string }) => x.id).sort();
for (const f of ["id==c1", "image==docker.io/library/x:1", "runtime.name==io.containerd.runc.v2", "labels.z==1", "snapshotter==overlayfs", "labels.z", "id~=c[0-5]", "snapshotkey==c1"]) {
  c(`container list ${f}`, async (a) => ids(await a.call("containers", "List", { filters: [f] }, I)));
}
c("container delete, missing: NotFound", (a) => a.call("containers", "Delete", { id: "nope" }, I));
c("container delete", (a) => a.call("containers", "Delete", { id: "c8" }, I));

// ---- leases
c("lease create", (a) => a.call("leases", "Create", { id: "l1", labels: { a: "1" } }, I));
c("lease create again: AlreadyExists", (a) => a.call("leases", "Create", { id: "l1" }, I));
c("lease create, bad id: InvalidArgument", (a) => a.call("leases", "Create", { id: "L 1" }, I));
c("lease list", (a) => a.call("leases", "List", { filters: [] }, I));
c("lease list id==l1", (a) => a.call("leases", "List", { filters: ["id==l1"] }, I));
c("lease list labels.a==1", (a) => a.call("leases", "List", { filters: ["labels.a==1"] }, I));
const res = (id: string, type: string) => (a: ApiClient) => a.call("leases", "AddResource", { id: "l1", resource: { id, type } }, I);
c("lease add content", res(D, "content"));
c("lease add snapshot", res("k", "snapshots/overlayfs"));
c("lease add ingest", res("ref1", "ingests"));
c("lease add, unknown type: InvalidArgument", res("k", "foo"));
c("lease add content, malformed digest: InvalidArgument", res("k", "content"));
c("lease add, missing lease: NotFound", (a) => a.call("leases", "AddResource", { id: "nope", resource: { id: D, type: "content" } }, I));
c("lease list resources", async (a) => {
  const r = await a.call("leases", "ListResources", { id: "l1" }, I);
  return r.resources.sort((x: { type: string }, y: { type: string }) => x.type.localeCompare(y.type));
});
c("lease list resources, missing lease: NotFound", (a) => a.call("leases", "ListResources", { id: "nope" }, I));
c("lease delete resource", (a) => a.call("leases", "DeleteResource", { id: "l1", resource: { id: D, type: "content" } }, I));
c("lease delete resource again", (a) => a.call("leases", "DeleteResource", { id: "l1", resource: { id: D, type: "content" } }, I));
c("lease delete", (a) => a.call("leases", "Delete", { id: "l1" }, I));
c("lease delete, missing: NotFound", (a) => a.call("leases", "Delete", { id: "l1" }, I));

// ---- content's metadata calls
c("content info, missing: NotFound", (a) => a.call("content", "Info", { digest: D }, I));
c("content info, malformed digest: InvalidArgument", (a) => a.call("content", "Info", { digest: "sha256:zz" }, I));
c("content delete, missing: NotFound", (a) => a.call("content", "Delete", { digest: D }, I));
c("content status, missing: NotFound", (a) => a.call("content", "Status", { ref: "nope" }, I));
c("content list statuses", (a) => a.call("content", "ListStatuses", { filters: [] }, I));
c("content abort, missing: NotFound", (a) => a.call("content", "Abort", { ref: "nope" }, I));
c("content update, missing: NotFound", (a) => a.call("content", "Update", { info: { digest: D, labels: { a: "1" } }, update_mask: { paths: ["labels.a"] } }, I));

// ---- snapshots (overlayfs; each a GC root in both, so that no collection races the calls)
const SN = ns("s1");
const root = { "containerd.io/gc.root": "x" };
const snap = (method: string, req: object) => (a: ApiClient) => a.call("snapshots", method, { snapshotter: "overlayfs", ...req }, SN);
/** Mount paths differ between the daemons' roots: their types and option counts do not. */
const mountShapes = (method: string, req: object) => async (a: ApiClient) => {
  const r = await snap(method, req)(a);
  return (r.mounts ?? []).map((m: { type: string; options?: string[] }) => [m.type, (m.options ?? []).length]);
};
c("snapshot prepare", mountShapes("Prepare", { key: "a", labels: { ...root, x: "1" } }));
c("snapshot prepare again: AlreadyExists", snap("Prepare", { key: "a" }));
c("snapshot prepare, missing parent: NotFound", snap("Prepare", { key: "b", parent: "nope" }));
c("snapshot prepare, unknown snapshotter: InvalidArgument", (a) => a.call("snapshots", "Prepare", { snapshotter: "nope", key: "z" }, SN));
c("snapshot prepare, empty key", snap("Prepare", { key: "" }), {
  containerd: "Unknown",
  ck: "InvalidArgument",
  why: "containerd's bbolt store fails an empty key (\"bucket name required\"); ck refuses it as bad input",
});
c("snapshot stat", snap("Stat", { key: "a" }));
c("snapshot stat, missing: NotFound", snap("Stat", { key: "nope" }));
c("snapshot mounts", mountShapes("Mounts", { key: "a" }));
c("snapshot mounts, missing: NotFound", snap("Mounts", { key: "nope" }));
c("snapshot usage", snap("Usage", { key: "a" }));
c("snapshot usage, missing: NotFound", snap("Usage", { key: "nope" }));
c("snapshot commit", snap("Commit", { key: "a", name: "A", labels: { ...root, y: "2" } }));
c("snapshot commit, committed key gone: NotFound", snap("Commit", { key: "a", name: "A2" }));
c("snapshot stat of the committed one", snap("Stat", { key: "A" }));
c("snapshot prepare on a parent", mountShapes("Prepare", { key: "b", parent: "A", labels: root }));
c("snapshot view on a parent", mountShapes("View", { key: "v", parent: "A", labels: root }));
c("snapshot view without a parent", mountShapes("View", { key: "v2", labels: root }));
c("snapshot usage of a view: none of its own", snap("Usage", { key: "v" }));
c("snapshot commit of a view: FailedPrecondition", snap("Commit", { key: "v", name: "V" }));
c("snapshot commit to a name taken: AlreadyExists", snap("Commit", { key: "b", name: "A" }));
c("snapshot stat after the failed commit", snap("Stat", { key: "b" }));
c("snapshot remove, with a child: FailedPrecondition", snap("Remove", { key: "A" }));
c("snapshot remove, missing: NotFound", snap("Remove", { key: "nope" }));
const snapUpdate = (info: object, paths?: string[]) => snap("Update", { info: { name: "A", ...info }, ...(paths ? { update_mask: { paths } } : {}) });
c("snapshot update labels.z", snapUpdate({ labels: { z: "3" } }, ["labels.z"]));
c("snapshot update labels", snapUpdate({ labels: { ...root, w: "3" } }, ["labels"]));
c("snapshot update, no mask: labels replaced", snapUpdate({ labels: { ...root, q: "3" } }));
for (const path of ["name", "kind", "parent"]) c(`snapshot update ${path}: InvalidArgument`, snapUpdate({ labels: {} }, [path]));
c("snapshot update, missing: NotFound", snap("Update", { info: { name: "nope", labels: { q: "1" } }, update_mask: { paths: ["labels.q"] } }));
const snapList = (filters: string[]) => async (a: ApiClient) => {
  const out: Array<{ name: string }> = [];
  for await (const r of a.stream("snapshots", "List", { snapshotter: "overlayfs", filters }, SN)) out.push(...r.info);
  return normal(out.sort((x, y) => x.name.localeCompare(y.name)));
};
for (const f of [[], ["parent==A"], ["kind==active"], ["kind==view"], ["name~=^[ab]"], ["labels.q"]]) c(`snapshot list ${f.join(" ") || "(all)"}`, snapList(f));
c("snapshot list, bad filter", snapList(["kind=="]), {
  containerd: "Unknown",
  ck: "InvalidArgument",
  why: "containerd 1.6's snapshots List passes the parse error on unconverted; ck answers InvalidArgument",
});
c("snapshot remove of each, children first", async (a) => [await snap("Remove", { key: "b" })(a), await snap("Remove", { key: "v" })(a), await snap("Remove", { key: "v2" })(a), await snap("Remove", { key: "A" })(a)]);
c("snapshot list after the removes", snapList([]));

// ---- events' validation (a Publish without an event is left out: it ends containerd 1.6)
const any = { type_url: "x", value: Buffer.alloc(0) };
c("event publish, topic without a slash: InvalidArgument", (a) => a.call("events", "Publish", { topic: "noslash", event: any }, I));
c("event publish", (a) => a.call("events", "Publish", { topic: "/a/b", event: any }, I));
c("event publish without a namespace: FailedPrecondition", (a) => a.call("events", "Publish", { topic: "/a/b", event: any }, ns("")));
c("event forward without a timestamp: InvalidArgument", (a) => a.call("events", "Forward", { envelope: { namespace: "n1", topic: "/a/b", event: any } }, I));

/**
 * The series of one container on a metrics endpoint (`name{labels}`, labels sorted), with the
 * values of labels that depend on what the process did (blkio's per-device ops) kept, the
 * sample values left out; and containerd_build_info_total's label names.
 */
async function containerSeries(port: number, namespace: string, id: string): Promise<string[]> {
  const text = await (await fetch(`http://127.0.0.1:${port}/v1/metrics`)).text();
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)\{([^}]*)\} \S+$/.exec(line);
    if (!m) continue;
    const labels = (m[2]!.match(/[a-z_]+="(?:[^"\\]|\\.)*"/g) ?? ([] as string[])).sort();
    if (m[1] === "containerd_build_info_total") out.add(`${m[1]}{${labels.map((l) => l.split("=")[0]).join(",")}}`);
    if (!m[1]!.startsWith("container_") || !labels.includes(`container_id="${id}"`) || !labels.includes(`namespace="${namespace}"`)) continue;
    out.add(`${m[1]}{${labels.join(",")}}`);
  }
  return [...out].sort();
}

/**
 * A layer as `ctr snapshots diff` printed it, entry by entry: name, type, mode, owner, size,
 * link target and content digest, after whether it came gzipped. The bytes themselves differ between the daemons (tar header layout, gzip's encoder) and so do
 * the times of what the test wrote; what a layer says does not.
 */
async function tarListing(bytes: Buffer, as: "gzip" | "tar"): Promise<string> {
  const gzipped = bytes[0] === 0x1f && bytes[1] === 0x8b;
  const raw = gzipped ? gunzipSync(bytes) : bytes;
  const ex = tar.extract();
  const rows: string[] = [`${gzipped ? "gzip" : "tar"} (asked: ${as})`];
  const reading = (async () => {
    for await (const e of ex) {
      const h = e.header;
      const body = createHash("sha256");
      for await (const chunk of e) body.update(chunk as Buffer);
      rows.push([h.name, h.type, (h.mode ?? 0).toString(8), `${h.uid}:${h.gid}`, h.size, h.linkname ?? "", h.type === "file" ? body.digest("hex").slice(0, 12) : "", JSON.stringify(h.pax ?? {})].join(" "));
    }
  })();
  ex.end(raw);
  await reading;
  return rows.join("\n") + "\n";
}

/**
 * `ctr content ls` rows: the image's blobs as printed (labels sorted; ages left out), a diff's
 * blob by its labels only (its bytes differ, as tarListing says, so do its digest, size and
 * containerd.io/uncompressed, which is checked against `diffIds`: blob digest to the digest of
 * its bytes uncompressed, from what ctr printed).
 */
function contentListing(out: string, imageBlobs: Set<string>, diffIds: Map<string, string>): string {
  return out
    .split("\n")
    .filter(Boolean)
    .slice(1)
    .map((line) => {
      const [digest, size, , labels] = line.split(/\t+/);
      const sorted = (labels ?? "").split(",").sort().join(",");
      if (imageBlobs.has(digest!)) return `${digest} ${size} ${sorted}`;
      // The uncompressed label must be the digest of the layer ctr printed, ungzipped.
      const uncompressed = (u: string) => (u === diffIds.get(digest!) ? "<the layer's diff_id>" : `<another digest: ${u}>`);
      return `<diff> ${sorted.replace(/(containerd\.io\/uncompressed=)(sha256:[0-9a-f]{64})/, (_, k: string, u: string) => k + uncompressed(u)).replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/, "<time>")}`;
    })
    .sort()
    .join("\n") + "\n";
}

/** `ctr content ls` rows with the age column left out and each row's labels sorted (ctr prints them in Go's random map order). */
const contentRowsOf = (out: string) =>
  out
    .split("\n")
    .filter(Boolean)
    .map((line) => line.split(/\t+/).filter((_, i) => i !== 2).map((f, i) => (i === 2 ? f.split(",").sort().join(",") : f)).join(" "))
    .join("\n") + "\n";

/** ctr's exit code, stdout as bytes and stderr. */
const ctrBytesAt = (address: string, args: string[], namespace = "sx", input?: string) =>
  new Promise<{ code: number; stdout: Buffer; stderr: string }>((resolve, reject) => {
    const p = execFile(CTR, ["--address", address, ...(args[0] === "-n" ? [] : ["--namespace", namespace]), ...args], { encoding: "buffer", timeout: 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (err as { code?: unknown }).code : 0;
      if (typeof code !== "number") reject(err);
      else resolve({ code, stdout, stderr: stderr.toString("utf8") });
    });
    if (input !== undefined) p.stdin?.end(input);
  });

/**
 * Puts an image into a registry's repository over its HTTP API: the blobs, then the manifests
 * by digest, the last of them also under `tag`.
 */
async function pushToRegistry(url: string, repo: string, blobs: Array<{ bytes: Buffer; desc: { digest: string } }>, manifests: Array<{ bytes: Buffer; desc: { digest: string; mediaType: string } }>, tag: string): Promise<void> {
  for (const b of blobs) {
    const started = await fetch(`${url}/v2/${repo}/blobs/uploads/`, { method: "POST" });
    assert.equal(started.status, 202, `upload of ${b.desc.digest}`);
    const at = new URL(started.headers.get("location")!, url);
    at.searchParams.set("digest", b.desc.digest);
    const put = await fetch(at, { method: "PUT", body: new Uint8Array(b.bytes), headers: { "content-type": "application/octet-stream" } });
    assert.equal(put.status, 201, `blob ${b.desc.digest}: ${await put.text()}`);
  }
  for (const [i, m] of manifests.entries()) {
    const ref = i === manifests.length - 1 ? tag : m.desc.digest;
    const put = await fetch(`${url}/v2/${repo}/manifests/${ref}`, { method: "PUT", body: new Uint8Array(m.bytes), headers: { "content-type": m.desc.mediaType } });
    assert.equal(put.status, 201, `manifest ${ref}: ${await put.text()}`);
  }
}

/**
 * ctr's progress display (pull, content fetch, push): the refs it showed, sorted and once each,
 * then its other lines as printed, `done: <duration>` as `done`. How many frames it printed, and
 * each ref's status in them (waiting, downloading, done, exists: whether a frame came before a
 * blob was in), and the running total follow timing; which refs there were does not.
 */
function progressShape(out: string): string {
  const refs = new Set<string>();
  const rest: string[] = [];
  for (const raw of out.split("\n")) {
    const line = raw.replace(/\x1b\[[0-9;]*m/g, "");
    const m = /^(\S+):\s+(resolving|resolved|waiting|downloading|uploading|committing|done|exists)\s+\|/.exec(line);
    if (m) refs.add(m[1]!);
    else if (/^done: \S+\s*$/.test(line)) rest.push("done");
    else if (line && !line.startsWith("elapsed:")) rest.push(line);
  }
  return [...[...refs].sort(), ...rest].join("\n") + "\n";
}

/**
 * ctr's stderr of a command with a progress display, without the lines its display may log as
 * the command ends: it cancels the display's context once done, and a call the display had in
 * flight (Content.Info: "failed to get content info"; ListStatuses: "active check failed")
 * then fails `context canceled` (each seen once from ck, timing: either daemon can).
 */
function progressStderr(err: string): string {
  return err.replace(/^.*level=error msg="(failed to get content info|active check failed)" error="context canceled"\n/gm, "");
}

/** A difference ck keeps on purpose: each side's output for one ctr command, and why. */
interface KnownDifference {
  containerd: string;
  ck: string;
  why: string;
}

/**
 * Each step's output equal from both daemons, or, for a step `known` names (by its arguments
 * joined with spaces), each side's exactly as recorded there. `shown` makes a step readable
 * in a failure (temporary paths and long labels replaced).
 */
function assertSameOrKnown(steps: readonly string[][], ours: readonly string[], theirs: readonly string[], known: ReadonlyMap<string, KnownDifference>, shown: (s: string) => string): void {
  for (const [i, args] of steps.entries()) {
    const what = `ctr ${shown(args.join(" "))}`;
    const k = known.get(args.join(" "));
    if (!k) assert.equal(ours[i], theirs[i], what);
    else {
      assert.equal(theirs[i], k.containerd, `${what} (${k.why}): containerd no longer so`);
      assert.equal(ours[i], k.ck, `${what} (${k.why}): ck no longer so`);
    }
  }
}

/** A mounted tree, entry by entry: path, type, mode, owner, size, link target, content digest (times left out). */
function treeListing(dir: string): string {
  const rows: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(dir, path));
      const type = st.isDirectory() ? "dir" : st.isSymbolicLink() ? "link" : st.isFile() ? "file" : "other";
      const body = st.isFile() ? sha256(readFileSync(join(dir, path))).slice(7, 19) : st.isSymbolicLink() ? readlinkSync(join(dir, path)) : "";
      rows.push([path, type, (st.mode & 0o7777).toString(8), `${st.uid}:${st.gid}`, st.isFile() ? st.size : "", body].join(" "));
      if (st.isDirectory()) walk(path);
    }
  };
  walk("");
  return rows.join("\n") + "\n";
}

describe("ckd against containerd 1.6, call by call", { skip: missing }, () => {
  let ctd: TestContainerd;
  let daemon: TestDaemon;
  let ctdApi: ApiClient;
  let ckApi: ApiClient;
  let ctdMetrics: number;
  let ckMetrics: number;

  before(async () => {
    [ctdMetrics, ckMetrics] = [await freePort(), await freePort()];
    [ctd, daemon] = await Promise.all([startContainerd({ metricsAddress: `127.0.0.1:${ctdMetrics}` }), TestDaemon.start({ extraArgs: ["--metrics-address", `127.0.0.1:${ckMetrics}`] })]);
    ctdApi = new ApiClient({ address: ctd.socket });
    ckApi = new ApiClient({ address: daemon.address });
  });
  after(async () => {
    ctdApi?.close();
    ckApi?.close();
    await Promise.all([ctd?.stop(), daemon?.cleanup()]);
  });

  test("the metadata services answer as containerd's, or differ as documented", async () => {
    const problems: string[] = [];
    for (const k of cases) {
      const [a, b] = [await outcome(k.call(ctdApi)), await outcome(k.call(ckApi))];
      if (!k.differs) {
        if (!same(a, b)) problems.push(`${k.name}\n    containerd: ${show(a)}\n    ck:         ${show(b)}`);
        continue;
      }
      const holds = (o: Outcome, want: string | ((v: unknown) => boolean)) => (typeof want === "string" ? "err" in o && o.err === want : "ok" in o && want(o.ok));
      if (!holds(a, k.differs.containerd) || !holds(b, k.differs.ck)) {
        problems.push(`${k.name} (a known difference: ${k.differs.why}) no longer as described\n    containerd: ${show(a)}\n    ck:         ${show(b)}`);
      }
    }
    assert.equal(problems.length, 0, `${problems.length} of ${cases.length} cases differ:\n  ${problems.join("\n  ")}`);
  });

  test("the same operations publish the same events (ck's extension fields aside)", async () => {
    const blob = Buffer.from("hello events\n");
    const digest = `sha256:${createHash("sha256").update(blob).digest("hex")}`;
    const E = ns("e1");
    const gcRoot = { "containerd.io/gc.root": "1" };
    const operations = async (a: ApiClient) => {
      await a.call("namespaces", "Create", { namespace: { name: "e1", labels: { a: "1" } } }, N);
      await a.call("namespaces", "Update", { namespace: { name: "e1", labels: { b: "2" } }, update_mask: { paths: ["labels.b"] } }, N);
      await a.call("namespaces", "Update", { namespace: { name: "e1", labels: { a: "" } }, update_mask: { paths: ["labels.a"] } }, N);
      await a.call("images", "Create", image("img:1", { labels: { l: "1" } }), E);
      await a.call("images", "Update", { image: { name: "img:1", labels: { m: "1" } }, update_mask: { paths: ["labels.m"] } }, E);
      await a.call("containers", "Create", { container: { ...box, image: "img:1" } }, E);
      await a.call("containers", "Update", { container: { id: "c1", labels: { y: "1" } }, update_mask: { paths: ["labels.y"] } }, E);
      const w = a.lockstep<object>("content", "Write", E);
      await w.send({ action: 0, ref: "r1", total: blob.length, expected: digest });
      await w.send({ action: 1, offset: 0, data: blob });
      await w.send({ action: 2, offset: blob.length, total: blob.length, expected: digest, labels: gcRoot });
      w.end();
      await a.call("content", "Update", { info: { digest, labels: { k: "v" } }, update_mask: { paths: ["labels.k"] } }, E);
      await a.call("snapshots", "Prepare", { snapshotter: "overlayfs", key: "s", labels: gcRoot }, E);
      await a.call("snapshots", "Commit", { snapshotter: "overlayfs", key: "s", name: "S", labels: gcRoot }, E);
      // containerd publishes nothing for a View (ck's /snapshot/view is sent with ck-events: all only).
      await a.call("snapshots", "View", { snapshotter: "overlayfs", key: "v", parent: "S", labels: gcRoot }, E);
      await a.call("snapshots", "Remove", { snapshotter: "overlayfs", key: "v" }, E);
      await a.call("snapshots", "Remove", { snapshotter: "overlayfs", key: "S" }, E);
      await a.call("leases", "Create", { id: "l1" }, E);
      await a.call("leases", "Delete", { id: "l1" }, E);
      await a.call("events", "Publish", { topic: "/my/topic", event: { type_url: "containerd.events.ContainerDelete", value: Buffer.from([10, 1, 120]) } }, E);
      await a.call("containers", "Delete", { id: "c1" }, E);
      await a.call("images", "Delete", { name: "img:1" }, E);
      await a.call("content", "Delete", { digest }, E);
      await a.call("namespaces", "Delete", { name: "e1" }, N);
    };
    const published = async (a: ApiClient) => {
      const seen: unknown[] = [];
      const stop = new AbortController();
      // containerd sends the stream's headers with its first event only: the subscription is
      // known to be live once a probe of ours comes back through it.
      let live!: () => void;
      const subscribed = new Promise<void>((r) => (live = r));
      const probe = { type_url: "containerd.events.ContainerDelete", value: Buffer.from([10, 1, 112]) };
      const reading = (async () => {
        for await (const e of a.stream("events", "Subscribe", { filters: ['namespace=="e1"', 'topic=="/namespaces/create"', 'topic=="/namespaces/update"', 'topic=="/probe"'] }, { signal: stop.signal })) {
          if (e.topic === "/probe") {
            live();
            continue;
          }
          const event = normal(a.protos.unpackAny(e.event).value) as Record<string, unknown>;
          for (const k of Object.keys(event)) if (k.startsWith("ck_")) delete event[k];
          seen.push({ namespace: e.namespace, topic: e.topic, type: e.event.type_url, event });
          if (e.topic === "/namespaces/delete") stop.abort();
        }
      })();
      for (let ready = false; !ready; ) {
        await a.call("events", "Publish", { topic: "/probe", event: probe }, ns("probe"));
        ready = await Promise.race([subscribed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 200))]);
      }
      await operations(a);
      const t = setTimeout(() => stop.abort(), 10_000);
      await reading;
      clearTimeout(t);
      return seen;
    };
    const [theirs, ours] = [await published(ctdApi), await published(ckApi)];
    assert.equal(theirs.length, 16, JSON.stringify(theirs));
    assert.deepEqual(ours, theirs);
  });

  test("Content.Write's state machine answers step by step as containerd's", async () => {
    const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
    const data = Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 31) % 251));
    const half = 50_000;
    const text = (t: string) => Buffer.from(t);
    type Step = Record<string, unknown>;
    const scenarios: [string, Step[], string?][] = [
      ["in two WRITEs, then COMMIT", [{ action: 0, total: data.length, expected: sha(data) }, { action: 1, offset: 0, data: data.subarray(0, half) }, { action: 1, offset: half, data: data.subarray(half) }, { action: 2, offset: data.length, total: data.length, expected: sha(data) }]],
      ["a COMMIT carrying the last bytes", [{ action: 0, total: data.length }, { action: 1, offset: 0, data }, { action: 2, offset: data.length, data: text("x"), total: data.length + 1 }]],
      ["a COMMIT at another offset: OutOfRange", [{ action: 0 }, { action: 1, offset: 0, data: text("abc") }, { action: 2, offset: 1, total: 3 }]],
      ["a COMMIT at offset 0 truncates first", [{ action: 0 }, { action: 1, offset: 0, data: text("abcd") }, { action: 2, offset: 0, data: text("zz"), total: 2 }]],
      ["a WRITE at another offset: OutOfRange", [{ action: 0 }, { action: 1, offset: 0, data: text("abc") }, { action: 1, offset: 7, data: text("x") }]],
      ["more than the total: FailedPrecondition at COMMIT", [{ action: 0, total: 3 }, { action: 1, offset: 0, data: text("abcdef") }, { action: 2, offset: 6, total: 3 }]],
      ["a wrong digest: FailedPrecondition", [{ action: 0 }, { action: 1, offset: 0, data: text("hello") }, { action: 2, offset: 5, total: 5, expected: sha(text("hellx")) }]],
      ["a wrong size: FailedPrecondition", [{ action: 0 }, { action: 1, offset: 0, data: text("hello") }, { action: 2, offset: 5, total: 6 }]],
      ["no total, no expected: the digest of what came", [{ action: 0 }, { action: 1, offset: 0, data: text("no total") }, { action: 2, offset: 8 }]],
      ["STAT twice", [{ action: 0, total: 10 }, { action: 0, total: 10 }]],
      ["STAT with another total after bytes", [{ action: 0, total: 10 }, { action: 1, offset: 0, data: text("12345") }, { action: 0, total: 20 }]],
      ["COMMIT of nothing: the empty blob", [{ action: 0 }, { action: 2, offset: 0, total: 0 }]],
      ["a blob the namespace has: AlreadyExists at the first message", [{ action: 0, total: data.length, expected: sha(data) }]],
      ["labels at COMMIT", [{ action: 0 }, { action: 1, offset: 0, data: text("labelled") }, { action: 2, offset: 8, total: 8, labels: { a: "1", b: "" } }]],
      ["a malformed expected digest", [{ action: 0, expected: "sha256:zz" }], "containerd 1.6 takes it at STAT (it fails only at a COMMIT); ck refuses it at once, InvalidArgument"],
      ["an expected digest of another algorithm", [{ action: 0, expected: `md5:${"0".repeat(32)}` }], "containerd 1.6 takes it at STAT; ck refuses it at once, InvalidArgument"],
      ["an unknown action", [{ action: 7 }], "containerd 1.6 echoes an empty answer; ck refuses it, InvalidArgument"],
    ];
    // Under a lease, so that no collection (one scheduled by an earlier test's deletes) takes
    // what a scenario committed before the next one looks for it.
    for (const a of [ctdApi, ckApi]) await a.call("leases", "Create", { id: "w" }, ns("w1"));
    const steps = async (a: ApiClient, ref: string, list: Step[]) => {
      const w = a.lockstep<object>("content", "Write", { namespace: "w1", metadata: { "containerd-lease": "w" } });
      const out: unknown[] = [];
      try {
        for (const step of list) {
          const r = normal(await w.send({ ref, ...step })) as Record<string, unknown>;
          delete r.started_at;
          delete r.updated_at;
          out.push(r);
        }
      } catch (err) {
        out.push({ err: (err as { errorClass?: string }).errorClass ?? String(err) });
      } finally {
        w.cancel();
      }
      // The ref's lock goes with the stream: let it go before the next scenario's.
      await new Promise((r) => setTimeout(r, 50));
      return out;
    };
    const problems: string[] = [];
    for (const [i, [name, list, why]] of scenarios.entries()) {
      const [a, b] = [await steps(ctdApi, `ref-${i}`, list), await steps(ckApi, `ref-${i}`, list)];
      if (why) {
        // Taken by containerd, refused by ck.
        if ("err" in (a[0] as object) || !isDeepStrictEqual(b, [{ err: "InvalidArgument" }])) problems.push(`${name} (${why}) no longer so:\n    containerd: ${JSON.stringify(a)}\n    ck:         ${JSON.stringify(b)}`);
      } else if (!isDeepStrictEqual(a, b)) {
        problems.push(`${name}\n    containerd: ${JSON.stringify(a)}\n    ck:         ${JSON.stringify(b)}`);
      }
    }
    assert.equal(problems.length, 0, problems.join("\n  "));
  });

  test("garbage collection keeps and takes the same blobs: leases (one expired, one flat), gc.root, gc.ref chains, an image's target", async () => {
    const G = ns("g1");
    const blobs = Array.from({ length: 8 }, (_, i) => Buffer.from(`blob ${i}\n`));
    const D = blobs.map((b) => `sha256:${createHash("sha256").update(b).digest("hex")}`);
    const put = async (a: ApiClient, i: number, labels: Record<string, string>, lease: string) => {
      const w = a.lockstep<object>("content", "Write", { namespace: "g1", metadata: { "containerd-lease": lease } });
      try {
        await w.send({ action: 0, ref: `gc-${i}`, total: blobs[i]!.length, expected: D[i] });
        await w.send({ action: 1, offset: 0, data: blobs[i] });
        await w.send({ action: 2, offset: blobs[i]!.length, total: blobs[i]!.length, expected: D[i], labels });
      } finally {
        w.end();
      }
    };
    const run = async (a: ApiClient) => {
      const seen: string[] = [];
      const held = async (when: string) => {
        const digests: string[] = [];
        for await (const m of a.stream<any>("content", "List", { filters: [] }, G)) digests.push(...m.info.map((x: { digest: string }) => x.digest));
        seen.push(`${when}: ${digests.map((d) => D.indexOf(d)).sort().join(",")}`);
      };
      await a.call("leases", "Create", { id: "L1" }, G);
      await a.call("leases", "Create", { id: "Lexp", labels: { "containerd.io/gc.expire": "2000-01-01T00:00:00Z" } }, G);
      await a.call("leases", "Create", { id: "Lflat", labels: { "containerd.io/gc.flat": "" } }, G);
      await put(a, 0, { "containerd.io/gc.ref.content.a": D[1]!, "containerd.io/gc.ref.content.b/x": D[2]! }, "L1");
      await put(a, 1, { "containerd.io/gc.ref.content": D[3]! }, "L1");
      await put(a, 2, {}, "L1");
      await put(a, 3, {}, "L1");
      await put(a, 4, {}, "Lexp");
      await put(a, 5, { "containerd.io/gc.ref.content.x": D[6]! }, "Lflat");
      await put(a, 6, {}, "L1");
      await put(a, 7, { "containerd.io/gc.root": "yes" }, "L1");
      await held("written");
      await a.call("images", "Create", { image: { name: "img", target: { media_type: "application/vnd.oci.image.manifest.v1+json", digest: D[0], size: blobs[0]!.length } } }, G);
      await a.call("leases", "DeleteResource", { id: "L1", resource: { id: D[6], type: "content" } }, G);
      await a.call("leases", "Delete", { id: "L1", sync: true }, G);
      await held("L1 deleted");
      await a.call("leases", "Delete", { id: "Lflat", sync: true }, G);
      await held("Lflat deleted");
      await a.call("images", "Delete", { name: "img", sync: true }, G);
      await held("the image deleted");
      return seen;
    };
    const theirs = await run(ctdApi);
    assert.deepEqual(theirs, ["written: 0,1,2,3,4,5,6,7", "L1 deleted: 0,1,2,3,5,6,7", "Lflat deleted: 0,1,2,3,7", "the image deleted: 7"]);
    assert.deepEqual(await run(ckApi), theirs);
  });

  test("ctr pull from a registry leaves the same images, content (with its labels), snapshots and leases in both", async () => {
    const registry = await startRegistry();
    try {
      const img = await buildImage({ repo: "diff/app", tag: "v1", host: registry.host, layers: [{ "etc/a": "one\n", "bin/x": "x\n" }, { "etc/a": { delete: true }, "etc/b": "two\n" }] });
      const ctr = async (address: string, namespace: string, args: string[]) => {
        const r = await runCommand(CTR, ["--address", address, "--namespace", namespace, ...args], {}, undefined, 60_000);
        assert.equal(r.code, 0, `ctr ${args.join(" ")}: ${r.stderr}`);
        return r.stdout;
      };
      // ctr prints a blob's labels in Go's map order (random) and its age: both set aside.
      const contentRows = (out: string) =>
        out.split("\n").filter(Boolean).map((line) => {
          const [digest, size, , labels] = line.split(/\t+/);
          return [digest, size, (labels ?? "").split(",").sort().join(",")];
        });
      for (const namespace of ["p1", "p2"]) {
        for (const address of [ctd.socket, daemon.address]) await ctr(address, namespace, ["images", "pull", "--plain-http", img.reference]);
        for (const args of [["images", "ls"], ["images", "check"], ["snapshots", "ls"], ["leases", "ls"]]) {
          assert.equal(await ctr(daemon.address, namespace, args), await ctr(ctd.socket, namespace, args), `ctr -n ${namespace} ${args.join(" ")}`);
        }
        const [theirs, ours] = [await ctr(ctd.socket, namespace, ["content", "ls"]), await ctr(daemon.address, namespace, ["content", "ls"])];
        assert.equal(contentRows(theirs).length, 5, theirs);
        assert.deepEqual(contentRows(ours), contentRows(theirs), `ctr -n ${namespace} content ls`);
      }
      // The image removed with a synchronous collection: its content and snapshots go in that
      // namespace, and only there.
      for (const address of [ctd.socket, daemon.address]) await ctr(address, "p1", ["images", "rm", "--sync", img.reference]);
      for (const [namespace, args] of [["p1", ["content", "ls", "-q"]], ["p1", ["snapshots", "ls"]], ["p2", ["content", "ls", "-q"]], ["p2", ["snapshots", "ls"]]] as const) {
        assert.equal(await ctr(daemon.address, namespace, [...args]), await ctr(ctd.socket, namespace, [...args]), `after the removal: ctr -n ${namespace} ${args.join(" ")}`);
      }
      assert.equal((await ctr(daemon.address, "p1", ["content", "ls", "-q"])).trim(), "", "collected");
    } finally {
      await registry.stop();
    }
  });

  test("ctr runs, execs into, pauses, kills and removes tasks the same way on both, publishing the same events", { skip: existsSync("/usr/bin/containerd-shim-runc-v2") && existsSync("/usr/sbin/runc") ? false : "no runc or containerd's runc shim" }, async () => {
    const registry = await startRegistry();
    try {
      const busybox = readFileSync("/bin/busybox");
      const img = await buildImage({ repo: "diff/bb", tag: "v1", host: registry.host, layers: [Object.fromEntries([["bin/busybox", busybox], ...["sh", "echo", "sleep"].map((c) => [`bin/${c}`, { symlink: "busybox" }])])] });
      const steps = [
        ["images", "pull", "--plain-http", img.reference],
        ["run", "--rm", img.reference, "c1", "sh", "-c", "echo hi; exit 3"],
        ["run", "-d", img.reference, "c2", "sleep", "60"],
        ["tasks", "ls"],
        ["tasks", "exec", "--exec-id", "e1", "c2", "sh", "-c", "echo in; exit 4"],
        ["tasks", "pause", "c2"],
        ["tasks", "ls"],
        ["tasks", "resume", "c2"],
        ["tasks", "kill", "-s", "SIGKILL", "c2"],
        ["tasks", "ls"],
        ["tasks", "rm", "c2"],
        ["containers", "rm", "c2"],
        ["tasks", "start", "nope"],
      ];
      // In a namespace of its own: a task's cgroup is /<namespace>/<id> on the host for both
      // daemons. Numbers that differ by daemon (pids, times, fifo names, snapshot extract keys), paths
      // under each daemon's root, and ctr's pull progress (its lines come in any order). ctr's
      // tables pad columns to the widest pid, so runs of spaces count as one gap.
      const plain = (t: string) =>
        t.replace(/extract-\d+-\S+/g, "extract-X").replace(/\/run\/containerd\/fifo\/\d+/g, "FIFO").replace(/time="[^"]+"/g, "time=T").replace(/"pid":\d+/g, '"pid":N').replace(/\b\d{3,}\b/g, "N").replace(/ {2,}/g, "  ");
      const run = async (a: ApiClient, address: string, metricsPort: number) => {
        const seen: string[] = [];
        let series: string[] = [];
        const stop = new AbortController();
        let live!: () => void;
        const subscribed = new Promise<void>((r) => (live = r));
        const reading = (async () => {
          for await (const e of a.stream("events", "Subscribe", { filters: ['namespace=="ckdiff"'] }, { signal: stop.signal })) {
            if (e.topic === "/probe") {
              live();
              continue;
            }
            const event = normal(a.protos.unpackAny(e.event).value) as Record<string, any>;
            for (const k of Object.keys(event)) if (k.startsWith("ck_")) delete event[k];
            // A task's bundle and rootfs are under each daemon's own directories.
            if (e.topic === "/tasks/create") event.bundle = event.rootfs = "<daemon's>";
            seen.push(plain(JSON.stringify({ topic: e.topic, type: e.event.type_url, event })));
          }
        })().catch((err) => {
          if (!stop.signal.aborted) throw err;
        });
        const probe = { type_url: "containerd.events.ContainerDelete", value: Buffer.from([10, 1, 112]) };
        for (let ready = false; !ready; ) {
          await a.call("events", "Publish", { topic: "/probe", event: probe }, ns("ckdiff"));
          ready = await Promise.race([subscribed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 200))]);
        }
        const printed: string[] = [];
        const ctrHere = (args: string[]) => runCommand(CTR, ["--address", address, "--namespace", "ckdiff", ...args], {}, undefined, 60_000);
        for (const [i, args] of steps.entries()) {
          // A kill answers before the process is reaped, in both: the listing after it waits
          // (bounded) for the exit to be recorded, so that it compares states, not timings.
          const afterKill = steps[i - 1]?.[1] === "kill";
          let r = await ctrHere(args);
          for (const until = Date.now() + 10_000; afterKill && r.stdout.includes("RUNNING") && Date.now() < until; r = await ctrHere(args)) await new Promise((res) => setTimeout(res, 50));
          printed.push(args[1] === "pull" ? `${r.code}` : plain(`${r.code}\n${r.stdout}${r.stderr}`));
          // The running task's series on the metrics endpoint: which ones, and their labels.
          if (args[0] === "run" && args[1] === "-d") series = await containerSeries(metricsPort, "ckdiff", "c2");
        }
        // The last events (a removal's) are on their way: a probe after them marks the end.
        await a.call("events", "Publish", { topic: "/probe", event: probe }, ns("ckdiff"));
        await new Promise((r) => setTimeout(r, 500));
        stop.abort();
        await reading;
        // Deleted: its series are gone.
        const afterDelete = await containerSeries(metricsPort, "ckdiff", "c2");
        return { printed, seen, series, afterDelete };
      };
      const theirs = await run(ctdApi, ctd.socket, ctdMetrics);
      const ours = await run(ckApi, daemon.address, ckMetrics);
      assert.ok(theirs.series.includes('container_memory_usage_usage_bytes{container_id="c2",namespace="ckdiff",runtime="io.containerd.runc.v2"}'), theirs.series.join("\n"));
      assert.deepEqual(ours.series, theirs.series);
      assert.deepEqual(theirs.afterDelete, ["containerd_build_info_total{revision,version}"]);
      assert.deepEqual(ours.afterDelete, theirs.afterDelete);
      for (const [i, args] of steps.entries()) assert.equal(ours.printed[i], theirs.printed[i], `ctr ${args.join(" ")}`);
      assert.ok(theirs.seen.some((e) => e.includes('"/tasks/exit"') && e.includes('"exit_status":4')), theirs.seen.join("\n"));
      assert.deepEqual(ours.seen, theirs.seen);
    } finally {
      await registry.stop();
    }
  });

  test("ctr run's options, tasks ls/ps/metrics/kill/exec/start/rm/pause print and do the same on both", { skip: existsSync("/usr/bin/containerd-shim-runc-v2") && existsSync("/usr/sbin/runc") ? false : "no runc or containerd's runc shim" }, async () => {
    const registry = await startRegistry();
    const shared = mkdtempSync(join(tmpdir(), "ck-diff-bind-"));
    writeFileSync(join(shared, "f"), "from the host\n");
    try {
      const busybox = readFileSync("/bin/busybox");
      const applets = ["sh", "echo", "sleep", "id", "pwd", "env", "sort", "cat", "touch", "grep", "true", "kill"];
      const img = await buildImage({ repo: "diff/opts", tag: "v1", host: registry.host, layers: [Object.fromEntries([["bin/busybox", busybox], ["tmp/.keep", ""], ...applets.map((c) => [`bin/${c}`, { symlink: "busybox" }])])] });
      const ref = img.reference;
      // A step: ctr's arguments; a foreground `ctr run` (its id) killed from outside once
      // running; or a task's cgroup files read on the host (ctr's default spec mounts no
      // cgroup filesystem in the container), named by controller/file.
      type Step = string[] | { killed: string; signal: string; args: string[] } | { host: string; files: string[] };
      // Where ck answers otherwise on purpose: both answers (as printed, after plain()) and why.
      const knownDiffs = new Map<Step, { containerd: string; ck: string; why: string }>();
      const known = (step: string[], d: { containerd: string; ck: string; why: string }) => (knownDiffs.set(step, d), step);
      // README, Limits: runc's failures are led as the shim's, with ck's own words after it.
      const runcWords = (exec: string, says: string) => ({
        containerd: `1\nctr: OCI runtime exec failed: exec failed: unable to start container process: ${says}: unknown\n`,
        ck: `1\nctr: OCI runtime exec failed: runc exec c1 (exec "${exec}") failed (exit N): exec failed: unable to start container process: ${says}: unknown\n`,
        why: "ck names the runc command that failed before runc's own message",
      });
      // containerd's shim refuses a call its process's state does not take with an unclassed
      // error (Unknown); ck's task record answers FailedPrecondition, saying the state.
      const shimState = (shim: string, ck: string) => ({
        containerd: `1\nctr: ${shim}: unknown\n`,
        ck: `1\nctr: task "c1" is ${ck}: failed precondition\n`,
        why: "a state the call does not start from: FailedPrecondition in ck, the shim's Unknown in containerd",
      });
      const argsOf = (s: Step) => (Array.isArray(s) ? s : "args" in s ? s.args : ["cgroup", s.host, ...s.files]);
      const steps: Step[] = [
        ["images", "pull", "--plain-http", ref],
        ["run", "--rm", ref, "r-exit", "sh", "-c", "echo out; echo err >&2; exit 3"],
        { killed: "r-sig", signal: "SIGKILL", args: ["run", "--rm", ref, "r-sig", "sleep", "60"] },
        ["run", "--rm", "--env", "FOO=bar baz", "--env", "PATH=/bin", "--cwd", "/tmp", ref, "r-env", "sh", "-c", "echo \"$FOO\"; pwd; env | sort"],
        ["run", "--rm", "--cwd", "/nowhere", ref, "r-cwd", "pwd"],
        ["run", "--rm", "--read-only", ref, "r-ro", "sh", "-c", "touch /x; echo $?; touch /tmp/y; echo $?; grep ' / ' /proc/mounts | cut -d' ' -f 4 | cut -d, -f1"],
        ["run", "--rm", "--mount", `type=bind,src=${shared},dst=/host,options=rbind:ro`, ref, "r-mnt", "sh", "-c", "cat /host/f; touch /host/g; echo $?; grep ' /host ' /proc/mounts | cut -d' ' -f 3,4 | cut -d, -f1"],
        ["run", "--rm", ref, "r-cg", "sh", "-c", "cat /proc/self/cgroup | sort; id; cat /etc/hostname 2>&1; echo $?"],
        ["run", "--rm", "-d", ref, "r-both", "true"],
        ["run", "-d", "--cpu-quota", "20000", "--cpu-period", "50000", ref, "c0", "sleep", "60"],
        { host: "c0", files: ["cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us", "cpu/cpu.shares", "memory/memory.limit_in_bytes"] },
        ["tasks", "kill", "-s", "SIGKILL", "c0"],
        ["tasks", "ls"],
        ["tasks", "rm", "c0"],
        ["containers", "rm", "c0"],
        ["run", "-d", "--label", "a=b", "--env", "E=1", "--memory-limit", "67108864", "--cpus", "0.5", "--cpu-shares", "512", ref, "c1", "sleep", "60"],
        ["containers", "ls"],
        ["containers", "info", "c1"],
        ["containers", "info", "--spec", "c1"],
        ["tasks", "ls"],
        { host: "c1", files: ["memory/memory.limit_in_bytes", "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us", "cpu/cpu.shares"] },
        ["tasks", "ps", "c1"],
        ["tasks", "metrics", "c1"],
        ["tasks", "metrics", "--format", "json", "c1"],
        ["tasks", "kill", "-s", "SIGUSR1", "c1"],
        ["tasks", "ls"],
        ["tasks", "exec", "--exec-id", "e1", "--user", "1000:1000", "--cwd", "/tmp", "c1", "sh", "-c", "id -u; id -g; pwd; echo $E; echo err >&2; exit 5"],
        ["tasks", "exec", "--exec-id", "e1", "c1", "sh", "-c", "exit 0"],
        known(["tasks", "exec", "--exec-id", "e2", "c1", "nope"], runcWords("e2", 'exec: "nope": executable file not found in $PATH')),
        known(["tasks", "exec", "--exec-id", "e3", "--cwd", "/nowhere", "c1", "true"], runcWords("e3", 'chdir to cwd ("/nowhere") set in config.json failed: no such file or directory')),
        ["tasks", "exec", "c1", "true"],
        ["tasks", "exec", "--exec-id", "e4", "-d", "c1", "sleep", "50"],
        ["tasks", "exec", "--exec-id", "e4", "c1", "true"],
        ["tasks", "kill", "--exec-id", "e4", "-s", "SIGKILL", "c1"],
        ["tasks", "kill", "--exec-id", "e-none", "c1"],
        ["tasks", "rm", "c1"],
        ["tasks", "pause", "c1"],
        ["tasks", "ls"],
        known(["tasks", "pause", "c1"], shimState("cannot pause a paused container", "paused, not running")),
        known(["tasks", "exec", "--exec-id", "e5", "c1", "true"], shimState("cannot exec in a paused state", "paused, not running")),
        ["tasks", "rm", "c1"],
        ["tasks", "resume", "c1"],
        known(["tasks", "resume", "c1"], shimState("cannot resume a running process", "running, not paused")),
        ["tasks", "kill", "-a", "-s", "SIGKILL", "c1"],
        ["tasks", "ls"],
        ["tasks", "kill", "c1"],
        known(["tasks", "pause", "c1"], shimState("cannot pause a stopped container", "stopped, not running")),
        known(["tasks", "resume", "c1"], shimState("cannot resume a stopped container", "stopped, not paused")),
        known(["tasks", "exec", "--exec-id", "e6", "c1", "true"], shimState("cannot exec in a stopped state", "stopped, not running")),
        ["tasks", "metrics", "c1"],
        ["tasks", "ps", "c1"],
        ["tasks", "rm", "c1"],
        ["tasks", "rm", "c1"],
        ["tasks", "kill", "c1"],
        ["tasks", "ps", "c1"],
        ["tasks", "metrics", "c1"],
        ["containers", "rm", "c1"],
        ["containers", "rm", "c1"],
        // ctr removes a container's stopped task with it.
        ["run", "-d", ref, "c4", "true"],
        ["tasks", "ls"],
        ["containers", "rm", "c4"],
        ["tasks", "ls"],
        ["run", "-d", ref, "c2", "sleep", "60"],
        ["tasks", "rm", "--force", "c2"],
        ["tasks", "ls"],
        ["containers", "rm", "c2"],
        // "--": else ctr's containers create takes sh's -c for its own --config.
        ["containers", "create", "--", ref, "c3", "sh", "-c", "echo started; exit 6"],
        ["tasks", "ls"],
        ["tasks", "start", "c3"],
        ["tasks", "ls"],
        ["tasks", "rm", "c3"],
        ["containers", "rm", "c3"],
        ["containers", "create", ref, "c5", "sleep", "30"],
        ["tasks", "start", "-d", "c5"],
        ["tasks", "ls"],
        ["tasks", "kill", "-s", "SIGKILL", "c5"],
        ["tasks", "ls"],
        ["tasks", "rm", "c5"],
        ["containers", "rm", "c5"],
      ];
      // Numbers that differ by daemon (pids, times, sizes, cgroup counters, fifo names,
      // snapshot extract keys), and ctr's table padding (to the widest pid: runs of spaces
      // count as one gap).
      const plain = (t: string) =>
        t
          .replace(/extract-\d+-\S+/g, "extract-X")
          .replace(/\/run\/containerd\/fifo\/\d+/g, "FIFO")
          .replace(/time="[^"]+"/g, "time=T")
          .replace(/"(CreatedAt|UpdatedAt)": "[^"]+"/g, '"$1": "T"')
          .replace(/\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( [+-]\d{4} UTC| ?Z)?/g, "TIME")
          .replace(/\b\d{3,}\b/g, "N")
          .replace(/ {2,}/g, "  ");
      // Metrics: the values are each cgroup's own (page cache charged, CPU ticks), so only their
      // names and shape: the table's rows with numbers as N; of the JSON, which sections there
      // are and which of them are objects (proto3 JSON leaves out fields that are 0, so which
      // counters appear depends on their values).
      const metricsShape = (out: string) => {
        if (!out.trimStart().startsWith("{")) return out.replace(/\b\d+\b/g, "N");
        const m = JSON.parse(out) as Record<string, Record<string, unknown>>;
        return Object.entries(m).map(([k, v]) => `${k}: ${Object.keys(v).filter((f) => typeof v[f] === "object").sort().join(",")}`).sort().join("\n") + "\n";
      };
      const run = async (address: string) => {
        const printed: string[] = [];
        const ctrHere = (args: string[]) => runCommand(CTR, ["--address", address, "--namespace", "ckrun", ...args], {}, undefined, 60_000);
        for (const [i, step] of steps.entries()) {
          let r: { code: number; stdout: string; stderr: string };
          if (Array.isArray(step)) {
            // A kill answers before the process is reaped, in both, and `run -d … true` before
            // it ends: the listing after them waits (bounded) for the exit to be recorded, to
            // compare states, not timings.
            const prev = steps[i - 1];
            const afterKill = Array.isArray(prev) && (prev[1] === "kill" || prev.at(-1) === "true") && step[1] === "ls";
            r = await ctrHere(step);
            for (const until = Date.now() + 10_000; afterKill && r.stdout.includes("RUNNING") && Date.now() < until; r = await ctrHere(step)) await new Promise((res) => setTimeout(res, 50));
          } else if ("host" in step) {
            const read = (f: string) => {
              try {
                return readFileSync(`/sys/fs/cgroup/${f.split("/")[0]}/ckrun/${step.host}/${f.split("/")[1]}`, "utf8");
              } catch (err) {
                return `${(err as NodeJS.ErrnoException).code}\n`;
              }
            };
            r = { code: 0, stdout: step.files.map((f) => `${f}: ${read(f)}`).join(""), stderr: "" };
          } else {
            const fg = ctrHere(step.args);
            for (const until = Date.now() + 20_000; !(await ctrHere(["tasks", "ls"])).stdout.match(new RegExp(`^${step.killed}\\s.*RUNNING`, "m")) && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
            const k = await ctrHere(["tasks", "kill", "-s", step.signal, step.killed]);
            r = await fg;
            r.stdout = `kill: ${k.code} ${k.stdout}${k.stderr}\n${r.stdout}`;
          }
          const args = argsOf(step);
          if (args[1] === "metrics" && r.code === 0) r.stdout = metricsShape(r.stdout);
          // Exit codes and the cgroups' settings as they are (plain() would make 137 an N).
          printed.push(args[1] === "pull" ? `${r.code}` : `${r.code}\n${args[0] === "cgroup" ? r.stdout : plain(`${r.stdout}${r.stderr}`)}`);
        }
        return printed;
      };
      const theirs = await run(ctd.socket);
      const ours = await run(daemon.address);
      for (const [i, step] of steps.entries()) {
        const k = knownDiffs.get(step);
        if (!k) continue;
        assert.equal(theirs[i], k.containerd, `containerd: ctr ${argsOf(step).join(" ")}`);
        assert.equal(ours[i], k.ck, `ck: ctr ${argsOf(step).join(" ")} (${k.why})`);
      }
      const differ = steps.map((s, i) => (knownDiffs.has(s) || ours[i] === theirs[i] ? "" : `ctr ${argsOf(s).join(" ")}\n--- containerd:\n${theirs[i]}\n--- ck:\n${ours[i]}`)).filter(Boolean);
      assert.equal(differ.join("\n\n"), "");
    } finally {
      await registry.stop();
      rmSync(shared, { recursive: true, force: true });
    }
  });

  test("ctr content ingest, get, label, ls, rm and a refused ingest print the same from both", async () => {
    const data = "hello content\n";
    const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    // ctr content ingest commits without a lease, so the blob is collectable at once: a
    // collection that earlier tests' deletions or mutations left pending (ck runs one shortly
    // after a deletion; containerd after 100 mutations) must not land in the middle of the steps.
    // A collection point on both first: a lease removed with --sync runs one now, and resets
    // what was pending.
    for (const address of [ctd.socket, daemon.address]) {
      for (const args of [["leases", "create", "--id", "quiesce"], ["leases", "rm", "--sync", "quiesce"]]) {
        const r = await runCommand(CTR, ["--address", address, "--namespace", "cc", ...args], {}, undefined, 30_000);
        assert.equal(r.code, 0, `ctr ${args.join(" ")}: ${r.stderr}`);
      }
    }
    const steps: [string[], string?][] = [
      [["content", "ingest", "--expected-digest", digest, "--expected-size", String(data.length), "ref1"], data],
      [["content", "get", digest]],
      [["content", "label", digest, "a=1", "b=2"]],
      [["content", "label", digest, "a="]],
      [["content", "ls", "-q"]],
      [["content", "get", `sha256:${"0".repeat(64)}`]],
      [["content", "rm", digest]],
      [["content", "rm", digest]],
      [["content", "ingest", "--expected-digest", digest, "--expected-size", "3", "ref2"], data],
      [["content", "active"]],
    ];
    for (const [args, input] of steps) {
      const [theirs, ours] = await Promise.all([ctd.socket, daemon.address].map(async (address) => {
        const r = await runCommand(CTR, ["--address", address, "--namespace", "cc", ...args], {}, input, 30_000);
        // ctr prints labels in Go's map order (random): a line of k=v,k=v is compared sorted.
        const stdout = r.stdout.replace(/^\S+=\S*(,\S+=\S*)+$/gm, (line) => line.split(",").sort().join(","));
        return `${r.code}\n${stdout}${r.stderr.replace(/time="[^"]+"/g, "time=T")}`;
      }));
      assert.equal(ours, theirs, `ctr ${args.join(" ")}`);
    }
  });

  test("ctr snapshots prepare, view, mounts, usage, diff, commit, label, rm and unpack print the same from both", async () => {
    const registry = await startRegistry();
    const mnt = mkdtempSync(join(tmpdir(), "ck-diff-mnt-"));
    try {
      const img = await buildImage({ repo: "diff/snaps", tag: "v1", host: registry.host, layers: [{ "etc/a": "one\n", "bin/x": "x\n" }, { "etc/a": { delete: true }, "etc/b": "two\n" }] });
      const diffIds: string[] = img.config.rootfs.diff_ids;
      const chain = diffIds.reduce<string[]>((ids, d) => [...ids, ids.length ? `sha256:${createHash("sha256").update(`${ids.at(-1)} ${d}`).digest("hex")}` : d], []);
      const [bottom, top] = [chain[0]!, chain[1]!];
      const imageBlobs = new Set([img.manifestDigest, img.configDigest, ...img.manifest.layers.map((l: { digest: string }) => l.digest)]);
      /**
       * A step: ctr's arguments, and how its output is compared. `classOnly`: the messages
       * differ (containerd's messages name its store's internal snapshot ids), so only the exit code and
       * the errdefs class ctr prints last are. `settle`: a garbage collection follows the
       * step before (a lease released, a view removed) and runs at once in containerd, after
       * a pause in ck (its runs are spaced to keep them to a share of the time, as containerd's
       * scheduler's pause_threshold does, but they take longer): ck's output is read again,
       * for up to 10 s, until it is containerd's. `differs`: ck answers otherwise on purpose;
       * each side's answer is checked, and why said.
       */
      type Step = { args: string[]; classOnly?: string; settle?: true; tar?: "gzip" | "tar"; differs?: { containerd: (out: string) => boolean; ck: (out: string) => boolean; why: string } } | { write: true };
      const steps: Step[] = [
        { args: ["images", "pull", "--plain-http", img.reference] },
        // The collection the pull's lease scheduled is over before ctr makes views (ctr gives
        // them no gc.root): a lease removed with --sync waits for a collection of its own.
        { args: ["leases", "create", "--id", "gc-point"] },
        { args: ["leases", "rm", "--sync", "gc-point"] },
        { args: ["snapshots", "prepare", "--mounts", "a1", top] },
        { args: ["snapshots", "prepare", "-t", "/T", "a0"] },
        { args: ["snapshots", "view", "--mounts", "v1", top] },
        { args: ["snapshots", "view", "-t", "/T", "v2", bottom] },
        { args: ["snapshots", "view", "v3"] },
        { args: ["snapshots", "mounts", "/T", "a1"] },
        { args: ["snapshots", "mounts", "/T", "v1"] },
        { args: ["snapshots", "mounts", "/T", "v3"] },
        { args: ["snapshots", "mounts", "/T", top], classOnly: "containerd names the snapshot by its internal id" },
        { args: ["snapshots", "mounts", "/T", "nope"] },
        { args: ["snapshots", "prepare", "a1", top] },
        { args: ["snapshots", "prepare", "a2", "nope"] },
        { args: ["snapshots", "prepare", "a3", "a0"], classOnly: "containerd names the parent by its internal id" },
        { args: ["snapshots", "view", "a4", "v1"], classOnly: "containerd names the parent by its internal id" },
        { args: ["snapshots", "commit", "c3", "v1"], classOnly: "containerd names the snapshot by its internal id" },
        { args: ["snapshots", "ls"] },
        // Changes made through the active snapshot's printed mounts, as a container makes them.
        { write: true },
        // Both count the blocks of the same files on the same filesystem (/tmp).
        { args: ["snapshots", "usage"] },
        { args: ["snapshots", "usage", "-b", "a1", "v1", top] },
        { args: ["snapshots", "usage", "nope"] },
        // The kept diffs first: the same diff again (not kept), where it is the same blob (see
        // a0's below), is AlreadyExists at its commit, which keeps the first one's labels.
        { args: ["snapshots", "diff", "--keep", "--ref", "my-diff", "--label", "x=y", "a1"], tar: "gzip" },
        { args: ["snapshots", "diff", "--keep", "--media-type", "application/vnd.oci.image.layer.v1.tar", "--label", "t=1", "a1"], tar: "tar" },
        { args: ["snapshots", "diff", "a1"], tar: "gzip" },
        // A kept layer without its uncompressed label: the same diff again (AlreadyExists at
        // its commit) labels it again. Of a0, which has no whiteouts: containerd's diffs give
        // a whiteout the time of the diff, so the same diff of a1 is the same blob only within
        // the same second.
        { args: ["snapshots", "diff", "--keep", "--label", "z=1", "a0"], tar: "gzip" },
        { args: ["content", "label", "<kept a0>", "containerd.io/uncompressed="] },
        { args: ["snapshots", "diff", "a0"], tar: "gzip" },
        { args: ["content", "label", "<kept a0>"] },
        // Against a committed snapshot: ctr takes a view of it (no gc.root) and removes it after.
        { args: ["snapshots", "diff", "a1", bottom], tar: "gzip" },
        { args: ["snapshots", "diff", "--media-type", "application/vnd.oci.image.layer.v1.tar", "a1"], tar: "tar" },
        { args: ["snapshots", "diff", "--media-type", "application/x-nope", "a1"] },
        { args: ["snapshots", "diff", "nope"] },
        // The views' removals collected the views (they carry no gc.root).
        { args: ["snapshots", "ls"], settle: true },
        // The leases' ends collected the diffs not kept.
        { args: ["content", "ls"], settle: true },
        { args: ["content", "active"] },
        { args: ["snapshots", "commit", "c1", "a1"] },
        { args: ["snapshots", "commit", "c2", "a1"] },
        { args: ["snapshots", "commit", top, "a0"] },
        { args: ["snapshots", "info", "c1"] },
        { args: ["snapshots", "label", "c1", "k=1", "m=2"] },
        { args: ["snapshots", "label", "c1", "k="] },
        { args: ["snapshots", "label", "c1"] },
        { args: ["snapshots", "label", "nope", "k=1"] },
        { args: ["snapshots", "ls"] },
        { args: ["snapshots", "tree"] },
        { args: ["snapshots", "usage", "-b", "c1"] },
        { args: ["snapshots", "rm", "c1", "a0"] },
        { args: ["snapshots", "rm", bottom] },
        // containerd 1.6's collection deletes a snapshot's record but not the link its parent
        // keeps to it (metadata/gc.go's remove; Snapshots.Remove unlinks, metadata/snapshot.go):
        // the parent of a collected view (v1's, here the image's top layer) can never be removed
        // again. ck keeps no such link: the parent goes once its last child has.
        {
          args: ["snapshots", "rm", top],
          differs: {
            containerd: (out) => out === `1\nctr: failed to remove "${top}": cannot remove snapshot with child: failed precondition\n`,
            ck: (out) => out === "0\n",
            why: "containerd's collection leaves a stale child link behind",
          },
        },
        {
          args: ["snapshots", "ls"],
          differs: {
            containerd: (out) => out.startsWith("0\n") && out.includes(`${top} ${bottom} Committed`),
            ck: (out) => out.startsWith("0\n") && !out.includes(top) && out.includes(bottom),
            why: "the removal before it",
          },
        },
        // Unpacked by ctr from content fetched without unpacking, in a namespace of its own.
        { args: ["-n", "su", "content", "fetch", "--plain-http", img.reference] },
        { args: ["-n", "su", "snapshots", "ls"] },
        { args: ["-n", "su", "snapshots", "unpack", img.manifestDigest] },
        { args: ["-n", "su", "snapshots", "ls"] },
        { args: ["-n", "su", "images", "check"] },
        { args: ["-n", "su", "snapshots", "unpack", img.manifestDigest] },
        { args: ["-n", "su", "snapshots", "unpack", `sha256:${"0".repeat(64)}`] },
        { args: ["-n", "su", "snapshots", "unpack", "nonsense"] },
      ];
      const ctrBytes = (address: string, args: string[]) =>
        new Promise<{ code: number; stdout: Buffer; stderr: string }>((resolve, reject) => {
          execFile(CTR, ["--address", address, ...(args[0] === "-n" ? [] : ["--namespace", "sx"]), ...args], { encoding: "buffer", timeout: 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
            const code = err ? (err as { code?: unknown }).code : 0;
            if (typeof code !== "number") reject(err);
            else resolve({ code, stdout, stderr: stderr.toString("utf8") });
          });
        });
      const writeThrough = async (address: string, key: string, change: () => void) => {
        const r = await ctrBytes(address, ["snapshots", "mounts", mnt, key]);
        for (const line of r.stdout.toString("utf8").split("\n").filter(Boolean)) {
          const m = /^mount -t (\S+) (\S+) (\S+) -o (\S*)$/.exec(line);
          assert.ok(m, line);
          const got = await runCommand("mount", ["-t", m[1]!, m[2]!, m[3]!, "-o", m[4]!]);
          assert.equal(got.code, 0, `${line}: ${got.stderr}`);
        }
        try {
          change();
        } finally {
          const u = await runCommand("umount", [mnt]);
          assert.equal(u.code, 0, u.stderr);
        }
      };
      const run = async (address: string, reference?: string[]) => {
        // Snapshot directories: under each daemon's root, named by ids of its own; numbered
        // here in the order they first appear, so that which mount shares which directory
        // is still compared.
        const dirs = new Map<string, number>();
        const layerDiffIds = new Map<string, string>();
        const plain = (t: string) =>
          t
            .replace(/\/\S*?\/snapshots\/([^/\s:,"]+)\/(fs|work)/g, (_, id: string, sub: string) => {
              if (!dirs.has(id)) dirs.set(id, dirs.size);
              return `<dir ${dirs.get(id)}>/${sub}`;
            })
            // A diff's uncompressed digest differs with its bytes (see tarListing): it must be
            // that of one of the layers ctr printed.
            .replace(/(containerd\.io\/uncompressed=)(sha256:[0-9a-f]{64})/g, (all, k: string, u: string) => ([...layerDiffIds.values()].includes(u) ? `${k}<diff_id-of-a-printed-layer>` : all))
            // The gc.root labels ctr writes carry the time; snapshots info prints the times.
            .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, "<time>")
            .replace(/time="[^"]+"/g, "time=T")
            // ctr prints labels in Go's map order (random): a line of k=v,k=v is compared sorted.
            .replace(/^\S+=\S*(,\S+=\S*)+$/gm, (line) => line.split(",").sort().join(","));
        const out: string[] = [];
        const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
        const kept = new Map<string, string>();
        for (const [i, step] of steps.entries()) {
          if ("write" in step) {
            await writeThrough(address, "a1", () => {
              writeFileSync(join(mnt, "etc", "new"), "new file\n");
              writeFileSync(join(mnt, "bin", "x"), "changed\n");
              rmSync(join(mnt, "etc", "b"));
              mkdirSync(join(mnt, "var", "d"), { recursive: true });
              symlinkSync("../etc/new", join(mnt, "bin", "link"));
            });
            await writeThrough(address, "a0", () => writeFileSync(join(mnt, "only"), "a0's\n"));
            out.push("written");
            continue;
          }
          const show = async () => {
            const r = await ctrBytes(address, step.args.map((a) => kept.get(a) ?? a));
            if (step.tar === "gzip" && r.code === 0) layerDiffIds.set(sha(r.stdout), sha(gunzipSync(r.stdout)));
            if (step.args.includes("--keep")) kept.set(`<kept ${step.args.at(-1)}>`, sha(r.stdout));
            if (step.args.includes("pull") || step.args.includes("fetch")) return `${r.code}`;
            if (step.classOnly && r.code !== 0) return `${r.code}\n${/: ([a-z ]+)\n?$/.exec(r.stderr)?.[1] ?? r.stderr}`;
            if (step.tar && r.code === 0) return `${r.code}\n${await tarListing(r.stdout, step.tar)}${plain(r.stderr)}`;
            if (step.args.join(" ") === "content ls") return `${r.code}\n${contentListing(r.stdout.toString("utf8"), imageBlobs, layerDiffIds)}${plain(r.stderr)}`;
            return `${r.code}\n${plain(r.stdout.toString("utf8"))}${plain(r.stderr)}`;
          };
          let shown = await show();
          for (const until = Date.now() + 10_000; step.settle && reference && shown !== reference[i] && Date.now() < until; shown = await show()) await new Promise((r) => setTimeout(r, 100));
          out.push(shown);
        }
        return out;
      };
      const theirs = await run(ctd.socket);
      const ours = await run(daemon.address, theirs);
      for (const [i, step] of steps.entries()) {
        const what = "args" in step ? `ctr ${step.args.join(" ")}` : "written";
        if ("args" in step && step.differs) {
          assert.ok(step.differs.containerd(theirs[i]!), `${what} (${step.differs.why}): containerd no longer so: ${theirs[i]}`);
          assert.ok(step.differs.ck(ours[i]!), `${what} (${step.differs.why}): ck no longer so: ${ours[i]}`);
        } else assert.equal(ours[i], theirs[i], what);
      }
    } finally {
      rmSync(mnt, { recursive: true, force: true });
      await registry.stop();
    }
  });

  test("ctr snapshots --snapshotter native: prepare, view, mounts, usage, diff, commit, rm print the same from both", async () => {
    const registry = await startRegistry();
    const mnt = mkdtempSync(join(tmpdir(), "ck-diff-mnt-"));
    try {
      const img = await buildImage({ repo: "diff/native", tag: "v1", host: registry.host, layers: [{ "etc/a": "one\n", "bin/x": "x\n" }, { "etc/a": { delete: true }, "etc/b": "two\n" }] });
      const diffIds: string[] = img.config.rootfs.diff_ids;
      const bottom = diffIds[0]!;
      const top = `sha256:${createHash("sha256").update(`${bottom} ${diffIds[1]}`).digest("hex")}`;
      const S = ["snapshots", "--snapshotter", "native"];
      const steps: Array<string[] | "write"> = [
        ["images", "pull", "--snapshotter", "native", "--plain-http", img.reference],
        // A collection point (a lease removed with --sync waits for a collection): the one the
        // pull's lease scheduled is over before ctr makes views, which have no gc.root.
        ["leases", "create", "--id", "gc-point"],
        ["leases", "rm", "--sync", "gc-point"],
        [...S, "ls"],
        [...S, "prepare", "--mounts", "a1", top],
        [...S, "prepare", "-t", "/T", "a0"],
        [...S, "view", "--mounts", "v1", top],
        [...S, "view", "-t", "/T", "v2"],
        [...S, "mounts", "/T", "a1"],
        [...S, "mounts", "/T", "v1"],
        "write",
        [...S, "usage"],
        [...S, "diff", "a1"],
        // The diff removed the view of a1's parent it took: the collection after it takes the
        // views (containerd's at once; ck's after a pause, so a collection point again).
        ["leases", "create", "--id", "gc-point"],
        ["leases", "rm", "--sync", "gc-point"],
        [...S, "ls"],
        [...S, "commit", "c1", "a1"],
        [...S, "usage", "-b", "c1"],
        [...S, "info", "c1"],
        [...S, "rm", "c1", "a0"],
        [...S, "rm", bottom],
        [...S, "ls"],
        [...S, "tree"],
      ];
      const run = async (address: string) => {
        // A snapshot's directory: `<id>` under containerd's native snapshotter's root, `<id>/fs`
        // under ck's (its layout, as its overlayfs'); numbered in the order they first appear.
        // (A view of a parent binds the parent's directory in containerd, a tree of its own in
        // ck: both are new here.)
        const dirs = new Map<string, number>();
        const plain = (t: string) =>
          t
            .replace(/\/\S*?\/snapshots\/([^/\s:,"]+)(\/fs)?(?=[\s"])/g, (_, id: string) => {
              if (!dirs.has(id)) dirs.set(id, dirs.size);
              return `<dir ${dirs.get(id)}>`;
            })
            .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, "<time>");
        const out: string[] = [];
        for (const args of steps) {
          if (args === "write") {
            const r = await runCommand(CTR, ["--address", address, "--namespace", "nat", ...S, "mounts", mnt, "a1"]);
            const m = /^mount -t (\S+) (\S+) (\S+) -o (\S*)\n$/.exec(r.stdout);
            assert.ok(m, r.stdout + r.stderr);
            const got = await runCommand("mount", ["-t", m[1]!, m[2]!, m[3]!, "-o", m[4]!]);
            assert.equal(got.code, 0, `${r.stdout}: ${got.stderr}`);
            try {
              writeFileSync(join(mnt, "etc", "new"), "new file\n");
              rmSync(join(mnt, "etc", "b"));
            } finally {
              const u = await runCommand("umount", [mnt]);
              assert.equal(u.code, 0, u.stderr);
            }
            out.push("written");
            continue;
          }
          const r = await new Promise<{ code: number; stdout: Buffer; stderr: string }>((resolve, reject) => {
            execFile(CTR, ["--address", address, "--namespace", "nat", ...args], { encoding: "buffer", timeout: 60_000 }, (err, stdout, stderr) => {
              const code = err ? (err as { code?: unknown }).code : 0;
              if (typeof code !== "number") reject(err);
              else resolve({ code, stdout, stderr: stderr.toString("utf8") });
            });
          });
          if (args.includes("pull")) out.push(`${r.code}`);
          else if (args.includes("diff") && r.code === 0) out.push(`${r.code}\n${await tarListing(r.stdout, "gzip")}${r.stderr}`);
          else out.push(`${r.code}\n${plain(r.stdout.toString("utf8"))}${plain(r.stderr)}`);
        }
        return out;
      };
      const theirs = await run(ctd.socket);
      const ours = await run(daemon.address);
      assert.match(theirs[4]!, /"Type": "bind",\n\s+"Source": "<dir 0>",\n\s+"Options": \[\n\s+"rbind",\n\s+"rw"/);
      for (const [i, args] of steps.entries()) assert.equal(ours[i], theirs[i], args === "write" ? "written" : `ctr ${args.join(" ")}`);
    } finally {
      rmSync(mnt, { recursive: true, force: true });
      await registry.stop();
    }
  });

  test("ctr images convert (--oci, --uncompress, --platform) and content push-object print and leave the same in both", async () => {
    const registry = await startRegistry();
    try {
      // Docker's media types, for --oci to convert.
      const img = await buildImage({ repo: "diff/conv", tag: "v1", host: registry.host, docker: true, layers: [{ "etc/a": "one\n" }, { "etc/b": "two\n" }] });
      // Each daemon pushes to a repository of its own: the second push of a blob to the same
      // one is refused by ctr itself ("already exists" on the remote).
      const steps = (who: string): string[][] => [
        ["images", "pull", "--plain-http", img.reference],
        ["images", "convert", "--oci", img.reference, "conv/oci:1"],
        ["images", "convert", "--uncompress", img.reference, "conv/unc:1"],
        ["images", "convert", "--uncompress", "--oci", img.reference, "conv/both:1"],
        ["images", "convert", "--platform", "linux/amd64", img.reference, "conv/amd64:1"],
        ["images", "convert", "--platform", "linux/arm64", img.reference, "conv/arm64:1"],
        ["images", "convert", "--all-platforms", "--oci", img.reference, "conv/all:1"],
        ["images", "convert", "--oci", "conv/oci:1", "conv/oci:1"],
        ["images", "convert", "--uncompress", img.reference, "conv/oci:1"],
        ["images", "convert", "--oci", "nope:1", "conv/x:1"],
        ["images", "convert", "--oci", img.reference],
        ["images", "ls"],
        ["images", "check"],
        ["content", "ls"],
        ["content", "push-object", "--plain-http", `${registry.host}/diff/pushed-${who}:1`, img.configDigest, "application/vnd.docker.container.image.v1+json"],
        ["content", "push-object", "--plain-http", `${registry.host}/diff/pushed-${who}:1`, `sha256:${"0".repeat(64)}`, "application/octet-stream"],
        ["content", "fetch-object", "--plain-http", `${registry.host}/diff/conv:v1`],
      ];
      const run = async (address: string, who: string) => {
        const out: string[] = [];
        for (const args of steps(who)) {
          const r = await runCommand(CTR, ["--address", address, "--namespace", "cv", ...args], {}, undefined, 60_000);
          if (args[1] === "pull") out.push(`${r.code}`);
          // ctr prints a blob's labels in Go's map order (random) and its age: both set aside.
          else if (args.join(" ") === "content ls") out.push(`${r.code}\n${r.stdout.split("\n").filter(Boolean).slice(1).map((line) => line.split(/\t+/).filter((_, i) => i !== 2).map((f, i) => (i === 2 ? f.split(",").sort().join(",") : f)).join(" ")).join("\n")}`);
          else out.push(`${r.code}\n${r.stdout}${r.stderr.replaceAll(`pushed-${who}`, "pushed-X")}`);
        }
        return out;
      };
      const theirs = await run(ctd.socket, "ctd");
      const ours = await run(daemon.address, "ck");
      assert.ok(theirs[1]!.startsWith("0\nsha256:"), theirs[1]);
      for (const [i, args] of steps("X").entries()) assert.equal(ours[i], theirs[i], `ctr ${args.join(" ")}`);
      // The object each pushed is the daemon's blob, byte for byte.
      for (const who of ["ctd", "ck"]) {
        const r = await fetch(`${registry.url}/v2/diff/pushed-${who}/blobs/${img.configDigest}`);
        assert.equal(r.status, 200, who);
        assert.deepEqual(await r.json(), img.config);
      }
    } finally {
      await registry.stop();
    }
  });

  test("ctr images import (OCI, docker-archive; --base-name, --digests, --index-name, --all-platforms, --platform, --no-unpack, --snapshotter) and export (--platform, --all-platforms, --skip-manifest-json) print, leave and write the same in both", async () => {
    const work = mkdtempSync(join(tmpdir(), "ck-diff-archive-"));
    try {
      const oci = join(work, "oci.tar");
      const docker = join(work, "docker.tar");
      writeFileSync(oci, await ociArchive());
      writeFileSync(docker, await dockerArchive());
      writeFileSync(join(work, "garbage.tar"), "not a tar at all\n");
      const exported = (name: string) => join(work, name);
      const I = (namespace: string, ...args: string[]) => ["-n", namespace, "images", ...args];
      // ctr imports under a lease and removes it; the collection that takes what no image
      // holds (the archive's index.json, written as a blob) comes after it, at once in
      // containerd, after a pause in ck: a lease removed with --sync waits for one.
      const collected = (namespace: string) => [
        ["-n", namespace, "leases", "create", "--id", "gc-point"],
        ["-n", namespace, "leases", "rm", "--sync", "gc-point"],
      ];
      const steps: string[][] = [
        I("im1", "import", "--base-name", "example.com/multi", oci),
        I("im1", "ls"),
        I("im1", "check"),
        ...collected("im1"),
        ["-n", "im1", "content", "ls"],
        ["-n", "im1", "snapshots", "ls"],
        I("im2", "import", "--all-platforms", "--digests", "--index-name", "example.com/idx:1", "--base-name", "example.com/multi", "--no-unpack", oci),
        I("im2", "ls"),
        I("im2", "check"),
        ...collected("im2"),
        ["-n", "im2", "content", "ls"],
        ["-n", "im2", "snapshots", "ls"],
        I("im3", "import", "--digests", "--skip-digest-for-named", oci),
        I("im3", "ls"),
        I("im3", "import", "--platform", "linux/arm64", "--base-name", "example.com/multi", oci),
        I("im3", "ls"),
        ...collected("im3"),
        ["-n", "im3", "content", "ls"],
        ["-n", "im3", "snapshots", "ls"],
        I("im4", "import", docker),
        I("im4", "import", "--compress-blobs", "--snapshotter", "native", docker),
        I("im4", "ls"),
        I("im4", "check"),
        ...collected("im4"),
        ["-n", "im4", "content", "ls"],
        ["-n", "im4", "snapshots", "ls"],
        ["-n", "im4", "snapshots", "--snapshotter", "native", "ls"],
        I("im5", "import", join(work, "nope.tar")),
        I("im5", "import", join(work, "garbage.tar")),
        I("im1", "export", exported("e1.tar"), "example.com/multi:v1"),
        I("im1", "export", "--skip-manifest-json", exported("e2.tar"), "example.com/multi:v1", "example.com/multi:single"),
        I("im1", "export", "--all-platforms", exported("e3.tar"), "example.com/multi:v1"),
        I("im2", "export", "--all-platforms", exported("e4.tar"), "example.com/multi:v1", "example.com/idx:1"),
        I("im2", "export", "--platform", "linux/arm64", exported("e5.tar"), "example.com/multi:v1"),
        I("im4", "export", exported("e6.tar"), "docker.io/library/dock:1"),
        I("im1", "export", exported("e7.tar"), "nope:1"),
        I("im1", "export", "--skip-non-distributable", exported("e8.tar"), "example.com/multi:single"),
      ];
      const run = async (address: string) => {
        const printed: string[] = [];
        for (const args of steps) {
          const r = await ctrBytesAt(address, args);
          const stdout = r.stdout.toString("utf8");
          // ctr prints labels in Go's map order (random): sorted here, and content ls' ages left out.
          const text = args[2] === "content" ? contentRowsOf(stdout) : stdout.replace(/^\S+=\S*(,\S+=\S*)+$/gm, (line) => line.split(",").sort().join(","));
          // An OCI archive's names without --base-name are import-<today>: a run may straddle midnight.
          printed.push(`${r.code}\n${text}${r.stderr.replace(/time="[^"]+"/g, "time=T")}`.replaceAll(work, "<work>").replace(/import-\d{4}-\d\d-\d\d/g, "import-<date>"));
        }
        // The archives ctr wrote, byte for byte (containerd's exporter writes no times), removed
        // before the other daemon's run writes its own.
        const archives: string[] = [];
        for (let i = 1; i <= 8; i++) {
          const p = exported(`e${i}.tar`);
          archives.push(existsSync(p) ? await archiveListing(readFileSync(p)) : "(none)");
          rmSync(p, { force: true });
        }
        return { printed, archives };
      };
      const theirs = await run(ctd.socket);
      const ours = await run(daemon.address);
      assert.ok(theirs.printed[0]!.startsWith("0\n"), theirs.printed[0]);
      for (const [i, args] of steps.entries()) assert.equal(ours.printed[i], theirs.printed[i], `ctr ${args.join(" ").replaceAll(work, "<work>")}`);
      for (const [i, listing] of theirs.archives.entries()) assert.equal(ours.archives[i], listing, `archive e${i + 1}.tar`);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("ctr images tag, label, rm; leases create, ls, rm; content active print the same from both", async () => {
    const work = mkdtempSync(join(tmpdir(), "ck-diff-tag-"));
    try {
      const docker = join(work, "docker.tar");
      writeFileSync(docker, await dockerArchive());
      const D1 = "docker.io/library/dock:1";
      const steps: string[][] = [
        ["images", "import", "--no-unpack", docker],
        ["images", "tag", D1, "t/a:1"],
        ["images", "tag", D1, "t/a:1"],
        ["images", "tag", "--force", D1, "t/a:1"],
        ["images", "tag", D1, "t/c:1", "t/d:1"],
        ["images", "tag", "nope:1", "t/b:1"],
        ["images", "tag", D1],
        ["images", "tag", D1, "t/a:1", "t/e:1"],
        ["images", "tag", "--force", "nope:1", "t/a:1"],
        ["images", "label", "t/a:1", "a=1", "b=2"],
        ["images", "label", "t/a:1", "a="],
        ["images", "label", "t/a:1"],
        ["images", "label", "-r", "t/a:1", "c=3"],
        ["images", "label", "nope:1", "a=1"],
        ["images", "label", "t/a:1", "novalue"],
        ["images", "ls"],
        ["images", "rm", "t/a:1", "nope:1", "t/c:1"],
        ["images", "rm", "nope:1"],
        ["images", "rm"],
        ["images", "ls", "-q"],
        ["leases", "create", "--id", "lx", "--expires", "1h", "k=v"],
        ["leases", "create", "--id", "lx"],
        ["leases", "create", "--id", "ly", "-x", "0"],
        ["leases", "create", "--id", "bad id"],
        ["leases", "create", "--id", "lz", "-x", "-1h"],
        ["leases", "ls"],
        ["leases", "ls", "-q"],
        ["leases", "ls", "id==lx"],
        ["leases", "ls", "labels.k==v"],
        ["leases", "ls", "id=="],
        ["leases", "rm", "lx", "nope"],
        ["leases", "rm", "nope"],
        ["leases", "rm", "--sync", "ly", "lz"],
        ["leases", "rm"],
        ["leases", "ls"],
        ["content", "active"],
        ["content", "active", "^ref"],
        ["content", "active", "["],
        // A filter ctr cannot parse, in each listing that takes one: containerd's metadata
        // stores of images, containers and leases, and its introspection service, add their
        // own "invalid argument" to the parser's.
        ["images", "ls", "name=="],
        ["images", "ls", "name==x y"],
        ["images", "ls", "labels.\"a==1"],
        ["containers", "ls", "id=="],
        ["content", "ls", ",x"],
        ["plugins", "ls", "type=="],
        ["events", "topic=="],
      ];
      const run = async (address: string) => {
        const printed: string[] = [];
        for (const args of steps) {
          const r = await ctrBytesAt(address, args, "tg");
          // The times a lease was made and expires (its gc.expire label) differ between the runs;
          // ctr prints labels in Go's map order (random): a k=v,k=v field is compared sorted.
          const text = `${r.code}\n${r.stdout.toString("utf8")}${r.stderr}`
            .replace(/time="[^"]+"/g, "time=T")
            .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)/g, "<time>")
            .replace(/\S+=\S*(,\S+=\S*)+/g, (f) => f.split(",").sort().join(","));
          printed.push(text.replaceAll(work, "<work>"));
        }
        return printed;
      };
      const theirs = await run(ctd.socket);
      const ours = await run(daemon.address);
      // Where ck answers otherwise on purpose: each side's output, and why.
      const known = new Map([
        [
          "events topic==",
          {
            containerd: "1\nctr: rpc error: code = Unknown desc = subscription error: failed parsing subscription filters: filters: parse error: [topic==]: expected value or quoted: invalid argument\n",
            ck: "1\nctr: rpc error: code = InvalidArgument desc = filters: parse error: [topic==]: expected value or quoted: invalid argument\n",
            why: "containerd 1.6's Events.Subscribe returns its exchange's error unconverted (Unknown); ck answers InvalidArgument, as every other List does",
          },
        ],
      ]);
      assertSameOrKnown(steps, ours, theirs, known, (a) => a.replaceAll(work, "<work>"));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("ctr version and plugins ls (-q, -d, filters) print as from containerd, for the plugins both have", async () => {
    const run = async (address: string, args: string[]) => {
      const r = await ctrBytesAt(address, args, "pv");
      assert.equal(r.code, 0, `ctr ${args.join(" ")}: ${r.stderr}`);
      return { out: r.stdout.toString("utf8"), err: r.stderr };
    };
    // version: the client's part the same; the server's the same lines, with ck's own version
    // and revision (so ctr warns of the mismatch, as against any containerd of another
    // version) and each daemon's UUID.
    const [tv, ov] = [await run(ctd.socket, ["version"]), await run(daemon.address, ["version"])];
    const shape = (s: string) => s.replace(/^(  (Version|Revision|UUID):\s+).*$/gm, "$1<value>");
    const [client, server] = [(s: string) => s.split("\nServer:\n")[0], (s: string) => s.split("\nServer:\n")[1]];
    assert.equal(client(ov.out), client(tv.out));
    assert.equal(shape(server(ov.out)!), shape(server(tv.out)!));
    assert.match(server(ov.out)!, /^  UUID: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n$/m);
    assert.equal(tv.err, "");
    assert.equal(ov.err, "WARNING: version mismatch\nWARNING: revision mismatch\n");

    // plugins ls: rows keyed by TYPE and ID. ck is not made of containerd's plugins (no
    // io.containerd.service.v1 layer, a RocksDB metadata plugin, JetStream for events, its own
    // ck.* services; nor aufs, btrfs, devmapper, zfs, the v1 runtime, cgroups monitor or
    // restart): only the rows of plugins both have are compared (ctr prints them in each
    // daemon's order of initialisation, and pads columns to the widest ID).
    const rows = (s: string) => new Map(s.split("\n").slice(1).filter(Boolean).map((l) => l.trim().split(/\s+/)).map((f) => [`${f[0]} ${f[1]}`, f.join(" ")]));
    const [tl, ol] = [rows((await run(ctd.socket, ["plugins", "ls"])).out), rows((await run(daemon.address, ["plugins", "ls"])).out)];
    const both = [...tl.keys()].filter((k) => ol.has(k));
    assert.deepEqual(both, [
      "io.containerd.content.v1 content",
      "io.containerd.snapshotter.v1 native",
      "io.containerd.snapshotter.v1 overlayfs",
      "io.containerd.differ.v1 walking",
      "io.containerd.gc.v1 scheduler",
      "io.containerd.runtime.v2 task",
      "io.containerd.grpc.v1 introspection",
      "io.containerd.grpc.v1 containers",
      "io.containerd.grpc.v1 content",
      "io.containerd.grpc.v1 diff",
      "io.containerd.grpc.v1 events",
      "io.containerd.grpc.v1 healthcheck",
      "io.containerd.grpc.v1 images",
      "io.containerd.grpc.v1 leases",
      "io.containerd.grpc.v1 namespaces",
      "io.containerd.internal.v1 opt",
      "io.containerd.grpc.v1 snapshots",
      "io.containerd.grpc.v1 tasks",
      "io.containerd.grpc.v1 version",
    ]);
    for (const k of both) assert.equal(ol.get(k), tl.get(k), `plugins ls: ${k}`);
    // -q: the IDs, one a line.
    const ids = (s: string) => s.split("\n").filter(Boolean);
    const [tq, oq] = [ids((await run(ctd.socket, ["plugins", "ls", "-q"])).out), ids((await run(daemon.address, ["plugins", "ls", "-q"])).out)];
    assert.deepEqual(oq, [...ol.keys()].map((k) => k.split(" ")[1]));
    assert.deepEqual(tq, [...tl.keys()].map((k) => k.split(" ")[1]));
    // -d: a block per plugin. Type, ID, Platforms and Error compared; Requires names what each
    // daemon's plugin is built on (containerd's gRPC plugins on its service.v1 layer, ck's on
    // its metadata plugin) and Exports each daemon's own settings and paths.
    const blocks = (s: string) =>
      new Map(
        s.split(/\n\s*\n(?=Type:)/).map((b) => {
          const kept = b.split("\n").filter((l) => /^(Type|ID|Platforms|Error):/.test(l)).map((l) => l.trim()).join("\n");
          return [kept.split("\n").slice(0, 2).map((l) => l.split(/\s+/)[1]).join(" "), kept] as const;
        }),
      );
    const [td, od] = [blocks((await run(ctd.socket, ["plugins", "ls", "-d"])).out), blocks((await run(daemon.address, ["plugins", "ls", "-d"])).out)];
    for (const k of both) assert.equal(od.get(k), td.get(k), `plugins ls -d: ${k}`);
    assert.match(td.get("io.containerd.snapshotter.v1 overlayfs")!, /Platforms:\s+linux\//);
    // Filters: by type and id, and one that matches nothing (a header only, exit 0).
    for (const f of ["type==io.containerd.snapshotter.v1", "id==overlayfs,type==io.containerd.snapshotter.v1", "id==nope", "platforms==linux/amd64"]) {
      const [t, o] = [rows((await run(ctd.socket, ["plugins", "ls", f])).out), rows((await run(daemon.address, ["plugins", "ls", f])).out)];
      const common = (m: Map<string, string>) => [...m].filter(([k]) => both.includes(k)).sort();
      assert.deepEqual(common(o), common(t), `plugins ls ${f}`);
    }
  });

  test("ctr events prints the same lines for what ctr does on both", async () => {
    const work = mkdtempSync(join(tmpdir(), "ck-diff-events-"));
    try {
      const docker = join(work, "docker.tar");
      writeFileSync(docker, await dockerArchive());
      const data = "event content\n";
      const digest = sha256(data);
      // What a collection takes must not change between the steps: ck collects shortly after
      // any deletion, containerd after 100 mutations. So the steps start after a collection
      // point on both (which also clears what earlier tests left pending), the blob ingested
      // without a lease (collectable) goes before anything deletes, and no view is made (ctr's
      // view has neither a lease nor a gc.root label: collectable at once; prepare and commit
      // label theirs gc.root).
      const steps: Array<[string[], string?]> = [
        [["-n", "ev", "content", "ingest", "--expected-digest", digest, "--expected-size", String(data.length), "evref"], data],
        [["-n", "ev", "content", "label", digest, "k=v"]],
        [["-n", "ev", "content", "rm", digest]],
        [["-n", "ev", "namespaces", "create", "evns", "a=1"]],
        // One key a command: ctr sends one Update per key, in Go's map order (random).
        [["-n", "ev", "namespaces", "label", "evns", "b=2"]],
        [["-n", "ev", "namespaces", "label", "evns", "a="]],
        [["-n", "ev", "namespaces", "rm", "evns"]],
        [["-n", "ev", "images", "import", "--no-unpack", docker]],
        [["-n", "ev", "images", "tag", "docker.io/library/dock:1", "t/e:1"]],
        [["-n", "ev", "images", "label", "t/e:1", "k=v"]],
        [["-n", "ev", "images", "rm", "t/e:1"]],
        [["-n", "ev", "snapshots", "prepare", "a1"]],
        [["-n", "ev", "snapshots", "commit", "c1", "a1"]],
        [["-n", "ev", "snapshots", "rm", "c1"]],
      ];
      const run = async (a: ApiClient, address: string) => {
        const p = spawn(CTR, ["--address", address, "events", "namespace==ev", "namespace==evns", "topic==\"/probe\""], { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        let err = "";
        p.stdout.on("data", (b: Buffer) => (out += b.toString("utf8")));
        p.stderr.on("data", (b: Buffer) => (err += b.toString("utf8")));
        const probe = { type_url: "containerd.events.ContainerDelete", value: Buffer.from([10, 1, 112]) };
        const probed = async () => {
          const seen = out.split("\n").filter((l) => l.includes("/probe")).length;
          for (let until = Date.now() + 10_000; out.split("\n").filter((l) => l.includes("/probe")).length === seen; ) {
            assert.ok(Date.now() < until, `ctr events printed no probe: ${out}${err}`);
            await a.call("events", "Publish", { topic: "/probe", event: probe }, ns("probe"));
            await new Promise((r) => setTimeout(r, 200));
          }
        };
        try {
          await probed();
          for (const args of [["-n", "gcpoint", "leases", "create", "--id", "p"], ["-n", "gcpoint", "leases", "rm", "--sync", "p"]]) {
            const r = await runCommand(CTR, ["--address", address, ...args], {}, undefined, 30_000);
            assert.equal(r.code, 0, `ctr ${args.join(" ")}: ${r.stderr}`);
          }
          for (const [args, input] of steps) {
            const r = await runCommand(CTR, ["--address", address, ...args], {}, input, 30_000);
            assert.equal(r.code, 0, `ctr ${args.join(" ")}: ${r.stderr}`);
          }
          await probed();
        } finally {
          p.kill();
        }
        // Each line: the time (which differs), the namespace, the topic, the event as JSON; the
        // probes (one or more, as the subscription came up) left out.
        return (out.split("\n").filter((l) => l && !l.includes("/probe")).join("\n") + "\n" + err).replace(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC /gm, "<time> ");
      };
      const theirs = await run(ctdApi, ctd.socket);
      const ours = await run(ckApi, daemon.address);
      assert.ok(theirs.includes("<time> ev /images/create "), theirs);
      assert.equal(ours, theirs);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("ctr images pull (--platform, --all-platforms, --all-metadata, --print-chainid, --label), content fetch, images check, push and mount/unmount print and leave the same in both", async () => {
    const registry = await startRegistry();
    const work = mkdtempSync(join(tmpdir(), "ck-diff-mount-"));
    try {
      // A two-platform index (amd64, arm64), one gzipped layer each.
      const amd = await platformImage("amd64", [["etc/amd", "amd64\n"], ["etc/both", "both\n"]]);
      const arm = await platformImage("arm64", [["etc/arm", "arm64\n"]]);
      const index = blob("application/vnd.oci.image.index.v1+json", JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [amd.manifest.desc, arm.manifest.desc] }));
      await pushToRegistry(registry.url, "diff/multi", [...amd.blobs.slice(0, 2), ...arm.blobs.slice(0, 2)], [amd.manifest, arm.manifest, index], "v1");
      const M = `${registry.host}/diff/multi:v1`;
      const mnt = join(work, "mnt");
      mkdirSync(mnt);
      // A step: ctr's arguments (WHO: the daemon's own name, for the repositories each pushes
      // to: a second push of a blob to the same one is answered by the registry), or the
      // mounted tree's listing, or a write into it.
      type Step = string[] | { tree: true } | { write: string };
      const steps: Step[] = [
        ["-n", "pm", "images", "pull", "--plain-http", "--print-chainid", M],
        ["-n", "pm", "images", "ls"],
        ["-n", "pm", "images", "check"],
        ["-n", "pm", "images", "check", "-q", "--snapshotter", "native"],
        // The index names an arm64 manifest this namespace does not have.
        ["-n", "pm", "images", "push", "--plain-http", `${registry.host}/diff/pushed-WHO:all`, M],
        ["-n", "pm", "images", "push", "--plain-http", "--platform", "linux/amd64", `${registry.host}/diff/pushed-WHO:amd`, M],
        ["-n", "pm", "images", "push", "--plain-http", `${registry.host}/diff/pushed-WHO:x`, "nope:1"],
        ["-n", "pm", "images", "pull", "--plain-http", "--platform", "linux/arm64", "--print-chainid", "--label", "a=1", M],
        ["-n", "pm", "images", "ls"],
        ["-n", "pm", "images", "check"],
        ["-n", "pm", "images", "push", "--plain-http", `${registry.host}/diff/pushed-WHO:all`, M],
        // Mounted read-only: a view under a lease named by the directory.
        ["-n", "pm", "images", "mount", M, mnt],
        { tree: true },
        { write: "x" },
        ["-n", "pm", "snapshots", "ls"],
        ["-n", "pm", "leases", "ls"],
        ["-n", "pm", "images", "mount", M, mnt],
        ["-n", "pm", "images", "unmount", mnt],
        ["-n", "pm", "images", "unmount", mnt],
        ["-n", "pm", "snapshots", "ls"],
        ["-n", "pm", "images", "unmount", "--rm", mnt],
        ["-n", "pm", "snapshots", "ls"],
        ["-n", "pm", "leases", "ls"],
        // Read-write, another platform: an active snapshot, written through.
        ["-n", "pm", "images", "mount", "--rw", "--platform", "linux/arm64", M, mnt],
        { write: "etc/new" },
        { tree: true },
        ["-n", "pm", "images", "unmount", mnt],
        ["-n", "pm", "snapshots", "ls"],
        ["-n", "pm", "snapshots", "usage", mnt],
        ["-n", "pm", "images", "unmount", "--rm", mnt],
        ["-n", "pm", "snapshots", "ls"],
        ["-n", "pm", "images", "mount", "nope:1", mnt],
        ["-n", "pm", "images", "mount", M],
        ["-n", "pm", "images", "mount", "--platform", "linux/s390x", M, mnt],
        ["-n", "pm", "images", "unmount", "--rm", mnt],
        ["-n", "pm", "leases", "ls"],
        ["-n", "pa", "images", "pull", "--plain-http", "--all-platforms", "--print-chainid", M],
        ["-n", "pa", "images", "check"],
        ["-n", "pa", "snapshots", "tree"],
        ["-n", "pa", "content", "ls"],
        ["-n", "pd", "images", "pull", "--plain-http", "--all-metadata", M],
        ["-n", "pd", "content", "ls", "-q"],
        ["-n", "pd", "images", "check"],
        ["-n", "fc", "content", "fetch", "--plain-http", "--platform", "linux/arm64", M],
        ["-n", "fc", "images", "check"],
        ["-n", "fc", "content", "ls", "-q"],
        ["-n", "fc", "content", "fetch", "--plain-http", "--all-platforms", M],
        ["-n", "fc", "images", "check"],
        ["-n", "fc", "snapshots", "ls"],
        ["-n", "fm", "content", "fetch", "--plain-http", "--metadata-only", M],
        ["-n", "fm", "content", "ls", "-q"],
        ["-n", "fm", "images", "check"],
        ["-n", "fm", "content", "fetch", "--plain-http", `${registry.host}/diff/nope:1`],
      ];
      const run = async (address: string, who: string) => {
        const printed: string[] = [];
        for (const step of steps) {
          if (!Array.isArray(step)) {
            if ("tree" in step) printed.push(treeListing(mnt));
            else {
              try {
                writeFileSync(join(mnt, step.write), "written\n");
                printed.push(`wrote ${step.write}`);
              } catch (err) {
                printed.push(`${step.write}: ${(err as NodeJS.ErrnoException).code}`);
              }
            }
            continue;
          }
          const args = step.map((a) => a.replace("WHO", who));
          const r = await ctrBytesAt(address, args);
          const stdout = r.stdout.toString("utf8");
          const progress = ["pull", "fetch", "push"].includes(args[3]!);
          // ctr prints labels in Go's map order (random): sorted; content ls' ages left out;
          // the times a lease was made and expires (its gc.expire label) differ between the runs.
          const text = (progress ? progressShape(stdout) : args[3] === "ls" && args[2] === "content" && !args.includes("-q") ? contentRowsOf(stdout) : stdout)
            .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, "<time>")
            .replace(/\S+=\S*(,\S+=\S*)+/g, (f) => f.split(",").sort().join(","));
          printed.push(`${r.code}\n${text}${(progress ? progressStderr(r.stderr) : r.stderr).replace(/time="[^"]+"/g, "time=T")}`.replaceAll(work, "<work>"));
        }
        return printed;
      };
      const theirs = await run(ctd.socket, "ctd");
      const ours = await run(daemon.address, "ck");
      assert.ok(theirs[0]!.startsWith("0\n") && theirs[0]!.includes("image chain ID: sha256:"), theirs[0]);
      for (const [i, step] of steps.entries()) assert.equal(ours[i], theirs[i], Array.isArray(step) ? `ctr ${step.join(" ")}` : JSON.stringify(step));
      // What each pushed is what the other pushed, byte for byte: the index, and the amd64 manifest alone.
      const raw = async (ref: string) => (await runCommand("/usr/bin/skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/${ref}`])).stdout;
      for (const tag of ["all", "amd"]) {
        const [t, o] = [await raw(`diff/pushed-ctd:${tag}`), await raw(`diff/pushed-ck:${tag}`)];
        assert.equal(o, t, `pushed :${tag}`);
        assert.equal(sha256(t), tag === "all" ? index.desc.digest : amd.manifest.desc.digest);
      }
    } finally {
      await runCommand("umount", [join(work, "mnt")]);
      rmSync(work, { recursive: true, force: true });
      await registry.stop();
    }
  });

  test("ctr containers create (--label, --env, --env-file, --annotation, --config, --snapshotter, --snapshotter-label), info, label, ls, rm; namespaces create, label, ls, rm print the same from both", async () => {
    const registry = await startRegistry();
    const work = mkdtempSync(join(tmpdir(), "ck-diff-ctr-"));
    try {
      const img = await buildImage({ repo: "diff/ctr", tag: "v1", host: registry.host, layers: [{ "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n", "etc/group": "root:x:0:\nu:x:1000:\n", "bin/true": "#!/bin/sh\n" }], user: "u" });
      const ref = img.reference;
      writeFileSync(join(work, "env"), "FROM_FILE=1\n# a comment\nOTHER=two words\n");
      writeFileSync(join(work, "spec.json"), JSON.stringify({ ociVersion: "1.0.2", process: { args: ["sh"], cwd: "/", user: { uid: 0, gid: 0 } }, root: { path: "rootfs" }, linux: { namespaces: [{ type: "pid" }] } }));
      writeFileSync(join(work, "bad.json"), "{bad");
      const big = `k${"v".repeat(4100)}=1`;
      const C = (...args: string[]) => ["-n", "cr", "containers", ...args];
      const NS = (...args: string[]) => ["-n", "default", "namespaces", ...args];
      const steps: string[][] = [
        ["-n", "cr", "images", "pull", "--plain-http", ref],
        C("create", "--label", "a=1", "--label", "b=2", "--env", "X=1", "--env-file", join(work, "env"), "--annotation", "an=1", ref, "k1", "sleep", "1"),
        C("create", ref, "k1"),
        C("create", "nope:1", "k2"),
        C("create", ref),
        C("create", ref, "bad id!"),
        C("create", "--label", big, ref, "k3"),
        C("create", "--snapshotter", "native", ref, "k4", "true"),
        C("create", "--snapshotter", "nope", ref, "k5", "true"),
        C("create", "--snapshotter-label", "s=1", "--snapshotter-label", "t=2", "--read-only", ref, "k6", "true"),
        C("create", "--config", join(work, "spec.json"), "k7"),
        C("create", "--config", join(work, "spec.json"), ref, "k8"),
        C("create", "--config", join(work, "bad.json"), "k8"),
        C("create", "--config", join(work, "nope.json"), "k8"),
        C("ls"),
        C("ls", "-q"),
        C("ls", "labels.a==1"),
        C("ls", `image==${ref}`),
        C("info", "k1"),
        C("info", "--spec", "k6"),
        C("info", "k7"),
        C("info", "nope"),
        C("info"),
        C("label", "k1", "c=3", "a="),
        C("label", "k1"),
        C("label", "nope", "c=3"),
        C("label", "k1", big),
        C("label", "k1", "=1"),
        C("info", "k1"),
        ["-n", "cr", "snapshots", "ls"],
        ["-n", "cr", "snapshots", "--snapshotter", "native", "ls"],
        ["-n", "cr", "snapshots", "info", "k6"],
        ["-n", "cr", "snapshots", "tree"],
        C("rm", "k1", "nope", "k4"),
        C("rm", "nope"),
        C("ls", "-q"),
        ["-n", "cr", "snapshots", "ls"],
        NS("rm", "cr"),
        C("rm", "k6", "k7"),
        ["-n", "cr", "leases", "create", "--id", "lb", big],
        ["-n", "cr", "images", "rm", "--sync", ref],
        ["-n", "cr", "snapshots", "ls"],
        NS("rm", "cr"),
        NS("create", "ns-a", "a=1", "b=2"),
        NS("create", "ns-a"),
        NS("create", "Bad!"),
        NS("create", "ns-big", big),
        NS("create"),
        NS("label", "ns-a", "c=3", "a="),
        NS("label", "ns-a"),
        NS("label", "ns-a", big),
        NS("label", "ns-new", "k=v"),
        NS("ls"),
        NS("rm", "ns-a", "ns-new", "nope"),
        NS("rm"),
        NS("ls", "-q"),
        ["-n", "Bad!", "images", "ls"],
        ["-n", "Bad!", "containers", "create", ref, "k9"],
      ];
      // Where ck answers otherwise on purpose: each side's output, and why. (Not run:
      // `namespaces label Bad! k=v`: containerd's SetLabel checks no name and makes a namespace
      // that no later call can delete, which would stay in the last test's listing; ck refuses
      // it, commands.test.ts.)
      const known = new Map<string, KnownDifference>([
        [
          NS("create", "Bad!").join(" "),
          {
            containerd: '1\nctr: identifier "Bad!" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument\n',
            ck: '1\nctr: namespace: identifier "Bad!" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument\n',
            why: "ck's refusals of bad input name the field they are in; containerd's namespace store gives the identifier's error alone",
          },
        ],
        [
          C("label", "k1", "=1").join(" "),
          {
            containerd: '1\nctr: failed to write container "k1": failed to set label ""="1": key required: unknown\n',
            ck: "1\nctr: update failed validation: containers.Labels: a label key must not be empty: invalid argument\n",
            why: "containerd's labels.Validate lets an empty key through and its bbolt store fails the write (Unknown); ck refuses it as bad input",
          },
        ],
        [
          NS("label", "ns-a", big).join(" "),
          {
            containerd: "1\nctr: namespace.Labels: label key and value greater than maximum size (4096 bytes), key: kvvvvvvvvv: invalid argument: unknown\n",
            ck: "1\nctr: namespace.Labels: label key and value greater than maximum size (4096 bytes), key: kvvvvvvvvv: invalid argument\n",
            why: "containerd 1.6's Namespaces.Update returns its store's SetLabel error unconverted (Unknown); ck answers InvalidArgument, as its Create does",
          },
        ],
        [
          ["-n", "cr", "leases", "create", "--id", "lb", big].join(" "),
          {
            containerd: "0\nlb\n",
            ck: "1\nctr: lease.Labels: label key and value greater than maximum size (4096 bytes), key: kvvvvvvvvv: invalid argument\n",
            why: "containerd 1.6's lease store checks no label; ck checks a lease's as every other object's (the namespace's removal takes containerd's lease)",
          },
        ],
      ]);
      const run = async (address: string) => {
        const printed: string[] = [];
        for (const args of steps) {
          const r = await ctrBytesAt(address, args);
          const stdout = args[3] === "pull" ? progressShape(r.stdout.toString("utf8")) : r.stdout.toString("utf8");
          const stderr = args[3] === "pull" ? progressStderr(r.stderr) : r.stderr;
          // containers info prints the times as RFC 3339 (ck's to the millisecond, containerd's to
          // the nanosecond), snapshots info too; ctr prints labels in Go's map order (random).
          const text = `${r.code}\n${stdout}${stderr}`
            .replace(/time="[^"]+"/g, "time=T")
            .replace(/"(CreatedAt|UpdatedAt|Created|Updated)": "[^"]+"/g, '"$1": "<time>"')
            .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, "<time>")
            .replace(/\S+=\S*(,\S+=\S*)+/g, (f) => f.split(",").sort().join(","));
          printed.push(text.replaceAll(work, "<work>").replaceAll(big, "<big label>"));
        }
        return printed;
      };
      const theirs = await run(ctd.socket);
      const ours = await run(daemon.address);
      assert.ok(theirs[1]!.startsWith("0\n"), theirs[1]);
      assertSameOrKnown(steps, ours, theirs, known, (a) => a.replaceAll(work, "<work>").replaceAll(big, "<big label>"));
    } finally {
      rmSync(work, { recursive: true, force: true });
      await registry.stop();
    }
  });

  test("ctr's refusals print the same from both: unknown images and containers, bad references, a bad namespace, a missing program, a taken id, a running task's container", { skip: existsSync("/usr/bin/containerd-shim-runc-v2") && existsSync("/usr/sbin/runc") ? false : "no runc or containerd's runc shim" }, async () => {
    const registry = await startRegistry();
    const work = mkdtempSync(join(tmpdir(), "ck-diff-err-"));
    try {
      const busybox = readFileSync("/bin/busybox");
      const img = await buildImage({ repo: "diff/err", tag: "v1", host: registry.host, layers: [Object.fromEntries([["bin/busybox", busybox], ["bin/notexec", "data\n"], ...["sh", "sleep", "true"].map((c) => [`bin/${c}`, { symlink: "busybox" }])])] });
      const ref = img.reference;
      const zero = `sha256:${"0".repeat(64)}`;
      const steps: string[][] = [
        ["images", "pull", "--plain-http", ref],
        ["images", "pull", "--plain-http", "nope"],
        ["images", "pull", "--plain-http", "Bad Ref"],
        ["images", "pull", "--plain-http", `${registry.host}/diff/nope:1`],
        ["images", "pull", "--plain-http", `${ref}@${zero}`],
        ["images", "rm", "nope:1"],
        ["images", "push", "--plain-http", `${registry.host}/diff/nope:1`],
        ["images", "export", join(work, "x.tar"), "nope:1"],
        ["run", "nope:1", "r1", "true"],
        ["run", "--rm", "bad ref!", "r1", "true"],
        ["run", "--rm", "-d", ref, "r1", "true"],
        ["run", "--rm", "--snapshotter", "nope", ref, "r1", "true"],
        ["run", "--rm", ref, "r2", "nope-cmd"],
        ["run", "--rm", ref, "r3", "/no/such/program"],
        ["run", "--rm", ref, "r4", "/bin/notexec"],
        ["run", "--rm", ref, "r5", "/bin"],
        ["containers", "ls", "-q"],
        ["tasks", "ls"],
        ["run", "-d", ref, "r6", "sleep", "60"],
        ["run", "-d", ref, "r6", "sleep", "60"],
        ["containers", "create", ref, "r6"],
        ["containers", "rm", "r6"],
        ["tasks", "kill", "-s", "SIGKILL", "r6"],
        ["tasks", "ls"],
        ["containers", "rm", "r6"],
        ["containers", "info", "nope"],
        ["containers", "label", "nope", "a=1"],
        ["containers", "rm", "nope"],
        ["tasks", "start", "nope"],
        ["tasks", "kill", "nope"],
        ["tasks", "rm", "nope"],
        ["tasks", "ps", "nope"],
        ["tasks", "exec", "--exec-id", "x", "nope", "true"],
        ["snapshots", "info", "nope"],
        ["snapshots", "rm", "nope"],
        ["snapshots", "--snapshotter", "nope", "ls"],
        ["snapshots", "--snapshotter", "nope", "prepare", "k"],
        ["content", "get", "sha256:zz"],
        ["content", "get", zero],
        ["leases", "rm", "nope"],
        ["-n", "Bad!", "containers", "ls"],
        ["-n", "Bad!", "tasks", "ls"],
        ["-n", "Bad!", "snapshots", "ls"],
        ["-n", "Bad!", "content", "ls"],
        ["-n", "Bad!", "leases", "ls"],
      ];
      const run = async (address: string) => {
        const printed: string[] = [];
        for (const [i, args] of steps.entries()) {
          let r = await ctrBytesAt(address, args, "er");
          // A kill answers before the process is reaped, in both: the listing after it waits
          // (bounded) for the exit to be recorded, to compare states, not timings.
          for (const until = Date.now() + 10_000; steps[i - 1]?.[1] === "kill" && r.stdout.toString("utf8").includes("RUNNING") && Date.now() < until; r = await ctrBytesAt(address, args, "er")) {
            await new Promise((res) => setTimeout(res, 50));
          }
          // Pull's progress aside (its output is compared elsewhere); tasks ls pads to the widest pid.
          const stdout = args[1] === "pull" ? progressShape(r.stdout.toString("utf8")) : r.stdout.toString("utf8");
          const stderr = args[1] === "pull" ? progressStderr(r.stderr) : r.stderr;
          printed.push(`${r.code}\n${stdout}${stderr}`.replace(/time="[^"]+"/g, "time=T").replace(/\b\d{3,}\b/g, "N").replace(/ {2,}/g, "  ").replaceAll(work, "<work>"));
        }
        return printed;
      };
      const theirs = await run(ctd.socket);
      const ours = await run(daemon.address);
      assert.ok(theirs[0]!.startsWith("0\n"), theirs[0]);
      // Where ck answers otherwise on purpose: each side's output, and why.
      const badNamespace = 'namespace validation: identifier "Bad!" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument';
      const known = new Map([
        [
          "-n Bad! snapshots ls",
          {
            containerd: `1\nctr: ${badNamespace}: unknown\n`,
            ck: `1\nctr: ${badNamespace}\n`,
            why: "containerd 1.6's Snapshots.List, a stream, returns its store's error unconverted (Unknown, as a bad filter there); ck answers InvalidArgument, as every other call does",
          },
        ],
      ]);
      assertSameOrKnown(steps, ours, theirs, known, (a) => a.replaceAll(work, "<work>"));
    } finally {
      rmSync(work, { recursive: true, force: true });
      await registry.stop();
    }
  });

  test("ctr lists the same state the same way from both", async () => {
    const ctr = async (address: string, args: string[]) => {
      const r = await runCommand(CTR, ["--address", address, "--namespace", "n1", ...args], {}, undefined, 30_000);
      return `${r.code}\n${r.stdout}`;
    };
    for (const args of [["namespaces", "ls"], ["images", "ls"], ["images", "ls", "-q"], ["containers", "ls"], ["containers", "ls", "-q"], ["containers", "info", "c5"], ["content", "ls"], ["snapshots", "ls"]]) {
      const [a, b] = [await ctr(ctd.socket, args), await ctr(daemon.address, args)];
      // containers info prints the times as RFC 3339; they differ between the daemons. (c1's
      // extensions differ as the first test says.)
      const times = (s: string) => s.replace(/"(CreatedAt|UpdatedAt)": "[^"]+"/g, '"$1": "<time>"');
      assert.ok(a.startsWith("0\n"), `ctr ${args.join(" ")} against containerd: ${a}`);
      assert.equal(times(b), times(a), `ctr ${args.join(" ")}`);
    }
  });
});
