// Input rules that containerd's metadata stores enforce (identifiers, labels, digests, images,
// field masks), as pure checks that throw InvalidArgument with containerd's wording.
import { invalidArgument } from "../errdefs/errdefs.js";

const quote = (s: string) => JSON.stringify(s);
const utf8Bytes = (s: string) => Buffer.byteLength(s, "utf8");

// ---- identifiers (containerd identifiers.Validate) ----

/** Longest identifier, in bytes (Go counts bytes; a valid identifier is ASCII anyway). */
export const IDENTIFIER_MAX_LENGTH = 76;
/** Alphanumeric runs joined by single `.`, `_` or `-`. */
export const IDENTIFIER_PATTERN = /^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$/;

/** Why `s` is not a containerd identifier, in containerd's words, or undefined if it is one. */
export function identifierProblem(s: string): string | undefined {
  if (s.length === 0) return "identifier must not be empty";
  if (utf8Bytes(s) > IDENTIFIER_MAX_LENGTH) {
    return `identifier ${quote(s)} greater than maximum length (${IDENTIFIER_MAX_LENGTH} characters)`;
  }
  if (!IDENTIFIER_PATTERN.test(s)) return `identifier ${quote(s)} must match ${IDENTIFIER_PATTERN.source}`;
  return undefined;
}

export function isIdentifier(s: string): boolean {
  return identifierProblem(s) === undefined;
}

/**
 * Namespaces, container ids and topic components share this rule.
 * `kind` names the field in the message: `container.ID: identifier "a..b" must match ...`.
 */
export function validateIdentifier(kind: string, id: string): void {
  const problem = identifierProblem(id);
  if (problem !== undefined) throw invalidArgument(`${kind}: ${problem}`);
}

// ---- labels (containerd labels.Validate) ----

/** Largest key plus value of one label, in UTF-8 bytes. */
export const LABEL_MAX_BYTES = 4096;
const LABEL_KEY_SHOWN_BYTES = 10;

/** The longest prefix of `s` of at most `max` UTF-8 bytes that does not split a character. */
function truncateBytes(s: string, max: number): string {
  let out = "";
  let used = 0;
  for (const ch of s) {
    const n = utf8Bytes(ch);
    if (used + n > max) break;
    out += ch;
    used += n;
  }
  return out;
}

/**
 * `field` prefixes the message as containerd's stores do (`image.Labels`, `namespace.Labels`).
 * An empty key with a value is refused too: containerd's labels.Validate lets it through, then
 * its bbolt store fails the write with "key required" (Unknown); here it is the caller's
 * mistake. With no value it removes nothing (a mask's `labels.`), as there.
 */
export function validateLabel(key: string, value: string, field = "labels"): void {
  if (key === "" && value !== "") throw invalidArgument(`${field}: a label key must not be empty`);
  validateMapKey(field, key);
  if (utf8Bytes(key) + utf8Bytes(value) > LABEL_MAX_BYTES) {
    throw invalidArgument(
      `${field}: label key and value greater than maximum size (${LABEL_MAX_BYTES} bytes), key: ${truncateBytes(key, LABEL_KEY_SHOWN_BYTES)}`,
    );
  }
}

/**
 * A key of a map ck stores (labels, annotations, extensions): `__proto__` is refused. containerd
 * stores it like any other; in JavaScript it names an object's prototype: an assignment drops
 * it (or, for an object value, replaces the map's prototype), and cbor-x reads it back as
 * `__proto_`. Refused rather than lost without a word.
 */
export function validateMapKey(field: string, key: string): void {
  if (key === "__proto__") throw invalidArgument(`${field}: the key "__proto__" is not supported by ck`);
}

export function validateLabels(labels: Readonly<Record<string, string>> | undefined, field = "labels"): void {
  for (const [k, v] of Object.entries(labels ?? {})) validateLabel(k, v, field);
}

// ---- digests (opencontainers/go-digest Digest.Validate) ----

/** Hex length of each algorithm go-digest can verify. */
const DIGEST_HEX_LENGTH: Readonly<Record<string, number>> = { sha256: 64, sha384: 96, sha512: 128 };
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** go-digest's reason `d` is not a usable digest, or undefined if it is one. */
export function digestProblem(d: string): string | undefined {
  const i = d.indexOf(":");
  if (i <= 0 || i + 1 === d.length) return "invalid checksum digest format";
  const algorithm = d.slice(0, i);
  const encoded = d.slice(i + 1);
  const hexLength = Object.hasOwn(DIGEST_HEX_LENGTH, algorithm) ? DIGEST_HEX_LENGTH[algorithm] : undefined;
  if (hexLength === undefined) {
    return DIGEST_GRAMMAR.test(d) ? "unsupported digest algorithm" : "invalid checksum digest format";
  }
  if (encoded.length !== hexLength) return "invalid checksum digest length";
  if (!/^[a-f0-9]+$/.test(encoded)) return "invalid checksum digest format";
  return undefined;
}

/** `Target.Digest "sha256:xyz" invalid: invalid checksum digest length`. */
export function validateDigest(field: string, d: string): void {
  const problem = digestProblem(d);
  if (problem !== undefined) throw invalidArgument(`${field} ${quote(d)} invalid: ${problem}`);
}

// ---- images (containerd metadata/images.go validateImage) ----

export interface DescriptorInput {
  media_type: string;
  digest: string;
  size: number | bigint;
  annotations?: Readonly<Record<string, string>>;
}

export interface ImageValidationInput {
  name: string;
  labels?: Readonly<Record<string, string>>;
  target?: DescriptorInput;
}

/**
 * containerd's image store asks only for a non-empty name; it does not parse it as a
 * reference (ctr and other clients store names that are not references).
 */
export function validateImageName(name: string): void {
  if (!name) throw invalidArgument("image name must not be empty");
}

/** The target checks, in containerd's order: digest, size, media type. Only stored fields. */
export function validateDescriptor(target: DescriptorInput | undefined): void {
  for (const k of Object.keys(target?.annotations ?? {})) validateMapKey("Target.Annotations", k);
  validateDigest("Target.Digest", target?.digest ?? "");
  const size = target?.size ?? 0;
  if (!(size > 0)) throw invalidArgument("Target.Size must be greater than zero");
  if (!target?.media_type) throw invalidArgument("Target.MediaType must be set");
}

export function validateImage(img: ImageValidationInput): void {
  validateImageName(img.name);
  validateLabels(img.labels, "image.Labels");
  validateDescriptor(img.target);
}

// ---- field masks (containerd metadata Update) ----

/** What an update mask may name: whole fields, and single keys of map fields (`labels.<k>`). */
export interface FieldMaskRule {
  readonly fields: readonly string[];
  readonly maps: readonly string[];
}

/** containerd 1.6 imageStore.Update. */
export const IMAGE_FIELD_MASK: FieldMaskRule = {
  fields: ["labels", "target", "annotations"],
  maps: ["labels", "annotations"],
};

/**
 * containerd 1.6 containerStore.Update. `snapshotkey` is spelled so (not `snapshot_key`), and
 * runtime and snapshotter are immutable, so neither can be named.
 */
export const CONTAINER_FIELD_MASK: FieldMaskRule = {
  fields: ["labels", "spec", "extensions", "image", "snapshotkey"],
  maps: ["labels", "extensions"],
};

/**
 * Throws for the first path the rule does not allow. `owner` is how the message names the
 * object, as containerd words it: `image "docker.io/x:1"` for images, `"ctr1"` for containers,
 * giving `cannot update "name" field on image "docker.io/x:1"`. An empty key (`labels.`) is
 * allowed, as containerd's prefix test allows it.
 */
export function validateFieldMask(owner: string, paths: readonly string[], allowed: FieldMaskRule): void {
  for (const path of paths) {
    if (allowed.fields.includes(path)) continue;
    if (allowed.maps.some((m) => path.startsWith(`${m}.`))) continue;
    throw invalidArgument(`cannot update ${quote(path)} field on ${owner}`);
  }
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;

/**
 * A time in RFC 3339 as Go's time.Parse(time.RFC3339) reads it, else undefined: a zone is
 * required (`Z` or `+01:00`: no local time), fields in range, so a 30 February or a 24:00
 * never rolls over into another time. JavaScript's Date parser takes much more ("1.5" is a
 * day in 2001, "Dec 1 10:00" local time), so ck parses times given to it here.
 */
export function parseRfc3339(v: string): Date | undefined {
  const m = RFC3339.exec(v);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59) return undefined;
  if (m[8] !== undefined && (Number(m[8]) > 23 || Number(m[9]) > 59)) return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : new Date(t);
}
