// Specifications of image reference parsing: docker's normalisation, the canonical form, and
// every malformed reference refused as InvalidArgument naming the reference and the problem.
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatReference, manifestReference, parseReference } from "../../src/remotes/reference.js";
import { invalid } from "../helpers/errors.js";

const D = "sha256:" + "0123456789abcdef".repeat(4);

test("references normalise as docker's do", () => {
  const table: Array<[string, string, object]> = [
    ["redis", "docker.io/library/redis:latest", { domain: "docker.io", repository: "library/redis", tag: "latest" }],
    ["redis:7", "docker.io/library/redis:7", { domain: "docker.io", repository: "library/redis", tag: "7" }],
    ["foo/bar", "docker.io/foo/bar:latest", { domain: "docker.io", repository: "foo/bar", tag: "latest" }],
    ["docker.io/redis", "docker.io/library/redis:latest", { domain: "docker.io", repository: "library/redis", tag: "latest" }],
    ["index.docker.io/foo/bar:1", "docker.io/foo/bar:1", { domain: "docker.io", repository: "foo/bar", tag: "1" }],
    ["127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t", { domain: "127.0.0.1:5000", repository: "a/b", tag: "t" }],
    ["localhost/x", "localhost/x:latest", { domain: "localhost", repository: "x", tag: "latest" }],
    ["localhost:5000/x", "localhost:5000/x:latest", { domain: "localhost:5000", repository: "x", tag: "latest" }],
    ["ghcr.io/o/r/deep/er:v1.2-rc_3", "ghcr.io/o/r/deep/er:v1.2-rc_3", { domain: "ghcr.io", repository: "o/r/deep/er", tag: "v1.2-rc_3" }],
    ["Example.COM/a", "Example.COM/a:latest", { domain: "Example.COM", repository: "a", tag: "latest" }],
    ["[::1]:5000/a", "[::1]:5000/a:latest", { domain: "[::1]:5000", repository: "a", tag: "latest" }],
    [`name@${D}`, `docker.io/library/name@${D}`, { domain: "docker.io", repository: "library/name", digest: D }],
    [`name:tag@${D}`, `docker.io/library/name:tag@${D}`, { domain: "docker.io", repository: "library/name", tag: "tag", digest: D }],
    [`h.io:443/a_b/c__d/e-f/g.h:x@${D}`, `h.io:443/a_b/c__d/e-f/g.h:x@${D}`, { domain: "h.io:443", repository: "a_b/c__d/e-f/g.h", tag: "x", digest: D }],
    ["a---b", "docker.io/library/a---b:latest", { domain: "docker.io", repository: "library/a---b", tag: "latest" }],
  ];
  for (const [input, canonical, parsed] of table) {
    const r = parseReference(input);
    assert.deepEqual(r, parsed, input);
    assert.equal(formatReference(r), canonical, input);
    assert.deepEqual(parseReference(canonical), r, `${canonical} round-trips`);
  }
});

test("a tag of 128 characters is the longest", () => {
  assert.equal(parseReference(`a:${"t".repeat(128)}`).tag, "t".repeat(128));
  invalid(() => parseReference(`a:${"t".repeat(129)}`), /invalid tag/);
});

test("the manifest endpoint is asked for the digest when pinned, else the tag", () => {
  assert.equal(manifestReference(parseReference(`a:t@${D}`)), D);
  assert.equal(manifestReference(parseReference("a:t")), "t");
  assert.equal(manifestReference({ domain: "h", repository: "r" }), "latest");
});

test("bad references are InvalidArgument naming the reference and the problem", () => {
  const table: Array<[string, RegExp]> = [
    ["", /must not be empty/],
    ["Redis", /repository name must be lowercase/],
    ["foo/Bar", /repository name must be lowercase/],
    ["a:-tag", /invalid tag "-tag"/],
    ["a:ta g", /invalid tag/],
    ["a:", /invalid tag ""/],
    ["a//b", /empty path component/],
    ["a/", /empty path component/],
    [":tag", /missing repository name/],
    ["localhost/", /missing repository name/],
    ["a/b_", /invalid path component "b_"/],
    ["a/.b", /invalid path component ".b"/],
    ["a/b..c", /invalid path component "b..c"/],
    ["a/b___c", /invalid path component "b___c"/],
    ["a@sha256:abc", /invalid digest "sha256:abc"/],
    ["a@sha256:" + "A".repeat(64), /invalid digest .*64 lowercase hex/],
    ["a@md5:" + "a".repeat(32), /unsupported digest algorithm/],
    ["a@", /invalid digest ""/],
    ["-host.io/a", /invalid path component "-host.io"|invalid registry host/],
    ["ho_st.io/a", /invalid registry host "ho_st.io"/],
    ["host.io:port/a", /invalid tag|invalid registry host/],
    ["a".repeat(64).replace(/a/g, "f"), /64-byte hexadecimal/],
    ["h.io/" + "a".repeat(251), /longer than 255/],
  ];
  for (const [input, problem] of table) {
    invalid(() => parseReference(input), problem);
    if (input) invalid(() => parseReference(input), new RegExp(`image reference ${JSON.stringify(input).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
  }
});
