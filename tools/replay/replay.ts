// The replay library: find ckd's log, fold it into a fresh projection up to a point, and
// compare two projections byte for byte. tools/replay/main.ts is its command line.
import { resolve } from "node:path";
import { EventLog, DEFAULT_STREAM, natsConnectOptions, natsFilesOf, checkNatsFiles, lastStoredSeq, redactNatsUrl, type NatsFiles } from "../../src/eventstore/log.js";
import { MANAGED_INBOX_PREFIX, NatsServerProcess } from "../../src/eventstore/nats-server.js";
import { ProjectionDb, META_PREFIX, PROJECTION_FORMAT, compareKeys } from "../../src/projections/db.js";
import { Projector } from "../../src/projections/projector.js";
import { LogGapError, gapsOfDeleted, type LogGap } from "../../src/projections/log-gaps.js";
import { chooseBase, loadBestBase, takeBase } from "../../src/projections/base.js";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { execFile } from "node:child_process";
import { hostname } from "node:os";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BaseStore, type BaseLock, type BaseMarker } from "../../src/eventstore/base-store.js";
import { readInWorker } from "../../src/eventstore/worker-reader.js";
import { loadProtos } from "../../src/protos/protos.js";
import { readRootRecord, rootPaths } from "../../src/api/daemon.js";
import { parseRfc3339 } from "../../src/commands/validation.js";

export interface LogFlags {
  root?: string;
  nats?: string;
  stream?: string;
  natsTlsCa?: string;
  natsTlsCert?: string;
  natsTlsKey?: string;
  natsCreds?: string;
  natsNkey?: string;
}

export interface OpenedLog {
  log: EventLog;
  /** The store of ckd's own nats-server, when the log is there (it runs on this machine). */
  storeDir?: string;
  /** Where a base is folded before it is stored: the ckd root when given (its disk, not a tmpfs). */
  workDir?: string;
  close(): Promise<void>;
}

/** Finds and opens the log from flags (CK_NATS for --nats) or from ckd's record under --root. */
export async function openLogFor(flags: LogFlags): Promise<OpenedLog> {
  let url = flags.nats || process.env.CK_NATS || undefined;
  let stream = flags.stream;
  let files: NatsFiles | undefined = natsFilesOf({
    caFile: absolute(flags.natsTlsCa),
    certFile: absolute(flags.natsTlsCert),
    keyFile: absolute(flags.natsTlsKey),
    credsFile: absolute(flags.natsCreds),
    nkeyFile: absolute(flags.natsNkey),
  });
  if (url) {
    try {
      natsConnectOptions(url);
    } catch (err) {
      throw new Error(`--nats (CK_NATS): ${(err as Error).message}`);
    }
  }
  if (files) await checkNatsFiles(files, url);
  let temp: NatsServerProcess | undefined;
  let managed = false;
  const rec = flags.root ? await readRootRecord(flags.root) : undefined;
  if (flags.root && !rec && !url) throw new Error(`${rootPaths(flags.root).record} not found: is ${flags.root} a ckd root? (or pass --nats URL)`);
  if (rec) {
    stream ??= rec.stream;
    // The files ckd was given, for the servers it was given (a URL with the password it hides).
    if (!files && (!url || redactNatsUrl(url) === rec.natsUrl)) files = rec.natsFiles;
    if (!url && rec.managed && rec.natsStoreDir) {
      managed = true;
      // ckd's own server asks for the password it keeps in its store (root's to read).
      url = (await NatsServerProcess.clientUrlOf(rec.natsStoreDir)) ?? rec.natsUrl;
      if (!(await reachable(url))) {
        temp = await NatsServerProcess.start({ storeDir: rec.natsStoreDir, auth: true });
        url = temp.url;
      }
    } else if (!url) {
      if (rec.natsUrl.includes("***@")) {
        throw new Error(`${rootPaths(flags.root!).record} does not keep the NATS password: pass --nats URL with it (or CK_NATS)`);
      }
      url = rec.natsUrl;
    }
  }
  if (!url) throw new Error("no log: pass --root DIR or --nats URL");
  const log = await EventLog.open({ url, files, inboxPrefix: managed ? MANAGED_INBOX_PREFIX : undefined, stream: stream ?? DEFAULT_STREAM, name: "ck-replay" });
  return {
    log,
    storeDir: managed ? rec?.natsStoreDir : undefined,
    workDir: flags.root ? resolve(flags.root) : undefined,
    close: async () => {
      await log.close();
      await temp?.stop();
    },
  };
}

function absolute(path: string | undefined): string | undefined {
  return path ? resolve(path) : undefined;
}

async function reachable(url: string): Promise<boolean> {
  const { connect } = await import("@nats-io/transport-node");
  try {
    const nc = await connect({ ...natsConnectOptions(url), timeout: 1500, reconnect: false });
    await nc.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses --until (or the flag named): digits are a sequence, else an RFC 3339 time with its
 * zone (what ck prints); anything else is refused, not guessed at.
 */
export function parseUntil(v: string | undefined, flag = "--until"): { seq?: number; time?: Date } {
  if (v === undefined) return {};
  if (/^\d+$/.test(v)) return { seq: Number(v) };
  const time = parseRfc3339(v);
  if (!time) throw new Error(`${flag} "${v}" is neither a sequence number nor an RFC 3339 time with its zone (e.g. 2026-12-01T10:00:00Z)`);
  return { time };
}

export interface RebuildResult {
  db: ProjectionDb;
  /** Events folded (after the base, when one was loaded). */
  events: number;
  /** Time spent folding those events (the rate's denominator): opening or loading excluded. */
  seconds: number;
  /** Time spent loading the base, when one was loaded. */
  baseSeconds?: number;
  appliedSeq: number;
  /** The base the rebuild started from (the log's history before it was compacted). */
  base?: BaseMarker;
  /** Why later bases were passed over (damaged, removed meanwhile). */
  passedOver: string[];
  /** Messages deleted from inside the log that the fold crossed (only with allowGaps). */
  gaps: LogGap[];
}

export interface RebuildOptions {
  /**
   * Fold across messages deleted from inside the log (each one listed in the result) instead
   * of refusing to: the operator's explicit choice (--allow-gaps).
   */
  allowGaps?: boolean;
}

/**
 * Folds the log into a fresh projection at `out`, up to a point: from sequence 1, or, when
 * the history before the log's first message was compacted away, from the latest base that
 * covers it and is not past the point. Up to the log's end when called: its last message
 * stored, a deleted tail passed (src/projections/log-gaps.ts). Messages deleted from inside
 * the log fail it (DataLoss, naming them) unless `allowGaps`.
 */
export async function rebuild(log: EventLog, out: string, until: { seq?: number; time?: Date } = {}, opts: RebuildOptions = {}): Promise<RebuildResult> {
  const info = await log.info();
  const identity = { stream: log.stream, created: String(info.created) };
  const last = info.state.last_seq;
  const untilSeq = Math.min(last, until.seq ?? last);
  const first = info.state.first_seq;
  // The projection holds what the log holds: a directory of its own user's only.
  const privateDir = (dir: string) => mkdir(dir, { recursive: true, mode: 0o700 }).then(() => undefined);
  let base: BaseMarker | undefined;
  let passedOver: string[] = [];
  let db: ProjectionDb;
  let baseSeconds: number | undefined;
  if (first > 1) {
    const loading = process.hrtime.bigint();
    const loaded = await loadBestBase(out, new BaseStore(log), { firstSeq: first, identity, untilSeq, untilTime: until.time }, identity, privateDir);
    base = loaded.base;
    db = loaded.db;
    passedOver = loaded.passedOver;
    baseSeconds = Number(process.hrtime.bigint() - loading) / 1e9;
  } else {
    await ProjectionDb.destroy(out);
    await privateDir(out);
    db = await ProjectionDb.open(out);
    await db.setLogIdentity(identity);
  }
  const started = process.hrtime.bigint();
  const gaps: LogGap[] = [];
  if (untilSeq > db.appliedSeq) {
    // NATS in a worker thread, decoding and folding in this one: the two cores share it.
    const source = (fromSeq: number, signal: AbortSignal) => readInWorker({ url: log.url, files: log.files, inboxPrefix: log.inboxPrefix, stream: log.stream, fromSeq, signal, name: "ck-replay-reader" });
    const projector = new Projector(db, log, loadProtos(), {
      untilSeq,
      untilTime: until.time,
      bulk: { source, threshold: 0 },
      allowGaps: opts.allowGaps ? (g) => gaps.push(g) : undefined,
    });
    projector.start();
    try {
      // To the last message stored (not the last sequence, which a deleted last message keeps
      // and which never comes), or the until, or the first message past an until time.
      await projector.catchUp();
    } catch (err) {
      await projector.stop();
      await db.close().catch(() => undefined);
      throw err;
    }
    await projector.stop();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { db, events: db.appliedSeq - (base?.seq ?? 0), seconds, baseSeconds, appliedSeq: db.appliedSeq, base, passedOver, gaps };
}

/** Compares two projections byte for byte (bookkeeping keys aside); lists differences. */
export async function compareProjections(a: ProjectionDb, b: ProjectionDb, max = 20): Promise<string[]> {
  const diffs: string[] = [];
  const ia = a.scanRaw("");
  const ib = b.scanRaw("");
  const next = (it: Iterator<[string, Buffer]>) => {
    for (;;) {
      const r = it.next();
      if (r.done) return undefined;
      if (!r.value[0].startsWith(META_PREFIX)) return r.value;
    }
  };
  let x = next(ia);
  let y = next(ib);
  while ((x || y) && diffs.length < max) {
    const order = x && y ? compareKeys(x[0], y[0]) : 0;
    if (x && (!y || order < 0)) {
      diffs.push(`only in live: ${printable(x[0])}`);
      x = next(ia);
    } else if (y && (!x || order > 0)) {
      diffs.push(`only in rebuild: ${printable(y[0])}`);
      y = next(ib);
    } else {
      if (!x![1].equals(y![1])) diffs.push(`value differs: ${printable(x![0])}`);
      x = next(ia);
      y = next(ib);
    }
  }
  ia.return?.(undefined);
  ib.return?.(undefined);
  return diffs;
}

function printable(key: string): string {
  return key.replace(/\u0000/g, "/");
}


/** Parses a count of messages (0 or more), naming the flag when it is not one. */
export function parseCount(v: string, flag: string, unit = "messages"): number {
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new Error(`${flag}: expected a number of ${unit} (0 or more), got "${v}"`);
  return Number(v);
}

export function describeBase(b: BaseMarker): string {
  return `base at sequence ${b.seq} (${b.seqTime}): ${b.records} records, ${b.bytes} bytes in ${b.chunks} chunk${b.chunks === 1 ? "" : "s"}, format ${b.format}`;
}

/**
 * A base at the log's last sequence: the one stored already (read back in full first; a
 * damaged one is passed over), or a new one folded from the latest base (or sequence 1) and
 * read back in full before it is trusted. The caller holds the bases' lock. The fold refuses
 * messages deleted from inside the log unless `opts.allowGaps` (a base taken across them
 * would hide their loss for good once the history before it is cut); those it crossed are
 * returned.
 */
export async function baseAtLast(log: EventLog, store: BaseStore, workDir?: string, opts: RebuildOptions = {}): Promise<{ marker: BaseMarker; fresh: boolean; gaps: LogGap[] }> {
  const info = await log.info();
  const last = info.state.last_seq;
  if (last === 0) throw new Error(`the log (${log.stream}) holds no message yet: nothing to keep a base of`);
  const identity = { stream: log.stream, created: String(info.created) };
  const have = (await store.list())
    .filter((b) => b.seq === last && sameLogAndFormat(b, { ...identity, format: PROJECTION_FORMAT }))
    .reverse();
  for (const b of have) {
    try {
      await store.verify(b);
      return { marker: b, fresh: false, gaps: [] };
    } catch {
      // damaged: a new one is written below
    }
  }
  // A private directory (mkdtemp: 0700): the projection holds what the log holds.
  return withTempDir(async (dir) => {
    const r = await rebuild(log, join(dir, "meta"), { seq: last }, opts);
    try {
      if (r.appliedSeq !== last) throw new Error(`the rebuild reached sequence ${r.appliedSeq}, not the log's last ${last}`);
      // The time of the state: the last message stored at or before the base (the last
      // sequence itself may be a deleted one, passed at the log's end).
      const { lastStored } = await log.end(last);
      const seqTime = lastStored >= info.state.first_seq && lastStored > (r.base?.seq ?? 0) ? (await log.jsm.streams.getMessage(log.stream, { seq: lastStored }))?.time : undefined;
      const marker = await takeBase(r.db, store, identity, seqTime ?? new Date(r.base?.seqTime ?? Date.now()));
      await store.verify(marker);
      return { marker, fresh: true, gaps: r.gaps };
    } finally {
      await r.db.close();
    }
  }, workDir, ".ck-replay-base-");
}

/**
 * Runs `fn` with a private temporary directory (mkdtemp: 0700) under `parent`, removed after,
 * and by a stop signal (releaseHeldLocks) if one comes first.
 */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>, parent = tmpdir(), prefix = "ck-replay-"): Promise<T> {
  const dir = await mkdtemp(join(parent, prefix));
  temps.add(dir);
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
    temps.delete(dir);
  }
}

/**
 * `ck-replay base`: a base at the log's last sequence, under the bases' lock. An empty log is
 * refused before anything is written (no lock taken, no bases stream made).
 */
export async function baseNow(
  log: EventLog,
  workDir: string | undefined,
  opts: { breakLock?: boolean; onWarning?: (msg: string) => void; allowGaps?: boolean } = {},
): Promise<{ marker: BaseMarker; fresh: boolean; gaps: LogGap[] }> {
  if ((await log.lastSeq()) === 0) throw new Error(`the log (${log.stream}) holds no message yet: nothing to keep a base of`);
  const store = new BaseStore(log);
  return withBaseLock(store, "base", () => baseAtLast(log, store, workDir, { allowGaps: opts.allowGaps }), opts);
}

/**
 * Runs `fn` holding the bases' lock (one base writer or compaction at a time). A release that
 * fails (the lock was taken over) is told to `onWarning`, never put in place of `fn`'s result
 * or error.
 */
export async function withBaseLock<T>(
  store: BaseStore,
  what: string,
  fn: (lock: BaseLock) => Promise<T>,
  opts: { breakLock?: boolean; staleMs?: number; onWarning?: (msg: string) => void } = {},
): Promise<T> {
  if (stopping) throw new Error("stopped");
  const taking = store.lock(`ck-replay ${what} on ${hostname()}, pid ${process.pid}`, { breakLock: opts.breakLock, staleMs: opts.staleMs });
  beingTaken.add(taking);
  let lock: BaseLock;
  try {
    lock = await taking;
  } finally {
    beingTaken.delete(taking);
  }
  if (lock.tookOverFrom) opts.onWarning?.(`took over the bases' lock from ${lock.tookOverFrom}`);
  // Once stopping, no step that removes anything starts: refresh() comes before each.
  const guarded: BaseLock = {
    refresh: async () => {
      notStopping();
      await lock.refresh();
    },
    release: () => lock.release(),
  };
  held.add(lock);
  try {
    return await fn(guarded);
  } finally {
    if (held.delete(lock)) await lock.release().catch((err: Error) => opts.onWarning?.(`releasing the bases' lock: ${err.message}`));
  }
}

const held = new Set<BaseLock>();
const beingTaken = new Set<Promise<BaseLock>>();
const temps = new Set<string>();
let stopping = false;

/** Throws once a stop signal came: called right before each request that removes something. */
function notStopping(): void {
  if (stopping) throw new Error("stopped");
}

/** True once a stop signal came (the command's own errors are then beside the point). */
export function isStopping(): boolean {
  return stopping;
}

/**
 * For a stop signal: no further step that removes anything starts, the bases' locks this
 * process holds (or is taking) are released, so the next compaction need not wait for them
 * to go stale, and its temporary projections are removed. Every step of a compaction is one
 * request to the server, so stopping between them leaves a state every reader copes with.
 */
export async function releaseHeldLocks(): Promise<void> {
  stopping = true;
  for (const taking of [...beingTaken]) {
    const lock = await taking.catch(() => undefined);
    if (lock) held.add(lock);
  }
  const locks = [...held];
  held.clear();
  await Promise.all(locks.map((l) => l.release().catch(() => undefined)));
  await Promise.all([...temps].map((d) => rm(d, { recursive: true, force: true }).catch(() => undefined)));
}

export interface CompactResult {
  /** None when the log holds no message yet (nothing to compact). */
  base?: BaseMarker;
  /** The base the cut followed (the new one unless keepBases > 1); none: fewer bases than keepBases, nothing cut. */
  anchor?: BaseMarker;
  removed: number;
  firstSeq: number;
  lastSeq: number;
  prunedBases: number;
  /** Messages deleted from inside the log that the new base was folded across (only with allowGaps). */
  gaps: LogGap[];
}

export interface CompactOptions {
  /** Messages before the base kept in the log. */
  keep: number;
  /**
   * The cut follows the K-th newest base (default 1: the new one), keeping the history since
   * it, from which past states can still be shown.
   */
  keepBases?: number;
  /** The store of the nats-server holding the log, when it runs here (ckd's own): synced to disk before the cut. */
  storeDir?: string;
  /**
   * Otherwise, when the log or the bases stream has one replica, how long a base must have
   * been stored before the history goes: nats-server syncs its files every 2 minutes, and a
   * power loss in between could keep the cut but lose the base.
   */
  syncWaitMs: number;
  /** Told what is being done to make the base durable. */
  onProgress?: (msg: string) => void;
  /** Where the base is folded (see OpenedLog.workDir). */
  workDir?: string;
  /** Take over the bases' lock whoever holds it. */
  breakLock?: boolean;
  /** A lock not refreshed for this long is taken over (default 30 min). */
  lockStaleMs?: number;
  /** Take the base across messages deleted from inside the log (--allow-gaps): their loss can no longer be seen once cut. */
  allowGaps?: boolean;
}

/**
 * Stores a base at the log's last sequence, makes sure it is on disk, reads it back once more,
 * then removes the log's messages before it except the last `keep` of them, then the bases
 * that can no longer start a rebuild. The lock is refreshed before each step that removes
 * anything, so a compaction whose lock was taken over stops before it.
 */
export async function compact(log: EventLog, opts: CompactOptions): Promise<CompactResult> {
  const store = new BaseStore(log);
  if ((await log.info()).state.last_seq === 0) return { removed: 0, firstSeq: 0, lastSeq: 0, prunedBases: 0, gaps: [] };
  return withBaseLock(
    store,
    "compact",
    async (lock) => {
      const { marker, gaps } = await baseAtLast(log, store, opts.workDir, { allowGaps: opts.allowGaps });
      const replicas = Math.min((await log.info()).config.num_replicas ?? 1, await store.replicas());
      if (opts.storeDir) {
        await syncFileSystem(opts.storeDir);
        opts.onProgress?.(`synced the file system of ${opts.storeDir} (sync --file-system)`);
      } else if (replicas < 2) {
        const wait = new Date(marker.taken).getTime() + opts.syncWaitMs - Date.now();
        if (wait > 0) {
          opts.onProgress?.(`waiting ${Math.ceil(wait / 1000)} s until nats-server has synced the base to disk (one replica, syncs every 2 min; --sync-wait 0 skips)`);
          await new Promise((r) => setTimeout(r, wait));
        }
      }
      await store.verify(marker);
      // The base the cut follows: the new one, or with keepBases K the K-th newest (so the
      // history since it stays, and states from it on can still be shown).
      const anchor = await cutAnchor(store, marker, opts.keepBases ?? 1);
      await lock.refresh();
      const cut = anchor ? anchor.seq + 1 - opts.keep : 0;
      // The stored time of the last message the cut removes, read before it goes (recorded
      // after, for subscriptions that ask for events since a time).
      const firstNow = (await log.info()).state.first_seq;
      const lastCutTime = cut > 1 && cut - 1 >= firstNow ? (await log.jsm.streams.getMessage(log.stream, { seq: cut - 1 }))?.time : undefined;
      // A stop signal that came during the reads above released the lock: no purge then.
      notStopping();
      const removed = cut > 1 ? await log.purgeBefore(cut) : 0;
      if (lastCutTime) await store.recordCut(cut, lastCutTime);
      const info = await log.info();
      await lock.refresh();
      const prunedBases = await store.prune(info.state.first_seq - 1, notStopping);
      return { base: marker, anchor, removed, firstSeq: info.state.first_seq, lastSeq: info.state.last_seq, prunedBases, gaps };
    },
    { breakLock: opts.breakLock, staleMs: opts.lockStaleMs, onWarning: (m) => opts.onProgress?.(`warning: ${m}`) },
  );
}

/**
 * The K-th newest base of the new base's log and format, read back whole first (the cut keeps
 * the states from it on showable); undefined when there are fewer than K: nothing is cut yet.
 */
async function cutAnchor(store: BaseStore, newest: BaseMarker, k: number): Promise<BaseMarker | undefined> {
  if (k <= 1) return newest;
  const bySeq = new Map<number, BaseMarker>();
  for (const b of await store.list()) if (sameLogAndFormat(b, newest) && b.seq <= newest.seq) bySeq.set(b.seq, b);
  bySeq.set(newest.seq, newest);
  const seq = anchorSeq([...bySeq.keys()], newest.seq, k);
  const anchor = seq === undefined ? undefined : bySeq.get(seq);
  if (anchor) await store.verify(anchor);
  return anchor;
}

function sameLogAndFormat(a: Pick<BaseMarker, "stream" | "created" | "format">, b: Pick<BaseMarker, "stream" | "created" | "format">): boolean {
  return a.stream === b.stream && a.created === b.created && a.format === b.format;
}

/** The sequence of the k-th newest base, the one at `newest` counted (undefined: fewer than k). Pure. */
export function anchorSeq(baseSeqs: readonly number[], newest: number, k: number): number | undefined {
  const seqs = [...new Set([...baseSeqs.filter((s) => s <= newest), newest])].sort((a, b) => b - a);
  return seqs[Math.max(1, k) - 1];
}

export interface CompactionPlan {
  /** The log's last sequence: where the base would be. */
  last: number;
  /** Whether a base of this log and format is stored there already (and reads back whole). */
  baseStored: boolean;
  /** Why the bases stored there that do not read back whole are damaged (a new one would be stored). */
  damaged: string[];
  /** The base the cut would follow (undefined: fewer than keepBases, nothing cut). */
  anchor?: number;
  /** The log's first sequence now. */
  first: number;
  /** Messages before this sequence would be removed (0: none). */
  cut: number;
  /** Messages the cut would remove (those deleted from before it already are not counted). */
  removes: number;
  /** The log's first sequence after the cut. */
  firstAfter: number;
  /** Bases that could no longer start a rebuild, removed with it. */
  prunes: number;
  /** Messages deleted from inside the log that the new base would be folded across (only with allowGaps). */
  gaps: LogGap[];
}

/**
 * What `compact` would do now, changing nothing (`--dry-run`); undefined for an empty log.
 * What the real run would refuse on before it stores anything, this refuses on too, with the
 * same error: messages deleted from inside the log that the base's fold would meet (DataLoss,
 * naming the first; listed instead with `opts.allowGaps`), or history cut with no base to
 * start from; an older base the cut would follow that does not read back whole. Found from the
 * stream's state and the bases (those it relies on read back), without folding.
 */
export async function planCompaction(log: EventLog, keep: number, keepBases: number, opts: RebuildOptions = {}): Promise<CompactionPlan | undefined> {
  const info = await log.info();
  const last = info.state.last_seq;
  if (last === 0) return undefined;
  const first = Math.max(1, info.state.first_seq);
  const identity = { stream: log.stream, created: String(info.created), format: PROJECTION_FORMAT };
  const store = new BaseStore(log);
  const bases = await store.list();
  const mine = bases.filter((b) => sameLogAndFormat(b, identity));
  // A base stored at the last sequence counts once it reads back whole, as in the real run
  // (baseAtLast), which otherwise folds and stores a new one.
  const damaged: string[] = [];
  let baseStored = false;
  for (const b of mine.filter((m) => m.seq === last).reverse()) {
    try {
      await store.verify(b);
      baseStored = true;
      break;
    } catch (err) {
      damaged.push((err as Error).message);
    }
  }
  // Sequences missing between the first and the last (asked for only when the count shows some).
  const whole = info.state.messages === 0 || info.state.messages === last - info.state.first_seq + 1;
  const detailed = whole ? undefined : (await log.jsm.streams.info(log.stream, { deleted_details: true })).state;
  const deleted = detailed?.deleted ?? [];
  // A base stored at the last sequence is read back, not folded (baseAtLast): nothing to meet.
  let gaps: LogGap[] = [];
  if (!baseStored) {
    // Where rebuild would start: sequence 1, or the base loadBestBase would choose.
    let from = 0;
    if (info.state.first_seq > 1) {
      const chosen = chooseBase(bases, { firstSeq: info.state.first_seq, identity, untilSeq: last });
      if ("error" in chosen) throw new Error(chosen.error);
      from = chosen.base.seq;
    }
    gaps = detailed ? gapsOfDeleted(from, lastStoredSeq(detailed), deleted) : [];
    if (gaps.length && !opts.allowGaps) throw new LogGapError(log.stream, gaps[0]!, gaps[0]!.from - 1);
  }
  const anchor = anchorSeq(
    mine.map((b) => b.seq),
    last,
    keepBases,
  );
  // An older base the cut would follow is read back whole first, as the real run does (cutAnchor): its error, if not.
  if (anchor !== undefined && anchor !== last) {
    const bySeq = new Map<number, BaseMarker>();
    for (const b of mine) if (b.seq <= last) bySeq.set(b.seq, b);
    await store.verify(bySeq.get(anchor)!);
  }
  const cut = anchor === undefined ? 0 : anchor + 1 - keep;
  const firstAfter = Math.max(first, cut);
  return {
    last,
    baseStored,
    damaged,
    anchor,
    first,
    cut,
    // Those still stored: the purge counts no deleted one.
    removes: Math.max(0, cut - first) - deleted.filter((d) => d >= first && d < cut).length,
    firstAfter,
    prunes: bases.filter((b) => b.seq < firstAfter - 1).length,
    gaps,
  };
}

/** syncfs(2) of the file system holding `dir` (coreutils' `sync --file-system`). */
async function syncFileSystem(dir: string): Promise<void> {
  await new Promise<void>((resolvePromise, reject) => {
    execFile("sync", ["--file-system", dir], (err, _out, stderr) => (err ? reject(new Error(`sync --file-system ${dir}: ${stderr || err.message}`)) : resolvePromise()));
  });
}
