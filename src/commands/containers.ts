// The containers aggregate: create, update under a field mask (labels, extensions, spec, image,
// snapshotkey; runtime and snapshotter are immutable), delete. decide* are pure.
import { alreadyExists, failedPrecondition, invalidArgument, notFound, withContext } from "../errdefs/errdefs.js";
import {
  containerRecord,
  keys,
  TYPE,
  type ContainerRecord,
  type TaskRecord,
  type Timestamp,
} from "../projections/views.js";
import { validateIdentifier, validateLabels, validateFieldMask, validateMapKey, CONTAINER_FIELD_MASK } from "./validation.js";
import type { Decision, StateView } from "./sequencer.js";
import { applyLabelMask, applyMapMask } from "./masks.js";
import { dropEmpty } from "./masks.js";

/** What a request may set: the record without the timestamps ckd assigns. */
export type ContainerInput = Omit<ContainerRecord, "created_at" | "updated_at">;

export interface CreateContainer {
  namespace: string;
  container: ContainerInput;
  now: Timestamp;
}
export interface UpdateContainer {
  namespace: string;
  container: ContainerInput;
  paths: string[];
  now: Timestamp;
}
export interface DeleteContainer {
  namespace: string;
  id: string;
}


/** containerd's validateContainer, field names as its messages give them (`containers.Labels`). */
export function validateContainer(c: ContainerInput): void {
  validateIdentifier("container.ID", c.id);
  for (const k of Object.keys(c.extensions ?? {})) {
    if (k === "") throw invalidArgument("container.Extension keys must not be zero-length");
    validateMapKey("container.Extensions", k);
  }
  validateLabels(c.labels ?? {}, "containers.Labels");
  if (!c.runtime?.name) throw invalidArgument("container.Runtime.Name must be set");
  if (!c.spec || !c.spec.type_url) throw invalidArgument("container.Spec must be set");
  if (c.snapshot_key && !c.snapshotter) {
    throw invalidArgument("container.Snapshotter must be set if container.SnapshotKey is set");
  }
}

/** validateContainer, its error led by `context` as containerd's store leads it. */
function validated(context: string, c: ContainerInput): void {
  try {
    validateContainer(c);
  } catch (err) {
    throw withContext(context, err);
  }
}

function containerEvent(ns: string, topic: string, typeName: string, rec: ContainerRecord) {
  return {
    namespace: ns,
    topic,
    typeName,
    payload: {
      id: rec.id,
      image: rec.image,
      runtime: { name: rec.runtime.name, options: rec.runtime.options ?? undefined },
      ...(topic === "/containers/update" ? { labels: rec.labels, snapshot_key: rec.snapshot_key } : {}),
      ck_container: rec,
    },
  };
}

export function decideCreateContainer(cmd: CreateContainer, current: ContainerRecord | undefined): Decision<ContainerRecord> {
  const input = { ...cmd.container, labels: dropEmpty(cmd.container.labels) };
  validated("create container failed validation", input);
  if (current) throw alreadyExists(`container "${input.id}"`);
  const rec = containerRecord({ ...input, created_at: cmd.now, updated_at: cmd.now });
  return { event: containerEvent(cmd.namespace, "/containers/create", TYPE.ContainerCreate, rec), result: rec };
}

export function decideUpdateContainer(cmd: UpdateContainer, current: ContainerRecord | undefined): Decision<ContainerRecord> {
  const req = cmd.container;
  if (!req.id) throw invalidArgument("must specify a container id");
  // containerd's store looks the container up first: a missing one (an id that is no
  // identifier is never stored) is NotFound whatever the mask says.
  if (!current) throw notFound(`cannot update container "${req.id}" in namespace "${cmd.namespace}"`);
  validateFieldMask(`"${req.id}"`, cmd.paths, CONTAINER_FIELD_MASK);
  let paths = cmd.paths;
  if (paths.length === 0) {
    paths = [...CONTAINER_FIELD_MASK.fields];
    if (current.snapshotter !== (req.snapshotter ?? "")) throw invalidArgument("container.Snapshotter field is immutable");
    if (current.runtime.name !== (req.runtime?.name ?? "")) throw invalidArgument("container.Runtime.Name field is immutable");
  }
  const next: ContainerInput = {
    id: req.id,
    labels: applyLabelMask(current.labels, req.labels ?? {}, paths, "labels"),
    image: paths.includes("image") ? req.image : current.image,
    runtime: current.runtime,
    spec: paths.includes("spec") ? req.spec : current.spec,
    snapshotter: current.snapshotter,
    snapshot_key: paths.includes("snapshotkey") ? req.snapshot_key : current.snapshot_key,
    extensions: applyMapMask(current.extensions, req.extensions ?? {}, paths, "extensions"),
  };
  validated("update failed validation", next);
  const rec = containerRecord({ ...next, created_at: current.created_at, updated_at: cmd.now });
  return { event: containerEvent(cmd.namespace, "/containers/update", TYPE.ContainerUpdate, rec), result: rec };
}

/** `task`: the container's task, if it has one: its rootfs is the container's snapshot. */
export function decideDeleteContainer(cmd: DeleteContainer, current: ContainerRecord | undefined, task?: TaskRecord): Decision<void> {
  // As containerd's store: what is not stored (an id that is no identifier never is) is NotFound,
  // which ctr's rm takes as done.
  if (!current) throw notFound(`cannot delete container "${cmd.id}" in namespace "${cmd.namespace}"`);
  if (task) throw failedPrecondition(`container "${cmd.id}" has a ${task.status.toLowerCase()} task: delete the task first`);
  return {
    event: { namespace: cmd.namespace, topic: "/containers/delete", typeName: TYPE.ContainerDelete, payload: { id: cmd.id } },
    result: undefined,
  };
}

const currentContainer = (view: StateView, ns: string, id: string) =>
  id.includes("\u0000") ? undefined : view.get<ContainerRecord>(keys.container(ns, id));

export const containerHandlers = {
  create: (cmd: CreateContainer) => (view: StateView) =>
    decideCreateContainer(cmd, currentContainer(view, cmd.namespace, cmd.container.id)),
  update: (cmd: UpdateContainer) => (view: StateView) =>
    decideUpdateContainer(cmd, currentContainer(view, cmd.namespace, cmd.container.id)),
  delete: (cmd: DeleteContainer) => (view: StateView) =>
    decideDeleteContainer(cmd, currentContainer(view, cmd.namespace, cmd.id), cmd.id.includes("\u0000") ? undefined : view.get<TaskRecord>(keys.task(cmd.namespace, cmd.id))),
};
