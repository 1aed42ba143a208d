// The snapshots aggregate: which snapshots a namespace has per snapshotter, their kinds
// (Active, View, Committed), parents, labels and on-disk ids. The files are the snapshotter's
// (src/snapshots); a command here runs after its disk step succeeded, so a snapshot never
// becomes visible before its directory exists. decide* are pure; the handlers load and call.
import { aborted, alreadyExists, failedPrecondition, invalidArgument, notFound, type CkError } from "../errdefs/errdefs.js";
import { createHash } from "node:crypto";
import { keys, snapshotRecord, TYPE, type LeaseRecord, type SnapshotIdRecord, type SnapshotKind, type SnapshotRecord, type Timestamp } from "../projections/views.js";
import { checkSnapshotId } from "../snapshots/types.js";
import { validateDigest, validateFieldMask, validateLabels, type FieldMaskRule } from "./validation.js";
import { applyLabelMask, dropEmpty, maskedLabels } from "./masks.js";
import type { Decision, StateView } from "./sequencer.js";
import type { EventDraft } from "../emitter/envelope.js";

/** containerd's snapshot Update accepts `labels` and `labels.<key>` only. */
const SNAPSHOT_FIELD_MASK: FieldMaskRule = { fields: ["labels"], maps: ["labels"] };

export interface PrepareSnapshot {
  namespace: string;
  snapshotter: string;
  key: string;
  parent: string;
  /** Active for Prepare, View for View. */
  kind: "Active" | "View";
  /** The on-disk id the snapshotter already created (chosen by ckd, never from the key). */
  id: string;
  /** The parent's directory id the snapshotter built on, when ckd built it (see checkParentId). */
  parentId?: string;
  labels: Record<string, string>;
  lease?: string;
  now: Timestamp;
}
export interface CommitSnapshot {
  namespace: string;
  snapshotter: string;
  key: string;
  name: string;
  labels: Record<string, string>;
  lease?: string;
  now: Timestamp;
}
export interface RemoveSnapshot {
  namespace: string;
  snapshotter: string;
  key: string;
  /** The caller's lease (containerd-lease header): the key leaves it. */
  lease?: string;
}
export interface UpdateSnapshot {
  namespace: string;
  snapshotter: string;
  key: string;
  labels: Record<string, string>;
  paths: string[];
  now: Timestamp;
}

/**
 * ckd's own unpack of one layer (ck.services.unpack.v1): `name` committed directly (no Active
 * snapshot a client could have written to), on a directory made for it (`share` false, the
 * layer applied and its diff_id checked) or on another namespace's verified one (`share`).
 */
export interface UnpackSnapshot {
  namespace: string;
  snapshotter: string;
  /** The chain ID ckd computed from the parent's name and diff_id. */
  name: string;
  parent: string;
  id: string;
  /** The parent's directory id the layer was applied on (see checkParentId). */
  parentId?: string;
  share: boolean;
  /** Set when the result is verified: the parent is "" or verified. */
  verified?: { layer: string; parent_id: string; diff_id: string };
  labels: Record<string, string>;
  lease?: string;
  now: Timestamp;
}

/** OCI identity.ChainID of a parent chain ID ("" for none) and a layer's diff_id. */
export function chainIdOf(parent: string, diffId: string): string {
  return parent ? "sha256:" + createHash("sha256").update(`${parent} ${diffId}`).digest("hex") : diffId;
}

/** What an unpack checks before any disk work, and again when deciding (as Prepare, keyed by name). */
export function checkUnpack(
  cmd: Pick<UnpackSnapshot, "snapshotter" | "name" | "parent" | "labels" | "lease">,
  existing: SnapshotRecord | undefined,
  parent: SnapshotRecord | undefined,
  lease: LeaseRecord | undefined,
): Record<string, string> {
  return checkNewSnapshot("name", cmd.name, cmd, existing, parent, lease);
}

/**
 * One /snapshot/commit event with an empty key: the record in the caller's namespace. A fresh
 * id must be unowned; a shared one must be a verified directory made from the same layer on
 * the same parent directory under the same chain ID, still referred to by some namespace.
 */
export function decideUnpackSnapshot(
  cmd: UnpackSnapshot,
  existing: SnapshotRecord | undefined,
  parent: SnapshotRecord | undefined,
  lease: LeaseRecord | undefined,
  idRec: SnapshotIdRecord | undefined,
): Decision<SnapshotRecord> {
  const labels = checkUnpack(cmd, existing, parent, lease);
  checkSnapshotId(cmd.id);
  checkParentId(cmd, parent);
  const v = cmd.verified;
  if (v) {
    validateDigest("layer", v.layer);
    validateDigest("diff_id", v.diff_id);
    if (chainIdOf(cmd.parent, v.diff_id) !== cmd.name) throw invalidArgument(`snapshot name ${cmd.name} is not the chain ID of ${JSON.stringify(cmd.parent)} and ${v.diff_id}`);
    if (parent && (!parent.verified || parent.id !== v.parent_id)) throw failedPrecondition(`parent ${JSON.stringify(cmd.parent)} is not the verified snapshot the layer was applied on`);
    if (!parent && v.parent_id) throw invalidArgument("a first layer has no parent directory");
  }
  if (cmd.share) {
    const have = idRec?.verified;
    if (!v || !have || have.chain !== cmd.name || have.parent_id !== v.parent_id || have.layer !== v.layer) {
      throw failedPrecondition(`snapshot directory ${cmd.id} is not a verified ${cmd.name} from layer ${v?.layer ?? ""}`);
    }
  } else if (idRec) throw alreadyExists(`snapshot id ${cmd.id}`);
  const rec = snapshotRecord({ snapshotter: cmd.snapshotter, key: cmd.name, parent: cmd.parent, kind: "Committed", id: cmd.id, labels, created_at: cmd.now, updated_at: cmd.now, verified: v ? true : undefined });
  const payload: Record<string, unknown> = { key: "", name: cmd.name, ck_snapshotter: cmd.snapshotter, ck_labels: { labels: rec.labels }, ck_id: cmd.id, ck_parent: cmd.parent };
  if (v) payload.ck_verified = { layer: v.layer, parent_id: v.parent_id, diff_id: v.diff_id };
  if (cmd.lease) Object.assign(payload, { ck_lease: cmd.lease, ck_lease_moves: true });
  return { event: { namespace: cmd.namespace, topic: "/snapshot/commit", typeName: TYPE.SnapshotCommit, payload }, result: rec };
}

/**
 * The directory was built on the parent's directory as it was looked up before the disk work;
 * a parent removed and committed again under its name meanwhile is another directory, and a
 * record saying the new snapshot is its child would be false: refused (Aborted, to try again).
 */
function checkParentId(cmd: { parent: string; parentId?: string }, parent: SnapshotRecord | undefined): void {
  if (cmd.parentId === undefined || !parent || parent.id === cmd.parentId) return;
  throw aborted(`parent snapshot ${JSON.stringify(cmd.parent)} was replaced while this one was made on it: try again`);
}

/** As containerd's metadata store words a parent that is not there (metadata/snapshot.go). */
function parentMissing(parent: string, cause?: unknown): CkError {
  return notFound(`parent snapshot ${parent} does not exist`, cause === undefined ? undefined : { cause });
}

/**
 * After the disk work on the parent's directory `parentId` failed: `parent` is the parent's
 * record looked up again. Removed (or collected) meanwhile, its directory went with it and
 * the failure (a vanished path, a cut-short copy) only says so late: NotFound, as containerd
 * answers a Prepare or View whose parent is gone; replaced under its name, Aborted as
 * checkParentId. A parent that stands as it was leaves `cause` the answer (returns).
 */
export function checkParentStands(cmd: { parent: string; parentId: string }, parent: SnapshotRecord | undefined, cause: unknown): void {
  if (!parent) throw parentMissing(cmd.parent, cause);
  checkParentId(cmd, parent);
}

/** Keys are any non-empty string without NUL (ctr uses spaces and `/`): they never become paths. */
export function validateSnapshotKey(field: string, key: string): void {
  if (!key) throw invalidArgument(`snapshot ${field} must not be empty`);
  if (key.includes("\u0000")) throw invalidArgument(`snapshot ${field} ${JSON.stringify(key)} must not contain NUL`);
}

/** How containerd's snapshot store names a snapshot's labels in its refusals (metadata/snapshot.go validateSnapshot). */
const INFO_LABELS = "info.Labels";

export function validateSnapshotterName(sn: string): void {
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(sn)) throw invalidArgument(`snapshotter name ${JSON.stringify(sn)} is not valid`);
}

/** What Prepare and View check before any disk work, and again when deciding. */
export function checkPrepare(
  cmd: Omit<PrepareSnapshot, "id" | "now">,
  current: SnapshotRecord | undefined,
  parent: SnapshotRecord | undefined,
  lease: LeaseRecord | undefined,
): Record<string, string> {
  return checkNewSnapshot("key", cmd.key, cmd, current, parent, lease);
}

/** A new snapshot under `key` (the request's `field`): valid names and labels, no record yet, a committed parent. */
function checkNewSnapshot(
  field: string,
  key: string,
  cmd: { snapshotter: string; parent: string; labels: Record<string, string>; lease?: string },
  existing: SnapshotRecord | undefined,
  parent: SnapshotRecord | undefined,
  lease: LeaseRecord | undefined,
): Record<string, string> {
  validateSnapshotterName(cmd.snapshotter);
  validateSnapshotKey(field, key);
  if (cmd.parent) validateSnapshotKey("parent", cmd.parent);
  const labels = dropEmpty(cmd.labels);
  validateLabels(labels, INFO_LABELS);
  if (cmd.lease && !lease) throw notFound(`lease "${cmd.lease}" does not exist`);
  if (existing) throw alreadyExists(`snapshot ${JSON.stringify(key)}`);
  if (cmd.parent) {
    if (!parent) throw parentMissing(cmd.parent);
    if (parent.kind !== "Committed") throw invalidArgument(`parent ${JSON.stringify(cmd.parent)} is not a committed snapshot`);
  }
  return labels;
}

export function decidePrepareSnapshot(
  cmd: PrepareSnapshot,
  current: SnapshotRecord | undefined,
  parent: SnapshotRecord | undefined,
  lease: LeaseRecord | undefined,
  idOwned: boolean,
): Decision<SnapshotRecord> {
  const labels = checkPrepare(cmd, current, parent, lease);
  checkSnapshotId(cmd.id);
  checkParentId(cmd, parent);
  if (idOwned) throw alreadyExists(`snapshot id ${cmd.id}`);
  const rec = snapshotRecord({ snapshotter: cmd.snapshotter, key: cmd.key, parent: cmd.parent, kind: cmd.kind, id: cmd.id, labels, created_at: cmd.now, updated_at: cmd.now });
  return { event: newSnapshotEvent(cmd, rec), result: rec };
}

/**
 * The event of a Prepare (containerd's /snapshot/prepare) or a View. containerd publishes
 * nothing for a View, so a View is ck's own event (/snapshot/view, ck.events.SnapshotView),
 * which containerd's clients do not get (events-service.ts) and subjects following
 * containerd's `snapshot.prepare` do not carry; the projection needs it all the same.
 */
function newSnapshotEvent(cmd: PrepareSnapshot, rec: SnapshotRecord): EventDraft {
  if (cmd.kind === "View") {
    const payload: Record<string, unknown> = { key: cmd.key, parent: cmd.parent, snapshotter: cmd.snapshotter, id: cmd.id, labels: rec.labels };
    if (cmd.lease) payload.lease = cmd.lease;
    return { namespace: cmd.namespace, topic: "/snapshot/view", typeName: TYPE.SnapshotView, payload };
  }
  const payload: Record<string, unknown> = {
    key: cmd.key,
    parent: cmd.parent,
    ck_snapshotter: cmd.snapshotter,
    ck_kind: cmd.kind,
    ck_id: cmd.id,
    ck_labels: { labels: rec.labels },
  };
  if (cmd.lease) payload.ck_lease = cmd.lease;
  return { namespace: cmd.namespace, topic: "/snapshot/prepare", typeName: TYPE.SnapshotPrepare, payload };
}

/** Checks made before the snapshotter seals the directories, and again when deciding. */
export function checkCommit(cmd: Omit<CommitSnapshot, "now">, current: SnapshotRecord | undefined, existing: SnapshotRecord | undefined, lease: LeaseRecord | undefined): Record<string, string> {
  validateSnapshotterName(cmd.snapshotter);
  validateSnapshotKey("key", cmd.key);
  validateSnapshotKey("name", cmd.name);
  const labels = dropEmpty(cmd.labels);
  validateLabels(labels, INFO_LABELS);
  if (cmd.lease && !lease) throw notFound(`lease "${cmd.lease}" does not exist`);
  // The name first, as containerd's metadata store makes the committed one before it looks
  // for the active one.
  if (existing) throw alreadyExists(`snapshot ${JSON.stringify(cmd.name)}`);
  if (!current) throw notFound(`snapshot ${cmd.key} does not exist`);
  if (current.kind !== "Active") throw failedPrecondition(`snapshot ${JSON.stringify(cmd.key)} is not active`);
  return labels;
}

export function decideCommitSnapshot(
  cmd: CommitSnapshot,
  current: SnapshotRecord | undefined,
  existing: SnapshotRecord | undefined,
  lease: LeaseRecord | undefined,
): Decision<SnapshotRecord> {
  const labels = checkCommit(cmd, current, existing, lease);
  const rec = snapshotRecord({ ...current!, key: cmd.name, kind: "Committed", labels, created_at: cmd.now, updated_at: cmd.now });
  const payload: Record<string, unknown> = { key: cmd.key, name: cmd.name, ck_snapshotter: cmd.snapshotter, ck_labels: { labels: rec.labels }, ck_id: rec.id };
  if (cmd.lease) Object.assign(payload, { ck_lease: cmd.lease, ck_lease_moves: true });
  return { event: { namespace: cmd.namespace, topic: "/snapshot/commit", typeName: TYPE.SnapshotCommit, payload }, result: rec };
}

/** `children`: keys of the snapshots whose parent is cmd.key. The result is the removed record. */
export function decideRemoveSnapshot(cmd: RemoveSnapshot, current: SnapshotRecord | undefined, children: readonly string[]): Decision<SnapshotRecord> {
  validateSnapshotterName(cmd.snapshotter);
  validateSnapshotKey("key", cmd.key);
  if (!current) throw notFound(`snapshot ${cmd.key} does not exist`);
  if (children.length > 0) throw failedPrecondition(`cannot remove snapshot with child`);
  return {
    event: {
      namespace: cmd.namespace,
      topic: "/snapshot/remove",
      typeName: TYPE.SnapshotRemove,
      payload: { key: cmd.key, ck_snapshotter: cmd.snapshotter, ck_id: current.id, ...(cmd.lease ? { ck_lease: cmd.lease } : {}) },
    },
    result: current,
  };
}

export function decideUpdateSnapshot(cmd: UpdateSnapshot, current: SnapshotRecord | undefined): Decision<SnapshotRecord> {
  validateSnapshotterName(cmd.snapshotter);
  validateSnapshotKey("key", cmd.key);
  validateFieldMask(`snapshot ${JSON.stringify(cmd.key)}`, cmd.paths, SNAPSHOT_FIELD_MASK);
  validateLabels(maskedLabels(cmd.labels, cmd.paths, "labels"), INFO_LABELS);
  if (!current) throw notFound(`snapshot ${cmd.key} does not exist`);
  const labels = cmd.paths.length === 0 ? dropEmpty(cmd.labels) : applyLabelMask(current.labels, cmd.labels, cmd.paths, "labels");
  const rec = snapshotRecord({ ...current, labels, updated_at: cmd.now });
  return {
    event: { namespace: cmd.namespace, topic: "/snapshot/update", typeName: TYPE.SnapshotUpdate, payload: { snapshotter: cmd.snapshotter, key: cmd.key, labels: rec.labels } },
    result: rec,
  };
}

/** Records of one snapshotter in a namespace, keyed by snapshot key. */
export function snapshotsOf(view: Pick<StateView, "scan">, ns: string, sn: string): Map<string, SnapshotRecord> {
  const out = new Map<string, SnapshotRecord>();
  for (const [, r] of view.scan<SnapshotRecord>(keys.snapshotterPrefix(ns, sn))) out.set(r.key, r);
  return out;
}

/** The on-disk ids of `key`'s parents, nearest first (what a snapshotter's mounts need). */
export function parentIds(records: ReadonlyMap<string, SnapshotRecord> | ((key: string) => SnapshotRecord | undefined), rec: SnapshotRecord): string[] {
  const get = typeof records === "function" ? records : (k: string) => records.get(k);
  const out: string[] = [];
  const seen = new Set<string>();
  for (let p = rec.parent; p; ) {
    if (seen.has(p)) throw failedPrecondition(`snapshot ${JSON.stringify(rec.key)}: parent chain loops at ${JSON.stringify(p)}`);
    seen.add(p);
    const r = get(p);
    if (!r) throw notFound(`parent snapshot ${JSON.stringify(p)} of ${JSON.stringify(rec.key)} does not exist`);
    out.push(r.id);
    p = r.parent;
  }
  return out;
}

export const isKind = (k: string): k is SnapshotKind => k === "Active" || k === "View" || k === "Committed";

const get = (view: StateView, ns: string, sn: string, key: string) =>
  !key || key.includes("\u0000") ? undefined : view.get<SnapshotRecord>(keys.snapshot(ns, sn, key));
const leaseOf = (view: StateView, ns: string, id: string | undefined) =>
  id && !id.includes("\u0000") ? view.get<LeaseRecord>(keys.lease(ns, id)) : undefined;

export const snapshotHandlers = {
  prepare: (cmd: PrepareSnapshot) => (view: StateView) =>
    decidePrepareSnapshot(
      cmd,
      get(view, cmd.namespace, cmd.snapshotter, cmd.key),
      get(view, cmd.namespace, cmd.snapshotter, cmd.parent),
      leaseOf(view, cmd.namespace, cmd.lease),
      view.get(keys.snapshotId(cmd.snapshotter, cmd.id)) !== undefined,
    ),
  commit: (cmd: CommitSnapshot) => (view: StateView) =>
    decideCommitSnapshot(cmd, get(view, cmd.namespace, cmd.snapshotter, cmd.key), get(view, cmd.namespace, cmd.snapshotter, cmd.name), leaseOf(view, cmd.namespace, cmd.lease)),
  unpack: (cmd: UnpackSnapshot) => (view: StateView) =>
    decideUnpackSnapshot(
      cmd,
      get(view, cmd.namespace, cmd.snapshotter, cmd.name),
      get(view, cmd.namespace, cmd.snapshotter, cmd.parent),
      leaseOf(view, cmd.namespace, cmd.lease),
      view.get<SnapshotIdRecord>(keys.snapshotId(cmd.snapshotter, cmd.id)),
    ),
  remove: (cmd: RemoveSnapshot) => (view: StateView) => {
    const current = get(view, cmd.namespace, cmd.snapshotter, cmd.key);
    const children = current ? [...snapshotsOf(view, cmd.namespace, cmd.snapshotter).values()].filter((r) => r.parent === cmd.key).map((r) => r.key) : [];
    return decideRemoveSnapshot(cmd, current, children);
  },
  update: (cmd: UpdateSnapshot) => (view: StateView) => decideUpdateSnapshot(cmd, get(view, cmd.namespace, cmd.snapshotter, cmd.key)),
};
