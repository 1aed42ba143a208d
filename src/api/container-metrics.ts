// The per-container series of containerd's metrics endpoint (its cgroups collectors): every
// task whose cgroups exist, one gauge per statistic, named `container_<name>_<unit>` and
// labelled `container_id`, `namespace` and `runtime` (the container's runtime name, which
// containerd adds for the tasks it creates) and the statistic's own labels (`cpu`, `page`,
// `op`/`device`/`major`/`minor`). Two tables, as containerd has two collectors: cgroup v1's
// (io.containerd.cgroups.v1.Metrics) and v2's; a host runs one of them. Pure: statistics in,
// samples out; src/api/metrics.ts registers them with prom-client.
import { METRICS_V1_TYPE } from "../runtime/cgroups-v1.js";
import { METRICS_V2_TYPE } from "../runtime/cgroups-v2.js";

type Stats = Record<string, unknown>;

/** One sample of a series: the statistic's own label values (after container_id, namespace) and its value. */
export interface StatSample {
  labels: string[];
  value: number;
}

export interface ContainerMetric {
  /** The full name, `container_` and unit included. */
  name: string;
  help: string;
  /** The statistic's own label names (after container_id and namespace). */
  labels: string[];
  samples(stats: Stats): StatSample[];
}

/** A uint64 as protobufjs holds it (a number, or a Long-like {low, high} past 2^53) as a float, as Go's float64(uint64). */
export function asFloat(v: unknown): number {
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  if (v && typeof v === "object" && "low" in v && "high" in v) {
    const { low, high } = v as { low: number; high: number };
    return (high >>> 0) * 2 ** 32 + (low >>> 0);
  }
  return 0;
}

function at(stats: Stats, path: string): unknown {
  let v: unknown = stats;
  for (const k of path.split(".")) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

/** A statistic with no labels of its own; absent (no sample) while its group (`path`'s first part) is. */
function one(name: string, unit: string, help: string, path: string): ContainerMetric {
  const group = path.split(".")[0]!;
  return {
    name: `container_${name}_${unit}`,
    help,
    labels: [],
    // As containerd: the group missing (nil) gives no sample; a field missing in it is 0.
    samples: (s) => (s[group] === undefined ? [] : [{ labels: [], value: asFloat(at(s, path)) }]),
  };
}

function listOf(name: string, unit: string, help: string, labels: string[], list: (s: Stats) => unknown, sample: (e: Record<string, unknown>, i: number) => StatSample): ContainerMetric {
  return {
    name: `container_${name}_${unit}`,
    help,
    labels,
    samples: (s) => {
      const l = list(s);
      return Array.isArray(l) ? l.map((e, i) => sample(e as Record<string, unknown>, i)) : [];
    },
  };
}

/** containerd's cgroup v1 memory.stat gauges: [name, the Metrics field, help]. */
const V1_MEMORY_STAT: Array<[string, string, string]> = [
  ["cache", "cache", "The cache amount used"],
  ["rss", "rss", "The rss amount used"],
  ["rss_huge", "rss_huge", "The rss_huge amount used"],
  ["mapped_file", "mapped_file", "The mapped_file amount used"],
  ["dirty", "dirty", "The dirty amount"],
  ["writeback", "writeback", "The writeback amount"],
  ["pgpgin", "pg_pg_in", "The pgpgin amount"],
  ["pgpgout", "pg_pg_out", "The pgpgout amount"],
  ["pgfault", "pg_fault", "The pgfault amount"],
  ["pgmajfault", "pg_maj_fault", "The pgmajfault amount"],
  ["inactive_anon", "inactive_anon", "The inactive_anon amount"],
  ["active_anon", "active_anon", "The active_anon amount"],
  ["inactive_file", "inactive_file", "The inactive_file amount"],
  ["active_file", "active_file", "The active_file amount"],
  ["unevictable", "unevictable", "The unevictable amount"],
  ["hierarchical_memory_limit", "hierarchical_memory_limit", "The hierarchical_memory_limit amount"],
  ["hierarchical_memsw_limit", "hierarchical_swap_limit", "The hierarchical_memsw_limit amount"],
  ["total_cache", "total_cache", "The total_cache amount used"],
  ["total_rss", "total_rss", "The total_rss amount used"],
  ["total_rss_huge", "total_rss_huge", "The total_rss_huge amount used"],
  ["total_mapped_file", "total_mapped_file", "The total_mapped_file amount used"],
  ["total_dirty", "total_dirty", "The total_dirty amount"],
  ["total_writeback", "total_writeback", "The total_writeback amount"],
  ["total_pgpgin", "total_pg_pg_in", "The total_pgpgin amount"],
  ["total_pgpgout", "total_pg_pg_out", "The total_pgpgout amount"],
  ["total_pgfault", "total_pg_fault", "The total_pgfault amount"],
  ["total_pgmajfault", "total_pg_maj_fault", "The total_pgmajfault amount"],
  ["total_inactive_anon", "total_inactive_anon", "The total_inactive_anon amount"],
  ["total_active_anon", "total_active_anon", "The total_active_anon amount"],
  ["total_inactive_file", "total_inactive_file", "The total_inactive_file amount"],
  ["total_active_file", "total_active_file", "The total_active_file amount"],
  ["total_unevictable", "total_unevictable", "The total_unevictable amount"],
];

/** containerd's v1 memory entries (usage, swap, kernel, kerneltcp), each failcnt, limit, max and usage. */
function v1MemoryEntries(): ContainerMetric[] {
  const out: ContainerMetric[] = [];
  for (const [name, field, what] of [
    ["usage", "usage", "memory"],
    ["swap", "swap", "swap"],
    ["kernel", "kernel", "kernel"],
    ["kerneltcp", "kernel_tcp", "kerneltcp"],
  ] as const) {
    // Its words: "The usage failcnt", "The memory limit", "The swap maximum usage", ...
    const failWord = name === "usage" ? "usage" : what;
    out.push(one(`memory_${name}_failcnt`, "total", `The ${failWord} failcnt`, `memory.${field}.failcnt`));
    out.push(one(`memory_${name}_limit`, "bytes", `The ${what} limit`, `memory.${field}.limit`));
    out.push(one(`memory_${name}_max`, "bytes", `The ${what} maximum usage`, `memory.${field}.max`));
    out.push(one(`memory_${name}_usage`, "bytes", `The ${what} usage`, `memory.${field}.usage`));
  }
  return out;
}

const BLKIO: Array<[string, string, string]> = [
  ["io_merged_recursive", "total", "The blkio io merged recursive"],
  ["io_queued_recursive", "total", "The blkio io queued recursive"],
  ["io_service_bytes_recursive", "bytes", "The blkio io service bytes recursive"],
  ["io_service_time_recursive", "total", "The blkio io service time recursive"],
  ["io_serviced_recursive", "total", "The blkio io serviced recursive"],
  ["io_time_recursive", "total", "The blkio io time recursive"],
  ["sectors_recursive", "total", "The blkio sectors recursive"],
];

/** containerd 1.6's cgroup v1 collector (metrics/cgroups/v1), statistic for statistic. */
export const V1_CONTAINER_METRICS: readonly ContainerMetric[] = [
  one("pids", "limit", "The limit to the number of pids allowed", "pids.limit"),
  one("pids", "current", "The current number of pids", "pids.current"),
  one("cpu_total", "nanoseconds", "The total cpu time", "cpu.usage.total"),
  one("cpu_kernel", "nanoseconds", "The total kernel cpu time", "cpu.usage.kernel"),
  one("cpu_user", "nanoseconds", "The total user cpu time", "cpu.usage.user"),
  listOf("per_cpu", "nanoseconds", "The total cpu time per cpu", ["cpu"], (s) => (s.cpu === undefined ? undefined : at(s, "cpu.usage.per_cpu")), (v, i) => ({
    labels: [String(i)],
    value: asFloat(v),
  })),
  one("cpu_throttle_periods", "total", "The total cpu throttle periods", "cpu.throttling.periods"),
  one("cpu_throttled_periods", "total", "The total cpu throttled periods", "cpu.throttling.throttled_periods"),
  one("cpu_throttled_time", "nanoseconds", "The total cpu throttled time", "cpu.throttling.throttled_time"),
  ...V1_MEMORY_STAT.map(([name, field, help]) => one(`memory_${name}`, "bytes", help, `memory.${field}`)),
  ...v1MemoryEntries(),
  listOf("hugetlb_usage", "bytes", "The hugetlb usage", ["page"], (s) => s.hugetlb, (e) => ({ labels: [String(e.pagesize ?? "")], value: asFloat(e.usage) })),
  listOf("hugetlb_failcnt", "total", "The hugetlb failcnt", ["page"], (s) => s.hugetlb, (e) => ({ labels: [String(e.pagesize ?? "")], value: asFloat(e.failcnt) })),
  listOf("hugetlb_max", "bytes", "The hugetlb maximum usage", ["page"], (s) => s.hugetlb, (e) => ({ labels: [String(e.pagesize ?? "")], value: asFloat(e.max) })),
  ...BLKIO.map(([name, unit, help]) =>
    listOf(`blkio_${name}`, unit, help, ["op", "device", "major", "minor"], (s) => at(s, `blkio.${name}`), (e) => ({
      labels: [String(e.op ?? ""), String(e.device ?? ""), String(asFloat(e.major)), String(asFloat(e.minor))],
      value: asFloat(e.value),
    })),
  ),
];

const V2_MEMORY_STAT = [
  "file_mapped", "file_dirty", "file_writeback", "pgactivate", "pgdeactivate", "pgfault", "pgmajfault", "pglazyfree", "pgrefill",
  "pglazyfreed", "pgscan", "pgsteal", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable", "anon", "file",
  "kernel_stack", "slab", "sock", "shmem", "anon_thp", "slab_reclaimable", "slab_unreclaimable", "workingset_refault",
  "workingset_activate", "workingset_nodereclaim", "thp_fault_alloc", "thp_collapse_alloc",
] as const;

/** containerd 1.6's cgroup v2 collector (metrics/cgroups/v2), statistic for statistic. */
export const V2_CONTAINER_METRICS: readonly ContainerMetric[] = [
  one("pids", "limit", "The limit to the number of pids allowed (cgroup v2)", "pids.limit"),
  one("pids", "current", "The current number of pids (cgroup v2)", "pids.current"),
  one("cpu_usage_usec", "microseconds", "Total cpu usage (cgroup v2)", "cpu.usage_usec"),
  one("cpu_user_usec", "microseconds", "Current cpu usage in user space (cgroup v2)", "cpu.user_usec"),
  one("cpu_system_usec", "microseconds", "Current cpu usage in kernel space (cgroup v2)", "cpu.system_usec"),
  one("cpu_nr_periods", "total", "Current cpu number of periods (only if controller is enabled)", "cpu.nr_periods"),
  one("cpu_nr_throttled", "total", "Total number of times tasks have been throttled (only if controller is enabled)", "cpu.nr_throttled"),
  one("cpu_throttled_usec", "microseconds", "Total time duration for which tasks have been throttled. (only if controller is enabled)", "cpu.throttled_usec"),
  one("memory_usage", "bytes", "Current memory usage (cgroup v2)", "memory.usage"),
  one("memory_usage_limit", "bytes", "Current memory usage limit (cgroup v2)", "memory.usage_limit"),
  one("memory_swap_usage", "bytes", "Current swap usage (cgroup v2)", "memory.swap_usage"),
  one("memory_swap_limit", "bytes", "Current swap usage limit (cgroup v2)", "memory.swap_limit"),
  ...V2_MEMORY_STAT.map((k) => one(`memory_${k}`, "bytes", `The ${k} amount`, `memory.${k}`)),
  one("memory_oom", "total", "The number of times a container has received an oom event", "memory_events.oom"),
  ...(
    [
      ["io_rbytes", "bytes", "IO bytes read", "rbytes"],
      ["io_wbytes", "bytes", "IO bytes written", "wbytes"],
      ["io_rios", "total", "Number of read IOs", "rios"],
      ["io_wios", "total", "Number of write IOs", "wios"],
    ] as const
  ).map(([name, unit, help, field]) =>
    listOf(name, unit, help, ["major", "minor"], (s) => at(s, "io.usage"), (e) => ({ labels: [String(asFloat(e.major)), String(asFloat(e.minor))], value: asFloat(e[field]) })),
  ),
];

/** The table for statistics of this type (undefined: a type neither collector reads). */
export function containerMetricsFor(type: string): readonly ContainerMetric[] | undefined {
  return type === METRICS_V1_TYPE ? V1_CONTAINER_METRICS : type === METRICS_V2_TYPE ? V2_CONTAINER_METRICS : undefined;
}
