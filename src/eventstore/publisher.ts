// JetStream appends with their acknowledgements gathered on one inbox subscription. nats.js's
// `js.publish` makes a request per append: a mux entry, a timer, header building, and on every
// success an Error it rejects an already-settled promise with (RequestError "cancelled", stack
// and all); in a profile of ckd at 32 concurrent Containers.Create that Error alone was ~2% of
// its CPU, and the request machinery around it as much again. Here an append is one publish
// with a reply subject under this publisher's inbox; one sweep every quarter of the timeout
// fails the appends whose acknowledgement never came.
import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { JetStreamApiError } from "@nats-io/jetstream";

export interface PubAck {
  seq: number;
  duplicate: boolean;
}

interface Pending {
  subject: string;
  resolve: (ack: PubAck) => void;
  reject: (err: Error) => void;
  deadline: number;
}

const utf8 = new TextDecoder();

/** The append never left: nothing can have stored it. */
export class NotSentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NotSentError";
  }
}

/** Nothing took the append (503, no responders): no stream listens on its subject, so nothing stored it. */
export class NoStreamAnswersError extends Error {
  constructor() {
    super("no JetStream stream answers the append: is JetStream enabled, and does the stream exist?");
    this.name = "NoStreamAnswersError";
  }
}

export class AckPublisher {
  private inbox: string;
  private sub: Subscription;
  private readonly pending = new Map<string, Pending>();
  private nextId = 0;
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs: number,
    /** Where replies come (nats.js's `_INBOX` unless the connection has another prefix). */
    private readonly inboxPrefix?: string,
  ) {
    this.inbox = createInbox(inboxPrefix);
    this.sub = this.subscribe();
    this.sweeper = setInterval(() => this.sweep(), Math.max(20, timeoutMs / 4));
    this.sweeper.unref();
  }

  /** Appends of this publisher still waiting for their acknowledgement. */
  get inFlight(): number {
    return this.pending.size;
  }

  private subscribe(): Subscription {
    return this.nc.subscribe(`${this.inbox}.*`, { callback: (err, msg) => this.onReply(err, msg) });
  }

  /** Publishes `data` to `subject` and resolves with JetStream's acknowledgement. */
  publish(subject: string, data: Uint8Array, headers: MsgHdrs): Promise<PubAck> {
    // Nothing could settle it: no sweep runs and no acknowledgement is listened for.
    if (this.closed) return Promise.reject(new NotSentError("publisher closed"));
    if (this.sub.isClosed() && !this.nc.isClosed() && !this.nc.isDraining()) {
      // The server ended the subscription (a permissions error, say): a new inbox, not appends
      // that can only time out.
      this.inbox = createInbox(this.inboxPrefix);
      this.sub = this.subscribe();
    }
    const token = (++this.nextId).toString(36);
    return new Promise<PubAck>((resolve, reject) => {
      this.pending.set(token, { subject, resolve, reject, deadline: performance.now() + this.timeoutMs });
      try {
        this.nc.publish(subject, data, { reply: `${this.inbox}.${token}`, headers });
      } catch (err) {
        this.pending.delete(token);
        reject(new NotSentError((err as Error).message, { cause: err }));
      }
    });
  }

  private onReply(err: Error | null, msg: Msg): void {
    if (err) {
      this.failAll(err);
      return;
    }
    const token = msg.subject.slice(this.inbox.length + 1);
    const p = this.pending.get(token);
    if (!p) return; // timed out already
    this.pending.delete(token);
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      p.reject(new NoStreamAnswersError());
      return;
    }
    let v: { stream?: string; seq?: number; duplicate?: boolean; error?: { code: number; err_code: number; description: string } };
    try {
      v = JSON.parse(utf8.decode(msg.data));
    } catch (e) {
      p.reject(new Error(`invalid JetStream acknowledgement: ${(e as Error).message}`));
      return;
    }
    if (v.error) p.reject(new JetStreamApiError(v.error));
    // A sequence of 0 (some clustered servers' answer to a duplicate still in flight) says
    // nothing of where the message is: an unknown outcome, as a timeout.
    else if (!v.stream || typeof v.seq !== "number" || v.seq <= 0) p.reject(new Error(`invalid JetStream acknowledgement (seq ${v.seq})`));
    else p.resolve({ seq: v.seq, duplicate: v.duplicate === true });
  }

  private sweep(): void {
    if (this.pending.size === 0) return;
    const now = performance.now();
    for (const [token, p] of this.pending) {
      if (p.deadline > now) continue;
      this.pending.delete(token);
      p.reject(new Error(`no acknowledgement within ${this.timeoutMs} ms`));
    }
  }

  /**
   * Fails the appends to `subject` still waiting (the server said it dropped a publish there:
   * it refuses them all, and no acknowledgement will come).
   */
  refuse(subject: string, err: Error): void {
    for (const [token, p] of this.pending) {
      if (p.subject !== subject) continue;
      this.pending.delete(token);
      p.reject(err);
    }
  }

  /** Fails every append waiting for its acknowledgement (its outcome is unknown). */
  failAll(err: Error): void {
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) p.reject(err);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    this.sub.unsubscribe();
    this.failAll(new Error("publisher closed"));
  }
}
