// One server consumer of the log, read in order over a nats.js connection, its pull requests
// bounded in messages and in bytes (PullLedger) and paced by its caller: what the server may
// send ahead of the caller, and what is held for it, stays within a byte budget whatever the
// events' sizes, while many small events are still asked for thousands at a time.
//
// nats.js's consume() cannot do this. It takes max_messages or max_bytes, not both (given bytes
// alone it asks for 100 messages a pull), and it counts what is owed as one running total of
// messages and one of bytes: a request that ends on its other limit (its messages delivered
// with bytes to spare, or its bytes used exactly) ends without a word from the server and
// stays owed in that total for good. Given both limits, its later pulls shrank to no room for
// the next large message after a run of small ones, and the reader stalled until two
// heartbeats were missed. Here each request has a reply subject of its own, and what each may
// still deliver is known (pull-bounds.ts). The consumer is what nats.js's ordered consumer
// makes (in memory, one replica, no acknowledgements); its replacement when it is lost, its
// connection comes back or it falls silent is the caller's (EventLog.reader).
//
// A caller that holds all it may (a Subscribe whose client stopped reading) has no pull owed,
// and nats-server removes a pull consumer once no request came for its inactive threshold: the
// reader then keeps it with a pull that can deliver nothing (one message of at most 1 byte,
// no_wait: answered at once, 404 or 409, nothing sent), which nats-server 2.9 counts as a
// request as any other. A consumer info does not: 2.9.10 removed a consumer asked for its info
// every 600 ms at its 2 s threshold; one sent such a pull as often was kept (checked by hand).
import { createInbox, nanos, nuid, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { AckPolicy, type ConsumerConfig, type JetStreamManager } from "@nats-io/jetstream";
import { PullLedger } from "./pull-bounds.js";

/** One message as the consumer delivered it, with what its reply subject says of it. */
export interface Delivery {
  msg: Msg;
  /** Its stream sequence. */
  seq: number;
  /** Messages after it that the consumer knew of when it was delivered. */
  pending: number;
  /** When the server stored it, in milliseconds since the epoch. */
  timeMs: number;
  /** Its size as the server counts it against a pull's max_bytes. */
  size: number;
}

export interface LogConsumerOptions {
  nc: NatsConnection;
  /** Creates the consumer (the creation times out as its requests do). */
  jsm: JetStreamManager;
  stream: string;
  /** Where the consumer starts, what it filters, how long the server keeps it unused (ns). */
  config: Partial<ConsumerConfig>;
  /** The connection's reply-subject prefix (nats.js: `_INBOX`). */
  inboxPrefix?: string;
  /** Bytes asked for ahead and held for the caller at most (pullBudget). */
  budget: number;
  /** The largest message the server can deliver (max_payload and what delivery adds). */
  largest: number;
  /** Messages asked for in one pull; no more is asked while the caller has this many waiting. */
  batch: number;
  /** The server's heartbeat interval while a pull waits; two missed are reported (onSilence). */
  heartbeatMs: number;
  /**
   * How long one pull request waits for messages (default 30 s, as nats.js); at most half the
   * consumer's inactive threshold (or two heartbeats), so that the next request (or keep-alive)
   * comes well within it.
   */
  expiresMs?: number;
}

/**
 * The consumer cannot go on: the server lost it or refused a pull (a status other than a
 * heartbeat, an expiry or a message too large for a request's room), or a delivery went
 * missing on the way (`deliveryLost`). Read on from the next message with another.
 */
export class LostConsumerError extends Error {
  constructor(
    message: string,
    readonly deliveryLost = false,
  ) {
    super(message);
    this.name = "LostConsumerError";
  }
}

const DEFAULT_EXPIRES_MS = 30_000;
/** nats-server's inactive threshold of a consumer created without one (an ephemeral's). */
const SERVER_INACTIVE_MS = 5000;
/** Taken deliveries dropped from the front of the queue once it holds this many. */
const QUEUE_COMPACT = 1024;

export class LogConsumer {
  /** Told once when the server has been silent for two heartbeats while a pull is owed. */
  onSilence: (() => void) | undefined;
  private readonly inbox: string;
  private readonly pullSubject: string;
  private readonly sub: Subscription;
  private readonly ledger: PullLedger;
  private readonly queue: (Delivery | undefined)[] = [];
  private head = 0;
  /** Bytes of the deliveries queued for the caller (counted against the budget). */
  private held = 0;
  private lastId = 0;
  /** The consumer's sequence of the next delivery: 1, 2, 3, ... whatever the stream's sequences skip. */
  private expectDelivery = 1;
  private lastHeard = Date.now();
  /** When a pull (or a keep-alive) was last sent: the server's inactivity counts from there. */
  private lastPull = Date.now();
  /** A keep-alive is sent when no pull was sent for this long and none is owed. */
  private readonly keepAliveMs: number;
  /** How long one pull waits. */
  private readonly expiresMs: number;
  /** The reply subject of keep-alives (no pull of the ledger's: theirs are numbered). */
  private readonly keepAliveReply: string;
  private stopped = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private readonly watchdog: NodeJS.Timeout;

  /** Creates the consumer on the server (under a fresh name) and sends its first pull. */
  static async create(o: LogConsumerOptions): Promise<LogConsumer> {
    const info = await o.jsm.consumers.add(o.stream, {
      ...o.config,
      name: nuid.next(),
      ack_policy: AckPolicy.None,
      max_deliver: 1,
      num_replicas: 1,
      mem_storage: true,
    });
    return new LogConsumer(o, info.name);
  }

  private constructor(
    private readonly o: LogConsumerOptions,
    /** The consumer's name on the server. */
    readonly name: string,
  ) {
    // Unguessable: another client that may publish could otherwise send replies into it.
    this.inbox = createInbox(o.inboxPrefix);
    this.pullSubject = `$JS.API.CONSUMER.MSG.NEXT.${o.stream}.${name}`;
    this.ledger = new PullLedger(o.budget, o.largest, o.batch);
    const inactiveNs = o.config.inactive_threshold;
    const inactiveMs = inactiveNs ? inactiveNs / 1e6 : SERVER_INACTIVE_MS;
    this.keepAliveMs = inactiveMs / 4;
    // (nats-server refuses a pull whose heartbeat is more than half its expiry.)
    this.expiresMs = Math.max(Math.min(o.expiresMs ?? DEFAULT_EXPIRES_MS, inactiveMs / 2), 2 * o.heartbeatMs);
    this.keepAliveReply = `${this.inbox}.keep`;
    this.sub = o.nc.subscribe(`${this.inbox}.*`, { callback: (err, msg) => this.onMessage(err, msg) });
    // Closed with the connection: the caller's next() ends (after a failure: throws, as it would).
    const closed = () => {
      if (!this.failure) this.stop();
    };
    void this.sub.closed.then(closed, closed);
    let lastTick = Date.now();
    this.watchdog = setInterval(() => {
      const now = Date.now();
      // Late by more than a heartbeat: this thread was busy (a long fold), and what the server
      // sent meanwhile waits in the socket, read after this timer. Not silence.
      const stalled = now - lastTick > 2 * o.heartbeatMs;
      lastTick = now;
      if (stalled) this.lastHeard = now;
      if (this.ledger.requests === 0) {
        if (now - this.lastPull >= this.keepAliveMs) this.keepAlive();
        return;
      }
      if (now - this.lastHeard <= 2 * o.heartbeatMs) return;
      this.lastHeard = now;
      this.onSilence?.();
    }, o.heartbeatMs);
    this.watchdog.unref();
    this.pump();
  }

  /**
   * The next delivery, in order; undefined once stopped (or the connection closed). Throws
   * LostConsumerError (after what was delivered before it) when the consumer cannot go on.
   */
  async next(): Promise<Delivery | undefined> {
    for (;;) {
      if (this.stopped) return undefined;
      if (this.head < this.queue.length) {
        const d = this.queue[this.head]!;
        this.queue[this.head++] = undefined;
        if (this.head >= QUEUE_COMPACT) {
          this.queue.splice(0, this.head);
          this.head = 0;
        }
        this.held -= d.size;
        this.pump();
        return d;
      }
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** Ends it: what it holds is dropped, its subscription closed (the server's consumer stays: the caller removes it). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.end();
    this.queue.length = 0;
    this.head = 0;
    this.held = 0;
  }

  private fail(err: Error): void {
    if (this.failure || this.stopped) return;
    this.failure = err;
    this.end();
  }

  private end(): void {
    clearInterval(this.watchdog);
    if (!this.sub.isClosed()) this.sub.unsubscribe();
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /**
   * Asks for more when the ledger says there is room, unless the caller has a batch waiting;
   * else, with no pull owed (the last one just expired, say), keeps the consumer.
   */
  private pump(): void {
    if (this.stopped || this.failure) return;
    const idle = this.ledger.requests === 0;
    const id = this.lastId + 1;
    const ask = this.queue.length - this.head >= this.o.batch ? undefined : this.ledger.ask(id, this.held);
    if (!ask) {
      if (idle && Date.now() - this.lastPull >= this.keepAliveMs) this.keepAlive();
      return;
    }
    this.lastId = id;
    // The heartbeats the watchdog waits for start with this request, not with the last message.
    if (idle) this.lastHeard = Date.now();
    this.sendPull(JSON.stringify({ ...ask, expires: nanos(this.expiresMs), idle_heartbeat: nanos(this.o.heartbeatMs) }), `${this.inbox}.${id}`);
  }

  /**
   * A pull that delivers nothing (no message is 1 byte: its subject alone is more), answered
   * at once: the server counts it as activity and keeps the consumer for a caller that holds
   * all it may. Its answer says nothing to the ledger.
   */
  private keepAlive(): void {
    if (this.stopped || this.failure) return;
    this.sendPull(JSON.stringify({ batch: 1, max_bytes: 1, no_wait: true }), this.keepAliveReply);
  }

  private sendPull(body: string, reply: string): void {
    this.lastPull = Date.now();
    try {
      this.o.nc.publish(this.pullSubject, body, { reply });
    } catch (err) {
      this.fail(err as Error); // the connection closed
    }
  }

  private onMessage(err: Error | null, msg: Msg): void {
    if (this.stopped || this.failure) return;
    if (err) return this.fail(err); // the subscription refused (permissions)
    this.lastHeard = Date.now();
    const reply = msg.reply;
    if (reply && reply.startsWith("$JS.ACK.")) return this.onDelivery(msg, reply);
    const status = msg.headers;
    if (!status || status.code === 0 || !msg.subject.startsWith(`${this.inbox}.`)) return;
    if (status.code === 100) return; // an idle heartbeat
    // A keep-alive's answer: no messages, or the next one larger than its byte.
    if (msg.subject === this.keepAliveReply && (status.code === 404 || status.code === 408 || isTooLarge(status))) return;
    const id = Number(msg.subject.slice(this.inbox.length + 1));
    // A pull request expired (what it left is not coming), or its room was too small for the
    // next message: it ended, and the next is asked for.
    const tooLarge = isTooLarge(status);
    if (status.code === 408 || tooLarge) {
      this.ledger.ended(id, tooLarge);
      this.pump();
      return;
    }
    // 409 Consumer Deleted, 503 (no consumer answers its pulls), a refused request: another is made.
    this.fail(new LostConsumerError(`consumer ${this.name} of ${this.o.stream}: ${status.code} ${status.description}`));
  }

  private onDelivery(msg: Msg, reply: string): void {
    const info = parseAckSubject(reply);
    if (!info) return this.fail(new LostConsumerError(`consumer ${this.name} of ${this.o.stream}: not a JetStream delivery: ${reply}`));
    // A delivery missing (lost on the way): read on from the next message with another consumer.
    if (info.delivery !== this.expectDelivery) {
      return this.fail(new LostConsumerError(`consumer ${this.name} of ${this.o.stream}: delivery ${this.expectDelivery} lost (got ${info.delivery}, stream sequence ${info.seq})`, true));
    }
    this.expectDelivery++;
    const size = deliveredSize(msg);
    this.ledger.delivered(size);
    this.queue.push({ msg, seq: info.seq, pending: info.pending, timeMs: info.timeMs, size });
    this.held += size;
    const w = this.wake;
    this.wake = undefined;
    w?.();
    // A request ended on its messages, or its bytes used exactly: room for the next.
    this.pump();
  }
}

/** A pull's end because the next message is larger than the room it had left (409). */
function isTooLarge(status: { code: number; description: string }): boolean {
  return status.code === 409 && /message size exceeds maxbytes/i.test(status.description);
}

/**
 * What a JetStream delivery's reply subject says: `$JS.ACK.<stream>.<consumer>.<delivered>.
 * <stream seq>.<consumer seq>.<time ns>.<pending>`, or with `<domain>.<account hash>` after
 * ACK and a random token at the end (newer servers). Undefined for any other subject.
 */
export function parseAckSubject(reply: string): { seq: number; delivery: number; timeMs: number; pending: number } | undefined {
  const t = reply.split(".");
  const base = t.length === 9 ? 5 : t.length >= 11 ? 7 : -1;
  if (base < 0 || t[0] !== "$JS" || t[1] !== "ACK") return undefined;
  const seq = Number(t[base]);
  const delivery = Number(t[base + 1]);
  // As nats.js computes JsMsg.time: the nanoseconds as a double, floored to milliseconds.
  const timeMs = Math.floor(Number(t[base + 2]) / 1e6);
  const pending = Number(t[base + 3]);
  if (!Number.isInteger(seq) || !Number.isInteger(delivery) || !Number.isInteger(pending) || Number.isNaN(timeMs)) return undefined;
  return { seq, delivery, timeMs, pending };
}

/**
 * A delivered message's size as the server counts it against max_bytes (messageSize): nats.js 3's
 * message knows it (its subject, reply subject, headers and data, as received). Another
 * message shape is sized from what it shows: its header block only as nats.js would write it
 * again, which may differ from the server's by a few bytes (the ledger then takes a request
 * whose bytes were used exactly for one that ended on a later message).
 */
export function deliveredSize(msg: Msg): number {
  const sized = msg as Msg & { size?: () => number };
  if (typeof sized.size === "function") return sized.size();
  const headers = msg.headers as (Msg["headers"] & { encode?: () => Uint8Array }) | undefined;
  const hdr = typeof headers?.encode === "function" ? headers.encode().length : 0;
  return Buffer.byteLength(msg.subject) + Buffer.byteLength(msg.reply ?? "") + hdr + msg.data.length;
}
