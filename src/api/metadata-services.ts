// containerd v1 Namespaces, Images and Containers services: thin adapters that decode a
// request, run a command through the sequencer or a query on the projection, and encode.
import type * as grpc from "@grpc/grpc-js";
import type { Sequencer } from "../commands/sequencer.js";
import type { Queries } from "../projections/queries.js";
import { deleteNamespace, namespaceHandlers } from "../commands/namespaces.js";
import { imageHandlers, type ImageInput } from "../commands/images.js";
import { containerHandlers, type ContainerInput } from "../commands/containers.js";
import { nowTimestamp } from "../emitter/envelope.js";
import { descriptor, type ContainerRecord } from "../projections/views.js";
import { maskPaths, namespaceOf, optionalNamespaceOf, serverStream, unary, writeStream } from "./grpc.js";
import { isClass } from "../errdefs/errdefs.js";
import { isIdentifier } from "../commands/validation.js";
import { RecordMemo } from "../projections/record-memo.js";
import { loadProtos, repeatedMessages } from "../protos/protos.js";

export interface MetadataDeps {
  sequencer: Sequencer;
  queries: Queries;
  /** Called after deletions that may leave garbage (images rm --sync waits on it). */
  afterDelete?: (sync: boolean) => Promise<void>;
  /** Called after updates that may drop references (GC counts them). */
  afterUpdate?: () => void;
  /** Called after a namespace's deletion (what ckd keeps on disk per namespace goes). */
  namespaceDeleted?: (name: string) => Promise<void>;
}

export function namespacesService(d: MetadataDeps): grpc.UntypedServiceImplementation {
  return {
    // As containerd's store, whose Labels of a namespace without a bucket is empty: a namespace
    // nothing holds is answered with no labels, not NotFound (containerd's Go client asks for
    // the default namespace's labels when it connects).
    Get: unary(async (call) => {
      // Nor does it validate the name: any name (empty, not an identifier) is answered so.
      const name = call.request.name ?? "";
      if (!isIdentifier(name)) return { namespace: { name, labels: {} } };
      const found = await d.queries.getNamespace(name).catch((err) => {
        if (isClass(err, "NotFound")) return undefined;
        throw err;
      });
      return { namespace: found ?? { name, labels: {} } };
    }),
    List: unary(async (call) => ({ namespaces: await d.queries.listNamespaces(filterList(call.request.filter)) })),
    Create: unary(async (call) => {
      const n = call.request.namespace ?? {};
      const rec = await d.sequencer.submit(
        namespaceHandlers.create({ caller: optionalNamespaceOf(call) ?? "", name: n.name ?? "", labels: n.labels ?? {} }),
      );
      return { namespace: rec };
    }),
    Update: unary(async (call) => {
      const n = call.request.namespace ?? {};
      const rec = await d.sequencer.submit(
        namespaceHandlers.update({
          caller: optionalNamespaceOf(call) ?? "",
          name: n.name ?? "",
          labels: n.labels ?? {},
          paths: maskPaths(call.request.update_mask),
        }),
      );
      return { namespace: rec };
    }),
    Delete: unary(async (call) => {
      const name = call.request.name ?? "";
      await deleteNamespace(d.sequencer, { name, host: d.queries.host });
      await d.namespaceDeleted?.(name);
      return {};
    }),
  };
}

function imageInput(img: any): ImageInput {
  return { name: img?.name ?? "", labels: img?.labels ?? {}, target: descriptor(img?.target) };
}

/**
 * An encoder of one message type for records already in the shape protobufjs encodes. Its
 * writer's bytes (a fresh Buffer under Node) are kept as they are, not copied once more.
 */
function encoderOf<R>(typeName: string, shape: (r: R) => object = (r) => r as object): (r: R) => Buffer {
  const t = loadProtos().type(typeName);
  return (r) => {
    const bytes = t.encode(shape(r)).finish();
    return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

export function imagesService(d: MetadataDeps): grpc.UntypedServiceImplementation {
  // List replies are framed from memoised per-image encodings (ListImagesResponse.images = 1).
  const memo = new RecordMemo();
  const encode = encoderOf("containerd.services.images.v1.Image");
  return {
    // An empty name is not found, as in containerd's store.
    Get: unary(async (call) => ({ image: await d.queries.getImage(namespaceOf(call), call.request.name ?? "") })),
    List: unary(async (call) => repeatedMessages(1, d.queries.encodedImages(namespaceOf(call), call.request.filters ?? [], memo, encode))),
    Create: unary(async (call) => {
      const ns = namespaceOf(call);
      const rec = await d.sequencer.submit(
        imageHandlers.create({ namespace: ns, image: imageInput(call.request.image), now: nowTimestamp() }),
      );
      return { image: rec };
    }),
    Update: unary(async (call) => {
      const ns = namespaceOf(call);
      const rec = await d.sequencer.submit(
        imageHandlers.update({
          namespace: ns,
          image: imageInput(call.request.image),
          paths: maskPaths(call.request.update_mask),
          now: nowTimestamp(),
        }),
      );
      d.afterUpdate?.();
      return { image: rec };
    }),
    Delete: unary(async (call) => {
      const ns = namespaceOf(call);
      await d.sequencer.submit(imageHandlers.delete({ namespace: ns, name: call.request.name ?? "" }));
      await d.afterDelete?.(Boolean(call.request.sync));
      return {};
    }),
  };
}

function containerInput(c: any): ContainerInput {
  return {
    id: c?.id ?? "",
    labels: c?.labels ?? {},
    image: c?.image ?? "",
    runtime: { name: c?.runtime?.name ?? "", options: c?.runtime?.options ?? null },
    spec: c?.spec ?? null,
    snapshotter: c?.snapshotter ?? "",
    snapshot_key: c?.snapshot_key ?? "",
    extensions: c?.extensions ?? {},
  };
}

/** Records keep `null` for absent Any fields; the wire wants them left out. */
function containerMessage(r: ContainerRecord) {
  return {
    ...r,
    runtime: { name: r.runtime.name, options: r.runtime.options ?? undefined },
    spec: r.spec ?? undefined,
  };
}

export function containersService(d: MetadataDeps): grpc.UntypedServiceImplementation {
  // ListContainersResponse.containers = 1, framed from memoised per-container encodings.
  const memo = new RecordMemo();
  const encode = encoderOf("containerd.services.containers.v1.Container", containerMessage);
  return {
    Get: unary(async (call) => ({
      container: containerMessage(await d.queries.getContainer(namespaceOf(call), call.request.id ?? "")),
    })),
    List: unary(async (call) => repeatedMessages(1, d.queries.encodedContainers(namespaceOf(call), call.request.filters ?? [], memo, encode))),
    ListStream: serverStream(async (call) => {
      const list = await d.queries.listContainers(namespaceOf(call), call.request.filters ?? []);
      for (const c of list) {
        if (call.cancelled) return;
        await writeStream(call, { container: containerMessage(c) });
      }
    }),
    Create: unary(async (call) => {
      const ns = namespaceOf(call);
      const rec = await d.sequencer.submit(
        containerHandlers.create({ namespace: ns, container: containerInput(call.request.container), now: nowTimestamp() }),
      );
      return { container: containerMessage(rec) };
    }),
    Update: unary(async (call) => {
      const ns = namespaceOf(call);
      const rec = await d.sequencer.submit(
        containerHandlers.update({
          namespace: ns,
          container: containerInput(call.request.container),
          paths: maskPaths(call.request.update_mask),
          now: nowTimestamp(),
        }),
      );
      d.afterUpdate?.();
      return { container: containerMessage(rec) };
    }),
    Delete: unary(async (call) => {
      const ns = namespaceOf(call);
      await d.sequencer.submit(containerHandlers.delete({ namespace: ns, id: call.request.id ?? "" }));
      await d.afterDelete?.(false);
      return {};
    }),
  };
}

/** Namespaces.List carries one filter string; an empty one matches everything. */
function filterList(f: string | undefined): string[] {
  return f ? [f] : [];
}
