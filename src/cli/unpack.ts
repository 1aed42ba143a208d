// Unpacking an image into snapshots, client side, as ctr does it (../shared/CTR-COMPAT.md 3b):
// for the platform's manifest, the chain IDs of the config's diff_ids; per layer, Stat the
// chain ID (there: skip), else Prepare an `extract-<nanos>-<rand> <chainID>` snapshot on the
// parent, Diff.Apply the layer blob onto its mounts, check the answer against the diff_id and
// Commit it under the chain ID. AlreadyExists on Commit means another client unpacked the
// same layer first: the own snapshot is removed and the chain goes on. Everything runs under
// the caller's lease, so nothing half-made outlives a failure for long.
// `ck pull` asks ckd to unpack each layer itself first (ck.services.unpack.v1, see
// docs/snapshots.md "Sharing"): the result is verified and shared across namespaces, so a
// warm pull into another namespace applies nothing. Those calls go out side by side, each as
// soon as its layer is fetched, so ckd applies layers in parallel and commits them in chain
// order. A daemon without it (Unimplemented) gets the ctr-style unpack above.
import { createHash, randomBytes } from "node:crypto";
import type { ApiClient } from "./client.js";
import { ApiContent } from "./api-content.js";
import { imageContents, type ImageContents } from "./transfer.js";
import { CkError, isAlreadyExists, isClass, isNotFound } from "../errdefs/errdefs.js";
import { MAX_MANIFEST_BYTES, parseManifest, type ParsedManifest } from "../remotes/manifest.js";
import { selectManifests } from "../remotes/platform.js";
import type { Descriptor, Platform } from "../remotes/types.js";
import { UNCOMPRESSED_LABEL } from "../commands/gc.js";

export const GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot.";

export interface UnpackOptions {
  snapshotter: string;
  platform?: Platform;
  /** Sent with every call (the pull's containerd-lease). */
  metadata?: Record<string, string>;
  /** Told about each layer as it is handled. */
  onLayer?: (chainId: string, status: "exists" | "unpacking" | "unpacked") => void;
  /** Ask ckd to unpack (ck.services.unpack.v1) before doing it ctr's way (default true). */
  daemonUnpack?: boolean;
  /** Manifests and indexes already parsed (by digest): not read again. */
  manifests?: ReadonlyMap<string, ParsedManifest>;
  /** Resolves once a blob is in the content store (a pull unpacks while it still fetches). */
  ready?: (digest: string) => Promise<void>;
  /** The config's bytes when the caller has them already (a pull's fetch): not read again. */
  configBytes?: (digest: string) => Buffer | undefined;
  /**
   * Return without waiting for the config's `gc.ref.snapshot` label (UnpackResult.configLabelled
   * settles with it): a pull registers the image meanwhile and waits for both under its lease.
   */
  deferConfigLabel?: boolean;
}

export interface UnpackResult {
  /** Chain ID of the top layer: the snapshot a container's rootfs is prepared on. */
  chainId: string;
  /** Layers applied by this call (the rest existed or were shared). */
  applied: number;
  /** Layers whose snapshots ckd shared from another namespace (no disk work). */
  shared: number;
  layers: number;
  /** Settles once the config carries its `gc.ref.snapshot.<sn>` label (at once unless deferConfigLabel). */
  configLabelled: Promise<void>;
}

/** The chain IDs of a list of diff_ids (OCI image spec: identity.ChainIDs). */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : "sha256:" + createHash("sha256").update(`${prev} ${d}`).digest("hex"));
  }
  return out;
}

/** containerd's unpack key: `extract-<nanoseconds>-<random> <chainID>`. */
function extractKey(chainId: string): string {
  const nanos = BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n);
  return `extract-${nanos}-${randomBytes(6).toString("base64url")} ${chainId}`;
}

/**
 * The platform's manifest of an image, from `known` documents (a pull's fetch parsed them)
 * or read from the content store; undefined when an index has no manifest for the platform.
 */
async function platformManifest(api: ApiClient, target: Descriptor, platform: Platform | undefined, known: ReadonlyMap<string, ParsedManifest>): Promise<ParsedManifest | undefined> {
  const content = new ApiContent(api);
  let desc = target;
  for (let depth = 0; depth < 8; depth++) {
    const parsed = known.get(desc.digest) ?? parseManifest(desc, await content.readAll(desc.digest, MAX_MANIFEST_BYTES));
    if (parsed.kind !== "index") return parsed;
    // As containerd's images.Manifest: the entry that serves the platform best, not the first that runs on it.
    const chosen = platform ? selectManifests(parsed, platform)[0] : parsed.manifests[0];
    if (!chosen) return undefined;
    desc = chosen;
  }
  throw new CkError("InvalidArgument", `image ${target.digest}: indexes nested too deep`);
}

/** What imageLayers may take from its caller instead of reading it from the content store. */
export interface LayerSources {
  /** The image's content, read already (images check): not read twice. */
  walked?: ImageContents;
  /** Manifests a pull's fetch parsed: then only the config is read. */
  known?: ReadonlyMap<string, ParsedManifest>;
  /** Resolves once a blob is in the content store (waited on for the config). */
  ready?: (digest: string) => Promise<void>;
  /** The config's bytes, when the caller has them (a pull's fetch): not read at all. */
  configBytes?: (digest: string) => Buffer | undefined;
}

/** The manifest, config descriptor and diff_ids of an image for a platform. */
export async function imageLayers(
  api: ApiClient,
  target: Descriptor,
  platform: Platform | undefined,
  from: LayerSources = {},
) {
  const { walked, known, ready, configBytes } = from;
  const manifest = walked ? walked.manifest : known ? await platformManifest(api, target, platform, known) : (await imageContents(api, target, platform)).manifest;
  const configDesc = manifest?.config;
  if (!manifest || !configDesc) throw new CkError("NotFound", `image ${target.digest}: no manifest for the platform in the content store`);
  await ready?.(configDesc.digest);
  const content = new ApiContent(api);
  const bytes = configBytes?.(configDesc.digest) ?? (await content.readAll(configDesc.digest, MAX_MANIFEST_BYTES));
  const config = JSON.parse(bytes.toString("utf8"));
  const diffIds: string[] = config?.rootfs?.diff_ids ?? [];
  const layers = manifest.layers;
  if (diffIds.length !== layers.length) {
    throw new CkError("FailedPrecondition", `image ${target.digest}: ${layers.length} layers but ${diffIds.length} diff_ids in the config`);
  }
  return { layers, diffIds, config: configDesc, configJson: config, chainIds: chainIds(diffIds) };
}

const apiDescriptor = (d: Descriptor) => ({ media_type: d.mediaType, digest: d.digest, size: d.size, annotations: d.annotations ?? {} });

/** Unpacks the image `target` into committed snapshots named by chain ID. */
export async function unpackImage(api: ApiClient, target: Descriptor, opts: UnpackOptions): Promise<UnpackResult> {
  const metadata = opts.metadata ?? {};
  const sn = opts.snapshotter;
  const call = (service: "snapshots" | "diff", method: string, req: object) => api.call(service, method, req, { metadata });
  const content = new ApiContent(api, metadata);
  const { layers, diffIds, config, chainIds: chain } = await imageLayers(api, target, opts.platform, { known: opts.manifests, ready: opts.ready, configBytes: opts.configBytes });
  let applied = 0;
  let shared = 0;
  const daemonUnpack = opts.daemonUnpack ?? true;
  // Label updates of ckd-unpacked layers run alongside the other layers' unpacks.
  const labelling: Promise<void>[] = [];
  const label = (digest: string, labels: Record<string, string>) => {
    const p = content.setLabels(digest, labels);
    p.catch(() => undefined); // awaited below
    labelling.push(p);
  };
  try {
    const byDaemon = daemonUnpack ? await unpackByDaemon(api, sn, layers, diffIds, chain, opts, metadata, label) : undefined;
    if (byDaemon) ({ applied, shared } = byDaemon);
    // Not ckd, or an older one: unpack as ctr does.
    for (let i = 0; !byDaemon && i < layers.length; i++) {
      const chainId = chain[i]!;
      await opts.ready?.(layers[i]!.digest);
      const parent = i > 0 ? chain[i - 1]! : "";
      try {
        await call("snapshots", "Stat", { snapshotter: sn, key: chainId });
        opts.onLayer?.(chainId, "exists");
        continue;
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      opts.onLayer?.(chainId, "unpacking");
      const key = extractKey(chainId);
      const { mounts } = await call("snapshots", "Prepare", { snapshotter: sn, key, parent });
      let committed = false;
      try {
        const r = await call("diff", "Apply", { diff: apiDescriptor(layers[i]!), mounts });
        const got = r.applied?.digest ?? "";
        if (got !== diffIds[i]) {
          throw new CkError("FailedPrecondition", `wrong diff id calculated on extraction "${got}", expected "${diffIds[i]}"`);
        }
        try {
          await call("snapshots", "Commit", { snapshotter: sn, name: chainId, key });
          committed = true;
          applied++;
        } catch (err) {
          // Someone else committed this chain ID meanwhile: theirs is as good as ours.
          if (!isAlreadyExists(err)) throw err;
        }
        await content.setLabels(layers[i]!.digest, { [UNCOMPRESSED_LABEL]: diffIds[i]! });
        opts.onLayer?.(chainId, "unpacked");
      } finally {
        if (!committed) await call("snapshots", "Remove", { snapshotter: sn, key }).catch(() => undefined);
      }
    }
  } finally {
    await Promise.allSettled(labelling);
  }
  await Promise.all(labelling);
  const top = chain[chain.length - 1] ?? "";
  const configLabelled = top ? content.setLabels(config.digest, { [GC_REF_SNAPSHOT + sn]: top }) : Promise.resolve();
  if (opts.deferConfigLabel) configLabelled.catch(() => undefined); // the caller awaits it
  else await configLabelled;
  return { chainId: top, applied, shared, layers: layers.length, configLabelled };
}

/**
 * ckd's unpack (ck.services.unpack.v1) of every layer, the calls side by side: each goes out
 * once its blob is in the content store, all but the first with wait_parent, so ckd applies a
 * layer while its parent is still being applied (overlayfs) and commits them in chain order.
 * The first failure cancels the other calls. Undefined when the daemon has no unpack service.
 */
async function unpackByDaemon(
  api: ApiClient,
  sn: string,
  layers: readonly Descriptor[],
  diffIds: readonly string[],
  chain: readonly string[],
  opts: UnpackOptions,
  metadata: Record<string, string>,
  label: (digest: string, labels: Record<string, string>) => void,
): Promise<{ applied: number; shared: number } | undefined> {
  const stop = new AbortController();
  let applied = 0;
  let shared = 0;
  let firstError: unknown;
  const one = async (i: number) => {
    const chainId = chain[i]!;
    await opts.ready?.(layers[i]!.digest);
    if (stop.signal.aborted) return;
    opts.onLayer?.(chainId, "unpacking");
    const r = await api.call(
      "unpack",
      "Apply",
      { snapshotter: sn, layer: apiDescriptor(layers[i]!), diff_id: diffIds[i]!, parent: i > 0 ? chain[i - 1]! : "", wait_parent: i > 0, label_uncompressed: true },
      { metadata, signal: stop.signal },
    );
    if (r.chain_id !== chainId) throw new CkError("Unknown", `ckd unpacked layer ${i} as ${r.chain_id}, expected chain ID ${chainId}`);
    if (r.status === "exists") {
      opts.onLayer?.(chainId, "exists");
      return;
    }
    if (r.status === "shared") shared++;
    else applied++;
    // ckd labelled the layer itself; one that does not know label_uncompressed leaves it to us.
    if (!r.labelled) label(layers[i]!.digest, { [UNCOMPRESSED_LABEL]: diffIds[i]! });
    opts.onLayer?.(chainId, "unpacked");
  };
  await Promise.all(
    layers.map((_, i) =>
      one(i).catch((err) => {
        firstError ??= err;
        stop.abort();
      }),
    ),
  );
  if (firstError === undefined) return { applied, shared };
  // A daemon without the unpack service (an older ckd, the plugin disabled): the caller
  // unpacks as ctr does. ckd's own refusals (a compression it does not read, say) would only
  // fail again that way: they stand.
  if (isClass(firstError, "NotImplemented") && /does not implement the method|unknown service/i.test((firstError as Error).message)) return undefined;
  throw firstError;
}
