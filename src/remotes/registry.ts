// A client of the OCI distribution API (a registry): resolve a reference to a descriptor,
// fetch manifests and blobs (resuming broken downloads, verifying what it delivers), and push
// blobs and manifests. Authentication is answered on demand; secrets never reach a message.
import http, { type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import https from "node:https";
import { createSecureContext, type ConnectionOptions, type SecureContext } from "node:tls";
import type { Agent } from "undici";
import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { createHash, type Hash } from "node:crypto";
import { Readable, Transform } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { CkError, failedPrecondition, invalidArgument, isClass, notFound, unavailable } from "../errdefs/errdefs.js";
import type { CredentialStore, Credentials } from "./auth.js";
import { Authorizer, MAX_TOKEN_RESPONSE, type TokenHttp } from "./authorizer.js";
import { RegistryError, failureOf, gaveUp, isUnauthorized, manifestPutError, statusError, unauthorized } from "./errors.js";
import { MAX_MANIFEST_BYTES, MediaTypes, isIndex, isManifest } from "./manifest.js";
import { formatReference, manifestReference, type ImageReference } from "./reference.js";
import { REQUEST_ATTEMPTS, RETRY_STATUSES, resumeBackoffMs, retryAfterTooLong, retryDecision, withDigest, type Failure } from "./retry.js";
import { isDigest, isSize, sha256Digest, type Descriptor } from "./types.js";
import { CK_VERSION } from "../version.js";

export interface RegistryOptions {
  /** Speak http instead of https, to every host or to those the function picks. */
  plainHttp?: boolean | ((host: string) => boolean);
  credentials?: CredentialStore;
  userAgent?: string;
  /**
   * The HTTP client. "node" (default): node:http, which a short process starts quickly. "undici":
   * its body path is ~3x faster (two 64 MiB blobs from a loopback registry in 0.10 s against
   * 0.28-0.33 s once warm), and a cold fetch cost ckd half the CPU, but loading it and compiling
   * its WebAssembly HTTP parser added 0.05-0.2 s to every `ck` process (2026-11-30, AMD EPYC):
   * ckd, which downloads the blobs, uses it; the CLI does not.
   */
  engine?: "node" | "undici";
  /** Resume attempts per blob download before giving up with Unavailable; default 5. */
  retries?: number;
  /** Longest silence on a connection (connect, headers, body) before it counts as broken; default 30 s. */
  timeoutMs?: number;
  log?: (msg: string) => void;
  /** How https registries are trusted (ctr's --tlscacert and --skip-verify). */
  tls?: RegistryTls;
}

export interface RegistryTls {
  /** PEM certificates trusted besides the system's (and NODE_EXTRA_CA_CERTS). */
  ca?: string[];
  /** Accept any certificate (-k): the connection is encrypted but the registry unverified. */
  skipVerify?: boolean;
  /** A client certificate chain and its private key (PEM), for registries that ask for one. */
  clientCert?: { cert: string; key: string };
}

/** How a client reaches one registry host: what a daemon fetching on its behalf is given. */
export interface RegistryAccess {
  plainHttp: boolean;
  credentials?: Credentials;
  tls?: RegistryTls;
}

/** Everything a manifest GET or HEAD accepts, so the registry never down-converts. */
export const MANIFEST_ACCEPT = [
  MediaTypes.dockerManifest,
  MediaTypes.dockerManifestList,
  MediaTypes.ociManifest,
  MediaTypes.ociIndex,
].join(", ");

const DEFAULTS = { retries: 5, timeoutMs: 30_000, userAgent: `ck/${CK_VERSION}` };
/** How long the PUT that ends a blob upload may wait for the registry's answer. */
const UPLOAD_END_TIMEOUT_MS = 10 * 60_000;
const MAX_REDIRECTS = 10;
const MAX_ERROR_BODY = 64 << 10;

type Action = "pull" | "push";

interface Call {
  method: "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";
  ref: ImageReference;
  url: URL;
  headers?: Record<string, string>;
  /** Called per attempt so a request can be resent after an auth challenge. */
  body?: () => Buffer | Readable;
  scopes: string[];
  signal?: AbortSignal;
  /** What the request is about, for errors: `manifest "host/repo:tag"`, `blob sha256:...`. */
  what: string;
  /** The idle timeout for this request, instead of the client's (0: none). */
  timeoutMs?: number;
}

type UndiciRequest = (this: Agent, opts: Parameters<Agent["request"]>[0]) => ReturnType<Agent["request"]>;

/** One HTTP request as either engine takes it. */
interface HttpCall {
  method: string;
  url: URL;
  headers: Record<string, string>;
  body: Buffer | Readable | undefined;
  signal: AbortSignal | undefined;
  timeoutMs?: number;
}

/** A response: its body as a stream, with the status and headers (either engine's). */
type HttpResponse = Readable & { statusCode: number; headers: IncomingHttpHeaders };

export class Registry {
  private readonly opts: Required<Pick<RegistryOptions, "retries" | "timeoutMs" | "userAgent">> & RegistryOptions;
  /**
   * Made at the first request, from undici's agent, connector and request modules only (see
   * types/undici-parts.d.ts): the agent, and request(), which undici's index would add to
   * every dispatcher.
   */
  private dispatcher: Promise<{ agent: Agent; request: UndiciRequest }> | undefined;
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  /**
   * Made at the first https request: its trust may be a TLS context holding every CA, whose
   * making parses them all (~48 ms with this machine's system bundle), which a command reaching only plain-http registries never needs.
   */
  private httpsAgentMade: https.Agent | undefined;
  private readonly auth: Authorizer;
  private readonly log: (msg: string) => void;

  constructor(opts: RegistryOptions = {}) {
    this.opts = { ...DEFAULTS, ...opts };
    if (!Number.isInteger(this.opts.retries) || this.opts.retries < 0) throw invalidArgument(`registry options: retries ${opts.retries} is not a non-negative integer`);
    if (!(this.opts.timeoutMs >= 0)) throw invalidArgument(`registry options: timeoutMs ${opts.timeoutMs} is not a non-negative number`);
    this.log = opts.log ?? (() => {});
    this.auth = new Authorizer(opts.credentials, (r) => this.smallRequest(r), this.log);
  }

  /**
   * How this client reaches `host`: scheme, trust, and the credentials once the host has
   * asked for them (so a credential helper still runs only for a registry that challenges),
   * which a daemon fetching for it (ck.services.fetch.v1) needs to reach the registry the
   * same way.
   */
  accessFor(host: string): RegistryAccess {
    const plain = this.opts.plainHttp;
    const credentials = this.auth.challenged(host) ? this.opts.credentials?.(host) : undefined;
    return {
      plainHttp: typeof plain === "function" ? plain(host) : Boolean(plain),
      ...(credentials ? { credentials } : {}),
      ...(this.opts.tls ? { tls: this.opts.tls } : {}),
    };
  }

  /** Keep-alive connections to each origin (32 at most), trusting what `tls` says. */
  private agent(): Promise<{ agent: Agent; request: UndiciRequest }> {
    this.dispatcher ??= Promise.all([
      import("undici/lib/dispatcher/agent.js"),
      import("undici/lib/core/connect.js"),
      import("undici/lib/api/api-request.js"),
    ]).then(([{ default: Agent }, { default: buildConnector }, { default: request }]) => {
      // timeoutMs bounds the connect too, as for node:http (0: no limit, as there).
      const connect = buildConnector({ ...trustOptions(this.opts.tls), timeout: this.opts.timeoutMs });
      const agent = new Agent({
        connections: 32,
        connect: (opts, callback) =>
          connect(opts, (err, socket) => {
            if (socket) this.watch(socket);
            (callback as (e: Error | null, s: typeof socket) => void)(err, socket);
          }),
      });
      return { agent, request };
    });
    return this.dispatcher;
  }

  /**
   * A socket's own failure, kept for a while by its local address: undici reports a
   * connection that a TLS alert ended (the registry refusing our client certificate) as
   * "other side closed", and rootCause puts the alert back.
   */
  private readonly socketErrors = new Map<string, Error>();

  private watch(socket: import("node:net").Socket): void {
    const key = `${socket.localAddress}:${socket.localPort}`;
    socket.once("error", (err) => {
      this.socketErrors.set(key, err);
      setTimeout(() => this.socketErrors.delete(key), 10_000).unref();
    });
  }

  /** The error that ended the connection under `err`, when its socket failed first; else `err`. */
  rootCause(err: unknown): unknown {
    const info = (err as { socket?: { localAddress?: string; localPort?: number } } | undefined)?.socket;
    return (info && this.socketErrors.get(`${info.localAddress}:${info.localPort}`)) ?? err;
  }

  /** Closes idle keep-alive connections (requests in flight finish). The client stays usable. */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgentMade?.destroy();
    const old = this.dispatcher;
    this.dispatcher = undefined;
    void old?.then(({ agent }) => agent.close()).catch(() => undefined);
  }

  /** The descriptor a tag or digest names on the registry. */
  async resolve(ref: ImageReference): Promise<Descriptor> {
    return (await this.resolveByHead(ref)).descriptor;
  }

  /**
   * Resolves as containerd's resolver does, with a HEAD (Docker-Content-Digest, Content-Type,
   * Content-Length): a client that has the document already need not GET it (Docker Hub counts
   * manifest GETs against its pull limit, HEADs not). A registry that does not answer the HEAD
   * usefully (refuses it, or leaves out the digest) is asked with a GET, whose document comes
   * back too (size-capped, digest checked).
   */
  async resolveByHead(ref: ImageReference): Promise<{ descriptor: Descriptor; bytes?: Buffer }> {
    const name = formatReference(ref);
    const what = `manifest ${JSON.stringify(name)}`;
    const url = this.url(ref, `/v2/${ref.repository}/manifests/${manifestReference(ref)}`);
    const base: Omit<Call, "method"> = { ref, url, headers: { accept: MANIFEST_ACCEPT }, scopes: [scope(ref.repository, ["pull"])], what };

    const head = await this.sendRetrying({ ...base, method: "HEAD" });
    await drain(head);
    if (head.statusCode === 404) throw statusError(ref.domain, 404, what);
    if (ok(head)) {
      const mediaType = contentType(head);
      const digest = header(head, "docker-content-digest");
      const size = Number(header(head, "content-length"));
      if ((isManifest(mediaType) || isIndex(mediaType)) && isDigest(digest) && isSize(size) && header(head, "content-length") !== undefined) {
        return { descriptor: this.resolved(ref, name, what, { mediaType, digest, size }) };
      }
    }
    const got = await this.getManifest(ref, base, what);
    return { descriptor: this.resolved(ref, name, what, got.descriptor), bytes: got.bytes };
  }

  /**
   * Resolves with one GET that also brings the document (size-capped, digest checked): for a
   * client that needs the root manifest anyway, it saves a request or a trip to the daemon.
   */
  async resolveWithManifest(ref: ImageReference): Promise<{ descriptor: Descriptor; bytes: Buffer }> {
    const name = formatReference(ref);
    const what = `manifest ${JSON.stringify(name)}`;
    const url = this.url(ref, `/v2/${ref.repository}/manifests/${manifestReference(ref)}`);
    const got = await this.getManifest(ref, { ref, url, headers: { accept: MANIFEST_ACCEPT }, scopes: [scope(ref.repository, ["pull"])], what }, what);
    return { descriptor: this.resolved(ref, name, what, got.descriptor), bytes: got.bytes };
  }

  /** One GET of a manifest by tag or digest, read whole; sent again as retryDecision says, the body included. */
  private getManifest(ref: ImageReference, base: Omit<Call, "method">, what: string): Promise<{ descriptor: Descriptor; bytes: Buffer }> {
    return this.retrying(what, async () => {
      const res = await this.send({ ...base, method: "GET" });
      if (!ok(res)) throw await this.answerError(ref, res, what);
      let body: Buffer | undefined;
      try {
        body = await readLimited(res, MAX_MANIFEST_BYTES, false);
      } catch (err) {
        throw networkError(ref.domain, what, err, base.signal);
      }
      return this.manifestOf(res, body, what);
    }, base.signal);
  }

  /** The descriptor of a manifest GET's body, checked against what the registry said of it. */
  private manifestOf(res: HttpResponse, body: Buffer | undefined, what: string): { descriptor: Descriptor; bytes: Buffer } {
    if (!body) throw invalidArgument(`${what}: larger than the ${MAX_MANIFEST_BYTES} byte limit for manifests`);
    const digest = sha256Digest(body);
    const claimed = header(res, "docker-content-digest");
    if (claimed !== undefined && claimed.startsWith("sha256:") && claimed !== digest) {
      throw failedPrecondition(`${what}: registry says digest ${claimed} but the body has digest ${digest}`);
    }
    const descriptor = { mediaType: inferMediaType(contentType(res), body), digest, size: body.length };
    if (!isManifest(descriptor.mediaType) && !isIndex(descriptor.mediaType)) {
      throw invalidArgument(`${what}: registry served media type ${JSON.stringify(descriptor.mediaType)}, not a manifest or index`);
    }
    return { descriptor, bytes: body };
  }

  private resolved(ref: ImageReference, name: string, what: string, desc: Descriptor): Descriptor {
    if (ref.digest !== undefined && desc.digest !== ref.digest) {
      throw failedPrecondition(`${what}: registry resolved it to digest ${desc.digest}, not the ${ref.digest} asked for`);
    }
    this.log(`resolved ${name} to ${desc.digest} (${desc.mediaType}, ${desc.size} bytes)`);
    return desc;
  }

  /**
   * The bytes of `desc` from `offset` on, as a stream. A broken or short connection is
   * resumed with a Range request, up to `retries` times. From offset 0 the stream checks
   * size and digest before it ends, and fails instead of ending on wrong bytes, unless
   * `verify` is false (for a consumer that verifies itself, like a content store's commit).
   */
  async fetch(ref: ImageReference, desc: Descriptor, opts: { offset?: number; signal?: AbortSignal; verify?: boolean } = {}): Promise<Readable> {
    checkDescriptor(desc, "fetch");
    const offset = opts.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > desc.size) {
      throw invalidArgument(`fetch ${desc.digest}: offset ${offset} is outside 0..${desc.size}`);
    }
    const reader = new BlobReader(this, ref, desc, offset, this.opts.retries, opts.signal, this.log, opts.verify ?? true);
    await reader.start();
    const stream = Readable.from(reader.chunks(), { objectMode: false });
    stream.once("close", () => reader.abort());
    return stream;
  }

  /** The whole object, size and digest verified; refuses descriptors larger than `limit` up front. */
  async fetchBytes(ref: ImageReference, desc: Descriptor, limit?: number): Promise<Buffer> {
    checkDescriptor(desc, "fetch");
    const max = limit ?? (isManifest(desc.mediaType) || isIndex(desc.mediaType) ? MAX_MANIFEST_BYTES : Number.MAX_SAFE_INTEGER);
    if (desc.size > max) {
      throw invalidArgument(`${describe(desc)}: size ${desc.size} is larger than the ${max} byte limit`);
    }
    const stream = await this.fetch(ref, desc);
    const parts: Buffer[] = [];
    for await (const chunk of stream) parts.push(chunk as Buffer);
    return Buffer.concat(parts);
  }

  /** Whether the repository of `ref` holds the blob `digest`. */
  async blobExists(ref: ImageReference, digest: string): Promise<boolean> {
    return this.headBlob(ref, digest, ["pull"]);
  }

  /**
   * Makes the blob `desc` present in the repository of `ref`: nothing to do if it is there,
   * a cross-repository mount from one of `mountFrom` if the registry allows it, else an
   * upload of the bytes `open` streams. Each step is sent again after an answer or failure
   * that may pass (see retry.ts); an upload that fails so starts over with a new session and
   * the bytes from the start (`open` is called again), and `onProgress` counts from 0 again.
   */
  async pushBlob(
    ref: ImageReference,
    desc: Descriptor,
    open: () => Readable,
    opts: { mountFrom?: string[]; onProgress?: (bytes: number) => void } = {},
  ): Promise<"exists" | "mounted" | "uploaded"> {
    checkDescriptor(desc, "push");
    const what = `blob ${desc.digest} upload to ${JSON.stringify(`${ref.domain}/${ref.repository}`)}`;
    const pushScope = scope(ref.repository, ["pull", "push"]);
    if (await this.headBlob(ref, desc.digest, ["pull", "push"])) {
      this.log(`${ref.domain}/${ref.repository}: blob ${desc.digest} exists`);
      return "exists";
    }

    let session: URL | undefined;
    for (const from of opts.mountFrom ?? []) {
      if (from === ref.repository) continue;
      const mounted = await this.mount(ref, desc, from, pushScope, what);
      if (mounted === "mounted") return "mounted";
      if (mounted) {
        session = mounted;
        break;
      }
    }
    // The upload is one step of the retries, POST and PUT together (their attempts shared):
    // every attempt after a failure starts with a new session.
    await this.retrying(what, async () => {
      // The session a mount opened serves the first attempt only: after a failure it may be gone.
      const location = session ?? (await this.startUpload(ref, pushScope, what));
      session = undefined;
      await this.upload(ref, desc, location, open, pushScope, what, opts.onProgress);
    });
    this.log(`${ref.domain}/${ref.repository}: uploaded blob ${desc.digest} (${desc.size} bytes)`);
    return "uploaded";
  }

  /**
   * One cross-repository mount of `desc` from `from`: "mounted" (201), the upload session the
   * registry opened instead (202 with a Location, as the distribution spec has it answer a
   * mount it cannot make), or undefined when it refused the mount outright, after which an
   * ordinary upload is started. A refusal is any answer but those once retries are done: 401
   * or 403 when these credentials may not pull `from` (or the registry allows no mounts), 404
   * when it does not know `from`, and whatever else a registry answers a mount it does not
   * honour; containerd's pusher falls back to an upload the same way. An ordinary upload that
   * fails for the same reason then says so.
   */
  private async mount(ref: ImageReference, desc: Descriptor, from: string, pushScope: string, what: string): Promise<"mounted" | URL | undefined> {
    const url = this.url(ref, `/v2/${ref.repository}/blobs/uploads/`);
    url.searchParams.set("mount", desc.digest);
    url.searchParams.set("from", from);
    let res: HttpResponse;
    try {
      res = await this.sendRetrying({ method: "POST", ref, url, scopes: [pushScope, scope(from, ["pull"])], what, headers: { "content-length": "0" } });
    } catch (err) {
      // A second 401 after the challenge was answered: no pull on the source repository.
      if (!isUnauthorized(err)) throw err;
      this.log(`${ref.domain}/${ref.repository}: mounting blob ${desc.digest} from ${from} not authorized; uploading it`);
      return undefined;
    }
    const status = res.statusCode ?? 0;
    if (status === 201) {
      await drain(res);
      this.log(`${ref.domain}/${ref.repository}: mounted blob ${desc.digest} from ${from}`);
      return "mounted";
    }
    if (status === 202) {
      await drain(res);
      const location = header(res, "location");
      return location ? new URL(location, url) : undefined;
    }
    const refused = await this.answerError(ref, res, `mount from ${from}`);
    this.log(`${ref.domain}/${ref.repository}: mounting blob ${desc.digest} from ${from} refused (HTTP ${status}: ${refused.message}); uploading it`);
    return undefined;
  }

  /** Opens an upload session (POST): its Location. */
  private async startUpload(ref: ImageReference, pushScope: string, what: string): Promise<URL> {
    const url = this.url(ref, `/v2/${ref.repository}/blobs/uploads/`);
    const res = await this.send({ method: "POST", ref, url, scopes: [pushScope], what, headers: { "content-length": "0" } });
    if (res.statusCode !== 202) throw await this.answerError(ref, res, what);
    await drain(res);
    const location = header(res, "location");
    if (!location) throw new RegistryError("Unknown", ref.domain, `${ref.domain}: ${what}: upload started without a Location header`);
    return new URL(location, url);
  }

  /**
   * The bytes of `desc` to the upload session at `location` in one PUT `?digest=` with their
   * Content-Length, the distribution spec's monolithic upload and what containerd's pusher
   * sends: a streamed PATCH without a length (chunked transfer encoding) is refused by
   * registries and proxies that need the length up front (411), and the spec's chunked
   * upload wants Content-Range on every PATCH. The bytes are counted and hashed on the way,
   * and the chunk that completes the length is held back until the source has ended and the
   * digest is right: a source that gives other bytes (more, fewer, different) fails the
   * request before its body is complete, so the registry never has the whole of it, and the
   * session is cancelled.
   */
  private async upload(
    ref: ImageReference,
    desc: Descriptor,
    location: URL,
    open: () => Readable,
    pushScope: string,
    what: string,
    onProgress: ((bytes: number) => void) | undefined,
  ): Promise<void> {
    /** Why the source's bytes are not the blob's, once it is known. */
    let wrong: CkError | undefined;
    const mismatch = (detail: string) => failedPrecondition(`${what}: the source gave ${detail}, expected ${desc.size} bytes with digest ${desc.digest}`);
    // Called per request, so an answered challenge (a token that expired mid-push) resends from the start.
    const body = () => {
      let sent = 0;
      const hash: Hash = createHash("sha256");
      let last: Buffer | undefined;
      wrong = undefined;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          if (sent + chunk.length > desc.size) {
            wrong = mismatch(`more than ${desc.size} bytes`);
            cb(wrong);
            return;
          }
          sent += chunk.length;
          hash.update(chunk);
          onProgress?.(sent);
          if (sent === desc.size) last = chunk;
          cb(null, sent === desc.size ? undefined : chunk);
        },
        flush(cb) {
          const actual = "sha256:" + hash.digest("hex");
          if (sent !== desc.size || actual !== desc.digest) {
            wrong = mismatch(`${sent} bytes with digest ${actual}`);
            cb(wrong);
            return;
          }
          cb(null, last);
        },
      });
      const src = open();
      src.once("error", (err) => counter.destroy(err));
      // A request that ended early (a refusal mid-upload) stops the source too.
      counter.once("close", () => src.destroy());
      return src.pipe(counter);
    };
    // The PUT waits while the registry stores (moves, verifies) the whole blob: minutes for a
    // big one on object storage. containerd's client sets no limit there.
    const putTimeout = this.opts.timeoutMs > 0 ? Math.max(this.opts.timeoutMs, UPLOAD_END_TIMEOUT_MS) : 0;
    let res: HttpResponse | undefined;
    try {
      res = await this.send({
        method: "PUT",
        ref,
        url: withDigest(location, desc.digest),
        scopes: [pushScope],
        what,
        headers: { "content-type": "application/octet-stream", "content-length": String(desc.size) },
        body,
        timeoutMs: putTimeout,
      });
    } catch (err) {
      // The request failed because the source's bytes were wrong, not the registry.
      if (!wrong) throw err;
    }
    if (wrong || !res) {
      if (res) await drain(res);
      await this.cancelUpload(ref, location, pushScope, what);
      throw wrong;
    }
    if (res.statusCode !== 201 && res.statusCode !== 204 && res.statusCode !== 200) throw await this.answerError(ref, res, what);
    await drain(res);
  }

  /** Stores a manifest or index under `reference` (a tag, or its own digest). */
  async pushManifest(ref: ImageReference, desc: Descriptor, bytes: Uint8Array, reference: string): Promise<void> {
    checkDescriptor(desc, "push");
    const name = `${ref.domain}/${ref.repository}`;
    const what = `manifest ${desc.digest} push to ${JSON.stringify(`${name}${isDigest(reference) ? "@" : ":"}${reference}`)}`;
    const actual = sha256Digest(bytes);
    if (bytes.length !== desc.size || actual !== desc.digest) {
      throw invalidArgument(`${what}: bytes have size ${bytes.length} and digest ${actual}, descriptor says ${desc.size} and ${desc.digest}`);
    }
    if (isDigest(reference)) {
      if (reference !== desc.digest) throw invalidArgument(`${what}: reference digest ${reference} is not the manifest's digest`);
    } else if (!/^[\w][\w.-]{0,127}$/.test(reference)) {
      throw invalidArgument(`${what}: reference ${JSON.stringify(reference)} is neither a tag nor a sha256 digest`);
    }
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const res = await this.sendRetrying({
      method: "PUT",
      ref,
      url: this.url(ref, `/v2/${ref.repository}/manifests/${reference}`),
      scopes: [scope(ref.repository, ["pull", "push"])],
      what,
      headers: { "content-type": desc.mediaType },
      body: () => buf,
    });
    if (!ok(res)) throw await this.answerError(ref, res, what, manifestPutError);
    await drain(res);
    const stored = header(res, "docker-content-digest");
    if (stored !== undefined && stored.startsWith("sha256:") && stored !== desc.digest) {
      throw failedPrecondition(`${what}: registry stored it as ${stored}`);
    }
    this.log(`${name}: pushed manifest ${desc.digest} as ${reference}`);
  }

  // ---- plumbing shared with BlobReader

  /**
   * One GET of the object `desc` (manifest endpoint for manifests and indexes, blob endpoint
   * otherwise), with a Range from `from` when it is not 0. Status not checked. For BlobReader.
   */
  async openObject(ref: ImageReference, desc: Descriptor, from: number, signal: AbortSignal | undefined): Promise<HttpResponse> {
    const manifest = isManifest(desc.mediaType) || isIndex(desc.mediaType);
    const path = manifest ? `/v2/${ref.repository}/manifests/${desc.digest}` : `/v2/${ref.repository}/blobs/${desc.digest}`;
    const headers: Record<string, string> = { accept: manifest ? `${desc.mediaType}, ${MANIFEST_ACCEPT}` : "*/*" };
    if (from > 0) headers.range = `bytes=${from}-`;
    return this.send({
      method: "GET",
      ref,
      url: this.url(ref, path),
      headers,
      scopes: [scope(ref.repository, ["pull"])],
      what: describe(desc),
      ...(signal ? { signal } : {}),
    });
  }

  /**
   * The descriptor of one object by digest (HEAD /blobs, then /manifests, since a registry
   * serves manifests only there): size from Content-Length, media type from Content-Type.
   */
  async stat(ref: ImageReference, digest: string): Promise<Descriptor> {
    if (!isDigest(digest)) throw invalidArgument(`digest ${JSON.stringify(digest)} is not sha256:<64 lowercase hex>`);
    const what = `object ${digest} in ${JSON.stringify(`${ref.domain}/${ref.repository}`)}`;
    for (const kind of ["blobs", "manifests"] as const) {
      const res = await this.sendRetrying({
        method: "HEAD",
        ref,
        url: this.url(ref, `/v2/${ref.repository}/${kind}/${digest}`),
        scopes: [scope(ref.repository, ["pull"])],
        what,
        headers: kind === "manifests" ? { accept: MANIFEST_ACCEPT } : {},
      });
      await drain(res);
      if (res.statusCode === 404) continue;
      if (!ok(res)) throw statusError(ref.domain, res.statusCode ?? 0, what);
      const size = Number(header(res, "content-length"));
      if (!Number.isSafeInteger(size) || size < 0) throw invalidArgument(`${what}: the registry sent no usable Content-Length`);
      const mediaType = (header(res, "content-type") ?? "application/octet-stream").split(";")[0]!.trim();
      return { mediaType, digest, size };
    }
    throw notFound(`${what}`);
  }

  private async headBlob(ref: ImageReference, digest: string, actions: Action[]): Promise<boolean> {
    if (!isDigest(digest)) throw invalidArgument(`blob digest ${JSON.stringify(digest)} is not sha256:<64 lowercase hex>`);
    const what = `blob ${digest} in ${JSON.stringify(`${ref.domain}/${ref.repository}`)}`;
    const res = await this.sendRetrying({
      method: "HEAD",
      ref,
      url: this.url(ref, `/v2/${ref.repository}/blobs/${digest}`),
      scopes: [scope(ref.repository, actions)],
      what,
    });
    await drain(res);
    if (ok(res)) return true;
    if (res.statusCode === 404) return false;
    throw statusError(ref.domain, res.statusCode ?? 0, what);
  }

  private async cancelUpload(ref: ImageReference, url: URL, scopeStr: string, what: string): Promise<void> {
    try {
      const res = await this.send({ method: "DELETE", ref, url, scopes: [scopeStr], what });
      await drain(res);
    } catch (err) {
      this.log(`${what}: cancelling the upload failed: ${(err as Error).message}`);
    }
  }

  /** The error for a non-success answer: its status, the registry's words from its body, its Retry-After. */
  private async answerError(ref: ImageReference, res: HttpResponse, what: string, map: typeof statusError = statusError): Promise<RegistryError> {
    return map(ref.domain, res.statusCode ?? 0, what, await readLimited(res, MAX_ERROR_BODY, true), header(res, "retry-after"));
  }

  /**
   * Runs `step` again after a failure that retryDecision says may pass (429, 502-504, a
   * dropped or refused connection), after the wait it gives; when it gives up, the last
   * error says why (the attempts made, or a Retry-After longer than ck waits). Everything
   * else `step` throws goes to the caller at once.
   */
  private async retrying<T>(what: string, step: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await step();
      } catch (err) {
        const failure = failureOf(err);
        if (!failure || signal?.aborted) throw err;
        const d = retryDecision(failure, attempt);
        if (!d.retry) {
          if (d.why === "attempts") throw gaveUp(err as RegistryError, `gave up after ${attempt} attempts`);
          if (d.why === "retry-after too long") {
            throw gaveUp(err as RegistryError, retryAfterTooLong(d.retryAfterMs));
          }
          throw err;
        }
        this.log(`${(err as RegistryError).context}; trying again in ${d.delayMs} ms (attempt ${attempt + 1} of ${REQUEST_ATTEMPTS})`);
        await sleep(d.delayMs, undefined, signal ? { signal } : undefined).catch(() => {
          throw canceled(what);
        });
      }
    }
  }

  /**
   * send(), again after an answer or failure worth retrying (see retrying); any other answer
   * is returned with its status unchecked. For requests whose body can be sent again.
   */
  private sendRetrying(call: Call): Promise<HttpResponse> {
    return this.retrying(
      call.what,
      async () => {
        const res = await this.send(call);
        if (RETRY_STATUSES.has(res.statusCode ?? 0)) throw await this.answerError(call.ref, res, call.what);
        return res;
      },
      call.signal,
    );
  }

  private url(ref: ImageReference, path: string): URL {
    const host = ref.domain === "docker.io" ? "registry-1.docker.io" : ref.domain;
    const p = this.opts.plainHttp;
    const plain = typeof p === "function" ? p(ref.domain) : p === true;
    return new URL(`${plain ? "http" : "https"}://${host}${path}`);
  }

  /**
   * One registry request with authentication: authorize up front from the last challenge,
   * answer a 401 once, and report a second 401 as unauthorized. Redirects are followed for
   * GET and HEAD. Challenges and credentials are per host, as containerd's authorizer keys
   * them by the host that answered: a redirect to another host carries only what that host
   * asked for, and its 401 is answered with its own credentials, never the registry's.
   */
  private async send(call: Call): Promise<HttpResponse> {
    // The registry's credentials go to the registry only: an upload Location elsewhere (a
    // storage service) gets none, and its 401 is not taken as the registry's challenge
    // (containerd's pusher drops its authorizer when the upload's host changes).
    if (call.url.origin !== this.url(call.ref, "/").origin) return (await this.follow(call, async () => undefined)).res;
    /** Authorizations answered for this request, by host: the retry sends each to its host. */
    const answered = new Map<string, string>();
    const authorize = (url: URL) => {
      const host = this.authHost(call.ref, url);
      return answered.has(host) ? Promise.resolve(answered.get(host)) : this.auth.upfront(host, call.scopes);
    };
    // Each host on the way answers its challenge once (the registry, then the host it
    // redirects to may ask too); a second 401 from the same host is a refusal.
    for (;;) {
      const { res, url } = await this.follow(call, authorize);
      if (res.statusCode !== 401) return res;
      const host = this.authHost(call.ref, url);
      const challenge = challenges(res);
      await drain(res);
      const sent = answered.get(host);
      if (sent !== undefined) throw unauthorized(host, `${call.what}: registry refused the ${sent.split(" ")[0]} authorization it asked for (HTTP 401)`);
      // Redirects to ever new hosts that each challenge: as many as the redirects allowed.
      if (answered.size > MAX_REDIRECTS) throw unauthorized(host, `${call.what}: more than ${MAX_REDIRECTS} hosts asked for authentication`);
      answered.set(host, await this.auth.answer(host, challenge, call.scopes));
    }
  }

  /**
   * Whom credentials and challenges for `url` belong to: the registry under its reference's
   * name (the credential store knows Docker Hub as docker.io), any other host as itself.
   */
  private authHost(ref: ImageReference, url: URL): string {
    return url.host === this.url(ref, "/").host ? ref.domain : url.host;
  }

  /** Sends `call`, following redirects; `authorize` gives each hop's Authorization by its URL. */
  private async follow(call: Call, authorize: (url: URL) => Promise<string | undefined>): Promise<{ res: HttpResponse; url: URL }> {
    let url = call.url;
    let method = call.method;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { "user-agent": this.opts.userAgent, ...call.headers };
      const authorization = await authorize(url);
      if (authorization) headers.authorization = authorization;
      const body = hop === 0 ? call.body?.() : undefined;
      if (Buffer.isBuffer(body)) headers["content-length"] = String(body.length);
      this.log(`${method} ${url.origin}${url.pathname}${headers.range ? ` (${headers.range})` : ""}`);
      let res: HttpResponse;
      try {
        res = await this.rawRequest({ method, url, headers, body, signal: call.signal, timeoutMs: call.timeoutMs });
      } catch (err) {
        throw networkError(call.ref.domain, call.what, err, call.signal);
      }
      const status = res.statusCode ?? 0;
      const location = header(res, "location");
      if (!(status >= 300 && status < 400 && location && (method === "GET" || method === "HEAD"))) return { res, url };
      await drain(res);
      if (hop >= MAX_REDIRECTS) throw new RegistryError("Unknown", call.ref.domain, `${call.ref.domain}: ${call.what}: more than ${MAX_REDIRECTS} redirects`);
      url = new URL(location, url);
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        throw new RegistryError("Unknown", call.ref.domain, `${call.ref.domain}: ${call.what}: redirect to unsupported scheme ${url.protocol}`);
      }
      if (status === 303 && method !== "HEAD") method = "GET";
    }
  }

  private rawRequest(r: HttpCall): Promise<HttpResponse> {
    return this.opts.engine === "undici" ? this.undiciRequest(r) : this.nodeRequest(r);
  }

  /** One request through node:http (the default engine). */
  private nodeRequest({ method, url, headers, body, signal, timeoutMs = this.opts.timeoutMs }: HttpCall): Promise<HttpResponse> {
    return new Promise((resolve, reject) => {
      const secure = url.protocol === "https:";
      const req = (secure ? https : http).request(url, {
        method,
        headers,
        agent: secure ? (this.httpsAgentMade ??= new https.Agent({ keepAlive: true, maxSockets: 32, ...trustOptions(this.opts.tls) })) : this.httpAgent,
        ...(signal ? { signal } : {}),
      });
      let answered = false;
      let response: IncomingMessage | undefined;
      req.once("response", (res) => {
        answered = true;
        response = res;
        // An early refusal (a 401 mid-upload): stop reading the source we were sending.
        if (body instanceof Readable && !body.readableEnded && (res.statusCode ?? 0) >= 400) {
          body.unpipe(req);
          body.destroy();
        }
        resolve(res as HttpResponse);
      });
      // After the response, failures surface on the response stream; keep a listener anyway.
      req.on("error", (err) => {
        if (!answered) {
          answered = true;
          reject(err);
        }
      });
      if (timeoutMs > 0) {
        req.setTimeout(timeoutMs, () => {
          const err = Object.assign(new Error(`no data for ${timeoutMs} ms`), { code: "ETIMEDOUT" });
          // Mid-body, the response stream is where the reader is waiting: fail it with the cause.
          response?.destroy(err);
          req.destroy(err);
        });
      }
      if (body instanceof Readable) {
        body.once("error", (err) => req.destroy(err));
        body.pipe(req);
      } else {
        req.end(body);
      }
    });
  }

  /** One request through undici (see RegistryOptions.engine). */
  private async undiciRequest({ method, url, headers, body, signal, timeoutMs }: HttpCall): Promise<HttpResponse> {
    // 0 turns a timeout off, for undici as for this option.
    const timeout = timeoutMs ?? this.opts.timeoutMs;
    let res;
    try {
      const { agent, request } = await this.agent();
      res = await request.call(agent, {
        origin: url.origin,
        path: url.pathname + url.search,
        method: method as "GET",
        headers,
        body,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      throw classicCode(this.rootCause(err));
    }
    // An early refusal (a 401 mid-upload): stop reading the source we were sending.
    if (body instanceof Readable && !body.readableEnded && res.statusCode >= 400) body.destroy();
    const stream = res.body as unknown as HttpResponse;
    stream.statusCode = res.statusCode;
    stream.headers = res.headers as IncomingHttpHeaders;
    return stream;
  }

  /**
   * The authorizer's HTTP: a GET or POST whose (small) answer is read whole, redirects followed
   * as Go's http.Client follows them for containerd's token requests (see tokenRedirect).
   */
  private async smallRequest(first: TokenRequest): Promise<{ status: number; body: Buffer }> {
    let r = first;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { "user-agent": this.opts.userAgent, ...r.headers };
      if (r.body) headers["content-length"] = String(r.body.length);
      let res: HttpResponse;
      try {
        res = await this.rawRequest({ method: r.method, url: r.url, headers, body: r.body, signal: undefined });
      } catch (err) {
        throw networkError(r.url.host, `token server ${r.url.origin}${r.url.pathname}`, err, undefined);
      }
      const next = tokenRedirect(r, res.statusCode ?? 0, header(res, "location"));
      if (next) {
        await drain(res);
        if (hop >= MAX_REDIRECTS) throw new RegistryError("Unknown", first.url.host, `${first.url.host}: token server ${first.url.origin}${first.url.pathname}: more than ${MAX_REDIRECTS} redirects`);
        r = next;
        continue;
      }
      const body = await readLimited(res, MAX_TOKEN_RESPONSE, true);
      return { status: res.statusCode ?? 0, body: body ?? Buffer.alloc(0) };
    }
  }
}

type TokenRequest = Parameters<TokenHttp>[0];

/**
 * The token request a redirect asks for, as Go's http.Client makes it (containerd asks for
 * tokens through one): 301, 302 and 303 turn a POST into a GET without a body, 307 and 308
 * repeat the request; the Authorization header goes to the same host only. Undefined when the
 * answer is not a redirect to an http(s) Location.
 */
export function tokenRedirect(req: TokenRequest, status: number, location: string | undefined): TokenRequest | undefined {
  if (![301, 302, 303, 307, 308].includes(status) || !location) return undefined;
  let url: URL;
  try {
    url = new URL(location, req.url);
  } catch {
    return undefined;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
  const headers = { ...req.headers };
  if (url.host !== req.url.host) delete headers.authorization;
  if (status === 307 || status === 308 || req.method === "GET") return { method: req.method, url, headers, ...(req.body ? { body: req.body } : {}) };
  delete headers["content-type"];
  return { method: "GET", url, headers };
}

/**
 * The download of one object: the first response, then as many resumptions as the budget
 * allows, yielding exactly the bytes from `offset` to the end.
 */
class BlobReader {
  private pos: number;
  private attempts = 0;
  private first?: { res: HttpResponse; skip: number };
  private current?: HttpResponse;
  private readonly ac = new AbortController();
  private readonly signal: AbortSignal;
  private readonly what: string;

  constructor(
    private readonly registry: Registry,
    private readonly ref: ImageReference,
    private readonly desc: Descriptor,
    private readonly offset: number,
    private readonly retries: number,
    outer: AbortSignal | undefined,
    private readonly log: (msg: string) => void,
    private readonly verify: boolean,
  ) {
    this.pos = offset;
    this.signal = outer ? AbortSignal.any([outer, this.ac.signal]) : this.ac.signal;
    this.what = describe(desc);
  }

  /** Opens the first response eagerly so a missing object or a refusal rejects fetch() itself. */
  async start(): Promise<void> {
    if (this.pos < this.desc.size) this.first = await this.openWithRetry();
  }

  abort(): void {
    this.ac.abort();
    this.current?.destroy();
  }

  async *chunks(): AsyncGenerator<Buffer> {
    const hash = this.offset === 0 && this.verify ? createHash("sha256") : undefined;
    let next = this.first;
    this.first = undefined;
    while (this.pos < this.desc.size) {
      if (!next) next = await this.openWithRetry();
      const { res } = next;
      let skip = next.skip;
      next = undefined;
      this.current = res;
      let received = 0; // bytes of this response's body, skipped ones included
      try {
        for await (const chunk of res as AsyncIterable<Buffer>) {
          received += chunk.length;
          let c = chunk;
          if (skip > 0) {
            if (c.length <= skip) {
              skip -= c.length;
              continue;
            }
            c = c.subarray(skip);
            skip = 0;
          }
          if (this.pos + c.length > this.desc.size) {
            throw failedPrecondition(`${this.what}: registry sent more than the ${this.desc.size} bytes the descriptor says`);
          }
          hash?.update(c);
          this.pos += c.length;
          yield c;
        }
        // The whole body came, as long as it said: the object is shorter than its descriptor,
        // and resuming would only be told so (416).
        const length = Number(header(res, "content-length") ?? Number.NaN);
        if (this.pos < this.desc.size && received === length) throw shorter(this.what, this.pos, this.desc.size);
      } catch (err) {
        if (err instanceof CkError) throw err;
        if (this.signal.aborted) throw canceled(this.what);
        this.broke(err, { broken: true });
      } finally {
        if (!res.readableEnded) res.destroy();
        this.current = undefined;
      }
      // A body destroyed with an error may end its iterator quietly: keep the cause.
      if (this.pos < this.desc.size) this.broke(res.errored ?? new Error(`connection ended at byte ${this.pos} of ${this.desc.size}`), { broken: true });
    }
    if (hash) {
      const actual = "sha256:" + hash.digest("hex");
      if (actual !== this.desc.digest) {
        throw failedPrecondition(`${this.what}: content has digest ${actual}, expected ${this.desc.digest}`);
      }
    }
  }

  private lastProblem = "";
  /** What ended the last attempt (a body cut off, an open that failed), until the next one is decided. */
  private failed?: { err: unknown; failure: Failure };

  private broke(err: unknown, failure: Failure): void {
    const e = classicCode(this.registry.rootCause(err));
    this.lastProblem = e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e);
    this.failed = { err, failure };
  }

  /**
   * Opens a response for the bytes from `pos`. After a failure, whether and when to try again
   * is retryDecision's (retry.ts) with this download's budget (`retries` resumes in all) and
   * its shorter backoff: a body that broke off is always resumed, an open is retried as every
   * request is (429, 502-504, a connection reset, refused or gone silent), after at least the
   * Retry-After the registry sent (a longer one than ck waits ends the download).
   */
  private async openWithRetry(): Promise<{ res: HttpResponse; skip: number }> {
    for (;;) {
      if (this.failed) {
        const { err, failure } = this.failed;
        this.failed = undefined;
        const d = retryDecision(failure, this.attempts + 1, { attempts: this.retries + 1, backoff: resumeBackoffMs });
        if (!d.retry) {
          if (d.why === "retry-after too long") throw gaveUp(err as RegistryError, retryAfterTooLong(d.retryAfterMs));
          if (d.why === "not retryable") throw err;
          throw unavailable(
            `${this.ref.domain}: ${this.what}: download broke at byte ${this.pos} of ${this.desc.size} (${this.lastProblem}); gave up after ${this.retries} resume attempts`,
          );
        }
        this.attempts++;
        this.log(`${this.what}: resuming at byte ${this.pos} of ${this.desc.size} after ${this.lastProblem} (attempt ${this.attempts} of ${this.retries})`);
        await sleep(d.delayMs, undefined, { signal: this.signal }).catch(() => {
          throw canceled(this.what);
        });
      }
      try {
        return await this.open();
      } catch (err) {
        if (this.signal.aborted) throw canceled(this.what);
        const failure = failureOf(err);
        if (!failure) throw err;
        this.broke(err, failure);
      }
    }
  }

  private async open(): Promise<{ res: HttpResponse; skip: number }> {
    const res = await this.registry.openObject(this.ref, this.desc, this.pos, this.signal);
    const status = res.statusCode ?? 0;
    if (status === 200) return { res, skip: this.pos };
    if (status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res, "content-range") ?? "");
      if (!m || Number(m[1]) !== this.pos) {
        res.destroy();
        throw new RegistryError(
          "Unknown",
          this.ref.domain,
          `${this.ref.domain}: ${this.what}: asked for bytes from ${this.pos}, got Content-Range ${JSON.stringify(header(res, "content-range") ?? "")}`,
        );
      }
      return { res, skip: 0 };
    }
    const body = await readLimited(res, MAX_ERROR_BODY, true);
    if (status === 404) throw notFoundIn(this.ref, this.what);
    // Range Not Satisfiable: nothing from this offset on, so the object ends before it.
    if (status === 416 && this.pos > 0) throw shorter(this.what, this.pos, this.desc.size, " or before");
    throw statusError(this.ref.domain, status, this.what, body, header(res, "retry-after"));
  }
}

const SHORT_OBJECT = Symbol("short object");

function shorter(what: string, end: number, size: number, orBefore = ""): CkError {
  return Object.assign(failedPrecondition(`${what}: the registry's object ends at byte ${end}${orBefore}, the descriptor says its size is ${size}`), { [SHORT_OBJECT]: true });
}

/**
 * Whether a fetch failed because the registry's object is shorter than its descriptor: bytes
 * already taken from it can never commit (unlike other FailedPreconditions of a fetch, such as
 * an untrusted certificate or missing credentials, after which a resume may still succeed).
 */
function isShortObject(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as Record<symbol, unknown>)[SHORT_OBJECT] === true;
}

/**
 * Whether the bytes a failed fetch put into an ingest can never commit, so that the ingest is
 * dropped rather than kept for a resume: the object is shorter than its descriptor, or the
 * commit (`atCommit`) refused them for their size or digest.
 */
export function bytesCanNeverCommit(err: unknown, atCommit: boolean): boolean {
  return isShortObject(err) || (atCommit && isClass(err, "FailedPrecondition"));
}

function notFoundIn(ref: ImageReference, what: string): RegistryError {
  return new RegistryError("NotFound", ref.domain, `${what} in ${JSON.stringify(`${ref.domain}/${ref.repository}`)}`, { status: 404 });
}

function canceled(what: string): CkError {
  return new CkError("Canceled", `${what}: canceled: context canceled`);
}

/**
 * undici's own codes for what node:http reports with system ones: a timeout is ETIMEDOUT, a
 * connection closed under a response ECONNRESET, as in the messages and logs users know. A
 * TLS or connect failure already carries the system code (undici passes it through).
 */
const CLASSIC_CODES: Record<string, string> = {
  UND_ERR_HEADERS_TIMEOUT: "ETIMEDOUT",
  UND_ERR_BODY_TIMEOUT: "ETIMEDOUT",
  UND_ERR_CONNECT_TIMEOUT: "ETIMEDOUT",
  UND_ERR_SOCKET: "ECONNRESET",
};

function classicCode(err: unknown): unknown {
  const e = err as NodeJS.ErrnoException | undefined;
  const code = e && typeof e.code === "string" ? CLASSIC_CODES[e.code] : undefined;
  if (!code) return err;
  return Object.assign(new Error(`${e!.message} (${e!.code})`, { cause: err }), { code });
}

/**
 * Whether this process started without the NODE_EXTRA_CA_CERTS it was given (ck's launcher,
 * tools/ck-launcher.cjs, keeps it from Node's start), so that Node's default trust lacks it.
 */
let extraCaDeferred = false;

/**
 * Called once at ck's start: puts back the NODE_EXTRA_CA_CERTS the launcher kept from Node's
 * start (for the programs ck runs), and makes its registry connections trust the file's
 * certificates themselves.
 */
export function deferExtraCaCerts(env: NodeJS.ProcessEnv = process.env): void {
  const file = env.CK_DEFERRED_EXTRA_CA_CERTS;
  delete env.CK_DEFERRED_EXTRA_CA_CERTS;
  if (!file) return;
  env.NODE_EXTRA_CA_CERTS = file;
  extraCaDeferred = true;
}

/** NODE_EXTRA_CA_CERTS's certificates, read once per file name (an unreadable one warned of once). */
const extraCaFiles = new Map<string, string[]>();

function extraCaPem(): string[] {
  const file = process.env.NODE_EXTRA_CA_CERTS;
  if (!file) return [];
  let pem = extraCaFiles.get(file);
  if (!pem) {
    try {
      pem = [readFileSync(file, "utf8")];
    } catch (err) {
      pem = [];
      // Node warns about an unreadable NODE_EXTRA_CA_CERTS itself, unless it never saw it.
      if (extraCaDeferred) process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${(err as Error).message}`);
    }
    extraCaFiles.set(file, pem);
  }
  return pem;
}

/**
 * TLS contexts by what they hold. Given a `ca` list (the ~150 default certificates and more),
 * Node builds a context for every connection, parsing each certificate again: ~48 ms per
 * connection here. One context per trust serves them all.
 */
const secureContexts = new Map<string, SecureContext>();

function secureContextFor(ca: string[], clientCert: RegistryTls["clientCert"]): SecureContext {
  const key = createHash("sha256").update(JSON.stringify([ca, clientCert ?? null])).digest("hex");
  let ctx = secureContexts.get(key);
  if (!ctx) {
    ctx = createSecureContext({ ca, ...(clientCert ? { cert: clientCert.cert, key: clientCert.key } : {}) });
    secureContexts.set(key, ctx);
  }
  return ctx;
}

/** Connect options for `tls`: extra CAs join the default ones (a `ca` given replaces them). */
function trustOptions(tls: RegistryTls | undefined): ConnectionOptions {
  const out: ConnectionOptions = {};
  if (tls?.ca?.length || extraCaDeferred) {
    out.secureContext = secureContextFor([...rootCertificates, ...extraCaPem(), ...(tls?.ca ?? [])], tls?.clientCert);
  } else if (tls?.clientCert) {
    out.cert = tls.clientCert.cert;
    out.key = tls.clientCert.key;
  }
  if (tls?.skipVerify) out.rejectUnauthorized = false;
  return out;
}

/** OpenSSL's words for a plain-HTTP answer to its TLS hello. */
const PLAIN_HTTP_ANSWER = /wrong version number|packet length too long|http request/i;
/** OpenSSL's verification failures (and Node's host name check): not worth a retry. */
const UNTRUSTED = /CERT|SELF_SIGNED|ISSUER|VERIFY_LEAF/;
/** The registry's TLS alerts about our client certificate (none sent, or not one it trusts). */
const CLIENT_CERT_REFUSED = /alert (certificate required|bad certificate|unknown ca|certificate unknown|handshake failure)|ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN)/i;

function networkError(host: string, what: string, err: unknown, signal: AbortSignal | undefined): CkError {
  if (signal?.aborted) return canceled(what);
  const e = classicCode(err) as NodeJS.ErrnoException;
  if (CLIENT_CERT_REFUSED.test(`${e.code ?? ""} ${e.message ?? ""}`)) {
    return new RegistryError(
      "FailedPrecondition",
      host,
      `${host}: ${what}: the registry refused the TLS handshake over the client certificate (${tlsAlert(e)}): give one it trusts with --tlscert FILE --tlskey FILE`,
      { cause: err },
    );
  }
  // TLS spoken to a plain-HTTP registry: OpenSSL reads "HTTP/1.1 400" as a record header.
  if (e.code === "EPROTO" && PLAIN_HTTP_ANSWER.test(e.message ?? "")) {
    return new RegistryError(
      "FailedPrecondition",
      host,
      `${host}: ${what}: the registry answered in plain HTTP, not TLS (server gave HTTP response to HTTPS client): for a plain-HTTP registry use --plain-http`,
      { cause: err },
    );
  }
  if (typeof e.code === "string" && UNTRUSTED.test(e.code)) {
    return new RegistryError(
      "FailedPrecondition",
      host,
      `${host}: ${what}: the registry's TLS certificate is not trusted (${e.code}): trust its CA with --tlscacert FILE, or skip verification with --skip-verify`,
      { cause: err },
    );
  }
  return new RegistryError("Unavailable", host, `${host}: ${what}: ${e.code ?? e.message ?? String(err)}`, { cause: err, ...(typeof e.code === "string" ? { errno: e.code } : {}) });
}

function tlsAlert(e: NodeJS.ErrnoException): string {
  return /alert ([a-z ]+)/i.exec(e.message ?? "")?.[0] ?? e.code ?? "handshake failed";
}

function scope(repository: string, actions: Action[]): string {
  return `repository:${repository}:${actions.join(",")}`;
}

function describe(desc: Descriptor): string {
  return `${isManifest(desc.mediaType) || isIndex(desc.mediaType) ? "manifest" : "blob"} ${desc.digest}`;
}

function checkDescriptor(desc: Descriptor, op: string): void {
  if (!desc || typeof desc !== "object") throw invalidArgument(`${op}: descriptor is missing`);
  if (!isDigest(desc.digest)) throw invalidArgument(`${op}: descriptor digest ${JSON.stringify(desc.digest)} is not sha256:<64 lowercase hex>`);
  if (!isSize(desc.size)) throw invalidArgument(`${op} ${desc.digest}: descriptor size ${JSON.stringify(desc.size)} is not a non-negative integer`);
  if (typeof desc.mediaType !== "string" || desc.mediaType === "") throw invalidArgument(`${op} ${desc.digest}: descriptor has no media type`);
}

function ok(res: HttpResponse): boolean {
  const s = res.statusCode ?? 0;
  return s >= 200 && s < 300;
}

function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Every challenge of a 401, as one header value: a registry may send them on separate
 * WWW-Authenticate lines, which node:http joins with commas and undici keeps as an array.
 */
function challenges(res: HttpResponse): string | undefined {
  const v = res.headers["www-authenticate"];
  return Array.isArray(v) ? v.join(", ") : v;
}

function contentType(res: HttpResponse): string {
  return (header(res, "content-type") ?? "").split(";")[0].trim();
}

/** The media type of a manifest body served with a generic or missing Content-Type. */
function inferMediaType(served: string, body: Buffer): string {
  if (isManifest(served) || isIndex(served)) return served;
  try {
    const doc = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
    if (typeof doc.mediaType === "string" && doc.mediaType) return doc.mediaType;
    if (Array.isArray(doc.manifests)) return MediaTypes.ociIndex;
    if (doc.config !== undefined) return MediaTypes.ociManifest;
  } catch {
    // fall through: not a manifest we understand
  }
  return served;
}

/** Reads a response body up to `limit` bytes; beyond it, undefined, or the first `limit` bytes when `truncate`. */
function readLimited(res: HttpResponse, limit: number, truncate: boolean): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    let done = false;
    res.on("data", (c: Buffer) => {
      if (done) return;
      if (n + c.length > limit) {
        done = true;
        if (truncate) parts.push(c.subarray(0, limit - n));
        res.destroy();
        resolve(truncate ? Buffer.concat(parts) : undefined);
        return;
      }
      parts.push(c);
      n += c.length;
    });
    res.once("end", () => {
      if (!done) {
        done = true;
        resolve(Buffer.concat(parts));
      }
    });
    res.once("error", (err) => {
      if (done) return;
      done = true;
      if (truncate) resolve(Buffer.concat(parts));
      else reject(err);
    });
  });
}

/** Consumes a body we do not need, so the keep-alive connection can be reused. */
async function drain(res: HttpResponse): Promise<void> {
  if (res.readableEnded || res.destroyed) return;
  await new Promise<void>((resolve) => {
    res.once("end", resolve);
    res.once("error", () => resolve());
    res.once("close", resolve);
    res.resume();
  });
}

