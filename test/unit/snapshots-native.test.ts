// The native snapshotter against the snapshotter conformance suite, plus its mount shapes.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { NativeSnapshotter } from "../../src/snapshots/native.js";
import { snapshotterConformance } from "../conformance/snapshotter.js";

async function fresh(): Promise<{ sn: NativeSnapshotter; base: string }> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), "ck-native-"));
  return { sn: new NativeSnapshotter(path.join(base, "native")), base };
}

snapshotterConformance("native", async () => {
  const { sn, base } = await fresh();
  return { sn, cleanup: () => fs.rm(base, { recursive: true, force: true }) };
});

describe("native snapshotter", () => {
  test("mounts are binds of the snapshot's own tree, rw when Active, ro otherwise", async () => {
    const { sn, base } = await fresh();
    try {
      assert.deepEqual(await sn.available(), { ok: true });
      const fsDir = path.join(sn.root, "snapshots", "1", "fs");
      assert.deepEqual(await sn.prepare("1", [], { readonly: false }), [
        { type: "bind", source: fsDir, options: ["rw", "rbind"] },
      ]);
      assert.deepEqual(sn.mounts("1", [], "Committed"), [{ type: "bind", source: fsDir, options: ["ro", "rbind"] }]);
      const v = await sn.prepare("v", ["1"], { readonly: true });
      assert.deepEqual(v, [{ type: "bind", source: sn.fsDir("v"), options: ["ro", "rbind"] }]);
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
