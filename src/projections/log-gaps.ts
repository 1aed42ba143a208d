// Gaps in the log: the one rule by which every fold (ckd's projector, its catch-up thread,
// ck-replay rebuild, verify, show, diff, base and compact, all through Projector) decides what
// a sequence missing between its checkpoint and the next message means.
//
// JetStream numbers messages 1, 2, 3, ... and never reuses a number, so a fold that meets a
// message not directly after its checkpoint knows messages were removed, and which:
// - from the front of the stream (compaction's purge up to a base, stream limits, the first
//   message deleted): the stream's first stored sequence is past them. A base holds the state
//   they made, and a projection behind them starts again from it (openProjection).
// - from inside the log (`nats stream rmm`, a subject purge, any deletion with later messages
//   still stored): nothing holds what they did. Folding on would give a state the log never
//   recorded, silently; restarting from a base would not help either (no base can be taken
//   across them without folding past them). So it is its own error, DataLoss, and only an
//   operator's explicit choice (ck-replay --allow-gaps) folds across it.
// - at the end of the stream, with nothing stored after them (the last message deleted):
//   JetStream keeps reporting their sequence as its last, and they are never delivered. Such
//   a deleted tail is not a gap (there is nothing after it to fold wrongly): a fold that has
//   applied every stored message passes it, moving its checkpoint to the stream's last
//   sequence, so the next append (which JetStream numbers after it) follows directly. Once a
//   later message exists, a fold that had not passed it meets it as a gap like any other.
import { CkError } from "../errdefs/errdefs.js";
import type { LogEnd } from "../eventstore/log.js";

/** Sequences `from` to `to` (inclusive) missing where a fold reads the log; `next` is the message after them. */
export interface LogGap {
  from: number;
  to: number;
  /** The first message still stored after the gap (the one that showed it). */
  next: number;
}

/**
 * The gap between the checkpoint and the next message, if it does not directly follow; with
 * `untilSeq` (a fold that stops there) only the part up to it, which is all that matters to
 * it. Pure.
 */
export function gapBefore(applied: number, next: number, untilSeq?: number): LogGap | undefined {
  const to = Math.min(next - 1, untilSeq ?? Number.POSITIVE_INFINITY);
  return to > applied ? { from: applied + 1, to, next } : undefined;
}

/** Every gap a batch of messages (in increasing order, all after `applied`) leaves when folded in turn. Pure. */
export function gapsIn(applied: number, seqs: Iterable<number>): LogGap[] {
  const gaps: LogGap[] = [];
  let at = applied;
  for (const s of seqs) {
    const g = gapBefore(at, s);
    if (g) gaps.push(g);
    at = s;
  }
  return gaps;
}

/**
 * The gaps a fold from `applied` up to the stream's last stored message would meet, from the
 * stream's list of deleted sequences (stream info with deleted_details), without reading the
 * messages: each run of deleted sequences between them, the message after it the one that
 * would show it. A deleted tail (after `lastStored`) is none. Pure.
 */
export function gapsOfDeleted(applied: number, lastStored: number, deleted: Iterable<number>): LogGap[] {
  const inside = [...new Set(deleted)].filter((s) => s > applied && s < lastStored).sort((a, b) => a - b);
  const gaps: LogGap[] = [];
  for (const s of inside) {
    const g = gaps[gaps.length - 1];
    if (g && g.to === s - 1) {
      g.to = s;
      g.next = s + 1;
    } else gaps.push({ from: s, to: s, next: s + 1 });
  }
  return gaps;
}

/**
 * What a gap is, given the stream's first stored sequence now: "compacted" when it begins
 * before that (its front was removed: compaction, limits; a projection behind it starts from
 * a base), otherwise "deleted" (removed from inside the log, a later message still there).
 * Pure.
 */
export function gapKind(gap: LogGap, firstSeq: number): "compacted" | "deleted" {
  return gap.from < firstSeq ? "compacted" : "deleted";
}

/**
 * What a fold that has applied every stored message does at the log's end: pass a deleted
 * tail (move its checkpoint to the stream's last sequence, or its until), or, when the
 * history it still needs was cut from the front and nothing is left after it, say so (it can
 * never catch up: it must start from a base). Undefined: nothing to do. Pure.
 */
export function atLogEnd(applied: number, end: LogEnd, untilSeq?: number): { pass: number } | { cut: LogGap } | undefined {
  if (end.lastStored > applied) return undefined; // messages still to fold
  if (end.first - 1 > applied) return { cut: { from: applied + 1, to: end.first - 1, next: end.first } };
  const top = Math.min(end.last, untilSeq ?? Number.POSITIVE_INFINITY);
  return top > applied ? { pass: top } : undefined;
}

/** "sequence 5" or "sequences 5 to 9". */
export function describeSeqs(g: Pick<LogGap, "from" | "to">): string {
  return g.from === g.to ? `sequence ${g.from}` : `sequences ${g.from} to ${g.to}`;
}

/** Gaps in a line, for a warning: the first ten and how many more. */
export function describeGaps(gaps: readonly LogGap[]): string {
  const shown = gaps.slice(0, 10).map(describeSeqs).join(", ");
  return gaps.length > 10 ? `${shown} and ${gaps.length - 10} more` : shown;
}

/**
 * Messages deleted from inside the log, met by a fold at `applied`: the state cannot be
 * rebuilt exactly (DataLoss). A restart meets it again; only an operator's choice gets past it.
 */
export class LogGapError extends CkError {
  constructor(
    readonly stream: string,
    readonly gap: LogGap,
    readonly applied: number,
  ) {
    const them = gap.from === gap.to ? "it" : "them";
    super(
      "DataLoss",
      `event log ${stream}: ${describeSeqs(gap)} ${gap.from === gap.to ? "was" : "were"} deleted from inside the log (message ${gap.next} after ${them} is still there), so the state cannot be rebuilt exactly from it: the projection at sequence ${applied} does not fold past ${them}, and a restart does not get past this (ck-replay rebuild --allow-gaps folds across it, without what the deleted messages did): data loss`,
    );
  }
}

export function isLogGapError(err: unknown): err is LogGapError {
  return err instanceof LogGapError;
}

/** The history a projection needs was cut from the log's front: started again, it loads a base. */
export function compactedGapError(applied: number, next: number): Error {
  return new Error(
    `projection gap: applied ${applied}, next message in the log ${next} (the messages between were removed, by ck-replay compact or a purge: a fresh start from the latest base gets past them)`,
  );
}
