// containerd's per-container metric series (its cgroups collectors) from a task's statistics:
// names, label values and values as containerd's endpoint prints them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { V1_CONTAINER_METRICS, V2_CONTAINER_METRICS, asFloat, containerMetricsFor } from "../../src/api/container-metrics.js";
import { MAX_UINT64, METRICS_V2_TYPE } from "../../src/runtime/cgroups-v2.js";
import { METRICS_V1_TYPE } from "../../src/runtime/cgroups-v1.js";

const byName = (table: typeof V1_CONTAINER_METRICS, name: string) => {
  const m = table.find((x) => x.name === name);
  assert.ok(m, `no ${name}`);
  return m;
};

test("cgroup v1: containerd's names (container_<name>_<unit>), the groups present give samples, absent ones none", () => {
  const stats = {
    pids: { current: 3, limit: 0 },
    cpu: { usage: { total: 900, kernel: 100, user: 800, per_cpu: [400, 500] }, throttling: { periods: 7, throttled_periods: 2, throttled_time: 11 } },
    memory: { cache: 5, total_pg_fault: 6, hierarchical_swap_limit: 9, usage: { limit: 100, usage: 50, max: 60, failcnt: 1 } },
    blkio: { io_service_bytes_recursive: [{ op: "Read", device: "/dev/vda", major: 254, minor: 0, value: 4096 }] },
  };
  const one = (name: string) => byName(V1_CONTAINER_METRICS, name).samples(stats);
  assert.deepEqual(one("container_pids_current"), [{ labels: [], value: 3 }]);
  assert.deepEqual(one("container_pids_limit"), [{ labels: [], value: 0 }]);
  assert.deepEqual(one("container_cpu_total_nanoseconds"), [{ labels: [], value: 900 }]);
  assert.deepEqual(one("container_per_cpu_nanoseconds"), [{ labels: ["0"], value: 400 }, { labels: ["1"], value: 500 }]);
  assert.deepEqual(one("container_cpu_throttled_time_nanoseconds"), [{ labels: [], value: 11 }]);
  assert.deepEqual(one("container_memory_cache_bytes"), [{ labels: [], value: 5 }]);
  assert.deepEqual(one("container_memory_total_pgfault_bytes"), [{ labels: [], value: 6 }]);
  assert.deepEqual(one("container_memory_hierarchical_memsw_limit_bytes"), [{ labels: [], value: 9 }]);
  assert.deepEqual(one("container_memory_usage_usage_bytes"), [{ labels: [], value: 50 }]);
  assert.deepEqual(one("container_memory_usage_failcnt_total"), [{ labels: [], value: 1 }]);
  // No swap entry read (no memsw files): containerd's zeros.
  assert.deepEqual(one("container_memory_swap_limit_bytes"), [{ labels: [], value: 0 }]);
  assert.deepEqual(one("container_blkio_io_service_bytes_recursive_bytes"), [{ labels: ["Read", "/dev/vda", "254", "0"], value: 4096 }]);
  assert.deepEqual(one("container_blkio_io_serviced_recursive_total"), []);
  assert.deepEqual(one("container_hugetlb_usage_bytes"), [], "no hugetlb controller: no samples");
  // A task whose statistics lack a group entirely (no memory controller): none of its series.
  assert.deepEqual(byName(V1_CONTAINER_METRICS, "container_memory_usage_usage_bytes").samples({ pids: stats.pids }), []);
  assert.equal(byName(V1_CONTAINER_METRICS, "container_pids_limit").help, "The limit to the number of pids allowed");
  assert.equal(byName(V1_CONTAINER_METRICS, "container_memory_kerneltcp_max_bytes").help, "The kerneltcp maximum usage");
  assert.equal(new Set(V1_CONTAINER_METRICS.map((m) => m.name)).size, V1_CONTAINER_METRICS.length, "a name twice");
  // containerd 1.6's v1 collector: 2 pids, 7 cpu, 32 memory.stat, 16 memory entries, 3 hugetlb, 7 blkio.
  assert.equal(V1_CONTAINER_METRICS.length, 67);
});

test("cgroup v2: containerd's v2 names; a limit of max (2^64-1) as Go's float64 of it", () => {
  const stats = {
    pids: { current: 2, limit: MAX_UINT64 },
    cpu: { usage_usec: 70, user_usec: 50, system_usec: 20, nr_periods: 0, nr_throttled: 0, throttled_usec: 0 },
    memory: { usage: 4096, usage_limit: MAX_UINT64, swap_usage: 0, swap_limit: MAX_UINT64, anon: 12 },
    io: { usage: [{ major: 8, minor: 0, rbytes: 10, wbytes: 20, rios: 1, wios: 2 }] },
    memory_events: { oom: 1 },
  };
  const one = (name: string) => byName(V2_CONTAINER_METRICS, name).samples(stats);
  assert.deepEqual(one("container_pids_limit"), [{ labels: [], value: 18446744073709551615 }]);
  assert.deepEqual(one("container_cpu_usage_usec_microseconds"), [{ labels: [], value: 70 }]);
  assert.deepEqual(one("container_memory_anon_bytes"), [{ labels: [], value: 12 }]);
  assert.deepEqual(one("container_memory_usage_limit_bytes"), [{ labels: [], value: 2 ** 64 }]);
  assert.deepEqual(one("container_io_wbytes_bytes"), [{ labels: ["8", "0"], value: 20 }]);
  assert.deepEqual(one("container_memory_oom_total"), [{ labels: [], value: 1 }]);
  assert.deepEqual(byName(V2_CONTAINER_METRICS, "container_memory_oom_total").samples({ memory: {} }), [], "no memory.events: no sample");
  assert.equal(new Set(V2_CONTAINER_METRICS.map((m) => m.name)).size, V2_CONTAINER_METRICS.length, "a name twice");
  assert.equal(containerMetricsFor(METRICS_V1_TYPE), V1_CONTAINER_METRICS);
  assert.equal(containerMetricsFor(METRICS_V2_TYPE), V2_CONTAINER_METRICS);
  assert.equal(containerMetricsFor("other"), undefined);
  assert.equal(asFloat({ low: 1, high: 1 }), 2 ** 32 + 1);
});
