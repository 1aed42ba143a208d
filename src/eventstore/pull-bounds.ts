// How far the server may send a log reader ahead of it, in messages and bytes, and the pull
// requests that keep it so: shared by the readers on nats.js's connections (log-consumer.ts)
// and the catch-up thread's own (pull-reader.ts). Loads nothing, so the worker thread starts
// without nats.js.

/**
 * Bytes the server may send a reader ahead of it (more where two of the largest message do not
 * fit: pullBudget). Counted in messages only, 4,096 events of ~1 MiB (a container's spec, an
 * Events.Publish: up to the server's max_payload) were ~4 GiB asked for at once: the server
 * buffers what the connection does not take as fast, and past its max_pending (64 MiB by
 * default) cuts the whole connection as a slow consumer. The catch-up thread's reader held all
 * it had asked for (3,072 messages) in memory.
 */
export const READER_PULL_BYTES = 4 << 20;
/**
 * Messages a reader on a nats.js connection asks for in one pull request: many small events
 * are read at the rate of counted pulls (a pull of 100, as nats.js makes them when given a byte
 * limit, cost the server about twice the CPU per small message), while the request's bytes
 * (READER_PULL_BYTES at most) end it early on large ones.
 */
export const READER_PULL_MESSAGES = 4096;
/** A delivered message's subject, headers and reply subject, beyond what its publisher sent. */
export const DELIVERY_OVERHEAD_BYTES = 64 << 10;
/**
 * The bytes a reader on a server whose max_payload is `maxPayload` may have asked for ahead:
 * `budget`, or room for two of the largest message where that is more, so that a request asked
 * once half of it is free has room for at least one whole message (a pull whose room is
 * smaller than the next message ends with nothing delivered).
 */
export function pullBudget(maxPayload: number, budget = READER_PULL_BYTES): number {
  return Math.max(budget, 2 * (maxPayload + DELIVERY_OVERHEAD_BYTES));
}

/**
 * A batch handed to the fold ends at this many bytes too (or past it by one message): the
 * worker hands over a bounded number of batches ahead of the fold (its credits), so what they
 * hold is bounded as well, not 256 messages of up to the server's max_payload each; the
 * projector's own reader batches the same way.
 */
export const MAX_BATCH_BYTES = 4 << 20;

/**
 * Whether a batch of `count` messages and `bytes` bytes ends with the message just added (its
 * `pending`: 0 at the stream's end, where a reader hands over what it has at once).
 */
export function batchEnds(count: number, bytes: number, maxBatch: number, pending: number): boolean {
  return pending === 0 || count >= maxBatch || bytes >= MAX_BATCH_BYTES;
}

/** The least room a pull asks for (a message's subject, reply and headers alone are about 100 bytes). */
const MIN_PULL_ROOM = 64 << 10;

interface PullRequestState {
  id: number;
  /** Messages it may still deliver. */
  msgs: number;
  /** Bytes it may still deliver, as the server counts them (MessageSize). */
  bytes: number;
  delivered: number;
}

/**
 * A delivered message's size as the server counts it against a pull's max_bytes: its subject,
 * its reply (acknowledgement) subject, headers and data (nats-server 2.9: 1,000 bytes of data
 * on subject `t.a` with a 46-byte reply were 1,049).
 */
export function messageSize(subject: number, reply: number, headersAndData: number): number {
  return subject + reply + headersAndData;
}

/**
 * The pull requests a reader has sent and what each may still deliver, in messages and bytes,
 * and the decision of when to ask again and for how much: at most `budget` bytes owed at once
 * (the messages the server may send ahead), each request with room for the largest message
 * seen (a request whose room is smaller than the next message ends at once with a 409, nothing
 * delivered: the next asks for more). Which request a message answers is not on the wire; the
 * server serves a consumer's requests in the order they came, so a message goes to the oldest
 * with room for it. A request ends when its messages or bytes are used up (exactly used bytes
 * end it silently), or with a status (408: expired; 409: the next message does not fit).
 * Known request by request, as here, what is owed stays true whichever way each request ends;
 * nats.js's consume() keeps one running total of messages and one of bytes, which a request
 * that ends on the other limit, saying nothing, leaves owing for good: with both limits its
 * later pulls shrink until none has room for the next message, and it stalls until heartbeats
 * are missed.
 */
export class PullLedger {
  private readonly reqs: PullRequestState[] = [];
  /** Room a request needs: the largest message delivered, or one a request found too small for. */
  private need: number;

  constructor(
    /** Bytes owed at most (pullBudget: at least twice the largest message). */
    readonly budget: number,
    /** The largest message the server can deliver (max_payload and what delivery adds). */
    readonly largest: number,
    /** Messages per request. */
    readonly batch: number,
  ) {
    this.need = Math.min(MIN_PULL_ROOM, largest);
  }

  /** Messages the requests not ended may still deliver. */
  get messages(): number {
    let n = 0;
    for (const r of this.reqs) n += r.msgs;
    return n;
  }

  /** Bytes they may still deliver. */
  get bytes(): number {
    let n = 0;
    for (const r of this.reqs) n += r.bytes;
    return n;
  }

  get requests(): number {
    return this.reqs.length;
  }

  /**
   * The next request to send (recorded as sent) or undefined: once the room left is enough
   * for the largest message, and either half of the messages asked for came or half of the
   * budget is free (requests that end on bytes owe messages that will never come). `held`:
   * bytes delivered that the reader's caller has not taken yet, counted against the budget
   * too by a reader that keeps them for it (so what it holds is bounded as well).
   */
  ask(id: number, held = 0): { batch: number; max_bytes: number } | undefined {
    const room = this.budget - this.bytes - held;
    if (room < this.need) return undefined;
    if (this.messages > this.batch / 2 && room < this.budget / 2) return undefined;
    this.reqs.push({ id, msgs: this.batch, bytes: room, delivered: 0 });
    return { batch: this.batch, max_bytes: room };
  }

  /** A message of `size` (messageSize) was delivered. */
  delivered(size: number): void {
    if (size > this.need) this.need = Math.min(size, this.largest);
    // The oldest request with room for it; older ones without it ended silently.
    while (this.reqs.length > 1 && this.reqs[0]!.bytes < size) this.reqs.shift();
    const r = this.reqs[0];
    if (!r) return;
    r.msgs--;
    r.bytes -= size;
    r.delivered++;
    if (r.msgs <= 0 || r.bytes <= 0) this.reqs.shift();
  }

  /**
   * Request `id` ended with a status. `tooLarge`: its room was too small for the next message
   * (409 Message Size Exceeds MaxBytes); when it delivered nothing, the next request needs more.
   */
  ended(id: number, tooLarge: boolean): void {
    const at = this.reqs.findIndex((r) => r.id === id);
    if (at < 0) return;
    const [r] = this.reqs.splice(at, 1);
    if (tooLarge && r!.delivered === 0) this.need = Math.min(this.largest, Math.max(this.need, r!.bytes + 1));
  }
}
