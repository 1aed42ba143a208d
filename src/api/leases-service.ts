// containerd v1 Leases service and ck's GC extension service: thin adapters over the leases
// commands, the projection's queries and the GC scheduler.
import type * as grpc from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import type { Sequencer } from "../commands/sequencer.js";
import type { Queries } from "../projections/queries.js";
import { deleteLease, leaseHandlers } from "../commands/leases.js";
import { nowTimestamp } from "../emitter/envelope.js";
import type { LeaseRecord } from "../projections/views.js";
import { namespaceOf, unary } from "./grpc.js";
import type { GcScheduler } from "./gc-scheduler.js";
import type { IngestManager } from "../content/types.js";
import { ingestRef, splitIngestRef } from "../content/namespaced.js";
import { failedPrecondition, invalidArgument, isClass } from "../errdefs/errdefs.js";
import { gcHandlers } from "../commands/gc.js";

export interface LeasesDeps {
  sequencer: Sequencer;
  queries: Queries;
  gc: GcScheduler;
  /** Ingests remember the lease they were written under: ListResources shows them as `ingests`. */
  ingests?: IngestManager;
}

/** containerd's leases.WithRandomID: `<nanoseconds of now>-<3 random bytes, url-safe base64>`
 * (four characters, as `ctr leases create` prints them). */
export function randomLeaseId(): string {
  const nanos = (Date.now() % 1000) * 1_000_000 + Number(process.hrtime.bigint() % 1_000_000n);
  return `${nanos}-${randomBytes(3).toString("base64url")}`;
}

function lease(r: LeaseRecord) {
  return { id: r.id, created_at: r.created_at, labels: r.labels };
}

export function leasesService(d: LeasesDeps): grpc.UntypedServiceImplementation {
  return {
    Create: unary(async (call) => {
      const ns = namespaceOf(call);
      const id = call.request.id || randomLeaseId();
      const rec = await d.sequencer.submit(leaseHandlers.create({ namespace: ns, id, labels: call.request.labels ?? {}, now: nowTimestamp() }));
      return { lease: lease(rec) };
    }),
    Delete: unary(async (call) => {
      const ns = namespaceOf(call);
      await deleteLease(d.sequencer, { namespace: ns, id: call.request.id ?? "" });
      await d.gc.afterDelete(Boolean(call.request.sync));
      return {};
    }),
    List: unary(async (call) => ({ leases: (await d.queries.listLeases(namespaceOf(call), call.request.filters ?? [])).map(lease) })),
    AddResource: unary(async (call) => {
      const ns = namespaceOf(call);
      await d.sequencer.submit(leaseHandlers.addResource({ namespace: ns, id: call.request.id ?? "", resource: call.request.resource ?? {} }));
      return {};
    }),
    DeleteResource: unary(async (call) => {
      const ns = namespaceOf(call);
      const id = call.request.id ?? "";
      const resource = call.request.resource ?? {};
      await d.sequencer.submit(leaseHandlers.deleteResource({ namespace: ns, id, resource }));
      // An ingest written under the lease is held by it too: that hold goes as well.
      if (resource.type === "ingests" && d.ingests) {
        await d.ingests.releaseLease(ingestRef(ns, resource.id), id).catch((err) => {
          if (!isClass(err, "NotFound")) throw err;
        });
      }
      // A resource no longer leased may be garbage now, as containerd marks the db dirty.
      d.gc.trigger();
      return {};
    }),
    ListResources: unary(async (call) => {
      const ns = namespaceOf(call);
      const id = call.request.id ?? "";
      const resources = await d.queries.listLeaseResources(ns, id);
      const named = new Set(resources.filter((r) => r.type === "ingests").map((r) => r.id));
      for (const s of (await d.ingests?.listStatuses()) ?? []) {
        const { namespace, ref } = splitIngestRef(s.ref);
        if (namespace !== ns || ref === undefined || named.has(ref) || !s.leases.includes(id)) continue;
        resources.push({ id: ref, type: "ingests" });
      }
      return { resources };
    }),
  };
}

/**
 * ck.services.gc.v1.GC: a collection on demand, answered with what it removed; a host gone for
 * good released from the blob records (`host`: this ckd's own id, which it refuses to release).
 */
export function gcService(d: { gc: GcScheduler; sequencer: Sequencer; queries: Queries; host: string }): grpc.UntypedServiceImplementation {
  return {
    ReleaseHost: unary(async (call) => {
      const host = String(call.request.host ?? "");
      if (!host) throw invalidArgument("host: a ckd's uuid must be given");
      if (host === d.host) throw failedPrecondition(`host ${host}: this ckd's own (its uuid); release a host from another ckd on the log, once it is gone for good`);
      const namespaces: { namespace: string; blobs: number }[] = [];
      for (const { name } of await d.queries.listNamespaces()) {
        let blobs = 0;
        for (let more = true; more; ) {
          const r = await d.sequencer.submit(gcHandlers.releaseHost({ namespace: name, host, maxEventBytes: d.sequencer.maxEventBytes }));
          blobs += r.digests.length;
          more = r.more && r.digests.length > 0;
        }
        if (blobs) namespaces.push({ namespace: name, blobs });
      }
      return { namespaces };
    }),
    Collect: unary(async () => {
      const r = await d.gc.collect({ orphans: true });
      return {
        namespaces: r.namespaces.map((n) => ({ ...n, snapshots: n.snapshots ?? 0 })),
        bytes_freed: r.bytesFreed,
        blobs_removed: r.blobsRemoved,
        orphans_removed: r.orphansRemoved ?? 0,
        ingests_removed: r.ingestsRemoved,
        snapshot_dirs_removed: r.snapshotDirsRemoved ?? 0,
      };
    }),
  };
}
