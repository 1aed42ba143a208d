// When a registry request is worth sending again, and after how long: one pure decision for
// every step of a push (HEAD, mount, POST and PUT of an upload, manifest PUT), for the
// manifest HEAD and GET of a pull and for a blob download's resumes (registry.ts's BlobReader,
// with its own budget and a shorter backoff), so that what is retried, how often and how long
// it waits is written, and tested, in one place.

/**
 * Answers after which the same request may well succeed: too many requests, and a gateway or
 * registry that is restarting or overloaded. A 500 is the registry's own failure on this very
 * request (a broken storage driver, a bug) and is not retried.
 */
export const RETRY_STATUSES: ReadonlySet<number> = new Set([429, 502, 503, 504]);

/**
 * Connection failures after which a new connection may fare better: reset or closed under a
 * request (node's "socket hang up" is ECONNRESET), refused while the registry restarts, a
 * connection gone silent, a resolver that could not answer yet. TLS and certificate failures
 * are not among them: they fail the same way every time.
 */
export const RETRY_CODES: ReadonlySet<string> = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED", "ECONNREFUSED", "ETIMEDOUT", "EAI_AGAIN"]);

/** Attempts per step (the first and three retries): a few seconds of backoff in all. */
export const REQUEST_ATTEMPTS = 4;

/**
 * The longest Retry-After honoured. A registry asking for more (a rate limit that resets in
 * an hour) is not waited for: ck gives up at once and says what the registry asked for, since
 * asking again sooner would only be refused again.
 */
export const MAX_RETRY_AFTER_MS = 30_000;

/** Why a Retry-After of `ms` was not waited for, for the error that ends the retries. */
export function retryAfterTooLong(ms: number): string {
  return `the registry asks to retry after ${Math.ceil(ms / 1000)} s, longer than the ${MAX_RETRY_AFTER_MS / 1000} s ck waits`;
}

/** What went wrong with one attempt, as far as the decision cares. */
export interface Failure {
  /** The HTTP status of the answer, when there was one. */
  status?: number;
  /** The system error code of a connection failure (ECONNRESET), when there was no answer. */
  errno?: string;
  /** The answer's Retry-After header, as sent. */
  retryAfter?: string;
  /**
   * The answer began and its body broke off (reset, gone silent, ended short of its length):
   * a download resumes from the byte where it broke, so it is always worth another attempt.
   */
  broken?: boolean;
}

export type RetryDecision =
  | { retry: true; delayMs: number }
  | { retry: false; why: "not retryable" | "attempts" }
  | { retry: false; why: "retry-after too long"; retryAfterMs: number };

/**
 * Milliseconds a Retry-After header asks to wait: delta-seconds ("120") or an HTTP-date
 * ("Wed, 21 Oct 2015 07:28:00 GMT", 0 when already past), as RFC 9110 10.2.3 gives them.
 * Undefined for a missing or unreadable value, which then counts as not sent.
 */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // Only a date: Date.parse would also read "1.5" or "10" as some day in 2001.
  if (!/^[A-Za-z]{3},? /.test(v) && !/^[A-Za-z]+, \d/.test(v)) return undefined;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The wait before attempt `attempt + 1` when the registry named none: 250 ms, doubling, at most 4 s. */
export function backoffMs(attempt: number): number {
  return Math.min(250 * 2 ** Math.max(0, attempt - 1), 4000);
}

/**
 * The wait before a download's resume `attempt + 1`: 50 ms, doubling, at most 2 s. Shorter
 * than backoffMs: the bytes already received are kept, and a broken connection is the common
 * case, not an overloaded registry (whose Retry-After is still honoured).
 */
export function resumeBackoffMs(attempt: number): number {
  return Math.min(50 * 2 ** Math.max(0, attempt - 1), 2000);
}

/**
 * Whether to send a request again after attempt number `attempt` (from 1) failed with `f`,
 * and after how long: for a status in RETRY_STATUSES, a connection failure in RETRY_CODES or
 * a body that broke off, while attempts remain, after the Retry-After the registry sent
 * (never less than the backoff), unless it asks for more than MAX_RETRY_AFTER_MS.
 */
export function retryDecision(
  f: Failure,
  attempt: number,
  opts: { now?: number; attempts?: number; maxRetryAfterMs?: number; backoff?: (attempt: number) => number } = {},
): RetryDecision {
  const retryable = f.broken === true || (f.status !== undefined ? RETRY_STATUSES.has(f.status) : f.errno !== undefined && RETRY_CODES.has(f.errno));
  if (!retryable) return { retry: false, why: "not retryable" };
  const asked = f.status !== undefined ? parseRetryAfter(f.retryAfter, opts.now ?? Date.now()) : undefined;
  if (asked !== undefined && asked > (opts.maxRetryAfterMs ?? MAX_RETRY_AFTER_MS)) return { retry: false, why: "retry-after too long", retryAfterMs: asked };
  if (attempt >= (opts.attempts ?? REQUEST_ATTEMPTS)) return { retry: false, why: "attempts" };
  return { retry: true, delayMs: Math.max(asked ?? 0, (opts.backoff ?? backoffMs)(attempt)) };
}

/**
 * `url` with `?digest=` (or `&digest=`) appended to the query it has: an upload Location's
 * query (the registry's upload state, a storage service's signature) is sent back exactly as
 * given, never decoded and encoded again.
 */
export function withDigest(url: URL, digest: string): URL {
  const out = new URL(url.href);
  const q = out.search;
  out.search = `${q && q !== "?" ? `${q}&` : "?"}digest=${encodeURIComponent(digest)}`;
  return out;
}
