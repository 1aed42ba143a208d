// A full disk under ckd's root (a small tmpfs, filled): an ingest that cannot be written fails
// with the system's message and commits nothing; when the projection itself cannot be
// written, ckd stops (exit 70) rather than answer from a projection behind its log; started
// again once there is room, every acknowledged write is there, the ingest completes, and a
// rebuild from the log verifies the projection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { smallDisk } from "../helpers/small-disk.js";
import { TestDaemon, runNode, CK, CK_REPLAY } from "../helpers/daemon.js";
import { startTestNats } from "../helpers/nats.js";
import { CkError } from "../../src/errdefs/errdefs.js";

const root = process.getuid?.() === 0;
const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "d".repeat(64), size: 1 };

test("a full disk: a failed ingest commits nothing; a projection that cannot be written stops ckd; once there is room every acknowledged write is there", { skip: root ? false : "mounting a small tmpfs needs root", timeout: 180_000 }, async (t) => {
  const disk = await smallDisk("ck-full-", 48);
  if (typeof disk === "string") return t.skip(disk);
  const { work, mnt } = disk;
  let nats: Awaited<ReturnType<typeof startTestNats>> | undefined;
  let d: TestDaemon | undefined;
  try {
    // The log lives elsewhere (its own server's store, not full), and so does ckd's output:
    // only ckd's root fills up.
    nats = await startTestNats();
    await mkdir(join(mnt, "root"));
    d = await TestDaemon.start({ natsUrl: nats.url, root: join(mnt, "root"), logFile: join(work, "ckd.log") });
    const ck = (args: string[], input?: string) => runNode(CK, ["--address", d!.address, "-n", "full", ...args], {}, input);
    const c = d.client("full");
    await c.call("images", "Create", { image: { name: "full/before", target } });
    // All but ~1.5 MB taken.
    disk.fill(1_500_000);

    // Ingests of 512 KiB until one cannot be written.
    const blobs = Array.from({ length: 6 }, (_, k) => `${k}`.repeat(512 * 1024));
    let failed = -1;
    for (let k = 0; k < blobs.length; k++) {
      const r = await ck(["content", "ingest", "--expected-size", String(blobs[k]!.length), `full-${k}`], blobs[k]);
      if (r.code !== 0) {
        assert.match(r.stderr, /no space left on device/i, r.stderr);
        failed = k;
        break;
      }
    }
    assert.ok(failed >= 0, "no ingest failed");
    const digest = (s: string) => "sha256:" + createHash("sha256").update(s).digest("hex");
    const listed = (await ck(["content", "ls", "-q"])).stdout.split("\n");
    assert.equal(listed.includes(digest(blobs[failed]!)), false, "the failed blob was committed");

    // Metadata writes until the projection cannot be written: ckd stops.
    const exited = new Promise<number | null>((resolve) => d!.proc!.once("close", (code) => resolve(code)));
    const acked: string[] = [];
    let refused: { name: string; err: unknown } | undefined;
    for (let k = 0; k < 20_000 && !refused; k++) {
      const name = `full/img-${k}-${"x".repeat(200)}`;
      try {
        await c.call("images", "Create", { image: { name, target, labels: { pad: "y".repeat(2000) } } });
        acked.push(name);
      } catch (err) {
        refused = { name, err };
      }
    }
    c.close();
    assert.ok(refused && refused.err instanceof CkError, String(refused?.err));
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r("still running after 60 s"), 60_000))]);
    assert.equal(code, 70, d.logText().slice(-2000));
    // Its last words, once the output has reached the file.
    const deadline = Date.now() + 10_000;
    while (!/"msg":"projection failed; exiting"[^\n]*No space left on device|No space left on device[^\n]*"msg":"projection failed; exiting"/.test(d.logText())) {
      assert.ok(Date.now() < deadline, d.logText().slice(-2000));
      await new Promise((r) => setTimeout(r, 100));
    }

    // Room again: a fresh start has every acknowledged write (and the one whose answer was
    // lost: it was in the log), takes new ones, and the ingest that failed completes under its ref.
    await disk.free();
    await d.launch();
    const c2 = d.client("full");
    const names = new Set((await c2.call("images", "List", {})).images.map((i: any) => i.name));
    for (const n of ["full/before", ...acked, refused.name]) assert.ok(names.has(n), `${n} lost`);
    await c2.call("images", "Create", { image: { name: "full/after", target } });
    c2.close();
    const again = await ck(["content", "ingest", "--expected-size", String(blobs[failed]!.length), `full-${failed}`], blobs[failed]);
    assert.equal(again.code, 0, again.stderr);
    assert.ok((await ck(["content", "ls", "-q"])).stdout.split("\n").includes(digest(blobs[failed]!)));
    assert.equal(await d.stop(), 0);
    const v = await runNode(CK_REPLAY, ["verify", "--root", d.root]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  } finally {
    await d?.stop().catch(() => undefined);
    await nats?.cleanup().catch(() => undefined);
    await disk.cleanup();
  }
});
