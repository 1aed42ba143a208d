// Running ckd as an operator does (docs/operations.md): the signals an operator or a terminal
// sends.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { TestDaemon } from "../helpers/daemon.js";
import { rootPaths } from "../../src/api/daemon.js";
import { readState } from "../../src/eventstore/nats-server.js";

/** Running and not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

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
