// containerd's real ctr (Debian package containerd) against ckd's socket.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runCommand } from "../helpers/daemon.js";
import type { ApiClient } from "../../src/cli/client.js";

const CTR = "/usr/bin/ctr";
const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "f".repeat(64), size: 2048 };

describe("real ctr against ckd", () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let daemon: TestDaemon;
  let api: ApiClient;
  const ctr = (args: string[], ns = "default") => runCommand(CTR, ["--address", daemon.address, "--namespace", ns, ...args], {}, undefined, 30_000);

  before(async () => {
    nats = await startTestNats();
    daemon = await TestDaemon.start({ natsUrl: nats.url });
    api = daemon.client("ctrns");
  });
  after(async () => {
    api?.close();
    await daemon?.cleanup();
    await nats?.cleanup();
  });

  test("namespaces create, ls, label, rm; rm of a non-empty namespace fails", async () => {
    let r = await ctr(["namespaces", "create", "ctrns", "a=1"]);
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["namespaces", "create", "ctrns"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /already exists/);
    r = await ctr(["namespaces", "label", "ctrns", "b=2", "a="]);
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["namespaces", "ls"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NAME\s+LABELS/);
    assert.match(r.stdout, /\nctrns\s+b=2\s*\n/);
    await api.call("images", "Create", { image: { name: "docker.io/library/busybox:latest", target } });
    r = await ctr(["namespaces", "rm", "ctrns"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /must be empty, but it still has images: failed precondition/);
    await api.call("images", "Delete", { name: "docker.io/library/busybox:latest" });
    r = await ctr(["namespaces", "rm", "ctrns"]);
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["namespaces", "ls", "-q"]);
    assert.ok(!r.stdout.split("\n").includes("ctrns"));
  });

  test("images ls, label, rm", async () => {
    const c = daemon.client("ctrimg");
    try {
      await c.call("images", "Create", { image: { name: "docker.io/library/alpine:3", target } });
      let r = await ctr(["images", "ls"], "ctrimg");
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^REF\s+TYPE\s+DIGEST\s+SIZE\s+PLATFORMS\s+LABELS/);
      assert.match(r.stdout, new RegExp(`docker.io/library/alpine:3\\s+${target.media_type.replace(/[.+]/g, "\\$&")}\\s+${target.digest}`));
      r = await ctr(["images", "label", "docker.io/library/alpine:3", "k=v"], "ctrimg");
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await c.call("images", "Get", { name: "docker.io/library/alpine:3" })).image.labels.k, "v");
      r = await ctr(["images", "ls", "-q"], "ctrimg");
      assert.deepEqual(r.stdout.trim().split("\n"), ["docker.io/library/alpine:3"]);
      r = await ctr(["images", "rm", "docker.io/library/alpine:3"], "ctrimg");
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await c.call("images", "List", {})).images.length, 0);
    } finally {
      c.close();
    }
  });

  test("containers ls, info, rm", async () => {
    const c = daemon.client("ctrc");
    try {
      const spec = { ociVersion: "1.0.2", process: { args: ["sh"], cwd: "/" }, root: { path: "rootfs" } };
      await c.call("containers", "Create", {
        container: {
          id: "box",
          image: "docker.io/library/busybox:latest",
          runtime: { name: "io.containerd.runc.v2" },
          spec: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from(JSON.stringify(spec)) },
          labels: { role: "test" },
        },
      });
      let r = await ctr(["containers", "ls"], "ctrc");
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^CONTAINER\s+IMAGE\s+RUNTIME/);
      assert.match(r.stdout, /\nbox\s+docker.io\/library\/busybox:latest\s+io.containerd.runc.v2/);
      r = await ctr(["containers", "info", "box"], "ctrc");
      assert.equal(r.code, 0, r.stderr);
      const info = JSON.parse(r.stdout);
      assert.equal(info.ID, "box");
      assert.deepEqual(info.Labels, { role: "test" });
      assert.deepEqual(info.Spec.process.args, ["sh"]);
      r = await ctr(["containers", "rm", "box"], "ctrc");
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await c.call("containers", "List", {})).containers.length, 0);
    } finally {
      c.close();
    }
  });

  test("ctr events prints a namespace create", async () => {
    const p = spawn(CTR, ["--address", daemon.address, "events"]);
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    try {
      // ctr gives no signal when its subscription is live: create until one is seen.
      const deadline = Date.now() + 20_000;
      let i = 0;
      while (!/\/namespaces\/create/.test(out) && Date.now() < deadline) {
        await ctr(["namespaces", "create", `evns${i++}`]);
        await new Promise((r) => setTimeout(r, 300));
      }
    } finally {
      p.kill("SIGTERM");
    }
    assert.match(out, /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC default \/namespaces\/create \{"name":"evns\d+"\}/);
  });
});
