// Reading the log in a worker thread: the worker (reader-worker.ts) speaks NATS and posts
// the messages in batches, packed into one transferred buffer each (no structured clone of
// message objects); this side unpacks them into StoredMessages whose data are views into
// that buffer. For long reads (a rebuild, a projection far behind its log) the two cores
// then share the work: NATS in the worker, decoding and folding here.
import { Worker } from "node:worker_threads";
import type { StoredMessage } from "./log.js";

export interface ReaderWorkerData {
  url: string;
  stream: string;
  fromSeq: number;
  maxBatch: number;
  /** Batches the worker may post ahead of the reader (flow control). */
  credits: number;
  name: string;
}

export type ToWorker = { type: "credit" } | { type: "stop" };
type FromWorker =
  | { type: "batch"; buf: ArrayBuffer }
  | { type: "end" }
  | { type: "error"; message: string };

// Per message: seq f64, time (ms) f64, pending u32, then the byte lengths of subject,
// headers and data (u32 each), then those bytes.
const FIXED = 8 + 8 + 4 + 4 + 4 + 4;
const SEP = "\u0000";

/** Headers as `k\0v\0…` (NATS header names and values hold no NUL). */
function packHeaders(h: Record<string, string>): string {
  let s = "";
  for (const k in h) s += k + SEP + h[k] + SEP;
  return s;
}

/** Packs messages into one buffer for transfer to another thread. */
export function packBatch(msgs: readonly StoredMessage[]): ArrayBuffer {
  const parts: [Buffer, Buffer][] = [];
  let size = 0;
  for (const m of msgs) {
    const subject = Buffer.from(m.subject, "utf8");
    const headers = Buffer.from(packHeaders(m.headers), "utf8");
    parts.push([subject, headers]);
    size += FIXED + subject.length + headers.length + m.data.length;
  }
  const ab = new ArrayBuffer(size);
  const view = new DataView(ab);
  const bytes = new Uint8Array(ab);
  let off = 0;
  msgs.forEach((m, i) => {
    const [subject, headers] = parts[i]!;
    view.setFloat64(off, m.seq, true);
    view.setFloat64(off + 8, m.time.getTime(), true);
    view.setUint32(off + 16, m.pending, true);
    view.setUint32(off + 20, subject.length, true);
    view.setUint32(off + 24, headers.length, true);
    view.setUint32(off + 28, m.data.length, true);
    off += FIXED;
    bytes.set(subject, off);
    off += subject.length;
    bytes.set(headers, off);
    off += headers.length;
    bytes.set(m.data, off);
    off += m.data.length;
  });
  return ab;
}

/** The inverse of packBatch; each message's data is a view into `ab`. */
export function unpackBatch(ab: ArrayBuffer): StoredMessage[] {
  const view = new DataView(ab);
  const buf = Buffer.from(ab);
  const out: StoredMessage[] = [];
  let off = 0;
  while (off < ab.byteLength) {
    const seq = view.getFloat64(off, true);
    const time = new Date(view.getFloat64(off + 8, true));
    const pending = view.getUint32(off + 16, true);
    const sl = view.getUint32(off + 20, true);
    const hl = view.getUint32(off + 24, true);
    const dl = view.getUint32(off + 28, true);
    off += FIXED;
    const subject = buf.toString("utf8", off, off + sl);
    off += sl;
    const headers = Object.create(null) as Record<string, string>;
    if (hl > 0) {
      const parts = buf.toString("utf8", off, off + hl).split(SEP);
      for (let i = 0; i + 1 < parts.length; i += 2) headers[parts[i]!] = parts[i + 1]!;
    }
    off += hl;
    const data = new Uint8Array(ab, off, dl);
    off += dl;
    out.push({ seq, subject, data, headers, time, pending });
  }
  return out;
}

export interface WorkerReadOptions {
  url: string;
  stream: string;
  fromSeq: number;
  signal?: AbortSignal;
  /** Largest batch the worker posts (default 256). */
  maxBatch?: number;
  /** Connection name shown by the server. */
  name?: string;
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
    stream: opts.stream,
    fromSeq: opts.fromSeq,
    maxBatch: opts.maxBatch ?? 256,
    credits: 8,
    name: opts.name ?? "ck-reader",
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
