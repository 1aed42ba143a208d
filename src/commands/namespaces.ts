// The namespaces aggregate: create with labels, update labels under a field mask, delete only
// when empty. decide* are pure; the handlers at the bottom load state and call them.
import { alreadyExists, failedPrecondition, notFound } from "../errdefs/errdefs.js";
import type { EventDraft } from "../emitter/envelope.js";
import { keys, namespaceRecord, TYPE, type LeaseResource, type NamespaceRecord } from "../projections/views.js";
import { validateIdentifier, validateLabels, validateFieldMask, type FieldMaskRule } from "./validation.js";

/** containerd's namespaces service accepts `labels.<key>` paths only (not `labels` whole). */
const NAMESPACE_FIELD_MASK: FieldMaskRule = { fields: [], maps: ["labels"] };
import type { Decision, StateView } from "./sequencer.js";
import { applyLabelMask, maskedLabels } from "./masks.js";

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
}

export function decideCreateNamespace(cmd: CreateNamespace, current: NamespaceRecord | undefined): Decision<NamespaceRecord> {
  validateIdentifier("namespace", cmd.name);
  validateLabels(cmd.labels);
  if (current) throw alreadyExists(`namespace "${cmd.name}"`);
  const rec = namespaceRecord({ name: cmd.name, labels: dropEmpty(cmd.labels) });
  return { event: namespaceEvent(cmd.caller, "/namespaces/create", TYPE.NamespaceCreate, rec), result: rec };
}

export function decideUpdateNamespace(cmd: UpdateNamespace, current: NamespaceRecord | undefined): Decision<NamespaceRecord> {
  validateIdentifier("namespace", cmd.name);
  validateFieldMask(`namespace "${cmd.name}"`, cmd.paths, NAMESPACE_FIELD_MASK);
  validateLabels(maskedLabels(cmd.labels, cmd.paths, "labels"));
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
 * the ids of its leases, which go with it (as containerd drops the namespace's bucket).
 */
export function decideDeleteNamespace(
  cmd: DeleteNamespace,
  current: NamespaceRecord | undefined,
  remaining: string[],
  leases: string[] = [],
  leaseResources: { id: string; resources: LeaseResource[] }[] = [],
): Decision<void> {
  validateIdentifier("namespace", cmd.name);
  if (!current) throw notFound(`namespace "${cmd.name}"`);
  if (remaining.length > 0) {
    throw failedPrecondition(`namespace "${cmd.name}" must be empty, but it still has ${remaining.join(", ")}`);
  }
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

function namespaceEvent(caller: string, topic: string, typeName: string, rec: NamespaceRecord): EventDraft {
  return { namespace: caller || rec.name, topic, typeName, payload: { name: rec.name, labels: rec.labels } };
}

export function dropEmpty(labels: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels ?? {})) if (v !== "") out[k] = v;
  return out;
}

// --- handlers: load, decide (through the sequencer's view)

export const namespaceHandlers = {
  create: (cmd: CreateNamespace) => (view: StateView) =>
    decideCreateNamespace(cmd, view.get<NamespaceRecord>(keys.namespace(cmd.name))),
  update: (cmd: UpdateNamespace) => (view: StateView) =>
    decideUpdateNamespace(cmd, view.get<NamespaceRecord>(keys.namespace(cmd.name))),
  delete: (cmd: DeleteNamespace) => async (view: StateView) => {
    validateIdentifier("namespace", cmd.name);
    const remaining: string[] = [];
    for (const [what, prefix] of namespaceContents(cmd.name)) {
      if (await view.hasAny([prefix])) remaining.push(what);
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
