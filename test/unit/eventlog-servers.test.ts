// The NATS URL as ck takes it (one server or a cluster's several, credentials in the URL as the
// nats CLI takes them), and which JetStream failures are worth asking again (a cluster electing
// leaders) and which are not.
import { test } from "node:test";
import assert from "node:assert/strict";
import { JetStreamApiError } from "@nats-io/jetstream";
import { errors } from "@nats-io/transport-node";
import { natsServers, natsConnectOptions, redactNatsUrl, isTransientApiError } from "../../src/eventstore/log.js";

test("a NATS URL is one server or several separated by commas", () => {
  assert.deepEqual(natsServers("nats://127.0.0.1:4222"), ["nats://127.0.0.1:4222"]);
  assert.deepEqual(natsServers("nats://a:1, nats://b:2,,nats://c:3 "), ["nats://a:1", "nats://b:2", "nats://c:3"]);
  assert.deepEqual(natsServers("127.0.0.1:4222,[::1]:4223"), ["127.0.0.1:4222", "[::1]:4223"]);
  assert.throws(() => natsServers(" , "), /no NATS server in " , "/);
  assert.throws(() => natsServers(""), /no NATS server/);
});

test("credentials in a NATS URL become nats.js options and leave the server list", () => {
  assert.deepEqual(natsConnectOptions("nats://127.0.0.1:4222"), { servers: ["nats://127.0.0.1:4222"] });
  assert.deepEqual(natsConnectOptions("127.0.0.1:4222"), { servers: ["nats://127.0.0.1:4222"] });
  assert.deepEqual(natsConnectOptions("nats://ck:s3cret@127.0.0.1:4222"), { servers: ["nats://127.0.0.1:4222"], user: "ck", pass: "s3cret" });
  // Percent-encoded, as in any URL: a password with ':' and '@'.
  assert.deepEqual(natsConnectOptions("nats://u%40x:p%3Aw%40d@[::1]:4223"), { servers: ["nats://[::1]:4223"], user: "u@x", pass: "p:w@d" });
  assert.deepEqual(natsConnectOptions("nats://T0KEN@localhost:4222"), { servers: ["nats://localhost:4222"], token: "T0KEN" });
  // A cluster: the credentials given once, or the same on every server.
  assert.deepEqual(natsConnectOptions("nats://a:b@h1:1,nats://a:b@h2:2"), { servers: ["nats://h1:1", "nats://h2:2"], user: "a", pass: "b" });
  assert.throws(() => natsConnectOptions("nats://a:b@h1:1,nats://a:c@h2:2"), (err: Error) => {
    assert.match(err.message, /the NATS servers name different credentials/);
    assert.doesNotMatch(err.message, /:b@|:c@/, "a password in an error message");
    return true;
  });
  assert.throws(() => natsConnectOptions("http://h:1"), /scheme http: \(nats:\/\/ or tls:\/\/\)/);
  assert.throws(() => natsConnectOptions(" , "), /no NATS server/);
  // Without a scheme, as the nats CLI takes it too.
  assert.deepEqual(natsConnectOptions("ck:pw@127.0.0.1:4222"), { servers: ["nats://127.0.0.1:4222"], user: "ck", pass: "pw" });
  // '@' in a password: the last '@' ends the credentials (as URLs are read).
  assert.deepEqual(natsConnectOptions("nats://u:p@ss@h:1"), { servers: ["nats://h:1"], user: "u", pass: "p@ss" });
  // "user:" is a user with an empty password (as Go's client reads it); ":pass" has no user.
  assert.deepEqual(natsConnectOptions("nats://u:@h:1"), { servers: ["nats://h:1"], user: "u", pass: "" });
  assert.throws(() => natsConnectOptions("nats://:pw@h:1"), /a password without a user/);
  assert.throws(() => natsConnectOptions("nats://@h:1"), /an empty user or token/);
});

test("a NATS URL that does not parse is refused without repeating its text (it may hold a password)", () => {
  // Whatever comes before the last '@' is the credentials, '/' and spaces included.
  assert.deepEqual(natsConnectOptions("nats://u:se/c ret@h:1"), { servers: ["nats://h:1"], user: "u", pass: "se/c ret" });
  for (const bad of ["nats://u:se cret@h:1/x", "nats://u:sec%zzret@h:1", "nats://u:secret@", "nats://u:secret@h:1?x=1"]) {
    assert.throws(() => natsConnectOptions(bad), (err: Error) => {
      assert.doesNotMatch(err.message, /se\/?\s?c/, `${bad}: ${err.message}`);
      assert.match(err.message, /the NATS server/);
      if (/is not a URL/.test(err.message)) assert.match(err.message, /percent-encode % and , in a password/);
      return true;
    }, bad);
  }
  // A ',' in a password (not percent-encoded) splits the list: refused, and not repeated.
  assert.throws(() => natsConnectOptions("nats://u:sec,ret@h:1"), (err: Error) => {
    assert.doesNotMatch(err.message, /sec|ret@/);
    return true;
  });
});

test("tls:// or a TLS file asks for TLS; the files are passed to nats.js", () => {
  assert.deepEqual(natsConnectOptions("tls://127.0.0.1:4443"), { servers: ["tls://127.0.0.1:4443"], tls: {} });
  assert.deepEqual(natsConnectOptions("nats://127.0.0.1:4443", { caFile: "/ca.pem" }), { servers: ["nats://127.0.0.1:4443"], tls: { caFile: "/ca.pem" } });
  assert.deepEqual(natsConnectOptions("nats://127.0.0.1:4443", {}), { servers: ["nats://127.0.0.1:4443"] });
});

test("a NATS URL is logged without its password or token", () => {
  assert.equal(redactNatsUrl("nats://ck:s3cret@127.0.0.1:4222"), "nats://ck:***@127.0.0.1:4222");
  assert.equal(redactNatsUrl("nats://T0KEN@h:1,nats://h2:2"), "nats://***@h:1,nats://h2:2");
  assert.equal(redactNatsUrl("nats://a:b@h1:1, tls://a:b@h2:2"), "nats://a:***@h1:1,tls://a:***@h2:2");
  assert.equal(redactNatsUrl("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
  // Without a scheme, an '@' or a space in the password, a list that does not parse.
  assert.equal(redactNatsUrl("ck:s3cret@127.0.0.1:4222"), "nats://ck:***@127.0.0.1:4222");
  assert.equal(redactNatsUrl("nats://h1:1,u:s3cret@h2:2"), "nats://h1:1,nats://u:***@h2:2");
  assert.equal(redactNatsUrl("nats://u:p@ss@h:1"), "nats://u:***@h:1");
  assert.equal(redactNatsUrl("nats://u:a b@h:1"), "nats://u:***@h:1");
  assert.equal(redactNatsUrl("nats://u:a/b@h:1"), "nats://u:***@h:1");
  for (const bad of ["nats://u:a,b@h:1", "nats://u:%zz@h:1", "nats://u:x@h:1/path"]) {
    const shown = redactNatsUrl(bad);
    assert.doesNotMatch(shown, /u:a|%zz|u:x/, `${bad} shown as ${shown}`);
  }
});

test("JetStream's timeouts and 'temporarily unavailable' are asked again; its refusals are not", () => {
  assert.equal(isTransientApiError(new errors.TimeoutError()), true);
  assert.equal(isTransientApiError(new JetStreamApiError({ code: 503, err_code: 10008, description: "JetStream system temporarily unavailable" })), true);
  assert.equal(isTransientApiError(new JetStreamApiError({ code: 404, err_code: 10059, description: "stream not found" })), false);
  assert.equal(isTransientApiError(new JetStreamApiError({ code: 400, err_code: 10071, description: "wrong last sequence: 3" })), false);
  assert.equal(isTransientApiError(new errors.NoRespondersError("$JS.API.INFO")), false);
  assert.equal(isTransientApiError(new Error("connection refused")), false);
  assert.equal(isTransientApiError(undefined), false);
});
