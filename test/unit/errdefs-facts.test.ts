// An error's facts (CkError.facts, keys `ck-...`) travel as its gRPC status's trailing metadata
// and come back on the client's side, the class and message with them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Metadata, status } from "@grpc/grpc-js";
import { CkError, fromGrpcError, outOfRange, toGrpcError } from "../../src/errdefs/errdefs.js";

test("errdefs: an error's ck- facts go out as trailing metadata and come back; other keys do not; an error without facts has no metadata", () => {
  const wire = toGrpcError(outOfRange("ck-from-seq 1: the log now starts at sequence 7", { facts: { "ck-first-seq": "7", "grpc-status": "0" } }));
  assert.equal(wire.code, status.OUT_OF_RANGE);
  assert.ok(wire.metadata instanceof Metadata);
  assert.deepEqual(wire.metadata.getMap(), { "ck-first-seq": "7" });
  const back = fromGrpcError(wire);
  assert.ok(back instanceof CkError);
  assert.equal(back.errorClass, "OutOfRange");
  assert.equal(back.message, "ck-from-seq 1: the log now starts at sequence 7: out of range");
  assert.deepEqual(back.facts, { "ck-first-seq": "7" });

  assert.equal(toGrpcError(outOfRange("plain")).metadata, undefined);
  // A status whose trailers hold other keys (a server's own): no facts.
  const md = new Metadata();
  md.set("x-other", "1");
  assert.deepEqual(fromGrpcError({ code: status.NOT_FOUND, details: "gone", metadata: md }).facts, {});
});
