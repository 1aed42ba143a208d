// The images aggregate: create, update under a field mask (labels, labels.<k>, target,
// annotations, annotations.<k>), delete. decide* are pure; handlers load and call them.
import { alreadyExists, invalidArgument, notFound } from "../errdefs/errdefs.js";
import { imageRecord, keys, TYPE, descriptor, type ImageRecord, type Timestamp, type Descriptor } from "../projections/views.js";
import { validateImage, validateFieldMask, validateLabels, IMAGE_FIELD_MASK } from "./validation.js";
import type { Decision, StateView } from "./sequencer.js";
import type { EventDraft } from "../emitter/envelope.js";
import { applyLabelMask, dropEmpty, maskedLabels } from "./masks.js";

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

/**
 * A target as containerd's store writes it: annotations with no value are not stored (its
 * writeMap skips them), whichever way they came (create, a whole update, the `target` path).
 */
function storedTarget<T extends Descriptor | undefined>(target: T): T {
  return (target ? descriptor({ ...target, annotations: dropEmpty(target.annotations) }) : target) as T;
}

export function decideCreateImage(cmd: CreateImage, current: ImageRecord | undefined): Decision<ImageRecord> {
  // Checked as given (a label with no value too, as containerd checks it), stored without empties.
  validateImage(cmd.image);
  const input = { ...cmd.image, labels: dropEmpty(cmd.image.labels), target: storedTarget(cmd.image.target) };
  checkImageName(input.name);
  if (current) throw alreadyExists(`image "${input.name}"`);
  const rec = imageRecord({ ...input, created_at: cmd.now, updated_at: cmd.now });
  return { event: imageEvent(cmd.namespace, "/images/create", TYPE.ImageCreate, rec), result: rec };
}

export function decideUpdateImage(cmd: UpdateImage, current: ImageRecord | undefined): Decision<ImageRecord> {
  const name = cmd.image.name;
  if (!name) throw invalidArgument("image name is required for update");
  // containerd's store looks the image up before it reads the mask.
  if (!current) throw notFound(`image "${name}"`);
  validateFieldMask(`image "${name}"`, cmd.paths, IMAGE_FIELD_MASK);
  let next: ImageInput;
  validateLabels(maskedLabels(cmd.image.labels ?? {}, cmd.paths, "labels"), "image.Labels");
  if (cmd.paths.length === 0) {
    next = { name, labels: dropEmpty(cmd.image.labels), target: storedTarget(cmd.image.target) };
  } else {
    // The `target` path with no target in the request: validateImage says what is missing.
    let target: Descriptor | undefined = current.target;
    if (cmd.paths.includes("target")) target = storedTarget(cmd.image.target);
    const annotations = applyLabelMask(target?.annotations ?? {}, cmd.image.target?.annotations ?? {}, cmd.paths, "annotations");
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
  // As containerd's store: an empty name (or one with NUL, never stored) is not found.
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
