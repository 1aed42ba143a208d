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
    assert.match(err.message, /name different credentials/);
    assert.doesNotMatch(err.message, /:b@|:c@/, "a password in an error message");
    return true;
  });
  assert.throws(() => natsConnectOptions("http://h:1"), /scheme http: \(nats:\/\/ or tls:\/\/\)/);
  assert.throws(() => natsConnectOptions(" , "), /no NATS server/);
});

test("tls:// or a TLS file asks for TLS; the files are passed to nats.js", () => {
  assert.deepEqual(natsConnectOptions("tls://127.0.0.1:4443"), { servers: ["tls://127.0.0.1:4443"], tls: {} });
  assert.deepEqual(natsConnectOptions("nats://127.0.0.1:4443", { caFile: "/ca.pem" }), { servers: ["nats://127.0.0.1:4443"], tls: { caFile: "/ca.pem" } });
  assert.deepEqual(natsConnectOptions("nats://127.0.0.1:4443", {}), { servers: ["nats://127.0.0.1:4443"] });
});

test("a NATS URL is logged without its password or token", () => {
  assert.equal(redactNatsUrl("nats://ck:s3cret@127.0.0.1:4222"), "nats://ck:***@127.0.0.1:4222");
  assert.equal(redactNatsUrl("nats://T0KEN@h:1,nats://h2:2"), "nats://***@h:1,nats://h2:2");
  assert.equal(redactNatsUrl("nats://a:b@h1:1, tls://a:b@h2:2"), "nats://a:***@h1:1, tls://a:***@h2:2");
  assert.equal(redactNatsUrl("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
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
