// The sequencer: the one ordered path through which every command's event is appended.
// Decisions are taken one at a time against the projection plus the events still in flight
// (the overlay); appends are pipelined, each expecting the stream sequence right after the
// one before it. When another writer breaks the chain (a second ckd on the same stream), the
// refused appends are decided again on fresh state, so a stale decision is never written.
// A call returns after the projection applied its event (read-your-writes).
import { randomUUID } from "node:crypto";
import type { EventLog } from "../eventstore/log.js";
import { isRefusedAppend, isWrongLastSequence } from "../eventstore/log.js";
import type { Protos } from "../protos/protos.js";
import {
  encodeEnvelope,
  nowTimestamp,
  subjectOf,
  ORIGIN_COMMAND,
  ORIGIN_HEADER,
  ORIGIN_PUBLISH,
  type EventDraft,
} from "../emitter/envelope.js";
import type { Projector } from "../projections/projector.js";
import { evolve, type LoggedEvent } from "../projections/views.js";
import { aborted, invalidArgument, unavailable, CkError } from "../errdefs/errdefs.js";

/** Bytes kept for an append's headers (origin, message id, expectations) under max_payload. */
const HEADER_ROOM = 512;

/** What a command handler sees while deciding: the projection plus in-flight changes. */
export interface StateView {
  get<T>(key: string): T | undefined;
  /** True when any live record has one of these key prefixes. */
  hasAny(prefixes: readonly string[]): Promise<boolean>;
  /** Every live record under a prefix, in key order (for whole-namespace decisions like GC). */
  scan<T>(prefix: string): [string, T][];
}

export interface Decision<T> {
  /** At most one event: on nats-server 2.9 several appends cannot be made atomic. */
  event?: EventDraft;
  result: T;
}

export type Decide<T> = (view: StateView) => Decision<T> | Promise<Decision<T>>;

interface Job {
  decide: Decide<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  attempts: number;
  /** How many of its appends went unacknowledged (an unknown outcome, each found not stored later). */
  unknowns: number;
  /** When it was submitted (the retry budget runs from here). */
  since: number;
  msgId: string;
  /** Set once an append was made; cleared when the job is decided again. */
  append?: Promise<{ ok: true; seq: number } | { ok: false; err: unknown }>;
  result?: unknown;
  /** Why its last append was refused or lost (for the message when it gives up). */
  lastRefusal?: string;
}

interface OverlayEntry {
  value: unknown;
  seq: number;
}

export interface SequencerOptions {
  /**
   * A command whose appends other writers keep refusing is decided again until it has been
   * tried this often and for retryBudgetMs: a writer slower than another that appends without
   * pause (a second ckd under load, a cluster's longer round trips) would otherwise lose every
   * race for a few milliseconds and give up while its caller could still wait.
   */
  maxAttempts?: number;
  retryBudgetMs?: number;
  /**
   * An append that got no acknowledgement (the server overloaded, or dropping it) is made
   * again, with the same message id, at most this often; then its caller gets Unavailable.
   */
  maxUnacknowledged?: number;
}

export class Sequencer {
  /** Running counts, for metrics: appends acknowledged, appends refused because another writer got there first, chain recoveries, commands given up. */
  readonly stats = { appended: 0, refused: 0, recoveries: 0, aborted: 0 };
  private readonly queue: Job[] = [];
  private readonly inflight: Job[] = [];
  private readonly overlay = new Map<string, OverlayEntry>();
  /** Own message ids seen applied by the projector, for appends with an unknown outcome. */
  private readonly appliedIds = new Map<string, number>();
  /**
   * Message ids of appends not settled yet (in flight, or under recovery): only these are
   * recorded in appliedIds, which otherwise would keep every id ckd ever appended.
   */
  private readonly watchedIds = new Set<string>();
  private nextExpected = 0;
  /**
   * Message id of this sequencer's previous append in the current chain (none right after a
   * resync): the next append expects it as the stream's last message, not only its sequence.
   */
  private chainMsgId: string | undefined;
  /** Bumped whenever the overlay is dropped: a decision taken across a bump is void. */
  private epoch = 0;
  private synced = false;
  private pumping = false;
  private pumpScheduled = false;
  private recovering: Promise<void> | undefined;
  private readonly maxAttempts: number;
  private readonly retryBudgetMs: number;
  private readonly maxUnacknowledged: number;

  constructor(
    private readonly log: EventLog,
    private readonly projector: Projector,
    private readonly protos: Protos,
    opts: SequencerOptions = {},
  ) {
    this.maxAttempts = opts.maxAttempts ?? 20;
    this.retryBudgetMs = opts.retryBudgetMs ?? 15_000;
    this.maxUnacknowledged = opts.maxUnacknowledged ?? 3;
    projector.onApplied((msgs) => {
      const last = msgs[msgs.length - 1]!.seq;
      for (const [k, e] of this.overlay) if (e.seq <= last) this.overlay.delete(k);
      if (this.watchedIds.size > 0) {
        for (const m of msgs) {
          const id = m.headers["Nats-Msg-Id"];
          if (id && this.watchedIds.has(id)) this.appliedIds.set(id, m.seq);
        }
      }
    });
  }

  /**
   * Whether the projection holds everything the log holds now: false while the log is
   * unreachable (what was appended meanwhile, an append whose outcome is unknown among it,
   * cannot be known). Sweeps that remove what no record names ask it first.
   */
  async caughtUp(): Promise<boolean> {
    if (this.log.connectionState !== "connected") return false;
    try {
      await this.projector.catchUp();
      return !this.projector.error && this.log.connectionState === "connected";
    } catch {
      return false;
    }
  }

  /** The most bytes one event may take: the log's max_payload less the room for headers. */
  get maxEventBytes(): number {
    return this.log.maxPayload - HEADER_ROOM;
  }

  /** Runs a command: decide on current state, append its event, wait until applied. */
  submit<T>(decide: Decide<T>): Promise<T> {
    if (this.log.connectionState !== "connected") {
      return Promise.reject(notStored(unavailable(`event log (${this.log.connectionState})`)));
    }
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        decide: decide as Decide<unknown>,
        resolve: resolve as (v: unknown) => void,
        reject,
        attempts: 0,
        unknowns: 0,
        since: Date.now(),
        msgId: randomUUID(),
      });
      this.schedulePump();
    });
  }

  private readonly view: StateView = {
    get: <T>(key: string): T | undefined => {
      const e = this.overlay.get(key);
      if (e) return e.value as T | undefined;
      return this.projector.db.getSync(key) as T | undefined;
    },
    hasAny: async (prefixes: readonly string[]): Promise<boolean> => {
      for (const p of prefixes) {
        for (const [k, e] of this.overlay) if (k.startsWith(p) && e.value !== undefined) return true;
        const deleted = (k: string) => {
          const e = this.overlay.get(k);
          return e !== undefined && e.value === undefined;
        };
        if (await this.projector.db.hasPrefix(p, deleted)) return true;
      }
      return false;
    },
    scan: <T>(prefix: string): [string, T][] => {
      const merged = new Map<string, unknown>();
      for (const [k, v] of this.projector.db.scan(prefix)) merged.set(k, v);
      for (const [k, e] of this.overlay) {
        if (!k.startsWith(prefix)) continue;
        if (e.value === undefined) merged.delete(k);
        else merged.set(k, e.value);
      }
      return [...merged.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)) as [string, T][];
    },
  };

  /**
   * Pumps once the calls that arrived together have queued (the end of this turn of the event
   * loop): their appends then reach the server in one write instead of one write each.
   */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      void this.pump();
    });
  }

  private async pump(): Promise<void> {
    if (this.pumping || this.recovering) return;
    this.pumping = true;
    try {
      while (this.queue.length > 0 && !this.recovering) {
        if (this.log.connectionState !== "connected") {
          this.queue.shift()!.reject(notStored(unavailable(`event log (${this.log.connectionState})`)));
          continue;
        }
        if (!this.synced) {
          await this.resync();
          continue; // a recovery may have started meanwhile: check again
        }
        const job = this.queue.shift()!;
        const epoch = this.epoch;
        let decision: Decision<unknown> | undefined;
        let failure: unknown;
        try {
          // A decision taken synchronously is appended without yielding, so the appends of a
          // burst of queued commands leave in one write to the server instead of one each.
          const d = job.decide(this.view);
          decision = d instanceof Promise ? await d : d;
        } catch (err) {
          failure = err;
        }
        // The view changed under the decision (a recovery dropped the overlay, or a resync
        // moved the base): neither its events nor its errors can be trusted. Decide again.
        if (this.epoch !== epoch || this.recovering || !this.synced) {
          this.queue.unshift(job);
          continue;
        }
        if (!decision || !decision.event) {
          // Nothing to append: an error, or nothing to change. Either may rest on appends
          // still in flight (the overlay): answered once they are applied, decided again if
          // any of them did not land (the answer would describe a state that never was).
          // (Appends acknowledged but not applied yet count too: their changes are in the overlay.)
          const restsOn = this.inflight.slice();
          let upTo = 0;
          for (const e of this.overlay.values()) if (e.seq > upTo) upTo = e.seq;
          if (restsOn.length > 0 || upTo > this.projector.db.appliedSeq) void this.answerAfter(job, epoch, restsOn, upTo, decision, failure);
          else if (decision) job.resolve(decision.result);
          else job.reject(notStored(failure));
          continue;
        }
        job.result = decision.result;
        try {
          this.appendDecided(job, decision.event);
        } catch (err) {
          // Its event could not be encoded or folded: nothing left, nothing was changed.
          job.reject(notStored(err));
        }
      }
    } catch (err) {
      // Resync failed (log unreachable): everything waiting fails fast (queued: not appended,
      // or known not to be stored).
      for (const j of this.queue.splice(0)) j.reject(notStored(asUnavailable(err, true)));
    } finally {
      this.pumping = false;
    }
  }

  /** Answers a decision that appended nothing once the appends it rested on are applied. */
  private async answerAfter(job: Job, epoch: number, restsOn: Job[], upTo: number, decision: Decision<unknown> | undefined, failure: unknown): Promise<void> {
    const results = await Promise.all(restsOn.map((j) => j.append!));
    const landed = results.every((r) => r.ok);
    if (landed) await this.projector.waitFor(Math.max(upTo, ...results.map((r) => (r.ok ? r.seq : 0))));
    if (!landed || this.epoch !== epoch) {
      this.queue.unshift(job);
      this.schedulePump();
      return;
    }
    if (decision) job.resolve(decision.result);
    else job.reject(notStored(failure));
  }

  private appendDecided(job: Job, draft: EventDraft): void {
    const timestamp = draft.timestamp ?? nowTimestamp();
    const data = encodeEnvelope(this.protos, draft, timestamp);
    // Refused before anything is chained on it: the server would refuse it anyway, and an
    // append that never left cannot be an unknown outcome to recover from.
    if (data.length > this.maxEventBytes) {
      job.reject(
        notStored(invalidArgument(`the ${draft.topic} event would be ${data.length} bytes, more than the log takes (the NATS server's max_payload ${this.log.maxPayload} bytes, less ${HEADER_ROOM} for headers)`)),
      );
      return;
    }
    // Everything that may throw comes before the first change to the sequencer's state.
    const expected = this.nextExpected;
    const seq = expected + 1;
    const projected = draft.packed === undefined;
    const logged: LoggedEvent = {
      seq,
      namespace: draft.namespace,
      topic: draft.topic,
      timestamp,
      typeName: draft.typeName,
      payload: draft.payload,
    };
    const changes = projected ? evolve(logged, (key) => this.view.get(key)) : [];
    const subject = subjectOf(draft);
    this.nextExpected++;
    for (const [k, v] of changes) this.overlay.set(k, { value: v, seq });
    const headers = { [ORIGIN_HEADER]: projected ? ORIGIN_COMMAND : ORIGIN_PUBLISH };
    this.inflight.push(job);
    this.watchedIds.add(job.msgId);
    const expectLastMsgId = this.chainMsgId;
    this.chainMsgId = job.msgId;
    job.append = this.log.append(subject, data, { msgId: job.msgId, expectLastSeq: expected, expectLastMsgId, headers }).then(
      (ack) => {
        if (!ack.duplicate) {
          this.projector.applyOwn({ seq: ack.seq, subject, data, headers: { ...headers, "Nats-Msg-Id": job.msgId }, time: new Date(), pending: 0 });
        }
        return { ok: true as const, seq: ack.seq };
      },
      (err) => ({ ok: false as const, err }),
    );
    void job.append.then((r) => this.settle(job, r));
  }

  private settle(job: Job, r: { ok: true; seq: number } | { ok: false; err: unknown }): void {
    if (this.recovering) return; // recovery owns every in-flight job now
    if (r.ok) {
      this.stats.appended++;
      this.removeInflight(job);
      this.projector.waitFor(r.seq).then(() => this.finish(job));
      return;
    }
    this.stats.recoveries++;
    this.recovering = this.recover().finally(() => {
      this.recovering = undefined;
      void this.pump();
    });
  }

  private finish(job: Job): void {
    const err = this.projector.error;
    if (err) job.reject(unavailable(`projection: ${err.message}`));
    else job.resolve(job.result);
  }

  private removeInflight(job: Job): void {
    const i = this.inflight.indexOf(job);
    if (i >= 0) this.inflight.splice(i, 1);
    this.unwatch(job);
  }

  private unwatch(job: Job): void {
    this.watchedIds.delete(job.msgId);
    this.appliedIds.delete(job.msgId);
  }

  /**
   * The chain broke (a foreign append, a timeout or a lost connection). Let every in-flight
   * append settle, catch the projection up with the stream, then decide the refused commands
   * again, in their original order, ahead of everything queued after them.
   */
  private async recover(): Promise<void> {
    const jobs = this.inflight.splice(0);
    try {
      await this.recoverJobs(jobs);
    } finally {
      for (const job of jobs) this.unwatch(job);
    }
  }

  private async recoverJobs(jobs: Job[]): Promise<void> {
    const results = await Promise.all(jobs.map((j) => j.append!));
    const redo: Job[] = [];
    const unknown: Job[] = [];
    jobs.forEach((job, i) => {
      const r = results[i]!;
      if (r.ok) {
        this.stats.appended++;
        this.projector.waitFor(r.seq).then(() => this.finish(job));
        return;
      }
      job.lastRefusal = (r.err as Error)?.message ?? String(r.err);
      if (isWrongLastSequence(r.err)) {
        this.stats.refused++;
        redo.push(job);
      } else if (isRefusedAppend(r.err)) {
        // The log said no for its own reasons (full, not permitted, no stream): nothing was
        // stored, and deciding again would meet the same answer. The appends chained on it
        // were refused for a wrong last sequence and are decided again.
        job.reject(notStored(asUnavailable(r.err)));
      } else unknown.push(job);
    });
    this.synced = false;
    this.overlay.clear();
    this.epoch++;
    if (this.log.connectionState !== "connected") {
      // No learning the log's state now (a request made while disconnected is thrown away by
      // nats.js at the reconnect, and would hold every later call until it timed out): the
      // refused fail as not stored, the rest as unknown; the next command resyncs once the
      // connection is back.
      this.failRecovered(redo, unknown, unavailable(`event log (${this.log.connectionState})`));
      return;
    }
    // Refused again and again: another writer keeps appending. A short random pause before
    // learning the state again lets two writers that break each other's chains fall out of step.
    const most = redo.reduce((m, j) => Math.max(m, j.attempts), 0);
    if (most >= 3) await sleep(Math.random() * Math.min(50, 2 ** most));
    try {
      await this.resync();
    } catch (err) {
      this.failRecovered(redo, unknown, err);
      return;
    }
    // An append whose outcome was unknown may have been stored: the projector saw its id.
    let unacknowledged = 0;
    for (const job of unknown) {
      const seq = this.appliedIds.get(job.msgId);
      if (seq !== undefined) {
        this.finish(job);
        continue;
      }
      job.unknowns++;
      if (job.unknowns >= this.maxUnacknowledged) {
        // Not known to be stored, nor known not to be: a late copy may still land (same id).
        job.reject(unavailable(`event log: no acknowledgement for the ${job.unknowns} appends of this command (last: ${job.lastRefusal}); it may yet be recorded`));
        continue;
      }
      unacknowledged = Math.max(unacknowledged, job.unknowns);
      redo.push(job);
    }
    this.appliedIds.clear();
    // The server did not answer: give it a moment before the same appends go again.
    if (unacknowledged > 0) await sleep(Math.min(1000, 100 * 2 ** unacknowledged));
    redo.sort((a, b) => jobs.indexOf(a) - jobs.indexOf(b));
    for (let i = redo.length - 1; i >= 0; i--) {
      const job = redo[i]!;
      job.attempts++;
      job.append = undefined;
      if (job.attempts >= this.maxAttempts && Date.now() - job.since >= this.retryBudgetMs) {
        this.stats.aborted++;
        job.reject(notStored(aborted(`command decided ${job.attempts} times on state other writers kept changing (last refusal: ${job.lastRefusal})`)));
        continue;
      }
      this.queue.unshift(job);
    }
  }

  /** Ends a recovery that cannot learn the log's state: refused appends were not stored; the others may have been. */
  private failRecovered(redo: Job[], unknown: Job[], err: unknown): void {
    for (const j of redo) j.reject(notStored(asUnavailable(err, true)));
    for (const j of unknown) j.reject(asUnavailable(err, true));
    this.appliedIds.clear();
  }

  /**
   * Learns the stream's last sequence and waits until the projection holds everything up to
   * it: the catch-up waits for the last message stored, not the last sequence, which
   * JetStream keeps when that message is deleted (it would never come), and passes such a
   * deleted tail. The next append still expects the last sequence: JetStream numbers it after
   * the deleted ones, and compares its expectation with that number.
   */
  private async resync(): Promise<void> {
    const { last } = await this.projector.catchUp();
    if (this.projector.error) throw this.projector.error;
    // The log is the truth: a projection ahead of it was damaged and is rebuilt at start.
    this.nextExpected = last;
    this.chainMsgId = undefined;
    this.overlay.clear();
    this.epoch++;
    this.synced = true;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function asUnavailable(err: unknown, fresh = false): CkError {
  if (err instanceof CkError && !fresh) return err;
  if (err instanceof CkError) return new CkError(err.errorClass, err.message, { cause: err });
  return unavailable(`event log: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** submit's errors whose event surely is not in the log (refused, or not sent at all). */
const notStoredErrors = new WeakSet<object>();

function notStored<E>(err: E): E {
  if (typeof err === "object" && err !== null) notStoredErrors.add(err);
  return err;
}

/**
 * Whether a submit that failed surely appended nothing: refused by its decision, refused by
 * the log, or never sent. Any other failure (the log lost after the append left) may have
 * been stored: a change made before the submit is then neither undone nor taken for recorded.
 */
export function surelyNotStored(err: unknown): boolean {
  return typeof err === "object" && err !== null && notStoredErrors.has(err);
}
