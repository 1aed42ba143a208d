// The leases aggregate: a lease is a named set of references (content, ingests, snapshots)
// that keeps resources from garbage collection until it is deleted or expires
// (`containerd.io/gc.expire`, enforced by GC). decide* are pure; the handlers load and call.
import { alreadyExists, invalidArgument, notFound, notImplemented } from "../errdefs/errdefs.js";
import { blobHeldBy, keys, leaseRecord, leaseResources, TYPE, type BlobRecord, type LeaseRecord, type LeaseResource, type Timestamp } from "../projections/views.js";
import type { EventDraft } from "../emitter/envelope.js";
import { digestProblem, validateLabels } from "./validation.js";
import type { Decision, Sequencer, StateView } from "./sequencer.js";
import { dropEmpty } from "./masks.js";
import { parseRfc3339 } from "./validation.js";
import { ENVELOPE_ROOM, leaseResourceCost, takeWithin } from "./event-size.js";

/** The lease label holding its expiry (RFC 3339); GC deletes the lease once it passed. */
export const LABEL_GC_EXPIRE = "containerd.io/gc.expire";
/** A lease label telling GC not to follow references from the lease's resources. */
export const LABEL_GC_FLAT = "containerd.io/gc.flat";

export interface CreateLease {
  namespace: string;
  /** Required here: the service generates one when a request leaves it empty, as containerd's. */
  id: string;
  labels: Record<string, string>;
  now: Timestamp;
}
export interface DeleteLease {
  namespace: string;
  id: string;
  /**
   * The most bytes one event may take: a lease whose resources do not fit in one LeaseDelete
   * lets go of the rest first (LeaseResourceDelete each; see deleteLease). One event for
   * 12,000 resources was over NATS's default 1 MiB: such a lease could not be deleted, by its
   * owner or by GC, whose every run then failed on it.
   */
  maxEventBytes?: number;
}
/** GC's delete: only when the lease is (still) expired at `now`. */
export interface ExpireLease extends DeleteLease {
  now: Date;
}

/** A lease too big to delete in one event: these resources go first, then the delete is decided again. */
export interface LeaseTrim {
  trim: LeaseResource[];
}

/** The resources past what one delete event takes (none: it fits). */
function overflow(resources: LeaseResource[], maxEventBytes: number | undefined): LeaseResource[] {
  if (maxEventBytes === undefined || resources.length === 0) return [];
  return resources.slice(takeWithin(resources, leaseResourceCost, maxEventBytes - ENVELOPE_ROOM).length);
}
export interface LeaseResourceChange {
  namespace: string;
  id: string;
  resource: LeaseResource;
}

export function validateLeaseId(id: string): void {
  if (!id) throw invalidArgument("lease id must be provided");
  if (id.includes("\u0000")) throw invalidArgument(`lease id ${JSON.stringify(id)} must not contain NUL`);
}

/**
 * containerd's parseLeaseResource: `content` (id a digest), `ingests` (id a ref),
 * `snapshots/<snapshotter>` (id a key); malformed types are InvalidArgument, other kinds
 * NotImplemented. Returns the resource as stored.
 */
export function validateLeaseResource(r: Partial<LeaseResource> | undefined | null): LeaseResource {
  const id = r?.id ?? "";
  const type = r?.type ?? "";
  const parts = type.split("/");
  switch (parts[0]) {
    case "content":
    case "ingests":
      if (parts.length !== 1) throw invalidArgument(`invalid resource type ${type}`);
      if (parts[0] === "content") {
        const problem = digestProblem(id);
        if (problem) throw invalidArgument(`invalid content resource id ${id}: ${problem}`);
      }
      break;
    case "snapshots":
      if (parts.length !== 2 || !parts[1]) throw invalidArgument(`invalid snapshot resource type ${type}`);
      break;
    default:
      throw notImplemented(`resource type ${type} not supported yet`);
  }
  if (!id) throw invalidArgument(`resource id must not be empty`);
  if (id.includes("\u0000")) throw invalidArgument(`resource id ${JSON.stringify(id)} must not contain NUL`);
  return { id, type };
}

/**
 * The lease's expiry from its gc.expire label; undefined when absent or not RFC 3339 as Go's
 * time.Parse reads it (ignored, as containerd).
 */
export function leaseExpiry(labels: Readonly<Record<string, string>>): Date | undefined {
  const v = labels[LABEL_GC_EXPIRE];
  return v === undefined ? undefined : parseRfc3339(v);
}

export function isLeaseExpired(lease: LeaseRecord, now: Date): boolean {
  const exp = leaseExpiry(lease.labels);
  return exp !== undefined && now.getTime() > exp.getTime();
}

export function decideCreateLease(cmd: CreateLease, current: LeaseRecord | undefined): Decision<LeaseRecord> {
  validateLeaseId(cmd.id);
  const labels = dropEmpty(cmd.labels);
  validateLabels(labels, "lease.Labels");
  if (current) throw alreadyExists(`lease "${cmd.id}"`);
  const rec = leaseRecord({ id: cmd.id, labels, created_at: cmd.now });
  return {
    event: { namespace: cmd.namespace, topic: "/leases/create", typeName: TYPE.LeaseCreate, payload: { id: rec.id, labels: rec.labels, created_at: rec.created_at } },
    result: rec,
  };
}

/** `resources`: what the lease holds; the event lists them, since they go with it. */
export function decideDeleteLease(cmd: DeleteLease, current: LeaseRecord | undefined, resources: LeaseResource[] = []): Decision<void | LeaseTrim> {
  validateLeaseId(cmd.id);
  if (!current) throw notFound(`lease "${cmd.id}"`);
  const trim = overflow(resources, cmd.maxEventBytes);
  if (trim.length > 0) return { result: { trim } };
  return { event: deleteEvent(cmd.namespace, cmd.id, resources), result: undefined };
}

/** True when the lease was deleted; no event when it is gone or no longer expired. */
export function decideExpireLease(cmd: ExpireLease, current: LeaseRecord | undefined, resources: LeaseResource[] = []): Decision<boolean | LeaseTrim> {
  if (!current || !isLeaseExpired(current, cmd.now)) return { result: false };
  const trim = overflow(resources, cmd.maxEventBytes);
  if (trim.length > 0) return { result: { trim } };
  return { event: deleteEvent(cmd.namespace, cmd.id, resources), result: true };
}

/**
 * Deletes a lease (GC's expiry when `now` is given: only if still expired), letting go first,
 * 64 at a time, of the resources past what one LeaseDelete event takes. False when an expiry
 * found the lease gone or no longer expired.
 */
export async function deleteLease(sequencer: Pick<Sequencer, "submit" | "maxEventBytes">, cmd: DeleteLease & { now?: Date }): Promise<boolean> {
  const maxEventBytes = sequencer.maxEventBytes;
  for (;;) {
    const now = cmd.now;
    const r =
      now === undefined
        ? await sequencer.submit(leaseHandlers.delete({ ...cmd, maxEventBytes }))
        : await sequencer.submit(leaseHandlers.expire({ ...cmd, now, maxEventBytes }));
    if (r === undefined || r === true) return true;
    if (r === false) return false;
    for (let i = 0; i < r.trim.length; i += 64) {
      await Promise.all(r.trim.slice(i, i + 64).map((resource) => sequencer.submit(leaseHandlers.deleteResource({ namespace: cmd.namespace, id: cmd.id, resource }))));
    }
  }
}

function deleteEvent(namespace: string, id: string, resources: LeaseResource[]): EventDraft {
  const payload = resources.length ? { id, resources: leaseResources(resources) } : { id };
  return { namespace, topic: "/leases/delete", typeName: TYPE.LeaseDelete, payload };
}

/** `held`: whether the lease already holds the resource. */
export function decideAddLeaseResource(cmd: LeaseResourceChange, current: LeaseRecord | undefined, held = false): Decision<void> {
  validateLeaseId(cmd.id);
  const resource = validateLeaseResource(cmd.resource);
  if (!current) throw notFound(`lease "${cmd.id}"`);
  if (held) return { result: undefined };
  return {
    event: { namespace: cmd.namespace, topic: "/leases/resource/add", typeName: TYPE.LeaseResourceAdd, payload: { id: cmd.id, resource } },
    result: undefined,
  };
}

/** Removing a resource the lease does not hold is no error (containerd's bucket delete). */
export function decideDeleteLeaseResource(cmd: LeaseResourceChange, current: LeaseRecord | undefined, held = false): Decision<void> {
  validateLeaseId(cmd.id);
  const resource = validateLeaseResource(cmd.resource);
  if (!current) throw notFound(`lease "${cmd.id}"`);
  if (!held) return { result: undefined };
  return {
    event: { namespace: cmd.namespace, topic: "/leases/resource/delete", typeName: TYPE.LeaseResourceDelete, payload: { id: cmd.id, resource } },
    result: undefined,
  };
}

const currentLease = (view: StateView, ns: string, id: string) =>
  !id || id.includes("\u0000") ? undefined : view.get<LeaseRecord>(keys.lease(ns, id));

/** The resources a lease holds, from their own records. */
export const leaseResourcesIn = (view: Pick<StateView, "scan">, ns: string, id: string): LeaseResource[] =>
  view.scan<LeaseResource>(keys.leaseResourcesPrefix(ns, id)).map(([, r]) => r);

/** Whether the lease holds a resource (a malformed one is validated by the decision). */
const holds = (view: StateView, cmd: LeaseResourceChange): boolean => {
  const r = cmd.resource;
  if (!cmd.id || cmd.id.includes("\u0000") || typeof r?.id !== "string" || typeof r?.type !== "string") return false;
  return view.get(keys.leaseResource(cmd.namespace, cmd.id, { id: r.id, type: r.type })) !== undefined;
};

/**
 * Leases a blob only if the namespace still has it, in one decision (containerd checks and
 * leases in one transaction): true when it was there (and is now held), false when it is
 * gone (collected since it was seen), with no event.
 */
export function decideLeaseContentIfPresent(cmd: LeaseResourceChange, current: LeaseRecord | undefined, present: boolean, held: boolean): Decision<boolean> {
  if (!present) return { result: false };
  return { ...decideAddLeaseResource(cmd, current, held), result: true };
}

export const leaseHandlers = {
  /** `host`: this ckd's host id; a blob only other hosts' stores hold is not present here. */
  leaseContentIfPresent: (cmd: LeaseResourceChange, host?: string) => (view: StateView) => {
    const blob = view.get<BlobRecord>(keys.blob(cmd.namespace, cmd.resource.id));
    return decideLeaseContentIfPresent(cmd, currentLease(view, cmd.namespace, cmd.id), blob !== undefined && blobHeldBy(blob, host), holds(view, cmd));
  },
  create: (cmd: CreateLease) => (view: StateView) => decideCreateLease(cmd, currentLease(view, cmd.namespace, cmd.id)),
  delete: (cmd: DeleteLease) => (view: StateView) => {
    const current = currentLease(view, cmd.namespace, cmd.id);
    return decideDeleteLease(cmd, current, current ? leaseResourcesIn(view, cmd.namespace, cmd.id) : []);
  },
  expire: (cmd: ExpireLease) => (view: StateView) => {
    const current = currentLease(view, cmd.namespace, cmd.id);
    return decideExpireLease(cmd, current, current ? leaseResourcesIn(view, cmd.namespace, cmd.id) : []);
  },
  addResource: (cmd: LeaseResourceChange) => (view: StateView) => decideAddLeaseResource(cmd, currentLease(view, cmd.namespace, cmd.id), holds(view, cmd)),
  deleteResource: (cmd: LeaseResourceChange) => (view: StateView) => decideDeleteLeaseResource(cmd, currentLease(view, cmd.namespace, cmd.id), holds(view, cmd)),
};
