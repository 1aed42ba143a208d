// `ck images import`: an OCI image layout tar or a docker save archive read as containerd's
// importer reads them (images/archive/importer.go, import.go): every regular file is written
// to the content store as it streams past (a blobs/sha256/<hex> entry with that expected
// digest, checked here and by the daemon: a blob whose bytes do not match is refused), an
// OCI layout's index.json or, for a docker archive, an index and manifests built from its
// manifest.json (byte for byte as containerd builds them, so the digests are ctr's). Then,
// from the index, the images it names are registered, their content labelled for GC for the
// platforms kept. All of it under a lease: what fails leaves no image and no content that
// outlives the lease. Unlike ctr, an image is registered only once everything it needs for
// those platforms is in the content store.
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { posix } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import tar from "tar-stream";
import type { ApiClient } from "./client.js";
import { ApiContent } from "./api-content.js";
import { registerImage, withLease } from "./transfer.js";
import { invalidArgument, isNotFound, notFound, withContext } from "../errdefs/errdefs.js";
import { gcLabels, isIndex, isManifest, MAX_MANIFEST_BYTES, MediaTypes, parseManifest, type ParsedManifest } from "../remotes/manifest.js";
import { normalizePlatform } from "../remotes/platform.js";
import type { Descriptor } from "../remotes/types.js";
import { dockerReference, goDescriptor, goJson, IMAGE_NAME_ANNOTATION, imageName, OCI_LAYOUT_VERSION, ociReferenceName, REF_NAME_ANNOTATION, refTranslator, type PlatformMatcher } from "./image-archive.js";

/** containerd's limit on oci-layout and manifest.json. */
const JSON_LIMIT = 20 << 20;
const BLOB_NAME = /^blobs\/sha256\/([a-f0-9]{64})$/;
/** Bytes gathered before a WRITE goes out. */
const FLUSH_AT = 1 << 20;

export interface ImportOptions {
  /** The archive's name in messages. */
  label: string;
  /** Base name: tag-only refs are named under it, and (given) only refs under it are kept. */
  baseName?: string;
  digests: boolean;
  skipDigestForNamed: boolean;
  indexName?: string;
  /** Which manifests of an index are kept (labelled, checked). */
  platform: PlatformMatcher;
  labels: Record<string, string>;
}

export interface ImportedImage {
  name: string;
  target: Descriptor;
}

/** A docker archive's manifest.json entry. */
interface DockerManifest {
  Config: string;
  RepoTags: string[] | null;
  Layers: string[] | null;
}

/** What reading the tar found. */
interface Read {
  layout?: { imageLayoutVersion?: unknown };
  dockerManifests?: unknown;
  index?: { desc: Descriptor; bytes: Buffer };
  /** Files written to the content store, by path in the archive. */
  blobs: Map<string, { digest: string; size: number; head: Buffer }>;
  symlinks: Map<string, string>;
}

/** Opens IN (or stdin for "-") as a stream of bytes; a gzipped archive is read through gunzip. */
async function archiveStream(file: string): Promise<Readable> {
  let source: Readable;
  if (file === "-") source = process.stdin;
  else {
    try {
      const fh = await open(file, "r");
      source = fh.createReadStream();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === "ENOENT") throw notFound(`archive ${file}: no such file`);
      throw invalidArgument(`archive ${file}: ${e.code ?? e.message}`);
    }
  }
  const it = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  // Enough of the start to tell gzip's magic number (a pipe may hand over a byte at a time).
  let head = Buffer.alloc(0);
  while (head.length < 2) {
    const r = await it.next();
    if (r.done) break;
    head = Buffer.concat([head, r.value]);
  }
  const all = Readable.from(
    (async function* () {
      if (head.length) yield head;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    })(),
    { objectMode: false },
  );
  if (head[0] === 0x1f && head[1] === 0x8b) {
    const gunzip = createGunzip();
    pipeline(all, gunzip).catch((err) => gunzip.destroy(err));
    return gunzip;
  }
  return all;
}

/** Reads the whole tar, writing each regular file into the content store as it passes. */
async function readArchive(api: ApiClient, metadata: Record<string, string>, input: Readable, label: string): Promise<Read> {
  const content = new ApiContent(api, metadata);
  const read: Read = { blobs: new Map(), symlinks: new Map() };
  const ex = tar.extract();
  const feeding = pipeline(input, ex);
  feeding.catch(() => undefined); // its failure ends the entry loop
  const entries = ex[Symbol.asyncIterator]();
  let seen = 0;
  try {
    for (;;) {
      let r: IteratorResult<any>;
      try {
        r = await entries.next();
      } catch (err) {
        throw invalidArgument(`archive ${label}: not a tar archive, or cut short (${(err as Error).message})`);
      }
      if (r.done) break;
      seen++;
      const entry = r.value;
      const h = entry.header as { name: string; type: string; size: number; linkname?: string };
      const name = posix.normalize(h.name).replace(/^(\.\/)+/, "").replace(/\/+$/, "");
      if (h.type === "symlink" && h.linkname !== undefined) read.symlinks.set(name, posix.join(posix.dirname(name), h.linkname));
      if (h.type !== "file") {
        for await (const _ of entry);
        continue;
      }
      if (name === "oci-layout") read.layout = parseJsonEntry(await small(entry, JSON_LIMIT, `${label}: oci-layout`), `archive ${label}: oci-layout`) as Read["layout"];
      else if (name === "manifest.json") read.dockerManifests = parseJsonEntry(await small(entry, JSON_LIMIT, `${label}: manifest.json`), `archive ${label}: manifest.json`);
      else {
        const keep = name === "index.json";
        const written = await ingest(content, entry, name, h.size, label, keep);
        read.blobs.set(name, written);
        if (keep) read.index = { desc: { mediaType: MediaTypes.ociIndex, digest: written.digest, size: written.size }, bytes: written.bytes! };
      }
    }
    await feeding;
  } catch (err) {
    input.destroy();
    ex.destroy();
    await feeding.catch(() => undefined);
    throw err;
  }
  if (seen === 0) throw invalidArgument(`archive ${label}: not a tar archive (no entries)`);
  return read;
}

async function small(entry: AsyncIterable<Buffer>, limit: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of entry) {
    n += c.length;
    if (n > limit) throw invalidArgument(`archive ${what} is larger than ${limit} bytes`);
    parts.push(c);
  }
  return Buffer.concat(parts);
}

function parseJsonEntry(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw invalidArgument(`${what}: not valid JSON (${(err as Error).message})`);
  }
}

/**
 * Writes one archive entry to the content store (ref `tar-<name>`, as ctr's). A
 * blobs/sha256/<hex> entry is written with that expected digest: one the store has already is
 * skipped, and bytes of another digest are refused and their ingest dropped.
 */
async function ingest(content: ApiContent, entry: AsyncIterable<Buffer>, name: string, size: number, label: string, keep: boolean): Promise<{ digest: string; size: number; head: Buffer; bytes?: Buffer }> {
  const expected = BLOB_NAME.exec(name)?.[1];
  const digest = expected ? `sha256:${expected}` : undefined;
  const ref = `tar-${name}`;
  const w = await content.open(ref, { ...(digest ? { expected: digest } : {}), total: size });
  const hash = createHash("sha256");
  let head = Buffer.alloc(0);
  const kept: Buffer[] = [];
  let n = 0;
  // The store has it (this namespace, or shared from another): its bytes are only read past,
  // but still checked, as a bad archive is refused whatever the store holds.
  const skip = w === "exists" || w.complete;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  try {
    if (!skip && w.offset !== 0) await w.truncate();
    for await (const chunk of entry) {
      hash.update(chunk);
      if (head.length < 16) head = Buffer.concat([head, chunk.subarray(0, 16 - head.length)]);
      if (keep) {
        if (n + chunk.length > JSON_LIMIT) throw invalidArgument(`archive ${label}: ${name} is larger than ${JSON_LIMIT} bytes`);
        kept.push(chunk);
      }
      n += chunk.length;
      if (skip) continue;
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (pendingBytes >= FLUSH_AT) {
        await w.write(pending);
        pending = [];
        pendingBytes = 0;
      }
    }
    const got = `sha256:${hash.digest("hex")}`;
    if (digest && got !== digest) throw invalidArgument(`archive ${label}: ${name} holds bytes of digest ${got}, not the ${digest} its name says`);
    if (!skip) {
      if (pendingBytes) await w.write(pending);
      await w.commit(n, got);
    } else if (w !== "exists") await w.commit(size, got);
    return { digest: got, size: n, head, ...(keep ? { bytes: Buffer.concat(kept) } : {}) };
  } catch (err) {
    if (w !== "exists") {
      w.close();
      await content.abort(ref).catch(() => undefined);
    }
    throw err;
  }
}

/** The index an OCI layout names, or the one containerd builds for a docker archive. */
async function archiveIndex(content: ApiContent, read: Read, label: string): Promise<{ desc: Descriptor; bytes: Buffer }> {
  if (read.layout !== undefined) {
    const version = read.layout?.imageLayoutVersion;
    if (version !== undefined && version !== "") {
      if (version !== OCI_LAYOUT_VERSION) throw invalidArgument(`archive ${label}: oci-layout: unsupported OCI image layout version ${JSON.stringify(version)} (want ${OCI_LAYOUT_VERSION})`);
      if (!read.index) throw invalidArgument(`archive ${label}: an OCI image layout without index.json`);
      return read.index;
    }
  }
  if (read.dockerManifests === undefined || read.dockerManifests === null) {
    throw invalidArgument(`archive ${label}: neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)`);
  }
  return dockerIndex(content, read, label);
}

/**
 * containerd's index of a docker archive: per manifest.json entry a Docker schema 2 manifest
 * (config, layers typed by their first bytes: gzip or not), its platform from the config, one
 * index entry per RepoTag (normalised name and OCI ref name), one without a name when untagged.
 */
async function dockerIndex(content: ApiContent, read: Read, label: string): Promise<{ desc: Descriptor; bytes: Buffer }> {
  const what = `archive ${label}: manifest.json`;
  const list = read.dockerManifests;
  if (!Array.isArray(list)) throw invalidArgument(`${what}: not a list of images`);
  const blob = (path: unknown, kind: string, i: number) => {
    if (typeof path !== "string") throw invalidArgument(`${what}: [${i}].${kind} is not a path`);
    const b = read.blobs.get(path) ?? read.blobs.get(read.symlinks.get(path) ?? "");
    if (!b) throw invalidArgument(`${what}: [${i}]: ${kind === "Config" ? "image config" : "layer"} ${JSON.stringify(path)} is not in the archive`);
    return b;
  };
  const manifests: Descriptor[] = [];
  for (const [i, m] of (list as DockerManifest[]).entries()) {
    if (m === null || typeof m !== "object") throw invalidArgument(`${what}: [${i}] is not an object`);
    const config = blob(m.Config, "Config", i);
    if (m.Layers !== null && m.Layers !== undefined && !Array.isArray(m.Layers)) throw invalidArgument(`${what}: [${i}].Layers is not a list`);
    const layers = (m.Layers ?? []).map((p) => {
      const b = blob(p, "Layers", i);
      return { mediaType: isCompressed(b.head) ? MediaTypes.dockerLayerGzip : MediaTypes.dockerLayer, digest: b.digest, size: b.size };
    });
    const bytes = Buffer.from(
      goJson({
        schemaVersion: 2,
        mediaType: MediaTypes.dockerManifest,
        config: goDescriptor({ mediaType: MediaTypes.dockerConfig, digest: config.digest, size: config.size }),
        layers: layers.map(goDescriptor),
      }),
    );
    const desc: Descriptor = { mediaType: MediaTypes.dockerManifest, digest: sha256(bytes), size: bytes.length };
    await writeDocument(content, desc, bytes);
    let image: any;
    try {
      image = JSON.parse((await content.readAll(config.digest, MAX_MANIFEST_BYTES)).toString("utf8"));
    } catch (err) {
      throw invalidArgument(`${what}: [${i}]: image config ${m.Config}: ${(err as Error).message}`);
    }
    if (image && typeof image === "object" && (image.os || image.architecture)) desc.platform = normalizePlatform({ os: String(image.os ?? ""), architecture: String(image.architecture ?? "") });
    if (m.RepoTags !== null && m.RepoTags !== undefined && !Array.isArray(m.RepoTags)) throw invalidArgument(`${what}: [${i}].RepoTags is not a list`);
    if (!m.RepoTags?.length) manifests.push(desc);
    for (const tag of m.RepoTags ?? []) {
      let normalized: string;
      try {
        normalized = dockerReference(String(tag));
      } catch (err) {
        throw withContext(`${what}: [${i}].RepoTags`, err);
      }
      manifests.push({ ...desc, annotations: { [IMAGE_NAME_ANNOTATION]: normalized, [REF_NAME_ANNOTATION]: ociReferenceName(normalized) } });
    }
  }
  const bytes = Buffer.from(goJson({ schemaVersion: 2, manifests: manifests.length ? manifests.map(goDescriptor) : null }));
  const desc: Descriptor = { mediaType: MediaTypes.ociIndex, digest: sha256(bytes), size: bytes.length };
  await writeDocument(content, desc, bytes);
  return { desc, bytes };
}

/** containerd's DetectCompression: anything it knows (gzip, zstd) counts as compressed. */
function isCompressed(head: Buffer): boolean {
  return (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) || (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528);
}

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function writeDocument(content: ApiContent, desc: Descriptor, bytes: Buffer): Promise<void> {
  const w = await content.open(`manifest-${desc.digest}`, { expected: desc.digest, total: desc.size });
  if (w === "exists") return;
  try {
    if (!w.complete) {
      if (w.offset !== 0) await w.truncate();
      await w.write(bytes);
    }
    await w.commit(desc.size, desc.digest);
  } catch (err) {
    w.close();
    throw err;
  }
}

/** The date ctr names unnamed imports by: import-YYYY-MM-DD, local time. */
function importPrefix(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `import-${now.getFullYear()}-${p(now.getMonth() + 1)}-${p(now.getDate())}`;
}

/**
 * Imports the archive `file` ("-": stdin): content, GC labels and image records, under one
 * lease. Resolves with the images registered, in ctr's order.
 */
export async function importArchive(api: ApiClient, file: string, opts: ImportOptions): Promise<ImportedImage[]> {
  const input = await archiveStream(file);
  const prefix = opts.baseName || importPrefix();
  const translate = refTranslator(prefix, !!opts.baseName);
  return withLease(api, async (metadata) => {
    const content = new ApiContent(api, metadata);
    const read = await readArchive(api, metadata, input, opts.label);
    const index = await archiveIndex(content, read, opts.label);
    let top: ParsedManifest;
    try {
      top = parseManifest(index.desc, index.bytes);
    } catch (err) {
      throw withContext(`archive ${opts.label}: index.json`, err);
    }
    const images: ImportedImage[] = [];
    if (opts.indexName) images.push({ name: opts.indexName, target: index.desc });
    for (const m of top.manifests) {
      const name = imageName(m.annotations, translate);
      if (name) images.push({ name, target: m });
      if (opts.skipDigestForNamed && name) continue;
      if (opts.digests) images.push({ name: `${prefix}@${m.digest}`, target: m });
    }
    await labelTree(content, index.desc, top, opts.platform, opts.label);
    for (const img of images) {
      const { platform: _dropped, ...target } = img.target;
      await registerImage(api, img.name, target, opts.labels, metadata);
    }
    return images;
  });
}

/**
 * containerd's WalkNotEmpty with FilterPlatforms and SetChildrenLabels from the archive's
 * index: each index and manifest labelled towards the children kept, and (ck's addition)
 * every object kept checked present, before any image is registered.
 */
async function labelTree(content: ApiContent, root: Descriptor, rootParsed: ParsedManifest, platform: PlatformMatcher, label: string): Promise<void> {
  const done = new Set<string>();
  const visit = async (d: Descriptor, parsed: ParsedManifest | undefined, from: string): Promise<void> => {
    if (done.has(d.digest)) return;
    done.add(d.digest);
    const wrongSize = (size: number) => invalidArgument(`archive ${label}: ${d.digest} (${d.mediaType}, named by ${from}) is ${size} bytes, not the ${d.size} its descriptor says`);
    if (!isIndex(d.mediaType) && !isManifest(d.mediaType)) {
      const info = await content.info(d.digest);
      if (!info) throw notFound(`archive ${label}: ${d.digest} (${d.mediaType}, named by ${from}) is neither in the archive nor in the content store`);
      if (info.size !== d.size) throw wrongSize(info.size);
      return;
    }
    if (!parsed) {
      let bytes: Buffer;
      try {
        bytes = await content.readAll(d.digest, MAX_MANIFEST_BYTES);
      } catch (err) {
        if (isNotFound(err)) throw notFound(`archive ${label}: ${d.digest} (${d.mediaType}, named by ${from}) is neither in the archive nor in the content store`);
        throw err;
      }
      if (bytes.length !== d.size) throw wrongSize(bytes.length);
      parsed = parseManifest(d, bytes);
    }
    const kept = parsed.kind === "index" ? { ...parsed, manifests: parsed.manifests.filter((m) => !m.platform || platform.match(m.platform)) } : parsed;
    const labels = gcLabels(kept);
    if (Object.keys(labels).length) await content.setLabels(d.digest, labels);
    const kind = parsed.kind === "index" ? "index" : "manifest";
    for (const c of kept.kind === "index" ? kept.manifests : [...(kept.config ? [kept.config] : []), ...kept.layers]) await visit(c, undefined, `${kind} ${d.digest}`);
  };
  await visit(root, rootParsed, "index.json");
}
