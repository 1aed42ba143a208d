// `ck fetch`, `ck pull`, `ck push`, `ck fetch-object`: registry transfers run here, in the
// client, and reach the daemon only through the containerd API (see transfer.ts).
import type { Command } from "commander";
import { randomBytes } from "node:crypto";
import { createWriteStream, readFileSync } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { createSecureContext } from "node:tls";
import { pipeline } from "node:stream/promises";
import type { ApiClient } from "./client.js";
import { fetchImage, fetchObject, pushImage } from "./transfer.js";
import { unpackImage } from "./unpack.js";
import { progressDisplay, silentProgress, type ProgressSink } from "./progress.js";
import { collect, parseLabelArgs } from "./format.js";
import { defaultSnapshotter } from "./defaults.js";
import { CkError, isNotFound } from "../errdefs/errdefs.js";
import { formatReference, parseReference, type ImageReference } from "../remotes/reference.js";
import { defaultPlatform, parsePlatform } from "../remotes/platform.js";
import { loadDockerConfig, type CredentialStore } from "../remotes/auth.js";
import { Registry, type RegistryTls } from "../remotes/registry.js";
import type { Platform } from "../remotes/types.js";
import { CK_VERSION } from "../version.js";

type Action = (fn: (api: ApiClient, ...args: any[]) => Promise<void>) => (...args: unknown[]) => Promise<void>;

interface RegistryFlags {
  plainHttp?: boolean;
  user?: string;
  dockerConfig?: string;
  skipVerify?: boolean;
  tlscacert?: string[];
  tlscert?: string;
  tlskey?: string;
}

interface PlatformFlags {
  platform?: string[];
  allPlatforms?: boolean;
}

/** `--user name[:password]` wins over the docker config file for the reference's host. */
export function credentialsFor(ref: ImageReference, flags: RegistryFlags): CredentialStore {
  const fromFile = loadDockerConfig(flags.dockerConfig);
  if (!flags.user) return fromFile;
  const i = flags.user.indexOf(":");
  const username = i < 0 ? flags.user : flags.user.slice(0, i);
  const password = i < 0 ? "" : flags.user.slice(i + 1);
  if (!username) throw new CkError("InvalidArgument", "--user: a user name is required (name[:password])");
  return (host) => (host === ref.domain ? { username, password } : fromFile(host));
}

/**
 * `--tlscacert FILE` (repeatable), `--skip-verify` and `--tlscert FILE --tlskey FILE`, as
 * ctr's; an unreadable file, a file without the PEM block it should hold, one of the pair
 * without the other, or a key that does not belong to the certificate is InvalidArgument.
 */
export function tlsFor(flags: RegistryFlags): RegistryTls | undefined {
  const pemFile = (flag: string, file: string, what: RegExp, noun: string) => {
    let pem: string;
    try {
      pem = readFileSync(file, "utf8");
    } catch (err) {
      throw new CkError("InvalidArgument", `${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (!what.test(pem)) throw new CkError("InvalidArgument", `${flag} ${file}: no PEM ${noun} in it`);
    return pem;
  };
  const CERT = /-----BEGIN CERTIFICATE-----/;
  const ca = (flags.tlscacert ?? []).map((file) => pemFile("--tlscacert", file, CERT, "certificate"));
  let clientCert: RegistryTls["clientCert"];
  if (flags.tlscert !== undefined || flags.tlskey !== undefined) {
    if (flags.tlscert === undefined) throw new CkError("InvalidArgument", "--tlskey: --tlscert FILE is required with it");
    if (flags.tlskey === undefined) throw new CkError("InvalidArgument", "--tlscert: --tlskey FILE is required with it");
    const cert = pemFile("--tlscert", flags.tlscert, CERT, "certificate");
    const key = pemFile("--tlskey", flags.tlskey, /-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/, "private key");
    try {
      createSecureContext({ cert, key });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = /mismatch/i.test(e.message) ? "the key does not belong to the certificate" : e.message;
      throw new CkError("InvalidArgument", `--tlscert ${flags.tlscert} --tlskey ${flags.tlskey}: ${why}`);
    }
    clientCert = { cert, key };
  }
  if (ca.length === 0 && !flags.skipVerify && !clientCert) return undefined;
  return { ...(ca.length ? { ca } : {}), ...(flags.skipVerify ? { skipVerify: true } : {}), ...(clientCert ? { clientCert } : {}) };
}

function registryFor(ref: ImageReference, flags: RegistryFlags): Registry {
  const tls = tlsFor(flags);
  return new Registry({ plainHttp: !!flags.plainHttp, credentials: credentialsFor(ref, flags), userAgent: `ck/${CK_VERSION}`, ...(tls ? { tls } : {}) });
}

function platformsOf(flags: PlatformFlags): Platform[] {
  if (flags.allPlatforms) return [];
  if (flags.platform?.length) return flags.platform.map(parsePlatform);
  return [defaultPlatform()];
}


function concurrency(v: string | undefined): number {
  const n = Number(v ?? 3);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new CkError("InvalidArgument", `--max-concurrent-downloads: ${v} is not a whole number from 1 to 64`);
  return n;
}

function withRegistryFlags(c: Command): Command {
  return c
    .option("--plain-http", "talk to the registry over plain HTTP (loopback registries)")
    .option("--tlscacert <file>", "trust this CA certificate (PEM) for the registry, besides the system's (repeatable)", collect)
    .option("-k, --skip-verify", "do not verify the registry's TLS certificate")
    .option("--tlscert <file>", "client certificate (PEM) for registries that ask for one; with --tlskey")
    .option("--tlskey <file>", "private key (PEM, unencrypted) of --tlscert")
    .option("-u, --user <user[:password]>", "registry credentials (else the docker config file)")
    .option("--docker-config <file>", "docker-style config.json with auths (default $DOCKER_CONFIG/config.json or ~/.docker/config.json)");
}

/** Runs a transfer with its progress display and registry client, closing both however it ends. */
async function transfer<T>(ref: ImageReference, opts: RegistryFlags & { quiet?: boolean }, fn: (registry: Registry, progress: ProgressSink) => Promise<T>): Promise<T> {
  const progress = opts.quiet ? silentProgress : progressDisplay(process.stdout);
  const registry = registryFor(ref, opts);
  try {
    return await fn(registry, progress);
  } finally {
    progress.finish();
    registry.close();
  }
}

export type DistributionCommand = "fetch" | "pull" | "push" | "fetch-object";

/**
 * `names` picks which: under `ck` itself all four, and under `ck images` (pull, push) and
 * `ck content` (fetch, fetch-object) where ctr has them, so a ctr user's `ck images pull` works.
 */
export function registerDistributionCommands(program: Command, action: Action, names: readonly DistributionCommand[] = ["fetch", "pull", "push", "fetch-object"]): void {
  for (const name of (["fetch", "pull"] as const).filter((n) => names.includes(n))) {
    const c = program
      .command(`${name} <ref>`)
      .description(
        name === "fetch"
          ? "fetch every object of an image into the content store and register the image (no unpacking)"
          : "pull an image: fetch its content, register it and unpack its layers into snapshots",
      )
      .option("--platform <platform>", "platform to fetch from an index (repeatable; default this machine's)", collect)
      .option("--all-platforms", "fetch every platform of an index")
      .option("--max-concurrent-downloads <n>", "blobs downloaded at once", "3")
      .option("--label <k=v>", "label to set on the image (repeatable)", collect)
      .option("--client-fetch", "download blobs in this process and write them over Content.Write, as ctr does, even when the daemon can fetch them itself")
      .option("-q, --quiet", "print only the image name and digest when done");
    if (name === "pull") c.option("--snapshotter <name>", "snapshotter to unpack into (native or overlayfs; $CONTAINERD_SNAPSHOTTER, else overlayfs)", defaultSnapshotter());
    withRegistryFlags(c).action(
      action(async (api, refArg: string, opts: RegistryFlags & PlatformFlags & { maxConcurrentDownloads?: string; label?: string[]; quiet?: boolean; snapshotter?: string; clientFetch?: boolean }) => {
        const ref = parseReference(refArg);
        let unpacked = "";
        const r = await transfer(ref, opts, (registry, progress) =>
          fetchImage(api, registry, ref, {
            platforms: platformsOf(opts),
            concurrency: concurrency(opts.maxConcurrentDownloads),
            progress,
            labels: parseLabelArgs(opts.label ?? []),
            inDaemon: !opts.clientFetch,
            // ctr unpacks one platform: the first asked for, else this machine's.
            // Each layer is unpacked as soon as it and the layers below it are in.
            whileFetching:
              name === "pull"
                ? async (metadata, target, fetched) => {
                    const u = await unpackImage(api, target, {
                      snapshotter: opts.snapshotter ?? defaultSnapshotter(),
                      platform: platformsOf(opts)[0] ?? defaultPlatform(),
                      metadata,
                      manifests: fetched.manifests,
                      ready: (digest) => fetched.committed(digest),
                      configBytes: (digest) => fetched.configBytes(digest),
                      // The config's snapshot label goes alongside the image's registration.
                      deferConfigLabel: true,
                    });
                    fetched.holdLease(u.configLabelled);
                    unpacked = `unpacked ${u.layers} layers (${u.applied} applied${u.shared ? `, ${u.shared} shared` : ""}) into ${opts.snapshotter}: ${u.chainId}\n`;
                  }
                : undefined,
          }),
        );
        if (opts.quiet) process.stdout.write(`${r.name} ${r.target.digest}\n`);
        else if (unpacked) process.stdout.write(unpacked);
      }),
    );
  }

  if (names.includes("push")) {
    withRegistryFlags(
      program
        .command("push <ref> [local]")
        .description("push an image (local name, default ref) to a registry")
        .option("--platform <platform>", "of an index, push the one manifest for this platform under the tag (repeatable, but all must select the same entry)", collect)
        .option("--max-concurrent-uploaded-layers <n>", "blobs uploaded at once", "3")
        .option("--allow-non-distributable-blobs", "upload non-distributable (foreign) layers too, as ctr push's flag; left out by default")
        .option("-q, --quiet", "print only the pushed digest"),
    ).action(
      action(async (api, refArg: string, local: string | undefined, opts: RegistryFlags & PlatformFlags & { maxConcurrentUploadedLayers?: string; quiet?: boolean; allowNonDistributableBlobs?: boolean }) => {
        const ref = parseReference(refArg);
        // The image as ck pull names it (`localhost:5000/app` is `localhost:5000/app:latest`),
        // else as typed (an image another client stored under that string).
        const name = local ?? (await localName(api, formatReference(ref), refArg));
        const r = await transfer(ref, opts, (registry, progress) =>
          pushImage(api, registry, ref, name, {
            platforms: opts.platform?.length ? opts.platform.map(parsePlatform) : [],
            concurrency: concurrency(opts.maxConcurrentUploadedLayers),
            progress,
            allowNonDistributable: opts.allowNonDistributableBlobs === true,
          }),
        );
        if (opts.quiet) process.stdout.write(`${r.target.digest}\n`);
      }),
    );
  }

  if (names.includes("fetch-object")) {
    withRegistryFlags(
      program
        .command("fetch-object <ref> <digest>")
        .description("fetch one object of a repository by digest into the content store, or with -o to a file (- = stdout)")
        .option("-o, --output <file>", "write the verified bytes here instead of the content store (a file appears only once verified)"),
    ).action(
      action(async (api, refArg: string, digest: string, opts: RegistryFlags & { output?: string }) => {
        const ref = parseReference(refArg);
        const registry = registryFor(ref, opts);
        try {
          await fetchOne(api, registry, ref, digest, opts.output);
        } finally {
          registry.close();
        }
      }),
    );
  }
}

async function fetchOne(api: ApiClient, registry: Registry, ref: ImageReference, digest: string, output: string | undefined): Promise<void> {
  const desc = await registry.stat(ref, digest);
  if (!output) {
    const progress = progressDisplay(process.stderr);
    await fetchObject(api, registry, ref, desc, progress);
    progress.finish();
    return;
  }
  // From offset 0 the registry client verifies size and digest before the stream ends.
  const body = await registry.fetch(ref, desc);
  if (output === "-") await pipeline(body, process.stdout);
  else await writeVerified(body, output);
}

/**
 * Writes a verifying stream to `file` so that the file only ever holds verified bytes: into a
 * temporary file beside it (same filesystem, so the rename is atomic), renamed over `file` once
 * the stream ended, which it does only after the digest check; removed when anything failed.
 */
async function writeVerified(body: NodeJS.ReadableStream, file: string): Promise<void> {
  const temp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString("hex")}.partial`);
  try {
    await pipeline(body, createWriteStream(temp, { flags: "wx" }));
    await rename(temp, file);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}

/** `normalized` when an image has that name, else `typed`. */
async function localName(api: ApiClient, normalized: string, typed: string): Promise<string> {
  if (normalized === typed) return typed;
  try {
    await api.call("images", "Get", { name: normalized });
    return normalized;
  } catch (err) {
    if (isNotFound(err)) return typed;
    throw err;
  }
}
