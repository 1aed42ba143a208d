// Output helpers for `ck`, matching ctr's look: tab-aligned tables (tabwriter with padding 1), human sizes as go-units prints them, Go's time.Time format for events.
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
  return Object.entries(labels ?? {})
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
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

/** Drops empty fields and ck's extension fields, as Go's JSON of containerd's event would. */
export function goJson(v: any): any {
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return Buffer.from(v).toString("base64");
  if (Array.isArray(v)) return v.map(goJson);
  if (v && typeof v === "object") {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (k.startsWith("ck_")) continue;
      if (x === "" || x === 0 || x === null || x === undefined || x === false) continue;
      if (typeof x === "object" && !Buffer.isBuffer(x) && Object.keys(x as object).length === 0) continue;
      o[k] = goJson(x);
    }
    return o;
  }
  return v;
}

/** Orders an event's fields by field number, as Go's JSON encoder of the struct would. */
export function inFieldOrder(protos: Protos, typeName: string, v: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const fields = [...protos.type(typeName).fieldsArray].sort((a, b) => a.id - b.id);
  for (const f of fields) if (f.name in v) out[f.name] = v[f.name];
  return out;
}
