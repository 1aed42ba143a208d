// The proto loader and codec: every .proto under proto/ in one protobufjs Root (snake_case
// field names, as in the files), plain-object encode/decode, Any packing with containerd's
// bare type URLs, and @grpc/grpc-js service definitions built from the same Root.
import protobuf from "protobufjs";
import type * as grpc from "@grpc/grpc-js";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export interface AnyMessage {
  type_url: string;
  value: Buffer;
}

const TO_OBJECT: protobuf.IConversionOptions = {
  longs: Number,
  enums: Number,
  defaults: true,
  arrays: true,
  objects: true,
};

/**
 * A Buffer view (no copy) of the input: protobufjs decodes bytes fields as slices of its
 * input, so a plain Uint8Array in (NATS hands those out) would give Uint8Array bytes out.
 */
const asBuffer = (b: Uint8Array): Buffer => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** Finds the package root (the directory holding package.json and proto/) above this file. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "proto"))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find ck's proto/ directory");
    dir = up;
  }
}

function protoFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...protoFiles(p));
    else if (name.endsWith(".proto")) out.push(p);
  }
  return out;
}

// int64 fields decode to JS numbers instead of Long objects (sizes and seconds stay far
// below 2^53); this lets hot paths read decoded messages without a toObject copy.
protobuf.util.Long = undefined as never;
protobuf.configure();

export class Protos {
  readonly root: protobuf.Root;
  readonly serviceNames: string[];
  private readonly types = new Map<string, protobuf.Type>();
  private readonly services = new Map<string, grpc.ServiceDefinition>();

  /**
   * From the .proto files under `protoDir`, or from `bundle` (the same Root as JSON, written
   * at build time: about four times faster to load, which every `ck` invocation feels).
   * Types are resolved lazily, on first use.
   */
  constructor(protoDir: string, bundle?: protobuf.INamespace) {
    let root: protobuf.Root;
    // Root.fromJSON would resolve every type up front; addJSON leaves it to first use.
    if (bundle) root = new protobuf.Root().addJSON(bundle.nested ?? {}) as protobuf.Root;
    else {
      root = new protobuf.Root();
      root.resolvePath = (_origin, target) => (target.startsWith("google/protobuf/") ? target : resolve(protoDir, target));
      root.loadSync(protoFiles(protoDir), { keepCase: true });
    }
    this.root = root;
    const names: string[] = [];
    const walk = (ns: protobuf.NamespaceBase) => {
      for (const o of ns.nestedArray) {
        if (o instanceof protobuf.Service) names.push(o.fullName.slice(1));
        if (o instanceof protobuf.Namespace || o instanceof protobuf.Type) walk(o as protobuf.NamespaceBase);
      }
    };
    walk(root);
    this.serviceNames = names.sort();
  }

  type(fullName: string): protobuf.Type {
    let t = this.types.get(fullName);
    if (!t) {
      t = this.root.lookupType(fullName);
      this.types.set(fullName, t);
    }
    return t;
  }

  has(fullName: string): boolean {
    try {
      this.type(fullName);
      return true;
    } catch {
      return false;
    }
  }

  encode(fullName: string, obj: unknown): Buffer {
    const t = this.type(fullName);
    return Buffer.from(t.encode(t.fromObject(obj as Record<string, unknown>)).finish());
  }

  decode(fullName: string, buf: Uint8Array): any {
    const t = this.type(fullName);
    return t.toObject(t.decode(asBuffer(buf)), TO_OBJECT);
  }

  /**
   * Decodes to protobufjs's message object without a plain-object copy: fields absent on
   * the wire read as their defaults through the prototype. For hot read paths.
   */
  decodeMessage(fullName: string, buf: Uint8Array): any {
    return this.type(fullName).decode(asBuffer(buf));
  }

  /** Packs a message as Any with the bare proto name as type_url, as containerd's typeurl does. */
  packAny(fullName: string, obj: unknown): AnyMessage {
    return { type_url: fullName, value: this.encode(fullName, obj) };
  }

  /** Unpacks an Any whose type_url is a bare proto name or carries a `.../` prefix. */
  unpackAny(any: { type_url: string; value: Uint8Array }): { typeName: string; value: any } {
    const url = any.type_url;
    const typeName = url.includes("/") ? url.slice(url.lastIndexOf("/") + 1) : url;
    return { typeName, value: this.decode(typeName, any.value ?? Buffer.alloc(0)) };
  }

  /** The grpc-js definition of a service: paths, streaming flags, codecs. */
  serviceDefinition(fullServiceName: string): grpc.ServiceDefinition {
    const known = this.services.get(fullServiceName);
    if (known) return known;
    const svc = this.root.lookupService(fullServiceName);
    const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
    for (const m of svc.methodsArray) {
      m.resolve();
      const req = m.resolvedRequestType!;
      const res = m.resolvedResponseType!;
      def[m.name] = {
        path: `/${fullServiceName}/${m.name}`,
        requestStream: !!m.requestStream,
        responseStream: !!m.responseStream,
        // A Buffer is a request the caller encoded itself (Content.Write's WRITE, which would
        // otherwise copy every data chunk once more); anything else is encoded here.
        requestSerialize: (o: unknown) => (Buffer.isBuffer(o) ? o : Buffer.from(req.encode(req.fromObject(o as Record<string, unknown>)).finish())),
        requestDeserialize: (b: Buffer) => req.toObject(req.decode(b), TO_OBJECT),
        // Responses are built by ckd from normalised records, already in the shape encode()
        // takes: skipping fromObject halves the cost of large List replies.
        // A Buffer is a reply the service framed itself (List replies of memoised elements).
        responseSerialize: (o: unknown) => (Buffer.isBuffer(o) ? o : Buffer.from(res.encode(o as Record<string, unknown>).finish())),
        responseDeserialize: (b: Buffer) => res.toObject(res.decode(b), TO_OBJECT),
        originalName: m.name,
      } as grpc.MethodDefinition<unknown, unknown>;
    }
    this.services.set(fullServiceName, def);
    return def as grpc.ServiceDefinition;
  }
}

/**
 * A message made of one repeated message field, framed from elements that are already
 * encoded (the bytes protobufjs would write for `{ field: [..elements] }`).
 */
export function repeatedMessages(field: number, elements: readonly Buffer[]): Buffer {
  const tag = varint((field << 3) | 2);
  let size = 0;
  const lens = elements.map((e) => {
    const l = varint(e.length);
    size += tag.length + l.length + e.length;
    return l;
  });
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  elements.forEach((e, i) => {
    at += tag.copy(out, at);
    at += lens[i]!.copy(out, at);
    at += e.copy(out, at);
  });
  return out;
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

let cached: Protos | undefined;

/** Where the build writes the JSON form of every proto (tools/protos-json). */
export const protoBundlePath = (root = packageRoot()) => join(root, "dist", "protos.json");

/** The bundle, unless it is missing or older than a .proto file (then the files are parsed). */
function freshBundle(root: string): protobuf.INamespace | undefined {
  const path = protoBundlePath(root);
  let built: number;
  try {
    built = statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
  if (protoFiles(join(root, "proto")).some((f) => statSync(f).mtimeMs > built)) return undefined;
  return JSON.parse(readFileSync(path, "utf8")) as protobuf.INamespace;
}

/** The protos of this package, loaded once per process and immutable after. */
export function loadProtos(opts: { fromFiles?: boolean } = {}): Protos {
  if (opts.fromFiles) return new Protos(join(packageRoot(), "proto"));
  if (!cached) {
    const root = packageRoot();
    cached = new Protos(join(root, "proto"), freshBundle(root));
  }
  return cached;
}
