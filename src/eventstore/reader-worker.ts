// The log reader's worker thread (see worker-reader.ts): reads the stream from a sequence
// and posts the messages in packed batches. It reads through its own pull consumer
// (pull-reader.ts), which packs messages straight from the socket's bytes; where that reader
// cannot be used (TLS, NKEY or creds files) or start (anything unexpected before the first
// message) it
// follows the stream with nats.js's ordered consumer, exactly as EventLog.reader does in the
// main thread. Either way, speaking NATS runs here, on the other core.
import { parentPort, workerData } from "node:worker_threads";
import { PullSetupError, readPacked } from "./pull-reader.js";
import { BatchPacker, type ReaderWorkerData, type ToWorker } from "./worker-reader.js";
import { batchEnds } from "./pull-bounds.js";
import { needsNatsJs } from "./nats-url.js";

async function run(): Promise<void> {
  const port = parentPort!;
  const data = workerData as ReaderWorkerData;
  const ac = new AbortController();
  let credits = data.credits;
  let wake: (() => void) | undefined;
  port.on("message", (m: ToWorker) => {
    if (m.type === "credit") credits++;
    else if (m.type === "stop") ac.abort();
    wake?.();
    wake = undefined;
  });
  const waitCredit = async () => {
    while (credits <= 0 && !ac.signal.aborted) await new Promise<void>((r) => (wake = r));
  };
  const post = async (buf: ArrayBuffer) => {
    await waitCredit();
    if (ac.signal.aborted) return;
    credits--;
    port.postMessage({ type: "batch", buf }, [buf]);
  };
  try {
    let pulled = false;
    // The pull reader speaks plain NATS only: a TLS connection is nats.js's.
    if (data.engine !== "nats.js" && !needsNatsJs(data.files)) {
      try {
        for await (const buf of readPacked({ url: data.url, inboxPrefix: data.inboxPrefix, stream: data.stream, fromSeq: data.fromSeq, maxBatch: data.maxBatch, name: data.name, signal: ac.signal })) {
          pulled = true;
          await post(buf);
          if (ac.signal.aborted) break;
        }
        pulled = true;
      } catch (err) {
        if (!(err instanceof PullSetupError) || data.engine === "pull") throw err;
      }
    }
    if (!pulled && !ac.signal.aborted) await readWithNatsJs(data, ac.signal, post);
    port.postMessage({ type: "end" });
  } catch (err) {
    port.postMessage({ type: "error", message: (err as Error).message ?? String(err) });
  } finally {
    port.close();
  }
}

async function readWithNatsJs(data: ReaderWorkerData, signal: AbortSignal, post: (buf: ArrayBuffer) => Promise<void>): Promise<void> {
  // Loaded only when needed: nats.js's modules take longer to load than the pull reader takes
  // to deliver its first batch.
  const { EventLog } = await import("./log.js");
  const log = await EventLog.open({ url: data.url, files: data.files, inboxPrefix: data.inboxPrefix, stream: data.stream, name: data.name });
  try {
    const reader = await log.reader({ fromSeq: data.fromSeq, signal });
    const packer = new BatchPacker();
    for await (const m of reader) {
      packer.add(m);
      if (batchEnds(packer.count, packer.bytes, data.maxBatch, m.pending)) await post(packer.finish());
      if (signal.aborted) break;
    }
    if (packer.count && !signal.aborted) await post(packer.finish());
  } finally {
    await log.close().catch(() => undefined);
  }
}

void run();
