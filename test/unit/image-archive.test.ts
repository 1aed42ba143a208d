// Specifications of what image archives name and how they write it, as containerd's archive
// package does (images/archive/reference.go, importer.go, exporter.go): OCI ref names, docker's
// familiar and normalised names, ctr's naming of imported images, Go's JSON, the platform
// matchers of export and import.
import { test } from "node:test";
import assert from "node:assert/strict";
import { defaultPlatforms, dockerReference, familiarReference, goDescriptor, goJson, goMap, imageName, ociReferenceName, orderedPlatforms, refTranslator } from "../../src/cli/image-archive.js";
import { defaultPlatform } from "../../src/remotes/platform.js";
import { invalid } from "../helpers/errors.js";

const D = "sha256:" + "0123456789abcdef".repeat(4);

test("the OCI ref name is what follows the first : or @ after the host (containerd's reference.Parse Object), the name itself when that refuses it", () => {
  const table: Array<[string, string]> = [
    ["docker.io/library/alpine:latest", "latest"],
    ["example.com/multi:v1", "v1"],
    ["127.0.0.1:5000/a/b:t", "t"],
    [`example.com/x@${D}`, `@${D}`],
    [`example.com/x:v1@${D}`, `v1@${D}`],
    ["example.com/x", ""],
    ["foo", ""],
    ["foo:bar", "foo:bar"],
    ["/x:1", "/x:1"],
    ["a://b/c:1", "a://b/c:1"],
  ];
  for (const [name, want] of table) assert.equal(ociReferenceName(name), want, name);
});

test("manifest.json's RepoTags are docker's familiar names with a tag; a docker archive's tags are normalised, a digest winning over a tag", () => {
  assert.equal(familiarReference("docker.io/library/alpine:latest"), "alpine:latest");
  assert.equal(familiarReference("docker.io/library/alpine"), "alpine:latest");
  assert.equal(familiarReference("docker.io/foo/bar:1"), "foo/bar:1");
  assert.equal(familiarReference("127.0.0.1:5000/arch/app:v1"), "127.0.0.1:5000/arch/app:v1");
  assert.equal(familiarReference(`example.com/x@${D}`), `example.com/x@${D}`);
  assert.equal(dockerReference("dock:1"), "docker.io/library/dock:1");
  assert.equal(dockerReference("dock"), "docker.io/library/dock:latest");
  assert.equal(dockerReference(`dock:1@${D}`), `docker.io/library/dock@${D}`);
  invalid(() => familiarReference("x/Upper:1"), /repository name must be lowercase/);
});

test("imported images are named as ctr names them: the image name annotation as it is, else the ref name under the base name", () => {
  const add = refTranslator("import-2026-12-03", false);
  const filter = refTranslator("example.com/multi", true);
  assert.equal(imageName({ "io.containerd.image.name": "a.example/x:1", "org.opencontainers.image.ref.name": "1" }, filter), "a.example/x:1");
  assert.equal(imageName({ "org.opencontainers.image.ref.name": "v1" }, add), "import-2026-12-03:v1");
  assert.equal(imageName({ "org.opencontainers.image.ref.name": "v1" }, filter), "example.com/multi:v1");
  assert.equal(imageName({ "org.opencontainers.image.ref.name": "example.com/multi:v2" }, filter), "example.com/multi:v2");
  assert.equal(imageName({ "org.opencontainers.image.ref.name": "example.com/multiple:v2" }, filter), "");
  assert.equal(imageName({ "org.opencontainers.image.ref.name": "other.io/x:1" }, filter), "");
  assert.equal(imageName({ "org.opencontainers.image.ref.name": "other.io/x:1" }, add), "other.io/x:1");
  assert.equal(imageName({}, add), "");
  assert.equal(imageName(undefined, add), "");
});

test("JSON as Go writes it: struct fields in order, maps sorted, HTML characters escaped, empty fields left out", () => {
  const d = goDescriptor({ mediaType: "m", digest: D, size: 3, annotations: { z: "1", a: "<&>" }, platform: { os: "linux", architecture: "arm64", variant: "v8" } });
  assert.equal(
    goJson({ schemaVersion: 2, manifests: [d] }),
    `{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"${D}","size":3,"annotations":{"a":"\\u003c\\u0026\\u003e","z":"1"},"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}`,
  );
  assert.equal(goJson(goDescriptor({ mediaType: "m", digest: D, size: 0, annotations: {} })), `{"mediaType":"m","digest":"${D}","size":0}`);
  assert.equal(goJson({ m: goMap({ b: "2", a: "1" }), l: null }), `{"m":{"a":"1","b":"2"},"l":null}`);
});

test("platforms: export's matcher is exact and prefers the first given; import's default also takes what this machine runs", () => {
  const ordered = orderedPlatforms([{ os: "linux", architecture: "arm64" }, { os: "linux", architecture: "amd64" }]);
  assert.equal(ordered.match({ os: "linux", architecture: "aarch64" }), true);
  assert.equal(ordered.match({ os: "linux", architecture: "386" }), false);
  assert.equal(ordered.less({ os: "linux", architecture: "arm64" }, { os: "linux", architecture: "amd64" }), true);
  assert.equal(ordered.less({ os: "linux", architecture: "amd64" }, { os: "linux", architecture: "arm64" }), false);
  const here = defaultPlatform();
  assert.equal(defaultPlatforms().match(here), true);
  if (here.architecture === "amd64") {
    assert.equal(defaultPlatforms().match({ os: "linux", architecture: "386" }), true);
    assert.equal(orderedPlatforms([here]).match({ os: "linux", architecture: "386" }), false);
  }
});
