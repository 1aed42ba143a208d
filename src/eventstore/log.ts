// The event log: one JetStream stream holding every event under `containerd.io.>`.
// This module is where ck talks to JetStream: stream setup (idempotent), appends with a dedupe
// id and a last-sequence expectation (acknowledged through publisher.ts), and ordered reads
// from any sequence. The one other reader is pull-reader.ts, for long reads in a worker thread.
import { connect, headers as natsHeaders, nanos, type NatsConnection, type MsgHdrs } from "@nats-io/transport-node";
import {
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type StreamInfo,
  type ConsumerMessages,
} from "@nats-io/jetstream";
import { unavailable } from "../errdefs/errdefs.js";
import { AckPublisher } from "./publisher.js";
import { parseHeaderBlock } from "./headers.js";

export const DEFAULT_STREAM = "CK_EVENTS";
export const STREAM_SUBJECTS = "containerd.io.>";
/** JetStream's error code for a failed Nats-Expected-Last-Sequence check. */
export const WRONG_LAST_SEQUENCE = 10071;
/** JetStream's error code for a refused Nats-Expected-Last-Msg-Id. */
export const WRONG_LAST_MSG_ID = 10070;

export interface EventLogOptions {
  url: string;
  stream?: string;
  /** Replicas for a newly created stream (R3 on a cluster for power-loss durability). */
  replicas?: number;
  /** Dedupe window; JetStream's default is 2 minutes. */
  duplicateWindowMs?: number;
  /** Connection name shown by the server. */
  name?: string;
  /** Timeout for one publish acknowledgement. */
  publishTimeoutMs?: number;
}

export interface AppendOptions {
  /** Nats-Msg-Id: a retried append with the same id is stored once. */
  msgId: string;
  /** Nats-Expected-Last-Sequence: refused unless the stream's last sequence is this. */
  expectLastSeq?: number;
  /**
   * Nats-Expected-Last-Msg-Id: refused unless the stream's last message has this id. A
   * pipelined append needs it: when the append before it was refused, another writer's
   * message may sit at exactly the sequence it expects.
   */
  expectLastMsgId?: string;
  headers?: Record<string, string>;
}

export interface AppendResult {
  seq: number;
  duplicate: boolean;
}

/** One stored event as read back from the log. */
export interface StoredMessage {
  seq: number;
  subject: string;
  data: Uint8Array;
  headers: Record<string, string>;
  /** Time the server stored it. */
  time: Date;
  /** Messages after this one that the consumer knew of when it was delivered. */
  pending: number;
  /** One header's first value, where that is cheaper than making `headers`. */
  header?(name: string): string | undefined;
}

export interface ReadOptions {
  fromSeq?: number;
  sinceTime?: Date;
  /** Only new messages from now on. */
  onlyNew?: boolean;
  filterSubject?: string;
  signal?: AbortSignal;
  /**
   * Messages up to this sequence are passed over without being decoded (the projector's own
   * appends, applied from their acknowledgements, come back through its consumer too).
   */
  skipThrough?: () => number;
}

export type ConnectionState = "connected" | "disconnected" | "closed";

export class EventLog {
  readonly stream: string;
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly serverVersion: string;
  /** The server URL the log was opened with (a worker thread connects there too). */
  readonly url: string;
  private state: ConnectionState = "connected";
  private readonly listeners = new Set<(s: ConnectionState) => void>();
  private readonly publisher: AckPublisher;

  private constructor(nc: NatsConnection, jsm: JetStreamManager, url: string, stream: string, publishTimeoutMs: number) {
    this.nc = nc;
    this.url = url;
    this.jsm = jsm;
    this.js = jetstream(nc);
    this.stream = stream;
    this.serverVersion = nc.info?.version ?? "unknown";
    this.publisher = new AckPublisher(nc, publishTimeoutMs);
    void this.watchStatus();
  }

  /** Connects and ensures the stream exists (created once, idempotently). */
  static async open(opts: EventLogOptions): Promise<EventLog> {
    const nc = await connect({
      servers: opts.url,
      name: opts.name ?? "ck",
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      waitOnFirstConnect: false,
      // Outgoing data is not buffered during a disconnect: callers fail fast instead.
      reconnectJitter: 50,
      // No Error (with its stack) made up front for every request, only for one that fails:
      // at thousands of appends a second that was ~7% of ckd's main-thread time.
      noAsyncTraces: true,
    });
    const jsm = await jetstreamManager(nc);
    const log = new EventLog(nc, jsm, opts.url, opts.stream ?? DEFAULT_STREAM, opts.publishTimeoutMs ?? 5000);
    await log.ensureStream(opts);
    return log;
  }

  private async ensureStream(opts: EventLogOptions): Promise<StreamInfo> {
    try {
      return await this.jsm.streams.info(this.stream);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
    }
    try {
      return await this.jsm.streams.add({
        name: this.stream,
        subjects: [STREAM_SUBJECTS],
        storage: "file" as never,
        num_replicas: opts.replicas ?? 1,
        duplicate_window: nanos(opts.duplicateWindowMs ?? 120_000),
        discard: "old" as never,
        retention: "limits" as never,
        allow_direct: true,
      });
    } catch (err) {
      // Another ckd created it between our info and add: that one is as good as ours.
      return await this.jsm.streams.info(this.stream);
    }
  }

  private async watchStatus(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === "disconnect" || s.type === "reconnecting") {
        this.setState("disconnected");
        // What was appended but not acknowledged has an unknown outcome: say so now, not at
        // the timeout (the sequencer then learns from the log what was stored).
        this.publisher.failAll(new Error("connection to the log lost"));
      }
      else if (s.type === "reconnect") this.setState("connected");
      else if (s.type === "close") break;
    }
    this.setState("closed");
    this.publisher.failAll(new Error("connection to the log closed"));
  }

  private setState(s: ConnectionState): void {
    if (this.state === s) return;
    this.state = s;
    for (const l of this.listeners) l(s);
  }

  get connectionState(): ConnectionState {
    return this.state;
  }

  onConnectionState(listener: (s: ConnectionState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stream info: last sequence, first sequence, created time. */
  async info(): Promise<StreamInfo> {
    return this.jsm.streams.info(this.stream);
  }

  async lastSeq(): Promise<number> {
    return (await this.info()).state.last_seq;
  }

  /**
   * Appends one message. Fails fast with Unavailable while the server is unreachable.
   * A failed expectation surfaces as a JetStreamApiError with code WRONG_LAST_SEQUENCE.
   */
  async append(subject: string, data: Uint8Array, opts: AppendOptions): Promise<AppendResult> {
    if (this.state !== "connected") throw unavailable(`event log ${this.stream} (${this.state})`);
    const h: MsgHdrs = natsHeaders();
    if (opts.headers) for (const k in opts.headers) h.set(k, opts.headers[k]!);
    h.set("Nats-Msg-Id", opts.msgId);
    if (opts.expectLastSeq !== undefined) h.set("Nats-Expected-Last-Sequence", String(opts.expectLastSeq));
    if (opts.expectLastMsgId !== undefined) h.set("Nats-Expected-Last-Msg-Id", opts.expectLastMsgId);
    try {
      return await this.publisher.publish(subject, data, h);
    } catch (err) {
      if (err instanceof JetStreamApiError) throw err;
      throw unavailable(`append to ${this.stream}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Opens an ordered consumer (from a sequence, a time, or only new messages) and returns
   * its messages in order. The consumer exists when this resolves, so nothing appended
   * afterwards is missed. The iterator ends when `signal` aborts or the caller stops.
   * Reconnects are handled by the ordered consumer itself.
   */
  async reader(opts: ReadOptions = {}): Promise<AsyncGenerator<StoredMessage>> {
    const co: Record<string, unknown> = {};
    if (opts.filterSubject) co.filter_subjects = opts.filterSubject;
    if (opts.onlyNew) co.deliver_policy = DeliverPolicy.New;
    else if (opts.sinceTime) {
      co.deliver_policy = DeliverPolicy.StartTime;
      co.opt_start_time = opts.sinceTime.toISOString();
    } else if (opts.fromSeq && opts.fromSeq > 1) {
      co.deliver_policy = DeliverPolicy.StartSequence;
      co.opt_start_seq = opts.fromSeq;
    }
    const consumer = await this.js.consumers.get(this.stream, co);
    const messages: ConsumerMessages = await consumer.consume({ max_messages: 4096 });
    const stop = () => messages.stop();
    if (opts.signal?.aborted) stop();
    opts.signal?.addEventListener("abort", stop, { once: true });
    const skipThrough = opts.skipThrough;
    return (async function* () {
      try {
        for await (const m of messages) {
          if (skipThrough && m.seq <= skipThrough()) continue;
          yield toStored(m);
        }
      } finally {
        opts.signal?.removeEventListener("abort", stop);
        messages.stop();
      }
    })();
  }

  /** Same as reader(), as one async iterable. */
  async *read(opts: ReadOptions = {}): AsyncGenerator<StoredMessage> {
    yield* await this.reader(opts);
  }

  async close(): Promise<void> {
    // Appends made from here on fail at once (the state check, then the closed publisher).
    this.setState("closed");
    this.publisher.close();
    if (this.nc.isClosed()) return;
    await this.nc.close();
  }
}

/**
 * The internals of nats.js (3.x) that hold a delivered message's raw bytes: `hdr` is the length
 * of its header block within `_rdata` (-1: none).
 */
interface RawCoreMsg {
  _msg?: { hdr?: unknown };
  _rdata?: unknown;
}
const utf8 = new TextDecoder();

/**
 * A message's headers, first value of each. nats.js builds a validated, canonicalised header
 * object per message, ~8% of a rebuild's main-thread time; this reads the header block's lines
 * straight from the message's bytes as that decoder would (`NATS/1.0` status line, then
 * `Key: value` lines, keys as written, values trimmed), and uses nats.js's own decoder
 * whenever its internals are not as expected.
 */
export function messageHeaders(m: Pick<JsMsg, "headers">): Record<string, string> {
  // No prototype: a header named like an Object method ("toString") is a header like any other.
  const headers = Object.create(null) as Record<string, string>;
  const core = (m as { msg?: RawCoreMsg }).msg;
  const hdr = core?._msg?.hdr;
  const raw = core?._rdata;
  if (typeof hdr === "number" && raw instanceof Uint8Array) {
    return hdr <= 0 ? headers : parseHeaderBlock(utf8.decode(raw.subarray(0, hdr)));
  }
  if (m.headers) {
    for (const [k, v] of m.headers) headers[k] = v[0] ?? "";
  }
  return headers;
}

function toStored(m: JsMsg): StoredMessage {
  const headers = messageHeaders(m);
  return {
    seq: m.seq,
    subject: m.subject,
    data: m.data,
    headers,
    time: m.time,
    pending: m.info.pending,
  };
}

export function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === 10059;
}

/** The append was refused because another writer appended first (sequence or message id). */
export function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && (err.code === WRONG_LAST_SEQUENCE || err.code === WRONG_LAST_MSG_ID);
}
