// Specifications of how registry answers map to errdefs classes: one table from HTTP status
// to class, the registry's own error code kept, and what may be retried.
import { test } from "node:test";
import assert from "node:assert/strict";
import { CkError } from "../../src/errdefs/errdefs.js";
import { RegistryError, isUnauthorized, statusError, tokenServerError, unauthorized } from "../../src/remotes/errors.js";
import { oauthPostUnsupported } from "../../src/remotes/authorizer.js";

test("HTTP statuses map to one class each", () => {
  const table: Array<[number, string, RegExp]> = [
    [401, "FailedPrecondition", /^h:5000: unauthorized: manifest "x": HTTP 401: failed precondition$/],
    [403, "FailedPrecondition", /^h:5000: unauthorized: manifest "x": HTTP 403/],
    [404, "NotFound", /^manifest "x": not found$/],
    [429, "Unavailable", /^h:5000: manifest "x": HTTP 429: unavailable$/],
    [500, "Unavailable", /HTTP 500/],
    [503, "Unavailable", /HTTP 503/],
    [400, "Unknown", /^h:5000: manifest "x": unexpected HTTP status 400: unknown$/],
    [418, "Unknown", /unexpected HTTP status 418/],
  ];
  for (const [status, cls, re] of table) {
    const err = statusError("h:5000", status, 'manifest "x"');
    assert.ok(err instanceof RegistryError && err instanceof CkError);
    assert.equal(err.errorClass, cls, String(status));
    assert.equal(err.status, status);
    assert.match(err.message, re);
    assert.equal(isUnauthorized(err), status === 401 || status === 403);
  }
});

test("the registry's error code and message are kept", () => {
  const body = Buffer.from(JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown", detail: { Tag: "x" } }] }));
  const err = statusError("h", 404, 'manifest "h/r:x"', body);
  assert.equal(err.code, "MANIFEST_UNKNOWN");
  assert.equal(err.message, 'manifest "h/r:x" (MANIFEST_UNKNOWN: manifest unknown): not found');
  assert.equal(statusError("h", 500, "blob", Buffer.from("<html>")).message, "h: blob: HTTP 500: unavailable");
});

test("a token server's 404 is Unknown, not NotFound (the image may well exist); other statuses as for the registry", () => {
  const err = tokenServerError("h", 404, "token server https://auth.h/token");
  assert.equal(err.errorClass, "Unknown");
  assert.equal(err.status, 404);
  assert.equal(err.message, "h: token server https://auth.h/token: unexpected HTTP status 404: unknown");
  assert.equal(tokenServerError("h", 503, "token server x").errorClass, "Unavailable");
  assert.equal(tokenServerError("h", 400, "token server x").errorClass, "Unknown");
});

test("oauthPostUnsupported: the answers to an OAuth2 POST after which containerd asks with GET", () => {
  for (const s of [404, 401, 400]) assert.equal(oauthPostUnsupported(s, false), true, String(s));
  assert.equal(oauthPostUnsupported(405, true), true);
  assert.equal(oauthPostUnsupported(405, false), false);
  for (const s of [403, 500, 429]) assert.equal(oauthPostUnsupported(s, true), false, String(s));
});

test("unauthorized errors name the host", () => {
  const err = unauthorized("reg.io", "token server refused anonymous access");
  assert.equal(err.errorClass, "FailedPrecondition");
  assert.equal(err.message, "reg.io: unauthorized: token server refused anonymous access: failed precondition");
  assert.ok(isUnauthorized(err));
});

