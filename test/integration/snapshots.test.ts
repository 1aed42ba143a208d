// Snapshots, diffs and unpacking against the real ckd: `ck pull` unpacks a three-layer image
// (umoci-built, a file deleted in a later layer, a directory replaced) into a chain of
// committed snapshots with each snapshotter; a View of the top, mounted, shows exactly the
// image's files; the real ctr pulls and lists into ckd's snapshots; kill -9 during an unpack
// leaves nothing half-made visible; bad input writes nothing. A pull into a second namespace
// shares the committed snapshots ckd unpacked itself (0 layers applied), never ones a client
// committed; GC removes a directory only when no namespace refers to it.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { gzipSync } from "node:zlib";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { spawn } from "node:child_process";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runCommand, runNode, CK, CK_REPLAY } from "../helpers/daemon.js";
import { startRegistry, buildImage, type BuiltImage } from "../helpers/registry.js";
import { rejectsClass } from "../helpers/errors.js";
import type { CkError } from "../../src/errdefs/errdefs.js";
import type { ApiClient } from "../../src/cli/client.js";
import { chainIds, unpackImage } from "../../src/cli/unpack.js";
import { ApiContent } from "../../src/cli/api-content.js";
import { layerTar } from "../conformance/snapshotter.js";
import { mountAll, unmountAll } from "../../src/snapshots/mount.js";

const CTR = "/usr/bin/ctr";
const COMMITTED = 3; // containerd.services.snapshots.v1.Kind

async function listSnapshots(api: ApiClient, snapshotter: string, filters: string[] = []): Promise<any[]> {
  const out: any[] = [];
  for await (const m of api.stream("snapshots", "List", { snapshotter, filters })) out.push(...(m.info ?? []));
  return out;
}

/** A snapshotter's snapshots in a namespace as sorted [name, parent, kind] rows. */
async function chainRows(api: ApiClient, snapshotter: string): Promise<unknown[][]> {
  return (await listSnapshots(api, snapshotter)).map((i) => [i.name, i.parent, i.kind]).sort();
}

/** The rows of a chain of committed snapshots named by these chain IDs, as chainRows sorts them. */
function committedChain(chain: readonly string[]): unknown[][] {
  return chain.map((c, i) => [c, i > 0 ? chain[i - 1] : "", COMMITTED]).sort();
}

/** Every path in a tree (relative, sorted), directories marked with a trailing "/". */
async function treeOf(root: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await fs.readdir(path.join(root, rel))).sort()) {
    const p = rel ? `${rel}/${name}` : name;
    const st = await fs.lstat(path.join(root, p));
    if (st.isDirectory()) out.push(p + "/", ...(await treeOf(root, p)));
    else out.push(p);
  }
  return out;
}

/** Reads a View of `parent` through its mounts (a gc.root: a GC run meanwhile keeps it). */
async function readView(api: ApiClient, snapshotter: string, parent: string): Promise<{ tree: string[]; files: Record<string, string> }> {
  const key = `view of ${parent} ${randomBytes(3).toString("hex")}`;
  const { mounts } = await api.call("snapshots", "View", { snapshotter, key, parent, labels: { "containerd.io/gc.root": "now" } });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "ck-view-"));
  try {
    await mountAll(mounts.map((m: any) => ({ type: m.type, source: m.source, options: m.options })), dir);
    try {
      const tree = (await treeOf(dir)).filter((p) => !p.startsWith("big/"));
      const files: Record<string, string> = {};
      for (const p of tree) {
        if (p.endsWith("/") || p.startsWith("big")) continue;
        const at = path.join(dir, p);
        files[p] = (await fs.lstat(at)).isSymbolicLink() ? `-> ${await fs.readlink(at)}` : await fs.readFile(at, "utf8");
      }
      return { tree, files };
    } finally {
      await unmountAll(dir);
    }
  } finally {
    await fs.rmdir(dir).catch(() => undefined);
    await api.call("snapshots", "Remove", { snapshotter, key });
  }
}

const sha = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");

/** Layer tars gzipped into the content store under the lease in `metadata`; their descriptors, diff_ids and chain IDs. */
async function storeLayers(api: ApiClient, metadata: Record<string, string>, tars: Buffer[]) {
  const content = new ApiContent(api, metadata);
  const layers: { media_type: string; digest: string; size: number }[] = [];
  for (const b of tars.map((t) => gzipSync(t))) {
    const digest = sha(b);
    const w = await content.open(`layer-${digest}`, { expected: digest, total: b.length });
    if (w !== "exists") {
      // complete: another namespace has the blob, so it commits without a byte.
      if (!w.complete) await w.write(b);
      await w.commit(b.length, digest);
    }
    layers.push({ media_type: "application/vnd.oci.image.layer.v1.tar+gzip", digest, size: b.length });
  }
  const diffIds = tars.map(sha);
  return { layers, diffIds, chain: chainIds(diffIds) };
}

const EXPECTED_FILES: Record<string, string> = {
  "bin/sh": "#!/bin/sh\n",
  "etc/group": "root:x:0:\n",
  "etc/motd": "hello\n",
  "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
  "opq/c": "c\n",
};

describe("snapshots and unpacking", { timeout: 600_000 }, () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let daemon: TestDaemon;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let image: BuiltImage;
  let big: BuiltImage;
  const ck = (ns: string, args: string[]) => runNode(CK, ["--address", daemon.address, "-n", ns, ...args]);
  const snapDirs = async (sn: string) => (await fs.readdir(path.join(daemon.root, "snapshots", sn, "snapshots")).catch(() => [] as string[])).sort();

  before(async () => {
    nats = await startTestNats();
    registry = await startRegistry();
    image = await buildImage({
      host: registry.host,
      repo: "snap/app",
      tag: "v1",
      layers: [
        { "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n", "etc/old": "to be deleted\n", "bin/sh": "#!/bin/sh\n", "opq/a": "a\n", "opq/b": "b\n" },
        { "etc/old": { delete: true }, "etc/motd": "hello\n" },
        { opq: { delete: true }, "opq/c": "c\n" },
      ],
    });
    const many: Record<string, Buffer> = {};
    for (let i = 0; i < 1500; i++) many[`big/f${i}`] = randomBytes(16 << 10);
    big = await buildImage({ host: registry.host, repo: "snap/big", tag: "v1", layers: [{ "a.txt": "a\n" }, { "big/blob.bin": randomBytes(48 << 20), ...many }, { "c.txt": "c\n" }] });
    daemon = await TestDaemon.start({ natsUrl: nats.url });
  });
  after(async () => {
    await daemon?.cleanup();
    await registry?.stop();
    await nats?.cleanup();
  });

  for (const sn of ["overlayfs", "native"]) {
    test(`ck pull --snapshotter ${sn}: a chain of three committed snapshots; a View of the top shows exactly the image's files`, async () => {
      const ns = `pull-${sn}`;
      const r = await ck(ns, ["pull", "--plain-http", "--snapshotter", sn, image.reference]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const api = daemon.client(ns);
      try {
        const chain = chainIds(image.config.rootfs.diff_ids);
        assert.equal(chain.length, 3);
        assert.deepEqual(await chainRows(api, sn), committedChain(chain));
        // ck snapshot ls shows the same: KEY PARENT KIND.
        const ls = await ck(ns, ["snapshot", "--snapshotter", sn, "ls"]);
        assert.equal(ls.code, 0, ls.stderr);
        assert.match(ls.stdout, /^KEY\s+PARENT\s+KIND/);
        assert.ok(ls.stdout.includes(chain[2]!) && ls.stdout.includes("Committed"), ls.stdout);
        // GC labels: layers carry their diff_id, the config names the top snapshot.
        for (const [i, l] of image.manifest.layers.entries()) {
          const info = await api.call("content", "Info", { digest: l.digest });
          assert.equal(info.info.labels["containerd.io/uncompressed"], image.config.rootfs.diff_ids[i]);
        }
        const cfg = await api.call("content", "Info", { digest: image.configDigest });
        assert.equal(cfg.info.labels[`containerd.io/gc.ref.snapshot.${sn}`], chain[2]);

        const view = await readView(api, sn, chain[2]!);
        assert.deepEqual(view.files, EXPECTED_FILES);
        assert.ok(!view.tree.includes("etc/old"), "deleted file absent");
        assert.ok(!view.tree.includes("opq/a") && !view.tree.includes("opq/b"), "replaced directory's old files absent");

        // A pull again skips every layer (Stat finds the chain).
        const again = await ck(ns, ["pull", "--plain-http", "--snapshotter", sn, image.reference]);
        assert.equal(again.code, 0, again.stderr);
        assert.match(again.stdout, /unpacked 3 layers \(0 applied\)/);

        // GC keeps the chain while the image exists: only the chain remains after a collection.
        await api.call("gc", "Collect", {});
        assert.equal((await listSnapshots(api, sn)).length, 3);
        // Directories on disk: one per snapshot of any namespace, nothing else after Cleanup.
        await api.call("snapshots", "Cleanup", { snapshotter: sn });
        const dirs = await snapDirs(sn);
        assert.ok(dirs.every((d) => !d.startsWith(".")), dirs.join(","));

        // Image removed (sync): GC takes the chain, leaves first, and its directories.
        const before = (await snapDirs(sn)).length;
        await api.call("images", "Delete", { name: image.reference, sync: true });
        assert.deepEqual(await listSnapshots(api, sn), []);
        assert.equal((await snapDirs(sn)).length, before - 3);
      } finally {
        api.close();
      }
    });
  }

  for (const sn of ["overlayfs", "native"]) {
    test(`sharing (${sn}): a warm ck pull into another namespace applies 0 layers; GC counts every namespace; client-committed snapshots are never shared`, async () => {
      const chain = chainIds(image.config.rootfs.diff_ids);
      const pull = async (ns: string, want: RegExp) => {
        const t0 = performance.now();
        const r = await ck(ns, ["pull", "--plain-http", "--snapshotter", sn, image.reference]);
        const ms = performance.now() - t0;
        assert.equal(r.code, 0, r.stderr + r.stdout);
        assert.match(r.stdout, want);
        return ms;
      };
      const [A, B, C, E, X] = ["a", "b", "c", "e", "x"].map((n) => `share-${n}-${sn}`) as [string, string, string, string, string];
      const dirs0 = (await snapDirs(sn)).length;
      await pull(A, /unpacked 3 layers \(3 applied\)/);
      assert.equal((await snapDirs(sn)).length, dirs0 + 3);
      const warmMs = await pull(B, /unpacked 3 layers \(0 applied, 3 shared\)/);
      assert.equal((await snapDirs(sn)).length, dirs0 + 3, "no directory made for the shared snapshots");
      console.log(`# warm ck pull into a 2nd namespace (${sn}): ${warmMs.toFixed(0)} ms end to end`);
      const a = daemon.client(A);
      const b = daemon.client(B);
      const c = daemon.client(C);
      const x = daemon.client(X);
      try {
        // B's metadata is its own: the chain, named by chain ID, with B's own events.
        assert.deepEqual(await chainRows(b, sn), committedChain(chain));
        assert.deepEqual((await readView(b, sn, chain[2]!)).files, EXPECTED_FILES);
        // Cleanup keeps shared directories.
        await b.call("snapshots", "Cleanup", { snapshotter: sn });
        assert.equal((await snapDirs(sn)).length, dirs0 + 3);

        // rm in A + GC: A's records go, the directories stay for B, B still reads its files.
        await a.call("images", "Delete", { name: image.reference, sync: true });
        assert.deepEqual(await listSnapshots(a, sn), []);
        assert.equal((await snapDirs(sn)).length, dirs0 + 3);
        assert.deepEqual((await readView(b, sn, chain[2]!)).files, EXPECTED_FILES);
        await a.call("snapshots", "Cleanup", { snapshotter: sn });
        assert.deepEqual((await readView(b, sn, chain[2]!)).files, EXPECTED_FILES);
        // rm in B + GC: no namespace refers to them any more, the directories go.
        await b.call("images", "Delete", { name: image.reference, sync: true });
        assert.deepEqual(await listSnapshots(b, sn), []);
        assert.equal((await snapDirs(sn)).length, dirs0);

        // A client unpacks the first layer as ctr does (Prepare, Diff.Apply, Commit under the
        // chain ID), but also writes a file of its own through the mounts before committing.
        const f = await ck(X, ["fetch", "--plain-http", "-q", image.reference]);
        assert.equal(f.code, 0, f.stderr);
        const { mounts } = await x.call("snapshots", "Prepare", { snapshotter: sn, key: "mine", parent: "", labels: { "containerd.io/gc.root": "now" } });
        assert.equal(mounts.length, 1);
        const l0 = image.manifest.layers[0]!;
        const applied = await x.call("diff", "Apply", { diff: { media_type: l0.mediaType, digest: l0.digest, size: l0.size }, mounts });
        assert.equal(applied.applied.digest, image.config.rootfs.diff_ids[0]);
        // Mounts that are not exactly an active snapshot's of the caller's namespace are refused
        // before anything is written: options the path check did not read (an overlay with
        // bind writing into upperdir=/tmp/...), a snapshotter's whole root, another
        // namespace's snapshot.
        const diff = { media_type: l0.mediaType, digest: l0.digest, size: l0.size };
        const root = path.dirname(path.dirname(path.dirname(mounts[0].source)));
        const elsewhere = await fs.mkdtemp(path.join(os.tmpdir(), "ck-not-a-snapshot-"));
        const other = daemon.client(`${X}-other`);
        try {
          await other.call("leases", "Create", { id: "o" });
          // Under its lease: a GC between this Prepare and the Remove must not take it.
          const theirs = (await other.call("snapshots", "Prepare", { snapshotter: sn, key: "theirs", parent: "" }, { metadata: { "containerd-lease": "o" } })).mounts;
          for (const bad of [
            [{ type: "overlay", source: mounts[0].source, options: ["rbind", `upperdir=${elsewhere}`, `lowerdir=${elsewhere}`] }],
            [{ type: "bind", source: root, options: ["rw", "rbind"] }],
            theirs,
          ]) {
            await rejectsClass(x.call("diff", "Apply", { diff, mounts: bad }), "InvalidArgument", /not the mounts of an active snapshot in namespace|not a snapshot of this daemon/);
            await rejectsClass(x.call("diff", "Diff", { left: [], right: bad }), "InvalidArgument", /not the mounts of an active or a view snapshot in namespace|not a snapshot of this daemon/);
          }
          assert.deepEqual(await fs.readdir(elsewhere), [], "nothing written outside the snapshots");
          await other.call("snapshots", "Remove", { snapshotter: sn, key: "theirs" });
          await other.call("leases", "Delete", { id: "o" });
        } finally {
          other.close();
          await fs.rm(elsewhere, { recursive: true, force: true });
        }
        await fs.writeFile(path.join(mounts[0].source, "evil"), "written by a client\n");
        await x.call("snapshots", "Commit", { snapshotter: sn, key: "mine", name: chain[0], labels: { "containerd.io/gc.root": "now" } });
        // Diff.Diff of an active snapshot on it against a view of its parent, as containerd's
        // walking differ is asked: the new file, read through a read-only mount of the active one.
        {
          // Under a lease, as a client makes them: else a collection could take them meanwhile.
          await x.call("leases", "Create", { id: "o-diff" });
          const leased = { metadata: { "containerd-lease": "o-diff" } };
          const work = (await x.call("snapshots", "Prepare", { snapshotter: sn, key: "diff-work", parent: chain[0] }, leased)).mounts;
          const base = (await x.call("snapshots", "View", { snapshotter: sn, key: "diff-base", parent: chain[0] }, leased)).mounts;
          const upperDir = work[0].type === "overlay" ? work[0].options.find((o: string) => o.startsWith("upperdir=")).slice("upperdir=".length) : work[0].source;
          await fs.writeFile(path.join(upperDir, "added-by-diff-test"), "new\n");
          const made = await x.call("diff", "Diff", { left: base, right: work, media_type: "application/vnd.oci.image.layer.v1.tar" }, leased);
          const parts: Buffer[] = [];
          for await (const m of x.stream<any>("content", "Read", { digest: made.diff.digest })) parts.push(Buffer.from(m.data));
          const layer = Buffer.concat(parts);
          assert.ok(layer.includes(Buffer.from("added-by-diff-test")), "the new file is in the diff");
          // The same mounts made read-only by the client (its upper as the top lower, ro), as a
          // read-only wrapper makes them: taken to be read, and the same layer comes out.
          const { readOnly } = await import("../../src/diff/diff.js");
          const again = await x.call("diff", "Diff", { left: base, right: work.map(readOnly), media_type: "application/vnd.oci.image.layer.v1.tar" }, leased);
          assert.equal(again.diff.digest, made.diff.digest);
          // Bad labels are refused before a byte is written: no blob file, no ingest left.
          await fs.writeFile(path.join(upperDir, "added-for-bad-labels"), "other\n");
          const blobDir = path.join(daemon.root, "content", "blobs", "sha256");
          const blobsBefore = (await fs.readdir(blobDir)).length;
          await rejectsClass(x.call("diff", "Diff", { left: base, right: work, labels: { k: "v".repeat(4096) } }, leased), "InvalidArgument", /^info\.Labels: label key and value greater than maximum size/);
          assert.equal((await fs.readdir(blobDir)).length, blobsBefore);
          assert.deepEqual((await x.call("content", "ListStatuses", { filters: [] })).statuses ?? [], []);
          // A media type the differ does not write: NotImplemented in containerd's walking
          // differ's words, before a byte is written.
          await rejectsClass(x.call("diff", "Diff", { left: base, right: work, media_type: "application/x-nope" }, leased), "NotImplemented", /unsupported diff media type: application\/x-nope/);
          assert.equal((await fs.readdir(blobDir)).length, blobsBefore);
          assert.deepEqual((await x.call("content", "ListStatuses", { filters: [] })).statuses ?? [], []);
          await fs.rm(path.join(upperDir, "added-for-bad-labels"));
          // But not to be written.
          await rejectsClass(x.call("diff", "Apply", { diff: { media_type: l0.mediaType, digest: l0.digest, size: l0.size }, mounts: work.map(readOnly) }), "InvalidArgument", /not the mounts of an active snapshot/);
          assert.ok(!layer.includes(Buffer.from("evil")), "what the parent held is not");
          await x.call("leases", "Delete", { id: "o-diff", sync: true });
        }
        // Another namespace's pull does not share it: every layer is applied again.
        await pull(C, /unpacked 3 layers \(3 applied\)/);
        const cview = await readView(c, sn, chain[2]!);
        assert.deepEqual(cview.files, EXPECTED_FILES);
        // The client's own namespace keeps its chain-ID snapshot (as ctr's Stat would); what is
        // unpacked on it is not verified, so not shared either.
        await pull(X, /unpacked 3 layers \(2 applied\)/);
        assert.ok((await readView(x, sn, chain[2]!)).tree.includes("evil"));
        await pull(E, /unpacked 3 layers \(0 applied, 3 shared\)/);
        const e = daemon.client(E);
        try {
          assert.deepEqual((await readView(e, sn, chain[2]!)).files, EXPECTED_FILES);
          for (const cl of [c, x, e]) {
            await cl.call("images", "Delete", { name: image.reference, sync: true });
            // The client's own snapshot is kept by its gc.root label until removed.
            await cl.call("snapshots", "Remove", { snapshotter: sn, key: chain[0] }).catch(() => undefined);
            assert.deepEqual(await listSnapshots(cl, sn), []);
          }
        } finally {
          e.close();
        }
        assert.equal((await snapDirs(sn)).length, dirs0);
      } finally {
        a.close();
        b.close();
        c.close();
        x.close();
      }
    });
  }

  for (const sn of ["overlayfs", "native"]) {
    test(`a layer writing through a lower layer's symlink (lib -> usr/lib) lands where it points, as through containerd's mounted overlay (${sn}: applied ahead, then again onto its parent)`, async () => {
      const ns = `symlinked-${sn}`;
      const api = daemon.client(ns);
      await api.call("leases", "Create", { id: ns, labels: {} });
      const metadata = { "containerd-lease": ns };
      const { layers, diffIds, chain } = await storeLayers(api, metadata, [
        await layerTar([
          { name: "usr/", type: "directory" },
          { name: "usr/lib/", type: "directory", mode: 0o750 },
          { name: "usr/lib/old", body: "old\n" },
          { name: "lib", type: "symlink", linkname: "usr/lib" },
        ]),
        // No entry for lib/: it is the lower layer's symlink. The hard link names a lower file.
        await layerTar([
          { name: "lib/new", body: "new\n" },
          { name: "lib/hl", type: "link", linkname: "lib/old" },
        ]),
      ]);
      const apply = (i: number) =>
        api.call("unpack", "Apply", { snapshotter: sn, layer: layers[i], diff_id: diffIds[i], parent: i > 0 ? chain[i - 1] : "", wait_parent: i > 0 }, { metadata });
      const dirs0 = (await snapDirs(sn)).length;
      const second = apply(1);
      second.catch(() => undefined); // awaited below
      // Applied meanwhile into a directory of its own.
      for (let i = 0; i < 100 && (await snapDirs(sn)).length === dirs0; i++) await sleep(50);
      assert.equal((await apply(0)).status, "applied");
      assert.deepEqual([(await second).chain_id, (await second).status], [chain[1], "applied"]);
      const view = await readView(api, sn, chain[1]!);
      assert.deepEqual(view.tree, ["lib", "usr/", "usr/lib/", "usr/lib/hl", "usr/lib/new", "usr/lib/old"]);
      assert.deepEqual(view.files, { lib: "-> usr/lib", "usr/lib/hl": "old\n", "usr/lib/new": "new\n", "usr/lib/old": "old\n" });
      // The lower layer is as it was.
      assert.deepEqual((await readView(api, sn, chain[0]!)).files, { lib: "-> usr/lib", "usr/lib/old": "old\n" });
      await api.call("leases", "Delete", { id: ns, sync: true });
    });

    test(`Unpack.Apply with a diff_id the layer does not have (${sn}): FailedPrecondition; no snapshot, no directory, no label`, async () => {
      const ns = `wrongdiff-${sn}`;
      const api = daemon.client(ns);
      await api.call("leases", "Create", { id: ns, labels: {} });
      const metadata = { "containerd-lease": ns };
      const { layers } = await storeLayers(api, metadata, [await layerTar([{ name: `wrong-${sn}`, body: "x\n" }])]);
      const dirs0 = (await snapDirs(sn)).length;
      await rejectsClass(
        api.call("unpack", "Apply", { snapshotter: sn, layer: layers[0], diff_id: sha(Buffer.from("another layer")), parent: "", label_uncompressed: true }, { metadata }),
        "FailedPrecondition",
      );
      assert.deepEqual(await listSnapshots(api, sn), []);
      assert.equal((await snapDirs(sn)).length, dirs0);
      const { info } = await api.call("content", "Info", { digest: layers[0]!.digest });
      assert.equal((info.labels ?? {})["containerd.io/uncompressed"], undefined);
      await api.call("leases", "Delete", { id: ns, sync: true });
    });

    test(`Unpack.Apply of a layer writing under a lower layer's file (${sn}): InvalidArgument, onto its parent and applied ahead of it; nothing of it is left`, async () => {
      const ns = `underfile-${sn}`;
      const api = daemon.client(ns);
      await api.call("leases", "Create", { id: ns, labels: {} });
      const metadata = { "containerd-lease": ns };
      const { layers, diffIds, chain } = await storeLayers(api, metadata, [
        await layerTar([{ name: "usr/lib/old", body: "old\n" }]),
        // usr/ and usr/lib/ are made in the new snapshot before usr/lib/old shows a file.
        await layerTar([{ name: "usr/lib/old/x", body: "x\n" }]),
      ]);
      const apply = (i: number, waitParent = false) =>
        api.call("unpack", "Apply", { snapshotter: sn, layer: layers[i], diff_id: diffIds[i], parent: i > 0 ? chain[i - 1] : "", wait_parent: waitParent }, { metadata });
      const dirs0 = (await snapDirs(sn)).length;
      // Ahead of its parent: the layer alone applies, and is refused once its parent is there.
      const ahead = apply(1, true);
      ahead.catch(() => undefined); // awaited below
      for (let i = 0; i < 100 && (await snapDirs(sn)).length === dirs0; i++) await sleep(50);
      assert.equal((await apply(0)).status, "applied");
      await rejectsClass(ahead, "InvalidArgument", /usr\/lib\/old/);
      // Onto its parent: refused the same way.
      await rejectsClass(apply(1), "InvalidArgument", /usr\/lib\/old/);
      assert.deepEqual((await listSnapshots(api, sn)).map((i) => i.name), [chain[0]]);
      assert.equal((await snapDirs(sn)).length, dirs0 + 1, "only the lower layer's snapshot directory");
      assert.deepEqual((await readView(api, sn, chain[0]!)).files, { "usr/lib/old": "old\n" });
      await api.call("leases", "Delete", { id: ns, sync: true });
    });

    test(`Unpack.Apply with wait_parent (${sn}): a layer sent before its parent is applied meanwhile and committed after it; a wait ends with the call and leaves nothing`, async () => {
      const ns = `ahead-${sn}`;
      const api = daemon.client(ns);
      const lease = `ahead-${sn}`;
      await api.call("leases", "Create", { id: lease, labels: {} });
      const metadata = { "containerd-lease": lease };
      const dirs0 = (await snapDirs(sn)).length;
      try {
        // The second layer has no entries for p and p/q: the lower layer's p must show through.
        const tars = [
          await layerTar([{ name: "p", type: "directory", mode: 0o750, uid: 1234, gid: 4321 }, { name: "p/x", body: "x\n" }]),
          await layerTar([{ name: "p/q/y", body: "y\n" }]),
        ];
        const { layers, diffIds, chain } = await storeLayers(api, metadata, tars);
        const apply = (i: number, parent = i > 0 ? chain[i - 1]! : "", deadlineMs?: number, label = false) =>
          api.call("unpack", "Apply", { snapshotter: sn, layer: layers[i], diff_id: diffIds[i], parent, wait_parent: i > 0, label_uncompressed: label }, { metadata, deadlineMs });
        const second = apply(1, undefined, undefined, true);
        second.catch(() => undefined); // awaited below
        // Applied into a directory of its own while it waits for the parent.
        for (let i = 0; i < 100 && (await snapDirs(sn)).length === dirs0; i++) await sleep(50);
        assert.equal((await snapDirs(sn)).length, dirs0 + 1, "the layer's directory is made before its parent exists");
        assert.deepEqual(await listSnapshots(api, sn), [], "nothing is committed while the parent is missing");
        const first = await apply(0);
        assert.deepEqual([first.chain_id, first.status], [chain[0], "applied"]);
        const r = await second;
        assert.deepEqual([r.chain_id, r.status, r.verified], [chain[1], "applied", true]);
        // label_uncompressed: ckd labelled the second layer's content, and only that one.
        assert.deepEqual([first.labelled, r.labelled], [false, true]);
        const labelsOf = async (i: number) => (await api.call("content", "Info", { digest: layers[i]!.digest })).info.labels ?? {};
        assert.equal((await labelsOf(1))["containerd.io/uncompressed"], diffIds[1]);
        assert.equal((await labelsOf(0))["containerd.io/uncompressed"], undefined);
        assert.deepEqual(await chainRows(api, sn), committedChain(chain));
        assert.equal((await snapDirs(sn)).length, dirs0 + 2);
        // The merged tree: both layers' files; p has the lower layer's attributes.
        const key = `ahead view ${sn}`;
        const { mounts } = await api.call("snapshots", "View", { snapshotter: sn, key, parent: chain[1] }, { metadata });
        const dir = await fs.mkdtemp(path.join(os.tmpdir(), "ck-ahead-"));
        try {
          await mountAll(mounts.map((m: any) => ({ type: m.type, source: m.source, options: m.options })), dir);
          try {
            assert.deepEqual(await treeOf(dir), ["p/", "p/q/", "p/q/y", "p/x"]);
            const p = await fs.stat(path.join(dir, "p"));
            assert.equal(p.mode & 0o7777, 0o750);
            assert.deepEqual([p.uid, p.gid], [1234, 4321]);
          } finally {
            await unmountAll(dir);
          }
        } finally {
          await fs.rmdir(dir).catch(() => undefined);
          await api.call("snapshots", "Remove", { snapshotter: sn, key });
        }

        // A wait for a parent nobody unpacks ends with the call, and leaves no directory or record.
        const missing = "sha256:" + "0".repeat(64);
        await rejectsClass(apply(1, missing, 1500), "DeadlineExceeded");
        for (let i = 0; i < 100 && (await snapDirs(sn)).length !== dirs0 + 2; i++) await sleep(50);
        assert.equal((await snapDirs(sn)).length, dirs0 + 2, "the directory applied ahead is removed");
        assert.equal((await listSnapshots(api, sn)).length, 2);
        // Without wait_parent a missing parent is refused at once, as before.
        await rejectsClass(
          api.call("unpack", "Apply", { snapshotter: sn, layer: layers[1], diff_id: diffIds[1], parent: missing }, { metadata }),
          "NotFound",
          /parent snapshot/,
        );
        assert.equal((await snapDirs(sn)).length, dirs0 + 2);
        // Bad input with wait_parent: refused before anything is applied or waited for, or (a
        // parent that turns out to be Active) once it is known, leaving nothing behind either way.
        await rejectsClass(
          api.call("unpack", "Apply", { snapshotter: sn, layer: layers[1], diff_id: diffIds[1], parent: "bad\u0000key", wait_parent: true }, { metadata }),
          "InvalidArgument",
          /parent .* must not contain NUL/,
        );
        await rejectsClass(
          api.call("unpack", "Apply", { snapshotter: sn, layer: layers[1], diff_id: "sha256:nope", parent: chain[0], wait_parent: true }, { metadata }),
          "InvalidArgument",
          /diff_id/,
        );
        await api.call("snapshots", "Prepare", { snapshotter: sn, key: "active parent", parent: "" }, { metadata });
        await rejectsClass(
          api.call("unpack", "Apply", { snapshotter: sn, layer: layers[1], diff_id: diffIds[1], parent: "active parent", wait_parent: true }, { metadata }),
          "InvalidArgument",
          /not a committed snapshot/,
        );
        await api.call("snapshots", "Remove", { snapshotter: sn, key: "active parent" });
        assert.equal((await snapDirs(sn)).length, dirs0 + 2, "nothing left by the refused calls");
        assert.equal((await listSnapshots(api, sn)).length, 2);
      } finally {
        await api.call("leases", "Delete", { id: lease, sync: true }).catch(() => undefined);
        api.close();
      }
      assert.equal((await snapDirs(sn)).length, dirs0, "the lease's snapshots go with it");
    });
  }

  test("unpack as against a daemon without ck's unpack service (ctr's way: Prepare, Diff.Apply, Commit): the same chain and files, never verified", async () => {
    const ns = "ctr-way";
    const f = await ck(ns, ["fetch", "--plain-http", "-q", image.reference]);
    assert.equal(f.code, 0, f.stderr);
    const api = daemon.client(ns);
    const lease = "ctr-way";
    await api.call("leases", "Create", { id: lease, labels: {} });
    try {
      const target = { mediaType: image.manifest.mediaType ?? "application/vnd.oci.image.manifest.v1+json", digest: image.manifestDigest, size: image.manifestBytes.length };
      const r = await unpackImage(api, target, { snapshotter: "overlayfs", daemonUnpack: false, metadata: { "containerd-lease": lease } });
      const chain = chainIds(image.config.rootfs.diff_ids);
      const { configLabelled, ...counts } = r;
      await configLabelled; // settled already: the label was awaited (no deferConfigLabel)
      assert.deepEqual(counts, { chainId: chain[2], applied: 3, shared: 0, layers: 3 });
      assert.deepEqual(await chainRows(api, "overlayfs"), committedChain(chain));
      assert.deepEqual((await readView(api, "overlayfs", chain[2]!)).files, EXPECTED_FILES);
      // Committed through Snapshots.Commit: ck's own unpack on top does not count it as verified.
      const again = await api.call("unpack", "Apply", {
        snapshotter: "overlayfs",
        layer: { media_type: image.manifest.layers[2].mediaType, digest: image.manifest.layers[2].digest, size: image.manifest.layers[2].size },
        diff_id: image.config.rootfs.diff_ids[2],
        parent: chain[1],
      });
      assert.deepEqual([again.status, again.verified], ["exists", false]);
    } finally {
      await api.call("images", "Delete", { name: image.reference, sync: true }).catch(() => undefined);
      await api.call("leases", "Delete", { id: lease, sync: true }).catch(() => undefined);
      api.close();
    }
  });

  test("ck pull against a daemon without ck's unpack service (disabled_plugins): Unimplemented, so ctr's way; the same chain and files", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "ck-nounpack-"));
    const config = path.join(dir, "ckd.toml");
    await fs.writeFile(config, `disabled_plugins = ["io.containerd.grpc.v1.ck.unpack"]\n`);
    const other = await TestDaemon.start({ extraArgs: ["--config", config] });
    const api = other.client("no-unpack");
    try {
      const { plugins } = await api.call("introspection", "Plugins", { filters: [] });
      const ids = plugins.map((p: { type: string; id: string }) => `${p.type}.${p.id}`);
      assert.ok(!ids.includes("io.containerd.grpc.v1.ck.unpack") && ids.includes("io.containerd.grpc.v1.diff"), ids.join(" "));
      // The real ctr lists what introspection says: the diff service, not ck's unpack.
      const ls = await runCommand(CTR, ["--address", other.address, "plugins", "ls"]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.match(ls.stdout, /io\.containerd\.grpc\.v1\s+diff\s/);
      assert.doesNotMatch(ls.stdout, /ck\.unpack/);
      const layer = image.manifest.layers[0];
      await rejectsClass(
        api.call("unpack", "Apply", { snapshotter: "overlayfs", layer: { media_type: layer.mediaType, digest: layer.digest, size: layer.size }, diff_id: image.config.rootfs.diff_ids[0], parent: "" }),
        "NotImplemented",
      );
      const r = await runNode(CK, ["--address", other.address, "-n", "no-unpack", "pull", "--plain-http", image.reference]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const chain = chainIds(image.config.rootfs.diff_ids);
      assert.deepEqual(await chainRows(api, "overlayfs"), committedChain(chain));
      assert.deepEqual((await readView(api, "overlayfs", chain[2]!)).files, EXPECTED_FILES);
    } finally {
      api.close();
      await other.cleanup();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  test("shared snapshots' events replay to an identical projection (ck-replay verify)", async () => {
    assert.equal(await daemon.stop(), 0);
    const r = await runNode(CK_REPLAY, ["verify", "--root", daemon.root]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /verify OK/);
    await daemon.launch();
  });

  test("the real ctr images pull unpacks into ckd's snapshots; ctr snapshots ls and tree show the chain", async () => {
    const ctr = (args: string[]) => runCommand(CTR, ["--address", daemon.address, "-n", "ctrpull", ...args], {}, undefined, 120_000);
    const r = await ctr(["images", "pull", "--plain-http", image.reference]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const chain = chainIds(image.config.rootfs.diff_ids);
    const ls = await ctr(["snapshots", "ls"]);
    assert.equal(ls.code, 0, ls.stderr);
    const rows = ls.stdout.trim().split("\n").slice(1).map((l) => l.trim().split(/\s+/));
    assert.deepEqual(rows.map((x) => x.join(" ")).sort(), [`${chain[0]} Committed`, `${chain[1]} ${chain[0]} Committed`, `${chain[2]} ${chain[1]} Committed`].sort());
    const tree = await ctr(["snapshots", "tree"]);
    assert.equal(tree.code, 0, tree.stderr);
    const lines = tree.stdout.split("\n").filter(Boolean);
    assert.equal(lines.length, 3, tree.stdout);
    for (const [i, c] of chain.entries()) assert.ok(lines[i]!.includes(c!) && (i === 0 || lines[i]!.includes("\\_")), tree.stdout);
    const check = await ctr(["images", "check"]);
    assert.match(check.stdout, /complete \(4\/4\).*\btrue\s*$/m, check.stdout);

    // ctr snapshots rm of a parent: refused while children exist.
    const rm = await ctr(["snapshots", "rm", chain[0]!]);
    assert.notEqual(rm.code, 0);
    assert.match(rm.stderr, /cannot remove snapshot with child: failed precondition/);
  });

  test("the real ctr: images export then import into another namespace (unpacked), containers create/rm, images mount", async () => {
    const ctr = (ns: string, args: string[]) => runCommand(CTR, ["--address", daemon.address, "-n", ns, ...args], {}, undefined, 120_000);
    const chain = chainIds(image.config.rootfs.diff_ids);
    const work = await fs.mkdtemp(path.join(os.tmpdir(), "ck-ctr-"));
    try {
      assert.equal((await ctr("ctrio", ["images", "pull", "--plain-http", image.reference])).code, 0);
      const tar = path.join(work, "image.tar");
      const exp = await ctr("ctrio", ["images", "export", tar, image.reference]);
      assert.equal(exp.code, 0, exp.stderr);
      const imp = await ctr("ctrio-2", ["images", "import", tar]);
      assert.equal(imp.code, 0, imp.stderr + imp.stdout);
      const ls = await ctr("ctrio-2", ["images", "ls", "-q"]);
      assert.deepEqual(ls.stdout.trim().split("\n"), [image.reference]);
      const snaps = await ctr("ctrio-2", ["snapshots", "ls"]);
      for (const c of chain) assert.match(snaps.stdout, new RegExp(`^${c}\\s.*Committed`, "m"), snaps.stdout);

      // A container's snapshot is prepared on the image's top layer and goes with it.
      const create = await ctr("ctrio-2", ["containers", "create", image.reference, "web"]);
      assert.equal(create.code, 0, create.stderr);
      const info = JSON.parse((await ctr("ctrio-2", ["containers", "info", "web"])).stdout);
      assert.equal(info.SnapshotKey, "web");
      assert.match((await ctr("ctrio-2", ["snapshots", "ls"])).stdout, new RegExp(`^web\\s+${chain[2]}\\s+Active`, "m"));
      assert.equal((await ctr("ctrio-2", ["containers", "rm", "web"])).code, 0);
      assert.doesNotMatch((await ctr("ctrio-2", ["snapshots", "ls"])).stdout, /^web\s/m);

      // ctr mounts the image's View itself: the files of the top layer, deletions applied.
      const mnt = path.join(work, "mnt");
      await fs.mkdir(mnt);
      const mount = await ctr("ctrio-2", ["images", "mount", image.reference, mnt]);
      assert.equal(mount.code, 0, mount.stderr);
      try {
        assert.equal(await fs.readFile(path.join(mnt, "etc/motd"), "utf8"), "hello\n");
        assert.deepEqual((await fs.readdir(path.join(mnt, "opq"))).sort(), ["c"]);
        await assert.rejects(fs.stat(path.join(mnt, "etc/old")));
      } finally {
        assert.equal((await ctr("ctrio-2", ["images", "unmount", "--rm", mnt])).code, 0);
      }
    } finally {
      await fs.rm(work, { recursive: true, force: true });
    }
  });

  test("snapshot commands and bad input: rm with children is FailedPrecondition; empty key, unknown snapshotter, missing parent write nothing", async () => {
    const api = daemon.client("cmds");
    try {
      const sn = "native";
      const cli = (args: string[]) => ck("cmds", ["snapshot", "--snapshotter", sn, ...args]);
      assert.equal((await cli(["prepare", "base key/with spaces"])).code, 0);
      assert.equal((await cli(["commit", "base", "base key/with spaces"])).code, 0);
      assert.equal((await cli(["prepare", "child", "base"])).code, 0);
      const m = await cli(["mounts", "/mnt/x", "child"]);
      assert.match(m.stdout, /^mount -t bind \S+ \/mnt\/x -o rbind,rw$/m);
      await rejectsClass(api.call("snapshots", "Mounts", { snapshotter: sn, key: "base" }), "FailedPrecondition");
      await rejectsClass(api.call("snapshots", "Remove", { snapshotter: sn, key: "base" }), "FailedPrecondition", /cannot remove snapshot with child/);
      const label = await cli(["label", "base", "a=b"]);
      // One line, k=v,k=v sorted, as ctr snapshots label (ck's prepare labelled it gc.root).
      assert.match(label.stdout, /^a=b,containerd\.io\/gc\.root=\S+\n$/);
      const info = JSON.parse((await cli(["info", "base"])).stdout);
      assert.equal(info.Kind, "Committed");
      assert.equal(info.Labels.a, "b");
      assert.match((await cli(["tree"])).stdout, /\\_ base\n {2}\\_ child\n/);
      assert.match((await cli(["usage", "base"])).stdout, /base\s+\S+\s+\d+/);
      const filtered = await listSnapshots(api, sn, ["kind==active"]);
      assert.deepEqual(filtered.map((i) => i.name), ["child"]);
      // name and parent are always present, empty or not (containerd's adaptSnapshot): the roots.
      assert.deepEqual((await listSnapshots(api, sn, ['parent==""'])).map((i) => i.name), ["base"]);
      assert.deepEqual((await listSnapshots(api, sn, ["parent"])).map((i) => i.name).sort(), ["base", "child"]);

      const dirsBefore = await snapDirs(sn);
      const countBefore = (await listSnapshots(api, sn)).length;
      await rejectsClass(api.call("snapshots", "Prepare", { snapshotter: sn, key: "" }), "InvalidArgument");
      // In containerd's snapshots service's words.
      await rejectsClass(api.call("snapshots", "Prepare", { snapshotter: "nope", key: "k" }), "InvalidArgument", /^snapshotter not loaded: nope: invalid argument$/);
      await rejectsClass(api.call("snapshots", "Prepare", { snapshotter: "", key: "k" }), "InvalidArgument", /^snapshotter argument missing: invalid argument$/);
      await rejectsClass(api.call("snapshots", "Prepare", { snapshotter: sn, key: "k", parent: "missing" }), "NotFound");
      await rejectsClass(api.call("snapshots", "Prepare", { snapshotter: sn, key: "k", parent: "child" }), "InvalidArgument");
      await rejectsClass(api.call("snapshots", "Prepare", { snapshotter: sn, key: "child" }), "AlreadyExists");
      await rejectsClass(api.call("snapshots", "Commit", { snapshotter: sn, key: "child", name: "base" }), "AlreadyExists");
      await rejectsClass(api.call("snapshots", "Commit", { snapshotter: sn, key: "nope", name: "x" }), "NotFound");
      await rejectsClass(api.call("snapshots", "Prepare", { snapshotter: sn, key: "k" }, { metadata: { "containerd-lease": "no-such-lease" } }), "NotFound");
      await rejectsClass(api.call("snapshots", "Update", { snapshotter: sn, info: { name: "base" }, update_mask: { paths: ["parent"] } }), "InvalidArgument");
      assert.equal((await listSnapshots(api, sn)).length, countBefore);
      assert.deepEqual(await snapDirs(sn), dirsBefore);

      // Leaves first, then the parent.
      assert.equal((await cli(["rm", "child"])).code, 0);
      assert.equal((await cli(["rm", "base"])).code, 0);
      assert.deepEqual(await listSnapshots(api, sn), []);
    } finally {
      api.close();
    }
  });

  test("Prepare and View racing the Remove of their parent: done, or NotFound as containerd words it (never the disk error of the vanished directory); nothing left behind", async (t) => {
    const api = daemon.client("parent-race");
    const call = (sn: string, m: string, req: object) => api.call("snapshots", m, { snapshotter: sn, ...req });
    try {
      for (const sn of ["native", "overlayfs"]) {
        const dirsBefore = await snapDirs(sn);
        const outcomes = new Map<string, number>();
        for (let i = 0; i < 25; i++) {
          const P = `RP${i}`;
          // Files for native's copy to take its time over.
          // Roots all: no GC run (after a removal) takes one meanwhile.
          const labels = { "containerd.io/gc.root": "x" };
          const { mounts } = await call(sn, "Prepare", { key: `rp${i}`, labels });
          for (let f = 0; f < 20; f++) await fs.writeFile(path.join(mounts[0].source, `f${f}`), "x".repeat(4096));
          await call(sn, "Commit", { key: `rp${i}`, name: P, labels });
          const settled = await Promise.allSettled([
            call(sn, "Prepare", { key: `rc${i}`, parent: P, labels }),
            call(sn, "Remove", { key: P }),
            call(sn, "View", { key: `rv${i}`, parent: P, labels }),
          ]);
          const seen = settled.map((r) => (r.status === "fulfilled" ? "ok" : (r.reason as CkError).errorClass)).join("/");
          outcomes.set(seen, (outcomes.get(seen) ?? 0) + 1);
          for (const [j, r] of settled.entries()) {
            if (r.status === "fulfilled") continue;
            const err = r.reason as CkError;
            if (j === 1) assert.match(`${err.errorClass} ${err.message}`, /^FailedPrecondition cannot remove snapshot with child/, `round ${i}: Remove`);
            else assert.equal(`${err.errorClass} ${err.message}`, `NotFound parent snapshot ${P} does not exist: not found`, `round ${i}: ${j === 0 ? "Prepare" : "View"}`);
          }
          for (const key of [`rc${i}`, `rv${i}`, P]) await call(sn, "Remove", { key }).catch((err: CkError) => assert.equal(err.errorClass, "NotFound", err.message));
        }
        t.diagnostic(`${sn}: ${JSON.stringify(Object.fromEntries(outcomes))} (Prepare/Remove/View)`);
        assert.deepEqual(await listSnapshots(api, sn), []);
        assert.deepEqual(await snapDirs(sn), dirsBefore, `${sn}: a directory left behind`);
      }
    } finally {
      api.close();
    }
  });

  test("Diff.Diff failing half-way (its ingest aborted by a client; a file cut short under the walk): an error, ckd lives on, no temp mount, no ingest left", async () => {
    const api = daemon.client("difffail");
    const sn = "overlayfs";
    const leased = { metadata: { "containerd-lease": "df" } };
    // ckd's temporary mounts are under its root (containerd's tmpmounts).
    const tmpDir = path.join(daemon.root, "tmpmounts");
    const tmpMounts = async () => (await fs.readFile("/proc/self/mountinfo", "utf8")).split("\n").filter((l) => l.includes(tmpDir));
    const statuses = async () => {
      const out: any[] = [];
      for (const s of (await api.call("content", "ListStatuses", {})).statuses ?? []) out.push(s);
      return out;
    };
    /** Until an ingest has bytes in it (the walk is under way); its ref. */
    const ingesting = async (): Promise<string> => {
      for (let i = 0; i < 1000; i++) {
        const live = (await statuses()).find((s) => Number(s.offset) > 0);
        if (live) return live.ref;
        await sleep(10);
      }
      throw new Error("no ingest got bytes");
    };
    try {
      await api.call("leases", "Create", { id: "df" });
      const base = (await api.call("snapshots", "Prepare", { snapshotter: sn, key: "df-base-work", parent: "" }, leased)).mounts;
      await fs.writeFile(path.join(base[0].source, "base-file"), "base\n");
      await api.call("snapshots", "Commit", { snapshotter: sn, key: "df-base-work", name: "df-base" }, leased);
      const work = (await api.call("snapshots", "Prepare", { snapshotter: sn, key: "df-work", parent: "df-base" }, leased)).mounts;
      const left = (await api.call("snapshots", "View", { snapshotter: sn, key: "df-view", parent: "df-base" }, leased)).mounts;
      assert.equal(work[0].type, "overlay", "read through a temp mount");
      const upper = work[0].options.find((o: string) => o.startsWith("upperdir=")).slice("upperdir=".length);
      const big = path.join(upper, "big");
      // Random bytes gzip slowly (tens of MB/s here): the walk takes a while.
      await fs.writeFile(big, randomBytes(96 << 20));

      // 1. A client aborts the ingest under the Diff: its next write fails.
      const diffing = api.call("diff", "Diff", { left, right: work, ref: "df-ref" }, leased);
      diffing.catch(() => undefined);
      assert.equal(await ingesting(), "df-ref");
      await api.call("content", "Abort", { ref: "df-ref" });
      await assert.rejects(diffing);
      assert.ok((await api.call("version", "Version", {})).version, "ckd still answers");
      assert.deepEqual(await tmpMounts(), [], "the temp mounts are gone");

      // 2. The file is cut short while the walk reads it (its tar header said 96 MiB): the
      // Diff fails, and the ingest ckd named itself is aborted.
      const cutting = api.call("diff", "Diff", { left, right: work }, leased);
      cutting.catch(() => undefined);
      assert.match(await ingesting(), /^diff-/);
      await fs.truncate(big, 1 << 20);
      await assert.rejects(cutting);
      assert.ok((await api.call("version", "Version", {})).version, "ckd still answers");
      assert.deepEqual(await statuses(), [], "no ingest left");
      assert.deepEqual(await tmpMounts(), []);
      assert.deepEqual(await fs.readdir(tmpDir), []);

      // 3. The client cancels the call under the walk: the walk stops, its ingest is aborted
      // and nothing is committed (run to its end, the Diff would commit a blob under the lease).
      await fs.writeFile(big, randomBytes(96 << 20));
      const blobs = async () => {
        const out: string[] = [];
        for await (const r of api.stream("content", "List", {})) for (const i of r.info ?? []) out.push(i.digest);
        return out.sort();
      };
      const blobsBefore = await blobs();
      const cancel = new AbortController();
      const cancelled = api.call("diff", "Diff", { left, right: work }, { ...leased, signal: cancel.signal });
      cancelled.catch(() => undefined);
      assert.match(await ingesting(), /^diff-/);
      cancel.abort();
      await rejectsClass(cancelled, "Canceled", /cancel/i);
      for (let i = 0; i < 600 && (await statuses()).length > 0; i++) await sleep(50);
      assert.deepEqual(await statuses(), [], "the cancelled Diff's ingest is aborted");
      assert.deepEqual(await blobs(), blobsBefore, "a cancelled Diff committed nothing");
      assert.deepEqual(await tmpMounts(), []);
      assert.ok((await api.call("version", "Version", {})).version, "ckd still answers");
      await fs.rm(big);

      // 4. Diff.Apply whose caller cancels stops before its next entry: a layer of 40,000
      // empty files, cancelled once the first are there, leaves fewer and no more come.
      const many = 40_000;
      const layer = gzipSync(await layerTar([{ name: "many/", type: "directory" }, ...Array.from({ length: many }, (_, i) => ({ name: `many/f${i}` }))]));
      const layerDigest = sha(layer);
      const w = await new ApiContent(api, leased.metadata).open(`layer-${layerDigest}`, { expected: layerDigest, total: layer.length });
      assert.notEqual(w, "exists");
      if (w === "exists") return;
      await w.write(layer);
      await w.commit(layer.length, layerDigest);
      const target = (await api.call("snapshots", "Prepare", { snapshotter: sn, key: "df-apply", parent: "df-base" }, leased)).mounts;
      const targetUpper = target[0].options.find((o: string) => o.startsWith("upperdir=")).slice("upperdir=".length);
      const count = async () => (await fs.readdir(path.join(targetUpper, "many")).catch(() => [])).length;
      const stopApply = new AbortController();
      const applying = api.call("diff", "Apply", { diff: { media_type: "application/vnd.oci.image.layer.v1.tar+gzip", digest: layerDigest, size: layer.length }, mounts: target }, { ...leased, signal: stopApply.signal });
      applying.catch(() => undefined);
      for (let i = 0; i < 1000 && (await count()) === 0; i++) await sleep(5);
      stopApply.abort();
      await rejectsClass(applying, "Canceled", /cancel/i);
      let seen = await count();
      for (let i = 0; i < 20; i++) {
        await sleep(100);
        const now = await count();
        if (now === seen && i >= 5) break;
        seen = now;
      }
      assert.ok(seen > 0 && seen < many, `the apply stopped part-way (${seen} of ${many} files)`);
      await sleep(500);
      assert.equal(await count(), seen, "no more files after the apply stopped");
      assert.ok((await api.call("version", "Version", {})).version, "ckd still answers");
      await api.call("snapshots", "Remove", { snapshotter: sn, key: "df-apply" });
      for (const key of ["df-view", "df-work", "df-base"]) await api.call("snapshots", "Remove", { snapshotter: sn, key });
      await api.call("leases", "Delete", { id: "df", sync: true });
    } finally {
      api.close();
    }
    // What a ckd killed during a Diff leaves mounted there is unmounted and removed at the next start.
    await daemon.kill9();
    const left = path.join(tmpDir, "ck-mount-left");
    await fs.mkdir(left);
    await runCommand("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", left]);
    await daemon.launch();
    assert.deepEqual(await tmpMounts(), []);
    assert.deepEqual(await fs.readdir(tmpDir), []);
  });

  test("kill -9 of ckd during an unpack: nothing half-made is Committed; Cleanup and GC remove the leftovers; a second pull completes", async () => {
    const ns = "crash";
    const sn = "overlayfs";
    const chain = chainIds(big.config.rootfs.diff_ids);
    const dirs0 = (await snapDirs(sn)).filter((d) => !d.startsWith(".")).length;
    const pull = spawn(process.execPath, [CK, "--address", daemon.address, "-n", ns, "pull", "--plain-http", "-q", big.reference], { stdio: "ignore" });
    const pullDone = new Promise((r) => pull.once("exit", r));
    const api = daemon.client(ns);
    let sawApply = false;
    try {
      // Wait until ckd extracts the big layer: chain[0] is committed and one more directory,
      // which no record owns yet (ckd's unpack has no Active snapshot), exists.
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        const committed = await listSnapshots(api, sn, ["kind==committed"]).catch(() => []);
        const dirs = (await snapDirs(sn)).filter((d) => !d.startsWith("."));
        if (committed.some((i) => i.name === chain[0]) && dirs.length >= dirs0 + 2) {
          sawApply = true;
          break;
        }
        await sleep(20);
      }
    } finally {
      api.close();
    }
    assert.ok(sawApply, "the big layer's extraction was seen");
    await sleep(150);
    await daemon.kill9();
    await pullDone;
    // Also what a removal cut short by a kill leaves: a directory under its removal name, and
    // one whose record is gone.
    const snapRoot = path.join(daemon.root, "snapshots", sn, "snapshots");
    await fs.mkdir(path.join(snapRoot, ".rm-mx0left-0123abcd", "fs"), { recursive: true });
    await fs.mkdir(path.join(snapRoot, "mx0left-4567ef01", "fs"), { recursive: true });
    await daemon.launch();
    const api2 = daemon.client(ns);
    try {
      const list = await listSnapshots(api2, sn);
      const committed = list.filter((i) => i.kind === COMMITTED).map((i) => i.name);
      assert.ok(!committed.includes(chain[1]) && !committed.includes(chain[2]), `half-made snapshot visible as committed: ${committed.join(",")}`);
      // The first GC run after the start (any deletion starts one; containerd's GC cleans a
      // snapshotter after any removal from it) removes every directory no snapshot of any
      // namespace owns, without a Cleanup call.
      await api2.call("leases", "Create", { id: "gc-trigger" });
      await api2.call("leases", "Delete", { id: "gc-trigger", sync: true });
      assert.ok((await snapDirs(sn)).every((d) => !d.startsWith(".")));
      assert.ok(!(await snapDirs(sn)).includes("mx0left-4567ef01"));
      assert.equal((await snapDirs(sn)).length, dirs0 + 1, "the half-made directory is gone, chain[0]'s stays");

      const again = await ck(ns, ["pull", "--plain-http", big.reference]);
      assert.equal(again.code, 0, again.stderr + again.stdout);
      const after = await listSnapshots(api2, sn, ["kind==committed"]);
      assert.deepEqual(after.map((i) => i.name).sort(), [...chain].sort());

      // ckd's unpack leaves no Active snapshot behind (the interrupted directory had no record);
      // once the interrupted pull's lease goes, nothing but the chain is left.
      for (const l of (await api2.call("leases", "List", {})).leases ?? []) await api2.call("leases", "Delete", { id: l.id, sync: true });
      const left = await listSnapshots(api2, sn, ["kind==active"]);
      assert.deepEqual(left, []);
      const view = await readView(api2, sn, chain[2]!);
      assert.deepEqual(view.files, { "a.txt": "a\n", "c.txt": "c\n" });
    } finally {
      api2.close();
    }
  });
});
