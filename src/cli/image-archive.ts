// What `ck images export` and `ck images import` share: the names an image archive carries
// (containerd's images/archive/reference.go), the platform matchers containerd's exporter and
// importer use, and JSON written byte for byte as Go's encoding/json writes it, so that an
// archive (and a docker archive's generated manifest and index) has the digests ctr's has.
import { formatReference, parseReference } from "../remotes/reference.js";
import { defaultPlatform, matchPlatform, normalizePlatform } from "../remotes/platform.js";
import type { Descriptor, Platform } from "../remotes/types.js";

/** containerd's images.AnnotationImageName: the image's full name on an index entry. */
export const IMAGE_NAME_ANNOTATION = "io.containerd.image.name";
/** The OCI ref name: the tag (or tag@digest) part of the name only. */
export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";
export const OCI_LAYOUT_VERSION = "1.0.0";

/**
 * JSON as Go's json.Marshal writes it: no spaces, map keys sorted (callers build objects in
 * struct field order), and <, >, &, U+2028, U+2029 escaped.
 */
export function goJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (v && typeof v === "object" && !Array.isArray(v) && Object.getPrototypeOf(v) === null ? sortedKeys(v) : v)).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** A map (Go's map[string]string) to write sorted: marked by a null prototype for goJson. */
export function goMap(m: Record<string, string>): Record<string, string> {
  return Object.assign(Object.create(null), m) as Record<string, string>;
}

function sortedKeys(m: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(m).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) out[k] = m[k];
  return out;
}

/** An OCI descriptor in ocispec.Descriptor's field order (mediaType, digest, size, urls, annotations, platform). */
export function goDescriptor(d: Descriptor): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (d.mediaType) o.mediaType = d.mediaType;
  o.digest = d.digest;
  o.size = d.size;
  if (d.urls?.length) o.urls = d.urls;
  if (d.annotations && Object.keys(d.annotations).length) o.annotations = goMap(d.annotations);
  if (d.platform) {
    const p = d.platform;
    o.platform = {
      architecture: p.architecture,
      os: p.os,
      ...(p["os.version"] ? { "os.version": p["os.version"] } : {}),
      ...(p["os.features"]?.length ? { "os.features": p["os.features"] } : {}),
      ...(p.variant ? { variant: p.variant } : {}),
    };
  }
  return o;
}

/**
 * The OCI ref name of an image name (containerd's ociReferenceName): what follows the first
 * `:` or `@` after the host, "latest" of "docker.io/library/alpine:latest"; the name itself
 * when containerd's reference.Parse refuses it.
 */
export function ociReferenceName(name: string): string {
  if (name.includes("://")) return name;
  const slash = name.indexOf("/");
  const host = slash < 0 ? name : name.slice(0, slash);
  const path = slash < 0 ? "" : name.slice(slash);
  // url.Parse("dummy://" + name): an empty host, or a port that is not a number, fails.
  if (host === "" || !/^(\[[^\]]*\]|[^:\[\]]*)(:\d*)?$/.test(host)) return name;
  const i = path.search(/[:@]/);
  if (i < 0) return "";
  const object = path.slice(i);
  return object.startsWith(":") ? object.slice(1) : object;
}

/** docker's familiar form of a name with its tag (":latest" added): "docker.io/library/a" -> "a:latest". */
export function familiarReference(name: string): string {
  const r = parseReference(name);
  let repo = r.repository;
  let prefix = `${r.domain}/`;
  if (r.domain === "docker.io") {
    prefix = "";
    const parts = repo.split("/");
    if (parts.length === 2 && parts[0] === "library") repo = parts[1]!;
  }
  return `${prefix}${repo}${r.tag !== undefined ? ":" + r.tag : ""}${r.digest !== undefined ? "@" + r.digest : ""}`;
}

/** docker's ParseDockerRef: normalised, a tag dropped when a digest pins it, ":latest" when neither. */
export function dockerReference(name: string): string {
  const r = parseReference(name);
  if (r.digest !== undefined) delete r.tag;
  return formatReference(r);
}

/** ctr's image names of an index entry: io.containerd.image.name as is, else the OCI ref name through the translator. */
export function imageName(annotations: Record<string, string> | undefined, translate: (ref: string) => string): string {
  const name = annotations?.[IMAGE_NAME_ANNOTATION] ?? "";
  if (name) return name;
  const ref = annotations?.[REF_NAME_ANNOTATION] ?? "";
  return ref ? translate(ref) : "";
}

/** archive.AddRefPrefix (no --base-name) and FilterRefPrefix (--base-name: other repositories dropped). */
export function refTranslator(prefix: string, filter: boolean): (ref: string) => string {
  return (ref) => {
    if (/[/:@]/.test(ref)) {
      if (filter && !(ref.startsWith(prefix) && (ref.length === prefix.length || "/:@".includes(ref[prefix.length]!)))) return "";
      return ref;
    }
    return `${prefix}:${ref}`;
  };
}

/** A platform matcher as containerd's platforms.MatchComparer. */
export interface PlatformMatcher {
  match(p: Platform): boolean;
  /** Whether `a` is preferred over `b`. */
  less(a: Platform, b: Platform): boolean;
}

const same = (a: Platform, b: Platform) => {
  const x = normalizePlatform(a);
  const y = normalizePlatform(b);
  return x.os === y.os && x.architecture === y.architecture && (x.variant ?? "") === (y.variant ?? "");
};

/** platforms.Ordered / OnlyStrict: exactly one of these (normalised), the earlier preferred. */
export function orderedPlatforms(wants: readonly Platform[]): PlatformMatcher {
  const rank = (p: Platform) => {
    const i = wants.findIndex((w) => same(p, w));
    return i < 0 ? wants.length : i;
  };
  return { match: (p) => rank(p) < wants.length, less: (a, b) => rank(a) < rank(b) };
}

/** platforms.Default(): this machine's platform and those it runs (386 on amd64, arm/v7 on arm64). */
export function defaultPlatforms(): PlatformMatcher {
  const want = defaultPlatform();
  return { match: (p) => matchPlatform(p, want), less: (a, b) => same(a, want) && !same(b, want) };
}

export const allPlatforms: PlatformMatcher = { match: () => true, less: () => false };
