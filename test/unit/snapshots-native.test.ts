// The native snapshotter against the snapshotter conformance suite, plus its mount shapes.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { getAttribute } from "@napi-rs/xattr";
import { NativeSnapshotter, copyTree, linkParentTree } from "../../src/snapshots/native.js";
import { applyLayer, inheritLowerAttributes, isMissingLinkTarget } from "../../src/diff/apply.js";
import { layerTar, listTree, snapshotterConformance, type LayerEntry } from "../conformance/snapshotter.js";

async function fresh(): Promise<{ sn: NativeSnapshotter; base: string }> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), "ck-native-"));
  return { sn: new NativeSnapshotter(path.join(base, "native")), base };
}

snapshotterConformance("native", async () => {
  const { sn, base } = await fresh();
  return { sn, cleanup: () => fs.rm(base, { recursive: true, force: true }) };
});

/** Every entry of a tree with what tells two trees apart: type, mode, owner, content or link. */
async function describeTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const rel of await listTree(root)) {
    const p = path.join(root, rel);
    const st = await fs.lstat(p);
    const what = st.isSymbolicLink() ? `-> ${await fs.readlink(p)}` : st.isDirectory() ? "dir" : await fs.readFile(p, "utf8");
    out[rel] = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${what}${st.isDirectory() ? ` ${st.mtimeMs}` : ""}`;
  }
  return out;
}

describe("native: a layer applied ahead of its parent, then linked onto it", () => {
  test("gives the tree an apply onto a linked copy of the parent gives: whiteouts, opaque directories, implicit directories, merges", async () => {
    const base = await fs.mkdtemp(path.join(os.tmpdir(), "ck-native-ahead-"));
    try {
      const [parent, seq, ahead] = ["parent", "seq", "ahead"].map((d) => path.join(base, d));
      for (const d of [parent!, seq!, ahead!]) await fs.mkdir(d);
      const T = new Date(1_650_000_000_000);
      const apply = async (root: string, entries: LayerEntry[], sharedInodes = false) =>
        applyLayer(root, Readable.from([await layerTar(entries)]), { sharedInodes });
      await apply(parent!, [
        { name: "a/", type: "directory", mode: 0o750, mtime: T, pax: { "SCHILY.xattr.user.parent": "p" } },
        { name: "a/f", body: "f" },
        { name: "a/g", body: "g" },
        { name: "b/", type: "directory", mtime: T },
        { name: "b/x", body: "x" },
        { name: "c", body: "c" },
        { name: "lnk", type: "symlink", linkname: "a" },
        { name: "e/deep/file", body: "deep" },
        { name: "h", body: "h", mode: 0o600 },
        { name: "h2", type: "link", linkname: "h" },
        // Directories the layer lacks, at the root and inside a merged one: linked in as trees.
        { name: "m1/", type: "directory", mode: 0o701, mtime: T },
        { name: "m1/sub/file", body: "m1" },
        { name: "m2/", type: "directory", mode: 0o755, mtime: T, pax: { "SCHILY.xattr.user.m2": "two" } },
        { name: "m2/file", body: "m2" },
        { name: "a/sub/deeper/x", body: "x" },
      ]);
      await fs.chmod(parent!, 0o711);
      const layer: LayerEntry[] = [
        { name: ".wh.c" },
        { name: "a/.wh.g" },
        { name: "a/new", body: "new" },
        { name: "b/.wh..wh..opq" },
        { name: "b/y", body: "y" },
        { name: "e/deep/", type: "directory", mode: 0o700, mtime: T },
        { name: "e/deep/more", body: "more" },
        { name: "n/z", body: "z" },
        { name: "h3", type: "link", linkname: "h" },
      ];
      // As ckd unpacks with the parent there: a linked copy, then the layer.
      await copyTree(parent!, seq!, { link: true });
      await apply(seq!, layer, true);
      // Ahead: the layer alone, then the parent linked under it and the implicit directories'
      // attributes taken from it, as store.unpackAhead does.
      const applied = await apply(ahead!, layer).catch((err: unknown) => err);
      // The hard link to the parent's h cannot be made without the parent: that layer is applied again onto it.
      assert.ok(isMissingLinkTarget(applied), String(applied));
      await fs.rm(ahead!, { recursive: true });
      await fs.mkdir(ahead!);
      const layerNoLink = layer.filter((e) => e.name !== "h3");
      await fs.rm(seq!, { recursive: true });
      await fs.mkdir(seq!);
      await copyTree(parent!, seq!, { link: true });
      await apply(seq!, layerNoLink, true);
      const a = await apply(ahead!, layerNoLink);
      assert.deepEqual(a.whiteouts.sort(), ["a/g", "c"]);
      assert.deepEqual(a.opaques, ["b"]);
      await linkParentTree(ahead!, parent!, a);
      await inheritLowerAttributes(ahead!, a.implicitDirs, [parent!]);

      const want = await describeTree(seq!);
      assert.deepEqual(
        Object.keys(want).sort(),
        ["a/", "a/f", "a/new", "a/sub/", "a/sub/deeper/", "a/sub/deeper/x", "b/", "b/y", "e/", "e/deep/", "e/deep/file", "e/deep/more", "h", "h2", "lnk", "m1/", "m1/sub/", "m1/sub/file", "m2/", "m2/file", "n/", "n/z"].sort(),
      );
      const got = await describeTree(ahead!);
      // Directory times differ where an entry was added without the directory's own entry: the
      // apply's time onto the copy, the parent's when applied ahead (as overlayfs's copy-up).
      const noTimes = (t: Record<string, string>) => Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.replace(/ [\d.]+$/, "")]));
      assert.deepEqual(noTimes(got), noTimes(want));
      assert.equal(got["e/deep/"], want["e/deep/"], "the layer's own directory keeps its time");
      assert.equal((await fs.stat(ahead!)).mode & 0o7777, 0o711, "the root is the parent's");
      for (const tree of [seq!, ahead!]) {
        assert.equal((await getAttribute(path.join(tree, "a"), "user.parent"))?.toString(), "p", `${tree}: the parent's directory xattrs are kept`);
      }
      assert.equal((await fs.lstat(path.join(ahead!, "a/f"))).ino, (await fs.lstat(path.join(parent!, "a/f"))).ino, "linked, not copied");
      assert.equal((await fs.lstat(path.join(ahead!, "m1/sub/file"))).ino, (await fs.lstat(path.join(parent!, "m1/sub/file"))).ino, "a missing tree's files are linked too");
      assert.equal(got["m1/"], want["m1/"], "a missing directory keeps the parent's mode and time");
      assert.equal((await getAttribute(path.join(ahead!, "m2"), "user.m2"))?.toString(), "two");
      assert.equal((await fs.lstat(path.join(ahead!, "h2"))).ino, (await fs.lstat(path.join(ahead!, "h"))).ino);
      assert.equal(await fs.readFile(path.join(parent!, "a/g"), "utf8"), "g", "the parent keeps what the layer whited out");
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });
});

describe("native: linking a parent's tree with many missing directories", () => {
  test("thousands of directories the layer lacks are all linked in (more paths than one cp run takes)", async () => {
    const base = await fs.mkdtemp(path.join(os.tmpdir(), "ck-native-many-"));
    try {
      const [parent, child] = ["parent", "child"].map((d) => path.join(base, d));
      await fs.mkdir(child!);
      const names = Array.from({ length: 3000 }, (_, i) => `dir-with-a-rather-long-name-to-fill-the-argument-list-${i}`);
      for (const n of names) await fs.mkdir(path.join(parent!, n), { recursive: true });
      await fs.writeFile(path.join(parent!, names[2999]!, "f"), "last");
      await linkParentTree(child!, parent!, { whiteouts: [], opaques: [] });
      assert.deepEqual((await fs.readdir(child!)).sort(), [...names].sort());
      assert.equal(await fs.readFile(path.join(child!, names[2999]!, "f"), "utf8"), "last");
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });
});

describe("native snapshotter", () => {
  test("mounts are binds of the snapshot's own tree, rw when Active, ro otherwise", async () => {
    const { sn, base } = await fresh();
    try {
      assert.deepEqual(await sn.available(), { ok: true });
      const fsDir = path.join(sn.root, "snapshots", "1", "fs");
      assert.deepEqual(await sn.prepare("1", [], { readonly: false }), [
        { type: "bind", source: fsDir, options: ["rbind", "rw"] },
      ]);
      assert.deepEqual(sn.mounts("1", [], "Committed"), [{ type: "bind", source: fsDir, options: ["rbind", "ro"] }]);
      const v = await sn.prepare("v", ["1"], { readonly: true });
      assert.deepEqual(v, [{ type: "bind", source: sn.fsDir("v"), options: ["rbind", "ro"] }]);
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("prepare copies the parent's files, or with linkFiles (ckd's own unpack) links them; directories are the child's own either way", async () => {
    const { sn, base } = await fresh();
    try {
      await sn.prepare("1", [], { readonly: false });
      await fs.mkdir(path.join(sn.fsDir("1"), "d"));
      await fs.writeFile(path.join(sn.fsDir("1"), "d", "f"), "x");
      await sn.commit("1");
      await sn.prepare("copied", ["1"], { readonly: false });
      await sn.prepare("linked", ["1"], { readonly: false, linkFiles: true });
      const ino = async (id: string, p: string) => (await fs.lstat(path.join(sn.fsDir(id), p))).ino;
      assert.notEqual(await ino("copied", "d/f"), await ino("1", "d/f"));
      assert.equal(await ino("linked", "d/f"), await ino("1", "d/f"));
      assert.notEqual(await ino("linked", "d"), await ino("1", "d"));
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("prepare copies the parent's tree: modes, owners, times, symlinks, hard links", async () => {
    const { sn, base } = await fresh();
    try {
      await sn.prepare("1", [], { readonly: false });
      const p = sn.fsDir("1");
      await fs.mkdir(path.join(p, "d"), { mode: 0o750 });
      await fs.writeFile(path.join(p, "d/f"), "data", { mode: 0o4755 });
      if (process.getuid?.() === 0) await fs.lchown(path.join(p, "d/f"), 1234, 5678);
      await fs.chmod(path.join(p, "d/f"), 0o4755); // after chown, which clears setuid
      await fs.link(path.join(p, "d/f"), path.join(p, "d/g"));
      await fs.symlink("/etc/passwd", path.join(p, "l"));
      await fs.utimes(path.join(p, "d/f"), 1000, 2000);
      await sn.commit("1");
      await sn.prepare("2", ["1"], { readonly: false });
      const q = sn.fsDir("2");
      const f = await fs.lstat(path.join(q, "d/f"));
      assert.equal(f.mode & 0o7777, 0o4755);
      assert.equal(f.mtimeMs, 2000_000);
      assert.equal((await fs.lstat(path.join(q, "d/g"))).ino, f.ino);
      assert.equal((await fs.lstat(path.join(q, "d"))).mode & 0o777, 0o750);
      assert.equal(await fs.readlink(path.join(q, "l")), "/etc/passwd");
      if (process.getuid?.() === 0) assert.deepEqual([f.uid, f.gid], [1234, 5678]);
      // A copy, not a share: writing the child leaves the parent alone.
      await fs.writeFile(path.join(q, "d/f"), "changed");
      assert.equal(await fs.readFile(path.join(p, "d/f"), "utf8"), "data");
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });
});

describe("snapshot directory placement (chattr +T)", () => {
  test("where the flag cannot be set, the reason is given and snapshots still work", async (t) => {
    if ((await fs.stat("/dev/shm").catch(() => undefined)) === undefined) return t.skip("no /dev/shm (tmpfs) here");
    const base = await fs.mkdtemp(path.join("/dev/shm", "ck-native-"));
    try {
      const sn = new NativeSnapshotter(path.join(base, "native"));
      const why = await sn.prepareStorage();
      assert.equal(typeof why, "string", "tmpfs has no ext4 flags");
      assert.match(why!, /chattr|Operation not supported|Inappropriate ioctl/);
      await sn.prepare("1", [], { readonly: false });
      await sn.commit("1");
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("without chattr on PATH the reason says so", async () => {
    const base = await fs.mkdtemp(path.join(os.tmpdir(), "ck-native-"));
    const saved = process.env.PATH;
    process.env.PATH = base;
    try {
      const { spreadSubdirectories } = await import("../../src/content/placement.js");
      assert.equal(await spreadSubdirectories(base), "chattr is not installed (e2fsprogs)");
    } finally {
      process.env.PATH = saved;
      await fs.rm(base, { recursive: true, force: true });
    }
  });
});
