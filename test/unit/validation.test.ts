// Specifications of the input rules containerd's metadata stores enforce: identifiers,
// labels, digests, images and update field masks.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  CONTAINER_FIELD_MASK,
  IMAGE_FIELD_MASK,
  digestProblem,
  isIdentifier,
  validateDigest,
  validateFieldMask,
  validateIdentifier,
  validateImage,
  validateImageName,
  validateLabels,
} from "../../src/commands/validation.js";
import { invalid } from "../helpers/errors.js";

const DIGEST = "sha256:" + "a".repeat(64);
const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: DIGEST, size: 100 };

test("identifiers: alphanumeric runs joined by single . _ -", () => {
  for (const ok of ["default", "k8s.io", "a_b-c.d", "A1", "0", "moby", "a.1"]) {
    assert.doesNotThrow(() => validateIdentifier("namespace", ok), ok);
  }
  for (const bad of ["-a", "a-", ".a", "a.", "a..b", "a._b", "a b", "a/b", "a~b", "é", "a*", "a>", "a\n"]) {
    assert.equal(isIdentifier(bad), false, bad);
    invalid(() => validateIdentifier("namespace", bad), /^namespace: identifier ".*" must match \^\[A-Za-z0-9\]\+/);
  }
});

test("identifiers: empty is refused, naming the field", () => {
  invalid(() => validateIdentifier("container.ID", ""), /^container\.ID: identifier must not be empty: invalid argument$/);
});

test("identifiers: 76 characters is the longest", () => {
  assert.doesNotThrow(() => validateIdentifier("namespace", "a".repeat(76)));
  invalid(() => validateIdentifier("namespace", "a".repeat(77)), /greater than maximum length \(76 characters\)/);
  assert.doesNotThrow(() => validateIdentifier("namespace", "a.b".repeat(25) + "c"), "76 with separators");
});

test("labels: key plus value at most 4096 bytes", () => {
  assert.doesNotThrow(() => validateLabels({ k: "v".repeat(4095) }));
  invalid(() => validateLabels({ k: "v".repeat(4096) }), /greater than maximum size \(4096 bytes\), key: k: invalid argument$/);
  assert.doesNotThrow(() => validateLabels({ ["k".repeat(4096)]: "" }));
  invalid(() => validateLabels({ ["k".repeat(4097)]: "" }));
  assert.doesNotThrow(() => validateLabels(undefined));
  assert.doesNotThrow(() => validateLabels({}));
});

test("labels: an empty key is InvalidArgument naming the field (containerd's store fails it as Unknown)", () => {
  invalid(() => validateLabels({ "": "v" }, "namespace.Labels"), /^namespace\.Labels: a label key must not be empty: invalid argument$/);
  invalid(() => validateLabels({ a: "1", "": "x" }));
  // With no value it sets nothing (an update mask's `labels.` names it so).
  assert.doesNotThrow(() => validateLabels({ "": "" }));
});

test("labels: sizes count UTF-8 bytes, not characters", () => {
  // "é" is 2 bytes, "€" 3, "😀" 4 (and 2 UTF-16 units)
  assert.doesNotThrow(() => validateLabels({ k: "é".repeat(2047) + "a" })); // 1 + 4094 + 1 = 4096
  invalid(() => validateLabels({ k: "é".repeat(2048) })); // 4097
  assert.doesNotThrow(() => validateLabels({ "😀": "€".repeat(1364) })); // 4 + 4092 = 4096
  invalid(() => validateLabels({ "😀": "€".repeat(1364) + "x" })); // 4097
});

test("labels: the message names the field and the key, cut to 10 bytes on a character boundary", () => {
  invalid(() => validateLabels({ "io.example.very.long.key": "x".repeat(4096) }, "image.Labels"), /^image\.Labels: .*key: io\.example: invalid argument$/);
  invalid(() => validateLabels({ "ééééééé": "x".repeat(4096) }), /key: ééééé: invalid argument$/);
});

test("digests: sha256, sha384 and sha512 with lowercase hex of the right length", () => {
  assert.equal(digestProblem(DIGEST), undefined);
  assert.equal(digestProblem("sha384:" + "0".repeat(96)), undefined);
  assert.equal(digestProblem("sha512:" + "f".repeat(128)), undefined);
  assert.equal(digestProblem("sha256:" + "a".repeat(63)), "invalid checksum digest length");
  assert.equal(digestProblem("sha256:" + "a".repeat(65)), "invalid checksum digest length");
  assert.equal(digestProblem("sha512:" + "a".repeat(64)), "invalid checksum digest length");
  assert.equal(digestProblem("sha256:" + "A".repeat(64)), "invalid checksum digest format");
  assert.equal(digestProblem("sha256:" + "g".repeat(64)), "invalid checksum digest format");
  assert.equal(digestProblem("md5:" + "a".repeat(32)), "unsupported digest algorithm");
  assert.equal(digestProblem("blake3:" + "a".repeat(64)), "unsupported digest algorithm");
  for (const bad of ["", "sha256", "sha256:", ":abc", "SHA256:" + "a".repeat(64), "sha 256:aa", "a" + "b".repeat(64)]) {
    assert.equal(digestProblem(bad), "invalid checksum digest format", bad);
  }
});

test("digests: the error names the field and the digest", () => {
  invalid(() => validateDigest("Target.Digest", "sha256:abc"), /^Target\.Digest "sha256:abc" invalid: invalid checksum digest length: invalid argument$/);
  assert.doesNotThrow(() => validateDigest("Target.Digest", DIGEST));
});

test("images: name, labels and target, in containerd's order and words", () => {
  assert.doesNotThrow(() => validateImage({ name: "docker.io/library/alpine:3", labels: { a: "b" }, target }));
  assert.doesNotThrow(() => validateImage({ name: "not a reference at all", target }), "names are not parsed");
  invalid(() => validateImageName(""), /^image name must not be empty/);
  invalid(() => validateImage({ name: "", target }), /^image name must not be empty/);
  invalid(() => validateImage({ name: "x", labels: { k: "v".repeat(4096) }, target }), /^image\.Labels: label key and value/);
  invalid(() => validateImage({ name: "x", target: { ...target, digest: "" } }), /^Target\.Digest "" invalid/);
  invalid(() => validateImage({ name: "x", target: { ...target, digest: "sha256:" + "A".repeat(64) } }), /invalid checksum digest format/);
  invalid(() => validateImage({ name: "x", target: { ...target, size: 0 } }), /^Target\.Size must be greater than zero/);
  invalid(() => validateImage({ name: "x", target: { ...target, size: -1 } }), /^Target\.Size must be greater than zero/);
  invalid(() => validateImage({ name: "x", target: { ...target, media_type: "" } }), /^Target\.MediaType must be set/);
  invalid(() => validateImage({ name: "x" }), /^Target\.Digest/);
  assert.doesNotThrow(() => validateImage({ name: "x", target: { ...target, size: 1n } }));
});

test("field masks: images accept labels, target, annotations and single keys", () => {
  const owner = 'image "docker.io/x:1"';
  assert.doesNotThrow(() => validateFieldMask(owner, [], IMAGE_FIELD_MASK));
  assert.doesNotThrow(() =>
    validateFieldMask(owner, ["labels", "target", "annotations", "labels.a.b", "annotations.org.opencontainers.image.ref.name", "labels."], IMAGE_FIELD_MASK),
  );
  for (const bad of ["name", "created_at", "target.digest", "labels_x", "Labels", "extensions.x", ""]) {
    invalid(
      () => validateFieldMask(owner, ["labels", bad], IMAGE_FIELD_MASK),
      new RegExp(`^cannot update ${JSON.stringify(bad).replace(/[.*]/g, "\\$&")} field on image "docker\\.io/x:1": invalid argument$`),
    );
  }
});

test("field masks: containers accept containerd 1.6's fields, snapshotkey spelled so", () => {
  assert.doesNotThrow(() =>
    validateFieldMask('"c1"', ["labels", "spec", "extensions", "image", "snapshotkey", "labels.x", "extensions.io.ck/x"], CONTAINER_FIELD_MASK),
  );
  for (const bad of ["snapshot_key", "snapshotter", "runtime", "runtime.name", "id", "sandbox", "annotations.x"]) {
    invalid(() => validateFieldMask('"c1"', [bad], CONTAINER_FIELD_MASK), new RegExp(`^cannot update "${bad.replace(/\./g, "\\.")}" field on "c1"`));
  }
});

test("RFC 3339 times as Go's time.RFC3339 reads them: a zone is required, fields in range; what JavaScript's Date would guess at is refused", async () => {
  const { parseRfc3339 } = await import("../../src/commands/validation.js");
  const { parseUntil } = await import("../../tools/replay/replay.js");
  assert.equal(parseRfc3339("2026-12-01T10:00:00Z")?.toISOString(), "2026-12-01T10:00:00.000Z");
  assert.equal(parseRfc3339("2026-12-01t11:30:00.123456789+01:30")?.toISOString(), "2026-12-01T10:00:00.123Z");
  for (const bad of ["1.5", "-1", "Dec 1 10:00", "2026-12-01", "2026-12-01T10:00:00", "2026-02-30T10:00:00Z", "2026-12-01T24:00:00Z", "2026-12-01T10:00:00+24:00", " 2026-12-01T10:00:00Z"]) {
    assert.equal(parseRfc3339(bad), undefined, bad);
  }
  assert.deepEqual(parseUntil("42"), { seq: 42 });
  assert.equal(parseUntil("2026-12-01T10:00:00Z", "--to").time?.toISOString(), "2026-12-01T10:00:00.000Z");
  // Times without a zone were read in the local zone, "1.5" as a day in 2001.
  assert.throws(() => parseUntil("1.5"), /--until "1.5" is neither a sequence number nor an RFC 3339 time/);
  assert.throws(() => parseUntil("2026-12-01T10:00:00", "--from"), /--from/);
});

test("the map key __proto__ is refused (labels, target annotations), naming the field; others are taken", () => {
  const proto = JSON.parse('{"__proto__":"x"}') as Record<string, string>;
  invalid(() => validateLabels(proto, "image.Labels"), /^image\.Labels: the key "__proto__" is not supported by ck/);
  invalid(() => validateImage({ name: "x", target: { ...target, annotations: proto } }), /^Target\.Annotations: the key "__proto__" is not supported/);
  validateLabels({ proto: "x", constructor: "y", __proto_: "z" });
});
