// The API socket's group (containerd's `[grpc] gid`): its members reach ckd without being root,
// others do not. The real ctr, run as `nobody` with and without the group (setpriv).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { TestDaemon, runCommand, runNode, CKD } from "../helpers/daemon.js";
import { startTestNats } from "../helpers/nats.js";

const isRoot = process.getuid?.() === 0;

test("--socket-group gives the socket to a group: its members may call ckd, others may not", { skip: !isRoot && "needs root (setpriv, chown)" }, async () => {
  const nats = await startTestNats();
  // Outside the test root (mode 0700): ckd makes the socket's directory 0711.
  const sockDir = join(tmpdir(), `ck-sockgrp-${randomBytes(6).toString("hex")}`);
  const sock = join(sockDir, "ck.sock");
  const d = await TestDaemon.start({ natsUrl: nats.url, address: sock, extraArgs: ["--socket-group", "daemon"] });
  try {
    const st = await stat(sock);
    assert.equal(st.gid, 1, "the socket's group is not daemon (gid 1)");
    assert.equal(st.mode & 0o777, 0o660);
    const asNobody = (groups: string) =>
      runCommand("setpriv", ["--reuid=nobody", "--regid=nogroup", `--groups=${groups}`, "ctr", "--address", sock, "version"]);
    const member = await asNobody("1");
    assert.equal(member.code, 0, member.stdout + member.stderr);
    assert.match(member.stdout, /Server:/);
    const stranger = await asNobody("65534");
    assert.notEqual(stranger.code, 0, "a user outside the group reached ckd");
    assert.match(stranger.stderr, /permission denied/i);

    // A group that does not exist: refused before anything is written.
    const root = await mkdtemp(join(tmpdir(), "ck-test-root-"));
    try {
      const r = await runNode(CKD, ["--root", root, "--address", join(root, "ck.sock"), "--nats", nats.url, "--socket-group", "no-such-group-ck"]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /--socket-group \(socket_group\) "no-such-group-ck": no such group in \/etc\/group/);
      assert.deepEqual(readdirSync(root), []);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  } finally {
    await d.cleanup();
    await rm(sockDir, { recursive: true, force: true });
    await nats.cleanup();
  }
});
