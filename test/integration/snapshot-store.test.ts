// The SnapshotStore in process, over a real nats-server, RocksDB and snapshotter directories,
// where a test can step in between its steps: a parent removed between the record check and
// the disk work (NotFound as containerd answers it, nothing left behind), or, for ckd's own
// unpack, during the apply, before the rebase of a layer applied ahead or before the commit
// (the same answer, the scratch directory removed), and Cleanup while
// a Prepare's append has an unknown outcome (the server stopped: its directory is kept,
// and the record that lands once the server runs again names a directory that exists).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestNats, type TestNats } from "../helpers/nats.js";
import { rejectsClass } from "../helpers/errors.js";
import { EventLog } from "../../src/eventstore/log.js";
import { ProjectionDb } from "../../src/projections/db.js";
import { Projector } from "../../src/projections/projector.js";
import { Queries } from "../../src/projections/queries.js";
import { Sequencer } from "../../src/commands/sequencer.js";
import { loadProtos } from "../../src/protos/protos.js";
import { SnapshotStore } from "../../src/snapshots/store.js";
import { NativeSnapshotter } from "../../src/snapshots/native.js";
import { OverlaySnapshotter } from "../../src/snapshots/overlay.js";
import type { Snapshotter } from "../../src/snapshots/types.js";
import { CkError } from "../../src/errdefs/errdefs.js";
import { chainIdOf } from "../../src/commands/snapshots.js";

const NS = "store";

interface Harness {
  store: SnapshotStore;
  queries: Queries;
  nats: TestNats;
  /** Runs once, at the start of the snapshotter's next prepare (before any disk work). */
  beforeDisk: { next?: () => Promise<void> };
  /** Runs once, at the start of the snapshotter's next rebase (a layer applied ahead put on its parents). */
  beforeRebase: { next?: () => Promise<void> };
  /** Runs once, at the start of the snapshotter's next commit (sealing a directory before its event). */
  beforeCommit: { next?: () => Promise<void> };
  /** The directory names under a snapshotter's `<root>/snapshots`. */
  dirs(sn: string): Promise<string[]>;
  overlay: boolean;
}

type Hook = { next?: () => Promise<void> };

/** `sn` whose prepare, rebase and commit first run their hook's `next`, if set (once). */
function hooked(sn: Snapshotter, hooks: Partial<Record<"prepare" | "rebase" | "commit", Hook>>): Snapshotter {
  return new Proxy(sn, {
    get(target, prop) {
      const hook = hooks[prop as keyof typeof hooks];
      if (hook) {
        const method = Reflect.get(target, prop, target) as (...args: unknown[]) => Promise<unknown>;
        return async (...args: unknown[]) => {
          const run = hook.next;
          hook.next = undefined;
          await run?.();
          return method.apply(target, args);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

async function withStore(fn: (h: Harness) => Promise<void>, opts: { publishTimeoutMs?: number } = {}): Promise<void> {
  const nats = await startTestNats();
  const dir = await mkdtemp(join(tmpdir(), "ck-store-"));
  const log = await EventLog.open({ url: nats.url, stream: "STORE_TEST", ...(opts.publishTimeoutMs ? { publishTimeoutMs: opts.publishTimeoutMs } : {}) });
  const db = await ProjectionDb.open(join(dir, "meta"));
  const protos = loadProtos();
  const projector = new Projector(db, log, protos);
  projector.start();
  const beforeDisk: Hook = {};
  const beforeRebase: Hook = {};
  const beforeCommit: Hook = {};
  const hooks = { prepare: beforeDisk, rebase: beforeRebase, commit: beforeCommit };
  const native = new NativeSnapshotter(join(dir, "snapshots", "native"));
  const overlayfs = new OverlaySnapshotter(join(dir, "snapshots", "overlayfs"));
  const overlay = (await overlayfs.available()).ok;
  const snapshotters = new Map([
    ["native", { sn: hooked(native, hooks) }],
    ["overlayfs", overlay ? { sn: hooked(overlayfs, hooks) } : { sn: overlayfs, unavailable: "no overlayfs here" }],
  ]);
  const queries = new Queries(db);
  const store = new SnapshotStore(new Sequencer(log, projector, protos), queries, snapshotters);
  const dirs = async (sn: string) => (await readdir(join(dir, "snapshots", sn, "snapshots")).catch(() => [] as string[])).sort();
  try {
    await fn({ store, queries, nats, beforeDisk, beforeRebase, beforeCommit, dirs, overlay });
  } finally {
    await projector.stop();
    await db.close();
    await log.close();
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

const committed = async (store: SnapshotStore, sn: string, name: string) => {
  await store.prepare(NS, sn, { key: `${name}-active`, parent: "", labels: {}, readonly: false });
  await store.commit(NS, sn, { key: `${name}-active`, name, labels: {} });
};

test("a Prepare or View whose parent is removed between the record check and the disk work: NotFound as containerd words it (Aborted when it was committed again meanwhile); no directory, no record left", () =>
  withStore(async ({ store, beforeDisk, dirs, overlay }) => {
    for (const sn of overlay ? ["native", "overlayfs"] : ["native"]) {
      for (const readonly of [false, true]) {
        const what = `${sn} ${readonly ? "View" : "Prepare"}`;
        await committed(store, sn, "P");
        beforeDisk.next = () => store.remove(NS, sn, "P");
        await rejectsClass(store.prepare(NS, sn, { key: "child", parent: "P", labels: {}, readonly }), "NotFound", /^parent snapshot P does not exist: not found$/);
        assert.deepEqual(await store.list(NS, sn, []), [], `${what}: no record`);
        assert.deepEqual(await dirs(sn), [], `${what}: no directory, no temporary one`);
        // Removed and committed again under its name: the child was being made on the old one.
        await committed(store, sn, "P");
        beforeDisk.next = async () => {
          await store.remove(NS, sn, "P");
          await committed(store, sn, "P");
        };
        await rejectsClass(store.prepare(NS, sn, { key: "child", parent: "P", labels: {}, readonly }), "Aborted", /parent snapshot "P" was replaced/);
        const left = await store.list(NS, sn, []);
        assert.deepEqual(left.map((r) => r.key), ["P"], `${what}: only the new P`);
        assert.deepEqual(await dirs(sn), [left[0]!.id], `${what}: only the new P's directory`);
        // On the parent as it now stands, it is made.
        await store.prepare(NS, sn, { key: "child", parent: "P", labels: {}, readonly });
        await store.remove(NS, sn, "child");
        await store.remove(NS, sn, "P");
        assert.deepEqual(await dirs(sn), []);
      }
    }
  }));

test("a layer unpacked ahead of its parent whose parent is removed before the rebase or before the commit, or one applied onto a parent removed during the apply: NotFound as containerd words it (Aborted when committed again meanwhile); no snapshot over a vanished parent, the scratch directory removed; on a parent that stands, applied", () =>
  withStore(async ({ store, beforeRebase, beforeCommit, dirs, overlay }) => {
    const layer = "sha256:" + "a".repeat(64);
    const diffId = "sha256:" + "b".repeat(64);
    const chain = chainIdOf("P", diffId);
    for (const sn of overlay ? ["native", "overlayfs"] : ["native"]) {
      /** An unpack of the layer on P (not there yet: applied ahead), P committed once the layer is in. */
      const unpackOnP = async (arm: () => void) => {
        let applied!: () => void;
        const applying = new Promise<void>((r) => (applied = r));
        const run = store.unpack(NS, sn, { layer, diffId, parent: "P", waitParent: true }, async (target) => {
          assert.ok("dir" in target, `${sn}: applied ahead, into a directory of its own`);
          await writeFile(join(target.dir, "from-layer"), "x");
          applied();
          return { digest: diffId, size: 1, implicitDirs: [], madeForEntries: [], whiteouts: [], opaques: [], skippedDevices: [] };
        });
        await applying;
        await committed(store, sn, "P");
        arm();
        return { run };
      };
      const nothingLeft = async (what: string) => {
        assert.deepEqual(await store.list(NS, sn, []), [], `${sn} ${what}: no record`);
        assert.deepEqual(await dirs(sn), [], `${sn} ${what}: no directory, no scratch one`);
      };

      // Removed right before the rebase: nothing to rebase onto.
      const { run: atRebase } = await unpackOnP(() => (beforeRebase.next = () => store.remove(NS, sn, "P")));
      await rejectsClass(atRebase, "NotFound", /^parent snapshot P does not exist: not found$/);
      await nothingLeft("removed at the rebase");

      // Removed and committed again under its name right before the rebase: another directory.
      const { run: replaced } = await unpackOnP(
        () =>
          (beforeRebase.next = async () => {
            await store.remove(NS, sn, "P");
            await committed(store, sn, "P");
          }),
      );
      await rejectsClass(replaced, "Aborted", /parent snapshot "P" was replaced/);
      const left = await store.list(NS, sn, []);
      assert.deepEqual(left.map((r) => r.key), ["P"], `${sn}: only the new P`);
      assert.deepEqual(await dirs(sn), [left[0]!.id], `${sn}: only the new P's directory`);
      await store.remove(NS, sn, "P");

      // Removed after the rebase, right before the commit: the commit's decision finds no parent.
      const { run: atCommit } = await unpackOnP(() => (beforeCommit.next = () => store.remove(NS, sn, "P")));
      await rejectsClass(atCommit, "NotFound", /^parent snapshot P does not exist: not found$/);
      await nothingLeft("removed at the commit");

      // Applied onto P, there from the start, which is removed meanwhile: the apply trips on
      // its vanished directory, and the answer is the parent's, not the path's.
      await committed(store, sn, "P");
      const onP = store.unpack(NS, sn, { layer, diffId, parent: "P" }, async (target) => {
        assert.ok("mounts" in target, `${sn}: applied onto the parent's directories`);
        await store.remove(NS, sn, "P");
        throw Object.assign(new Error("ENOENT: no such file or directory, lstat 'usr'"), { code: "ENOENT" });
      });
      await rejectsClass(onP, "NotFound", /^parent snapshot P does not exist: not found$/);
      await nothingLeft("removed during the apply");

      // On a parent that stands: applied, recorded on it.
      const { run: done } = await unpackOnP(() => undefined);
      assert.deepEqual(await done, { chainId: chain, status: "applied", verified: false });
      const recs = await store.list(NS, sn, []);
      assert.deepEqual(recs.map((r) => [r.key, r.parent]).sort(), [["P", ""], [chain, "P"]]);
      await store.remove(NS, sn, chain);
      await store.remove(NS, sn, "P");
      assert.deepEqual(await dirs(sn), []);
    }
  }));

test("Cleanup while a Prepare's append has an unknown outcome (the server stopped): Unavailable, the directory kept; the record that lands later names a directory that exists", { timeout: 120_000 }, () =>
  withStore(
    async ({ store, queries, nats, dirs }) => {
      await store.prepare(NS, "native", { key: "before", parent: "", labels: {}, readonly: false });
      const before = await dirs("native");
      const pid = nats.server.pid;
      process.kill(pid, "SIGSTOP");
      try {
        const err = await store.prepare(NS, "native", { key: "late", parent: "", labels: {}, readonly: false }).then(
          () => undefined,
          (e: unknown) => e,
        );
        assert.ok(err instanceof CkError && err.errorClass === "Unavailable", `the Prepare answered ${err}`);
        const made = (await dirs("native")).filter((d) => !before.includes(d));
        assert.equal(made.length, 1, "its directory is kept (its append may be stored)");
        // The projection may lack that append: nothing is removed.
        await rejectsClass(store.cleanup("native"), "Unavailable", /projection may not hold the whole log/);
        assert.deepEqual(await dirs("native"), [...before, ...made].sort());
      } finally {
        process.kill(pid, "SIGCONT");
      }
      // The server takes the append it held: the record arrives.
      let late;
      for (const until = Date.now() + 30_000; !late && Date.now() < until; ) {
        late = queries.snapshotSync(NS, "native", "late");
        if (!late) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(late, "the stopped server stored the append once it ran again");
      for (let i = 0; ; i++) {
        try {
          assert.deepEqual(await store.cleanup("native"), [], "nothing no record names");
          break;
        } catch (err) {
          // The connection coming back from the stop.
          if (!(err instanceof CkError && err.errorClass === "Unavailable") || i > 20) throw err;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      const [m] = await store.mounts(NS, "native", "late");
      assert.ok((await stat(m!.source)).isDirectory(), "the record's directory exists");
    },
    { publishTimeoutMs: 500 },
  ));
