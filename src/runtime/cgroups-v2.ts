// A task's statistics from the unified cgroup v2 hierarchy (/sys/fs/cgroup/<path>), in the
// shape of containerd's io.containerd.cgroups.v2.Metrics (proto/api/types/
// cgroups-v2-metrics.proto), read from the same files containerd's cgroups v2 manager reads.
// Parsing is pure; reading is the thin part. A file a kernel lacks (or a controller not
// enabled for the cgroup) leaves its values 0, as containerd's does.
import { promises as fs } from "node:fs";
import path from "node:path";
import { CGROUP_ROOT, parseKeyValues, parseValue } from "./cgroups-v1.js";

export const METRICS_V2_TYPE = "io.containerd.cgroups.v2.Metrics";

/** The files read, relative to the task's cgroup directory. */
export const V2_FILES = ["pids.current", "pids.max", "cpu.stat", "memory.stat", "memory.current", "memory.max", "memory.swap.current", "memory.swap.max", "memory.events", "io.stat"] as const;

const MEMORY_STAT_KEYS = [
  "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty", "file_writeback", "anon_thp",
  "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable", "slab_reclaimable", "slab_unreclaimable",
  "pgfault", "pgmajfault", "workingset_refault", "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan",
  "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc",
] as const;

/**
 * io.stat lines ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0") as IOEntry fields;
 * lines that are not MAJOR:MINOR with key=value pairs are skipped.
 */
export function parseIoStat(text: string): Array<Record<string, number>> {
  const out: Array<Record<string, number>> = [];
  for (const line of text.split("\n")) {
    const [dev, ...pairs] = line.trim().split(/\s+/);
    const m = /^(\d+):(\d+)$/.exec(dev ?? "");
    if (!m) continue;
    const kv = new Map(pairs.map((p) => p.split("=") as [string, string]).filter(([, v]) => /^\d+$/.test(v ?? "")).map(([k, v]) => [k, Number(v)]));
    out.push({ major: Number(m[1]), minor: Number(m[2]), rbytes: kv.get("rbytes") ?? 0, wbytes: kv.get("wbytes") ?? 0, rios: kv.get("rios") ?? 0, wios: kv.get("wios") ?? 0 });
  }
  return out;
}

/**
 * 2^64-1 as protobufjs's writer takes a 64-bit value in two halves (ck runs it without Long,
 * so a decimal string would be parsed as a float, and a number cannot carry it exactly).
 */
export const MAX_UINT64 = Object.freeze({ low: 0xffffffff, high: 0xffffffff, unsigned: true });

/** A limit file's value; "max" (no limit) is 2^64-1, as containerd's cgroups v2 reports it. */
function limitValue(text: string | undefined): number | typeof MAX_UINT64 {
  return text?.trim() === "max" ? MAX_UINT64 : (parseValue(text) ?? 0);
}

/**
 * The Metrics message, from the files' texts (undefined where a file was absent). A limit of
 * "max" is 2^64-1, as containerd reports it (cgroups v2's getStatFileContentUint64, getPidValue).
 */
export function metricsV2FromFiles(read: (file: (typeof V2_FILES)[number]) => string | undefined): Record<string, unknown> {
  const cpu = parseKeyValues(read("cpu.stat") ?? "");
  const mem = parseKeyValues(read("memory.stat") ?? "");
  const memory: Record<string, number | typeof MAX_UINT64> = {};
  for (const k of MEMORY_STAT_KEYS) memory[k] = mem.get(k) ?? 0;
  memory.usage = parseValue(read("memory.current")) ?? 0;
  memory.usage_limit = limitValue(read("memory.max"));
  memory.swap_usage = parseValue(read("memory.swap.current")) ?? 0;
  memory.swap_limit = limitValue(read("memory.swap.max"));
  const out: Record<string, unknown> = {
    pids: { current: parseValue(read("pids.current")) ?? 0, limit: limitValue(read("pids.max")) },
    cpu: {
      usage_usec: cpu.get("usage_usec") ?? 0,
      user_usec: cpu.get("user_usec") ?? 0,
      system_usec: cpu.get("system_usec") ?? 0,
      nr_periods: cpu.get("nr_periods") ?? 0,
      nr_throttled: cpu.get("nr_throttled") ?? 0,
      throttled_usec: cpu.get("throttled_usec") ?? 0,
    },
    memory,
    io: { usage: parseIoStat(read("io.stat") ?? "") },
  };
  const events = parseKeyValues(read("memory.events") ?? "");
  if (events.size) out.memory_events = { low: events.get("low") ?? 0, high: events.get("high") ?? 0, max: events.get("max") ?? 0, oom: events.get("oom") ?? 0, oom_kill: events.get("oom_kill") ?? 0 };
  return out;
}

/** The unified hierarchy's path from a /proc/<pid>/cgroup text (its "0::/path" line). */
export function unifiedPath(procCgroup: string): string | undefined {
  for (const line of procCgroup.split("\n")) {
    const m = /^0::(.*)$/.exec(line.trim());
    if (m) return m[1];
  }
  return undefined;
}

/** Reads the Metrics of a cgroup v2 directory, given its path within the unified hierarchy. */
export async function readMetricsV2(cgroupPath: string, root = CGROUP_ROOT): Promise<Record<string, unknown> | undefined> {
  // path.join keeps the result under the hierarchy's mount, whatever the path holds.
  const dir = path.join(root, path.join("/", cgroupPath));
  const files = new Map<string, string | undefined>();
  await Promise.all(V2_FILES.map(async (f) => files.set(f, await fs.readFile(path.join(dir, f), "utf8").catch(() => undefined))));
  // A cgroup that is gone has none of its files.
  if ([...files.values()].every((v) => v === undefined)) return undefined;
  return metricsV2FromFiles((f) => files.get(f));
}
