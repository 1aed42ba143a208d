// `ck images export`: images written as an OCI image layout tar with docker's manifest.json,
// entry for entry as containerd's archive exporter (images/archive/exporter.go) writes them:
// oci-layout, index.json naming each image (io.containerd.image.name and the OCI ref name),
// every blob under blobs/sha256/, manifest.json (Config, RepoTags, Layers) for the platform,
// all sorted by name. Everything the archive needs is looked up before a byte is written, and
// a file appears only once complete; the blobs stream from the Content API, digest-checked.
import { createHash, randomBytes } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Writable } from "node:stream";
import { finished } from "node:stream/promises";
import { once } from "node:events";
import tar from "tar-stream";
import type { ApiClient } from "./client.js";
import { ApiContent } from "./api-content.js";
import { fromApiDescriptor, isNonDistributable } from "./transfer.js";
import { CkError, failedPrecondition, invalidArgument, isNotFound, notFound } from "../errdefs/errdefs.js";
import { children, isIndex, isManifest, MAX_MANIFEST_BYTES, parseManifest } from "../remotes/manifest.js";
import type { Descriptor } from "../remotes/types.js";
import { familiarReference, goDescriptor, goJson, IMAGE_NAME_ANNOTATION, OCI_LAYOUT_VERSION, ociReferenceName, REF_NAME_ANNOTATION, type PlatformMatcher } from "./image-archive.js";

export interface ExportOptions {
  /** Which manifests of an index go in (and which one manifest.json names). */
  platform: PlatformMatcher;
  /** Every manifest of an index, not only the platform's. */
  allPlatforms: boolean;
  skipManifestJson: boolean;
  skipNonDistributable: boolean;
}

interface Entry {
  name: string;
  mode: number;
  type: "file" | "directory";
  size: number;
  /** The bytes of a small file; a blob's are read from the content store. */
  bytes?: Buffer;
  blob?: Descriptor;
}

/** The entries of the archive of images `names`, in the order written; throws before any is written. */
export async function planExport(api: ApiClient, names: readonly string[], opts: ExportOptions): Promise<Entry[]> {
  const content = new ApiContent(api);
  const documents = new Map<string, Buffer>();
  const read = async (d: Descriptor, what: string): Promise<Buffer> => {
    let b = documents.get(d.digest);
    if (!b) {
      try {
        b = await content.readAll(d.digest, MAX_MANIFEST_BYTES);
      } catch (err) {
        if (isNotFound(err)) throw notFound(`${what} ${d.digest} is not in the content store`);
        throw err;
      }
      documents.set(d.digest, b);
    }
    return b;
  };
  const targets: Descriptor[] = [];
  for (const name of names) {
    let image: any;
    try {
      image = (await api.call("images", "Get", { name })).image;
    } catch (err) {
      if (isNotFound(err)) throw notFound(`image "${name}"`);
      throw err;
    }
    const t = fromApiDescriptor(image.target);
    targets.push({ ...t, annotations: { ...t.annotations, [IMAGE_NAME_ANNOTATION]: name, [REF_NAME_ANNOTATION]: ociReferenceName(name) } });
  }

  const blobs = new Map<string, Descriptor>();
  const record = (d: Descriptor) => {
    if (opts.skipNonDistributable && isNonDistributable(d.mediaType)) return;
    blobs.set(d.digest, d);
  };
  // images.Walk with ChildrenHandler: the object, then everything under it, every platform.
  // Each object once: nested indexes may name the same child many times (a walk without this
  // took time exponential in their depth).
  const walked = new Set<string>();
  const walk = async (d: Descriptor, what: string): Promise<void> => {
    if (walked.has(d.digest)) return;
    walked.add(d.digest);
    record(d);
    if (!isIndex(d.mediaType) && !isManifest(d.mediaType)) return;
    const parsed = parseManifest(d, await read(d, what));
    for (const c of children(parsed)) await walk(c, `${what}: ${isIndex(c.mediaType) || isManifest(c.mediaType) ? "manifest" : "blob"}`);
  };

  /** manifest.json's images: the manifest, the names it is tagged with. */
  const dockerManifests = new Map<string, { manifest: Descriptor; names: string[] }>();
  const resolvedIndex = new Map<string, string>();
  for (const desc of targets) {
    const name = desc.annotations![IMAGE_NAME_ANNOTATION]!;
    const what = `image "${name}"`;
    if (isManifest(desc.mediaType)) {
      let m = dockerManifests.get(desc.digest);
      if (!m) {
        await walk(desc, `${what}: manifest`);
        m = { manifest: desc, names: [] };
        dockerManifests.set(desc.digest, m);
      }
      if (!opts.skipManifestJson) m.names.push(name);
      continue;
    }
    if (!isIndex(desc.mediaType)) throw invalidArgument(`${what}: only manifests may be exported, not ${desc.mediaType || "a target without a media type"}`);
    let chosen = resolvedIndex.get(desc.digest);
    if (chosen === undefined) {
      chosen = "";
      record(desc);
      const index = parseManifest(desc, await read(desc, `${what}: index`));
      const matching: Descriptor[] = [];
      for (const m of index.manifests) {
        if (!m.platform || opts.platform.match(m.platform)) matching.push(m);
        else if (!opts.allPlatforms) continue;
        await walk(m, `${what}: manifest`);
      }
      if (!opts.skipManifestJson) {
        if (matching.length === 0) throw notFound(`${what}: no manifest found for platform`);
        // Stable: the preferred platform first, entries without one last.
        const best = [...matching].sort((a, b) => (!a.platform ? (b.platform ? 1 : 0) : !b.platform ? -1 : opts.platform.less(a.platform, b.platform) ? -1 : opts.platform.less(b.platform, a.platform) ? 1 : 0))[0]!;
        chosen = best.digest;
        dockerManifests.set(chosen, { manifest: best, names: [] });
      }
      resolvedIndex.set(desc.digest, chosen);
    }
    if (chosen) dockerManifests.get(chosen)!.names.push(name);
  }

  // Everything is there before anything is written: not an archive cut off at a missing layer.
  for (const d of blobs.values()) {
    const info = await content.info(d.digest);
    if (!info) throw notFound(`content ${d.digest} (${d.mediaType}) of the exported images is not in the content store`);
    if (info.size !== d.size) throw failedPrecondition(`content ${d.digest} is ${info.size} bytes in the content store, not the ${d.size} its descriptor says`);
  }

  const file = (name: string, mode: number, text: string): Entry => {
    const bytes = Buffer.from(text);
    return { name, mode, type: "file", size: bytes.length, bytes };
  };
  const blobPath = (digest: string) => `blobs/sha256/${digest.slice("sha256:".length)}`;
  const entries: Entry[] = [
    file("oci-layout", 0o444, goJson({ imageLayoutVersion: OCI_LAYOUT_VERSION })),
    file("index.json", 0o644, goJson({ schemaVersion: 2, manifests: targets.map(goDescriptor) })),
    ...[...blobs.values()].map((d): Entry => ({ name: blobPath(d.digest), mode: 0o444, type: "file", size: d.size, blob: d })),
  ];
  if (dockerManifests.size > 0 && !opts.skipManifestJson) {
    const list = [];
    for (const { manifest, names: tags } of dockerManifests.values()) {
      const parsed = parseManifest(manifest, await read(manifest, "manifest"));
      list.push({
        Config: blobPath(parsed.config!.digest),
        RepoTags: tags.length ? tags.map(familiarReference) : null,
        Layers: parsed.layers.length ? parsed.layers.map((l) => blobPath(l.digest)) : null,
      });
    }
    entries.push(file("manifest.json", 0o644, goJson(list)));
  }
  if (blobs.size > 0) entries.push({ name: "blobs/", mode: 0o755, type: "directory", size: 0 }, { name: "blobs/sha256/", mode: 0o755, type: "directory", size: 0 });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return entries;
}

/** Writes the planned archive to `out`, each blob streamed from the content store and its digest checked. */
export async function writeArchive(api: ApiClient, entries: readonly Entry[], out: Writable): Promise<void> {
  const content = new ApiContent(api);
  const pack = tar.pack();
  // stdout stays open (ck still writes to it after, a failure's message); a file is closed.
  const writing = pump(pack as AsyncIterable<Buffer>, out, out !== process.stdout);
  writing.catch(() => undefined); // awaited below
  try {
    for (const e of entries) {
      // containerd's exporter sets no time, owner or user names.
      const header: Partial<tar.Header> & { name: string } = { name: e.name, mode: e.mode, type: e.type, size: e.size, mtime: new Date(0), uid: 0, gid: 0 };
      if (e.type === "directory" || e.bytes) {
        await new Promise<void>((resolve, reject) => pack.entry(header, e.bytes ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve())));
        continue;
      }
      await writeBlob(pack, header, content, e.blob!);
    }
    pack.finalize();
    await writing;
  } catch (err) {
    pack.destroy(err as Error);
    // The output's own failure (a full disk) is what the entries' "destroyed" stands for.
    const outFailed = await writing.then(() => undefined, (e: unknown) => e);
    throw outFailed ?? err;
  }
}

/** Copies `from` into `out`, waiting for it to drain; ends `out` (and waits for it) when told. */
async function pump(from: AsyncIterable<Buffer>, out: Writable, end: boolean): Promise<void> {
  let failed: unknown;
  const onError = (err: unknown) => (failed ??= err);
  out.on("error", onError);
  try {
    for await (const chunk of from) {
      if (failed) throw failed;
      if (!out.write(chunk)) await once(out, "drain");
    }
    if (end) {
      out.end();
      await finished(out);
    }
    if (failed) throw failed;
  } finally {
    out.off("error", onError);
  }
}

async function writeBlob(pack: ReturnType<typeof tar.pack>, header: Partial<tar.Header> & { name: string }, content: ApiContent, d: Descriptor): Promise<void> {
  let entry!: ReturnType<ReturnType<typeof tar.pack>["entry"]>;
  const written = new Promise<void>((resolve, reject) => {
    entry = pack.entry(header, (err) => (err ? reject(err) : resolve()));
  });
  entry.on("error", () => undefined); // the entry's callback has it
  written.catch(() => undefined);
  const hash = createHash("sha256");
  let n = 0;
  for await (const chunk of content.read(d.digest)) {
    hash.update(chunk);
    n += chunk.length;
    if (n > d.size) break;
    if (!entry.write(chunk)) await new Promise<void>((r) => (entry.once("drain", r), entry.once("close", r)));
    if (entry.destroying) break;
  }
  const got = `sha256:${hash.digest("hex")}`;
  if (n !== d.size || got !== d.digest) {
    const err = new CkError("DataLoss", `content ${d.digest}: the content store returned ${n} bytes of digest ${got}, not the ${d.size} bytes named`);
    entry.destroy(err);
    throw err;
  }
  entry.end(undefined);
  await written;
}

/** Exports to a file (complete or absent: written beside it, renamed into place) or to stdout ("-"). */
export async function exportImages(api: ApiClient, out: string, names: readonly string[], opts: ExportOptions): Promise<void> {
  const entries = await planExport(api, names, opts);
  if (out === "-") {
    await writeArchive(api, entries, process.stdout);
    return;
  }
  const temp = join(dirname(out), `.${basename(out)}.${randomBytes(6).toString("hex")}.partial`);
  let file;
  try {
    file = await open(temp, "wx");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw invalidArgument(`${out}: ${e.code === "ENOENT" ? "no such directory" : e.code} (${e.message})`);
  }
  try {
    await writeArchive(api, entries, file.createWriteStream());
    await rename(temp, out);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  } finally {
    await file.close().catch(() => undefined);
  }
}
