// Blobs per namespace: the bytes are shared in the store, the metadata is the content
// aggregate's events (naming this host, the queries' host id, as the one holding the bytes). This pairs the two so that a commit into one namespace never races the
// removal of the same bytes by a delete in another, and bytes go with the last reference.
import type { Sequencer } from "../commands/sequencer.js";
import type { Queries } from "../projections/queries.js";
import { keys, type BlobRecord } from "../projections/views.js";
import type { ContentStore } from "./types.js";
import { contentHandlers } from "../commands/content.js";
import { aborted } from "../errdefs/errdefs.js";

/** Ingests are per namespace, as in containerd: the store sees `<ns>\0<ref>` (it hashes refs). */
export const ingestRef = (ns: string, ref: string): string => `${ns}\u0000${ref}`;

/** The namespace and client ref of a store ref; both undefined for a ref no client named. */
export function splitIngestRef(storeRef: string | undefined): { namespace: string | undefined; ref: string | undefined } {
  const at = storeRef === undefined ? -1 : storeRef.indexOf("\u0000");
  if (at < 0) return { namespace: undefined, ref: undefined };
  return { namespace: storeRef!.slice(0, at), ref: storeRef!.slice(at + 1) };
}

/** Serialises work per digest, in this process (one ckd owns a content root). */
class DigestLocks {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(digest: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(digest) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(digest, tail);
    void tail.then(() => {
      if (this.tails.get(digest) === tail) this.tails.delete(digest);
    });
    return next;
  }
}

export class NamespacedBlobs {
  private readonly locks = new DigestLocks();

  constructor(
    private readonly sequencer: Sequencer,
    private readonly queries: Queries,
    private readonly store: ContentStore,
  ) {}

  /** Makes bytes on disk visible in a namespace (no byte moves), if they are still there. */
  commit(ns: string, digest: string, size: number, labels: Record<string, string>, lease?: string): Promise<BlobRecord> {
    return this.locks.run(digest, () => this.commitLocked(ns, digest, size, labels, lease));
  }

  /**
   * `commit` for a caller already holding the digest's lock (`locked`): an ingest's bytes
   * moved into place and made visible under one hold, so no removal of the same bytes (a
   * delete or a collection in another namespace, the orphan sweep) falls between the two.
   */
  readonly commitLocked = async (ns: string, digest: string, size: number, labels: Record<string, string>, lease?: string): Promise<BlobRecord> => {
    if (!(await this.store.stat(digest))) throw aborted(`content ${digest} was removed meanwhile`);
    return this.sequencer.submit(contentHandlers.commit({ namespace: ns, digest, size, labels, lease, host: this.queries.host }));
  };

  /** Runs `fn` holding `digest`'s lock (what commit, delete and the sweeps take). */
  locked<T>(digest: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(digest, fn);
  }

  /** Hides a blob from a namespace; removes the bytes once no namespace refers to them. */
  async delete(ns: string, digest: string, lease?: string): Promise<void> {
    await this.sequencer.submit(contentHandlers.delete({ namespace: ns, digest, lease, host: this.queries.host }));
    await this.removeIfUnreferenced(digest);
  }

  /**
   * Deletes the bytes of a blob that no namespace refers to any more on this host (after a
   * delete or a garbage collection here); returns the bytes freed, undefined when kept or
   * already gone. `writtenBefore`: only if the bytes were last written before then.
   * `anyHost`: kept while a record of any host names them (the orphan sweep's rule).
   */
  removeIfUnreferenced(digest: string, writtenBefore?: Date, anyHost = false): Promise<number | undefined> {
    return this.locks.run(digest, async () => {
      for (const n of await this.queries.listNamespaces()) {
        if (await (anyHost ? this.queries.findBlobAnyHost(n.name, digest) : this.queries.findBlob(n.name, digest))) return undefined;
      }
      const info = await this.store.stat(digest);
      if (!info) return undefined;
      if (writtenBefore && (!info.modifiedAt || info.modifiedAt >= writtenBefore)) return undefined;
      return this.store.delete(digest).then(
        () => info.size,
        () => undefined,
      );
    });
  }

  /**
   * Removes blob files no namespace has ever been told about: bytes moved into place whose
   * commit event never followed (ckd killed between the two, or the log unreachable then).
   * Files written within `graceMs` are left alone: their commit may still be on its way. A
   * file any record names is kept, whichever hosts the record lists: a root restored without
   * its uuid (a new host id) finds its blobs recorded under the old one, and keeps them.
   */
  async sweepOrphans(graceMs: number, now = new Date()): Promise<{ removed: number; bytes: number }> {
    const referenced = new Set<string>();
    for (const n of await this.queries.listNamespaces()) {
      for (const [, b] of this.queries.scanRecords<BlobRecord>(keys.blobsPrefix(n.name))) referenced.add(b.digest);
    }
    const writtenBefore = new Date(now.getTime() - graceMs);
    const candidates: string[] = [];
    for await (const b of this.store.walk()) {
      if (referenced.has(b.digest)) continue;
      if (!b.modifiedAt || b.modifiedAt >= writtenBefore) continue;
      candidates.push(b.digest);
    }
    let removed = 0;
    let bytes = 0;
    for (const digest of candidates) {
      const freed = await this.removeIfUnreferenced(digest, writtenBefore, true);
      if (freed === undefined) continue;
      removed++;
      bytes += freed;
    }
    return { removed, bytes };
  }
}
