// How registry answers become errdefs errors: one table from HTTP status to error class, so
// callers switch on the class (and, when they care, the HTTP status), never on the text.
import { CkError, classPhrase, type ErrorClass } from "../errdefs/errdefs.js";
import type { Failure } from "./retry.js";

/** A registry refused or failed a request; `status` is the HTTP status when there was one. */
export class RegistryError extends CkError {
  readonly host: string;
  readonly status?: number;
  /** The first error code of the registry's JSON body ("MANIFEST_UNKNOWN"), if it gave one. */
  readonly code?: string;
  /** The answer's Retry-After header, kept for the retry decision (see retry.ts). */
  readonly retryAfter?: string;
  /** The system error code (ECONNRESET) when the request failed without an answer. */
  readonly errno?: string;
  /** The message without the class phrase, for an error that adds to it (see gaveUp). */
  readonly context: string;
  constructor(
    errorClass: ErrorClass,
    host: string,
    context: string,
    opts: { status?: number; code?: string; cause?: unknown; retryAfter?: string; errno?: string } = {},
  ) {
    super(errorClass, `${context}: ${classPhrase(errorClass)}`, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = "RegistryError";
    this.host = host;
    this.context = context;
    if (opts.status !== undefined) this.status = opts.status;
    if (opts.code !== undefined) this.code = opts.code;
    if (opts.retryAfter !== undefined) this.retryAfter = opts.retryAfter;
    if (opts.errno !== undefined) this.errno = opts.errno;
  }
}

/**
 * The class a refused authentication travels as. errdefs has no Unauthenticated or
 * PermissionDenied class, so this is FailedPrecondition, as the brief for this package asks.
 */
export const UNAUTHORIZED_CLASS: ErrorClass = "FailedPrecondition";

export function unauthorized(host: string, detail: string, status = 401): RegistryError {
  return new RegistryError(UNAUTHORIZED_CLASS, host, `${host}: unauthorized: ${detail}`, { status });
}

/** True for errors raised because a registry (or its token server) refused who we are. */
export function isUnauthorized(err: unknown): boolean {
  return err instanceof RegistryError && (err.status === 401 || err.status === 403);
}

/**
 * Maps a non-success HTTP status for `what` (a manifest, a blob, an upload) to an error;
 * `retryAfter` is the answer's Retry-After header, for the retry decision.
 */
export function statusError(host: string, status: number, what: string, body?: Buffer, retryAfter?: string): RegistryError {
  const { code, detail } = registryErrorDetail(body);
  const suffix = detail ? ` (${detail})` : "";
  const opts = { status, ...(code !== undefined ? { code } : {}), ...(retryAfter !== undefined ? { retryAfter } : {}) };
  if (status === 401 || status === 403) return new RegistryError(UNAUTHORIZED_CLASS, host, `${host}: unauthorized: ${what}: HTTP ${status}${suffix}`, opts);
  if (status === 404) return new RegistryError("NotFound", host, `${what}${suffix}`, opts);
  if (status === 429 || status >= 500) return new RegistryError("Unavailable", host, `${host}: ${what}: HTTP ${status}${suffix}`, opts);
  return new RegistryError("Unknown", host, `${host}: ${what}: unexpected HTTP status ${status}${suffix}`, opts);
}

/**
 * Maps a token server's non-success HTTP status. Its 404 says that the token endpoint is not
 * there (a realm the registry got wrong), nothing about the image asked for: it is never
 * NotFound, which callers read as "no such image".
 */
export function tokenServerError(host: string, status: number, where: string, body?: Buffer): RegistryError {
  if (status !== 404) return statusError(host, status, where, body);
  const { code, detail } = registryErrorDetail(body);
  return new RegistryError("Unknown", host, `${host}: ${where}: unexpected HTTP status 404${detail ? ` (${detail})` : ""}`, code !== undefined ? { status, code } : { status });
}

/**
 * The registry's error codes for a manifest that names what the repository does not hold:
 * a blob (config, layer) or, for an index, a manifest. The PUT can only succeed once those are
 * pushed, so it is FailedPrecondition, not a failure of the registry.
 */
const MISSING_REFERENCE_CODES = new Set(["MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN"]);

/**
 * Maps a manifest PUT's non-success status: a 400 whose error code says the manifest names
 * an object the repository lacks is FailedPrecondition, with the registry's words and the
 * digests it named; every other status as statusError maps it.
 */
export function manifestPutError(host: string, status: number, what: string, body?: Buffer, retryAfter?: string): RegistryError {
  const missing = status === 400 ? missingReferences(body) : undefined;
  if (!missing) return statusError(host, status, what, body, retryAfter);
  return new RegistryError(
    "FailedPrecondition",
    host,
    `${host}: ${what}: the registry refused it: it names content the repository does not have (${missing.text}); push what it refers to first`,
    { status, code: missing.code },
  );
}

/**
 * The registry's errors about what a manifest refers to, when its first error (the one whose
 * code RegistryError keeps) is one of them.
 */
function missingReferences(body?: Buffer): { code: string; text: string } | undefined {
  if (!body || body.length === 0) return undefined;
  let errors: Array<{ code?: unknown; message?: unknown; detail?: unknown }>;
  try {
    const doc = JSON.parse(body.toString("utf8")) as { errors?: unknown };
    if (!Array.isArray(doc.errors) || doc.errors.length === 0) return undefined;
    errors = doc.errors as typeof errors;
  } catch {
    return undefined;
  }
  const isMissing = (e: (typeof errors)[number]) => typeof e?.code === "string" && MISSING_REFERENCE_CODES.has(e.code);
  if (!isMissing(errors[0]!)) return undefined;
  errors = errors.filter(isMissing);
  const parts = errors.slice(0, 5).map((e) => {
    const message = typeof e.message === "string" ? `: ${e.message.slice(0, 200)}` : "";
    // docker-registry puts the digest it lacks in detail, as a string.
    const detail = typeof e.detail === "string" && e.detail.length <= 200 ? ` ${e.detail}` : "";
    return `${String(e.code)}${message}${detail}`;
  });
  if (errors.length > 5) parts.push(`and ${errors.length - 5} more`);
  return { code: String(errors[0]!.code), text: parts.join("; ") };
}

/** What the retry decision needs of a failed attempt, or undefined for errors it never retries. */
export function failureOf(err: unknown): Failure | undefined {
  if (!(err instanceof RegistryError)) return undefined;
  if (err.status !== undefined) return { status: err.status, ...(err.retryAfter !== undefined ? { retryAfter: err.retryAfter } : {}) };
  if (err.errno !== undefined) return { errno: err.errno };
  return undefined;
}

/**
 * `err` again with why retrying stopped added to its message (the attempts made, or the
 * Retry-After the registry asked for), keeping its class, status and code.
 */
export function gaveUp(err: RegistryError, why: string): RegistryError {
  return new RegistryError(err.errorClass, err.host, `${err.context} (${why})`, {
    ...(err.status !== undefined ? { status: err.status } : {}),
    ...(err.code !== undefined ? { code: err.code } : {}),
    ...(err.errno !== undefined ? { errno: err.errno } : {}),
    cause: err,
  });
}

/** The registry's own words from a JSON error body: `{"errors":[{"code","message"}]}`. */
function registryErrorDetail(body?: Buffer): { code?: string; detail?: string } {
  if (!body || body.length === 0) return {};
  try {
    const doc = JSON.parse(body.toString("utf8")) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    const first = Array.isArray(doc.errors) ? doc.errors[0] : undefined;
    if (!first) return {};
    const code = typeof first.code === "string" ? first.code : undefined;
    const message = typeof first.message === "string" ? first.message.slice(0, 200) : undefined;
    const detail = [code, message].filter((x) => x).join(": ");
    return { ...(code !== undefined ? { code } : {}), ...(detail ? { detail } : {}) };
  } catch {
    return {};
  }
}
