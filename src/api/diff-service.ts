// containerd v1 Diff service: Apply reads a layer blob from the content store and unpacks it
// onto a snapshot's mounts (answering with the uncompressed digest, the diff_id, that ctr
// compares with the image config); Diff writes the changes between two mount sets as a layer
// into the content store. Mounts must be this daemon's own snapshot directories.
import type * as grpc from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import type { Queries } from "../projections/queries.js";
import type { ContentStore } from "../content/types.js";
import { ingestRef, type NamespacedBlobs } from "../content/namespaced.js";
import { applyLayerToMounts } from "../diff/apply.js";
import { writeDiffFromMounts } from "../diff/diff.js";
import { Digester } from "../diff/digest.js";
import { checkMountsUnder, type SnapshotStore } from "../snapshots/store.js";
import { mountsFromApi } from "../snapshots/mount.js";
import { invalidArgument, isClass, notImplemented } from "../errdefs/errdefs.js";
import { validateDigest } from "../commands/validation.js";
import { commitLabels } from "../commands/content.js";
import { cancelSignal, LEASE_HEADER, metadataValue, namespaceOf, unary } from "./grpc.js";
import { UNCOMPRESSED_LABEL } from "../commands/gc.js";
import { commitBytes, commitInNamespace, labelUncompressed } from "./content-service.js";
import type { Sequencer } from "../commands/sequencer.js";

export const MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar";
export const MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";

export interface DiffDeps {
  sequencer: Sequencer;
  queries: Queries;
  store: ContentStore;
  blobs: NamespacedBlobs;
  /** Directories under which Apply may write and Diff may read (the snapshotters' roots). */
  roots: () => string[];
  /** The snapshots whose mounts Apply and Diff take (SnapshotStore.checkClientMounts). */
  snapshots: Pick<SnapshotStore, "checkClientMounts">;
  /** After a content label changed (the GC's hook). */
  afterUpdate?: () => void;
}

export function diffService(d: DiffDeps): grpc.UntypedServiceImplementation {
  return {
    Apply: unary(async (call) => {
      // A caller that goes away stops the apply before its next entry (listened for at once).
      const gone = cancelSignal(call);
      const ns = namespaceOf(call);
      const desc = call.request.diff ?? {};
      const digest = String(desc.digest ?? "");
      validateDigest("diff.digest", digest);
      const mounts = mountsFromApi(call.request.mounts);
      checkMountsUnder(mounts, d.roots());
      await d.snapshots.checkClientMounts(ns, mounts, ["Active"], "mounts");
      // The layer must be visible in the caller's namespace, not merely on disk.
      await d.queries.getBlob(ns, digest);
      // Applied in a worker thread (reading the blob there): the event loop stays free.
      const applied = await applyLayerToMounts(mounts, { file: d.store.path(digest) }, { mediaType: desc.media_type || undefined, signal: gone });
      return { applied: { media_type: MEDIA_LAYER_TAR, digest: applied.digest, size: applied.size, annotations: {} } };
    }),
    Diff: unary(async (call) => {
      // A client that goes away ends the walk and its ingest; nothing is committed for it.
      const gone = cancelSignal(call);
      const ns = namespaceOf(call);
      const r = call.request;
      const mediaType = String(r.media_type || MEDIA_LAYER_GZIP);
      // containerd's walking differ's words, which ctr prints.
      if (mediaType !== MEDIA_LAYER_GZIP && mediaType !== MEDIA_LAYER_TAR) throw notImplemented(`unsupported diff media type: ${mediaType}`);
      const compressed = mediaType === MEDIA_LAYER_GZIP;
      // Bad labels are refused before a byte is written (the commit would refuse them only
      // once the blob was in place).
      commitLabels(r.labels ?? {});
      const left = mountsFromApi(r.left);
      const right = mountsFromApi(r.right);
      if (right.length === 0) throw invalidArgument("right mounts must not be empty");
      if (left.length > 0) checkMountsUnder(left, d.roots());
      checkMountsUnder(right, d.roots());
      if (left.length > 0) await d.snapshots.checkClientMounts(ns, left, ["Active", "View"], "left mounts");
      await d.snapshots.checkClientMounts(ns, right, ["Active", "View"], "right mounts");
      const ref = ingestRef(ns, r.ref || `diff-${randomBytes(8).toString("hex")}`);
      const lease = metadataValue(call, LEASE_HEADER) || undefined;
      const writer = await d.store.writer({ ref, lease });
      let failed = true;
      try {
        if (writer.offset > 0) await writer.truncate(0);
        const sink = ingestSink(writer);
        // The layer's walk and its way into the ingest fail together (a file changed under the
        // walk, the disk full, the ingest aborted): both are awaited, neither left unhandled.
        const out = mediaType === MEDIA_LAYER_GZIP ? createGzip() : new Digester();
        const [walked, stored] = await Promise.allSettled([
          writeDiffFromMounts(left.length ? left : undefined, right, out),
          pipeline(out, sink, { signal: gone }),
        ]);
        gone.throwIfAborted();
        if (walked.status === "rejected") throw walked.reason;
        if (stored.status === "rejected") throw stored.reason;
        const applied = walked.value;
        // As containerd's walking differ: a compressed layer is labelled with its uncompressed
        // digest (its diff_id); an uncompressed one is not (its own digest is its diff_id).
        const labels = compressed ? { ...(r.labels ?? {}), [UNCOMPRESSED_LABEL]: applied.digest } : { ...(r.labels ?? {}) };
        // The bytes into place and the namespace's commit under the digest's one lock.
        let existed = false;
        const info = await d.blobs.locked(writer.digest(), async () => {
          const blob = await commitBytes(d, writer, "", 0);
          // Already there: leased all the same, as containerd's commit does; the labels asked
          // for are not applied (a commit that did not happen), as in containerd.
          await commitInNamespace(d, d.blobs.commitLocked.bind(d.blobs), ns, blob, labels, lease).catch((err) => {
            if (!isClass(err, "AlreadyExists")) throw err;
            existed = true;
          });
          return blob;
        });
        // Already there without the uncompressed label (containerd's differ sets it then).
        if (existed && compressed && !(await d.queries.getBlob(ns, info.digest)).labels?.[UNCOMPRESSED_LABEL]) {
          await labelUncompressed(d, ns, info.digest, applied.digest);
        }
        failed = false;
        return { diff: { media_type: mediaType, digest: info.digest, size: info.size, annotations: {} } };
      } finally {
        await writer.close().catch(() => undefined);
        // An ingest ckd named itself is nobody's to resume (containerd's walking differ aborts it).
        if (failed && !r.ref) await d.store.abort(ref).catch(() => undefined);
      }
    }),
  };
}

/** A Writable appending to an ingest, one write at a time. */
function ingestSink(w: { offset: number; write(offset: number, data: Buffer): Promise<number> }): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      w.write(w.offset, chunk).then(() => cb(), cb);
    },
  });
}

