// The log's bulk reader: reads the stream from a sequence through an ephemeral pull consumer
// over a NATS connection of its own, and packs the messages straight from the socket's bytes
// into the batches readInWorker transfers (worker-reader.ts). nats.js, which ck uses for
// everything else, builds a message object, a JetStream message, a parsed delivery info and a
// header map per message: in a rebuild that was ~11 us of the reader thread per event, a third
// of all CPU on two cores shared with the folding thread and nats-server. This reader speaks
// only the part of the NATS client protocol a read needs (INFO, CONNECT, PING/PONG, SUB, PUB,
// MSG/HMSG) and copies each message's subject, headers and data once. It needs a plain
// connection (no TLS, user/password or token at most); otherwise, or when anything does not go
// as expected before the first message, it fails with a PullSetupError and the caller reads
// through nats.js instead. Once reading, any irregularity (a delivery lost on the way, a lost
// connection, an error from the server) fails the read: the projector then goes on from its
// checkpoint. Sequences the stream itself skips (messages deleted from it) are delivered as
// they are: what they mean is the fold's one rule to decide (src/projections/log-gaps.ts).
import { connect as netConnect, type Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { BatchPacker } from "./worker-reader.js";
import { parseNatsUrl } from "./nats-url.js";
import { batchEnds, DELIVERY_OVERHEAD_BYTES, messageSize, PullLedger, pullBudget } from "./pull-bounds.js";

export interface PullReadOptions {
  url: string;
  /** The prefix of the reply subjects (default `_INBOX`). */
  inboxPrefix?: string;
  stream: string;
  fromSeq: number;
  /** Largest number of messages in one packed batch. */
  maxBatch: number;
  /** Connection name shown by the server. */
  name: string;
  signal: AbortSignal;
  /** Messages asked for per pull request (default 2,048). */
  pullBatch?: number;
  /** Bytes asked for ahead at most (default: 4 MiB, or two of the server's largest message). */
  pullBytes?: number;
  /** The server's heartbeat interval while a pull waits (default 5 s); three missed fail the read. */
  heartbeatMs?: number;
  /** How long one pull request waits for messages (default 30 s). */
  pullExpiresMs?: number;
  /** Longest connecting, the handshake and creating the consumer may take (default 5 s). */
  setupTimeoutMs?: number;
}

/** The reader could not start (an unsupported URL or server, a refused connection): use another. */
export class PullSetupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PullSetupError";
  }
}

const LF = 10;
const CR = 13;
const SP = 32;
const TAB = 9;
const DOT = 46;
/** How long one pull request waits for messages (a live tail re-pulls after it). */
const DEFAULT_PULL_EXPIRES_MS = 30_000;
/**
 * The server sends a heartbeat this often while a pull waits for messages; silence for three
 * of them (a server that hangs with the connection open) fails the read.
 */
const DEFAULT_HEARTBEAT_MS = 5000;
/** Longest the connection, handshake and consumer creation may take before nats.js is used. */
const DEFAULT_SETUP_TIMEOUT_MS = 5000;
/** Packed batches kept ready ahead of the caller before pulling pauses. */
const READY_LIMIT = 4;
/** A consumer nobody pulls from for this long is removed by the server (as nats.js's ordered consumer). */
const INACTIVE_THRESHOLD_NS = 5 * 60e9;

interface ServerAddress {
  host: string;
  port: number;
  user?: string;
  pass?: string;
  token?: string;
}

/**
 * The servers of a NATS URL this reader can use, with their credentials (parsed as everywhere
 * else, parseNatsUrl: messages never repeat a password); TLS is a setup error.
 */
export function pullServerAddresses(url: string): ServerAddress[] {
  let target: ReturnType<typeof parseNatsUrl>;
  try {
    target = parseNatsUrl(url);
  } catch (err) {
    throw new PullSetupError((err as Error).message, { cause: err });
  }
  if (target.tls) throw new PullSetupError("TLS: this reader speaks plain NATS only");
  return target.servers.map((s) => {
    const u = new URL(s);
    const a: ServerAddress = { host: u.hostname.replace(/^\[(.*)\]$/, "$1"), port: u.port ? Number(u.port) : 4222 };
    if (target.cred.user !== undefined) Object.assign(a, { user: target.cred.user, pass: target.cred.pass });
    if (target.cred.token !== undefined) a.token = target.cred.token;
    return a;
  });
}

/**
 * One connection reading one stream. Tokens of a protocol line are found by scanning bytes;
 * a message's subject, headers and data go from the socket's buffer into the packer.
 */
class PullConnection {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  /** Chunks held back until a message's `need` bytes are in (one copy, not one per chunk). */
  private held: Buffer[] = [];
  private heldBytes = 0;
  private need = 0;
  private info: Record<string, unknown> | undefined;
  private readonly inbox: string;
  private readonly waiting = new Map<string, { resolve: (m: { status: number; data: Buffer }) => void; reject: (e: Error) => void }>();
  private pongs: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private infoWaiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private nextId = 0;
  /**
   * The pull requests not ended and what they may still deliver: bounded in bytes (at most 4
   * MiB, or two of the largest message, asked for ahead), so that what the server sends ahead
   * of the fold, held here until it is taken, is bounded too. Made once the server's INFO
   * gives its max_payload.
   */
  private ledger: PullLedger | undefined;
  private consumer: string | undefined;
  /** The last stream sequence delivered (0 before the first). */
  private lastSeq = 0;
  /** The consumer's sequence of the next delivery: 1, 2, 3, ... whatever the stream's sequences skip. */
  private expectDelivery = 1;
  private readonly packer = new BatchPacker();
  readonly ready: ArrayBuffer[] = [];
  private wake: (() => void) | undefined;
  private readonly tokens = new Int32Array(12);
  private readonly pullBatch: number;
  private lastData = Date.now();
  private readonly watchdog: NodeJS.Timeout;
  private readonly heartbeatMs: number;

  constructor(
    private readonly socket: Socket,
    private readonly opts: PullReadOptions,
  ) {
    // Unguessable: another client that may publish could otherwise send replies into it.
    this.inbox = `${opts.inboxPrefix ?? "_INBOX"}.ck_pull_${randomBytes(12).toString("hex")}`;
    this.pullBatch = opts.pullBatch ?? 2048;
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.fail(err));
    socket.on("close", () => this.fail(new Error("connection to the log closed")));
    this.heartbeatMs = opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.watchdog = setInterval(() => {
      if (this.ledger?.requests && Date.now() - this.lastData > 3 * this.heartbeatMs) {
        this.fail(new Error(`no message or heartbeat from the log for ${(3 * this.heartbeatMs) / 1000} s`));
        this.socket.destroy();
      }
    }, this.heartbeatMs);
    this.watchdog.unref();
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    clearInterval(this.watchdog);
    this.infoWaiter?.reject(err);
    for (const p of this.pongs.splice(0)) p.reject(err);
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Resolves when a batch is ready, the read failed or `signal` aborted. */
  async next(signal: AbortSignal): Promise<void> {
    if (this.ready.length || this.failure || signal.aborted) return;
    await new Promise<void>((resolve) => (this.wake = resolve));
  }

  interrupt(): void {
    this.notify();
  }

  /** Fails everything waiting on this connection and closes it. */
  abandon(err: Error): void {
    this.fail(err);
    this.socket.destroy();
  }

  /** INFO, CONNECT, PING/PONG, and the inbox subscription. */
  async handshake(addr: ServerAddress): Promise<void> {
    if (!this.info) await new Promise<void>((resolve, reject) => (this.infoWaiter = { resolve, reject }));
    const info = this.info!;
    if (info.tls_required) throw new PullSetupError("the server requires TLS");
    if (info.headers === false) throw new PullSetupError("the server does not support headers");
    const connect: Record<string, unknown> = {
      verbose: false,
      pedantic: false,
      tls_required: false,
      name: this.opts.name,
      lang: "ck",
      version: "1",
      protocol: 1,
      headers: true,
      no_responders: true,
    };
    if (addr.user !== undefined) Object.assign(connect, { user: addr.user, pass: addr.pass });
    if (addr.token !== undefined) connect.auth_token = addr.token;
    const pong = this.ping();
    this.socket.write(`CONNECT ${JSON.stringify(connect)}\r\nPING\r\n`);
    await pong;
    this.socket.write(`SUB ${this.inbox}.* 1\r\n`);
  }

  private ping(): Promise<void> {
    return new Promise((resolve, reject) => this.pongs.push({ resolve, reject }));
  }

  private publish(subject: string, reply: string, body: string): void {
    this.socket.write(`PUB ${subject} ${reply} ${Buffer.byteLength(body)}\r\n${body}\r\n`);
  }

  /** A JetStream API request; resolves with the reply's JSON or rejects with its error. */
  private async api(subject: string, body: unknown): Promise<Record<string, unknown>> {
    const reply = `${this.inbox}.r${++this.nextId}`;
    const answer = new Promise<{ status: number; data: Buffer }>((resolve, reject) => this.waiting.set(reply, { resolve, reject }));
    this.publish(subject, reply, JSON.stringify(body));
    const { status, data } = await answer;
    if (status === 503) throw new Error(`${subject}: no responders (is JetStream enabled?)`);
    if (status !== 0) throw new Error(`${subject}: status ${status}`);
    const json = JSON.parse(data.toString("utf8")) as Record<string, unknown>;
    const error = json.error as { description?: string; err_code?: number } | undefined;
    if (error) throw new Error(`${subject}: ${error.description ?? "error"} (${error.err_code ?? "?"})`);
    return json;
  }

  /** Creates the ephemeral pull consumer and sends the first pull. */
  async start(): Promise<void> {
    const config: Record<string, unknown> = {
      ack_policy: "none",
      replay_policy: "instant",
      mem_storage: true,
      num_replicas: 1,
      inactive_threshold: INACTIVE_THRESHOLD_NS,
    };
    if (this.opts.fromSeq > 1) Object.assign(config, { deliver_policy: "by_start_sequence", opt_start_seq: this.opts.fromSeq });
    else config.deliver_policy = "all";
    const created = await this.api(`$JS.API.CONSUMER.CREATE.${this.opts.stream}`, { stream_name: this.opts.stream, config });
    if (typeof created.name !== "string") throw new Error("consumer create: no consumer name in the reply");
    const maxPayload = typeof this.info?.max_payload === "number" ? this.info.max_payload : 1 << 20;
    this.ledger = new PullLedger(this.opts.pullBytes ?? pullBudget(maxPayload), maxPayload + DELIVERY_OVERHEAD_BYTES, this.pullBatch);
    this.consumer = created.name;
    this.pull();
  }

  /** Asks for more once what is outstanding runs low (the ledger's rule), unless the caller is far behind. */
  pull(): void {
    const ledger = this.ledger;
    if (!this.consumer || !ledger || this.failure || this.ready.length >= READY_LIMIT) return;
    const idle = ledger.requests === 0;
    const id = this.nextId + 1;
    const ask = ledger.ask(id);
    if (!ask) return;
    this.nextId = id;
    // The heartbeats the watchdog waits for start with this request, not with the last data.
    if (idle) this.lastData = Date.now();
    this.publish(`$JS.API.CONSUMER.MSG.NEXT.${this.opts.stream}.${this.consumer}`, `${this.inbox}.${id}`, JSON.stringify({ ...ask, expires: (this.opts.pullExpiresMs ?? DEFAULT_PULL_EXPIRES_MS) * 1e6, idle_heartbeat: this.heartbeatMs * 1e6 }));
  }

  /** Removes the consumer (best effort: the server removes it anyway once inactive) and closes. */
  async close(): Promise<void> {
    if (this.consumer && !this.failure) {
      this.publish(`$JS.API.CONSUMER.DELETE.${this.opts.stream}.${this.consumer}`, `${this.inbox}.d`, "");
      const flushed = this.ping();
      this.socket.write("PING\r\n");
      await Promise.race([flushed.catch(() => undefined), new Promise((r) => setTimeout(r, 500).unref())]);
    }
    clearInterval(this.watchdog);
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return;
    this.lastData = Date.now();
    if (this.need > 0) {
      this.held.push(chunk);
      this.heldBytes += chunk.length;
      if (this.buf.length - this.pos + this.heldBytes < this.need) return;
      this.buf = Buffer.concat([this.buf.subarray(this.pos), ...this.held]);
      this.held = [];
      this.heldBytes = 0;
    } else {
      this.buf = this.pos >= this.buf.length ? chunk : Buffer.concat([this.buf.subarray(this.pos), chunk]);
    }
    this.pos = 0;
    this.need = 0;
    try {
      this.parse();
    } catch (err) {
      this.fail(err as Error);
      this.socket.destroy();
      return;
    }
    this.pull();
  }

  private parse(): void {
    const b = this.buf;
    let p = this.pos;
    while (p < b.length) {
      const lf = b.indexOf(LF, p);
      if (lf < 0) break;
      const end = lf > p && b[lf - 1] === CR ? lf - 1 : lf;
      const c = b[p]! | 0x20;
      if (c === 0x68 /* h */ || c === 0x6d /* m */) {
        const withHeaders = c === 0x68;
        const argsStart = p + (withHeaders ? 5 : 4);
        const n = this.splitTokens(b, argsStart, end);
        const t = this.tokens;
        const expected = withHeaders ? [4, 5] : [3, 4];
        if (n !== expected[0] && n !== expected[1]) throw new Error(`protocol: ${b.toString("latin1", p, end)}`);
        const hasReply = n === expected[1];
        const total = readInt(b, t[2 * (n - 1)]!, t[2 * (n - 1) + 1]!);
        const hdrLen = withHeaders ? readInt(b, t[2 * (n - 2)]!, t[2 * (n - 2) + 1]!) : 0;
        const payload = lf + 1;
        if (payload + total + 2 > b.length) {
          this.need = payload + total + 2 - p; // the rest has not arrived yet
          break;
        }
        this.onMessage(b, t[0]!, t[1]!, hasReply ? t[4]! : -1, hasReply ? t[5]! : -1, payload, hdrLen, total);
        p = payload + total + 2;
        continue;
      }
      const line = b.toString("latin1", p, end);
      p = lf + 1;
      if (line === "PING") this.socket.write("PONG\r\n");
      else if (line === "PONG") this.pongs.shift()?.resolve();
      else if (line.startsWith("+OK")) continue;
      else if (line.startsWith("-ERR")) throw new Error(`server: ${line.slice(5)}`);
      else if (line.startsWith("INFO ")) {
        this.info = JSON.parse(line.slice(5)) as Record<string, unknown>;
        this.infoWaiter?.resolve();
        this.infoWaiter = undefined;
      } else throw new Error(`protocol: unexpected ${JSON.stringify(line.slice(0, 80))}`);
    }
    this.pos = p;
  }

  /** Token boundaries of a protocol line's arguments into this.tokens; returns their count. */
  private splitTokens(b: Buffer, start: number, end: number): number {
    let n = 0;
    let i = start;
    while (i < end && n < 6) {
      while (i < end && (b[i] === SP || b[i] === TAB)) i++;
      if (i >= end) break;
      const s = i;
      while (i < end && b[i] !== SP && b[i] !== TAB) i++;
      this.tokens[2 * n] = s;
      this.tokens[2 * n + 1] = i;
      n++;
    }
    return n;
  }

  private onMessage(b: Buffer, subS: number, subE: number, repS: number, repE: number, payload: number, hdrLen: number, total: number): void {
    const status = hdrLen > 0 ? statusOf(b, payload, payload + hdrLen) : 0;
    if (repS >= 0 && status === 0 && startsWith(b, repS, repE, "$JS.ACK.")) {
      this.onStreamMessage(b, subS, subE, repS, repE, payload, hdrLen, total);
      return;
    }
    const subject = b.toString("latin1", subS, subE);
    if (!subject.startsWith(this.inbox + ".")) return;
    const suffix = subject.slice(this.inbox.length + 1);
    const waiter = this.waiting.get(subject);
    if (waiter) {
      this.waiting.delete(subject);
      waiter.resolve({ status, data: Buffer.from(b.subarray(payload + hdrLen, payload + total)) });
      return;
    }
    if (status === 100 || !/^\d+$/.test(suffix)) return; // an idle heartbeat, a late reply
    const line = b.toString("latin1", payload, payload + hdrLen).split("\r\n")[0]!;
    // A pull request expired (what it left is not coming), or its room was too small for the
    // next message: it ended, and the next is asked for.
    const tooLarge = status === 409 && /Message Size Exceeds MaxBytes/i.test(line);
    if (status === 408 || tooLarge) {
      this.ledger?.ended(Number(suffix), tooLarge);
      return;
    }
    // 409 (the consumer was deleted, a limit was exceeded) and anything else end the read.
    throw new Error(`pull from ${this.opts.stream}: ${status ? line : "unexpected message"}`);
  }

  private onStreamMessage(b: Buffer, subS: number, subE: number, repS: number, repE: number, payload: number, hdrLen: number, total: number): void {
    // $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time ns>.<pending>, or
    // with <domain>.<account hash> after ACK and a random token at the end (newer servers).
    const dots: number[] = [];
    for (let i = repS; i < repE; i++) if (b[i] === DOT) dots.push(i);
    const tokenCount = dots.length + 1;
    const base = tokenCount === 9 ? 5 : tokenCount >= 11 ? 7 : -1;
    if (base < 0) throw new Error(`not a JetStream delivery: ${b.toString("latin1", repS, repE)}`);
    const tok = (k: number): [number, number] => [dots[k - 1]! + 1, k < dots.length ? dots[k]! : repE];
    const seq = readInt(b, ...tok(base));
    const delivery = readInt(b, ...tok(base + 1));
    const [ts, te] = tok(base + 2);
    // As nats.js computes JsMsg.time: the nanoseconds as a double, floored to milliseconds.
    const time = Math.floor(Number(b.toString("latin1", ts, te)) / 1e6);
    const pending = readInt(b, ...tok(base + 3));
    // A delivery missing (a slow client's messages dropped on the way) is a read that failed.
    // The stream's sequence only has to move on: one later than the next (the first messages
    // removed, a message deleted from the log) is delivered, and the fold decides what it means.
    if (delivery !== this.expectDelivery) throw new Error(`log read: delivery ${this.expectDelivery} of the consumer lost (got ${delivery}, stream sequence ${seq})`);
    if (seq < this.opts.fromSeq || seq <= this.lastSeq) throw new Error(`log read: stream sequence ${seq} out of order (after ${this.lastSeq || `a start at ${this.opts.fromSeq}`})`);
    this.expectDelivery = delivery + 1;
    this.lastSeq = seq;
    this.ledger?.delivered(messageSize(subE - subS, repE - repS, total));
    this.packer.addRaw(seq, time, pending, b, subS, subE, payload, payload + hdrLen, payload + total);
    if (batchEnds(this.packer.count, this.packer.bytes, this.opts.maxBatch, pending)) this.flushBatch();
  }

  private flushBatch(): void {
    this.ready.push(this.packer.finish());
    this.notify();
  }
}

function readInt(b: Buffer, s: number, e: number): number {
  if (s >= e) throw new Error("protocol: empty number");
  let n = 0;
  for (let i = s; i < e; i++) {
    const d = b[i]! - 48;
    if (d < 0 || d > 9) throw new Error(`protocol: not a number: ${b.toString("latin1", s, e)}`);
    n = n * 10 + d;
  }
  return n;
}

function startsWith(b: Buffer, s: number, e: number, prefix: string): boolean {
  if (e - s < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (b[s + i] !== prefix.charCodeAt(i)) return false;
  return true;
}

/** The status code of a header block (`NATS/1.0 404 No Messages`), 0 when it has none. */
function statusOf(b: Buffer, s: number, e: number): number {
  const head = "NATS/1.0";
  if (!startsWith(b, s, e, head)) return 0;
  let i = s + head.length;
  if (b[i] !== SP) return 0;
  while (b[i] === SP) i++;
  let n = 0;
  let digits = 0;
  while (i < e && b[i]! >= 48 && b[i]! <= 57 && digits < 3) {
    n = n * 10 + (b[i]! - 48);
    i++;
    digits++;
  }
  return digits === 3 ? n : 0;
}

/**
 * Reads the stream from `fromSeq` and yields packed batches (see packBatch) until `signal`
 * aborts or the caller stops. A batch ends at `maxBatch` messages or where the stream ended
 * when its last message was delivered (pending 0). Fails with PullSetupError when it cannot
 * start, with another error when the read breaks off.
 */
export async function* readPacked(opts: PullReadOptions): AsyncGenerator<ArrayBuffer> {
  // A cluster's servers (comma-separated) are tried in turn; the first that connects reads.
  const servers = pullServerAddresses(opts.url);
  const setupMs = opts.setupTimeoutMs ?? DEFAULT_SETUP_TIMEOUT_MS;
  let socket: Socket | undefined;
  let addr = servers[0]!;
  const refused: string[] = [];
  for (const a of servers) {
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        const s = netConnect({ host: a.host, port: a.port, noDelay: true });
        const timer = setTimeout(() => s.destroy(new Error(`no connection within ${setupMs} ms`)), setupMs);
        s.once("connect", () => {
          clearTimeout(timer);
          s.removeListener("error", reject);
          resolve(s);
        });
        s.once("error", (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      addr = a;
      break;
    } catch (err) {
      refused.push(`${a.host}:${a.port}: ${(err as Error).message}`);
    }
  }
  if (!socket) throw new PullSetupError(`connect to ${refused.join("; ")}`);
  const conn = new PullConnection(socket, opts);
  let settingUp = true;
  const onAbort = () => (settingUp ? conn.abandon(new Error("aborted")) : conn.interrupt());
  opts.signal.addEventListener("abort", onAbort, { once: true });
  try {
    // A server that accepts the connection but never answers (a TLS-first port, a cluster
    // without a JetStream leader) must not hold the caller: give up, and let nats.js try.
    const deadline = setTimeout(() => conn.abandon(new Error(`no answer from ${addr.host}:${addr.port} within ${setupMs} ms`)), setupMs);
    try {
      await conn.handshake(addr);
      await conn.start();
    } catch (err) {
      throw err instanceof PullSetupError ? err : new PullSetupError((err as Error).message, { cause: err });
    } finally {
      clearTimeout(deadline);
      settingUp = false;
    }
    for (;;) {
      await conn.next(opts.signal);
      if (opts.signal.aborted) return;
      const batch = conn.ready.shift();
      if (batch) {
        yield batch;
        conn.pull();
        continue;
      }
      if (conn.failed) throw conn.failed;
    }
  } finally {
    opts.signal.removeEventListener("abort", onAbort);
    await conn.close();
  }
}
