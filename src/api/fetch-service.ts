// ck's extension service ck.services.fetch.v1: ckd downloads a blob from a registry straight
// into its content store (docs/distribution.md, "Fetching in the daemon"). The ingest, its lock,
// resume, commit and the namespace's commit event are those of Content.Write; only the bytes'
// way in differs: registry -> ckd -> disk, instead of registry -> client -> gRPC -> ckd -> disk.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import type * as grpc from "@grpc/grpc-js";
import type { Sequencer } from "../commands/sequencer.js";
import type { Queries } from "../projections/queries.js";
import type { ContentStore } from "../content/types.js";
import { ingestRef, type NamespacedBlobs } from "../content/namespaced.js";
import { invalidArgument, isClass } from "../errdefs/errdefs.js";
import { validateDigest } from "../commands/validation.js";
import { commitLabels } from "../commands/content.js";
import { bytesCanNeverCommit, Registry, type RegistryAccess, type RegistryTls } from "../remotes/registry.js";
import { parseReference } from "../remotes/reference.js";
import type { Credentials } from "../remotes/auth.js";
import type { Descriptor } from "../remotes/types.js";
import { commitBytes, commitInNamespace, sharedBlob } from "./content-service.js";
import { DownloadGroups } from "./download-groups.js";
import { LEASE_HEADER, metadataValue, namespaceOf, serverStream, writeStream } from "./grpc.js";

export interface FetchDeps {
  sequencer: Sequencer;
  queries: Queries;
  store: ContentStore;
  blobs: NamespacedBlobs;
  userAgent: string;
}

/** Bytes gathered from the registry before one write to the ingest (and one progress message). */
const WRITE_BATCH = 1 << 20;
/** The most bytes a last message carries back (return_bytes_max), whatever the client asks. */
const RETURN_BYTES_CAP = 4 << 20;
/** Registry clients kept between calls (their connections and bearer tokens), by access. */
const MAX_REGISTRIES = 8;

/** The request's RegistryAccess as registry options for one host. */
function accessOptions(a: Record<string, unknown> | undefined): RegistryAccess {
  const str = (k: string) => (typeof a?.[k] === "string" ? (a[k] as string) : "");
  const credentials: Credentials = {};
  if (str("username")) credentials.username = str("username");
  if (str("password")) credentials.password = str("password");
  if (str("identity_token")) credentials.identityToken = str("identity_token");
  const ca = Array.isArray(a?.tls_ca) ? (a.tls_ca as unknown[]).filter((c): c is string => typeof c === "string" && c !== "") : [];
  const tls: RegistryTls = {};
  if (ca.length) tls.ca = ca;
  if (a?.tls_skip_verify) tls.skipVerify = true;
  if (str("tls_client_cert") || str("tls_client_key")) {
    if (!str("tls_client_cert") || !str("tls_client_key")) throw invalidArgument("access.tls_client_cert and access.tls_client_key go together");
    tls.clientCert = { cert: str("tls_client_cert"), key: str("tls_client_key") };
  }
  return {
    plainHttp: Boolean(a?.plain_http),
    ...(Object.keys(credentials).length ? { credentials } : {}),
    ...(Object.keys(tls).length ? { tls } : {}),
  };
}

/** sha256 of no bytes. */
const EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** The blob descriptor of a request, checked: a digest and a size (the media type picks the registry endpoint). */
function blobOf(b: Record<string, unknown> | undefined): Descriptor {
  const digest = String(b?.digest ?? "");
  validateDigest("blob.digest", digest);
  const size = Number(b?.size ?? 0);
  // Zero bytes only for the empty blob (an image may have an empty layer or config): any
  // other digest with no size is a request that left the size out.
  const empty = size === 0 && digest === EMPTY_DIGEST;
  if (!Number.isSafeInteger(size) || (size <= 0 && !empty)) throw invalidArgument(`blob.size ${String(b?.size)} invalid: a positive whole number of bytes`);
  return { mediaType: String(b?.media_type ?? ""), digest, size, annotations: {} };
}

export function fetchService(d: FetchDeps): grpc.UntypedServiceImplementation {
  /** Registry clients by a hash of what they were made from (credentials included, never kept in clear as a key). */
  const registries = new Map<string, Registry>();
  const downloads = new DownloadGroups();
  const registryFor = (host: string, access: RegistryAccess): Registry => {
    const key = createHash("sha256").update(JSON.stringify([host, access])).digest("hex");
    let r = registries.get(key);
    if (r) {
      registries.delete(key); // most recently used last
      registries.set(key, r);
      return r;
    }
    const creds = access.credentials;
    r = new Registry({
      plainHttp: access.plainHttp,
      credentials: (h) => (h === host ? creds : undefined),
      userAgent: d.userAgent,
      // A daemon downloads the bytes: the faster body path is worth its start.
      engine: "undici",
      ...(access.tls ? { tls: access.tls } : {}),
    });
    registries.set(key, r);
    if (registries.size > MAX_REGISTRIES) {
      const [oldest, old] = registries.entries().next().value as [string, Registry];
      registries.delete(oldest);
      old.close();
    }
    return r;
  };

  return {
    Blob: serverStream(async (call) => {
      const ns = namespaceOf(call);
      const lease = metadataValue(call, LEASE_HEADER) || undefined;
      const r = call.request;
      const blob = blobOf(r.blob);
      const ref = String(r.ref ?? "");
      if (!ref) throw invalidArgument("ref must not be empty");
      let image;
      try {
        image = parseReference(String(r.reference ?? ""));
      } catch (err) {
        throw invalidArgument(`reference: ${(err as Error).message}`);
      }
      const access = accessOptions(r.access);
      const labels: Record<string, string> = r.labels ?? {};
      // Refused before anything is downloaded (the commit would refuse them only once the blob
      // was in place).
      commitLabels(labels);
      const group = String(r.download_group ?? "");
      const maxDownloads = Number(r.max_downloads ?? 0);
      const returnBytesMax = Math.min(Number(r.return_bytes_max ?? 0), RETURN_BYTES_CAP);
      if (lease) await d.queries.getLease(ns, lease);
      const total = blob.size;
      /** The last message: "done" or "exists", with the blob's bytes when asked for and small enough. */
      const last = async (status: "done" | "exists") => {
        const data = returnBytesMax > 0 && total <= returnBytesMax ? await readFile(d.store.path(blob.digest)) : undefined;
        await writeStream(call, { status, offset: total, total, ...(data ? { data } : {}) });
      };

      let shared: { digest: string; size: number } | undefined;
      try {
        shared = await sharedBlob(d, ns, lease, blob.digest, total);
      } catch (err) {
        if (!isClass(err, "AlreadyExists")) throw err;
        await last("exists");
        return;
      }
      /**
       * The namespace's commit; "exists" when another writer in this namespace committed the
       * same blob meanwhile (its labels may differ: the client merges its own in, as after a
       * Content.Write answered AlreadyExists). `locked`: the digest's lock is held already.
       */
      const commitNs = async (blob: { digest: string; size: number }, locked = false): Promise<"done" | "exists"> => {
        try {
          await commitInNamespace(d, locked ? d.blobs.commitLocked : d.blobs.commit.bind(d.blobs), ns, blob, labels, lease);
          return "done";
        } catch (err) {
          if (!isClass(err, "AlreadyExists")) throw err;
          return "exists";
        }
      };
      const finish = async (blob: { digest: string; size: number }) => last(await commitNs(blob));
      if (shared) {
        await finish(shared);
        return;
      }

      const key = ingestRef(ns, ref);
      let writer;
      try {
        writer = await d.store.writer({ ref: key, expected: blob.digest, total, lease });
      } catch (err) {
        // Another writer put the same bytes on disk since the check above: commit those.
        const onDisk = isClass(err, "AlreadyExists") ? await d.store.stat(blob.digest) : undefined;
        if (!onDisk) throw err;
        await finish(onDisk);
        return;
      }
      const gone = new AbortController();
      call.on("cancelled", () => gone.abort());
      /** The writer is done with: committed, or its ingest dropped. */
      let spent = false;
      let committing = false;
      let release: (() => void) | undefined;
      try {
        if (writer.offset > total) await writer.truncate(0);
        let at = writer.offset;
        if (at < total && group && maxDownloads > 0) {
          release = await downloads.acquire(`${ns}\u0000${group}`, maxDownloads, gone.signal, () => writeStream(call, { status: "waiting", offset: at, total }));
        }
        await writeStream(call, { status: "downloading", offset: at, total });
        if (at < total) {
          // The commit verifies size and digest: hashing while downloading would only cost CPU.
          const body = await registryFor(image.domain, access).fetch(image, blob, { offset: at, verify: false, signal: gone.signal });
          let parts: Buffer[] = [];
          let held = 0;
          const flush = async () => {
            if (held === 0) return;
            const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts, held);
            parts = [];
            held = 0;
            at = await writer.write(at, data);
            await writeStream(call, { status: "downloading", offset: at, total });
          };
          for await (const chunk of body as AsyncIterable<Buffer>) {
            parts.push(chunk);
            held += chunk.length;
            if (held >= WRITE_BATCH) await flush();
          }
          await flush();
        }
        release?.(); // the download is over: the group's next one starts while this commits
        committing = true;
        // The bytes into place and the namespace's commit under the digest's one lock: no
        // removal of the same bytes elsewhere falls between them.
        const outcome = await d.blobs.locked(blob.digest, async () => {
          const committed = await commitBytes(d, writer, blob.digest, total);
          spent = true;
          return commitNs(committed, true);
        });
        await last(outcome);
      } catch (err) {
        // An ingest that holds no byte, or bytes that can never commit, goes, so the next try
        // starts clean; any other stays (unlocked) for a resume.
        if (!spent && (writer.offset === 0 || bytesCanNeverCommit(err, committing))) {
          spent = true;
          await d.store.abort(key).catch(() => undefined);
        }
        throw err;
      } finally {
        release?.();
        if (!spent) await writer.close().catch(() => undefined);
      }
    }),
  };
}
