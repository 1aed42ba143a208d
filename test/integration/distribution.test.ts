// ck fetch/pull/push and ctr's content fetch against a real docker-registry on loopback, with
// images built by umoci and pushed by skopeo; a recording proxy in front of the registry
// counts what crossed the network and misbehaves on demand.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runCommand, runNode, CK } from "../helpers/daemon.js";
import { startRegistry, buildImage } from "../helpers/registry.js";
import { startProxy, type TestProxy } from "../helpers/proxy.js";
import { setTimeout as sleep } from "node:timers/promises";
import { chainIds } from "../../src/cli/unpack.js";
import { ApiClient } from "../../src/cli/client.js";
import { MediaTypes } from "../../src/remotes/manifest.js";
import { parseReference } from "../../src/remotes/reference.js";
import { Registry } from "../../src/remotes/registry.js";

const CTR = "/usr/bin/ctr";
const blobPath = (root: string, digest: string) => join(root, "content", "blobs", "sha256", digest.slice("sha256:".length));

describe("distribution against a loopback registry", { timeout: 300_000 }, () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let daemon: TestDaemon;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let proxy: TestProxy;
  let image: Awaited<ReturnType<typeof buildImage>>;
  let small: Awaited<ReturnType<typeof buildImage>>;
  let api: ApiClient;
  const ck = (ns: string, args: string[]) => runNode(CK, ["--address", daemon.address, "-n", ns, ...args]);
  const ref = (repo: string, tag = "v1") => `${proxy.host}/${repo}:${tag}`;
  const blobGets = (digest: string) => proxy.count("GET", `/blobs/${digest}`);

  before(async () => {
    nats = await startTestNats();
    registry = await startRegistry();
    image = await buildImage({
      host: registry.host,
      repo: "dist/app",
      tag: "v1",
      layers: [
        { "data/big.bin": randomBytes(6 << 20), "bin/busybox": "#!/bin/sh\n" },
        { "etc/motd": "hello\n", "etc/old": "to be deleted\n" },
        { "etc/old": { delete: true }, "etc/new": "new\n" },
      ],
    });
    small = await buildImage({ host: registry.host, repo: "dist/small", tag: "v1", layers: [{ "a.txt": "a\n" }, { "b.txt": "b\n" }, { "c.txt": "c\n" }] });
    proxy = await startProxy(registry.host);
    daemon = await TestDaemon.start({ natsUrl: nats.url });
    api = daemon.client("dist");
  });
  after(async () => {
    api?.close();
    await daemon?.cleanup();
    await proxy?.close();
    await registry?.stop();
    await nats?.cleanup();
  });

  test("ck pull of a three-layer image: digest as the registry's, content linked by GC labels, images check complete", async () => {
    const r = await ck("dist", ["pull", "--plain-http", ref("dist/app")]);
    assert.equal(r.code, 0, r.stderr);
    // Plain lines when not on a terminal: one per object, then the summary.
    assert.match(r.stdout, /manifest-sha256:[0-9a-f]{64}:\s+done\s+\|\++\|/);
    assert.match(r.stdout, /layer-sha256:[0-9a-f]{64}:\s+done/);
    assert.match(r.stdout, /elapsed: \d+\.\d s total: +[\d.]+ MiB \([\d.]+ \w+\/s\)/);

    const ls = await ck("dist", ["images", "ls"]);
    assert.equal(ls.code, 0, ls.stderr);
    const row = ls.stdout.split("\n").find((l) => l.startsWith(ref("dist/app")));
    assert.ok(row, ls.stdout);
    assert.ok(row.includes(image.manifestDigest), row);
    const total = image.manifest.config.size + image.manifest.layers.reduce((a: number, l: any) => a + l.size, 0) + image.manifestBytes.length;
    assert.ok(row.includes(`${(total / (1 << 20)).toFixed(1)} MiB`), `${row} should show ${total} bytes`);
    assert.match(row, /linux\/amd64|linux\//);

    const info = await api.call("content", "Info", { digest: image.manifestDigest });
    const labels = info.info.labels;
    assert.equal(labels["containerd.io/gc.ref.content.config"], image.manifest.config.digest);
    image.manifest.layers.forEach((l: any, i: number) => assert.equal(labels[`containerd.io/gc.ref.content.l.${i}`], l.digest));
    // Keyed by host name without the port, as containerd's client keys it.
    assert.equal(labels["containerd.io/distribution.source.127.0.0.1"], "dist/app");
    assert.equal(labels[`containerd.io/distribution.source.${proxy.host}`], undefined);
    const content = await ck("dist", ["content", "ls", "-q"]);
    const digests = content.stdout.trim().split("\n").sort();
    assert.deepEqual(digests, [image.manifestDigest, image.manifest.config.digest, ...image.manifest.layers.map((l: any) => l.digest)].sort());

    const check = await ck("dist", ["images", "check"]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout, /^REF\s+TYPE\s+DIGEST\s+STATUS\s+SIZE\s+UNPACKED\n/);
    assert.match(check.stdout, /complete \(5\/5\) .* true\n/, "pull unpacked it");
    // Every blob crossed the network once.
    for (const l of image.manifest.layers) assert.equal(blobGets(l.digest), 1, l.digest);
  });

  test("a pull into a second namespace transfers no blob bytes", async () => {
    const before = proxy.seen.length;
    const r = await ck("other", ["pull", "--plain-http", ref("dist/app")]);
    assert.equal(r.code, 0, r.stderr);
    const during = proxy.seen.slice(before);
    assert.equal(during.filter((s) => s.url.includes("/blobs/")).length, 0, JSON.stringify(during));
    const check = await ck("other", ["images", "check"]);
    assert.match(check.stdout, /complete \(5\/5\)/);
  });

  test("a blob whose distribution source label is near the label limit (many repositories share it): the pull goes through, the label left as it is (as containerd)", async () => {
    const a = await buildImage({ host: registry.host, repo: "dist/src-a", tag: "v1", layers: [{ "shared.txt": "shared by many repositories\n" }] });
    await buildImage({ host: registry.host, repo: "dist/src-b", tag: "v1", layers: [{ "shared.txt": "shared by many repositories\n" }] });
    let r = await ck("srclabel", ["pull", "--plain-http", ref("dist/src-a")]);
    assert.equal(r.code, 0, r.stderr);
    const c = new ApiClient({ address: daemon.address, namespace: "srclabel" });
    try {
      const key = `containerd.io/distribution.source.${proxy.host.split(":")[0]}`;
      const layer: string = a.manifest.layers[0].digest;
      // Room for no more repositories: this pull's would take the label past 4,096 bytes.
      const long = Array.from({ length: 300 }, (_, i) => `dist/many-${String(i).padStart(3, "0")}`).join(",").slice(0, 4090 - key.length);
      await c.call("content", "Update", { info: { digest: layer, labels: { [key]: long } }, update_mask: { paths: [`labels.${key}`] } });
      r = await ck("srclabel", ["pull", "--plain-http", ref("dist/src-b")]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await c.call("content", "Info", { digest: layer })).info.labels[key], long);
    } finally {
      c.close();
    }
  });

  test("--max-concurrent-downloads bounds the blob GETs in flight (the daemon is asked about more objects at once)", async () => {
    await buildImage({ host: registry.host, repo: "dist/conc-a", tag: "v1", layers: [{ "a.txt": "conc a1\n" }, { "b.txt": "conc a2\n" }, { "c.txt": "conc a3\n" }] });
    await buildImage({ host: registry.host, repo: "dist/conc-b", tag: "v1", layers: [{ "a.txt": "conc b1\n" }, { "b.txt": "conc b2\n" }, { "c.txt": "conc b3\n" }] });
    // Slow blob answers, so downloads that are allowed to overlap do.
    proxy.rule = (req) => (req.method === "GET" && req.url?.includes("/blobs/") ? { delayMs: 150 } : undefined);
    try {
      proxy.maxBlobGets = 0;
      const one = await ck("conc-1", ["pull", "--plain-http", "--max-concurrent-downloads", "1", ref("dist/conc-a")]);
      assert.equal(one.code, 0, one.stderr);
      assert.equal(proxy.maxBlobGets, 1, "one download at a time");
      proxy.maxBlobGets = 0;
      const three = await ck("conc-3", ["pull", "--plain-http", "--max-concurrent-downloads", "3", ref("dist/conc-b")]);
      assert.equal(three.code, 0, three.stderr);
      assert.equal(proxy.maxBlobGets, 3, "config and three layers: three at a time, never four");
    } finally {
      proxy.rule = undefined;
    }
  });

  test("ck pull unpacks a layer as soon as it is in, while later layers still download", async () => {
    const img = await buildImage({ host: registry.host, repo: "dist/overlap", tag: "v1", layers: [{ "a.txt": "o1\n" }, { "b.txt": "o2\n" }, { "c.txt": "o3\n" }] });
    const bottom = chainIds(img.config.rootfs.diff_ids)[0]!;
    const top = img.manifest.layers[2].digest;
    const c = daemon.client("overlap");
    let bottomFirst = false;
    // The top layer's blob is held back until the bottom layer's snapshot is committed (or 15 s).
    proxy.rule = (req) =>
      req.method === "GET" && req.url?.includes(`/blobs/${top}`)
        ? {
            until: async () => {
              for (const deadline = Date.now() + 15_000; Date.now() < deadline; await sleep(50)) {
                if (await c.call("snapshots", "Stat", { snapshotter: "overlayfs", key: bottom }).then(() => true, () => false)) {
                  bottomFirst = true;
                  return;
                }
              }
            },
          }
        : undefined;
    try {
      const r = await ck("overlap", ["pull", "--plain-http", ref("dist/overlap")]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(bottomFirst, "the bottom layer was unpacked while the top layer was still downloading");
      assert.match(r.stdout, /unpacked 3 layers \(3 applied\)/);
    } finally {
      proxy.rule = undefined;
      c.close();
    }
  });

  test("ck fetch-object: one object to stdout (verified) or into the content store", async () => {
    let r = await ck("obj", ["fetch-object", "--plain-http", ref("dist/small"), small.configDigest, "-o", "-"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(`sha256:${createHash("sha256").update(r.stdout).digest("hex")}`, small.configDigest);
    r = await ck("obj", ["fetch-object", "--plain-http", ref("dist/small"), small.manifestDigest]);
    assert.equal(r.code, 0, r.stderr);
    const ls = await ck("obj", ["content", "ls", "-q"]);
    assert.deepEqual(ls.stdout.trim().split("\n"), [small.manifestDigest]);
    r = await ck("obj", ["fetch-object", "--plain-http", ref("dist/small"), "sha256:" + "0".repeat(64), "-o", "-"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not found/);
  });

  test("where ctr has them: ck images pull|push and ck content fetch|fetch-object, the same commands as ck pull, push, fetch, fetch-object", async () => {
    let r = await ck("ctr-words", ["images", "pull", "--plain-http", "-q", ref("dist/small")]);
    assert.deepEqual([r.code, r.stdout], [0, `${ref("dist/small")} ${small.manifestDigest}\n`], r.stderr);
    r = await ck("ctr-words", ["images", "check", "-q"]);
    assert.equal(r.stdout, `${ref("dist/small")}\n`);
    r = await ck("ctr-words", ["images", "push", "--plain-http", "-q", ref("dist/small-copy"), ref("dist/small")]);
    assert.deepEqual([r.code, r.stdout], [0, `${small.manifestDigest}\n`], r.stderr);
    r = await ck("ctr-words-2", ["content", "fetch", "--plain-http", "-q", ref("dist/small-copy")]);
    assert.equal(r.code, 0, r.stderr);
    r = await ck("ctr-words-3", ["content", "fetch-object", "--plain-http", ref("dist/small"), small.configDigest, "-o", "-"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(`sha256:${createHash("sha256").update(r.stdout).digest("hex")}`, small.configDigest);
    for (const ns of ["ctr-words", "ctr-words-2"]) {
      r = await ck(ns, ["images", "rm", "--sync", ...(ns === "ctr-words" ? [ref("dist/small")] : [ref("dist/small-copy")])]);
      assert.equal(r.code, 0, r.stderr);
    }
  });

  test("a tag is resolved with HEAD: a fetch of an image the namespace has GETs no manifest; a registry that refuses HEAD is read with one GET", async () => {
    // An image of its own: no earlier test put its manifest on the daemon's disk.
    const img = await buildImage({ host: registry.host, repo: "dist/headres", tag: "v1", layers: [{ "h.txt": "head\n" }] });
    const manifests = (method: string) => proxy.count(method, "/v2/dist/headres/manifests/");
    const counts = () => ({ head: manifests("HEAD"), get: manifests("GET"), byDigest: proxy.count("GET", `/v2/dist/headres/manifests/${img.manifestDigest}`) });
    let before = counts();
    let r = await ck("headns", ["fetch", "-q", "--plain-http", ref("dist/headres")]);
    assert.equal(r.code, 0, r.stderr);
    // Cold: a HEAD of the tag, then a GET of the manifest by digest (verified).
    assert.deepEqual(counts(), { head: before.head + 1, get: before.get + 1, byDigest: before.byDigest + 1 });
    before = counts();
    r = await ck("headns", ["fetch", "-q", "--plain-http", ref("dist/headres")]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(counts(), { ...before, head: before.head + 1 }, "up to date: only the HEAD");
    assert.match(r.stdout, new RegExp(img.manifestDigest));
    // HEAD refused (405): the tag's GET brings the document, read once.
    proxy.rule = (req) => (req.method === "HEAD" && req.url?.includes("/manifests/") ? { answer: { status: 405 } } : undefined);
    try {
      before = counts();
      r = await ck("headns2", ["fetch", "-q", "--plain-http", ref("dist/headres")]);
    } finally {
      proxy.rule = undefined;
    }
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(counts(), { head: before.head + 1, get: before.get + 1, byDigest: before.byDigest });
    const check = await ck("headns2", ["images", "check"]);
    assert.match(check.stdout, /complete \(3\/3\)/);
  });

  test("ck fetch-object -o FILE: bytes that fail the digest check never reach FILE (nor a file beside it)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ck-fetch-object-"));
    try {
      const out = join(dir, "config.json");
      const layer = small.manifest.layers[0].digest;
      proxy.rule = (req) => (req.method === "GET" && req.url?.includes(`/blobs/${layer}`) ? { tamper: true } : undefined);
      let r: Awaited<ReturnType<typeof ck>>;
      try {
        r = await ck("obj2", ["fetch-object", "--plain-http", ref("dist/small"), layer, "-o", out]);
      } finally {
        proxy.rule = undefined;
      }
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /digest/);
      assert.deepEqual(readdirSync(dir), [], "no file written");
      // An existing file is replaced only by verified bytes.
      writeFileSync(out, "before\n");
      r = await ck("obj2", ["fetch-object", "--plain-http", ref("dist/small"), small.configDigest, "-o", out]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(`sha256:${createHash("sha256").update(readFileSync(out)).digest("hex")}`, small.configDigest);
      assert.deepEqual(readdirSync(dir), ["config.json"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("ck images check: a missing layer makes the image incomplete (exit 1)", async () => {
    const r = await ck("check", ["fetch", "--plain-http", "-q", ref("dist/small")]);
    assert.equal(r.code, 0, r.stderr);
    const rm = await ck("check", ["content", "rm", small.manifest.layers[2].digest]);
    assert.equal(rm.code, 0, rm.stderr);
    const check = await ck("check", ["images", "check"]);
    assert.equal(check.code, 1);
    assert.match(check.stdout, /incomplete \(4\/5\) .* false\n/, "fetch does not unpack");
    const ls = await ck("check", ["images", "ls"]);
    assert.match(ls.stdout.split("\n")[1]!, /\s-\s/, "no size for an incomplete image");
  });

  test("ck images check as ctr: -q lists only complete images; a missing manifest is unavailable; no image prints nothing", async () => {
    let r = await ck("checkq", ["fetch", "--plain-http", "-q", ref("dist/small")]);
    assert.equal(r.code, 0, r.stderr);
    const missing = "sha256:" + "0".repeat(63) + "1";
    r = await ck("checkq", ["images", "create", "broken:1", "--digest", missing, "--size", "10", "--media-type", "application/vnd.oci.image.manifest.v1+json"]);
    assert.equal(r.code, 0, r.stderr);
    r = await ck("checkq", ["images", "check", "-q"]);
    assert.equal(r.stdout, ref("dist/small") + "\n");
    r = await ck("checkq", ["images", "check"]);
    assert.match(r.stdout, /^broken:1 .* unavailable \(0\/\?\) +0\.0 B\/\? +false$/m);
    for (const args of [["images", "check"], ["images", "check", "-q"]]) {
      r = await ck("checkq-empty", args);
      assert.deepEqual([r.code, r.stdout], [0, ""], args.join(" "));
    }
  });

  test("an index fetched for one platform, then another: its GC labels name every manifest, and a GC keeps both platforms", async () => {
    // Two single-platform images in one repository, and an index over both under the tag v1.
    const amd = await buildImage({ host: registry.host, repo: "dist/multi", tag: "amd", layers: [{ "amd.txt": "amd64\n" }] });
    const arm = await buildImage({ host: registry.host, repo: "dist/multi", tag: "arm", layers: [{ "arm.txt": "arm64\n" }] });
    const entry = (img: typeof amd, architecture: string) => ({ mediaType: img.manifest.mediaType ?? MediaTypes.ociManifest, digest: img.manifestDigest, size: img.manifestBytes.length, platform: { os: "linux", architecture } });
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [entry(amd, "amd64"), entry(arm, "arm64")] }));
    const indexDigest = `sha256:${createHash("sha256").update(index).digest("hex")}`;
    const pusher = new Registry({ plainHttp: true });
    await pusher.pushManifest(parseReference(`${registry.host}/dist/multi:v1`), { mediaType: MediaTypes.ociIndex, digest: indexDigest, size: index.length }, index, "v1").finally(() => pusher.close());

    // A daemon of its own: its GC sees no other test's content.
    const d = await TestDaemon.start({});
    const c = d.client("multi");
    try {
      const run = (args: string[]) => runNode(CK, ["--address", d.address, "-n", "multi", ...args]);
      const labels = async () => (await c.call("content", "Info", { digest: indexDigest })).info.labels as Record<string, string>;
      const refs = (l: Record<string, string>) => Object.entries(l).filter(([k]) => k.startsWith("containerd.io/gc.ref.content.")).map(([, v]) => v).sort();
      let r = await run(["fetch", "-q", "--plain-http", "--platform", "linux/amd64", ref("dist/multi")]);
      assert.equal(r.code, 0, r.stderr);
      // As containerd labels an index: every child, whatever platform the fetch kept.
      assert.deepEqual(refs(await labels()), [amd.manifestDigest, arm.manifestDigest].sort());
      r = await run(["fetch", "-q", "--plain-http", "--platform", "linux/arm64", ref("dist/multi")]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(refs(await labels()), [amd.manifestDigest, arm.manifestDigest].sort());
      r = await run(["gc"]);
      assert.equal(r.code, 0, r.stderr);
      for (const img of [amd, arm]) {
        for (const digest of [img.manifestDigest, img.configDigest, ...img.manifest.layers.map((l: any) => l.digest)]) {
          await c.call("content", "Info", { digest }).catch((err) => assert.fail(`${digest} was collected: ${(err as Error).message}`));
        }
      }
    } finally {
      c.close();
      await d.cleanup();
    }
  });

  test("two pulls racing in two processes transfer each blob once", async () => {
    // A fresh daemon root: no blob of the image is on disk yet.
    const d4 = await TestDaemon.start({});
    const start = proxy.seen.length;
    const pull = () => runNode(CK, ["--address", d4.address, "-n", "race", "pull", "--plain-http", ref("dist/small")]);
    const [a, b] = await Promise.all([pull(), pull()]).finally(() => d4.cleanup());
    const blobBytes = (digest: string) => proxy.seen.slice(start).filter((r) => r.method === "GET" && r.url.includes(`/blobs/${digest}`)).reduce((n, r) => n + r.bytes, 0);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    // Transferred once: the bytes served for each blob add up to its size (a GET retried on a
    // keep-alive socket the server had just closed carries no body and does not count).
    for (const d of [...small.manifest.layers, small.manifest.config]) assert.equal(blobBytes(d.digest), d.size, `${d.digest} served ${blobBytes(d.digest)} bytes for ${d.size}`);
  });

  test("a registry that drops the connection in the middle of a blob: the pull resumes with Range", async () => {
    const big = image.manifest.layers[0];
    let cut = false;
    proxy.rule = (req) => {
      if (!cut && req.method === "GET" && req.url?.includes(`/blobs/${big.digest}`)) {
        cut = true;
        return { cutAfter: 1 << 20 };
      }
      return undefined;
    };
    try {
      // A fresh daemon root so the blob is not on disk yet.
      const d2 = await TestDaemon.start({});
      try {
        const r = await runNode(CK, ["--address", d2.address, "-n", "resume", "pull", "--plain-http", ref("dist/app")]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(cut);
        const ranged = proxy.seen.filter((s) => s.url.includes(`/blobs/${big.digest}`) && s.range);
        assert.ok(ranged.length >= 1, "a Range request followed the cut");
        assert.match(ranged[0]!.range!, /^bytes=\d+-/);
        assert.ok(existsSync(blobPath(d2.root, big.digest)));
        const bytes = await import("node:fs/promises").then((f) => f.readFile(blobPath(d2.root, big.digest)));
        assert.equal(`sha256:${createHash("sha256").update(bytes).digest("hex")}`, big.digest);
      } finally {
        await d2.cleanup();
      }
    } finally {
      proxy.rule = undefined;
    }
  });

  test("a pull killed in the middle of a blob resumes next time from the bytes ckd holds", async () => {
    const big = image.manifest.layers[0];
    const d5 = await TestDaemon.start({});
    const c5 = d5.client("killed");
    proxy.rule = (req) => (req.method === "GET" && req.url?.includes(`/blobs/${big.digest}`) ? { stallAfter: 3 << 20 } : undefined);
    try {
      const { spawn } = await import("node:child_process");
      const child = spawn(process.execPath, [CK, "--address", d5.address, "-n", "killed", "fetch", "--plain-http", ref("dist/app")], { stdio: "ignore" });
      // Wait until ckd holds part of the blob, then kill the client outright.
      let held = 0;
      for (let i = 0; i < 200 && held < 1 << 20; i++) {
        await new Promise((r) => setTimeout(r, 50));
        const st = await c5.call("content", "ListStatuses", { filters: [] });
        held = Number((st.statuses ?? []).find((s: any) => s.ref === `layer-${big.digest}`)?.offset ?? 0);
      }
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      assert.ok(held >= 1 << 20, `ckd held ${held} bytes of the blob before the kill`);
      proxy.rule = undefined;
      const before = proxy.seen.length;
      const r = await runNode(CK, ["--address", d5.address, "-n", "killed", "fetch", "--plain-http", "-q", ref("dist/app")]);
      assert.equal(r.code, 0, r.stderr);
      const gets = proxy.seen.slice(before).filter((s) => s.method === "GET" && s.url.includes(`/blobs/${big.digest}`));
      assert.equal(gets.length, 1, JSON.stringify(gets));
      const from = Number(/^bytes=(\d+)-$/.exec(gets[0]!.range ?? "")?.[1]);
      assert.ok(from >= 1 << 20, `resumed from byte ${gets[0]!.range}`);
      assert.equal(gets[0]!.bytes, big.size - from, "only the rest crossed the network");
      const check = await runNode(CK, ["--address", d5.address, "-n", "killed", "images", "check"]);
      assert.match(check.stdout, /complete \(5\/5\)/);
    } finally {
      proxy.rule = undefined;
      c5.close();
      await d5.cleanup();
    }
  });

  test("the real ctr content fetch against ckd; ctr images ls shows the image", async () => {
    const r = await runCommand(CTR, ["--address", daemon.address, "-n", "ctrfetch", "content", "fetch", "--plain-http", ref("dist/small")], {}, undefined, 60_000);
    assert.equal(r.code, 0, r.stderr);
    const ls = await runCommand(CTR, ["--address", daemon.address, "-n", "ctrfetch", "images", "ls"]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.ok(ls.stdout.includes(ref("dist/small")) && ls.stdout.includes(small.manifestDigest), ls.stdout);
    const check = await ck("ctrfetch", ["images", "check"]);
    assert.match(check.stdout, /complete \(5\/5\)/);
    // ctr labelled the manifest towards its children, as ck's pull does.
    const info = await daemon.client("ctrfetch").call("content", "Info", { digest: small.manifestDigest });
    assert.equal(info.info.labels["containerd.io/gc.ref.content.config"], small.manifest.config.digest);
  });

  test("the real ctr on an image ck pulled: images check (unpacked), tag, push; skopeo sees the same digest", async () => {
    const ctr = (args: string[]) => runCommand(CTR, ["--address", daemon.address, "-n", "ctrpush", ...args], {}, undefined, 60_000);
    let r = await ck("ctrpush", ["pull", "--plain-http", ref("dist/small")]);
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["images", "check"]);
    assert.equal(r.code, 0, r.stderr);
    const row = r.stdout.split("\n").find((l) => l.startsWith(ref("dist/small")));
    assert.ok(row, r.stdout);
    assert.match(row!, /complete \(4\/4\)/, "ctr counts config and layers (ck images check counts the manifest too)");
    assert.match(row!, /\btrue\s*$/, "UNPACKED: ckd's overlayfs snapshots of the chain");
    const tagged = ref("dist/small-tagged", "v9");
    r = await ctr(["images", "tag", ref("dist/small"), tagged]);
    assert.equal(r.code, 0, r.stderr);
    const ls = await ck("ctrpush", ["images", "ls", "-q"]);
    assert.deepEqual(ls.stdout.trim().split("\n").sort(), [ref("dist/small"), tagged].sort());
    r = await ctr(["images", "push", "--plain-http", tagged]);
    assert.equal(r.code, 0, r.stderr);
    const inspect = await runCommand("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/dist/small-tagged:v9`]);
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.equal(`sha256:${createHash("sha256").update(inspect.stdout).digest("hex")}`, small.manifestDigest);
  });

  test("ck push to another repository: skopeo sees the same digest; a second push uploads no blob bytes", async () => {
    const dest = ref("dist/copy", "v2");
    let r = await ck("dist", ["push", "--plain-http", dest, ref("dist/app")]);
    assert.equal(r.code, 0, r.stderr);
    const inspect = await runCommand("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/dist/copy:v2`]);
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.equal(`sha256:${createHash("sha256").update(inspect.stdout).digest("hex")}`, image.manifestDigest);
    const before = proxy.seen.length;
    r = await ck("dist", ["push", "--plain-http", dest, ref("dist/app")]);
    assert.equal(r.code, 0, r.stderr);
    const uploads = proxy.seen.slice(before).filter((s) => (s.method === "PATCH" || s.method === "PUT") && s.url.includes("/blobs/uploads"));
    assert.deepEqual(uploads, []);
    // Without a local name: the image as ck pull names it (no tag typed: ":latest").
    r = await ck("dist", ["images", "tag", ref("dist/app"), `${registry.host}/dist/notag:latest`]);
    assert.equal(r.code, 0, r.stderr);
    r = await ck("dist", ["push", "--plain-http", `${registry.host}/dist/notag`]);
    assert.equal(r.code, 0, r.stderr);
    const pushed = await runCommand("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/dist/notag:latest`]);
    assert.equal(pushed.code, 0, pushed.stderr);
  });

  test("ck push --platform of an index: that platform's manifest goes up under the tag; several platforms, or none, are refused before anything is sent", async () => {
    const amd = await buildImage({ host: registry.host, repo: "dist/pidx", tag: "amd", layers: [{ "amd.txt": "pidx amd64\n" }] });
    const arm = await buildImage({ host: registry.host, repo: "dist/pidx", tag: "arm", layers: [{ "arm.txt": "pidx arm64\n" }] });
    const entry = (img: typeof amd, architecture: string) => ({ mediaType: img.manifest.mediaType ?? MediaTypes.ociManifest, digest: img.manifestDigest, size: img.manifestBytes.length, platform: { os: "linux", architecture } });
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [entry(amd, "amd64"), entry(arm, "arm64")] }));
    const pusher = new Registry({ plainHttp: true });
    await pusher.pushManifest(parseReference(`${registry.host}/dist/pidx:v1`), { mediaType: MediaTypes.ociIndex, digest: `sha256:${createHash("sha256").update(index).digest("hex")}`, size: index.length }, index, "v1").finally(() => pusher.close());
    let r = await ck("pplat", ["fetch", "-q", "--plain-http", "--all-platforms", ref("dist/pidx")]);
    assert.equal(r.code, 0, r.stderr);

    r = await ck("pplat", ["push", "-q", "--plain-http", "--platform", "linux/arm64", ref("dist/pidx-arm"), ref("dist/pidx")]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${arm.manifestDigest}\n`, "the digest pushed: the arm64 manifest's");
    const raw = await runCommand("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/dist/pidx-arm:v1`]);
    assert.equal(raw.code, 0, raw.stderr);
    assert.equal(`sha256:${createHash("sha256").update(raw.stdout).digest("hex")}`, arm.manifestDigest);

    const before = proxy.seen.length;
    r = await ck("pplat", ["push", "--plain-http", "--platform", "linux/amd64", "--platform", "linux/arm64", ref("dist/pidx-two"), ref("dist/pidx")]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /index sha256:[0-9a-f]{64}: --platform linux\/amd64, linux\/arm64 selects 2 of its manifests \(the index has linux\/amd64, linux\/arm64\); a push with --platform sends one platform's manifest under the tag/);
    assert.match(r.stderr, /invalid argument/);
    r = await ck("pplat", ["push", "--plain-http", "--platform", "linux/s390x", ref("dist/pidx-two"), ref("dist/pidx")]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /no manifest for linux\/s390x \(the index has linux\/amd64, linux\/arm64\)/);
    assert.deepEqual(proxy.seen.slice(before), [], "nothing sent to the registry");
  });

  test("ck push through a registry that refuses mounts (403 DENIED) and answers 429 with Retry-After: 1 once per step goes through; one that always answers 503 fails Unavailable after four attempts", async () => {
    let r = await ck("retrypush", ["pull", "--plain-http", ref("dist/small")]);
    assert.equal(r.code, 0, r.stderr);
    const refused = new Set<string>();
    const denied = { answer: { status: 403, headers: { "content-type": "application/json" }, body: JSON.stringify({ errors: [{ code: "DENIED", message: "requested access to the resource is denied" }] }) } };
    proxy.rule = (req) => {
      const url = req.url ?? "";
      // The blobs' source label names dist/small: each is first asked for as a mount from there.
      if (req.method === "POST" && url.includes("mount=")) return denied;
      const step = req.method === "HEAD" && url.includes("/blobs/") ? "head" : req.method === "POST" ? "start" : req.method === "PUT" ? (url.includes("/manifests/") ? "manifest" : "upload") : undefined;
      if (!step || refused.has(step)) return undefined;
      refused.add(step);
      return { answer: { status: 429, headers: { "retry-after": "1", "content-type": "application/json" }, body: JSON.stringify({ errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }] }) } };
    };
    const before = proxy.seen.length;
    try {
      r = await ck("retrypush", ["push", "--plain-http", ref("dist/retried"), ref("dist/small")]);
    } finally {
      proxy.rule = undefined;
    }
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual([...refused].sort(), ["head", "manifest", "start", "upload"]);
    const during = proxy.seen.slice(before);
    assert.equal(during.filter((s) => s.status === 429).length, 4);
    assert.equal(during.filter((s) => s.status === 403).length, small.manifest.layers.length + 1, "a mount asked for each blob");
    const raw = await runCommand("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/dist/retried:v1`]);
    assert.equal(raw.code, 0, raw.stderr);
    assert.equal(`sha256:${createHash("sha256").update(raw.stdout).digest("hex")}`, small.manifestDigest);

    proxy.rule = (req) => (req.method === "PUT" && req.url?.includes("/manifests/") ? { answer: { status: 503, body: "" } } : undefined);
    const start = Date.now();
    const at = proxy.seen.length;
    try {
      r = await ck("retrypush", ["push", "--plain-http", ref("dist/retried-503"), ref("dist/small")]);
    } finally {
      proxy.rule = undefined;
    }
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /manifest sha256:[0-9a-f]{64} push to ".*\/dist\/retried-503:v1": HTTP 503 \(gave up after 4 attempts\): unavailable/);
    assert.equal(proxy.count("PUT", "/dist/retried-503/manifests/") - proxy.seen.slice(0, at).filter((s) => s.method === "PUT" && s.url.includes("/dist/retried-503/manifests/")).length, 4);
    assert.ok(Date.now() - start < 20_000, `${Date.now() - start} ms`);
  });

  test("ctr install: an image's bin/ (and lib/ with --libs) into the opt directory ckd exports; a second install refuses to replace without --replace", async () => {
    const tool = await buildImage({
      host: registry.host,
      repo: "dist/tool",
      tag: "v1",
      layers: [{ "bin/ck-hello": "#!/bin/sh\necho hello from opt\n", "lib/libck-hello.so": "not really a library\n", "share/readme": "not installed\n" }],
    });
    const opt = join(daemon.root, "opt");
    // Exported as containerd's opt plugin exports it.
    const plugins = (await api.call("introspection", "Plugins", { filters: ["id==opt"] })).plugins;
    assert.deepEqual(plugins.map((p: any) => [p.type, p.id, p.exports.path]), [["io.containerd.internal.v1", "opt", opt]]);
    assert.equal(statSync(join(opt, "bin")).mode & 0o022, 0, "opt/bin writable by others");
    const ctr = (args: string[]) => runCommand(CTR, ["--address", daemon.address, "-n", "dist", ...args]);
    let r = await ctr(["images", "pull", "--plain-http", tool.reference]);
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["install", tool.reference]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(readFileSync(join(opt, "bin", "ck-hello"), "utf8"), "#!/bin/sh\necho hello from opt\n");
    assert.equal(existsSync(join(opt, "lib", "libck-hello.so")), false, "lib/ without --libs");
    assert.equal(existsSync(join(opt, "share")), false);
    r = await ctr(["install", tool.reference]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cannot replace bin\/ck-hello/);
    r = await ctr(["install", "--replace", "--libs", tool.reference]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(readFileSync(join(opt, "lib", "libck-hello.so"), "utf8"), "not really a library\n");
  });

  test("bad input: a clear error and nothing committed", async (t) => {
    const expectFail = async (ns: string, args: string[], pattern: RegExp) => {
      const r = await ck(ns, args);
      assert.notEqual(r.code, 0, `${args.join(" ")} should fail`);
      assert.match(r.stderr, pattern);
      const c = await ck(ns, ["content", "ls", "-q"]);
      assert.equal(c.stdout.trim(), "", `nothing committed in ${ns}: ${c.stdout}`);
      const i = await ck(ns, ["images", "ls", "-q"]);
      assert.equal(i.stdout.trim(), "");
    };
    await t.test("a reference that does not parse", () => expectFail("bad1", ["pull", "--plain-http", "UPPER/Case:!!"], /invalid/i));
    await t.test("404", () => expectFail("bad2", ["pull", "--plain-http", ref("dist/nothing")], /not found/));
    await t.test("TLS to a plain-HTTP registry: says to use --plain-http", () => expectFail("bad2b", ["pull", ref("dist/small")], /plain HTTP, not TLS.*--plain-http/));
    await t.test("push of an image this namespace does not have: NotFound, nothing sent to the registry", async () => {
      const before = proxy.seen.length;
      await expectFail("bad9", ["push", "--plain-http", ref("dist/pushed"), "no/such:image"], /image "no\/such:image": not found/);
      assert.deepEqual(proxy.seen.slice(before).filter((r) => r.method !== "GET" && r.method !== "HEAD"), []);
    });
    await t.test("bad flags and digests: InvalidArgument naming them", async () => {
      await expectFail("bad8", ["pull", "--plain-http", "--max-concurrent-downloads", "0", ref("dist/small")], /--max-concurrent-downloads: 0 is not a whole number from 1 to 64/);
      await expectFail("bad8", ["pull", "--plain-http", "-u", ":secret", ref("dist/small")], /--user: a user name is required/);
      assert.doesNotMatch((await ck("bad8", ["pull", "--plain-http", "-u", ":secret", ref("dist/small")])).stderr, /secret/, "the password is never printed");
      await expectFail("bad8", ["pull", "--plain-http", "--platform", "linux/", ref("dist/small")], /platform/i);
      await expectFail("bad8", ["fetch-object", "--plain-http", ref("dist/small"), "sha256:xyz"], /sha256:<64 lowercase hex>/);
    });
    await t.test("401 without credentials", async () => {
      proxy.rule = () => ({ answer: { status: 401, headers: { "www-authenticate": 'Basic realm="test"' }, body: "{}" } });
      try {
        await expectFail("bad3", ["pull", "--plain-http", ref("dist/small")], /unauthorized|denied|authenticat/i);
      } finally {
        proxy.rule = undefined;
      }
    });
    await t.test("a manifest that is not valid JSON", async () => {
      proxy.rule = (req) =>
        req.url?.includes("/manifests/")
          ? { answer: { status: 200, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json", "docker-content-digest": `sha256:${createHash("sha256").update("{nope").digest("hex")}`, "content-length": "5" }, body: req.method === "HEAD" ? "" : "{nope" } }
          : undefined;
      try {
        await expectFail("bad4", ["pull", "--plain-http", ref("dist/small")], /json|invalid/i);
      } finally {
        proxy.rule = undefined;
      }
    });
    await t.test("a manifest of an unknown media type", async () => {
      const body = JSON.stringify({ schemaVersion: 2, mediaType: "application/x-unknown", layers: [] });
      const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
      proxy.rule = (req) =>
        req.url?.includes("/manifests/")
          ? { answer: { status: 200, headers: { "content-type": "application/x-unknown", "docker-content-digest": digest, "content-length": String(body.length) }, body: req.method === "HEAD" ? "" : body } }
          : undefined;
      try {
        await expectFail("bad5", ["pull", "--plain-http", ref("dist/small")], /media type|unsupported|unknown/i);
      } finally {
        proxy.rule = undefined;
      }
    });
    await t.test("a manifest larger than 4 MiB", async () => {
      const size = (4 << 20) + 1;
      const body = Buffer.alloc(size, 0x20);
      proxy.rule = (req) =>
        req.url?.includes("/manifests/")
          ? { answer: { status: 200, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json", "docker-content-digest": `sha256:${"a".repeat(64)}`, "content-length": String(size) }, body: req.method === "HEAD" ? "" : body } }
          : undefined;
      try {
        await expectFail("bad6", ["pull", "--plain-http", ref("dist/small")], /4194304|4 MiB|too large|larger/i);
      } finally {
        proxy.rule = undefined;
      }
    });
    await t.test("a blob whose bytes do not match its digest", async () => {
      // A fresh daemon root: the blobs must not be on disk already.
      const d3 = await TestDaemon.start({});
      proxy.rule = (req) => (req.method === "GET" && req.url?.includes(`/blobs/${small.manifest.layers[1].digest}`) ? { tamper: true } : undefined);
      try {
        const r = await runNode(CK, ["--address", d3.address, "-n", "bad7", "pull", "--plain-http", ref("dist/small")]);
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /digest/);
        assert.ok(!existsSync(blobPath(d3.root, small.manifest.layers[1].digest)), "the tampered blob is not in the store");
        const i = await runNode(CK, ["--address", d3.address, "-n", "bad7", "images", "ls", "-q"]);
        assert.equal(i.stdout.trim(), "");
      } finally {
        proxy.rule = undefined;
        await d3.cleanup();
      }
    });
  });
});
