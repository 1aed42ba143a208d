// Given/when/then specifications of the tasks aggregate: pure decide functions folded with
// evolve (what the projection holds after each event), no runc involved.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { containerHandlers, decideCreateContainer } from "../../src/commands/containers.js";
import { decideTransition, execHandlers, taskHandlers, type CreateTask } from "../../src/commands/tasks.js";
import { keys, TYPE, type TaskRecord } from "../../src/projections/views.js";
import { rejectsClass, throwsClass } from "../helpers/errors.js";
import { parseSignal } from "../../src/cli/task-commands.js";
import { containerLabels, devicesAt, flagEnv, processFromImage, STOP_SIGNAL_LABEL } from "../../src/cli/container-create.js";
import { applyRunSpecFlags, effectiveCapabilities, withPrivileged, defaultSpec, parseIdMapping, parseWithNs, withNamespaces, parseMountFlag, withEnv, withHostNetwork, withUserNamespace } from "../../src/cli/spec.js";
import { shiftOwners } from "../../src/cli/remap.js";
import { devNumbers, hostDevices } from "../../src/cli/host-devices.js";
import { hasNames, readInRoot, resolveUser } from "../../src/cli/image-user.js";
import { chmodSync, chownSync, linkSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { controllerPaths, hugePageSize, metricsFromFiles, parseKeyValues } from "../../src/runtime/cgroups-v1.js";
import { MAX_UINT64, METRICS_V2_TYPE, metricsV2FromFiles, readMetricsV2, unifiedPath } from "../../src/runtime/cgroups-v2.js";
import { loadProtos } from "../../src/protos/protos.js";
import { parseExitFile } from "../../src/runtime/runc.js";
import { Given, T0 } from "../helpers/given.js";

const NS = "ns";
const io = { stdin: "/run/fifo/c1-stdin", stdout: "/run/fifo/c1-stdout", stderr: "", terminal: false };
const create = (id = "c1", pid = 4242): CreateTask => ({ namespace: NS, container_id: id, bundle: `/var/lib/ck/tasks/${NS}/${id}`, rootfs: [], io, pid });
const exited = { seconds: 1_700_000_050, nanos: 7 };

function givenContainer(id = "c1"): Given {
  const g = new Given();
  g.apply(
    decideCreateContainer(
      {
        namespace: NS,
        container: { id, labels: {}, image: "", runtime: { name: "io.containerd.runc.v2", options: null }, spec: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from("{}") }, snapshotter: "", snapshot_key: "", extensions: {} },
        now: T0,
      },
      undefined,
    ).event,
  );
  return g;
}
const task = (g: Given, id = "c1") => g.get<TaskRecord>(keys.task(NS, id));

describe("tasks", () => {
  test("create -> start -> exit -> delete: the record follows, each event containerd's", () => {
    const g = givenContainer();
    const d = taskHandlers.create(create())(g);
    assert.equal(d.event?.typeName, TYPE.TaskCreate);
    assert.equal(d.event?.topic, "/tasks/create");
    g.apply(d.event);
    assert.deepEqual(task(g), {
      container_id: "c1",
      bundle: "/var/lib/ck/tasks/ns/c1",
      // The init exists from Create on (held before its program runs).
      pid: 4242,
      status: "CREATED",
      ...io,
      exit_status: 0,
      exited_at: { seconds: 0, nanos: 0 },
      created_at: T0,
    });
    g.run(taskHandlers.start({ namespace: NS, container_id: "c1", pid: 4242 }));
    assert.deepEqual([task(g)?.status, task(g)?.pid], ["RUNNING", 4242]);
    assert.equal(g.run(taskHandlers.exit({ namespace: NS, container_id: "c1", pid: 4242, exit_status: 3, exited_at: exited })), true);
    assert.deepEqual([task(g)?.status, task(g)?.exit_status, task(g)?.exited_at], ["STOPPED", 3, exited]);
    const del = taskHandlers.delete({ namespace: NS, container_id: "c1" })(g);
    // No process id, as containerd's shim sends /tasks/delete for a task's own process.
    assert.deepEqual(del.event?.payload, { container_id: "c1", pid: 4242, exit_status: 3, exited_at: exited });
    g.apply(del.event);
    assert.equal(task(g), undefined);
  });

  test("an exit is recorded once; an exit of a task that is gone records nothing", () => {
    const g = givenContainer();
    g.run(taskHandlers.create(create()));
    g.run(taskHandlers.start({ namespace: NS, container_id: "c1", pid: 7 }));
    assert.equal(g.run(taskHandlers.exit({ namespace: NS, container_id: "c1", pid: 7, exit_status: 137, exited_at: exited })), true);
    const again = taskHandlers.exit({ namespace: NS, container_id: "c1", pid: 7, exit_status: 255, exited_at: exited })(g);
    assert.deepEqual(again, { result: false });
    assert.equal(task(g)?.exit_status, 137);
    assert.deepEqual(taskHandlers.exit({ namespace: NS, container_id: "none", pid: 1, exit_status: 1, exited_at: exited })(g), { result: false });
    // A late exit of an earlier process does not stop the task of the same id started since.
    g.run(taskHandlers.delete({ namespace: NS, container_id: "c1" }));
    g.run(taskHandlers.create(create()));
    g.run(taskHandlers.start({ namespace: NS, container_id: "c1", pid: 8 }));
    assert.deepEqual(taskHandlers.exit({ namespace: NS, container_id: "c1", pid: 7, exit_status: 1, exited_at: exited })(g), { result: false });
    assert.equal(task(g)?.status, "RUNNING");
    // Folded from the log as written: an exit event of another pid leaves the task running.
    g.apply({ namespace: NS, topic: "/tasks/exit", typeName: TYPE.TaskExit, payload: { container_id: "c1", id: "c1", pid: 7, exit_status: 1, exited_at: exited } });
    assert.equal(task(g)?.status, "RUNNING");
  });

  test("an out-of-memory kill is recorded for a running or paused task only, and changes nothing", () => {
    const g = givenContainer();
    const oom = taskHandlers.oom({ namespace: NS, container_id: "c1" });
    assert.deepEqual(oom(g), { result: false }, "no task");
    g.run(taskHandlers.create(create()));
    assert.deepEqual(oom(g), { result: false }, "created");
    g.run(taskHandlers.start({ namespace: NS, container_id: "c1", pid: 4242 }));
    const d = oom(g);
    assert.deepEqual([d.event?.topic, d.event?.typeName, d.event?.payload], ["/tasks/oom", TYPE.TaskOOM, { container_id: "c1" }]);
    const before = task(g);
    g.apply(d.event);
    assert.deepEqual(task(g), before);
    g.run(taskHandlers.pause({ namespace: NS, container_id: "c1" }));
    assert.equal(oom(g).result, true, "paused");
  });

  test("pause and resume move RUNNING <-> PAUSED; anything else is FailedPrecondition", () => {
    const g = givenContainer();
    g.run(taskHandlers.create(create()));
    throwsClass(() => taskHandlers.pause({ namespace: NS, container_id: "c1" })(g), "FailedPrecondition", /created, not running/);
    g.run(taskHandlers.start({ namespace: NS, container_id: "c1", pid: 9 }));
    throwsClass(() => taskHandlers.resume({ namespace: NS, container_id: "c1" })(g), "FailedPrecondition", /running, not paused/);
    g.run(taskHandlers.pause({ namespace: NS, container_id: "c1" }));
    assert.equal(task(g)?.status, "PAUSED");
    throwsClass(() => taskHandlers.delete({ namespace: NS, container_id: "c1" })(g), "FailedPrecondition", /must be stopped before deletion: paused/);
    g.run(taskHandlers.resume({ namespace: NS, container_id: "c1" }));
    assert.equal(task(g)?.status, "RUNNING");
    throwsClass(() => taskHandlers.delete({ namespace: NS, container_id: "c1" })(g), "FailedPrecondition", /must be stopped before deletion: running/);
    throwsClass(() => taskHandlers.start({ namespace: NS, container_id: "c1", pid: 10 })(g), "FailedPrecondition", /running, not created/);
  });

  test("a Pause or Resume whose record and process differ (an append of unknown outcome) brings the lagging side along", () => {
    const rec = (status: TaskRecord["status"]) => ({ container_id: "c1", status }) as TaskRecord;
    // In step: the usual change and its event; already there: FailedPrecondition.
    assert.deepEqual(decideTransition(rec("RUNNING"), "running", "PAUSED"), { change: true, record: true });
    assert.deepEqual(decideTransition(rec("PAUSED"), "paused", "RUNNING"), { change: true, record: true });
    throwsClass(() => decideTransition(rec("PAUSED"), "paused", "PAUSED"), "FailedPrecondition", /paused, not running/);
    throwsClass(() => decideTransition(rec("RUNNING"), "running", "RUNNING"), "FailedPrecondition", /running, not paused/);
    // Paused, the event maybe lost: Pause records it, Resume resumes (nothing was recorded).
    assert.deepEqual(decideTransition(rec("RUNNING"), "paused", "PAUSED"), { change: false, record: true });
    assert.deepEqual(decideTransition(rec("RUNNING"), "paused", "RUNNING"), { change: true, record: false });
    // Recorded paused, the process running (resumed under a lost answer): Pause pauses, Resume records.
    assert.deepEqual(decideTransition(rec("PAUSED"), "running", "PAUSED"), { change: true, record: false });
    assert.deepEqual(decideTransition(rec("PAUSED"), "running", "RUNNING"), { change: false, record: true });
    // runc says the process is gone (its exit not recorded yet): neither call does anything.
    throwsClass(() => decideTransition(rec("PAUSED"), "stopped", "RUNNING"), "FailedPrecondition", /stopped in runc, not paused/);
    throwsClass(() => decideTransition(rec("RUNNING"), "stopped", "PAUSED"), "FailedPrecondition", /stopped in runc, not running/);
    // Neither running nor paused: refused whatever the runtime says.
    for (const status of ["CREATED", "STOPPED"] as const) {
      throwsClass(() => decideTransition(rec(status), "running", "PAUSED"), "FailedPrecondition", new RegExp(`${status.toLowerCase()}, not running`));
      throwsClass(() => decideTransition(rec(status), "paused", "RUNNING"), "FailedPrecondition", new RegExp(`${status.toLowerCase()}, not paused`));
    }
  });

  test("a container with a task cannot be deleted until the task is", () => {
    const g = givenContainer();
    g.run(taskHandlers.create(create()));
    throwsClass(() => containerHandlers.delete({ namespace: NS, id: "c1" })(g), "FailedPrecondition", /has a created task: delete the task first/);
    g.run(taskHandlers.delete({ namespace: NS, container_id: "c1" }));
    g.run(containerHandlers.delete({ namespace: NS, id: "c1" }));
    assert.equal(g.get(keys.container(NS, "c1")), undefined);
  });

  test("a created task that never started may be deleted; its init's end before Start is its exit", () => {
    const g = givenContainer();
    g.run(taskHandlers.create(create()));
    const rec = g.run(taskHandlers.delete({ namespace: NS, container_id: "c1" }));
    assert.deepEqual([rec.status, rec.pid], ["CREATED", 4242]);
    assert.equal(task(g), undefined);
    g.run(taskHandlers.create(create("c1", 77)));
    assert.deepEqual(taskHandlers.exit({ namespace: NS, container_id: "c1", pid: 78, exit_status: 143, exited_at: exited })(g), { result: false });
    assert.equal(g.run(taskHandlers.exit({ namespace: NS, container_id: "c1", pid: 77, exit_status: 143, exited_at: exited })), true);
    assert.deepEqual([task(g)?.status, task(g)?.exit_status], ["STOPPED", 143]);
    throwsClass(() => taskHandlers.start({ namespace: NS, container_id: "c1", pid: 77 })(g), "FailedPrecondition", /stopped, not created/);
  });

  test("bad requests: no container (NotFound), a second task (AlreadyExists), bad ids and a relative bundle (InvalidArgument)", () => {
    const g = givenContainer();
    throwsClass(() => taskHandlers.create(create("other"))(g), "NotFound", /container "other"/);
    g.run(taskHandlers.create(create()));
    throwsClass(() => taskHandlers.create(create())(g), "AlreadyExists", /task "c1"/);
    throwsClass(() => taskHandlers.create({ ...create(), container_id: "" })(g), "InvalidArgument", /container_id must be set/);
    throwsClass(() => taskHandlers.create({ ...create(), container_id: "a/b" })(g), "InvalidArgument", /container_id/);
    const g2 = givenContainer("c2");
    throwsClass(() => taskHandlers.create({ ...create("c2"), bundle: "tasks/c2" })(g2), "InvalidArgument", /must be absolute/);
    throwsClass(() => taskHandlers.start({ namespace: NS, container_id: "c2", pid: 1 })(g2), "NotFound", /task c2 not found/);
    throwsClass(() => taskHandlers.delete({ namespace: NS, container_id: "c2" })(g2), "NotFound", /task c2 not found/);
  });

  test("execs: added only to a running task; their exits, carrying the exec's id, leave the task as it is", () => {
    const g = givenContainer();
    g.run(taskHandlers.create(create()));
    const exec = { namespace: NS, container_id: "c1", exec_id: "e1" };
    throwsClass(() => execHandlers.added(exec)(g), "FailedPrecondition", /created, not running/);
    g.run(taskHandlers.start({ namespace: NS, container_id: "c1", pid: 9 }));
    throwsClass(() => execHandlers.added({ ...exec, exec_id: "" })(g), "InvalidArgument", /exec_id must be set/);
    throwsClass(() => execHandlers.added({ ...exec, container_id: "none" })(g), "NotFound", /task none not found/);
    const added = execHandlers.added(exec)(g);
    assert.deepEqual([added.event?.topic, added.event?.typeName, added.event?.payload], ["/tasks/exec-added", TYPE.TaskExecAdded, { container_id: "c1", exec_id: "e1" }]);
    assert.deepEqual(g.apply(added.event), []);
    const started = execHandlers.started({ ...exec, pid: 10 })(g);
    assert.deepEqual([started.event?.topic, started.event?.payload], ["/tasks/exec-started", { container_id: "c1", exec_id: "e1", pid: 10 }]);
    assert.deepEqual(g.apply(started.event), []);
    const exit = execHandlers.exit({ ...exec, pid: 10, exit_status: 4, exited_at: exited })();
    assert.deepEqual(exit.event?.payload, { container_id: "c1", id: "e1", pid: 10, exit_status: 4, exited_at: exited });
    assert.deepEqual(g.apply(exit.event), []);
    assert.deepEqual([task(g)?.status, task(g)?.pid], ["RUNNING", 9]);
  });

  test("cgroup v1 metrics: files to containerd's Metrics fields; absent controllers left out", () => {
    const files: Record<string, string> = {
      "pids/pids.current": "3\n",
      "pids/pids.max": "max\n",
      "cpuacct/cpuacct.usage": "123456789\n",
      "cpuacct/cpuacct.stat": "user 20\nsystem 5\n",
      "cpuacct/cpuacct.usage_percpu": "100 200 \n",
      "cpu/cpu.stat": "nr_periods 7\nnr_throttled 2\nthrottled_time 900\n",
      "memory/memory.usage_in_bytes": "4096\n",
      "memory/memory.limit_in_bytes": "9223372036854771712\n",
      "memory/memory.stat": "cache 10\nrss 20\npgfault 30\ntotal_pgmajfault 4\ntotal_cache 11\n",
      "memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    };
    const m = metricsFromFiles((c, f) => files[`${c}/${f}`]) as any;
    assert.deepEqual(m.pids, { current: 3, limit: 0 });
    assert.deepEqual(m.cpu.usage, { total: 123456789, kernel: 5e7, user: 2e8, per_cpu: [100, 200] });
    assert.deepEqual(m.cpu.throttling, { periods: 7, throttled_periods: 2, throttled_time: 900 });
    assert.deepEqual([m.memory.cache, m.memory.rss, m.memory.pg_fault, m.memory.total_pg_maj_fault, m.memory.total_cache], [10, 20, 30, 4, 11]);
    assert.deepEqual(m.memory.usage, { limit: 9223372036854771712, usage: 4096, max: 0, failcnt: 0 });
    assert.equal(m.memory.swap, undefined, "no memsw files: no swap entry");
    assert.deepEqual(m.memory_oom_control, { oom_kill_disable: 0, under_oom: 0, oom_kill: 1 });
    assert.deepEqual(metricsFromFiles(() => undefined), {});
    assert.deepEqual([...parseKeyValues("a 1\nb x\n\nc 3").entries()], [["a", 1], ["c", 3]]);
    const swapFiles: Record<string, string> = { ...files, "memory/memory.stat": "hierarchical_memsw_limit 77\n" };
    assert.equal((metricsFromFiles((c, f) => swapFiles[`${c}/${f}`]) as any).memory.hierarchical_swap_limit, 77);
    // blkio, as containerd's cgroups library: the CFQ files when they hold entries, else the
    // throttle files; devices named from /proc/partitions; the Total line skipped.
    const partitions = "major minor  #blocks  name\n\n 254        0  268435456 vda\n   8       16   1000 sdb\n";
    const throttle: Record<string, string> = {
      "blkio/blkio.throttle.io_serviced": "254:0 Read 5\n254:0 Write 2\n8:16 Read 1\nTotal 8\n",
      "blkio/blkio.throttle.io_service_bytes": "254:0 Read 20480\n254:0 Write 8192\nTotal 28672\n",
      "proc/partitions": partitions,
    };
    const b = (metricsFromFiles((c, f) => throttle[`${c}/${f}`]) as any).blkio;
    assert.deepEqual(b.io_serviced_recursive, [
      { op: "Read", device: "/dev/vda", major: 254, minor: 0, value: 5 },
      { op: "Write", device: "/dev/vda", major: 254, minor: 0, value: 2 },
      { op: "Read", device: "/dev/sdb", major: 8, minor: 16, value: 1 },
    ]);
    assert.deepEqual(b.io_service_bytes_recursive.map((e: any) => e.value), [20480, 8192]);
    const cfq = { ...throttle, "blkio/blkio.io_serviced_recursive": "254:0 Read 9\nTotal 9\n", "blkio/blkio.time_recursive": "254:0 77\n" };
    const bc = (metricsFromFiles((c, f) => (cfq as Record<string, string>)[`${c}/${f}`]) as any).blkio;
    assert.deepEqual(bc.io_serviced_recursive, [{ op: "Read", device: "/dev/vda", major: 254, minor: 0, value: 9 }], "the CFQ files win when they hold entries");
    assert.deepEqual(bc.io_time_recursive, [{ op: "", device: "/dev/vda", major: 254, minor: 0, value: 77 }]);
    assert.deepEqual(bc.io_service_bytes_recursive, [], "no throttle entries mixed in");
    assert.deepEqual(
      ["hugepages-2048kB", "hugepages-1048576kB", "hugepages-64kB", "other"].map(hugePageSize),
      ["2MB", "1GB", "64KB", undefined],
    );
    // Through the wire: ctr decodes what containerd's runtime sends.
    const protos = loadProtos();
    const wire = protos.decode("io.containerd.cgroups.v1.Metrics", protos.encodeBuilt("io.containerd.cgroups.v1.Metrics", { blkio: b, hugetlb: [{ pagesize: "2MB", usage: 4, max: 5, failcnt: 1 }] })) as any;
    assert.equal(wire.blkio.io_serviced_recursive[2].device, "/dev/sdb");
    assert.equal(wire.hugetlb[0].pagesize, "2MB");
    // Where the init's cgroups are: each v1 controller's path, joint controllers split, the
    // unified and named hierarchies skipped.
    assert.deepEqual(
      [...controllerPaths("12:pids:/ns/c1\n4:cpu,cpuacct:/ns/c1\n1:name=systemd:/x\n0::/\n").entries()],
      [["pids", "/ns/c1"], ["cpu", "/ns/c1"], ["cpuacct", "/ns/c1"]],
    );
  });

  test("cgroup v2 metrics: the unified hierarchy's files to containerd's io.containerd.cgroups.v2.Metrics, through the wire", async () => {
    // The files as the kernel writes them (Documentation/admin-guide/cgroup-v2.rst).
    const root = mkdtempSync(join(tmpdir(), "ck-cg2-"));
    try {
      const dir = join(root, "ns", "c1");
      mkdirSync(dir, { recursive: true });
      const files: Record<string, string> = {
        "pids.current": "3\n",
        "pids.max": "max\n",
        "cpu.stat": "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 7\nnr_throttled 2\nthrottled_usec 900\n",
        "memory.stat": "anon 4096\nfile 8192\nkernel_stack 16384\npgfault 30\npgmajfault 4\nworkingset_refault_anon 1\nthp_fault_alloc 2\n",
        "memory.current": "1048576\n",
        "memory.max": "67108864\n",
        "memory.swap.current": "0\n",
        "memory.swap.max": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
        "io.stat": "8:0 rbytes=1024 wbytes=2048 rios=3 wios=4 dbytes=0 dios=0\n253:1 rbytes=5 wbytes=6 rios=7 wios=8\n",
      };
      for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
      assert.equal(unifiedPath("12:pids:/x\n1:name=systemd:/y\n0::/ns/c1\n"), "/ns/c1");
      assert.equal(unifiedPath("4:memory:/ns/c1\n"), undefined);
      const m = (await readMetricsV2("/ns/c1", root)) as any;
      assert.deepEqual(m.pids, { current: 3, limit: MAX_UINT64 }, "max is 2^64-1, as containerd's");
      assert.deepEqual(m.cpu, { usage_usec: 123456, user_usec: 100000, system_usec: 23456, nr_periods: 7, nr_throttled: 2, throttled_usec: 900 });
      assert.deepEqual([m.memory.anon, m.memory.file, m.memory.kernel_stack, m.memory.pgfault, m.memory.pgmajfault, m.memory.thp_fault_alloc], [4096, 8192, 16384, 30, 4, 2]);
      assert.deepEqual([m.memory.usage, m.memory.usage_limit, m.memory.swap_usage, m.memory.swap_limit], [1048576, 67108864, 0, MAX_UINT64]);
      assert.deepEqual(m.memory_events, { low: 0, high: 0, max: 5, oom: 1, oom_kill: 1 });
      assert.deepEqual(m.io.usage, [
        { major: 8, minor: 0, rbytes: 1024, wbytes: 2048, rios: 3, wios: 4 },
        { major: 253, minor: 1, rbytes: 5, wbytes: 6, rios: 7, wios: 8 },
      ]);
      // Through the wire as ckd sends it, and back as ctr's decoder reads it.
      const protos = loadProtos();
      const back = protos.decode(METRICS_V2_TYPE, protos.encodeBuilt(METRICS_V2_TYPE, m));
      assert.deepEqual([back.cpu.usage_usec, back.memory.usage_limit, back.io.usage[1].wios, back.memory_events.oom_kill], [123456, 67108864, 8, 1]);
      // 2^64-1 on the wire: ten bytes of varint, all ones (what Go's decoder reads as math.MaxUint64).
      const pids = protos.encodeBuilt(METRICS_V2_TYPE, { pids: { limit: m.pids.limit } });
      assert.equal(Buffer.from(pids).toString("hex"), "0a0b10ffffffffffffffffff01");
      // "../" in a path stays under the hierarchy; a cgroup that is gone has no statistics.
      assert.equal(await readMetricsV2("/../../ns/c1/../gone", root), undefined);
      assert.deepEqual(metricsV2FromFiles(() => undefined).memory_events, undefined);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test("ck run's process from an image config: args, env, working directory, the user as written; no command refused", () => {
    const cfg = { config: { Entrypoint: ["/bin/sh", "-c"], Cmd: ["echo hi"], Env: ["A=1"], WorkingDir: "/w", User: "1000:50" } };
    assert.deepEqual(processFromImage(cfg, []), { args: ["/bin/sh", "-c", "echo hi"], env: ["A=1"], cwd: "/w", imageUser: "1000:50" });
    assert.deepEqual(processFromImage(cfg, ["true"]).args, ["true"]);
    assert.deepEqual(processFromImage({ config: {} }, ["x"]), { args: ["x"], env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], cwd: "/", imageUser: "" });
    throwsClass(() => processFromImage({ config: {} }, []), "InvalidArgument", /no command given/);
  });

  test("a container's env as ctr gives it: --env-file then --env laid over the image's; a bare KEY unsets only what a flag set", () => {
    const cfg = { config: { Cmd: ["sh"], Env: ["PATH=/img/bin", "FOO=img", "KEEP=1"] } };
    const userEnv = flagEnv(["FROM_FILE=1", "", "BOTH=file", "GONE=file"], ["BOTH=flag", "FOO=flag", "GONE", "KEEP"]);
    assert.deepEqual(userEnv, ["FROM_FILE=1", "BOTH=flag", "FOO=flag"]);
    assert.deepEqual(processFromImage(cfg, [], userEnv).env, ["PATH=/img/bin", "FOO=flag", "KEEP=1", "FROM_FILE=1", "BOTH=flag"], "KEEP stays: a bare key never unsets the image's");
    assert.deepEqual(processFromImage({ config: { Cmd: ["sh"] } }, [], ["A=1"]).env, ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1"]);
  });

  test("a container's labels as ctr gives them: the image config's, the image's, the command line's over both, and the stop signal", () => {
    const cfg = { config: { Labels: { "org.example": "cfg", both: "cfg" }, StopSignal: "SIGQUIT" } };
    assert.deepEqual(containerLabels(cfg, { "img.label": "i", both: "img" }, { both: "cli", mine: "true" }), {
      "org.example": "cfg",
      "img.label": "i",
      both: "cli",
      mine: "true",
      [STOP_SIGNAL_LABEL]: "SIGQUIT",
    });
    assert.deepEqual(containerLabels({ config: {} }, {}, {}), { [STOP_SIGNAL_LABEL]: "SIGTERM" });
    // An image label that no container label may be (key and value over 4096 bytes) is left out.
    assert.deepEqual(containerLabels({ config: {} }, { big: "x".repeat(5000) }, {}), { [STOP_SIGNAL_LABEL]: "SIGTERM" });
  });

  test("--device: a device node as the spec lists it, a directory's devices walked; anything else InvalidArgument naming the flag", async () => {
    const [nul] = await devicesAt("/dev/null");
    assert.deepEqual({ ...nul, fileMode: undefined, uid: undefined, gid: undefined }, { path: "/dev/null", type: "c", major: 1, minor: 3, fileMode: undefined, uid: undefined, gid: undefined });
    assert.ok((await devicesAt("/dev")).some((d) => d.path === "/dev/zero"));
    await rejectsClass(devicesAt("/etc/hostname"), "InvalidArgument", /--device "\/etc\/hostname": not a device node/);
    await rejectsClass(devicesAt("/no/such/dev"), "InvalidArgument", /--device "\/no\/such\/dev": no such file/);
  });

  test("an image user resolved as containerd's client does: uid[:gid], names from /etc/passwd and /etc/group, supplementary groups", () => {
    const passwd = "root:x:0:0:root:/root:/bin/sh\r\n# a comment\napp:x:1234:2345::/home/app:/bin/sh\nbroken:x:nope:1::/:/bin/sh\n";
    const group = "root:x:0:\nwheel:x:10:root\napp:x:2345:app\nextra:x:777:app,other\nmore:x:778:other,app\r\n";
    assert.equal(hasNames("1000:50"), false);
    assert.equal(hasNames("1000"), false);
    assert.equal(hasNames("app"), true);
    assert.equal(hasNames("0:extra"), true);
    // The primary gid always first among the supplementary ones (containerd's ensureAdditionalGids).
    assert.deepEqual(resolveUser("", undefined, undefined), { uid: 0, gid: 0, additionalGids: [0] });
    assert.deepEqual(resolveUser("1000:50", undefined, undefined), { uid: 1000, gid: 50, additionalGids: [50] });
    // No User: root's groups in the image.
    assert.deepEqual(resolveUser("", passwd, group), { uid: 0, gid: 0, additionalGids: [0, 10] });
    // The group named after the user is left out of the supplementary ones; CRLF lines read too.
    assert.deepEqual(resolveUser("app", passwd, group), { uid: 1234, gid: 2345, additionalGids: [2345, 777, 778] });
    assert.deepEqual(resolveUser("1234", passwd, group), { uid: 1234, gid: 2345, additionalGids: [2345, 777, 778] });
    assert.deepEqual(resolveUser("4321", passwd, group), { uid: 4321, gid: 0, additionalGids: [0] });
    assert.deepEqual(resolveUser("app:extra", passwd, group), { uid: 1234, gid: 777, additionalGids: [777, 778] });
    assert.deepEqual(resolveUser("app:9", passwd, group), { uid: 1234, gid: 9, additionalGids: [9, 777, 778] });
    assert.deepEqual(resolveUser("0:extra", passwd, group), { uid: 0, gid: 777, additionalGids: [777, 10] });
    throwsClass(() => resolveUser("nobody", passwd, group), "FailedPrecondition", /image user "nobody": not in the image's \/etc\/passwd/);
    throwsClass(() => resolveUser("nobody", undefined, undefined), "FailedPrecondition", /\(it has none\)/);
    throwsClass(() => resolveUser("app:nogroup", passwd, group), "FailedPrecondition", /image group "nogroup"/);
    throwsClass(() => resolveUser("a:b:c", passwd, group), "InvalidArgument", /not user\[:group\]/);
    throwsClass(() => resolveUser(":5", passwd, group), "InvalidArgument", /not user\[:group\]/);
  });

  test("a file read in an image's root follows its symlinks inside that root, never out of it", async () => {
    const root = mkdtempSync(join(tmpdir(), "ck-root-"));
    const outside = mkdtempSync(join(tmpdir(), "ck-outside-"));
    try {
      mkdirSync(join(root, "data"));
      writeFileSync(join(root, "data", "passwd"), "in the root\n");
      writeFileSync(join(outside, "passwd"), "outside\n");
      mkdirSync(join(root, "etc"));
      symlinkSync("/data/passwd", join(root, "etc", "passwd"));
      assert.equal(await readInRoot(root, "etc/passwd"), "in the root\n");
      symlinkSync("../../../../../../data/passwd", join(root, "etc", "group"));
      assert.equal(await readInRoot(root, "etc/group"), "in the root\n");
      symlinkSync(join(outside, "passwd"), join(root, "etc", "shadow"));
      assert.equal(await readInRoot(root, "etc/shadow"), undefined, "an absolute link resolved in the root, where it does not exist");
      symlinkSync("loop", join(root, "etc", "loop"));
      assert.equal(await readInRoot(root, "etc/loop"), undefined);
      assert.equal(await readInRoot(root, "etc/none"), undefined);
      assert.equal(await readInRoot(root, "data"), undefined, "a directory is not a file");
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });
});


test("signal names as ctr takes them: SIGKILL, KILL, 9, and the real-time ones (RTMIN+n, RTMAX-n)", () => {
  assert.deepEqual(["SIGKILL", "kill", "9", "SIGTERM"].map(parseSignal), [9, 9, 9, 15]);
  assert.deepEqual(["RTMIN", "SIGRTMIN+3", "RTMAX-1", "rtmax"].map(parseSignal), [34, 37, 63, 64]);
  for (const bad of ["NOPE", "RTMIN+31", "RTMAX+1"]) throwsClass(() => parseSignal(bad), "InvalidArgument", /unknown signal/);
});

describe("ck run's spec flags (as ctr run's)", () => {
  test("withEnv: KEY=VALUE replaces in place or appends; a bare KEY unsets; later flags win", () => {
    assert.deepEqual(withEnv(["PATH=/bin", "A=1", "B=2"], ["A=9", "C=3", "B", "C=4", "NOPE"]), ["PATH=/bin", "A=9", "C=4"]);
    assert.deepEqual(withEnv(["A=1"], ["B=1", "B"]), ["A=1"], "one set then unset by the flags");
    assert.deepEqual(withEnv(["A=1"], ["B", "B=2"]), ["A=1", "B=2"]);
    assert.deepEqual(withEnv([], []), []);
  });

  test("parseMountFlag: ctr's keys and spellings; anything else InvalidArgument naming it", () => {
    assert.deepEqual(parseMountFlag("type=bind,src=/h,dst=/c,options=rbind:ro"), { type: "bind", source: "/h", destination: "/c", options: ["rbind", "ro"] });
    assert.deepEqual(parseMountFlag("type=tmpfs,source=tmpfs,destination=/t"), { type: "tmpfs", source: "tmpfs", destination: "/t", options: [] });
    throwsClass(() => parseMountFlag("type=bind,src=/h,target=/c"), "InvalidArgument", /mount option "target" is not supported/);
    throwsClass(() => parseMountFlag("bind"), "InvalidArgument", /"bind" is not key=value/);
    throwsClass(() => parseMountFlag("type=bind,src=/h,dst=c"), "InvalidArgument", /destination must be an absolute path/);
  });

  test("parseIdMapping: container:host:size as ctr's --uidmap; anything else InvalidArgument naming the flag", () => {
    assert.deepEqual(parseIdMapping("0:100000:65536", "--uidmap"), { containerID: 0, hostID: 100000, size: 65536 });
    assert.deepEqual(parseIdMapping("0:4294967295:1", "--gidmap"), { containerID: 0, hostID: 0xffffffff, size: 1 });
    for (const bad of ["", "0:1", "0:1:2:3", "a:1:1", "0:-1:1", "0:1:0", "0:4294967296:1", " 0:1:1", "0:1.5:1"]) {
      throwsClass(() => parseIdMapping(bad, "--uidmap"), "InvalidArgument", /^--uidmap ".*": want container-id:host-id:size/);
    }
    const spec = defaultSpec("ns", "id", ["sh"]) as unknown as Parameters<typeof withUserNamespace>[0];
    withUserNamespace(spec, { containerID: 0, hostID: 1000, size: 10 }, { containerID: 0, hostID: 2000, size: 10 });
    withUserNamespace(spec, { containerID: 0, hostID: 1000, size: 10 }, { containerID: 0, hostID: 2000, size: 10 });
    assert.deepEqual(spec.linux.namespaces.filter((n) => n.type === "user"), [{ type: "user" }], "one user namespace");
    assert.deepEqual([spec.linux.uidMappings, spec.linux.gidMappings], [[{ containerID: 0, hostID: 1000, size: 10 }], [{ containerID: 0, hostID: 2000, size: 10 }]]);
  });

  test("shiftOwners: every entry's owner moved, links re-owned themselves, never followed", { skip: process.getuid?.() === 0 ? false : "chown needs root" }, async () => {
    const root = mkdtempSync(join(tmpdir(), "ck-shift-"));
    const outside = mkdtempSync(join(tmpdir(), "ck-shift-outside-"));
    try {
      mkdirSync(join(root, "d"));
      writeFileSync(join(root, "d/f"), "x");
      symlinkSync(outside, join(root, "out"));
      chownSync(join(root, "d/f"), 5, 6);
      // A file with two links is re-owned once; a set-user-ID program keeps its bit.
      linkSync(join(root, "d/f"), join(root, "f2"));
      writeFileSync(join(root, "suid"), "x", { mode: 0o755 });
      chmodSync(join(root, "suid"), 0o4755);
      assert.equal(await shiftOwners(root, 1000, 2000), 5);
      const owner = (p: string) => { const st = lstatSync(p); return [st.uid, st.gid]; };
      assert.deepEqual(owner(root), [1000, 2000]);
      assert.deepEqual(owner(join(root, "d/f")), [1005, 2006]);
      assert.deepEqual(owner(join(root, "f2")), [1005, 2006]);
      assert.equal(lstatSync(join(root, "suid")).mode & 0o7777, 0o4755);
      assert.deepEqual(owner(join(root, "out")), [1000, 2000]);
      assert.deepEqual(owner(outside), [0, 0], "the link's target is not touched");
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });

  test("defaultSpec is containerd 1.6's: capabilities in three sets, 1024 open files, devices denied but the usual ones", () => {
    const spec = defaultSpec("ns", "id", ["sh"]) as any;
    const caps = spec.process.capabilities;
    assert.equal(caps.bounding.length, 14);
    assert.deepEqual([caps.permitted, caps.effective], [caps.bounding, caps.bounding]);
    assert.deepEqual(spec.process.rlimits, [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }]);
    assert.deepEqual(spec.linux.resources.devices[0], { allow: false, access: "rwm" });
    assert.deepEqual(spec.linux.resources.devices.slice(1).map((d: any) => `${d.major}:${d.minor ?? "*"}`), ["1:3", "1:8", "1:7", "5:0", "1:5", "1:9", "5:1", "136:*", "5:2"]);
    assert.equal(spec.linux.maskedPaths.length, 10);
  });

  test("applyRunSpecFlags: ctr run's spec flags as containerd's options apply them; bad values InvalidArgument naming the flag", () => {
    const spec = defaultSpec("ns", "id", ["sh"]) as any;
    applyRunSpecFlags(spec, {
      annotation: ["k=v=w", "l=from-annotation"],
      label: ["l=from-label", "bare"],
      readOnly: true,
      capAdd: ["CAP_SYS_ADMIN", "CAP_CHOWN"],
      capDrop: ["CAP_NET_RAW"],
      cpus: "1.5",
      cpuShares: "256",
      memoryLimit: "1048576",
      allowNewPrivs: true,
    });
    assert.deepEqual(spec.annotations, { k: "v=w", l: "from-label", bare: "true" }, "labels are annotations too, over --annotation's (a key alone is true, as ctr's LabelArgs)");
    assert.equal(spec.root.readonly, true);
    for (const set of ["bounding", "effective", "permitted"]) {
      const l: string[] = spec.process.capabilities[set];
      assert.ok(l.includes("CAP_SYS_ADMIN") && !l.includes("CAP_NET_RAW"), set);
      assert.equal(l.filter((c) => c === "CAP_CHOWN").length, 1, "added once");
    }
    assert.deepEqual(spec.linux.resources.cpu, { quota: 150000, period: 100000, shares: 256 });
    assert.deepEqual(spec.linux.resources.memory, { limit: 1048576 });
    assert.equal(spec.linux.resources.devices.length, 10, "the device rules kept");
    assert.equal(spec.process.noNewPrivileges, false);
    // ctr's defaults: 1024 shares; 0 is "none" for all three.
    const plain = defaultSpec("ns", "id", []) as any;
    applyRunSpecFlags(plain, {});
    assert.deepEqual(plain.linux.resources.cpu, { shares: 1024 });
    const zero = defaultSpec("ns", "id", []) as any;
    applyRunSpecFlags(zero, { cpus: "0", cpuShares: "0", memoryLimit: "0" });
    assert.deepEqual([zero.linux.resources.cpu, zero.linux.resources.memory], [undefined, undefined]);
    for (const [f, re] of [
      [{ capDrop: ["chown"] }, /--cap-drop "chown"/],
      [{ cpus: "-1" }, /--cpus "-1"/],
      [{ cpus: "" }, /--cpus ""/],
      [{ cpus: "1e20" }, /--cpus "1e20"/],
      [{ cpus: "0.001" }, /--cpus "0.001"/],
      [{ cpuShares: "1" }, /--cpu-shares "1": want a whole number from 2 to 262144/],
      [{ cpuShares: "0x10" }, /--cpu-shares "0x10"/],
      [{ memoryLimit: "1e3" }, /--memory-limit "1e3"/],
      [{ memoryLimit: " 1" }, /--memory-limit " 1"/],
      [{ annotation: ["novalue"] }, /--annotation "novalue"/],
      [{ label: ["=x"] }, /--label "=x"/],
    ] as const) {
      throwsClass(() => applyRunSpecFlags(defaultSpec("ns", "id", []) as any, f as any), "InvalidArgument", re);
    }
  });

  test("--with-ns: TYPE:PATH with an absolute path, in place of the spec's own namespace of that type", () => {
    const spec = defaultSpec("ns", "id", ["sh"]) as any;
    withHostNetwork(spec, "box");
    withNamespaces(spec, parseWithNs(["pid:/proc/1/ns/pid", "network:/run/netns/x"]));
    assert.deepEqual(spec.linux.namespaces.find((n: any) => n.type === "pid"), { type: "pid", path: "/proc/1/ns/pid" });
    assert.deepEqual(spec.linux.namespaces.at(-1), { type: "network", path: "/run/netns/x" }, "joined after --net-host, as ctr");
    for (const [w, re] of [["pid", /want TYPE:PATH/], ["pid:", /want TYPE:PATH/], ["pid:relative", /absolute path/], ["disk:/x", /"disk" is not a namespace type/]] as const) {
      throwsClass(() => parseWithNs([w]), "InvalidArgument", re);
    }
  });

  test("--privileged: the client's capabilities, every device allowed and the host's made, nothing masked, sysfs writable", async () => {
    assert.deepEqual(effectiveCapabilities("CapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n").length, 14);
    assert.deepEqual(effectiveCapabilities("CapEff:\t0000000000200001\n"), ["CAP_CHOWN", "CAP_SYS_ADMIN"]);
    assert.deepEqual(effectiveCapabilities("CapEff:\t000001ffffffffff\n").length, 41);
    assert.deepEqual(effectiveCapabilities("nothing"), []);
    // dev_t as glibc splits it: 8:1, and a large minor (259:65536).
    assert.deepEqual(devNumbers(0x801n), { major: 8, minor: 1 });
    assert.deepEqual(devNumbers((259n << 8n) | (65536n << 12n)), { major: 259, minor: 65536 });
    const devs = await hostDevices();
    const nul = devs.find((d) => d.path === "/dev/null");
    assert.deepEqual(nul && [nul.type, nul.major, nul.minor], ["c", 1, 3]);
    assert.ok(!devs.some((d) => d.path === "/dev/console" || d.path.startsWith("/dev/pts/")), "console and ptys left out");
    const spec = defaultSpec("ns", "id", ["sh"]) as any;
    withPrivileged(spec, ["CAP_SYS_ADMIN", "CAP_CHOWN"], [{ path: "/dev/x", type: "b", major: 8, minor: 0, fileMode: 0o660, uid: 0, gid: 6 }]);
    assert.deepEqual(spec.process.capabilities, { bounding: ["CAP_SYS_ADMIN", "CAP_CHOWN"], effective: ["CAP_SYS_ADMIN", "CAP_CHOWN"], permitted: ["CAP_SYS_ADMIN", "CAP_CHOWN"] });
    assert.deepEqual([spec.linux.maskedPaths, spec.linux.readonlyPaths], [[], []]);
    assert.deepEqual(spec.mounts.find((m: any) => m.type === "sysfs").options, ["nosuid", "noexec", "nodev", "rw"]);
    assert.deepEqual(spec.linux.resources.devices, [{ allow: true, access: "rwm" }]);
    assert.deepEqual(spec.linux.devices.map((d: any) => d.path), ["/dev/x"]);
  });

  test("withHostNetwork: no network namespace, the host's hosts and resolv.conf read-only, HOSTNAME", () => {
    const spec = defaultSpec("ns", "id", ["sh"]) as unknown as Parameters<typeof withHostNetwork>[0];
    withHostNetwork(spec, "box");
    assert.deepEqual(spec.linux.namespaces.map((n) => n.type), ["pid", "ipc", "uts", "mount"]);
    assert.deepEqual(spec.mounts.slice(-2), [
      { destination: "/etc/hosts", type: "bind", source: "/etc/hosts", options: ["rbind", "ro"] },
      { destination: "/etc/resolv.conf", type: "bind", source: "/etc/resolv.conf", options: ["rbind", "ro"] },
    ]);
    assert.ok(spec.process.env?.includes("HOSTNAME=box"));
  });
});

describe("keepers' exit files", () => {
  test("a status alone (shell and console keepers), or with the time the process ended (ck-reaper); anything else is none", () => {
    assert.deepEqual(parseExitFile("137\n"), { status: 137 });
    assert.deepEqual(parseExitFile("4 1764633600.250000000\n"), { status: 4, at: new Date(Date.UTC(2025, 11, 2, 0, 0, 0, 250)) });
    for (const bad of [undefined, "", "x", "4 1764633600", "4 1764633600.25", "1\n2\n"]) assert.equal(parseExitFile(bad), undefined, String(bad));
  });
});
