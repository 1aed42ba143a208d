// The projector follows the log in order and folds every event into the projection database,
// in batches, each batch written atomically with the sequence it reached. It is the only
// writer of the views. Callers wait on it for read-your-writes.
import type { EventLog, StoredMessage } from "../eventstore/log.js";
import type { Protos } from "../protos/protos.js";
import { toLoggedEvent } from "../emitter/envelope.js";
import { ProjectionDb, type KeyChange } from "./db.js";
import { evolve, keysFor, type LoggedEvent } from "./views.js";

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
    this.running = this.follow().catch((err) => {
      if (this.abort.signal.aborted) return;
      this.failure = err as Error;
      for (const w of this.waiters.splice(0)) w.resolve();
      this.opts.onError?.(this.failure);
    });
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
        if (!bulk || this.abort.signal.aborted) throw err;
        // The bulk reader failed (its connection, its thread): go on from the checkpoint in
        // this thread, whose reader rides out reconnects.
        this.bulkFailed = err as Error;
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
          await this.flush(batch);
          this.abort.abort();
          break outer;
        }
        batch.push(m);
        if (m.seq === this.opts.untilSeq) break;
      }
      // Counted before the flush, which may wake a caller that reads it.
      if (bulk) this.bulkBatches++;
      await this.flush(batch);
      if (this.opts.untilSeq !== undefined && this.db.appliedSeq >= this.opts.untilSeq) {
        this.abort.abort();
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
   * ended when delivered (pending 0) or at maxBatch messages.
   */
  private readonly inThread: BatchSource = async function* (this: Projector, from: number, signal: AbortSignal) {
    let batch: StoredMessage[] = [];
    const skipThrough = () => this.db.appliedSeq;
    for await (const m of this.log.read({ fromSeq: from, signal, skipThrough })) {
      batch.push(m);
      if (m.pending === 0 || batch.length >= this.maxBatch) {
        yield batch;
        batch = [];
      }
    }
    if (batch.length) yield batch;
  }.bind(this);

  private pastUntil(m: StoredMessage): boolean {
    if (this.opts.untilSeq !== undefined && m.seq > this.opts.untilSeq) return true;
    if (this.opts.untilTime !== undefined && m.time.getTime() > this.opts.untilTime.getTime()) return true;
    return false;
  }

  /**
   * Applies a batch after everything applied before it. Both paths (the consumer and the
   * local fast path) come through here, one at a time; messages already applied by the
   * other path are skipped, so each sequence is applied exactly once and in order.
   */
  private flush(batch: StoredMessage[]): Promise<void> {
    const run = this.applying.then(async () => {
      const fresh = batch.filter((m) => m.seq > this.db.appliedSeq);
      if (fresh.length === 0) return;
      if (fresh[0]!.seq !== this.db.appliedSeq + 1) {
        // Messages in between were removed from the log (a compaction while this projection was
        // behind it, a purge): folding on would skip their changes.
        throw new Error(
          `projection gap: applied ${this.db.appliedSeq}, next message in the log ${fresh[0]!.seq} (the messages between were removed, by ck-replay compact or a purge: a fresh start from the latest base gets past them)`,
        );
      }
      const changes = foldBatch(this.protos, this.db, fresh);
      // The last message itself, not only its sequence: its identity is checkpointed with it.
      await this.db.apply(changes, fresh[fresh.length - 1]!, this.opts.sync ?? false);
      for (const l of this.listeners) l(fresh);
      this.release();
    });
    this.applying = run.catch(() => undefined);
    return run;
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

  /** Resolves once the projection has applied `seq` (or the projector failed). */
  waitFor(seq: number): Promise<void> {
    if (seq <= this.db.appliedSeq || this.failure) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ seq, resolve }));
  }

  /** Waits until everything the stream held when called has been applied. */
  async catchUp(): Promise<void> {
    const last = await this.log.lastSeq();
    const target = this.opts.untilSeq !== undefined ? Math.min(last, this.opts.untilSeq) : last;
    await this.waitFor(target);
    if (this.failure) throw this.failure;
  }

  /** Resolves when a bounded (until) run has stopped by itself. */
  async finished(): Promise<void> {
    await this.running;
    if (this.failure) throw this.failure;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
    for (const w of this.waiters.splice(0)) w.resolve();
  }
}
