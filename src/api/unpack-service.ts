// ck's extension service ck.services.unpack.v1: ckd unpacks a layer into a committed snapshot
// itself (docs/snapshots.md, "Sharing"), so the result is verified and can be shared with
// other namespaces. The layer blob must be visible in the caller's namespace; it is read from
// the content store (whose commits verified its digest) and applied in the diff worker pool.
import type * as grpc from "@grpc/grpc-js";
import type { Queries } from "../projections/queries.js";
import type { ContentStore } from "../content/types.js";
import type { SnapshotStore } from "../snapshots/store.js";
import { applyLayerFile, applyLayerToMounts } from "../diff/apply.js";
import { validateDigest } from "../commands/validation.js";
import { cancelSignal, LEASE_HEADER, metadataValue, namespaceOf, unary } from "./grpc.js";
import type { Sequencer } from "../commands/sequencer.js";
import { labelUncompressed } from "./content-service.js";


export interface UnpackDeps {
  queries: Queries;
  store: ContentStore;
  snapshots: SnapshotStore;
  sequencer: Sequencer;
  /** After a content label changed (the GC's hook). */
  afterUpdate?: () => void;
}

export function unpackService(d: UnpackDeps): grpc.UntypedServiceImplementation {
  return {
    Apply: unary(async (call) => {
      const ns = namespaceOf(call);
      const r = call.request;
      const layer = r.layer ?? {};
      const digest = String(layer.digest ?? "");
      validateDigest("layer.digest", digest);
      // A caller that goes away ends a wait for the parent (listened for before any await).
      const gone = cancelSignal(call);
      // Even a share needs the layer in the caller's namespace: nobody gets files by chain ID alone.
      await d.queries.getBlob(ns, digest);
      const file = d.store.path(digest);
      const mediaType = layer.media_type || undefined;
      const res = await d.snapshots.unpack(
        ns,
        String(r.snapshotter ?? ""),
        {
          layer: digest,
          diffId: String(r.diff_id ?? ""),
          parent: String(r.parent ?? ""),
          lease: metadataValue(call, LEASE_HEADER) || undefined,
          waitParent: Boolean(r.wait_parent),
          signal: gone,
        },
        (target) =>
          "mounts" in target
            ? applyLayerToMounts(target.mounts, { file }, { mediaType, sharedInodes: true })
            : applyLayerFile(target.dir, file, { mediaType, whiteouts: target.whiteouts }),
      );
      let labelled = false;
      if (r.label_uncompressed && res.status !== "exists") {
        await labelUncompressed(d, ns, digest, String(r.diff_id ?? ""));
        labelled = true;
      }
      return { chain_id: res.chainId, status: res.status, verified: res.verified, labelled };
    }),
  };
}
