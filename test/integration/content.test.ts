// The Content API over ckd: the real ctr's ingest/ls/get/active/label/rm, ck content, shared
// bytes across namespaces, resume of an interrupted write, and bad input writing nothing.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runCommand, runNode, CK } from "../helpers/daemon.js";
import { rejectsClass } from "../helpers/errors.js";
import { writeBlob } from "../../src/cli/content-commands.js";
import { ApiContent } from "../../src/cli/api-content.js";
import { ApiClient } from "../../src/cli/client.js";
import { EventLog } from "../../src/eventstore/log.js";

const CTR = "/usr/bin/ctr";
const sha = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");

function blobFiles(root: string): string[] {
  const dir = join(root, "content", "blobs", "sha256");
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

describe("content over the API", () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let daemon: TestDaemon;
  let log: EventLog;
  const ctr = (args: string[], ns = "default", input?: string | Buffer) =>
    runCommand(CTR, ["--address", daemon.address, "--namespace", ns, ...args], {}, input as string | undefined, 30_000);

  before(async () => {
    nats = await startTestNats();
    daemon = await TestDaemon.start({ natsUrl: nats.url });
    log = await EventLog.open({ url: nats.url });
  });
  after(async () => {
    await log?.close();
    await daemon?.cleanup();
    await nats?.cleanup();
  });

  test("Content.Write of a large blob bypasses the page cache; with content_write_through = false it does not", async () => {
    const data = randomBytes(8 << 20);
    const cachedBytes = async (d: TestDaemon) => {
      const file = join(d.root, "content", "blobs", "sha256", sha(data).slice("sha256:".length));
      const r = await runCommand("fincore", ["--bytes", "--noheadings", "--output", "RES", file]);
      assert.equal(r.code, 0, r.stderr);
      return Number(r.stdout.trim());
    };
    const api = new ApiClient({ address: daemon.address, namespace: "through" });
    try {
      assert.equal(await writeBlob(api, "through-ref", data, { expected: sha(data) }), sha(data));
      const cached = await cachedBytes(daemon);
      assert.ok(cached < 1 << 20, `${cached} bytes of the blob in the page cache`);
    } finally {
      api.close();
    }
    const dir = await mkdtemp(join(tmpdir(), "ck-wt-"));
    await writeFile(join(dir, "ckd.toml"), "content_write_through = false\n");
    const buffered = await TestDaemon.start({ extraArgs: ["--config", join(dir, "ckd.toml")] });
    const api2 = new ApiClient({ address: buffered.address, namespace: "buffered" });
    try {
      assert.equal(await writeBlob(api2, "buffered-ref", data, { expected: sha(data) }), sha(data));
      const cached = await cachedBytes(buffered);
      assert.ok(cached > 7 << 20, `${cached} bytes of the blob in the page cache`);
    } finally {
      api2.close();
      await buffered.cleanup();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("ctr content ingest, ls, get (same bytes), label, rm", async () => {
    const data = "hello from ctr\n".repeat(100);
    const digest = sha(Buffer.from(data));
    let r = await ctr(["content", "ingest", "--expected-digest", digest, "--expected-size", String(data.length), "my-ref"], "ctrc", data);
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["content", "ls"], "ctrc");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^DIGEST\s+SIZE\s+AGE\s+LABELS/);
    assert.ok(r.stdout.includes(digest));
    r = await ctr(["content", "get", digest], "ctrc");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, data);
    r = await ctr(["content", "label", digest, "a=b"], "ctrc");
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["content", "ls"], "ctrc");
    assert.match(r.stdout, /a=b/);
    // Invisible in another namespace until committed there.
    r = await ctr(["content", "get", digest], "other");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not found/);
    r = await ctr(["content", "rm", digest], "ctrc");
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["content", "ls", "-q"], "ctrc");
    assert.equal(r.stdout.trim(), "");
  });

  test("ctr content active shows a slow ingest with its offset", async () => {
    const p = spawn(CTR, ["--address", daemon.address, "--namespace", "slow", "content", "ingest", "slow-ref"]);
    p.stdin.write(Buffer.alloc(100_000, 7));
    try {
      const deadline = Date.now() + 15_000;
      let out = "";
      while (Date.now() < deadline) {
        out = (await ctr(["content", "active"], "slow")).stdout;
        if (/slow-ref/.test(out)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(out, /slow-ref/);
    } finally {
      p.stdin.end();
      await new Promise((r) => p.once("close", r));
    }
  });

  test("a blob committed in one namespace is committed into another without moving a byte", async () => {
    const a = daemon.client("share-a");
    const b = daemon.client("share-b");
    try {
      const data = randomBytes(300_000);
      const digest = sha(data);
      // gc.root: a GC run that an earlier test's delete scheduled must not take these blobs.
      const labels = { "containerd.io/gc.root": "test" };
      assert.equal(await writeBlob(a, "ref-a", data, { expected: digest, labels }), digest);
      const files = blobFiles(daemon.root);
      // STAT answers offset = total at once: the client sends no WRITE at all.
      const w = b.lockstep<object>("content", "Write");
      const st: any = await w.send({ action: 0, ref: "ref-b", total: data.length, expected: digest });
      assert.equal(Number(st.offset), data.length);
      const done: any = await w.send({ action: 2, total: data.length, expected: digest, labels });
      w.end();
      assert.equal(done.digest, digest);
      assert.equal((await b.call("content", "Info", { digest })).info.size, data.length);
      // No file added (a GC may take other, unreferenced blobs meanwhile).
      assert.deepEqual(blobFiles(daemon.root).filter((f) => !files.includes(f)), []);
      // A second commit into the same namespace: AlreadyExists at the first message.
      await rejectsClass(b.lockstep<object>("content", "Write").send({ action: 0, ref: "again", total: data.length, expected: digest }), "AlreadyExists");
      // Without an expected digest (ctr images import): the bytes are written, found on disk
      // at commit, and the blob becomes visible in that namespace too.
      const c = daemon.client("share-c");
      try {
        assert.equal(await writeBlob(c, "ref-c", data, { labels }), digest);
        assert.equal(Number((await c.call("content", "Info", { digest })).info.size), data.length);
        await c.call("content", "Delete", { digest });
      } finally {
        c.close();
      }
      // The bytes stay while any namespace refers to them, and go with the last reference.
      await a.call("content", "Delete", { digest });
      await rejectsClass(a.call("content", "Info", { digest }), "NotFound");
      assert.ok(blobFiles(daemon.root).includes(digest.slice(7)));
      await b.call("content", "Delete", { digest });
      assert.ok(!blobFiles(daemon.root).includes(digest.slice(7)));
    } finally {
      a.close();
      b.close();
    }
  });

  test("a shared blob: a total that does not match is FailedPrecondition (never AlreadyExists); its commit drops what an earlier try left under the ref", async () => {
    const a = daemon.client("share2-a");
    const b = daemon.client("share2-b");
    try {
      const data = randomBytes(200_000);
      const digest = sha(data);
      const labels = { "containerd.io/gc.root": "test" };
      // b holds half an ingest under "r" (an earlier try, its stream gone).
      let w = b.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "r", total: data.length, expected: digest });
      await w.send({ action: 1, offset: 0, data: data.subarray(0, 100_000) });
      w.cancel();
      for (const until = Date.now() + 5000; Date.now() < until; await new Promise((r) => setTimeout(r, 20))) {
        if (Number((await b.call("content", "Status", { ref: "r" })).status.offset) === 100_000) break;
      }
      // a commits the whole blob.
      assert.equal(await writeBlob(a, "ra", data, { expected: digest, labels }), digest);
      // b's STAT with a wrong total: the digest fixes the size, so no write could ever commit.
      await rejectsClass(b.lockstep<object>("content", "Write").send({ action: 0, ref: "x", total: data.length + 1, expected: digest }), "FailedPrecondition", /is 200000 bytes, not the 200001 given as total/);
      // b's shared commit with a wrong total at COMMIT.
      w = b.lockstep<object>("content", "Write");
      assert.equal(Number(((await w.send({ action: 0, ref: "r", total: 0, expected: digest })) as any).offset), data.length);
      await rejectsClass(w.send({ action: 2, total: 5, expected: digest, labels }), "FailedPrecondition", /failed size validation: 200000 != 5/);
      await rejectsClass(b.call("content", "Info", { digest }), "NotFound");
      // And right: committed without a byte; the half ingest under "r" is gone with it.
      w = b.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "r", total: data.length, expected: digest });
      assert.equal(((await w.send({ action: 2, total: data.length, expected: digest, labels })) as any).digest, digest);
      w.end();
      await rejectsClass(b.call("content", "Status", { ref: "r" }), "NotFound");
      // Read from a negative offset reads from 0, as containerd's.
      const parts: Buffer[] = [];
      for await (const m of b.stream<any>("content", "Read", { digest, offset: -5, size: 10 })) parts.push(Buffer.from(m.data));
      assert.deepEqual(Buffer.concat(parts), data.subarray(0, 10));
      await a.call("content", "Delete", { digest });
      await b.call("content", "Delete", { digest });
    } finally {
      a.close();
      b.close();
    }
  });

  test("a new writer of a ref is held to its own expected digest, not one an earlier failed try declared; a resume checks the bytes held", async () => {
    const c = daemon.client("redo");
    try {
      const good = randomBytes(50_000);
      const wrong = randomBytes(50_000);
      // A try that declared the digest of other bytes fails at commit; its ingest stays.
      let w = c.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "redo", total: wrong.length, expected: sha(good) });
      await w.send({ action: 1, offset: 0, data: wrong });
      await rejectsClass(w.send({ action: 2, offset: wrong.length, total: wrong.length, expected: sha(good) }), "FailedPrecondition", /unexpected commit digest/);
      // The next writer declares nothing: it truncates, writes and commits what it sent.
      w = c.lockstep<object>("content", "Write");
      const st: any = await w.send({ action: 0, ref: "redo", total: good.length });
      assert.equal(Number(st.offset), wrong.length, "the failed try's bytes were kept for a resume");
      await w.send({ action: 1, offset: 0, data: good });
      assert.equal(((await w.send({ action: 2, offset: good.length, total: good.length })) as any).digest, sha(good));
      w.end();
      // writeBlob (ck content edit's writer) resumes only on a prefix of its own bytes.
      const other = randomBytes(40_000);
      w = c.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "edit", total: other.length });
      await w.send({ action: 1, offset: 0, data: other.subarray(0, 20_000) });
      w.cancel();
      for (const until = Date.now() + 5000; Date.now() < until; await new Promise((r) => setTimeout(r, 20))) {
        if (Number((await c.call("content", "Status", { ref: "edit" })).status.offset) === 20_000) break;
      }
      const mine = randomBytes(30_000);
      // (The cancelled stream lets go of the ref a moment after its bytes are counted.)
      let written: string | undefined;
      for (const until = Date.now() + 5000; written === undefined; await new Promise((r) => setTimeout(r, 20))) {
        written = await writeBlob(c, "edit", mine, { expected: sha(mine) }).catch((err) => {
          if (err?.errorClass !== "Unavailable" || Date.now() > until) throw err;
          return undefined;
        });
      }
      assert.equal(written, sha(mine));
      for (const d of [sha(good), sha(mine)]) await c.call("content", "Delete", { digest: d });
    } finally {
      c.close();
    }
  });

  test("an interrupted write resumes at the offset reached; truncate by writing at 0 restarts", async () => {
    const c = daemon.client("resume");
    try {
      const data = randomBytes(3 << 20);
      const digest = sha(data);
      let w = c.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "big", total: data.length, expected: digest });
      await w.send({ action: 1, offset: 0, data: data.subarray(0, 1 << 20) });
      w.cancel();
      await new Promise((r) => setTimeout(r, 200));
      const st = await c.call("content", "Status", { ref: "big" });
      assert.equal(Number(st.status.offset), 1 << 20);
      w = c.lockstep<object>("content", "Write");
      const again: any = await w.send({ action: 0, ref: "big", total: data.length, expected: digest });
      assert.equal(Number(again.offset), 1 << 20);
      // Out of order: OutOfRange.
      await rejectsClass(w.send({ action: 1, offset: 5, data: Buffer.from("x") }), "OutOfRange");
      w = c.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "big", total: data.length, expected: digest });
      // Restart from 0 (truncate) and write everything.
      let off = 0;
      while (off < data.length) {
        const r: any = await w.send({ action: 1, offset: off, data: data.subarray(off, off + (1 << 20)) });
        off = Number(r.offset);
      }
      const done: any = await w.send({ action: 2, offset: data.length, total: data.length, expected: digest });
      w.end();
      assert.equal(done.digest, digest);
    } finally {
      c.close();
    }
  });

  test("a COMMIT is a WRITE first, as containerd's: its data is written at its offset, another offset is OutOfRange, offset 0 truncates", async () => {
    const c = daemon.client("commitdata");
    // gc.root: a GC run another test's delete scheduled must not take these unreferenced blobs.
    const labels = { "containerd.io/gc.root": "test" };
    try {
      // Total and expected declared: the last half comes with the COMMIT.
      const data = randomBytes(100_000);
      let w = c.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "a", total: data.length, expected: sha(data) });
      await w.send({ action: 1, offset: 0, data: data.subarray(0, 50_000) });
      let done: any = await w.send({ action: 2, offset: 50_000, data: data.subarray(50_000), total: data.length, expected: sha(data), labels });
      w.end();
      assert.deepEqual([done.digest, Number(done.offset)], [sha(data), data.length]);
      // Nothing declared: what is committed is every byte sent, the COMMIT's included.
      const small = randomBytes(1000);
      w = c.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "b" });
      await w.send({ action: 1, offset: 0, data: small.subarray(0, 500) });
      done = await w.send({ action: 2, offset: 500, data: small.subarray(500), labels });
      w.end();
      assert.deepEqual([done.digest, Number(done.offset)], [sha(small), small.length]);
      // Another offset than the current one: OutOfRange, nothing committed, the ingest kept.
      const held = randomBytes(1000);
      w = c.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "c" });
      await w.send({ action: 1, offset: 0, data: held });
      await rejectsClass(w.send({ action: 2, offset: 77, total: held.length, expected: sha(held) }), "OutOfRange", /write @77 must occur at current offset 1000/);
      await rejectsClass(c.call("content", "Info", { digest: sha(held) }), "NotFound");
      // Offset 0 with bytes held truncates them: the COMMIT's data is the whole blob.
      const fresh = randomBytes(300);
      w = c.lockstep<object>("content", "Write");
      assert.equal(Number(((await w.send({ action: 0, ref: "c" })) as any).offset), held.length);
      done = await w.send({ action: 2, offset: 0, data: fresh, total: fresh.length, expected: sha(fresh), labels });
      w.end();
      assert.equal(done.digest, sha(fresh));
      for (const b of [data, small, fresh]) {
        const got: Buffer[] = [];
        for await (const m of c.stream<any>("content", "Read", { digest: sha(b) })) got.push(Buffer.from(m.data));
        assert.ok(Buffer.concat(got).equals(b));
        await c.call("content", "Delete", { digest: sha(b) });
      }
      await rejectsClass(c.call("content", "Info", { digest: sha(held) }), "NotFound");
    } finally {
      c.close();
    }
  });

  test("a COMMIT with invalid labels writes nothing: no blob file, no event, the ingest kept for a retry", async () => {
    const c = daemon.client("badlabels");
    try {
      for (const size of [1000, 200_000]) {
        const data = randomBytes(size);
        const digest = sha(data);
        const before = blobFiles(daemon.root);
        const seq = await log.lastSeq();
        let w = c.lockstep<object>("content", "Write");
        await w.send({ action: 0, ref: `bad-${size}`, total: size, expected: digest });
        await w.send({ action: 1, offset: 0, data: data.subarray(0, size / 2) });
        // The COMMIT's data is not written either.
        await rejectsClass(
          w.send({ action: 2, offset: size / 2, data: data.subarray(size / 2), total: size, expected: digest, labels: { ["k".repeat(5000)]: "v" } }),
          "InvalidArgument",
          /^info\.Labels: label key and value greater than maximum size \(4096 bytes\), key: kkkkkkkkkk: invalid argument$/,
        );
        assert.deepEqual(blobFiles(daemon.root).filter((f) => !before.includes(f)), [], `size ${size}: a blob file was left`);
        // Nothing of this namespace's (a collection left by an earlier test may append meanwhile).
        const appended: string[] = [];
        const last = await log.lastSeq();
        if (last > seq) {
          const stop = new AbortController();
          for await (const m of await log.reader({ fromSeq: seq + 1, signal: stop.signal })) {
            appended.push(m.subject);
            if (m.seq >= last) break;
          }
          stop.abort();
        }
        assert.deepEqual(appended.filter((subject) => subject.startsWith("containerd.io.badlabels.")), [], "a refused commit appended to the log");
        await rejectsClass(c.call("content", "Info", { digest }), "NotFound");
        let st: any;
        for (const until = Date.now() + 5000; Date.now() < until; await new Promise((r) => setTimeout(r, 20))) {
          st = await c.call("content", "Status", { ref: `bad-${size}` }).catch(() => undefined);
          if (st) break;
        }
        assert.equal(Number(st?.status.offset), size / 2, "the ingest stays, as it was");
        // The retry resumes it and commits.
        let opened: any;
        for (const until = Date.now() + 5000; !opened; await new Promise((r) => setTimeout(r, 20))) {
          w = c.lockstep<object>("content", "Write");
          opened = await w.send({ action: 0, ref: `bad-${size}`, total: size, expected: digest }).catch((err) => {
            if (err?.errorClass !== "Unavailable" || Date.now() > until) throw err;
            return undefined;
          });
        }
        assert.equal(Number(opened.offset), size / 2);
        const done: any = await w.send({ action: 2, offset: size / 2, data: data.subarray(size / 2), total: size, expected: digest, labels: { k: "v" } });
        w.end();
        assert.equal(done.digest, digest);
        assert.deepEqual((await c.call("content", "Info", { digest })).info.labels, { k: "v" });
        await c.call("content", "Delete", { digest });
      }
    } finally {
      c.close();
    }
  });

  test("an ingest reopened with another total starts over (as containerd's store recreates it), without an Abort", async () => {
    const c = daemon.client("retotal");
    try {
      const old = randomBytes(100_000);
      let w = c.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "user-ref", total: old.length });
      await w.send({ action: 1, offset: 0, data: old.subarray(0, 50_000) });
      w.end();
      const data = randomBytes(150_000);
      let st: any;
      for (const until = Date.now() + 5000; !st; await new Promise((r) => setTimeout(r, 20))) {
        w = c.lockstep<object>("content", "Write");
        st = await w.send({ action: 0, ref: "user-ref", total: data.length, expected: sha(data) }).catch((err) => {
          if (err?.errorClass !== "Unavailable" || Date.now() > until) throw err;
          return undefined;
        });
      }
      assert.deepEqual([Number(st.offset), Number(st.total), st.digest], [0, data.length, sha(Buffer.alloc(0))]);
      await w.send({ action: 1, offset: 0, data });
      const done: any = await w.send({ action: 2, offset: data.length, total: data.length, expected: sha(data) });
      w.end();
      assert.equal(done.digest, sha(data));
      await rejectsClass(c.call("content", "Status", { ref: "user-ref" }), "NotFound");
      await c.call("content", "Delete", { digest: sha(data) });
    } finally {
      c.close();
    }
  });

  test("STAT answers the ingest's own start and last write, on a resume too (as Content.Status does), not the stream's", async () => {
    const c = daemon.client("startedat");
    try {
      const data = randomBytes(200_000);
      const nanos = (t: any) => BigInt(t.seconds) * 1_000_000_000n + BigInt(t.nanos);
      let w = c.lockstep<object>("content", "Write");
      const first: any = await w.send({ action: 0, ref: "resume", total: data.length });
      await w.send({ action: 1, offset: 0, data: data.subarray(0, 100_000) });
      w.end();
      await new Promise((r) => setTimeout(r, 1100));
      let again: any;
      for (const until = Date.now() + 5000; !again; await new Promise((r) => setTimeout(r, 20))) {
        w = c.lockstep<object>("content", "Write");
        again = await w.send({ action: 0, ref: "resume", total: data.length }).catch((err) => {
          if (err?.errorClass !== "Unavailable" || Date.now() > until) throw err;
          return undefined;
        });
      }
      const status = (await c.call("content", "Status", { ref: "resume" })).status;
      assert.equal(nanos(again.started_at), nanos(status.started_at));
      assert.equal(nanos(again.started_at), nanos(first.started_at), "the ingest's start, not this stream's");
      assert.equal(nanos(again.updated_at), nanos(status.updated_at), "the last write's time");
      assert.ok(nanos(again.updated_at) >= nanos(again.started_at));
      w.cancel();
      await c.call("content", "Abort", { ref: "resume" }).catch(() => undefined);
    } finally {
      c.close();
    }
  });

  test("ListStatuses filters as containerd's status adaptor: ref only (expected and the rest are absent)", async () => {
    const c = daemon.client("statusfilter");
    try {
      const data = randomBytes(1000);
      const digest = "sha256:" + createHash("sha256").update(data).digest("hex");
      for (const ref of ["sf-a", "sf-b"]) {
        const w = c.lockstep<object>("content", "Write");
        await w.send({ action: 0, ref, total: data.length, expected: digest });
        await w.send({ action: 1, offset: 0, data: data.subarray(0, 10) });
        w.end();
      }
      const refs = async (filters: string[]) => ((await c.call("content", "ListStatuses", { filters })).statuses ?? []).map((s: { ref: string }) => s.ref).sort();
      for (const until = Date.now() + 5000; (await refs([])).length < 2 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await refs(["ref==sf-a"]), ["sf-a"]);
      assert.deepEqual(await refs(["ref~=^sf-"]), ["sf-a", "sf-b"]);
      assert.deepEqual(await refs(["ref.x==sf-b"]), ["sf-b"], "containerd reads the path's first element only");
      assert.deepEqual(await refs([`expected==${digest}`]), [], "not a field containerd filters on");
      assert.deepEqual(await refs(["ref!=sf-a,expected!=x"]), ["sf-b"]);
      for (const ref of ["sf-a", "sf-b"]) await c.call("content", "Abort", { ref }).catch(() => undefined);
    } finally {
      c.close();
    }
  });

  test("a writer killed with WRITEs in flight lets go of its ref: the next writer gets it and resumes", async () => {
    // A child process pipelines WRITEs without reading a reply, then dies by SIGKILL.
    const script = `
      import { ApiClient } from ${JSON.stringify(new URL("../../src/cli/client.js", import.meta.url).href)};
      const c = new ApiClient({ address: process.argv[1], namespace: "killed" });
      const w = c.lockstep("content", "Write");
      await w.send({ action: 0, ref: "dead", total: 64 << 20 });
      const chunk = Buffer.alloc(256 << 10, 7);
      for (let i = 0; i < 128; i++) void w.send({ action: 1, offset: i * chunk.length, data: chunk }).catch(() => {});
      setTimeout(() => process.kill(process.pid, "SIGKILL"), 300);
    `;
    const r = await runCommand(process.execPath, ["--input-type=module", "-e", script, daemon.address], {}, undefined, 30_000);
    assert.equal(r.code, -1, `the writer should have died by SIGKILL: ${r.stderr}`);
    const c = daemon.client("killed");
    try {
      let st: any;
      for (let i = 0; i < 100; i++) {
        const w = c.lockstep<object>("content", "Write");
        try {
          st = await w.send({ action: 0, ref: "dead", total: 64 << 20 });
          w.cancel();
          break;
        } catch (err) {
          w.cancel();
          if (!/locked/.test((err as Error).message)) throw err;
          await new Promise((res) => setTimeout(res, 100));
        }
      }
      assert.ok(st, "the ref was still locked 10 s after its writer died");
      assert.ok(Number(st.offset) > 0 && Number(st.offset) % (256 << 10) === 0, `resumes at ${st.offset}`);
    } finally {
      await c.call("content", "Abort", { ref: "dead" }).catch(() => undefined);
      c.close();
    }
  });

  test("bad input: wrong digest or size, missing ref, unknown algorithm, malformed digest; nothing committed", async () => {
    // A GC run an earlier test's deletes scheduled appends its collections when it runs: let it
    // finish first (ck gc waits for a run that starts after it), so the log's end is this test's.
    const gc = await runNode(CK, ["gc"], { CK_ADDRESS: daemon.address, CONTAINERD_NAMESPACE: "bad" });
    assert.equal(gc.code, 0, gc.stderr);
    const c = daemon.client("bad");
    try {
      const before = blobFiles(daemon.root);
      const seq = await log.lastSeq();
      const data = Buffer.from("some bytes");
      await rejectsClass(writeBlob(c, "r1", data, { expected: sha(Buffer.from("other")) }), "FailedPrecondition", /digest/);
      const w = c.lockstep<object>("content", "Write");
      await w.send({ action: 0, ref: "r2", total: 99 });
      await w.send({ action: 1, offset: 0, data });
      await rejectsClass(w.send({ action: 2, offset: data.length, total: 99 }), "FailedPrecondition", /failed size validation: 10 != 99/);
      await rejectsClass(c.lockstep<object>("content", "Write").send({ action: 0, total: 1 }), "InvalidArgument", /ref/);
      await rejectsClass(c.lockstep<object>("content", "Write").send({ action: 0, ref: "r3", expected: "sha512:" + "a".repeat(128) }), "InvalidArgument", /algorithm/);
      await rejectsClass(c.lockstep<object>("content", "Write").send({ action: 0, ref: "r4", expected: "sha256:zz" }), "InvalidArgument", /digest/);
      await rejectsClass(c.call("content", "Info", { digest: "sha256:12" }), "InvalidArgument");
      await rejectsClass(writeBlob(c, "../../../../etc/evil", Buffer.from("x"), { expected: sha(Buffer.from("y")) }), "FailedPrecondition");
      // No blob file that was not there before (a GC an earlier test's delete scheduled may
      // remove unreferenced ones meanwhile: containerd's semantics, not this test's subject).
      assert.deepEqual(blobFiles(daemon.root).filter((f) => !before.includes(f)), []);
      assert.equal(await log.lastSeq(), seq, "a refused write appended to the log");
      assert.ok(!existsSync("/etc/evil"));
    } finally {
      c.close();
    }
  });

  test("ck content ingest, ls -q | rm, get, label, path", async () => {
    const env = { CK_ADDRESS: daemon.address, CONTAINERD_NAMESPACE: "ckc" };
    const data = "ck content\n";
    const digest = sha(Buffer.from(data));
    // The blob is referenced by nothing: a GC run an earlier test's delete scheduled would take
    // it. Let such a run finish first (ck gc waits for a run that starts after it).
    let r = await runNode(CK, ["gc"], env);
    assert.equal(r.code, 0, r.stderr);
    r = await runNode(CK, ["content", "ingest", "--expected-digest", digest, "ref1"], env, data);
    assert.equal(r.code, 0, r.stderr);
    r = await runNode(CK, ["content", "get", digest], env);
    assert.equal(r.stdout, data);
    r = await runNode(CK, ["content", "label", digest, "x=y"], env);
    assert.equal(r.code, 0, r.stderr);
    r = await runNode(CK, ["content", "ls"], env);
    assert.match(r.stdout, new RegExp(`${digest}\\s+\\S+\\s+.*x=y`));
    // AGE as ctr's go-units HumanDuration: a blob just written is not "0 seconds" old.
    assert.match(r.stdout, new RegExp(`${digest}\\s+\\S+\\s+(Less than a second|1 second|[2-9] seconds)\\s+x=y`));
    r = await runNode(CK, ["content", "path", digest], env);
    assert.equal(r.stdout.trim(), join(daemon.root, "content", "blobs", "sha256", digest.slice(7)));
    r = await runNode(CK, ["content", "ls", "-q"], env);
    r = await runNode(CK, ["content", "rm", ...r.stdout.trim().split("\n")], env);
    assert.equal(r.code, 0, r.stderr);
    r = await runNode(CK, ["content", "ls", "-q"], env);
    assert.equal(r.stdout.trim(), "");
  });

  test("ck content rm, as ctr: tries every digest, prints only what it deleted, exits 1 on a failure; with no digest does nothing and exits 0", async () => {
    const env = { CK_ADDRESS: daemon.address, CONTAINERD_NAMESPACE: "ckrm" };
    let r = await runNode(CK, ["gc"], env);
    assert.equal(r.code, 0, r.stderr);
    const a = sha(Buffer.from("rm a\n"));
    const b = sha(Buffer.from("rm b\n"));
    // Held by a lease (referenced by nothing else): the GC the first delete schedules would
    // otherwise take b before ck content rm reaches it (ctr's ingest lets go of its lease too).
    const api = new ApiClient({ address: daemon.address, namespace: "ckrm" });
    await api.call("leases", "Create", { id: "rm-keep" });
    for (const id of [a, b]) await api.call("leases", "AddResource", { id: "rm-keep", resource: { id, type: "content" } });
    assert.equal((await runNode(CK, ["content", "ingest", "--expected-digest", a, "rma"], env, "rm a\n")).code, 0);
    assert.equal((await runNode(CK, ["content", "ingest", "--expected-digest", b, "rmb"], env, "rm b\n")).code, 0);
    const absent = "sha256:" + "0".repeat(64);
    r = await runNode(CK, ["content", "rm", a, "bogus", absent, b], env);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, `${a}\n${b}\n`);
    assert.match(r.stderr, /could not delete bogus/);
    assert.equal((await runNode(CK, ["content", "ls", "-q"], env)).stdout, "");
    r = await runNode(CK, ["content", "rm"], env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, "", ""]);
    await api.call("leases", "Delete", { id: "rm-keep" });
    api.close();
  });

  test("ck content ingest streams stdin: resumes what the daemon holds, commits another namespace's blob without a byte, and a stream of the wrong length commits nothing", async () => {
    const env = { CK_ADDRESS: daemon.address, CONTAINERD_NAMESPACE: "ckstream" };
    const data = randomBytes(3 << 20);
    const digest = sha(data);
    const ingest = (ns: string, ref: string, input: Buffer, extra: string[] = []) =>
      runNode(CK, ["-n", ns, "content", "ingest", "--expected-digest", digest, ...extra, ref], env, input as unknown as string);
    const active = async (ns: string) => (await runNode(CK, ["-n", ns, "content", "active"], env)).stdout;
    // The blobs committed below are referenced by nothing: let a GC run the previous test's
    // deletes scheduled finish first (as the test before does), or it takes them.
    const gc = await runNode(CK, ["gc"], env);
    assert.equal(gc.code, 0, gc.stderr);

    // Half of it written under the ref, and the writer gone: the ingest waits for a resume.
    const half = 1536 << 10;
    const api = new ApiClient({ address: daemon.address, namespace: "ckstream" });
    try {
      const w = await new ApiContent(api).open("streamed", { expected: digest, total: data.length });
      assert.ok(w !== "exists" && w.offset === 0);
      await w.write(data.subarray(0, half));
      w.close();
    } finally {
      api.close();
    }
    // What the daemon holds is read from stdin and dropped, not sent: garbage there still
    // gives the expected digest.
    const input = Buffer.concat([randomBytes(half), data.subarray(half)]);
    let r = await ingest("ckstream", "streamed", input, ["--expected-size", String(data.length)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match((await runNode(CK, ["-n", "ckstream", "content", "ls"], env)).stdout, new RegExp(`${digest}\\s+3\\.146MB`));
    assert.doesNotMatch(await active("ckstream"), /streamed/);

    // Another namespace: the bytes are on disk, so none is sent; stdin is still read to its end
    // and its length checked.
    r = await ingest("ckstream2", "again", data);
    assert.equal(r.code, 0, r.stderr);
    assert.match((await runNode(CK, ["-n", "ckstream2", "content", "ls", "-q"], env)).stdout, new RegExp(digest));
    r = await ingest("ckstream2", "again", data, ["--expected-size", String(data.length + 1)]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`read ${data.length} bytes from stdin, expected ${data.length + 1}: failed precondition`));

    // Without an expected digest nothing tells whether held bytes are this input's: it starts over.
    const api2 = new ApiClient({ address: daemon.address, namespace: "ckstream3" });
    try {
      const w = await new ApiContent(api2).open("nodigest", {});
      assert.ok(w !== "exists");
      await w.write(randomBytes(half));
      w.close();
    } finally {
      api2.close();
    }
    r = await runNode(CK, ["-n", "ckstream3", "content", "ingest", "nodigest"], env, data as unknown as string);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await runNode(CK, ["-n", "ckstream3", "content", "ls", "-q"], env)).stdout.trim(), digest);

    // Shorter or longer than --expected-size: FailedPrecondition, nothing committed, no ingest left.
    const other = randomBytes(1 << 20);
    for (const size of [other.length + 1, other.length - 1]) {
      r = await runNode(CK, ["-n", "ckshort", "content", "ingest", "--expected-size", String(size), "short"], env, other as unknown as string);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(`read ${other.length} bytes from stdin, expected ${size}`));
      assert.match(r.stderr, /failed precondition/);
      assert.equal((await runNode(CK, ["-n", "ckshort", "content", "ls", "-q"], env)).stdout, "");
      assert.doesNotMatch(await active("ckshort"), /short/);
    }
    // Far longer than --expected-size: ck stops reading and sending once past it.
    const long = randomBytes(16 << 20);
    r = await runNode(CK, ["-n", "ckshort", "content", "ingest", "--expected-size", "10", "short"], env, long as unknown as string);
    assert.notEqual(r.code, 0);
    const m = /read (\d+) bytes from stdin, expected 10: failed precondition/.exec(r.stderr);
    assert.ok(m, r.stderr);
    assert.ok(Number(m[1]) < long.length, `stopped after ${m[1]} of ${long.length} bytes`);
    assert.equal((await runNode(CK, ["-n", "ckshort", "content", "ls", "-q"], env)).stdout, "");
    assert.doesNotMatch(await active("ckshort"), /short/);
    // Shorter than what the daemon holds of the ref (resumed with --expected-digest): nothing
    // committed, the ingest dropped.
    const heldData = randomBytes(3 << 20);
    const heldDigest = sha(heldData);
    const api4 = new ApiClient({ address: daemon.address, namespace: "ckheld" });
    try {
      const w = await new ApiContent(api4).open("held", { expected: heldDigest, total: heldData.length });
      assert.ok(w !== "exists" && w.offset === 0);
      await w.write(heldData.subarray(0, half));
      w.close();
    } finally {
      api4.close();
    }
    for (let i = 0; i < 100 && !/held/.test(await active("ckheld")); i++) await new Promise((res) => setTimeout(res, 20));
    r = await runNode(CK, ["-n", "ckheld", "content", "ingest", "--expected-digest", heldDigest, "held"], env, heldData.subarray(0, 1000) as unknown as string);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`read 1000 bytes from stdin, expected at least ${half} \\(what the daemon held of held\\): failed precondition`));
    assert.equal((await runNode(CK, ["-n", "ckheld", "content", "ls", "-q"], env)).stdout, "");
    assert.doesNotMatch(await active("ckheld"), /held/);
    r = await runNode(CK, ["-n", "ckshort", "content", "ingest", "--expected-size", "12k", "short"], env, "x");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--expected-size "12k" must be a number of bytes: invalid argument/);
    assert.equal((await runNode(CK, ["-n", "ckshort", "content", "ls", "-q"], env)).stdout, "");
    assert.doesNotMatch(await active("ckshort"), /short/);
  });

  test("ck content get through a pipe: a slow reader gets every byte; one that stops early stops ck quietly", async () => {
    const env = { ...process.env, CK_ADDRESS: daemon.address, CONTAINERD_NAMESPACE: "ckpipe" };
    const data = randomBytes(3 << 20).toString("hex"); // 6 MiB, far more than a pipe holds
    const digest = sha(Buffer.from(data));
    const w = await runNode(CK, ["content", "ingest", "--expected-digest", digest, "pipe-ref"], { CK_ADDRESS: daemon.address, CONTAINERD_NAMESPACE: "ckpipe" }, data);
    assert.equal(w.code, 0, w.stderr);
    const get = (onStdout: (p: ReturnType<typeof spawn>) => void) =>
      new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
        const p = spawn(process.execPath, [CK, "content", "get", digest], { env, stdio: ["ignore", "pipe", "pipe"] });
        let stderr = "";
        p.stderr!.on("data", (d) => (stderr += d));
        p.on("error", reject);
        p.on("close", (code) => resolve({ code, stderr }));
        onStdout(p);
      });
    // Slow: nothing is read for a while, so the pipe fills and ck's writes queue up; all must
    // still arrive before ck exits.
    const chunks: Buffer[] = [];
    const slow = await get((p) => {
      p.stdout!.pause();
      setTimeout(() => {
        p.stdout!.on("data", (d: Buffer) => chunks.push(d));
        p.stdout!.resume();
      }, 500);
    });
    assert.equal(slow.code, 0, slow.stderr);
    assert.equal(sha(Buffer.concat(chunks)), digest);
    // Early stop: the reader closes its end after the first chunk.
    const early = await get((p) => p.stdout!.once("data", () => p.stdout!.destroy()));
    assert.equal(early.code, 0, early.stderr);
    assert.equal(early.stderr, "");
  });

  test("ck content edit and ctr content edit store the edited copy under its new digest; a failing editor stores nothing", async () => {
    const env = { CK_ADDRESS: daemon.address, CONTAINERD_NAMESPACE: "edit" };
    const data = "hello world\n";
    const digest = sha(Buffer.from(data));
    let r = await runNode(CK, ["content", "ingest", "--expected-digest", digest, "orig"], env, data);
    assert.equal(r.code, 0, r.stderr);
    r = await runNode(CK, ["content", "edit", "--editor", "sed -i s/world/there/", digest], env);
    assert.equal(r.code, 0, r.stderr);
    const edited = sha(Buffer.from("hello there\n"));
    assert.equal(r.stdout.trim(), edited);
    assert.equal((await runNode(CK, ["content", "get", edited], env)).stdout, "hello there\n");
    assert.equal((await runNode(CK, ["content", "get", digest], env)).stdout, data, "the original is untouched");
    // containerd's own client drives the same Write (ref edit-<digest>, committing the running
    // digest of the last WRITE reply). ctr reads back the temp file through the handle it
    // opened, so the editor must rewrite that file in place (sed -i would replace it).
    const c = await ctr(["content", "edit", "--editor", `f() { printf 'HELLO world\\n' > "$1"; }; f`, digest], "edit");
    assert.equal(c.code, 0, c.stderr);
    assert.equal(c.stdout.trim(), sha(Buffer.from("HELLO world\n")));
    const byCtr = sha(Buffer.from("HELLO world\n"));
    assert.equal((await runNode(CK, ["content", "get", byCtr], env)).stdout, "HELLO world\n");
    const before = (await runNode(CK, ["content", "ls", "-q"], env)).stdout;
    r = await runNode(CK, ["content", "edit", "--editor", "false", digest], env);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /editor exited with 1/);
    assert.equal((await runNode(CK, ["content", "ls", "-q"], env)).stdout, before);
    // An empty $EDITOR is none: vi (here a stand-in on PATH), not the blob run as a program.
    const bin = await mkdtemp(join(tmpdir(), "ck-edit-vi-"));
    try {
      await writeFile(join(bin, "vi"), `#!/bin/sh\nsed -i s/world/vi/ "$1"\n`, { mode: 0o755 });
      r = await runNode(CK, ["content", "edit", digest], { ...env, EDITOR: "", PATH: `${bin}:${process.env.PATH}` });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), sha(Buffer.from("hello vi\n")));
    } finally {
      await rm(bin, { recursive: true, force: true });
    }
  });
});

test("kill -9 of ckd during 200 concurrent ingests: no partial blob visible, committed blobs verify, the rest resume", async () => {
  const { createReadStream } = await import("node:fs");
  const nats = await startTestNats();
  const d = await TestDaemon.start({ natsUrl: nats.url });
  try {
    const blobs = Array.from({ length: 200 }, () => randomBytes(200_000 + Math.floor(Math.random() * 100_000)));
    const digests = blobs.map(sha);
    const c = d.client("crashc");
    const acked: number[] = [];
    let killed = false;
    let next = 0;
    const worker = async () => {
      while (next < blobs.length) {
        const i = next++;
        try {
          await writeBlob(c, `crash-ref-${i}`, blobs[i]!, { expected: digests[i] });
          acked.push(i);
          if (acked.length === 60 && !killed) {
            killed = true;
            void d.kill9();
          }
        } catch {
          // the daemon went away mid-ingest
        }
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    c.close();
    assert.ok(killed && acked.length >= 60 && acked.length < 200, `acked ${acked.length}`);

    // Every file under blobs/ is complete: its name is its content's digest.
    for (const hex of blobFiles(d.root)) {
      const h = createHash("sha256");
      for await (const chunk of createReadStream(join(d.root, "content", "blobs", "sha256", hex))) h.update(chunk as Buffer);
      assert.equal(h.digest("hex"), hex, `partial or corrupt blob ${hex}`);
    }

    await d.launch();
    const c2 = d.client("crashc");
    try {
      for (const i of acked) assert.equal(Number((await c2.call("content", "Info", { digest: digests[i] })).info.size), blobs[i]!.length);
      // Everything else can be ingested again under the same refs (resuming where data was kept).
      for (let i = 0; i < blobs.length; i++) {
        if (acked.includes(i)) continue;
        assert.equal(await writeBlob(c2, `crash-ref-${i}`, blobs[i]!, { expected: digests[i] }), digests[i]);
      }
      const listed = new Set<string>();
      for await (const m of c2.stream("content", "List", {})) for (const inf of m.info) listed.add(inf.digest);
      for (const dg of digests) assert.ok(listed.has(dg), `${dg} missing after resume`);
    } finally {
      c2.close();
    }
  } finally {
    await d.cleanup();
    await nats.cleanup();
  }
});

test("bad input to Events and Content: InvalidArgument or OutOfRange, and nothing appended", async () => {
  const nats = await startTestNats();
  const d = await TestDaemon.start({ natsUrl: nats.url });
  const log = await EventLog.open({ url: nats.url });
  const c = d.client("badev");
  try {
    const data = Buffer.from("0123456789");
    const digest = await writeBlob(c, "r", data, { expected: sha(data) });
    const before = await log.lastSeq();
    const event = { type_url: "containerd.events.NamespaceCreate", value: Buffer.alloc(0) };
    await rejectsClass(c.call("events", "Publish", { topic: "no-slash", event }), "InvalidArgument", /topic/);
    await rejectsClass(c.call("events", "Publish", { topic: "/a/b*", event }), "InvalidArgument", /topic/);
    await rejectsClass(c.call("events", "Publish", { topic: "/a/b" }), "InvalidArgument", /event/);
    const at = { seconds: Math.floor(Date.now() / 1000), nanos: 0 };
    await rejectsClass(c.call("events", "Forward", { envelope: { namespace: "Bad..ns", topic: "/a", event, timestamp: at } }), "InvalidArgument", /namespace/);
    // As containerd's exchange: a forwarded event carries its time (Go's zero time is none).
    await rejectsClass(c.call("events", "Forward", { envelope: { namespace: "badev", topic: "/a", event } }), "InvalidArgument", /timestamp must be set on forwarded event/);
    await rejectsClass(c.call("events", "Forward", { envelope: { namespace: "Bad..ns", topic: "/a", event } }), "InvalidArgument", /namespace/);
    await rejectsClass(c.call("events", "Forward", { envelope: { namespace: "badev", topic: "/a", event, timestamp: { seconds: -62135596800, nanos: 0 } } }), "InvalidArgument", /timestamp must be set/);
    const drain = async (it: AsyncGenerator<unknown>) => {
      for await (const _ of it) return;
    };
    await rejectsClass(drain(c.stream("events", "Subscribe", { filters: ["topic=="] })), "InvalidArgument", /filter|parse/i);
    for (const seq of ["zero", "0", "0x10", "1e3", "7.0", "-1", "99999999999999999"]) {
      await rejectsClass(drain(c.stream("events", "Subscribe", {}, { metadata: { "ck-from-seq": seq } })), "InvalidArgument", /ck-from-seq/);
    }
    await rejectsClass(drain(c.stream("events", "Subscribe", {}, { metadata: { "ck-from-seq": "1", "ck-since": "2026-12-01T10:00:00Z" } })), "InvalidArgument", /exclusive/);
    await rejectsClass(drain(c.stream("events", "Subscribe", {}, { metadata: { "ck-since": "2026-12-01T10:00:00" } })), "InvalidArgument", /ck-since/);
    await rejectsClass(drain(c.stream("events", "Subscribe", {}, { metadata: { "ck-events": "some" } })), "InvalidArgument", /ck-events "some" must be "all"/);
    await rejectsClass(drain(c.stream("content", "Read", { digest, offset: 11 })), "OutOfRange");
    await rejectsClass(c.call("content", "Status", { ref: "" }), "InvalidArgument", /ref/);
    await rejectsClass(c.call("content", "Abort", { ref: "" }), "InvalidArgument", /ref/);
    await rejectsClass(c.call("content", "Update", { info: { digest, labels: {} }, update_mask: { paths: ["size"] } }), "InvalidArgument", /cannot update "size"/);
    await rejectsClass(c.call("content", "Update", { info: { digest, labels: { k: "v".repeat(5000) } }, update_mask: { paths: ["labels.k"] } }), "InvalidArgument", /label/i);
    assert.equal(await log.lastSeq(), before, "a refused call appended to the log");
    // An accepted update answers with the record as stored: its new updated_at included.
    const created = (await c.call("content", "Info", { digest })).info;
    await new Promise((r) => setTimeout(r, 20));
    const updated = (await c.call("content", "Update", { info: { digest, labels: { k: "v" } }, update_mask: { paths: ["labels.k"] } })).info;
    assert.deepEqual((await c.call("content", "Info", { digest })).info, updated);
    assert.ok(Number(updated.updated_at.seconds) * 1e9 + updated.updated_at.nanos > Number(created.updated_at.seconds) * 1e9 + created.updated_at.nanos, "updated_at moved");
  } finally {
    c.close();
    await log.close();
    await d.cleanup();
    await nats.cleanup();
  }
});
