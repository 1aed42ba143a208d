// The API socket's group (containerd's `[grpc] gid`): its members reach ckd without being root,
// others do not. The real ctr, run as `nobody` with and without the group (setpriv).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { TestDaemon, runCommand, runNode, CK, CKD } from "../helpers/daemon.js";
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
    // ck says why, not "is it running?".
    const ck = await runCommand("setpriv", ["--reuid=nobody", "--regid=nogroup", "--groups=65534", process.execPath, CK, "--address", sock, "version"]);
    assert.equal(ck.code, 1, ck.stdout + ck.stderr);
    assert.match(ck.stderr, /^ck: cannot reach ckd: connect EACCES .*: permission denied: ckd's socket \(mode 0660\) is for root and the members of its --socket-group\n/);
    assert.doesNotMatch(ck.stderr, /is it running/);

  } finally {
    await d.cleanup();
    await rm(sockDir, { recursive: true, force: true });
    await nats.cleanup();
  }
});

test("a socket group that does not exist, or is not a group id, is refused before anything is written", async () => {
  const nats = await startTestNats();
  try {
    const dir = await mkdtemp(join(tmpdir(), "ck-test-cfg-"));
    const cases: [string[], RegExp][] = [
      [["--socket-group", "no-such-group-ck"], /--socket-group \(socket_group\) "no-such-group-ck": no such group in \/etc\/group/],
      [["--socket-group", "4294967295"], /--socket-group \(socket_group\) "4294967295": not a group id/],
    ];
    for (const [value, message] of [["-1", /socket_group must be a group name or number, got -1/], ["1.5", /got 1\.5/], ["true", /got true/]] as const) {
      const cfg = join(dir, `bad-${cases.length}.toml`);
      await writeFile(cfg, `socket_group = ${value}\n`);
      cases.push([["--config", cfg], message]);
    }
    try {
      for (const [args, message] of cases) {
        const root = await mkdtemp(join(tmpdir(), "ck-test-root-"));
        try {
          const r = await runNode(CKD, ["--root", root, "--address", join(root, "ck.sock"), "--nats", nats.url, ...args]);
          assert.equal(r.code, 1, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
          assert.match(r.stderr, message, args.join(" "));
          assert.deepEqual(readdirSync(root), [], `${args.join(" ")} wrote into the root`);
        } finally {
          await rm(root, { recursive: true, force: true });
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  } finally {
    await nats.cleanup();
  }
});
