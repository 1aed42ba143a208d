// The message codecs generated at build time (dist/protos-codecs.js, tools/protos-json.ts),
// which the `ck` bundle installs instead of letting protobufjs generate them at first use:
// each is the source protobufjs generates for that type today, and installed they give the
// same bytes and objects without generating any code.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import { Protos, loadProtos, messageTypes, protoBundlePath } from "../../src/protos/protos.js";

const CODECS = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "protos-codecs.js");
const bundle = () => JSON.parse(readFileSync(protoBundlePath(), "utf8")) as protobuf.INamespace;


// Messages that cross the CLI's hottest calls: nested messages, maps, repeated fields, Any,
// timestamps, int64, bytes, enums.
const SAMPLES: [string, Record<string, unknown>][] = [
  [
    "containerd.services.images.v1.CreateImageRequest",
    {
      image: {
        name: "docker.io/library/app:v1",
        labels: { "containerd.io/gc.ref.content.m": "sha256:" + "a".repeat(64), k: "v" },
        target: { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "b".repeat(64), size: 2 ** 40 + 7, annotations: { a: "b" } },
        created_at: { seconds: 1_700_000_000, nanos: 5 },
      },
    },
  ],
  ["containerd.services.content.v1.WriteContentRequest", { action: 1, ref: "fetch-x", total: 67_122_178, expected: "sha256:" + "c".repeat(64), offset: 3, data: Buffer.from([0, 1, 255]), labels: { x: "y" } }],
  ["containerd.services.containers.v1.CreateContainerRequest", { container: { id: "c1", image: "i", runtime: { name: "io.containerd.runc.v2", options: { type_url: "x/y", value: Buffer.from("opt") } }, extensions: { e: { type_url: "a", value: Buffer.from([9]) } } } }],
  ["containerd.services.leases.v1.ListResourcesResponse", { resources: [{ id: "sha256:" + "d".repeat(64), type: "content" }, { id: "k", type: "snapshots/overlayfs" }] }],
];

test("the generated codecs are protobufjs's own for every message type, and installed they encode and decode alike without generating code", async () => {
  const source = readFileSync(CODECS, "utf8");
  assert.ok(source.includes(`}, ${readFileSync(protoBundlePath(), "utf8")});`), "the codecs carry the JSON bundle they were made from");
  const types = messageTypes(new Protos("", bundle()).root.resolveAll());
  assert.ok(types.length > 100, `${types.length} message types`);
  const gen = protobuf as unknown as Record<"encoder" | "decoder", (t: protobuf.Type) => object> & { converter: Record<"fromObject" | "toObject", (t: protobuf.Type) => object> };
  const ctor = (protobuf.Type as unknown as { generateConstructor(t: protobuf.Type): object }).generateConstructor;
  for (const t of types) {
    const at = source.indexOf(`${JSON.stringify(t.fullName)}: [`);
    assert.ok(at >= 0, `no codecs for ${t.fullName}`);
    const entry = source.slice(at, source.indexOf("\n  ],", at));
    for (const [what, fn] of [["encode", gen.encoder(t)], ["decode", gen.decoder(t)], ["fromObject", gen.converter.fromObject(t)], ["toObject", gen.converter.toObject(t)], ["constructor", ctor(t)]] as const) {
      assert.ok(entry.includes(` => ${String(fn)}`), `${t.fullName}: the generated ${what} is not what protobufjs generates now (rebuild)`);
    }
  }

  // Generated at first use, in this process, before the table is installed.
  const plain = new Protos("", bundle());
  const before = SAMPLES.map(([name, obj]) => plain.encode(name, obj));
  const decodedBefore = before.map((b, i) => plain.decode(SAMPLES[i]![0], b));

  let generated = 0;
  const codegen = protobuf.util.codegen;
  protobuf.util.codegen = ((...args: Parameters<typeof codegen>) => {
    generated++;
    return codegen(...args);
  }) as typeof codegen;
  try {
    await import(CODECS);
    // The process's protos, from the bundle the codecs came with.
    const installed = loadProtos();
    const after = SAMPLES.map(([name, obj]) => installed.encode(name, obj));
    assert.deepEqual(after, before);
    assert.deepEqual(after.map((b, i) => installed.decode(SAMPLES[i]![0], b)), decodedBefore);
    assert.equal(decodedBefore[0].image.target.size, 2 ** 40 + 7);
    assert.deepEqual(decodedBefore[3].resources.map((r: { type: string }) => r.type), ["content", "snapshots/overlayfs"]);
    assert.equal(generated, 0, "no code generated for types the table holds");
    // A Root loaded any other way is not what the table was made for: protobufjs generates its codecs.
    const other = new Protos("", bundle());
    assert.deepEqual(other.encode(SAMPLES[0]![0], SAMPLES[0]![1]), before[0]);
    assert.ok(generated > 0, "another Root's types are set up by protobufjs");
    generated = 0;
    // verify, which ck never calls, is still there: generated on demand.
    assert.equal(installed.type(SAMPLES[0]![0]).verify({ image: { name: 5 } }), "image.name: string expected");
    assert.ok(generated > 0);
  } finally {
    protobuf.util.codegen = codegen;
  }
});
