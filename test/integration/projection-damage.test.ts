// A projection that cannot be trusted is rebuilt, not served: one whose RocksDB tables are
// damaged (found by reading every block once serving, or met by a read while ckd runs), and one
// whose checkpoint is past a message the log no longer has (a log restored from a backup and
// written past it by another writer). Real nats-server, real RocksDB, ckd as a process.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cp, rm } from "node:fs/promises";
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runNode, CK_REPLAY } from "../helpers/daemon.js";
import { rootPaths } from "../../src/api/daemon.js";
import { ProjectionDb } from "../../src/projections/db.js";
import { keys } from "../../src/projections/views.js";
import type { ApiClient } from "../../src/cli/client.js";

/** The damage mark ckd leaves in the projection's directory (DAMAGE_MARK). */
const DAMAGE_MARK = "CK-DAMAGED";

const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "d".repeat(64), size: 10 };

async function createImages(c: ApiClient, names: string[]): Promise<void> {
  for (let i = 0; i < names.length; i += 50) {
    await Promise.all(names.slice(i, i + 50).map((name) => c.call("images", "Create", { image: { name, target, labels: { pad: "p".repeat(200) } } })));
  }
}

async function imageNames(c: ApiClient): Promise<string[]> {
  return ((await c.call("images", "List", {})).images as { name: string }[]).map((i) => i.name).sort();
}

/** RocksDB writes its WAL into a table when it opens a database: what a stopped ckd left is then in tables. */
async function flushToTables(location: string): Promise<void> {
  const db = await ProjectionDb.open(location);
  await db.close();
}

/** Overwrites 64 bytes a third of the way into every table of the projection; returns how many. */
function damageTables(location: string): number {
  const tables = readdirSync(location).filter((f) => f.endsWith(".sst"));
  for (const t of tables) {
    const fd = openSync(join(location, t), "r+");
    try {
      writeSync(fd, Buffer.alloc(64, 0xff), 0, 64, Math.floor(fstatSync(fd).size / 3));
    } finally {
      closeSync(fd);
    }
  }
  return tables.length;
}

/**
 * Launches ckd on a projection damaged while it was stopped. An open reads no data block, so
 * ckd may serve, then meet the damage reading every block through (marked, exit 70: a
 * supervisor would start it again), and is launched once more; damage that stops the open
 * itself is dealt with at that start. Returns the error of the launch that settled it, if any.
 */
async function launchDamaged(d: TestDaemon, meta: string): Promise<unknown> {
  const asideBefore = d.logLines().filter((l) => /is kept aside/.test(l.msg ?? "")).length;
  const err = await d.launch().then(() => undefined, (e: unknown) => e);
  const proc = d.proc!;
  if (err !== undefined && proc.exitCode !== 70) return err; // refused at its start
  if (err === undefined && d.logLines().filter((l) => /is kept aside/.test(l.msg ?? "")).length > asideBefore) return undefined;
  const code = proc.exitCode ?? (await new Promise<number | null>((resolve) => proc.once("exit", (c) => resolve(c))));
  assert.equal(code, 70, "the read-through met the damage");
  assert.match(readFileSync(join(meta, DAMAGE_MARK), "utf8"), /Corruption: /);
  return d.launch().then(() => undefined, (e: unknown) => e);
}

function lastCaughtUp(d: TestDaemon): Record<string, any> {
  const lines = d.logLines().filter((l) => l.msg === "projection caught up");
  assert.ok(lines.length > 0, "ckd logged no catch-up");
  return lines[lines.length - 1]!;
}

test("a damaged projection: found by the read-through once serving, or met by a List while ckd runs (marked, exit 70); either way the next start sets it aside and rebuilds it from the log", async () => {
  const nats = await startTestNats();
  const d = await TestDaemon.start({ natsUrl: nats.url, stream: "DAMAGE_TEST" });
  const meta = rootPaths(d.root).meta;
  try {
    const names = Array.from({ length: 2000 }, (_, i) => `img-${String(i).padStart(4, "0")}`);
    let c = d.client("dmg");
    await createImages(c, names);
    c.close();

    // Stopped: a table damaged where an open does not look (a data block).
    assert.equal(await d.stop(), 0);
    await flushToTables(meta);
    assert.ok(damageTables(meta) > 0, "the projection has tables");
    const opened = await ProjectionDb.open(meta);
    assert.ok(opened.appliedSeq >= 2000, `RocksDB opens it as if nothing were wrong (applied ${opened.appliedSeq})`);
    await opened.close();

    // ckd serves (an open reads no data block), reads every block in the background, meets
    // the damage: marked, exit 70; the next start sets it aside and rebuilds.
    assert.equal(await launchDamaged(d, meta), undefined);
    const first = lastCaughtUp(d);
    assert.equal(first.rebuilt, true, "a damaged projection was resumed");
    const why = d.logLines().find((l) => l.msg === "rebuilding projection from sequence 1");
    assert.match(why?.reason ?? "", /^projection damaged( \(marked by an earlier ckd: .*)?: ?.*Corruption: block checksum mismatch/);
    const aside = d.logLines().find((l) => /the damaged projection is kept aside/.test(l.msg ?? ""));
    assert.equal(aside?.movedTo, `${meta}.damaged`);
    assert.ok(existsSync(join(`${meta}.damaged`, "CURRENT")), "set aside, not removed");
    c = d.client("dmg");
    assert.deepEqual(await imageNames(c), names);
    assert.deepEqual((await c.call("images", "Get", { name: "img-1234" })).image.labels, { pad: "p".repeat(200) });
    c.close();

    // Running: its tables damaged under it. A List reads the damaged block; ckd marks the
    // projection and exits 70 (a supervisor starts it again).
    assert.equal(await d.stop(), 0);
    await flushToTables(meta);
    await d.launch();
    assert.equal(lastCaughtUp(d).rebuilt, false, "an intact projection is resumed");
    const exited = new Promise<number | null>((resolve) => d.proc!.once("exit", (code) => resolve(code)));
    assert.ok(damageTables(meta) > 0);
    c = d.client("dmg");
    await assert.rejects(c.call("images", "List", {}));
    c.close();
    assert.equal(await exited, 70);
    const fatal = d.logLines().find((l) => l.msg === "projection damaged; exiting: the next start sets it aside and rebuilds it");
    assert.match(fatal?.err?.message ?? "", /^Corruption: /);
    assert.match(readFileSync(join(meta, DAMAGE_MARK), "utf8"), /Corruption: /);

    await d.launch();
    assert.equal(lastCaughtUp(d).rebuilt, true);
    const marked = d.logLines().filter((l) => l.msg === "rebuilding projection from sequence 1").at(-1);
    assert.match(marked?.reason ?? "", /^projection damaged \(marked by an earlier ckd: .*Corruption: /);
    assert.ok(existsSync(join(`${meta}.damaged`, DAMAGE_MARK)), "the marked one is the one kept aside");
    assert.ok(!existsSync(join(meta, DAMAGE_MARK)), "the rebuilt projection carries no mark");
    c = d.client("dmg");
    assert.deepEqual(await imageNames(c), names);
    await c.call("images", "Create", { image: { name: "after", target } });
    c.close();

    assert.equal(await d.stop(), 0);
    const r = await runNode(CK_REPLAY, ["verify", "--root", d.root]);
    assert.equal(r.code, 0, r.stdout + r.stderr);

    // The log compacted: a damaged projection is set aside for the base...
    const compacted = await runNode(CK_REPLAY, ["compact", "--root", d.root, "--keep", "0", "--sync-wait", "0"]);
    assert.equal(compacted.code, 0, compacted.stdout + compacted.stderr);
    await flushToTables(meta);
    assert.ok(damageTables(meta) > 0);
    assert.equal(await launchDamaged(d, meta), undefined);
    const loaded = d.logLines().filter((l) => l.msg === "loading the projection from a base: the log's history before it was compacted").at(-1);
    assert.match(loaded?.reason ?? "", /^projection damaged.*Corruption: /);
    assert.ok(existsSync(join(`${meta}.damaged`, "CURRENT")));
    c = d.client("dmg");
    assert.deepEqual(await imageNames(c), [...names, "after"].sort());
    c.close();
    assert.equal(await d.stop(), 0);
    const fromBase = await runNode(CK_REPLAY, ["verify", "--root", d.root]);
    assert.equal(fromBase.code, 0, fromBase.stdout + fromBase.stderr);

    // ...and put back when no base can replace it (the bases gone): ckd refuses to start.
    await flushToTables(meta);
    assert.ok(damageTables(meta) > 0);
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const { connect } = await import("@nats-io/transport-node");
    const nc = await connect({ servers: nats.url });
    await (await jetstreamManager(nc)).streams.delete("DAMAGE_TEST_BASES");
    await nc.close();
    assert.match(String(await launchDamaged(d, meta)), /cannot catch up with the log/);
    assert.ok(existsSync(join(meta, "CURRENT")), "the damaged projection is where it was");
    const reopened = d.logLines().filter((l) => /is kept aside/.test(l.msg ?? "")).at(-1);
    assert.match(reopened?.reason ?? "", /^projection damaged.*Corruption: /);
    await assert.rejects(
      (async () => {
        const left = await ProjectionDb.open(meta);
        try {
          await left.verify();
        } finally {
          await left.close();
        }
      })(),
      (err: Error) => /Corruption: /.test(`${err.message} ${(err.cause as Error | undefined)?.message}`),
    );
  } finally {
    await d.cleanup();
    await nats.cleanup();
  }
});

test("a projection past a message the log no longer has (the log restored from a backup, then written past it by another ckd) is set aside and rebuilt: it serves the log's state, not the lost events", async () => {
  const nats = await startTestNats();
  const store = join(nats.dir, "nats", "jetstream");
  const backup = join(nats.dir, "jetstream-backup");
  const d = await TestDaemon.start({ natsUrl: nats.url, stream: "DIVERGE_TEST" });
  let other: TestDaemon | undefined;
  const meta = rootPaths(d.root).meta;
  try {
    let c = d.client("div");
    await createImages(c, ["a1", "a2", "a3"]);
    c.close();
    assert.equal(await d.stop(), 0);

    // The log's store backed up, the server stopped (a consistent copy).
    await nats.server.stop();
    await cp(store, backup, { recursive: true });
    await nats.server.restart();

    // Written after the backup: these are what the restore loses.
    await d.launch();
    assert.equal(lastCaughtUp(d).rebuilt, false, "an unchanged log: resumed");
    c = d.client("div");
    await createImages(c, ["lost1", "lost2", "lost3"]);
    c.close();
    assert.equal(await d.stop(), 0);

    await nats.server.stop();
    await rm(store, { recursive: true, force: true });
    await cp(backup, store, { recursive: true });
    await nats.server.restart();

    // Another writer appends past the projection's applied sequence before this ckd is back:
    // every check on sequences alone passes (same stream, same creation time, not ahead).
    other = await TestDaemon.start({ natsUrl: nats.url, stream: "DIVERGE_TEST" });
    const oc = other.client("div");
    await createImages(oc, ["b1", "b2", "b3", "b4", "b5"]);
    const logState = await imageNames(oc);
    assert.deepEqual(logState, ["a1", "a2", "a3", "b1", "b2", "b3", "b4", "b5"]);
    oc.close();
    await other.stop();

    await d.launch();
    assert.equal(lastCaughtUp(d).rebuilt, true, "a projection of events the log lost was resumed");
    const why = d.logLines().filter((l) => l.msg === "rebuilding projection from sequence 1").at(-1);
    assert.match(why?.reason ?? "", /^projection is not of this log any more: the log's message at the projection's applied sequence \d+ is msgid:\S+, not msgid:\S+ it applied: the log lost messages the projection holds and was written past them$/);
    c = d.client("div");
    assert.deepEqual(await imageNames(c), logState);
    c.close();
    // What it held is kept aside: the lost images are there for a look.
    const diverged = await ProjectionDb.open(`${meta}.diverged`);
    assert.ok(diverged.getSync(keys.image("div", "lost1")), "the diverged projection holds the lost image");
    await diverged.close();

    // Resumed from then on: the checkpoint's message (appended by the other ckd) is the log's.
    await d.restart();
    assert.equal(lastCaughtUp(d).rebuilt, false);
    assert.equal(await d.stop(), 0);
    const r = await runNode(CK_REPLAY, ["verify", "--root", d.root]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  } finally {
    await other?.cleanup();
    await d.cleanup();
    await nats.cleanup();
  }
});
