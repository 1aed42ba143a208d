// ck-replay events: the log's events as stored, with their sequence numbers, from a live or a
// stopped root (ckd need not run: ck-replay starts its nats-server for a stopped managed root).
// `ck events` shows the same events through ckd, as ctr does, without sequences; these are the
// numbers `show --until`, `diff --from/--to` and `rebuild --until` take.
import type { EventLog } from "../../src/eventstore/log.js";
import { decodeEnvelope } from "../../src/emitter/envelope.js";
import type { Protos } from "../../src/protos/protos.js";
import { eventJson, goTime } from "../../src/cli/format.js";
import { gapBefore, type LogGap } from "../../src/projections/log-gaps.js";

export interface EventsOptions {
  from?: { seq?: number; time?: Date };
  to?: { seq?: number; time?: Date };
  namespace?: string;
  /** Only topics starting with this. */
  topic?: string;
}

/** One stored event, decoded: its line is SEQ TIMESTAMP NAMESPACE TOPIC EVENT (JSON, as `ck events` prints it). */
export function decodeEvent(protos: Protos, seq: number, data: Uint8Array, subject = ""): { namespace: string; topic: string; line: string } {
  let env;
  try {
    env = decodeEnvelope(protos, data);
  } catch (err) {
    // Not an envelope (another tool's message on a containerd.io subject): shown, not fatal.
    return { namespace: "", topic: "", line: `${seq} - - ${subject} {"undecodable":${JSON.stringify((err as Error).message)}}` };
  }
  let body = "";
  if (env.event) {
    try {
      const { typeName, value } = protos.unpackAny(env.event);
      body = JSON.stringify(eventJson(protos, typeName, value));
    } catch {
      body = `{"type_url":${JSON.stringify(env.event.type_url)}}`;
    }
  }
  return { namespace: env.namespace, topic: env.topic, line: `${seq} ${goTime(env.timestamp ?? { seconds: 0, nanos: 0 })} ${env.namespace} ${env.topic} ${body}` };
}

/**
 * The lines of the stored events between two points (inclusive; to the log's last message
 * stored when called). The whole range is read and filtered here (a subject-filtered reader
 * would wait for a next message that may never come). `onGap` is told when the log's history
 * before the wanted start was cut, `onDeleted` of each run of messages missing inside the
 * range read (deleted from the log: listed, and read past, since nothing is folded here).
 */
export async function* logEvents(
  log: EventLog,
  protos: Protos,
  opts: EventsOptions,
  onGap?: (firstSeq: number) => void,
  onDeleted?: (gap: LogGap) => void,
): AsyncGenerator<string> {
  const { state } = await log.info();
  const fromSeq = opts.from?.seq ?? 1;
  // Told first, whatever is left to show: the start wanted is before what the log holds.
  const before = opts.from?.time ? state.messages === 0 || opts.from.time.getTime() < new Date(state.first_ts).getTime() : fromSeq < state.first_seq;
  if (before && state.first_seq > 1) onGap?.(state.first_seq);
  // The last message stored (up to --to), not the last sequence: a deleted last message keeps
  // that, and is never delivered.
  const last = (await log.end(opts.to?.seq)).lastStored;
  if (state.messages === 0 || last < state.first_seq || fromSeq > last) return;
  // A start past the last stored message: nothing (a reader from there would wait for more).
  if (opts.from?.time && opts.from.time.getTime() > new Date(state.last_ts).getTime()) return;
  const ac = new AbortController();
  const read = log.read({ ...(opts.from?.time ? { sinceTime: opts.from.time } : { fromSeq: Math.max(fromSeq, state.first_seq) }), signal: ac.signal });
  // Where the read starts, for telling a message missing before the first one read.
  let prev = opts.from?.time ? undefined : Math.max(fromSeq, state.first_seq) - 1;
  try {
    for await (const m of read) {
      if (m.seq > last || (opts.to?.time && m.time > opts.to.time)) break;
      const gap = prev === undefined ? undefined : gapBefore(prev, m.seq);
      if (gap) onDeleted?.(gap);
      prev = m.seq;
      const e = decodeEvent(protos, m.seq, m.data, m.subject);
      const wanted = e.topic === "" ? opts.namespace === undefined && opts.topic === undefined : (opts.namespace === undefined || e.namespace === opts.namespace) && (opts.topic === undefined || e.topic.startsWith(opts.topic));
      if (wanted) yield e.line;
      // Nothing stored after it (the last one wanted was deleted meanwhile): done, not waiting.
      if (m.seq >= last || m.pending === 0) break;
    }
  } finally {
    ac.abort();
    await read.return(undefined);
  }
}
