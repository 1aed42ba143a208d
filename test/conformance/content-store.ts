// The conformance suite every ContentStore runs: the Content.Write state machine (offsets,
// truncate, resume, commit checks, ref locks), digest rules, ingest tracking and blob management.
// `make` must give a fresh store whose root's parent directory belongs to the test alone.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CkError } from "../../src/errdefs/errdefs.js";
import type { BlobInfo, ContentStore } from "../../src/content/types.js";
import { rejectsClass, throwsClass } from "../helpers/errors.js";

export interface ContentStoreFixture {
  store: ContentStore;
  root: string;
  cleanup(): Promise<void>;
}

const sha = (b: Buffer): string => "sha256:" + createHash("sha256").update(b).digest("hex");

/** Every path under `dir` (relative, sorted), skipping `skip` and what is under it. */
async function tree(dir: string, skip?: string): Promise<string[]> {
  const out: string[] = [];
  async function visit(d: string): Promise<void> {
    let entries;
    try {
      entries = await fs.readdir(d, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (skip !== undefined && p === skip) continue;
      out.push(path.relative(dir, p) + (e.isDirectory() ? "/" : ""));
      if (e.isDirectory()) await visit(p);
    }
  }
  await visit(dir);
  return out.sort();
}

/**
 * A BlobInfo without its optional file time, which, when a store gives one, must be a Date no
 * later than now (GC's orphan sweep keeps files by it).
 */
export function plain(b: BlobInfo | undefined): BlobInfo | undefined {
  if (b === undefined) return b;
  if (b.modifiedAt !== undefined) {
    assert.ok(b.modifiedAt instanceof Date && b.modifiedAt.getTime() <= Date.now() + 1000, `modifiedAt ${String(b.modifiedAt)}`);
  }
  return { digest: b.digest, size: b.size };
}

async function walked(store: ContentStore): Promise<BlobInfo[]> {
  const all: BlobInfo[] = [];
  for await (const b of store.walk()) all.push(plain(b)!);
  return all.sort((a, b) => (a.digest < b.digest ? -1 : 1));
}

/** Nothing committed: the store walks no blob and nothing sits under `<root>/blobs`. */
async function assertNoBlobs(fx: ContentStoreFixture): Promise<void> {
  assert.deepEqual(await walked(fx.store), []);
  const files = (await tree(path.join(fx.root, "blobs"))).filter((p) => !p.endsWith("/"));
  assert.deepEqual(files, []);
}

async function readBack(store: ContentStore, digest: string): Promise<Buffer> {
  const r = await store.readerAt(digest);
  try {
    return await r.read(0, r.size);
  } finally {
    await r.close();
  }
}

async function put(store: ContentStore, ref: string, data: Buffer): Promise<BlobInfo> {
  const w = await store.writer({ ref, expected: sha(data), total: data.length });
  await w.write(0, data);
  return w.commit({ size: data.length, expected: sha(data) });
}

export function contentStoreConformance(name: string, make: () => Promise<ContentStoreFixture>): void {
  /** Runs `body` on a fresh fixture and always cleans up. */
  const withStore = (body: (fx: ContentStoreFixture) => Promise<void>) => async () => {
    const fx = await make();
    try {
      await body(fx);
    } finally {
      await fx.cleanup();
    }
  };

  describe(`content store conformance: ${name}`, () => {
    test("write, commit and read back", withStore(async ({ store }) => {
      const data = randomBytes(300_000);
      const digest = sha(data);
      const w = await store.writer({ ref: "layer-1", expected: digest, total: data.length });
      assert.equal(w.offset, 0);
      assert.equal(w.digest(), sha(Buffer.alloc(0)));
      assert.equal(await w.write(0, data.subarray(0, 100_000)), 100_000);
      assert.equal(w.digest(), sha(data.subarray(0, 100_000)));
      assert.equal(await w.write(100_000, data.subarray(100_000)), data.length);
      assert.deepEqual(await w.commit({ size: data.length, expected: digest }), { digest, size: data.length });
      await w.close(); // harmless after commit

      assert.deepEqual(plain(await store.stat(digest)), { digest, size: data.length });
      assert.ok(Buffer.from(await readBack(store, digest)).equals(data));
      const r = await store.readerAt(digest);
      assert.equal(r.size, data.length);
      assert.ok((await r.read(10, 20)).equals(data.subarray(10, 30)));
      assert.ok((await r.read(data.length - 5, 100)).equals(data.subarray(data.length - 5)));
      assert.equal((await r.read(data.length, 10)).length, 0);
      await r.close();

      await rejectsClass(store.status("layer-1"), "NotFound");
      assert.deepEqual(await store.listStatuses(), []);
      await rejectsClass(w.write(data.length, Buffer.from("x")), "FailedPrecondition");
    }));

    test("an empty blob commits", withStore(async ({ store }) => {
      const w = await store.writer({ ref: "empty" });
      const info = await w.commit();
      assert.deepEqual(info, { digest: sha(Buffer.alloc(0)), size: 0 });
      assert.equal((await readBack(store, info.digest)).length, 0);
    }));

    test("expected digest and size mismatches fail the commit and commit nothing", withStore(async (fx) => {
      const { store } = fx;
      const data = Buffer.from("hello");
      const w = await store.writer({ ref: "mismatch", expected: sha(Buffer.from("other")) });
      await w.write(0, data);
      await rejectsClass(w.commit(), "FailedPrecondition", /^unexpected commit digest sha256:[a-f0-9]{64}, expected sha256:/);
      await rejectsClass(w.commit({ size: 999, expected: sha(data) }), "FailedPrecondition", /^"mismatch" failed size validation: 5 != 999/);
      await assertNoBlobs(fx);
      assert.equal((await store.status("mismatch")).offset, 5, "the ingest is kept");
      assert.deepEqual(await w.commit({ expected: sha(data) }), { digest: sha(data), size: 5 });
    }));

    test("a commit checks the size it declares, not a total an earlier writer of the ref declared (as containerd's)", withStore(async (fx) => {
      const w = await fx.store.writer({ ref: "short", total: 10 });
      await w.write(0, Buffer.from("12345"));
      await rejectsClass(w.commit({ size: 10 }), "FailedPrecondition", /^"short" failed size validation: 5 != 10/);
      await assertNoBlobs(fx);
      await w.close();
      // Resumed by a writer that declares no total (ctr content ingest without
      // --expected-size): its commit is not held to the 10 declared before, for good.
      const again = await fx.store.writer({ ref: "short" });
      assert.equal(again.offset, 5);
      await again.write(5, Buffer.from("678"));
      assert.deepEqual(await again.commit(), { digest: sha(Buffer.from("12345678")), size: 8 });
    }));

    test("a write away from the current offset is OutOfRange", withStore(async ({ store }) => {
      const w = await store.writer({ ref: "offsets" });
      await w.write(0, Buffer.from("abcde"));
      await rejectsClass(w.write(3, Buffer.from("x")), "OutOfRange");
      await rejectsClass(w.write(10, Buffer.from("x")), "OutOfRange");
      await rejectsClass(w.write(-1, Buffer.from("x")), "InvalidArgument");
      assert.equal(w.offset, 5);
      assert.equal(w.digest(), sha(Buffer.from("abcde")));
      assert.equal((await store.status("offsets")).offset, 5);
      await w.close();
    }));

    test("truncate(0) and a write at offset 0 restart the ingest", withStore(async ({ store }) => {
      const good = randomBytes(4096);
      const w = await store.writer({ ref: "restart", expected: sha(good), total: good.length });
      await w.write(0, randomBytes(1000));
      await w.truncate(0);
      assert.equal(w.offset, 0);
      assert.equal(w.digest(), sha(Buffer.alloc(0)));
      assert.equal((await store.status("restart")).offset, 0);
      await w.write(0, randomBytes(7000));
      assert.equal(await w.write(0, good), good.length, "offset 0 with data held truncates");
      assert.equal(w.digest(), sha(good));
      assert.deepEqual(await w.commit(), { digest: sha(good), size: good.length });
      assert.ok((await readBack(store, sha(good))).equals(good));
    }));

    test("close keeps the bytes; the next writer resumes at the offset", withStore(async ({ store }) => {
      const data = randomBytes(64 * 1024 + 7);
      const half = 40_000;
      const w1 = await store.writer({ ref: "resume", expected: sha(data), total: data.length });
      await w1.write(0, data.subarray(0, half));
      await w1.close();
      await rejectsClass(w1.write(half, data.subarray(half)), "FailedPrecondition");
      const st = await store.status("resume");
      assert.equal(st.offset, half);
      assert.equal(st.total, data.length);
      assert.equal(st.expected, sha(data));

      const w2 = await store.writer({ ref: "resume" });
      assert.equal(w2.offset, half);
      assert.deepEqual([w2.startedAt, w2.updatedAt], [st.startedAt, st.updatedAt], "a resumed ingest keeps its start");
      assert.equal(w2.digest(), sha(data.subarray(0, half)));
      // An expected digest is its writer's (as containerd's Commit is given one): the next
      // writer declares its own or none, and is not held to one a failed try declared.
      assert.equal(w2.expected, undefined, "the first writer's expected is not the second's");
      await rejectsClass(w2.write(half + 1, Buffer.from("x")), "OutOfRange");
      await w2.write(half, data.subarray(half));
      assert.deepEqual(await w2.commit(), { digest: sha(data), size: data.length });
      assert.ok((await readBack(store, sha(data))).equals(data));
    }));

    test("a different total on resume starts the ingest over, under the new writer's lock only", withStore(async ({ store }) => {
      // As containerd's local store: an ingest that cannot be resumed as asked is recreated,
      // not refused on every try until someone aborts it (ctr has no abort).
      const data = randomBytes(11);
      const w1 = await store.writer({ ref: "totals", total: 10, lease: "l1" });
      await w1.write(0, Buffer.from("0123"));
      const first = await store.status("totals");
      await w1.close();
      // Same total (or none): a resume.
      const same = await store.writer({ ref: "totals", total: 10 });
      assert.equal(same.offset, 4);
      // While a writer holds the ref, another total changes nothing: the ref is locked.
      await rejectsClass(store.writer({ ref: "totals", total: 11 }), "Unavailable", /locked/);
      assert.equal((await store.status("totals")).offset, 4);
      await same.close();
      await sleep(5);
      const w2 = await store.writer({ ref: "totals", total: 11 });
      assert.equal(w2.offset, 0);
      assert.equal(w2.total, 11);
      assert.equal(w2.digest(), sha(Buffer.alloc(0)));
      const st = await store.status("totals");
      assert.equal(st.offset, 0);
      assert.equal(st.total, 11);
      assert.ok(st.startedAt.getTime() > first.startedAt.getTime(), "a new ingest, with its own start");
      assert.deepEqual(w2.startedAt, st.startedAt);
      assert.deepEqual(st.leases, ["l1"], "the leases holding the ref still hold it");
      await w2.write(0, data.subarray(0, 6));
      await w2.close();
      // It resumes as any ingest, at the new total, and commits what it was given.
      const w3 = await store.writer({ ref: "totals", total: 11 });
      assert.equal(w3.offset, 6);
      await w3.write(6, data.subarray(6));
      assert.deepEqual(await w3.commit({ expected: sha(data) }), { digest: sha(data), size: 11 });
      assert.ok((await readBack(store, sha(data))).equals(data));
    }));

    test("ten concurrent writers on one ref: one writes, the rest wait and see AlreadyExists", withStore(async ({ store }) => {
      const data = randomBytes(16 * 16 * 1024);
      const chunk = 16 * 1024;
      const digest = sha(data);
      const ref = `layer-${digest}`;
      let holders = 0;
      let maxHolders = 0;
      let writeCalls = 0;
      const wroteData = new Set<number>();
      const sawUnavailable = new Set<number>();

      const worker = async (i: number): Promise<"committed" | "exists"> => {
        for (let attempt = 0; attempt < 500; attempt++) {
          let w;
          try {
            w = await store.writer({ ref, expected: digest, total: data.length });
          } catch (err) {
            if (err instanceof CkError && err.errorClass === "Unavailable") {
              assert.match(err.message, new RegExp(`^ref "${ref}" locked`));
              sawUnavailable.add(i);
              await sleep(Math.min(2 ** attempt, 16) + Math.random() * 3);
              continue;
            }
            if (err instanceof CkError && err.errorClass === "AlreadyExists") return "exists";
            throw err;
          }
          holders++;
          maxHolders = Math.max(maxHolders, holders);
          try {
            for (let off = w.offset; off < data.length; off += chunk) {
              wroteData.add(i);
              writeCalls++;
              await w.write(off, data.subarray(off, off + chunk));
              await sleep(1);
            }
            await w.commit();
            return "committed";
          } finally {
            holders--;
            await w.close();
          }
        }
        throw new Error(`writer ${i} gave up`);
      };

      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => worker(i)));
      assert.equal(results.filter((r) => r === "committed").length, 1);
      assert.equal(results.filter((r) => r === "exists").length, 9);
      assert.equal(maxHolders, 1, "never two holders at once");
      assert.equal(sawUnavailable.size, 9, "every other writer met the lock");
      assert.equal(wroteData.size, 1, "only one writer ever wrote data");
      assert.equal(writeCalls, data.length / chunk, "the bytes were written once");
      assert.ok((await readBack(store, digest)).equals(data));
      assert.deepEqual(await store.listStatuses(), []);
    }));

    test("an expected blob that exists is AlreadyExists, at open and at commit", withStore(async ({ store }) => {
      const data = Buffer.from("shared bytes");
      await put(store, "first", data);
      await rejectsClass(store.writer({ ref: "second", expected: sha(data) }), "AlreadyExists");
      const w = await store.writer({ ref: "third" });
      await w.write(0, data);
      await rejectsClass(w.commit(), "AlreadyExists");
      await rejectsClass(store.status("third"), "NotFound", /ingest ref "third"/);
      const again = await store.writer({ ref: "third" });
      assert.equal(again.offset, 0, "the ingest was dropped");
      await again.close();
    }));

    test("digests: sha256 only, malformed ones name the field", withStore(async (fx) => {
      const { store } = fx;
      const sha512 = "sha512:" + "a".repeat(128);
      const sha384 = "sha384:" + "b".repeat(96);
      for (const d of [sha512, sha384, "md5:abcdef"]) {
        await rejectsClass(store.writer({ ref: "alg", expected: d }), "InvalidArgument", /unsupported digest algorithm/);
        await rejectsClass(store.stat(d), "InvalidArgument", /unsupported digest algorithm/);
        await rejectsClass(store.readerAt(d), "InvalidArgument", /unsupported digest algorithm/);
        await rejectsClass(store.delete(d), "InvalidArgument", /unsupported digest algorithm/);
        throwsClass(() => store.path(d), "InvalidArgument", /unsupported digest algorithm/);
      }
      for (const d of ["sha256:xyz", "sha256:" + "A".repeat(64), "nocolon", "sha256:", ":abc", "sha256:../../etc"]) {
        await rejectsClass(store.writer({ ref: "bad", expected: d }), "InvalidArgument", /^expected ".*" invalid: /);
        await rejectsClass(store.stat(d), "InvalidArgument", /^digest ".*" invalid: /);
        await rejectsClass(store.readerAt(d), "InvalidArgument", /^digest /);
        await rejectsClass(store.delete(d), "InvalidArgument", /^digest /);
        throwsClass(() => store.path(d), "InvalidArgument", /^digest /);
      }
      await rejectsClass(store.writer({ ref: "" }), "InvalidArgument", /ref must not be empty/);
      await rejectsClass(store.status(""), "InvalidArgument");
      await rejectsClass(store.writer({ ref: "neg", total: -1 }), "InvalidArgument");

      const w = await store.writer({ ref: "commit-bad" });
      await w.write(0, Buffer.from("x"));
      await rejectsClass(w.commit({ expected: "sha256:nope" }), "InvalidArgument", /^expected /);
      await rejectsClass(w.commit({ expected: sha512 }), "InvalidArgument", /unsupported digest algorithm/);
      await w.close();
      await assertNoBlobs(fx);
      assert.deepEqual((await store.listStatuses()).map((s) => s.ref), ["commit-bad"]);
    }));

    test("refs never become paths: nothing is written outside the root", withStore(async (fx) => {
      const { store, root } = fx;
      const parent = path.dirname(root);
      const before = await tree(parent, root);
      const refs = ["../../x", "../x", "..", ".", "/etc/passwd", "a/../../../b", "with spaces ", "tar-blobs/sha256/" + "c".repeat(64), "\u00e9\n\t"];
      for (const [i, ref] of refs.entries()) {
        const w = await store.writer({ ref });
        await w.write(0, Buffer.from(`data ${i}`));
        if (i % 3 === 0) await w.commit();
        else await w.close();
      }
      await store.abort("../x");
      assert.deepEqual(await tree(parent, root), before);
      const listed = (await store.listStatuses()).map((s) => s.ref);
      assert.deepEqual(listed.sort(), refs.filter((r, i) => i % 3 !== 0 && r !== "../x").sort());
      for (const ref of listed) assert.equal((await store.status(ref)).ref, ref);
    }));

    test("abort drops an ingest, even under a writer", withStore(async ({ store }) => {
      const w1 = await store.writer({ ref: "stalled" });
      await w1.write(0, Buffer.from("partial"));
      await w1.close();
      await store.abort("stalled");
      await rejectsClass(store.status("stalled"), "NotFound");
      await rejectsClass(store.abort("stalled"), "NotFound");
      await rejectsClass(store.abort("never"), "NotFound");
      const w2 = await store.writer({ ref: "stalled" });
      assert.equal(w2.offset, 0);
      await w2.write(0, Buffer.from("again"));
      await store.abort("stalled");
      await rejectsClass(w2.write(5, Buffer.from("more")), "NotFound");
      await w2.close();
      const w3 = await store.writer({ ref: "stalled" });
      assert.equal(w3.offset, 0);
      // unlessWritten: a writer's ingest is left alone; an unheld one goes.
      await w3.write(0, Buffer.from("kept"));
      await store.abort("stalled", { unlessWritten: true });
      assert.equal(await w3.write(4, Buffer.from("!")), 5);
      await w3.close();
      assert.deepEqual((await store.listStatuses()).map((s) => s.ref), ["stalled"]);
      await store.abort("stalled", { unlessWritten: true });
      await rejectsClass(store.status("stalled"), "NotFound");
    }));

    test("listStatuses and status show an active ingest with its offset", withStore(async ({ store }) => {
      const data = Buffer.from("0123456789");
      const t0 = Date.now();
      const w = await store.writer({ ref: "active", expected: sha(data), total: 10 });
      await w.write(0, data.subarray(0, 4));
      const [st, ...rest] = await store.listStatuses();
      assert.equal(rest.length, 0);
      assert.equal(st.ref, "active");
      assert.equal(st.offset, 4);
      assert.equal(st.total, 10);
      assert.equal(st.expected, sha(data));
      assert.ok(st.startedAt.getTime() >= t0 - 1000 && st.startedAt.getTime() <= st.updatedAt.getTime());
      assert.deepEqual(await store.status("active"), st);
      await rejectsClass(store.status("inactive"), "NotFound");
      await w.close();
      assert.equal((await store.status("active")).offset, 4, "a closed ingest is still listed");
    }));

    test("cleanupStale removes idle, unlocked ingests only", withStore(async ({ store }) => {
      const idle = await store.writer({ ref: "idle" });
      await idle.write(0, Buffer.from("old"));
      await idle.close();
      const held = await store.writer({ ref: "held" });
      await held.write(0, Buffer.from("busy"));
      assert.deepEqual(await store.cleanupStale(60_000), []);
      await sleep(80);
      assert.deepEqual(await store.cleanupStale(40), ["idle"]);
      await rejectsClass(store.status("idle"), "NotFound");
      assert.equal((await store.status("held")).offset, 4);
      await held.write(4, Buffer.from("!"));
      assert.deepEqual(await held.commit(), { digest: sha(Buffer.from("busy!")), size: 5 });
      assert.deepEqual(await store.cleanupStale(0), []);
    }));

    test("an ingest remembers the leases it was written under; releaseLease forgets one", withStore(async ({ store }) => {
      const w = await store.writer({ ref: "leased", lease: "l1" });
      await w.write(0, Buffer.from("part"));
      assert.deepEqual((await store.status("leased")).leases, ["l1"]);
      assert.equal((await store.status("leased")).expires, false, "only leased: no expiry");
      await w.close();
      const again = await store.writer({ ref: "leased", lease: "l2" });
      await again.close();
      const plainW = await store.writer({ ref: "leased" });
      await plainW.close();
      assert.deepEqual((await store.status("leased")).leases, ["l1", "l2"], "a writer without a lease keeps the earlier ones");
      assert.equal((await store.status("leased")).expires, true, "and gives the ingest an expiry");
      await store.releaseLease("leased", "l1");
      await store.releaseLease("leased", "never");
      assert.deepEqual((await store.status("leased")).leases, ["l2"]);
      const none = await store.writer({ ref: "unleased" });
      await none.close();
      assert.deepEqual((await store.status("unleased")).leases, []);
      assert.equal((await store.status("unleased")).expires, true);
      await rejectsClass(store.releaseLease("absent", "l1"), "NotFound");
    }));

    test("cleanup removes the unlocked ingests the predicate picks, seeing their leases and idle time", withStore(async ({ store }) => {
      for (const [ref, lease] of [["a", "keep"], ["b", "gone"], ["c", undefined]] as const) {
        const w = await store.writer({ ref, lease });
        await w.write(0, Buffer.from(ref));
        await w.close();
      }
      const held = await store.writer({ ref: "held", lease: "gone" });
      await held.write(0, Buffer.from("busy"));
      await sleep(30);
      const seen: Array<[string | undefined, readonly string[], boolean]> = [];
      const removed = await store.cleanup((c) => {
        assert.ok(c.idleMs >= 25, `idle ${c.idleMs} ms`);
        seen.push([c.ref, c.leases, c.expires]);
        return c.expires || c.leases.includes("gone");
      }, 60_000);
      assert.deepEqual(removed.sort(), ["b", "c"]);
      assert.deepEqual(seen.sort(), [["a", ["keep"], false], ["b", ["gone"], false], ["c", [], true]], "a locked ingest is not offered");
      assert.deepEqual((await store.listStatuses()).map((s) => s.ref), ["a", "held"]);
      await held.close();
    }));

    test("delete, then stat is undefined and reads are NotFound", withStore(async ({ store }) => {
      const data = Buffer.from("to delete");
      const { digest } = await put(store, "del", data);
      assert.deepEqual(plain(await store.stat(digest)), { digest, size: data.length });
      await store.delete(digest);
      assert.equal(await store.stat(digest), undefined);
      await rejectsClass(store.delete(digest), "NotFound");
      await rejectsClass(store.readerAt(digest), "NotFound", /content digest sha256:/);
      assert.deepEqual(await walked(store), []);
    }));

    test("walk lists committed blobs, not ingests", withStore(async ({ store }) => {
      const blobs = [Buffer.from("one"), Buffer.from("two"), randomBytes(5000)];
      for (const [i, b] of blobs.entries()) await put(store, `walk-${i}`, b);
      const partial = await store.writer({ ref: "walk-partial" });
      await partial.write(0, Buffer.from("not yet"));
      const want = blobs.map((b) => ({ digest: sha(b), size: b.length })).sort((a, b) => (a.digest < b.digest ? -1 : 1));
      assert.deepEqual(await walked(store), want);
      await partial.close();
    }));
  });
}
