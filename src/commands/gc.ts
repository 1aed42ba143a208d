// Garbage collection, the pure part: mark what a namespace still references, starting from
// its roots (image targets, gc.ref labels of images and containers, blobs labelled gc.root,
// resources of unexpired leases) and following gc.ref labels between resources, as
// containerd's metadata/gc.go does. Whatever content stays unmarked is collected by one
// ContentCollect event, decided on the sequencer's current view so nothing stale is written.
import { blobHeldBy, keys, TYPE, type BlobRecord, type ContainerRecord, type ImageRecord, type LeaseRecord, type LeaseResource, type SnapshotRecord } from "../projections/views.js";
import { digestProblem } from "./validation.js";
import { invalidArgument } from "../errdefs/errdefs.js";
import { DEFAULT_MAX_EVENT_BYTES, ENVELOPE_ROOM, stringCost, takeWithin } from "./event-size.js";
import { isLeaseExpired, LABEL_GC_FLAT } from "./leases.js";
import type { Decision, StateView } from "./sequencer.js";

export const LABEL_GC_ROOT = "containerd.io/gc.root";
export const LABEL_GC_REF_CONTENT = "containerd.io/gc.ref.content";
export const LABEL_GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot.";
/** On a layer's content: the digest of its uncompressed tar (its diff_id), as unpacking sets it. */
export const UNCOMPRESSED_LABEL = "containerd.io/uncompressed";

/**
 * A resource GC knows about: content (keyed by digest) and snapshots (keyed
 * `<snapshotter>/<key>`), as containerd's metadata/gc.go.
 */
export type ResourceKind = "content" | "snapshot";

export interface GcNode {
  kind: ResourceKind;
  key: string;
  /** From a gc.flat lease: the node is kept but its references are not followed. */
  flat?: boolean;
}

/** What the mark reads of one namespace. */
export interface NamespaceGcState {
  images: readonly ImageRecord[];
  containers: readonly ContainerRecord[];
  blobs: ReadonlyMap<string, BlobRecord>;
  /** Each lease with the resources it holds (their own records in the projection). */
  leases: readonly (LeaseRecord & { resources: readonly LeaseResource[] })[];
  /** Keyed `<snapshotter>/<key>` (absent: none). */
  snapshots?: ReadonlyMap<string, SnapshotRecord>;
}

const nodeId = (n: GcNode) => `${n.kind}\u0000${n.key}`;

/** Nodes named by gc.ref labels: content refs (`gc.ref.content`, `.x`, `/x`) and snapshot refs. */
export function labelRefs(labels: Readonly<Record<string, string>>): GcNode[] {
  const out: GcNode[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (k.startsWith(LABEL_GC_REF_CONTENT)) {
      const rest = k.slice(LABEL_GC_REF_CONTENT.length);
      if (rest !== "" && rest[0] !== "." && rest[0] !== "/") continue;
      // A value that is not a digest cannot name content: ignored rather than fatal.
      if (digestProblem(v) === undefined) out.push({ kind: "content", key: v });
    } else if (k.startsWith(LABEL_GC_REF_SNAPSHOT)) {
      let snapshotter = k.slice(LABEL_GC_REF_SNAPSHOT.length);
      const slash = snapshotter.indexOf("/");
      if (slash >= 0) snapshotter = snapshotter.slice(0, slash);
      if (snapshotter && v) out.push({ kind: "snapshot", key: `${snapshotter}/${v}` });
    }
  }
  return out;
}

/** The namespace's roots at `now`: expired leases are no roots (GC deletes them first). */
export function gcRoots(s: NamespaceGcState, now: Date): GcNode[] {
  const out: GcNode[] = [];
  for (const lease of s.leases) {
    if (isLeaseExpired(lease, now)) continue;
    const flat = Object.hasOwn(lease.labels, LABEL_GC_FLAT);
    for (const r of lease.resources) {
      if (r.type === "content") out.push({ kind: "content", key: r.id, flat });
      else if (r.type.startsWith("snapshots/")) out.push({ kind: "snapshot", key: `${r.type.slice("snapshots/".length)}/${r.id}`, flat });
      // ingests: kept by the content store's own stale-ingest sweep, not by this GC.
    }
  }
  for (const img of s.images) {
    if (img.target.digest) out.push({ kind: "content", key: img.target.digest });
    out.push(...labelRefs(img.labels));
  }
  for (const blob of s.blobs.values()) {
    if (Object.hasOwn(blob.labels, LABEL_GC_ROOT)) out.push({ kind: "content", key: blob.digest });
  }
  for (const [id, snap] of s.snapshots ?? []) {
    if (Object.hasOwn(snap.labels, LABEL_GC_ROOT)) out.push({ kind: "snapshot", key: id });
  }
  for (const c of s.containers) {
    if (c.snapshotter && c.snapshot_key) out.push({ kind: "snapshot", key: `${c.snapshotter}/${c.snapshot_key}` });
    out.push(...labelRefs(c.labels));
  }
  return out;
}

/** What a node refers to, per kind: a snapshot its parent and its gc.ref labels. */
const references: Record<ResourceKind, (s: NamespaceGcState, key: string) => GcNode[]> = {
  content: (s, key) => {
    const blob = s.blobs.get(key);
    return blob ? labelRefs(blob.labels) : [];
  },
  snapshot: (s, key) => {
    const snap = s.snapshots?.get(key);
    if (!snap) return [];
    const out = labelRefs(snap.labels);
    if (snap.parent) out.push({ kind: "snapshot", key: `${snap.snapshotter}/${snap.parent}` });
    return out;
  },
};

/** Ids (`<kind>\0<key>`) of every node reachable from the roots. */
export function gcMark(s: NamespaceGcState, now: Date): Set<string> {
  const marked = new Set<string>();
  const stack = gcRoots(s, now);
  // A flat node's labels are not followed, but a flat snapshot's parent is, flat too (as
  // containerd's resourceSnapshotFlat: a live snapshot's parents are never collected under
  // it). Reached again unflat, a node is followed in full then.
  const followed = new Set<string>();
  const followedFlat = new Set<string>();
  while (stack.length > 0) {
    const n = stack.pop()!;
    const id = nodeId(n);
    marked.add(id);
    if (followed.has(id)) continue;
    if (n.flat) {
      if (followedFlat.has(id)) continue;
      followedFlat.add(id);
      if (n.kind === "snapshot") {
        const snap = s.snapshots?.get(n.key);
        if (snap?.parent) stack.push({ kind: "snapshot", key: `${snap.snapshotter}/${snap.parent}`, flat: true });
      }
      continue;
    }
    followed.add(id);
    stack.push(...references[n.kind](s, n.key));
  }
  return marked;
}

/** Digests of the namespace's blobs that nothing reachable refers to, sorted. */
export function unreferencedContent(s: NamespaceGcState, now: Date): string[] {
  const marked = gcMark(s, now);
  return [...s.blobs.keys()].filter((d) => !marked.has(nodeId({ kind: "content", key: d }))).sort();
}

/**
 * The namespace's snapshots that nothing reachable refers to, per snapshotter, children before
 * their parents. A marked snapshot's parents are marked, so a collected one never has a kept child.
 */
export function unreferencedSnapshots(s: NamespaceGcState, now: Date): Map<string, SnapshotRecord[]> {
  const marked = gcMark(s, now);
  const out = new Map<string, SnapshotRecord[]>();
  for (const [id, snap] of [...(s.snapshots ?? [])].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    if (marked.has(nodeId({ kind: "snapshot", key: id }))) continue;
    const list = out.get(snap.snapshotter) ?? [];
    list.push(snap);
    out.set(snap.snapshotter, list);
  }
  for (const [sn, list] of out) out.set(sn, leavesFirst(list));
  return out;
}

/** Orders snapshots so every child comes before its parent (depth from the root, deepest first). */
export function leavesFirst(list: readonly SnapshotRecord[]): SnapshotRecord[] {
  const byKey = new Map(list.map((r) => [r.key, r]));
  const depth = (r: SnapshotRecord): number => {
    let d = 0;
    for (let p = byKey.get(r.parent); p && d <= list.length; p = byKey.get(p.parent)) d++;
    return d;
  };
  return [...list].map((r) => ({ r, d: depth(r) })).sort((a, b) => b.d - a.d || (a.r.key < b.r.key ? -1 : a.r.key > b.r.key ? 1 : 0)).map((x) => x.r);
}

/** Ids of the namespace's leases expired at `now`. */
export function expiredLeases(leases: readonly LeaseRecord[], now: Date): string[] {
  return leases.filter((l) => isLeaseExpired(l, now)).map((l) => l.id);
}

/** A namespace's leases, each with the resources it holds, from any ordered scan. */
export function loadLeases(ns: string, scan: <T>(prefix: string) => Iterable<[string, T]>): NamespaceGcState["leases"] {
  const values = <T>(prefix: string) => [...scan<T>(prefix)].map(([, v]) => v);
  return values<LeaseRecord>(keys.leasesPrefix(ns)).map((l) => ({ ...l, resources: values<LeaseResource>(keys.leaseResourcesPrefix(ns, l.id)) }));
}

/** Reads a namespace's GC state from any ordered scan (the sequencer's view or the projection). */
export function loadGcState(ns: string, scan: <T>(prefix: string) => Iterable<[string, T]>): NamespaceGcState {
  const values = <T>(prefix: string) => [...scan<T>(prefix)].map(([, v]) => v);
  const blobs = new Map<string, BlobRecord>();
  for (const b of values<BlobRecord>(keys.blobsPrefix(ns))) blobs.set(b.digest, b);
  const snapshots = new Map<string, SnapshotRecord>();
  for (const r of values<SnapshotRecord>(keys.snapshotsPrefix(ns))) snapshots.set(`${r.snapshotter}/${r.key}`, r);
  return {
    images: values<ImageRecord>(keys.imagesPrefix(ns)),
    containers: values<ContainerRecord>(keys.containersPrefix(ns)),
    blobs,
    leases: loadLeases(ns, scan),
    snapshots,
  };
}

export interface CollectContent {
  namespace: string;
  now: Date;
  /**
   * The most bytes one event may take (the log's max_payload less its headers): a collection
   * larger than that goes in several events, each decided again on the state the one before
   * left. One event for 14,000 blobs was over NATS's default 1 MiB, refused, and decided
   * identically at every run: GC stopped for good, in every namespace after it too.
   */
  maxEventBytes?: number;
  /** This ckd's host id: what its store holds is collected, from its store only. */
  host?: string;
}

export interface Collected {
  digests: string[];
  /** Sizes of the collected blobs as the namespace recorded them. */
  size: number;
  /** More is unreferenced than this event took: collect again. */
  more: boolean;
}

/** A ContentCollect event for what is unreferenced in the namespace, as much as one event takes; none when nothing is. */
export function decideCollectContent(cmd: CollectContent, s: NamespaceGcState): Decision<Collected> {
  // Marked over every host's records (as a blob another host holds refers on, so it does
  // here); collected: what this host's store holds.
  const all = unreferencedContent(s, cmd.now).filter((d) => blobHeldBy(s.blobs.get(d)!, cmd.host));
  if (all.length === 0) return { result: { digests: [], size: 0, more: false } };
  const digests = takeWithin(all, stringCost, (cmd.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES) - ENVELOPE_ROOM - (cmd.host ? stringCost(cmd.host) : 0));
  const size = digests.reduce((n, d) => n + (s.blobs.get(d)?.size ?? 0), 0);
  return {
    event: { namespace: cmd.namespace, topic: "/gc/content", typeName: TYPE.ContentCollect, payload: cmd.host ? { digests, host: cmd.host } : { digests } },
    result: { digests, size, more: digests.length < all.length },
  };
}

export interface ReleaseHost {
  namespace: string;
  /** The host (a ckd's uuid) taken out of the namespace's blob records. */
  host: string;
  /** As CollectContent's. */
  maxEventBytes?: number;
}

/**
 * A ContentCollect in `host`'s name for the namespace's blobs it holds, referenced or not, as
 * many as one event takes (`more`: release again): for a host gone for good, whose records
 * would otherwise stay (no other host collects them). Records without hosts are every host's:
 * not touched.
 */
export function decideReleaseHost(cmd: ReleaseHost, blobs: Iterable<BlobRecord>): Decision<{ digests: string[]; more: boolean }> {
  if (!cmd.host) throw invalidArgument("host: a ckd's uuid must be given");
  const all = [...blobs].filter((b) => b.hosts?.includes(cmd.host)).map((b) => b.digest).sort();
  if (all.length === 0) return { result: { digests: [], more: false } };
  const digests = takeWithin(all, stringCost, (cmd.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES) - ENVELOPE_ROOM - stringCost(cmd.host));
  return {
    event: { namespace: cmd.namespace, topic: "/gc/content", typeName: TYPE.ContentCollect, payload: { digests, host: cmd.host } },
    result: { digests, more: digests.length < all.length },
  };
}

export interface CollectSnapshots {
  namespace: string;
  snapshotter: string;
  now: Date;
  /** As CollectContent's. */
  maxEventBytes?: number;
}

/**
 * A SnapshotCollect event for a snapshotter's unreferenced snapshots, leaves first, as many as
 * one event takes (a prefix of that order holds every child before its parent); none when
 * nothing is. `more`: collect again.
 */
export function decideCollectSnapshots(cmd: CollectSnapshots, s: NamespaceGcState): Decision<{ removed: SnapshotRecord[]; more: boolean }> {
  const all = unreferencedSnapshots(s, cmd.now).get(cmd.snapshotter) ?? [];
  if (all.length === 0) return { result: { removed: [], more: false } };
  const list = takeWithin(all, (r) => stringCost(r.key) + stringCost(r.id), (cmd.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES) - ENVELOPE_ROOM - stringCost(cmd.snapshotter));
  return {
    event: {
      namespace: cmd.namespace,
      topic: "/gc/snapshot",
      typeName: TYPE.SnapshotCollect,
      payload: { snapshotter: cmd.snapshotter, keys: list.map((r) => r.key), ids: list.map((r) => r.id) },
    },
    result: { removed: list, more: list.length < all.length },
  };
}

export const gcHandlers = {
  collect: (cmd: CollectContent) => (view: StateView) => decideCollectContent(cmd, loadGcState(cmd.namespace, (p) => view.scan(p))),
  releaseHost: (cmd: ReleaseHost) => (view: StateView) => decideReleaseHost(cmd, view.scan<BlobRecord>(keys.blobsPrefix(cmd.namespace)).map(([, b]) => b)),
  collectSnapshots: (cmd: CollectSnapshots) => (view: StateView) => decideCollectSnapshots(cmd, loadGcState(cmd.namespace, (p) => view.scan(p))),
};

// ---- ingests ----
// As containerd's metadata/content.go: an ingest is kept while a lease holds it (one it was
// written under, or one naming it as an `ingests` resource). Opened without a lease, it also
// has an expiry: a day without writes (configurable); only ever written under leases, it has
// none and goes with them.

/** An ingest as GC sees it, in the client's terms; `namespace`/`ref` undefined when a crash lost its name. */
export interface IngestView {
  namespace: string | undefined;
  ref: string | undefined;
  /** Leases it was written under. */
  leases: readonly string[];
  /** Opened without a lease at least once. */
  expires: boolean;
  idleMs: number;
}

/** What holds ingests, keyed `<namespace>\0<id>`. */
export interface IngestHolders {
  /** Whether the lease exists and has not expired (looked up when asked: a pull may start meanwhile). */
  leases: Pick<ReadonlySet<string>, "has">;
  /** Ingest refs named as `ingests` resources by live leases. */
  refs: Pick<ReadonlySet<string>, "has">;
}

const nsKey = (ns: string, id: string): string => `${ns}\u0000${id}`;

/** The ingest refs live leases name, from each namespace's leases with their resources. */
export function ingestRefsHeld(namespaces: Iterable<readonly [string, NamespaceGcState["leases"]]>, now: Date): Set<string> {
  const refs = new Set<string>();
  for (const [ns, list] of namespaces) {
    for (const lease of list) {
      if (isLeaseExpired(lease, now)) continue;
      for (const r of lease.resources) if (r.type === "ingests") refs.add(nsKey(ns, r.id));
    }
  }
  return refs;
}

/** Whether GC removes the ingest now. */
export function ingestCollectable(i: IngestView, holders: IngestHolders, maxIdleMs: number): boolean {
  if (i.namespace === undefined || i.ref === undefined) return i.idleMs >= maxIdleMs; // nameless: expires
  const ns = i.namespace;
  if (holders.refs.has(nsKey(ns, i.ref))) return false;
  if (i.leases.some((l) => holders.leases.has(nsKey(ns, l)))) return false;
  return !i.expires || i.idleMs >= maxIdleMs;
}
