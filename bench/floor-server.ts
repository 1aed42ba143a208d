// The floor of the API benchmark: a grpc-js server with ckd's own service definitions and
// codecs that does no work. It answers at once (Create echoes, Get answers a made-up image,
// Content.Write acknowledges each WRITE without hashing or storing it), so what bench-peer
// measures against it is what the client, grpc-js and HTTP/2 cost on this machine. A target
// above the floor cannot be met by any daemon served through grpc-js here. The server runs
// with ckd's HTTP/2 windows.
//
//   node dist/bench/floor-server.js SOCKET
import * as grpc from "@grpc/grpc-js";
import { createHash } from "node:crypto";
import { loadProtos } from "../src/protos/protos.js";
import { widenFlowControl } from "../src/api/daemon.js";

const STAT = 0;
const WRITE = 1;
const COMMIT = 2;

type Callback = (err: grpc.ServiceError | null, res?: unknown) => void;
type Call = { request: any };

const now = () => {
  const ms = Date.now();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
};
const notFound = (what: string): grpc.ServiceError => Object.assign(new Error(what), { code: grpc.status.NOT_FOUND, details: what, metadata: new grpc.Metadata() });

function main(): void {
  const socket = process.argv[2];
  if (!socket) {
    process.stderr.write("usage: floor-server SOCKET\n");
    process.exit(2);
  }
  const protos = loadProtos();
  const server = new grpc.Server();
  const def = (name: string) => protos.serviceDefinition(`containerd.services.${name}`);
  /** Committed digests and their sizes, for the Info and Delete that follow bench-peer's writes. */
  const blobs = new Map<string, number>();

  server.addService(def("version.v1.Version"), {
    Version: (_: Call, cb: Callback) => cb(null, { version: "floor", revision: "floor" }),
  });
  server.addService(def("images.v1.Images"), {
    Create: (call: Call, cb: Callback) => cb(null, { image: call.request.image }),
    Get: (call: Call, cb: Callback) => {
      const name = String(call.request.name);
      const digest = "sha256:" + createHash("sha256").update(name).digest("hex");
      cb(null, { image: { name, labels: {}, target: { media_type: "application/vnd.oci.image.manifest.v1+json", digest, size: 1000, annotations: {} }, created_at: now(), updated_at: now() } });
    },
    List: (_: Call, cb: Callback) => cb(null, { images: [] }),
    Delete: (_: Call, cb: Callback) => cb(null, {}),
  });
  server.addService(def("containers.v1.Containers"), {
    Create: (call: Call, cb: Callback) => cb(null, { container: call.request.container }),
    List: (_: Call, cb: Callback) => cb(null, { containers: [] }),
    Delete: (_: Call, cb: Callback) => cb(null, {}),
  });
  server.addService(def("leases.v1.Leases"), {
    Create: (call: Call, cb: Callback) => cb(null, { lease: { id: call.request.id, created_at: now(), labels: call.request.labels ?? {} } }),
  });
  server.addService(def("content.v1.Content"), {
    Write: (call: grpc.ServerDuplexStream<any, any>) => {
      let total = 0;
      call.on("data", (r: any) => {
        const action = typeof r.action === "number" ? r.action : ({ STAT, WRITE, COMMIT } as Record<string, number>)[r.action];
        if (Number(r.total) > 0) total = Number(r.total);
        if (action === STAT) call.write({ action: STAT, offset: 0, total });
        else if (action === WRITE) call.write({ action: WRITE, offset: Number(r.offset) + (r.data?.length ?? 0), total });
        else {
          blobs.set(String(r.expected), total);
          call.write({ action: COMMIT, offset: total, total, digest: r.expected });
        }
      });
      call.on("end", () => call.end());
      call.on("error", () => undefined);
    },
    Info: (call: Call, cb: Callback) => {
      const digest = String(call.request.digest);
      const size = blobs.get(digest);
      if (size === undefined) cb(notFound(`content ${digest}: not found`));
      else cb(null, { info: { digest, size, created_at: now(), updated_at: now(), labels: {} } });
    },
    Delete: (call: Call, cb: Callback) => {
      const digest = String(call.request.digest);
      if (!blobs.delete(digest)) cb(notFound(`content ${digest}: not found`));
      else cb(null, {});
    },
  });
  server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) {
      process.stderr.write(`floor-server: ${err.message}\n`);
      process.exit(1);
    }
    widenFlowControl(server); // as ckd's, so the floor of a large Content.Write is comparable
  });
  process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
}

main();
