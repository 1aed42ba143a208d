// The vocabulary of the OCI distribution client: content descriptors and platforms as they
// appear in image manifests and indexes, plus the digest syntax every descriptor must carry.
import { createHash } from "node:crypto";

/** An OCI platform (image-spec `platform` object); keys as they travel in JSON. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

/** A content descriptor: what an object is, its address, and its exact length. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
}

/** The only digest algorithm the content store speaks. */
export const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export function isDigest(s: unknown): s is string {
  return typeof s === "string" && DIGEST_RE.test(s);
}

export function sha256Digest(bytes: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(bytes).digest("hex");
}

/** A size field must be a non-negative integer a JavaScript number holds exactly. */
export function isSize(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
}
