// ck-replay diff: what changed in the state between two points of the log. Both states are
// folded from the log (from a base where the history was cut), then their records are walked
// side by side in key order: bytes compared first, values decoded only where they differ.
// The bookkeeping records and the snapshotters' internal indexes are not the user's state and
// are left out.
import { compareKeys, decodeValue, META_PREFIX, type ProjectionDb } from "../../src/projections/db.js";

/** A record as a user knows it: what it is, in which namespace, under which name. */
export interface StateEntry {
  kind: string;
  namespace: string;
  name: string;
}

export interface DiffLine extends StateEntry {
  op: "+" | "-" | "~";
  /** Top-level fields whose values differ (changes only). */
  fields?: string[];
  before?: unknown;
  after?: unknown;
}

const SEP = "\u0000";

/** The user's kinds by key prefix (keys in src/projections/views.ts): `<prefix>\0<namespace>\0<name parts>`. */
const KINDS: ReadonlyMap<string, string> = new Map([
  ["img", "image"],
  ["ctr", "container"],
  ["blob", "content"],
  ["lease", "lease"],
  ["leaseres", "lease resource"],
  ["snap", "snapshot"],
  ["task", "task"],
]);

/**
 * The user's name for a projection key (keys in src/projections/views.ts); undefined for
 * bookkeeping and internal indexes. Pure.
 */
export function entryOf(key: string): StateEntry | undefined {
  if (key.startsWith(META_PREFIX)) return undefined;
  const parts = key.split(SEP);
  const [prefix, ns] = parts;
  if (prefix === "ns") return parts.length === 2 ? { kind: "namespace", namespace: ns!, name: ns! } : undefined;
  // snapid, snapchain (the snapshotters' own indexes) are not named.
  const kind = prefix === undefined ? undefined : KINDS.get(prefix);
  return kind ? { kind, namespace: ns!, name: parts.slice(2).join("/") } : undefined;
}

/** The top-level fields of two record values that differ (by their JSON). Pure. */
export function changedFields(a: unknown, b: unknown): string[] {
  const ao = (a && typeof a === "object" ? a : {}) as Record<string, unknown>;
  const bo = (b && typeof b === "object" ? b : {}) as Record<string, unknown>;
  const names = [...new Set([...Object.keys(ao), ...Object.keys(bo)])].sort();
  return names.filter((k) => JSON.stringify(ao[k]) !== JSON.stringify(bo[k]));
}

/**
 * The changes from one projection's records to another's, in key order: both iterators give
 * [key, value bytes] in ascending key order (RocksDB's). Only records `entryOf` names, and
 * with `namespace`, only that namespace's.
 */
export function* diffRecords(
  a: Iterator<[string, Buffer]>,
  b: Iterator<[string, Buffer]>,
  namespace?: string,
): Generator<DiffLine> {
  const next = (it: Iterator<[string, Buffer]>) => {
    for (;;) {
      const r = it.next();
      if (r.done) return undefined;
      const e = entryOf(r.value[0]);
      if (e && (namespace === undefined || e.namespace === namespace)) return { key: r.value[0], value: r.value[1], entry: e };
    }
  };
  let x = next(a);
  let y = next(b);
  while (x || y) {
    const order = x && y ? compareKeys(x.key, y.key) : 0;
    if (x && (!y || order < 0)) {
      yield { op: "-", ...x.entry, before: decodeValue(x.value) };
      x = next(a);
    } else if (y && (!x || order > 0)) {
      yield { op: "+", ...y.entry, after: decodeValue(y.value) };
      y = next(b);
    } else {
      if (!x!.value.equals(y!.value)) {
        const before = decodeValue(x!.value);
        const after = decodeValue(y!.value);
        yield { op: "~", ...y!.entry, fields: changedFields(before, after), before, after };
      }
      x = next(a);
      y = next(b);
    }
  }
}

/**
 * A JSON.stringify replacer for record values: bytes (an Any's value, a spec) as base64, not
 * as Node's `{"type":"Buffer","data":[...]}`.
 */
export function jsonBytes(this: unknown, key: string, value: unknown): unknown {
  const raw = (this as Record<string, unknown>)[key];
  return raw instanceof Uint8Array ? { base64: Buffer.from(raw).toString("base64") } : value;
}

/** The lines of the text output: `OP KIND NAMESPACE NAME [FIELDS]`, columns aligned. Pure. */
export function formatDiff(lines: readonly DiffLine[]): string[] {
  const kindW = Math.max(0, ...lines.map((l) => l.kind.length));
  const nsW = Math.max(0, ...lines.map((l) => l.namespace.length));
  return lines.map((l) => {
    const head = `${l.op} ${l.kind.padEnd(kindW)}  ${l.namespace.padEnd(nsW)}  ${l.name}`;
    return l.fields?.length ? `${head}  (${l.fields.join(", ")})` : head;
  });
}

/** The changes between two projections (see diffRecords). */
export function diffProjections(a: ProjectionDb, b: ProjectionDb, namespace?: string): DiffLine[] {
  return [...diffRecords(a.scanRaw(""), b.scanRaw(""), namespace)];
}
