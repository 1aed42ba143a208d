// Fetch and push, client side, as containerd's client does it: the registry is spoken to by
// this process, the daemon only through the containerd API (Leases, Content, Images), so this
// works unchanged against any containerd-API daemon.
//
// Fetch: under a lease, the root is resolved, manifests are walked (an index narrowed to the
// wanted platforms), and every object is written with Content.Write under ref
// `<kind>-<digest>`: a blob this namespace has is skipped, one the daemon holds for another
// namespace is committed without a byte (STAT answers offset = total), a partial ingest
// resumes where it stopped. Manifests are committed with containerd's GC labels towards their
// children, every object with `containerd.io/distribution.source.<host>`. Then the image is
// registered (Create, or Update when it exists) and the lease dropped.
//
// Against a daemon that offers ck.services.fetch.v1 (ckd), the bytes of each object are
// downloaded by the daemon instead (same ref, lock, resume and commit; docs/distribution.md);
// an Unimplemented answer, or `inDaemon: false`, keeps them in this process.
import { LABEL_MAX_BYTES } from "../commands/validation.js";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import type { ApiClient } from "./client.js";
import { ApiContent, type ContentInfo, type RemoteWriter } from "./api-content.js";
import { type JobStatus, type ProgressJob, type ProgressSink } from "./progress.js";
import { CkError, isAlreadyExists, isClass, isNotFound } from "../errdefs/errdefs.js";
import { formatReference, type ImageReference } from "../remotes/reference.js";
import { sha256Digest, type Descriptor, type Platform } from "../remotes/types.js";
import { children, gcLabels, isIndex, isManifest, MAX_MANIFEST_BYTES, MediaTypes, parseManifest, type ParsedManifest } from "../remotes/manifest.js";
import { manifestsFor, pushedManifest, selectManifests } from "../remotes/platform.js";
import { Slots } from "../remotes/slots.js";
import { bytesCanNeverCommit, type Registry, type RegistryAccess } from "../remotes/registry.js";

export const LEASE_HEADER = "containerd-lease";
const EXPIRE_LABEL = "containerd.io/gc.expire";
const SOURCE_LABEL = "containerd.io/distribution.source.";

/**
 * The label naming the repositories a blob came from on a registry, keyed as containerd's
 * client keys it: by host name without the port (`127.0.0.1:5000` -> `127.0.0.1`, `[::1]:5000`
 * -> `::1`), so that ck and ctr find each other's labels for cross-repository mounts.
 */
export function sourceLabelKey(domain: string): string {
  const host = new URL(`dummy://${domain}`).hostname;
  return SOURCE_LABEL + (host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host);
}
const GC_ROOT_LABEL = "containerd.io/gc.root";
/** Objects a fetch has open at once (asking the daemon, waiting for a download slot). */
const OPEN_AT_ONCE = 8;

export interface FetchOptions {
  /** Platforms to keep from an index; empty = every platform. */
  platforms: Platform[];
  /** Blobs transferred at once (default 3, as containerd). */
  concurrency?: number;
  progress: ProgressSink;
  /** Image labels to set. */
  labels?: Record<string, string>;
  /** Register the image record after the fetch (default true). */
  register?: boolean;
  /**
   * Let the daemon download blobs itself when it offers ck.services.fetch.v1 (default true);
   * false, or a daemon without it, writes them from this process over Content.Write.
   */
  inDaemon?: boolean;
  /**
   * Runs under the fetch's lease alongside the blob transfers, once the manifests are known
   * (pull's unpack, which takes each layer as soon as it is in); the image is registered after
   * both. `progress.committed(digest)` resolves once that blob is in the content store.
   */
  whileFetching?: (metadata: Record<string, string>, target: Descriptor, progress: FetchProgress) => Promise<void>;
}

/** What a fetch has so far, for work that runs alongside it. */
export interface FetchProgress {
  /** The manifests and indexes the fetch parsed, by digest. */
  readonly manifests: ReadonlyMap<string, ParsedManifest>;
  /** Resolves once the blob is in the content store; rejects if the fetch of it failed. */
  committed(digest: string): Promise<void>;
  /** The bytes of a committed image config when the daemon sent them back (undefined otherwise). */
  configBytes(digest: string): Buffer | undefined;
  /**
   * Work left running that must end under the fetch's lease, but need not hold up the image's
   * registration (pull's label of the config): awaited after it, before the lease goes.
   */
  holdLease(work: Promise<unknown>): void;
}

export interface FetchResult {
  name: string;
  target: Descriptor;
  /** Size of every object of the fetched platforms. */
  size: number;
  /** Bytes that came from the registry. */
  transferred: number;
}

/**
 * Ref under which ctr writes an object (containerd's remotes.MakeRefKey): `<kind>-<digest>`,
 * or `<kind>-<name>@<digest>` for a descriptor annotated with a ref name. The same ref for the
 * same object is what makes two writers, ck's and ctr's, wait on one ingest lock.
 */
export function refFor(desc: Descriptor): string {
  const name = desc.annotations?.[REF_NAME_ANNOTATION];
  return `${kindOf(desc)}-${name !== undefined ? `${name}@${desc.digest}` : desc.digest}`;
}

const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";

/** images.IsKnownConfig: image configs, Docker's and OCI's, and containerd's checkpoint ones. */
const KNOWN_CONFIGS: ReadonlySet<string> = new Set([
  MediaTypes.dockerConfig,
  MediaTypes.ociConfig,
  "application/vnd.containerd.container.criu.checkpoint.criu.tar",
  "application/vnd.containerd.container.checkpoint.config.v1+proto",
]);

/** The Docker layer types images.IsLayerType knows (compared without a `+suffix`). */
const DOCKER_LAYERS: ReadonlySet<string> = new Set([MediaTypes.dockerLayer, MediaTypes.dockerLayerGzip, MediaTypes.dockerLayerForeign, MediaTypes.dockerLayerForeignGzip]);

/** What an object is by its media type, by containerd 1.6's rules for MakeRefKey. */
export function kindOf(desc: Descriptor): "index" | "manifest" | "config" | "layer" | "unknown" {
  const mt = desc.mediaType;
  if (isManifest(mt)) return "manifest";
  if (isIndex(mt)) return "index";
  if (mt.startsWith("application/vnd.oci.image.layer.") || DOCKER_LAYERS.has(mt.split("+")[0]!)) return "layer";
  if (KNOWN_CONFIGS.has(mt)) return "config";
  return "unknown";
}

/** ck.services.fetch.v1's RegistryAccess for a registry client's view of one host. */
function accessMessage(a: RegistryAccess): Record<string, unknown> {
  return {
    plain_http: a.plainHttp,
    username: a.credentials?.username ?? "",
    password: a.credentials?.password ?? "",
    identity_token: a.credentials?.identityToken ?? "",
    tls_ca: a.tls?.ca ?? [],
    tls_skip_verify: a.tls?.skipVerify ?? false,
    tls_client_cert: a.tls?.clientCert?.cert ?? "",
    tls_client_key: a.tls?.clientCert?.key ?? "",
  };
}

/**
 * Runs `fn` over items with at most `limit` at once. After a failure no further item starts;
 * the ones already running are waited for (so nothing is left writing when this settles),
 * then the first failure rejects.
 */
export async function eachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: { reason: unknown } | undefined;
  const worker = async () => {
    while (!failed && next < items.length) {
      try {
        await fn(items[next++]!);
      } catch (reason) {
        failed ??= { reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed) throw failed.reason;
}

/** `fn` over items, at most `limit` at once; the results in the items' order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  const indexes = items.map((_, i) => i);
  await eachLimit(indexes, limit, async (i) => {
    out[i] = await fn(items[i]!);
  });
  return out;
}

/** Creates a lease as ctr takes one for a pull (24 h expiry); resolves with its id. */
export async function createLease(api: ApiClient): Promise<string> {
  const id = `${process.hrtime.bigint()}-${randomBytes(2).toString("hex")}`;
  const expire = new Date(Date.now() + 24 * 3600_000).toISOString().replace(/\.\d+Z$/, "Z");
  await api.call("leases", "Create", { id, labels: { [EXPIRE_LABEL]: expire } });
  return id;
}

/** Deletes a lease (without sync), ignoring failures: it expires anyway. */
export async function dropLease(api: ApiClient, id: string): Promise<void> {
  await api.call("leases", "Delete", { id, sync: false }).catch(() => undefined);
}

/**
 * Runs `fn` under a lease, deleted at the end; `created` is a lease creation already under
 * way (started alongside other work), else one is created here.
 */
export async function withLease<T>(api: ApiClient, fn: (metadata: Record<string, string>) => Promise<T>, created?: Promise<string>): Promise<T> {
  const id = await (created ?? createLease(api));
  try {
    return await fn({ [LEASE_HEADER]: id });
  } finally {
    await dropLease(api, id);
  }
}

function toApiDescriptor(d: Descriptor) {
  return { media_type: d.mediaType, digest: d.digest, size: d.size, annotations: d.annotations ?? {} };
}

export function fromApiDescriptor(d: any): Descriptor {
  return { mediaType: d?.media_type ?? "", digest: d?.digest ?? "", size: Number(d?.size ?? 0), annotations: d?.annotations ?? {} };
}

function mergeSource(current: string | undefined, repo: string): string {
  const repos = new Set((current ?? "").split(",").filter(Boolean));
  repos.add(repo);
  return [...repos].sort().join(",");
}

class Fetcher implements FetchProgress {
  private transferred = 0;
  private size = 0;
  private readonly content: ApiContent;
  private readonly sourceKey: string;
  /** False once the daemon answered that it has no ck.services.fetch.v1 (or when told not to use it). */
  private inDaemon: boolean;
  /** Image configs the daemon sent back with their last Fetch.Blob message, digest-checked. */
  private readonly configs = new Map<string, Buffer>();
  private readonly held: Promise<unknown>[] = [];
  /** Names this fetch's Fetch.Blob calls to the daemon, which limits their downloads together. */
  private readonly downloadGroup = randomBytes(12).toString("hex");

  constructor(
    private readonly registry: Registry,
    private readonly ref: ImageReference,
    private readonly api: ApiClient,
    private readonly metadata: Record<string, string>,
    private readonly opts: FetchOptions,
  ) {
    this.content = new ApiContent(api, metadata);
    this.sourceKey = sourceLabelKey(ref.domain);
    this.inDaemon = opts.inDaemon ?? true;
    this.slots = new Slots(Math.max(1, opts.concurrency ?? 3));
  }

  /** Manifests and indexes this fetch parsed, by digest (the unpack after a pull reuses them). */
  readonly manifests = new Map<string, ParsedManifest>();
  /** Writes of manifests whose bytes were known before their children were walked. */
  private readonly manifestWrites: Promise<unknown>[] = [];
  /** Settles when each blob of the tree is in the content store (or failed). */
  private readonly blobDone = new Map<string, Promise<void>>();
  /** Downloads from this process, at most `concurrency` at once. */
  private readonly slots: Slots;

  result(): { size: number; transferred: number } {
    return { size: this.size, transferred: this.transferred };
  }

  /**
   * Fetches `root` and everything below it for the wanted platforms; `rootBytes` is the root
   * document when the resolve brought it (verified against the root's digest). Objects are
   * opened several at once (most of a warm pull is asking the daemon whether it has them);
   * only `concurrency` of them download from the registry at a time.
   */
  async fetchTree(root: Descriptor, rootBytes?: Buffer, alongside?: () => Promise<void>): Promise<void> {
    const blobs: Descriptor[] = [];
    const all: Promise<unknown>[] = [];
    try {
      await this.walk(root, blobs, rootBytes);
      const seen = new Set<string>();
      const unique = blobs.filter((d) => !seen.has(d.digest) && seen.add(d.digest));
      const settle = new Map<string, { resolve: () => void; reject: (e: unknown) => void }>();
      for (const d of unique) {
        const done = new Promise<void>((resolve, reject) => settle.set(d.digest, { resolve, reject }));
        done.catch(() => undefined); // a failure is also reported by the transfer itself
        this.blobDone.set(d.digest, done);
      }
      const fetchAll = eachLimit(unique, Math.max(this.opts.concurrency ?? 3, OPEN_AT_ONCE), (d) => {
        const s = settle.get(d.digest)!;
        settle.delete(d.digest);
        return this.fetchBlob(d, {}).then(s.resolve, (err) => {
          s.reject(err);
          throw err;
        });
      });
      // After a failure the blobs not yet begun are never fetched: whatever waits on them (an
      // unpack) learns so, rather than waiting for good.
      all.push(
        fetchAll.catch((err) => {
          for (const s of settle.values()) s.reject(err);
          throw err;
        }),
      );
      if (alongside) all.push(alongside());
    } finally {
      // Nothing is left running when this returns or throws (the lease goes next).
      all.push(...this.manifestWrites);
      const settled = await Promise.allSettled(all);
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) throw failed.reason;
    }
  }

  committed(digest: string): Promise<void> {
    return this.blobDone.get(digest) ?? Promise.reject(new CkError("NotFound", `${digest} is not part of this fetch`));
  }

  configBytes(digest: string): Buffer | undefined {
    return this.configs.get(digest);
  }

  holdLease(work: Promise<unknown>): void {
    work.catch(() => undefined); // awaited by released()
    this.held.push(work);
  }

  /** Settles once the work handed to holdLease has; rejects with the first failure. */
  async released(): Promise<void> {
    await Promise.all(this.held);
  }

  /** Manifests and indexes, depth first; collects the blobs (config, layers) under them. */
  private async walk(desc: Descriptor, blobs: Descriptor[], known?: Buffer): Promise<void> {
    if (!isIndex(desc.mediaType) && !isManifest(desc.mediaType)) {
      blobs.push(desc);
      return;
    }
    if (desc.size > MAX_MANIFEST_BYTES) {
      throw new CkError("InvalidArgument", `manifest ${desc.digest} is ${desc.size} bytes, more than the ${MAX_MANIFEST_BYTES} allowed`);
    }
    // The bytes come from the resolve, the daemon (this or another namespace) or the registry.
    const job = this.opts.progress.add(refFor(desc), desc.size);
    if (known) {
      // Parsed already: the children are walked while this document is written.
      const parsed = parseManifest(desc, known);
      this.manifests.set(desc.digest, parsed);
      const write = this.writeManifest(desc, job, parsed, known);
      write.catch(() => undefined); // awaited by fetchTree
      this.manifestWrites.push(write);
      for (const child of children(this.narrow(parsed))) await this.walk(child, blobs);
      return;
    }
    const parsed = await this.writeManifest(desc, job);
    this.manifests.set(desc.digest, parsed);
    for (const child of children(this.narrow(parsed))) await this.walk(child, blobs);
  }

  /** Writes one manifest or index (bytes known, or read from the daemon or the registry). */
  private async writeManifest(desc: Descriptor, job: ProgressJob, known?: ParsedManifest, knownBytes?: Buffer): Promise<ParsedManifest> {
    let parsed = known;
    // An index names every child, not only the platforms this fetch keeps (containerd labels
    // the children before it filters them): labels from a narrowed index would be renumbered
    // by the next fetch of another platform, and GC would take the first platform's content.
    const labels = (p: ParsedManifest) => ({ ...gcLabels(p), [this.sourceKey]: this.ref.repository });
    const readBack = async () => parseManifest(desc, await this.content.readAll(desc.digest, MAX_MANIFEST_BYTES));
    const w = await this.content.open(refFor(desc), { expected: desc.digest, total: desc.size });
    if (w === "exists") {
      parsed ??= await readBack();
      await this.ensureLabels(desc.digest, labels(parsed));
      job.update(desc.size, "exists");
    } else if (w.complete) {
      // Shared from another namespace: committed without bytes (read back here when the
      // resolve did not bring them, for the children).
      if (parsed) await w.commit(desc.size, desc.digest, labels(parsed));
      else {
        await w.commit(desc.size, desc.digest, { [this.sourceKey]: this.ref.repository });
        parsed = await readBack();
        await this.ensureLabels(desc.digest, labels(parsed));
      }
      job.update(desc.size, "done");
    } else {
      try {
        let bytes = knownBytes;
        if (!bytes) {
          bytes = await this.registry.fetchBytes(this.ref, desc);
          this.transferred += bytes.length;
          job.transferred(bytes.length);
        }
        parsed ??= parseManifest(desc, bytes);
        if (w.offset !== 0) await w.truncate();
        await w.write(bytes);
        await w.commit(desc.size, desc.digest, labels(parsed));
      } catch (err) {
        w.close();
        throw err;
      }
      job.update(desc.size, "done");
    }
    this.size += desc.size;
    return parsed;
  }

  /** An index keeps only the wanted platforms' entries (all when none are named). */
  private narrow(p: ParsedManifest): ParsedManifest {
    if (p.kind !== "index" || this.opts.platforms.length === 0) return p;
    const manifests = manifestsFor(p, this.opts.platforms);
    if (manifests.length === 0) {
      const have = p.manifests.map((m) => (m.platform ? `${m.platform.os}/${m.platform.architecture}${m.platform.variant ? "/" + m.platform.variant : ""}` : "?")).join(", ");
      throw new CkError("NotFound", `no manifest for platform ${this.opts.platforms.map((x) => `${x.os}/${x.architecture}`).join(", ")} in ${have || "an empty index"}`);
    }
    return { ...p, manifests };
  }

  /** Labels a blob that was already there, as ctr does after each object. */
  private async ensureLabels(digest: string, want: Record<string, string>): Promise<void> {
    const info = await this.content.info(digest);
    const missing: Record<string, string> = {};
    for (const [k, v] of Object.entries(want)) {
      const value = k === this.sourceKey ? mergeSource(info?.labels[k], v) : v;
      // A source label past the label limit (many repositories share the blob) is left as it
      // is, as containerd's AppendDistributionSourceLabel skips it: not a pull refused for it.
      if (k === this.sourceKey && Buffer.byteLength(k) + Buffer.byteLength(value) > LABEL_MAX_BYTES) continue;
      if (info?.labels[k] !== value) missing[k] = value;
    }
    await this.content.setLabels(digest, missing);
  }

  async fetchBlob(desc: Descriptor, extraLabels: Record<string, string>): Promise<void> {
    const job = this.opts.progress.add(refFor(desc), desc.size);
    this.size += desc.size;
    const labels = { ...extraLabels, [this.sourceKey]: this.ref.repository };
    if (this.inDaemon && (await this.fetchInDaemon(desc, labels, job))) return;
    const w = await this.content.open(refFor(desc), { expected: desc.digest, total: desc.size, onLocked: () => job.update(0, "waiting") });
    if (w === "exists") {
      await this.ensureLabels(desc.digest, labels);
      job.update(desc.size, "exists");
      return;
    }
    if (w.complete) {
      await w.commit(desc.size, desc.digest, labels);
      job.update(desc.size, "done");
      return;
    }
    let committing = false;
    try {
      const release = await this.slots.acquire();
      try {
        await this.download(desc, w, job);
      } finally {
        release();
      }
      job.update(desc.size, "committing");
      committing = true;
      await w.commit(desc.size, desc.digest, labels);
    } catch (err) {
      // As the daemon's fetch: an ingest that holds no byte, or bytes that can never commit,
      // goes, so the next try starts clean; any other stays for a resume.
      if (w.offset === 0 || bytesCanNeverCommit(err, committing)) await this.content.abort(refFor(desc)).catch(() => undefined);
      throw err;
    } finally {
      w.close();
    }
    job.update(desc.size, "done");
  }

  /**
   * The blob fetched by the daemon (ck.services.fetch.v1): same ingest ref, lock, resume and
   * commit as a Content.Write from here, without the bytes crossing this process. False when
   * the daemon does not offer it (the caller then writes the blob itself). A ref another
   * writer holds is waited on as ApiContent.open waits.
   */
  private async fetchInDaemon(desc: Descriptor, labels: Record<string, string>, job: ProgressJob): Promise<boolean> {
    const access = this.registry.accessFor(this.ref.domain);
    const request = {
      reference: formatReference(this.ref),
      blob: toApiDescriptor(desc),
      ref: refFor(desc),
      labels,
      access: accessMessage(access),
      // The daemon holds this fetch's download limit: objects it has are answered at once,
      // not queued behind downloads (a warm pull asks about all of them together).
      download_group: this.downloadGroup,
      max_downloads: this.slots.limit,
      // A config comes back with the last message: an unpack reads it next.
      return_bytes_max: kindOf(desc) === "config" ? MAX_MANIFEST_BYTES : 0,
    };
    /** Keeps a config the daemon sent back, if its bytes are the ones asked for. */
    const keep = (m: { data?: Buffer }) => {
      const data = m.data;
      if (data && data.length === desc.size && sha256Digest(data) === desc.digest) this.configs.set(desc.digest, data);
    };
    let delay = 20;
    for (;;) {
      let last = 0;
      try {
        for await (const m of this.api.stream("fetch", "Blob", request, { metadata: this.metadata })) {
          const offset = Number(m.offset ?? 0);
          if (m.status === "exists") {
            keep(m);
            await this.ensureLabels(desc.digest, labels);
            job.update(desc.size, "exists");
            return true;
          }
          if (m.status === "done") keep(m);
          if (m.status === "waiting") job.update(offset, "waiting");
          if (m.status === "downloading") {
            if (offset > last) {
              this.transferred += offset - last;
              job.transferred(offset - last);
            }
            job.update(offset, "downloading");
          }
          last = Math.max(last, offset);
        }
        job.update(desc.size, "done");
        return true;
      } catch (err) {
        if (isClass(err, "NotImplemented")) {
          this.inDaemon = false;
          return false;
        }
        // The registry asks for credentials only for blobs, and this client has not been asked
        // yet, so it sent none: this blob goes the client's way, which answers the challenge.
        if (!access.credentials && isClass(err, "FailedPrecondition") && /unauthorized/.test((err as Error).message)) return false;
        // The store's own words for a ref another writer holds: not any error that says
        // "locked" (a registry host named blocked-registry made this wait for good).
        if (!isClass(err, "Unavailable") || !/\bref "[^"]*" locked\b/.test((err as Error).message)) throw err;
        job.update(0, "waiting");
      }
      // Another writer holds the ref: once it is done the blob exists, or the ref is free.
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 500);
      if (await this.content.info(desc.digest)) {
        await this.ensureLabels(desc.digest, labels);
        job.update(desc.size, "exists");
        return true;
      }
    }
  }

  private async download(desc: Descriptor, w: RemoteWriter, job: ProgressJob): Promise<void> {
    let at = w.offset;
    if (at > desc.size) {
      await w.truncate();
      at = 0;
    }
    job.update(at, "downloading");
    // The daemon verifies size and digest at commit: hashing here too would only cost CPU.
    const body = await this.registry.fetch(this.ref, desc, { offset: at, verify: false });
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const data = pending;
      pending = [];
      pendingBytes = 0;
      await w.write(data);
    };
    for await (const chunk of body as AsyncIterable<Buffer>) {
      pending.push(chunk);
      pendingBytes += chunk.length;
      at += chunk.length;
      this.transferred += chunk.length;
      job.transferred(chunk.length);
      if (pendingBytes >= 1 << 20) {
        await flush();
        job.update(at);
      }
    }
    await flush();
    job.update(at);
  }
}

/** Fetches an image into the content store and (unless told not to) registers it. */
export async function fetchImage(api: ApiClient, registry: Registry, ref: ImageReference, opts: FetchOptions): Promise<FetchResult> {
  const name = formatReference(ref);
  const resolveJob = opts.progress.add(name, 0, "resolving");
  // The lease is created while the registry answers the resolve.
  const lease = createLease(api);
  lease.catch(() => undefined); // awaited below
  let resolved: Awaited<ReturnType<Registry["resolveByHead"]>>;
  try {
    // A HEAD, as containerd resolves: the root document is then read from the daemon when it
    // has it, and GET by digest only when not (bytes come with the resolve only when the
    // registry's HEAD was of no use and it fell back to a GET).
    resolved = await registry.resolveByHead(ref);
  } catch (err) {
    await lease.then((id) => dropLease(api, id), () => undefined);
    throw err;
  }
  const { descriptor: target, bytes: rootBytes } = resolved;
  resolveJob.update(0, "resolved");
  return withLease(
    api,
    async (metadata) => {
      const f = new Fetcher(registry, ref, api, metadata, opts);
      const alongside = opts.whileFetching;
      try {
        await f.fetchTree(target, rootBytes, alongside ? () => alongside(metadata, target, f) : undefined);
        if (opts.register !== false) await registerImage(api, name, target, opts.labels ?? {}, metadata);
      } catch (err) {
        // Held work ends under the lease whatever failed; the first failure is the one reported.
        await f.released().catch(() => undefined);
        throw err;
      }
      await f.released();
      return { name, target, ...f.result() };
    },
    lease,
  );
}

/** Images.Create, or Update when the name exists (as ctr's pull does). */
export async function registerImage(api: ApiClient, name: string, target: Descriptor, labels: Record<string, string>, metadata: Record<string, string> = {}): Promise<void> {
  const image = { name, labels, target: toApiDescriptor(target) };
  try {
    await api.call("images", "Create", { image }, { metadata });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
    const paths = ["target", ...Object.keys(labels).map((k) => `labels.${k}`)];
    await api.call("images", "Update", { image, update_mask: { paths } }, { metadata });
  }
}

/**
 * Fetches one object by digest into the content store (size from the registry). Nothing else
 * refers to it, so it is labelled `containerd.io/gc.root` to outlive the next GC; `ck content
 * rm` removes it.
 */
export async function fetchObject(api: ApiClient, registry: Registry, ref: ImageReference, desc: Descriptor, progress: ProgressSink): Promise<void> {
  await withLease(api, async (metadata) => {
    const f = new Fetcher(registry, ref, api, metadata, { platforms: [], progress });
    await f.fetchBlob(desc, { [GC_ROOT_LABEL]: new Date().toISOString().replace(/\.\d+Z$/, "Z") });
  });
}

// --- what an image is made of, read back through the Content API

export interface ImageContents {
  /** Every object of the image for the platform (index, manifest, config, layers). */
  objects: Descriptor[];
  /** Those the content store has. */
  present: Descriptor[];
  platforms: string[];
  /** The manifest chosen for the platform, when one was found. */
  manifest?: ParsedManifest;
  config?: Descriptor;
}

/** Walks an image's content as ctr's images ls/check do: missing objects are counted, not fatal. */
export async function imageContents(api: ApiClient, target: Descriptor, platform: Platform | undefined): Promise<ImageContents> {
  const content = new ApiContent(api);
  const out: ImageContents = { objects: [], present: [], platforms: [] };
  const infos = new Map<string, ContentInfo | undefined>();
  const have = async (d: Descriptor) => {
    if (!infos.has(d.digest)) infos.set(d.digest, await content.info(d.digest));
    return infos.get(d.digest) !== undefined;
  };
  const visit = async (d: Descriptor, top: boolean): Promise<void> => {
    out.objects.push(d);
    if (!(await have(d))) return;
    out.present.push(d);
    if (!isIndex(d.mediaType) && !isManifest(d.mediaType)) return;
    const parsed = parseManifest(d, await content.readAll(d.digest, MAX_MANIFEST_BYTES));
    if (parsed.kind === "index") {
      for (const m of parsed.manifests) if (m.platform) out.platforms.push(platformString(m.platform));
      // The entry containerd would unpack: the best for the platform, not the first that runs.
      const chosen = platform ? selectManifests(parsed, platform).slice(0, 1) : parsed.manifests;
      for (const m of chosen) await visit(m, false);
      return;
    }
    out.manifest ??= parsed;
    out.config ??= parsed.config;
    for (const c of children(parsed)) await visit(c, false);
    if (top && parsed.config && (await have(parsed.config))) {
      try {
        const cfg = JSON.parse((await content.readAll(parsed.config.digest, MAX_MANIFEST_BYTES)).toString("utf8"));
        if (cfg.os) out.platforms.push(platformString({ os: cfg.os, architecture: cfg.architecture, variant: cfg.variant }));
      } catch {
        // an unreadable config leaves PLATFORMS empty
      }
    }
  };
  await visit(target, true);
  out.platforms = [...new Set(out.platforms)].sort();
  return out;
}

export function platformString(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}

// --- push

export interface PushOptions {
  concurrency?: number;
  progress: ProgressSink;
  platforms: Platform[];
  /** Upload non-distributable ("foreign") layers too (ctr push --allow-non-distributable-blobs). */
  allowNonDistributable?: boolean;
}

/**
 * Layers an image may name without a registry being meant to hold them (Windows base layers,
 * licensed content): ctr push leaves them out unless asked (containerd's images.IsNonDistributable).
 */
export function isNonDistributable(mediaType: string): boolean {
  return mediaType.startsWith("application/vnd.oci.image.layer.nondistributable.") || mediaType.startsWith("application/vnd.docker.image.rootfs.foreign.");
}

/**
 * Pushes the image `local` (a name in this namespace) to `ref`: blobs first, manifests after
 * their children, the root under the tag. With `platforms`, an index is replaced by the one
 * manifest they select (see pushedManifest), chosen before anything is sent; the target
 * returned is what was pushed.
 */
export async function pushImage(api: ApiClient, registry: Registry, ref: ImageReference, local: string, opts: PushOptions): Promise<{ target: Descriptor; uploaded: number }> {
  const content = new ApiContent(api);
  let image: any;
  try {
    image = (await api.call("images", "Get", { name: local })).image;
  } catch (err) {
    if (isNotFound(err)) throw new CkError("NotFound", `image "${local}": not found`);
    throw err;
  }
  const documents = new Map<string, Buffer>();
  const read = async (d: Descriptor): Promise<Buffer> => {
    let bytes = documents.get(d.digest);
    if (!bytes) {
      const info = await content.info(d.digest);
      if (!info) throw new CkError("NotFound", `content ${d.digest} of ${local} is not in the content store`);
      bytes = await content.readAll(d.digest, MAX_MANIFEST_BYTES);
      documents.set(d.digest, bytes);
    }
    return bytes;
  };
  let target = fromApiDescriptor(image.target);
  // An index inside an index is narrowed the same way, down to a manifest.
  while (opts.platforms.length > 0 && isIndex(target.mediaType)) {
    const what = `push of image "${local}": index ${target.digest}`;
    target = pushedManifest(parseManifest(target, await read(target)), opts.platforms, what);
  }
  const manifests: { desc: Descriptor; bytes: Buffer }[] = [];
  const blobs = new Map<string, Descriptor>();
  const walk = async (d: Descriptor): Promise<void> => {
    if (!isIndex(d.mediaType) && !isManifest(d.mediaType)) {
      if (isNonDistributable(d.mediaType) && !opts.allowNonDistributable) return;
      blobs.set(d.digest, d);
      return;
    }
    const bytes = await read(d);
    for (const c of children(parseManifest(d, bytes))) await walk(c);
    manifests.push({ desc: d, bytes });
  };
  await walk(target);
  let uploaded = 0;
  await eachLimit([...blobs.values()], opts.concurrency ?? 3, async (d) => {
    const job = opts.progress.add(refFor(d), d.size);
    const info = await content.info(d.digest);
    if (!info) throw new CkError("NotFound", `content ${d.digest} of ${local} is not in the content store`);
    const mountFrom = (info.labels[sourceLabelKey(ref.domain)] ?? "").split(",").filter((r) => r && r !== ref.repository);
    job.update(0, "uploading");
    let sent = 0;
    const how = await registry.pushBlob(ref, d, () => Readable.from(content.read(d.digest)), {
      mountFrom,
      // Counts from 0 again when an upload starts over (a retry): those bytes cross again.
      onProgress: (n: number) => {
        const more = n >= sent ? n - sent : n;
        job.transferred(more);
        uploaded += more;
        sent = n;
        job.update(n);
      },
    });
    const status: JobStatus = how === "uploaded" ? "done" : how;
    job.update(d.size, status);
  });
  for (const m of manifests) {
    const job = opts.progress.add(refFor(m.desc), m.desc.size, "uploading");
    const isRoot = m.desc.digest === target.digest;
    await registry.pushManifest(ref, m.desc, m.bytes, isRoot && ref.tag && !ref.digest ? ref.tag : m.desc.digest);
    job.update(m.desc.size, "done");
  }
  return { target, uploaded };
}
