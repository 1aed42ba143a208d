// containerd v1 Version and Introspection services: what ckd is and which plugins loaded.
import type * as grpc from "@grpc/grpc-js";
import { parseFilters } from "../projections/filters.js";
import { unary } from "./grpc.js";

export const CK_VERSION = "0.1.0";

export interface PluginInfo {
  type: string;
  id: string;
  requires?: string[];
  exports?: Record<string, string>;
  /** Set when the plugin skipped itself or failed to load. */
  initError?: string;
}

export function versionService(revision: string): grpc.UntypedServiceImplementation {
  return {
    Version: unary(async () => ({ version: `ck ${CK_VERSION}`, revision })),
  };
}

export function introspectionService(d: { uuid: string; plugins: () => PluginInfo[] }): grpc.UntypedServiceImplementation {
  return {
    Plugins: unary(async (call) => {
      const filter = parseFilters(call.request.filters ?? []);
      const plugins = d.plugins().map((p) => ({
        type: p.type,
        id: p.id,
        requires: p.requires ?? [],
        platforms: [{ os: "linux", architecture: process.arch === "x64" ? "amd64" : process.arch, variant: "" }],
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
