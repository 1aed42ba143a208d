// The caller's namespace as the services read it from a call's metadata: refused in
// containerd's words (namespaces.NamespaceRequired), which ctr prints after its own context.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Metadata } from "@grpc/grpc-js";
import { namespaceOf, optionalNamespaceOf } from "../../src/api/grpc.js";
import { throwsClass } from "../helpers/errors.js";

const call = (ns?: string) => {
  const metadata = new Metadata();
  if (ns !== undefined) metadata.set("containerd-namespace", ns);
  return { metadata };
};

test("a namespace that is no identifier: InvalidArgument, 'namespace validation: identifier …' as containerd's", () => {
  const re = /^namespace validation: identifier "Bad!" must match \^\[A-Za-z0-9\]\+\(\?:\[\._-\]\(\?:\[A-Za-z0-9\]\+\)\)\*\$: invalid argument$/;
  throwsClass(() => namespaceOf(call("Bad!")), "InvalidArgument", re);
  throwsClass(() => optionalNamespaceOf(call("Bad!")), "InvalidArgument", re);
});

test("no namespace: FailedPrecondition where one is required, none where it is optional", () => {
  throwsClass(() => namespaceOf(call()), "FailedPrecondition", /^namespace is required: failed precondition$/);
  throwsClass(() => namespaceOf(call("")), "FailedPrecondition", /^namespace is required: failed precondition$/);
  assert.equal(optionalNamespaceOf(call()), undefined);
  assert.equal(namespaceOf(call("a_b-c.d")), "a_b-c.d");
});
