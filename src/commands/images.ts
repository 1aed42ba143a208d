// The images aggregate: create, update under a field mask (labels, labels.<k>, target,
// annotations, annotations.<k>), delete. decide* are pure; handlers load and call them.
import { alreadyExists, invalidArgument, notFound } from "../errdefs/errdefs.js";
import { imageRecord, keys, TYPE, descriptor, type ImageRecord, type Timestamp, type Descriptor } from "../projections/views.js";
import { validateImage, validateFieldMask, IMAGE_FIELD_MASK } from "./validation.js";
import type { Decision, StateView } from "./sequencer.js";
import type { EventDraft } from "../emitter/envelope.js";
import { applyLabelMask } from "./masks.js";
import { dropEmpty } from "./masks.js";

/** What a request may set: the record without the timestamps ckd assigns. */
export type ImageInput = Omit<ImageRecord, "created_at" | "updated_at">;

export interface CreateImage {
  namespace: string;
  image: ImageInput;
  now: Timestamp;
}

export interface UpdateImage {
  namespace: string;
  image: ImageInput;
  paths: string[];
  now: Timestamp;
}

export interface DeleteImage {
  namespace: string;
  name: string;
}

export function checkImageName(name: string): void {
  if (name.includes("\u0000")) throw invalidArgument(`image name ${JSON.stringify(name)} must not contain NUL`);
}

/** containerd's image event (name, labels) carrying the whole record as ck's extension. */
function imageEvent(namespace: string, topic: string, typeName: string, rec: ImageRecord): EventDraft {
  return { namespace, topic, typeName, payload: { name: rec.name, labels: rec.labels, ck_image: rec } };
}

export function decideCreateImage(cmd: CreateImage, current: ImageRecord | undefined): Decision<ImageRecord> {
  const input = { ...cmd.image, labels: dropEmpty(cmd.image.labels) };
  validateImage(input);
  checkImageName(input.name);
  if (current) throw alreadyExists(`image "${input.name}"`);
  const rec = imageRecord({ ...input, created_at: cmd.now, updated_at: cmd.now });
  return { event: imageEvent(cmd.namespace, "/images/create", TYPE.ImageCreate, rec), result: rec };
}

export function decideUpdateImage(cmd: UpdateImage, current: ImageRecord | undefined): Decision<ImageRecord> {
  const name = cmd.image.name;
  if (!name) throw invalidArgument("image name is required for update");
  checkImageName(name);
  validateFieldMask(`image "${name}"`, cmd.paths, IMAGE_FIELD_MASK);
  if (!current) throw notFound(`image "${name}"`);
  let next: ImageInput;
  if (cmd.paths.length === 0) {
    next = { name, labels: dropEmpty(cmd.image.labels), target: cmd.image.target };
  } else {
    let target: Descriptor = current.target;
    if (cmd.paths.includes("target")) target = cmd.image.target;
    const annotations = applyLabelMask(target.annotations, cmd.image.target?.annotations ?? {}, cmd.paths, "annotations");
    next = {
      name,
      labels: applyLabelMask(current.labels, cmd.image.labels, cmd.paths, "labels"),
      target: descriptor({ ...target, annotations }),
    };
  }
  validateImage(next);
  const rec = imageRecord({ ...next, created_at: current.created_at, updated_at: cmd.now });
  return { event: imageEvent(cmd.namespace, "/images/update", TYPE.ImageUpdate, rec), result: rec };
}

export function decideDeleteImage(cmd: DeleteImage, current: ImageRecord | undefined): Decision<void> {
  if (!cmd.name) throw invalidArgument("image name is required for delete");
  checkImageName(cmd.name);
  if (!current) throw notFound(`image "${cmd.name}"`);
  return {
    event: { namespace: cmd.namespace, topic: "/images/delete", typeName: TYPE.ImageDelete, payload: { name: cmd.name } },
    result: undefined,
  };
}

const currentImage = (view: StateView, ns: string, name: string) =>
  name.includes("\u0000") ? undefined : view.get<ImageRecord>(keys.image(ns, name));

export const imageHandlers = {
  create: (cmd: CreateImage) => (view: StateView) =>
    decideCreateImage(cmd, currentImage(view, cmd.namespace, cmd.image.name)),
  update: (cmd: UpdateImage) => (view: StateView) =>
    decideUpdateImage(cmd, currentImage(view, cmd.namespace, cmd.image.name)),
  delete: (cmd: DeleteImage) => (view: StateView) => decideDeleteImage(cmd, currentImage(view, cmd.namespace, cmd.name)),
};
