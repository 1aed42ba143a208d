// Bases: the projected state at one sequence of the log, kept in NATS beside the log, so that
// the log's history before it can be cut (compaction) and a projection still be rebuilt: from
// the base, then the messages after it. Stored in a stream of their own, `<log stream>_BASES`:
//   ck.bases.<log stream>.chunks.<id>   the state's bytes, in messages of at most chunkBytes
//   ck.bases.<log stream>.markers       one JSON marker per complete base, written last
//   ck.bases.<log stream>.lock          who writes or prunes bases now (one at a time)
//   ck.bases.<log stream>.cuts          one JSON record per cut: where it was, and the stored
//                                       time of the last message it removed
// A base without its marker (a writer stopped half way) is never read, and pruned later. What
// the bytes mean is the projection's business (src/projections/base.ts): this module stores,
// lists, reads back (checking count and sha256) and prunes them.
import { createHash, randomBytes } from "node:crypto";
import type { StoredMsg, StreamInfo } from "@nats-io/jetstream";
import { isStreamNotFound, type EventLog } from "./log.js";
import { holderGone, ownIdentity, processNow, type LockBody } from "./lock-holder.js";

export interface BaseMarker {
  /** Names the base's chunk subject. */
  id: string;
  /** The log sequence the state is at: every message up to it is folded in, none after. */
  seq: number;
  /** When the log stored message `seq` (point-in-time by time chooses by it). */
  seqTime: string;
  /** The log the state was folded from: its stream name and creation time. */
  stream: string;
  created: string;
  /** The layout of the state's records (the projection's format). */
  format: number;
  records: number;
  bytes: number;
  chunks: number;
  sha256: string;
  /** When the base was written. */
  taken: string;
  /** Where its first chunk sits in the bases stream. */
  firstChunk: number;
  /** Where the marker itself sits in the bases stream (filled in when read back). */
  markerSeq?: number;
}

export interface BaseLock {
  /** Says the holder is still at work; fails if another took the lock over. */
  refresh(): Promise<void>;
  release(): Promise<void>;
  /** Set when the lock was taken from a holder known to be gone (killed outright): who. */
  tookOverFrom?: string;
}

export type BaseMeta = Omit<BaseMarker, "id" | "records" | "bytes" | "chunks" | "sha256" | "taken" | "firstChunk" | "markerSeq">;

const utf8 = new TextDecoder();
const utf8e = new TextEncoder();

/** A message get that found no such message (JetStream answers 404, "no message found"). */
function isNoMessage(err: unknown): boolean {
  return (err as { code?: number | string }).code === 404 || /no message found|not found/i.test((err as Error).message);
}

export class BaseStore {
  readonly name: string;
  private readonly prefix: string;
  private directOk: boolean | undefined;

  constructor(private readonly log: EventLog) {
    this.name = `${log.stream}_BASES`;
    this.prefix = `ck.bases.${log.stream}`;
  }

  get markersSubject(): string {
    return `${this.prefix}.markers`;
  }

  chunkSubject(id: string): string {
    return `${this.prefix}.chunks.${id}`;
  }

  /** The bases stream's replicas (1 when it does not exist yet). */
  async replicas(): Promise<number> {
    try {
      return (await this.log.jsm.streams.info(this.name)).config.num_replicas ?? 1;
    } catch (err) {
      if (isStreamNotFound(err)) return 1;
      throw err;
    }
  }

  /** Largest chunk: under the server's message size limit, with room for headers. */
  get chunkBytes(): number {
    const max = this.log.nc.info?.max_payload ?? 1024 * 1024;
    return Math.max(4096, Math.min(1024 * 1024, max) - 4096);
  }

  /** True when the bases stream exists (a log never compacted may have none). */
  async exists(): Promise<boolean> {
    try {
      await this.log.jsm.streams.info(this.name);
      return true;
    } catch (err) {
      if (isStreamNotFound(err)) return false;
      throw err;
    }
  }

  /** Creates the bases stream like the log's (file storage, the log's replicas). */
  async ensure(): Promise<void> {
    let info: StreamInfo | undefined;
    try {
      info = await this.log.jsm.streams.info(this.name);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
    }
    if (info) {
      // A stream made without direct gets (an earlier ck): allowed now, or every chunk read
      // would wait out a request's timeout before asking the leader.
      if (!info.config.allow_direct) {
        await this.log.jsm.streams.update(this.name, { ...info.config, allow_direct: true });
        this.directOk = true;
      }
      return;
    }
    const replicas = (await this.log.info()).config.num_replicas ?? 1;
    try {
      await this.log.jsm.streams.add({
        name: this.name,
        subjects: [`${this.prefix}.>`],
        storage: "file" as never,
        num_replicas: replicas,
        discard: "old" as never,
        retention: "limits" as never,
        // Chunks are read by direct get (raw bytes); markers and the lock by message get.
        allow_direct: true,
      });
    } catch (err) {
      if (!(await this.exists())) throw err;
    }
  }

  /** Whether the bases stream answers direct gets (asked once). */
  private async directAllowed(): Promise<boolean> {
    if (this.directOk === undefined) {
      try {
        this.directOk = (await this.log.jsm.streams.info(this.name)).config.allow_direct === true;
      } catch {
        this.directOk = false;
      }
    }
    return this.directOk;
  }

  /** Every complete base, oldest first. */
  async list(): Promise<BaseMarker[]> {
    if (!(await this.exists())) return [];
    const out: BaseMarker[] = [];
    let from = 1;
    for (;;) {
      const m = await this.next(from, this.markersSubject);
      if (!m) break;
      from = m.seq + 1;
      let marker: BaseMarker;
      try {
        marker = JSON.parse(utf8.decode(m.data)) as BaseMarker;
      } catch {
        continue; // not one of ours
      }
      if (typeof marker.seq !== "number" || typeof marker.id !== "string") continue;
      out.push({ ...marker, markerSeq: m.seq });
    }
    return out.sort((a, b) => a.seq - b.seq || (a.markerSeq ?? 0) - (b.markerSeq ?? 0));
  }

  /** One message by sequence, by direct get; null when it cannot be had that way. */
  private direct(seq: number): Promise<StoredMsg | null> {
    return this.log.jsm.direct.getMessage(this.name, { seq }).catch(() => null);
  }

  /**
   * The next message on `subject` at or after `seq` in the bases stream, if any. Asked of the
   * stream's leader (a message get, not a direct get, which any replica may answer from behind).
   */
  private async next(seq: number, subject: string): Promise<StoredMsg | null> {
    try {
      return await this.log.jsm.streams.getMessage(this.name, { seq, next_by_subj: subject } as never);
    } catch (err) {
      if (isNoMessage(err)) return null;
      throw err;
    }
  }

  /**
   * Writes a base: its chunks, then its marker. The marker (written last) makes it visible;
   * a writer stopped before it leaves chunks nobody reads, pruned by the next prune.
   * `records` is asked once every chunk is written (the chunks count them as they go).
   */
  async write(meta: BaseMeta, chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>, records: () => number): Promise<BaseMarker> {
    await this.ensure();
    const id = randomBytes(12).toString("hex");
    const subject = this.chunkSubject(id);
    const hash = createHash("sha256");
    let bytes = 0;
    let count = 0;
    let firstChunk = 0;
    for await (const chunk of chunks) {
      hash.update(chunk);
      bytes += chunk.length;
      const ack = await this.log.js.publish(subject, chunk, { expect: { streamName: this.name } });
      if (count === 0) firstChunk = ack.seq;
      count++;
    }
    const marker: BaseMarker = {
      ...meta,
      id,
      records: records(),
      bytes,
      chunks: count,
      sha256: hash.digest("hex"),
      taken: new Date().toISOString(),
      firstChunk,
    };
    const ack = await this.log.js.publish(this.markersSubject, utf8e.encode(JSON.stringify(marker)), { expect: { streamName: this.name } });
    return { ...marker, markerSeq: ack.seq };
  }

  /**
   * Takes the bases' lock (one writer or pruner at a time): a message on the lock subject,
   * published only if the subject's last message is the one read (JetStream's expected last
   * subject sequence), so two takers cannot both win. Its age is the server's time of that
   * message; a holder refreshes it (`refresh`, the same way, so a refresh fails once another
   * took it over) before each step that removes anything. The message names the holder's
   * process (lock-holder.ts): a holder on this machine and in this process table that no
   * longer runs (killed outright) is taken over at once. Any other lock not refreshed for
   * `staleMs` (its holder died elsewhere) is taken over; `breakLock` takes over any lock.
   */
  async lock(holder: string, opts: { staleMs?: number; breakLock?: boolean } = {}): Promise<BaseLock> {
    const staleMs = opts.staleMs ?? 30 * 60_000;
    const me = ownIdentity();
    await this.ensure();
    const subject = `${this.prefix}.lock`;
    let last: StoredMsg | null = null;
    try {
      last = await this.log.jsm.streams.getMessage(this.name, { last_by_subj: subject });
    } catch (err) {
      if (!isNoMessage(err)) throw err;
    }
    let tookOverFrom: string | undefined;
    if (last && !opts.breakLock) {
      let held: LockBody = {};
      try {
        const parsed: unknown = JSON.parse(utf8.decode(last.data));
        if (parsed && typeof parsed === "object") held = parsed as LockBody;
      } catch {
        // Not a lock this code wrote: it is judged by its age alone.
      }
      const age = Date.now() - last.time.getTime();
      if (held.released !== true && age < staleMs) {
        if (!holderGone(held, me, processNow)) {
          throw new Error(
            `another base or compaction is at work on ${this.log.stream} (${held.holder}, last seen ${last.time.toISOString()}); try again once it is done, or pass --break-lock if it died`,
          );
        }
        tookOverFrom = `${String(held.holder)} (no longer running; last seen ${last.time.toISOString()})`;
      }
    }
    const body = (released?: boolean) => utf8e.encode(JSON.stringify({ holder, ...me, ...(released ? { released } : {}) }));
    const publish = (released: boolean, lastSeq: number) =>
      this.log.js.publish(subject, body(released), { expect: { streamName: this.name, lastSubjectSequence: lastSeq } });
    let seq: number;
    try {
      seq = (await publish(false, last?.seq ?? 0)).seq;
    } catch (err) {
      throw new Error(`another base or compaction took the lock on ${this.log.stream} first: ${(err as Error).message}`);
    }
    return {
      tookOverFrom,
      refresh: async () => {
        try {
          seq = (await publish(false, seq)).seq;
        } catch (err) {
          throw new Error(`the lock on ${this.log.stream}'s bases was taken over (--break-lock, or this took longer than ${staleMs / 60_000} min without a step): ${(err as Error).message}`);
        }
      },
      release: async () => {
        seq = (await publish(true, seq)).seq;
      },
    };
  }

  /**
   * Records a cut of the log: every message before `before` removed, the last of them stored
   * at `lastTime` (so a subscription asking for events since a time knows exactly whether any
   * it wants are gone).
   */
  async recordCut(before: number, lastTime: Date): Promise<void> {
    await this.ensure();
    await this.log.js.publish(`${this.prefix}.cuts`, utf8e.encode(JSON.stringify({ before, lastTime: lastTime.toISOString() })), { expect: { streamName: this.name } });
  }

  /** The latest cut recorded, if any. */
  async lastCut(): Promise<{ before: number; lastTime: string } | undefined> {
    if (!(await this.exists())) return undefined;
    try {
      const m = await this.log.jsm.streams.getMessage(this.name, { last_by_subj: `${this.prefix}.cuts` });
      if (!m) return undefined;
      const v = JSON.parse(utf8.decode(m.data)) as { before?: unknown; lastTime?: unknown };
      return typeof v.before === "number" && typeof v.lastTime === "string" ? { before: v.before, lastTime: v.lastTime } : undefined;
    } catch (err) {
      if (isNoMessage(err)) return undefined;
      throw err;
    }
  }

  /**
   * Where the log's stored history starts: its first sequence and, once history was cut and
   * `withTime` asks, the latest stored time a removed message can have (recorded by the cut;
   * else a base's at the cut; else, conservatively, the first stored message's or, with none
   * stored, the last one's).
   */
  async historyStart(withTime: boolean): Promise<{ firstSeq: number; cutUntil?: Date }> {
    const info = await this.log.info();
    const first = info.state.first_seq;
    if (first <= 1 || !withTime) return { firstSeq: first };
    const cut = await this.lastCut();
    if (cut && cut.before === first) return { firstSeq: first, cutUntil: new Date(cut.lastTime) };
    const at = (await this.list()).find((b) => b.seq === first - 1);
    if (at) return { firstSeq: first, cutUntil: new Date(at.seqTime) };
    const firstStored = info.state.messages > 0 ? (await this.log.jsm.streams.getMessage(this.log.stream, { seq: first }))?.time : undefined;
    return { firstSeq: first, cutUntil: firstStored ?? new Date(info.state.last_ts) };
  }

  /** Reads a base back in full: throws unless its count, bytes and sha256 are its marker's. */
  async verify(marker: BaseMarker): Promise<void> {
    for await (const _ of this.chunks(marker)) void _;
  }

  /** A base's chunks in order; fails unless their count and sha256 are the marker's. */
  async *chunks(marker: BaseMarker): AsyncGenerator<Uint8Array> {
    const subject = this.chunkSubject(marker.id);
    const hash = createHash("sha256");
    let from = marker.firstChunk || 1;
    let count = 0;
    let bytes = 0;
    // A base's chunks are written one after another, so they sit at consecutive sequences:
    // fetched a few ahead with direct gets, which answer with the raw bytes (a message get
    // answers in JSON, the data in base64: ~60 MB/s here). A chunk not found where expected
    // (another message between, a replica behind, a stream without direct gets) is asked of
    // the leader by subject instead. The sha256 below holds either way.
    const ahead: Promise<StoredMsg | null>[] = [];
    let nextAsk = from;
    // A stream without direct gets never answers one (each would wait out the timeout).
    const direct = await this.directAllowed();
    while (count < marker.chunks) {
      const lastExpected = from + (marker.chunks - count) - 1;
      while (direct && ahead.length < 4 && nextAsk <= lastExpected) ahead.push(this.direct(nextAsk++));
      let m = ahead.length ? await ahead.shift()! : null;
      if (!m || m.seq !== from || m.subject !== subject) {
        await Promise.all(ahead.splice(0));
        m = await this.next(from, subject);
        if (!m) break;
        nextAsk = m.seq + 1;
      }
      from = m.seq + 1;
      count++;
      bytes += m.data.length;
      hash.update(m.data);
      yield m.data;
    }
    await Promise.all(ahead.splice(0));
    const sha = hash.digest("hex");
    if (count !== marker.chunks || bytes !== marker.bytes || sha !== marker.sha256) {
      throw new Error(
        `base at sequence ${marker.seq} (${marker.id}) is damaged: read ${count} chunks, ${bytes} bytes, sha256 ${sha}; its marker says ${marker.chunks}, ${marker.bytes}, ${marker.sha256}`,
      );
    }
  }

  /**
   * Removes every base whose sequence is below `seq` (they can no longer start a rebuild once
   * the log's history before `seq` is cut), and chunks that no marker names. Returns the
   * number of bases removed.
   */
  async prune(seq: number, beforeEachRemoval: () => void = () => undefined): Promise<number> {
    const all = await this.list();
    const drop = all.filter((b) => b.seq < seq);
    const keep = all.filter((b) => b.seq >= seq);
    for (const b of drop) {
      beforeEachRemoval();
      await this.log.jsm.streams.purge(this.name, { filter: this.chunkSubject(b.id) });
      beforeEachRemoval();
      await this.log.jsm.streams.deleteMessage(this.name, b.markerSeq!, false);
    }
    // Chunks no marker names: writers stopped half way (or one at work right now, whose
    // read-back then fails before anything relies on it). Purged by exact subject: nats-server
    // 2.9 purges every message of a wildcard filter when asked for those before sequence 1.
    const named = new Set(keep.map((b) => this.chunkSubject(b.id)));
    const info = await this.log.jsm.streams.info(this.name, { subjects_filter: `${this.prefix}.chunks.>` });
    for (const subject of Object.keys(info.state.subjects ?? {})) {
      if (named.has(subject)) continue;
      beforeEachRemoval();
      await this.log.jsm.streams.purge(this.name, { filter: subject });
    }
    return drop.length;
  }
}
