// The event log: one JetStream stream holding every event under `containerd.io.>`.
// This module is where ck talks to JetStream: stream setup (idempotent), appends with a dedupe
// id and a last-sequence expectation (acknowledged through publisher.ts), and ordered reads
// from any sequence (each through a consumer of log-consumer.ts, its pulls bounded in messages
// and bytes). The one other reader is pull-reader.ts, for long reads in a worker thread.
// Readers whose pace a client sets (Events.Subscribe) read on a NATS connection of their own,
// never on the one appends go through (see ReadOptions.clientPaced).
import { readFileSync } from "node:fs";
import {
  connect,
  credsAuthenticator,
  headers as natsHeaders,
  nanos,
  nkeyAuthenticator,
  type Msg,
  type NatsConnection,
  type MsgHdrs,
} from "@nats-io/transport-node";
import {
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  DeliverPolicy,
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
  type StreamInfo,
} from "@nats-io/jetstream";
import { CkError, failedPrecondition, permissionDenied, resourceExhausted, unavailable } from "../errdefs/errdefs.js";
import { AckPublisher, NoStreamAnswersError, NotSentError } from "./publisher.js";
import { parseHeaderBlock } from "./headers.js";
import { FILE_FLAGS, parseNatsUrl, redactNatsUrl, type NatsConnectTarget, type NatsFiles } from "./nats-url.js";
import { DELIVERY_OVERHEAD_BYTES, pullBudget, READER_PULL_MESSAGES } from "./pull-bounds.js";
import { LogConsumer, LostConsumerError, type Delivery } from "./log-consumer.js";

export { natsServers, natsFilesOf, needsNatsJs, redactNatsUrl, type NatsConnectTarget, type NatsFiles } from "./nats-url.js";

export const DEFAULT_STREAM = "CK_EVENTS";
export const STREAM_SUBJECTS = "containerd.io.>";
/** JetStream's error code for a failed Nats-Expected-Last-Sequence check. */
export const WRONG_LAST_SEQUENCE = 10071;
/** JetStream's error code for a refused Nats-Expected-Last-Msg-Id. */
export const WRONG_LAST_MSG_ID = 10070;
/** JetStream's error code for a stream whose storage limits (the account's or the server's) are reached. */
export const INSUFFICIENT_RESOURCES = 10023;

/**
 * The least time a stream must keep message ids for deduplication: an append without an
 * acknowledgement is sent again with the same id for up to ~20 s (the sequencer's 3 tries of a
 * 5 s timeout, and the pauses and resyncs between), and a window shorter than that could
 * store a late first copy and its resend both.
 */
export const MIN_DUPLICATE_WINDOW_MS = 30_000;

/** Why a stream cannot take ck's appends exactly once (its duplicate window too short), if it cannot. */
export function duplicateWindowProblem(info: StreamInfo): string | undefined {
  const ms = (info.config.duplicate_window ?? 0) / 1e6;
  if (ms >= MIN_DUPLICATE_WINDOW_MS) return undefined;
  return `stream ${info.config.name} keeps message ids for deduplication ${ms / 1000} s (its duplicate_window); ck resends an unacknowledged append with the same id for up to ~20 s and needs at least ${MIN_DUPLICATE_WINDOW_MS / 1000} s (nats stream edit ${info.config.name} --dupe-window 2m)`;
}

/** Append failures known to have stored nothing: the append was never sent, or the server refused it. */
const refusals = new WeakSet<object>();

function refused<E extends object>(err: E): E {
  refusals.add(err);
  return err;
}

/**
 * Whether an append's failure says it surely stored nothing (never sent; refused by the
 * stream, its expectations included; dropped by the server for want of permission), as
 * opposed to an unknown outcome (no acknowledgement, the connection lost after sending).
 */
export function isRefusedAppend(err: unknown): boolean {
  return isWrongLastSequence(err) || (typeof err === "object" && err !== null && refusals.has(err));
}

/**
 * A NATS URL as ck takes it (natsServers), with credentials as the nats CLI takes them:
 * `nats://user:password@host:port` or `nats://token@host:port` (percent-encoded where needed).
 * nats.js ignores a URL's user part, so it is taken off every server here and passed as
 * options; servers that name different credentials are refused, and so are credentials given
 * twice (in the URL and as a creds or NKEY file, or both files). `tls://` (or any TLS file)
 * asks for TLS; without either, TLS is still used where the server requires it. Reads the
 * creds or NKEY file.
 */
export function natsConnectOptions(url: string, files: NatsFiles = {}): NatsConnectTarget {
  const parsed = parseNatsUrl(url);
  const credOf = JSON.stringify(parsed.cred);
  const tls = { caFile: files.caFile, certFile: files.certFile, keyFile: files.keyFile };
  const wantsTls = !!(tls.caFile || tls.certFile || tls.keyFile) || parsed.tls;
  const target: NatsConnectTarget = { servers: parsed.servers, ...parsed.cred };
  if (wantsTls) target.tls = Object.fromEntries(Object.entries(tls).filter(([, v]) => v)) as NatsConnectTarget["tls"];
  if (files.credsFile && files.nkeyFile) {
    throw new Error(`${FILE_FLAGS.credsFile} and ${FILE_FLAGS.nkeyFile}: give one way to log in`);
  }
  const keyFile = files.credsFile ?? files.nkeyFile;
  if (keyFile) {
    const flag = files.credsFile ? FILE_FLAGS.credsFile : FILE_FLAGS.nkeyFile;
    if (credOf !== "{}") throw new Error(`${flag} and credentials in --nats (nats): give one way to log in`);
    const bytes = readKeyFile(keyFile, flag);
    target.authenticator = files.credsFile ? credsAuthenticator(bytes) : nkeyAuthenticator(bytes);
  }
  return target;
}

/** A creds file as it is, or an NKEY seed without the whitespace around it; checked for shape. */
function readKeyFile(file: string, flag: string): Uint8Array {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(`${flag} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (flag === FILE_FLAGS.credsFile) {
    if (!/-----BEGIN NATS USER JWT-----/.test(text) || !/-----BEGIN USER NKEY SEED-----/.test(text)) {
      throw new Error(`${flag} ${file}: not a NATS credentials file (a user JWT and its NKEY seed)`);
    }
    return new TextEncoder().encode(text);
  }
  const seed = text.trim();
  if (!/^SU[A-Z2-7]{56}$/.test(seed)) throw new Error(`${flag} ${file}: not a user NKEY seed (SU followed by 56 base32 characters)`);
  return new TextEncoder().encode(seed);
}

/**
 * Checks the files before anything connects: each readable and of its kind (PEM, creds, NKEY
 * seed), a certificate and its key given together, one way to log in. Errors name the ckd flag
 * (and config key) that gave the file.
 */
export async function checkNatsFiles(files: NatsFiles, url = "nats://127.0.0.1"): Promise<void> {
  if (!!files.certFile !== !!files.keyFile) {
    throw new Error(`${FILE_FLAGS.certFile} and ${FILE_FLAGS.keyFile} go together: a client certificate needs its key`);
  }
  for (const k of ["caFile", "certFile", "keyFile"] as const) {
    const file = files[k];
    if (file === undefined) continue;
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new Error(`${FILE_FLAGS[k]} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    if (!text.includes("-----BEGIN ")) throw new Error(`${FILE_FLAGS[k]} ${file}: not a PEM file`);
  }
  natsConnectOptions(url, files); // the creds or NKEY file, and one way to log in
}

/**
 * A reader's consumer sends a heartbeat this often while it has nothing to deliver; two missed
 * and the reader replaces the consumer.
 */
const READER_HEARTBEAT_MS = 1000;
/** How long a reader waits for its consumer to be created before it asks again. */
const CONSUMER_CREATE_TIMEOUT_MS = 2000;
/** A consumer nobody pulls from is removed by the server after this long (as nats.js's ordered consumer). */
const READER_INACTIVE_MS = 5 * 60_000;
/**
 * A client-paced reader's consumer nobody pulls from is removed by the server after this long:
 * it bounds how long a consumer left by a reader that ended while disconnected stays on the
 * server. A reader whose caller is away, holding what was asked for, keeps its consumer with a
 * pull that delivers nothing (LogConsumer's keep-alive) every quarter of it.
 */
const CLIENT_READER_INACTIVE_MS = 30_000;
/** Consumers of ended readers remembered for deletion while their connection is down, at most. */
const MAX_DEFERRED_DELETES = 256;


export interface EventLogOptions {
  /** One server URL, or several separated by commas, credentials included (natsConnectOptions). */
  url: string;
  /** TLS, creds and NKEY files for the connection. */
  files?: NatsFiles;
  /**
   * The prefix of the connection's reply subjects (nats.js: `_INBOX`). ckd's own server gives
   * its read-only user `_INBOX.>`, so ck's connections there use another (MANAGED_INBOX_PREFIX).
   */
  inboxPrefix?: string;
  stream?: string;
  /** Replicas for a newly created stream (R3 on a cluster for power-loss durability). */
  replicas?: number;
  /** Dedupe window; JetStream's default is 2 minutes. */
  duplicateWindowMs?: number;
  /** Connection name shown by the server. */
  name?: string;
  /** Timeout for one publish acknowledgement. */
  publishTimeoutMs?: number;
  /** How long open() waits for JetStream to answer (a cluster electing leaders); default 60 s. */
  readyTimeoutMs?: number;
  /** Called each time open() waits again for JetStream. */
  onWait?: (err: Error) => void;
  /** Called when a reader replaces its consumer, and when creating one failed and is retried. */
  onReaderEvent?: (e: ReaderEvent) => void;
  /** The inactive threshold of client-paced readers' consumers (default 30 s; tests make it short). */
  clientReaderInactiveMs?: number;
}

/**
 * Why a reader replaces its consumer (for the daemon's log): silent while a pull is owed, a
 * reconnect, gone (deleted, or its server restarted: the consumer lives in memory) or refusing
 * pulls, or a delivery missing on the way.
 */
export type ReplaceReason = "heartbeats missed" | "reconnected" | "consumer lost" | "delivery lost";

/** What a reader did to keep reading (for the daemon's log). */
export type ReaderEvent =
  | { kind: "replacing"; fromSeq: number; why: ReplaceReason }
  | { kind: "replaced"; fromSeq: number; ms: number }
  | { kind: "retrying"; err: Error; attempt: number };

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

/** Where the stream ends (EventLog.end). */
export interface LogEnd {
  /** The stream's first stored sequence (0 for a stream never written; last + 1 once every message is removed). */
  first: number;
  /** Its last sequence: the last one JetStream numbered, kept when that message is deleted. */
  last: number;
  /** Its last message still stored (at or before the bound asked for); 0 when none is. */
  lastStored: number;
}

/**
 * The last sequence stored at or before `upTo`, from a stream's state (its `deleted` list when
 * asked for with deleted_details, which covers every sequence missing between its first and
 * last); 0 when none is. Pure.
 */
export function lastStoredSeq(state: { first_seq: number; last_seq: number; messages: number; deleted?: number[] }, upTo?: number): number {
  if (state.messages === 0) return 0;
  const top = Math.min(state.last_seq, upTo ?? state.last_seq);
  const gone = new Set(state.deleted ?? []);
  for (let s = top; s >= state.first_seq; s--) if (!gone.has(s)) return s;
  return 0;
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
  /**
   * The caller reads at a client's pace (an Events.Subscribe): read on the log's readers'
   * connection (opened on first use), not the one appends and the projector use, with
   * consumers short-lived, so that however such a reader falls behind, even to the server
   * cutting the readers' connection as a slow consumer, no write fails.
   */
  clientPaced?: boolean;
}

export type ConnectionState = "connected" | "disconnected" | "closed";

/**
 * A NATS connection as the log's readers use it: its state as they see it, how their consumers
 * are made and how far their pulls go ahead, and the removal of the consumers they are done
 * with (at once, or once connected again: a deletion asked for while disconnected would be
 * thrown away by nats.js).
 */
class ReadConnection {
  state: ConnectionState = "connected";
  private readonly listeners = new Set<(s: ConnectionState) => void>();
  private readonly doomed = new Set<string>();
  private deleting = false;
  /** Counts the times the connection came back: a request sent before one may have been lost. */
  private epoch = 0;
  /** The JetStream API readers create their consumers through (a short timeout). */
  private creator: Promise<JetStreamManager> | undefined;

  constructor(
    readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    /** Readers at a client's pace: consumers short-lived. */
    readonly clientPaced: boolean,
    /** The connection's reply-subject prefix. */
    readonly inboxPrefix: string | undefined,
    /** The inactive threshold of its readers' consumers. */
    private readonly inactiveMs = clientPaced ? CLIENT_READER_INACTIVE_MS : READER_INACTIVE_MS,
  ) {}

  setState(s: ConnectionState): void {
    if (this.state === s) return;
    this.state = s;
    if (s === "connected") this.epoch++;
    for (const l of this.listeners) l(s);
    if (s === "connected") void this.deleteDoomed();
  }

  onState(listener: (s: ConnectionState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * How far a reader's consumer asks ahead of it, every reader alike: 4,096 messages a pull,
   * and at most 4 MiB (or two of the largest message the server takes) asked for and held
   * for its caller, so that many small events are read as fast as counted pulls read them and
   * a burst of large ones never has the server queue past its max_pending (it would cut the
   * whole connection as a slow consumer).
   */
  pullBounds(): { budget: number; largest: number; batch: number } {
    const maxPayload = this.nc.info?.max_payload ?? 1 << 20;
    return { budget: pullBudget(maxPayload), largest: maxPayload + DELIVERY_OVERHEAD_BYTES, batch: READER_PULL_MESSAGES };
  }

  /** Consumer options of this connection's readers beyond where they start. */
  consumerOptions(): Partial<ConsumerConfig> {
    return { inactive_threshold: nanos(this.inactiveMs) };
  }

  /** The JetStream API readers create their consumers through, with a short timeout (see consume()). */
  consumerApi(): Promise<JetStreamManager> {
    this.creator ??= jetstream(this.nc, { timeout: CONSUMER_CREATE_TIMEOUT_MS }).jetstreamManager(false);
    return this.creator;
  }

  /** Removes a consumer a reader is done with: now, or once connected again (a bounded number). */
  forget(name: string): void {
    if (this.state === "closed") return;
    if (this.state === "connected" && !this.deleting) void this.delete(name);
    else this.doom(name);
  }

  /** Beyond the bound the server's inactivity threshold removes them. */
  private doom(name: string): void {
    if (this.doomed.size < MAX_DEFERRED_DELETES) this.doomed.add(name);
  }

  /**
   * One deletion; asked again once connected when the connection went down in between (nats.js
   * drops what it sent then, and the deletion only times out), never twice in one connection.
   */
  private async delete(name: string): Promise<void> {
    const epoch = this.epoch;
    try {
      await this.jsm.consumers.delete(this.stream, name);
    } catch (err) {
      // The server's own answer (no such consumer, most often): nothing more to do.
      if (err instanceof JetStreamApiError || this.state === "closed") return;
      if (this.state === "connected" && this.epoch === epoch) return;
      this.doom(name);
      if (this.state === "connected") void this.deleteDoomed();
    }
  }

  /** Consumers of readers that ended while disconnected, removed one at a time once connected. */
  private async deleteDoomed(): Promise<void> {
    if (this.deleting) return;
    this.deleting = true;
    try {
      while (this.doomed.size > 0 && this.state === "connected") {
        const name = this.doomed.values().next().value as string;
        this.doomed.delete(name);
        await this.delete(name);
      }
    } finally {
      this.deleting = false;
    }
  }
}

export class EventLog {
  readonly stream: string;
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly serverVersion: string;
  /** The server URL the log was opened with, credentials included (a worker thread connects there too). */
  readonly url: string;
  /** The files it was opened with. */
  files: NatsFiles | undefined;
  /** The reply-subject prefix it was opened with (a worker thread's connection uses it too). */
  inboxPrefix: string | undefined;
  private state: ConnectionState = "connected";
  private readonly listeners = new Set<(s: ConnectionState) => void>();
  private readonly publisher: AckPublisher;
  /** Set by open(): told when a reader replaces its consumer. */
  onReaderEvent: ((e: ReaderEvent) => void) | undefined;
  /** This connection as the projector's (and any other log-paced) readers use it. */
  private readonly mainReads: ReadConnection;
  /** The readers' connection of client-paced readers, once the first of them asked for it. */
  private clientReads: Promise<ReadConnection> | undefined;
  /** The connection's name shown by the server (the readers' connection adds " readers"). */
  private name = "ck";
  /** The inactive threshold of client-paced readers' consumers, when not the default. */
  private clientReaderInactiveMs: number | undefined;

  private constructor(nc: NatsConnection, jsm: JetStreamManager, url: string, stream: string, publishTimeoutMs: number, inboxPrefix?: string) {
    this.nc = nc;
    this.url = url;
    this.jsm = jsm;
    this.js = jetstream(nc);
    this.stream = stream;
    this.serverVersion = nc.info?.version ?? "unknown";
    this.publisher = new AckPublisher(nc, publishTimeoutMs, inboxPrefix);
    this.mainReads = new ReadConnection(nc, jsm, stream, false, inboxPrefix);
    void this.watchStatus();
  }

  /** Connects to `opts`' servers as ck does (credentials, TLS, inbox prefix; reconnecting for good). */
  private static connect(opts: Pick<EventLogOptions, "url" | "files" | "inboxPrefix">, name: string): Promise<NatsConnection> {
    return connect({
      ...natsConnectOptions(opts.url, opts.files),
      ...(opts.inboxPrefix ? { inboxPrefix: opts.inboxPrefix } : {}),
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      waitOnFirstConnect: false,
      reconnectJitter: 50,
      // No Error (with its stack) made up front for every request, only for one that fails:
      // at thousands of appends a second that was ~7% of ckd's main-thread time.
      noAsyncTraces: true,
    }).catch((err: Error) => {
      throw new Error(`cannot connect to NATS at ${redactNatsUrl(opts.url)}: ${err.message}`, { cause: err });
    });
  }

  /** Connects and ensures the stream exists (created once, idempotently). */
  static async open(opts: EventLogOptions): Promise<EventLog> {
    const nc = await EventLog.connect(opts, opts.name ?? "ck");
    // A cluster electing its leaders (a node just lost) answers nothing for a few seconds:
    // wait for it, up to readyTimeoutMs. A refused connection failed above, at once.
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
    const retrying = async <T>(what: () => Promise<T>): Promise<T> =>
      (await askAgain(what, (err) => isTransientApiError(err) && Date.now() <= deadline, (err) => opts.onWait?.(err), 250))!;
    try {
      const jsm = await retrying(() => jetstreamManager(nc));
      const log = new EventLog(nc, jsm, opts.url, opts.stream ?? DEFAULT_STREAM, opts.publishTimeoutMs ?? 5000, opts.inboxPrefix);
      log.files = opts.files;
      log.inboxPrefix = opts.inboxPrefix;
      log.name = opts.name ?? "ck";
      log.onReaderEvent = opts.onReaderEvent;
      log.clientReaderInactiveMs = opts.clientReaderInactiveMs;
      try {
        await retrying(() => log.ensureStream(opts));
      } catch (err) {
        await log.close();
        throw err;
      }
      return log;
    } catch (err) {
      if (!nc.isClosed()) await nc.close();
      throw err;
    }
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
    } catch (addErr) {
      // Another ckd created it between our info and add: that one is as good as ours.
      try {
        return await this.jsm.streams.info(this.stream);
      } catch (err) {
        // Still no such stream: the add's own error is the one that says why (most often
        // another stream on this server already takes containerd.io.>).
        if (isStreamNotFound(err)) throw streamAddError(this.stream, addErr as Error);
        throw err;
      }
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
      else if (s.type === "error" && isPublishPermissionViolation(s.error)) {
        // The server dropped a publish it does not permit: the appends to that subject waiting
        // for their acknowledgement get none, and are refused now rather than at the timeout.
        const subject = s.error.subject;
        this.publisher.refuse(subject, refused(permissionDenied(`append to ${this.stream}: this connection's NATS user may not publish to ${subject}`)));
      }
      else if (s.type === "close") break;
    }
    this.setState("closed");
    this.publisher.failAll(new Error("connection to the log closed"));
  }

  private setState(s: ConnectionState): void {
    if (this.state === s) return;
    this.state = s;
    // The readers' view first: a reader ended by a listener here then sees the connection as it is.
    this.mainReads.setState(s);
    for (const l of this.listeners) l(s);
  }

  /**
   * The connection client-paced readers read on: a second NATS connection to the same servers,
   * with the same credentials, TLS and inbox prefix, opened on first use. However far behind
   * its readers fall, and should the server cut it as a slow consumer, the connection appends go
   * through (and the projector follows on) is not touched: its readers replace their consumers
   * once it is back, as after any reconnect. Unavailable when it cannot be opened (asked again
   * by the next reader).
   */
  private readersConnection(): Promise<ReadConnection> {
    if (this.state === "closed") return Promise.reject(unavailable(`event log ${this.stream} (closed)`));
    this.clientReads ??= (async () => {
      let nc: NatsConnection;
      try {
        nc = await EventLog.connect({ url: this.url, files: this.files, inboxPrefix: this.inboxPrefix }, `${this.name} readers`);
      } catch (err) {
        throw unavailable(`event log ${this.stream}: the readers' connection: ${(err as Error).message}`, { cause: err });
      }
      const rc = new ReadConnection(nc, await jetstreamManager(nc, { checkAPI: false }), this.stream, true, this.inboxPrefix, this.clientReaderInactiveMs);
      void nc.closed().then(() => rc.setState("closed"));
      // Closed meanwhile: the log's close() did not see this one.
      if (this.state === "closed") {
        rc.setState("closed");
        await nc.close().catch(() => undefined);
        return rc;
      }
      void (async () => {
        for await (const s of nc.status()) {
          if (s.type === "disconnect" || s.type === "reconnecting") rc.setState("disconnected");
          else if (s.type === "reconnect") rc.setState("connected");
          else if (s.type === "close") break;
        }
      })().catch(() => undefined);
      return rc;
    })();
    const opening = this.clientReads;
    return opening.then(
      (rc) => {
        // Closed for good (not by this log): the next reader opens another.
        if (rc.state === "closed" && this.state !== "closed") {
          if (this.clientReads === opening) this.clientReads = undefined;
          return this.readersConnection();
        }
        return rc;
      },
      (err) => {
        if (this.clientReads === opening) this.clientReads = undefined;
        throw err;
      },
    );
  }

  /** The largest message the server takes (its max_payload; NATS's default 1 MiB until known). */
  get maxPayload(): number {
    return this.nc.info?.max_payload ?? 1 << 20;
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

  /** The stream's last sequence; Unavailable at once while (or as soon as) the connection is down. */
  async lastSeq(): Promise<number> {
    return (await this.whileConnected(() => this.info())).state.last_seq;
  }

  /**
   * Where the stream ends, as one look at it: its last sequence and its last message still
   * stored (at or before `upTo`). They differ when the last messages were deleted: JetStream
   * keeps the last sequence (the next append is numbered after it) but never delivers those
   * messages, so a reader waiting for the last sequence would wait for ever.
   *
   * Why the stream's state and not a consumer's `pending === 0`: a reader that has caught up
   * gets no further delivery to read a pending count from, and one that is still reading sees
   * pending 0 only in a pause between appends, which under steady appends may never come; the
   * last message stored when asked is a target every reader reaches, appends or not.
   * Messages appended after the look are numbered after `last`, so they never change what is
   * below it. The usual case is one stream info (no message missing between its first and
   * last sequence); with some missing, one message get says whether the last is among them,
   * and only then is the stream asked for its list of deleted sequences, whose snapshot
   * decides (a look back message by message could miss a deletion made meanwhile).
   */
  async end(upTo?: number): Promise<LogEnd> {
    const state = (await this.whileConnected(() => this.info())).state;
    const top = Math.min(state.last_seq, upTo ?? state.last_seq);
    const whole = state.messages === 0 || state.messages === state.last_seq - state.first_seq + 1;
    if (!whole && top >= state.first_seq) {
      const m = await this.whileConnected(() => this.jsm.streams.getMessage(this.stream, { seq: top }));
      if (m) return { first: state.first_seq, last: state.last_seq, lastStored: top };
      const detailed = (await this.whileConnected(() => this.jsm.streams.info(this.stream, { deleted_details: true }))).state;
      return { first: detailed.first_seq, last: detailed.last_seq, lastStored: lastStoredSeq(detailed, upTo) };
    }
    return { first: state.first_seq, last: state.last_seq, lastStored: lastStoredSeq(state, upTo) };
  }

  /**
   * `what`, failed with Unavailable as soon as the connection is lost before it settles. nats.js
   * keeps what is sent while disconnected and throws it away when it reconnects: a request
   * made then would only time out, holding its caller for the whole request timeout.
   */
  private whileConnected<T>(what: () => Promise<T>): Promise<T> {
    const lost = () => unavailable(`event log ${this.stream} (${this.state})`);
    if (this.state !== "connected") return Promise.reject(lost());
    return new Promise<T>((resolve, reject) => {
      const off = this.onConnectionState((st) => {
        if (st === "connected") return;
        off();
        reject(lost());
      });
      what().then(
        (v) => {
          off();
          resolve(v);
        },
        (err) => {
          off();
          reject(err);
        },
      );
    });
  }

  /**
   * Removes every message before `seq` (compaction, once a base holds the state they made).
   * Returns how many were removed.
   */
  async purgeBefore(seq: number): Promise<number> {
    return (await this.jsm.streams.purge(this.stream, { seq })).purged;
  }

  /**
   * Appends one message. Fails fast with Unavailable while the server is unreachable.
   * A failed expectation surfaces as a JetStreamApiError with code WRONG_LAST_SEQUENCE.
   */
  async append(subject: string, data: Uint8Array, opts: AppendOptions): Promise<AppendResult> {
    if (this.state !== "connected") throw refused(unavailable(`event log ${this.stream} (${this.state})`));
    const h: MsgHdrs = natsHeaders();
    if (opts.headers) for (const k in opts.headers) h.set(k, opts.headers[k]!);
    h.set("Nats-Msg-Id", opts.msgId);
    if (opts.expectLastSeq !== undefined) h.set("Nats-Expected-Last-Sequence", String(opts.expectLastSeq));
    if (opts.expectLastMsgId !== undefined) h.set("Nats-Expected-Last-Msg-Id", opts.expectLastMsgId);
    try {
      return await this.publisher.publish(subject, data, h);
    } catch (err) {
      if (isRefusedAppend(err)) throw err; // a wrong last sequence, or dropped for want of permission
      if (err instanceof JetStreamApiError) throw refused(appendRefusal(this.stream, err));
      if (err instanceof NotSentError || err instanceof NoStreamAnswersError) throw refused(unavailable(`append to ${this.stream}: ${err.message}`, { cause: err }));
      throw unavailable(`append to ${this.stream}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Opens an ordered consumer (from a sequence, a time, or only new messages) and returns
   * its messages in order. The consumer exists when this resolves, so nothing appended
   * afterwards is missed. The iterator ends when `signal` aborts or the caller stops.
   * Its pulls are bounded in messages and bytes and paced by the caller (ReadConnection's
   * pullBounds): however far behind it starts or falls, over events of any size, the server
   * sends it at most a few MiB ahead. A consumer that goes silent (its node lost, a reconnect
   * elsewhere) is replaced from the message after the last one delivered; creating one is
   * asked again while JetStream cannot answer, so the iterator rides out a cluster's
   * elections. A client-paced reader (`clientPaced`) reads on the readers' connection.
   */
  async reader(opts: ReadOptions = {}): Promise<AsyncGenerator<StoredMessage>> {
    // The connection this reader reads on, and whose state it follows.
    const via = opts.clientPaced ? await this.readersConnection() : this.mainReads;
    const first: Partial<ConsumerConfig> = {};
    if (opts.filterSubject) first.filter_subject = opts.filterSubject;
    if (opts.onlyNew) {
      // "Only new" as the sequence after the stream's last: a consumer that has to be made
      // again before its first message then starts there too, not at what is new by then.
      // (JetStream not answering now, as in a cluster's election: what is new, as before.)
      const last = await this.lastSeq().catch(() => undefined);
      if (last === undefined) first.deliver_policy = DeliverPolicy.New;
      else Object.assign(first, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: last + 1 });
    } else if (opts.sinceTime) {
      first.deliver_policy = DeliverPolicy.StartTime;
      first.opt_start_time = opts.sinceTime.toISOString();
    } else if (opts.fromSeq && opts.fromSeq > 1) {
      first.deliver_policy = DeliverPolicy.StartSequence;
      first.opt_start_seq = opts.fromSeq;
    } else first.deliver_policy = DeliverPolicy.All;
    const signal = opts.signal;
    const log = this;
    // The consumer of the moment; replaced (from the message after the last one delivered)
    // when it stops answering: on a cluster, a consumer whose node died (or one left behind
    // by a reconnect to another node) is merely silent, and it would wait for good.
    const opened = await this.consumeRetrying(via, first, signal);
    if (!opened) return (async function* () {})();
    let messages: LogConsumer = opened;
    let last = 0;
    let waiting = false;
    let replace = false;
    let why: ReplaceReason = "heartbeats missed";
    const replaceNow = (reason: typeof why) => {
      why = reason;
      replace = true;
      messages.stop();
    };
    // Heartbeats missed while a pull is owed: its consumer is not there. (While disconnected
    // none come; the reconnect replaces it.)
    const watch = (m: LogConsumer) => {
      m.onSilence = () => {
        if (m === messages && !replace && via.state === "connected") replaceNow("heartbeats missed");
      };
    };
    // The server's consumer of a reader that is done with it (stopped, replaced): removed now,
    // not left for its minutes of inactivity (every ended Subscribe left one).
    // One that ended while disconnected is removed once connected again.
    const forget = (m: LogConsumer) => via.forget(m.name);
    watch(messages);
    // After a reconnect the consumer may sit on a server this connection no longer reaches.
    const offState = via.onState((st) => {
      if (st !== "connected") return;
      if (waiting) replaceNow("reconnected");
      else {
        why = "reconnected";
        replace = true;
      }
    });
    // An abort ends the reader even when its generator never started (a caller that gave up
    // before the first next()), whose finally would then never run.
    const stop = () => {
      messages.stop();
      offState();
      forget(messages);
    };
    if (signal?.aborted) stop();
    signal?.addEventListener("abort", stop, { once: true });
    const skipThrough = opts.skipThrough;
    return (async function* () {
      try {
        for (;;) {
          // Aborted (with a replacement pending, as after a reconnect while the caller was busy):
          // done, not a loop that neither replaces nor reads.
          if (signal?.aborted) return;
          if (replace) {
            replace = false;
            // Gone at once again (a stream being recreated, say): not a tight loop of creations.
            if (why === "consumer lost") await new Promise((r) => setTimeout(r, 100));
            messages.stop();
            forget(messages);
            const from: Partial<ConsumerConfig> = last > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: last + 1 } : { ...first };
            if (opts.filterSubject) from.filter_subject = opts.filterSubject;
            const fromSeq = last + 1;
            const t0 = Date.now();
            log.onReaderEvent?.({ kind: "replacing", fromSeq, why });
            const next = await log.consumeRetrying(via, from, signal);
            if (!next) return;
            // Aborted while it was being made: the abort stopped the one before, not this one.
            if (signal?.aborted) {
              next.stop();
              forget(next);
              return;
            }
            log.onReaderEvent?.({ kind: "replaced", fromSeq, ms: Date.now() - t0 });
            messages = next;
            watch(messages);
          }
          for (;;) {
            if (replace) break;
            waiting = true;
            let d: Delivery | undefined;
            try {
              d = await messages.next();
            } catch (err) {
              // The consumer cannot go on (deleted, not found after a reconnect, a delivery
              // lost): replaced, unless this reader is ending anyway.
              if (signal?.aborted || via.state === "closed") return;
              why = err instanceof LostConsumerError && err.deliveryLost ? "delivery lost" : "consumer lost";
              replace = true;
              break;
            } finally {
              waiting = false;
            }
            if (!d) {
              // Ended without our stop: replaced too.
              if (!replace && !signal?.aborted && via.state !== "closed") {
                why = "consumer lost";
                replace = true;
              }
              break;
            }
            if (d.seq <= last) continue; // a replacement's overlap
            last = d.seq;
            if (skipThrough && d.seq <= skipThrough()) continue;
            yield toStored(d);
          }
          if (!replace) return; // stopped: the caller's signal, or the connection closed
        }
      } finally {
        offState();
        signal?.removeEventListener("abort", stop);
        messages.stop();
        forget(messages);
      }
    })();
  }

  /**
   * Creates a reader's consumer and sends its first pull (heartbeats every second). Its
   * creation answers in milliseconds or not at all: on a cluster with a node just lost, the
   * server may place the consumer on that node (nats-server 2.9 does not know it is gone yet),
   * and the request goes unanswered; a short timeout lets the retry, under a fresh name, be
   * placed elsewhere (under the same name it met the lost node's assignment every time).
   */
  private async consume(via: ReadConnection, co: Partial<ConsumerConfig>): Promise<LogConsumer> {
    return LogConsumer.create({
      nc: via.nc,
      jsm: await via.consumerApi(),
      stream: this.stream,
      config: { ...co, ...via.consumerOptions() },
      inboxPrefix: via.inboxPrefix,
      ...via.pullBounds(),
      heartbeatMs: READER_HEARTBEAT_MS,
    });
  }

  /**
   * consume(), asked again while JetStream does not answer (a cluster electing leaders, a
   * consumer placed on a lost node) or the connection is down; undefined once `signal`
   * aborts or the log closes. Any other refusal (no such stream, a bad filter) is thrown.
   */
  private consumeRetrying(via: ReadConnection, co: Partial<ConsumerConfig>, signal?: AbortSignal): Promise<LogConsumer | undefined> {
    return askAgain(
      () => this.consume(via, co),
      // No responders too: a node of a cluster in trouble may not serve JetStream for a while.
      (err) => isTransientApiError(err) || isNoResponders(err) || via.state !== "connected",
      (err, attempt) => this.onReaderEvent?.({ kind: "retrying", err, attempt }),
      100,
      () => signal?.aborted === true || via.state === "closed",
    );
  }

  /** Same as reader(), as one async iterable. */
  async *read(opts: ReadOptions = {}): AsyncGenerator<StoredMessage> {
    yield* await this.reader(opts);
  }

  async close(): Promise<void> {
    // Appends made from here on fail at once (the state check, then the closed publisher).
    this.setState("closed");
    this.publisher.close();
    // The readers' connection, if one was opened (one still opening closes itself).
    const readers = await this.clientReads?.catch(() => undefined);
    if (readers) {
      readers.setState("closed");
      if (!readers.nc.isClosed()) await readers.nc.close().catch(() => undefined);
    }
    if (this.nc.isClosed()) return;
    await this.nc.close();
  }

  /** The readers' connection of client-paced readers, if one was opened (tests). */
  async readersNats(): Promise<NatsConnection | undefined> {
    return (await this.clientReads?.catch(() => undefined))?.nc;
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
export function messageHeaders(m: Pick<Msg, "headers">): Record<string, string> {
  // No prototype: a header named like an Object method ("toString") is a header like any other.
  const headers = Object.create(null) as Record<string, string>;
  const core = m as RawCoreMsg;
  const hdr = core._msg?.hdr;
  const raw = core._rdata;
  if (typeof hdr === "number" && raw instanceof Uint8Array) {
    return hdr <= 0 ? headers : parseHeaderBlock(utf8.decode(raw.subarray(0, hdr)));
  }
  if (m.headers) {
    for (const [k, v] of m.headers) headers[k] = v[0] ?? "";
  }
  return headers;
}

function toStored(d: Delivery): StoredMessage {
  const m = d.msg;
  return {
    seq: d.seq,
    subject: m.subject,
    data: m.data,
    headers: messageHeaders(m),
    time: new Date(d.timeMs),
    pending: d.pending,
  };
}

/**
 * JetStream did not answer, or said it cannot yet (10008: a cluster without a meta leader):
 * worth asking again. Anything else (no JetStream at all, a refused request) is not.
 */
export function isTransientApiError(err: unknown): boolean {
  if (err instanceof JetStreamApiError) return err.code === 10008;
  return err instanceof Error && err.name === "TimeoutError";
}

/**
 * Calls `what` until it succeeds. A failure `again` accepts is retried after a pause that
 * doubles from `firstPauseMs` up to 2 s (`onRetry` told first); any other is thrown.
 * Undefined when `stopped` says so before an attempt.
 */
async function askAgain<T>(
  what: () => Promise<T>,
  again: (err: unknown) => boolean,
  onRetry: (err: Error, attempt: number) => void,
  firstPauseMs: number,
  stopped: () => boolean = () => false,
): Promise<T | undefined> {
  for (let attempt = 0; ; attempt++) {
    if (stopped()) return undefined;
    try {
      return await what();
    } catch (err) {
      if (!again(err)) throw err;
      onRetry(err as Error, attempt);
      await new Promise((r) => setTimeout(r, Math.min(2000, firstPauseMs * 2 ** attempt)));
    }
  }
}

function isNoResponders(err: unknown): boolean {
  if (err instanceof JetStreamApiError) return err.status === 503;
  return err instanceof Error && (err.name === "NoRespondersError" || (err.cause as Error | undefined)?.name === "NoRespondersError");
}

/** JetStream's code for a new stream whose subjects another stream already takes. */
const SUBJECTS_OVERLAP = 10065;

/** Why a stream could not be created, in words an operator can act on. */
export function streamAddError(stream: string, err: Error): Error {
  if (err instanceof JetStreamApiError && err.code === SUBJECTS_OVERLAP) {
    return new Error(
      `cannot create stream ${stream}: another stream on this NATS server already takes ${STREAM_SUBJECTS} (${err.message}); use that stream's name with --stream, or a NATS server (or account) of its own`,
      { cause: err },
    );
  }
  return new Error(`cannot create stream ${stream}: ${err.message}`, { cause: err });
}

export function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === 10059;
}

/** A refusal of the stream's, as the error class it is to ck's callers (the stream's words kept). */
function appendRefusal(stream: string, err: JetStreamApiError): CkError {
  const what = `append to ${stream} refused by JetStream (${err.code}): ${err.message}`;
  if (err.code === INSUFFICIENT_RESOURCES) return resourceExhausted(what, { cause: err });
  if (err.status === 503 || err.status >= 500) return unavailable(what, { cause: err });
  return failedPrecondition(what, { cause: err });
}

function isPublishPermissionViolation(err: unknown): err is Error & { operation: string; subject: string } {
  const e = err as { name?: unknown; operation?: unknown; subject?: unknown } | undefined;
  return e?.name === "PermissionViolationError" && e.operation === "publish" && typeof e.subject === "string";
}

/** The append was refused because another writer appended first (sequence or message id). */
export function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && (err.code === WRONG_LAST_SEQUENCE || err.code === WRONG_LAST_MSG_ID);
}
