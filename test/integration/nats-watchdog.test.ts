// ckd's own nats-server wedged by a full disk (nats-server 2.9 then neither acknowledges
// appends nor answers JetStream's API, and stays so once space is freed): ckd sees JetStream
// silent while connected and restarts it; writes go on, nothing acknowledged lost.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { TestDaemon } from "../helpers/daemon.js";
import { smallDisk } from "../helpers/small-disk.js";

const root = process.getuid?.() === 0;
const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "e".repeat(64), size: 1 };

test("ckd restarts its own nats-server when JetStream stops answering (its store's disk filled, then freed)", { skip: root ? false : "mounting a small tmpfs needs root", timeout: 240_000 }, async (t) => {
  const disk = await smallDisk("ck-wedge-", 40);
  if (typeof disk === "string") return t.skip(disk);
  const { work, mnt } = disk;
  let d: TestDaemon | undefined;
  try {
    // Only the log's store is on the small disk (ckd's projection and output are not).
    const ckRoot = join(work, "root");
    await mkdir(join(mnt, "nats"));
    await mkdir(ckRoot);
    await symlink(join(mnt, "nats"), join(ckRoot, "nats"));
    const config = join(work, "ckd.toml");
    await writeFile(config, "nats_watchdog_seconds = 1\n");
    d = await TestDaemon.start({ root: ckRoot, logFile: join(work, "ckd.log"), extraArgs: ["--config", config] });
    const c = d.client("wedge");
    await c.call("images", "Create", { image: { name: "wedge/before", target } });
    disk.fill(1_000_000);
    const acked = ["wedge/before"];
    let refused: unknown;
    for (let k = 0; k < 5000 && !refused; k++) {
      const name = `wedge/img-${k}`;
      try {
        await c.call("images", "Create", { image: { name, target, labels: { pad: "z".repeat(3000) } } }, { deadlineMs: 15_000 });
        acked.push(name);
      } catch (err) {
        refused = err;
      }
    }
    assert.ok(refused, "writes went on with the disk full");
    // The watch restarts the server while the disk is still full (the restart may fail: its
    // supervision then keeps trying); only then is space freed.
    const restarting = Date.now() + 60_000;
    while (!d.logLines().some((l) => /does not answer while it runs: restarting it/.test(l.msg))) {
      assert.ok(Date.now() < restarting, `no restart while full\n${d.logText().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    await new Promise((r) => setTimeout(r, 3000));
    await disk.free();
    // Writes are taken again without anyone restarting anything by hand.
    const deadline = Date.now() + 120_000;
    for (;;) {
      try {
        await c.call("images", "Create", { image: { name: "wedge/after", target } }, { deadlineMs: 10_000 });
        break;
      } catch (err) {
        assert.ok(Date.now() < deadline, `still refused: ${(err as Error).message}\n${d.logText().slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    const names = new Set((await c.call("images", "List", {})).images.map((i: any) => i.name));
    for (const n of [...acked, "wedge/after"]) assert.ok(names.has(n), `${n} lost`);
    c.close();
    assert.equal(await d.stop(), 0);
  } finally {
    await d?.stop().catch(() => undefined);
    await d?.cleanup().catch(() => undefined);
    // A nats-server left running (ckd killed mid-restart) would keep the disk busy.
    await disk.cleanup(join("nats", "nats-server.pid"));
  }
});
