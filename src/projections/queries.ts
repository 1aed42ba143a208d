// Read-side queries over the views: Get and List per aggregate, List filtered with
// containerd's filter syntax. Reads come from the projection only.
import { notFound } from "../errdefs/errdefs.js";
import type { ProjectionDb } from "./db.js";
import { blobHeldBy, keys, type SnapshotRecord, type SnapshotIdRecord, type BlobRecord, type ContainerRecord, type ImageRecord, type LeaseRecord, type LeaseResource, type NamespaceRecord, type TaskRecord } from "./views.js";
import type { MemoEntry, RecordMemo } from "./record-memo.js";
import { parseFilters, parseFiltersRewrapped, imageFieldpath, containerFieldpath, namespaceFieldpath, blobFieldpath, labelsAdaptor, type Adaptor, type Filter } from "./filters.js";

/** Leases, as containerd's adaptLease: `id`, `labels.<key>`. */
function leaseFieldpath(l: LeaseRecord): Adaptor {
  return (fp) => {
    if (fp[0] === "id") return { value: l.id, present: l.id.length > 0 };
    if (fp[0] === "labels") return labelsAdaptor(l.labels)(fp.slice(1));
    return { value: "", present: false };
  };
}

/** Snapshots, as containerd's adaptSnapshot: `kind` (active, view, committed), `name`, `parent`, `labels.<key>`. */
function snapshotFieldpath(s: SnapshotRecord): Adaptor {
  return (fp) => {
    switch (fp[0]) {
      case "kind":
        return { value: s.kind.toLowerCase(), present: true };
      // Always present, empty or not (containerd's adaptSnapshot): `parent==""` finds the roots.
      case "name":
        return { value: s.key, present: true };
      case "parent":
        return { value: s.parent, present: true };
      case "labels":
        return labelsAdaptor(s.labels)(fp.slice(1));
      default:
        return { value: "", present: false };
    }
  };
}

/** Records a List cache holds at most, over all its prefixes (the memo's own bound). */
const MAX_CACHED_RECORDS = 20_000;

interface CachedList {
  /** The prefix's generation when the entries were read. */
  gen: number;
  entries: MemoEntry[];
}

export class Queries {
  /**
   * The records under a prefix as last read, reused while the projection's generation for
   * that prefix is unchanged: a List that repeats (a poller, a CLI) reads nothing from
   * RocksDB, only the filters run again.
   */
  private readonly lists = new Map<string, CachedList>();
  private cachedRecords = 0;

  /**
   * `host`: this ckd's host id. Content answers for the blobs this host's store holds only
   * (BlobRecord.hosts); undefined (a tool reading a projection) answers for every host's.
   */
  constructor(
    private readonly db: ProjectionDb,
    readonly host?: string,
  ) {}

  async getNamespace(name: string): Promise<NamespaceRecord> {
    const rec = await this.db.get(keys.namespace(name));
    if (!rec) throw notFound(`namespace "${name}"`);
    return rec as NamespaceRecord;
  }

  async listNamespaces(filters: string[] = []): Promise<NamespaceRecord[]> {
    return this.list(keys.namespacesPrefix, filters, (f, r: NamespaceRecord) => f.match(namespaceFieldpath(r)));
  }

  async getImage(ns: string, name: string): Promise<ImageRecord> {
    const rec = name.includes("\u0000") ? undefined : await this.db.get(keys.image(ns, name));
    if (!rec) throw notFound(`image "${name}"`);
    return rec as ImageRecord;
  }

  async listImages(ns: string, filters: string[] = []): Promise<ImageRecord[]> {
    return this.list(keys.imagesPrefix(ns), filters, (f, r: ImageRecord) => f.match(imageFieldpath(r)), parseFiltersRewrapped);
  }

  /**
   * Images.List's elements already encoded: records whose stored bytes are unchanged since an
   * earlier List come from the memo, neither decoded nor encoded again.
   */
  encodedImages(ns: string, filters: string[], memo: RecordMemo, encode: (r: ImageRecord) => Buffer): Buffer[] {
    return this.listEncoded(keys.imagesPrefix(ns), filters, (f, r: ImageRecord) => f.match(imageFieldpath(r)), memo, encode, parseFiltersRewrapped);
  }

  async getContainer(ns: string, id: string): Promise<ContainerRecord> {
    const rec = id.includes("\u0000") ? undefined : await this.db.get(keys.container(ns, id));
    if (!rec) throw notFound(`container "${id}" in namespace "${ns}"`);
    return rec as ContainerRecord;
  }

  async listContainers(ns: string, filters: string[] = []): Promise<ContainerRecord[]> {
    return this.list(keys.containersPrefix(ns), filters, (f, r: ContainerRecord) => f.match(containerFieldpath(r)), parseFiltersRewrapped);
  }

  /** Containers.List's elements already encoded (see encodedImages). */
  encodedContainers(ns: string, filters: string[], memo: RecordMemo, encode: (r: ContainerRecord) => Buffer): Buffer[] {
    return this.listEncoded(keys.containersPrefix(ns), filters, (f, r: ContainerRecord) => f.match(containerFieldpath(r)), memo, encode, parseFiltersRewrapped);
  }

  async getBlob(ns: string, digest: string): Promise<BlobRecord> {
    const rec = await this.findBlob(ns, digest);
    if (!rec) throw notFound(`content digest ${digest}`);
    return rec;
  }

  /**
   * The blob's record, or undefined: for callers to whom absence is the usual answer (every
   * new blob's write asks), without an error made and caught per call.
   */
  async findBlob(ns: string, digest: string): Promise<BlobRecord | undefined> {
    const rec = (await this.db.get(keys.blob(ns, digest))) as BlobRecord | undefined;
    return rec && blobHeldBy(rec, this.host) ? rec : undefined;
  }

  /** The blob's record whichever hosts hold it (the orphan sweep's question: does any record name the bytes?). */
  async findBlobAnyHost(ns: string, digest: string): Promise<BlobRecord | undefined> {
    return (await this.db.get(keys.blob(ns, digest))) as BlobRecord | undefined;
  }

  /** Content in a namespace; filters on `digest`, `size` and `labels.<k>` as containerd's. */
  async listBlobs(ns: string, filters: string[] = []): Promise<BlobRecord[]> {
    const all = await this.list(keys.blobsPrefix(ns), filters, (f, r: BlobRecord) => f.match(blobFieldpath(r)));
    return this.host === undefined ? all : all.filter((r) => blobHeldBy(r, this.host));
  }

  async getLease(ns: string, id: string): Promise<LeaseRecord> {
    const rec = !id || id.includes("\u0000") ? undefined : await this.db.get(keys.lease(ns, id));
    if (!rec) throw notFound(`lease "${id}"`);
    return rec as LeaseRecord;
  }

  /** The resources a lease holds, sorted by type, then id (NotFound without the lease). */
  async listLeaseResources(ns: string, id: string): Promise<LeaseResource[]> {
    await this.getLease(ns, id);
    return [...this.scanRecords<LeaseResource>(keys.leaseResourcesPrefix(ns, id))].map(([, r]) => r);
  }

  /** Leases in a namespace; filters on `id` and `labels.<k>` as containerd's. */
  async listLeases(ns: string, filters: string[] = []): Promise<LeaseRecord[]> {
    return this.list(keys.leasesPrefix(ns), filters, (f, r: LeaseRecord) => f.match(leaseFieldpath(r)), parseFiltersRewrapped);
  }

  /** A container's task, or undefined when it has none. */
  async findTask(ns: string, id: string): Promise<TaskRecord | undefined> {
    if (!id || id.includes("\u0000")) return undefined;
    return (await this.db.get(keys.task(ns, id))) as TaskRecord | undefined;
  }

  /** The tasks of a namespace, by container id. */
  listTasks(ns: string): TaskRecord[] {
    return [...this.scanRecords<TaskRecord>(keys.tasksPrefix(ns))].map(([, r]) => r);
  }

  async getSnapshot(ns: string, sn: string, key: string): Promise<SnapshotRecord> {
    const rec = !key || key.includes("\u0000") ? undefined : await this.db.get(keys.snapshot(ns, sn, key));
    if (!rec) throw notFound(`snapshot ${key} does not exist`);
    return rec as SnapshotRecord;
  }

  /** One snapshot record, read synchronously (parent chains); undefined when absent. */
  snapshotSync(ns: string, sn: string, key: string): SnapshotRecord | undefined {
    if (!key || key.includes("\u0000")) return undefined;
    return this.db.getSync(keys.snapshot(ns, sn, key)) as SnapshotRecord | undefined;
  }

  /** One lease record, read synchronously (GC's second look); undefined when absent. */
  leaseSync(ns: string, id: string): LeaseRecord | undefined {
    if (!id || id.includes("\u0000")) return undefined;
    return this.db.getSync(keys.lease(ns, id)) as LeaseRecord | undefined;
  }

  /** A snapshotter's snapshots in a namespace, filtered as containerd's Walk. */
  async listSnapshots(ns: string, sn: string, filters: string[] = []): Promise<SnapshotRecord[]> {
    return this.list(keys.snapshotterPrefix(ns, sn), filters, (f, r: SnapshotRecord) => f.match(snapshotFieldpath(r)));
  }

  /** Who owns one on-disk id of a snapshotter (undefined: nobody), read synchronously. */
  snapshotIdSync(sn: string, id: string): SnapshotIdRecord | undefined {
    if (!id || id.includes("\u0000")) return undefined;
    return this.db.getSync(keys.snapshotId(sn, id)) as SnapshotIdRecord | undefined;
  }

  /** Every on-disk id of a snapshotter that some namespace's snapshot owns. */
  snapshotIds(sn: string): Map<string, SnapshotIdRecord> {
    const out = new Map<string, SnapshotIdRecord>();
    const prefix = keys.snapshotIdsPrefix(sn);
    for (const [k, v] of this.db.scan(prefix)) out.set(k.slice(prefix.length), v as SnapshotIdRecord);
    return out;
  }

  /** Every record under a key prefix, in key order (whole-namespace reads such as GC's). */
  scanRecords<T>(prefix: string): Iterable<[string, T]> {
    return this.db.scan(prefix) as Iterable<[string, T]>;
  }

  private listEncoded<R>(prefix: string, filters: string[], match: (f: Filter, r: R) => boolean, memo: RecordMemo, encode: (r: R) => Buffer, parse = parseFilters): Buffer[] {
    const filter = parse(filters);
    const out: Buffer[] = [];
    for (const e of this.entriesUnder(prefix, memo)) {
      if (match(filter, e.record as R)) out.push((e.derived ??= encode(e.record as R)));
    }
    return out;
  }

  /** Every record under a prefix, from the List cache while its generation holds. */
  private entriesUnder(prefix: string, memo: RecordMemo): MemoEntry[] {
    const gen = this.db.generation(prefix);
    const known = this.lists.get(prefix);
    if (known && known.gen === gen) return known.entries;
    const entries: MemoEntry[] = [];
    for (const [k, raw] of this.db.scanRaw(prefix)) entries.push(memo.entry(k, raw));
    if (known) this.cachedRecords -= known.entries.length;
    if (this.cachedRecords + entries.length > MAX_CACHED_RECORDS) {
      this.lists.clear();
      this.cachedRecords = 0;
    }
    if (entries.length <= MAX_CACHED_RECORDS) {
      this.lists.set(prefix, { gen, entries });
      this.cachedRecords += entries.length;
    } else this.lists.delete(prefix);
    return entries;
  }

  private async list<R>(prefix: string, filters: string[], match: (f: Filter, r: R) => boolean, parse = parseFilters): Promise<R[]> {
    // Parse first: a bad filter is InvalidArgument before any read.
    const filter = parse(filters);
    const out: R[] = [];
    for (const [, v] of this.db.scan(prefix)) {
      if (match(filter, v as R)) out.push(v as R);
    }
    return out;
  }
}
