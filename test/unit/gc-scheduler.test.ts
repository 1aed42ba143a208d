// When GC runs: deletion-triggered runs keep to containerd's pause threshold (a share of the
// time), on-demand runs do not wait, and requests made during a run share the next one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GcScheduler, type GcSchedulerDeps } from "../../src/api/gc-scheduler.js";

/** A scheduler over an empty store whose every run takes `runMs` (the listing is the run). */
function scheduler(runMs: number, pauseThreshold: number) {
  const starts: number[] = [];
  const deps = {
    queries: {
      listNamespaces: async () => {
        starts.push(performance.now());
        await new Promise((r) => setTimeout(r, runMs));
        return [];
      },
    },
  } as unknown as GcSchedulerDeps;
  const gc = new GcScheduler(deps, { delayMs: 5, pauseThreshold, expiryIntervalMs: 0 });
  return { gc, starts };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("deletions during and after a run wait for the pause: runs of 20 ms at a 0.1 share are >= 180 ms apart", async () => {
  const { gc, starts } = scheduler(20, 0.1);
  try {
    gc.trigger();
    await sleep(10);
    gc.trigger(); // during the first run: coalesced into the next one
    gc.trigger();
    await sleep(100);
    assert.equal(starts.length, 1, "the second run waits for the pause");
    await sleep(250);
    assert.equal(starts.length, 2);
    assert.ok(starts[1]! - starts[0]! >= 20 + 170, `runs ${Math.round(starts[1]! - starts[0]!)} ms apart`);
  } finally {
    await gc.stop();
  }
});

test("an on-demand run (sync delete, GC.Collect) does not wait for the pause and starts after the call", async () => {
  const { gc, starts } = scheduler(20, 0.01);
  try {
    await gc.collect();
    const t = performance.now();
    gc.trigger(); // would wait ~2 s
    await gc.collect();
    assert.equal(starts.length, 2);
    assert.ok(starts[1]! >= t);
    assert.ok(performance.now() - t < 1000, "not held back by the pause");
  } finally {
    await gc.stop();
  }
});

test("orphaned blob files are swept when GC.Collect asks and, unasked, once per orphan interval; not while the projection may lack part of the log", async () => {
  const sweeps: number[] = [];
  let caughtUp = false;
  const deps = {
    queries: { listNamespaces: async () => [] },
    sequencer: { caughtUp: async () => caughtUp },
    blobs: {
      sweepOrphans: async (graceMs: number) => {
        sweeps.push(graceMs);
        return { removed: 1, bytes: 10 };
      },
    },
  } as unknown as GcSchedulerDeps;
  const gc = new GcScheduler(deps, { delayMs: 1, expiryIntervalMs: 20, orphanIntervalMs: 150, orphanGraceMs: 1234 });
  try {
    // The log unreachable: the sweep asked for is put off, to the first run that can know.
    await gc.collect({ orphans: true });
    assert.deepEqual(sweeps, [], "swept on a projection that may lack part of the log");
    caughtUp = true;
    await gc.collect();
    assert.deepEqual(sweeps, [1234], "the sweep put off runs once the projection holds the log");
    sweeps.length = 0;
    const plain = await gc.collect();
    assert.equal(sweeps.length, 0, "a sync delete's run does not walk the blob directory");
    assert.equal(plain.orphansRemoved, undefined);
    const asked = await gc.collect({ orphans: true });
    assert.deepEqual(sweeps, [1234], "GC.Collect sweeps, keeping files younger than the grace");
    assert.equal(asked.orphansRemoved, 1);
    assert.equal(asked.blobsRemoved, 1);
    assert.equal(asked.bytesFreed, 10);
    gc.start();
    await sleep(80);
    assert.equal(sweeps.length, 1, "not due yet: the last sweep was just now");
    await sleep(250);
    assert.ok(sweeps.length >= 2, "due after the orphan interval: the expiry ticker starts a sweeping run");
  } finally {
    await gc.stop();
  }
});

test("the sweep of snapshot directories no record names is put off while the snapshots' sweep cannot know (the projection behind the log), and runs at the next run", async () => {
  const answers: (string[] | undefined)[] = [undefined, ["leftover"], []];
  const asked: string[] = [];
  const deps = {
    queries: { listNamespaces: async () => [] },
    sequencer: { caughtUp: async () => true },
    blobs: {},
    snapshots: {
      names: () => ["native"],
      removeCollected: async () => undefined,
      sweepUnowned: async (sn: string) => {
        asked.push(sn);
        return answers.shift();
      },
    },
  } as unknown as GcSchedulerDeps;
  const gc = new GcScheduler(deps, { delayMs: 1, expiryIntervalMs: 0 });
  try {
    // The first run sweeps (a ckd killed before may have left some): the sweep puts itself off.
    const first = await gc.collect();
    assert.equal(first.snapshotDirsRemoved, undefined);
    const second = await gc.collect();
    assert.equal(second.snapshotDirsRemoved, 1, "asked again at the next run");
    const third = await gc.collect();
    assert.equal(third.snapshotDirsRemoved, undefined, "not wanted once done");
    assert.deepEqual(asked, ["native", "native"]);
  } finally {
    await gc.stop();
  }
});

test("updates that may drop references start a run every mutationThreshold of them, as containerd's mutation_threshold", async () => {
  const starts: number[] = [];
  const deps = {
    queries: {
      listNamespaces: async () => {
        starts.push(performance.now());
        return [];
      },
    },
  } as unknown as GcSchedulerDeps;
  const gc = new GcScheduler(deps, { delayMs: 1, expiryIntervalMs: 0, mutationThreshold: 5 });
  try {
    for (let i = 0; i < 4; i++) gc.mutated();
    await sleep(50);
    assert.equal(starts.length, 0, "four updates: no run yet");
    gc.mutated();
    await sleep(50);
    assert.equal(starts.length, 1, "the fifth starts one");
    for (let i = 0; i < 4; i++) gc.mutated();
    await sleep(50);
    assert.equal(starts.length, 1, "the count starts over with each run");
  } finally {
    await gc.stop();
  }
});

test("the ingest sweep looks each ingest's leases up in the projection as it goes (a pull that started meanwhile keeps its ingests)", async () => {
  const offered: Array<[string | undefined, boolean]> = [];
  const deps = {
    queries: {
      listNamespaces: async () => [],
      scanRecords: () => [],
      // No namespace listed (nothing scanned), but the lease is in the projection when asked.
      leaseSync: (ns: string, id: string) => (ns === "ns" && id === "new" ? { id, labels: {}, created_at: { seconds: 0, nanos: 0 } } : undefined),
    },
    ingests: {
      maxIdleMs: 60_000,
      store: {
        cleanup: async (collectable: (c: any) => boolean) => {
          for (const c of [
            { ref: "ns\u0000layer-new", leases: ["new"], expires: false, idleMs: 0 },
            { ref: "ns\u0000layer-gone", leases: ["gone"], expires: false, idleMs: 0 },
            { ref: "other\u0000layer-new", leases: ["new"], expires: false, idleMs: 0 },
          ]) offered.push([c.ref, collectable(c)]);
          return offered.filter(([, r]) => r).map(([ref]) => ref!);
        },
      },
    },
  } as unknown as GcSchedulerDeps;
  const gc = new GcScheduler(deps, { expiryIntervalMs: 0 });
  try {
    assert.equal((await gc.collect()).ingestsRemoved, 2);
    assert.deepEqual(offered, [
      ["ns\u0000layer-new", false],
      ["ns\u0000layer-gone", true],
      ["other\u0000layer-new", true],
    ]);
  } finally {
    await gc.stop();
  }
});
