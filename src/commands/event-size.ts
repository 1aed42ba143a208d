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

/** A length-delimited field's entry on the wire (a string, or a message of `n` bytes): tag, length, bytes. */
const fieldCost = (n: number) => 1 + (n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4) + n;

/** A repeated string field's entry on the wire: tag, length, bytes. */
export const stringCost = (v: string) => fieldCost(Buffer.byteLength(v));

/** A lease's resource in an event's list: its message (id, type), tagged and length-prefixed. */
export const leaseResourceCost = (r: { id: string; type: string }) => fieldCost(stringCost(r.id) + stringCost(r.type));

/**
 * What one lease adds to a NamespaceDelete, which lists the leases going with the namespace:
 * its id (`ck_leases`) and, if it holds any, its resources (`ck_lease_resources`, one
 * LeaseResources message of its id and its list). Both are fields past 15: two-byte tags.
 */
export function namespaceLeaseCost(lease: { id: string; resources: readonly { id: string; type: string }[] }): number {
  const id = 1 + stringCost(lease.id);
  if (lease.resources.length === 0) return id;
  let listed = stringCost(lease.id);
  for (const r of lease.resources) listed += leaseResourceCost(r);
  return id + 1 + fieldCost(listed);
}
