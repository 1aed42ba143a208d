// The namespaces aggregate: create with labels, update labels under a field mask, delete only
// when empty. decide* are pure; the handlers at the bottom load state and call them.
import { aborted, alreadyExists, failedPrecondition, isNotFound, notFound } from "../errdefs/errdefs.js";
import type { EventDraft } from "../emitter/envelope.js";
import { blobHeldBy, keys, namespaceRecord, TYPE, type BlobRecord, type LeaseResource, type NamespaceRecord } from "../projections/views.js";
import { isIdentifier, validateIdentifier, validateLabels, validateFieldMask, type FieldMaskRule } from "./validation.js";

/** containerd's namespaces service accepts `labels.<key>` paths only (not `labels` whole). */
const NAMESPACE_FIELD_MASK: FieldMaskRule = { fields: [], maps: ["labels"] };
import type { Decision, Sequencer, StateView } from "./sequencer.js";
import { applyLabelMask, dropEmpty, maskedLabels } from "./masks.js";
import { ENVELOPE_ROOM, namespaceLeaseCost, stringCost } from "./event-size.js";
import { deleteLease } from "./leases.js";

export interface CreateNamespace {
  /** Namespace of the caller: containerd publishes /namespaces/create under it. */
  caller: string;
  name: string;
  labels: Record<string, string>;
}

export interface UpdateNamespace {
  caller: string;
  name: string;
  labels: Record<string, string>;
  /** Field mask paths; empty means replace all labels. */
  paths: string[];
}

export interface DeleteNamespace {
  name: string;
  /**
   * The most bytes one event may take (absent: not checked). The NamespaceDelete lists the
   * namespace's leases and their resources: when they do not fit, the biggest leases are
   * deleted first, each in its own LeaseDelete (see deleteNamespace). One event for a lease of
   * ~10,000 resources was over NATS's default 1 MiB: such a namespace could not be deleted.
   */
  maxEventBytes?: number;
  /** This ckd's host id: blobs only other hosts' stores hold are named as such in a refusal. */
  host?: string;
}

/** A namespace whose leases do not fit in its delete event: these leases go first, then the delete is decided again. */
export interface LeasesFirst {
  leasesFirst: string[];
}

/**
 * A namespace's name, refused with identifiers.Validate's error led by the field it is in
 * (`namespace: identifier "Bad!" must match …`): containerd's store gives the identifier's
 * error alone, which names no field.
 */
function validateNamespaceName(name: string): void {
  validateIdentifier("namespace", name);
}

export function decideCreateNamespace(cmd: CreateNamespace, current: NamespaceRecord | undefined): Decision<NamespaceRecord> {
  validateNamespaceName(cmd.name);
  validateLabels(cmd.labels, "namespace.Labels");
  if (current) throw alreadyExists(`namespace "${cmd.name}"`);
  const rec = namespaceRecord({ name: cmd.name, labels: dropEmpty(cmd.labels) });
  return { event: namespaceEvent(cmd.caller, "/namespaces/create", TYPE.NamespaceCreate, rec), result: rec };
}

export function decideUpdateNamespace(cmd: UpdateNamespace, current: NamespaceRecord | undefined): Decision<NamespaceRecord> {
  // containerd's SetLabel checks no name: `ctr namespaces label 'a b' k=v` makes a namespace
  // that no later call can name (its delete fails the event's validation). Refused here.
  validateNamespaceName(cmd.name);
  validateFieldMask(`namespace "${cmd.name}"`, cmd.paths, NAMESPACE_FIELD_MASK);
  validateLabels(maskedLabels(cmd.labels, cmd.paths, "labels"), "namespace.Labels");
  // As containerd's store, whose SetLabel makes the namespace's bucket: an update of a
  // namespace that does not exist creates it (`ctr namespaces label new k=v`).
  const labels = cmd.paths.length === 0 ? dropEmpty(cmd.labels) : applyLabelMask(current?.labels ?? {}, cmd.labels, cmd.paths, "labels");
  const rec = namespaceRecord({ name: cmd.name, labels });
  // containerd's event carries the request's labels; the result goes in ck's extension.
  const event = namespaceEvent(cmd.caller, "/namespaces/update", TYPE.NamespaceUpdate, rec);
  event.payload = { name: rec.name, labels: { ...cmd.labels }, ck_labels: { labels: rec.labels } };
  return { event, result: rec };
}

/**
 * `remaining` lists what still lives in the namespace ("images", "containers", ...); `leases`
 * the ids of its leases, which go with it (as containerd drops the namespace's bucket), and
 * `leaseResources` what each holds. What remains is refused first, however big the leases: a
 * namespace that cannot be deleted loses none of them.
 */
export function decideDeleteNamespace(
  cmd: DeleteNamespace,
  current: NamespaceRecord | undefined,
  remaining: string[],
  leases: string[] = [],
  leaseResources: { id: string; resources: LeaseResource[] }[] = [],
): Decision<void | LeasesFirst> {
  // As containerd's store: a name that is not stored (one that is no identifier never is) is
  // NotFound, which ctr's rm takes as done.
  if (!current) throw notFound(`namespace "${cmd.name}"`);
  if (remaining.length > 0) {
    throw failedPrecondition(`namespace "${cmd.name}" must be empty, but it still has ${remaining.join(", ")}`);
  }
  const first = leasesPastEvent(cmd, leases, leaseResources);
  if (first.length > 0) return { result: { leasesFirst: first } };
  // containerd publishes the delete under the deleted namespace itself.
  return {
    event: {
      namespace: cmd.name,
      topic: "/namespaces/delete",
      typeName: TYPE.NamespaceDelete,
      payload: {
        name: cmd.name,
        ...(leases.length ? { ck_leases: leases } : {}),
        ...(leaseResources.some((l) => l.resources.length) ? { ck_lease_resources: leaseResources.filter((l) => l.resources.length) } : {}),
      },
    },
    result: undefined,
  };
}

/**
 * The leases to delete before the namespace so that the rest fit in its delete event (none:
 * they all fit): the biggest first, so the fewest go in events of their own.
 */
function leasesPastEvent(cmd: DeleteNamespace, leases: string[], leaseResources: { id: string; resources: LeaseResource[] }[]): string[] {
  if (cmd.maxEventBytes === undefined || leases.length === 0) return [];
  const held = new Map(leaseResources.map((l) => [l.id, l.resources]));
  const costs = leases.map((id) => ({ id, cost: namespaceLeaseCost({ id, resources: held.get(id) ?? [] }) }));
  let total = costs.reduce((sum, l) => sum + l.cost, 0);
  const budget = cmd.maxEventBytes - ENVELOPE_ROOM - stringCost(cmd.name);
  if (total <= budget) return [];
  costs.sort((a, b) => b.cost - a.cost || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const first: string[] = [];
  for (const l of costs) {
    if (total <= budget) break;
    first.push(l.id);
    total -= l.cost;
  }
  return first;
}

/** How many times a namespace delete deletes leases too big for its event before it gives up. */
const NAMESPACE_DELETE_ROUNDS = 8;
/** How many leases a namespace delete deletes at once (each may let go of its resources 64 at a time). */
const LEASE_DELETES_AT_ONCE = 16;

/**
 * Deletes a namespace (Namespaces.Delete), its leases with it: when they do not fit in one
 * NamespaceDelete, the biggest are deleted first through deleteLease (which itself lets go of
 * what one LeaseDelete cannot list), 16 at a time, and the delete is decided again. A lease
 * deleted meanwhile by another caller is no error. Writers adding leases as fast as they go
 * are not chased for ever: after 8 rounds the delete is Aborted (its leases so far are gone).
 */
export async function deleteNamespace(sequencer: Pick<Sequencer, "submit" | "maxEventBytes">, cmd: DeleteNamespace): Promise<void> {
  const maxEventBytes = sequencer.maxEventBytes;
  for (let round = 1; ; round++) {
    const r = await sequencer.submit(namespaceHandlers.delete({ ...cmd, maxEventBytes }));
    if (r === undefined) return;
    if (round === NAMESPACE_DELETE_ROUNDS) {
      throw aborted(`namespace "${cmd.name}": its leases still did not fit in one delete event after ${round} rounds of deleting the biggest (other writers keep adding them): try again`);
    }
    const ids = r.leasesFirst;
    for (let i = 0; i < ids.length; i += LEASE_DELETES_AT_ONCE) {
      await Promise.all(
        ids.slice(i, i + LEASE_DELETES_AT_ONCE).map((id) =>
          deleteLease(sequencer, { namespace: cmd.name, id }).catch((err) => {
            if (!isNotFound(err)) throw err;
            return false;
          }),
        ),
      );
    }
  }
}

function namespaceEvent(caller: string, topic: string, typeName: string, rec: NamespaceRecord): EventDraft {
  return { namespace: caller || rec.name, topic, typeName, payload: { name: rec.name, labels: rec.labels } };
}

// --- handlers: load, decide (through the sequencer's view)

export const namespaceHandlers = {
  create: (cmd: CreateNamespace) => (view: StateView) =>
    decideCreateNamespace(cmd, view.get<NamespaceRecord>(keys.namespace(cmd.name))),
  update: (cmd: UpdateNamespace) => (view: StateView) =>
    decideUpdateNamespace(cmd, view.get<NamespaceRecord>(keys.namespace(cmd.name))),
  delete: (cmd: DeleteNamespace) => async (view: StateView) => {
    // A name that is no identifier is never stored: not found, as containerd answers it.
    if (!isIdentifier(cmd.name)) return decideDeleteNamespace(cmd, undefined, []);
    const remaining: string[] = [];
    for (const [what, prefix] of namespaceContents(cmd.name)) {
      if (!(await view.hasAny([prefix]))) continue;
      // Blobs this host does not list (only other ckd on the log hold them) are named so:
      // they leave with those hosts' deletes or collections (read only when the delete fails).
      const elsewhere = what === "blobs" && cmd.host !== undefined && !view.scan<BlobRecord>(prefix).some(([, b]) => blobHeldBy(b, cmd.host));
      remaining.push(elsewhere ? "blobs (held in other hosts' content stores only)" : what);
    }
    // Snapshots by snapshotter, as containerd names them (read only when the delete fails).
    const snapshots = keys.snapshotsPrefix(cmd.name);
    if (await view.hasAny([snapshots])) {
      const names = new Set(view.scan(snapshots).map(([k]) => k.slice(snapshots.length).split("\u0000", 1)[0]!));
      for (const sn of [...names].sort()) remaining.push(`snapshots on "${sn}" snapshotter`);
    }
    const leases = view.scan<{ id: string }>(keys.leasesPrefix(cmd.name)).map(([, l]) => l.id);
    const held = leases.map((id) => ({ id, resources: view.scan<LeaseResource>(keys.leaseResourcesPrefix(cmd.name, id)).map(([, r]) => r) }));
    return decideDeleteNamespace(cmd, view.get<NamespaceRecord>(keys.namespace(cmd.name)), remaining, leases, held);
  },
};

function namespaceContents(ns: string): [string, string][] {
  return [
    ["images", keys.imagesPrefix(ns)],
    ["blobs", keys.blobsPrefix(ns)],
    ["containers", keys.containersPrefix(ns)],
  ];
}
