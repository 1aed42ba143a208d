// ck images export and import against a real ckd (nats-server, RocksDB), a loopback
// docker-registry for the source image (umoci + skopeo) and the real ctr: the archives ck
// writes are the ones ctr writes, entry for entry; each takes the other's; a round trip into
// another namespace gives the same image, unpacked; bad archives and unknown images are
// refused with a clear message and leave nothing behind.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import tar from "tar-stream";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, CK } from "../helpers/daemon.js";
import { startRegistry, buildImage, type BuiltImage } from "../helpers/registry.js";
import { archiveListing, dockerArchive, ociArchive, platformImage, sha256, tarOf } from "../helpers/archives.js";
import { chainIds } from "../../src/cli/unpack.js";
import type { ApiClient } from "../../src/cli/client.js";

const CTR = "/usr/bin/ctr";

/** A command's exit code, stdout as bytes and stderr; `input` is written to its stdin. */
function run(cmd: string, args: string[], input?: Buffer): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => out.push(d));
    p.stderr.on("data", (d) => (stderr += d));
    const t = setTimeout(() => p.kill("SIGKILL"), 120_000);
    p.on("error", reject);
    p.on("close", (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr });
    });
    p.stdin.on("error", () => undefined);
    p.stdin.end(input);
  });
}

/** The archive's files by name (directories as empty buffers). */
async function filesOf(bytes: Buffer): Promise<Map<string, Buffer>> {
  const ex = tar.extract();
  const files = new Map<string, Buffer>();
  const reading = (async () => {
    for await (const e of ex) {
      const parts: Buffer[] = [];
      for await (const c of e) parts.push(c as Buffer);
      files.set(e.header.name, Buffer.concat(parts));
    }
  })();
  ex.end(bytes);
  await reading;
  return files;
}

/** The data of a Content.Read stream. */
async function collect(stream: AsyncIterable<{ data?: Uint8Array }>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const m of stream) out.push(Buffer.from(m.data ?? []));
  return out;
}

/** A listing without its first line (the whole archive's digest: ck's tar headers are tar-stream's, not Go's). */
const entriesOf = async (bytes: Buffer) => (await archiveListing(bytes)).split("\n").slice(1).join("\n");

describe("ck images export and import", { timeout: 600_000 }, () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let daemon: TestDaemon;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let image: BuiltImage;
  let work: string;
  let api: ApiClient;
  const ck = (ns: string, args: string[], input?: Buffer) => run(process.execPath, [CK, "--address", daemon.address, "-n", ns, ...args], input);
  const ctr = (ns: string, args: string[], input?: Buffer) => run(CTR, ["--address", daemon.address, "-n", ns, ...args], input);
  const text = (r: { code: number; stdout: Buffer; stderr: string }) => `${r.code}\n${r.stdout.toString("utf8")}${r.stderr}`;
  const names = async (ns: string) => (await ck(ns, ["images", "ls", "-q"])).stdout.toString("utf8").split("\n").filter(Boolean).sort();
  const images = async (ns: string) => {
    const c = daemon.client(ns);
    try {
      const list = ((await c.call("images", "List", {})).images ?? []) as any[];
      return Object.fromEntries(list.map((i) => [i.name, i.target.digest])) as Record<string, string>;
    } finally {
      c.close();
    }
  };
  /** The refs of the ingests open in a namespace. */
  const active = async (ns: string) => {
    const c = daemon.client(ns);
    try {
      return (((await c.call("content", "ListStatuses", {})).statuses ?? []) as any[]).map((s) => s.ref);
    } finally {
      c.close();
    }
  };

  before(async () => {
    work = mkdtempSync(join(tmpdir(), "ck-archive-"));
    nats = await startTestNats();
    registry = await startRegistry();
    image = await buildImage({
      host: registry.host,
      repo: "arch/app",
      tag: "v1",
      layers: [{ "bin/sh": "#!/bin/sh\n", "etc/old": "old\n" }, { "etc/motd": "hello\n" }, { "etc/old": { delete: true }, "etc/new": "new\n" }],
    });
    daemon = await TestDaemon.start({ natsUrl: nats.url });
    api = daemon.client("src");
    const pull = await ck("src", ["pull", "-q", "--plain-http", image.reference]);
    assert.equal(pull.code, 0, pull.stderr);
  });
  after(async () => {
    api?.close();
    await daemon?.cleanup();
    await registry?.stop();
    await nats?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test("export writes the archive ctr export writes, entry for entry: oci-layout, index.json naming the image, its blobs, manifest.json with RepoTags; to a file or to stdout", async () => {
    const ours = join(work, "ck.tar");
    const theirs = join(work, "ctr.tar");
    const e = await ck("src", ["images", "export", ours, image.reference]);
    assert.equal(text(e), "0\n");
    assert.equal((await ctr("src", ["images", "export", theirs, image.reference])).code, 0);
    const bytes = readFileSync(ours);
    assert.equal(await entriesOf(bytes), await entriesOf(readFileSync(theirs)));

    const files = await filesOf(bytes);
    assert.deepEqual([...files.keys()].filter((n) => !/^blobs\/sha256\/./.test(n)), ["blobs/", "blobs/sha256/", "index.json", "manifest.json", "oci-layout"]);
    assert.deepEqual(JSON.parse(files.get("oci-layout")!.toString()), { imageLayoutVersion: "1.0.0" });
    const index = JSON.parse(files.get("index.json")!.toString());
    assert.deepEqual(index, {
      schemaVersion: 2,
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: image.manifestDigest,
          size: image.manifestBytes.length,
          annotations: { "io.containerd.image.name": image.reference, "org.opencontainers.image.ref.name": "v1" },
        },
      ],
    });
    const blobPath = (d: string) => `blobs/sha256/${d.slice(7)}`;
    assert.deepEqual(JSON.parse(files.get("manifest.json")!.toString()), [
      { Config: blobPath(image.configDigest), RepoTags: [image.reference], Layers: image.manifest.layers.map((l: any) => blobPath(l.digest)) },
    ]);
    const want = [image.manifestDigest, image.configDigest, ...image.manifest.layers.map((l: any) => l.digest)].map(blobPath).sort();
    assert.deepEqual([...files.keys()].filter((n) => /^blobs\/sha256\/./.test(n)), want);
    for (const n of want) assert.equal(sha256(files.get(n)!), `sha256:${n.slice(13)}`, n);

    const stdout = await ck("src", ["images", "export", "-", image.reference]);
    assert.equal(stdout.code, 0, stdout.stderr);
    assert.ok(stdout.stdout.equals(bytes), "the same archive on stdout");
    // Nothing left beside the file.
    assert.deepEqual(readdirSync(work).filter((n) => n.includes("partial")), []);
  });

  test("round trip: ck export, then ck import into another namespace: the same image and content, unpacked, a container created from it", async () => {
    const archive = join(work, "round.tar");
    assert.equal((await ck("src", ["images", "export", archive, image.reference])).code, 0);
    const imp = await ck("dst", ["images", "import", "--label", "from=archive", archive]);
    assert.equal(text(imp), `0\nunpacking ${image.reference} (${image.manifestDigest})...done\n`);
    assert.deepEqual(await images("dst"), { [image.reference]: image.manifestDigest });
    const c = daemon.client("dst");
    try {
      const img = (await c.call("images", "Get", { name: image.reference })).image;
      assert.equal(img.labels.from, "archive");
      const blobs = [image.manifestDigest, image.configDigest, ...image.manifest.layers.map((l: any) => l.digest)];
      for (const d of blobs) assert.ok((await c.call("content", "Info", { digest: d })).info, d);
      const manifestLabels = (await c.call("content", "Info", { digest: image.manifestDigest })).info.labels;
      assert.equal(manifestLabels["containerd.io/gc.ref.content.config"], image.configDigest);
      image.manifest.layers.forEach((l: any, i: number) => assert.equal(manifestLabels[`containerd.io/gc.ref.content.l.${i}`], l.digest));
      const chain = chainIds(image.config.rootfs.diff_ids);
      for (const id of chain) assert.equal((await c.call("snapshots", "Stat", { snapshotter: "overlayfs", key: id })).info.kind, 3, id);
      // Nothing but the image: the index.json blob, held by no image, goes with the lease.
      const check = await ck("dst", ["images", "check"]);
      assert.match(check.stdout.toString(), /complete \(5\/5\).*true\n/);
      const create = await ck("dst", ["containers", "create", image.reference, "from-archive", "--", "/bin/sh"]);
      assert.equal(create.code, 0, create.stderr);
      const snap = (await c.call("snapshots", "Stat", { snapshotter: "overlayfs", key: "from-archive" })).info;
      assert.equal(snap.parent, chain[chain.length - 1]);
      assert.equal((await ck("dst", ["containers", "rm", "from-archive"])).code, 0);
    } finally {
      c.close();
    }
    // From stdin, gzipped, and again (the content there already): the same.
    const again = await ck("dst2", ["images", "import", "--no-unpack", "-"], gzipSync(readFileSync(archive)));
    assert.equal(text(again), "0\n");
    assert.deepEqual(await images("dst2"), { [image.reference]: image.manifestDigest });
    const twice = await ck("dst2", ["images", "import", "--no-unpack", archive]);
    assert.equal(text(twice), "0\n");
  });

  test("ctr takes ck's archive, and ck takes ctr's", async () => {
    const ours = join(work, "for-ctr.tar");
    assert.equal((await ck("src", ["images", "export", ours, image.reference])).code, 0);
    const byCtr = await ctr("ctr-in", ["images", "import", ours]);
    assert.equal(text(byCtr), `0\nunpacking ${image.reference} (${image.manifestDigest})...done\n`);
    // (ctr counts the config and layers: 4 of 4.)
    assert.match((await ctr("ctr-in", ["images", "check"])).stdout.toString(), /complete \(4\/4\).*true\s*$/m);

    const theirs = join(work, "from-ctr.tar");
    assert.equal((await ctr("src", ["images", "export", theirs, image.reference])).code, 0);
    const byCk = await ck("ck-in", ["images", "import", "--snapshotter", "native", theirs]);
    assert.equal(text(byCk), `0\nunpacking ${image.reference} (${image.manifestDigest})...done\n`);
    assert.deepEqual(await images("ck-in"), { [image.reference]: image.manifestDigest });
    const chain = chainIds(image.config.rootfs.diff_ids);
    const c = daemon.client("ck-in");
    try {
      assert.ok((await c.call("snapshots", "Stat", { snapshotter: "native", key: chain[chain.length - 1] })).info);
    } finally {
      c.close();
    }
  });

  test("an index of two platforms: import (--all-platforms, --platform, --digests, --index-name, --base-name) names and keeps what ctr's does; export (--platform, --all-platforms, several images) writes what ctr's does; --skip-manifest-json leaves manifest.json out", async () => {
    const oci = join(work, "multi.tar");
    writeFileSync(oci, await ociArchive());
    const cases: string[][] = [
      ["--all-platforms", "--digests", "--index-name", "example.com/idx:1", "--base-name", "example.com/multi", "--no-unpack"],
      ["--base-name", "example.com/multi", "--no-unpack"],
      ["--platform", "linux/arm64", "--digests", "--skip-digest-for-named", "--base-name", "example.com/multi", "--no-unpack"],
    ];
    for (const [i, flags] of cases.entries()) {
      const a = await ck(`mp${i}`, ["images", "import", ...flags, oci]);
      const b = await ctr(`mp${i}-ctr`, ["images", "import", ...flags, oci]);
      assert.equal(text(a), text(b), flags.join(" "));
      assert.deepEqual(await images(`mp${i}`), await images(`mp${i}-ctr`), flags.join(" "));
      // The GC labels of the archive's index: the children kept for the platforms asked for.
      const labels = async (ns: string) => {
        const c = daemon.client(ns);
        try {
          // After a collection: what no image holds (the archive's index.json blob) goes once
          // the import's lease has; a lease removed with sync waits for one.
          await c.call("leases", "Create", { id: "gc-point" });
          await c.call("leases", "Delete", { id: "gc-point", sync: true });
          const out: Record<string, Record<string, string>> = {};
          for await (const m of c.stream("content", "List", { filters: [] })) for (const info of m.info ?? []) out[info.digest] = Object.fromEntries(Object.entries((info.labels ?? {}) as Record<string, string>).filter(([k]) => k.startsWith("containerd.io/gc.ref.")));
          return out;
        } finally {
          c.close();
        }
      };
      assert.deepEqual(await labels(`mp${i}`), await labels(`mp${i}-ctr`), flags.join(" "));
    }
    const exports: string[][] = [
      ["example.com/multi:v1"],
      ["--all-platforms", "example.com/multi:v1", "example.com/idx:1"],
      ["--platform", "linux/arm64", "example.com/multi:v1"],
      ["--platform", "linux/arm64", "--platform", "linux/amd64", "example.com/multi:v1"],
      ["example.com/multi:single"],
    ];
    for (const args of exports) {
      const ours = join(work, "mine.tar");
      const theirs = join(work, "theirs.tar");
      const a = await ck("mp0", ["images", "export", ...flagsAndOut(args, ours)]);
      const b = await ctr("mp0", ["images", "export", ...flagsAndOut(args, theirs)]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(await entriesOf(readFileSync(ours)), await entriesOf(readFileSync(theirs)), args.join(" "));
    }
    const skip = join(work, "skip.tar");
    assert.equal((await ck("mp0", ["images", "export", "--skip-manifest-json", skip, "example.com/multi:v1", "example.com/multi:single"])).code, 0);
    const files = await filesOf(readFileSync(skip));
    assert.equal(files.has("manifest.json"), false);
    assert.equal(JSON.parse(files.get("index.json")!.toString()).manifests.length, 2);
  });

  test("a docker save archive (manifest.json, <id>/layer.tar, symlinked layers): the manifest and index ctr builds, byte for byte, so the same digests", async () => {
    const docker = join(work, "docker.tar");
    writeFileSync(docker, await dockerArchive());
    const a = await ck("dk", ["images", "import", docker]);
    const b = await ctr("dk-ctr", ["images", "import", docker]);
    assert.equal(text(a), text(b));
    assert.match(text(a), /^0\nunpacking docker\.io\/library\/dock:1 \(sha256:[0-9a-f]{64}\)\.\.\.done\n$/);
    assert.deepEqual(await images("dk"), await images("dk-ctr"));

    // docker save's shape for a layer used twice (a symlink to the first's layer.tar), and a
    // gzipped layer (typed by its first bytes), two tags.
    const plain = await tarOf([["etc/a", "a\n"]]);
    const zipped = await tarOf([["etc/b", "b\n"]]);
    const id = (b: Buffer) => sha256(b).slice(7);
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: {}, rootfs: { type: "layers", diff_ids: [sha256(plain), sha256(plain), sha256(zipped)] } }));
    const gz = gzipSync(zipped);
    const pack = tar.pack();
    const chunks: Buffer[] = [];
    const reading = (async () => {
      for await (const c of pack) chunks.push(c as Buffer);
    })();
    pack.entry({ name: `${id(config)}.json` }, config);
    pack.entry({ name: `${id(plain)}/layer.tar` }, plain);
    pack.entry({ name: "again/layer.tar", type: "symlink", linkname: `../${id(plain)}/layer.tar` });
    pack.entry({ name: `${id(gz)}/layer.tar` }, gz);
    pack.entry({ name: "manifest.json" }, JSON.stringify([{ Config: `${id(config)}.json`, RepoTags: ["two:1", "example.com/two:2"], Layers: [`${id(plain)}/layer.tar`, "again/layer.tar", `${id(gz)}/layer.tar`] }]));
    pack.finalize();
    await reading;
    const linked = join(work, "linked.tar");
    writeFileSync(linked, Buffer.concat(chunks));
    const c = await ck("dk2", ["images", "import", "--snapshotter", "native", linked]);
    const d = await ctr("dk2-ctr", ["images", "import", "--snapshotter", "native", linked]);
    assert.equal(text(c), text(d));
    assert.match(text(c), /^0\nunpacking docker\.io\/library\/two:1 \(sha256:[0-9a-f]{64}\)\.\.\.done\nunpacking example\.com\/two:2 /);
    assert.deepEqual(await images("dk2"), await images("dk2-ctr"));
    const api2 = daemon.client("dk2");
    try {
      const target = (await api2.call("images", "Get", { name: "example.com/two:2" })).image.target.digest;
      const manifest = JSON.parse(Buffer.concat(await collect(api2.stream("content", "Read", { digest: target }))).toString());
      assert.deepEqual(manifest.layers.map((l: any) => l.mediaType), ["application/vnd.docker.image.rootfs.diff.tar", "application/vnd.docker.image.rootfs.diff.tar", "application/vnd.docker.image.rootfs.diff.tar.gzip"]);
    } finally {
      api2.close();
    }
  });

  test("refused, nothing left behind: a missing file, not a tar, no index.json or manifest.json, an oci-layout without index.json, a blob whose bytes are not its digest, content named but absent; export of an unknown image or one whose content is gone", async () => {
    const ns = "bad";
    const refuse = async (args: string[], re: RegExp, input?: Buffer) => {
      const r = await ck(ns, ["images", "import", ...args], input);
      assert.equal(r.code, 1, `${args.join(" ")}: ${text(r)}`);
      assert.match(r.stderr, re, args.join(" "));
      assert.equal(r.stdout.toString(), "");
      assert.deepEqual(await names(ns), [], `no image after ${args.join(" ")}`);
    };
    await refuse([join(work, "nope.tar")], /^ck: archive \S+nope\.tar: no such file: not found\n$/);
    writeFileSync(join(work, "garbage.tar"), "not a tar at all\n".repeat(64));
    await refuse([join(work, "garbage.tar")], /^ck: archive \S+garbage\.tar: not a tar archive, or cut short \(.+\): invalid argument\n$/);
    writeFileSync(join(work, "empty.tar"), "");
    await refuse([join(work, "empty.tar")], /not a tar archive \(no entries\): invalid argument/);
    writeFileSync(join(work, "other.tar"), await tarOf([["hello.txt", "hi\n"]]));
    await refuse([join(work, "other.tar")], /neither an OCI image layout \(oci-layout, index\.json\) nor a docker save archive \(manifest\.json\): invalid argument/);
    writeFileSync(join(work, "noindex.tar"), await tarOf([["oci-layout", JSON.stringify({ imageLayoutVersion: "1.0.0" })]]));
    await refuse([join(work, "noindex.tar")], /an OCI image layout without index\.json: invalid argument/);

    // A layer's bytes changed, its name (the digest) kept.
    const img = await platformImage("amd64", [["etc/x", "x\n"]]);
    const [layer, config, manifest] = img.blobs;
    const index = JSON.stringify({ schemaVersion: 2, manifests: [{ ...manifest!.desc, annotations: { "io.containerd.image.name": "example.com/bad:1" } }] });
    const layout = ["oci-layout", JSON.stringify({ imageLayoutVersion: "1.0.0" })] as [string, string];
    const tampered = Buffer.from(layer!.bytes);
    tampered[tampered.length - 5] ^= 0xff;
    const entry = (b: { desc: { digest: string } }, bytes: Buffer) => [`blobs/sha256/${b.desc.digest.slice(7)}`, bytes] as [string, Buffer];
    writeFileSync(join(work, "tampered.tar"), await tarOf([layout, ["index.json", index], entry(config!, config!.bytes), entry(layer!, tampered), entry(manifest!, manifest!.bytes)]));
    await refuse([join(work, "tampered.tar")], new RegExp(`blobs/sha256/${layer!.desc.digest.slice(7)} holds bytes of digest ${sha256(tampered)}, not the ${layer!.desc.digest} its name says: invalid argument`));
    assert.deepEqual(await active(ns), [], "no ingest left");
    const c = daemon.client(ns);
    try {
      await assert.rejects(c.call("content", "Info", { digest: layer!.desc.digest }));
      await assert.rejects(c.call("content", "Info", { digest: sha256(tampered) }));
    } finally {
      c.close();
    }
    // The layer left out: neither in the archive nor in the store.
    writeFileSync(join(work, "missing.tar"), await tarOf([layout, ["index.json", index], entry(config!, config!.bytes), entry(manifest!, manifest!.bytes)]));
    await refuse([join(work, "missing.tar")], new RegExp(`${layer!.desc.digest} \\(application/vnd\\.oci\\.image\\.layer\\.v1\\.tar\\+gzip, named by manifest ${manifest!.desc.digest}\\) is neither in the archive nor in the content store: not found`));
    // A docker archive whose manifest.json names a layer it does not hold.
    writeFileSync(join(work, "docker-missing.tar"), await tarOf([["c.json", config!.bytes], ["manifest.json", JSON.stringify([{ Config: "c.json", RepoTags: ["x:1"], Layers: ["l/layer.tar"] }])]]));
    await refuse([join(work, "docker-missing.tar")], /^ck: archive \S+docker-missing\.tar: manifest\.json: \[0\]: layer "l\/layer\.tar" is not in the archive: invalid argument\n$/);
    // A manifest whose layer descriptor says another size than the layer's: ck refuses it,
    // ctr imports it; ck's export of that image then refuses it too, writing nothing.
    const badSize = JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: config!.desc, layers: [{ ...layer!.desc, size: layer!.desc.size + 1 }] });
    const badSizeDigest = sha256(badSize);
    const badSizeIndex = JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: badSizeDigest, size: badSize.length, annotations: { "io.containerd.image.name": "example.com/size:1" } }] });
    writeFileSync(join(work, "size.tar"), await tarOf([layout, ["index.json", badSizeIndex], entry(config!, config!.bytes), entry(layer!, layer!.bytes), [`blobs/sha256/${badSizeDigest.slice(7)}`, badSize]]));
    await refuse(["--no-unpack", join(work, "size.tar")], new RegExp(`${layer!.desc.digest} \\(application/vnd\\.oci\\.image\\.layer\\.v1\\.tar\\+gzip, named by manifest ${badSizeDigest}\\) is ${layer!.desc.size} bytes, not the ${layer!.desc.size + 1} its descriptor says: invalid argument`));
    assert.equal((await ctr("size-ctr", ["images", "import", "--no-unpack", join(work, "size.tar")])).code, 0);
    const sizeOut = join(work, "size-out.tar");
    const sizeExport = await ck("size-ctr", ["images", "export", sizeOut, "example.com/size:1"]);
    assert.equal(text(sizeExport), `1\nck: content ${layer!.desc.digest} is ${layer!.desc.size} bytes in the content store, not the ${layer!.desc.size + 1} its descriptor says: failed precondition\n`);
    assert.equal(existsSync(sizeOut), false);
    await refuse(["--skip-digest-for-named", join(work, "missing.tar")], /^ck: --skip-digest-for-named must be specified with --digests: invalid argument\n$/);

    await refuse(["--platform", "linux/nope", join(work, "missing.tar")], /^ck: platform "linux\/nope": unknown architecture "nope": invalid argument\n$/);

    // Export: a bad platform, a target that is no manifest, an unknown image, and one whose
    // layer is gone from the store.
    const out0 = join(work, "never.tar");
    const badPlatform = await ck("src", ["images", "export", "--platform", "linux/nope", out0, image.reference]);
    assert.equal(text(badPlatform), `1\nck: platform "linux/nope": unknown architecture "nope": invalid argument\n`);
    assert.equal(existsSync(out0), false);
    const cfg = image.manifest.config;
    assert.equal((await ck("src", ["images", "create", "not-a-manifest:1", "--digest", cfg.digest, "--size", String(cfg.size), "--media-type", cfg.mediaType])).code, 0);
    const notManifest = await ck("src", ["images", "export", out0, "not-a-manifest:1"]);
    assert.equal(text(notManifest), `1\nck: image "not-a-manifest:1": only manifests may be exported, not ${cfg.mediaType}: invalid argument\n`);
    assert.equal(existsSync(out0), false);
    assert.equal((await ck("src", ["images", "rm", "not-a-manifest:1"])).code, 0);
    const out = join(work, "never.tar");
    const unknown = await ck("src", ["images", "export", out, image.reference, "nope:1"]);
    assert.equal(text(unknown), `1\nck: image "nope:1": not found\n`);
    assert.equal(existsSync(out), false);
    const nodir = await ck("src", ["images", "export", join(work, "no-such-dir", "x.tar"), image.reference]);
    assert.equal(nodir.code, 1);
    assert.match(nodir.stderr, /^ck: \S+no-such-dir\/x\.tar: no such directory \(.+\): invalid argument\n$/);
    const whole = join(work, "whole.tar");
    assert.equal((await ck("src", ["images", "export", whole, image.reference])).code, 0);
    const full = await ck("gone", ["images", "import", "--no-unpack", whole]);
    assert.equal(full.code, 0, full.stderr);
    const lost = image.manifest.layers[1].digest;
    const g = daemon.client("gone");
    try {
      await g.call("content", "Delete", { digest: lost });
    } finally {
      g.close();
    }
    const partial = await ck("gone", ["images", "export", out, image.reference]);
    assert.equal(text(partial), `1\nck: content ${lost} (${image.manifest.layers[1].mediaType}) of the exported images is not in the content store: not found\n`);
    assert.equal(existsSync(out), false);
    const toStdout = await ck("gone", ["images", "export", "-", image.reference]);
    assert.equal(toStdout.code, 1);
    assert.equal(toStdout.stdout.length, 0, "not a byte written");
    assert.deepEqual(readdirSync(work).filter((n) => n.includes("partial")), []);
  });
});

/** `[flags..., out, refs...]` from `[flags..., refs...]` (flags and their values first). */
function flagsAndOut(args: string[], out: string): string[] {
  const flags: string[] = [];
  let i = 0;
  while (i < args.length && args[i]!.startsWith("--")) {
    flags.push(args[i]!);
    if (args[i] === "--platform") flags.push(args[++i]!);
    i++;
  }
  return [...flags, out, ...args.slice(i)];
}

