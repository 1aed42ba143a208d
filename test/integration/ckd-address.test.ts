// ckd given an API socket path it cannot serve on: it exits 1 at once, naming --address and the
// path and saying why, and writes nothing (it once hung for good on a path under /proc, in
// Node's recursive mkdir, and removed whatever file the path named).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, lstatSync, readdirSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { runCommand, CKD, TestDaemon } from "../helpers/daemon.js";
import { startTestNats } from "../helpers/nats.js";

const isRoot = process.getuid?.() === 0;

/** Runs ckd against `natsUrl` with `address` (as `user`, root by default); killed after 20 s. */
async function ckdWith(natsUrl: string, root: string, address: string, user?: string): Promise<{ code: number; stderr: string; ms: number }> {
  const argv = [CKD, "--root", root, "--address", address, "--nats", natsUrl];
  const t0 = Date.now();
  const r = user ? await runCommand("setpriv", [`--reuid=${user}`, "--regid=nogroup", "--clear-groups", process.execPath, ...argv], {}, undefined, 20_000) : await runCommand(process.execPath, argv, {}, undefined, 20_000);
  return { code: r.code, stderr: r.stderr, ms: Date.now() - t0 };
}

const quote = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

test("ckd --address where no socket can be: under /proc, under a file, a file itself, too long: exits 1 within seconds naming --address and the path, and writes nothing; --root under /proc too", { timeout: 120_000 }, async () => {
  const nats = await startTestNats();
  const work = await mkdtemp(join(tmpdir(), "ck-test-address-"));
  try {
    const file = join(work, "a-file");
    await writeFile(file, "kept\n");
    const nope = `/proc/ck-test-${randomBytes(4).toString("hex")}`;
    const long = join(work, "d".repeat(120), "ck.sock");
    const cases: [string, RegExp][] = [
      [join(nope, "ck.sock"), new RegExp(`^ckd: --address \\(address\\) ${quote(nope)}/ck\\.sock: cannot make its directory in /proc: .*\\(ENOENT\\)\\n$`)],
      ["/proc/ck-test.sock", /^ckd: --address \(address\) \/proc\/ck-test\.sock: cannot make the socket in \/proc: .*\(ENOENT\)\n$/],
      [join(file, "sub", "ck.sock"), new RegExp(`^ckd: --address \\(address\\) ${quote(file)}/sub/ck\\.sock: ${quote(file)} is not a directory\\n$`)],
      [file, new RegExp(`^ckd: --address \\(address\\) ${quote(file)}: a file is there, not a socket \\(ckd replaces only a socket\\)\\n$`)],
      [work, new RegExp(`^ckd: --address \\(address\\) ${quote(work)}: a directory is there, not a socket`)],
      [long, new RegExp(`^ckd: --address \\(address\\) ${quote(long)}: ${Buffer.byteLength(long)} bytes long; a unix socket's path holds at most 107\\n$`)],
    ];
    for (const [address, said] of cases) {
      const root = join(work, "root");
      const r = await ckdWith(nats.url, root, address);
      assert.equal(r.code, 1, `${address}: ${r.stderr}`);
      assert.match(r.stderr, said, address);
      assert.ok(r.ms < 10_000, `${address}: ${r.ms} ms`);
      assert.equal(existsSync(root), false, `${address}: the root was made`);
      assert.equal(existsSync(nope), false);
    }
    // --root under /proc hung the same way (its own nats-server's store is made first; with
    // --nats, once the log answered).
    const procRoot = `/proc/ck-test-root-${randomBytes(4).toString("hex")}`;
    for (const nats_ of [[], ["--nats", nats.url]]) {
      const t0 = Date.now();
      const r = await runCommand(process.execPath, [CKD, "--root", procRoot, "--address", join(work, "s.sock"), ...nats_], {}, undefined, 20_000);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^ckd: --root \\(root\\) ${quote(procRoot)}: cannot make the directory ${quote(procRoot)}: .*\\(ENOENT\\)\\n$`));
      assert.ok(Date.now() - t0 < 10_000, `${Date.now() - t0} ms`);
    }
    assert.equal(readFileSync(file, "utf8"), "kept\n", "the file named by --address");
    assert.deepEqual(readdirSync(work).sort(), ["a-file"], "what ckd left in the work directory");
  } finally {
    await rm(work, { recursive: true, force: true });
    await nats.cleanup();
  }
});

test("ckd --address in directories still to be made: checked without leaving any behind when the start fails later (NATS refusing), made when it serves; a socket an earlier ckd left is replaced", { timeout: 120_000 }, async () => {
  const nats = await startTestNats();
  const work = await mkdtemp(join(tmpdir(), "ck-test-address-"));
  let d: TestDaemon | undefined;
  try {
    const address = join(work, "run", "a", "ck.sock");
    const refused = await runCommand(process.execPath, [CKD, "--root", join(work, "root"), "--address", address, "--nats", "nats://127.0.0.1:1"], {}, undefined, 20_000);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /cannot connect to NATS/);
    assert.deepEqual(readdirSync(work), [], "what the failed start left");
    await mkdir(join(work, "root")); // (the test's log of ckd's output goes there)
    d = await TestDaemon.start({ natsUrl: nats.url, root: join(work, "root"), address });
    const c = d.client("default");
    assert.ok((await c.call("version", "Version", {})).version);
    c.close();
    // Killed outright: its socket stays, and the next ckd replaces it.
    d.proc!.kill("SIGKILL");
    await new Promise((r) => d!.proc!.once("exit", r));
    assert.equal(lstatSync(address).isSocket(), true);
    await d.launch();
    const c2 = d.client("default");
    assert.ok((await c2.call("version", "Version", {})).version);
    c2.close();
  } finally {
    await d?.stop();
    await rm(work, { recursive: true, force: true });
    await nats.cleanup();
  }
});

test("ckd --address in a directory it cannot write (a read-only file system; mode 0555 for a user other than root): exits 1 at once naming --address and the directory", { skip: !isRoot && "needs root (mount, setpriv)", timeout: 120_000 }, async () => {
  const nats = await startTestNats();
  const work = await mkdtemp(join(tmpdir(), "ck-test-address-"));
  const ro = join(work, "ro");
  await mkdir(ro);
  let mounted = false;
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro]);
    mounted = true;
    const r = await ckdWith(nats.url, join(work, "root"), join(ro, "sub", "ck.sock"));
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^ckd: --address \\(address\\) ${quote(ro)}/sub/ck\\.sock: cannot make its directory in ${quote(ro)}: a read-only file system \\(EROFS\\)\\n$`));
    assert.ok(r.ms < 10_000, `${r.ms} ms`);

    // A user other than root, in a directory it may not write (its root its own).
    const locked = join(work, "locked");
    await mkdir(locked);
    await chmod(locked, 0o555);
    const root = join(work, "nobody-root");
    await mkdir(root);
    execFileSync("chown", ["nobody", root]);
    await chmod(work, 0o755);
    const n = await ckdWith(nats.url, root, join(locked, "ck.sock"), "nobody");
    assert.equal(n.code, 1, n.stderr);
    assert.match(n.stderr, new RegExp(`^ckd: --address \\(address\\) ${quote(locked)}/ck\\.sock: cannot make the socket in ${quote(locked)}: permission denied \\(EACCES\\)\\n$`));
    assert.deepEqual(readdirSync(root), [], "the root was written");
    assert.deepEqual(readdirSync(locked), []);
  } finally {
    if (mounted) execFileSync("umount", ["-l", ro]);
    await rm(work, { recursive: true, force: true });
    await nats.cleanup();
  }
});
