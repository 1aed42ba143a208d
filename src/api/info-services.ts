// containerd v1 Version and Introspection services: what ckd is and which plugins loaded.
import type * as grpc from "@grpc/grpc-js";
import { parseFiltersRewrapped } from "../projections/filters.js";
import { notFound } from "../errdefs/errdefs.js";
import { unary } from "./grpc.js";
import { defaultPlatform } from "../remotes/platform.js";

import { CK_VERSION, CK_REVISION } from "../version.js";

export { CK_VERSION };

export interface PluginInfo {
  type: string;
  id: string;
  requires?: string[];
  exports?: Record<string, string>;
  /** Set when the plugin skipped itself or failed to load. */
  initError?: string;
}

export function versionService(): grpc.UntypedServiceImplementation {
  return {
    Version: unary(async () => ({ version: CK_VERSION, revision: CK_REVISION })),
  };
}

/** The plugin types whose containerd plugins name the platforms they serve. */
const PLATFORM_TYPES = new Set(["io.containerd.snapshotter.v1", "io.containerd.differ.v1", "io.containerd.runtime.v1", "io.containerd.runtime.v2"]);

export function introspectionService(d: { uuid: string; plugins: () => PluginInfo[] }): grpc.UntypedServiceImplementation {
  const here = defaultPlatform();
  return {
    Plugins: unary(async (call) => {
      // (containerd's introspection wraps the parse error once more: ToGRPCf(ErrInvalidArgument, ...).)
      const filter = parseFiltersRewrapped(call.request.filters ?? []);
      const plugins = d.plugins().map((p) => ({
        type: p.type,
        id: p.id,
        requires: p.requires ?? [],
        // This machine's platform in Go's names (ia32 is 386, ppc64 little-endian ppc64le), as
        // containerd's client matches it against images (GetSnapshotterSupportedPlatforms); only
        // on the kinds of plugin containerd's own give one (snapshotters, differs, runtimes).
        platforms: PLATFORM_TYPES.has(p.type) ? [{ os: here.os, architecture: here.architecture, variant: here.variant ?? "" }] : [],
        exports: p.exports ?? {},
        capabilities: [],
        init_err: p.initError ? { code: 2, message: p.initError, details: [] } : undefined,
      }));
      return {
        plugins: plugins.filter((p) =>
          filter.match((path: string[]) => {
            const [head, sub] = path;
            if (head === "type") return { value: p.type, present: true };
            if (head === "id") return { value: p.id, present: true };
            if (head === "exports" && sub !== undefined) {
              const v = p.exports[sub];
              return { value: v ?? "", present: v !== undefined };
            }
            return { value: "", present: false };
          }),
        ),
      };
    }),
    Server: unary(async () => ({ uuid: d.uuid })),
  };
}

/** grpc.health.v1.HealthCheckResponse.ServingStatus */
const SERVING = 1;
const NOT_SERVING = 2;
const SERVICE_UNKNOWN = 3;

/**
 * gRPC's health service, as containerd serves it (its Go client's IsServing asks it; a
 * supervisor may restart a daemon that does not answer SERVING): the server as a whole (the
 * empty service name) is SERVING while ckd serves, NOT_SERVING once it is stopping; any other
 * name is unknown (Check: NotFound; Watch: SERVICE_UNKNOWN). Watch sends the status at once;
 * when ckd stops, it sends NOT_SERVING and ends (so that the server's shutdown need not wait).
 */
export function healthService(d: { stopping: () => boolean; onStopping: (fn: () => void) => void }): grpc.UntypedServiceImplementation {
  const status = (service: string) => (service !== "" ? SERVICE_UNKNOWN : d.stopping() ? NOT_SERVING : SERVING);
  const watchers = new Set<() => void>();
  d.onStopping(() => {
    for (const w of [...watchers]) w();
  });
  return {
    Check: unary(async (call) => {
      const service: string = call.request.service ?? "";
      if (service !== "") throw notFound(`unknown service ${JSON.stringify(service)}`);
      return { status: status(service) };
    }),
    Watch: (call: grpc.ServerWritableStream<{ service?: string }, unknown>) => {
      const service = call.request.service ?? "";
      call.write({ status: status(service) });
      // Asked while ckd stops: that status was the last.
      if (d.stopping()) return void call.end();
      const stop = () => {
        watchers.delete(stop);
        if (call.cancelled || call.destroyed) return;
        if (service === "") call.write({ status: NOT_SERVING });
        call.end();
      };
      watchers.add(stop);
      const gone = () => watchers.delete(stop);
      call.on("cancelled", gone);
      call.on("close", gone);
      call.on("error", gone);
    },
  };
}
