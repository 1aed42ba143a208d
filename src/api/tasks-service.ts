// containerd v1 Tasks service, before ck has a runtime: no task can exist yet, so Get and
// Delete answer NotFound and List is empty (what ctr's `containers rm` needs to proceed);
// every method that would start or touch a process answers Unimplemented, saying why.
import type * as grpc from "@grpc/grpc-js";
import { notFound, notImplemented } from "../errdefs/errdefs.js";
import { namespaceOf, unary } from "./grpc.js";

const NO_RUNTIME = "ck has no task runtime yet (tasks on runc are a later issue)";

export function tasksService(): grpc.UntypedServiceImplementation {
  const unsupported = (method: string) =>
    unary(async (call) => {
      namespaceOf(call);
      throw notImplemented(`tasks.${method}: ${NO_RUNTIME}`);
    });
  const impl: grpc.UntypedServiceImplementation = {
    Get: unary(async (call) => {
      namespaceOf(call);
      throw notFound(`task "${call.request.container_id ?? ""}"`);
    }),
    Delete: unary(async (call) => {
      namespaceOf(call);
      throw notFound(`task "${call.request.container_id ?? ""}"`);
    }),
    List: unary(async (call) => {
      namespaceOf(call);
      return { tasks: [] };
    }),
  };
  for (const m of ["Create", "Start", "DeleteProcess", "Kill", "Exec", "ResizePty", "CloseIO", "Pause", "Resume", "ListPids", "Checkpoint", "Update", "Metrics", "Wait"]) {
    impl[m] = unsupported(m);
  }
  return impl;
}
