// Image references ("redis", "ghcr.io/a/b:v1", "host:5000/x@sha256:...") parsed and
// normalised the way docker and containerd do, so "redis" names docker.io/library/redis:latest.
import { invalidArgument } from "../errdefs/errdefs.js";
import { isDigest } from "./types.js";

export interface ImageReference {
  domain: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export const DEFAULT_DOMAIN = "docker.io";
export const DEFAULT_TAG = "latest";
/** docker's limit on the length of a full name (domain + "/" + repository). */
export const NAME_TOTAL_LENGTH_MAX = 255;

const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN_RE = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_SHAPE_RE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const HEX_ID_RE = /^[a-f0-9]{64}$/;

/** Parses and normalises an image reference; bad input is InvalidArgument naming it. */
export function parseReference(s: string): ImageReference {
  const bad = (problem: string) => invalidArgument(`image reference ${JSON.stringify(s)}: ${problem}`);
  if (typeof s !== "string" || s === "") throw bad("must not be empty");
  if (HEX_ID_RE.test(s)) throw bad("cannot specify 64-byte hexadecimal strings as a repository name");

  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_SHAPE_RE.test(digest)) throw bad(`invalid digest ${JSON.stringify(digest)}`);
    if (!digest.startsWith("sha256:")) throw bad(`unsupported digest algorithm in ${JSON.stringify(digest)} (only sha256)`);
    if (!isDigest(digest)) throw bad(`invalid digest ${JSON.stringify(digest)}: want sha256:<64 lowercase hex>`);
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(`invalid tag ${JSON.stringify(tag)}: must match [\\w][\\w.-]{0,127}`);
  }
  if (rest === "") throw bad("missing repository name");

  let domain: string;
  let repository: string;
  const slash = rest.indexOf("/");
  const first = slash < 0 ? "" : rest.slice(0, slash);
  // docker's rule: the first component is a host only if it looks like one.
  if (slash < 0 || (!/[.:]/.test(first) && first !== "localhost" && first.toLowerCase() === first)) {
    domain = DEFAULT_DOMAIN;
    repository = rest;
  } else {
    domain = first;
    repository = rest.slice(slash + 1);
    if (!DOMAIN_RE.test(domain)) throw bad(`invalid registry host ${JSON.stringify(domain)}`);
  }
  if (domain === "index.docker.io") domain = DEFAULT_DOMAIN;
  if (domain === DEFAULT_DOMAIN && !repository.includes("/")) repository = "library/" + repository;

  if (repository === "") throw bad("missing repository name");
  if (repository !== repository.toLowerCase()) throw bad("repository name must be lowercase");
  for (const component of repository.split("/")) {
    if (!PATH_COMPONENT_RE.test(component)) {
      throw bad(
        component === ""
          ? "empty path component in repository name"
          : `invalid path component ${JSON.stringify(component)}: must be lowercase alphanumerics separated by ".", "_", "__" or "-"`,
      );
    }
  }
  const nameLength = domain.length + 1 + repository.length;
  if (nameLength > NAME_TOTAL_LENGTH_MAX) {
    throw bad(`repository name is ${nameLength} characters, longer than ${NAME_TOTAL_LENGTH_MAX}`);
  }
  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;

  const ref: ImageReference = { domain, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** The canonical string form: "docker.io/library/redis:latest", "host/repo:tag@sha256:...". */
export function formatReference(r: ImageReference): string {
  return `${r.domain}/${r.repository}${r.tag !== undefined ? ":" + r.tag : ""}${r.digest !== undefined ? "@" + r.digest : ""}`;
}

/** What the registry's /manifests/ endpoint is asked for: the digest when pinned, else the tag. */
export function manifestReference(r: ImageReference): string {
  return r.digest ?? r.tag ?? DEFAULT_TAG;
}
