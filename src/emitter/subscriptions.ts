// Filtered subscriptions to the log, for the Events service and `ck events`. Each subscriber
// reads the stream through its own ordered consumer, at its own pace: a stalled subscriber
// never blocks writers or other subscribers. Filters use containerd's syntax over the
// envelope (namespace, topic, event.<field>); a namespace pinned by every filter branch
// narrows the NATS subject so other namespaces' events are not even transferred.
import type { EventLog, StoredMessage } from "../eventstore/log.js";
import type { Protos } from "../protos/protos.js";
import { parseFilters, envelopeFieldpath, pinnedNamespace, type Filter } from "../projections/filters.js";
import { decodeEnvelope, type Envelope } from "./envelope.js";
import { namespaceSubjectFilter } from "./subjects.js";

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
    });
    return this.deliver(read, filter);
  }

  private async *deliver(read: AsyncGenerator<StoredMessage>, filter: Filter): AsyncGenerator<DeliveredEvent> {
    for await (const m of read) {
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
