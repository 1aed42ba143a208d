// ck.services.fetch.v1 against a real docker-registry on loopback (images built by umoci,
// pushed by skopeo), behind a recording proxy that notes who asked for what (User-Agent):
// ckd downloads the blobs itself, the client only the manifests; a daemon without the service
// gets the client-side path; bad requests write nothing; a held ref is waited on; credentials
// reach the registry and nowhere else.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runNode, CK } from "../helpers/daemon.js";
import { startRegistry, buildImage, type BuiltImage } from "../helpers/registry.js";
import { startProxy, type TestProxy } from "../helpers/proxy.js";
import { rejectsClass } from "../helpers/errors.js";
import { ApiContent } from "../../src/cli/api-content.js";
import { EventLog } from "../../src/eventstore/log.js";

describe("fetch in the daemon (ck.services.fetch.v1)", { timeout: 300_000 }, () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let proxy: TestProxy;
  let image: BuiltImage;
  const daemons: TestDaemon[] = [];
  const ref = () => `${proxy.host}/fid/app:v1`;
  /** A daemon with an empty root (and its own nats-server unless told otherwise: every stream takes all of containerd.io.>). */
  const fresh = async (opts: Parameters<typeof TestDaemon.start>[0] = {}) => {
    const d = await TestDaemon.start(opts);
    daemons.push(d);
    return d;
  };
  const ck = (d: TestDaemon, ns: string, args: string[]) => runNode(CK, ["--address", d.address, "-n", ns, ...args]);
  /** Who fetched which kind of object since `from` (index into proxy.seen). */
  const agents = (from: number, kind: "blobs" | "manifests") =>
    new Set(proxy.seen.slice(from).filter((r) => r.method === "GET" && r.url.includes(`/${kind}/`)).map((r) => (r.userAgent ?? "").split("/")[0]));
  const blobRequest = (over: Record<string, unknown> = {}) => {
    const layer = image.manifest.layers[0];
    return {
      reference: ref(),
      blob: { media_type: layer.mediaType, digest: layer.digest, size: layer.size },
      ref: `layer-${layer.digest}`,
      labels: {},
      access: { plain_http: true },
      ...over,
    };
  };
  /** An image whose one layer is incompressible (3 MiB), built once when first asked for. */
  let noisyImage: Promise<BuiltImage> | undefined;
  const noisy = () => (noisyImage ??= buildImage({ host: registry.host, repo: "fid/noisy", tag: "v1", layers: [{ "r.bin": randomBytes(3 << 20) }] }));
  const drain = async (it: AsyncIterable<unknown>) => {
    const out: unknown[] = [];
    for await (const m of it) out.push(m);
    return out;
  };

  before(async () => {
    nats = await startTestNats();
    registry = await startRegistry();
    image = await buildImage({
      host: registry.host,
      repo: "fid/app",
      tag: "v1",
      layers: [{ "a.bin": Buffer.alloc(3 << 20, 7) }, { "b.txt": "b\n" }],
    });
    proxy = await startProxy(registry.host);
  });
  after(async () => {
    for (const d of daemons) await d.cleanup();
    await proxy?.close();
    await registry?.stop();
    await nats?.cleanup();
  });

  test("ck fetch: ckd GETs the blobs, ck only the manifest; --client-fetch GETs them in ck", async () => {
    const d = await fresh();
    let from = proxy.seen.length;
    const r = await ck(d, "a", ["fetch", "--plain-http", ref()]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(agents(from, "blobs"), new Set(["ckd"]));
    assert.deepEqual(agents(from, "manifests"), new Set(["ck"]));
    const ls = await ck(d, "a", ["content", "ls", "-q"]);
    const want = [image.manifestDigest, image.configDigest, ...image.manifest.layers.map((l: { digest: string }) => l.digest)].sort();
    assert.deepEqual(ls.stdout.trim().split("\n").sort(), want);
    const check = await ck(d, "a", ["images", "check"]);
    assert.match(check.stdout, /complete \(4\/4\)/);
    // The layers carry the labels the client asked for (distribution source), as over Content.Write.
    const info = await d.client("a").call("content", "Info", { digest: image.manifest.layers[0].digest });
    assert.equal(info.info.labels["containerd.io/distribution.source.127.0.0.1"], "fid/app");

    const d2 = await fresh();
    from = proxy.seen.length;
    const r2 = await ck(d2, "a", ["fetch", "--plain-http", "--client-fetch", ref()]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.deepEqual(agents(from, "blobs"), new Set(["ck"]));
  });

  test("a daemon without ck.fetch (disabled_plugins): Blob is Unimplemented and ck fetch writes the blobs itself", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ck-nofetch-"));
    const config = join(dir, "ckd.toml");
    await writeFile(config, `disabled_plugins = ["io.containerd.grpc.v1.ck.fetch"]\n`);
    const d = await fresh({ extraArgs: ["--config", config] });
    const api = d.client("b");
    try {
      const { plugins } = await api.call("introspection", "Plugins", { filters: [] });
      assert.ok(!plugins.some((p: { id: string }) => p.id === "ck.fetch"));
      await rejectsClass(drain(api.stream("fetch", "Blob", blobRequest())), "NotImplemented");
      const from = proxy.seen.length;
      const r = await ck(d, "b", ["fetch", "--plain-http", ref()]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(agents(from, "blobs"), new Set(["ck"]));
    } finally {
      api.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("bad input: InvalidArgument (or NotFound) naming the field, nothing fetched or written", async () => {
    const d = await fresh();
    const api = d.client("bad");
    try {
      const from = proxy.seen.length;
      const layer = image.manifest.layers[0];
      const cases: [Record<string, unknown>, "InvalidArgument" | "NotFound", RegExp][] = [
        [{ blob: { digest: "sha256:xyz", size: 10 } }, "InvalidArgument", /blob\.digest/],
        [{ blob: { digest: "md5:" + "0".repeat(32), size: 10 } }, "InvalidArgument", /blob\.digest/],
        [{ blob: { digest: layer.digest, size: 0 } }, "InvalidArgument", /blob\.size/],
        [{ ref: "" }, "InvalidArgument", /ref must not be empty/],
        [{ reference: "UPPER/Case:!!" }, "InvalidArgument", /reference/],
        [{ access: { plain_http: true, tls_client_cert: "-----BEGIN CERTIFICATE-----" } }, "InvalidArgument", /tls_client_key/],
        [{ labels: { k: "v".repeat(4096) } }, "InvalidArgument", /^info\.Labels: label key and value greater than maximum size/],
      ];
      for (const [over, cls, re] of cases) await rejectsClass(drain(api.stream("fetch", "Blob", blobRequest(over))), cls, re);
      await rejectsClass(drain(api.stream("fetch", "Blob", blobRequest(), { metadata: { "containerd-lease": "no-such-lease" } })), "NotFound", /lease/);
      assert.equal(proxy.seen.length, from, "nothing was asked of the registry");
      assert.deepEqual((await api.call("content", "ListStatuses", { filters: [] })).statuses ?? [], []);
      assert.equal((await ck(d, "bad", ["content", "ls", "-q"])).stdout.trim(), "");
      // Zero bytes is a size for the empty blob only (an image's empty layer or config): done
      // without asking the registry.
      const empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
      const got: any[] = [];
      for await (const m of api.stream<any>("fetch", "Blob", blobRequest({ blob: { media_type: "application/vnd.oci.image.layer.v1.tar", digest: empty, size: 0 }, ref: "empty" }))) got.push(m);
      assert.equal(got.at(-1).status, "done");
      assert.equal(Number((await api.call("content", "Info", { digest: empty })).info.size), 0);
      assert.equal(proxy.seen.length, from, "nothing was asked of the registry");
      await api.call("content", "Delete", { digest: empty });
    } finally {
      api.close();
    }
  });

  test("a ref another writer holds: Blob answers Unavailable (locked); ck fetch waits, then completes", async () => {
    const d = await fresh();
    const api = d.client("lk");
    const layer = image.manifest.layers[0];
    try {
      const w = await new ApiContent(api).open(`layer-${layer.digest}`, { expected: layer.digest, total: layer.size });
      assert.notEqual(w, "exists");
      if (w === "exists") return;
      await rejectsClass(drain(api.stream("fetch", "Blob", blobRequest())), "Unavailable", /locked/);
      const fetching = ck(d, "lk", ["fetch", "--plain-http", ref()]);
      await new Promise((r) => setTimeout(r, 700));
      w.close(); // the holder goes away without committing: the ref is free for the waiting fetch
      const r = await fetching;
      assert.equal(r.code, 0, r.stderr);
      const info = await api.call("content", "Info", { digest: layer.digest });
      assert.equal(Number(info.info.size), layer.size);
    } finally {
      api.close();
    }
  });

  test("download groups: at most max_downloads of a group download at once (the rest answer waiting); blobs on disk are answered without waiting", async () => {
    const d = await fresh();
    const api = d.client("dg");
    const layers = image.manifest.layers as { mediaType: string; digest: string; size: number }[];
    const req = (l: (typeof layers)[number], group: string, max: number) =>
      blobRequest({ blob: { media_type: l.mediaType, digest: l.digest, size: l.size }, ref: `layer-${l.digest}`, download_group: group, max_downloads: max });
    const statuses = (msgs: unknown[]) => msgs.map((m) => (m as { status: string }).status);
    // Slow blob answers, so downloads allowed to overlap do.
    proxy.rule = (r) => (r.method === "GET" && r.url?.includes("/blobs/") ? { delayMs: 200 } : undefined);
    try {
      proxy.maxBlobGets = 0;
      const one = await Promise.all(layers.map((l) => drain(api.stream("fetch", "Blob", req(l, "g1", 1)))));
      assert.equal(proxy.maxBlobGets, 1, "one download at a time");
      assert.equal(one.filter((m) => statuses(m).includes("waiting")).length, layers.length - 1, JSON.stringify(one));
      for (const m of one) assert.equal(statuses(m).at(-1), "done");

      // The same blobs into another namespace: on disk already, so none waits for a slot.
      const other = d.client("dg2");
      try {
        const from = proxy.seen.length;
        const warm = await Promise.all(layers.map((l) => drain(other.stream("fetch", "Blob", req(l, "g2", 1)))));
        for (const m of warm) assert.deepEqual(statuses(m), ["done"]);
        assert.equal(proxy.seen.slice(from).filter((s) => s.url.includes("/blobs/")).length, 0, "nothing asked of the registry");
      } finally {
        other.close();
      }

      // Two groups (two fetches) do not share a limit: a daemon with an empty store.
      const d2 = await fresh();
      const api2 = d2.client("dg");
      try {
        proxy.maxBlobGets = 0;
        const solo = await Promise.all(layers.map((l, i) => drain(api2.stream("fetch", "Blob", req(l, `solo-${i}`, 1)))));
        assert.equal(proxy.maxBlobGets, layers.length);
        for (const m of solo) assert.ok(!statuses(m).includes("waiting"));
      } finally {
        api2.close();
      }
    } finally {
      proxy.rule = undefined;
      api.close();
    }
  });

  test("download groups: a download that fails (blob not in the registry, wrong size) frees its slot, leaves no blob or ingest, and the group's next blob goes ahead", async () => {
    const d = await fresh();
    const api = d.client("dgbad");
    const [big, small] = image.manifest.layers as { mediaType: string; digest: string; size: number }[];
    const req = (blob: { mediaType: string; digest: string; size: number }) =>
      blobRequest({ blob: { media_type: blob.mediaType, digest: blob.digest, size: blob.size }, ref: `layer-${blob.digest}`, download_group: "g", max_downloads: 1 });
    const missing = { mediaType: big!.mediaType, digest: "sha256:" + createHash("sha256").update("not in the registry").digest("hex"), size: 123 };
    const tooLong = { ...small!, size: small!.size + 1 };
    proxy.rule = (r) => (r.method === "GET" && r.url?.includes("/blobs/") ? { delayMs: 100 } : undefined);
    try {
      // Each bad one holds the group's only slot while it downloads; the good one waits behind them.
      const [a, b, c] = await Promise.allSettled([
        drain(api.stream("fetch", "Blob", req(missing))),
        drain(api.stream("fetch", "Blob", req(tooLong))),
        drain(api.stream("fetch", "Blob", req(big!))),
      ]);
      assert.equal(a.status, "rejected");
      await rejectsClass(Promise.reject((a as PromiseRejectedResult).reason), "NotFound");
      assert.equal(b.status, "rejected");
      await rejectsClass(Promise.reject((b as PromiseRejectedResult).reason), "FailedPrecondition", /size/);
      assert.equal(c.status, "fulfilled", String((c as PromiseRejectedResult).reason));
      assert.equal(((c as PromiseFulfilledResult<unknown[]>).value.at(-1) as { status: string }).status, "done");
      // A blob longer than one write batch (incompressible): some of its bytes reach the
      // ingest before the short end shows, and they go too.
      const layer = (await noisy()).manifest.layers[0] as { mediaType: string; digest: string; size: number };
      assert.ok(layer.size > 2 << 20, `layer of ${layer.size} bytes`);
      await rejectsClass(
        drain(api.stream("fetch", "Blob", { ...req({ ...layer, size: layer.size + 1 }), reference: `${proxy.host}/fid/noisy:v1` })),
        "FailedPrecondition",
        /size/,
      );
      // Nothing of the failed ones: no blob, no ingest left behind.
      for (const digest of [missing.digest, tooLong.digest, layer.digest]) await rejectsClass(api.call("content", "Info", { digest }), "NotFound");
      assert.deepEqual((await api.call("content", "ListStatuses", { filters: [] })).statuses ?? [], []);
      // The slot is free: the group's next download starts without waiting.
      const next = await drain(api.stream("fetch", "Blob", req(small!)));
      assert.ok(!next.some((m) => (m as { status: string }).status === "waiting"), JSON.stringify(next));
      assert.equal((next.at(-1) as { status: string }).status, "done");
    } finally {
      proxy.rule = undefined;
      api.close();
    }
  });

  test("a registry that serves a layer shorter than its descriptor (as long as its Content-Length says): FailedPrecondition, no ingest left, in ckd and in ck --client-fetch", async () => {
    const img = await noisy();
    const layer = img.manifest.layers[0] as { digest: string; size: number };
    const bytes = Buffer.from(await (await fetch(`http://${registry.host}/v2/fid/noisy/blobs/${layer.digest}`)).arrayBuffer());
    assert.equal(bytes.length, layer.size);
    const half = bytes.subarray(0, 2 << 20);
    proxy.rule = (r) =>
      r.method === "GET" && r.url?.includes(`/blobs/${layer.digest}`)
        ? { answer: { status: 200, headers: { "content-length": String(half.length), "content-type": "application/octet-stream" }, body: half } }
        : undefined;
    const d = await fresh();
    const api = d.client("short");
    try {
      for (const extra of [[], ["--client-fetch"]]) {
        const r = await ck(d, "short", ["fetch", "--plain-http", ...extra, `${proxy.host}/fid/noisy:v1`]);
        assert.notEqual(r.code, 0, `${extra.join(" ")}: ${r.stdout}`);
        assert.match(r.stderr, /ends at byte 2097152, the descriptor says its size is/, extra.join(" "));
        assert.deepEqual((await api.call("content", "ListStatuses", { filters: [] })).statuses ?? [], [], `${extra.join(" ")}: no ingest left`);
        await rejectsClass(api.call("content", "Info", { digest: layer.digest }), "NotFound");
      }
    } finally {
      proxy.rule = undefined;
      api.close();
    }
  });

  test("a layer the registry does not have: NotFound and no ingest left, in ckd and in ck --client-fetch", async () => {
    const img = await noisy();
    const layer = img.manifest.layers[0] as { digest: string };
    proxy.rule = (r) => (r.method === "GET" && r.url?.includes(`/blobs/${layer.digest}`) ? { answer: { status: 404, body: '{"errors":[{"code":"BLOB_UNKNOWN"}]}' } } : undefined);
    const d = await fresh();
    const api = d.client("gone");
    try {
      for (const extra of [[], ["--client-fetch"]]) {
        const r = await ck(d, "gone", ["fetch", "--plain-http", ...extra, `${proxy.host}/fid/noisy:v1`]);
        assert.notEqual(r.code, 0, `${extra.join(" ")}: ${r.stdout}`);
        assert.match(r.stderr, /not found/, extra.join(" "));
        assert.deepEqual((await api.call("content", "ListStatuses", { filters: [] })).statuses ?? [], [], `${extra.join(" ")}: no ingest left`);
      }
    } finally {
      proxy.rule = undefined;
      api.close();
    }
  });

  test("a pull of many layers, one of which the registry does not have: it fails (the layers never begun are not waited for), in ckd and in ck --client-fetch", async () => {
    // More layers than are opened at once: those after the failure are never fetched, and the
    // unpack that waits for each layer in turn must hear so.
    const many = await buildImage({ host: registry.host, repo: "fid/many", tag: "v1", layers: Array.from({ length: 12 }, (_, i) => ({ [`f${i}`]: `layer ${i}\n` })) });
    const layers = many.manifest.layers as Array<{ digest: string }>;
    assert.equal(layers.length, 12);
    const missing = layers[1]!.digest;
    proxy.rule = (r) => (r.method === "GET" && r.url?.includes(`/blobs/${missing}`) ? { answer: { status: 404, body: '{"errors":[{"code":"BLOB_UNKNOWN"}]}' } } : undefined);
    const d = await fresh();
    try {
      for (const extra of [[], ["--client-fetch"]]) {
        const pulled = ck(d, "many", ["pull", "--plain-http", ...extra, `${proxy.host}/fid/many:v1`]);
        const hung = new Promise<"hung">((res) => setTimeout(() => res("hung"), 60_000).unref());
        const r = await Promise.race([pulled, hung]);
        assert.notEqual(r, "hung", `${extra.join(" ")}: the pull never ended`);
        if (r === "hung") return;
        assert.notEqual(r.code, 0, `${extra.join(" ")}: ${r.stdout}`);
        assert.match(r.stderr, /not found/, extra.join(" "));
      }
    } finally {
      proxy.rule = undefined;
    }
  });

  test("a fetch refused for a reason a resume may outlive (unauthorized) keeps the bytes the ingest holds, and the next fetch resumes from them", async () => {
    const img = await noisy();
    const layer = img.manifest.layers[0] as { mediaType: string; digest: string; size: number };
    const bytes = Buffer.from(await (await fetch(`http://${registry.host}/v2/fid/noisy/blobs/${layer.digest}`)).arrayBuffer());
    const d = await fresh();
    const api = d.client("keep");
    const held = async () => ((await api.call("content", "ListStatuses", { filters: [] })).statuses ?? []).map((st: { offset: unknown }) => Number(st.offset));
    try {
      const w = await new ApiContent(api).open(`layer-${layer.digest}`, { expected: layer.digest, total: layer.size });
      assert.notEqual(w, "exists");
      if (w === "exists") return;
      await w.write(bytes.subarray(0, 1 << 20));
      w.close();
      for (let i = 0; i < 100 && (await held())[0] !== 1 << 20; i++) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await held(), [1 << 20]);
      proxy.rule = (r) => (r.url?.includes(`/blobs/${layer.digest}`) ? { answer: { status: 401, headers: { "www-authenticate": 'Basic realm="test"' } } } : undefined);
      const reference = `${proxy.host}/fid/noisy:v1`;
      await rejectsClass(
        drain(api.stream("fetch", "Blob", { ...blobRequest({ blob: { media_type: layer.mediaType, digest: layer.digest, size: layer.size }, ref: `layer-${layer.digest}` }), reference })),
        "FailedPrecondition",
        /unauthorized/,
      );
      assert.deepEqual(await held(), [1 << 20], "ckd kept the held bytes");
      const r = await ck(d, "keep", ["fetch", "--plain-http", "--client-fetch", reference]);
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stderr, /unauthorized/);
      assert.deepEqual(await held(), [1 << 20], "ck --client-fetch kept the held bytes");
      proxy.rule = undefined;
      const from = proxy.seen.length;
      const ok = await ck(d, "keep", ["fetch", "--plain-http", reference]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.ok(proxy.seen.slice(from).some((q) => q.url.includes(`/blobs/${layer.digest}`) && q.range === `bytes=${1 << 20}-`), "resumed from the held bytes");
      assert.equal(Number((await api.call("content", "Info", { digest: layer.digest })).info.size), layer.size);
    } finally {
      proxy.rule = undefined;
      api.close();
    }
  });

  test("return_bytes_max: the last message carries a small blob's bytes (done and exists); a larger one, or none asked, carries none", async () => {
    const d = await fresh();
    const api = d.client("rb");
    try {
      const cfg = image.manifest.config as { mediaType: string; digest: string; size: number };
      const layer = image.manifest.layers[0] as { mediaType: string; digest: string; size: number };
      const req = (b: { mediaType: string; digest: string; size: number }, max: number) =>
        blobRequest({ blob: { media_type: b.mediaType, digest: b.digest, size: b.size }, ref: `rb-${b.digest}`, return_bytes_max: max });
      const lastOf = async (it: AsyncIterable<unknown>) => (await drain(it)).at(-1) as { status: string; data?: Buffer };
      const sha = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");
      const done = await lastOf(api.stream("fetch", "Blob", req(cfg, 1 << 20)));
      assert.equal(done.status, "done");
      assert.equal(sha(Buffer.from(done.data ?? [])), cfg.digest, "the config's bytes came back");
      const exists = await lastOf(api.stream("fetch", "Blob", req(cfg, cfg.size)));
      assert.equal(exists.status, "exists");
      assert.equal(sha(Buffer.from(exists.data ?? [])), cfg.digest);
      const tooBig = await lastOf(api.stream("fetch", "Blob", req(layer, layer.size - 1)));
      assert.equal(tooBig.status, "done");
      assert.equal((tooBig.data ?? Buffer.alloc(0)).length, 0, "a blob over the limit comes without its bytes");
      const notAsked = await lastOf(api.stream("fetch", "Blob", req(cfg, 0)));
      assert.equal((notAsked.data ?? Buffer.alloc(0)).length, 0);
    } finally {
      api.close();
    }
  });

  test("a registry that challenges only for blobs: ckd, sent no credentials, is refused, and ck fetches those blobs itself with them", async () => {
    const good = "Basic " + Buffer.from("fid:blob-only-pw").toString("base64");
    proxy.rule = (req) =>
      req.url?.includes("/blobs/") && req.headers.authorization !== good
        ? { answer: { status: 401, headers: { "www-authenticate": 'Basic realm="fid"' }, body: "{}" } }
        : undefined;
    const d = await fresh();
    try {
      const from = proxy.seen.length;
      const r = await ck(d, "bo", ["fetch", "--plain-http", "-u", "fid:blob-only-pw", ref()]);
      assert.equal(r.code, 0, r.stderr);
      const blobs = proxy.seen.slice(from).filter((s) => s.method === "GET" && s.url.includes("/blobs/"));
      assert.ok(blobs.some((s) => s.status === 401 && s.userAgent?.startsWith("ckd/")), "ckd asked first, without credentials");
      const served = blobs.filter((s) => s.status === 200);
      assert.ok(served.length >= 3 && served.every((s) => s.userAgent?.startsWith("ck/")), JSON.stringify(served));
      assert.match((await ck(d, "bo", ["images", "check"])).stdout, /complete \(4\/4\)/);
    } finally {
      proxy.rule = undefined;
    }
  });

  test("credentials reach the registry through ckd and appear in neither its log nor the event log", async () => {
    const secret = "s3cret-pw-" + Date.now();
    const good = "Basic " + Buffer.from(`fid:${secret}`).toString("base64");
    proxy.rule = (req) => (req.headers.authorization === good ? undefined : { answer: { status: 401, headers: { "www-authenticate": 'Basic realm="fid"' }, body: "{}" } });
    const d = await fresh({ natsUrl: nats.url });
    try {
      const from = proxy.seen.length;
      const r = await ck(d, "cr", ["fetch", "--plain-http", "-u", `fid:${secret}`, ref()]);
      assert.equal(r.code, 0, r.stderr);
      const blobOk = proxy.seen.slice(from).filter((s) => s.url.includes("/blobs/") && s.status === 200);
      assert.ok(blobOk.length >= 3 && blobOk.every((s) => s.userAgent?.startsWith("ckd/")), JSON.stringify(blobOk));
      assert.doesNotMatch(await readFile(d.logFile, "utf8"), new RegExp(secret));
      const log = await EventLog.open({ url: nats.url, stream: "CK_EVENTS" });
      try {
        const last = await log.lastSeq();
        assert.ok(last > 0);
        for await (const m of log.read({ fromSeq: 1 })) {
          assert.ok(!Buffer.from(m.data).includes(secret), `event ${m.seq} holds the password`);
          assert.ok(!Buffer.from(m.data).includes(Buffer.from(`fid:${secret}`).toString("base64")));
          if (m.seq >= last) break;
        }
      } finally {
        await log.close();
      }
    } finally {
      proxy.rule = undefined;
    }
  });
});
