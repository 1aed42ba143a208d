// A task's statistics from the cgroup v1 hierarchy (/sys/fs/cgroup/<controller>/<path>), in
// the shape of containerd's io.containerd.cgroups.v1.Metrics (proto/api/types/
// cgroups-v1-metrics.proto): what `ctr tasks metrics` prints. Parsing is pure; reading is the
// thin part. A controller that is not mounted, or a file a kernel lacks, leaves its part out.
import { promises as fs, readdirSync } from "node:fs";
import path from "node:path";

export const CGROUP_ROOT = "/sys/fs/cgroup";
export const METRICS_V1_TYPE = "io.containerd.cgroups.v1.Metrics";

/** "key value" lines (memory.stat, cpu.stat, cpuacct.stat, memory.oom_control) as numbers. */
export function parseKeyValues(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) out.set(k, Number(v));
  }
  return out;
}

/** One number from a file's text; "max" (no limit) is 0, as containerd reports it. */
export function parseValue(text: string | undefined): number | undefined {
  const t = text?.trim();
  if (t === undefined || t === "") return undefined;
  if (t === "max") return 0;
  return /^\d+$/.test(t) ? Number(t) : undefined;
}

/** USER_HZ ticks (cpuacct.stat) to nanoseconds. */
const TICK_NS = 1e9 / 100;

/** The Metrics message, from the files' texts (undefined where a file was absent). */
export function metricsFromFiles(read: (controller: string, file: string) => string | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const pidsCurrent = parseValue(read("pids", "pids.current"));
  if (pidsCurrent !== undefined) out.pids = { current: pidsCurrent, limit: parseValue(read("pids", "pids.max")) ?? 0 };

  const total = parseValue(read("cpuacct", "cpuacct.usage"));
  if (total !== undefined) {
    const stat = parseKeyValues(read("cpuacct", "cpuacct.stat") ?? "");
    const throttle = parseKeyValues(read("cpu", "cpu.stat") ?? "");
    out.cpu = {
      usage: {
        total,
        kernel: (stat.get("system") ?? 0) * TICK_NS,
        user: (stat.get("user") ?? 0) * TICK_NS,
        per_cpu: (read("cpuacct", "cpuacct.usage_percpu") ?? "").trim().split(/\s+/).filter(Boolean).map(Number),
      },
      throttling: { periods: throttle.get("nr_periods") ?? 0, throttled_periods: throttle.get("nr_throttled") ?? 0, throttled_time: throttle.get("throttled_time") ?? 0 },
    };
  }

  const hugetlb = HUGETLB_FILES.length ? hugetlbStats(read) : undefined;
  if (hugetlb) out.hugetlb = hugetlb;
  const blkio = blkioStats(read);
  if (blkio) out.blkio = blkio;

  const usage = parseValue(read("memory", "memory.usage_in_bytes"));
  if (usage !== undefined) {
    const stat = parseKeyValues(read("memory", "memory.stat") ?? "");
    const entry = (prefix: string) => ({
      limit: parseValue(read("memory", `${prefix}.limit_in_bytes`)) ?? 0,
      usage: parseValue(read("memory", `${prefix}.usage_in_bytes`)) ?? 0,
      max: parseValue(read("memory", `${prefix}.max_usage_in_bytes`)) ?? 0,
      failcnt: parseValue(read("memory", `${prefix}.failcnt`)) ?? 0,
    });
    const memory: Record<string, unknown> = {};
    for (const key of [
      "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "inactive_anon", "active_anon", "inactive_file", "active_file",
      "unevictable", "hierarchical_memory_limit", "total_cache", "total_rss", "total_rss_huge",
      "total_mapped_file", "total_dirty", "total_writeback", "total_inactive_anon", "total_active_anon", "total_inactive_file",
      "total_active_file", "total_unevictable",
    ]) {
      memory[key] = stat.get(key) ?? 0;
    }
    // memory.stat spells these hierarchical_memsw_limit, pgpgin, pgpgout, pgfault, pgmajfault.
    memory.hierarchical_swap_limit = stat.get("hierarchical_memsw_limit") ?? 0;
    for (const [key, file] of [["pg_pg_in", "pgpgin"], ["pg_pg_out", "pgpgout"], ["pg_fault", "pgfault"], ["pg_maj_fault", "pgmajfault"]] as const) {
      memory[key] = stat.get(file) ?? 0;
      memory[`total_${key}`] = stat.get(`total_${file}`) ?? 0;
    }
    memory.usage = entry("memory");
    if (read("memory", "memory.memsw.usage_in_bytes") !== undefined) memory.swap = entry("memory.memsw");
    if (read("memory", "memory.kmem.usage_in_bytes") !== undefined) memory.kernel = entry("memory.kmem");
    if (read("memory", "memory.kmem.tcp.usage_in_bytes") !== undefined) memory.kernel_tcp = entry("memory.kmem.tcp");
    out.memory = memory;
    const oom = parseKeyValues(read("memory", "memory.oom_control") ?? "");
    if (oom.size) out.memory_oom_control = { oom_kill_disable: oom.get("oom_kill_disable") ?? 0, under_oom: oom.get("under_oom") ?? 0, oom_kill: oom.get("oom_kill") ?? 0 };
  }
  return out;
}

/**
 * The block devices' names by "major:minor", from /proc/partitions ("/dev/" + its name), as
 * containerd's cgroups library names a blkio entry's device.
 */
export function partitionNames(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n").slice(2)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || !/^\d+$/.test(f[0]!) || !/^\d+$/.test(f[1]!)) continue;
    const key = `${Number(f[0])}:${Number(f[1])}`;
    if (!out.has(key)) out.set(key, `/dev/${f[3]}`);
  }
  return out;
}

/** A blkio statistics file ("8:0 Read 4096" lines, or "8:0 4096"; the "Total" line skipped) as entries. */
export function parseBlkioEntries(text: string, devices: ReadonlyMap<string, string>): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/[\s:]+/).filter(Boolean);
    if (f.length < 3 || !/^\d+$/.test(f[0]!) || !/^\d+$/.test(f[1]!)) continue;
    const [op, value] = f.length >= 4 ? [f[2]!, f[3]!] : ["", f[2]!];
    if (!/^\d+$/.test(value)) continue;
    const major = Number(f[0]);
    const minor = Number(f[1]);
    out.push({ op, device: devices.get(`${major}:${minor}`) ?? "", major, minor, value: Number(value) });
  }
  return out;
}

/** The CFQ (or BFQ-less) statistics containerd reads first: [file suffix, Metrics field]. */
const BLKIO_RECURSIVE: ReadonlyArray<[string, string]> = [
  ["sectors_recursive", "sectors_recursive"],
  ["io_service_bytes_recursive", "io_service_bytes_recursive"],
  ["io_serviced_recursive", "io_serviced_recursive"],
  ["io_queued_recursive", "io_queued_recursive"],
  ["io_service_time_recursive", "io_service_time_recursive"],
  ["io_wait_time_recursive", "io_wait_time_recursive"],
  ["io_merged_recursive", "io_merged_recursive"],
  ["time_recursive", "io_time_recursive"],
];
/** When those are absent or empty (no CFQ scheduler on the cgroup's devices): the throttle files. */
const BLKIO_THROTTLE: ReadonlyArray<[string, string]> = [
  ["throttle.io_serviced", "io_serviced_recursive"],
  ["throttle.io_service_bytes", "io_service_bytes_recursive"],
];
export const BLKIO_FILES = [...BLKIO_RECURSIVE, ...BLKIO_THROTTLE].map(([f]) => `blkio.${f}`);

/** The BlkIOStat, as containerd's cgroups library builds it (undefined: no blkio controller). */
function blkioStats(read: (controller: string, file: string) => string | undefined): Record<string, unknown> | undefined {
  if (read("blkio", "blkio.throttle.io_serviced") === undefined) return undefined;
  const devices = partitionNames(read("proc", "partitions") ?? "");
  const stat: Record<string, unknown> = {};
  let size = 0;
  if (read("blkio", "blkio.io_serviced_recursive") !== undefined) {
    for (const [file, field] of BLKIO_RECURSIVE) {
      const entries = parseBlkioEntries(read("blkio", `blkio.${file}`) ?? "", devices);
      stat[field] = entries;
      size += entries.length;
    }
  }
  if (size > 0) return stat;
  for (const [file, field] of BLKIO_THROTTLE) stat[field] = parseBlkioEntries(read("blkio", `blkio.${file}`) ?? "", devices);
  return stat;
}

/**
 * The host's huge page sizes as containerd's cgroups library names them (hugepages-2048kB:
 * "2MB"), read once: they are the kernel's.
 */
export function hugePageSize(dirName: string): string | undefined {
  const m = /^hugepages-(\d+)kB$/.exec(dirName);
  if (!m) return undefined;
  let v = Number(m[1]) * 1024;
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v}${units[i]}`;
}

let HUGETLB_FILES: string[] = [];
let hugePageSizes: string[] = [];
try {
  hugePageSizes = readdirSync("/sys/kernel/mm/hugepages").map(hugePageSize).filter((s): s is string => s !== undefined);
  HUGETLB_FILES = hugePageSizes.flatMap((size) => ["usage_in_bytes", "max_usage_in_bytes", "failcnt"].map((f) => `hugetlb.${size}.${f}`));
} catch {
  // No huge pages on this kernel: no hugetlb statistics.
}

/** One HugetlbStat per huge page size (undefined: no hugetlb controller for the cgroup). */
function hugetlbStats(read: (controller: string, file: string) => string | undefined): Array<Record<string, unknown>> | undefined {
  if (read("hugetlb", HUGETLB_FILES[0]!) === undefined) return undefined;
  return hugePageSizes.map((size) => ({
    pagesize: size,
    usage: parseValue(read("hugetlb", `hugetlb.${size}.usage_in_bytes`)) ?? 0,
    max: parseValue(read("hugetlb", `hugetlb.${size}.max_usage_in_bytes`)) ?? 0,
    failcnt: parseValue(read("hugetlb", `hugetlb.${size}.failcnt`)) ?? 0,
  }));
}

/** Whether this host's cgroups are v1 (or hybrid): a unified-only host has cgroup.controllers at the root. */
export async function isCgroupV1(root = CGROUP_ROOT): Promise<boolean> {
  return fs.access(path.join(root, "cgroup.controllers")).then(
    () => false,
    () => true,
  );
}

/**
 * Each v1 controller's cgroup path from a /proc/<pid>/cgroup text ("4:memory:/ns/id",
 * "2:cpu,cpuacct:/ns/id"); the unified ("0::") and named ("name=systemd") lines are skipped.
 */
export function controllerPaths(procCgroup: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of procCgroup.split("\n")) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line.trim());
    if (!m || !m[1]) continue;
    for (const c of m[1].split(",")) if (!c.startsWith("name=")) out.set(c, m[2]!);
  }
  return out;
}

/** Reads the Metrics of a cgroup, given each controller's path within its hierarchy. */
export async function readMetricsV1(paths: ReadonlyMap<string, string>, root = CGROUP_ROOT): Promise<Record<string, unknown>> {
  const files = new Map<string, string | undefined>();
  const wanted: Array<[string, string]> = [
    ["pids", "pids.current"], ["pids", "pids.max"],
    ["cpuacct", "cpuacct.usage"], ["cpuacct", "cpuacct.stat"], ["cpuacct", "cpuacct.usage_percpu"], ["cpu", "cpu.stat"],
    ["memory", "memory.usage_in_bytes"], ["memory", "memory.stat"], ["memory", "memory.oom_control"],
    ...["memory", "memory.memsw", "memory.kmem", "memory.kmem.tcp"].flatMap((p) =>
      ["limit_in_bytes", "usage_in_bytes", "max_usage_in_bytes", "failcnt"].map((f): [string, string] => ["memory", `${p}.${f}`]),
    ),
    ...BLKIO_FILES.map((f): [string, string] => ["blkio", f]),
    ...HUGETLB_FILES.map((f): [string, string] => ["hugetlb", f]),
  ];
  if (paths.has("blkio")) files.set("proc/partitions", await fs.readFile("/proc/partitions", "utf8").catch(() => undefined));
  await Promise.all(
    wanted.map(async ([c, f]) => {
      const at = paths.get(c);
      if (at === undefined) return;
      // path.join keeps the result under the controller's mount, whatever the path holds.
      const file = path.join(root, c, path.join("/", at), f);
      files.set(`${c}/${f}`, await fs.readFile(file, "utf8").catch(() => undefined));
    }),
  );
  return metricsFromFiles((c, f) => files.get(`${c}/${f}`));
}
