// The pure parts of ck's pull display and transfer plumbing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { bar, bytes, jobLine, shortName, summaryLine } from "../../src/cli/progress.js";
import { eachLimit, isNonDistributable, mapLimit, kindOf, refFor, sourceLabelKey } from "../../src/cli/transfer.js";

const D = "sha256:" + "ab".repeat(32);

test("bar: containerd's |+++   | at 40 columns, clamped", () => {
  assert.equal(bar(0), `|${" ".repeat(38)}|`);
  assert.equal(bar(1), `|${"+".repeat(38)}|`);
  assert.equal(bar(0.5), `|${"+".repeat(19)}${" ".repeat(19)}|`);
  assert.equal(bar(2), bar(1));
  assert.equal(bar(NaN), bar(0));
  assert.equal(bar(0.5, 12), "|+++++     |");
});

test("bytes: binary units with one decimal", () => {
  assert.equal(bytes(0), "0.0 B");
  assert.equal(bytes(1536), "1.5 KiB");
  assert.equal(bytes(12 * 1024 * 1024), "12.0 MiB");
  assert.equal(bytes(3 * 1024 ** 3), "3.0 GiB");
});

test("jobLine: downloading shows the bar and offset/total; done a full bar; waiting no bar", () => {
  const name = `layer-${D}`;
  assert.equal(jobLine({ name, status: "downloading", offset: 12 << 20, total: 30 << 20 }), `${name}: downloading  ${bar(0.4)} 12.0 MiB/30.0 MiB`);
  assert.equal(jobLine({ name, status: "done", offset: 1, total: 1 }), `${name}: done         ${bar(1)}`);
  assert.equal(jobLine({ name, status: "waiting", offset: 0, total: 1 }), `${name}: waiting`);
  assert.equal(jobLine({ name: "a", status: "waiting", offset: 0, total: 1 }, 4), "a:    waiting");
});

test("summaryLine: elapsed, total and the network rate", () => {
  assert.equal(summaryLine(900, 86 * 1024 * 1024, 86 * 1024 * 1024), `elapsed: 0.9 s total: 86.0 MiB (95.6 MiB/s)`);
  assert.equal(summaryLine(0, 10, 10), "elapsed: 0.0 s total: 10.0 B (0.0 B/s)");
});

test("shortName keeps 12 hex digits of a digest", () => {
  assert.equal(shortName(`layer-${D}`), `layer-sha256:${"ab".repeat(6)}`);
  assert.equal(shortName("docker.io/library/redis:latest"), "docker.io/library/redis:latest");
});

test("refFor: the refs ctr writes under (containerd's remotes.MakeRefKey)", () => {
  assert.equal(refFor({ mediaType: "application/vnd.oci.image.index.v1+json", digest: D, size: 1 }), `index-${D}`);
  assert.equal(refFor({ mediaType: "application/vnd.docker.distribution.manifest.v2+json", digest: D, size: 1 }), `manifest-${D}`);
  assert.equal(refFor({ mediaType: "application/vnd.oci.image.config.v1+json", digest: D, size: 1 }), `config-${D}`);
  assert.equal(kindOf({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: D, size: 1 }), "layer");
  // containerd's MakeRefKey: a Docker image config is a config (and so its bytes come back
  // from ckd's Fetch.Blob for the unpack, return_bytes_max), not a layer.
  assert.equal(refFor({ mediaType: "application/vnd.docker.container.image.v1+json", digest: D, size: 1 }), `config-${D}`);
  assert.equal(refFor({ mediaType: "application/vnd.containerd.container.checkpoint.config.v1+proto", digest: D, size: 1 }), `config-${D}`);
  assert.equal(refFor({ mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", digest: D, size: 1 }), `layer-${D}`);
  assert.equal(refFor({ mediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", digest: D, size: 1 }), `layer-${D}`);
  assert.equal(refFor({ mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", digest: D, size: 1 }), `layer-${D}`);
  // Types containerd 1.6 does not know: unknown-, whatever their name says.
  for (const mediaType of ["application/vnd.oci.empty.v1+json", "application/vnd.example.config.v1+json", "application/octet-stream", "application/vnd.docker.image.rootfs.diff.tar.zstd"]) {
    assert.equal(refFor({ mediaType, digest: D, size: 1 }), `unknown-${D}`, mediaType);
  }
  // A ref name annotation goes before the digest.
  assert.equal(refFor({ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: D, size: 1, annotations: { "org.opencontainers.image.ref.name": "v1" } }), `manifest-v1@${D}`);
});

test("eachLimit: never more than the limit at once, every item once, the first failure rejects", async () => {
  let running = 0;
  let peak = 0;
  const seen: number[] = [];
  await eachLimit([1, 2, 3, 4, 5, 6, 7], 3, async (i) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, 5));
    seen.push(i);
    running--;
  });
  assert.equal(peak, 3);
  assert.deepEqual(seen.sort(), [1, 2, 3, 4, 5, 6, 7]);
  await assert.rejects(
    eachLimit([1, 2, 3], 2, async (i) => {
      if (i === 2) throw new Error("boom");
    }),
    /boom/,
  );
  await eachLimit([], 3, async () => assert.fail("no items"));
});

test("eachLimit: after a failure no item starts, and the running ones finish before it rejects (nothing left writing)", async () => {
  const started: number[] = [];
  const finished: number[] = [];
  await assert.rejects(
    eachLimit([1, 2, 3, 4, 5], 2, async (i) => {
      started.push(i);
      if (i === 2) throw new Error("boom");
      await new Promise((r) => setTimeout(r, 30));
      finished.push(i);
    }),
    /boom/,
  );
  assert.deepEqual(started, [1, 2], "nothing starts after the failure");
  assert.deepEqual(finished, [1], "the running item finished before the rejection");
  await assert.rejects(
    eachLimit([1, 2, 3], 3, async (i) => {
      await new Promise((r) => setTimeout(r, 10 * i));
      throw new Error(`fail ${i}`);
    }),
    /fail 1/,
    "the first failure is the one reported",
  );
});

test("encodeWrite: the hand-built WRITE decodes as containerd's WriteContentRequest", async () => {
  const { loadProtos } = await import("../../src/protos/protos.js");
  const { encodeWrite, WRITE_CHUNK } = await import("../../src/cli/api-content.js");
  const p = loadProtos();
  for (const offset of [0, 1, 127, 128, 300, 2 ** 31 + 5, 5 * 2 ** 40]) {
    const parts = [Buffer.from("hello "), Buffer.alloc(0), Buffer.from("world")];
    const msg = p.decode("containerd.services.content.v1.WriteContentRequest", encodeWrite(offset, parts, 11));
    assert.equal(msg.action, 1);
    assert.equal(msg.offset, offset);
    assert.equal(Buffer.from(msg.data).toString(), "hello world");
    assert.equal(msg.ref, "");
  }
  const big = Buffer.alloc(WRITE_CHUNK, 7);
  const msg = p.decode("containerd.services.content.v1.WriteContentRequest", encodeWrite(3, [big], big.length));
  assert.equal(msg.data.length, WRITE_CHUNK);
});

test("mapLimit: results in the items' order whatever order they finish in, never more than the limit at once", async () => {
  let running = 0;
  let peak = 0;
  const out = await mapLimit([30, 5, 20, 1, 10], 2, async (ms) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, ms));
    running--;
    return ms * 2;
  });
  assert.deepEqual(out, [60, 10, 40, 2, 20]);
  assert.equal(peak, 2);
  assert.deepEqual(await mapLimit([], 4, async () => 1), []);
});

test("sourceLabelKey: containerd's distribution.source key, host name without port", () => {
  assert.equal(sourceLabelKey("docker.io"), "containerd.io/distribution.source.docker.io");
  assert.equal(sourceLabelKey("127.0.0.1:5000"), "containerd.io/distribution.source.127.0.0.1");
  assert.equal(sourceLabelKey("registry.example.com:443"), "containerd.io/distribution.source.registry.example.com");
  assert.equal(sourceLabelKey("[::1]:5000"), "containerd.io/distribution.source.::1");
});

// imageLayers from the manifests a pull parsed (no daemon call is made while they suffice).
test("imageLayers: an index without the platform is NotFound; indexes nested past 8 levels are InvalidArgument", async () => {
  const { imageLayers } = await import("../../src/cli/unpack.js");
  const { CkError } = await import("../../src/errdefs/errdefs.js");
  const noApi = {} as never; // any call on it would throw a TypeError, not a CkError
  const INDEX = "application/vnd.oci.image.index.v1+json";
  const d = (n: number) => "sha256:" + String(n).padStart(64, "0");
  const index = (child: number, platform?: { os: string; architecture: string }) => ({
    kind: "index" as const,
    mediaType: INDEX,
    layers: [],
    manifests: [{ mediaType: INDEX, digest: d(child), size: 1, ...(platform ? { platform } : {}) }],
  });
  const target = { mediaType: INDEX, digest: d(0), size: 1 };

  const armOnly = new Map([[d(0), index(1, { os: "linux", architecture: "arm64" })]]);
  await assert.rejects(imageLayers(noApi, target, { os: "linux", architecture: "amd64" }, { known: armOnly }), (err: unknown) => {
    assert.ok(err instanceof CkError && err.errorClass === "NotFound", String(err));
    assert.match((err as Error).message, /no manifest for the platform/);
    return true;
  });

  const deep = new Map(Array.from({ length: 9 }, (_, i) => [d(i), index(i + 1)] as const));
  await assert.rejects(imageLayers(noApi, target, undefined, { known: deep }), (err: unknown) => {
    assert.ok(err instanceof CkError && err.errorClass === "InvalidArgument", String(err));
    assert.match((err as Error).message, /nested too deep/);
    return true;
  });
});

test("push leaves non-distributable (foreign) layers out unless asked, as ctr push: containerd's media type prefixes", () => {
  for (const mt of ["application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "application/vnd.oci.image.layer.nondistributable.v1.tar", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"]) {
    assert.ok(isNonDistributable(mt), mt);
  }
  for (const mt of ["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.oci.image.config.v1+json"]) {
    assert.ok(!isNonDistributable(mt), mt);
  }
});
