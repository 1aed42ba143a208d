// Specifications of how a token request follows a redirect: as Go's http.Client, through which
// containerd asks for tokens, with the Authorization header kept to the host it was meant for.
import { test } from "node:test";
import assert from "node:assert/strict";
import { tokenRedirect } from "../../src/remotes/registry.js";

const basic = { authorization: "Basic dTpw" };
const form = Buffer.from("grant_type=refresh_token");
const get = { method: "GET" as const, url: new URL("http://auth.example/token?service=s&scope=a"), headers: basic };
const post = { method: "POST" as const, url: new URL("https://auth.example/token"), headers: { "content-type": "application/x-www-form-urlencoded" }, body: form };

test("a GET follows every redirect status to the Location, relative ones resolved, with its Authorization on the same host", () => {
  for (const status of [301, 302, 303, 307, 308]) {
    const next = tokenRedirect(get, status, "/v2/token?service=s");
    assert.deepEqual(next, { method: "GET", url: new URL("http://auth.example/v2/token?service=s"), headers: basic }, String(status));
  }
});

test("another host gets no Authorization", () => {
  const next = tokenRedirect(get, 307, "https://elsewhere.example/token");
  assert.equal(next?.url.href, "https://elsewhere.example/token");
  assert.deepEqual(next?.headers, {});
  // A port is another host too.
  assert.deepEqual(tokenRedirect(get, 302, "http://auth.example:8080/token")?.headers, {});
});

test("a POST is repeated by 307 and 308, turned into a GET without body by 301, 302 and 303", () => {
  for (const status of [307, 308]) assert.deepEqual(tokenRedirect(post, status, "/v2/token"), { ...post, url: new URL("https://auth.example/v2/token") });
  for (const status of [301, 302, 303]) assert.deepEqual(tokenRedirect(post, status, "/v2/token"), { method: "GET", url: new URL("https://auth.example/v2/token"), headers: {} });
});

test("not a redirect, no Location, or a Location that is not http(s): nothing to follow", () => {
  assert.equal(tokenRedirect(get, 200, "/x"), undefined);
  assert.equal(tokenRedirect(get, 304, "/x"), undefined);
  assert.equal(tokenRedirect(get, 307, undefined), undefined);
  assert.equal(tokenRedirect(get, 307, "ftp://auth.example/token"), undefined);
  assert.equal(tokenRedirect(get, 307, "http://[bad"), undefined);
});
