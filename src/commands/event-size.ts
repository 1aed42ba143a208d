// How much of a list fits in one event: the log takes no message larger than its max_payload,
// so a decision that names many things (a collection, a lease's resources) takes what fits and
// is decided again for the rest.

/** Room for an event's envelope (namespace, topic, timestamp, type URL) besides its list. */
export const ENVELOPE_ROOM = 1024;
export const DEFAULT_MAX_EVENT_BYTES = (1 << 20) - 512;

/** The first of `items` whose encoded sizes (`cost`, bytes each) fit in `budget`; at least one. */
export function takeWithin<T>(items: readonly T[], cost: (t: T) => number, budget: number): T[] {
  let used = 0;
  let n = 0;
  for (const t of items) {
    used += cost(t);
    if (used > budget && n > 0) break;
    n++;
  }
  return items.slice(0, n);
}

/** A repeated string field's entry on the wire: tag, length, bytes. */
export const stringCost = (v: string) => {
  const n = Buffer.byteLength(v);
  return 1 + (n < 128 ? 1 : n < 16384 ? 2 : 3) + n;
};
