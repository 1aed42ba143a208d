// Image manifests and indexes (OCI and docker schema 2): media types, strict parsing of the
// documents a registry serves, their children, and the containerd GC labels that tie them.
import { invalidArgument } from "../errdefs/errdefs.js";
import { isDigest, isSize, type Descriptor, type Platform } from "./types.js";

export const MediaTypes = {
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerSchema1Manifest: "application/vnd.docker.distribution.manifest.v1+json",
  dockerSchema1SignedManifest: "application/vnd.docker.distribution.manifest.v1+prettyjws",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociEmpty: "application/vnd.oci.empty.v1+json",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerLayerZstd: "application/vnd.docker.image.rootfs.diff.tar.zstd",
  dockerLayerForeign: "application/vnd.docker.image.rootfs.foreign.diff.tar",
  dockerLayerForeignGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  ociLayerNonDistributable: "application/vnd.oci.image.layer.nondistributable.v1.tar",
  ociLayerNonDistributableGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  ociLayerNonDistributableZstd: "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
} as const;

/** containerd refuses manifests and indexes larger than this, and so do we. */
export const MAX_MANIFEST_BYTES = 4 << 20;

export interface ParsedManifest {
  kind: "index" | "manifest";
  mediaType: string;
  config?: Descriptor;
  layers: Descriptor[];
  manifests: Descriptor[];
}

export function isIndex(mt: string): boolean {
  return mt === MediaTypes.ociIndex || mt === MediaTypes.dockerManifestList;
}

export function isManifest(mt: string): boolean {
  return mt === MediaTypes.ociManifest || mt === MediaTypes.dockerManifest;
}

export function isConfig(mt: string): boolean {
  return mt === MediaTypes.ociConfig || mt === MediaTypes.dockerConfig;
}

/** A filesystem layer in any of the known encodings (encrypted variants included). */
export function isLayer(mt: string): boolean {
  const base = mt.replace(/\+encrypted$/, "");
  return (
    base.startsWith("application/vnd.oci.image.layer.") ||
    base.startsWith("application/vnd.docker.image.rootfs.diff.tar") ||
    base.startsWith("application/vnd.docker.image.rootfs.foreign.diff.tar")
  );
}

/**
 * Parses a manifest or index whose descriptor is `desc`, refusing anything containerd would:
 * oversized, not JSON, a media type that is unknown or disagrees with the descriptor, or a
 * child descriptor without a valid media type, digest and size.
 */
export function parseManifest(desc: Descriptor, bytes: Uint8Array): ParsedManifest {
  const what = `manifest ${desc.digest}`;
  const bad = (problem: string) => invalidArgument(`${what}: ${problem}`);
  if (bytes.length > MAX_MANIFEST_BYTES) {
    throw bad(`${bytes.length} bytes is larger than the ${MAX_MANIFEST_BYTES} byte limit for manifests`);
  }
  const declared = desc.mediaType;
  if (declared === MediaTypes.dockerSchema1Manifest || declared === MediaTypes.dockerSchema1SignedManifest) {
    throw bad(`docker schema 1 manifests (${declared}) are not supported`);
  }
  if (!isIndex(declared) && !isManifest(declared)) {
    throw bad(`media type ${JSON.stringify(declared)} is not a known manifest or index type`);
  }

  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"));
  } catch {
    throw bad("not valid JSON");
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw bad("not a JSON object");
  const o = doc as Record<string, unknown>;

  if (o.schemaVersion !== 2) throw bad(`schemaVersion is ${JSON.stringify(o.schemaVersion)}, want 2`);
  const hasManifests = "manifests" in o;
  const hasImageFields = "config" in o || "layers" in o;
  // As containerd's validateMediaType: only a manifest taken for an index (or the reverse) is
  // refused; a Docker document an OCI descriptor names (or the reverse), or one without a
  // mediaType field, is read as its descriptor says (ctr pulls such images).
  if (o.mediaType !== undefined) {
    if (typeof o.mediaType !== "string") throw bad("mediaType field is not a string");
    if (isManifest(declared) && isIndex(o.mediaType)) throw bad(`expected a manifest (${declared}) but found an index (${o.mediaType})`);
    if (isIndex(declared) && isManifest(o.mediaType)) throw bad(`expected an index (${declared}) but found a manifest (${o.mediaType})`);
  }
  // OCI documents may omit mediaType: their shape must then agree with the descriptor.
  if (isIndex(declared) && hasImageFields) throw bad(`index (${declared}) has config or layers fields`);
  if (isManifest(declared) && hasManifests) throw bad(`image manifest (${declared}) has a manifests field`);

  if (isIndex(declared)) {
    if (!Array.isArray(o.manifests)) throw bad("manifests field is missing or not an array");
    const manifests = o.manifests.map((d, i) => parseDescriptor(d, `${what}: manifests[${i}]`));
    return { kind: "index", mediaType: declared, layers: [], manifests };
  }
  if (o.config === undefined) throw bad("config field is missing");
  const config = parseDescriptor(o.config, `${what}: config`);
  if (!Array.isArray(o.layers)) throw bad("layers field is missing or not an array");
  const layers = o.layers.map((d, i) => parseDescriptor(d, `${what}: layers[${i}]`));
  return { kind: "manifest", mediaType: declared, config, layers, manifests: [] };
}

/** Validates one descriptor object from a document; `where` names it in errors. */
export function parseDescriptor(v: unknown, where: string): Descriptor {
  const bad = (problem: string) => invalidArgument(`${where}: ${problem}`);
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw bad("descriptor is not a JSON object");
  const o = v as Record<string, unknown>;
  if (typeof o.mediaType !== "string" || o.mediaType === "") throw bad("descriptor has no mediaType");
  if (!isDigest(o.digest)) throw bad(`digest ${JSON.stringify(o.digest)} is not sha256:<64 lowercase hex>`);
  if (!isSize(o.size)) throw bad(`size ${JSON.stringify(o.size)} is not a non-negative integer`);
  const d: Descriptor = { mediaType: o.mediaType, digest: o.digest, size: o.size };
  if (o.annotations !== undefined) {
    if (!isStringMap(o.annotations)) throw bad("annotations is not an object of strings");
    d.annotations = { ...o.annotations };
  }
  if (o.urls !== undefined) {
    if (!Array.isArray(o.urls) || !o.urls.every((u) => typeof u === "string")) throw bad("urls is not an array of strings");
    d.urls = [...(o.urls as string[])];
  }
  if (o.platform !== undefined) d.platform = parsePlatformObject(o.platform, `${where}: platform`);
  return d;
}

function parsePlatformObject(v: unknown, where: string): Platform {
  const bad = (problem: string) => invalidArgument(`${where}: ${problem}`);
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw bad("not a JSON object");
  const o = v as Record<string, unknown>;
  if (typeof o.os !== "string") throw bad("os is missing or not a string");
  if (typeof o.architecture !== "string") throw bad("architecture is missing or not a string");
  const p: Platform = { os: o.os, architecture: o.architecture };
  if (o.variant !== undefined) {
    if (typeof o.variant !== "string") throw bad("variant is not a string");
    p.variant = o.variant;
  }
  if (o["os.version"] !== undefined) {
    if (typeof o["os.version"] !== "string") throw bad("os.version is not a string");
    p["os.version"] = o["os.version"];
  }
  if (o["os.features"] !== undefined) {
    const f = o["os.features"];
    if (!Array.isArray(f) || !f.every((x) => typeof x === "string")) throw bad("os.features is not an array of strings");
    p["os.features"] = [...(f as string[])];
  }
  return p;
}

function isStringMap(v: unknown): v is Record<string, string> {
  return v !== null && typeof v === "object" && !Array.isArray(v) && Object.values(v).every((x) => typeof x === "string");
}

/** What a document points at: config then layers of a manifest, or the entries of an index. */
export function children(p: ParsedManifest): Descriptor[] {
  if (p.kind === "index") return [...p.manifests];
  return p.config ? [p.config, ...p.layers] : [...p.layers];
}

const KNOWN_CONFIGS = new Set<string>([
  MediaTypes.dockerConfig,
  MediaTypes.ociConfig,
  "application/vnd.containerd.container.criu.checkpoint.criu.tar",
  "application/vnd.containerd.container.checkpoint.config.v1+proto",
]);
const DOCKER_LAYERS = new Set<string>([MediaTypes.dockerLayer, MediaTypes.dockerLayerGzip, MediaTypes.dockerLayerForeign, MediaTypes.dockerLayerForeignGzip]);

/** A child's GC label key, by its media type, as containerd's images.ChildGCLabels. */
function childLabelKey(mt: string): string {
  if (KNOWN_CONFIGS.has(mt)) return "containerd.io/gc.ref.content.config";
  if (mt === MediaTypes.dockerManifest || mt === MediaTypes.ociManifest) return "containerd.io/gc.ref.content.m.";
  if (mt.startsWith("application/vnd.oci.image.layer.") || DOCKER_LAYERS.has(mt.split("+")[0]!)) return "containerd.io/gc.ref.content.l.";
  return "containerd.io/gc.ref.content.";
}

/**
 * The labels containerd puts on a manifest or index blob so GC keeps what it references, named
 * as its SetChildrenMappedLabels names them: by each child's media type (config, m.N for
 * manifests, l.N for layers, a bare N for anything else: nested indexes, artifacts' configs
 * and blobs), numbered per key in the document's order.
 */
export function gcLabels(p: ParsedManifest): Record<string, string> {
  const labels: Record<string, string> = {};
  const seen = new Map<string, number>();
  for (const child of children(p)) {
    const key = childLabelKey(child.mediaType);
    const idx = seen.get(key) ?? 0;
    seen.set(key, idx + 1);
    labels[idx > 0 || key.endsWith(".") ? `${key}${idx}` : key] = child.digest;
  }
  return labels;
}
