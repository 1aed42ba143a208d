// ckd with its own managed nats-server (orphan after kill -9, clean SIGTERM, TOML config),
// and ck-replay against a stopped ckd's root: rebuild, verify (and catching a difference),
// state as of a past sequence or time.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:net";
import { TestDaemon, runNode, CK_REPLAY, CKD } from "../helpers/daemon.js";
import { readRootRecord, rootPaths } from "../../src/api/daemon.js";
import { ProjectionDb, PROJECTION_FORMAT } from "../../src/projections/db.js";
import { keys } from "../../src/projections/views.js";
import { readState } from "../../src/eventstore/nats-server.js";
import { alive } from "../helpers/procs.js";

const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "1".repeat(64), size: 10 };


function procCmdline(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

test("managed nats-server: kill -9 of ckd leaves an orphan that the next start replaces without losing the log; SIGTERM stops both", async () => {
  const root = await mkdtemp(join(tmpdir(), "ck-managed-"));
  const config = join(root, "ckd.toml");
  await writeFile(config, `stream = "MANAGED_TEST"\nlog_level = "info"\n`);
  const d = await TestDaemon.start({ root, extraArgs: ["--config", config] });
  try {
    const rec = await readRootRecord(root);
    assert.ok(rec?.managed);
    assert.equal(rec.stream, "MANAGED_TEST");
    const c = d.client("managed");
    for (let i = 0; i < 20; i++) await c.call("images", "Create", { image: { name: `m${i}`, target } });
    c.close();
    const orphan = (await readState(rootPaths(root).natsStore))!.pid!;
    assert.ok(alive(orphan));

    await d.kill9();
    assert.ok(alive(orphan), "the managed server died with ckd");
    await d.launch();
    assert.ok(!alive(orphan) || (await readState(rootPaths(root).natsStore))!.pid === orphan, "orphan neither replaced nor reused");
    const c2 = d.client("managed");
    assert.equal((await c2.call("images", "List", {})).images.length, 20);
    await c2.call("images", "Create", { image: { name: "m-after", target } });
    c2.close();

    const serverPid = (await readState(rootPaths(root).natsStore))!.pid!;
    assert.equal(await d.stop(), 0);
    assert.ok(!existsSync(d.address), "socket left behind");
    const deadline = Date.now() + 5000;
    while (alive(serverPid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(!alive(serverPid), "managed nats-server still running after SIGTERM");

    // ck-replay finds the log from ckd.json alone, starting the stopped server's store itself.
    const r = await runNode(CK_REPLAY, ["verify", "--root", root]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // Compaction on the stopped root's own server (its password from the store), then a verify
    // that must start from the base, and a ckd that starts on the compacted log.
    const compacted = await runNode(CK_REPLAY, ["compact", "--root", root, "--keep", "0"]);
    assert.equal(compacted.code, 0, compacted.stdout + compacted.stderr);
    assert.match(compacted.stdout, /removed \d+ messages; the log now holds no message/);
    // ckd's own server: the base is synced to disk with the server's file system, no waiting.
    assert.match(compacted.stdout, new RegExp(`^synced the file system of ${rootPaths(root).natsStore} \\(sync --file-system\\)$`, "m"));
    assert.doesNotMatch(compacted.stdout, /waiting/);
    await rm(rootPaths(root).meta, { recursive: true, force: true });
    await d.launch();
    const c3 = d.client("managed");
    assert.equal((await c3.call("images", "List", {})).images.length, 21);
    c3.close();
    assert.equal(await d.stop(), 0);
    const again = await runNode(CK_REPLAY, ["verify", "--root", root]);
    assert.equal(again.code, 0, again.stdout + again.stderr);
  } finally {
    await d.cleanup();
    await rm(root, { recursive: true, force: true });
  }
});

test("SIGTERM while ckd starts (its own nats-server not answering yet): ckd exits 0 at once, and the server it started goes with it", { timeout: 60_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ck-managed-"));
  const { spawn } = await import("node:child_process");
  const ckd = spawn(process.execPath, [CKD, "--root", root, "--address", join(root, "ck.sock"), "--log-level", "info"], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  ckd.stderr!.on("data", (b) => (log += b));
  const exited = new Promise<number | null>((r) => ckd.once("exit", (code) => r(code)));
  let server = 0;
  try {
    // The server is recorded as soon as it is spawned: stopped there, ckd waits for it.
    for (const until = Date.now() + 20_000; !server && Date.now() < until; await new Promise((r) => setTimeout(r, 5))) {
      server = (await readState(rootPaths(root).natsStore).catch(() => undefined))?.pid ?? 0;
    }
    assert.ok(server, "ckd recorded no nats-server");
    process.kill(server, "SIGSTOP");
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(!existsSync(join(root, "ck.sock")), "ckd is serving already");
    ckd.kill("SIGTERM");
    assert.equal(await exited, 0, log);
    assert.match(log, /stopped while starting/);
    // The server was sent SIGTERM on ckd's exit; it takes it once it runs again.
    process.kill(server, "SIGCONT");
    for (const until = Date.now() + 10_000; alive(server) && Date.now() < until; ) await new Promise((r) => setTimeout(r, 50));
    assert.ok(!alive(server), "the nats-server ckd started outlived it");
  } finally {
    if (ckd.exitCode === null && ckd.signalCode === null) ckd.kill("SIGKILL");
    if (server && alive(server)) {
      process.kill(server, "SIGCONT");
      process.kill(server, "SIGKILL");
    }
    await rm(root, { recursive: true, force: true });
  }
});

test("a start that fails part way (its socket taken as it binds) undoes what it started: its own nats-server is stopped, the projection closed for the next start", { timeout: 60_000 }, async () => {
  const root = await mkdtemp(join(tmpdir(), "ck-managed-"));
  const { Daemon } = await import("../../src/api/daemon.js");
  const { pino } = await import("pino");
  const logger = pino({ level: "silent" });
  const address = join(root, "ck.sock");
  // The address is free when the start checks it; once the projection is open (the nats-server
  // started, the log opened), another process listens there: serve, the last step, refuses it.
  const taker = createServer();
  try {
    const starting = Daemon.start({ root: join(root, "r"), address }, logger);
    const failed = assert.rejects(starting, /--address \(address\) .*: another process serves on this socket/);
    const meta = rootPaths(join(root, "r")).meta;
    const deadline = Date.now() + 30_000;
    while (!existsSync(meta) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    await new Promise<void>((r) => taker.listen(address, r));
    await failed;
    await new Promise((r) => taker.close(r));
    // (Its state file forgets the pid when it is stopped: look for a process on its store.)
    const store = rootPaths(join(root, "r")).natsStore;
    assert.ok(existsSync(store), "no nats-server was started");
    const onStore = readdirSync("/proc").filter((pid) => /^\d+$/.test(pid) && alive(Number(pid)) && procCmdline(pid).includes(store));
    assert.deepEqual(onStore, [], "the nats-server of the failed start runs on (in this process, no exit stops it)");
    // Nothing held: a start on the same root goes through.
    const d = await Daemon.start({ root: join(root, "r"), address }, logger);
    await d.stop();
  } finally {
    taker.close();
    await rm(root, { recursive: true, force: true });
  }
});

test("ckd refuses a stream whose duplicate window is shorter than its resends need, naming it and the fix, before touching the root", { timeout: 60_000 }, async () => {
  const { startTestNats } = await import("../helpers/nats.js");
  const { EventLog } = await import("../../src/eventstore/log.js");
  const nats = await startTestNats();
  const root = await mkdtemp(join(tmpdir(), "ck-dupe-"));
  try {
    // Made by someone else, with a 1 s window.
    const made = await EventLog.open({ url: nats.url, stream: "SHORT_DUPE", duplicateWindowMs: 1000 });
    await made.close();
    await writeFile(join(root, "ckd.toml"), `stream = "SHORT_DUPE"\n`);
    const r = await runNode(CKD, ["--root", join(root, "r"), "--address", join(root, "s.sock"), "--nats", nats.url, "--config", join(root, "ckd.toml")]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /stream SHORT_DUPE keeps message ids for deduplication 1 s \(its duplicate_window\); .* at least 30 s \(nats stream edit SHORT_DUPE --dupe-window 2m\)/);
    assert.ok(!existsSync(join(root, "r")), "the root was created");
  } finally {
    await nats.cleanup();
    await rm(root, { recursive: true, force: true });
  }
});

test("ck-replay: rebuild reports events/s, verify catches a tampered projection, show and --until give past states", async () => {
  const { startTestNats } = await import("../helpers/nats.js");
  const nats = await startTestNats();
  const opts = { natsUrl: nats.url, extraArgs: [] as string[] };
  const d = await TestDaemon.start(opts);
  try {
    const c = d.client("hist");
    await c.call("images", "Create", { image: { name: "a", target } });
    await c.call("images", "Create", { image: { name: "b", target } });
    const midTime = new Date();
    await new Promise((r) => setTimeout(r, 50));
    await c.call("images", "Delete", { name: "a" });
    await c.call("images", "Update", { image: { name: "b", labels: { v: "2" } }, update_mask: { paths: ["labels.v"] } });
    c.close();
    assert.equal(await d.stop(), 0);

    let r = await runNode(CK_REPLAY, ["rebuild", "--root", d.root]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^rebuilt 4 events to a temporary directory \(removed; --out DIR keeps one\) in .* \(\d+ events\/s\), applied sequence 4\n$/);
    const kept = join(d.root, "rebuilt-out");
    r = await runNode(CK_REPLAY, ["rebuild", "--root", d.root, "--out", kept]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^rebuilt 4 events to ${kept} in `));
    assert.ok(existsSync(kept), "--out's directory stays");
    await rm(kept, { recursive: true, force: true });

    r = await runNode(CK_REPLAY, ["verify", "--root", d.root]);
    assert.equal(r.code, 0, r.stdout + r.stderr);

    r = await runNode(CK_REPLAY, ["show", "--root", d.root, "--namespace", "hist", "--until", "2"]);
    assert.equal(r.code, 0, r.stderr);
    let state = JSON.parse(r.stdout);
    assert.equal(state.sequence, 2);
    assert.deepEqual(state.namespaces[0].images.map((i: any) => i.name), ["a", "b"]);

    r = await runNode(CK_REPLAY, ["show", "--root", d.root, "--namespace", "hist", "--until", midTime.toISOString()]);
    state = JSON.parse(r.stdout);
    assert.deepEqual(state.namespaces[0].images.map((i: any) => i.name), ["a", "b"]);

    r = await runNode(CK_REPLAY, ["show", "--root", d.root, "--namespace", "hist"]);
    state = JSON.parse(r.stdout);
    assert.equal(state.sequence, 4);
    assert.deepEqual(state.namespaces[0].images.map((i: any) => [i.name, i.labels]), [["b", { v: "2" }]]);

    r = await runNode(CK_REPLAY, ["show", "--root", d.root, "--until", "not-a-time"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--until "not-a-time"/);

    // The log's events with their sequences, ckd stopped.
    r = await runNode(CK_REPLAY, ["events", "--root", d.root]);
    assert.equal(r.code, 0, r.stderr);
    const evs = r.stdout.trim().split("\n");
    assert.deepEqual(evs.map((l) => l.replace(/^(\d+) \S+ \S+ \+0000 UTC /, "$1 ")), [
      '1 hist /images/create {"name":"a"}',
      '2 hist /images/create {"name":"b"}',
      '3 hist /images/delete {"name":"a"}',
      '4 hist /images/update {"name":"b","labels":{"v":"2"}}',
    ]);
    r = await runNode(CK_REPLAY, ["events", "--root", d.root, "--from", "2", "--to", "3"]);
    assert.deepEqual(r.stdout.trim().split("\n").map((l) => l.split(" ")[0]), ["2", "3"]);
    r = await runNode(CK_REPLAY, ["events", "--root", d.root, "--topic", "/images/delete"]);
    assert.deepEqual(r.stdout.trim().split("\n").map((l) => l.split(" ")[0]), ["3"]);
    r = await runNode(CK_REPLAY, ["events", "--root", d.root, "--from", midTime.toISOString()]);
    assert.deepEqual(r.stdout.trim().split("\n").map((l) => l.split(" ")[0]), ["3", "4"]);
    r = await runNode(CK_REPLAY, ["events", "--root", d.root, "--to", "soon"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--to "soon" is neither a sequence number nor an RFC 3339 time/);
    assert.equal(r.stdout, "");
    // Nothing to show: no wait for events that are not there.
    for (const args of [["--namespace", "other"], ["--from", "5"], ["--from", new Date(Date.now() + 60_000).toISOString()]]) {
      r = await runNode(CK_REPLAY, ["events", "--root", d.root, ...args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "", args.join(" "));
    }

    // What changed between two points: a removed, b's labels changed (and its update time).
    r = await runNode(CK_REPLAY, ["diff", "--root", d.root, "--from", "2"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "from sequence 2 to 4: 2 changes\n- image  hist  a\n~ image  hist  b  (labels, updated_at)\n");
    r = await runNode(CK_REPLAY, ["diff", "--root", d.root, "--from", midTime.toISOString(), "--to", "3", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const changes = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(changes.map((x: any) => [x.from, x.to, x.op, x.kind, x.namespace, x.name, x.before?.name, x.after]), [[2, 3, "-", "image", "hist", "a", "a", undefined]]);
    r = await runNode(CK_REPLAY, ["diff", "--root", d.root, "--from", "0", "--namespace", "other"]);
    assert.equal(r.stdout, "from sequence 0 to 4: 0 changes\n");
    r = await runNode(CK_REPLAY, ["diff", "--root", d.root, "--from", "4", "--to", "2"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--from 4 is after --to 2/);
    // A time and a sequence: told once both are folded.
    r = await runNode(CK_REPLAY, ["diff", "--root", d.root, "--from", new Date().toISOString(), "--to", "2"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--from \(sequence 4\) is after --to \(sequence 2\)/);
    r = await runNode(CK_REPLAY, ["diff", "--root", d.root, "--from", "yesterday-ish"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--from "yesterday-ish" is neither a sequence number nor an RFC 3339 time/);
    r = await runNode(CK_REPLAY, ["diff", "--root", d.root]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--from/);

    // Tamper with the live projection: verify must fail and name the key.
    const db = await ProjectionDb.open(rootPaths(d.root).meta);
    const rec: any = await db.get(keys.image("hist", "b"));
    rec.labels.v = "tampered";
    await db.apply([[keys.image("hist", "b"), rec]], db.appliedSeq);
    await db.close();
    r = await runNode(CK_REPLAY, ["verify", "--root", d.root]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /value differs: img\/hist\/b/);

    // A damaged projection is rebuilt from 1 at the next start.
    await rm(join(rootPaths(d.root).meta, "CURRENT"));
    await d.launch();
    const lines = d.logLines().filter((l) => l.msg === "projection caught up");
    assert.equal(lines[lines.length - 1]!.rebuilt, true);
    assert.equal(lines[lines.length - 1]!.catchUpThread, false, "4 events behind: read in ckd's own thread");
    // The rebuilt projection's directory (removed and made again) is root's only as before.
    assert.equal((await stat(rootPaths(d.root).meta)).mode & 0o777, 0o700);
    const c2 = d.client("hist");
    assert.deepEqual((await c2.call("images", "Get", { name: "b" })).image.labels, { v: "2" });
    c2.close();

    // A projection written in an older layout (format 1: lease resources inside the lease
    // record) is rebuilt too, and says why.
    await d.stop();
    const old = await ProjectionDb.open(rootPaths(d.root).meta);
    const id = (await old.logIdentity())!;
    assert.equal(id.format, PROJECTION_FORMAT);
    await old.setLogIdentity({ stream: id.stream, created: id.created, format: 1 });
    await old.close();
    // This time through the catch-up thread: the rebuilt records are the same.
    const config = join(d.root, "catch-up.toml");
    await writeFile(config, "catch_up_thread_events = 1\n");
    opts.extraArgs.push("--config", config);
    await d.launch();
    const again = d.logLines().filter((l) => l.msg === "projection caught up");
    assert.equal(again[again.length - 1]!.rebuilt, true);
    assert.equal(again[again.length - 1]!.catchUpThread, true, "caught up through the worker thread");
    assert.equal(again[again.length - 1]!.applied, 4);
    assert.ok(d.logLines().some((l) => /built in format 1, this ckd writes format 2/.test(l.reason ?? "")), "the log names the format");
    const c3 = d.client("hist");
    assert.deepEqual((await c3.call("images", "Get", { name: "b" })).image.labels, { v: "2" });
    c3.close();
  } finally {
    await d.cleanup();
    await nats.cleanup();
  }
});

test("ckd refuses disabled_plugins naming a plugin it cannot run without, or not a list, before touching the root", async () => {
  const root = await mkdtemp(join(tmpdir(), "ck-badconf-"));
  try {
    const config = join(root, "bad.toml");
    for (const [value, re] of [
      [`["io.containerd.grpc.v1.diff", "io.containerd.metadata.v1.rocksdb"]`, /disabled_plugins: "io\.containerd\.metadata\.v1\.rocksdb" is not a plugin ckd can run without/],
      [`"io.containerd.grpc.v1.diff"`, /disabled_plugins must be a list of plugin names/],
    ] as const) {
      await writeFile(config, `disabled_plugins = ${value}\n`);
      const r = await runNode(CKD, ["--root", join(root, "r"), "--address", join(root, "s.sock"), "--config", config]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, re);
      assert.ok(!existsSync(join(root, "r")), "the root was created despite the bad config");
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("ckd refuses a config file with an unknown key or a bad value, naming it, before touching the root", async () => {
  const root = await mkdtemp(join(tmpdir(), "ck-badconf-"));
  try {
    const config = join(root, "bad.toml");
    await writeFile(config, `stream = "X"\nnats_url = "nats://127.0.0.1:1"\n`);
    const r = await runNode(CKD, ["--root", join(root, "r"), "--address", join(root, "s.sock"), "--config", config]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unknown key "nats_url"/);
    assert.ok(!existsSync(join(root, "r")), "the root was created despite the bad config");
    for (const bad of ["-1", "1.5", '"many"']) {
      await writeFile(config, `catch_up_thread_events = ${bad}\n`);
      const b = await runNode(CKD, ["--root", join(root, "r"), "--address", join(root, "s.sock"), "--config", config]);
      assert.equal(b.code, 1);
      assert.match(b.stderr, /catch_up_thread_events must be a whole number >= 0/);
      assert.ok(!existsSync(join(root, "r")), "the root was created despite the bad config");
    }
    await writeFile(config, `content_write_through = "yes"\n`);
    const c = await runNode(CKD, ["--root", join(root, "r"), "--address", join(root, "s.sock"), "--config", config]);
    assert.equal(c.code, 1);
    assert.match(c.stderr, /content_write_through must be true or false/);
    assert.ok(!existsSync(join(root, "r")), "the root was created despite the bad config");
    // The opt directory and the watch on ckd's own nats-server, by name.
    for (const [line, said] of [
      ["opt_path = 5", /opt_path must be a string/],
      ["nats_watchdog_seconds = -1", /nats_watchdog_seconds must be a whole number >= 0/],
      ["nats_watchdog_seconds = 1.5", /nats_watchdog_seconds must be a whole number >= 0/],
      ["nats_watchdog_seconds = 99999999", /nats_watchdog_seconds must be at most 2147483/],
      ['stale_ingest_hours = "24h"', /stale_ingest_hours must be a number of hours > 0, got "24h"/],
      ["stale_ingest_hours = -1", /stale_ingest_hours must be a number of hours > 0/],
      ['replicas = "three"', /replicas must be a whole number from 1 to 5, got "three"/],
      ["replicas = 7", /replicas must be a whole number from 1 to 5/],
      ["stream = 5", /stream must be a string/],
      // JetStream's rules for a name, checked before a server is started or the root made.
      ['stream = "ck.events"', /^ckd: --stream \(stream\) "ck\.events": stream name \('ck\.events'\) cannot contain '\.'\n$/],
      ['stream = ""', /^ckd: --stream \(stream\) "": stream name required\n$/],
      // A number, as every other number of the file: a string is refused, not read as one.
      ['gc_expiry_interval_seconds = "60"', /gc_expiry_interval_seconds must be a number of seconds >= 0, got "60"/],
      ['log_level = "loud"', /config .*bad\.toml: log_level "loud" must be one of trace, debug, info, warn, error, fatal, silent/],
      // Not TOML at all: which file, then the parser's words on where.
      ["root = ", /^ckd: config .*bad\.toml: Invalid TOML document/],
      ['disabled_plugins = ["io.containerd.internal.v1.optx"]', /disabled_plugins: "io.containerd.internal.v1.optx" is not a plugin ckd can run without \(these can be disabled: .*io.containerd.internal.v1.opt\)/],
    ] as const) {
      await writeFile(config, `${line}\n`);
      const o = await runNode(CKD, ["--root", join(root, "r"), "--address", join(root, "s.sock"), "--config", config]);
      assert.equal(o.code, 1, line);
      assert.match(o.stderr, said, line);
      assert.ok(!existsSync(join(root, "r")), `the root was created despite ${line}`);
    }
    // A root that is a file: by the flag, not mkdir's EEXIST.
    const notDir = join(root, "root-file");
    await writeFile(notDir, "");
    const nd = await runNode(CKD, ["--root", notDir, "--address", join(root, "s.sock")]);
    assert.equal(nd.code, 1);
    assert.equal(nd.stderr, `ckd: --root (root) ${notDir}: not a directory\n`);
    const f = await runNode(CKD, ["--root", join(root, "r"), "--address", join(root, "s.sock"), "--replicas", "three"]);
    assert.equal(f.code, 1);
    assert.match(f.stderr, /--replicas must be a whole number from 1 to 5, got "three"/);
    assert.ok(!existsSync(join(root, "r")), "the root was created despite --replicas three");
    // Flags by their names, in ckd's words rather than pino's ("default level:loud must be included in custom levels").
    for (const [args, said] of [
      [["--log-level", "loud"], /^ckd: --log-level "loud" must be one of trace, debug, info, warn, error, fatal, silent\n$/],
      [["--gc-expiry-interval", "abc"], /^ckd: --gc-expiry-interval \(gc_expiry_interval_seconds\) "abc" must be a number of seconds >= 0\n$/],
      // Replicas need a cluster: ckd's own server is one (nats-server said so only once started).
      [["--replicas", "3"], /^ckd: --replicas \(replicas\) 3: ckd's own nats-server is one server, which keeps one replica; more need a JetStream cluster given with --nats\n$/],
      [["--stream", "ck events"], /^ckd: --stream \(stream\) "ck events": stream name \('ck events'\) cannot contain ' '\n$/],
    ] as const) {
      const l = await runNode(CKD, ["--root", join(root, "r"), "--address", join(root, "s.sock"), ...args]);
      assert.equal(l.code, 1, args.join(" "));
      assert.match(l.stderr, said, args.join(" "));
      assert.ok(!existsSync(join(root, "r")), `the root was created despite ${args.join(" ")}`);
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("a second ckd on a root whose projection another ckd has open refuses to start, leaving that projection alone", async () => {
  const { startTestNats } = await import("../helpers/nats.js");
  const nats = await startTestNats();
  const d = await TestDaemon.start({ natsUrl: nats.url });
  try {
    const c = d.client("twice");
    await c.call("images", "Create", { image: { name: "kept", target } });
    const before = await readRootRecord(d.root);
    const r = await runNode(CKD, ["--root", d.root, "--address", join(d.root, "second.sock"), "--nats", nats.url]);
    assert.equal(r.code, 1);
    assert.deepEqual(await readRootRecord(d.root), before, "ckd.json still names the first ckd");
    assert.match(r.stderr, /projection .*meta.* is in use by another process \(another ckd on this root, or ck-replay on it\): .*LOCK/);
    // The first one still serves what it had.
    assert.equal((await c.call("images", "Get", { name: "kept" })).image.name, "kept");
    c.close();
  } finally {
    await d.cleanup();
    await nats.cleanup();
  }
});

test("a relative --address is taken from ckd's working directory", async () => {
  const { startTestNats } = await import("../helpers/nats.js");
  const { spawn } = await import("node:child_process");
  const nats = await startTestNats();
  const dir = await mkdtemp(join(tmpdir(), "ck-reladdr-"));
  const ckd = spawn(process.execPath, [CKD, "--root", join(dir, "root"), "--address", "rel.sock", "--nats", nats.url], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  ckd.stderr!.on("data", (b) => (log += b));
  const exited = new Promise<number | null>((r) => ckd.once("exit", (code) => r(code)));
  try {
    for (const until = Date.now() + 30_000; !existsSync(join(dir, "rel.sock")) && Date.now() < until; ) await new Promise((r) => setTimeout(r, 50));
    assert.ok(existsSync(join(dir, "rel.sock")), log);
    ckd.kill("SIGTERM");
    assert.equal(await exited, 0, log);
    assert.ok(!existsSync(join(dir, "rel.sock")), "the socket went with ckd");
  } finally {
    if (ckd.exitCode === null && ckd.signalCode === null) ckd.kill("SIGKILL");
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
});

test("ckd's own nats-server takes events as large as containerd's requests: a container with a 3 MiB spec (over NATS's default 1 MiB) is created, read and kept across a restart", async () => {
  const root = await mkdtemp(join(tmpdir(), "ck-bigspec-"));
  const d = await TestDaemon.start({ root });
  try {
    const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.alloc(3 << 20, "x") };
    const c = d.client("big");
    await c.call("containers", "Create", { container: { id: "big", runtime: { name: "io.containerd.runc.v2" }, spec } });
    assert.equal(Buffer.from((await c.call("containers", "Get", { id: "big" })).container.spec.value).length, 3 << 20);
    // Still refused past what gRPC takes: the request itself is over 16 MiB.
    await assert.rejects(c.call("containers", "Create", { container: { id: "huge", runtime: { name: "io.containerd.runc.v2" }, spec: { ...spec, value: Buffer.alloc(17 << 20, "x") } } }));
    c.close();
    await d.restart();
    const again = d.client("big");
    assert.equal(Buffer.from((await again.call("containers", "Get", { id: "big" })).container.spec.value).length, 3 << 20);
    again.close();
  } finally {
    await d.cleanup();
    await rm(root, { recursive: true, force: true });
  }
});
