// The OCI distribution client against a real docker-registry on loopback, with an image built
// by umoci and pushed by skopeo; small loopback proxies in front of the registry demand
// authentication, cut connections, ignore Range, refuse HEAD or tamper with bytes.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { CkError } from "../../src/errdefs/errdefs.js";
import { loadDockerConfig } from "../../src/remotes/auth.js";
import { isUnauthorized } from "../../src/remotes/errors.js";
import { MediaTypes, children, parseManifest } from "../../src/remotes/manifest.js";
import { parseReference, type ImageReference } from "../../src/remotes/reference.js";
import { Registry, type RegistryOptions } from "../../src/remotes/registry.js";
import type { Descriptor } from "../../src/remotes/types.js";
import { buildImage, startRegistry, type BuiltImage, type TestRegistry } from "../helpers/registry.js";
import { rejectsClass } from "../helpers/errors.js";

const sha = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");
const T = { timeout: 60_000 };

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

// ---- a loopback proxy in front of the registry that misbehaves on demand

interface ProxyOptions {
  /** Demand authentication for everything under /v2/. */
  auth?: { scheme: "bearer" | "basic"; user: string; pass: string; anonymousTokens?: boolean };
  /** Bytes of body to pass before destroying the connection, per forwarded request (n counts from 0). */
  cutAfter?: (req: http.IncomingMessage, n: number) => number | undefined;
  /** Forward without the Range header, so the registry answers 200 with the whole blob. */
  ignoreRange?: boolean;
  /** Answer HEAD of manifests with 405, as some registries do. */
  refuseHead?: boolean;
  /** Flip the first body byte of matching GET responses. */
  tamper?: (req: http.IncomingMessage) => boolean;
  /** Bytes of body to pass before going silent (the connection stays open), per forwarded request. */
  stallAfter?: (req: http.IncomingMessage, n: number) => number | undefined;
  /** Answer blob GETs with a 307 to the same path on this other host. */
  redirectBlobsTo?: string;
  /** Rewrite absolute Location headers to paths, as some registries send them. */
  relativeLocation?: boolean;
  /** Point upload Locations at this other host (an upload service beside the registry). */
  uploadsTo?: string;
  /** Answer 401 to a mount from this repository whatever the token (no pull on it). */
  refuseMountFrom?: string;
  /** Hold the PUT that ends a blob upload this long before passing it on (a registry storing a big blob). */
  delayUploadEndMs?: number;
}

interface Seen {
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

interface Proxy {
  host: string;
  seen: Seen[];
  tokenRequests: number;
  /** The Authorization header of each token request ("-" for none). */
  tokenAuthorizations: string[];
  issued: string[];
  close(): Promise<void>;
}

async function startProxy(upstream: string, opts: ProxyOptions = {}): Promise<Proxy> {
  const [upHost, upPort] = upstream.split(":");
  const agent = new http.Agent({ keepAlive: true });
  const tokens = new Set<string>();
  const state: Proxy = { host: "", seen: [], tokenRequests: 0, tokenAuthorizations: [], issued: [], close: async () => {} };
  let forwarded = 0;
  const basicOk = (h: string | undefined) =>
    !!opts.auth && h === "Basic " + Buffer.from(`${opts.auth.user}:${opts.auth.pass}`).toString("base64");

  const server = http.createServer(async (req, res) => {
    const url = req.url ?? "/";
    if (url.startsWith("/token")) {
      state.tokenRequests++;
      state.tokenAuthorizations.push(req.headers.authorization ?? "-");
      if (req.method === "POST") {
        // OAuth2 refresh-token grant with an identity token
        const form = new URLSearchParams(await readAll(req));
        const good = form.get("grant_type") === "refresh_token" && form.get("refresh_token") === IDENTITY_TOKEN && form.get("service") === "test";
        const token = randomBytes(16).toString("hex");
        if (good) {
          tokens.add(token);
          state.issued.push(token);
        }
        res.writeHead(good ? 200 : 401, { "content-type": "application/json" });
        res.end(JSON.stringify(good ? { access_token: token, expires_in: 300 } : { error: "invalid_grant" }));
        return;
      }
      req.resume();
      if (!opts.auth?.anonymousTokens && !basicOk(req.headers.authorization)) {
        res.writeHead(401, { "content-type": "application/json" });
        res.end(JSON.stringify({ details: "bad credentials" }));
        return;
      }
      const token = randomBytes(16).toString("hex");
      tokens.add(token);
      state.issued.push(token);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ token, expires_in: 300 }));
      return;
    }
    state.seen.push({ method: req.method ?? "", url, range: req.headers.range, authorization: req.headers.authorization });
    if (opts.auth && url.startsWith("/v2/")) {
      const a = req.headers.authorization ?? "";
      const allowed = opts.auth.scheme === "basic" ? basicOk(a) : a.startsWith("Bearer ") && tokens.has(a.slice(7));
      if (!allowed) {
        req.resume();
        const repo = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//.exec(url)?.[1] ?? "";
        res.writeHead(401, {
          "content-type": "application/json",
          "www-authenticate":
            opts.auth.scheme === "basic"
              ? 'Basic realm="test registry"'
              : `Bearer realm="http://${state.host}/token",service="test",scope="repository:${repo}:pull"`,
        });
        res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }));
        return;
      }
    }
    if (opts.refuseMountFrom && req.method === "POST" && new URL(url, "http://x").searchParams.get("from") === opts.refuseMountFrom) {
      req.resume();
      res.writeHead(401, { "content-type": "application/json", "www-authenticate": `Bearer realm="http://${state.host}/token",service="test",scope="repository:${opts.refuseMountFrom}:pull"` });
      res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "no pull on the source" }] }));
      return;
    }
    if (opts.refuseHead && req.method === "HEAD" && url.includes("/manifests/")) {
      req.resume();
      res.writeHead(405);
      res.end();
      return;
    }
    if (opts.redirectBlobsTo && req.method === "GET" && url.includes("/blobs/sha256:")) {
      req.resume();
      res.writeHead(307, { location: `http://${opts.redirectBlobsTo}${url}` });
      res.end();
      return;
    }
    if (opts.delayUploadEndMs && req.method === "PUT" && url.includes("/blobs/uploads/")) await new Promise((r) => setTimeout(r, opts.delayUploadEndMs));
    const headers = { ...req.headers };
    delete headers.authorization;
    if (opts.ignoreRange) delete headers.range;
    const n = forwarded++;
    const cut = opts.cutAfter?.(req, n);
    const stall = opts.stallAfter?.(req, n);
    const tamper = req.method === "GET" && (opts.tamper?.(req) ?? false);
    const up = http.request({ host: upHost, port: Number(upPort), method: req.method, path: url, headers, agent }, (upRes) => {
      const outHeaders = { ...upRes.headers };
      if (opts.relativeLocation && typeof outHeaders.location === "string") {
        const loc = new URL(outHeaders.location, `http://${state.host}`);
        outHeaders.location = loc.pathname + loc.search;
      }
      if (opts.uploadsTo && typeof outHeaders.location === "string" && url.includes("/blobs/uploads/")) {
        const loc = new URL(outHeaders.location, `http://${state.host}`);
        outHeaders.location = `http://${opts.uploadsTo}${loc.pathname}${loc.search}`;
      }
      res.writeHead(upRes.statusCode ?? 502, outHeaders);
      let sent = 0;
      let first = true;
      let stalled = false;
      upRes.on("data", (chunk: Buffer) => {
        let c = chunk;
        if (tamper && first && c.length > 0) {
          c = Buffer.from(c);
          c[0] ^= 0xff;
        }
        first = false;
        if (cut !== undefined && sent + c.length >= cut) {
          res.write(c.subarray(0, cut - sent), () => res.socket?.destroy());
          sent = cut;
          upRes.destroy();
          return;
        }
        if (stalled) return;
        if (stall !== undefined && sent + c.length >= stall) {
          res.write(c.subarray(0, stall - sent));
          sent = stall;
          stalled = true; // swallow the rest and never end the response
          return;
        }
        sent += c.length;
        res.write(c);
      });
      upRes.on("end", () => stalled || res.end());
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () =>
    new Promise((resolve) => {
      agent.destroy();
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}

const IDENTITY_TOKEN = "id-token-9f8e7d";

function readAll(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => resolve(Buffer.concat(parts).toString("utf8")));
  });
}

// ---- the specifications

// Both HTTP engines: node:http (the CLI's) and undici (ckd's), same behaviour.
for (const engine of ["node", "undici"] as const)
describe(`remotes against a loopback docker-registry (${engine})`, { timeout: 300_000 }, () => {
  let reg: TestRegistry;
  let image: BuiltImage;
  let ref: ImageReference;
  const clients: Registry[] = [];
  const proxies: Proxy[] = [];
  const servers: http.Server[] = [];
  /** A small server of our own on loopback, for answers docker-registry never gives; its host. */
  const serve = async (handler: http.RequestListener): Promise<string> => {
    const server = http.createServer(handler);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return `127.0.0.1:${(server.address() as AddressInfo).port}`;
  };
  const tmp = mkdtempSync(join(tmpdir(), "ck-remotes-"));
  const busybox = readFileSync("/bin/busybox");
  const client = (opts: RegistryOptions = {}) => {
    const c = new Registry({ plainHttp: true, engine, ...opts });
    clients.push(c);
    return c;
  };
  const proxy = async (opts: ProxyOptions = {}) => {
    const p = await startProxy(reg.host, opts);
    proxies.push(p);
    return p;
  };
  const via = (p: Proxy, r: ImageReference = ref): ImageReference => ({ ...r, domain: p.host });
  const layerDesc = (i: number): Descriptor => image.manifest.layers[i];
  const manifestDesc = (): Descriptor => ({ mediaType: image.manifest.mediaType ?? MediaTypes.ociManifest, digest: image.manifestDigest, size: image.manifestBytes.length });

  before(async () => {
    reg = await startRegistry();
    image = await buildImage({
      host: reg.host,
      repo: "remotes/app",
      tag: "v1",
      layers: [
        { "bin/busybox": busybox, "bin/sh": { symlink: "busybox" }, "data/random.bin": randomBytes(1 << 20) },
        { "etc/motd": "hello\n", "etc/old": "to be deleted\n" },
        { "etc/old": { delete: true }, "etc/new": "new\n" },
      ],
    });
    ref = parseReference(image.reference);
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const p of proxies) await p.close();
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
    await reg?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test("resolve finds the manifest skopeo pushed; fetch delivers every blob with its digest", T, async () => {
    const r = client();
    const desc = await r.resolve(ref);
    assert.deepEqual(desc, { mediaType: MediaTypes.ociManifest, digest: image.manifestDigest, size: image.manifestBytes.length });
    assert.deepEqual(await r.resolve(parseReference(`${reg.host}/remotes/app@${image.manifestDigest}`)), desc, "by digest");
    // One GET: the same descriptor, and the document itself.
    const withBody = await r.resolveWithManifest(ref);
    assert.deepEqual(withBody.descriptor, desc);
    assert.ok(withBody.bytes.equals(image.manifestBytes));
    await rejectsClass(r.resolveWithManifest(parseReference(`${reg.host}/remotes/app@sha256:${"0".repeat(64)}`)), "NotFound", /manifest/);

    const bytes = await r.fetchBytes(ref, desc);
    assert.ok(bytes.equals(image.manifestBytes));
    const parsed = parseManifest(desc, bytes);
    assert.equal(parsed.layers.length, 3);
    assert.equal(parsed.config?.digest, image.configDigest);
    for (const d of children(parsed)) {
      const blob = await collect(await r.fetch(ref, d));
      assert.equal(blob.length, d.size);
      assert.equal(sha(blob), d.digest);
    }
    const config = JSON.parse((await r.fetchBytes(ref, parsed.config!)).toString());
    assert.deepEqual(config.rootfs, image.config.rootfs);
    assert.equal(await r.blobExists(ref, layerDesc(0).digest), true);
    assert.equal(await r.blobExists(ref, "sha256:" + "0".repeat(64)), false);
  });

  test("fetch from an offset delivers the tail", T, async () => {
    const r = client();
    const d = layerDesc(0);
    const whole = await r.fetchBytes(ref, d);
    const tail = await collect(await r.fetch(ref, d, { offset: 1000 }));
    assert.ok(tail.equals(whole.subarray(1000)));
    assert.equal((await collect(await r.fetch(ref, d, { offset: d.size }))).length, 0);
    await rejectsClass(r.fetch(ref, d, { offset: d.size + 1 }), "InvalidArgument", /offset/);
  });

  test("resolve falls back to GET when the registry refuses HEAD", T, async () => {
    const p = await proxy({ refuseHead: true });
    const desc = await client().resolve(via(p));
    assert.equal(desc.digest, image.manifestDigest);
    assert.equal(desc.size, image.manifestBytes.length);
    assert.ok(p.seen.some((s) => s.method === "GET" && s.url.includes("/manifests/v1")));
  });

  test("missing tags and blobs are NotFound naming them", T, async () => {
    const r = client();
    await rejectsClass(r.resolve(parseReference(`${reg.host}/remotes/app:missing`)), "NotFound", /remotes\/app:missing/);
    await rejectsClass(r.resolve(parseReference(`${reg.host}/remotes/nothing:v1`)), "NotFound", /remotes\/nothing:v1/);
    const ghost = { mediaType: MediaTypes.ociLayerGzip, digest: "sha256:" + "1".repeat(64), size: 10 };
    await rejectsClass(r.fetch(ref, ghost), "NotFound", new RegExp(ghost.digest));
    await rejectsClass(r.fetchBytes(ref, ghost), "NotFound", new RegExp(ghost.digest));
  });

  test("fetchBytes refuses a manifest descriptor over 4 MiB before downloading anything", T, async () => {
    const p = await proxy();
    const big = { ...manifestDesc(), size: 5 << 20 };
    await rejectsClass(client().fetchBytes(via(p), big), "InvalidArgument", new RegExp(`manifest ${big.digest}: size 5242880 is larger than the 4194304 byte limit`));
    await rejectsClass(client().fetchBytes(via(p), layerDesc(0), 100), "InvalidArgument", /larger than the 100 byte limit/);
    assert.equal(p.seen.length, 0);
    await rejectsClass(client().fetch(ref, { ...layerDesc(0), digest: "sha256:xyz" }), "InvalidArgument", /sha256:xyz/);
  });

  test("tampered bytes fail the stream before it ends, naming both digests", T, async () => {
    const d = layerDesc(0);
    const p = await proxy({ tamper: (req) => (req.url ?? "").includes(`/blobs/${d.digest}`) });
    const r = client();
    const stream = await r.fetch(via(p), d);
    let ended = false;
    stream.on("end", () => (ended = true));
    await rejectsClass(collect(stream), "FailedPrecondition", new RegExp(`content has digest sha256:[0-9a-f]{64}, expected ${d.digest}`));
    assert.equal(ended, false, "no clean end on corrupt data");
    await rejectsClass(r.fetchBytes(via(p), d), "FailedPrecondition", /expected/);
    // From an offset the caller's content store checks the digest; the stream does not.
    const tail = await collect(await r.fetch(via(p), d, { offset: 10 }));
    assert.equal(tail.length, d.size - 10);
    // Nor with verify: false (ck's pull, whose daemon verifies at commit): the bytes arrive as sent.
    const unverified = await collect(await r.fetch(via(p), d, { verify: false }));
    assert.equal(unverified.length, d.size);
    // A manifest served with a wrong body is refused the same way.
    const mp = await proxy({ tamper: (req) => (req.url ?? "").includes("/manifests/") });
    await rejectsClass(r.fetchBytes(via(mp), manifestDesc()), "FailedPrecondition", new RegExp(`expected ${image.manifestDigest}`));
  });

  describe("a large blob over a connection that breaks", () => {
    const big = randomBytes(8 << 20);
    const desc: Descriptor = { mediaType: MediaTypes.ociLayer, digest: sha(big), size: big.length };
    let bigRef: ImageReference;
    const isBig = (req: http.IncomingMessage) => req.method === "GET" && (req.url ?? "").includes(`/blobs/${desc.digest}`);

    before(async () => {
      bigRef = parseReference(`${reg.host}/remotes/big:v1`);
      const progress: number[] = [];
      const result = await client().pushBlob(bigRef, desc, () => Readable.from([big.subarray(0, 3 << 20), big.subarray(3 << 20)]), {
        onProgress: (n) => progress.push(n),
      });
      assert.equal(result, "uploaded");
      assert.equal(progress.at(-1), big.length);
    });

    test("resumes with Range requests and delivers the verified bytes", T, async () => {
      const p = await proxy({ cutAfter: (req) => (isBig(req) ? 3 << 20 : undefined) });
      const log: string[] = [];
      const got = await collect(await client({ log: (m) => log.push(m) }).fetch(via(p, bigRef), desc));
      assert.ok(got.equals(big));
      const ranges = p.seen.filter((s) => s.range).map((s) => s.range);
      assert.deepEqual(ranges, [`bytes=${3 << 20}-`, `bytes=${6 << 20}-`]);
      assert.ok(log.some((l) => /resuming at byte 3145728/.test(l)), log.join("\n"));
    });

    test("a server that ignores Range is skipped to where the download broke", T, async () => {
      const p = await proxy({ ignoreRange: true, cutAfter: (req, n) => (isBig(req) && n === 0 ? 5 << 20 : undefined) });
      const got = await collect(await client().fetch(via(p, bigRef), desc));
      assert.ok(got.equals(big));
      assert.ok(p.seen.some((s) => s.range === `bytes=${5 << 20}-`), "a Range request was made");
    });

    test("gives up with Unavailable after the configured resume attempts", T, async () => {
      const p = await proxy({ cutAfter: (req) => (isBig(req) ? 1 << 20 : undefined) });
      const stream = await client({ retries: 2 }).fetch(via(p, bigRef), desc);
      await rejectsClass(collect(stream), "Unavailable", /gave up after 2 resume attempts/);
      assert.equal(p.seen.filter((s) => s.range).length, 2);
    });

    test("a connection that goes silent times out and is resumed", T, async () => {
      const p = await proxy({ stallAfter: (req, n) => (isBig(req) && n === 0 ? 2 << 20 : undefined) });
      const log: string[] = [];
      const got = await collect(await client({ timeoutMs: 500, log: (m) => log.push(m) }).fetch(via(p, bigRef), desc));
      assert.ok(got.equals(big));
      assert.ok(p.seen.some((s) => s.range === `bytes=${2 << 20}-`));
      assert.ok(log.some((l) => /resuming at byte 2097152 of 8388608 after ETIMEDOUT/.test(l)), log.join("\n"));
    });

    test("aborting the signal fails the stream with Canceled", T, async () => {
      const p = await proxy({ stallAfter: (req) => (isBig(req) ? 1 << 20 : undefined) });
      const ac = new AbortController();
      const stream = await client().fetch(via(p, bigRef), desc, { signal: ac.signal });
      let n = 0;
      stream.on("data", (c: Buffer) => {
        n += c.length;
        if (n >= 1 << 20) ac.abort();
      });
      await rejectsClass(new Promise((resolve, reject) => stream.on("end", resolve).on("error", reject)), "Canceled", /canceled/);
      assert.equal(n, 1 << 20);
    });

    test("more bytes than the descriptor says is an error", T, async () => {
      const short = { ...desc, size: desc.size - 1 };
      await rejectsClass(collect(await client().fetch(bigRef, short)), "FailedPrecondition", /more than the 8388607 bytes/);
    });

    test("fewer bytes than the descriptor says is an error at once (no resume), also when resuming past the end", T, async () => {
      const long = { ...desc, size: desc.size + 1 };
      const p = await proxy({});
      await rejectsClass(collect(await client().fetch(via(p, bigRef), long)), "FailedPrecondition", /ends at byte 8388608, the descriptor says its size is 8388609/);
      assert.ok(!p.seen.some((s) => s.range), "no resume was asked for");
      // A resume from the object's end (a store held all its bytes): the registry answers 416.
      await rejectsClass(client().fetch(via(p, bigRef), long, { offset: desc.size }), "FailedPrecondition", /ends at byte 8388608 or before/);
    });
  });

  test("push uploads every blob once, reports 'exists' the second time, and skopeo reads the copy", T, async () => {
    const src = client();
    const dst = parseReference(`${reg.host}/remotes/copy:v2`);
    const mdesc = await src.resolve(ref);
    const mbytes = await src.fetchBytes(ref, mdesc);
    const blobs = children(parseManifest(mdesc, mbytes));
    const data = new Map<string, Buffer>();
    for (const d of blobs) data.set(d.digest, await src.fetchBytes(ref, d));

    const push = async () => {
      const results: string[] = [];
      for (const d of blobs) results.push(await src.pushBlob(dst, d, () => Readable.from([data.get(d.digest)!])));
      await src.pushManifest(dst, mdesc, mbytes, "v2");
      return results;
    };
    assert.deepEqual(await push(), blobs.map(() => "uploaded"));
    assert.deepEqual(await push(), blobs.map(() => "exists"));
    assert.deepEqual(await src.resolve(dst), mdesc);
    const raw = execFileSync("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${reg.host}/remotes/copy:v2`]);
    assert.ok(Buffer.from(raw).equals(mbytes));

    // A source that gives the wrong bytes never commits.
    const d0 = blobs[1];
    const wrong = parseReference(`${reg.host}/remotes/wrong:v1`);
    await rejectsClass(src.pushBlob(wrong, d0, () => Readable.from([Buffer.from("not the layer")])), "FailedPrecondition", /expected \d+ bytes with digest/);
    assert.equal(await src.blobExists(wrong, d0.digest), false);
    // Manifest bytes must match their descriptor, and a digest reference must be theirs.
    await rejectsClass(src.pushManifest(dst, { ...mdesc, size: mdesc.size + 1 }, mbytes, "x"), "InvalidArgument", /descriptor says/);
    await rejectsClass(src.pushManifest(dst, mdesc, mbytes, "sha256:" + "0".repeat(64)), "InvalidArgument", /reference digest/);
  });

  test("upload Locations may be relative paths", T, async () => {
    const p = await proxy({ relativeLocation: true });
    const blob = randomBytes(100_000);
    const d = { mediaType: MediaTypes.ociLayer, digest: sha(blob), size: blob.length };
    const dst = parseReference(`${p.host}/remotes/relative:v1`);
    assert.equal(await client().pushBlob(dst, d, () => Readable.from([blob])), "uploaded");
    assert.equal(await client().blobExists(dst, d.digest), true);
    assert.ok(p.seen.some((s) => s.method === "PUT" && s.url.includes("/blobs/uploads/")));
  });

  test("cross-repository mount, and the upload fallback when the source lacks the blob", T, async () => {
    const r = client();
    const d = layerDesc(1);
    const target = parseReference(`${reg.host}/remotes/mounted:v1`);
    assert.equal(await r.pushBlob(target, d, () => assert.fail("mounting reads no bytes"), { mountFrom: ["remotes/app"] }), "mounted");
    assert.equal(await r.blobExists(target, d.digest), true);

    const d2 = layerDesc(2);
    const bytes = await r.fetchBytes(ref, d2);
    const fallback = parseReference(`${reg.host}/remotes/mounted2:v1`);
    assert.equal(await r.pushBlob(fallback, d2, () => Readable.from([bytes]), { mountFrom: ["remotes/empty"] }), "uploaded");
    assert.equal(await r.blobExists(fallback, d2.digest), true);
  });

  // ---- a registry of our own, for answers docker-registry never gives (refusals, overload)

  interface MockSeen {
    method: string;
    url: string;
    /** head, mount, start (POST), upload (PUT of bytes), manifest (PUT), get-manifest, head-manifest, get-blob, delete, other */
    step: string;
    contentLength?: string;
    transferEncoding?: string;
    contentType?: string;
    bytes: number;
    at: number;
  }
  type MockAnswer = { status: number; headers?: Record<string, string>; body?: string } | "reset" | undefined;
  /**
   * A minimal registry: blobs by digest (a PUT ?digest= stores them when the length and digest
   * agree), manifests by reference; `hook(step, n, req)` answers instead of it (n counts that
   * step from 0), "reset" destroys the connection without an answer.
   */
  const mockRegistry = async (hook?: (step: string, n: number, req: http.IncomingMessage) => MockAnswer, opts: { location?: (n: number) => string } = {}) => {
    const blobs = new Map<string, Buffer>();
    const manifests = new Map<string, { type: string; bytes: Buffer }>();
    const seen: MockSeen[] = [];
    const counts = new Map<string, number>();
    let sessions = 0;
    const host = await serve((req, res) => {
      const parts: Buffer[] = [];
      req.on("data", (c: Buffer) => parts.push(c));
      req.on("end", () => {
        const u = new URL(req.url ?? "/", "http://x");
        const body = Buffer.concat(parts);
        const path = u.pathname;
        const step =
          req.method === "POST" ? (u.searchParams.has("mount") ? "mount" : "start")
          : req.method === "PUT" && path.includes("/blobs/uploads/") ? "upload"
          : req.method === "PUT" && path.includes("/manifests/") ? "manifest"
          : req.method === "HEAD" && path.includes("/blobs/") ? "head"
          : req.method === "HEAD" && path.includes("/manifests/") ? "head-manifest"
          : req.method === "GET" && path.includes("/manifests/") ? "get-manifest"
          : req.method === "GET" && path.includes("/blobs/") ? "get-blob"
          : req.method === "DELETE" ? "delete"
          : "other";
        const h = req.headers;
        seen.push({ method: req.method ?? "", url: req.url ?? "", step, contentLength: h["content-length"], transferEncoding: h["transfer-encoding"], contentType: h["content-type"], bytes: body.length, at: Date.now() });
        const n = counts.get(step) ?? 0;
        counts.set(step, n + 1);
        const answer = hook?.(step, n, req);
        if (answer === "reset") {
          req.socket.destroy();
          return;
        }
        if (answer) {
          res.writeHead(answer.status, { "content-type": "application/json", ...answer.headers });
          res.end(answer.body ?? "");
          return;
        }
        const tail = path.split("/").at(-1) ?? "";
        if (step === "head" || step === "get-blob") {
          const b = blobs.get(tail);
          if (!b) return void res.writeHead(404).end();
          res.writeHead(200, { "content-length": String(b.length), "docker-content-digest": tail });
          return void res.end(step === "get-blob" ? b : undefined);
        }
        if (step === "start" || step === "mount") {
          const location = opts.location?.(sessions) ?? `/v2/app/blobs/uploads/s${sessions}?_state=a%2Bb%3D==`;
          sessions++;
          return void res.writeHead(202, { location }).end();
        }
        if (step === "upload") {
          const digest = u.searchParams.get("digest") ?? "";
          if (sha(body) !== digest) return void res.writeHead(400).end(JSON.stringify({ errors: [{ code: "DIGEST_INVALID", message: "digest did not match" }] }));
          blobs.set(digest, body);
          return void res.writeHead(201, { "docker-content-digest": digest }).end();
        }
        if (step === "manifest") {
          manifests.set(tail, { type: h["content-type"] ?? "", bytes: body });
          manifests.set(sha(body), { type: h["content-type"] ?? "", bytes: body });
          return void res.writeHead(201, { "docker-content-digest": sha(body) }).end();
        }
        if (step === "head-manifest" || step === "get-manifest") {
          const m = manifests.get(tail);
          if (!m) return void res.writeHead(404).end();
          res.writeHead(200, { "content-type": m.type, "content-length": String(m.bytes.length), "docker-content-digest": sha(m.bytes) });
          return void res.end(step === "get-manifest" ? m.bytes : undefined);
        }
        if (step === "delete") return void res.writeHead(204).end();
        res.writeHead(404).end();
      });
    });
    const ref = parseReference(`${host}/app:v1`);
    return { host, ref, blobs, manifests, seen, steps: () => seen.map((x) => x.step), count: (step: string) => counts.get(step) ?? 0 };
  };
  const blobOf = (size: number) => {
    const bytes = randomBytes(size);
    return { bytes, desc: { mediaType: MediaTypes.ociLayer, digest: sha(bytes), size } as Descriptor };
  };
  const tooMany = (seconds: string, status = 429) => ({ status, headers: { "retry-after": seconds }, body: JSON.stringify({ errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }] }) });

  test("a blob goes up in one PUT with its Content-Length (no chunked PATCH, which some registries refuse), ?digest= appended to the Location's query as sent", T, async () => {
    // Refuses a body without a length, as registries and proxies that need it up front do.
    const m = await mockRegistry((_step, _n, req) => (req.headers["transfer-encoding"] === "chunked" ? { status: 411 } : undefined));
    const { bytes, desc } = blobOf(300_000);
    const progress: number[] = [];
    const pushed = await client().pushBlob(m.ref, desc, () => Readable.from([bytes.subarray(0, 100_000), bytes.subarray(100_000)]), { onProgress: (n) => progress.push(n) });
    assert.equal(pushed, "uploaded");
    assert.deepEqual(m.steps(), ["head", "start", "upload"]);
    const put = m.seen[2]!;
    assert.equal(put.url, `/v2/app/blobs/uploads/s0?_state=a%2Bb%3D==&digest=${encodeURIComponent(desc.digest)}`, "the registry's query byte for byte");
    assert.deepEqual([put.contentLength, put.transferEncoding, put.contentType, put.bytes], ["300000", undefined, "application/octet-stream", 300_000]);
    assert.ok(m.blobs.get(desc.digest)?.equals(bytes));
    assert.equal(progress.at(-1), 300_000);

    // A Location that is a query alone keeps the path of the POST.
    const q = await mockRegistry(undefined, { location: () => "?_state=x%3D&y=1" });
    assert.equal(await client().pushBlob(q.ref, desc, () => Readable.from([bytes])), "uploaded");
    assert.equal(q.seen.find((x) => x.step === "upload")?.url, `/v2/app/blobs/uploads/?_state=x%3D&y=1&digest=${encodeURIComponent(desc.digest)}`);

    // A source with more bytes than the descriptor: the request fails before its body is
    // complete, the session is cancelled, nothing is stored.
    const long = await mockRegistry();
    await rejectsClass(client().pushBlob(long.ref, desc, () => Readable.from([bytes, Buffer.from("more")])), "FailedPrecondition", /the source gave more than 300000 bytes, expected 300000 bytes with digest/);
    assert.equal(long.blobs.size, 0);
    assert.equal(long.count("delete"), 1);
    const short = await mockRegistry();
    await rejectsClass(client().pushBlob(short.ref, desc, () => Readable.from([bytes.subarray(1)])), "FailedPrecondition", /the source gave 299999 bytes with digest sha256:[0-9a-f]{64}, expected 300000/);
    assert.equal(short.blobs.size, 0);
    // The PUT never ended (the mock sees only requests that did), and was not sent again.
    assert.deepEqual(short.steps(), ["head", "start", "delete"]);
  });

  test("429 with Retry-After: 1 once at every push step: each is sent again a second later, and the push succeeds", { timeout: 60_000 }, async () => {
    const m = await mockRegistry((step, n) => (n === 0 && ["head", "start", "upload", "manifest"].includes(step) ? tooMany("1") : undefined));
    const { bytes, desc } = blobOf(50_000);
    const log: string[] = [];
    const r = client({ log: (l) => log.push(l) });
    let opened = 0;
    const progress: number[] = [];
    const started = Date.now();
    assert.equal(await r.pushBlob(m.ref, desc, () => (opened++, Readable.from([bytes])), { onProgress: (n) => progress.push(n) }), "uploaded");
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: desc, layers: [] }));
    await r.pushManifest(m.ref, { mediaType: MediaTypes.ociManifest, digest: sha(manifest), size: manifest.length }, manifest, "v1");
    // HEAD twice; POST, then PUT refused: the upload starts over with a new session and the bytes again.
    assert.deepEqual(m.steps(), ["head", "head", "start", "start", "upload", "start", "upload", "manifest", "manifest"]);
    assert.equal(opened, 2);
    assert.ok(m.blobs.get(desc.digest)?.equals(bytes));
    assert.ok(m.manifests.get("v1")?.bytes.equals(manifest));
    // Each retry waited the second asked for.
    for (const step of ["head", "upload", "manifest"]) {
      const [a, b] = m.seen.filter((x) => x.step === step);
      assert.ok(b!.at - a!.at >= 950, `${step}: ${b!.at - a!.at} ms`);
    }
    assert.ok(Date.now() - started >= 3900);
    // A HEAD's answer has no body to give the registry's words.
    // The upload's POST and PUT share their attempts: the PUT's retry is the third.
    const retries = log.filter((l) => /trying again/.test(l));
    assert.equal(retries.length, 4, log.join("\n"));
    assert.match(retries[0]!, /^127\.0\.0\.1:\d+: blob sha256:[0-9a-f]{64} in "127\.0\.0\.1:\d+\/app": HTTP 429; trying again in 1000 ms \(attempt 2 of 4\)$/);
    assert.match(retries[1]!, /: blob sha256:[0-9a-f]{64} upload to "127\.0\.0\.1:\d+\/app": HTTP 429 \(TOOMANYREQUESTS: slow down\); trying again in 1000 ms \(attempt 2 of 4\)$/);
    assert.match(retries[2]!, /: blob sha256:[0-9a-f]{64} upload to .*: HTTP 429 \(TOOMANYREQUESTS: slow down\); trying again in 1000 ms \(attempt 3 of 4\)$/);
    assert.match(retries[3]!, /: manifest sha256:[0-9a-f]{64} push to "127\.0\.0\.1:\d+\/app:v1": HTTP 429 \(TOOMANYREQUESTS: slow down\); trying again in 1000 ms \(attempt 2 of 4\)$/);
    assert.equal(progress.at(-1), 50_000);
  });

  test("a registry that always answers 503: Unavailable after four attempts, in seconds; a Retry-After past 30 s ends at once", T, async () => {
    const m = await mockRegistry(() => ({ status: 503, body: JSON.stringify({ errors: [{ code: "UNAVAILABLE", message: "service unavailable" }] }) }));
    const { bytes, desc } = blobOf(1000);
    let started = Date.now();
    await rejectsClass(client().pushBlob(m.ref, desc, () => Readable.from([bytes])), "Unavailable", /: blob sha256:[0-9a-f]{64} in ".*\/app": HTTP 503 \(gave up after 4 attempts\): unavailable$/);
    assert.ok(Date.now() - started < 4000, `${Date.now() - started} ms`);
    assert.deepEqual(m.steps(), ["head", "head", "head", "head"]);
    const manifest = Buffer.from("{}");
    started = Date.now();
    await rejectsClass(client().pushManifest(m.ref, { mediaType: MediaTypes.ociManifest, digest: sha(manifest), size: 2 }, manifest, "v1"), "Unavailable", /HTTP 503 \(UNAVAILABLE: service unavailable\) \(gave up after 4 attempts\): unavailable$/);
    assert.ok(Date.now() - started < 4000);
    assert.equal(m.count("manifest"), 4);

    const slow = await mockRegistry(() => tooMany("3600"));
    started = Date.now();
    await rejectsClass(client().pushBlob(slow.ref, desc, () => Readable.from([bytes])), "Unavailable", /HTTP 429 .*\(the registry asks to retry after 3600 s, longer than the 30 s ck waits\)/);
    assert.ok(Date.now() - started < 1000);
    assert.deepEqual(slow.steps(), ["head"]);
  });

  test("a connection reset under the upload: a new session, the bytes again from the start; other refusals are not retried", T, async () => {
    const m = await mockRegistry((step, n) => (step === "upload" && n === 0 ? "reset" : undefined));
    const { bytes, desc } = blobOf(200_000);
    let opened = 0;
    const progress: number[] = [];
    assert.equal(await client().pushBlob(m.ref, desc, () => (opened++, Readable.from([bytes.subarray(0, 100_000), bytes.subarray(100_000)])), { onProgress: (n) => progress.push(n) }), "uploaded");
    assert.deepEqual(m.steps(), ["head", "start", "upload", "start", "upload"]);
    assert.equal(opened, 2);
    assert.deepEqual(progress, [100_000, 200_000, 100_000, 200_000]);
    assert.ok(m.blobs.get(desc.digest)?.equals(bytes));

    const refused = await mockRegistry((step) => (step === "upload" ? { status: 400, body: JSON.stringify({ errors: [{ code: "BLOB_UPLOAD_INVALID", message: "nope" }] }) } : undefined));
    await rejectsClass(client().pushBlob(refused.ref, desc, () => Readable.from([bytes])), "Unknown", /unexpected HTTP status 400 \(BLOB_UPLOAD_INVALID: nope\)/);
    assert.equal(refused.count("upload"), 1);
  });

  test("a cross-repository mount the registry refuses (403 DENIED, 404 NAME_UNKNOWN) falls back to an ordinary upload", T, async () => {
    for (const [status, code] of [[403, "DENIED"], [404, "NAME_UNKNOWN"]] as const) {
      const m = await mockRegistry((step) => (step === "mount" ? { status, body: JSON.stringify({ errors: [{ code, message: "requested access to the resource is denied" }] }) } : undefined));
      const { bytes, desc } = blobOf(4096);
      const log: string[] = [];
      assert.equal(await client({ log: (l) => log.push(l) }).pushBlob(m.ref, desc, () => Readable.from([bytes]), { mountFrom: ["other/repo"] }), "uploaded", String(status));
      assert.deepEqual(m.steps(), ["head", "mount", "start", "upload"]);
      assert.match(m.seen[1]!.url, /\?mount=sha256%3A[0-9a-f]{64}&from=other%2Frepo$/);
      assert.ok(log.some((l) => new RegExp(`mounting blob sha256:[0-9a-f]{64} from other/repo refused \\(HTTP ${status}: .*\\(${code}: requested access to the resource is denied\\).*\\); uploading it$`).test(l)), log.join("\n"));
      assert.ok(m.blobs.get(desc.digest)?.equals(bytes));
    }
    // A mount answered 429 is asked again, not given up.
    const busy = await mockRegistry((step, n) => (step === "mount" && n === 0 ? tooMany("0") : step === "mount" ? { status: 201 } : undefined));
    const { bytes, desc } = blobOf(10);
    assert.equal(await client().pushBlob(busy.ref, desc, () => Readable.from([bytes]), { mountFrom: ["other/repo"] }), "mounted");
    assert.deepEqual(busy.steps(), ["head", "mount", "mount"]);
  });

  test("pull: a manifest HEAD or GET answered 429 or 503 is asked again after its Retry-After; so is a blob GET", T, async () => {
    const m = await mockRegistry((step, n) => (n === 0 && ["head-manifest", "get-manifest", "get-blob"].includes(step) ? tooMany("1", step === "get-blob" ? 503 : 429) : undefined));
    const { bytes, desc } = blobOf(5000);
    m.blobs.set(desc.digest, bytes);
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: desc, layers: [] }));
    m.manifests.set("v1", { type: MediaTypes.ociManifest, bytes: manifest });
    m.manifests.set(sha(manifest), { type: MediaTypes.ociManifest, bytes: manifest });
    const r = client();
    assert.equal((await r.resolve(m.ref)).digest, sha(manifest));
    assert.equal((await r.resolveWithManifest(m.ref)).descriptor.digest, sha(manifest));
    assert.ok((await r.fetchBytes(m.ref, desc)).equals(bytes));
    assert.deepEqual(m.steps(), ["head-manifest", "head-manifest", "get-manifest", "get-manifest", "get-blob", "get-blob"]);
    for (const step of ["head-manifest", "get-manifest", "get-blob"]) {
      const [a, b] = m.seen.filter((x) => x.step === step);
      assert.ok(b!.at - a!.at >= 950, `${step}: ${b!.at - a!.at} ms`);
    }
  });

  test("a blob GET answered 500 is not asked again, as no request is (the download's resumes follow retryDecision); 502 is", T, async () => {
    const { bytes, desc } = blobOf(5000);
    const failing = await mockRegistry((step) => (step === "get-blob" ? { status: 500, body: JSON.stringify({ errors: [{ code: "UNKNOWN", message: "storage driver error" }] }) } : undefined));
    failing.blobs.set(desc.digest, bytes);
    const log: string[] = [];
    await rejectsClass(client({ log: (l) => log.push(l) }).fetchBytes(failing.ref, desc), "Unavailable", /: blob sha256:[0-9a-f]{64}: HTTP 500 \(UNKNOWN: storage driver error\): unavailable$/);
    assert.equal(failing.count("get-blob"), 1);
    assert.ok(!log.some((l) => /resuming/.test(l)), log.join("\n"));
    const gateway = await mockRegistry((step, n) => (step === "get-blob" && n === 0 ? { status: 502 } : undefined));
    gateway.blobs.set(desc.digest, bytes);
    assert.ok((await client().fetchBytes(gateway.ref, desc)).equals(bytes));
    assert.equal(gateway.count("get-blob"), 2);
  });

  test("a manifest that names content the repository lacks: FailedPrecondition with docker-registry's words, not Unknown", T, async () => {
    const r = client();
    const dst = parseReference(`${reg.host}/remotes/partial:v1`);
    // An index whose manifest was never pushed to this repository (ck push --platform of old did this).
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ ...manifestDesc(), platform: { os: "linux", architecture: "amd64" } }] }));
    await rejectsClass(
      r.pushManifest(dst, { mediaType: MediaTypes.ociIndex, digest: sha(index), size: index.length }, index, "v1"),
      "FailedPrecondition",
      new RegExp(`names content the repository does not have \\(MANIFEST_BLOB_UNKNOWN: [^)]*${image.manifestDigest}[^)]*\\); push what it refers to first`),
    );
    // A manifest whose config and layers were never pushed there.
    await rejectsClass(r.pushManifest(dst, manifestDesc(), image.manifestBytes, "v1"), "FailedPrecondition", /MANIFEST_BLOB_UNKNOWN: blob unknown to registry sha256:/);
  });

  describe("authentication", () => {
    const user = "tester";
    const pass = "pw-Zq8!xK2v-secret";
    const configFor = (host: string, password = pass) => {
      const f = join(tmp, `config-${host.replace(/[:.]/g, "_")}-${password.length}.json`);
      writeFileSync(f, JSON.stringify({ auths: { [host]: { auth: Buffer.from(`${user}:${password}`).toString("base64") } } }));
      return loadDockerConfig(f);
    };
    const noSecrets = (lines: string[], p: Proxy) => {
      const text = lines.join("\n");
      assert.ok(!text.includes(pass), "password in log");
      assert.ok(!text.includes(Buffer.from(`${user}:${pass}`).toString("base64")), "basic header in log");
      for (const t of p.issued) assert.ok(!text.includes(t), "token in log");
    };

    test("bearer: refused without credentials, with the wrong ones; works with docker config credentials", T, async () => {
      const p = await proxy({ auth: { scheme: "bearer", user, pass } });
      const r = via(p);
      const anon = client();
      await rejectsClass(anon.resolve(r), "FailedPrecondition", new RegExp(`^${p.host}: unauthorized: token server http://${p.host}/token refused anonymous access`));
      await anon.resolve(r).catch((err) => assert.ok(isUnauthorized(err)));
      const wrong = client({ credentials: configFor(p.host, "wrong-password") });
      await rejectsClass(wrong.resolve(r), "FailedPrecondition", /unauthorized: .*refused user "tester"/);

      const lines: string[] = [];
      const authed = client({ credentials: configFor(p.host), log: (m) => lines.push(m) });
      const before = p.tokenRequests;
      const desc = await authed.resolve(r);
      assert.equal(desc.digest, image.manifestDigest);
      const bytes = await authed.fetchBytes(r, desc);
      for (const d of children(parseManifest(desc, bytes))) assert.equal(sha(await authed.fetchBytes(r, d)), d.digest);
      assert.equal(p.tokenRequests - before, 1, "one token for the pull scope, reused");
      // push through the same proxy: a new scope, a new token, the upload carries it
      const blob = randomBytes(4096);
      const dst = { ...r, repository: "remotes/authpush" };
      assert.equal(await authed.pushBlob(dst, { mediaType: MediaTypes.ociLayer, digest: sha(blob), size: blob.length }, () => Readable.from([blob])), "uploaded");
      assert.ok(lines.length > 0);
      noSecrets(lines, p);
    });

    test("bearer: an identity token from the docker config is exchanged for access", T, async () => {
      const p = await proxy({ auth: { scheme: "bearer", user, pass } });
      const f = join(tmp, "config-identity.json");
      writeFileSync(f, JSON.stringify({ auths: { [`https://${p.host}/v2/`]: { identitytoken: IDENTITY_TOKEN } } }));
      const lines: string[] = [];
      const desc = await client({ credentials: loadDockerConfig(f), log: (m) => lines.push(m) }).resolve(via(p));
      assert.equal(desc.digest, image.manifestDigest);
      assert.ok(!lines.join("\n").includes(IDENTITY_TOKEN));
      noSecrets(lines, p);
    });

    test("an identity token the token server will not take by OAuth2 POST (404, 400, 401) is sent with GET and basic authentication; a token server's 404 is not NotFound", T, async () => {
      const blob = randomBytes(100);
      const seen: string[] = [];
      let postStatus = 0;
      let getStatus = 200;
      const host = await serve((req, res) => {
        req.resume();
        if (req.url?.startsWith("/token")) {
          seen.push(`${req.method} ${req.headers.authorization ?? "-"}`);
          if (req.method === "POST") {
            res.writeHead(postStatus);
            return res.end();
          }
          const ok = getStatus === 200 && req.headers.authorization === "Basic " + Buffer.from(`:${IDENTITY_TOKEN}`).toString("base64");
          res.writeHead(ok ? 200 : getStatus === 200 ? 401 : getStatus, { "content-type": "application/json" });
          return res.end(ok ? JSON.stringify({ token: "good" }) : "");
        }
        if (req.headers.authorization !== "Bearer good") {
          res.writeHead(401, { "www-authenticate": `Bearer realm="http://${host}/token",service="reg"` });
          return res.end();
        }
        res.writeHead(200, { "content-length": String(blob.length) });
        res.end(blob);
      });
      const d = { mediaType: MediaTypes.ociLayer, digest: sha(blob), size: blob.length };
      const fetchWith = () => client({ credentials: () => ({ identityToken: IDENTITY_TOKEN }) }).fetchBytes(parseReference(`${host}/app:v1`), d);
      for (const status of [404, 400, 401]) {
        postStatus = status;
        seen.length = 0;
        assert.deepEqual(await fetchWith(), blob, `POST answered ${status}`);
        assert.deepEqual(seen, ["POST -", `GET Basic ${Buffer.from(`:${IDENTITY_TOKEN}`).toString("base64")}`]);
      }
      // 405 without a user name: no GET (as containerd); the failure names the token server.
      postStatus = 405;
      seen.length = 0;
      await rejectsClass(fetchWith(), "Unknown", new RegExp(`token server http://${host}/token: unexpected HTTP status 405`));
      assert.deepEqual(seen, ["POST -"]);
      // A token server answering 404 to both: its endpoint is missing, the blob is not.
      postStatus = 404;
      getStatus = 404;
      await rejectsClass(fetchWith(), "Unknown", new RegExp(`token server http://${host}/token: unexpected HTTP status 404`));
    });

    test("a token realm that redirects is followed (same host with our credentials, another host without them)", T, async () => {
      const blob = randomBytes(100);
      const basic = "Basic " + Buffer.from(`${user}:${pass}`).toString("base64");
      const elsewhere: string[] = [];
      const other = await serve((req, res) => {
        elsewhere.push(req.headers.authorization ?? "-");
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ token: "from-elsewhere" }));
      });
      let realm = "/token";
      const host = await serve((req, res) => {
        const url = req.url ?? "/";
        if (url.startsWith("/token")) {
          // Where the realm sends the request: a path of its own, or another host.
          const to = realm === "/token" ? url.replace("/token", "/v2/token") : `http://${other}${url}`;
          res.writeHead(307, { location: to });
          return res.end();
        }
        if (url.startsWith("/v2/token")) {
          const ok = req.headers.authorization === basic;
          res.writeHead(ok ? 200 : 401, { "content-type": "application/json" });
          return res.end(ok ? JSON.stringify({ token: "from-here" }) : "");
        }
        const want = realm === "/token" ? "Bearer from-here" : "Bearer from-elsewhere";
        if (req.headers.authorization !== want) {
          res.writeHead(401, { "www-authenticate": `Bearer realm="http://${host}/token",service="reg"` });
          return res.end();
        }
        res.writeHead(200, { "content-length": String(blob.length) });
        res.end(blob);
      });
      const d = { mediaType: MediaTypes.ociLayer, digest: sha(blob), size: blob.length };
      const credentials = () => ({ username: user, password: pass });
      assert.deepEqual(await client({ credentials }).fetchBytes(parseReference(`${host}/app:v1`), d), blob);
      realm = "/token-elsewhere";
      assert.deepEqual(await client({ credentials }).fetchBytes(parseReference(`${host}/app:v1`), d), blob);
      assert.deepEqual(elsewhere, ["-"], "the other host's token server got no credentials");
    });

    test("a redirect to another host follows without our Authorization header", T, async () => {
      const plain = await proxy();
      const p = await proxy({ auth: { scheme: "bearer", user, pass }, redirectBlobsTo: plain.host });
      const r = client({ credentials: configFor(p.host) });
      const d = layerDesc(0);
      assert.equal(sha(await r.fetchBytes(via(p), d)), d.digest);
      const hops = plain.seen.filter((s) => s.url.includes(d.digest));
      assert.equal(hops.length, 1);
      assert.equal(hops[0].authorization, undefined, "no credentials leave the registry's host");
      assert.ok(p.seen.some((s) => s.url.includes(d.digest) && s.authorization?.startsWith("Bearer ")));
    });

    test("a redirect to another host that challenges: answered with that host's credentials (none), never the registry's", T, async () => {
      // The host blob GETs are redirected to issues its own bearer tokens; the registry asks
      // for nothing, or for Basic.
      for (const registryAuth of [undefined, { scheme: "basic" as const, user, pass }]) {
        const storage = await proxy({ auth: { scheme: "bearer", user: "storage-user", pass: "storage-pass", anonymousTokens: true } });
        const p = await proxy({ ...(registryAuth ? { auth: registryAuth } : {}), redirectBlobsTo: storage.host });
        const r = client({ credentials: configFor(p.host) });
        const d = layerDesc(2);
        assert.equal(sha(await r.fetchBytes(via(p), d)), d.digest);
        assert.deepEqual(storage.tokenAuthorizations, ["-"], "the storage host's token server was asked anonymously");
        const hops = storage.seen.filter((s) => s.url.includes(d.digest));
        assert.ok(hops.every((h) => !h.authorization?.startsWith("Basic ")), JSON.stringify(hops));
        assert.ok(hops.some((h) => h.authorization !== undefined && storage.issued.includes(h.authorization.slice("Bearer ".length))), "its own token reached it");
        // The storage host's token never goes to the registry; the registry's challenge stays its own.
        const before = p.seen.length;
        assert.equal(sha(await r.fetchBytes(via(p), layerDesc(1))), layerDesc(1).digest);
        for (const s of p.seen.slice(before)) assert.equal(s.authorization?.split(" ")[0], registryAuth ? "Basic" : undefined, JSON.stringify(s));
      }
    });

    test("challenges on separate WWW-Authenticate lines (Basic, then Bearer) are all seen: Bearer is answered", T, async () => {
      const blob = randomBytes(100);
      const basic = "Basic " + Buffer.from(`${user}:${pass}`).toString("base64");
      const host = await serve((req, res) => {
        if (req.url?.startsWith("/token")) {
          res.writeHead(req.headers.authorization === basic ? 200 : 401, { "content-type": "application/json" });
          return res.end(JSON.stringify({ token: "T" }));
        }
        if (req.headers.authorization !== "Bearer T") {
          res.writeHead(401, [["www-authenticate", 'Basic realm="legacy"'], ["www-authenticate", `Bearer realm="http://${host}/token",service="reg"`]]);
          return res.end();
        }
        res.writeHead(200, { "content-length": String(blob.length) });
        res.end(blob);
      });
      const r = client({ credentials: () => ({ username: user, password: pass }) });
      assert.deepEqual(await r.fetchBytes(parseReference(`${host}/app:v1`), { mediaType: MediaTypes.ociLayer, digest: sha(blob), size: blob.length }), blob);
    });

    test("an upload Location on another host gets the bytes without our Authorization header", T, async () => {
      const uploads = await proxy();
      const p = await proxy({ auth: { scheme: "basic", user, pass }, uploadsTo: uploads.host });
      const blob = randomBytes(8192);
      const dst = { ...via(p), repository: "remotes/foreignupload" };
      assert.equal(await client({ credentials: configFor(p.host) }).pushBlob(dst, { mediaType: MediaTypes.ociLayer, digest: sha(blob), size: blob.length }, () => Readable.from([blob])), "uploaded");
      const there = uploads.seen.filter((x) => x.method === "PATCH" || x.method === "PUT");
      assert.ok(there.length >= 1, "the upload went to the other host");
      assert.deepEqual(there.map((x) => x.authorization), there.map(() => undefined), "no credentials sent there");
      assert.ok(p.seen.some((x) => x.method === "POST" && x.authorization?.startsWith("Basic ")), "the registry itself got them");
    });

    test("the PUT that ends an upload may wait past the idle timeout while the registry stores the blob", T, async () => {
      const p = await proxy({ delayUploadEndMs: 1500 });
      const blob = randomBytes(4096);
      const dst = { ...via(p), repository: "remotes/slowput" };
      const pushed = await client({ timeoutMs: 500 }).pushBlob(dst, { mediaType: MediaTypes.ociLayer, digest: sha(blob), size: blob.length }, () => Readable.from([blob]));
      assert.equal(pushed, "uploaded");
    });

    test("a mount from a repository the credentials may not pull (401) falls back to an upload", T, async () => {
      const p = await proxy({ auth: { scheme: "bearer", user, pass }, refuseMountFrom: "private/app" });
      const blob = randomBytes(4096);
      const dst = { ...via(p), repository: "remotes/mountfallback" };
      const lines: string[] = [];
      const pushed = await client({ credentials: configFor(p.host), log: (m) => lines.push(m) }).pushBlob(dst, { mediaType: MediaTypes.ociLayer, digest: sha(blob), size: blob.length }, () => Readable.from([blob]), { mountFrom: ["private/app"] });
      assert.equal(pushed, "uploaded");
      assert.ok(lines.some((l) => /mounting blob .* from private\/app not authorized; uploading it/.test(l)), lines.join("\n"));
    });

    test("bearer: anonymous tokens work", T, async () => {
      const p = await proxy({ auth: { scheme: "bearer", user, pass, anonymousTokens: true } });
      const desc = await client().resolve(via(p));
      assert.equal(desc.digest, image.manifestDigest);
      assert.equal(p.tokenRequests, 1);
    });

    test("basic: refused without credentials; works with them; no secret in the log", T, async () => {
      const p = await proxy({ auth: { scheme: "basic", user, pass } });
      const r = via(p);
      await rejectsClass(client().resolve(r), "FailedPrecondition", new RegExp(`^${p.host}: unauthorized: registry demands basic authentication and no credentials`));
      await rejectsClass(client({ credentials: configFor(p.host, "nope") }).resolve(r), "FailedPrecondition", /unauthorized/);
      const lines: string[] = [];
      const authed = client({ credentials: configFor(p.host), log: (m) => lines.push(m) });
      const desc = await authed.resolve(r);
      assert.equal(sha(await authed.fetchBytes(r, desc)), image.manifestDigest);
      assert.equal(sha(await authed.fetchBytes(r, layerDesc(2))), layerDesc(2).digest);
      noSecrets(lines, p);
    });

    test("basic: credentials from a credential helper (credsStore), as the docker CLI gets them", T, async () => {
      const p = await proxy({ auth: { scheme: "basic", user, pass } });
      const bin = join(tmp, "helper-bin");
      mkdirSync(bin, { recursive: true });
      const script = join(bin, "docker-credential-cktest");
      writeFileSync(script, `#!/bin/sh\nread url\n[ "$url" = "${p.host}" ] || { echo "credentials not found in native keychain"; exit 1; }\nprintf '{"ServerURL":"%s","Username":"${user}","Secret":"${pass}"}' "$url"\n`);
      chmodSync(script, 0o755);
      const f = join(tmp, "config-helper.json");
      writeFileSync(f, JSON.stringify({ credsStore: "cktest" }));
      const saved = process.env.PATH;
      process.env.PATH = `${bin}:${saved}`;
      try {
        const lines: string[] = [];
        const authed = client({ credentials: loadDockerConfig(f), log: (m) => lines.push(m) });
        const desc = await authed.resolve(via(p));
        assert.equal(desc.digest, image.manifestDigest);
        noSecrets(lines, p);
      } finally {
        process.env.PATH = saved;
      }
    });

    test("errors never carry credentials", T, async () => {
      const p = await proxy({ auth: { scheme: "bearer", user, pass } });
      const err = await client({ credentials: configFor(p.host, pass + "x") })
        .resolve(via(p))
        .then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof CkError);
      assert.ok(!err.message.includes(pass) && !String(err.stack).includes(pass), err.message);
    });
  });
});
