// The proto codec (src/protos/protos.ts) and the wire compatibility of ck's authored .proto
// files with containerd 1.6's published API (Debian's golang-github-containerd-containerd-dev,
// parsed here at test time): round trips, Any type URLs, gRPC service definitions, and a
// field-by-field, method-by-method comparison in both directions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { loadProtos, Protos, protoBundlePath } from "../../src/protos/protos.js";

const UPSTREAM = "/usr/share/gocode/src/github.com/containerd/containerd/api";
const UPSTREAM_IMPORT = "github.com/containerd/containerd/api/";
// google/rpc/status.proto, which upstream's introspection imports (a dependency of the above).
const GOOGLEAPIS = "/usr/share/gocode/src/github.com/gogo/googleapis";
const INSTALL_HINT = "install the Debian package golang-github-containerd-containerd-dev (apt-get install golang-github-containerd-containerd-dev)";

// From the .proto files themselves: the checks below read their sources (and test the parser path).
const p = loadProtos({ fromFiles: true });

// ---------------------------------------------------------------------------------------
// Codec round trips

test("Envelope round trip: Any with a bare type URL, Timestamp seconds as a number", () => {
  const event = p.packAny("containerd.events.NamespaceCreate", { name: "ns1", labels: { team: "a" } });
  assert.equal(event.type_url, "containerd.events.NamespaceCreate");
  assert.ok(Buffer.isBuffer(event.value));

  const seconds = 2 ** 40 + 7; // beyond 32 bits: must come back as a plain number
  const buf = p.encode("containerd.services.events.v1.Envelope", {
    timestamp: { seconds, nanos: 520_000_000 },
    namespace: "default",
    topic: "/namespaces/create",
    event,
  });
  assert.ok(Buffer.isBuffer(buf));
  assert.ok(!buf.includes("type.googleapis.com"), "no type.googleapis.com/ prefix on the wire");

  const env = p.decode("containerd.services.events.v1.Envelope", buf);
  assert.deepEqual(env.timestamp, { seconds, nanos: 520_000_000 });
  assert.equal(typeof env.timestamp.seconds, "number");
  assert.equal(env.namespace, "default");
  assert.equal(env.topic, "/namespaces/create");
  assert.equal(env.event.type_url, "containerd.events.NamespaceCreate");
  assert.ok(Buffer.isBuffer(env.event.value));
  assert.deepEqual(p.unpackAny(env.event), {
    typeName: "containerd.events.NamespaceCreate",
    value: { name: "ns1", labels: { team: "a" } },
  });
});

test("unpackAny accepts both the bare and the type.googleapis.com/ form", () => {
  const value = p.encode("containerd.events.ContainerDelete", { id: "c1" });
  for (const type_url of ["containerd.events.ContainerDelete", "type.googleapis.com/containerd.events.ContainerDelete"]) {
    assert.deepEqual(p.unpackAny({ type_url, value }), { typeName: "containerd.events.ContainerDelete", value: { id: "c1" } });
  }
  assert.equal(
    p.packAny("containerd.services.images.v1.ImageCreate", { name: "docker.io/library/x:1" }).type_url,
    "containerd.services.images.v1.ImageCreate",
  );
  assert.equal(p.packAny("ck.events.ContentCommit", { digest: "sha256:00", size: 1 }).type_url, "ck.events.ContentCommit");
});

test("Image round trip: Descriptor with an int64 size, Timestamps, maps", () => {
  const image = {
    name: "docker.io/library/alpine:3.19",
    labels: { "containerd.io/gc.ref.content.m.0": "sha256:aa" },
    target: {
      media_type: "application/vnd.oci.image.index.v1+json",
      digest: "sha256:" + "ab".repeat(32),
      size: 5_000_000_123,
      annotations: { "org.opencontainers.image.ref.name": "3.19" },
    },
    created_at: { seconds: 1_763_830_000, nanos: 1 },
    updated_at: { seconds: 1_763_830_001, nanos: 999_999_999 },
  };
  const out = p.decode("containerd.services.images.v1.Image", p.encode("containerd.services.images.v1.Image", image));
  assert.deepEqual(out, image);
  assert.equal(typeof out.target.size, "number");

  // The ck extension carries the full record inside containerd's lossy ImageCreate.
  const ev = { name: image.name, labels: image.labels, ck_image: image };
  assert.deepEqual(p.decode("containerd.services.images.v1.ImageCreate", p.encode("containerd.services.images.v1.ImageCreate", ev)), ev);
});

test("Container round trip: Any spec, runtime options, extensions", () => {
  const container = {
    id: "redis",
    labels: { "io.containerd.image.config.stop-signal": "SIGTERM" },
    image: "docker.io/library/redis:7",
    runtime: {
      name: "io.containerd.runc.v2",
      options: { type_url: "containerd.runc.v1.Options", value: Buffer.from([0x0a, 0x03, 0x61, 0x62, 0x63]) },
    },
    spec: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from('{"ociVersion":"1.0.2"}') },
    snapshotter: "overlayfs",
    snapshot_key: "redis",
    created_at: { seconds: 1_763_830_000, nanos: 0 },
    updated_at: { seconds: 1_763_830_000, nanos: 0 },
    extensions: { "ck/x": { type_url: "ck.events.ContentUpdate", value: Buffer.from([0x0a, 0x01, 0x78]) } },
  };
  const out = p.decode("containerd.services.containers.v1.Container", p.encode("containerd.services.containers.v1.Container", container));
  assert.deepEqual(out, container);
  assert.ok(Buffer.isBuffer(out.spec.value) && Buffer.isBuffer(out.runtime.options.value));

  const ev = { id: "redis", image: container.image, runtime: container.runtime, ck_container: container };
  assert.deepEqual(p.decode("containerd.events.ContainerCreate", p.encode("containerd.events.ContainerCreate", ev)), ev);
});

test("decode fills defaults: '' for strings, {} for maps, [] for repeated, 0 for numbers, null for messages", () => {
  assert.deepEqual(p.decode("containerd.services.containers.v1.Container", Buffer.alloc(0)), {
    id: "",
    labels: {},
    image: "",
    runtime: null,
    spec: null,
    snapshotter: "",
    snapshot_key: "",
    created_at: null,
    updated_at: null,
    extensions: {},
  });
  assert.deepEqual(p.decode("containerd.types.Mount", Buffer.alloc(0)), { type: "", source: "", target: "", options: [] });
  assert.deepEqual(p.decode("containerd.services.content.v1.WriteContentRequest", Buffer.alloc(0)), {
    action: 0,
    ref: "",
    total: 0,
    expected: "",
    offset: 0,
    data: Buffer.alloc(0),
    labels: {},
  });
});

test("bytes decode as Buffers even from a plain Uint8Array", () => {
  const buf = p.encode("containerd.services.content.v1.ReadContentResponse", { offset: 4, data: Buffer.from("blob") });
  const out = p.decode("containerd.services.content.v1.ReadContentResponse", new Uint8Array(buf));
  assert.ok(Buffer.isBuffer(out.data));
  assert.equal(out.data.toString(), "blob");
  assert.equal(out.offset, 4);
});

test("unknown names throw", () => {
  assert.throws(() => p.type("containerd.events.NoSuchEvent"));
  assert.throws(() => p.encode("containerd.events.NoSuchEvent", {}));
  assert.throws(() => p.serviceDefinition("containerd.services.nosuch.v1.Nope"));
});

// ---------------------------------------------------------------------------------------
// gRPC service definitions

test("serviceNames lists every service; definitions carry paths, streaming flags and codecs", () => {
  assert.deepEqual(p.serviceNames, [
    "ck.services.fetch.v1.Fetch",
    "ck.services.gc.v1.GC",
    "ck.services.unpack.v1.Unpack",
    "containerd.services.containers.v1.Containers",
    "containerd.services.content.v1.Content",
    "containerd.services.diff.v1.Diff",
    "containerd.services.events.v1.Events",
    "containerd.services.images.v1.Images",
    "containerd.services.introspection.v1.Introspection",
    "containerd.services.leases.v1.Leases",
    "containerd.services.namespaces.v1.Namespaces",
    "containerd.services.snapshots.v1.Snapshots",
    "containerd.services.tasks.v1.Tasks",
    "containerd.services.version.v1.Version",
    "grpc.health.v1.Health",
  ]);
  const content = p.serviceDefinition("containerd.services.content.v1.Content");
  const write = content.Write!;
  assert.equal(write.path, "/containerd.services.content.v1.Content/Write");
  assert.equal(write.requestStream, true);
  assert.equal(write.responseStream, true);
  assert.equal(write.originalName, "Write");
  assert.deepEqual([content.Read!.requestStream, content.Read!.responseStream], [false, true]);
  assert.deepEqual([content.Info!.requestStream, content.Info!.responseStream], [false, false]);
  const req = { action: 1, ref: "r", total: 10, expected: "sha256:00", offset: 2, data: Buffer.from("xy"), labels: { a: "b" } };
  assert.deepEqual(write.requestDeserialize(write.requestSerialize(req)), req);
  const sub = p.serviceDefinition("containerd.services.events.v1.Events").Subscribe!;
  assert.equal(sub.path, "/containerd.services.events.v1.Events/Subscribe");
  assert.deepEqual([sub.requestStream, sub.responseStream], [false, true]);
  assert.equal(p.serviceDefinition("containerd.services.content.v1.Content"), content, "definitions are cached");
});

test("definitions work end to end over grpc-js: unary and server streaming", async () => {
  const versionDef = p.serviceDefinition("containerd.services.version.v1.Version");
  const eventsDef = p.serviceDefinition("containerd.services.events.v1.Events");
  const server = new grpc.Server();
  server.addService(versionDef, {
    Version: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, { version: "1.6.20-ck", revision: "abc" }),
  });
  server.addService(eventsDef, {
    Subscribe: (call: grpc.ServerWritableStream<{ filters: string[] }, unknown>) => {
      assert.deepEqual(call.request, { filters: ['topic=="/namespaces/create"'] });
      call.write({
        timestamp: { seconds: 1_763_830_000, nanos: 5 },
        namespace: "default",
        topic: "/namespaces/create",
        event: p.packAny("containerd.events.NamespaceCreate", { name: "x", labels: {} }),
      });
      call.end();
    },
  });
  const port = await new Promise<number>((ok, fail) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? fail(err) : ok(port))),
  );
  const Version = grpc.makeGenericClientConstructor(versionDef, "Version");
  const Events = grpc.makeGenericClientConstructor(eventsDef, "Events");
  const version = new Version(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as any;
  const events = new Events(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as any;
  try {
    const v = await new Promise((ok, fail) => version.Version({}, (err: Error | null, res: unknown) => (err ? fail(err) : ok(res))));
    assert.deepEqual(v, { version: "1.6.20-ck", revision: "abc" });

    const got: any[] = [];
    await new Promise<void>((ok, fail) => {
      const stream = events.Subscribe({ filters: ['topic=="/namespaces/create"'] });
      stream.on("data", (e: unknown) => got.push(e));
      stream.on("error", fail);
      stream.on("end", ok);
    });
    assert.equal(got.length, 1);
    assert.equal(got[0].event.type_url, "containerd.events.NamespaceCreate");
    assert.deepEqual(got[0].timestamp, { seconds: 1_763_830_000, nanos: 5 });
    assert.deepEqual(p.unpackAny(got[0].event).value, { name: "x", labels: {} });
  } finally {
    version.close();
    events.close();
    server.forceShutdown();
  }
});

// ---------------------------------------------------------------------------------------
// Wire compatibility with containerd's published API

function protoFilesUnder(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((n) => {
      const f = join(dir, n);
      return statSync(f).isDirectory() ? protoFilesUnder(f) : n.endsWith(".proto") ? [f] : [];
    });
}

/** Drops what only shapes generated Go code: weak imports (gogoproto, fieldpath) and their options. */
function stripGoOptions(src: string): string {
  return src
    .replace(/^\s*import\s+weak\s+"[^"]*"\s*;\s*$/gm, "")
    .replace(/^\s*option\s+\((?:gogoproto|containerd\.plugin)\.[^;]*;\s*$/gm, "")
    .replace(/\s*\[\s*\((?:gogoproto|containerd\.plugin)\.[^\]]*\]/g, "");
}

/** Where an upstream import lives on disk; undefined for the well-known types protobufjs bundles. */
function upstreamImport(name: string): string | undefined {
  if (name.startsWith("google/protobuf/")) return undefined;
  if (name.startsWith(UPSTREAM_IMPORT)) return join(UPSTREAM, name.slice(UPSTREAM_IMPORT.length));
  if (name.startsWith("google/rpc/")) return join(GOOGLEAPIS, name);
  throw new Error(`upstream import ${name} has no mapping`);
}

let upstreamCache: { root: protobuf.Root; files: string[] } | undefined;

/** containerd's API, every file except the ttrpc events service, parsed into one Root. */
function loadUpstream(): { root: protobuf.Root; files: string[] } {
  if (upstreamCache) return upstreamCache;
  assert.ok(existsSync(UPSTREAM), `containerd's API definitions are missing at ${UPSTREAM}: ${INSTALL_HINT}`);
  const root = new protobuf.Root();
  const done = new Set<string>();
  const files = protoFilesUnder(UPSTREAM).filter((f) => !relative(UPSTREAM, f).startsWith("services/ttrpc/"));
  const queue = [...files];
  const bundled = (name: string) => {
    if (done.has(name)) return;
    done.add(name);
    const json = protobuf.common.get(name);
    assert.ok(json, `protobufjs does not bundle ${name}`);
    root.addJSON(json.nested!);
  };
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (done.has(file)) continue;
    done.add(file);
    assert.ok(existsSync(file), `upstream file ${file} missing: ${INSTALL_HINT}`);
    const src = stripGoOptions(readFileSync(file, "utf8"));
    assert.doesNotMatch(src, /gogoproto|containerd\.plugin/, `${file}: Go-only options left after stripping`);
    const parsed = protobuf.parse(src, root, { keepCase: true });
    for (const imp of parsed.imports ?? []) {
      const path = upstreamImport(imp);
      if (path === undefined) bundled(imp);
      else queue.push(path);
    }
  }
  root.resolveAll();
  upstreamCache = { root, files };
  return upstreamCache;
}

function all<T extends protobuf.ReflectionObject>(ns: protobuf.NamespaceBase, kind: abstract new (...a: any[]) => T): T[] {
  const out: T[] = [];
  for (const o of ns.nestedArray) {
    if (o instanceof kind) out.push(o);
    if (o instanceof protobuf.Namespace) out.push(...all(o, kind)); // Type and Service extend Namespace
  }
  return out;
}

const name = (o: protobuf.ReflectionObject) => o.fullName.slice(1);
const typeOf = (f: protobuf.Field) => (f.resolvedType ? name(f.resolvedType) : f.type);
const isWkt = (o: protobuf.ReflectionObject) => o.fullName.startsWith(".google.protobuf.");

function fieldShape(f: protobuf.Field) {
  return {
    id: f.id,
    type: typeOf(f),
    repeated: f.repeated,
    map: f.map,
    keyType: f.map ? (f as unknown as protobuf.MapField).keyType : undefined,
    packed: f.repeated ? f.packed : undefined,
    oneof: f.partOf?.name,
  };
}

test(`containerd's published API is installed at ${UPSTREAM}`, () => {
  assert.ok(existsSync(UPSTREAM), `containerd's API definitions are missing at ${UPSTREAM}: ${INSTALL_HINT}`);
});

test("every containerd message and enum has a counterpart in ck's protos with the same fields", () => {
  const upstream = loadUpstream().root;
  const messages = all(upstream, protobuf.Type).filter((t) => !isWkt(t));
  assert.ok(messages.length > 150, `only ${messages.length} upstream messages found`);
  let fields = 0;
  for (const theirs of messages) {
    const mine = p.root.lookup(theirs.fullName);
    assert.ok(mine instanceof protobuf.Type, `ck's protos lack message ${name(theirs)}`);
    for (const f of theirs.fieldsArray) {
      const g: protobuf.Field | undefined = mine.fields[f.name];
      assert.ok(g, `${name(theirs)}.${f.name} (= ${f.id}) missing in ck's protos`);
      assert.deepEqual(fieldShape(g), fieldShape(f), `${name(theirs)}.${f.name}`);
      fields++;
    }
    for (const g of mine.fieldsArray) {
      if (theirs.fields[g.name]) continue;
      // Only ck extensions may be added: numbered from 100, named ck_*, and commented as such.
      assert.ok(g.id >= 100 && g.name.startsWith("ck_"), `${name(mine)}.${g.name} = ${g.id} is neither containerd's nor a ck extension`);
      assert.ok(!theirs.fieldsById[g.id], `${name(mine)}.${g.name} reuses containerd's number ${g.id}`);
      const own = protobuf.parse(readFileSync(g.filename!, "utf8"), { keepCase: true, alternateCommentMode: true }).root;
      const comment = own.lookupType(mine.fullName).fields[g.name]?.comment ?? "";
      assert.match(comment, /ck extension/, `${name(mine)}.${g.name}: comment it as a ck extension`);
    }
  }
  assert.ok(fields > 300, `only ${fields} upstream fields compared`);

  for (const theirs of all(upstream, protobuf.Enum)) {
    const mine = p.root.lookup(theirs.fullName);
    assert.ok(mine instanceof protobuf.Enum, `ck's protos lack enum ${name(theirs)}`);
    assert.deepEqual({ ...mine.values }, { ...theirs.values }, name(theirs));
  }
});

/**
 * containerd's messages that ck sends from outside its API package, by package prefix: the
 * cgroup v1 statistics of a task's Metrics (github.com/containerd/cgroups, a dependency of
 * the API package) and what its runc shim says of an exec's pid in ListPids.
 */
/** grpc-go's copy of gRPC's health protocol (golang-google-grpc-dev, which containerd's sources depend on). */
const HEALTH_PROTO = "/usr/share/gocode/src/google.golang.org/grpc/debian/missing-sources/grpc/grpc-proto/master/grpc/health/v1/health.proto";

const OUTSIDE_API: Record<string, { file: string; messages: number; fields: number }> = {
  ".io.containerd.cgroups.v1.": { file: "/usr/share/gocode/src/github.com/containerd/cgroups/stats/v1/metrics.proto", messages: 8, fields: 50 },
  ".io.containerd.cgroups.v2.": { file: "/usr/share/gocode/src/github.com/containerd/cgroups/v2/stats/metrics.proto", messages: 7, fields: 60 },
  ".containerd.runc.v1.": { file: "/usr/share/gocode/src/github.com/containerd/containerd/runtime/v2/runc/options/oci.proto", messages: 2, fields: 12 },
  // gRPC's health service, which containerd serves (its client's IsServing asks it).
  ".grpc.health.v1.": { file: HEALTH_PROTO, messages: 2, fields: 2 },
};

function loadOutsideUpstream(file: string): protobuf.Root {
  assert.ok(existsSync(file), `${file} is missing: ${INSTALL_HINT}`);
  const root = new protobuf.Root();
  protobuf.parse(stripGoOptions(readFileSync(file, "utf8")), root, { keepCase: true });
  root.resolveAll();
  return root;
}

/** The upstream a message of ck's is held to: containerd's API, or one of OUTSIDE_API's files. */
function upstreamFor(fullName: string, api: protobuf.Root): protobuf.Root {
  const prefix = Object.keys(OUTSIDE_API).find((p) => fullName.startsWith(p));
  return prefix ? loadOutsideUpstream(OUTSIDE_API[prefix]!.file) : api;
}

for (const [prefix, { file, messages, fields: least }] of Object.entries(OUTSIDE_API)) {
  test(`${prefix.slice(1, -1)} messages ck reports are containerd's: every field ck has, as ${file.replace(/^.*gocode\/src\//, "")} numbers and types it`, () => {
    const upstream = loadOutsideUpstream(file);
    const mine = all(p.root, protobuf.Type).filter((t) => t.fullName.startsWith(prefix));
    assert.ok(mine.length >= messages, `only ${mine.length} messages under ${prefix}`);
    let fields = 0;
    for (const t of mine) {
      const theirs = upstream.lookup(t.fullName);
      assert.ok(theirs instanceof protobuf.Type, `${name(t)} is not in ${file}`);
      for (const f of t.fieldsArray) {
        const g: protobuf.Field | undefined = theirs.fields[f.name];
        assert.ok(g, `${name(t)}.${f.name} is not containerd's`);
        assert.deepEqual(fieldShape(f), fieldShape(g), `${name(t)}.${f.name}`);
        fields++;
      }
    }
    assert.ok(fields >= least, `only ${fields} fields compared`);
  });
}

test("every message in ck's protos is containerd's, except ck's own events", () => {
  const upstream = loadUpstream().root;
  for (const mine of all(p.root, protobuf.Type)) {
    if (isWkt(mine) || mine.fullName.startsWith(".ck.")) continue;
    const theirs = upstreamFor(mine.fullName, upstream);
    assert.ok(theirs.lookup(mine.fullName) instanceof protobuf.Type, `${name(mine)} is not in containerd's API`);
  }
  assert.deepEqual(
    all(p.root, protobuf.Type).filter((t) => t.fullName.startsWith(".ck.")).map(name).sort(),
    [
      "ck.events.ContentCollect",
      "ck.events.ContentCommit",
      "ck.events.ContentUpdate",
      "ck.events.Labels",
      "ck.events.LeaseCreate",
      "ck.events.LeaseDelete",
      "ck.events.LeaseResource",
      "ck.events.LeaseResourceAdd",
      "ck.events.LeaseResourceDelete",
      "ck.events.LeaseResources",
      "ck.events.SnapshotCollect",
      "ck.events.SnapshotLabels",
      "ck.events.SnapshotUpdate",
      "ck.events.SnapshotVerified",
      "ck.events.SnapshotView",
      "ck.services.fetch.v1.BlobProgress",
      "ck.services.fetch.v1.BlobRequest",
      "ck.services.fetch.v1.RegistryAccess",
      "ck.services.gc.v1.CollectRequest",
      "ck.services.gc.v1.CollectResponse",
      "ck.services.gc.v1.HostReleased",
      "ck.services.gc.v1.NamespaceCollected",
      "ck.services.gc.v1.ReleaseHostRequest",
      "ck.services.gc.v1.ReleaseHostResponse",
      "ck.services.unpack.v1.ApplyRequest",
      "ck.services.unpack.v1.ApplyResponse",
    ],
  );
});

test("services: the same set, the same methods, request/response types and streaming flags", () => {
  const upstream = loadUpstream().root;
  const theirNames = all(upstream, protobuf.Service).map(name).sort();
  assert.deepEqual(
    p.serviceNames.filter((n) => !n.startsWith("ck.") && !n.startsWith("grpc.")),
    theirNames,
    "ck serves exactly containerd's gRPC services (ttrpc events excluded), plus its own under ck.* and gRPC's health",
  );
  assert.deepEqual(p.serviceNames.filter((n) => n.startsWith("ck.")), ["ck.services.fetch.v1.Fetch", "ck.services.gc.v1.GC", "ck.services.unpack.v1.Unpack"]);
  assert.deepEqual(p.serviceNames.filter((n) => n.startsWith("grpc.")), ["grpc.health.v1.Health"]);
  const health = loadOutsideUpstream(HEALTH_PROTO);
  for (const [svc, from] of [...theirNames.map((n) => [n, upstream] as const), ["grpc.health.v1.Health", health] as const]) {
    const theirs = from.lookupService(svc);
    const mine = p.root.lookupService(svc);
    assert.deepEqual(Object.keys(mine.methods).sort(), Object.keys(theirs.methods).sort(), `${svc}: methods`);
    for (const m of theirs.methodsArray) {
      const g = mine.methods[m.name]!;
      m.resolve();
      g.resolve();
      const shape = (x: protobuf.Method) => ({
        request: name(x.resolvedRequestType!),
        response: name(x.resolvedResponseType!),
        requestStream: !!x.requestStream,
        responseStream: !!x.responseStream,
      });
      assert.deepEqual(shape(g), shape(m), `${svc}/${m.name}`);
      const def = p.serviceDefinition(svc)[m.name]!;
      assert.equal(def.path, `/${svc}/${m.name}`);
      assert.deepEqual([def.requestStream, def.responseStream], [!!m.requestStream, !!m.responseStream], `${svc}/${m.name} definition`);
    }
  }
});

/** A value for every field of t (recursing into messages to a small depth), to cross-decode. */
function sample(t: protobuf.Type, depth = 0): Record<string, unknown> {
  if (t.fullName === ".google.protobuf.Any") return { type_url: "containerd.events.ContentDelete", value: Buffer.from([0x0a, 0x01, 0x64]) };
  if (t.fullName === ".google.protobuf.Timestamp") return { seconds: 1_763_830_000 + depth, nanos: 7 };
  const out: Record<string, unknown> = {};
  for (const f of t.fieldsArray) {
    let v: unknown;
    if (f.resolvedType instanceof protobuf.Type) {
      if (depth >= 3) continue;
      v = sample(f.resolvedType, depth + 1);
    } else if (f.resolvedType instanceof protobuf.Enum) {
      v = Math.max(...Object.values(f.resolvedType.values));
    } else if (f.type === "string") v = `${f.name}-${f.id}`;
    else if (f.type === "bytes") v = Buffer.from(f.name);
    else if (f.type === "bool") v = true;
    else if (/^(u?int64|s?fixed64|sint64)$/.test(f.type)) v = 2 ** 40 + f.id;
    else if (f.type === "double" || f.type === "float") v = 1.5;
    else v = 100 + f.id;
    out[f.name] = f.map ? { [`k-${f.id}`]: v } : f.repeated ? [v, v] : v;
  }
  return out;
}

test("bytes cross-decode: containerd's encoding decodes in ck and back, extensions ignored by containerd", () => {
  const upstream = loadUpstream().root;
  const opts = { longs: Number, enums: Number, defaults: true, arrays: true, objects: true };
  for (const theirs of all(upstream, protobuf.Type).filter((t) => !isWkt(t))) {
    const obj = sample(theirs);
    const wire = Buffer.from(theirs.encode(theirs.fromObject(obj)).finish());
    const expected = theirs.toObject(theirs.decode(wire), opts);
    const { ...mine } = p.decode(name(theirs), wire);
    for (const k of Object.keys(mine)) {
      if (!k.startsWith("ck_")) continue;
      const absent = Array.isArray(mine[k]) ? mine[k].length === 0 : mine[k] === null || mine[k] === "" || mine[k] === 0 || mine[k] === false;
      assert.ok(absent, `${name(theirs)}.${k}: a ck extension absent from containerd's bytes`);
      delete mine[k];
    }
    assert.deepEqual(mine, expected, `${name(theirs)}: containerd -> ck`);
    const back = theirs.decode(p.encode(name(theirs), obj));
    assert.deepEqual(theirs.toObject(back, opts), expected, `${name(theirs)}: ck -> containerd`);
  }
  // An event carrying ck's full record still reads as containerd's event for containerd.
  const img = upstream.lookupType("containerd.services.images.v1.ImageCreate");
  const wire = p.encode("containerd.services.images.v1.ImageCreate", { name: "x", labels: { a: "b" }, ck_image: { name: "x" } });
  assert.deepEqual(img.toObject(img.decode(wire), opts), { name: "x", labels: { a: "b" } });
});

test("ck's protos use no Go-only options and import relative to proto/", () => {
  const dir = join(p.root.files.find((f) => f.endsWith("/proto/events/ck.proto"))!, "../..");
  for (const f of protoFilesUnder(dir)) {
    const src = readFileSync(f, "utf8");
    assert.doesNotMatch(src, /gogoproto|containerd\.plugin|import weak|github\.com\//, relative(dir, f));
    assert.match(src, /^syntax = "proto3";$/m, relative(dir, f));
  }
});

test("the build's JSON bundle (dist/protos.json) holds exactly what the .proto files define", () => {
  const bundlePath = protoBundlePath();
  assert.ok(existsSync(bundlePath), `${bundlePath} is written by npm run build`);
  const bundled = new Protos("unused", JSON.parse(readFileSync(bundlePath, "utf8")));
  assert.equal(JSON.stringify(bundled.root.toJSON()), JSON.stringify(p.root.toJSON()));
  assert.deepEqual(bundled.serviceNames, p.serviceNames);
  // and it encodes the same bytes
  const msg = { action: 1, ref: "r", offset: 5, data: Buffer.from("abc"), labels: { a: "b" } };
  assert.deepEqual(bundled.encode("containerd.services.content.v1.WriteContentRequest", msg), p.encode("containerd.services.content.v1.WriteContentRequest", msg));
});

// ---------------------------------------------------------------------------------------
// Replies framed from encoded elements (List)

test("repeatedMessages frames elements exactly as protobufjs encodes the repeated field", async () => {
  const { repeatedMessages } = await import("../../src/protos/protos.js");
  const image = p.type("containerd.services.images.v1.Image");
  const list = p.type("containerd.services.images.v1.ListImagesResponse");
  // Element sizes around the one- and two-byte length boundaries, and one past 16 KiB.
  const images = [0, 60, 200, 20_000].map((n, i) => ({
    name: `reg.local/app:${i}`,
    labels: n ? { pad: "x".repeat(n) } : {},
    target: { media_type: "application/vnd.oci.image.manifest.v1+json", digest: `sha256:${String(i).repeat(64)}`, size: 1234 + i, annotations: {} },
    created_at: { seconds: 1_700_000_000 + i, nanos: 5 },
    updated_at: { seconds: 1_700_000_001 + i, nanos: 0 },
  }));
  const framed = repeatedMessages(1, images.map((m) => Buffer.from(image.encode(m).finish())));
  assert.deepEqual(framed, Buffer.from(list.encode({ images }).finish()));
  assert.deepEqual(p.decode("containerd.services.images.v1.ListImagesResponse", framed).images.map((i: any) => i.name), images.map((i) => i.name));
  assert.equal(repeatedMessages(1, []).length, 0, "no elements: the empty message");
});

test("a command's event that does not decode, or of a type this ck does not know, stops the projection, loudly; published events are skipped", async () => {
  const { toLoggedEvent, encodeEnvelope, ORIGIN_HEADER, ORIGIN_COMMAND, ORIGIN_PUBLISH } = await import("../../src/emitter/envelope.js");
  const p = loadProtos();
  const ts = { seconds: 1_700_000_000, nanos: 0 };
  const message = (type_url: string, value: Buffer, origin = ORIGIN_COMMAND) => ({
    seq: 42,
    subject: "containerd.io.n.snapshot.prepare",
    data: encodeEnvelope(p, { namespace: "n", topic: "/snapshot/prepare", typeName: type_url, payload: {}, packed: { type_url, value } }, ts),
    headers: { [ORIGIN_HEADER]: origin },
    time: new Date(),
    pending: 0,
  });
  // Wire type 7 does not exist: no SnapshotPrepare decodes from it.
  const garbage = Buffer.from([0x0a, 0x01, 0x6b, 0x1f]);
  assert.throws(() => toLoggedEvent(p, message("containerd.events.SnapshotPrepare", garbage)), /event at sequence 42 \(containerd\.events\.SnapshotPrepare, \/snapshot\/prepare\) does not decode: .*cannot apply the log past it/);
  assert.equal(toLoggedEvent(p, message("containerd.events.SnapshotPrepare", garbage, ORIGIN_PUBLISH)), undefined, "a client's publish is never folded");
  // Skipped, an older ck's projection (and its ck-replay verify) would quietly differ from the log.
  assert.throws(() => toLoggedEvent(p, message("ck.events.FromANewerCk", garbage)), (err: any) => err.errorClass === "FailedPrecondition" && /sequence 42 \(ck\.events\.FromANewerCk, \/snapshot\/prepare\) is of a type this ck does not know: a newer ck wrote it/.test(err.message));
  assert.equal(toLoggedEvent(p, message("ck.events.FromANewerCk", garbage, ORIGIN_PUBLISH)), undefined, "published: not folded, whatever its type");
  const good = toLoggedEvent(p, message("containerd.events.SnapshotPrepare", p.encode("containerd.events.SnapshotPrepare", { key: "k" })));
  assert.equal(good?.payload.key, "k");
});
