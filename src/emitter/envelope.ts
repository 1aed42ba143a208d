// Typed events in and out of the log: a draft (namespace, topic, typed payload) becomes a
// containerd Envelope {timestamp, namespace, topic, event: Any} on its subject, and a stored
// message becomes a LoggedEvent again. The Any's type_url is the bare proto name, as
// containerd's typeurl writes it, because ctr drops events whose type it cannot resolve.
import type { Protos } from "../protos/protos.js";
import type { StoredMessage } from "../eventstore/log.js";
import type { LoggedEvent, Timestamp } from "../projections/views.js";
import { subjectFor } from "./subjects.js";
import { CkError } from "../errdefs/errdefs.js";

export const ENVELOPE_TYPE = "containerd.services.events.v1.Envelope";

/** Header marking who wrote a message: ck's own commands (projected) or Events.Publish. */
export const ORIGIN_HEADER = "Ck-Origin";
export const ORIGIN_COMMAND = "command";
export const ORIGIN_PUBLISH = "publish";

export interface EventDraft {
  namespace: string;
  topic: string;
  /** Full proto name of the event message. */
  typeName: string;
  payload: Record<string, unknown>;
  /** An event already packed by a client (Events.Publish/Forward): logged, never projected. */
  packed?: { type_url: string; value: Uint8Array };
  /** Timestamp chosen by the client (Events.Forward). */
  timestamp?: Timestamp;
}

export interface Envelope {
  timestamp: Timestamp;
  namespace: string;
  topic: string;
  event: { type_url: string; value: Uint8Array } | null;
}

/** Seconds of Go's zero time.Time (0001-01-01T00:00:00Z) as a protobuf Timestamp carries it. */
export const GO_ZERO_TIME_SECONDS = -62135596800;

export function toTimestamp(d: Date): Timestamp {
  const ms = d.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

export function nowTimestamp(): Timestamp {
  return toTimestamp(new Date());
}

export function encodeEnvelope(protos: Protos, draft: EventDraft, timestamp: Timestamp): Buffer {
  return protos.encode(ENVELOPE_TYPE, {
    timestamp,
    namespace: draft.namespace,
    topic: draft.topic,
    event: draft.packed ?? protos.packAny(draft.typeName, draft.payload),
  });
}

export function decodeEnvelope(protos: Protos, data: Uint8Array): Envelope {
  return protos.decode(ENVELOPE_TYPE, data) as Envelope;
}

export function subjectOf(draft: { namespace: string; topic: string }): string {
  return subjectFor(draft.namespace, draft.topic);
}

/**
 * Decodes a stored message into the event the projections fold. Messages not written by
 * ck's commands (Events.Publish, foreign tools) give undefined. A command's event that this
 * ck cannot fold throws, whether its bytes do not decode or its type is one this ck does not
 * know (a newer ck wrote it): skipping it would leave the projection without what the log
 * says (a snapshot's record, whose directory GC would then take), and ck-replay verify could
 * not tell, its rebuild skipping the same.
 */
export function toLoggedEvent(protos: Protos, msg: StoredMessage): LoggedEvent | undefined {
  if ((msg.header ? msg.header(ORIGIN_HEADER) : msg.headers[ORIGIN_HEADER]) !== ORIGIN_COMMAND) return undefined;
  // The projection's hot path: message objects, no plain-object copies (evolve normalises).
  const env = protos.decodeMessage(ENVELOPE_TYPE, msg.data);
  if (!env.event) return undefined;
  const url: string = env.event.type_url;
  const typeName = url.includes("/") ? url.slice(url.lastIndexOf("/") + 1) : url;
  if (!protos.has(typeName)) {
    throw new CkError(
      "FailedPrecondition",
      `the log's event at sequence ${msg.seq} (${typeName}, ${env.topic}) is of a type this ck does not know: a newer ck wrote it; the projection cannot apply the log past it (run the ck that wrote it)`,
    );
  }
  let payload: any;
  try {
    payload = protos.decodeMessage(typeName, env.event.value);
  } catch (err) {
    throw new CkError("Unknown", `the log's event at sequence ${msg.seq} (${typeName}, ${env.topic}) does not decode: ${(err as Error).message}; the projection cannot apply the log past it`, { cause: err });
  }
  return {
    seq: msg.seq,
    namespace: env.namespace,
    topic: env.topic,
    timestamp: { seconds: Number(env.timestamp?.seconds ?? 0), nanos: env.timestamp?.nanos ?? 0 },
    typeName,
    payload,
  };
}
