// containerd v1 Snapshots service: a thin adapter over the SnapshotStore (event-sourced
// metadata plus the snapshotters' directories). The snapshotter is named in every request.
import type * as grpc from "@grpc/grpc-js";
import type { SnapshotStore } from "../snapshots/store.js";
import type { SnapshotRecord } from "../projections/views.js";
import type { Mount } from "../snapshots/types.js";
import { LEASE_HEADER, maskPaths, metadataValue, namespaceOf, serverStream, unary, writeStream } from "./grpc.js";

export interface SnapshotsDeps {
  snapshots: SnapshotStore;
  /** Called after a removal (GC may now find more garbage). */
  afterDelete?: () => void;
  /** Called after label updates, which may drop references (GC counts them). */
  afterUpdate?: () => void;
}

const KIND = { View: 1, Active: 2, Committed: 3 } as const;
const LIST_BATCH = 100;

export function snapshotInfo(r: SnapshotRecord) {
  return { name: r.key, parent: r.parent, kind: KIND[r.kind], created_at: r.created_at, updated_at: r.updated_at, labels: r.labels };
}

export function apiMounts(ms: readonly Mount[]) {
  return ms.map((m) => ({ type: m.type, source: m.source, target: m.target ?? "", options: m.options }));
}

export function snapshotsService(d: SnapshotsDeps): grpc.UntypedServiceImplementation {
  const s = d.snapshots;
  const sn = (req: any) => String(req.snapshotter ?? "");
  const lease = (call: { metadata: grpc.Metadata }) => metadataValue(call, LEASE_HEADER) || undefined;
  const prepare = (readonly: boolean) =>
    unary(async (call) => {
      const ns = namespaceOf(call);
      const r = call.request;
      const mounts = await s.prepare(ns, sn(r), { key: r.key ?? "", parent: r.parent ?? "", labels: r.labels ?? {}, readonly, lease: lease(call) });
      return { mounts: apiMounts(mounts) };
    });
  return {
    Prepare: prepare(false),
    View: prepare(true),
    Mounts: unary(async (call) => ({ mounts: apiMounts(await s.mounts(namespaceOf(call), sn(call.request), call.request.key ?? "")) })),
    Commit: unary(async (call) => {
      const ns = namespaceOf(call);
      const r = call.request;
      await s.commit(ns, sn(r), { key: r.key ?? "", name: r.name ?? "", labels: r.labels ?? {}, lease: lease(call) });
      return {};
    }),
    Remove: unary(async (call) => {
      await s.remove(namespaceOf(call), sn(call.request), call.request.key ?? "", lease(call));
      d.afterDelete?.();
      return {};
    }),
    Stat: unary(async (call) => ({ info: snapshotInfo(await s.stat(namespaceOf(call), sn(call.request), call.request.key ?? "")) })),
    Update: unary(async (call) => {
      const ns = namespaceOf(call);
      const info = call.request.info ?? {};
      const rec = await s.update(ns, sn(call.request), { key: info.name ?? "", labels: info.labels ?? {}, paths: maskPaths(call.request.update_mask) });
      d.afterUpdate?.();
      return { info: snapshotInfo(rec) };
    }),
    List: serverStream(async (call) => {
      const list = await s.list(namespaceOf(call), sn(call.request), call.request.filters ?? []);
      for (let i = 0; i < list.length; i += LIST_BATCH) {
        if (call.cancelled) return;
        await writeStream(call, { info: list.slice(i, i + LIST_BATCH).map(snapshotInfo) });
      }
    }),
    Usage: unary(async (call) => s.usage(namespaceOf(call), sn(call.request), call.request.key ?? "")),
    Cleanup: unary(async (call) => {
      namespaceOf(call);
      await s.cleanup(sn(call.request));
      return {};
    }),
  };
}
