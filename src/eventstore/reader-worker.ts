// The log reader's worker thread (see worker-reader.ts): follows the stream with an ordered
// consumer, exactly as EventLog.reader does in the main thread, and posts the messages in
// packed batches. Speaking NATS (parsing the protocol, JetStream's per-message metadata,
// headers) is a third of a rebuild's main-thread time; here it runs on the other core.
import { parentPort, workerData } from "node:worker_threads";
import { EventLog, type StoredMessage } from "./log.js";
import { packBatch, type ReaderWorkerData, type ToWorker } from "./worker-reader.js";

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
  let log: EventLog | undefined;
  try {
    log = await EventLog.open({ url: data.url, stream: data.stream, name: data.name });
    const reader = await log.reader({ fromSeq: data.fromSeq, signal: ac.signal });
    let batch: StoredMessage[] = [];
    const flush = async () => {
      await waitCredit();
      if (ac.signal.aborted) return;
      credits--;
      const buf = packBatch(batch);
      batch = [];
      port.postMessage({ type: "batch", buf }, [buf]);
    };
    for await (const m of reader) {
      batch.push(m);
      if (m.pending === 0 || batch.length >= data.maxBatch) await flush();
      if (ac.signal.aborted) break;
    }
    if (batch.length && !ac.signal.aborted) await flush();
    port.postMessage({ type: "end" });
  } catch (err) {
    port.postMessage({ type: "error", message: (err as Error).message ?? String(err) });
  } finally {
    await log?.close().catch(() => undefined);
    port.close();
  }
}

void run();
