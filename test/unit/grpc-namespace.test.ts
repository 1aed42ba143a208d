// The caller's namespace as the services read it from a call's metadata: refused in
// containerd's words (namespaces.NamespaceRequired), which ctr prints after its own context.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Metadata, Server, ServerCredentials, credentials, makeGenericClientConstructor, type sendUnaryData, type ServerUnaryCall } from "@grpc/grpc-js";
import { LEASE_HEADER, metadataValue, namespaceOf, optionalNamespaceOf } from "../../src/api/grpc.js";
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

// containerd's Go client sends a header again when a context is re-scoped
// (namespaces.WithNamespace or leases.WithLease on a context that has one), the latest value
// first, and containerd reads the first. Node's HTTP/2 joins repeated header fields into one
// value ("b, a"), so the services must take what comes before the separator.
test("a namespace and a lease sent twice, as a re-scoped Go context sends them: the first wins, as in containerd", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ck-grpc-ns-"));
  const server = new Server();
  const raw = (b: Buffer) => b;
  const definition = {
    Echo: { path: "/ck.test.Echo/Echo", requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  };
  server.addService(definition, {
    Echo: (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) => {
      let seen: object;
      try {
        seen = { ns: namespaceOf(call), lease: metadataValue(call, LEASE_HEADER) };
      } catch (err) {
        seen = { error: (err as Error).message };
      }
      cb(null, Buffer.from(JSON.stringify(seen)));
    },
  });
  const address = `unix://${join(dir, "echo.sock")}`;
  await new Promise<void>((resolve, reject) => server.bindAsync(address, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  const Client = makeGenericClientConstructor(definition, "Echo");
  const client = new Client(address, credentials.createInsecure()) as any;
  try {
    const md = new Metadata();
    md.add("containerd-namespace", "inner");
    md.add("containerd-namespace", "outer");
    md.add("containerd-lease", "lease-b");
    md.add("containerd-lease", "lease-a");
    const reply: Buffer = await new Promise((resolve, reject) => client.Echo(Buffer.alloc(0), md, (err: Error | null, res: Buffer) => (err ? reject(err) : resolve(res))));
    assert.deepEqual(JSON.parse(reply.toString()), { ns: "inner", lease: "lease-b" });
  } finally {
    client.close();
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  }
});
