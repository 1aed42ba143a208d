// Reading the log in a worker thread: the worker (reader-worker.ts) speaks NATS and posts
// the messages in batches, packed into one transferred buffer each (no structured clone of
// message objects); this side unpacks them into StoredMessages whose data are views into
// that buffer. For long reads (a rebuild, a projection far behind its log) the two cores
// then share the work: NATS in the worker, decoding and folding here.
import { Worker } from "node:worker_threads";
import type { StoredMessage } from "./log.js";
import type { NatsFiles } from "./nats-url.js";
import { MAX_BATCH_BYTES } from "./pull-bounds.js";

export interface ReaderWorkerData {
  url: string;
  files?: NatsFiles;
  inboxPrefix?: string;
  stream: string;
  fromSeq: number;
  maxBatch: number;
  /** Batches the worker may post ahead of the reader (flow control). */
  credits: number;
  name: string;
  /**
   * How the worker reads: its own pull consumer, falling back to nats.js when that cannot
   * start (default); only one of them (tests, comparisons).
   */
  engine?: "pull" | "nats.js";
}

export type ToWorker = { type: "credit" } | { type: "stop" };
type FromWorker =
  | { type: "batch"; buf: ArrayBuffer }
  | { type: "end" }
  | { type: "error"; message: string };

// Per message: seq f64, time (ms) f64, pending u32, then the byte lengths of subject,
// headers and data (u32 each), then those bytes. Headers are `k\0v\0…` (NATS header names
// and values hold no NUL); a name given twice keeps its first value.
const FIXED = 8 + 8 + 4 + 4 + 4 + 4;
const SEP = "\u0000";
const LF = 10;
const CR = 13;
const COLON = 58;


/** Builds one packed batch at a time in a buffer it reuses. */
export class BatchPacker {
  private buf = Buffer.allocUnsafe(1 << 16);
  private off = 0;
  private n = 0;

  get count(): number {
    return this.n;
  }

  /** Bytes of the batch so far. */
  get bytes(): number {
    return this.off;
  }

  private reserve(bytes: number): void {
    if (this.off + bytes <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.off + bytes));
    this.buf.copy(bigger, 0, 0, this.off);
    this.buf = bigger;
  }

  private fixed(seq: number, time: number, pending: number, subject: number, headers: number, data: number): void {
    const b = this.buf;
    b.writeDoubleLE(seq, this.off);
    b.writeDoubleLE(time, this.off + 8);
    b.writeUInt32LE(pending, this.off + 16);
    b.writeUInt32LE(subject, this.off + 20);
    b.writeUInt32LE(headers, this.off + 24);
    b.writeUInt32LE(data, this.off + 28);
    this.off += FIXED;
    this.n++;
  }

  add(m: StoredMessage): void {
    let h = "";
    for (const k in m.headers) h += k + SEP + m.headers[k] + SEP;
    const sl = Buffer.byteLength(m.subject);
    const hl = Buffer.byteLength(h);
    this.reserve(FIXED + sl + hl + m.data.length);
    this.fixed(m.seq, m.time.getTime(), m.pending, sl, hl, m.data.length);
    this.off += this.buf.write(m.subject, this.off, "utf8");
    this.off += this.buf.write(h, this.off, "utf8");
    this.buf.set(m.data, this.off);
    this.off += m.data.length;
  }

  /**
   * Adds a message from a NATS MSG/HMSG's bytes: subject [subS, subE), the header block
   * (`NATS/1.0` line, `Key: value` lines, values trimmed) [hdrS, hdrE), data [hdrE, dataE).
   */
  addRaw(seq: number, time: number, pending: number, b: Buffer, subS: number, subE: number, hdrS: number, hdrE: number, dataE: number): void {
    const sl = subE - subS;
    const dl = dataE - hdrE;
    this.reserve(FIXED + sl + (hdrE - hdrS) + dl);
    const at = this.off;
    this.off += FIXED;
    b.copy(this.buf, this.off, subS, subE);
    this.off += sl;
    const hStart = this.off;
    if (hdrE > hdrS) {
      let i = b.indexOf(LF, hdrS); // past the NATS/1.0 line
      while (i >= 0 && i + 1 < hdrE) {
        const ls = i + 1;
        let le = b.indexOf(LF, ls);
        if (le < 0 || le > hdrE) le = hdrE;
        i = le;
        let e = le > ls && b[le - 1] === CR ? le - 1 : le;
        let colon = ls;
        while (colon < e && b[colon] !== COLON) colon++;
        if (colon >= e) continue;
        let vs = colon + 1;
        while (vs < e && isSpace(b[vs]!)) vs++;
        while (e > vs && isSpace(b[e - 1]!)) e--;
        b.copy(this.buf, this.off, ls, colon);
        this.off += colon - ls;
        this.buf[this.off++] = 0;
        b.copy(this.buf, this.off, vs, e);
        this.off += e - vs;
        this.buf[this.off++] = 0;
      }
    }
    const hl = this.off - hStart;
    b.copy(this.buf, this.off, hdrE, dataE);
    this.off += dl;
    const end = this.off;
    this.off = at;
    this.fixed(seq, time, pending, sl, hl, dl);
    this.off = end;
  }

  /** The batch so far as an ArrayBuffer of its own (to transfer); the packer starts over. */
  finish(): ArrayBuffer {
    const ab = new ArrayBuffer(this.off);
    new Uint8Array(ab).set(this.buf.subarray(0, this.off));
    // Grown for a batch of large messages: not kept for good.
    if (this.buf.length > 2 * MAX_BATCH_BYTES) this.buf = Buffer.allocUnsafe(1 << 16);
    this.off = 0;
    this.n = 0;
    return ab;
  }
}

function isSpace(c: number): boolean {
  return c === 32 || c === 9;
}

/** Packs messages into one buffer for transfer to another thread. */
export function packBatch(msgs: readonly StoredMessage[]): ArrayBuffer {
  const p = new BatchPacker();
  for (const m of msgs) p.add(m);
  return p.finish();
}

/**
 * A message unpacked from a batch. Subject, headers and time are made from the batch's bytes
 * when first asked for: the fold reads one header of each message and rarely the rest, and
 * making them all up front was ~10% of a rebuild's folding thread.
 */
class PackedMessage implements StoredMessage {
  private subjectText: string | undefined;
  private headerMap: Record<string, string> | undefined;

  constructor(
    readonly seq: number,
    readonly pending: number,
    readonly data: Uint8Array,
    private readonly buf: Buffer,
    private readonly subjectAt: number,
    private readonly subjectLength: number,
    private readonly headersLength: number,
    private readonly ms: number,
  ) {}

  get subject(): string {
    return (this.subjectText ??= this.buf.toString("utf8", this.subjectAt, this.subjectAt + this.subjectLength));
  }

  get headers(): Record<string, string> {
    if (this.headerMap) return this.headerMap;
    // No prototype: a header named like an Object method ("toString") is a header like any other.
    const headers = Object.create(null) as Record<string, string>;
    if (this.headersLength > 0) {
      const at = this.subjectAt + this.subjectLength;
      const parts = this.buf.toString("utf8", at, at + this.headersLength).split(SEP);
      for (let i = 0; i + 1 < parts.length; i += 2) if (!(parts[i]! in headers)) headers[parts[i]!] = parts[i + 1]!;
    }
    return (this.headerMap = headers);
  }

  get time(): Date {
    return new Date(this.ms);
  }

  /** One header's first value, found in the packed bytes without making the map. */
  header(name: string): string | undefined {
    if (this.headerMap) return this.headerMap[name];
    const b = this.buf;
    let i = this.subjectAt + this.subjectLength;
    const end = i + this.headersLength;
    while (i < end) {
      const keyEnd = b.indexOf(0, i);
      const valueEnd = b.indexOf(0, keyEnd + 1);
      if (keyEnd < 0 || valueEnd < 0 || valueEnd >= end) break;
      if (keyEnd - i === name.length && asciiEquals(b, i, name)) return b.toString("utf8", keyEnd + 1, valueEnd);
      i = valueEnd + 1;
    }
    return undefined;
  }
}

function asciiEquals(b: Buffer, at: number, s: string): boolean {
  for (let k = 0; k < s.length; k++) if (b[at + k] !== s.charCodeAt(k)) return false;
  return true;
}

/** The inverse of packBatch; each message's data is a view into `ab`. */
export function unpackBatch(ab: ArrayBuffer): StoredMessage[] {
  const buf = Buffer.from(ab);
  const out: StoredMessage[] = [];
  let off = 0;
  while (off < ab.byteLength) {
    const seq = buf.readDoubleLE(off);
    const ms = buf.readDoubleLE(off + 8);
    const pending = buf.readUInt32LE(off + 16);
    const sl = buf.readUInt32LE(off + 20);
    const hl = buf.readUInt32LE(off + 24);
    const dl = buf.readUInt32LE(off + 28);
    off += FIXED;
    const dataAt = off + sl + hl;
    out.push(new PackedMessage(seq, pending, new Uint8Array(ab, dataAt, dl), buf, off, sl, hl, ms));
    off = dataAt + dl;
  }
  return out;
}

export interface WorkerReadOptions {
  url: string;
  /** TLS, creds or NKEY files: the pull reader speaks none of them, so these make the worker read through nats.js. */
  files?: NatsFiles;
  /** The reply-subject prefix (EventLogOptions.inboxPrefix). */
  inboxPrefix?: string;
  stream: string;
  fromSeq: number;
  signal?: AbortSignal;
  /** Largest batch the worker posts (default 256). */
  maxBatch?: number;
  /** Connection name shown by the server. */
  name?: string;
  engine?: ReaderWorkerData["engine"];
}

/**
 * Follows the log from `fromSeq` through a worker thread, in batches: the last message of a
 * batch is either the last the stream held when it was delivered (pending 0) or the
 * maxBatch-th. Ends when `signal` aborts or the caller stops iterating; a failure in the
 * worker is thrown here.
 */
export async function* readInWorker(opts: WorkerReadOptions): AsyncGenerator<StoredMessage[]> {
  const data: ReaderWorkerData = {
    url: opts.url,
    files: opts.files,
    inboxPrefix: opts.inboxPrefix,
    stream: opts.stream,
    fromSeq: opts.fromSeq,
    maxBatch: opts.maxBatch ?? 256,
    credits: 8,
    name: opts.name ?? "ck-reader",
    engine: opts.engine,
  };
  const worker = new Worker(new URL("./reader-worker.js", import.meta.url), { workerData: data });
  const queue: FromWorker[] = [];
  let wake: (() => void) | undefined;
  const push = (m: FromWorker) => {
    queue.push(m);
    wake?.();
    wake = undefined;
  };
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    worker.once("exit", (code) => {
      exited = true;
      push({ type: "error", message: `log reader thread exited (${code})` });
      resolve();
    }),
  );
  worker.on("message", (m: FromWorker) => push(m));
  worker.on("error", (err) => push({ type: "error", message: err.message }));
  const onAbort = () => {
    wake?.();
    wake = undefined;
  };
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      while (queue.length === 0 && !opts.signal?.aborted) await new Promise<void>((r) => (wake = r));
      if (opts.signal?.aborted) return;
      const m = queue.shift()!;
      if (m.type === "end") return;
      if (m.type === "error") throw new Error(m.message);
      worker.postMessage({ type: "credit" } satisfies ToWorker);
      yield unpackBatch(m.buf);
    }
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    if (!exited) {
      worker.postMessage({ type: "stop" } satisfies ToWorker);
      const timer = setTimeout(() => void worker.terminate(), 2000);
      await exit;
      clearTimeout(timer);
    }
  }
}
