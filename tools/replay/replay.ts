// The replay library: find ckd's log, fold it into a fresh projection up to a point, and
// compare two projections byte for byte. tools/replay/main.ts is its command line.
import { resolve } from "node:path";
import { EventLog, DEFAULT_STREAM, natsConnectOptions, natsFilesOf, checkNatsFiles, redactNatsUrl, type NatsFiles } from "../../src/eventstore/log.js";
import { MANAGED_INBOX_PREFIX, NatsServerProcess } from "../../src/eventstore/nats-server.js";
import { ProjectionDb, META_PREFIX } from "../../src/projections/db.js";
import { Projector } from "../../src/projections/projector.js";
import { readInWorker } from "../../src/eventstore/worker-reader.js";
import { loadProtos } from "../../src/protos/protos.js";
import { readRootRecord, rootPaths } from "../../src/api/daemon.js";

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

/** Parses --until: a positive integer is a sequence, anything else a time. */
export function parseUntil(v: string | undefined): { seq?: number; time?: Date } {
  if (v === undefined) return {};
  if (/^\d+$/.test(v)) return { seq: Number(v) };
  const t = new Date(v);
  if (Number.isNaN(t.getTime())) throw new Error(`--until "${v}" is neither a sequence number nor a time`);
  return { time: t };
}

export interface RebuildResult {
  db: ProjectionDb;
  events: number;
  seconds: number;
  appliedSeq: number;
}

/** Folds the log into a fresh projection at `out`, up to a point. */
export async function rebuild(log: EventLog, out: string, until: { seq?: number; time?: Date } = {}): Promise<RebuildResult> {
  await ProjectionDb.destroy(out);
  const db = await ProjectionDb.open(out);
  const info = await log.info();
  await db.setLogIdentity({ stream: log.stream, created: String(info.created) });
  const last = info.state.last_seq;
  const untilSeq = Math.min(last, until.seq ?? last);
  const started = process.hrtime.bigint();
  if (untilSeq > 0) {
    // NATS in a worker thread, decoding and folding in this one: the two cores share it.
    const source = (fromSeq: number, signal: AbortSignal) => readInWorker({ url: log.url, files: log.files, inboxPrefix: log.inboxPrefix, stream: log.stream, fromSeq, signal, name: "ck-replay-reader" });
    const projector = new Projector(db, log, loadProtos(), { untilSeq, untilTime: until.time, bulk: { source, threshold: 0 } });
    projector.start();
    await projector.finished();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { db, events: db.appliedSeq, seconds, appliedSeq: db.appliedSeq };
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
    if (x && (!y || x[0] < y[0])) {
      diffs.push(`only in live: ${printable(x[0])}`);
      x = next(ia);
    } else if (y && (!x || y[0] < x[0])) {
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

