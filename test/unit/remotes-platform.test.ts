// Specifications of platforms: parsing, this machine's default, and containerd's default
// matcher choosing index entries (arm64 variant normalisation, compatible fallbacks).
import { test } from "node:test";
import assert from "node:assert/strict";
import { arch } from "node:os";
import { defaultPlatform, formatPlatform, manifestsFor, matchPlatform, parsePlatform, pushedManifest, selectManifests } from "../../src/remotes/platform.js";
import { MediaTypes, type ParsedManifest } from "../../src/remotes/manifest.js";
import type { Descriptor, Platform } from "../../src/remotes/types.js";
import { invalid } from "../helpers/errors.js";

test("the default platform is linux with a GOARCH-style architecture", () => {
  const p = defaultPlatform();
  assert.equal(p.os, "linux");
  const expected: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", s390x: "s390x", riscv64: "riscv64" };
  if (expected[arch()]) assert.equal(p.architecture, expected[arch()]);
  if (arch() === "arm64") assert.equal(p.variant, "v8");
  if (arch() === "x64") assert.equal(p.variant, undefined);
});

test("platform strings parse and normalise", () => {
  const table: Array<[string, Platform]> = [
    ["linux/amd64", { os: "linux", architecture: "amd64" }],
    ["linux/arm64/v8", { os: "linux", architecture: "arm64", variant: "v8" }],
    ["linux/arm64", { os: "linux", architecture: "arm64" }],
    ["linux/aarch64", { os: "linux", architecture: "arm64" }],
    ["Linux/x86_64", { os: "linux", architecture: "amd64" }],
    ["linux/arm", { os: "linux", architecture: "arm", variant: "v7" }],
    ["linux/arm/6", { os: "linux", architecture: "arm", variant: "v6" }],
    ["linux/armhf", { os: "linux", architecture: "arm", variant: "v7" }],
    ["linux/i386", { os: "linux", architecture: "386" }],
    ["windows/amd64", { os: "windows", architecture: "amd64" }],
    ["s390x", { os: "linux", architecture: "s390x" }],
  ];
  for (const [s, p] of table) assert.deepEqual(parsePlatform(s), p, s);
  assert.deepEqual(parsePlatform("linux"), defaultPlatform());
  assert.equal(formatPlatform({ os: "linux", architecture: "arm64", variant: "v8" }), "linux/arm64/v8");
});

test("bad platform strings are InvalidArgument naming them", () => {
  const table: Array<[string, RegExp]> = [
    ["", /must not be empty/],
    ["linux/amd64/v2/x", /want os\[\/arch\[\/variant\]\]/],
    ["linux//v8", /empty component/],
    ["linux/amd 64", /invalid component "amd 64"/],
    ["plan10/amd64", /unknown operating system "plan10"/],
    ["linux/z80", /unknown architecture "z80"/],
    ["nonsense", /unknown operating system or architecture "nonsense"/],
  ];
  for (const [s, re] of table) {
    invalid(() => parsePlatform(s), re);
    invalid(() => parsePlatform(s), /^platform "/);
  }
});

test("matching follows containerd's default matcher", () => {
  const amd64 = { os: "linux", architecture: "amd64" };
  const arm64v8 = { os: "linux", architecture: "arm64", variant: "v8" };
  const armv7 = { os: "linux", architecture: "arm", variant: "v7" };
  // exact and normalised
  assert.ok(matchPlatform(amd64, amd64));
  assert.ok(matchPlatform({ os: "linux", architecture: "x86_64" }, amd64));
  assert.ok(matchPlatform({ os: "linux", architecture: "arm64" }, arm64v8), "arm64 without variant runs on arm64/v8");
  assert.ok(matchPlatform(arm64v8, { os: "linux", architecture: "arm64" }), "arm64/v8 runs on arm64");
  assert.ok(!matchPlatform({ os: "linux", architecture: "arm64", variant: "v9" }, arm64v8), "v9 does not run on v8");
  // compatible fallbacks
  assert.ok(matchPlatform({ os: "linux", architecture: "386" }, amd64), "386 on amd64");
  assert.ok(matchPlatform({ os: "linux", architecture: "arm", variant: "v6" }, armv7), "arm v6 on arm v7");
  assert.ok(!matchPlatform({ os: "linux", architecture: "arm", variant: "v8" }, armv7), "arm v8 not on arm v7");
  assert.ok(matchPlatform({ os: "linux", architecture: "arm", variant: "v7" }, arm64v8), "arm v7 on arm64");
  assert.ok(matchPlatform({ os: "linux", architecture: "amd64" }, { os: "linux", architecture: "amd64", variant: "v3" }), "amd64 v1 on v3");
  assert.ok(!matchPlatform({ os: "linux", architecture: "amd64", variant: "v3" }, amd64), "amd64 v3 not on v1");
  // mismatches
  assert.ok(!matchPlatform(amd64, arm64v8));
  assert.ok(!matchPlatform({ os: "windows", architecture: "amd64" }, amd64));
  assert.ok(!matchPlatform({ os: "unknown", architecture: "unknown" }, amd64), "attestation entries never match");
  // a plain manifest has no platform, and matches
  assert.ok(matchPlatform(undefined, amd64));
});

test("selectManifests keeps the matching entries, best first, platform-less last", () => {
  const d = (c: string, platform?: Platform, mediaType: string = MediaTypes.ociManifest): Descriptor => ({
    mediaType,
    digest: "sha256:" + c.repeat(64),
    size: 1,
    ...(platform ? { platform } : {}),
  });
  const noPlatform = d("0");
  const v6 = d("1", { os: "linux", architecture: "arm", variant: "v6" });
  const amd = d("2", { os: "linux", architecture: "amd64" });
  const v7 = d("3", { os: "linux", architecture: "arm", variant: "v7" });
  const arm64 = d("4", { os: "linux", architecture: "arm64" });
  const attestation = d("5", { os: "unknown", architecture: "unknown" });
  const notAManifest = d("6", { os: "linux", architecture: "amd64" }, MediaTypes.ociLayerGzip);
  const i386 = d("7", { os: "linux", architecture: "386" });
  const index: ParsedManifest = { kind: "index", mediaType: MediaTypes.ociIndex, layers: [], manifests: [noPlatform, v6, i386, amd, v7, arm64, attestation, notAManifest] };
  assert.deepEqual(selectManifests(index, { os: "linux", architecture: "arm", variant: "v7" }), [v7, v6, noPlatform]);
  assert.deepEqual(selectManifests(index, { os: "linux", architecture: "arm64", variant: "v8" }), [arm64, v7, v6, noPlatform]);
  assert.deepEqual(selectManifests(index, { os: "linux", architecture: "amd64" }), [amd, i386, noPlatform]);
  assert.deepEqual(selectManifests(index, { os: "linux", architecture: "s390x" }), [noPlatform]);

  // What a fetch takes: the best entry per wanted platform (not every compatible one:
  // arm/v6 and arm/v7 listed before arm64 are not fetched on arm64, nor 386 on amd64), and the
  // entries without a platform, in the index's order.
  assert.deepEqual(manifestsFor(index, [{ os: "linux", architecture: "arm64", variant: "v8" }]), [noPlatform, arm64]);
  assert.deepEqual(manifestsFor(index, [{ os: "linux", architecture: "amd64" }]), [noPlatform, amd]);
  assert.deepEqual(manifestsFor(index, [{ os: "linux", architecture: "amd64" }, { os: "linux", architecture: "arm", variant: "v7" }]), [noPlatform, amd, v7]);
  // Only older compatible entries: the best of them.
  const armOnly: ParsedManifest = { ...index, manifests: [v6, v7] };
  assert.deepEqual(manifestsFor(armOnly, [{ os: "linux", architecture: "arm64", variant: "v8" }]), [v7]);
  assert.deepEqual(manifestsFor(armOnly, [{ os: "linux", architecture: "s390x" }]), []);
});

test("pushedManifest: a push with --platform sends the one manifest the platforms select, or refuses before sending anything", () => {
  const d = (c: string, platform?: Platform): Descriptor => ({ mediaType: MediaTypes.ociManifest, digest: "sha256:" + c.repeat(64), size: 1, ...(platform ? { platform } : {}) });
  const amd = d("1", { os: "linux", architecture: "amd64" });
  const arm64 = d("2", { os: "linux", architecture: "arm64" });
  const v7 = d("3", { os: "linux", architecture: "arm", variant: "v7" });
  const attestation = d("4", { os: "unknown", architecture: "unknown" });
  const index: ParsedManifest = { kind: "index", mediaType: MediaTypes.ociIndex, layers: [], manifests: [amd, arm64, v7, attestation] };
  const what = 'push of image "app": index sha256:ii';
  assert.equal(pushedManifest(index, [{ os: "linux", architecture: "arm64" }], what), arm64);
  assert.equal(pushedManifest(index, [{ os: "linux", architecture: "arm64", variant: "v8" }], what), arm64, "normalised as the matcher does");
  // The best entry for the platform, as a pull would take: arm/v7 for an arm/v8 without arm64.
  assert.equal(pushedManifest({ ...index, manifests: [amd, v7] }, [{ os: "linux", architecture: "arm64" }], what), v7);
  // Two platforms that select the same entry are one.
  assert.equal(pushedManifest(index, [{ os: "linux", architecture: "amd64" }, { os: "linux", architecture: "amd64", variant: "v1" }], what), amd);
  invalid(
    () => pushedManifest(index, [{ os: "linux", architecture: "amd64" }, { os: "linux", architecture: "arm64" }], what),
    /^push of image "app": index sha256:ii: --platform linux\/amd64, linux\/arm64 selects 2 of its manifests \(the index has linux\/amd64, linux\/arm64, linux\/arm\/v7, unknown\/unknown\); a push with --platform sends one platform's manifest under the tag: push each platform to its own tag, or push without --platform/,
  );
  invalid(() => pushedManifest(index, [{ os: "linux", architecture: "s390x" }], what), /index sha256:ii: no manifest for linux\/s390x \(the index has linux\/amd64, linux\/arm64, linux\/arm\/v7, unknown\/unknown\)/);
  // An entry without a platform serves every platform, as for a fetch.
  const plain = d("5");
  assert.equal(pushedManifest({ ...index, manifests: [amd, plain] }, [{ os: "linux", architecture: "s390x" }], what), plain);
});
