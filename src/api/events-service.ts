// containerd v1 Events service: Publish and Forward append client events to the log (never
// projected), Subscribe streams envelopes from the log with filters. ck extensions in gRPC
// metadata: `ck-from-seq: N` or `ck-since: RFC3339` replays history before live events;
// `ck-events: all` adds ck's own event types to containerd's.
import type * as grpc from "@grpc/grpc-js";
import type { Sequencer } from "../commands/sequencer.js";
import type { EventSubscriptions } from "../emitter/subscriptions.js";
import { invalidArgument, outOfRange, unavailable } from "../errdefs/errdefs.js";
import { validateTopic } from "../emitter/subjects.js";
import { parseRfc3339, validateIdentifier } from "../commands/validation.js";
import { metadataValue, namespaceOf, serverStream, unary, writeStream } from "./grpc.js";
import { GO_ZERO_TIME_SECONDS, type EventDraft } from "../emitter/envelope.js";

export const FROM_SEQ_HEADER = "ck-from-seq";
export const SINCE_HEADER = "ck-since";
/**
 * `ck-events: all` also streams ck's own events (`ck.events.*`, where containerd publishes
 * none). Without it a subscriber gets what containerd would send: a containerd client cannot
 * decode ck's types (`ctr events` warns at each), and ck's CLI asks for them.
 */
export const CK_EVENTS_HEADER = "ck-events";
/**
 * Facts of a Subscribe refused for a start before the log's (OutOfRange), in its status's
 * trailing metadata: the first sequence the log still holds, and (for ck-since) the latest time
 * a removed event can have. ck says what its user typed from them (--from-seq, --since).
 */
export const FIRST_SEQ_FACT = "ck-first-seq";
export const CUT_UNTIL_FACT = "ck-cut-until";
const CK_EVENT_TYPES = "ck.events.";

export interface EventsDeps {
  sequencer: Sequencer;
  subscriptions: EventSubscriptions;
  /**
   * Where the log's stored history starts: its first sequence (past 1 once ck-replay compact
   * cut it) and, when asked, the latest time a removed message can have.
   */
  historyStart: (withTime: boolean) => Promise<{ firstSeq: number; cutUntil?: Date }>;
  /**
   * Called once when ckd begins to stop: open subscriptions then end with Unavailable
   * (`ck events` says ckd is stopping), not cut by the server's forced shutdown a second
   * later, which a client sees as its own call cancelled.
   */
  onStopping?: (fn: () => void) => void;
}

function packedDraft(namespace: string, topic: string, event: any, timestamp?: any): EventDraft {
  validateIdentifier("namespace", namespace);
  validateTopic(topic);
  if (!event || !event.type_url) throw invalidArgument("event must be set (an Any with a type_url)");
  return {
    namespace,
    topic,
    typeName: event.type_url,
    payload: {},
    packed: { type_url: event.type_url, value: event.value ?? Buffer.alloc(0) },
    timestamp: timestamp ?? undefined,
  };
}

export function eventsService(d: EventsDeps): grpc.UntypedServiceImplementation {
  const subscribers = new Set<() => void>();
  let stopping = false;
  d.onStopping?.(() => {
    stopping = true;
    for (const stop of [...subscribers]) stop();
  });
  return {
    Publish: unary(async (call) => {
      const draft = packedDraft(namespaceOf(call), call.request.topic ?? "", call.request.event);
      await d.sequencer.submit(() => ({ event: draft, result: undefined }));
      return {};
    }),
    Forward: unary(async (call) => {
      const env = call.request.envelope;
      if (!env) throw invalidArgument("envelope must be set");
      const draft = packedDraft(env.namespace ?? "", env.topic ?? "", env.event, env.timestamp);
      // As containerd 1.6's exchange, after namespace and topic: a forwarded event carries its
      // own time (absent, or Go's zero time, year 1, is none).
      const t = env.timestamp;
      if (!t || (Number(t.seconds ?? 0) === GO_ZERO_TIME_SECONDS && Number(t.nanos ?? 0) === 0)) throw invalidArgument("timestamp must be set on forwarded event");
      await d.sequencer.submit(() => ({ event: draft, result: undefined }));
      return {};
    }),
    Subscribe: serverStream(async (call) => {
      const fromSeqRaw = metadataValue(call, FROM_SEQ_HEADER);
      const sinceRaw = metadataValue(call, SINCE_HEADER);
      const ckEventsRaw = metadataValue(call, CK_EVENTS_HEADER);
      if (ckEventsRaw !== undefined && ckEventsRaw !== "all") throw invalidArgument(`${CK_EVENTS_HEADER} "${ckEventsRaw}" must be "all" (or absent: containerd's events only)`);
      const withCkEvents = ckEventsRaw === "all";
      let fromSeq: number | undefined;
      let since: Date | undefined;
      if (fromSeqRaw !== undefined && sinceRaw !== undefined) throw invalidArgument(`${FROM_SEQ_HEADER} and ${SINCE_HEADER} are exclusive: give one starting point`);
      if (fromSeqRaw !== undefined) {
        // Decimal digits only: Number() would take "0x10", "1e3" and " 7".
        fromSeq = /^[1-9]\d{0,15}$/.test(fromSeqRaw) ? Number(fromSeqRaw) : NaN;
        if (!Number.isSafeInteger(fromSeq)) throw invalidArgument(`${FROM_SEQ_HEADER} "${fromSeqRaw}" must be a positive integer`);
      }
      if (sinceRaw !== undefined) {
        since = parseRfc3339(sinceRaw);
        if (!since) throw invalidArgument(`${SINCE_HEADER} "${sinceRaw}" must be an RFC 3339 time with its zone (e.g. 2026-12-01T10:00:00Z)`);
      }
      // JetStream would start at the first message still stored without a word: a history with
      // a hole at its start is not what was asked for. Asked again once the consumer exists
      // (a compaction in between would otherwise slip through).
      const checkHistory = async () => {
        if (fromSeq === undefined && since === undefined) return;
        const start = await d.historyStart(since !== undefined);
        const first = String(start.firstSeq);
        if (fromSeq !== undefined && fromSeq < start.firstSeq) {
          throw outOfRange(
            `${FROM_SEQ_HEADER} ${fromSeq}: the log now starts at sequence ${first}, the history before it compacted away (ck-replay compact); subscribe with ${FROM_SEQ_HEADER} ${first} or later (ck events --from-seq ${first}), or without it for new events only`,
            { facts: { [FIRST_SEQ_FACT]: first } },
          );
        }
        if (since !== undefined && start.cutUntil !== undefined && since.getTime() <= start.cutUntil.getTime()) {
          const until = start.cutUntil.toISOString();
          throw outOfRange(
            `${SINCE_HEADER} ${since.toISOString()}: the log now starts at sequence ${first}, the history before it compacted away (ck-replay compact), events up to ${until} with it; subscribe with a later ${SINCE_HEADER} (ck events --since), or with ${FROM_SEQ_HEADER} ${first}`,
            { facts: { [FIRST_SEQ_FACT]: first, [CUT_UNTIL_FACT]: until } },
          );
        }
      };
      // Listening first: a client gone during the history checks' round trips ends it too.
      const abort = new AbortController();
      call.on("cancelled", () => abort.abort());
      call.on("close", () => abort.abort());
      if (call.cancelled) abort.abort();
      const stop = () => abort.abort();
      subscribers.add(stop);
      if (stopping) abort.abort();
      const daemonStopping = () => unavailable("ckd is stopping: the subscription ended; subscribe again once it serves");
      try {
        await checkHistory();
        if (abort.signal.aborted) {
          if (stopping && !call.cancelled) throw daemonStopping();
          return;
        }
        const events = await d.subscriptions.subscribe({ filters: call.request.filters ?? [], fromSeq, since, signal: abort.signal });
        try {
          await checkHistory();
        } catch (err) {
          abort.abort();
          throw err;
        }
        // Tell the client the subscription is live before the first event arrives.
        call.sendMetadata(new (call.metadata.constructor as typeof grpc.Metadata)());
        for await (const ev of events) {
          if (call.cancelled) break;
          if (!withCkEvents && ev.envelope.event?.type_url.startsWith(CK_EVENT_TYPES)) continue;
          await writeStream(call, ev.envelope);
        }
        if (stopping && !call.cancelled) throw daemonStopping();
      } finally {
        subscribers.delete(stop);
      }
    }),
  };
}
