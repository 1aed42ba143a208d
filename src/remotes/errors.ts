// How registry answers become errdefs errors: one table from HTTP status to error class, so
// callers switch on the class (and, when they care, the HTTP status), never on the text.
import { CkError, classPhrase, type ErrorClass } from "../errdefs/errdefs.js";

/** A registry refused or failed a request; `status` is the HTTP status when there was one. */
export class RegistryError extends CkError {
  readonly host: string;
  readonly status?: number;
  /** The first error code of the registry's JSON body ("MANIFEST_UNKNOWN"), if it gave one. */
  readonly code?: string;
  constructor(errorClass: ErrorClass, host: string, context: string, opts: { status?: number; code?: string; cause?: unknown } = {}) {
    super(errorClass, `${context}: ${classPhrase(errorClass)}`, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = "RegistryError";
    this.host = host;
    if (opts.status !== undefined) this.status = opts.status;
    if (opts.code !== undefined) this.code = opts.code;
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

/** Maps a non-success HTTP status for `what` (a manifest, a blob, an upload) to an error. */
export function statusError(host: string, status: number, what: string, body?: Buffer): RegistryError {
  const { code, detail } = registryErrorDetail(body);
  const suffix = detail ? ` (${detail})` : "";
  const opts = code !== undefined ? { status, code } : { status };
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

/** Retrying can help: the registry is overloaded or failing, or the network let us down. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof CkError) return err.errorClass === "Unavailable" || err.errorClass === "DeadlineExceeded";
  return err instanceof Error && (err as Error & { name?: string }).name !== "AbortError";
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
