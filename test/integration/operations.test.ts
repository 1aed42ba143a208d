// Running ckd as an operator does (docs/operations.md): the signals an operator or a terminal
// sends, and a second ckd started by mistake on the socket of one already serving.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cp, mkdtemp, rm, writeFile, rename } from "node:fs/promises";
import { existsSync, lstatSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { spawn, type ChildProcess } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestDaemon, runCommand, runNode, CKD, CK_REPLAY } from "../helpers/daemon.js";
import { rootPaths } from "../../src/api/daemon.js";
import { readState } from "../../src/eventstore/nats-server.js";
import { startTestNats } from "../helpers/nats.js";
import { alive } from "../helpers/procs.js";


async function gone(pid: number, ms = 15_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/** ckd's exit (code and signal) once `sig` was sent, bounded. */
function exitAfter(d: TestDaemon, sig: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const p = d.proc!;
  return new Promise((resolve) => {
    const t = setTimeout(() => p.kill("SIGKILL"), 20_000);
    p.once("exit", (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal });
    });
    p.kill(sig);
  });
}

test("SIGHUP (a closed terminal) stops ckd as SIGTERM does: its own nats-server stopped, its socket removed, exit 0", async () => {
  const d = await TestDaemon.start();
  const server = (await readState(rootPaths(d.root).natsStore))!.pid!;
  try {
    assert.ok(alive(server));
    const c = d.client("ops");
    await c.call("namespaces", "Create", { namespace: { name: "ops" } });
    c.close();
    const { code, signal } = await exitAfter(d, "SIGHUP");
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, `ckd ended by ${signal ?? code}; log:\n${d.logText().slice(-2000)}`);
    assert.ok(await gone(server), "ckd's nats-server was left running");
    assert.ok(!existsSync(d.address), "the socket was left behind");
    assert.ok(d.logLines().some((l) => l.msg === "shutting down" && l.signal === "SIGHUP"));
    // And it starts again on the same root with what it had.
    await d.launch();
    const c2 = d.client("ops");
    assert.deepEqual((await c2.call("namespaces", "List", {})).namespaces.map((n: { name: string }) => n.name), ["ops"]);
    c2.close();
  } finally {
    if (alive(server)) process.kill(server, "SIGKILL");
    await d.cleanup();
  }
});

test("SIGUSR1 (containerd's stack dump) is logged and ignored: Node's inspector does not open, ckd serves on", async () => {
  const d = await TestDaemon.start();
  try {
    d.proc!.kill("SIGUSR1");
    const deadline = Date.now() + 10_000;
    while (!d.logLines().some((l) => l.signal === "SIGUSR1") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const line = d.logLines().find((l) => l.signal === "SIGUSR1");
    assert.ok(line, `no log line for SIGUSR1; log:\n${d.logText().slice(-2000)}`);
    assert.match(line.msg, /signal ignored.*inspector stays shut/);
    // Node prints this on stderr as its inspector opens (on 127.0.0.1:9229, no authentication).
    assert.doesNotMatch(d.logText(), /Debugger listening/);
    const c = d.client();
    await c.call("version", "Version", {});
    c.close();
    assert.equal(d.proc!.exitCode, null);
  } finally {
    await d.cleanup();
  }
});

test("a second ckd given the socket a ckd serves on is refused before touching its root; the first keeps its socket and clients", async () => {
  const d = await TestDaemon.start();
  const other = await mkdtemp(join(tmpdir(), "ck-ops-"));
  try {
    const before = lstatSync(d.address).ino;
    const r = await runNode(CKD, ["--root", join(other, "root"), "--address", d.address]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^ckd: --address \(address\) .*: another process serves on this socket \(it accepted a connection; another ckd\?\): stop it first, or give another --address: failed precondition\n$/);
    assert.ok(!existsSync(join(other, "root")), "the second ckd's root was made");
    assert.equal(lstatSync(d.address).ino, before, "the socket was replaced");
    const c = d.client();
    await c.call("version", "Version", {});
    c.close();

    // Anything but a socket at the address is left alone, not removed.
    const file = join(other, "not-a-socket");
    await writeFile(file, "keep me\n");
    const f = await runNode(CKD, ["--root", join(other, "root"), "--address", file]);
    assert.equal(f.code, 1, f.stderr);
    assert.match(f.stderr, /--address \(address\) .*not-a-socket: a file is there, not a socket/);
    assert.equal(readFileSync(file, "utf8"), "keep me\n");
    assert.ok(!existsSync(join(other, "root")), "the second ckd's root was made");
  } finally {
    await d.cleanup();
    await rm(other, { recursive: true, force: true });
  }
});

test("a stopping ckd removes its own socket only, not one another process has put at its address since", async () => {
  const d = await TestDaemon.start();
  const listener = createServer();
  try {
    // The socket taken over by someone else: ckd's moved aside, another listening at the path.
    await rename(d.address, d.address + ".old");
    await new Promise<void>((resolve) => listener.listen(d.address, resolve));
    assert.equal(await d.stop(), 0);
    assert.ok(lstatSync(d.address).isSocket(), "ckd removed a socket that was not its own");
  } finally {
    await new Promise((r) => listener.close(r));
    await d.cleanup();
  }
});

test("a restarted ckd says it stopped the nats-server the kill -9'ed one left running", async () => {
  const d = await TestDaemon.start();
  try {
    const orphan = (await readState(rootPaths(d.root).natsStore))!.pid!;
    await d.kill9();
    assert.ok(alive(orphan));
    await d.launch();
    assert.ok(await gone(orphan, 5_000));
    const line = d.logLines().find((l) => /left running/.test(l.msg ?? ""));
    assert.ok(line, `no word of the orphan; log:\n${d.logText().slice(-2000)}`);
    assert.deepEqual(line.pids, [orphan]);
    assert.equal(line.level, 40);
  } finally {
    await d.cleanup();
  }
});

test("a second ckd on a root another ckd runs on is refused, naming the other one's program, and changes nothing", async () => {
  const d = await TestDaemon.start();
  try {
    const state = readFileSync(join(rootPaths(d.root).natsStore, "nats-server.json"), "utf8");
    const r = await runNode(CKD, ["--root", d.root, "--address", d.address + "2"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`is managed by live process ${d.pid} \\(ckd\\.js\\): another ckd, or a ck-replay, runs on this root; stop it first`));
    assert.equal(readFileSync(join(rootPaths(d.root).natsStore, "nats-server.json"), "utf8"), state);
    assert.ok(!existsSync(d.address + "2"));
    const c = d.client();
    await c.call("version", "Version", {});
    c.close();
  } finally {
    await d.cleanup();
  }
});

test("backup and restore as docs/operations.md says: <root>/nats of a stopped ckd, copied into an empty root, starts with every record (the base and the log after it); ck-replay verify passes", async () => {
  const d = await TestDaemon.start();
  const other = await mkdtemp(join(tmpdir(), "ck-ops-restore-"));
  let restored: TestDaemon | undefined;
  try {
    const c = d.client("ops");
    await c.call("namespaces", "Create", { namespace: { name: "ops" } });
    for (let i = 0; i < 3; i++) await c.call("leases", "Create", { id: `before-${i}` });
    const cut = await runNode(CK_REPLAY, ["compact", "--root", d.root, "--keep", "0"]);
    assert.equal(cut.code, 0, cut.stderr);
    await c.call("leases", "Create", { id: "after" });
    c.close();
    assert.equal(await d.stop(), 0);
    await cp(rootPaths(d.root).natsStore, rootPaths(join(other, "root")).natsStore, { recursive: true });
    restored = await TestDaemon.start({ root: join(other, "root") });
    assert.ok(restored.logLines().some((l) => /loading the projection from a base/.test(l.msg ?? "")));
    const r = restored.client("ops");
    assert.deepEqual((await r.call("leases", "List", {})).leases.map((l: { id: string }) => l.id).sort(), ["after", "before-0", "before-1", "before-2"]);
    r.close();
    assert.equal(await restored.stop(), 0);
    const v = await runNode(CK_REPLAY, ["verify", "--root", join(other, "root")]);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /verify OK/);
  } finally {
    await restored?.cleanup();
    await d.cleanup();
    await rm(other, { recursive: true, force: true });
  }
});

test("ckd and ck-replay run as programs of their own, as a systemd unit's ExecStart (README: Under systemd) starts them", async () => {
  for (const [program, said] of [[CKD, /^0\.1\.0\n$/], [CK_REPLAY, /^Usage: ck-replay/]] as const) {
    const r = await runCommand(program, [program === CKD ? "--version" : "--help"]);
    assert.equal(r.code, 0, `${program}: ${r.stderr}`);
    assert.match(r.stdout, said);
  }
});

test("ck-replay compact (waiting out a one-replica server's sync): SIGUSR1 leaves Node's inspector shut, SIGHUP stops it as SIGTERM does, status 129", async () => {
  const nats = await startTestNats();
  const d = await TestDaemon.start({ natsUrl: nats.url });
  let p: ChildProcess | undefined;
  try {
    const c = d.client("ops");
    await c.call("namespaces", "Create", { namespace: { name: "ops" } });
    c.close();
    // A new base on a one-replica server: the tool waits --sync-wait (130 s) before it cuts.
    p = spawn(process.execPath, [CK_REPLAY, "compact", "--nats", nats.url], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout!.on("data", (b) => (out += b));
    p.stderr!.on("data", (b) => (out += b));
    const child = p;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + 30_000;
    while (!/waiting 130 s until nats-server has synced the base/.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.match(out, /waiting 130 s/);
    p.kill("SIGUSR1");
    await new Promise((r) => setTimeout(r, 1000));
    assert.doesNotMatch(out, /Debugger listening/);
    assert.equal(p.exitCode, null, "ck-replay ended on SIGUSR1");
    p.kill("SIGHUP");
    const t = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const end = await exited;
    clearTimeout(t);
    assert.deepEqual(end, { code: 129, signal: null }, out);
  } finally {
    if (p && p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    await d.cleanup();
    await nats.cleanup();
  }
});
