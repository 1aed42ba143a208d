// Specifications of manifest and index parsing: what each document yields (children, GC
// labels), and every refusal, each InvalidArgument naming the document's digest.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  MAX_MANIFEST_BYTES,
  MediaTypes,
  children,
  gcLabels,
  isConfig,
  isIndex,
  isLayer,
  isManifest,
  parseManifest,
} from "../../src/remotes/manifest.js";
import type { Descriptor } from "../../src/remotes/types.js";
import { invalid } from "../helpers/errors.js";

const dg = (c: string) => "sha256:" + c.repeat(64);
const MD = dg("d");
const config = { mediaType: MediaTypes.ociConfig, digest: dg("c"), size: 321 };
const layers = [
  { mediaType: MediaTypes.ociLayerGzip, digest: dg("1"), size: 10 },
  { mediaType: MediaTypes.ociLayerZstd, digest: dg("2"), size: 20, annotations: { a: "b" }, urls: ["https://x/y"] },
];
const enc = (o: unknown) => Buffer.from(typeof o === "string" ? o : JSON.stringify(o));
const desc = (mediaType: string): Descriptor => ({ mediaType, digest: MD, size: 1 });
const ociManifest = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers };
const ociIndex = {
  schemaVersion: 2,
  mediaType: MediaTypes.ociIndex,
  manifests: [
    { mediaType: MediaTypes.ociManifest, digest: dg("a"), size: 500, platform: { os: "linux", architecture: "amd64" } },
    { mediaType: MediaTypes.ociManifest, digest: dg("b"), size: 501, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
  ],
};
const manifestRe = new RegExp(`^manifest ${MD}: `);

test("an OCI manifest yields its config and layers, config first", () => {
  const p = parseManifest(desc(MediaTypes.ociManifest), enc(ociManifest));
  assert.equal(p.kind, "manifest");
  assert.equal(p.mediaType, MediaTypes.ociManifest);
  assert.deepEqual(p.config, config);
  assert.deepEqual(p.layers, layers);
  assert.deepEqual(p.manifests, []);
  assert.deepEqual(children(p), [config, ...layers]);
  assert.deepEqual(gcLabels(p), {
    "containerd.io/gc.ref.content.config": config.digest,
    "containerd.io/gc.ref.content.l.0": layers[0].digest,
    "containerd.io/gc.ref.content.l.1": layers[1].digest,
  });
});

test("an OCI index yields its manifests with platforms", () => {
  const p = parseManifest(desc(MediaTypes.ociIndex), enc(ociIndex));
  assert.equal(p.kind, "index");
  assert.deepEqual(p.manifests, ociIndex.manifests);
  assert.deepEqual(children(p), ociIndex.manifests);
  assert.deepEqual(gcLabels(p), { "containerd.io/gc.ref.content.m.0": dg("a"), "containerd.io/gc.ref.content.m.1": dg("b") });
});

test("GC labels are named by each child's media type, as containerd's ChildGCLabels: an artifact's config and blobs, a nested index, a foreign layer", () => {
  const artifact = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociEmpty, digest: dg("c"), size: 2 },
    layers: [
      { mediaType: "application/vnd.in-toto+json", digest: dg("1"), size: 10 },
      { mediaType: MediaTypes.ociLayerGzip, digest: dg("2"), size: 10 },
      { mediaType: MediaTypes.dockerLayerForeignGzip, digest: dg("3"), size: 10 },
    ],
  };
  assert.deepEqual(gcLabels(parseManifest(desc(MediaTypes.ociManifest), enc(artifact))), {
    "containerd.io/gc.ref.content.0": dg("c"),
    "containerd.io/gc.ref.content.1": dg("1"),
    "containerd.io/gc.ref.content.l.0": dg("2"),
    "containerd.io/gc.ref.content.l.1": dg("3"),
  });
  const nested = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ mediaType: MediaTypes.ociIndex, digest: dg("e"), size: 5 }, { mediaType: MediaTypes.dockerManifest, digest: dg("f"), size: 5 }] };
  assert.deepEqual(gcLabels(parseManifest(desc(MediaTypes.ociIndex), enc(nested))), { "containerd.io/gc.ref.content.0": dg("e"), "containerd.io/gc.ref.content.m.0": dg("f") });
});

test("docker schema 2 manifests and lists parse", () => {
  const m = { schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config: { ...config, mediaType: MediaTypes.dockerConfig }, layers: [{ ...layers[0], mediaType: MediaTypes.dockerLayerGzip }] };
  assert.equal(parseManifest(desc(MediaTypes.dockerManifest), enc(m)).layers.length, 1);
  const l = { ...ociIndex, mediaType: MediaTypes.dockerManifestList, manifests: ociIndex.manifests.map((d) => ({ ...d, mediaType: MediaTypes.dockerManifest })) };
  assert.equal(parseManifest(desc(MediaTypes.dockerManifestList), enc(l)).manifests.length, 2);
});

test("OCI documents without mediaType are accepted when their shape fits the descriptor", () => {
  const { mediaType: _m, ...bare } = ociManifest;
  assert.equal(parseManifest(desc(MediaTypes.ociManifest), enc(bare)).kind, "manifest");
  const { mediaType: _i, ...bareIndex } = ociIndex;
  assert.equal(parseManifest(desc(MediaTypes.ociIndex), enc(bareIndex)).kind, "index");
  invalid(() => parseManifest(desc(MediaTypes.ociIndex), enc(bare)), /index .* has config or layers fields/);
  invalid(() => parseManifest(desc(MediaTypes.ociManifest), enc(bareIndex)), /image manifest .* has a manifests field/);
});

test("as containerd's validateMediaType: a Docker document under an OCI descriptor (or the reverse), or one without mediaType, is read as the descriptor says; a manifest taken for an index (or the reverse) is refused", () => {
  const { mediaType: _m, ...bare } = ociManifest;
  assert.equal(parseManifest(desc(MediaTypes.dockerManifest), enc(bare)).kind, "manifest");
  assert.equal(parseManifest(desc(MediaTypes.ociManifest), enc({ ...ociManifest, mediaType: MediaTypes.dockerManifest })).mediaType, MediaTypes.ociManifest);
  assert.equal(parseManifest(desc(MediaTypes.dockerManifest), enc({ ...ociManifest, mediaType: MediaTypes.ociManifest })).kind, "manifest");
  invalid(() => parseManifest(desc(MediaTypes.ociManifest), enc({ ...ociManifest, mediaType: MediaTypes.ociIndex })), /expected a manifest .* but found an index/);
  invalid(() => parseManifest(desc(MediaTypes.ociIndex), enc({ ...ociIndex, mediaType: MediaTypes.dockerManifest })), /expected an index .* but found a manifest/);
});

test("an empty layer list is allowed (artifacts)", () => {
  assert.deepEqual(parseManifest(desc(MediaTypes.ociManifest), enc({ ...ociManifest, layers: [] })).layers, []);
});

test("refusals name the manifest digest and the problem", () => {
  const cases: Array<[string, Descriptor, Uint8Array, RegExp]> = [
    ["too big", desc(MediaTypes.ociManifest), Buffer.alloc(MAX_MANIFEST_BYTES + 1, 0x20), /larger than the 4194304 byte limit/],
    ["not JSON", desc(MediaTypes.ociManifest), enc("{nope"), /not valid JSON/],
    ["JSON array", desc(MediaTypes.ociManifest), enc([]), /not a JSON object/],
    ["unknown descriptor type", desc("application/json"), enc(ociManifest), /media type "application\/json" is not a known manifest or index type/],
    ["layer as manifest", desc(MediaTypes.ociLayerGzip), enc(ociManifest), /not a known manifest or index type/],
    ["schema 1", desc(MediaTypes.dockerSchema1SignedManifest), enc({ schemaVersion: 1 }), /schema 1 manifests .* not supported/],
    ["schemaVersion 1", desc(MediaTypes.ociManifest), enc({ ...ociManifest, schemaVersion: 1 }), /schemaVersion is 1, want 2/],
    ["schemaVersion missing", desc(MediaTypes.ociManifest), enc({ ...ociManifest, schemaVersion: undefined }), /schemaVersion is undefined/],
    ["index as manifest", desc(MediaTypes.ociManifest), enc(ociIndex), /expected a manifest .* but found an index/],
    ["mediaType not a string", desc(MediaTypes.ociManifest), enc({ ...ociManifest, mediaType: 7 }), /mediaType field is not a string/],
    ["config missing", desc(MediaTypes.ociManifest), enc({ ...ociManifest, config: undefined }), /config field is missing/],
    ["layers missing", desc(MediaTypes.ociManifest), enc({ ...ociManifest, layers: undefined }), /layers field is missing or not an array/],
    ["layers not array", desc(MediaTypes.ociManifest), enc({ ...ociManifest, layers: {} }), /layers field is missing or not an array/],
    ["manifests missing", desc(MediaTypes.ociIndex), enc({ ...ociIndex, manifests: undefined }), /manifests field is missing/],
    ["config not an object", desc(MediaTypes.ociManifest), enc({ ...ociManifest, config: "x" }), /config: descriptor is not a JSON object/],
    ["layer without mediaType", desc(MediaTypes.ociManifest), enc({ ...ociManifest, layers: [{ digest: dg("1"), size: 1 }] }), /layers\[0\]: descriptor has no mediaType/],
    ["short digest", desc(MediaTypes.ociManifest), enc({ ...ociManifest, layers: [{ ...layers[0], digest: "sha256:abc" }] }), /layers\[0\]: digest "sha256:abc" is not sha256:<64 lowercase hex>/],
    ["upper-case digest", desc(MediaTypes.ociManifest), enc({ ...ociManifest, config: { ...config, digest: "sha256:" + "C".repeat(64) } }), /config: digest .* is not sha256/],
    ["other algorithm", desc(MediaTypes.ociManifest), enc({ ...ociManifest, config: { ...config, digest: "sha512:" + "c".repeat(128) } }), /config: digest/],
    ["negative size", desc(MediaTypes.ociManifest), enc({ ...ociManifest, layers: [layers[0], { ...layers[1], size: -1 }] }), /layers\[1\]: size -1 is not a non-negative integer/],
    ["fractional size", desc(MediaTypes.ociManifest), enc({ ...ociManifest, layers: [{ ...layers[0], size: 1.5 }] }), /size 1.5 is not/],
    ["string size", desc(MediaTypes.ociManifest), enc({ ...ociManifest, layers: [{ ...layers[0], size: "10" }] }), /size "10" is not/],
    ["bad annotations", desc(MediaTypes.ociManifest), enc({ ...ociManifest, layers: [{ ...layers[0], annotations: { a: 1 } }] }), /annotations is not an object of strings/],
    ["bad urls", desc(MediaTypes.ociManifest), enc({ ...ociManifest, layers: [{ ...layers[0], urls: "x" }] }), /urls is not an array of strings/],
    ["bad platform", desc(MediaTypes.ociIndex), enc({ ...ociIndex, manifests: [{ ...ociIndex.manifests[0], platform: { os: "linux" } }] }), /manifests\[0\]: platform: architecture is missing/],
    ["bad index entry digest", desc(MediaTypes.ociIndex), enc({ ...ociIndex, manifests: [{ ...ociIndex.manifests[0], digest: "nope" }] }), /manifests\[0\]: digest "nope"/],
  ];
  for (const [name, d, bytes, problem] of cases) {
    invalid(() => parseManifest(d, bytes), problem);
    invalid(() => parseManifest(d, bytes), manifestRe);
    assert.ok(name);
  }
});

test("media type predicates", () => {
  assert.ok(isManifest(MediaTypes.ociManifest) && isManifest(MediaTypes.dockerManifest) && !isManifest(MediaTypes.ociIndex));
  assert.ok(isIndex(MediaTypes.ociIndex) && isIndex(MediaTypes.dockerManifestList) && !isIndex(MediaTypes.ociManifest));
  assert.ok(isConfig(MediaTypes.ociConfig) && isConfig(MediaTypes.dockerConfig) && !isConfig(MediaTypes.ociLayer));
  for (const l of [
    MediaTypes.ociLayer,
    MediaTypes.ociLayerGzip,
    MediaTypes.ociLayerZstd,
    MediaTypes.ociLayerNonDistributableGzip,
    MediaTypes.dockerLayer,
    MediaTypes.dockerLayerGzip,
    MediaTypes.dockerLayerForeignGzip,
    MediaTypes.ociLayerGzip + "+encrypted",
  ]) {
    assert.ok(isLayer(l), l);
  }
  assert.ok(!isLayer(MediaTypes.ociConfig) && !isLayer(MediaTypes.ociManifest));
});
