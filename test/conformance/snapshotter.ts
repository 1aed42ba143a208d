// The conformance suite every Snapshotter runs: prepare/commit chains with layers applied
// through the mounts and read back through a View, whiteouts and opaque directories seen by
// children, usage, cleanup and removal. `make` gives a fresh snapshotter whose root belongs
// to the test alone. Also the tar builder the diff tests share.
import { execFileSync } from "node:child_process";
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import tar from "tar-stream";
import { applyLayerToMounts } from "../../src/diff/apply.js";
import { mountAll, unmountAll, withTempMount } from "../../src/snapshots/mount.js";
import type { Mount, Snapshotter } from "../../src/snapshots/types.js";
import { rejectsClass } from "../helpers/errors.js";

export interface SnapshotterFixture {
  sn: Snapshotter;
  cleanup(): Promise<void>;
}

export interface LayerEntry {
  name: string;
  type?: tar.Header["type"];
  body?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
}

/** An uncompressed layer tar holding `entries`, in order. */
export async function layerTar(entries: readonly LayerEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collecting = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    const type = e.type ?? "file";
    const body = Buffer.from(e.body ?? "");
    await new Promise<void>((resolve, reject) =>
      pack.entry(
        {
          mode: type === "directory" ? 0o755 : 0o644,
          mtime: new Date(1_600_000_000_000),
          uid: 0,
          gid: 0,
          ...e,
          type,
          size: type === "file" ? body.length : 0,
        },
        type === "file" ? body : Buffer.alloc(0),
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }
  pack.finalize();
  await collecting;
  return Buffer.concat(chunks);
}

/** Runs `fn` on a directory showing `mounts`: a bind mount's source, else a real mount. */
export async function readThrough<T>(mounts: readonly Mount[], fn: (dir: string) => Promise<T>): Promise<T> {
  const m = mounts[0];
  if (mounts.length === 1 && m.type === "bind") return fn(m.source);
  return withTempMount(mounts, fn);
}

/** Every path under `dir` (relative, sorted; directories end in "/"). */
export async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (d: string): Promise<void> => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      out.push(path.relative(dir, p) + (e.isDirectory() ? "/" : ""));
      if (e.isDirectory()) await visit(p);
    }
  };
  await visit(dir);
  return out.sort();
}

const apply = async (mounts: Mount[], entries: LayerEntry[]) =>
  applyLayerToMounts(mounts, Readable.from([await layerTar(entries)]));

const base: LayerEntry[] = [
  { name: "etc/", type: "directory" },
  { name: "etc/hostname", body: "base\n" },
  { name: "etc/motd", body: "hello\n" },
  { name: "lib/", type: "directory" },
  { name: "lib/a.so", body: "a" },
  { name: "lib/sub/", type: "directory" },
  { name: "lib/sub/b.so", body: "b" },
  { name: "bin/", type: "directory", mode: 0o755 },
  { name: "bin/tool", body: "#!/bin/sh\n", mode: 0o755 },
  { name: "bin/sh", type: "symlink", linkname: "tool" },
];

const second: LayerEntry[] = [
  { name: "etc/", type: "directory" },
  { name: "etc/.wh.motd" },
  { name: "etc/hostname", body: "second\n" },
  { name: "lib/", type: "directory" },
  { name: "lib/.wh..wh..opq" },
  { name: "lib/c.so", body: "c" },
  { name: "new/", type: "directory" },
  { name: "new/file", body: "new" },
];

export function snapshotterConformance(name: string, make: () => Promise<SnapshotterFixture>): void {
  describe(`Snapshotter conformance: ${name}`, () => {
    const withFx = (fn: (sn: Snapshotter) => Promise<void>) => async () => {
      const fx = await make();
      try {
        await fn(fx.sn);
      } finally {
        await fx.cleanup();
      }
    };

    test(
      "a chain of two layers applied through Active mounts reads back through a View",
      withFx(async (sn) => {
        const m1 = await sn.prepare("1", [], { readonly: false });
        await apply(m1, base);
        await sn.commit("1");
        const m2 = await sn.prepare("2", ["1"], { readonly: false });
        await apply(m2, second);
        await sn.commit("2");

        // The parent is untouched by its child's layer.
        const v1 = await sn.prepare("v1", ["1"], { readonly: true });
        await readThrough(v1, async (dir) => {
          assert.equal(await fs.readFile(path.join(dir, "etc/motd"), "utf8"), "hello\n");
          assert.equal(await fs.readFile(path.join(dir, "etc/hostname"), "utf8"), "base\n");
        });

        const v = await sn.prepare("v2", ["2", "1"], { readonly: true });
        await readThrough(v, async (dir) => {
          assert.deepEqual(await listTree(dir), [
            "bin/", "bin/sh", "bin/tool", "etc/", "etc/hostname", "lib/", "lib/c.so", "new/", "new/file",
          ]);
          assert.equal(await fs.readFile(path.join(dir, "etc/hostname"), "utf8"), "second\n");
          assert.equal(await fs.readlink(path.join(dir, "bin/sh")), "tool");
          assert.equal((await fs.stat(path.join(dir, "bin/tool"))).mode & 0o777, 0o755);
        });
      }),
    );

    test(
      "snapshot directories are spread over block groups (ext4: the snapshots directory has chattr +T), or the reason why not is given",
      withFx(async (sn) => {
        const before = await sn.prepareStorage();
        await sn.prepare("1", [], { readonly: false });
        const dir = path.join(sn.root, "snapshots");
        const fsType = execFileSync("stat", ["-f", "-c", "%T", dir], { encoding: "utf8" }).trim();
        if (fsType !== "ext2/ext3") {
          assert.equal(typeof before, "string", `on ${fsType} chattr +T is expected to fail with a reason`);
          return;
        }
        assert.equal(before, undefined, "no reason on ext4");
        const flags = execFileSync("lsattr", ["-d", dir], { encoding: "utf8" }).split(/\s+/)[0]!;
        assert.match(flags, /T/, `lsattr -d ${dir}: ${flags}`);
      }),
    );

    test(
      "a third Active snapshot over two parents sees both, and its writes reach only itself",
      withFx(async (sn) => {
        await apply(await sn.prepare("1", [], { readonly: false }), base);
        await sn.commit("1");
        await apply(await sn.prepare("2", ["1"], { readonly: false }), second);
        await sn.commit("2");
        const m3 = await sn.prepare("3", ["2", "1"], { readonly: false });
        await apply(m3, [{ name: "bin/.wh.sh" }, { name: "etc/extra", body: "x" }]);
        await sn.commit("3");
        const v = await sn.prepare("v", ["3", "2", "1"], { readonly: true });
        await readThrough(v, async (dir) => {
          assert.deepEqual(await listTree(path.join(dir, "bin")), ["tool"]);
          assert.equal(await fs.readFile(path.join(dir, "etc/extra"), "utf8"), "x");
          assert.equal(await fs.readFile(path.join(dir, "etc/hostname"), "utf8"), "second\n");
        });
        const v2 = await sn.prepare("v2", ["2", "1"], { readonly: true });
        await readThrough(v2, async (dir) => {
          assert.deepEqual(await listTree(path.join(dir, "bin")), ["sh", "tool"]);
          await assert.rejects(fs.access(path.join(dir, "etc/extra")));
        });
      }),
    );

    test(
      "in-place writes to an Active snapshot (an append, a chmod) never reach its parent",
      withFx(async (sn) => {
        await apply(await sn.prepare("1", [], { readonly: false }), base);
        await sn.commit("1");
        const state = (dir: string) => Promise.all([fs.readFile(path.join(dir, "etc/motd"), "utf8"), fs.stat(path.join(dir, "etc/motd")).then((st) => st.mode)]);
        const parentWas = await readThrough(await sn.prepare("v0", ["1"], { readonly: true }), state);
        await readThrough(await sn.prepare("2", ["1"], { readonly: false }), async (dir) => {
          await fs.appendFile(path.join(dir, "etc/motd"), "more\n");
          await fs.chmod(path.join(dir, "etc/motd"), 0o600);
          assert.deepEqual(await state(dir), ["hello\nmore\n", 0o100600]);
        });
        assert.deepEqual(await readThrough(await sn.prepare("v1", ["1"], { readonly: true }), state), parentWas);
      }),
    );

    test(
      "a View is read-only when mounted",
      { skip: process.getuid?.() !== 0 ? "mounting needs root" : false },
      withFx(async (sn) => {
        await apply(await sn.prepare("1", [], { readonly: false }), base);
        await sn.commit("1");
        const v = await sn.prepare("v", ["1"], { readonly: true });
        const dir = await fs.mkdtemp(path.join(os.tmpdir(), "ck-ro-"));
        try {
          await mountAll(v, dir);
          try {
            await assert.rejects(fs.writeFile(path.join(dir, "etc/x"), "x"), { code: "EROFS" });
          } finally {
            await unmountAll(dir);
          }
        } finally {
          await fs.rmdir(dir);
        }
        await assert.rejects(fs.access(path.join(sn.fsDir("1"), "etc/x")));
      }),
    );

    test(
      "usage counts the snapshot's own bytes and inodes",
      withFx(async (sn) => {
        await sn.prepare("1", [], { readonly: false });
        const block = Buffer.alloc(8192, 1);
        for (const f of ["a", "b", "c"]) await fs.writeFile(path.join(sn.fsDir("1"), f), block);
        await fs.link(path.join(sn.fsDir("1"), "a"), path.join(sn.fsDir("1"), "a2"));
        const u = await sn.usage("1");
        assert.equal(u.inodes, 4, "root + 3 files, the hard link counted once");
        assert.ok(u.size >= 3 * 8192, `size ${u.size}`);
        await sn.commit("1");
        assert.deepEqual(await sn.usage("1"), u);
        await rejectsClass(sn.usage("nope"), "NotFound");
      }),
    );

    test(
      "cleanup removes only directories not kept, and returns them",
      withFx(async (sn) => {
        await sn.prepare("1", [], { readonly: false });
        await sn.prepare("2", [], { readonly: false });
        await fs.mkdir(path.join(sn.root, "snapshots", ".new-leftover"), { recursive: true });
        const removed = await sn.cleanup(new Set(["1"]));
        assert.deepEqual(removed.sort(), [".new-leftover", "2"]);
        assert.deepEqual(await fs.readdir(path.join(sn.root, "snapshots")), ["1"]);
        assert.deepEqual(await sn.cleanup(new Set(["1"])), []);
      }),
    );

    test(
      "remove deletes a snapshot's directories; a missing one is NotFound",
      withFx(async (sn) => {
        await apply(await sn.prepare("1", [], { readonly: false }), base);
        await sn.commit("1");
        await sn.remove("1");
        assert.deepEqual(await fs.readdir(path.join(sn.root, "snapshots")), []);
        await rejectsClass(sn.remove("1"), "NotFound");
        await rejectsClass(sn.commit("1"), "NotFound");
      }),
    );

    test(
      "bad ids are InvalidArgument, a taken id AlreadyExists, a missing parent NotFound; nothing is created",
      withFx(async (sn) => {
        for (const bad of ["", "../x", "a/b", ".hidden", "with space", "x".repeat(200)]) {
          await rejectsClass(sn.prepare(bad, [], { readonly: false }), "InvalidArgument");
        }
        await sn.prepare("1", [], { readonly: false });
        await rejectsClass(sn.prepare("1", [], { readonly: false }), "AlreadyExists");
        await rejectsClass(sn.prepare("2", ["9"], { readonly: false }), "NotFound");
        assert.deepEqual(await fs.readdir(path.join(sn.root, "snapshots")), ["1"]);
      }),
    );

    test(
      "a layer cannot be applied onto a View's read-only mounts",
      withFx(async (sn) => {
        await apply(await sn.prepare("1", [], { readonly: false }), base);
        await sn.commit("1");
        const v = await sn.prepare("v", ["1"], { readonly: true });
        await rejectsClass(apply(v, [{ name: "x", body: "x" }]), "FailedPrecondition");
        await assert.rejects(fs.access(path.join(sn.fsDir("1"), "x")));
      }),
    );
  });
}
