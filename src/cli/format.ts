// Output helpers for `ck`, matching ctr's look: tab-aligned tables (tabwriter with padding 1), human sizes as go-units prints them, Go's time.Time format for events.
import protobuf from "protobufjs";
import type { Protos } from "../protos/protos.js";

/** Aligns rows like ctr's tabwriter.NewWriter(w, 1, 8, 1, ' ', 0). */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) {
    r.forEach((cell, i) => {
      if (i === r.length - 1) return;
      widths[i] = Math.max(widths[i] ?? 0, cell.length + 1);
    });
  }
  return rows
    .map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join(""))
    .join("\n") + (rows.length ? "\n" : "");
}

/** go-units HumanSize: decimal units, 4 significant digits ("100kB", "1.234MB"). */
export function humanSize(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${trimFloat(v.toPrecision(4))}${units[i]}`;
}

/** Binary sizes as ctr's images ls prints them ("%02.1f KiB"). */
export function binarySize(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function trimFloat(s: string): string {
  return s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
}

export function labelsString(labels: Record<string, string> | undefined): string {
  const entries = Object.entries(labels ?? {});
  if (entries.length === 0) return "-";
  return entries.map(([k, v]) => `${k}=${v}`).join(",");
}

/**
 * An object's labels as ctr's label commands print them after an update: `k=v` joined by
 * commas, nothing when there are none (sorted here; ctr's Go map order is random).
 */
export function labelsLine(labels: Record<string, string> | undefined): string {
  const sorted = Object.entries(labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return sorted.length ? labelsString(Object.fromEntries(sorted)) : "";
}

/** go-units HumanDuration, as ctr prints an AGE ("Less than a second", "About an hour", "3 weeks"). */
export function humanDuration(ms: number): string {
  const seconds = Math.trunc(ms / 1000);
  if (seconds < 1) return "Less than a second";
  if (seconds === 1) return "1 second";
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.trunc(seconds / 60);
  if (minutes === 1) return "About a minute";
  if (minutes < 60) return `${minutes} minutes`;
  // Rounded to the nearest hour from here on, years aside (Go's int(d.Hours() + 0.5)).
  const exactHours = ms / 3_600_000;
  const hours = Math.trunc(exactHours + 0.5);
  if (hours === 1) return "About an hour";
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.trunc(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.trunc(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.trunc(hours / 24 / 30)} months`;
  return `${Math.trunc(Math.trunc(exactHours) / 24 / 365)} years`;
}

/** Go's time.Time.String() for UTC: "2006-01-02 15:04:05.999999999 +0000 UTC". */
export function goTime(ts: { seconds: number; nanos: number }): string {
  const d = new Date(ts.seconds * 1000);
  const pad = (n: number, w = 2) => String(n).padStart(w, "0");
  const base = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  const frac = ts.nanos ? "." + pad(ts.nanos, 9).replace(/0+$/, "") : "";
  return `${base}${frac} +0000 UTC`;
}

/** A repeatable option's values, in order (commander's argParser for `--x <v>` given many times). */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/**
 * Parses label arguments as ctr's LabelArgs: `k=v`; a bare `k` is `k=true` (a flag label);
 * `k=` (empty value) is kept to mean "remove". A label without a key is refused here: it could
 * not be named in an update's field mask (`labels.`).
 */
export function parseLabelArgs(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of args) {
    const i = a.indexOf("=");
    if (i === 0) throw new Error(`label "${a}" must be key=value`);
    if (i < 0) out[a] = "true";
    else out[a.slice(0, i)] = a.slice(i + 1);
  }
  return out;
}

/**
 * An event as ctr prints it: Go's encoding/json of containerd's generated struct. Fields in
 * field-number order, nested messages too; empty ones left out (omitempty), but a map keeps
 * its empty values (`k=` removes label k: ctr shows `"k":""`); timestamps as RFC 3339 with
 * up to nine fractional digits (time.Time's JSON); bytes as base64; ck's extension fields
 * dropped.
 */
export function eventJson(protos: Protos, typeName: string, value: Record<string, unknown>): Record<string, unknown> {
  return messageJson(protos.type(typeName), value) ?? {};
}

function messageJson(type: protobuf.Type, v: Record<string, unknown>): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  for (const f of [...type.fieldsArray].sort((a, b) => a.id - b.id)) {
    if (f.name.startsWith("ck_")) continue;
    const x = fieldJson(f, v[f.name]);
    if (x !== undefined) out[f.name] = x;
  }
  return Object.keys(out).length ? out : undefined;
}

function fieldJson(f: protobuf.Field, x: unknown): unknown {
  if (x === null || x === undefined) return undefined;
  f.resolve();
  // A map's or a list's element is kept even when empty, as Go encodes it.
  const element = (e: unknown) => (f.resolvedType instanceof protobuf.Type ? (messageJson(f.resolvedType, e as Record<string, unknown>) ?? {}) : valueJson(e));
  if (f.map) {
    const entries = Object.entries(x as Record<string, unknown>);
    return entries.length ? Object.fromEntries(entries.map(([k, e]) => [k, element(e)])) : undefined;
  }
  if (f.repeated) {
    const list = (x as unknown[]).map(element);
    return list.length ? list : undefined;
  }
  if (f.resolvedType instanceof protobuf.Type) {
    if (f.resolvedType.fullName === ".google.protobuf.Timestamp") return rfc3339(x as { seconds?: unknown; nanos?: unknown });
    return messageJson(f.resolvedType, x as Record<string, unknown>);
  }
  const j = valueJson(x);
  return j === "" || j === 0 || j === false ? undefined : j;
}

function valueJson(x: unknown): unknown {
  if (Buffer.isBuffer(x) || x instanceof Uint8Array) return x.length ? Buffer.from(x).toString("base64") : "";
  if (typeof x === "object" && x !== null && "low" in x) return Number(x as unknown as bigint); // a Long
  return x;
}

/** time.Time's JSON: RFC 3339, UTC as Z, fractional seconds without trailing zeros. */
export function rfc3339(ts: { seconds?: unknown; nanos?: unknown }): string {
  const seconds = Number(ts.seconds ?? 0);
  const nanos = Number(ts.nanos ?? 0);
  const base = new Date(seconds * 1000).toISOString().slice(0, 19);
  const frac = nanos ? "." + String(nanos).padStart(9, "0").replace(/0+$/, "") : "";
  return `${base}${frac}Z`;
}
