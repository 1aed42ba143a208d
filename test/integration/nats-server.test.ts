// The managed nats-server against the real binary: JetStream answers once start() resolves,
// kill -9 and restart on the same port keep the stream, an orphan left by a kill -9'ed owner
// is replaced (and nothing else is ever killed), supervision brings a crashed server back.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import {
  NatsServerProcess,
  reclaimOrphan,
  readState,
  versionOf,
  isNatsServerFor,
  STATE_FILE,
  type NatsServerState,
} from "../../src/eventstore/nats-server.js";
import { startTestNats } from "../helpers/nats.js";
import { alive } from "../helpers/procs.js";

const MODULE = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "src", "eventstore", "nats-server.js");
const STREAM = "TEST";

/** Creates the test stream if needed and publishes `n` messages `prefix-0..n-1`. */
async function publish(url: string, prefix: string, n: number): Promise<void> {
  const nc = await connect({ servers: url, reconnect: false });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: STREAM, subjects: ["test.>"], storage: StorageType.File }).catch(async (err) => {
      // Already there from an earlier call: fine, anything else is not.
      await jsm.streams.info(STREAM).catch(() => {
        throw err;
      });
    });
    const js = jetstream(nc);
    for (let i = 0; i < n; i++) await js.publish(`test.${prefix}`, new TextEncoder().encode(`${prefix}-${i}`));
  } finally {
    await nc.close();
  }
}

/** Every message of the test stream, in order, as text. */
async function readAll(url: string): Promise<string[]> {
  const nc = await connect({ servers: url, reconnect: false });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(STREAM);
    const out: string[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage(STREAM, { seq });
      if (m) out.push(new TextDecoder().decode(m.data));
    }
    return out;
  } finally {
    await nc.close();
  }
}

const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);


async function until(what: string, cond: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test("versionOf parses nats-server --version", async () => {
  assert.match(await versionOf(), /^\d+\.\d+\.\d+/);
});

test("start: JetStream works as soon as start() resolves; stop() ends the process", { timeout: 60_000 }, async () => {
  const t0 = Date.now();
  const nats = await startTestNats();
  const startMs = Date.now() - t0;
  const pid = nats.server.pid;
  try {
    assert.match(nats.url, /^nats:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(nats.url, `nats://127.0.0.1:${nats.server.port}`);
    assert.ok(pid > 0 && alive(pid));
    assert.ok(isNatsServerFor(pid, nats.server.storeDir));
    await publish(nats.url, "a", 10);
    assert.deepEqual(await readAll(nats.url), names("a", 10));

    const state = (await readState(nats.server.storeDir)) as NatsServerState;
    assert.equal(state.pid, pid);
    assert.equal(state.port, nats.server.port);
    assert.equal(state.ownerPid, process.pid);
    assert.equal(state.url, nats.url);
  } finally {
    await nats.cleanup();
  }
  assert.ok(!alive(pid), `nats-server ${pid} still running after stop()`);
  assert.ok(startMs < 10_000, `start took ${startMs} ms`);
});

test("kill9 then restart on the same port keeps the stream's messages", { timeout: 60_000 }, async () => {
  const nats = await startTestNats();
  const pids = [nats.server.pid];
  try {
    await publish(nats.url, "before", 50);
    const port = nats.server.port;
    await nats.server.kill9();
    assert.ok(!alive(pids[0]!));
    assert.equal(nats.server.running, false);
    await nats.server.restart();
    pids.push(nats.server.pid);
    assert.notEqual(pids[1], pids[0]);
    assert.equal(nats.server.port, port);
    assert.equal(nats.server.url, nats.url);
    assert.deepEqual(await readAll(nats.url), names("before", 50));
    await publish(nats.url, "after", 5);
    // restart() of a running server: SIGTERM, then start again.
    await nats.server.restart();
    pids.push(nats.server.pid);
    assert.ok(!alive(pids[1]!));
    assert.deepEqual(await readAll(nats.url), [...names("before", 50), ...names("after", 5)]);
  } finally {
    await nats.cleanup();
  }
  for (const pid of pids) assert.ok(!alive(pid), `nats-server ${pid} left running`);
});

test("adoptOrReplace: the orphan of a kill -9'ed owner is killed and replaced on its port, data intact", { timeout: 90_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-test-"));
  const storeDir = join(dir, "nats");
  // The owner: a separate node process that starts a server on storeDir and prints it.
  const owner = spawn(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `const { NatsServerProcess } = await import(process.env.CK_MODULE);
       const s = await NatsServerProcess.start({ storeDir: process.env.CK_STORE });
       process.stdout.write(JSON.stringify({ pid: s.pid, port: s.port, url: s.url }) + "\\n");
       setInterval(() => {}, 60_000);`,
    ],
    { env: { ...process.env, CK_MODULE: pathToFileURL(MODULE).href, CK_STORE: storeDir }, stdio: ["ignore", "pipe", "inherit"] },
  );
  let orphanPid = 0;
  let replacement: NatsServerProcess | undefined;
  try {
    const started = await new Promise<{ pid: number; port: number; url: string }>((res, rej) => {
      let buf = "";
      const t = setTimeout(() => rej(new Error("owner did not report its server in 30 s")), 30_000);
      owner.stdout!.on("data", (d) => {
        buf += d;
        const nl = buf.indexOf("\n");
        if (nl >= 0) {
          clearTimeout(t);
          res(JSON.parse(buf.slice(0, nl)));
        }
      });
      owner.once("exit", (code) => rej(new Error(`owner exited (${code})`)));
    });
    orphanPid = started.pid;
    await publish(started.url, "orphan", 20);

    const ownerGone = new Promise((r) => owner.once("exit", r));
    owner.kill("SIGKILL");
    await ownerGone;
    // The server outlives its owner: that is the orphan.
    assert.ok(alive(orphanPid), "the server died with its owner; nothing to adopt");
    assert.deepEqual(await readAll(started.url), names("orphan", 20));

    replacement = await NatsServerProcess.adoptOrReplace(storeDir);
    assert.ok(!alive(orphanPid), `orphan ${orphanPid} still running`);
    assert.notEqual(replacement.pid, orphanPid);
    assert.equal(replacement.port, started.port, "the recorded port was free and should have been reused");
    assert.equal(replacement.url, started.url);
    assert.deepEqual(await readAll(replacement.url), names("orphan", 20));
    const state = (await readState(storeDir)) as NatsServerState;
    assert.equal(state.pid, replacement.pid);
    assert.equal(state.ownerPid, process.pid);
  } finally {
    if (owner.exitCode === null && owner.signalCode === null) owner.kill("SIGKILL");
    await replacement?.stop();
    if (orphanPid && alive(orphanPid)) process.kill(orphanPid, "SIGKILL");
    await rm(dir, { recursive: true, force: true });
  }
});

test("reclaimOrphan never kills a recorded pid whose command line is not a nats-server on this store", { timeout: 60_000 }, async () => {
  const nats = await startTestNats();
  const dir = await mkdtemp(join(tmpdir(), "ck-test-"));
  const sleeper = spawn("sleep", ["60"], { stdio: "ignore" });
  try {
    const storeDir = join(dir, "nats");
    await mkdir(storeDir, { recursive: true });
    for (const pid of [sleeper.pid!, nats.server.pid]) {
      // A stale record pointing at a pid that now belongs to something else; its owner is dead.
      const stale: NatsServerState = {
        storeDir,
        host: "127.0.0.1",
        port: nats.server.port,
        url: nats.url,
        binary: "/usr/sbin/nats-server",
        serverName: "stale",
        pid,
        ownerPid: 999_999_999,
      };
      await writeFile(join(storeDir, STATE_FILE), JSON.stringify(stale));
      const { killed } = await reclaimOrphan(storeDir);
      assert.deepEqual(killed, []);
      assert.ok(alive(pid), `pid ${pid} was killed`);
    }
    // Starting on that store works, and moves off the recorded port that is taken.
    const s = await NatsServerProcess.start({ storeDir });
    try {
      assert.notEqual(s.port, nats.server.port);
      assert.ok(alive(nats.server.pid));
      await publish(s.url, "x", 1);
    } finally {
      await s.stop();
    }
  } finally {
    sleeper.kill("SIGKILL");
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
});

test("a second owner on a live store is refused", { timeout: 60_000 }, async () => {
  const nats = await startTestNats();
  try {
    await assert.rejects(NatsServerProcess.start({ storeDir: nats.server.storeDir }), (err: any) => err.errorClass === "FailedPrecondition");
    assert.ok(nats.server.running);
  } finally {
    await nats.cleanup();
  }
});

test("supervise: a server killed -9 comes back on the same port with its data; stop() ends supervision", { timeout: 60_000 }, async () => {
  const exits: { code: number | null; signal: NodeJS.Signals | null }[] = [];
  let restarts = 0;
  const nats = await startTestNats({
    supervise: true,
    onExit: (code, signal) => exits.push({ code, signal }),
    onRestart: () => restarts++,
  });
  const pids = [nats.server.pid];
  try {
    await publish(nats.url, "s", 10);
    await nats.server.kill9();
    await until("the supervised restart", () => restarts === 1);
    pids.push(nats.server.pid);
    assert.notEqual(pids[1], pids[0]);
    assert.deepEqual(exits, [{ code: null, signal: "SIGKILL" }]);
    assert.deepEqual(await readAll(nats.url), names("s", 10));

    // A second crash: backed off, but back again.
    await nats.server.kill9();
    await until("the second supervised restart", () => restarts === 2);
    pids.push(nats.server.pid);
    await publish(nats.url, "t", 1);

    await nats.server.stop();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(restarts, 2, "restarted after stop()");
    assert.equal(exits.length, 2, "a stop() is not an unexpected exit");
  } finally {
    await nats.cleanup();
  }
  for (const pid of pids) assert.ok(!alive(pid), `nats-server ${pid} left running`);
});

test("a server that dies during start-up fails start() with Unavailable and is not supervised", { timeout: 30_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-test-"));
  let exits = 0;
  try {
    await assert.rejects(
      NatsServerProcess.start({ storeDir: join(dir, "nats"), binary: "/bin/false", supervise: true, onExit: () => exits++ }),
      (err: any) => err.errorClass === "Unavailable" && /exited during start-up/.test(err.message),
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(exits, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
