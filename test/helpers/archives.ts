// Image archives for the import and export tests: small OCI layouts and docker save archives
// built here (tar-stream), and a listing of an archive to compare one with another.
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import tar from "tar-stream";

/** A tar archive of `entries` (name, bytes), in order, as tar-stream writes it. */
export async function tarOf(entries: Array<[string, Buffer | string]>): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const [name, body] of entries) {
    const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
    await new Promise<void>((res, rej) => pack.entry({ name, size: b.length, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 }, b, (err) => (err ? rej(err) : res())));
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export const sha256 = (b: Buffer | string) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** A blob: its bytes and its descriptor. */
export function blob(mediaType: string, bytes: Buffer | string, extra: object = {}) {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
  return { bytes: b, desc: { mediaType, digest: sha256(b), size: b.length, ...extra } };
}

/** An image of one gzipped layer for a platform: its blobs, the manifest last. */
export async function platformImage(arch: string, files: Array<[string, string]>) {
  const layerTar = await tarOf(files);
  const layer = blob("application/vnd.oci.image.layer.v1.tar+gzip", gzipSync(layerTar));
  const config = blob("application/vnd.oci.image.config.v1+json", JSON.stringify({ architecture: arch, os: "linux", config: {}, rootfs: { type: "layers", diff_ids: [sha256(layerTar)] } }));
  const manifest = blob("application/vnd.oci.image.manifest.v1+json", JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: config.desc, layers: [layer.desc] }), { platform: { architecture: arch, os: "linux" } });
  return { blobs: [layer, config, manifest], manifest };
}

/**
 * An OCI archive (oci-layout, index.json, blobs/sha256/...): a two-platform index named
 * "v1" (amd64, arm64), an amd64 manifest named "single", and another amd64 manifest without a name.
 */
export async function ociArchive(): Promise<Buffer> {
  const amd = await platformImage("amd64", [["etc/amd", "amd64\n"]]);
  const arm = await platformImage("arm64", [["etc/arm", "arm64\n"]]);
  // (Not the arm64 one: an image of another platform is created by --digests, but its blobs,
  // which ctr labels for no one, are collected in a race with the unpack that reads them.)
  const other = await platformImage("amd64", [["etc/other", "other\n"]]);
  const index = blob("application/vnd.oci.image.index.v1+json", JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [amd.manifest.desc, arm.manifest.desc] }));
  const { platform: _p, ...single } = amd.manifest.desc as typeof amd.manifest.desc & { platform?: unknown };
  const top = {
    schemaVersion: 2,
    manifests: [
      { ...index.desc, annotations: { "org.opencontainers.image.ref.name": "v1" } },
      { ...single, annotations: { "org.opencontainers.image.ref.name": "single" } },
      other.manifest.desc,
    ],
  };
  const all = [...amd.blobs, ...arm.blobs, ...other.blobs, index];
  return tarOf([["oci-layout", JSON.stringify({ imageLayoutVersion: "1.0.0" })], ["index.json", JSON.stringify(top)], ...all.map((b) => [`blobs/sha256/${b.desc.digest.slice(7)}`, b.bytes] as [string, Buffer])]);
}

/** A docker-archive (docker save's layout): one uncompressed layer, tagged dock:1. */
export async function dockerArchive(): Promise<Buffer> {
  const layerTar = await tarOf([["etc/dock", "docker\n"]]);
  const id = createHash("sha256").update(layerTar).digest("hex");
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: { Env: ["A=1"] }, rootfs: { type: "layers", diff_ids: [`sha256:${id}`] } }));
  const configName = `${createHash("sha256").update(config).digest("hex")}.json`;
  const manifest = JSON.stringify([{ Config: configName, RepoTags: ["dock:1"], Layers: [`${id}/layer.tar`] }]);
  return tarOf([[configName, config], [`${id}/layer.tar`, layerTar], ["manifest.json", manifest]]);
}

/**
 * An archive ctr wrote: its digest, then entry by entry name, type, mode, size and content
 * digest (JSON files in full). ctr (the client, whichever daemon) writes a manifest.json of
 * several images in Go's map order (archive/exporter.go's manifestsRecord ranges over a map),
 * which changes from run to run: its entries are listed sorted, and such an archive's bytes
 * are not compared as a whole.
 */
export async function archiveListing(bytes: Buffer): Promise<string> {
  const ex = tar.extract();
  const rows: string[] = [];
  let mapOrdered = false;
  const reading = (async () => {
    for await (const e of ex) {
      const h = e.header;
      const parts: Buffer[] = [];
      for await (const chunk of e) parts.push(chunk as Buffer);
      let body = Buffer.concat(parts).toString("utf8");
      const json = /(^|\/)(index|manifest)\.json$|oci-layout$/.test(h.name);
      if (h.name === "manifest.json") {
        const entries = (JSON.parse(body) as unknown[]).map((m) => JSON.stringify(m));
        mapOrdered = entries.length > 1;
        body = `[${entries.sort().join(",")}]`;
      }
      rows.push([h.name, h.type, (h.mode ?? 0).toString(8), h.size, h.mtime?.getTime(), json ? body : sha256(Buffer.concat(parts))].join(" "));
    }
  })();
  ex.end(bytes);
  await reading;
  rows.unshift(`archive ${mapOrdered ? "(several images: manifest.json in Go's map order)" : sha256(bytes)} ${bytes.length}`);
  return rows.join("\n") + "\n";
}
