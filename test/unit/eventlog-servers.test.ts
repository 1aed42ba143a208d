// The NATS URL as ck takes it (one server or a cluster's several), and which JetStream
// failures are worth asking again (a cluster electing leaders) and which are not.
import { test } from "node:test";
import assert from "node:assert/strict";
import { JetStreamApiError } from "@nats-io/jetstream";
import { errors } from "@nats-io/transport-node";
import { natsServers, isTransientApiError } from "../../src/eventstore/log.js";

test("a NATS URL is one server or several separated by commas", () => {
  assert.deepEqual(natsServers("nats://127.0.0.1:4222"), ["nats://127.0.0.1:4222"]);
  assert.deepEqual(natsServers("nats://a:1, nats://b:2,,nats://c:3 "), ["nats://a:1", "nats://b:2", "nats://c:3"]);
  assert.deepEqual(natsServers("127.0.0.1:4222,[::1]:4223"), ["127.0.0.1:4222", "[::1]:4223"]);
  assert.throws(() => natsServers(" , "), /no NATS server in " , "/);
  assert.throws(() => natsServers(""), /no NATS server/);
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
