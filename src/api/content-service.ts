// containerd v1 Content service: blob metadata per namespace from the projection (commands
// through the sequencer), bytes from the shared store, and the Write state machine that ctr's
// client drives (STAT, lock-step WRITEs, COMMIT), as ../shared/CTR-COMPAT.md section 2 records.
import type * as grpc from "@grpc/grpc-js";
import type { Sequencer } from "../commands/sequencer.js";
import type { Queries } from "../projections/queries.js";
import type { ContentStore, IngestWriter, IngestStatus } from "../content/types.js";
import { commitLabels, contentHandlers } from "../commands/content.js";
import { ingestRef, NamespacedBlobs, splitIngestRef } from "../content/namespaced.js";
import { aborted, isClass, invalidArgument, outOfRange, alreadyExists, failedPrecondition, unavailable, CkError } from "../errdefs/errdefs.js";
import { parseFilters } from "../projections/filters.js";
import { validateDigest } from "../commands/validation.js";
import { nowTimestamp, toTimestamp } from "../emitter/envelope.js";
import { failStream, requests, maskPaths, metadataValue, namespaceOf, LEASE_HEADER, serverStream, unary, writeStream } from "./grpc.js";
import type { BlobRecord } from "../projections/views.js";
import { leaseHandlers } from "../commands/leases.js";
import { UNCOMPRESSED_LABEL } from "../commands/gc.js";

export interface ContentDeps {
  sequencer: Sequencer;
  queries: Queries;
  store: ContentStore;
  /** Shared with the garbage collector (one lock per digest); created here when absent. */
  blobs?: NamespacedBlobs;
  /** Called after a content delete (GC may now find more garbage). */
  afterDelete?: () => void;
  /** Called after label updates, which may drop references (GC counts them). */
  afterUpdate?: () => void;
}

const READ_CHUNK = 1 << 20;
const LIST_BATCH = 100;
const WRITE_ACTION = { STAT: 0, WRITE: 1, COMMIT: 2 } as const;

const userRef = (ref: string) => splitIngestRef(ref).ref ?? ref;

const ts = toTimestamp;

function info(r: BlobRecord) {
  return { digest: r.digest, size: r.size, created_at: r.created_at, updated_at: r.updated_at, labels: r.labels };
}

function status(s: IngestStatus) {
  return { ref: userRef(s.ref), offset: s.offset, total: s.total, expected: s.expected ?? "", started_at: ts(s.startedAt), updated_at: ts(s.updatedAt) };
}

export function contentService(d: ContentDeps): grpc.UntypedServiceImplementation {
  const blobs = d.blobs ?? new NamespacedBlobs(d.sequencer, d.queries, d.store);
  return {
    Info: unary(async (call) => {
      const ns = namespaceOf(call);
      validateDigest("digest", call.request.digest ?? "");
      return { info: info(await d.queries.getBlob(ns, call.request.digest)) };
    }),
    Update: unary(async (call) => {
      const ns = namespaceOf(call);
      const i = call.request.info ?? {};
      const rec = await d.sequencer.submit(
        contentHandlers.update({ namespace: ns, digest: i.digest ?? "", labels: i.labels ?? {}, paths: maskPaths(call.request.update_mask), now: nowTimestamp(), host: d.queries.host }),
      );
      d.afterUpdate?.();
      return { info: info(rec) };
    }),
    List: serverStream(async (call) => {
      const ns = namespaceOf(call);
      const list = await d.queries.listBlobs(ns, call.request.filters ?? []);
      for (let i = 0; i < list.length; i += LIST_BATCH) {
        if (call.cancelled) return;
        await writeStream(call, { info: list.slice(i, i + LIST_BATCH).map(info) });
      }
    }),
    Delete: unary(async (call) => {
      const ns = namespaceOf(call);
      const digest = call.request.digest ?? "";
      // The call's lease lets go of the digest too, as containerd's Delete (removeContentLease).
      await blobs.delete(ns, digest, metadataValue(call, LEASE_HEADER) || undefined);
      d.afterDelete?.();
      return {};
    }),
    Read: serverStream(async (call) => {
      const ns = namespaceOf(call);
      const digest = call.request.digest ?? "";
      validateDigest("digest", digest);
      await d.queries.getBlob(ns, digest);
      // As containerd's Read: a negative offset reads from 0, one past the end is OutOfRange.
      const offset = Math.max(0, Number(call.request.offset ?? 0));
      const want = Number(call.request.size ?? 0);
      const reader = await d.store.readerAt(digest);
      try {
        if (offset > reader.size) throw outOfRange(`read past object length ${reader.size} bytes: offset ${offset} of ${digest}`);
        const end = want > 0 ? Math.min(reader.size, offset + want) : reader.size;
        for (let at = offset; at < end; ) {
          if (call.cancelled) return;
          const data = await reader.read(at, Math.min(READ_CHUNK, end - at));
          if (data.length === 0) break;
          await writeStream(call, { offset: at, data });
          at += data.length;
        }
      } finally {
        await reader.close();
      }
    }),
    Status: unary(async (call) => {
      const ns = namespaceOf(call);
      if (!call.request.ref) throw invalidArgument("ref must not be empty");
      return { status: status(await d.store.status(ingestRef(ns, call.request.ref))) };
    }),
    ListStatuses: unary(async (call) => {
      const ns = namespaceOf(call);
      const filter = parseFilters(call.request.filters ?? []);
      const mine = (await d.store.listStatuses()).filter((s) => s.ref.startsWith(`${ns}\u0000`)).map(status);
      return {
        statuses: mine.filter((s) =>
          // containerd's adaptor for statuses: `ref` (its first path element), nothing else.
          filter.match((path) => (path[0] === "ref" ? { value: s.ref, present: true } : { value: "", present: false })),
        ),
      };
    }),
    Abort: unary(async (call) => {
      const ns = namespaceOf(call);
      if (!call.request.ref) throw invalidArgument("ref must not be empty");
      await d.store.abort(ingestRef(ns, call.request.ref));
      return {};
    }),
    Write: (call: grpc.ServerDuplexStream<any, any>) => {
      void runWrite(d, call, blobs).catch((err) => {
        if (!call.cancelled) failStream(call, err);
      });
    },
  };
}

export type CommitMetadata = (ns: string, digest: string, size: number, labels: Record<string, string>, lease?: string) => Promise<unknown>;

/**
 * containerd leases content it finds already committed before answering AlreadyExists, in the
 * same transaction: false when the namespace no longer has it (a GC collected it since it was
 * seen), so the caller writes or commits it after all. Without a lease nothing holds it.
 */
async function leaseExisting(d: Pick<ContentDeps, "sequencer" | "queries">, ns: string, lease: string | undefined, digest: string): Promise<boolean> {
  if (!lease) return true;
  return d.sequencer.submit(leaseHandlers.leaseContentIfPresent({ namespace: ns, id: lease, resource: { id: digest, type: "content" } }, d.queries.host));
}

/**
 * Before an ingest is taken for `expected`: AlreadyExists (the blob leased first) when this
 * namespace has it, or the blob on disk when another namespace committed the same bytes (of
 * size `total`, when given), which this one can commit without a byte; else undefined.
 */
export async function sharedBlob(
  d: Pick<ContentDeps, "sequencer" | "queries" | "store">,
  ns: string,
  lease: string | undefined,
  expected: string,
  total: number,
): Promise<{ digest: string; size: number } | undefined> {
  const visible = await d.queries.findBlob(ns, expected);
  // Gone between the look and the lease: written (or committed from disk) as a new one.
  if (visible && (await leaseExisting(d, ns, lease, expected))) throw alreadyExists(`content ${expected}`);
  const onDisk = await d.store.stat(expected);
  return onDisk && (total === 0 || total === onDisk.size) ? onDisk : undefined;
}

/**
 * Labels a compressed layer's blob in `ns` with its uncompressed digest (containerd.io/
 * uncompressed: its diff_id), as containerd's differ and unpacker do, then tells the GC.
 */
export async function labelUncompressed(d: { sequencer: Sequencer; queries: Pick<Queries, "host">; afterUpdate?: () => void }, ns: string, digest: string, diffId: string): Promise<void> {
  await d.sequencer.submit(contentHandlers.update({ namespace: ns, digest, labels: { [UNCOMPRESSED_LABEL]: diffId }, paths: [`labels.${UNCOMPRESSED_LABEL}`], now: nowTimestamp(), host: d.queries.host }));
  d.afterUpdate?.();
}

/**
 * Commits an ingest's bytes (size and digest verified); the same bytes already on disk count
 * as committed. Call it holding the digest's lock (NamespacedBlobs.locked), with the
 * namespace's commit that follows, so the bytes cannot go in between.
 */
export async function commitBytes(d: Pick<ContentDeps, "store">, writer: IngestWriter, expected: string, total: number): Promise<{ digest: string; size: number }> {
  const written = writer.digest();
  try {
    return await writer.commit({ size: total || undefined, expected: expected || undefined });
  } catch (err) {
    // The same bytes are already on disk (another namespace or writer): as good as ours,
    // and this namespace still gets its metadata commit.
    if (!isClass(err, "AlreadyExists")) throw err;
    const s = await d.store.stat(expected || written);
    // Never AlreadyExists (a client's "done") for bytes that are not there.
    if (!s) throw aborted(`content ${expected || written} was removed meanwhile: write it again`);
    return s;
  }
}

/** An ingest's bytes into place and into the namespace, under the digest's one lock. */
export function commitWritten(
  d: Pick<ContentDeps, "store" | "sequencer" | "queries">,
  blobs: NamespacedBlobs,
  writer: IngestWriter,
  expected: string,
  total: number,
  ns: string,
  labels: Record<string, string>,
  lease: string | undefined,
): Promise<{ digest: string; size: number }> {
  return blobs.locked(expected || writer.digest(), async () => {
    const blob = await commitBytes(d, writer, expected, total);
    await commitInNamespace(d, blobs.commitLocked, ns, blob, labels, lease);
    return blob;
  });
}

/**
 * The namespace's content-commit event for bytes on disk (AlreadyExists leases the blob
 * first). A blob collected between the commit's answer and the lease is committed again.
 */
export async function commitInNamespace(
  d: Pick<ContentDeps, "sequencer" | "queries">,
  commitMetadata: CommitMetadata,
  ns: string,
  blob: { digest: string; size: number },
  labels: Record<string, string>,
  lease: string | undefined,
): Promise<void> {
  for (let tries = 1; ; tries++) {
    try {
      await commitMetadata(ns, blob.digest, blob.size, labels, lease);
      return;
    } catch (err) {
      if (!isClass(err, "AlreadyExists") || tries >= 3 || (await leaseExisting(d, ns, lease, blob.digest))) throw err;
    }
  }
}

/**
 * What WRITE and COMMIT both do first (containerd's contentserver treats them alike): `data`
 * at `offset`, which must be the current offset (else OutOfRange) or 0, which drops the bytes
 * held and starts over (IngestWriter.write). Returns the offset reached.
 */
async function writeData(ref: string, writer: IngestWriter | undefined, shared: { digest: string; size: number } | undefined, req: any): Promise<number> {
  const offset = Number(req.offset ?? 0);
  const data: Buffer = req.data ?? Buffer.alloc(0);
  if (!shared) return writer!.write(offset, data);
  // A blob already on disk is complete: no byte can be added to it. (containerd would first
  // copy it into an ingest of its own; ck has none to truncate, so offset 0 without data leaves
  // the blob as it is and a COMMIT commits it.)
  if (data.length > 0) throw outOfRange(`write to ${ref}: content ${shared.digest} is already complete`);
  if (offset !== 0 && offset !== shared.size) throw outOfRange(`write @${offset} must occur at current offset ${shared.size}`);
  return shared.size;
}

/** One Write stream: lock-step, one response per request, errors end the stream. */
async function runWrite(d: ContentDeps, call: grpc.ServerDuplexStream<any, any>, blobs: NamespacedBlobs): Promise<void> {
  const commitMetadata: CommitMetadata = blobs.commit.bind(blobs);
  const ns = namespaceOf(call);
  const lease = metadataValue(call, LEASE_HEADER) || undefined;
  let writer: IngestWriter | undefined;
  /** Set when the expected blob is already on disk: the client may commit without bytes. */
  let shared: { digest: string; size: number } | undefined;
  let ref = "";
  let total = 0;
  let expected = "";
  /** When this stream began: the times of a shared blob's STAT. */
  const started = new Date();
  try {
    for await (const req of requests<any>(call)) {
      if (!ref) {
        if (!req.ref) throw invalidArgument("first message of a write must carry ref");
        ref = req.ref;
        // As containerd's writer: a write under a lease that does not exist fails at once.
        if (lease) await d.queries.getLease(ns, lease);
        total = Number(req.total ?? 0);
        expected = req.expected ?? "";
        if (expected) {
          validateDigest("expected", expected);
          shared = await sharedBlob(d, ns, lease, expected, total);
        }
        // A client's upload: past the page cache (a download ckd unpacks next is not).
        if (!shared) {
          try {
            writer = await d.store.writer({ ref: ingestRef(ns, ref), expected: expected || undefined, total: total || undefined, lease, writeThrough: true });
          } catch (err) {
            if (!expected || !isClass(err, "AlreadyExists")) throw err;
            // The blob is on disk after all: another namespace committed it since the look
            // above (then this one commits it without a byte), or it is not `total` bytes.
            shared = await sharedBlob(d, ns, lease, expected, total);
            if (!shared) {
              const onDisk = await d.store.stat(expected);
              if (!onDisk) throw unavailable(`content ${expected} was removed meanwhile: write it again`);
              throw failedPrecondition(`content ${expected} is ${onDisk.size} bytes, not the ${total} given as total`);
            }
          }
        }
      } else if (req.ref && req.ref !== ref) {
        throw invalidArgument(`ref changed within a write: "${req.ref}" after "${ref}"`);
      }
      const action = Number(req.action ?? 0);
      if (Number(req.total ?? 0) > 0) total = Number(req.total);
      if (req.expected) expected = req.expected;
      if (action === WRITE_ACTION.STAT) {
        const offset = shared ? shared.size : writer!.offset;
        await writeStream(call, {
          action: WRITE_ACTION.STAT,
          offset,
          total: shared ? shared.size : total,
          digest: shared ? shared.digest : writer!.digest(),
          // The ingest's times, as containerd answers its writer's status (and Content.Status
          // does): a resumed ingest began when its first writer began it. A blob committed
          // elsewhere has no ingest: the stream's start, as containerd's namespaced writer.
          started_at: ts(shared ? started : writer!.startedAt),
          updated_at: ts(shared ? started : writer!.updatedAt),
        });
      } else if (action === WRITE_ACTION.WRITE) {
        const offset = await writeData(ref, writer, shared, req);
        // The ingest's total with every answer, as containerd's server sends its status's.
        await writeStream(call, { action: WRITE_ACTION.WRITE, offset, total: shared ? shared.size : writer!.total, digest: shared ? shared.digest : writer!.digest() });
      } else if (action === WRITE_ACTION.COMMIT) {
        // Bad labels fail before a byte is written or moved (containerd's metadata store checks
        // them before its backend commits): no blob file is left, the ingest stays for a retry.
        const labels = commitLabels(req.labels ?? {});
        // A COMMIT is a WRITE first, as in containerd's server: its data (a client may send the
        // last bytes with it) is part of what is committed, and its offset is checked.
        await writeData(ref, writer, shared, req);
        let committed: { digest: string; size: number };
        const ingestTotal = shared ? shared.size : writer!.total;
        if (shared) {
          if (expected && expected !== shared.digest) throw new CkError("FailedPrecondition", `unexpected commit digest ${shared.digest}, expected ${expected}: failed precondition`);
          if (total && total !== shared.size) throw failedPrecondition(`${JSON.stringify(ref)} failed size validation: ${shared.size} != ${total}`);
          committed = shared;
          await commitInNamespace(d, commitMetadata, ns, committed, labels, lease);
          // As containerd: what an earlier try left under this ref goes once the blob is
          // committed (not another client's upload under way on it).
          await d.store.abort(ingestRef(ns, ref), { unlessWritten: true }).catch(() => undefined);
        } else {
          const w = writer!;
          writer = undefined;
          committed = await commitWritten(d, blobs, w, expected, total, ns, labels, lease).catch(async (err) => {
            // Not spent (its checks failed before the bytes moved): held for a retry, unlocked.
            await w.close().catch(() => undefined);
            throw err;
          });
        }
        await writeStream(call, { action: WRITE_ACTION.COMMIT, offset: committed.size, total: ingestTotal, digest: committed.digest });
        call.end();
        return;
      } else {
        throw invalidArgument(`write action ${action} is not STAT, WRITE or COMMIT`);
      }
    }
    call.end();
  } finally {
    await writer?.close().catch(() => undefined);
  }
}
