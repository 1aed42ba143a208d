// The projector follows the log in order and folds every event into the projection database,
// in batches, each batch written atomically with the sequence it reached. It is the only
// writer of the views. Callers wait on it for read-your-writes.
import type { EventLog, LogEnd, StoredMessage } from "../eventstore/log.js";
import type { Protos } from "../protos/protos.js";
import { batchEnds } from "../eventstore/pull-bounds.js";
import { toLoggedEvent } from "../emitter/envelope.js";
import { ProjectionDb, type KeyChange } from "./db.js";
import { evolve, keysFor, type LoggedEvent } from "./views.js";
import { LogGapError, atLogEnd, compactedGapError, gapBefore, gapKind, gapsIn, type LogGap } from "./log-gaps.js";

/**
 * How long catchUp waits for the last message it saw stored before it looks at the log again
 * (that message may have been deleted since, and would never come).
 */
const RECHECK_MS = 2000;

export interface ProjectorOptions {
  /**
   * Largest number of messages folded into one RocksDB batch (default 256). Small batches
   * are cheaper: what a batch holds (messages, decoded events, its key cache) then dies young
   * instead of surviving into V8's old generation. Rebuilding 100,000 events took 1.6-2.3 s
   * of CPU with 256 and 2.6-3.5 s with 8,192 (2026-11-30, alternating warm runs).
   */
  maxBatch?: number;
  /** Stop after applying this sequence (point-in-time rebuilds). */
  untilSeq?: number;
  /** Called once if following the log fails for good (the projection stops advancing). */
  onError?: (err: Error) => void;
  /** Stop before the first message stored after this time. */
  untilTime?: Date;
  /** fsync RocksDB's WAL with every batch. */
  sync?: boolean;
  /**
   * A source for catching up when the projection is at least `threshold` messages behind the
   * log (a rebuild, a start after a long stop; readInWorker reads it in a worker thread): used
   * until the projection has caught up, then the live tail is read in this thread again.
   */
  bulk?: { source: BatchSource; threshold: number };
  /** Told when the bulk source failed and the log is read in this thread from the checkpoint instead. */
  onBulkFailed?: (err: Error) => void;
  /**
   * Fold across messages deleted from inside the log (log-gaps.ts), telling each gap here,
   * instead of failing with DataLoss. An operator's explicit choice (ck-replay --allow-gaps):
   * the state folded lacks whatever the deleted messages did. Never ckd's.
   */
  allowGaps?: (gap: LogGap) => void;
}

/** Messages of the log from a sequence on, in order and in batches, until `signal` aborts. */
export type BatchSource = (fromSeq: number, signal: AbortSignal) => AsyncIterable<StoredMessage[]>;

type AppliedListener = (msgs: readonly StoredMessage[]) => void;

interface Waiter {
  seq: number;
  resolve: () => void;
}

/**
 * Folds a batch of messages into changes against the database, reading each touched key at
 * most once. Pure apart from the reads; exported for rebuild tools and tests.
 */
export function foldBatch(protos: Protos, db: ProjectionDb, msgs: readonly StoredMessage[]): KeyChange[] {
  const events: LoggedEvent[] = [];
  const wanted = new Set<string>();
  for (const m of msgs) {
    const ev = toLoggedEvent(protos, m);
    if (!ev) continue;
    events.push(ev);
    for (const k of keysFor(ev)) wanted.add(k);
  }
  // One read for every key the batch touches, instead of one per event.
  const keyList = [...wanted];
  const values = keyList.length ? db.getManySync(keyList) : [];
  const cache = new Map<string, unknown>();
  keyList.forEach((k, i) => cache.set(k, values[i]));
  const changed = new Set<string>();
  const read = (key: string) => cache.get(key);
  for (const ev of events) {
    for (const [k, v] of evolve(ev, read)) {
      cache.set(k, v);
      changed.add(k);
    }
  }
  const changes: KeyChange[] = [];
  for (const k of changed) changes.push([k, cache.get(k)]);
  return changes;
}

export class Projector {
  private readonly waiters: Waiter[] = [];
  private readonly listeners = new Set<AppliedListener>();
  private abort = new AbortController();
  private running: Promise<void> | undefined;
  private failure: Error | undefined;
  private readonly maxBatch: number;
  private applying: Promise<void> = Promise.resolve();
  private readonly own: StoredMessage[] = [];
  /** Errors thrown by the fold (flush), as opposed to the source it reads. */
  private readonly foldErrors = new WeakSet<object>();
  /** Set once a bounded run stopped at its until by itself: nothing more will be applied. */
  private untilReached = false;
  /** Batches applied from the bulk source so far. */
  bulkBatches = 0;
  /** Why the bulk source was given up, if it failed (it is not tried again). */
  bulkFailed: Error | undefined;

  constructor(
    readonly db: ProjectionDb,
    private readonly log: EventLog,
    private readonly protos: Protos,
    private readonly opts: ProjectorOptions = {},
  ) {
    this.maxBatch = opts.maxBatch ?? 256;
  }

  get appliedSeq(): number {
    return this.db.appliedSeq;
  }

  get error(): Error | undefined {
    return this.failure;
  }

  onApplied(l: AppliedListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Starts following the log from the checkpoint. */
  start(): void {
    if (this.running) return;
    this.running = this.follow().catch((err) => this.fail(err as Error));
  }

  /** Following the log failed for good: waiters are released, onError told (once). */
  private fail(err: Error): void {
    if (this.abort.signal.aborted || this.failure) return;
    this.failure = err;
    for (const w of this.waiters.splice(0)) w.resolve();
    this.opts.onError?.(this.failure);
  }

  private async follow(): Promise<void> {
    // The ordered consumer survives reconnects; if it ever ends without an abort, follow
    // again from the checkpoint.
    while (!this.abort.signal.aborted) {
      const from = this.db.appliedSeq + 1;
      const bulk = await this.farBehind();
      const source = bulk ? this.opts.bulk!.source : this.inThread;
      try {
        await this.applyFrom(source(from, this.abort.signal), bulk);
      } catch (err) {
        // What the fold refused (a gap, a write that failed) is refused by any reader: only a
        // failure of the bulk reader itself is worth reading again in this thread.
        if (!bulk || this.abort.signal.aborted || this.foldErrors.has(err as object)) throw err;
        // The bulk reader failed (its connection, its thread): go on from the checkpoint in
        // this thread, whose reader rides out reconnects; said, not hidden.
        this.bulkFailed = err as Error;
        this.opts.onBulkFailed?.(err as Error);
      }
    }
  }

  /** Applies what `messages` yields until it ends, the projection catches up (bulk) or an until is reached. */
  private async applyFrom(messages: AsyncIterable<StoredMessage[]>, bulk: boolean): Promise<void> {
    outer: for await (const msgs of messages) {
      const batch: StoredMessage[] = [];
      for (const m of msgs) {
        if (m.seq <= this.db.appliedSeq) continue;
        if (this.pastUntil(m)) {
          // Not folded, but it shows whether messages before the until are missing.
          await this.flush(batch, m.seq);
          this.stopAtUntil();
          break outer;
        }
        batch.push(m);
        if (m.seq === this.opts.untilSeq) break;
      }
      // Counted before the flush, which may wake a caller that reads it.
      if (bulk) this.bulkBatches++;
      await this.flush(batch);
      if (this.opts.untilSeq !== undefined && this.db.appliedSeq >= this.opts.untilSeq) {
        this.stopAtUntil();
        break;
      }
      // Caught up with the stream: follow the live tail in this thread again.
      if (bulk && msgs.length > 0 && msgs[msgs.length - 1]!.pending === 0) break;
    }
  }

  /** True when the bulk source is configured and the log is at least its threshold ahead. */
  private async farBehind(): Promise<boolean> {
    const bulk = this.opts.bulk;
    if (!bulk || this.bulkFailed) return false;
    let last: number;
    try {
      last = await this.log.lastSeq();
    } catch {
      return false; // the in-thread reader copes with the connection as before
    }
    const target = this.opts.untilSeq !== undefined ? Math.min(last, this.opts.untilSeq) : last;
    return target - this.db.appliedSeq >= bulk.threshold;
  }

  /**
   * The default source: the log read in this thread, in batches that end where the stream
   * ended when delivered (pending 0), at maxBatch messages or at 4 MiB. Its pulls are bounded in
   * messages and bytes (EventLog.reader), catching up or on the live tail alike: what it reads
   * may be events of any size, up to the server's max_payload each.
   */
  private readonly inThread: BatchSource = async function* (this: Projector, from: number, signal: AbortSignal) {
    let batch: StoredMessage[] = [];
    let bytes = 0;
    const skipThrough = () => this.db.appliedSeq;
    for await (const m of this.log.read({ fromSeq: from, signal, skipThrough })) {
      batch.push(m);
      bytes += m.data.length;
      if (batchEnds(batch.length, bytes, this.maxBatch, m.pending)) {
        yield batch;
        batch = [];
        bytes = 0;
      }
    }
    if (batch.length) yield batch;
  }.bind(this);

  /** A bounded run is done: it stops reading, and whoever waits for more is released. */
  private stopAtUntil(): void {
    this.untilReached = true;
    this.abort.abort();
    for (const w of this.waiters.splice(0)) w.resolve();
  }

  private pastUntil(m: StoredMessage): boolean {
    if (this.opts.untilSeq !== undefined && m.seq > this.opts.untilSeq) return true;
    if (this.opts.untilTime !== undefined && m.time.getTime() > this.opts.untilTime.getTime()) return true;
    return false;
  }

  /**
   * Applies a batch after everything applied before it. Both paths (the consumer and the
   * local fast path) come through here, one at a time; messages already applied by the
   * other path are skipped, so each sequence is applied exactly once and in order. Every
   * message must directly follow the one before it (the rule of log-gaps.ts); `stopSeq` is
   * the first message past a run's until, which is not folded but shows whether messages up
   * to the until are missing.
   */
  private flush(batch: StoredMessage[], stopSeq?: number): Promise<void> {
    const run = this.applying.then(async () => {
      const applied = this.db.appliedSeq;
      let fresh = batch.filter((m) => m.seq > applied);
      const gaps = gapsIn(applied, fresh.map((m) => m.seq));
      let atStop = stopSeq === undefined ? undefined : gapBefore(fresh.length ? fresh[fresh.length - 1]!.seq : applied, stopSeq, this.opts.untilSeq);
      if (atStop) gaps.push(atStop);
      const refused = gaps.length ? await this.judgeGaps(gaps) : undefined;
      if (refused) {
        // What comes before the gap is folded; nothing after it.
        fresh = fresh.filter((m) => m.seq < refused.gap.from);
        atStop = undefined;
      }
      // An allowed gap at the until is passed, as folding the message after it would.
      const reached = Math.max(fresh.length ? fresh[fresh.length - 1]!.seq : applied, atStop?.to ?? 0);
      if (reached > applied) {
        const changes = fresh.length ? foldBatch(this.protos, this.db, fresh) : [];
        // The last message itself where it is what was reached: its identity is checkpointed with it.
        const last = fresh[fresh.length - 1];
        await this.db.apply(changes, last && last.seq === reached ? last : reached, this.opts.sync ?? false);
        if (fresh.length) for (const l of this.listeners) l(fresh);
        this.release();
      }
      if (refused) throw refused.error;
    }).catch((err: unknown) => {
      if (typeof err === "object" && err !== null) this.foldErrors.add(err);
      throw err;
    });
    this.applying = run.catch(() => undefined);
    return run;
  }

  /**
   * The first of the gaps (in order) the fold may not cross, and why: one cut from the log's
   * front (a start from a base gets past it), one deleted from inside it (DataLoss, unless
   * allowGaps, which is told of each one crossed before it). Which it is depends on the
   * stream's first stored sequence, asked for only when there is a gap: what is folded never
   * depends on it.
   */
  private async judgeGaps(gaps: LogGap[]): Promise<{ gap: LogGap; error: Error } | undefined> {
    let first: number;
    try {
      first = (await this.log.info()).state.first_seq;
    } catch (err) {
      const g = gaps[0]!;
      const error = new Error(`projection gap: applied ${g.from - 1}, next message in the log ${g.next} (could not ask the log whether the messages between were compacted or deleted: ${(err as Error).message})`, { cause: err });
      return { gap: g, error };
    }
    for (const g of gaps) {
      if (gapKind(g, first) === "compacted") return { gap: g, error: compactedGapError(g.from - 1, g.next) };
      if (!this.opts.allowGaps) return { gap: g, error: new LogGapError(this.log.stream, g, g.from - 1) };
      this.opts.allowGaps(g);
    }
    return undefined;
  }

  /**
   * The local fast path: ckd's own appends, acknowledged by the server, are applied from the
   * bytes it sent instead of waiting for the consumer to deliver them back. Only a message
   * that directly follows what is applied qualifies; anything else (a foreign append came
   * first) is left to the consumer. Acknowledgements arriving together are applied in one
   * batch.
   */
  applyOwn(m: StoredMessage): void {
    this.own.push(m);
    if (this.own.length > 1) return;
    void this.applying.then(() => {
      const taken = this.own.splice(0).sort((a, b) => a.seq - b.seq);
      const run: StoredMessage[] = [];
      let next = this.db.appliedSeq + 1;
      for (const x of taken) {
        if (x.seq < next) continue;
        if (x.seq !== next) break;
        run.push(x);
        next++;
      }
      if (run.length) void this.flush(run).catch(() => undefined);
    });
  }

  private release(): void {
    const applied = this.db.appliedSeq;
    let i = 0;
    while (i < this.waiters.length) {
      const w = this.waiters[i]!;
      if (w.seq <= applied) {
        this.waiters.splice(i, 1);
        w.resolve();
      } else i++;
    }
  }

  /** Resolves once the projection has applied `seq` (or the projector failed, or a bounded run stopped). */
  async waitFor(seq: number): Promise<void> {
    await this.waitAtMost(seq);
  }

  /**
   * waitFor, giving up after `ms` (never without it): true when `seq` is applied (or the run
   * ended), false on timeout.
   */
  private waitAtMost(seq: number, ms?: number): Promise<boolean> {
    if (seq <= this.db.appliedSeq || this.failure || this.untilReached) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w: Waiter = {
        seq,
        resolve: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      const timer =
        ms === undefined
          ? undefined
          : setTimeout(() => {
              const i = this.waiters.indexOf(w);
              if (i >= 0) this.waiters.splice(i, 1);
              resolve(false);
            }, ms);
      this.waiters.push(w);
    });
  }

  /**
   * Waits until everything the stream held when called has been applied: its last message
   * then stored (EventLog.end), not its last sequence, which JetStream keeps when that message
   * is deleted and never delivers. A message that does not come within a while is looked for
   * again (deleted meanwhile, it never will). Then a deleted tail is passed (log-gaps.ts): the
   * checkpoint moves to the stream's last sequence, so the next append follows it directly.
   * Returns the log's end as seen (its last sequence is what the next append expects).
   */
  async catchUp(): Promise<LogEnd> {
    const until = this.opts.untilSeq ?? Number.POSITIVE_INFINITY;
    let end = await this.log.end();
    let wanted = Math.min(end.lastStored, until);
    let looked = false;
    while (!(await this.waitAtMost(wanted, RECHECK_MS))) {
      // The log not answering now (a reconnect, an election): wait on, as the reader does.
      wanted = (await this.log.end(wanted).catch(() => undefined))?.lastStored ?? wanted;
      looked = true;
    }
    if (this.failure) throw this.failure;
    if (this.untilReached || this.abort.signal.aborted) return end;
    if (looked) end = await this.log.end();
    await this.passTail(end);
    return end;
  }

  /**
   * At the log's end with every stored message applied: passes a deleted tail (or fails, when
   * the history this projection still needs was cut and nothing is stored after it). In the
   * fold's order, so a message delivered meanwhile is applied (or refused) first.
   */
  private passTail(end: LogEnd): Promise<void> {
    const run = this.applying.then(async () => {
      const next = atLogEnd(this.db.appliedSeq, end, this.opts.untilSeq);
      if (!next) return;
      if ("cut" in next) {
        const err = compactedGapError(next.cut.from - 1, next.cut.next);
        this.fail(err);
        throw err;
      }
      await this.db.apply([], next.pass, this.opts.sync ?? false);
      this.release();
    });
    this.applying = run.catch(() => undefined);
    return run;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
    // A write not made by the follower (an own append, a deleted tail passed) ends too: the
    // database may be closed next.
    await this.applying;
    for (const w of this.waiters.splice(0)) w.resolve();
  }
}
