// Filtered subscriptions to the log, for the Events service and `ck events`. Each subscriber
// reads the stream through its own ordered consumer, at its own pace, on a NATS connection
// shared by subscribers only: a stalled subscriber never blocks writers or other subscribers,
// and one that falls far behind never costs a write its connection. Filters use containerd's
// syntax over the envelope (namespace, topic, event.<field>); a namespace pinned by every
// filter branch narrows the NATS subject so other namespaces' events are not even transferred.
import type { EventLog, StoredMessage } from "../eventstore/log.js";
import type { Protos } from "../protos/protos.js";
import { parseFilters, envelopeFieldpath, pinnedNamespace, type Filter } from "../projections/filters.js";
import { decodeEnvelope, type Envelope } from "./envelope.js";
import { namespaceSubjectFilter } from "./subjects.js";
import { outOfRange } from "../errdefs/errdefs.js";

const FROM_SEQ_HINT = "ck-from-seq";

export interface SubscribeOptions {
  filters?: string[];
  /** Replay history from this stream sequence first (ck extension). */
  fromSeq?: number;
  /** Replay history stored since this time first (ck extension). */
  since?: Date;
  signal?: AbortSignal;
}

export interface DeliveredEvent {
  seq: number;
  envelope: Envelope;
}

export class EventSubscriptions {
  constructor(
    private readonly log: EventLog,
    private readonly protos: Protos,
  ) {}

  /**
   * Validates filters (InvalidArgument before anything is read) and opens the subscription:
   * once this resolves, every later event is delivered.
   */
  async subscribe(opts: SubscribeOptions): Promise<AsyncGenerator<DeliveredEvent>> {
    const filter = parseFilters(opts.filters ?? []);
    const pinned = pinnedNamespace(filter);
    const read = await this.log.reader({
      filterSubject: pinned ? namespaceSubjectFilter(pinned) : undefined,
      fromSeq: opts.fromSeq,
      sinceTime: opts.since,
      onlyNew: opts.fromSeq === undefined && opts.since === undefined,
      signal: opts.signal,
      // A client sets the pace: read on the log's readers' connection, never on the writers'.
      clientPaced: true,
    });
    return this.deliver(read, filter, pinned !== undefined);
  }

  private async *deliver(read: AsyncGenerator<StoredMessage>, filter: Filter, narrowed: boolean): AsyncGenerator<DeliveredEvent> {
    let last = 0;
    for await (const m of read) {
      // Messages removed before this subscriber read them (a compaction cut past it while it
      // lagged): its history has a hole, which it is told of rather than left to miss. Only
      // for a subscription of the whole log, where every sequence is delivered: one narrowed
      // to a namespace skips the others' as a matter of course, and the log cannot say
      // whether a cut removed any of its own (not told, as before).
      if (!narrowed && last > 0 && m.seq > last + 1) {
        // Which removal, from where the log now starts (asked on this path only): cut from its
        // front, or deleted from inside it (a message the front still covers is missing).
        const first = await this.log.info().then((i) => i.state.first_seq, () => undefined);
        const how = first === undefined ? "cut by a compaction or deleted from it" : first > last + 1 ? "cut by a compaction (ck-replay compact)" : "deleted from inside it";
        throw outOfRange(
          `events from sequence ${last + 1} were removed from the log (${how}) before this subscription read them; it resumes at ${m.seq}: subscribe again (with ${FROM_SEQ_HINT}, ck events --from-seq, for the history still kept)`,
        );
      }
      last = m.seq;
      // Anyone may publish on containerd.io.>: what is not an envelope is no event, and ends
      // no subscription (ck-replay events skips it the same way).
      let envelope: Envelope;
      try {
        envelope = decodeEnvelope(this.protos, m.data);
      } catch {
        continue;
      }
      let decoded: unknown;
      const lazyEvent = () => {
        if (decoded === undefined && envelope.event) {
          try {
            decoded = this.protos.unpackAny(envelope.event).value;
          } catch {
            decoded = null;
          }
        }
        return decoded;
      };
      if (!filter.match(envelopeFieldpath({ namespace: envelope.namespace, topic: envelope.topic, event: lazyEvent }))) continue;
      yield { seq: m.seq, envelope };
    }
  }
}
