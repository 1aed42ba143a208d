// When garbage collection runs, as containerd's gc scheduler decides it: right after
// deletions (coalesced: requests made while a run is under way share the next run), on demand
// (GC.Collect, `sync` deletes, which wait for a run that started after them), and when a
// periodic check finds an expired lease. A run goes namespace by namespace: expired leases are
// deleted (one LeaseDelete each), then unreferenced content is collected by one
// ContentCollect command; marking outside the sequencer first means a namespace with nothing
// to collect costs no write, and the command marks again on the current view, so a reference
// added meanwhile is respected. Blob bytes no namespace refers to any more go last, then
// ingests no lease holds any more (or, unleased, idle past their limit).
import type { Logger } from "pino";
import type { Sequencer } from "../commands/sequencer.js";
import type { Queries } from "../projections/queries.js";
import { splitIngestRef, type NamespacedBlobs } from "../content/namespaced.js";
import type { IngestManager } from "../content/types.js";
import {
  expiredLeases,
  gcHandlers,
  ingestCollectable,
  ingestRefsHeld,
  loadGcState,
  loadLeases,
  unreferencedContent,
  unreferencedSnapshots,
} from "../commands/gc.js";
import { deleteLease, isLeaseExpired } from "../commands/leases.js";
import { keys } from "../projections/views.js";
import { unavailable } from "../errdefs/errdefs.js";

export interface GcNamespaceReport {
  namespace: string;
  blobs: number;
  leases: number;
  snapshots?: number;
}

/** What GC needs of the snapshots: removing the directories of collected ids, and of none. */
export interface SnapshotSweeper {
  removeCollected(snapshotter: string, ids: readonly string[]): Promise<void>;
  /** The loaded snapshotters. */
  names(): string[];
  /**
   * Removes directories no snapshot owns (a removal or a Prepare cut short by a kill); returns
   * them, or undefined when it put the sweep off (the projection may not hold the whole log).
   * The same sweep as Snapshots.Cleanup (SnapshotStore.sweepUnowned).
   */
  sweepUnowned(snapshotter: string): Promise<string[] | undefined>;
}

export interface GcReport {
  namespaces: GcNamespaceReport[];
  /** Blob files deleted: unreferenced ones and orphans. */
  blobsRemoved: number;
  bytesFreed: number;
  /** Of those, orphans: files no commit event ever named (when the run swept for them). */
  orphansRemoved?: number;
  /** Ingests removed: their leases ended, or (unleased) idle past the limit. */
  ingestsRemoved: number;
  /** Snapshot directories no snapshot owned (when the run looked for them). */
  snapshotDirsRemoved?: number;
}

export interface GcSchedulerDeps {
  sequencer: Sequencer;
  queries: Queries;
  blobs: NamespacedBlobs;
  snapshots?: SnapshotSweeper;
  /** The ingests to sweep, and how long an unleased one may stay idle (containerd: 24 h). */
  ingests?: { store: IngestManager; maxIdleMs: number };
  logger?: Pick<Logger, "info" | "warn">;
  now?: () => Date;
}

export interface GcSchedulerOptions {
  /** How long a run after a deletion waits for more deletions to coalesce (default 20 ms). */
  delayMs?: number;
  /**
   * The share of time runs after deletions may take (containerd's pause_threshold, default
   * 0.02): after runs averaging d, the next deletion-triggered run starts no sooner than
   * d / share - d after the last one ended. On-demand runs (sync deletes, GC.Collect) do not wait.
   */
  pauseThreshold?: number;
  /** How often leases are checked for expiry (default 60 s; 0 turns the check off). */
  expiryIntervalMs?: number;
  /**
   * How often a run also sweeps orphaned blob files (bytes no commit event ever named; default
   * 1 h; 0: only when GC.Collect asks). The check runs with the expiry check.
   */
  orphanIntervalMs?: number;
  /** Orphaned blob files written within this are kept: their commit may be under way (default 10 min). */
  orphanGraceMs?: number;
  /**
   * Updates (labels, image targets) that may drop references start a run once this many have
   * been made since the last run (containerd's mutation_threshold, default 100).
   */
  mutationThreshold?: number;
}

interface Pending {
  promise: Promise<GcReport>;
  resolve: (r: GcReport) => void;
  reject: (e: unknown) => void;
}

function pending(): Pending {
  let resolve!: (r: GcReport) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<GcReport>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A deferred run nobody waits on must not become an unhandled rejection.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

export class GcScheduler {
  private next: Pending | undefined;
  private active: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly delayMs: number;
  private readonly pauseThreshold: number;
  private readonly expiryIntervalMs: number;
  private readonly orphanIntervalMs: number;
  private readonly mutationThreshold: number;
  /** Updates since the last run started. */
  private mutations = 0;
  private readonly orphanGraceMs: number;
  /** The next run also sweeps orphaned blob files. */
  private orphansWanted = false;
  /**
   * Whether the next run looks for snapshot directories no snapshot owns: its first (a ckd
   * killed before may have left some), after one that collected snapshots, and with the
   * orphan sweep; containerd's GC cleans a snapshotter after any removal from it.
   */
  private snapshotDirsWanted = true;
  private lastOrphanSweep = performance.now();
  /** Time spent in runs and their number, for the interval between deletion-triggered runs. */
  private gcMs = 0;
  private runs = 0;
  private lastEnded = 0;
  /** Somebody waits for the next run (a sync delete, GC.Collect): it starts without the pause. */
  private nextWaited = false;
  private readonly now: () => Date;

  constructor(
    private readonly deps: GcSchedulerDeps,
    opts: GcSchedulerOptions = {},
  ) {
    this.delayMs = opts.delayMs ?? 20;
    this.pauseThreshold = Math.min(0.5, Math.max(0.001, opts.pauseThreshold ?? 0.02));
    this.expiryIntervalMs = opts.expiryIntervalMs ?? 60_000;
    this.orphanIntervalMs = opts.orphanIntervalMs ?? 3_600_000;
    this.mutationThreshold = Math.max(1, opts.mutationThreshold ?? 100);
    this.orphanGraceMs = opts.orphanGraceMs ?? 600_000;
    this.now = deps.now ?? (() => new Date());
  }

  /** Starts the periodic expiry check. */
  start(): void {
    if (this.expiryIntervalMs <= 0 || this.ticker) return;
    this.ticker = setInterval(() => {
      const orphansDue = this.orphanIntervalMs > 0 && performance.now() - this.lastOrphanSweep >= this.orphanIntervalMs;
      if (orphansDue) this.orphansWanted = true;
      if (orphansDue || this.anyLeaseExpired()) this.trigger();
    }, this.expiryIntervalMs);
    this.ticker.unref();
  }

  /** A run soon, after something was deleted; nobody waits for it. */
  trigger(): void {
    if (this.stopped) return;
    void this.request(Math.max(this.delayMs, this.lastEnded + this.interval() - performance.now()));
  }

  /** The pause after a run that keeps runs at `pauseThreshold` of the time, as containerd's scheduler. */
  private interval(): number {
    if (this.runs === 0) return 0;
    const avg = this.gcMs / this.runs;
    return avg / this.pauseThreshold - avg;
  }

  /**
   * Resolves with the report of a run that started after this call; `orphans`: that run also
   * sweeps orphaned blob files (GC.Collect asks for it).
   */
  collect(opts: { orphans?: boolean } = {}): Promise<GcReport> {
    if (this.stopped) return Promise.reject(unavailable("garbage collector stopped"));
    this.nextWaited = true;
    if (opts.orphans) this.orphansWanted = true;
    return this.request(0);
  }

  /**
   * What the services call after an update that may have dropped a reference (a label, an
   * image's target): every `mutationThreshold` of them start a run, as containerd's scheduler.
   */
  mutated(): void {
    if (++this.mutations >= this.mutationThreshold) this.trigger();
  }

  /** What the metadata services call after a deletion: wait for the run when `sync`. */
  async afterDelete(sync: boolean): Promise<void> {
    if (sync) await this.collect();
    else this.trigger();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.ticker);
    clearTimeout(this.timer);
    this.next?.reject(unavailable("garbage collector stopped"));
    this.next = undefined;
    await this.active;
  }

  private request(delayMs: number): Promise<GcReport> {
    this.next ??= pending();
    const p = this.next.promise;
    if (!this.active) this.arm(delayMs);
    return p;
  }

  private arm(delayMs: number): void {
    // An armed timer is kept unless this request wants the run sooner.
    if (this.timer && delayMs > 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.launch();
    }, delayMs);
  }

  private launch(): void {
    if (this.active || !this.next || this.stopped) return;
    const waiting = this.next;
    this.next = undefined;
    this.nextWaited = false;
    const started = performance.now();
    this.active = this.run().then(waiting.resolve, waiting.reject).finally(() => {
      this.active = undefined;
      this.lastEnded = performance.now();
      this.gcMs += this.lastEnded - started;
      this.runs++;
      // Requests made during the run get the next one: at once when somebody waits for it
      // (coalesced already), else after the pause that keeps GC to its share of the time.
      if (this.next) this.arm(this.nextWaited ? 0 : Math.max(this.delayMs, this.interval()));
    });
  }

  private anyLeaseExpired(): boolean {
    const now = this.now();
    try {
      for (const [, ns] of this.deps.queries.scanRecords<{ name: string }>(keys.namespacesPrefix)) {
        const leases = [...this.deps.queries.scanRecords<any>(keys.leasesPrefix(ns.name))].map(([, l]) => l);
        if (expiredLeases(leases, now).length > 0) return true;
      }
    } catch (err) {
      this.deps.logger?.warn({ err }, "lease expiry check failed");
    }
    return false;
  }

  private async run(): Promise<GcReport> {
    const { sequencer, queries, blobs } = this.deps;
    const started = performance.now();
    const now = this.now();
    const report: GcReport = { namespaces: [], blobsRemoved: 0, bytesFreed: 0, ingestsRemoved: 0 };
    const sweepOrphans = this.orphansWanted;
    this.orphansWanted = false;
    let sweepSnapshotDirs = this.snapshotDirsWanted || sweepOrphans;
    this.snapshotDirsWanted = false;
    this.mutations = 0;
    const collected = new Set<string>();
    // A namespace whose collection fails (its log unreachable, say) does not stop the others'
    // nor the freeing of what was collected: the first failure is thrown once the run is done.
    let failure: unknown;
    for (const { name } of await queries.listNamespaces()) {
      let leases = 0;
      let count = 0;
      let snaps = 0;
      try {
        const state = loadGcState(name, (p) => queries.scanRecords(p));
        for (const id of expiredLeases(state.leases, now)) {
          if (await deleteLease(sequencer, { namespace: name, id, now })) leases++;
        }
        // Expired leases are no roots in the mark, so the state read before deleting them holds.
        // As much as one event takes at a time, each decided on what the one before left.
        if (unreferencedContent(state, now).length > 0) {
          for (let more = true; more; ) {
            const res = await sequencer.submit(gcHandlers.collect({ namespace: name, now, maxEventBytes: sequencer.maxEventBytes, host: queries.host }));
            count += res.digests.length;
            for (const d of res.digests) collected.add(d);
            more = res.more && res.digests.length > 0;
          }
        }
        for (const sn of unreferencedSnapshots(state, now).keys()) {
          for (let more = true; more; ) {
            const res = await sequencer.submit(gcHandlers.collectSnapshots({ namespace: name, snapshotter: sn, now, maxEventBytes: sequencer.maxEventBytes }));
            snaps += res.removed.length;
            if (res.removed.length > 0) sweepSnapshotDirs = true;
            // Children first: the records are gone already, the directories follow in the same order.
            await this.deps.snapshots?.removeCollected(sn, res.removed.map((r) => r.id)).catch((err) => this.deps.logger?.warn({ err, snapshotter: sn }, "removing collected snapshot directories failed"));
            more = res.more && res.removed.length > 0;
          }
        }
      } catch (err) {
        this.deps.logger?.warn({ err, namespace: name }, "garbage collection of a namespace failed");
        failure ??= err;
      }
      if (leases || count || snaps) report.namespaces.push({ namespace: name, blobs: count, leases, ...(snaps ? { snapshots: snaps } : {}) });
    }
    for (const digest of [...collected].sort()) {
      const freed = await blobs.removeIfUnreferenced(digest);
      if (freed !== undefined) {
        report.blobsRemoved++;
        report.bytesFreed += freed;
      }
    }
    // The sweeps remove what no record names: only on a projection that holds the whole log. A
    // blob's commit may be in the log and not yet applied; so may the record of a Prepare whose
    // append's outcome is unknown (the snapshots' sweep asks for itself: sweepUnowned).
    const current = sweepOrphans ? await sequencer.caughtUp() : false;
    if (sweepOrphans && !current) {
      this.deps.logger?.warn("sweep of unnamed blob files put off: the projection may not hold the whole log (unreachable)");
      this.orphansWanted = true;
    }
    if (sweepOrphans && current) {
      const orphans = await blobs.sweepOrphans(this.orphanGraceMs, now);
      this.lastOrphanSweep = performance.now();
      report.orphansRemoved = orphans.removed;
      report.blobsRemoved += orphans.removed;
      report.bytesFreed += orphans.bytes;
      if (orphans.removed > 0) this.deps.logger?.info({ ...orphans }, "orphaned blob files removed");
    }
    if (sweepSnapshotDirs && this.deps.snapshots) {
      let dirs = 0;
      let putOff = false;
      for (const sn of this.deps.snapshots.names()) {
        const gone = await this.deps.snapshots.sweepUnowned(sn).catch((err) => {
          this.deps.logger?.warn({ err, snapshotter: sn }, "removing snapshot directories no snapshot owns failed");
          return [];
        });
        if (!gone) {
          putOff = true;
          break;
        }
        if (gone.length > 0) this.deps.logger?.info({ snapshotter: sn, removed: gone }, "snapshot directories no snapshot owned removed");
        dirs += gone.length;
      }
      if (putOff) {
        this.deps.logger?.warn("sweep of snapshot directories no snapshot owns put off: the projection may not hold the whole log (unreachable)");
        this.snapshotDirsWanted = true;
      } else report.snapshotDirsRemoved = dirs;
    }
    // After the lease deletions above: the ingests they held go in the same run.
    report.ingestsRemoved = await this.sweepIngests(now);
    if (report.namespaces.length > 0 || report.ingestsRemoved > 0) {
      this.deps.logger?.info({ ...report, ms: Math.round(performance.now() - started) }, "garbage collected");
    }
    if (failure !== undefined) throw failure;
    return report;
  }

  /**
   * Removes the ingests no live lease holds any more and unleased ones idle past the limit;
   * also what ckd's periodic stale-ingest sweep runs. Returns how many went. Leases are read
   * only when an ingest needs them (no ingest at all is the common case).
   */
  async sweepIngests(now = this.now()): Promise<number> {
    const ingests = this.deps.ingests;
    if (!ingests) return 0;
    const { queries } = this.deps;
    let refs: Set<string> | undefined;
    const held = () =>
      (refs ??= ingestRefsHeld(
        [...queries.scanRecords<{ name: string }>(keys.namespacesPrefix)].map(([, ns]) => [ns.name, loadLeases(ns.name, (p) => queries.scanRecords(p))] as const),
        now,
      ));
    const holders = {
      // Looked up per ingest, so a lease created while the sweep runs (a pull starting) counts.
      leases: {
        has: (key: string) => {
          const at = key.indexOf("\u0000");
          const lease = queries.leaseSync(key.slice(0, at), key.slice(at + 1));
          return lease !== undefined && !isLeaseExpired(lease, now);
        },
      },
      refs: { has: (key: string) => held().has(key) },
    };
    const removed = await ingests.store.cleanup(
      (c) => ingestCollectable({ ...splitIngestRef(c.ref), leases: c.leases, expires: c.expires, idleMs: c.idleMs }, holders, ingests.maxIdleMs),
      ingests.maxIdleMs,
    );
    return removed.length;
  }
}
