// Specifications of when a registry request is sent again and after how long (retry.ts), of
// the upload URL that ends a blob upload, and of the errors that end retries or say a
// manifest names content the repository lacks.
import { test } from "node:test";
import assert from "node:assert/strict";
import { RegistryError, failureOf, gaveUp, manifestPutError, statusError } from "../../src/remotes/errors.js";
import { MAX_RETRY_AFTER_MS, REQUEST_ATTEMPTS, backoffMs, parseRetryAfter, resumeBackoffMs, retryDecision, withDigest } from "../../src/remotes/retry.js";

const NOW = Date.parse("2026-12-03T10:00:00Z");

test("Retry-After: delta-seconds and the three HTTP-date forms; anything else counts as not sent", () => {
  assert.equal(parseRetryAfter("1", NOW), 1000);
  assert.equal(parseRetryAfter(" 120 ", NOW), 120_000);
  assert.equal(parseRetryAfter("0", NOW), 0);
  assert.equal(parseRetryAfter("Thu, 03 Dec 2026 10:00:05 GMT", NOW), 5000, "IMF-fixdate");
  assert.equal(parseRetryAfter("Thursday, 03-Dec-26 10:00:07 GMT", NOW), 7000, "RFC 850");
  assert.equal(parseRetryAfter("Thu Dec  3 10:00:09 2026", NOW) !== undefined, true, "asctime");
  assert.equal(parseRetryAfter("Thu, 03 Dec 2026 09:59:00 GMT", NOW), 0, "a date already past: no wait");
  for (const bad of [undefined, "", "soon", "1.5", "-1", "10s", "2026-12-03T10:00:05Z", "Thu, 99 Foo 2026 GMT"]) {
    assert.equal(parseRetryAfter(bad, NOW), undefined, String(bad));
  }
});

test("backoff: 250 ms doubling per attempt, at most 4 s", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 10].map(backoffMs), [250, 500, 1000, 2000, 4000, 4000, 4000]);
});

test("retried: 429, 502, 503, 504 and connection failures; never other statuses nor TLS failures", () => {
  for (const status of [429, 502, 503, 504]) assert.deepEqual(retryDecision({ status }, 1, { now: NOW }), { retry: true, delayMs: 250 }, String(status));
  for (const status of [400, 401, 403, 404, 405, 409, 411, 413, 500, 501, 505]) {
    assert.deepEqual(retryDecision({ status }, 1, { now: NOW }), { retry: false, why: "not retryable" }, String(status));
  }
  for (const errno of ["ECONNRESET", "EPIPE", "ECONNABORTED", "ECONNREFUSED", "ETIMEDOUT", "EAI_AGAIN"]) {
    assert.equal(retryDecision({ errno }, 1, { now: NOW }).retry, true, errno);
  }
  for (const errno of ["EPROTO", "CERT_HAS_EXPIRED", "ENOTFOUND", "ERR_INVALID_ARG_TYPE"]) {
    assert.deepEqual(retryDecision({ errno }, 1, { now: NOW }), { retry: false, why: "not retryable" }, errno);
  }
  assert.deepEqual(retryDecision({}, 1, { now: NOW }), { retry: false, why: "not retryable" });
});

test("the wait honours Retry-After (never less than the backoff) up to the cap; beyond it retrying ends at once", () => {
  assert.deepEqual(retryDecision({ status: 429, retryAfter: "1" }, 1, { now: NOW }), { retry: true, delayMs: 1000 });
  assert.deepEqual(retryDecision({ status: 503, retryAfter: "0" }, 3, { now: NOW }), { retry: true, delayMs: 1000 }, "backoff when it asks for less");
  assert.deepEqual(retryDecision({ status: 503, retryAfter: "Thu, 03 Dec 2026 10:00:20 GMT" }, 1, { now: NOW }), { retry: true, delayMs: 20_000 });
  assert.deepEqual(retryDecision({ status: 429, retryAfter: "30" }, 1, { now: NOW }), { retry: true, delayMs: MAX_RETRY_AFTER_MS }, "the cap itself is waited");
  assert.deepEqual(retryDecision({ status: 429, retryAfter: "31" }, 1, { now: NOW }), { retry: false, why: "retry-after too long", retryAfterMs: 31_000 });
  assert.deepEqual(retryDecision({ status: 429, retryAfter: "3600" }, 1, { now: NOW, maxRetryAfterMs: 3_600_000 }), { retry: true, delayMs: 3_600_000 });
  assert.deepEqual(retryDecision({ status: 429, retryAfter: "garbage" }, 2, { now: NOW }), { retry: true, delayMs: 500 }, "unreadable: the backoff");
  // A Retry-After comes with an answer; a connection failure has none to honour.
  assert.deepEqual(retryDecision({ errno: "ECONNRESET", retryAfter: "99" }, 1, { now: NOW }), { retry: true, delayMs: 250 });
});

test("attempts are bounded: the default four, or as many as asked", () => {
  assert.equal(REQUEST_ATTEMPTS, 4);
  for (let attempt = 1; attempt < REQUEST_ATTEMPTS; attempt++) assert.equal(retryDecision({ status: 503 }, attempt, { now: NOW }).retry, true, String(attempt));
  assert.deepEqual(retryDecision({ status: 503 }, REQUEST_ATTEMPTS, { now: NOW }), { retry: false, why: "attempts" });
  assert.deepEqual(retryDecision({ status: 503 }, 1, { now: NOW, attempts: 1 }), { retry: false, why: "attempts" });
  // Four attempts wait 0.25 + 0.5 + 1 s in all without a Retry-After.
  let total = 0;
  for (let attempt = 1; ; attempt++) {
    const d = retryDecision({ status: 502 }, attempt, { now: NOW });
    if (!d.retry) break;
    total += d.delayMs;
  }
  assert.equal(total, 1750);
});

test("a download's resumes: a body that broke off is always resumed, an open as every request; its own budget and shorter backoff, the same Retry-After rules", () => {
  const download = { now: NOW, attempts: 6, backoff: resumeBackoffMs };
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 10].map(resumeBackoffMs), [50, 100, 200, 400, 800, 1600, 2000, 2000]);
  assert.deepEqual(retryDecision({ broken: true }, 1, download), { retry: true, delayMs: 50 });
  assert.deepEqual(retryDecision({ broken: true }, 5, download), { retry: true, delayMs: 800 });
  assert.deepEqual(retryDecision({ broken: true }, 6, download), { retry: false, why: "attempts" }, "retries 5: the first and five resumes");
  assert.deepEqual(retryDecision({ broken: true }, 1, { ...download, attempts: 1 }), { retry: false, why: "attempts" }, "retries 0");
  assert.deepEqual(retryDecision({ errno: "ECONNRESET" }, 2, download), { retry: true, delayMs: 100 });
  assert.deepEqual(retryDecision({ status: 503, retryAfter: "1" }, 1, download), { retry: true, delayMs: 1000 });
  assert.deepEqual(retryDecision({ status: 429, retryAfter: "31" }, 1, download), { retry: false, why: "retry-after too long", retryAfterMs: 31_000 });
  for (const status of [401, 403, 404, 416, 500]) assert.deepEqual(retryDecision({ status }, 1, download), { retry: false, why: "not retryable" }, String(status));
  assert.deepEqual(retryDecision({ errno: "ENOTFOUND" }, 1, download), { retry: false, why: "not retryable" });
});

test("the digest is appended to an upload Location's query exactly as the registry sent it", () => {
  const d = "sha256:" + "a".repeat(64);
  assert.equal(withDigest(new URL("http://r/v2/x/blobs/uploads/u1"), d).href, `http://r/v2/x/blobs/uploads/u1?digest=sha256%3A${"a".repeat(64)}`);
  // Upload state and signatures stay byte for byte: no decoding and encoding again.
  const signed = new URL("https://store.example/up/u1?_state=a%2Bb%3D&sig=abc==&X-Amz-Date=20261203T100000Z");
  assert.equal(withDigest(signed, d).href, `https://store.example/up/u1?_state=a%2Bb%3D&sig=abc==&X-Amz-Date=20261203T100000Z&digest=sha256%3A${"a".repeat(64)}`);
  assert.equal(withDigest(new URL("http://r/u?"), d).search, `?digest=sha256%3A${"a".repeat(64)}`);
  const orig = new URL("http://r/u?a=1");
  withDigest(orig, d);
  assert.equal(orig.search, "?a=1", "the given URL is left alone");
});

test("failureOf: what the retry decision sees of an error", () => {
  assert.deepEqual(failureOf(statusError("h", 429, "blob", undefined, "1")), { status: 429, retryAfter: "1" });
  assert.deepEqual(failureOf(statusError("h", 503, "blob")), { status: 503 });
  assert.deepEqual(failureOf(new RegistryError("Unavailable", "h", "h: blob: ECONNRESET", { errno: "ECONNRESET" })), { errno: "ECONNRESET" });
  assert.equal(failureOf(new RegistryError("Unknown", "h", "h: blob: no Location")), undefined);
  assert.equal(failureOf(new Error("ECONNRESET")), undefined, "only the registry client's own errors");
});

test("gaveUp keeps class, status and code, and says why retrying stopped", () => {
  const last = statusError("h:5000", 503, "blob sha256:x upload", Buffer.from(JSON.stringify({ errors: [{ code: "UNAVAILABLE", message: "busy" }] })));
  const err = gaveUp(last, "gave up after 4 attempts");
  assert.equal(err.errorClass, "Unavailable");
  assert.equal(err.status, 503);
  assert.equal(err.code, "UNAVAILABLE");
  assert.equal(err.cause, last);
  assert.equal(err.message, "h:5000: blob sha256:x upload: HTTP 503 (UNAVAILABLE: busy) (gave up after 4 attempts): unavailable");
  assert.equal(failureOf(err)?.status, 503);
});

test("a manifest PUT refused for content the repository lacks is FailedPrecondition with the registry's words", () => {
  const d1 = "sha256:" + "1".repeat(64);
  const d2 = "sha256:" + "2".repeat(64);
  const body = (errors: unknown[]) => Buffer.from(JSON.stringify({ errors }));
  const what = 'manifest sha256:abc push to "h:5000/app:v1"';
  let err = manifestPutError("h:5000", 400, what, body([{ code: "MANIFEST_BLOB_UNKNOWN", message: "blob unknown to registry", detail: d1 }, { code: "MANIFEST_BLOB_UNKNOWN", message: "blob unknown to registry", detail: d2 }]));
  assert.equal(err.errorClass, "FailedPrecondition");
  assert.equal(err.status, 400);
  assert.equal(err.code, "MANIFEST_BLOB_UNKNOWN");
  assert.equal(
    err.message,
    `h:5000: ${what}: the registry refused it: it names content the repository does not have (MANIFEST_BLOB_UNKNOWN: blob unknown to registry ${d1}; MANIFEST_BLOB_UNKNOWN: blob unknown to registry ${d2}); push what it refers to first: failed precondition`,
  );
  for (const code of ["BLOB_UNKNOWN", "MANIFEST_UNKNOWN"]) {
    err = manifestPutError("h", 400, what, body([{ code, message: "unknown", detail: { digest: d1 } }]));
    assert.equal(err.errorClass, "FailedPrecondition", code);
    assert.match(err.message, new RegExp(`\\(${code}: unknown\\)`));
  }
  // Other refusals as every other request's.
  assert.equal(manifestPutError("h", 400, what, body([{ code: "MANIFEST_INVALID", message: "bad" }, { code: "BLOB_UNKNOWN" }])).errorClass, "Unknown");
  assert.equal(manifestPutError("h", 400, what).errorClass, "Unknown");
  assert.equal(manifestPutError("h", 400, what, Buffer.from("<html>")).errorClass, "Unknown");
  assert.equal(manifestPutError("h", 404, what, body([{ code: "MANIFEST_UNKNOWN" }])).errorClass, "NotFound");
  assert.equal(manifestPutError("h", 503, what, undefined, "2").retryAfter, "2");
});
