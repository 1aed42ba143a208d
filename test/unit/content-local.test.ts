// LocalContentStore against the content store conformance suite, plus what only a store on
// disk can show: resume and leftovers after a restart, the on-disk layout, grouped fsyncs.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { readlinkSync } from "node:fs";
import { LocalContentStore } from "../../src/content/local-store.js";
import type { WriterOptions } from "../../src/content/types.js";
import { contentStoreConformance, plain } from "../conformance/content-store.js";

const sha = (b: Buffer): string => "sha256:" + createHash("sha256").update(b).digest("hex");

async function tempRoot(): Promise<{ base: string; root: string }> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), "ck-content-"));
  return { base, root: path.join(base, "store") };
}

for (const [name, opts, writeThrough] of [
  ["LocalContentStore", {}, false],
  ["LocalContentStore, every ingest on disk", { memoryIngestMaxBytes: 0 }, false],
  ["LocalContentStore, every ingest on disk, written through (O_DIRECT)", { memoryIngestMaxBytes: 0 }, true],
  ["LocalContentStore, written through where the store refuses it", { memoryIngestMaxBytes: 0, directWrites: false }, true],
] as const) {
  contentStoreConformance(name, async () => {
    const { base, root } = await tempRoot();
    const local = await LocalContentStore.open(root, opts);
    // Every writer the suite opens asks for write-through, as Content.Write's do.
    const store = writeThrough
      ? new Proxy(local, {
          get: (target, prop, receiver) =>
            prop === "writer" ? (o: WriterOptions) => target.writer({ ...o, writeThrough: true }) : Reflect.get(target, prop, receiver),
        })
      : local;
    return {
      store,
      root,
      async cleanup() {
        await store.close();
        await fs.rm(base, { recursive: true, force: true });
      },
    };
  });
}

describe("LocalContentStore on disk", () => {
  test("layout: blobs/sha256/<hex> and ingest/<sha256(ref)>/{data,ref.json}", async () => {
    const { base, root } = await tempRoot();
    const store = await LocalContentStore.open(root);
    try {
      const data = Buffer.from("layout");
      const w1 = await store.writer({ ref: "../weird ref", total: data.length });
      await w1.write(0, data.subarray(0, 3));
      assert.deepEqual(await fs.readdir(path.join(root, "ingest")), [], "a small open ingest is in memory");
      await w1.close();
      const key = createHash("sha256").update("../weird ref").digest("hex");
      assert.deepEqual((await fs.readdir(path.join(root, "ingest", key))).sort(), ["data", "ref.json"]);
      assert.equal(await fs.readFile(path.join(root, "ingest", key, "data"), "utf8"), "lay");
      const saved = JSON.parse(await fs.readFile(path.join(root, "ingest", key, "ref.json"), "utf8"));
      assert.equal(saved.ref, "../weird ref");
      assert.equal(saved.total, data.length);
      const w = await store.writer({ ref: "../weird ref" });
      await w.write(3, data.subarray(3));
      const { digest } = await w.commit();
      assert.equal(store.path(digest), path.join(root, "blobs", "sha256", digest.slice(7)));
      assert.ok((await fs.readFile(store.path(digest))).equals(data));
      assert.deepEqual(await fs.readdir(path.join(root, "ingest")), []);
    } finally {
      await store.close();
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("after a restart a partial ingest resumes with the right digest; leftovers are harmless", async () => {
    const { base, root } = await tempRoot();
    try {
      const data = randomBytes(3 * 1024 * 1024 + 11);
      const cut = 2 * 1024 * 1024 + 5;
      const s1 = await LocalContentStore.open(root);
      const w1 = await s1.writer({ ref: "layer-x", expected: sha(data), total: data.length });
      await w1.write(0, data.subarray(0, cut));
      await w1.close();
      await s1.close();

      // What a crash can leave: a stray file in blobs/, an ingest dir whose ref.json never landed.
      await fs.writeFile(path.join(root, "blobs", "sha256", ".tmp-123"), "junk");
      const orphan = path.join(root, "ingest", "f".repeat(64));
      await fs.mkdir(orphan);
      await fs.writeFile(path.join(orphan, "data"), "half");

      const s2 = await LocalContentStore.open(root);
      try {
        const st = await s2.status("layer-x");
        assert.deepEqual([st.offset, st.total, st.expected], [cut, data.length, sha(data)]);
        assert.deepEqual((await s2.listStatuses()).map((s) => s.ref), ["layer-x"]);
        const w2 = await s2.writer({ ref: "layer-x" });
        assert.equal(w2.offset, cut);
        assert.equal(w2.digest(), sha(data.subarray(0, cut)));
        await w2.write(cut, data.subarray(cut));
        assert.deepEqual(await w2.commit(), { digest: sha(data), size: data.length });
        const walked = [];
        for await (const b of s2.walk()) walked.push(plain(b));
        assert.deepEqual(walked, [{ digest: sha(data), size: data.length }]);
        assert.deepEqual(await s2.cleanupStale(0), [], "the orphan goes, unnamed");
        assert.deepEqual(await fs.readdir(path.join(root, "ingest")), []);
      } finally {
        await s2.close();
      }
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("after a restart an ingest opened with another total starts over, on disk and in ref.json", async () => {
    const { base, root } = await tempRoot();
    try {
      const s1 = await LocalContentStore.open(root);
      const w1 = await s1.writer({ ref: "layer-t", total: 100_000 });
      await w1.write(0, randomBytes(50_000));
      await w1.close();
      const before = await s1.status("layer-t");
      await s1.close();
      const s2 = await LocalContentStore.open(root);
      try {
        const data = randomBytes(150_000);
        const w2 = await s2.writer({ ref: "layer-t", total: data.length, expected: sha(data) });
        assert.deepEqual([w2.offset, w2.total, w2.digest()], [0, data.length, sha(Buffer.alloc(0))]);
        const key = createHash("sha256").update("layer-t").digest("hex");
        assert.equal((await fs.stat(path.join(root, "ingest", key, "data"))).size, 0, "the old bytes are gone");
        const saved = JSON.parse(await fs.readFile(path.join(root, "ingest", key, "ref.json"), "utf8"));
        assert.equal(saved.total, data.length);
        assert.ok(Date.parse(saved.startedAt) >= before.startedAt.getTime());
        await w2.write(0, data);
        assert.deepEqual(await w2.commit(), { digest: sha(data), size: data.length });
      } finally {
        await s2.close();
      }
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("an ingest's leases survive a restart, in ref.json, and releaseLease rewrites it", async () => {
    const { base, root } = await tempRoot();
    try {
      const s1 = await LocalContentStore.open(root);
      const w = await s1.writer({ ref: "layer-l", lease: "pull-1" });
      await w.write(0, Buffer.from("half a layer"));
      await w.close();
      await s1.close();
      const s2 = await LocalContentStore.open(root);
      try {
        assert.deepEqual((await s2.status("layer-l")).leases, ["pull-1"]);
        assert.equal((await s2.status("layer-l")).expires, false);
        await s2.releaseLease("layer-l", "pull-1");
        const key = createHash("sha256").update("layer-l").digest("hex");
        const saved = JSON.parse(await fs.readFile(path.join(root, "ingest", key, "ref.json"), "utf8"));
        assert.equal(saved.leases, undefined);
        assert.equal(saved.expires, false, "let go of, it still has no expiry of its own");
        assert.deepEqual((await s2.status("layer-l")).leases, []);
        assert.equal((await s2.status("layer-l")).expires, false);
      } finally {
        await s2.close();
      }
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("releaseLease under the ref's lock: racing commits and resuming writers, every commit and open goes through, ref.json stays whole, a released lease stays released", async () => {
    const { base, root } = await tempRoot();
    const key = (ref: string) => createHash("sha256").update(ref).digest("hex");
    const turns = (n: number) => (async () => {
      for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
    })();
    try {
      // Ingests on disk, each held by lease L1, left by an earlier process.
      const s1 = await LocalContentStore.open(root, { memoryIngestMaxBytes: 0 });
      const refs = Array.from({ length: 40 }, (_, i) => `layer-${i}-with-a-rather-long-name`);
      const data = (i: number) => Buffer.from(`layer ${i} bytes `.repeat(50));
      for (const [i, ref] of refs.entries()) {
        const w = await s1.writer({ ref, lease: "L1-a-rather-long-lease-name-xxxxxxxx" });
        await w.write(0, data(i));
        await w.close();
      }
      await s1.close();
      const s2 = await LocalContentStore.open(root, { memoryIngestMaxBytes: 0 });
      try {
        // Half: a resuming writer under lease L2 that commits, racing the release of L1 a few
        // event-loop turns in; the other half: a writer opened at once against the release.
        const outcomes = await Promise.allSettled(
          refs.map(async (ref, i) => {
            const opening = s2.writer({ ref, lease: "L2" });
            const releasing = turns(i % 20).then(() => s2.releaseLease(ref, "L1-a-rather-long-lease-name-xxxxxxxx"));
            const w = await opening;
            if (i % 2 === 0) {
              await w.commit({ size: data(i).length, expected: sha(data(i)) });
            } else await w.close();
            await releasing.catch((err) => {
              // Released after its commit removed the ingest: NotFound, as for any unknown ref.
              if (!(i % 2 === 0 && /not found/.test(String(err)))) throw err;
            });
          }),
        );
        assert.deepEqual(outcomes.filter((o) => o.status === "rejected").map((o) => String((o as PromiseRejectedResult).reason)), []);
        for (const [i, ref] of refs.entries()) {
          const dir = path.join(root, "ingest", key(ref));
          if (i % 2 === 0) {
            assert.ok(await s2.stat(sha(data(i))), `blob ${i} committed`);
            await assert.rejects(fs.stat(dir), /ENOENT/, `ingest ${i} left behind its commit`);
            continue;
          }
          const saved = JSON.parse(await fs.readFile(path.join(dir, "ref.json"), "utf8"));
          assert.deepEqual(saved.leases, ["L2"], `ingest ${i}: ${JSON.stringify(saved)}`);
          assert.deepEqual((await s2.status(ref)).leases, ["L2"]);
        }
        assert.deepEqual((await s2.listStatuses()).map((st) => st.ref).sort(), refs.filter((_, i) => i % 2 === 1).sort(), "no ghost ingest");
      } finally {
        await s2.close();
      }
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("a commit dates its blob now (as containerd's), not at the ingest's last write: the orphan sweep's grace counts from the commit", async () => {
    const { base, root } = await tempRoot();
    try {
      const s = await LocalContentStore.open(root, { memoryIngestMaxBytes: 0 });
      try {
        const bytes = Buffer.from("downloaded long ago");
        const w = await s.writer({ ref: "old" });
        await w.write(0, bytes);
        await w.close();
        const dataFile = path.join(root, "ingest", createHash("sha256").update("old").digest("hex"), "data");
        const longAgo = new Date(Date.now() - 3600_000);
        await fs.utimes(dataFile, longAgo, longAgo);
        const again = await s.writer({ ref: "old" });
        await again.commit({ size: bytes.length, expected: sha(bytes) });
        const mtime = (await fs.stat(path.join(root, "blobs", "sha256", sha(bytes).slice(7)))).mtimeMs;
        assert.ok(Date.now() - mtime < 60_000, `the blob is dated ${new Date(mtime).toISOString()}`);
      } finally {
        await s.close();
      }
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("a small ingest reaches disk once, at commit, leaving nothing in ingest/", async () => {
    const { base, root } = await tempRoot();
    const store = await LocalContentStore.open(root);
    try {
      const data = randomBytes(10_000);
      const w = await store.writer({ ref: "small", expected: sha(data) });
      await w.write(0, data.subarray(0, 4000));
      await w.write(4000, data.subarray(4000));
      assert.equal((await store.status("small")).offset, data.length);
      assert.deepEqual((await store.listStatuses()).map((s) => s.ref), ["small"]);
      assert.deepEqual(await fs.readdir(path.join(root, "ingest")), []);
      await w.commit();
      // The temp file went through this store's own temp directory and was renamed away.
      const [tempDir, ...others] = await fs.readdir(path.join(root, "ingest"));
      assert.match(tempDir, /^tmp-[0-9a-f]{16}$/);
      assert.deepEqual(others, []);
      assert.deepEqual(await fs.readdir(path.join(root, "ingest", tempDir)), []);
      assert.ok((await fs.readFile(store.path(sha(data)))).equals(data));
      // Stale temp files from a crash (one in the ingest directory itself, where they were
      // before temp directories, one in the current temp directory) are ignored, then cleaned.
      await fs.writeFile(path.join(root, "ingest", "e".repeat(64) + ".tmp"), "x");
      await fs.writeFile(path.join(root, "ingest", tempDir, "d".repeat(64) + ".tmp"), "x");
      assert.deepEqual(await store.listStatuses(), []);
      assert.deepEqual(await store.cleanupStale(0), []);
      assert.deepEqual(await fs.readdir(path.join(root, "ingest")), [tempDir]);
      assert.deepEqual(await fs.readdir(path.join(root, "ingest", tempDir)), []);
    } finally {
      await store.close();
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("each store opened writes its temp files in a new directory; cleanup removes the earlier, once empty", async () => {
    const { base, root } = await tempRoot();
    try {
      const commitSmall = async (store: LocalContentStore, text: string) => {
        const w = await store.writer({ ref: text });
        await w.write(0, Buffer.from(text));
        await w.commit();
      };
      const s1 = await LocalContentStore.open(root);
      await commitSmall(s1, "first");
      await s1.close();
      const [first] = await fs.readdir(path.join(root, "ingest"));
      // A crash between a temp file's write and its rename leaves it in the earlier directory.
      const left = path.join(root, "ingest", first, "c".repeat(64) + ".tmp");
      await fs.writeFile(left, "x");
      const s2 = await LocalContentStore.open(root);
      try {
        await commitSmall(s2, "second");
        const dirs = await fs.readdir(path.join(root, "ingest"));
        assert.equal(dirs.length, 2);
        const second = dirs.find((d) => d !== first)!;
        assert.match(second, /^tmp-[0-9a-f]{16}$/);
        assert.deepEqual(await s2.cleanupStale(60_000), []);
        assert.deepEqual((await fs.readdir(path.join(root, "ingest"))).sort(), [first, second].sort(), "a young temp file stays, and its directory");
        assert.deepEqual(await s2.cleanupStale(0), []);
        assert.deepEqual(await fs.readdir(path.join(root, "ingest")), [second]);
      } finally {
        await s2.close();
      }
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("concurrent commits share directory fsyncs", async () => {
    const { base, root } = await tempRoot();
    const store = await LocalContentStore.open(root);
    try {
      await Promise.all(
        Array.from({ length: 64 }, async (_, i) => {
          const data = randomBytes(4096);
          const w = await store.writer({ ref: `blob-${i}`, expected: sha(data), total: data.length });
          await w.write(0, data);
          await w.commit();
        }),
      );
      const { rounds, requests } = store.syncStats;
      assert.equal(requests, 64);
      assert.ok(rounds < requests, `${rounds} directory syncs for ${requests} commits`);
    } finally {
      await store.close();
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  // A disk that fills up must never leave an ingest whose offset or digest disagrees with its
  // file (a short write is cut back, the hash restored).
  test("a write the disk refuses fails with ENOSPC; the next writer resumes from what the file holds", { skip: process.getuid?.() === 0 ? false : "mounting a small tmpfs needs root" }, async () => {
    const base = await fs.mkdtemp(path.join(os.tmpdir(), "ck-content-full-"));
    const { execFileSync } = await import("node:child_process");
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", base]);
    const store = await LocalContentStore.open(path.join(base, "store"), { memoryIngestMaxBytes: 0 });
    try {
      const chunk = randomBytes(512 << 10);
      const w = await store.writer({ ref: "too-big" });
      let failed: unknown;
      let answered = 0;
      for (let i = 0; i < 8 && !failed; i++) {
        try {
          answered = await w.write(i * chunk.length, chunk);
        } catch (err) {
          failed = err;
        }
      }
      assert.ok(failed, "a 4 MiB ingest on a 2 MiB disk fails");
      assert.match(String((failed as NodeJS.ErrnoException).code ?? failed), /ENOSPC/);
      // The writer's offset and digest are those of what the file holds (nothing more than was
      // answered), and so are the next writer's.
      const held = await fs.readFile(path.join(base, "store", "ingest", createHash("sha256").update("too-big").digest("hex"), "data"));
      assert.ok(held.length <= answered + chunk.length && held.length >= answered, `${held.length} bytes held, ${answered} answered`);
      assert.equal(w.offset, held.length);
      assert.equal(w.digest(), sha(held));
      await w.close();
      const again = await store.writer({ ref: "too-big" });
      assert.equal(again.offset, held.length);
      assert.equal(again.digest(), sha(held));
      await again.close();
      await store.abort("too-big");
    } finally {
      await store.close();
      execFileSync("umount", [base]);
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("a failed write whose cut-back also fails stops the writer; nothing is committed under a digest its bytes do not have", async () => {
    const { base, root } = await tempRoot();
    const store = await LocalContentStore.open(root, { memoryIngestMaxBytes: 0 });
    // Faults injected into every FileHandle: a write that lands and then reports EIO, a truncate that fails.
    const probe = await fs.open(path.join(base, "probe"), "w");
    const proto = Object.getPrototypeOf(probe) as { write: (...a: unknown[]) => Promise<unknown>; truncate: (n: number) => Promise<void> };
    await probe.close();
    const { write, truncate } = proto;
    let failWrite = false;
    let failTruncate = false;
    const eio = () => Object.assign(new Error("EIO (injected)"), { code: "EIO" });
    proto.write = async function (this: unknown, ...args: unknown[]) {
      const r = await write.apply(this, args);
      if (!failWrite) return r;
      failWrite = false;
      throw eio();
    };
    proto.truncate = async function (this: unknown, n: number) {
      if (!failTruncate) return truncate.call(this, n);
      failTruncate = false;
      throw eio();
    };
    try {
      const a = randomBytes(10_000);
      const b = randomBytes(50_000);
      const w = await store.writer({ ref: "cut" });
      await w.write(0, a);
      failWrite = failTruncate = true;
      await assert.rejects(w.write(a.length, b), /EIO/);
      await assert.rejects(w.write(a.length, randomBytes(100)), (err: Error & { errorClass?: string }) => err.errorClass === "FailedPrecondition");
      // The next writer takes the file as it is: offset and digest of every byte it holds.
      const again = await store.writer({ ref: "cut" });
      const held = Buffer.concat([a, b]);
      assert.equal(again.offset, held.length);
      assert.equal(again.digest(), sha(held));
      const info = await again.commit({});
      assert.equal(info.digest, sha(held));
      assert.ok((await fs.readFile(path.join(root, "blobs", "sha256", info.digest.slice(7)))).equals(held));
    } finally {
      proto.write = write;
      proto.truncate = truncate;
      await store.close();
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("an ingest that cannot move to disk (its ref.json write fails) leaves no file open", async () => {
    const { base, root } = await tempRoot();
    const store = await LocalContentStore.open(root, { memoryIngestMaxBytes: 1 << 20 });
    const openData = async () =>
      (await fs.readdir("/proc/self/fd")).filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`).startsWith(path.join(root, "ingest"));
        } catch {
          return false;
        }
      });
    const writeFile = fs.writeFile;
    (fs as { writeFile: unknown }).writeFile = async () => {
      throw Object.assign(new Error("ENOSPC (injected)"), { code: "ENOSPC" });
    };
    try {
      const w = await store.writer({ ref: "spill" });
      await w.write(0, randomBytes(1000));
      await assert.rejects(w.write(1000, randomBytes(2 << 20)), /ENOSPC/);
      await w.close().catch(() => undefined);
      assert.deepEqual(await openData(), []);
    } finally {
      (fs as { writeFile: unknown }).writeFile = writeFile;
      await store.close();
      await fs.rm(base, { recursive: true, force: true });
    }
  });
});

