// The views: record shapes per aggregate, their keys in the projection, and `evolve`, the
// fold of one logged event into key changes. Pure: the same event and the same prior records
// always give the same changes, byte for byte once encoded.
import type { KeyChange } from "./db.js";

export interface Timestamp {
  seconds: number;
  nanos: number;
}

export interface AnyValue {
  type_url: string;
  value: Uint8Array;
}

export interface Descriptor {
  media_type: string;
  digest: string;
  size: number;
  annotations: Record<string, string>;
}

export interface NamespaceRecord {
  name: string;
  labels: Record<string, string>;
}

export interface ImageRecord {
  name: string;
  labels: Record<string, string>;
  target: Descriptor;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface ContainerRecord {
  id: string;
  labels: Record<string, string>;
  image: string;
  runtime: { name: string; options: AnyValue | null };
  spec: AnyValue | null;
  snapshotter: string;
  snapshot_key: string;
  created_at: Timestamp;
  updated_at: Timestamp;
  extensions: Record<string, AnyValue>;
}

/** A blob's metadata in one namespace (the bytes are shared, see src/content). */
export interface BlobRecord {
  digest: string;
  size: number;
  labels: Record<string, string>;
  created_at: Timestamp;
  updated_at: Timestamp;
  /**
   * The hosts (ckd host ids) whose content stores hold the bytes, sorted. Absent on a record
   * committed without a host (before hosts were recorded): every host holds that one.
   */
  hosts?: string[];
}

/** Whether `host`'s content store holds the blob (see BlobRecord.hosts); any host when `host` is undefined. */
export function blobHeldBy(rec: BlobRecord, host: string | undefined): boolean {
  return host === undefined || rec.hosts === undefined || rec.hosts.includes(host);
}

/**
 * The record after `host` lets go of the blob (a delete or a collection there): undefined
 * once no host holds it, or when the event named no host or the record none (held by all).
 */
export function blobReleased(rec: BlobRecord, host: string | undefined): BlobRecord | undefined {
  if (!host || rec.hosts === undefined) return undefined;
  const hosts = rec.hosts.filter((h) => h !== host);
  return hosts.length === 0 ? undefined : blobRecord({ ...rec, hosts });
}

/** A lease resource: `content` (a digest), `ingests` (a ref) or `snapshots/<snapshotter>` (a key). */
export interface LeaseResource {
  id: string;
  type: string;
}

/**
 * A lease in one namespace. The resources it keeps from garbage collection are records of
 * their own (keys.leaseResource): adding one costs the same whatever the lease holds.
 */
export interface LeaseRecord {
  id: string;
  labels: Record<string, string>;
  created_at: Timestamp;
}

export type SnapshotKind = "Active" | "View" | "Committed";

/** A snapshot's metadata in one namespace; the files are the snapshotter's, under `id`. */
export interface SnapshotRecord {
  snapshotter: string;
  /** The key (Active, View) or name (Committed): any non-empty string, never a path. */
  key: string;
  /** Key of the Committed parent, "" for none. */
  parent: string;
  kind: SnapshotKind;
  /** The snapshotter's on-disk id (ck's own, see src/snapshots/types.ts). */
  id: string;
  labels: Record<string, string>;
  created_at: Timestamp;
  updated_at: Timestamp;
  /**
   * Present (true) only on a snapshot ckd committed itself from a digest-verified layer on a
   * verified parent, named by the chain ID ckd computed: the only kind shared across namespaces.
   */
  verified?: true;
}

/** One record referring to an on-disk snapshot id. */
export interface SnapshotOwner {
  namespace: string;
  key: string;
}

/** What ckd knows of a verified directory: how it was made (what a share must match). */
export interface VerifiedSnapshot {
  /** The chain ID ckd computed: the name of every record referring to the directory. */
  chain: string;
  /** The on-disk id of the parent directory it was applied on ("" for none). */
  parent_id: string;
  /** Digest of the layer blob that was applied. */
  layer: string;
}

/**
 * Who refers to an on-disk snapshot id: what Cleanup keeps and what GC may remove. A
 * directory goes only when no namespace's record refers to it any more.
 */
export interface SnapshotIdRecord {
  /** Sorted by namespace, then key; never empty (the record goes with its last owner). */
  owners: SnapshotOwner[];
  verified?: VerifiedSnapshot;
}

/** Index entry `snapchain\0<sn>\0<chain>\0<id>`: a verified directory with that chain ID. */
export interface ChainIndexRecord {
  id: string;
  parent_id: string;
  layer: string;
}

export type TaskStatus = "CREATED" | "RUNNING" | "PAUSED" | "STOPPED";

/**
 * A container's task (its init process) in one namespace, as its events left it. The process
 * itself is the runtime's (src/runtime): `bundle` says which ckd's runtime holds it.
 */
export interface TaskRecord {
  container_id: string;
  /** The bundle directory of the ckd that created the task (absolute, under its root). */
  bundle: string;
  pid: number;
  status: TaskStatus;
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  exit_status: number;
  exited_at: Timestamp;
  created_at: Timestamp;
}

/** An event as read back from the log and decoded. */
export interface LoggedEvent {
  seq: number;
  namespace: string;
  topic: string;
  timestamp: Timestamp;
  /** Full proto name of the event message, e.g. containerd.events.NamespaceCreate. */
  typeName: string;
  payload: any;
}

const SEP = "\u0000";
export const keys = {
  namespacesPrefix: `ns${SEP}`,
  namespace: (ns: string) => `ns${SEP}${ns}`,
  imagesPrefix: (ns: string) => `img${SEP}${ns}${SEP}`,
  image: (ns: string, name: string) => `img${SEP}${ns}${SEP}${name}`,
  containersPrefix: (ns: string) => `ctr${SEP}${ns}${SEP}`,
  container: (ns: string, id: string) => `ctr${SEP}${ns}${SEP}${id}`,
  blobsPrefix: (ns: string) => `blob${SEP}${ns}${SEP}`,
  blob: (ns: string, digest: string) => `blob${SEP}${ns}${SEP}${digest}`,
  leasesPrefix: (ns: string) => `lease${SEP}${ns}${SEP}`,
  lease: (ns: string, id: string) => `lease${SEP}${ns}${SEP}${id}`,
  leaseResourcesPrefix: (ns: string, lease: string) => `leaseres${SEP}${ns}${SEP}${lease}${SEP}`,
  leaseResource: (ns: string, lease: string, r: LeaseResource) => `leaseres${SEP}${ns}${SEP}${lease}${SEP}${r.type}${SEP}${r.id}`,
  snapshotsPrefix: (ns: string) => `snap${SEP}${ns}${SEP}`,
  snapshotterPrefix: (ns: string, sn: string) => `snap${SEP}${ns}${SEP}${sn}${SEP}`,
  snapshot: (ns: string, sn: string, key: string) => `snap${SEP}${ns}${SEP}${sn}${SEP}${key}`,
  snapshotIdsPrefix: (sn: string) => `snapid${SEP}${sn}${SEP}`,
  snapshotId: (sn: string, id: string) => `snapid${SEP}${sn}${SEP}${id}`,
  /** Verified directories by the chain ID ckd computed for them. */
  snapshotChainPrefix: (sn: string, chain: string) => `snapchain${SEP}${sn}${SEP}${chain}${SEP}`,
  snapshotChain: (sn: string, chain: string, id: string) => `snapchain${SEP}${sn}${SEP}${chain}${SEP}${id}`,
  tasksPrefix: (ns: string) => `task${SEP}${ns}${SEP}`,
  task: (ns: string, id: string) => `task${SEP}${ns}${SEP}${id}`,
} as const;

// --- normalisation: records are built with a fixed key order and sorted maps so the bytes
// of a view depend only on the events, never on how a request happened to order its fields.

export function sortedMap<V>(m: Record<string, V> | undefined | null): Record<string, V> {
  const out: Record<string, V> = {};
  if (!m) return out;
  for (const k of Object.keys(m).sort()) {
    // An own `__proto__` (protobufjs decodes one so) stays a key, for validation to refuse;
    // an assignment would set the map's prototype instead, or drop it.
    if (k === "__proto__") Object.defineProperty(out, k, { value: m[k], enumerable: true, writable: true, configurable: true });
    else out[k] = m[k]!;
  }
  return out;
}

export function timestamp(t: Partial<Timestamp> | undefined | null): Timestamp {
  return { seconds: Number(t?.seconds ?? 0), nanos: Number(t?.nanos ?? 0) };
}

function anyValue(a: Partial<AnyValue> | undefined | null): AnyValue | null {
  if (!a || (!a.type_url && (!a.value || a.value.length === 0))) return null;
  return { type_url: a.type_url ?? "", value: Buffer.from(a.value ?? []) };
}

export function namespaceRecord(n: Partial<NamespaceRecord>): NamespaceRecord {
  return { name: n.name ?? "", labels: sortedMap(n.labels) };
}

export function descriptor(d: Partial<Descriptor> | undefined | null): Descriptor {
  return {
    media_type: d?.media_type ?? "",
    digest: d?.digest ?? "",
    size: Number(d?.size ?? 0),
    annotations: sortedMap(d?.annotations),
  };
}

export function imageRecord(i: Partial<ImageRecord>): ImageRecord {
  return {
    name: i.name ?? "",
    labels: sortedMap(i.labels),
    target: descriptor(i.target),
    created_at: timestamp(i.created_at),
    updated_at: timestamp(i.updated_at),
  };
}

export function blobRecord(b: Partial<BlobRecord>): BlobRecord {
  return {
    digest: b.digest ?? "",
    size: Number(b.size ?? 0),
    labels: sortedMap(b.labels),
    created_at: timestamp(b.created_at),
    updated_at: timestamp(b.updated_at),
    // Only when recorded: a record without hosts encodes as it did before hosts existed.
    ...(b.hosts === undefined ? {} : { hosts: [...new Set(b.hosts)].sort() }),
  };
}

function compareResources(a: LeaseResource, b: LeaseResource): number {
  if (a.type !== b.type) return a.type < b.type ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Resources sorted (type, then id) without duplicates: the record's bytes depend on the set only. */
export function leaseResources(rs: readonly Partial<LeaseResource>[] | undefined | null): LeaseResource[] {
  const out: LeaseResource[] = [];
  for (const r of [...(rs ?? [])].map((x) => ({ id: x.id ?? "", type: x.type ?? "" })).sort(compareResources)) {
    const last = out[out.length - 1];
    if (!last || compareResources(last, r) !== 0) out.push(r);
  }
  return out;
}

export function leaseRecord(l: Partial<LeaseRecord>): LeaseRecord {
  return {
    id: l.id ?? "",
    labels: sortedMap(l.labels),
    created_at: timestamp(l.created_at),
  };
}

/** The resource keys an event that drops leases (with the resources it lists) removes. */
function leaseResourceKeys(ns: string, lease: string, rs: readonly Partial<LeaseResource>[] | undefined | null): string[] {
  return leaseResources(rs).map((r) => keys.leaseResource(ns, lease, r));
}

export function snapshotRecord(r: Partial<SnapshotRecord>): SnapshotRecord {
  return {
    snapshotter: r.snapshotter ?? "",
    key: r.key ?? "",
    parent: r.parent ?? "",
    kind: r.kind ?? "Active",
    id: r.id ?? "",
    labels: sortedMap(r.labels),
    created_at: timestamp(r.created_at),
    updated_at: timestamp(r.updated_at),
    ...(r.verified ? { verified: true as const } : {}),
  };
}

const compareOwners = (a: SnapshotOwner, b: SnapshotOwner) =>
  a.namespace !== b.namespace ? (a.namespace < b.namespace ? -1 : 1) : a.key < b.key ? -1 : a.key > b.key ? 1 : 0;

/** The id record with `add` added and `drop` removed; undefined when no owner is left. */
export function snapshotIdRecord(
  cur: SnapshotIdRecord | undefined,
  change: { add?: SnapshotOwner; drop?: SnapshotOwner; verified?: VerifiedSnapshot },
): SnapshotIdRecord | undefined {
  let owners = [...(cur?.owners ?? [])];
  if (change.drop) owners = owners.filter((o) => compareOwners(o, change.drop!) !== 0);
  if (change.add && !owners.some((o) => compareOwners(o, change.add!) === 0)) owners.push({ namespace: change.add.namespace, key: change.add.key });
  if (owners.length === 0) return undefined;
  owners.sort(compareOwners);
  const v = cur?.verified ?? change.verified;
  return { owners, ...(v ? { verified: { chain: v.chain, parent_id: v.parent_id, layer: v.layer } } : {}) };
}

export function containerRecord(c: Partial<ContainerRecord>): ContainerRecord {
  const ext: Record<string, AnyValue> = {};
  for (const [k, v] of Object.entries(sortedMap(c.extensions))) {
    const a = anyValue(v);
    if (a) ext[k] = a;
  }
  return {
    id: c.id ?? "",
    labels: sortedMap(c.labels),
    image: c.image ?? "",
    runtime: { name: c.runtime?.name ?? "", options: anyValue(c.runtime?.options) },
    spec: anyValue(c.spec),
    snapshotter: c.snapshotter ?? "",
    snapshot_key: c.snapshot_key ?? "",
    created_at: timestamp(c.created_at),
    updated_at: timestamp(c.updated_at),
    extensions: ext,
  };
}

export function taskRecord(t: Partial<TaskRecord>): TaskRecord {
  return {
    container_id: t.container_id ?? "",
    bundle: t.bundle ?? "",
    pid: Number(t.pid ?? 0),
    status: t.status ?? "CREATED",
    stdin: t.stdin ?? "",
    stdout: t.stdout ?? "",
    stderr: t.stderr ?? "",
    terminal: t.terminal === true,
    exit_status: Number(t.exit_status ?? 0),
    exited_at: timestamp(t.exited_at),
    created_at: timestamp(t.created_at),
  };
}

// --- evolve

export const TYPE = {
  NamespaceCreate: "containerd.events.NamespaceCreate",
  NamespaceUpdate: "containerd.events.NamespaceUpdate",
  NamespaceDelete: "containerd.events.NamespaceDelete",
  ImageCreate: "containerd.services.images.v1.ImageCreate",
  ImageUpdate: "containerd.services.images.v1.ImageUpdate",
  ImageDelete: "containerd.services.images.v1.ImageDelete",
  ContainerCreate: "containerd.events.ContainerCreate",
  ContainerUpdate: "containerd.events.ContainerUpdate",
  ContainerDelete: "containerd.events.ContainerDelete",
  ContentCommit: "ck.events.ContentCommit",
  ContentUpdate: "ck.events.ContentUpdate",
  ContentDelete: "containerd.events.ContentDelete",
  ContentCollect: "ck.events.ContentCollect",
  LeaseCreate: "ck.events.LeaseCreate",
  LeaseDelete: "ck.events.LeaseDelete",
  LeaseResourceAdd: "ck.events.LeaseResourceAdd",
  LeaseResourceDelete: "ck.events.LeaseResourceDelete",
  SnapshotPrepare: "containerd.events.SnapshotPrepare",
  SnapshotCommit: "containerd.events.SnapshotCommit",
  SnapshotRemove: "containerd.events.SnapshotRemove",
  SnapshotView: "ck.events.SnapshotView",
  SnapshotUpdate: "ck.events.SnapshotUpdate",
  SnapshotCollect: "ck.events.SnapshotCollect",
  TaskCreate: "containerd.events.TaskCreate",
  TaskStart: "containerd.events.TaskStart",
  TaskExit: "containerd.events.TaskExit",
  TaskDelete: "containerd.events.TaskDelete",
  TaskPaused: "containerd.events.TaskPaused",
  TaskResumed: "containerd.events.TaskResumed",
  TaskOOM: "containerd.events.TaskOOM",
  TaskExecAdded: "containerd.events.TaskExecAdded",
  TaskExecStarted: "containerd.events.TaskExecStarted",
} as const;

/** A lease's key and one resource's key, when an event names a lease. */
function leaseKeys(ns: string, lease: string | undefined, r: Partial<LeaseResource> | undefined): string[] {
  if (!lease || !r) return [];
  return [keys.lease(ns, lease), keys.leaseResource(ns, lease, { id: r.id ?? "", type: r.type ?? "" })];
}

/**
 * The Active or View snapshot an event makes: containerd's SnapshotPrepare with ck's
 * extensions (a View too when logged before 2026-12-03, told by ck_kind "View"), or ck's
 * SnapshotView.
 */
function newSnapshotOf(ev: LoggedEvent): { snapshotter: string; key: string; parent: string; kind: "Active" | "View"; id: string; labels: Record<string, string> | undefined; lease: string | undefined } {
  const p = ev.payload;
  if (ev.typeName === TYPE.SnapshotView) {
    return { snapshotter: p.snapshotter ?? "", key: p.key, parent: p.parent, kind: "View", id: p.id ?? "", labels: p.labels, lease: p.lease || undefined };
  }
  return {
    snapshotter: p.ck_snapshotter ?? "",
    key: p.key,
    parent: p.parent,
    kind: p.ck_kind === "View" ? "View" : "Active",
    id: p.ck_id ?? "",
    labels: p.ck_labels?.labels,
    lease: p.ck_lease || undefined,
  };
}

/** The projection keys an event reads and may change. */
export function keysFor(ev: LoggedEvent): string[] {
  const p = ev.payload;
  switch (ev.typeName) {
    case TYPE.NamespaceCreate:
    case TYPE.NamespaceUpdate:
      return [keys.namespace(p.name)];
    case TYPE.NamespaceDelete:
      return [
        keys.namespace(p.name),
        ...((p.ck_leases ?? []) as string[]).map((id) => keys.lease(p.name, id)),
        ...((p.ck_lease_resources ?? []) as { id: string; resources: LeaseResource[] }[]).flatMap((l) => leaseResourceKeys(p.name, l.id, l.resources)),
      ];
    case TYPE.ImageCreate:
    case TYPE.ImageUpdate:
    case TYPE.ImageDelete:
      return [keys.namespace(ev.namespace), keys.image(ev.namespace, p.name)];
    case TYPE.ContainerCreate:
    case TYPE.ContainerUpdate:
    case TYPE.ContainerDelete:
      return [keys.namespace(ev.namespace), keys.container(ev.namespace, p.id)];
    case TYPE.ContentCommit:
      return [keys.namespace(ev.namespace), keys.blob(ev.namespace, p.digest), ...leaseKeys(ev.namespace, p.lease, { id: p.digest, type: "content" })];
    case TYPE.ContentUpdate:
      return [keys.namespace(ev.namespace), keys.blob(ev.namespace, p.digest)];
    case TYPE.ContentDelete:
      return [keys.namespace(ev.namespace), keys.blob(ev.namespace, p.digest), ...leaseKeys(ev.namespace, p.ck_lease, { id: p.digest, type: "content" })];
    case TYPE.ContentCollect:
      return (p.digests as string[]).map((d) => keys.blob(ev.namespace, d));
    case TYPE.LeaseCreate:
      return [keys.namespace(ev.namespace), keys.lease(ev.namespace, p.id)];
    case TYPE.LeaseDelete:
      return [keys.lease(ev.namespace, p.id), ...leaseResourceKeys(ev.namespace, p.id, p.resources)];
    case TYPE.LeaseResourceAdd:
    case TYPE.LeaseResourceDelete:
      return leaseKeys(ev.namespace, p.id, p.resource);
    case TYPE.SnapshotPrepare:
    case TYPE.SnapshotView: {
      const s = newSnapshotOf(ev);
      return [
        keys.namespace(ev.namespace),
        keys.snapshot(ev.namespace, s.snapshotter, s.key),
        keys.snapshotId(s.snapshotter, s.id),
        ...leaseKeys(ev.namespace, s.lease, { id: s.key, type: `snapshots/${s.snapshotter}` }),
      ];
    }
    case TYPE.SnapshotCommit:
      return [
        ...(p.key ? [] : [keys.namespace(ev.namespace)]),
        keys.snapshot(ev.namespace, p.ck_snapshotter ?? "", p.key),
        keys.snapshot(ev.namespace, p.ck_snapshotter ?? "", p.name),
        keys.snapshotId(p.ck_snapshotter ?? "", p.ck_id ?? ""),
        ...(!p.key && p.ck_verified ? [keys.snapshotChain(p.ck_snapshotter ?? "", p.name, p.ck_id ?? "")] : []),
        ...leaseKeys(ev.namespace, p.ck_lease, { id: p.name, type: `snapshots/${p.ck_snapshotter ?? ""}` }),
        ...(p.key && p.ck_lease_moves ? leaseKeys(ev.namespace, p.ck_lease, { id: p.key, type: `snapshots/${p.ck_snapshotter ?? ""}` }) : []),
      ];
    // A verified snapshot is named by its chain ID: its chain index entry is known from the event.
    case TYPE.SnapshotRemove:
      return [
        keys.snapshot(ev.namespace, p.ck_snapshotter ?? "", p.key),
        keys.snapshotId(p.ck_snapshotter ?? "", p.ck_id ?? ""),
        keys.snapshotChain(p.ck_snapshotter ?? "", p.key, p.ck_id ?? ""),
        ...leaseKeys(ev.namespace, p.ck_lease, { id: p.key, type: `snapshots/${p.ck_snapshotter ?? ""}` }),
      ];
    case TYPE.SnapshotUpdate:
      return [keys.snapshot(ev.namespace, p.snapshotter, p.key)];
    case TYPE.SnapshotCollect:
      return [
        ...(p.keys as string[]).map((k) => keys.snapshot(ev.namespace, p.snapshotter, k)),
        ...((p.ids ?? []) as string[]).flatMap((id, i) => [keys.snapshotId(p.snapshotter, id), keys.snapshotChain(p.snapshotter, (p.keys as string[])[i] ?? "", id)]),
      ];
    case TYPE.TaskCreate:
      return [keys.namespace(ev.namespace), keys.task(ev.namespace, p.container_id)];
    case TYPE.TaskStart:
    case TYPE.TaskExit:
    case TYPE.TaskDelete:
    case TYPE.TaskPaused:
    case TYPE.TaskResumed:
      return [keys.task(ev.namespace, p.container_id)];
    default:
      return [];
  }
}

/**
 * Folds one event into key changes. `read` returns the current record of a key listed by
 * keysFor (undefined when absent). Events that ck does not project give no changes.
 */
export function evolve(ev: LoggedEvent, read: (key: string) => unknown | undefined): KeyChange[] {
  const p = ev.payload;
  // Writing into a namespace creates it implicitly, as containerd's metadata store does.
  const implicitNamespace = (): KeyChange[] =>
    read(keys.namespace(ev.namespace)) === undefined
      ? [[keys.namespace(ev.namespace), namespaceRecord({ name: ev.namespace, labels: {} })]]
      : [];
  switch (ev.typeName) {
    case TYPE.NamespaceCreate:
      return [[keys.namespace(p.name), namespaceRecord({ name: p.name, labels: p.labels })]];
    case TYPE.NamespaceUpdate:
      // The labels after the update (ck_labels); an update logged before that extension
      // carried them in labels.
      return [[keys.namespace(p.name), namespaceRecord({ name: p.name, labels: p.ck_labels ? (p.ck_labels.labels ?? {}) : p.labels })]];
    case TYPE.NamespaceDelete:
      return [
        [keys.namespace(p.name), undefined],
        ...((p.ck_leases ?? []) as string[]).map((id): KeyChange => [keys.lease(p.name, id), undefined]),
        ...((p.ck_lease_resources ?? []) as { id: string; resources: LeaseResource[] }[]).flatMap((l) =>
          leaseResourceKeys(p.name, l.id, l.resources).map((k): KeyChange => [k, undefined]),
        ),
      ];
    case TYPE.ImageCreate:
    case TYPE.ImageUpdate:
      return [...implicitNamespace(), [keys.image(ev.namespace, p.name), imageRecord(p.ck_image)]];
    case TYPE.ImageDelete:
      return [[keys.image(ev.namespace, p.name), undefined]];
    case TYPE.ContainerCreate:
    case TYPE.ContainerUpdate:
      return [...implicitNamespace(), [keys.container(ev.namespace, p.id), containerRecord(p.ck_container)]];
    case TYPE.ContainerDelete:
      return [[keys.container(ev.namespace, p.id), undefined]];
    case TYPE.ContentCommit: {
      // Another host committing bytes the namespace already records adds itself to the
      // holders (a record held by every host stays so); the labels it gave are set over the
      // record's. Without a host, the record is made anew, held by every host (as before
      // hosts were recorded).
      const cur = p.host ? (read(keys.blob(ev.namespace, p.digest)) as BlobRecord | undefined) : undefined;
      const rec = cur
        ? blobRecord({ ...cur, labels: { ...cur.labels, ...p.labels }, updated_at: ev.timestamp, hosts: cur.hosts && [...cur.hosts, p.host] })
          : blobRecord({ digest: p.digest, size: p.size, labels: p.labels, created_at: ev.timestamp, updated_at: ev.timestamp, hosts: p.host ? [p.host] : undefined });
      return [...implicitNamespace(), [keys.blob(ev.namespace, p.digest), rec], ...leaseChange(p.lease, { id: p.digest, type: "content" }, "add")];
    }
    case TYPE.ContentUpdate: {
      const cur = read(keys.blob(ev.namespace, p.digest)) as BlobRecord | undefined;
      if (!cur) return [];
      return [[keys.blob(ev.namespace, p.digest), blobRecord({ ...cur, labels: p.labels, updated_at: ev.timestamp })]];
    }
    case TYPE.ContentDelete: {
      const cur = read(keys.blob(ev.namespace, p.digest)) as BlobRecord | undefined;
      const left = cur && blobReleased(cur, p.ck_host || undefined);
      return [[keys.blob(ev.namespace, p.digest), left], ...(p.ck_lease ? leaseChange(p.ck_lease, { id: p.digest, type: "content" }, "delete") : [])];
    }
    case TYPE.ContentCollect:
      return (p.digests as string[]).map((d): KeyChange => {
        const cur = read(keys.blob(ev.namespace, d)) as BlobRecord | undefined;
        return [keys.blob(ev.namespace, d), cur && blobReleased(cur, p.host || undefined)];
      });
    case TYPE.LeaseCreate:
      return [...implicitNamespace(), [keys.lease(ev.namespace, p.id), leaseRecord({ id: p.id, labels: p.labels, created_at: p.created_at })]];
    case TYPE.LeaseDelete:
      return [[keys.lease(ev.namespace, p.id), undefined], ...leaseResourceKeys(ev.namespace, p.id, p.resources).map((k): KeyChange => [k, undefined])];
    case TYPE.LeaseResourceAdd:
      return leaseChange(p.id, p.resource, "add");
    case TYPE.LeaseResourceDelete:
      return leaseChange(p.id, p.resource, "delete");
    case TYPE.SnapshotPrepare:
    case TYPE.SnapshotView: {
      const s = newSnapshotOf(ev);
      const rec = snapshotRecord({
        snapshotter: s.snapshotter,
        key: s.key,
        parent: s.parent,
        kind: s.kind,
        id: s.id,
        labels: s.labels,
        created_at: ev.timestamp,
        updated_at: ev.timestamp,
      });
      return [
        ...implicitNamespace(),
        [keys.snapshot(ev.namespace, s.snapshotter, s.key), rec],
        ...idChange(s.snapshotter, rec.id, { add: { namespace: ev.namespace, key: rec.key } }),
        ...leaseChange(s.lease, { id: s.key, type: `snapshots/${s.snapshotter}` }, "add"),
      ];
    }
    case TYPE.SnapshotCommit: {
      const sn: string = p.ck_snapshotter ?? "";
      const lease = leaseChange(p.ck_lease, { id: p.name, type: `snapshots/${sn}` }, "add");
      if (!p.key) {
        // ckd's own unpack (ck.services.unpack.v1): committed directly, never Active, on a
        // directory made for it or shared from another namespace's verified record.
        const v = p.ck_verified;
        const rec = snapshotRecord({
          snapshotter: sn,
          key: p.name,
          parent: p.ck_parent ?? "",
          kind: "Committed",
          id: p.ck_id,
          labels: p.ck_labels?.labels,
          created_at: ev.timestamp,
          updated_at: ev.timestamp,
          verified: v ? true : undefined,
        });
        const verified = v ? { chain: rec.key, parent_id: v.parent_id ?? "", layer: v.layer ?? "" } : undefined;
        return [
          ...implicitNamespace(),
          [keys.snapshot(ev.namespace, sn, p.name), rec],
          ...idChange(sn, rec.id, { add: { namespace: ev.namespace, key: rec.key }, verified }),
          ...(verified ? [[keys.snapshotChain(sn, verified.chain, rec.id), { id: rec.id, parent_id: verified.parent_id, layer: verified.layer }] as KeyChange] : []),
          ...lease,
        ];
      }
      const cur = read(keys.snapshot(ev.namespace, sn, p.key)) as SnapshotRecord | undefined;
      if (!cur) return [];
      const rec = snapshotRecord({ ...cur, key: p.name, kind: "Committed", labels: p.ck_labels?.labels, created_at: ev.timestamp, updated_at: ev.timestamp });
      return [
        [keys.snapshot(ev.namespace, sn, p.key), undefined],
        [keys.snapshot(ev.namespace, sn, p.name), rec],
        ...idChange(sn, rec.id, { drop: { namespace: ev.namespace, key: p.key }, add: { namespace: ev.namespace, key: rec.key } }),
        // The caller's lease moves from the active key to the committed name (recorded since ck_lease_moves).
        ...(p.ck_lease_moves ? leaseChange(p.ck_lease, { id: p.key, type: `snapshots/${sn}` }, "delete") : []),
        ...lease,
      ];
    }
    case TYPE.SnapshotRemove: {
      const sn: string = p.ck_snapshotter ?? "";
      const cur = read(keys.snapshot(ev.namespace, sn, p.key)) as SnapshotRecord | undefined;
      if (!cur) return [];
      return [
        [keys.snapshot(ev.namespace, sn, p.key), undefined],
        ...idChange(sn, cur.id, { drop: { namespace: ev.namespace, key: p.key } }),
        ...leaseChange(p.ck_lease, { id: p.key, type: `snapshots/${sn}` }, "delete"),
      ];
    }
    case TYPE.SnapshotUpdate: {
      const cur = read(keys.snapshot(ev.namespace, p.snapshotter, p.key)) as SnapshotRecord | undefined;
      if (!cur) return [];
      return [[keys.snapshot(ev.namespace, p.snapshotter, p.key), snapshotRecord({ ...cur, labels: p.labels, updated_at: ev.timestamp })]];
    }
    case TYPE.SnapshotCollect: {
      const ks = p.keys as string[];
      return [
        ...ks.map((k): KeyChange => [keys.snapshot(ev.namespace, p.snapshotter, k), undefined]),
        ...((p.ids ?? []) as string[]).flatMap((id, i) => idChange(p.snapshotter, id, { drop: { namespace: ev.namespace, key: ks[i] ?? "" } })),
      ];
    }
    case TYPE.TaskCreate:
      return [
        ...implicitNamespace(),
        [
          keys.task(ev.namespace, p.container_id),
          taskRecord({ container_id: p.container_id, bundle: p.bundle, pid: p.pid, status: "CREATED", ...p.io, created_at: ev.timestamp }),
        ],
      ];
    case TYPE.TaskStart:
      return taskChange({ status: "RUNNING", pid: p.pid });
    case TYPE.TaskExit:
      // An exec's exit (id != container_id) leaves the task as it is, and so does an exit of
      // another process than the task's (its pid).
      if (p.id && p.id !== p.container_id) return [];
      if (Number(p.pid ?? 0) !== (read(keys.task(ev.namespace, p.container_id)) as TaskRecord | undefined)?.pid) return [];
      return taskChange({ status: "STOPPED", exit_status: p.exit_status, exited_at: p.exited_at });
    case TYPE.TaskPaused:
      return taskChange({ status: "PAUSED" });
    case TYPE.TaskResumed:
      return taskChange({ status: "RUNNING" });
    case TYPE.TaskDelete:
      if (p.id && p.id !== p.container_id) return [];
      return [[keys.task(ev.namespace, p.container_id), undefined]];
    default:
      return [];
  }

  /** The task record with `change` applied; nothing when the task is gone. */
  function taskChange(change: Partial<TaskRecord>): KeyChange[] {
    const key = keys.task(ev.namespace, p.container_id);
    const cur = read(key) as TaskRecord | undefined;
    if (!cur) return [];
    return [[key, taskRecord({ ...cur, ...change })]];
  }

  /**
   * The owner index of an on-disk id after a record starts or stops referring to it; with the
   * last owner, the id record and its chain index entry go (the directory may be removed).
   */
  function idChange(sn: string, id: string, change: Parameters<typeof snapshotIdRecord>[1]): KeyChange[] {
    const cur = read(keys.snapshotId(sn, id)) as SnapshotIdRecord | undefined;
    const next = snapshotIdRecord(cur, change);
    const out: KeyChange[] = [[keys.snapshotId(sn, id), next]];
    if (!next && cur?.verified) out.push([keys.snapshotChain(sn, cur.verified.chain, id), undefined]);
    return out;
  }

  /** Adds a resource to (or removes one from) an existing lease; nothing when absent. */
  function leaseChange(lease: string | undefined, r: Partial<LeaseResource> | undefined, op: "add" | "delete"): KeyChange[] {
    if (!lease || !r) return [];
    if (read(keys.lease(ev.namespace, lease)) === undefined) return [];
    const res = { id: r.id ?? "", type: r.type ?? "" };
    return [[keys.leaseResource(ev.namespace, lease, res), op === "add" ? res : undefined]];
  }
}
