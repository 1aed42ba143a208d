// Tasks on real runc through ckd, driven by containerd's real ctr: run with an exit code and
// stdin, run detached, ls/ps/pause/resume/kill/rm, the /tasks/* events in the log, what bad
// requests get (and that they append nothing), and a task whose ckd was killed.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, cpSync, readFileSync, readdirSync, readlinkSync, existsSync, statSync, mkdtempSync, mkdirSync, writeFileSync, rmSync, openSync, writeSync, closeSync, constants as fsConstants } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runCommand, runNode, CK, CK_REPLAY, DIST } from "../helpers/daemon.js";
import { startRegistry, buildImage } from "../helpers/registry.js";
import { rejectsClass } from "../helpers/errors.js";
import type { CkError } from "../../src/errdefs/errdefs.js";
import { EventLog } from "../../src/eventstore/log.js";
import { loadProtos } from "../../src/protos/protos.js";
import type { ApiClient } from "../../src/cli/client.js";

const CTR = "/usr/bin/ctr";
// Not "tasks": with cgroup v1, /sys/fs/cgroup/<controller>/tasks is a file, and ctr puts a
// container's cgroup at /<namespace>/<id> (runc under containerd would meet the same file).
const NS = "runtasks";
const root = process.getuid?.() === 0;

describe("tasks on runc, through ctr", { timeout: 300_000, skip: root ? false : "runc containers and overlay mounts need root" }, () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let daemon: TestDaemon;
  let api: ApiClient;
  let log: EventLog;
  let ref = "";
  const ctr = (args: string[], input?: string) => runCommand(CTR, ["--address", daemon.address, "--namespace", NS, ...args], {}, input, 60_000);
  const protos = loadProtos();

  /** Log sequences of t-exit's /tasks/start and /tasks/exit (for ck-replay show --until). */
  const seqs = { start: 0, exit: 0 };

  /** The events appended since `from`, decoded: [topic, event, sequence]. */
  async function eventsSince(from: number): Promise<Array<[string, any, number]>> {
    const out: Array<[string, any, number]> = [];
    const last = await log.lastSeq();
    if (last < from) return out;
    for await (const m of log.read({ fromSeq: from })) {
      const env = protos.decode("containerd.services.events.v1.Envelope", m.data) as any;
      const type = env.event.type_url.replace(/^.*\//, "");
      out.push([env.topic, protos.decode(type, env.event.value), m.seq]);
      if (m.seq >= last) break;
    }
    return out;
  }

  /** Whether a command line is runc's (run by name or by path). */
  const isRunc = (cmdline: string) => /^(\S*\/)?runc\u0000/.test(cmdline);

  /**
   * A process's command line once it runs its program: runc writes the pid file as the process
   * starts, and for a moment after, it may still be runc's own init.
   */
  async function cmdline(pid: number): Promise<string> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const text = existsSync(`/proc/${pid}/cmdline`) ? readFileSync(`/proc/${pid}/cmdline`, "utf8") : "";
      if (!isRunc(text) || Date.now() > deadline) return text;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async function status(id: string): Promise<string> {
    const r = await ctr(["tasks", "ls"]);
    assert.equal(r.code, 0, r.stderr);
    const row = r.stdout.split("\n").find((l) => l.startsWith(`${id} `));
    return row?.trim().split(/\s+/)[2] ?? "";
  }

  before(async () => {
    nats = await startTestNats();
    registry = await startRegistry();
    const busybox = readFileSync("/bin/busybox");
    const image = await buildImage({
      host: registry.host,
      repo: "tasks/busybox",
      tag: "v1",
      layers: [
        Object.fromEntries([
          ["bin/busybox", busybox],
          ...["sh", "echo", "cat", "sleep", "true", "stty", "tty", "ip", "ping"].map((c) => [`bin/${c}`, { symlink: "busybox" }]),
        ]),
      ],
    });
    ref = image.reference;
    daemon = await TestDaemon.start({ natsUrl: nats.url });
    api = daemon.client(NS);
    log = await EventLog.open({ url: nats.url });
    const r = await ctr(["images", "pull", "--plain-http", ref]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });
  after(async () => {
    try {
      await daemon?.removeTasks([NS]);
    } finally {
      api?.close();
      await log?.close();
      await daemon?.cleanup().catch(() => undefined);
      await registry?.stop();
      await nats?.cleanup();
    }
  });

  test("ctr run: the container's output and exit code; stdin reaches it; /tasks/* events in order", async () => {
    const from = (await log.lastSeq()) + 1;
    let r = await ctr(["run", "--rm", ref, "t-exit", "sh", "-c", "echo hello from runc; exit 3"], "");
    assert.equal(r.stdout, "hello from runc\n", r.stderr);
    assert.equal(r.code, 3, r.stderr);
    const events = await eventsSince(from);
    const tasks = events.filter(([topic]) => topic.startsWith("/tasks/"));
    assert.deepEqual(tasks.map(([t]) => t), ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
    const [, create] = tasks[0]!;
    const [, start] = tasks[1]!;
    const [, exit] = tasks[2]!;
    const [, del] = tasks[3]!;
    assert.equal(create.container_id, "t-exit");
    assert.ok(create.bundle.startsWith(daemon.root), create.bundle);
    assert.ok(start.pid > 0);
    // The init exists from Create on: the same pid in both events.
    assert.equal(create.pid, start.pid);
    assert.deepEqual([exit.container_id, exit.pid, exit.exit_status], ["t-exit", start.pid, 3]);
    assert.ok(Number(exit.exited_at.seconds) > 0);
    assert.deepEqual([del.container_id, del.pid, del.exit_status], ["t-exit", start.pid, 3]);
    seqs.start = tasks[1]![2];
    seqs.exit = tasks[2]![2];
    // --rm took the container and its snapshot; the bundle went with the task.
    assert.ok(!existsSync(create.bundle), "bundle removed");
    r = await ctr(["containers", "ls", "-q"]);
    assert.ok(!r.stdout.includes("t-exit"), r.stdout);

    r = await ctr(["run", "--rm", ref, "t-stdin", "cat"], "piped through stdin\n");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "piped through stdin\n");
  });

  test("ctr run -d, then tasks ls, ps, pause, resume, kill, rm", async () => {
    const pidFile = join(daemon.root, "t-bg.pid");
    let r = await ctr(["run", "-d", "--pid-file", pidFile, ref, "t-bg", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await status("t-bg"), "RUNNING");
    const got = await api.call("tasks", "Get", { container_id: "t-bg" });
    const pid = got.process.pid;
    // Not exited: Go's zero time, as containerd answers (the epoch is no zero ExitTime to a Go
    // client); ctr shows it as it does for containerd.
    assert.equal(Number(got.process.exited_at.seconds), -62135596800);
    r = await ctr(["containers", "rm", "t-bg"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cannot delete a non stopped container: \{running 0 0001-01-01 00:00:00 \+0000 UTC\}/);
    // ctr writes the pid Create answered: the init's, as with containerd.
    assert.equal(readFileSync(pidFile, "utf8").trim(), String(pid));
    assert.ok(pid > 0 && existsSync(`/proc/${pid}`), `pid ${pid} runs`);
    assert.match(await cmdline(pid), /^sleep\u0000600/);
    // The bundle shows the rootfs and the spec: root's alone.
    assert.equal(statSync(`${daemon.root}/tasks/${NS}/t-bg`).mode & 0o777, 0o700);
    r = await ctr(["tasks", "ps", "t-bg"]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(String(pid)), r.stdout);

    // Exec processes in the running task: output, stdin, exit code, and their events.
    const from = (await log.lastSeq()) + 1;
    r = await ctr(["tasks", "exec", "--exec-id", "e1", "t-bg", "sh", "-c", "echo in exec; exit 4"], "");
    assert.deepEqual([r.code, r.stdout], [4, "in exec\n"], r.stderr);
    r = await ctr(["tasks", "exec", "--exec-id", "e2", "t-bg", "cat"], "exec stdin\n");
    assert.deepEqual([r.code, r.stdout], [0, "exec stdin\n"], r.stderr);
    const execEvents = (await eventsSince(from)).filter(([t]) => t.startsWith("/tasks/"));
    assert.deepEqual(
      execEvents.slice(0, 3).map(([t, e]) => [t, e.exec_id ?? e.id, e.exit_status ?? null]),
      [
        ["/tasks/exec-added", "e1", null],
        ["/tasks/exec-started", "e1", null],
        ["/tasks/exit", "e1", 4],
      ],
    );
    await rejectsClass(api.call("tasks", "Get", { container_id: "t-bg", exec_id: "e1" }), "NotFound", /^process does not exist e1\b/);
    // Over the API: an exec signalled while it runs; one never started cannot be; an exec
    // may not take the task's own id.
    const spec = (args: string[]) => ({ type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process", value: Buffer.from(JSON.stringify({ args, cwd: "/", env: ["PATH=/bin"] })) });
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bg", exec_id: "t-bg", spec: spec(["true"]) }), "AlreadyExists", /task's own process/);
    const beforeExecs = await log.lastSeq();
    // A console asked for by the request but not the process spec (or the reverse) is refused.
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bg", exec_id: "ex", spec: spec(["true"]), terminal: true }), "InvalidArgument", /spec\.terminal is false but the request's terminal is true/);
    const ttySpec = { ...spec(["true"]), value: Buffer.from(JSON.stringify({ args: ["true"], cwd: "/", terminal: true })) };
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bg", exec_id: "ex", spec: ttySpec }), "InvalidArgument", /spec\.terminal is true but the request's terminal is false/);
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bg", exec_id: "ex", spec: spec([]) }), "InvalidArgument", /spec\.args/);
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bg", exec_id: "ex", spec: { type_url: "x", value: Buffer.from("{") } }), "InvalidArgument", /not a runtime-spec Process/);
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bg", exec_id: "ex", spec: spec(["true"]), stdout: "/no/such/dir/out" }), "InvalidArgument", /does not exist/);
    assert.equal(await log.lastSeq(), beforeExecs, "a refused exec appended to the log");
    assert.deepEqual(readdirSync(`${daemon.root}/tasks/${NS}/t-bg/execs`), [], "nothing of a refused exec left behind");
    for (const method of ["Wait", "Kill", "DeleteProcess", "Get"]) {
      await rejectsClass(api.call("tasks", method, { container_id: "t-bg", exec_id: "nope", signal: 9 }), "NotFound", /^process does not exist nope\b/);
    }
    await rejectsClass(api.call("tasks", "DeleteProcess", { container_id: "t-bg", exec_id: "" }), "InvalidArgument", /exec_id/);
    await api.call("tasks", "Exec", { container_id: "t-bg", exec_id: "e3", spec: spec(["sleep", "600"]) });
    await rejectsClass(api.call("tasks", "Kill", { container_id: "t-bg", exec_id: "e3", signal: 9 }), "FailedPrecondition", /not started/);
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bg", exec_id: "e3", spec: spec(["true"]) }), "AlreadyExists", /^id e3: already exists/);
    const e3 = await api.call("tasks", "Start", { container_id: "t-bg", exec_id: "e3" });
    await rejectsClass(api.call("tasks", "DeleteProcess", { container_id: "t-bg", exec_id: "e3" }), "FailedPrecondition", /must be stopped/);
    assert.match(await cmdline(e3.pid), /^sleep\u0000600/);
    // ctr tasks ps: the exec's pid says which exec it is (containerd.runc.v1.ProcessDetails), the init's nothing.
    r = await ctr(["tasks", "ps", "t-bg"]);
    assert.equal(r.code, 0, r.stderr);
    const psRow = (p: number) => r.stdout.split("\n").find((l) => l.split(/\s+/)[0] === String(p)) ?? "";
    assert.match(psRow(e3.pid), /ExecID:e3\b/, r.stdout);
    assert.match(psRow(pid), /^\d+\s+-\s*$/, r.stdout);
    const e3waited = api.call("tasks", "Wait", { container_id: "t-bg", exec_id: "e3" });
    await api.call("tasks", "Kill", { container_id: "t-bg", exec_id: "e3", signal: 9 });
    assert.equal((await e3waited).exit_status, 137);
    await rejectsClass(api.call("tasks", "Kill", { container_id: "t-bg", exec_id: "e3", signal: 9 }), "NotFound", /already finished/);
    const e3del = await api.call("tasks", "DeleteProcess", { container_id: "t-bg", exec_id: "e3" });
    assert.deepEqual([e3del.id, e3del.pid, e3del.exit_status], ["e3", e3.pid, 137]);
    // A program the container does not have: Start fails with runc's own words (from its log,
    // as runc runs under the exec's keeper), the exec is done (255), DeleteProcess clears it.
    await api.call("tasks", "Exec", { container_id: "t-bg", exec_id: "e-missing", spec: spec(["/no/such/program"]) });
    await rejectsClass(api.call("tasks", "Start", { container_id: "t-bg", exec_id: "e-missing" }), "Unknown", /^OCI runtime exec failed: runc exec t-bg \(exec "e-missing"\) failed .*no such file or directory.*: unknown$/s);
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-bg", exec_id: "e-missing" })).exit_status, 255);
    await api.call("tasks", "DeleteProcess", { container_id: "t-bg", exec_id: "e-missing" });
    // Through ctr: runc's words once, in ctr's message, none in the exec's own stderr (the
    // reaper copies output only once runc has started the process, as containerd's shim).
    r = await ctr(["tasks", "exec", "--exec-id", "e-nope", "t-bg", "/no/such/program"]);
    assert.notEqual(r.code, 0);
    assert.equal(r.stderr.match(/no such file or directory/g)?.length, 1, r.stderr);
    assert.deepEqual(readdirSync(`${daemon.root}/tasks/${NS}/t-bg/execs`), [], "DeleteProcess left nothing of the execs");
    // A task's own program missing: its Create fails, as containerd's `runc create` does
    // (ckd looks it up while runc holds the init at ckd's gate), with no task events, no task,
    // no bundle; the held init is gone (its cgroup with it).
    let since = (await log.lastSeq()) + 1;
    r = await ctr(["run", "--rm", ref, "t-nobin-plain", "/no/such/program"], "");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /^ctr: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "\/no\/such\/program": stat \/no\/such\/program: no such file or directory: unknown\n$/, r.stderr);
    assert.equal(r.stderr.match(/no such file or directory/g)?.length, 1, r.stderr);
    r = await ctr(["run", ref, "t-nobin-path", "no-such-program"], "");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /exec: "no-such-program": executable file not found in \$PATH/, r.stderr);
    await rejectsClass(api.call("tasks", "Get", { container_id: "t-nobin-path" }), "NotFound");
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-nobin-path`), "the refused task's bundle is removed");
    assert.deepEqual((await eventsSince(since)).map(([t]) => t).filter((t) => t.startsWith("/tasks/")), [], "a refused Create records no task events");
    assert.equal((await ctr(["containers", "rm", "t-nobin-path"])).code, 0);
    // A program found through an absolute symlink inside the image (sh -> busybox) and by PATH.
    since = (await log.lastSeq()) + 1;
    r = await ctr(["run", "--rm", ref, "t-bin-path", "true"], "");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await eventsSince(since)).map(([t]) => t).filter((t) => t.startsWith("/tasks/")), ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
    await ctr(["containers", "rm", "t-nobin-plain"]);
    assert.equal(await status("t-bg"), "RUNNING");
    assert.equal(await status("t-bg"), "RUNNING", "an exec's exit is not the task's");

    // Metrics from the task's cgroup, as ctr decodes them (io.containerd.cgroups.v1.Metrics).
    r = await ctr(["tasks", "metrics", "t-bg"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^pids\.current\s+[1-9]\d*\s*$/m);
    assert.match(r.stdout, /^memory\.usage_in_bytes\s+[1-9]\d*\s*$/m);
    r = await ctr(["tasks", "metrics", "--format", "json", "t-bg"]);
    assert.equal(r.code, 0, r.stderr);
    const metrics = JSON.parse(r.stdout);
    assert.ok(metrics.pids.current >= 1 && metrics.cpu.usage.total > 0 && metrics.memory.usage.usage > 0, r.stdout);
    assert.deepEqual((await api.call("tasks", "Metrics", { filters: ["id==nope"] })).metrics, []);

    // Update: the task's new memory limit, in its cgroup (runc update).
    const memCgroup = readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n").find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l))!.split(":")[2];
    const limitFile = `/sys/fs/cgroup/memory${memCgroup}/memory.limit_in_bytes`;
    await api.call("tasks", "Update", { container_id: "t-bg", resources: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", value: Buffer.from(JSON.stringify({ memory: { limit: 96 * 1024 * 1024 } })) } });
    assert.equal(readFileSync(limitFile, "utf8").trim(), String(96 * 1024 * 1024));
    // Past 2^53 (int64's largest: no limit), the client's number reaches runc as written.
    await api.call("tasks", "Update", { container_id: "t-bg", resources: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", value: Buffer.from('{"memory":{"limit":9223372036854775807}}') } });
    assert.equal(readFileSync(limitFile, "utf8").trim(), "9223372036854771712");
    // One runc refuses (a memory limit below what the cgroup uses): Unknown with runc's words
    // (containerd's shim adds no lead for an update), no file left.
    await rejectsClass(api.call("tasks", "Update", { container_id: "t-bg", resources: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", value: Buffer.from('{"memory":{"limit":4096}}') } }), "Unknown", /^runc update t-bg: .*: unknown$/s);
    assert.deepEqual(readdirSync(`${daemon.root}/tasks/${NS}/t-bg`).filter((f) => f.startsWith("update-")), [], "no resources file left");
    r = await ctr(["tasks", "pause", "t-bg"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await status("t-bg"), "PAUSED");
    await rejectsClass(api.call("tasks", "Delete", { container_id: "t-bg" }), "FailedPrecondition", /must be stopped/);
    r = await ctr(["tasks", "resume", "t-bg"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await status("t-bg"), "RUNNING");
    // Record and process apart, as an append of unknown outcome (the log lost under it) leaves
    // them: a Pause or Resume brings the lagging side along and ends where the caller asked.
    const runcCli = async (...args: string[]) => {
      const out = await runCommand("runc", ["--root", `${daemon.root}/runc/${NS}`, ...args]);
      assert.equal(out.code, 0, out.stderr);
      return out.stdout;
    };
    const runcStatus = async () => JSON.parse(await runcCli("state", "t-bg")).status;
    await runcCli("pause", "t-bg"); // paused, the event lost
    let seq = await log.lastSeq();
    await api.call("tasks", "Pause", { container_id: "t-bg" });
    assert.deepEqual([await status("t-bg"), await runcStatus(), (await log.lastSeq()) - seq], ["PAUSED", "paused", 1], "recorded only");
    await runcCli("resume", "t-bg"); // recorded paused, the process resumed
    seq = await log.lastSeq();
    await api.call("tasks", "Resume", { container_id: "t-bg" });
    assert.deepEqual([await status("t-bg"), await runcStatus(), (await log.lastSeq()) - seq], ["RUNNING", "running", 1], "recorded only");
    await runcCli("pause", "t-bg"); // paused, the event lost: Resume resumes, nothing to record
    seq = await log.lastSeq();
    await api.call("tasks", "Resume", { container_id: "t-bg" });
    assert.deepEqual([await status("t-bg"), await runcStatus(), (await log.lastSeq()) - seq], ["RUNNING", "running", 0], "resumed only");
    await rejectsClass(api.call("tasks", "Resume", { container_id: "t-bg" }), "FailedPrecondition", /running, not paused/);

    // Wait, asked before the kill, answers with the exit the kill caused.
    const waited = api.call("tasks", "Wait", { container_id: "t-bg" });
    r = await ctr(["tasks", "kill", "-s", "SIGKILL", "t-bg"]);
    assert.equal(r.code, 0, r.stderr);
    const w = await waited;
    assert.equal(w.exit_status, 137);
    assert.equal(await status("t-bg"), "STOPPED");
    assert.ok(!existsSync(`/proc/${pid}`) || !readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("sleep"), "the process is gone");
    await rejectsClass(api.call("tasks", "Kill", { container_id: "t-bg", signal: 9 }), "NotFound", /already finished/);
    r = await ctr(["tasks", "rm", "t-bg"]);
    assert.equal(r.code, 0, r.stderr);
    await rejectsClass(api.call("tasks", "Get", { container_id: "t-bg" }), "NotFound");
    r = await ctr(["containers", "rm", "t-bg"]);
    assert.equal(r.code, 0, r.stderr);
  });

  /**
   * A program on a terminal of its own (ctr -t needs one): its output so far, a wait for some
   * text in it, typing, resizing, and its exit.
   */
  async function onTerminal(file: string, args: string[], size: { cols: number; rows: number }) {
    const pty = await import("node-pty");
    const term = (pty.default ?? pty).spawn(file, args, { ...size, cwd: "/", env: { ...process.env, TERM: "xterm" } as Record<string, string> });
    let output = "";
    term.onData((d) => (output += d));
    const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
    return {
      term,
      output: () => output,
      /** Until `re` matches what came after `from` (an index in the output); then where it ended. */
      async waitFor(re: RegExp, from = 0, ms = 15_000): Promise<number> {
        const deadline = Date.now() + ms;
        for (;;) {
          const m = re.exec(output.slice(from));
          if (m) return from + m.index + m[0].length;
          if (Date.now() > deadline) throw new Error(`no ${re} on the terminal within ${ms} ms; it shows: ${JSON.stringify(output.slice(from))}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      },
      exited,
      /**
       * Until the shell on it says (stty size) that its console is `rows cols`: a size ctr sends
       * after Start, so it arrives soon, not at once. Where that answer ended.
       */
      async sizeBecomes(rows: number, cols: number, from: number): Promise<number> {
        for (let tries = 0; ; tries++) {
          term.write("stty size\r");
          const end = await this.waitFor(new RegExp(`\\n${rows} ${cols}\\r*\\n`), from, 500).catch(() => undefined);
          if (end !== undefined) return end;
          assert.ok(tries < 20, `the console never became ${rows}x${cols}: ${JSON.stringify(output.slice(from))}`);
        }
      },
    };
  }

  test("a Delete whose cleanup fails (its rootfs held busy) keeps the task and its execs as they were; the next Delete completes", async () => {
    let r = await ctr(["run", "-d", ref, "t-busy", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process", value: Buffer.from(JSON.stringify({ args: ["true"], cwd: "/", env: ["PATH=/bin"] })) };
    await api.call("tasks", "Exec", { container_id: "t-busy", exec_id: "b1", spec });
    await api.call("tasks", "Start", { container_id: "t-busy", exec_id: "b1" });
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-busy", exec_id: "b1" })).exit_status, 0);
    const waited = api.call("tasks", "Wait", { container_id: "t-busy" });
    await api.call("tasks", "Kill", { container_id: "t-busy", signal: 9 });
    assert.equal((await waited).exit_status, 137);
    // A descriptor of this process inside the rootfs: its unmount is busy (tried for ~2.5 s).
    const fd = openSync(`${daemon.root}/tasks/${NS}/t-busy/rootfs/bin/busybox`, "r");
    try {
      await rejectsClass(api.call("tasks", "Delete", { container_id: "t-busy" }), "Unavailable", /umount/);
      assert.equal(await status("t-busy"), "STOPPED");
      const exec = (await api.call("tasks", "Get", { container_id: "t-busy", exec_id: "b1" })).process;
      assert.deepEqual([exec.id, exec.status, exec.exit_status], ["b1", 3, 0], "the exec is kept (3: STOPPED)");
    } finally {
      closeSync(fd);
    }
    const deleted = await api.call("tasks", "Delete", { container_id: "t-busy" });
    assert.equal(deleted.exit_status, 137);
    await rejectsClass(api.call("tasks", "Get", { container_id: "t-busy", exec_id: "b1" }), "NotFound");
    r = await ctr(["containers", "rm", "t-busy"]);
    assert.equal(r.code, 0, r.stderr);
  });

  test("ctr run -t and tasks exec -t: a console sized as ctr's terminal, resized with it, typed into, with its exit code", async () => {
    const from = (await log.lastSeq()) + 1;
    const t = await onTerminal(CTR, ["--address", daemon.address, "--namespace", NS, "run", "-t", "--rm", ref, "t-tty", "sh"], { cols: 97, rows: 33 });
    let at = await t.waitFor(/\/ # /);
    t.term.write("tty; echo A$((40+2))B\r");
    at = await t.waitFor(/A42B\r*\n/, at);
    // The container's own console.
    assert.match(t.output(), /\/dev\/pts\/0\r*\n/);
    // The size of ctr's terminal (ctr's ResizePty after Start), then its new size once resized:
    // ctr passes it on (SIGWINCH, ResizePty), ckd to runc's pty, runc to the console.
    at = await t.sizeBecomes(33, 97, at);
    t.term.resize(120, 40);
    at = await t.sizeBecomes(40, 120, at);
    // A task started while this console is open: its keeper (outliving ckd) holds no
    // descriptor of ckd's, this console's pty master among them, only its stdio; nor does its
    // logging program, only its stdio and its pipes.
    const fdLogger = join(daemon.root, "fd-logger.sh");
    writeFileSync(fdLogger, "#!/bin/sh\nexec 5>&-\nexec /bin/sleep 600\n", { mode: 0o755 });
    let rr = await ctr(["run", "-d", "--log-uri", `binary://${fdLogger}`, ref, "t-fds", "sleep", "600"]);
    assert.equal(rr.code, 0, rr.stderr);
    const fdKeeper = Number(readFileSync(`${daemon.root}/tasks/${NS}/t-fds/shim.pid`, "utf8").split(" ")[0]);
    // (Beyond its stdio, the reaper keeping the init has only its own signalfd.)
    const keeperFds = readdirSync(`/proc/${fdKeeper}/fd`).map(Number).sort((a, b) => a - b);
    assert.deepEqual(
      keeperFds.map((fd) => (fd <= 2 ? fd : readlinkSync(`/proc/${fdKeeper}/fd/${fd}`))),
      [0, 1, 2, "anon_inode:[signalfd]"],
    );
    const loggerPid = Number(readFileSync(`${daemon.root}/tasks/${NS}/t-fds/logger.pid`, "utf8").split(" ")[0]);
    assert.deepEqual(readdirSync(`/proc/${loggerPid}/fd`).map(Number).sort((a, b) => a - b), [0, 1, 2, 3, 4]);
    await api.call("tasks", "Kill", { container_id: "t-fds", signal: 9 });
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-fds" })).exit_status, 137);
    rr = await ctr(["tasks", "rm", "t-fds"]);
    assert.equal(rr.code, 0, rr.stderr);
    assert.equal((await ctr(["containers", "rm", "t-fds"])).code, 0);
    // A running task's console, for an exec with one of its own.
    assert.equal((await api.call("tasks", "Get", { container_id: "t-tty" })).process.terminal, true);
    const e = await onTerminal(CTR, ["--address", daemon.address, "--namespace", NS, "tasks", "exec", "-t", "--exec-id", "tty-exec", "t-tty", "sh"], { cols: 50, rows: 10 });
    let eat = await e.waitFor(/\/ # /);
    eat = await e.sizeBecomes(10, 50, eat);
    e.term.write("tty\r");
    eat = await e.waitFor(/\/dev\/pts\/1\r*\n/, eat);
    // Each console's master is its keeper's: ck-reaper, the process's parent (as runc left it),
    // relaying it as containerd's shim does. Each, started while the other was open, holds its
    // own master and no other, and ckd none.
    const masters = (pid: number) =>
      readdirSync(`/proc/${pid}/fd`).filter((fd) => {
        try {
          // runc opens it in the container's devpts: /dev/pts/ptmx as the container sees it.
          return /^\/dev\/(pts\/)?ptmx$/.test(readlinkSync(`/proc/${pid}/fd/${fd}`));
        } catch {
          return false;
        }
      }).length;
    const ppidOf = (p: number) => Number(readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ")[1]);
    const execPid = (await api.call("tasks", "Get", { container_id: "t-tty", exec_id: "tty-exec" })).process.pid;
    const execKeeper = ppidOf(execPid);
    assert.match(readFileSync(`/proc/${execKeeper}/cmdline`, "utf8"), /^[^\0]*ck-reaper\0--console\0/);
    assert.equal(execKeeper, Number(readFileSync(`${daemon.root}/tasks/${NS}/t-tty/execs/tty-exec/shim.pid`, "utf8").split(" ")[0]));
    const ttyKeeper = Number(readFileSync(`${daemon.root}/tasks/${NS}/t-tty/shim.pid`, "utf8").split(" ")[0]);
    assert.equal(ppidOf((await api.call("tasks", "Get", { container_id: "t-tty" })).process.pid), ttyKeeper);
    assert.deepEqual([masters(ttyKeeper), masters(execKeeper), masters(daemon.pid)], [1, 1, 0], "a console master each keeper, none elsewhere");
    e.term.write("exit 6\r");
    assert.equal(await e.exited, 6, e.output());
    // A background process left holding an exec's console keeps neither the exec nor ctr
    // (waiting for its output's end) from ending: runc shuts its copy of the console down
    // once the process has ended.
    const bg = await onTerminal(CTR, ["--address", daemon.address, "--namespace", NS, "tasks", "exec", "-t", "--exec-id", "tty-bg", "t-tty", "sh"], { cols: 50, rows: 10 });
    await bg.waitFor(/\/ # /);
    bg.term.write("sleep 600 &\r");
    bg.term.write("exit 7\r");
    const bgExit = await Promise.race([bg.exited, new Promise((res) => setTimeout(() => res("still waiting after 30 s"), 30_000))]);
    if (bgExit !== 7) bg.term.kill("SIGKILL");
    assert.equal(bgExit, 7, bg.output());
    t.term.write("exit 5\r");
    assert.equal(await t.exited, 5, t.output());
    const events = (await eventsSince(from)).filter(([topic, ev]) => topic.startsWith("/tasks/") && ev.container_id === "t-tty");
    assert.deepEqual(
      // An exec's id: exec_id, or an exit's id when it is not the container's.
      events.map(([topic, ev]) => [topic, ev.exec_id || (ev.id && ev.id !== ev.container_id ? ev.id : null), ev.exit_status ?? null]),
      [
        ["/tasks/create", null, null],
        ["/tasks/start", null, null],
        ["/tasks/exec-added", "tty-exec", null],
        ["/tasks/exec-started", "tty-exec", null],
        ["/tasks/exit", "tty-exec", 6],
        ["/tasks/exec-added", "tty-bg", null],
        ["/tasks/exec-started", "tty-bg", null],
        ["/tasks/exit", "tty-bg", 7],
        ["/tasks/exit", null, 5],
        ["/tasks/delete", null, 5],
      ],
    );
    assert.equal(events[0]![1].io?.terminal, true);
  });

  test("consoles: every byte of a burst at exit, a reader that never reads, a log file, runc's errors as text", async () => {
    // ~100 KB printed right up to the process's exit, through the reaper's relay of the
    // console and ctr's terminal, in order and whole, every time. ctr's terminal here is
    // script(1)'s, which reads it to its end. (runc's own foreground copy, which ck used
    // before, stopped short of the last bytes in about one run in ten.)
    // script(1) types its stdin's end (a NUL here) into ctr's terminal, which ctr passes on:
    // the console's echo is turned off first, so that it cannot land inside a line.
    const burst = "stty -echo; i=0; while [ $i -lt 2000 ]; do echo line-$i-abcdefghijklmnopqrstuvwxyz0123456789; i=$((i+1)); done";
    for (let run = 0; run < 5; run++) {
      const big = await runCommand("script", ["-q", "-e", "-c", `${CTR} --address ${daemon.address} --namespace ${NS} run -t --rm ${ref} t-burst sh -c '${burst}'`, "/dev/null"], {}, "", 60_000);
      assert.equal(big.code, 0, big.stderr);
      const lines = [...big.stdout.matchAll(/line-(\d+)-abcdefghijklmnopqrstuvwxyz0123456789\r*\n/g)].map((m) => Number(m[1]));
      assert.deepEqual(lines, [...Array(2000).keys()], `run ${run}: every line in order; the last that came: ${JSON.stringify(big.stdout.slice(-200))}`);
    }
    // A reader that lags: ctr's terminal read 4 KiB every 5 ms, so that 6000 lines end in the
    // buffers on the way (the stdout FIFO among them). ctr (1.6) closes its FIFO's reader as
    // soon as Wait answers: the exit is reported only once that reader has taken what the
    // FIFO holds.
    {
      const long = burst.replace("-lt 2000", "-lt 6000");
      const cmd = `${CTR} --address ${daemon.address} --namespace ${NS} run -t --rm ${ref} t-burst sh -c '${long}'`;
      const slow = `perl -e '$| = 1; while (sysread(STDIN, my $b, 4096)) { print $b; select(undef, undef, undef, 0.005) }'`;
      const big = await runCommand("bash", ["-c", `set -o pipefail; script -q -e -c "$CK_CMD" /dev/null | ${slow}`], { CK_CMD: cmd }, "", 60_000);
      assert.equal(big.code, 0, big.stderr);
      const lines = [...big.stdout.matchAll(/line-(\d+)-abcdefghijklmnopqrstuvwxyz0123456789\r*\n/g)].map((m) => Number(m[1]));
      assert.deepEqual(lines, [...Array(6000).keys()], `a lagging reader: every line in order; the last that came: ${JSON.stringify(big.stdout.slice(-200))}`);
    }

    // The same without a console: the reaper's relay of the output to ctr's FIFO waits alike.
    {
      const long = burst.replace("stty -echo; ", "").replace("-lt 2000", "-lt 6000");
      const cmd = `${CTR} --address ${daemon.address} --namespace ${NS} run --rm ${ref} t-plainburst sh -c '${long}'`;
      const slow = `perl -e '$| = 1; while (sysread(STDIN, my $b, 4096)) { print $b; select(undef, undef, undef, 0.005) }'`;
      const big = await runCommand("bash", ["-c", `set -o pipefail; eval "$CK_CMD" | ${slow}`], { CK_CMD: cmd }, "", 60_000);
      assert.equal(big.code, 0, big.stderr);
      const lines = [...big.stdout.matchAll(/line-(\d+)-abcdefghijklmnopqrstuvwxyz0123456789\r*\n/g)].map((m) => Number(m[1]));
      assert.deepEqual(lines, [...Array(6000).keys()], `a lagging reader, no console: every line in order; the last that came: ${JSON.stringify(big.stdout.slice(-120))}`);
    }

    // A console whose stdout FIFO nobody reads: the container blocks (paced), and a kill still
    // ends it, its exit recorded.
    /** A container from the image whose process is `args` on a console (spec.process.terminal). */
    const consoleContainer = async (id: string, args: string[]) => {
      const made = await ctr(["containers", "create", ref, id, "true"]);
      assert.equal(made.code, 0, made.stderr);
      const c = (await api.call("containers", "Get", { id })).container;
      const spec = JSON.parse(Buffer.from(c.spec.value).toString("utf8"));
      Object.assign(spec.process, { args, terminal: true });
      await api.call("containers", "Update", { container: { id, spec: { ...c.spec, value: Buffer.from(JSON.stringify(spec)) } }, update_mask: { paths: ["spec"] } });
    };
    await consoleContainer("t-stall", ["sh", "-c", "while :; do echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; done"]);
    const fifo = join(daemon.root, "t-stall.out");
    execFileSync("mkfifo", [fifo]);
    const mounts = (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-stall" })).mounts;
    await api.call("tasks", "Create", { container_id: "t-stall", rootfs: mounts, stdout: fifo, terminal: true });
    await api.call("tasks", "Start", { container_id: "t-stall" });
    await new Promise((res) => setTimeout(res, 1000));
    const waited = api.call("tasks", "Wait", { container_id: "t-stall" });
    await api.call("tasks", "Kill", { container_id: "t-stall", signal: 9 });
    const within = new Promise((_, reject) => setTimeout(() => reject(new Error("no exit within 20 s of the kill: runc waits on the unread console")), 20_000).unref());
    assert.equal(((await Promise.race([waited, within])) as { exit_status: number }).exit_status, 137);
    // Its keeper keeps what the console still holds for that reader, idle: not polling a
    // console that every holder has left (a busy loop would take ~100 ticks a second).
    const stallKeeper = Number(readFileSync(`${daemon.root}/tasks/${NS}/t-stall/shim.pid`, "utf8").split(" ")[0]);
    const cpuTicks = (pid: number) => {
      const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
      return Number(f[11]) + Number(f[12]);
    };
    const before = cpuTicks(stallKeeper);
    await new Promise((res) => setTimeout(res, 1000));
    assert.ok(cpuTicks(stallKeeper) - before < 30, `the keeper took ${cpuTicks(stallKeeper) - before} ticks in a second`);
    await api.call("tasks", "Delete", { container_id: "t-stall" });
    assert.equal((await ctr(["containers", "rm", "t-stall"])).code, 0);

    // A TERM sent to a console's keeper while its init waits for Start does not end it, nor
    // the console runc hands over at Start.
    await consoleContainer("t-term", ["sh", "-c", "echo started-$((6*7))"]);
    const termOut = join(daemon.root, "t-term.out");
    const termMounts = (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-term" })).mounts;
    await api.call("tasks", "Create", { container_id: "t-term", rootfs: termMounts, stdout: `file://${termOut}`, terminal: true });
    const termKeeper = Number(readFileSync(`${daemon.root}/tasks/${NS}/t-term/shim.pid`, "utf8").split(" ")[0]);
    await new Promise((res) => setTimeout(res, 300));
    process.kill(termKeeper, "SIGTERM");
    await api.call("tasks", "ResizePty", { container_id: "t-term", width: 61, height: 17 });
    await api.call("tasks", "Start", { container_id: "t-term" });
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-term" })).exit_status, 0);
    assert.equal(readFileSync(termOut, "utf8"), "started-42\r\n");
    await api.call("tasks", "Delete", { container_id: "t-term" });
    assert.equal((await ctr(["containers", "rm", "t-term"])).code, 0);

    // A console's size: the process spec's consoleSize, as runc's init makes the console
    // (containerd's oci.WithTTYSize), not overridden by ckd; for an exec, a ResizePty before
    // Start becomes its spec's consoleSize, so the program starts at that size.
    await consoleContainer("t-size", ["sh", "-c", "stty size; sleep 30"]);
    {
      const c = (await api.call("containers", "Get", { id: "t-size" })).container;
      const sizeSpec = JSON.parse(Buffer.from(c.spec.value).toString("utf8"));
      sizeSpec.process.consoleSize = { height: 13, width: 77 };
      await api.call("containers", "Update", { container: { id: "t-size", spec: { ...c.spec, value: Buffer.from(JSON.stringify(sizeSpec)) } }, update_mask: { paths: ["spec"] } });
    }
    const sizeOut = join(daemon.root, "t-size.out");
    const sizeMounts = (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-size" })).mounts;
    await api.call("tasks", "Create", { container_id: "t-size", rootfs: sizeMounts, stdout: `file://${sizeOut}`, terminal: true });
    await api.call("tasks", "Start", { container_id: "t-size" });
    const execOut = join(daemon.root, "t-size-exec.out");
    const execSpec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process", value: Buffer.from(JSON.stringify({ args: ["stty", "size"], cwd: "/", env: ["PATH=/bin"], terminal: true })) };
    await api.call("tasks", "Exec", { container_id: "t-size", exec_id: "sz", spec: execSpec, terminal: true, stdout: `file://${execOut}` });
    await api.call("tasks", "ResizePty", { container_id: "t-size", exec_id: "sz", width: 61, height: 17 });
    await api.call("tasks", "Start", { container_id: "t-size", exec_id: "sz" });
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-size", exec_id: "sz" })).exit_status, 0);
    assert.equal(readFileSync(execOut, "utf8"), "17 61\r\n");
    assert.equal(readFileSync(sizeOut, "utf8"), "13 77\r\n");
    await api.call("tasks", "Kill", { container_id: "t-size", signal: 9 });
    await api.call("tasks", "Wait", { container_id: "t-size" });
    await api.call("tasks", "Delete", { container_id: "t-size" });
    assert.equal((await ctr(["containers", "rm", "t-size"])).code, 0);

    // The consoles' sockets' directory open to others: no console is made there, and the
    // directory is named (no one else may stand in for a console's socket).
    await consoleContainer("t-sockdir", ["sh", "-c", "exit 0"]);
    const sockDir = join(daemon.root, "consoles");
    chmodSync(sockDir, 0o755);
    try {
      const sdMounts = (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-sockdir" })).mounts;
      await rejectsClass(api.call("tasks", "Create", { container_id: "t-sockdir", rootfs: sdMounts, terminal: true }), "FailedPrecondition", new RegExp(`${sockDir} \\(the consoles' sockets\\) must be a directory of ckd's user's own, closed to others \\(mode 0755\\)`));
      await rejectsClass(api.call("tasks", "Get", { container_id: "t-sockdir" }), "NotFound");
      assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-sockdir`), "no bundle left behind");
    } finally {
      chmodSync(sockDir, 0o700);
    }
    assert.equal((await ctr(["containers", "rm", "t-sockdir"])).code, 0);

    // ck run -d -t --log: the console's output appended to a file.
    const ck = (args: string[]) => runNode(CK, ["--address", daemon.address, "-n", NS, ...args]);
    const logFile = join(daemon.root, "tty.log");
    let r = await ck(["run", "-d", "-t", "--log", logFile, ref, "ck-tlog", "--", "sh", "-c", "echo logged; tty"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await api.call("tasks", "Wait", { container_id: "ck-tlog" })).exit_status, 0);
    assert.match(readFileSync(logFile, "utf8"), /^logged\r\n\/dev\/pts\/0\r\n$/);
    await api.call("tasks", "Delete", { container_id: "ck-tlog" });
    assert.equal((await ctr(["containers", "rm", "ck-tlog"])).code, 0);

    // runc's own failure on a console reaches the client as text (runc colours it on a pty):
    // an rlimit it cannot set (soft above hard), which runc meets only after ckd's gate.
    await consoleContainer("t-nobin", ["sh", "-c", "exit 0"]);
    {
      const c = (await api.call("containers", "Get", { id: "t-nobin" })).container;
      const spec = JSON.parse(Buffer.from(c.spec.value).toString("utf8"));
      spec.process.rlimits = [{ type: "RLIMIT_NOFILE", soft: 2048, hard: 1024 }];
      await api.call("containers", "Update", { container: { id: "t-nobin", spec: { ...c.spec, value: Buffer.from(JSON.stringify(spec)) } }, update_mask: { paths: ["spec"] } });
    }
    const nobinMounts = (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-nobin" })).mounts;
    await api.call("tasks", "Create", { container_id: "t-nobin", rootfs: nobinMounts, terminal: true });
    const err = await api.call("tasks", "Start", { container_id: "t-nobin" }).then(
      () => assert.fail("a process with an impossible rlimit started"),
      (e: Error) => e,
    );
    assert.match(err.message, /^OCI runtime start failed: runc run t-nobin failed \(exit \d+\): .*rlimit/);
    assert.equal((err as CkError).errorClass, "Unknown", "as containerd's shim answers");
    assert.doesNotMatch(err.message, /\x1b|\r/);
    await api.call("tasks", "Delete", { container_id: "t-nobin" });
    assert.equal((await ctr(["containers", "rm", "t-nobin"])).code, 0);

    // An id of 76 characters (the longest): its bundle's path is past a unix socket's 107
    // bytes, its keeper's socket is not; resized through it, the size seen by the program.
    const longId = `t-long-${"x".repeat(69)}`;
    await consoleContainer(longId, ["sh", "-c", "sleep 0.5; stty size"]);
    const longOut = join(daemon.root, "long.out");
    writeFileSync(longOut, "");
    await api.call("tasks", "Create", { container_id: longId, rootfs: (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: longId })).mounts, terminal: true, stdout: longOut });
    await api.call("tasks", "ResizePty", { container_id: longId, width: 66, height: 22 });
    await api.call("tasks", "Start", { container_id: longId });
    assert.equal((await api.call("tasks", "Wait", { container_id: longId })).exit_status, 0);
    assert.match(readFileSync(longOut, "utf8"), /^22 66\r\n$/);
    await api.call("tasks", "Delete", { container_id: longId });
    // (Node cuts a longer socket path short, silently: a socket would land beside the bundle.)
    assert.deepEqual(readdirSync(`${daemon.root}/tasks/${NS}`).filter((n) => n.startsWith("t-long-")), [], "nothing left beside the bundle");
    assert.equal((await ctr(["containers", "rm", longId])).code, 0);
  });

  test("without ck-reaper (a build with no C compiler): consoles on the Node keeper's pty, plain processes under the shell keeper", async () => {
    // This build's dist without ck-reaper, beside it (node_modules found as from dist), and a
    // ckd of it on a root and a log of its own (its own managed nats-server).
    const bare = `${DIST}-no-reaper`;
    rmSync(bare, { recursive: true, force: true });
    cpSync(DIST, bare, { recursive: true });
    rmSync(join(bare, "ck-reaper"));
    const other = await TestDaemon.start({ ckd: join(bare, "src", "cli", "ckd.js") });
    const octr = (args: string[], input?: string) => runCommand(CTR, ["--address", other.address, "--namespace", NS, ...args], {}, input, 60_000);
    try {
      let r = await octr(["images", "pull", "--plain-http", ref]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      r = await octr(["run", "--rm", ref, "nr-plain", "sh", "-c", "echo plain; exit 3"], "");
      assert.deepEqual([r.code, r.stdout], [3, "plain\n"], r.stderr);
      r = await runCommand("script", ["-q", "-e", "-c", `${CTR} --address ${other.address} --namespace ${NS} run -t --rm ${ref} nr-tty sh -c 'stty -echo; echo on-a-console; tty; exit 4'`, "/dev/null"], {}, "", 60_000);
      assert.equal(r.code, 4, r.stderr);
      // (The NUL script(1) types at its stdin's end may come back as ^@, before or after: on
      // the Node keeper's pty it can be echoed as the process ends.)
      assert.match(r.stdout, /^(\^@)?on-a-console\r+\n\/dev\/pts\/0\r+\n(\^@)?$/);
      // The keepers, while they run: a Node console keeper, a shell for a plain process.
      r = await runCommand("script", ["-q", "-e", "-c", `${CTR} --address ${other.address} --namespace ${NS} run -d -t ${ref} nr-keepers sleep 60`, "/dev/null"], {}, "", 60_000);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const keeperCmd = (file: string) => readFileSync(`/proc/${readFileSync(file, "utf8").split(" ")[0]}/cmdline`, "utf8");
      assert.match(keeperCmd(`${other.root}/tasks/${NS}/nr-keepers/shim.pid`), /console-keeper\.js\0/);
      r = await octr(["tasks", "exec", "--exec-id", "nr-e", "nr-keepers", "sh", "-c", "echo from-exec; exit 5"], "");
      assert.deepEqual([r.code, r.stdout], [5, "from-exec\n"], r.stderr);
      assert.equal((await octr(["tasks", "kill", "-s", "KILL", "nr-keepers"])).code, 0);
      const oapi = other.client(NS);
      try {
        assert.equal((await oapi.call("tasks", "Wait", { container_id: "nr-keepers" })).exit_status, 137);
      } finally {
        oapi.close();
      }
      assert.equal((await octr(["tasks", "rm", "nr-keepers"])).code, 0);
      assert.equal((await octr(["containers", "rm", "nr-keepers"])).code, 0);
    } finally {
      await other.cleanup().catch(() => undefined);
      rmSync(bare, { recursive: true, force: true });
    }
  });

  test("ck run starts from ctr's spec (capabilities, open files, devices) and takes ctr run's spec flags", async () => {
    // As a program (the launcher's sh line), as users run it: Node 20 would take --env-file as its own.
    const ck = (args: string[]) => runCommand(CK, ["--address", daemon.address, "-n", NS, ...args], {}, "", 60_000);
    // What the process is given, the same under both clients; mknod is allowed, using the device is not.
    const probe = "cat /proc/self/status; ulimit -n; mknod /blk b 7 0 && cat /blk; echo end";
    const fields = (out: string) => out.split("\n").filter((l) => /^Cap(Prm|Eff|Bnd)|^NoNewPrivs|^\d+$|^end$/.test(l) || /Operation not permitted/.test(l)).join("\n");
    const viaCtr = await ctr(["run", "--rm", ref, "t-spec-ctr", "sh", "-c", probe], "");
    const viaCk = await ck(["run", "--rm", ref, "ck-spec", "--", "sh", "-c", probe]);
    assert.equal(viaCk.code, viaCtr.code, viaCk.stderr);
    assert.equal(fields(viaCk.stdout + viaCk.stderr), fields(viaCtr.stdout + viaCtr.stderr));
    assert.match(viaCk.stdout, /^CapEff:\s+00000000a80425fb$/m, "containerd's default capabilities, effective");
    assert.match(viaCk.stdout, /^1024$/m);
    assert.match(viaCk.stderr, /cat: can't open '\/blk': Operation not permitted/, "devices other than the usual ones are denied");

    // ctr run's flags: capabilities added and dropped, limits in the task's cgroup, a
    // read-only root, an env file before --env, annotations in the spec, new privileges.
    const envFile = join(daemon.root, "run.env");
    writeFileSync(envFile, "FROM_FILE=1\nBOTH=file\n\n");
    let r = await ck([
      "run", "-d", "--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "CAP_CHOWN", "--memory-limit", "67108864", "--cpus", "0.5", "--cpu-shares", "512",
      "--read-only", "--env-file", envFile, "--env", "BOTH=flag", "--annotation", "org.example/a=b", "--allow-new-privs",
      ref, "ck-flags", "--", "sh", "-c", "cat /proc/self/status; echo $FROM_FILE $BOTH; echo x > /written || echo read-only; sleep 60",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const pid = Number((await api.call("tasks", "Get", { container_id: "ck-flags" })).process.pid);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const capEff = BigInt("0x" + /^CapEff:\s+([0-9a-f]+)$/m.exec(status)![1]);
    assert.equal((capEff >> 21n) & 1n, 1n, "CAP_SYS_ADMIN added");
    assert.equal(capEff & 1n, 0n, "CAP_CHOWN dropped");
    assert.match(status, /^NoNewPrivs:\s+0$/m);
    // The limits in the task's cgroup (v1, as this project's machines: ctr's path /<namespace>/<id>).
    if (existsSync("/sys/fs/cgroup/memory/tasks")) {
      assert.equal(readFileSync(`/sys/fs/cgroup/memory/${NS}/ck-flags/memory.limit_in_bytes`, "utf8").trim(), "67108864");
      const cpu = `/sys/fs/cgroup/cpu/${NS}/ck-flags`;
      assert.deepEqual(["cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares"].map((f) => readFileSync(`${cpu}/${f}`, "utf8").trim()), ["50000", "100000", "512"]);
    } else {
      assert.match(readFileSync(`/proc/${pid}/cgroup`, "utf8"), /^0::/m, "a cgroup v2 host");
    }
    const spec = JSON.parse(Buffer.from((await api.call("containers", "Get", { id: "ck-flags" })).container.spec.value).toString("utf8"));
    assert.deepEqual([spec.annotations, spec.root.readonly], [{ "org.example/a": "b" }, true]);
    await api.call("tasks", "Kill", { container_id: "ck-flags", signal: 9 });
    await api.call("tasks", "Wait", { container_id: "ck-flags" });
    await api.call("tasks", "Delete", { container_id: "ck-flags" });
    assert.equal((await ctr(["containers", "rm", "ck-flags"])).code, 0);
    // The process's own view, in the foreground: the env file's, then --env's; the root read-only.
    r = await ck(["run", "--rm", "--read-only", "--env-file", envFile, "--env", "BOTH=flag", ref, "ck-flags2", "--", "sh", "-c", "echo $FROM_FILE $BOTH; echo x > /written || echo read-only"]);
    assert.equal(r.stdout, "1 flag\nread-only\n", r.stderr);

    // --privileged as ctr's: the same capabilities, nothing masked, the host's devices.
    const privProbe = "cat /proc/self/status; ls /dev; cat /proc/kcore > /dev/null 2>&1 && echo kcore-readable; echo end";
    const privCtr = await ctr(["run", "--rm", "--privileged", ref, "t-priv", "sh", "-c", privProbe], "");
    const privCk = await ck(["run", "--rm", "--privileged", ref, "ck-priv", "--", "sh", "-c", privProbe]);
    assert.equal(privCk.code, 0, privCk.stderr);
    const privFields = (out: string) => out.split("\n").filter((l) => /^Cap(Prm|Eff|Bnd)|^Seccomp:|^[a-z0-9-]+$/.test(l)).join("\n");
    assert.equal(privFields(privCk.stdout), privFields(privCtr.stdout));
    assert.match(privCk.stdout, /^null$/m);
    assert.ok(privCk.stdout.split("\n").length > viaCk.stdout.split("\n").length, "more to see than an unprivileged container");

    // Bad values: InvalidArgument naming the flag, nothing made.
    for (const [args, re] of [
      [["--cap-add", "SYS_ADMIN"], /--cap-add "SYS_ADMIN": capabilities are named with the CAP_ prefix/],
      [["--cpus", "0.001"], /--cpus "0.001": want a number of CPUs from 0.01/],
      [["--cpu-shares", "1.5"], /--cpu-shares "1.5": want a whole number from 2 to 262144/],
      [["--memory-limit", "lots"], /--memory-limit "lots": want a whole number/],
      [["--with-ns", "pid"], /--with-ns "pid": want TYPE:PATH/],
      [["--with-ns", "pid:proc/1/ns/pid"], /absolute path/],
      [["--with-ns", "disk:/x"], /--with-ns "disk:\/x": "disk" is not a namespace type/],
      [["--annotation", "=v"], /--annotation "=v": want key=value/],
      [["--env-file", "/no/such/env"], /--env-file "\/no\/such\/env": .*no such file or directory/],
    ] as const) {
      r = await ck(["run", ...args, ref, "ck-bad-flag", "--", "true"]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, re);
      assert.match(r.stderr, /invalid argument/);
    }
    await rejectsClass(api.call("containers", "Get", { id: "ck-bad-flag" }), "NotFound");
    await rejectsClass(api.call("snapshots", "Stat", { snapshotter: "overlayfs", key: "ck-bad-flag" }), "NotFound");
  });

  test("ck containers create makes the container ctr containers create makes: the image's config, labels and stop signal, the flags; the task then starts; ck tasks kill sends the stop signal", async () => {
    const ck = (args: string[]) => runNode(CK, ["--address", daemon.address, "-n", NS, ...args]);
    // An image with a config of its own (umoci config): Env, a label, STOPSIGNAL; and a label on its record.
    const img = await buildImage({
      host: registry.host,
      repo: "tasks/configured",
      tag: "v1",
      layers: [Object.fromEntries([["bin/busybox", readFileSync("/bin/busybox")], ...["sh", "env", "sleep", "cat"].map((c) => [`bin/${c}`, { symlink: "busybox" }])])],
      config: ["--config.env", "PATH=/bin", "--config.env", "FOO=img", "--config.env", "KEEP=img", "--config.label", "org.example=cfg", "--config.stopsignal", "SIGQUIT", "--config.cmd", "sleep", "--config.cmd", "600"],
    });
    // Pulled, not unpacked: create unpacks it first, as ctr's does.
    let r = await ctr(["content", "fetch", "--plain-http", img.reference]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await ctr(["images", "label", img.reference, "img.label=rec"])).code, 0);
    const flags = ["--env", "BAR=flag", "--env", "KEEP", "--label", "mine", "--label", "org.example=cli", "--device", "/dev/null", "--cpu-quota", "20000", "--cpu-period", "100000", "-t"];
    r = await ck(["containers", "create", ...flags, img.reference, "ck-cc"]);
    assert.equal(r.code, 0, r.stderr);
    r = await ctr(["containers", "create", ...flags, img.reference, "t-cc-ctr"]);
    assert.equal(r.code, 0, r.stderr);
    const get = async (id: string) => {
      const c = (await api.call("containers", "Get", { id })).container;
      return { labels: c.labels, snapshotter: c.snapshotter, key: c.snapshot_key, spec: JSON.parse(Buffer.from(c.spec.value).toString("utf8")) };
    };
    const [mine, theirs] = [await get("ck-cc"), await get("t-cc-ctr")];
    assert.deepEqual(mine.labels, { "org.example": "cli", "img.label": "rec", mine: "true", "io.containerd.image.config.stop-signal": "SIGQUIT" });
    assert.deepEqual(mine.labels, theirs.labels);
    assert.deepEqual([mine.snapshotter, mine.key], [theirs.snapshotter, "ck-cc"]);
    // The spec: the same but for what names the container and the console's size (ctr sends none here, with no terminal of its own).
    const comparable = (s: any) => ({ ...s, linux: { ...s.linux, cgroupsPath: undefined }, process: { ...s.process, consoleSize: undefined } });
    assert.deepEqual(comparable(mine.spec), comparable(theirs.spec));
    assert.deepEqual(mine.spec.process.env, ["PATH=/bin", "FOO=img", "KEEP=img", "BAR=flag", "TERM=xterm"]);
    assert.deepEqual(mine.spec.process.args, ["sleep", "600"]);
    assert.equal(mine.spec.linux.cgroupsPath, `/${NS}/ck-cc`);
    assert.equal((await ck(["containers", "rm", "ck-cc"])).code, 0);
    assert.equal((await ctr(["containers", "rm", "t-cc-ctr"])).code, 0);
    // A container's task starts (its rootfs the snapshot create prepared), and a kill without
    // -s sends the image's stop signal.
    // (A shell that handles SIGQUIT: a container's init ignores signals it has no handler for.)
    r = await ck(["containers", "create", img.reference, "ck-cc2", "--", "sh", "-c", "trap 'exit 42' QUIT; while :; do sleep 1; done"]);
    assert.equal(r.code, 0, r.stderr);
    r = await ck(["tasks", "start", "-d", "ck-cc2"]);
    assert.equal(r.code, 0, r.stderr);
    const waited = api.call("tasks", "Wait", { container_id: "ck-cc2" });
    r = await ck(["tasks", "kill", "ck-cc2"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await waited).exit_status, 42, "SIGQUIT, the image's STOPSIGNAL, trapped");
    assert.equal((await ck(["containers", "rm", "ck-cc2"])).code, 0);
    // Bad flags are refused before anything is made.
    for (const [args, re] of [
      [["--device", "/etc/hostname"], /--device "\/etc\/hostname": not a device node/],
      [["--cpu-quota", "x"], /--cpu-quota "x"/],
      [["--cpus", "1", "--cpu-quota", "1000"], /--cpus and --cpu-quota/],
      [["--label", "=x"], /--label "=x"/],
    ] as const) {
      r = await ck(["containers", "create", ...args, img.reference, "ck-cc-bad"]);
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, re);
    }
    assert.equal((await ck(["containers", "create", "no.such/image:1", "ck-cc-bad"])).code, 1);
    await rejectsClass(api.call("containers", "Get", { id: "ck-cc-bad" }), "NotFound");
    await rejectsClass(api.call("snapshots", "Stat", { snapshotter: "overlayfs", key: "ck-cc-bad" }), "NotFound");
  });

  test("ck tasks: start in the foreground (stdio, exit status), start -d, ls, ps, kill, rm; ck run", async () => {
    const ck = (args: string[], input?: string) => runNode(CK, ["--address", daemon.address, "-n", NS, ...args], {}, input);
    let r = await ctr(["containers", "create", ref, "ck-fg", "--", "sh", "-c", "cat; echo to stderr >&2; exit 5"]);
    assert.equal(r.code, 0, r.stderr);
    r = await ck(["tasks", "start", "ck-fg"], "through ck's stdin\n");
    assert.deepEqual([r.code, r.stdout, r.stderr], [5, "through ck's stdin\n", "to stderr\n"]);
    await rejectsClass(api.call("tasks", "Get", { container_id: "ck-fg" }), "NotFound");

    r = await ctr(["containers", "create", ref, "ck-bg", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    r = await ck(["tasks", "start", "-d", "ck-bg"]);
    assert.equal(r.code, 0, r.stderr);
    const pid = Number(r.stdout.trim());
    assert.ok(pid > 0 && existsSync(`/proc/${pid}`), r.stdout);
    r = await ck(["tasks", "ls"]);
    assert.match(r.stdout, new RegExp(`^TASK +PID +STATUS\n(.*\n)*ck-bg +${pid} +RUNNING\n`, "m"));
    r = await ck(["tasks", "ps", "ck-bg"]);
    assert.match(r.stdout, new RegExp(`^PID +INFO\n(.*\n)*${pid} +-\n`), r.stdout);
    r = await ck(["tasks", "metrics", "ck-bg"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ID +TIMESTAMP\nck-bg +\d{4}-\d\d-\d\dT[\d:.]+Z\n\nMETRIC +VALUE\n/);
    assert.match(r.stdout, /^pids\.current +[1-9]\d*$/m);
    assert.match(r.stdout, /^memory\.usage_in_bytes +[1-9]\d*$/m);
    r = await ck(["tasks", "metrics", "--format", "json", "ck-bg"]);
    assert.ok(JSON.parse(r.stdout).pids.current >= 1, r.stdout);
    r = await ck(["tasks", "metrics", "--format", "xml", "ck-bg"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--format xml: table or json/);
    r = await ck(["tasks", "metrics", "no-such-task"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /task "no-such-task": no metrics/);
    r = await ck(["tasks", "exec", "--exec-id", "ce1", "ck-bg", "--", "sh", "-c", "cat; echo exec err >&2; exit 6"], "into the exec\n");
    assert.deepEqual([r.code, r.stdout, r.stderr], [6, "into the exec\n", "exec err\n"]);
    await rejectsClass(api.call("tasks", "Get", { container_id: "ck-bg", exec_id: "ce1" }), "NotFound");
    r = await ck(["tasks", "exec", "ck-bg", "true"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--exec-id/);
    // ck tasks kill --exec-id, as ctr's: one exec process signalled, the task's init left running.
    r = await ck(["tasks", "exec", "-d", "--exec-id", "ce2", "ck-bg", "--", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    // ck tasks ps names the exec process, where ctr prints its ProcessDetails.
    const execPid = Number(r.stdout.trim());
    r = await ck(["tasks", "ps", "ck-bg"]);
    assert.match(r.stdout, new RegExp(`^${execPid} +exec ce2$`, "m"), r.stdout);
    r = await ck(["tasks", "kill", "--exec-id", "ce2", "-s", "KILL", "ck-bg"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await api.call("tasks", "Wait", { container_id: "ck-bg", exec_id: "ce2" })).exit_status, 137);
    assert.equal((await api.call("tasks", "Get", { container_id: "ck-bg" })).process.status, 2, "the init still runs");
    r = await ck(["tasks", "kill", "--exec-id", "ce2", "--all", "ck-bg"]);
    assert.deepEqual([r.code, r.stderr], [1, "ck: specify an exec-id or all; not both: invalid argument\n"]);
    r = await ck(["tasks", "kill", "--exec-id", "no-such-exec", "ck-bg"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /process does not exist no-such-exec/);
    // Started detached without stdio: nothing to attach to.
    r = await ck(["tasks", "attach", "ck-bg"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /task "ck-bg" has no stdio FIFOs to attach to/);
    r = await ck(["tasks", "kill", "-s", "KILL", "ck-bg"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await api.call("tasks", "Wait", { container_id: "ck-bg" })).exit_status, 137);
    r = await ck(["tasks", "rm", "ck-bg"]);
    assert.deepEqual([r.code, r.stderr], [0, "ck: task ck-bg exited with status 137\n"]);
    r = await ck(["tasks", "kill", "-s", "NOPE", "ck-bg"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unknown signal "NOPE"/);
    for (const id of ["ck-fg", "ck-bg"]) assert.equal((await ctr(["containers", "rm", id])).code, 0);

    // ck run: a container from the unpacked image, its task in the foreground, --rm after.
    r = await ck(["run", "--rm", ref, "ck-run", "--", "sh", "-c", "echo ran from the image; exit 2"]);
    assert.deepEqual([r.code, r.stdout], [2, "ran from the image\n"], r.stderr);
    assert.ok(!(await ctr(["containers", "ls", "-q"])).stdout.includes("ck-run"), "--rm removed the container");
    assert.ok(!(await ctr(["snapshots", "ls"])).stdout.split("\n").some((l) => l.startsWith("ck-run ")), "--rm removed the snapshot");
    r = await ck(["run", "--rm", ref, "ck-nodash", "ls", "-d", "/"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /after --/);
    // An image not unpacked for the snapshotter is unpacked first, as ctr run does; and
    // $CONTAINERD_SNAPSHOTTER is the default, as with ctr.
    const nativeSnapshots = async () => {
      let n = 0;
      for await (const m of api.stream("snapshots", "List", { snapshotter: "native" })) n += m.info?.length ?? 0;
      return n;
    };
    assert.equal(await nativeSnapshots(), 0);
    r = await runNode(CK, ["--address", daemon.address, "-n", NS, "run", "--rm", ref, "ck-native", "--", "sh", "-c", "echo native"], { CONTAINERD_SNAPSHOTTER: "native" });
    assert.deepEqual([r.code, r.stdout], [0, "native\n"], r.stderr);
    assert.equal(await nativeSnapshots(), 1, "the image's one layer, unpacked into native (the container's own removed by --rm)");
    r = await ck(["run", "--log", "/tmp/x", ref, "ck-both", "--", "true"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--log is for -d/);
    r = await ck(["run", "--rm", "-d", ref, "ck-both", "--", "true"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--rm and --detach/);
    r = await ck(["run", "-t", "--log-uri", "binary:///bin/true", ref, "ck-both", "--", "true"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--log-uri and --tty cannot be used together/);
    r = await ck(["run", "-d", "--log", "/tmp/x", "--log-uri", "binary:///bin/true", ref, "ck-both", "--", "true"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--log and --log-uri cannot be used together/);
    const left = (await ctr(["containers", "ls", "-q"])).stdout;
    assert.ok(!left.includes("ck-native") && !left.includes("ck-nodash"), "nothing created");

    // ck run -t: this terminal raw, the console at its size (ck sends it before Start; runc
    // sizes the console just after the program starts), resized with it; ck tasks exec -t
    // into it from another terminal.
    const ckArgs = [CK, "--address", daemon.address, "-n", NS];
    const t = await onTerminal(process.execPath, [...ckArgs, "run", "-t", "--rm", ref, "ck-tty", "--", "sh"], { cols: 70, rows: 20 });
    let at = await t.waitFor(/\/ # /);
    at = await t.sizeBecomes(20, 70, at);
    t.term.resize(90, 25);
    at = await t.sizeBecomes(25, 90, at);
    const e = await onTerminal(process.execPath, [...ckArgs, "tasks", "exec", "-t", "--exec-id", "ck-tty-e", "ck-tty", "--", "sh"], { cols: 44, rows: 11 });
    let eat = await e.waitFor(/\/ # /);
    eat = await e.sizeBecomes(11, 44, eat);
    e.term.write("tty; exit 9\r");
    assert.equal(await e.exited, 9, e.output());
    assert.match(e.output().slice(eat), /\n\/dev\/pts\/1\r*\n/);
    // Raw: ^C is a key for the console's program (here it interrupts the shell's sleep), not ck's signal.
    t.term.write("echo go-$((2*3)); sleep 30; echo slept\r");
    at = await t.waitFor(/\ngo-6\r*\n/, at);
    await new Promise((r) => setTimeout(r, 200));
    t.term.write("\x03");
    at = await t.waitFor(/\/ # /, at);
    t.term.write("echo A$((3+4))B; exit 8\r");
    assert.equal(await t.exited, 8, t.output());
    assert.match(t.output().slice(at), /A7B/);
    assert.doesNotMatch(t.output(), /\nslept\r*\n/, "the sleep was interrupted");
    assert.ok(!(await ctr(["containers", "ls", "-q"])).stdout.includes("ck-tty"), "--rm removed the container");
  });

  test("ck tasks rm, as ctr: every task is tried, a failure reported, the exit status 1", async () => {
    const ck = (args: string[]) => runNode(CK, ["--address", daemon.address, "-n", NS, ...args], {});
    for (const id of ["ck-rm-a", "ck-rm-b"]) {
      assert.equal((await ctr(["run", "-d", ref, id, "sleep", "600"])).code, 0);
      assert.equal((await ctr(["tasks", "kill", "-s", "KILL", id])).code, 0);
      await api.call("tasks", "Wait", { container_id: id });
    }
    const r = await ck(["tasks", "rm", "ck-rm-nope", "ck-rm-a", "ck-rm-b"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /ck-rm-nope/);
    for (const id of ["ck-rm-a", "ck-rm-b"]) {
      await rejectsClass(api.call("tasks", "Get", { container_id: id }), "NotFound");
      assert.equal((await ctr(["containers", "rm", id])).code, 0);
    }
  });

  test("ck containers rm, as ctr: a stopped task is deleted with its container; a running one is refused and kept", async () => {
    const ck = (args: string[]) => runNode(CK, ["--address", daemon.address, "-n", NS, ...args], {});
    assert.equal((await ctr(["run", "-d", ref, "ck-crm-stopped", "sleep", "600"])).code, 0);
    assert.equal((await ctr(["tasks", "kill", "-s", "KILL", "ck-crm-stopped"])).code, 0);
    await api.call("tasks", "Wait", { container_id: "ck-crm-stopped" });
    assert.equal((await ctr(["run", "-d", ref, "ck-crm-running", "sleep", "600"])).code, 0);
    let r = await ck(["containers", "rm", "ck-crm-running", "ck-crm-stopped"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /"ck-crm-running": cannot delete a non stopped container: running/);
    await rejectsClass(api.call("tasks", "Get", { container_id: "ck-crm-stopped" }), "NotFound");
    await rejectsClass(api.call("containers", "Get", { id: "ck-crm-stopped" }), "NotFound");
    assert.equal((await api.call("tasks", "Get", { container_id: "ck-crm-running" })).process.status, 2, "still RUNNING");
    assert.equal((await ctr(["tasks", "kill", "-s", "KILL", "ck-crm-running"])).code, 0);
    await api.call("tasks", "Wait", { container_id: "ck-crm-running" });
    r = await ck(["containers", "rm", "ck-crm-running"]);
    assert.equal(r.code, 0, r.stderr);
    await rejectsClass(api.call("containers", "Get", { id: "ck-crm-running" }), "NotFound");
  });

  test("runtime options: ctr run --runc-binary and --runc-systemd-cgroup reach runc; other runtimes and option types are refused", async () => {
    // A runc that notes how it is called, then is runc.
    const calls = join(daemon.root, "runc-calls.log");
    const wrapper = join(daemon.root, "runc-wrapper");
    writeFileSync(wrapper, `#!/bin/sh\necho "$*" >> ${calls}\nexec runc "$@"\n`, { mode: 0o755 });
    let r = await ctr(["run", "--rm", "--runc-binary", wrapper, ref, "t-wrap", "sh", "-c", "echo through the wrapper"], "");
    assert.deepEqual([r.code, r.stdout], [0, "through the wrapper\n"], r.stderr);
    let seen = readFileSync(calls, "utf8");
    // A started init's runc logs to its bundle (it outlives ckd's pipes).
    assert.match(seen, new RegExp(`^--log ${daemon.root}/tasks/${NS}/t-wrap/runc\\.log --log-format json --root ${daemon.root}/runc/${NS} run --detach --bundle \\S+ --pid-file \\S+ t-wrap$`, "m"));
    // Its end: the container kept (run --keep) with its cgroup (with a pid namespace of its
    // own, nothing is left in it to kill); deleted with the task.
    assert.match(seen, /^--root \S+ state t-wrap\n--root \S+ delete --force t-wrap$/m);
    // In the host's pid namespace, what the init left is killed as it ends (before its exit
    // is recorded), as containerd's shim kills it; the task's deletion comes later.
    const leftFile = join(daemon.root, "t-hostpid.out");
    r = await ctr(["containers", "create", ref, "t-hostpid", "--", "sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"]);
    assert.equal(r.code, 0, r.stderr);
    const hostPid = (await api.call("containers", "Get", { id: "t-hostpid" })).container;
    const hostSpec = JSON.parse(Buffer.from(hostPid.spec.value).toString("utf8"));
    hostSpec.linux.namespaces = hostSpec.linux.namespaces.filter((n: { type: string }) => n.type !== "pid");
    await api.call("containers", "Update", { container: { id: "t-hostpid", spec: { type_url: hostPid.spec.type_url, value: Buffer.from(JSON.stringify(hostSpec)) } }, update_mask: { paths: ["spec"] } });
    r = await ctr(["tasks", "start", "-d", "--log-uri", `file://${leftFile}`, "t-hostpid"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-hostpid" })).exit_status, 0);
    const leftPid = Number(readFileSync(leftFile, "utf8").trim());
    assert.ok(leftPid > 0, readFileSync(leftFile, "utf8"));
    const sleeping = () => existsSync(`/proc/${leftPid}`) && readFileSync(`/proc/${leftPid}/cmdline`, "utf8").startsWith("sleep");
    for (const until = Date.now() + 5000; sleeping() && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
    assert.ok(!sleeping(), `the sleep the init left (pid ${leftPid}) was killed`);
    assert.equal((await ctr(["tasks", "rm", "t-hostpid"])).code, 0);
    assert.equal((await ctr(["containers", "rm", "t-hostpid"])).code, 0);

    // A console's init runs runc in the foreground with --keep where the runtime has it; one
    // without (runc before 1.1, runsc) runs as before: ckd asks its help once and leaves the
    // flag out.
    const oldRunc = join(daemon.root, "runc-without-keep");
    writeFileSync(
      oldRunc,
      `#!/bin/sh\nif [ "$1" = run ] && [ "$2" = --help ]; then runc run --help | grep -v -- --keep; exit 0; fi\nfor a; do [ "$a" = --keep ] && { echo "flag provided but not defined: -keep" >&2; exit 1; }; done\nexec runc "$@"\n`,
      { mode: 0o755 },
    );
    const noKeep = await onTerminal(CTR, ["--address", daemon.address, "--namespace", NS, "run", "-t", "--rm", "--runc-binary", oldRunc, ref, "t-nokeep", "sh", "-c", "echo without keep"], { cols: 80, rows: 24 });
    assert.equal(await noKeep.exited, 0, noKeep.output());
    assert.match(noKeep.output(), /without keep/);
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-nokeep`), "no bundle left");

    // The cgroup driver: runc is told (whether systemd runs here decides the rest).
    r = await ctr(["run", "--rm", "--runc-binary", wrapper, "--runc-systemd-cgroup", "--cgroup", "system.slice:ck:t-sd", ref, "t-sd", "true"], "");
    seen = readFileSync(calls, "utf8");
    assert.match(seen, /--systemd-cgroup run --detach --bundle \S+ --pid-file \S+ t-sd$/m);
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-sd`), `no bundle left (ctr said ${r.code}: ${r.stderr})`);

    r = await ctr(["run", "--rm", "--runtime", "io.containerd.kata.v2", ref, "t-kata", "true"], "");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /runtime "io\.containerd\.kata\.v2": ck runs tasks on runc only/);
    r = await ctr(["run", "--rm", "--runc-binary", "/no/such/runc", ref, "t-norunc", "true"], "");
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /runtime\.options\.binary_name "\/no\/such\/runc" is not an executable here/);
    for (const id of ["t-kata", "t-norunc", "t-sd"]) assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/${id}`), `${id}: no bundle`);

    // A Create's own options take the place of the container's (as containerd's shim takes
    // them): here the wrapper, no pivot_root, no new keyring.
    r = await ctr(["containers", "create", ref, "t-topts", "--", "sh", "-c", "echo task options"]);
    assert.equal(r.code, 0, r.stderr);
    const toptsMounts = (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-topts" })).mounts;
    const taskOptions = { type_url: "containerd.runc.v1.Options", value: api.protos.encode("containerd.runc.v1.Options", { binary_name: wrapper, no_pivot_root: true, no_new_keyring: true }) };
    await api.call("tasks", "Create", { container_id: "t-topts", rootfs: toptsMounts, options: taskOptions });
    await api.call("tasks", "Start", { container_id: "t-topts" });
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-topts" })).exit_status, 0);
    await api.call("tasks", "Delete", { container_id: "t-topts" });
    assert.equal((await ctr(["containers", "rm", "t-topts"])).code, 0);
    assert.match(readFileSync(calls, "utf8"), /^--log \S+ --log-format json --root \S+ run --detach --no-pivot --no-new-keyring --bundle \S+ --pid-file \S+ t-topts$/m);
    r = await ctr(["run", "--rm", "--no-pivot", ref, "t-nopivot", "sh", "-c", "echo without pivot_root"], "");
    assert.deepEqual([r.code, r.stdout], [0, "without pivot_root\n"], r.stderr);
    await rejectsClass(
      api.call("tasks", "Create", { container_id: "t-nope", options: { type_url: "containerd.runc.v1.Options", value: Buffer.from([0xff, 0xff]) } }),
      "NotFound",
      /container "t-nope"/,
    );
    // Options that cannot be used: refused before anything is made or appended.
    r = await ctr(["containers", "create", ref, "t-badopts", "true"]);
    assert.equal(r.code, 0, r.stderr);
    const badOptsSeq = await log.lastSeq();
    const optionsOf = (o: object) => ({ type_url: "containerd.runc.v1.Options", value: api.protos.encode("containerd.runc.v1.Options", o) });
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-badopts", options: optionsOf({ root: "relative/root" }) }), "InvalidArgument", /options\.root "relative\/root" must be absolute/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-badopts", options: { type_url: "containerd.runc.v1.Options", value: Buffer.from([0x08, 0xff]) } }), "InvalidArgument", /options: not a containerd\.runc\.v1\.Options/);
    assert.equal(await log.lastSeq(), badOptsSeq, "a refused Create appended to the log");
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-badopts`), "no bundle");
    assert.equal((await ctr(["containers", "rm", "t-badopts"])).code, 0);

    // Over the API: options of another type than runc's.
    r = await ctr(["containers", "create", ref, "t-opts", "true"]);
    assert.equal(r.code, 0, r.stderr);
    const made = (await api.call("containers", "Get", { id: "t-opts" })).container;
    await api.call("containers", "Delete", { id: "t-opts" });
    await api.call("containers", "Create", { container: { ...made, runtime: { name: "io.containerd.runc.v2", options: { type_url: "example.com/Other", value: Buffer.from([8, 1]) } } } });
    const seq = await log.lastSeq();
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-opts" }), "InvalidArgument", /runtime\.options are example\.com\/Other, not containerd\.runc\.v1\.Options/);
    assert.equal(await log.lastSeq(), seq, "a refused Create appended to the log");
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-opts`), "no bundle");
    await api.call("containers", "Delete", { id: "t-opts" });
    // Its snapshot: removed here, or already by a garbage collection the deletes started.
    await api.call("snapshots", "Remove", { snapshotter: "overlayfs", key: "t-opts" }).catch((err) => assert.match(String(err.message), /not found/i));
  });

  test("ctr tasks attach and ck tasks attach: a detached task's output, read again", async () => {
    let r = await ctr(["run", "-d", ref, "t-att", "sh", "-c", "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done"]);
    assert.equal(r.code, 0, r.stderr);
    const attach = spawn(CTR, ["--address", daemon.address, "--namespace", NS, "tasks", "attach", "t-att"], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    attach.stdout.on("data", (d) => (out += d));
    let err = "";
    attach.stderr.on("data", (d) => (err += d));
    for (const until = Date.now() + 10_000; !/tick-\d+\n(.|\n)*tick-\d+\n/.test(out) && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
    attach.kill("SIGKILL");
    assert.match(out, /tick-\d+\ntick-\d+\n/, `attach printed ${JSON.stringify(out)} ${err}`);
    // ck tasks attach: the same output, and the task's exit status as its own.
    const ckAttach = spawn(process.execPath, [CK, "--address", daemon.address, "-n", NS, "tasks", "attach", "t-att"], { stdio: ["pipe", "pipe", "pipe"] });
    let ckOut = "";
    ckAttach.stdout.on("data", (d) => (ckOut += d));
    const ckExit = new Promise<number | null>((res) => ckAttach.once("exit", (code) => res(code)));
    for (const until = Date.now() + 10_000; !/tick-\d+\n(.|\n)*tick-\d+\n/.test(ckOut) && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
    assert.match(ckOut, /tick-\d+\ntick-\d+\n/);
    const waited = api.call("tasks", "Wait", { container_id: "t-att" });
    await api.call("tasks", "Kill", { container_id: "t-att", signal: 9 });
    assert.equal((await waited).exit_status, 137);
    assert.equal(await ckExit, 137, "ck tasks attach exits with the task's status");
    r = await runNode(CK, ["--address", daemon.address, "-n", NS, "tasks", "attach", "no-such"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /task no-such not found/);
    assert.equal((await ctr(["tasks", "rm", "t-att"])).code, 0);
    assert.equal((await ctr(["containers", "rm", "t-att"])).code, 0);
  });

  test("a console's stdin is held until CloseIO, as containerd's shim holds it: ctr run -d -t leaves a shell that runs on after ctr has gone; CloseIO ends its input", async () => {
    // ctr leaves once the task started, its stdin's writer with it: the shell has not read ^D.
    const tty = await runCommand("script", ["-q", "-e", "-c", `${CTR} --address ${daemon.address} --namespace ${NS} run -d -t ${ref} t-hold-tty sh`, "/dev/null"], {}, "", 30_000);
    assert.equal(tty.code, 0, tty.stderr + tty.stdout);
    await new Promise((res) => setTimeout(res, 1000));
    assert.equal(await status("t-hold-tty"), "RUNNING", "the detached shell runs on");
    const ttyWaited = api.call("tasks", "Wait", { container_id: "t-hold-tty" });
    // CloseIO: its input ends (typed as ^D), and the shell exits.
    await api.call("tasks", "CloseIO", { container_id: "t-hold-tty", stdin: true });
    assert.equal((await ttyWaited).exit_status, 0);
    assert.equal((await ctr(["tasks", "rm", "t-hold-tty"])).code, 0);
    assert.equal((await ctr(["containers", "rm", "t-hold-tty"])).code, 0);
  });

  test("an exec that leaves a background process holding its output ends when it ends (its keeper a subreaper, as containerd's shim), not when the output's last holder lets go", async () => {
    const r = await ctr(["run", "-d", ref, "t-bgexec", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    const out = join(daemon.root, "t-bgexec.out");
    writeFileSync(out, "");
    const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process", value: Buffer.from(JSON.stringify({ args: ["sh", "-c", "sleep 600 & echo started; exit 4"], cwd: "/", env: ["PATH=/bin"] })) };
    await api.call("tasks", "Exec", { container_id: "t-bgexec", exec_id: "bg", spec, stdout: out, stderr: out });
    const waited = api.call("tasks", "Wait", { container_id: "t-bgexec", exec_id: "bg" });
    await api.call("tasks", "Start", { container_id: "t-bgexec", exec_id: "bg" });
    const exit = await Promise.race([waited, new Promise((res) => setTimeout(() => res("still running after 15 s"), 15_000))]);
    assert.equal((exit as { exit_status?: number }).exit_status, 4, JSON.stringify(exit));
    assert.equal(readFileSync(out, "utf8"), "started\n");
    // The sleep it left runs on in the container until the task ends.
    const ps = await ctr(["tasks", "ps", "t-bgexec"]);
    assert.equal(ps.stdout.trim().split("\n").length, 3, ps.stdout);
    await api.call("tasks", "DeleteProcess", { container_id: "t-bgexec", exec_id: "bg" });
    // The real client too: ctr waits for the end of the exec's output after its exit, which
    // comes once the keeper lets the client's FIFOs go (at most 2 s after the exit), not when
    // the sleep that still holds the output's pipe ends.
    const viaCtr = await runCommand(CTR, ["--address", daemon.address, "--namespace", NS, "tasks", "exec", "--exec-id", "bg2", "t-bgexec", "sh", "-c", "sleep 600 & echo started2; exit 5"], {}, "", 30_000);
    assert.equal(viaCtr.code, 5, `ctr tasks exec: ${viaCtr.stderr} (-1: still waiting after 30 s)`);
    assert.equal(viaCtr.stdout, "started2\n");
    // Through the keeper's pipes, more output than a pipe holds arrives whole and in order.
    const big = await ctr(["tasks", "exec", "--exec-id", "big", "t-bgexec", "sh", "-c", "seq 1 50000; seq 1 20000 >&2"], "");
    assert.equal(big.code, 0, big.stderr.slice(0, 500));
    assert.equal(big.stdout, Array.from({ length: 50000 }, (_, i) => `${i + 1}\n`).join(""));
    assert.equal(big.stderr, Array.from({ length: 20000 }, (_, i) => `${i + 1}\n`).join(""));
    // stdout and stderr the same FIFO: one pipe for both, so their writes keep their order.
    const fifo = join(daemon.root, "t-bgexec.fifo");
    execFileSync("mkfifo", [fifo]);
    const reader = runCommand("cat", [fifo], {}, undefined, 30_000);
    // (A sleep left holding them: the keeper copies on for 2 s after sh's end.)
    const both = { ...spec, value: Buffer.from(JSON.stringify({ args: ["sh", "-c", "sleep 600 & echo one; echo two >&2; echo three; echo four >&2"], cwd: "/", env: ["PATH=/bin"] })) };
    await api.call("tasks", "Exec", { container_id: "t-bgexec", exec_id: "same", spec: both, stdout: fifo, stderr: fifo });
    const sameEnd = api.call("tasks", "Wait", { container_id: "t-bgexec", exec_id: "same" });
    await api.call("tasks", "Start", { container_id: "t-bgexec", exec_id: "same" });
    const sameExit = await sameEnd;
    const answeredAt = Date.now();
    assert.equal(sameExit.exit_status, 0);
    assert.equal((await reader).stdout, "one\ntwo\nthree\nfour\n");
    // The time recorded is sh's end, not the keeper's (2 s later, once it let the output go).
    const endedAt = Number(sameExit.exited_at.seconds) * 1000 + Math.floor(sameExit.exited_at.nanos / 1e6);
    assert.ok(answeredAt - endedAt >= 1000, `exited_at ${new Date(endedAt).toISOString()}, answered ${new Date(answeredAt).toISOString()}`);
    await api.call("tasks", "DeleteProcess", { container_id: "t-bgexec", exec_id: "same" });
    // Output nobody reads (ctr exec -d has gone) holds the process back as a full FIFO would,
    // and keeps neither a kill nor its recorded end from coming.
    const detached = await ctr(["tasks", "exec", "-d", "--exec-id", "unread", "t-bgexec", "sh", "-c", "seq 1 200000; sleep 600"]);
    assert.equal(detached.code, 0, detached.stderr);
    await new Promise((res) => setTimeout(res, 1000));
    assert.equal((await api.call("tasks", "Get", { container_id: "t-bgexec", exec_id: "unread" })).process.status, 2, "RUNNING");
    const unreadEnd = api.call("tasks", "Wait", { container_id: "t-bgexec", exec_id: "unread" });
    await api.call("tasks", "Kill", { container_id: "t-bgexec", exec_id: "unread", signal: 9 });
    const unreadExit = await Promise.race([unreadEnd, new Promise((res) => setTimeout(() => res("still running after 20 s"), 20_000))]);
    assert.equal((unreadExit as { exit_status?: number }).exit_status, 137, JSON.stringify(unreadExit));
    await api.call("tasks", "DeleteProcess", { container_id: "t-bgexec", exec_id: "unread" });
    const ended = api.call("tasks", "Wait", { container_id: "t-bgexec" });
    await api.call("tasks", "Kill", { container_id: "t-bgexec", signal: 9 });
    assert.equal((await ended).exit_status, 137);
    assert.equal((await ctr(["tasks", "rm", "t-bgexec"])).code, 0);
    assert.equal((await ctr(["containers", "rm", "t-bgexec"])).code, 0);
  });

  test("a task whose output nobody reads (ctr run -d, more than its FIFO holds) ends when killed: recorded as stopped, deleted", async () => {
    const chatty = "i=0; while [ $i -lt 20000 ]; do echo line-$i-of-output-that-nobody-reads; i=$((i+1)); done; sleep 600";
    const r = await ctr(["run", "-d", ref, "t-unread", "sh", "-c", chatty]);
    assert.equal(r.code, 0, r.stderr);
    // ctr has gone: the FIFO fills, runc's copy of the output waits on it, the shell on runc.
    await new Promise((res) => setTimeout(res, 1000));
    assert.equal(await status("t-unread"), "RUNNING");
    const waited = api.call("tasks", "Wait", { container_id: "t-unread" });
    await api.call("tasks", "Kill", { container_id: "t-unread", signal: 9 });
    const exit = await Promise.race([waited, new Promise((res) => setTimeout(() => res("still running after 20 s"), 20_000))]);
    assert.equal((exit as { exit_status?: number }).exit_status, 137, JSON.stringify(exit));
    assert.equal(await status("t-unread"), "STOPPED");
    assert.equal((await ctr(["tasks", "rm", "t-unread"])).code, 0);
    assert.equal((await ctr(["containers", "rm", "t-unread"])).code, 0);
  });

  test("ctr run --log-uri binary://: a logging binary gets the process's stdout and stderr (fds 3, 4), its id and namespace, the URI's arguments; ended at the deletion; an exec's too", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ck-logger-"));
    const logger = join(dir, "logger.sh");
    // Ready (fd 5 closed) before its readers start, so that they do not hold it open.
    writeFileSync(
      logger,
      `#!/bin/sh
d=${dir}/$CONTAINER_ID
exec 5>&-
/bin/mkdir -p "$d"
echo "$CONTAINER_NAMESPACE $CONTAINER_ID $#:$*" > "$d/args"
/usr/bin/env > "$d/env"
/bin/pwd > "$d/cwd"
echo "a logger's own file" > ./written-by-the-logger
trap '/bin/echo term > "$d/term"; exit 0' TERM
/bin/cat <&3 > "$d/stdout" &
/bin/cat <&4 > "$d/stderr" &
wait
[ "$1" = hold ] && while :; do /bin/sleep 0.1; done
exit 0
`,
      { mode: 0o755 },
    );
    const settled = async (file: string, want: string) => {
      for (const until = Date.now() + 10_000; (existsSync(file) ? readFileSync(file, "utf8") : "") !== want && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
      return existsSync(file) ? readFileSync(file, "utf8") : undefined;
    };
    try {
      let r = await ctr(["run", "--log-uri", `binary://${logger}?mode=plain`, ref, "t-log", "sh", "-c", "echo to-out; echo to-err >&2; exit 3"]);
      assert.equal(r.code, 3, r.stderr);
      assert.equal(await settled(join(dir, "t-log", "stdout"), "to-out\n"), "to-out\n");
      assert.equal(await settled(join(dir, "t-log", "stderr"), "to-err\n"), "to-err\n");
      assert.equal(readFileSync(join(dir, "t-log", "args"), "utf8"), `${NS} t-log 2:mode plain\n`);
      const env = readFileSync(join(dir, "t-log", "env"), "utf8");
      assert.match(env, /^CONTAINER_ID=t-log$/m);
      assert.match(env, new RegExp(`^CONTAINER_NAMESPACE=${NS}$`, "m"));
      assert.doesNotMatch(env, /^PATH=/m, "nothing of ckd's environment");
      assert.equal((await ctr(["containers", "rm", "t-log"])).code, 0);

      // One that runs on past its pipes' end is ended (SIGTERM) when its process is deleted.
      r = await ctr(["run", "-d", "--log-uri", `binary://${logger}?hold=`, ref, "t-log-hold", "sh", "-c", "echo held; sleep 600"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await settled(join(dir, "t-log-hold", "stdout"), "held\n"), "held\n");
      assert.equal(readFileSync(join(dir, "t-log-hold", "args"), "utf8"), `${NS} t-log-hold 2:hold \n`);
      // An exec's logger: its id is the exec's, as containerd's shim names it.
      r = await ctr(["tasks", "exec", "--exec-id", "e-log", "--log-uri", `binary://${logger}?mode=exec`, "t-log-hold", "sh", "-c", "echo exec-out; echo exec-err >&2; exit 2"]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(await settled(join(dir, "e-log", "stdout"), "exec-out\n"), "exec-out\n");
      assert.equal(await settled(join(dir, "e-log", "stderr"), "exec-err\n"), "exec-err\n");
      assert.equal(readFileSync(join(dir, "e-log", "args"), "utf8"), `${NS} e-log 2:mode exec\n`);
      const holder = Number(readFileSync(`${daemon.root}/tasks/${NS}/t-log-hold/logger.pid`, "utf8").split(" ")[0]);
      assert.ok(existsSync(`/proc/${holder}`));
      await api.call("tasks", "Kill", { container_id: "t-log-hold", signal: 9 });
      assert.equal((await api.call("tasks", "Wait", { container_id: "t-log-hold" })).exit_status, 137);
      assert.ok(!existsSync(join(dir, "t-log-hold", "term")), "not ended before the deletion");
      r = await ctr(["tasks", "rm", "t-log-hold"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(readFileSync(join(dir, "t-log-hold", "term"), "utf8"), "term\n", "SIGTERM at the deletion");
      for (const until = Date.now() + 5000; existsSync(`/proc/${holder}`) && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
      assert.ok(!existsSync(`/proc/${holder}`), "the logger ended");
      // It ran in the bundle (as containerd's shim runs it) and left a file there: the task's
      // deletion removed the bundle all the same.
      assert.equal(readFileSync(join(dir, "t-log-hold", "cwd"), "utf8").trim(), `${daemon.root}/tasks/${NS}/t-log-hold`);
      assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-log-hold`), "the bundle went, the logger's file with it");
      assert.equal((await ctr(["containers", "rm", "t-log-hold"])).code, 0);
      // ck's own: ck run --log-uri in the foreground, exiting with the task's status.
      const ckRun = await runNode(CK, ["--address", daemon.address, "-n", NS, "run", "--rm", "--log-uri", `binary://${logger}?mode=ck`, ref, "t-log-ck", "--", "sh", "-c", "echo ck-out; exit 4"]);
      assert.equal(ckRun.code, 4, ckRun.stderr);
      assert.equal(await settled(join(dir, "t-log-ck", "stdout"), "ck-out\n"), "ck-out\n");
      assert.equal(readFileSync(join(dir, "t-log-ck", "args"), "utf8"), `${NS} t-log-ck 2:mode ck\n`);
      await rejectsClass(api.call("containers", "Get", { id: "t-log-ck" }), "NotFound");

      // A file:// URI naming a FIFO nobody reads yet: held read-write (ckd never blocks on it);
      // the output waits there for a reader.
      const fifo = join(dir, "out.fifo");
      execFileSync("mkfifo", [fifo]);
      const t0 = Date.now();
      const fifoRun = await runNode(CK, ["--address", daemon.address, "-n", NS, "run", "--rm", "--log-uri", pathToFileURL(fifo).href, ref, "t-log-fifo", "--", "sh", "-c", "echo into-fifo; exit 5"]);
      assert.equal(fifoRun.code, 5, fifoRun.stderr);
      assert.ok(Date.now() - t0 < 30_000);
      assert.equal((await api.call("version", "Version", {})).revision.startsWith("ck-"), true, "ckd still answers");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("ck run: an image's named user, from the image's own /etc/passwd and /etc/group", async () => {
    const busybox = readFileSync("/bin/busybox");
    const layer = (passwd: boolean) =>
      Object.fromEntries([
        ["bin/busybox", busybox],
        ...["sh", "id", "sleep"].map((c) => [`bin/${c}`, { symlink: "busybox" }]),
        ...(passwd
          ? [
              ["etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345::/:/bin/sh\n"],
              ["etc/group", "root:x:0:\napp:x:2345:\nextra:x:777:app\n"],
            ]
          : []),
      ]);
    const named = await buildImage({ host: registry.host, repo: "tasks/user", tag: "app", layers: [layer(true)], user: "app" });
    const ghost = await buildImage({ host: registry.host, repo: "tasks/user", tag: "ghost", layers: [layer(false)], user: "ghost" });
    for (const image of [named, ghost]) assert.equal((await ctr(["images", "pull", "--plain-http", image.reference])).code, 0);
    const ck = (args: string[]) => runNode(CK, ["--address", daemon.address, "-n", NS, ...args]);
    let r = await ck(["run", "--rm", named.reference, "ck-user", "--", "sh", "-c", "id -u; id -g; id -G"]);
    assert.deepEqual([r.code, r.stdout], [0, "1234\n2345\n2345 777\n"], r.stderr);
    r = await ck(["run", "--rm", ghost.reference, "ck-ghost", "--", "true"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /image user "ghost": not in the image's \/etc\/passwd \(it has none\)/);
    assert.ok(!(await ctr(["containers", "ls", "-q"])).stdout.includes("ck-ghost"), "no container made");
    assert.ok(!(await ctr(["snapshots", "ls"])).stdout.split("\n").some((l) => l.startsWith("ck-ghost ")), "its snapshot removed");

    // ctr run's flags: --env (set; a bare KEY unsets), --cwd, --user over the image's (names
    // from its files), --mount, --net-host (the host's network devices, its name, its hosts file).
    const data = mkdtempSync(join(tmpdir(), "ck-mount-"));
    writeFileSync(join(data, "f"), "from the host\n", { mode: 0o644 });
    chmodSync(data, 0o755); // read by the container's user 1234
    const script = 'echo $FOO; echo ${BAR-unset}; pwd; id -u; id -g; read l < /data/f; echo $l; for v in $(export -p); do case $v in HOSTNAME=*) echo $v;; esac; done; n=0; while read x; do n=$((n+1)); done < /proc/net/dev; echo $n; read h < /etc/hosts; echo "$h"';
    try {
      r = await ck(["run", "--rm", "--env", "FOO=bar", "--env", "BAR=1", "--env", "BAR", "--cwd", "/etc", "--user", "app:extra", "--mount", `type=bind,src=${data},dst=/data,options=rbind:ro`, "--net-host", named.reference, "ck-flags", "--", "sh", "-c", script]);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.split("\n");
      const devices = readFileSync("/proc/net/dev", "utf8").trim().split("\n").length;
      assert.deepEqual(lines.slice(0, 7), ["bar", "unset", "/etc", "1234", "777", "from the host", `HOSTNAME='${hostname()}'`]);
      assert.deepEqual([Number(lines[7]), lines[8]], [devices, readFileSync("/etc/hosts", "utf8").split("\n")[0]], "the host's network devices and hosts file");
      // Without --net-host: a network namespace of its own (loopback alone).
      r = await ck(["run", "--rm", named.reference, "ck-noflags", "--", "sh", "-c", "n=0; while read x; do n=$((n+1)); done < /proc/net/dev; echo $n; for v in $(export -p); do case $v in HOSTNAME=*) echo $v;; esac; done"]);
      assert.deepEqual([r.code, r.stdout], [0, "3\n"], r.stderr);
      // Bad flags: refused before anything is made.
      for (const [flags, re] of [
        [["--mount", "type=bind,src=/x,target=/y"], /--mount "type=bind,src=\/x,target=\/y": mount option "target" is not supported/],
        [["--mount", "type=bind,src=/x"], /the destination must be an absolute path/],
        [["--cwd", "etc"], /--cwd "etc": must be an absolute path/],
        [["--user", "nobody"], /--user "nobody": not in the image's \/etc\/passwd/],
      ] as const) {
        r = await ck(["run", "--rm", ...flags, named.reference, "ck-badflags", "--", "true"]);
        assert.equal(r.code, 1, flags.join(" "));
        assert.match(r.stderr, re);
      }
      assert.ok(!(await ctr(["containers", "ls", "-q"])).stdout.includes("ck-badflags"), "no container made");
      // ck tasks exec --user: names from the running container's own files.
      r = await ck(["run", "-d", named.reference, "ck-exec-user", "--", "sleep", "600"]);
      assert.equal(r.code, 0, r.stderr);
      r = await ck(["tasks", "exec", "--exec-id", "eu", "--user", "root:extra", "ck-exec-user", "--", "sh", "-c", "id -u; id -g"]);
      assert.deepEqual([r.code, r.stdout], [0, "0\n777\n"], r.stderr);
      r = await ck(["tasks", "exec", "--exec-id", "eu2", "--user", "nobody", "ck-exec-user", "--", "true"]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /--user "nobody": not in the image's \/etc\/passwd/);
      await rejectsClass(api.call("tasks", "Get", { container_id: "ck-exec-user", exec_id: "eu2" }), "NotFound");
      await api.call("tasks", "Kill", { container_id: "ck-exec-user", signal: 9 });
      await api.call("tasks", "Wait", { container_id: "ck-exec-user" });
      r = await ck(["tasks", "rm", "ck-exec-user"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await ctr(["containers", "rm", "ck-exec-user"])).code, 0);
    } finally {
      rmSync(data, { recursive: true, force: true });
    }
  });

  // Skipped with swap: ctr's --memory-limit leaves swap unlimited, so the hog would swap, not die.
  const swap = Number(/^SwapTotal:\s+(\d+)/m.exec(readFileSync("/proc/meminfo", "utf8"))?.[1] ?? 0);
  test("an out-of-memory kill in a task's cgroup is recorded as containerd's /tasks/oom; the task runs on", { skip: swap > 0 ? "the machine has swap" : false }, async () => {
    const from = (await log.lastSeq()) + 1;
    // A child that doubles a string until the 32 MiB limit's OOM killer takes it; the init goes on.
    let r = await ctr(["run", "-d", "--memory-limit", String(32 * 1024 * 1024), ref, "t-oom", "sh", "-c", "sh -c 'x=a; while :; do x=$x$x; done'; echo survived; sleep 600"]);
    assert.equal(r.code, 0, r.stderr);
    let oom: [string, any, number] | undefined;
    for (const until = Date.now() + 20_000; !oom && Date.now() < until; ) {
      await new Promise((res) => setTimeout(res, 200));
      oom = (await eventsSince(from)).find(([topic]) => topic === "/tasks/oom");
    }
    assert.ok(oom, "a /tasks/oom event");
    assert.equal(oom[1].container_id, "t-oom");
    assert.equal(await status("t-oom"), "RUNNING");
    await api.call("tasks", "Kill", { container_id: "t-oom", signal: 9 });
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-oom" })).exit_status, 137);
    assert.equal((await ctr(["tasks", "rm", "t-oom"])).code, 0);
    assert.equal((await ctr(["containers", "rm", "t-oom"])).code, 0);
    // Exactly one: the watch does not repeat a kill it has seen.
    assert.equal((await eventsSince(from)).filter(([topic]) => topic === "/tasks/oom").length, 1);
    // A task that ends right after the kill, before the next look: its cgroup is kept until
    // its deletion (runc run --keep), so the kill is still recorded, before its exit. Its
    // statistics can be read too once it has stopped, as from containerd's shim.
    const from2 = (await log.lastSeq()) + 1;
    r = await ctr(["run", "-d", "--memory-limit", String(32 * 1024 * 1024), ref, "t-oom2", "sh", "-c", "sh -c 'x=a; while :; do x=$x$x; done'; exit 3"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-oom2" })).exit_status, 3);
    const topics = (await eventsSince(from2)).filter(([topic, ev]) => ev.container_id === "t-oom2" && (topic === "/tasks/oom" || topic === "/tasks/exit")).map(([topic]) => topic);
    assert.deepEqual(topics, ["/tasks/oom", "/tasks/exit"]);
    r = await ctr(["tasks", "metrics", "t-oom2"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^pids\.current\s+0\s*$/m);
    assert.equal((await ctr(["tasks", "rm", "t-oom2"])).code, 0);
    assert.equal((await ctr(["containers", "rm", "t-oom2"])).code, 0);
  });

  test("ctr run --cni: ctr's own CNI setup reaches the task's network namespace by the pid ckd reports", async () => {
    // ctr (not ckd) runs the CNI plugins, on /proc/<task pid>/ns/net. All of it happens in a
    // network and mount namespace of the test's own: /etc/cni/net.d holds only the test's
    // config there (an overlay on /etc, whatever the machine's own holds hidden), libcni's
    // cache (/var/lib/cni) goes to an overlay on /var/lib, the bridge plugin makes its bridge there: the
    // machine's network and files are not touched.
    const dir = mkdtempSync(join(tmpdir(), "ck-cni-"));
    try {
      const conf = {
        cniVersion: "0.4.0",
        name: "ck-test",
        plugins: [{ type: "bridge", bridge: "ckcni0", isGateway: true, ipMasq: false, ipam: { type: "host-local", subnet: "10.99.0.0/24", dataDir: "/var/lib/cni/ck-test-ipam" } }],
      };
      writeFileSync(join(dir, "10-ck-test.conflist"), JSON.stringify(conf));
      const script = [
        "set -e",
        // The overlay's own directories on a tmpfs: /tmp may itself be an overlay.
        `mkdir ${dir}/t && mount -t tmpfs tmpfs ${dir}/t && mkdir ${dir}/t/etc ${dir}/t/etc-work ${dir}/t/lib ${dir}/t/lib-work`,
        `mount -t overlay overlay -o lowerdir=/etc,upperdir=${dir}/t/etc,workdir=${dir}/t/etc-work /etc`,
        `mount -t overlay overlay -o lowerdir=/var/lib,upperdir=${dir}/t/lib,workdir=${dir}/t/lib-work /var/lib`,
        "mkdir -p /etc/cni/net.d && rm -rf /etc/cni/net.d/*",
        `cp ${dir}/10-ck-test.conflist /etc/cni/net.d/`,
        `exec ${CTR} --address ${daemon.address} --namespace ${NS} run --cni --rm ${ref} t-cni sh -c 'ip -4 addr show eth0 && ping -c 1 -W 5 10.99.0.1'`,
      ].join("\n");
      const cniCacheBefore = existsSync("/var/lib/cni");
      const r = await runCommand("unshare", ["--mount", "--net", "--propagation", "private", "sh", "-c", script], {}, undefined, 60_000);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      // The container has the address the plugin gave it, and reaches the bridge's.
      assert.match(r.stdout, /inet 10\.99\.0\.\d+\/24/, r.stdout + r.stderr);
      assert.match(r.stdout, /1 packets transmitted, 1 packets received/, r.stdout + r.stderr);
      // The machine's own namespace never had the bridge, nor its files libcni's cache.
      assert.notEqual((await runCommand("ip", ["link", "show", "ckcni0"])).code, 0);
      if (!cniCacheBefore) assert.equal(existsSync("/var/lib/cni/results"), false, "libcni's cache was written on the machine");
      // --rm: the container is gone.
      const ls = await ctr(["containers", "ls", "-q"]);
      assert.doesNotMatch(ls.stdout, /^t-cni$/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a runc in the opt directory (where ctr install puts an image's bin/) is the one tasks run", async () => {
    const wrapper = join(daemon.root, "opt", "bin", "runc");
    const calls = join(daemon.root, "opt-runc-calls");
    const real = execFileSync("sh", ["-c", "command -v runc"], { encoding: "utf8" }).trim();
    writeFileSync(wrapper, `#!/bin/sh\necho "$*" >> ${calls}\nexec ${real} "$@"\n`, { mode: 0o755 });
    try {
      const r = await ctr(["run", "--rm", ref, "t-opt", "echo", "through opt"]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /through opt/);
      assert.match(readFileSync(calls, "utf8"), /\bt-opt\b/);
    } finally {
      rmSync(wrapper, { force: true });
    }
  });

  test("a user namespace (ctr run --uidmap/--gidmap): refused clearly while ckd's root shuts its mapped root out; then runs, execs, its bundle the mapped root group's", async () => {
    const maps = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    chmodSync(daemon.root, 0o700);
    let since = (await log.lastSeq()) + 1;
    let r = await ctr(["run", ...maps, ref, "t-userns0", "true"], "");
    assert.notEqual(r.code, 0);
    assert.ok(r.stderr.includes(`container "t-userns0" has a user namespace: its root (host uid 100000, gid 100000) cannot pass through ${daemon.root} (mode 0700)`), r.stderr);
    assert.deepEqual((await eventsSince(since)).map(([t]) => t).filter((t) => t.startsWith("/tasks/")), [], "a refused Create records no task events");
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-userns0`), "no bundle left behind");
    assert.equal((await ctr(["containers", "rm", "t-userns0"])).code, 0);

    // A root.path outside the bundle: the directories above it are what is checked.
    chmodSync(daemon.root, 0o711);
    const outside = mkdtempSync(join(tmpdir(), "ck-userns-rootfs-"));
    try {
      mkdirSync(join(outside, "rootfs"));
      assert.equal((await ctr(["containers", "create", ref, "t-userns-abs", "true"])).code, 0);
      const c = (await api.call("containers", "Get", { id: "t-userns-abs" })).container;
      const absSpec = JSON.parse(Buffer.from(c.spec.value).toString("utf8"));
      absSpec.root = { path: join(outside, "rootfs") };
      absSpec.linux.namespaces.push({ type: "user" });
      absSpec.linux.uidMappings = absSpec.linux.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
      await api.call("containers", "Update", { container: { id: "t-userns-abs", spec: { ...c.spec, value: Buffer.from(JSON.stringify(absSpec)) } }, update_mask: { paths: ["spec"] } });
      await rejectsClass(api.call("tasks", "Create", { container_id: "t-userns-abs" }), "FailedPrecondition", new RegExp(`cannot pass through ${outside} \\(mode 0700\\) to the rootfs`));
      // Searchable: past the check, runc's init reaches the rootfs itself (and, as the
      // namespace's root, cannot make /proc in this root-owned empty one).
      chmodSync(outside, 0o711);
      await rejectsClass(api.call("tasks", "Create", { container_id: "t-userns-abs" }), "Unknown", /^failed to create shim task: OCI runtime create failed: .*rootfs\/proc: permission denied/);
      assert.equal((await ctr(["containers", "rm", "t-userns-abs"])).code, 0);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }

    // As ckd makes its root (0711): the init runs as the namespace's root, host uid 100000;
    // ctr chowned the snapshot's files to the mapped ids itself.
    chmodSync(daemon.root, 0o711);
    since = (await log.lastSeq()) + 1;
    r = await ctr(["run", "--rm", ...maps, ref, "t-userns1", "sh", "-c", "id; cat /proc/self/uid_map; stat -c '%u %g' /bin/busybox; echo reopened > /dev/stdout; exit 4"], "");
    assert.equal(r.code, 4, r.stderr);
    // /dev/stdout opened anew: runc (in the foreground here) hands the namespace's root pipes it owns.
    assert.equal(r.stdout.replace(/[ \t]+/g, " "), "uid=0 gid=0 groups=0\n 0 100000 65536\n0 0\nreopened\n");
    assert.deepEqual((await eventsSince(since)).map(([t]) => t).filter((t) => t.startsWith("/tasks/")), ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);

    // On a console: the reaper takes the console runc's init made in the namespace.
    r = await runCommand("script", ["-q", "-e", "-c", `${CTR} --address ${daemon.address} --namespace ${NS} run -t --rm ${maps.join(" ")} ${ref} t-userns-tty sh -c 'stty -echo; id -u; tty; exit 2'`, "/dev/null"], {}, "", 60_000);
    assert.equal(r.code, 2, r.stderr);
    // (The NUL script(1) types at its stdin's end may be echoed, as ^@, before stty -echo ran.)
    assert.match(r.stdout, /^(\^@)?0\r+\n\/dev\/pts\/0\r+\n$/);

    r = await ctr(["run", "-d", ...maps, ref, "t-userns2", "sleep", "60"], "");
    assert.equal(r.code, 0, r.stderr);
    const bundle = statSync(`${daemon.root}/tasks/${NS}/t-userns2`);
    assert.deepEqual([bundle.mode & 0o7777, bundle.uid, bundle.gid], [0o710, 0, 100000], "the bundle: 0710, the mapped root's group");
    assert.equal(statSync(`${daemon.root}/tasks/${NS}`).mode & 0o7777, 0o711);
    const pid = Number((await api.call("tasks", "Get", { container_id: "t-userns2" })).process.pid);
    assert.match(readFileSync(`/proc/${pid}/status`, "utf8"), /^Uid:\s+100000\s/m, "the init runs as the host's uid 100000");
    r = await ctr(["tasks", "exec", "--exec-id", "x1", "t-userns2", "sh", "-c", "id -u; echo from exec >&2; exit 3"], "");
    assert.deepEqual([r.code, r.stdout, r.stderr], [3, "0\n", "from exec\n"]);
    assert.equal((await ctr(["tasks", "kill", "-s", "KILL", "t-userns2"])).code, 0);
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-userns2" })).exit_status, 137);
    assert.equal((await ctr(["tasks", "rm", "t-userns2"])).code, 0);
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-userns2`), "the bundle went with the task");
    assert.equal((await ctr(["containers", "rm", "t-userns2"])).code, 0);

    // ck run takes the same flags: the image's files re-owned once into ctr's snapshot name
    // for them, the parent of each such container's snapshot, reused while it exists.
    const ck = (args: string[]) => runNode(CK, ["--address", daemon.address, "-n", NS, ...args]);
    const snaps = async () => (await ctr(["snapshots", "ls"])).stdout.split("\n").map((l) => l.split(/\s+/)[0]!).filter(Boolean);
    const parentOf = async (key: string) => JSON.parse((await ctr(["snapshots", "info", key])).stdout).Parent as string;
    r = await ck(["run", "-d", ...maps, ref, "ck-userns0", "--", "sleep", "60"]);
    assert.equal(r.code, 0, r.stderr);
    const base = await parentOf("ck-userns0");
    assert.match(base, /^sha256:[0-9a-f]{64}-100000-100000$/);
    const script = "id; cat /proc/self/uid_map; stat -c '%u %g' /bin/busybox";
    r = await ck(["run", "-d", ...maps, ref, "ck-userns1", "--", "sh", "-c", script + "; sleep 60"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await parentOf("ck-userns1"), base, "the same re-owned snapshot");
    r = await ck(["run", "--rm", ...maps, ref, "ck-userns2", "--", "sh", "-c", script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.replace(/[ \t]+/g, " "), "uid=0 gid=0 groups=0\n 0 100000 65536\n0 0\n");
    for (const id of ["ck-userns0", "ck-userns1"]) {
      await api.call("tasks", "Kill", { container_id: id, signal: 9 });
      await api.call("tasks", "Wait", { container_id: id });
      await api.call("tasks", "Delete", { container_id: id });
      assert.equal((await ctr(["containers", "rm", id])).code, 0);
    }
    r = await ck(["run", "--rm", "--uidmap", "0:200000:65536", "--gidmap", "0:300000:65536", ref, "ck-userns3", "--", "sh", "-c", script + "; cat /proc/self/gid_map"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.replace(/[ \t]+/g, " "), "uid=0 gid=0 groups=0\n 0 200000 65536\n0 0\n 0 300000 65536\n");
    assert.ok(!(await snaps()).some((k) => k.includes("-remap")), "no -remap snapshot left");
    // Bad flags: InvalidArgument naming them, nothing made.
    r = await ck(["run", "--uidmap", "0:100000:65536", ref, "ck-userns4", "--", "true"]);
    assert.match(r.stderr, /--uidmap and --gidmap go together: invalid argument/);
    r = await ck(["run", "--uidmap", "0:100000", "--gidmap", "0:1:1", ref, "ck-userns4", "--", "true"]);
    assert.match(r.stderr, /--uidmap "0:100000": want container-id:host-id:size/);
    assert.notEqual(r.code, 0);
    await rejectsClass(api.call("containers", "Get", { id: "ck-userns4" }), "NotFound");
    assert.ok(!(await snaps()).includes("ck-userns4"), "no snapshot made");
  });

  test("a namespace's task directories (bundles, runc's state) go with the namespace", async () => {
    const other = "tasks-gone";
    const ctrIn = (args: string[]) => runCommand(CTR, ["--address", daemon.address, "--namespace", other, ...args], {}, "", 60_000);
    let r = await ctrIn(["images", "pull", "--plain-http", ref]);
    assert.equal(r.code, 0, r.stderr);
    r = await ctrIn(["run", "--rm", ref, "t-in-other", "true"]);
    assert.equal(r.code, 0, r.stderr);
    const dirs = [`${daemon.root}/tasks/${other}`, `${daemon.root}/runc/${other}`];
    assert.deepEqual(dirs.map((d) => existsSync(d)), [true, true]);
    // Not empty yet (its image): refused, naming what is left as containerd does, the directories stay.
    r = await runCommand(CTR, ["--address", daemon.address, "namespaces", "rm", other]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /namespace "tasks-gone" must be empty, but it still has images, blobs, snapshots on "overlayfs" snapshotter: failed precondition/);
    assert.deepEqual(dirs.map((d) => existsSync(d)), [true, true]);
    assert.equal((await ctrIn(["images", "rm", "--sync", ref])).code, 0);
    r = await runCommand(CTR, ["--address", daemon.address, "namespaces", "rm", other]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(dirs.map((d) => existsSync(d)), [false, false]);
  });

  test("racing requests on one task: two Starts run one process, two Deletes delete once", async () => {
    let r = await ctr(["containers", "create", ref, "t-race", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    const mounts = (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-race" })).mounts;
    await api.call("tasks", "Create", { container_id: "t-race", rootfs: mounts });
    const starts = await Promise.allSettled([0, 1].map(() => api.call("tasks", "Start", { container_id: "t-race" })));
    assert.deepEqual(starts.map((x) => x.status).sort(), ["fulfilled", "rejected"]);
    const lost = starts.find((x) => x.status === "rejected") as PromiseRejectedResult;
    assert.match(String(lost.reason?.message), /running, not created/);
    const pid = (starts.find((x) => x.status === "fulfilled") as PromiseFulfilledResult<any>).value.pid;
    assert.equal((await api.call("tasks", "Get", { container_id: "t-race" })).process.pid, pid);
    assert.ok(existsSync(`/proc/${pid}`));
    await api.call("tasks", "Kill", { container_id: "t-race", signal: 9 });
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-race" })).exit_status, 137);
    const deletes = await Promise.allSettled([0, 1].map(() => api.call("tasks", "Delete", { container_id: "t-race" })));
    assert.deepEqual(deletes.map((x) => x.status).sort(), ["fulfilled", "rejected"]);
    r = await ctr(["containers", "rm", "t-race"]);
    assert.equal(r.code, 0, r.stderr);
  });

  test("bad requests get the right class and append nothing", async () => {
    let r = await ctr(["containers", "create", ref, "t-bad", "true"]);
    assert.equal(r.code, 0, r.stderr);
    const goodSpec = (await api.call("containers", "Get", { id: "t-bad" })).container.spec;
    const before = await log.lastSeq();
    await rejectsClass(api.call("tasks", "Create", { container_id: "" }), "InvalidArgument", /container_id/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "no-such" }), "NotFound", /container "no-such"/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", terminal: true }), "InvalidArgument", /spec\.process\.terminal is false but the request's terminal is true/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", stdout: "relative/path" }), "InvalidArgument", /stdout/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: [{ type: "", source: "x" }] }), "InvalidArgument", /rootfs\[0\]\.type/);
    await rejectsClass(api.call("tasks", "Start", { container_id: "t-bad" }), "NotFound", /task t-bad not found/);
    await rejectsClass(api.call("tasks", "Delete", { container_id: "t-bad" }), "NotFound");
    await rejectsClass(api.call("tasks", "Kill", { container_id: "t-bad", signal: 15 }), "NotFound");
    await rejectsClass(api.call("tasks", "Kill", { container_id: "t-bad", signal: 99 }), "InvalidArgument", /signal 99/);
    await rejectsClass(api.call("tasks", "Pause", { container_id: "t-bad" }), "NotFound");
    await rejectsClass(api.call("tasks", "Wait", { container_id: "t-bad" }), "NotFound");
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bad", exec_id: "e" }), "InvalidArgument", /spec must be set/);
    const execSpec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process", value: Buffer.from(JSON.stringify({ args: ["true"], cwd: "/" })) };
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bad", exec_id: "e", spec: execSpec }), "NotFound", /task t-bad not found/);
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bad", exec_id: "", spec: execSpec }), "InvalidArgument", /exec_id/);
    await rejectsClass(api.call("tasks", "Start", { container_id: "t-bad", exec_id: "e" }), "NotFound", /^process does not exist e\b/);
    assert.equal(await log.lastSeq(), before, "a refused call appended to the log");
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-bad`), "no bundle left behind");

    // Created, then created again: AlreadyExists; a created task that is never started is
    // killed without a process (its exit recorded) and deleted.
    const mounts = await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-bad" });
    // Stdio that cannot be used, found once the rootfs is mounted: all of it undone.
    const plain = join(daemon.root, "plain-file");
    writeFileSync(plain, "");
    const beforeStdio = await log.lastSeq();
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts, stdin: plain }), "InvalidArgument", /not a FIFO/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts, stdout: "/no/such/dir/out" }), "InvalidArgument", /does not exist/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts, stdout: "file://%zz" }), "InvalidArgument", /file:\/\/%zz/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts, stdout: "binary:///no/such/logger" }), "FailedPrecondition", /stdout binary:\/\/\/no\/such\/logger: the logging binary \/no\/such\/logger did not start/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts, stdout: "binary://" }), "InvalidArgument", /stdout "binary:\/\/": a binary:\/\/ URI names the logging program's absolute path/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts, stdout: "binary:///x%zz" }), "InvalidArgument", /stdout "binary:\/\/\/x%zz": not a URI/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts, stdout: "binary:logger" }), "InvalidArgument", /stdout "binary:logger": an absolute FIFO or file path, or a file:\/\/ or binary:\/\/ URI/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts, stdout: "tcp://127.0.0.1:9" }), "NotImplemented", /tcp:/);
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts, checkpoint: { digest: "sha256:" + "a".repeat(64) } }), "NotImplemented", /checkpoint/);
    assert.equal(await log.lastSeq(), beforeStdio, "refused stdio appended to the log");
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-bad`), "no bundle (nor logging pipes) left behind");
    // A spec runc cannot run: refused at Create, before anything is mounted.
    for (const [spec, re] of [
      ["not json", /not runtime-spec JSON/],
      [JSON.stringify({ process: { args: [] } }), /process\.args/],
      [JSON.stringify({ process: { args: ["true"] }, Hooks: {} }), /spec key "Hooks" must be spelled as the runtime spec does/],
      [JSON.stringify({ process: { args: ["true"] }, hooks: [] }), /spec\.hooks must be an object/],
      [JSON.stringify({ process: { args: ["true"] }, hooks: { createRuntime: {} } }), /spec\.hooks\.createRuntime must be a list/],
      [JSON.stringify({ process: { args: ["true"] }, hooks: { CreateRuntime: [] } }), /spec key "CreateRuntime"/],
    ] as const) {
      await api.call("containers", "Update", { container: { id: "t-bad", spec: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from(spec) } }, update_mask: { paths: ["spec"] } });
      const seq = await log.lastSeq();
      await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts }), "InvalidArgument", re);
      assert.equal(await log.lastSeq(), seq);
    }
    // A program the image does not have (runc would find it missing only after ckd's gate):
    // Create fails as containerd's (Unknown, in its and runc's words), naming it; the held
    // init stopped, nothing appended.
    const goodJson = JSON.parse(Buffer.from(goodSpec.value).toString("utf8"));
    for (const [args, re] of [
      [["/bin/no-such"], /^failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "\/bin\/no-such": stat \/bin\/no-such: no such file or directory: unknown$/],
      [["no-such"], /exec: "no-such": executable file not found in \$PATH/],
      [["/bin"], /exec: "\/bin": permission denied/],
    ] as const) {
      const spec = { ...goodJson, process: { ...goodJson.process, args } };
      await api.call("containers", "Update", { container: { id: "t-bad", spec: { ...goodSpec, value: Buffer.from(JSON.stringify(spec)) } }, update_mask: { paths: ["spec"] } });
      const seq = await log.lastSeq();
      await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts }), "Unknown", re);
      assert.equal(await log.lastSeq(), seq);
      assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-bad`), "no bundle left behind");
      assert.equal(execFileSync("runc", ["--root", `${daemon.root}/runc/${NS}`, "list", "-q"], { encoding: "utf8" }).includes("t-bad"), false, "runc keeps no container");
    }
    // The look-up sees the held init's own mounts: a program only in a bind mount of the
    // spec's is found; with createContainer hooks (run after ckd's gate, they may put the
    // program there) there is no look-up, and runc's own failure comes at Start.
    const extra = join(daemon.root, "extra-bin");
    mkdirSync(extra, { recursive: true });
    writeFileSync(join(extra, "prog"), "#!/bin/sh\n", { mode: 0o755 });
    const withSpec = async (spec: object) =>
      api.call("containers", "Update", { container: { id: "t-bad", spec: { ...goodSpec, value: Buffer.from(JSON.stringify(spec)) } }, update_mask: { paths: ["spec"] } });
    await withSpec({ ...goodJson, process: { ...goodJson.process, args: ["/opt/extra/prog"] }, mounts: [...(goodJson.mounts ?? []), { destination: "/opt/extra", type: "bind", source: extra, options: ["rbind", "ro"] }] });
    await api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts });
    await api.call("tasks", "Delete", { container_id: "t-bad" });
    await withSpec({ ...goodJson, process: { ...goodJson.process, args: ["/no/such"] }, hooks: { createContainer: [{ path: "/bin/true" }] } });
    await api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts });
    await rejectsClass(api.call("tasks", "Start", { container_id: "t-bad" }), "Unknown", /^OCI runtime start failed: runc run t-bad failed \(exit \d+\): .*\/no\/such.*: unknown$/s);
    await api.call("tasks", "Delete", { container_id: "t-bad" });
    await api.call("containers", "Update", { container: { id: "t-bad", spec: goodSpec }, update_mask: { paths: ["spec"] } });
    const before2 = await log.lastSeq();
    await rejectsClass(api.call("tasks", "ResizePty", { container_id: "t-bad", width: 80, height: 24 }), "NotFound", /task t-bad not found/);
    await rejectsClass(api.call("tasks", "ResizePty", { container_id: "t-bad", width: 70000, height: 24 }), "InvalidArgument", /width 70000/);
    await rejectsClass(api.call("tasks", "ResizePty", { container_id: "t-bad", width: 80, height: 70000 }), "InvalidArgument", /height 70000/);
    await rejectsClass(api.call("tasks", "ResizePty", { container_id: "", width: 80, height: 24 }), "InvalidArgument", /container_id/);
    const resources = (v: unknown, type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources") => ({ type_url, value: Buffer.from(typeof v === "string" ? v : JSON.stringify(v)) });
    await rejectsClass(api.call("tasks", "Update", { container_id: "t-bad", resources: resources({ memory: { limit: 1 << 26 } }) }), "NotFound", /task t-bad not found/);
    await rejectsClass(api.call("tasks", "Update", { container_id: "t-bad", resources: resources({}, "example.com/Other") }), "InvalidArgument", /resources are example\.com\/Other/);
    await rejectsClass(api.call("tasks", "Update", { container_id: "t-bad", annotations: { a: "b" } }), "NotFound", /task t-bad not found/);
    await rejectsClass(api.call("tasks", "ResizePty", { container_id: "t-bad", exec_id: "bad/id", width: 80, height: 24 }), "InvalidArgument", /exec_id/);
    await rejectsClass(api.call("tasks", "Update", { container_id: "t-bad", resources: resources("{") }), "InvalidArgument", /not runtime-spec LinuxResources JSON/);
    await rejectsClass(api.call("tasks", "Update", { container_id: "t-bad", resources: resources("[1]") }), "InvalidArgument", /not a runtime-spec LinuxResources object/);
    for (const [method, re] of [
      ["Checkpoint", /checkpoint/],
    ] as const) {
      await rejectsClass(api.call("tasks", method, { container_id: "t-bad" }), "NotImplemented", re);
    }
    await rejectsClass(api.call("tasks", "CloseIO", { container_id: "t-bad", stdin: true }), "NotFound");
    await rejectsClass(api.call("tasks", "ListPids", { container_id: "t-bad" }), "NotFound");
    assert.equal(await log.lastSeq(), before2, "a refused call appended to the log");
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-bad`), "no bundle left behind");
    await api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts });
    const created = await api.call("tasks", "Get", { container_id: "t-bad" });
    // The init exists from Create on (as with containerd's runc create), held before its program.
    assert.equal(created.process.status, 1);
    assert.ok(created.process.pid > 0);
    assert.match(readFileSync(`/proc/${created.process.pid}/cmdline`, "utf8"), /^(\S*\/)?runc\u0000init/);
    // Its process and its cgroups, before Start.
    assert.deepEqual((await api.call("tasks", "ListPids", { container_id: "t-bad" })).processes.map((p: { pid: number }) => p.pid), [created.process.pid]);
    const createdMetrics = (await api.call("tasks", "Metrics", { filters: ["id==t-bad"] })).metrics;
    assert.equal(createdMetrics.length, 1);
    assert.equal(createdMetrics[0].id, "t-bad");
    const afterCreate = await log.lastSeq();
    await rejectsClass(api.call("tasks", "Create", { container_id: "t-bad", rootfs: mounts.mounts }), "AlreadyExists");
    await rejectsClass(api.call("containers", "Delete", { id: "t-bad" }), "FailedPrecondition", /created task: delete the task first/);
    await rejectsClass(api.call("tasks", "Resume", { container_id: "t-bad" }), "FailedPrecondition", /created, not paused/);
    await rejectsClass(api.call("tasks", "Update", { container_id: "t-bad", resources: resources({ memory: { limit: 1 << 26 } }) }), "FailedPrecondition", /is created: only a running or paused task's resources/);
    await rejectsClass(api.call("tasks", "Exec", { container_id: "t-bad", exec_id: "e", spec: execSpec }), "FailedPrecondition", /created, not running/);
    // A signal that would not end a process changes nothing of a task never started.
    for (const signal of [0, 17, 28]) await api.call("tasks", "Kill", { container_id: "t-bad", signal });
    assert.equal((await api.call("tasks", "Get", { container_id: "t-bad" })).process.status, 1);
    assert.equal(await log.lastSeq(), afterCreate);
    await api.call("tasks", "Kill", { container_id: "t-bad", signal: 15 });
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-bad" })).exit_status, 128 + 15);
    assert.ok(!existsSync(`/proc/${created.process.pid}`) || !isRunc(readFileSync(`/proc/${created.process.pid}/cmdline`, "utf8")), "the init is gone");
    await rejectsClass(api.call("tasks", "Start", { container_id: "t-bad" }), "FailedPrecondition", /stopped, not created/);
    const del = await api.call("tasks", "Delete", { container_id: "t-bad" });
    assert.equal(del.exit_status, 143);
    r = await ctr(["containers", "rm", "t-bad"]);
    assert.equal(r.code, 0, r.stderr);
  });

  test("tasks outlive ckd under their keepers: adopted after kill -9 and SIGTERM, with their real exit status; what cannot outlive it is stopped; the log replays to the same projection", async () => {
    let r = await ctr(["run", "-d", ref, "t-orphan", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    const pid = (await api.call("tasks", "Get", { container_id: "t-orphan" })).process.pid;
    // One that ends while no ckd runs (told to, below): its real exit status is recorded at the next start.
    r = await ctr(["run", "-d", ref, "t-brief", "sh", "-c", "while [ ! -e /go ]; do sleep 0.1; done; exit 7"]);
    assert.equal(r.code, 0, r.stderr);
    // One whose keeper is killed outright while no ckd runs: stopped at the next start, 255.
    r = await ctr(["run", "-d", ref, "t-gone", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    const gonePid = (await api.call("tasks", "Get", { container_id: "t-gone" })).process.pid;
    const keeperOf = (id: string) => Number(readFileSync(`${daemon.root}/tasks/${NS}/${id}/shim.pid`, "utf8").split(" ")[0]);
    // A keeper is not ended by TERM, HUP or INT sent to it (nor is its task).
    for (const sig of ["SIGTERM", "SIGHUP", "SIGINT"] as const) process.kill(keeperOf("t-gone"), sig);
    await new Promise((res) => setTimeout(res, 300));
    assert.ok(!/\) [ZX] /.test(readFileSync(`/proc/${keeperOf("t-gone")}/stat`, "utf8")), "the keeper outlived TERM, HUP and INT");
    assert.equal((await api.call("tasks", "Get", { container_id: "t-gone" })).process.status, 2);
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-gone/exit`));
    // A keeper killed outright while ckd runs: its container is stopped and the exit recorded.
    r = await ctr(["run", "-d", ref, "t-lost", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    const lostPid = (await api.call("tasks", "Get", { container_id: "t-lost" })).process.pid;
    const lostWait = api.call("tasks", "Wait", { container_id: "t-lost" });
    process.kill(keeperOf("t-lost"), "SIGKILL");
    assert.equal((await lostWait).exit_status, 137);
    for (const until = Date.now() + 10_000; existsSync(`/proc/${lostPid}`) && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
    assert.ok(!existsSync(`/proc/${lostPid}`), "the container of a lost keeper was stopped");
    assert.equal((await api.call("tasks", "Get", { container_id: "t-brief" })).process.status, 2, "t-brief runs until told");
    // One reading stdin from a FIFO of the test's: what is written while no ckd runs still
    // reaches it (its stdin is the FIFO itself, not a relay of ckd's), and its end ends it.
    r = await ctr(["containers", "create", ref, "t-stdin", "cat"]);
    assert.equal(r.code, 0, r.stderr);
    const inFifo = join(daemon.root, "t-stdin.in");
    const outFile = join(daemon.root, "t-stdin.out");
    execFileSync("mkfifo", [inFifo]);
    writeFileSync(outFile, "");
    await api.call("tasks", "Create", { container_id: "t-stdin", rootfs: (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-stdin" })).mounts, stdin: inFifo, stdout: outFile });
    const inWriter = openSync(inFifo, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    writeSync(inWriter, "before\n");
    await api.call("tasks", "Start", { container_id: "t-stdin" });
    // One with runc options of its own, whose keeper's record is lost below (as a task of an
    // older ckd has none): the next ckd stops it, with the same runc (its bundle says which).
    const calls = join(daemon.root, "orphan-runc-calls.log");
    const wrapper = join(daemon.root, "orphan-runc");
    writeFileSync(wrapper, `#!/bin/sh\necho "$*" >> ${calls}\nexec runc "$@"\n`, { mode: 0o755 });
    r = await ctr(["run", "-d", "--runc-binary", wrapper, ref, "t-orphan-w", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    const pidW = (await api.call("tasks", "Get", { container_id: "t-orphan-w" })).process.pid;
    // And one created, never started: its init held at ckd's gate (a createRuntime hook) by its runc.
    r = await ctr(["containers", "create", ref, "t-held", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    const heldMounts = (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-held" })).mounts;
    const held = (await api.call("tasks", "Create", { container_id: "t-held", rootfs: heldMounts })).pid;
    const ppid = (p: number) => Number(readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ")[1]);
    const heldRunc = ppid(held);
    assert.ok(isRunc(readFileSync(`/proc/${heldRunc}/cmdline`, "utf8")));
    // Exec processes under keepers of their own: one in t-orphan, adopted too; one whose start
    // the crash cut short (its record still says created: the log may not say it started),
    // killed at the next start, its end recorded; one in t-orphan-w (not adopted, below),
    // stopped with its task, its end recorded before the task's.
    const orphanSpec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process", value: Buffer.from(JSON.stringify({ args: ["sleep", "600"], cwd: "/", env: ["PATH=/bin"] })) };
    const execIn = async (task: string, exec: string) => {
      await api.call("tasks", "Exec", { container_id: task, exec_id: exec, spec: orphanSpec });
      return (await api.call("tasks", "Start", { container_id: task, exec_id: exec })).pid as number;
    };
    const orphanExec = await execIn("t-orphan", "e-orphan");
    const cutExec = await execIn("t-orphan", "e-cut");
    const wExec = await execIn("t-orphan-w", "e-w");
    // And a task on a console (its stdin a FIFO of the test's, its output a file): its keeper
    // holds the pty through the kill, typed into and printing while no ckd runs.
    r = await ctr(["containers", "create", ref, "t-kill-tty", "true"]);
    assert.equal(r.code, 0, r.stderr);
    const killTtyC = (await api.call("containers", "Get", { id: "t-kill-tty" })).container;
    const killTtySpec = JSON.parse(Buffer.from(killTtyC.spec.value).toString("utf8"));
    Object.assign(killTtySpec.process, { args: ["sh"], terminal: true });
    await api.call("containers", "Update", { container: { id: "t-kill-tty", spec: { ...killTtyC.spec, value: Buffer.from(JSON.stringify(killTtySpec)) } }, update_mask: { paths: ["spec"] } });
    const killTtyIn = join(daemon.root, "t-kill-tty.in");
    const killTtyOut = join(daemon.root, "t-kill-tty.out");
    execFileSync("mkfifo", [killTtyIn]);
    writeFileSync(killTtyOut, "");
    await api.call("tasks", "Create", { container_id: "t-kill-tty", rootfs: (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-kill-tty" })).mounts, stdin: killTtyIn, stdout: killTtyOut, terminal: true });
    const killTtyW = openSync(killTtyIn, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    const killTtyPid = (await api.call("tasks", "Start", { container_id: "t-kill-tty" })).pid;
    const printedIn = async (file: string, re: RegExp) => {
      for (const until = Date.now() + 10_000; !re.test(readFileSync(file, "utf8")) && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
      assert.match(readFileSync(file, "utf8"), re);
    };
    writeSync(killTtyW, "echo a$((1+1))\n");
    await printedIn(killTtyOut, /a2\r*\n/);
    const beforeKill = (await log.lastSeq()) + 1;
    api.close();
    await daemon.kill9();
    writeSync(killTtyW, "echo b$((2+2))\n");
    await printedIn(killTtyOut, /b4\r*\n/);
    const cutRecord = `${daemon.root}/tasks/${NS}/t-orphan/execs/e-cut/state.json`;
    writeFileSync(cutRecord, JSON.stringify({ ...JSON.parse(readFileSync(cutRecord, "utf8")), status: "CREATED", pid: 0 }));
    assert.ok(existsSync(`/proc/${pid}`), "the container outlived ckd");
    // ckd's end of the gate closed with it: the hook reads end-of-file, and runc ends the init.
    for (const until = Date.now() + 10_000; (existsSync(`/proc/${held}`) || existsSync(`/proc/${heldRunc}`)) && Date.now() < until; ) {
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.ok(!existsSync(`/proc/${held}`) && !existsSync(`/proc/${heldRunc}`), "the created init and its runc ended with ckd");
    rmSync(`${daemon.root}/tasks/${NS}/t-orphan-w/shim.pid`);
    writeSync(inWriter, "after\n");
    closeSync(inWriter);
    process.kill(keeperOf("t-gone"), "SIGKILL");
    // t-brief is told to end now (through its rootfs), with no ckd: its keeper leaves the status.
    writeFileSync(`${daemon.root}/tasks/${NS}/t-brief/rootfs/go`, "");
    for (const until = Date.now() + 10_000; !existsSync(`${daemon.root}/tasks/${NS}/t-brief/exit`) && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
    assert.ok(existsSync(`${daemon.root}/tasks/${NS}/t-brief/exit`), "the keeper left the exit status");
    // A bundle with its rootfs mounted and no task record, as a Create cut short by the kill leaves.
    const ghost = `${daemon.root}/tasks/${NS}/ghost`;
    const lower = mkdtempSync(join(tmpdir(), "ck-ghost-"));
    writeFileSync(join(lower, "keep"), "not to be deleted\n");
    mkdirSync(`${ghost}/rootfs`, { recursive: true });
    writeFileSync(`${ghost}/config.json`, "{}");
    execFileSync("mount", ["--bind", lower, `${ghost}/rootfs`]);
    await daemon.restart();
    assert.ok(!existsSync(ghost), "the left-over bundle was removed");
    assert.equal(readFileSync(join(lower, "keep"), "utf8"), "not to be deleted\n", "through an unmount, never into the mount");
    rmSync(lower, { recursive: true, force: true });
    api = daemon.client(NS);
    // Adopted: still running, the same process; the new ckd records its exit.
    const task = (await api.call("tasks", "Get", { container_id: "t-orphan" })).process;
    assert.deepEqual([task.status, task.pid], [2, pid]);
    assert.ok(existsSync(`/proc/${pid}`), "the adopted container runs on");
    assert.match((await ctr(["tasks", "ps", "t-orphan"])).stdout, new RegExp(`^${pid}\\s`, "m"));
    const orphanExecNow = (await api.call("tasks", "Get", { container_id: "t-orphan", exec_id: "e-orphan" })).process;
    assert.deepEqual([orphanExecNow.status, orphanExecNow.pid], [2, orphanExec], "the exec process, adopted");
    // The start cut short: killed by the new ckd, its end recorded, its task running on.
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-orphan", exec_id: "e-cut" })).exit_status, 137);
    assert.ok(!existsSync(`/proc/${cutExec}`));
    assert.equal((await api.call("tasks", "Get", { container_id: "t-orphan" })).process.status, 2, "only the exec was killed");
    const waited = api.call("tasks", "Wait", { container_id: "t-orphan" });
    const execWaited = api.call("tasks", "Wait", { container_id: "t-orphan", exec_id: "e-orphan" });
    r = await ctr(["tasks", "kill", "-s", "SIGKILL", "t-orphan"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await waited).exit_status, 137);
    assert.equal((await execWaited).exit_status, 137, "the exec ended with its container, recorded");
    // The console task, adopted after the kill: resized through this ckd, ended by its program.
    const killTty = (await api.call("tasks", "Get", { container_id: "t-kill-tty" })).process;
    assert.deepEqual([killTty.status, killTty.pid], [2, killTtyPid]);
    await api.call("tasks", "ResizePty", { container_id: "t-kill-tty", width: 91, height: 19 });
    const killTtyWait = api.call("tasks", "Wait", { container_id: "t-kill-tty" });
    writeSync(killTtyW, "stty size; exit 6\n");
    await printedIn(killTtyOut, /19 91\r*\n/);
    assert.equal((await killTtyWait).exit_status, 6);
    closeSync(killTtyW);
    const cut = (await api.call("tasks", "Get", { container_id: "t-orphan", exec_id: "e-cut" })).process;
    assert.deepEqual([cut.status, cut.pid, cut.exit_status], [3, cutExec, 137], "a start cut short: killed, its end recorded");
    const wExecNow = (await api.call("tasks", "Get", { container_id: "t-orphan-w", exec_id: "e-w" })).process;
    assert.deepEqual([wExecNow.status, wExecNow.pid, wExecNow.exit_status], [3, wExec, 137], "stopped with its task, recorded");
    // Each task's execs' ends come before its own, as containerd's shim orders them.
    const exitOrder = (await eventsSince(beforeKill)).filter(([topic]) => topic === "/tasks/exit").map(([, e]) => `${e.container_id}/${e.id}`);
    for (const [execExit, taskExit] of [["t-orphan/e-orphan", "t-orphan/t-orphan"], ["t-orphan/e-cut", "t-orphan/t-orphan"], ["t-orphan-w/e-w", "t-orphan-w/t-orphan-w"]]) {
      assert.ok(exitOrder.includes(execExit) && exitOrder.indexOf(execExit) < exitOrder.indexOf(taskExit), `${execExit} before ${taskExit}: ${exitOrder.join(", ")}`);
    }
    // Recorded before the restarted ckd answered anything.
    const brief = (await api.call("tasks", "Get", { container_id: "t-brief" })).process;
    assert.deepEqual([brief.status, brief.exit_status], [3, 7], "the exit status it left while no ckd ran");
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-stdin" })).exit_status, 0, "cat read its stdin to the end");
    assert.equal(readFileSync(outFile, "utf8"), "before\nafter\n");
    const gone = (await api.call("tasks", "Wait", { container_id: "t-gone" }));
    assert.equal(gone.exit_status, 255, "a keeper gone without an exit status");
    const heldTask = (await api.call("tasks", "Get", { container_id: "t-held" })).process;
    assert.deepEqual([heldTask.status, heldTask.exit_status, heldTask.pid], [3, 255, held]);
    const deadline = Date.now() + 10_000;
    const alive = () => [pid, pidW, gonePid, held, heldRunc, wExec, cutExec].filter((p) => existsSync(`/proc/${p}`));
    while (alive().length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    assert.deepEqual(alive(), [], "the keeperless container, the held init and its runc were stopped");
    assert.deepEqual([(await api.call("tasks", "Get", { container_id: "t-orphan-w" })).process.exit_status], [255]);
    assert.match(readFileSync(calls, "utf8"), /^--root \S+ delete --force t-orphan-w$/m, "stopped through its own runc");
    for (const id of ["t-orphan", "t-brief", "t-stdin", "t-gone", "t-lost", "t-orphan-w", "t-held", "t-kill-tty"]) {
      r = await ctr(["tasks", "rm", id]);
      assert.equal(r.code, 0, r.stderr);
      r = await ctr(["containers", "rm", id]);
      assert.equal(r.code, 0, r.stderr);
    }

    // ckd stopped (SIGTERM): a started task runs on and is adopted by the next; one created
    // and never started ends with ckd, its exit recorded (137).
    r = await ctr(["run", "-d", ref, "t-stop", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    const stopPid = (await api.call("tasks", "Get", { container_id: "t-stop" })).process.pid;
    r = await ctr(["containers", "create", ref, "t-stop-held", "sleep", "600"]);
    assert.equal(r.code, 0, r.stderr);
    const stopHeld = (await api.call("tasks", "Create", { container_id: "t-stop-held", rootfs: (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-stop-held" })).mounts })).pid;
    // Exec processes in the task, under keepers of their own: one runs on and is adopted by the
    // next ckd; one that ends while no ckd runs has its status recorded at the next start; one
    // that ended before keeps its recorded status for DeleteProcess (recorded once); one never
    // started is done at the next start (255, as a failed start).
    const execSpec = (args: string[]) => ({ type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process", value: Buffer.from(JSON.stringify({ args, cwd: "/", env: ["PATH=/bin"] })) });
    const startExec = async (exec: string, args: string[]) => {
      await api.call("tasks", "Exec", { container_id: "t-stop", exec_id: exec, spec: execSpec(args) });
      return (await api.call("tasks", "Start", { container_id: "t-stop", exec_id: exec })).pid as number;
    };
    const stopExec = await startExec("e-stop", ["sleep", "600"]);
    const briefExec = await startExec("e-brief", ["sh", "-c", "while [ ! -e /go-exec ]; do sleep 0.1; done; exit 5"]);
    await startExec("e-done", ["sh", "-c", "exit 3"]);
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-stop", exec_id: "e-done" })).exit_status, 3);
    // One added and not started: it can still be started by the next ckd (its stdio opened
    // again), as a shim keeps a created exec through containerd's restarts.
    const lateOut = join(daemon.root, "e-new.out");
    writeFileSync(lateOut, "");
    await api.call("tasks", "Exec", { container_id: "t-stop", exec_id: "e-new", spec: execSpec(["echo", "late"]), stdout: lateOut });
    // And a task on a console (a shell, its stdin a FIFO of the test's, its console's output a
    // file), with a console exec and a plain exec in it: all run on under their keepers (a
    // console's holds its pty), typed into and printing while no ckd runs.
    r = await ctr(["containers", "create", ref, "t-stop-tty", "true"]);
    assert.equal(r.code, 0, r.stderr);
    const ttyContainer = (await api.call("containers", "Get", { id: "t-stop-tty" })).container;
    const ttySpec = JSON.parse(Buffer.from(ttyContainer.spec.value).toString("utf8"));
    Object.assign(ttySpec.process, { args: ["sh"], terminal: true });
    await api.call("containers", "Update", { container: { id: "t-stop-tty", spec: { ...ttyContainer.spec, value: Buffer.from(JSON.stringify(ttySpec)) } }, update_mask: { paths: ["spec"] } });
    const consoleIo = (name: string) => {
      const stdin = join(daemon.root, `${name}.in`);
      const stdout = join(daemon.root, `${name}.out`);
      execFileSync("mkfifo", [stdin]);
      writeFileSync(stdout, "");
      return { stdin, stdout, terminal: true };
    };
    const ttyIo = consoleIo("t-stop-tty");
    await api.call("tasks", "Create", { container_id: "t-stop-tty", rootfs: (await api.call("snapshots", "Mounts", { snapshotter: "overlayfs", key: "t-stop-tty" })).mounts, ...ttyIo });
    const ttyIn = openSync(ttyIo.stdin, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    const stopTty = (await api.call("tasks", "Start", { container_id: "t-stop-tty" })).pid;
    const printed = async (file: string, re: RegExp) => {
      for (const until = Date.now() + 10_000; !re.test(readFileSync(file, "utf8")) && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
      assert.match(readFileSync(file, "utf8"), re);
    };
    writeSync(ttyIn, "echo one$((1+1))\n");
    await printed(ttyIo.stdout, /one2\r*\n/);
    const execTtyIo = consoleIo("e-tty");
    await api.call("tasks", "Exec", { container_id: "t-stop-tty", exec_id: "e-tty", spec: { ...execSpec(["sh"]), value: Buffer.from(JSON.stringify({ args: ["sh"], cwd: "/", env: ["PATH=/bin"], terminal: true })) }, ...execTtyIo });
    const execTtyIn = openSync(execTtyIo.stdin, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    await api.call("tasks", "Start", { container_id: "t-stop-tty", exec_id: "e-tty" });
    await api.call("tasks", "Exec", { container_id: "t-stop-tty", exec_id: "e-tty-plain", spec: execSpec(["sleep", "600"]) });
    await api.call("tasks", "Start", { container_id: "t-stop-tty", exec_id: "e-tty-plain" });
    const beforeStop = (await log.lastSeq()) + 1;
    api.close();
    await daemon.stop();
    assert.ok(!existsSync(`/proc/${stopHeld}`), "the created init ended with ckd");
    assert.ok(existsSync(`/proc/${stopPid}`), "the started task runs on");
    assert.ok(existsSync(`/proc/${stopExec}`) && existsSync(`/proc/${briefExec}`), "the exec processes run on");
    assert.ok(existsSync(`/proc/${stopTty}`), "the task on a console runs on");
    const exitsSince = async (seq: number) => (await eventsSince(seq)).filter(([topic]) => topic === "/tasks/exit").map(([, e]) => [e.container_id, e.id, e.exit_status]);
    assert.deepEqual(await exitsSince(beforeStop), [["t-stop-held", "t-stop-held", 137]], "only the created init ended with ckd");
    // Typed into, printing, with no ckd: the consoles are their keepers'.
    writeSync(ttyIn, "echo two$((1+1))\n");
    await printed(ttyIo.stdout, /two2\r*\n/);
    writeSync(execTtyIn, "echo exec$((2+2))\n");
    await printed(execTtyIo.stdout, /exec4\r*\n/);
    // e-brief is told to end now, with no ckd: its keeper leaves the status.
    writeFileSync(`${daemon.root}/tasks/${NS}/t-stop/rootfs/go-exec`, "");
    const briefExit = `${daemon.root}/tasks/${NS}/t-stop/execs/e-brief/exit`;
    for (const until = Date.now() + 10_000; !existsSync(briefExit) && Date.now() < until; ) await new Promise((res) => setTimeout(res, 50));
    // (The reaper also leaves the time the process ended.)
    assert.match(readFileSync(briefExit, "utf8").trim(), /^5( \d+\.\d{9})?$/, "the exec's keeper left its status");
    const v = await runNode(CK_REPLAY, ["verify", "--root", daemon.root]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    // The log says what ran when: t-exit as of its start, and as of its exit.
    for (const [until, want] of [
      [seqs.start, { status: "RUNNING", exit_status: 0 }],
      [seqs.exit, { status: "STOPPED", exit_status: 3 }],
    ] as const) {
      const shown = await runNode(CK_REPLAY, ["show", "--root", daemon.root, "--namespace", NS, "--until", String(until)]);
      assert.equal(shown.code, 0, shown.stderr);
      const t = JSON.parse(shown.stdout).namespaces[0].tasks.find((x: { id: string }) => x.id === "t-exit");
      assert.deepEqual({ status: t?.status, exit_status: t?.exit_status }, want);
    }
    await daemon.restart();
    api = daemon.client(NS);
    assert.deepEqual([(await api.call("tasks", "Get", { container_id: "t-stop-held" })).process.exit_status], [137]);
    const stopTask = (await api.call("tasks", "Get", { container_id: "t-stop" })).process;
    assert.deepEqual([stopTask.status, stopTask.pid], [2, stopPid]);
    // The exec processes as the earlier ckd left them; the one that ended meanwhile recorded
    // before the restarted ckd answered anything.
    const execNow = async (exec: string) => {
      const p = (await api.call("tasks", "Get", { container_id: "t-stop", exec_id: exec })).process;
      return [p.status, p.pid, p.exit_status];
    };
    assert.deepEqual(await execNow("e-stop"), [2, stopExec, 0], "adopted, running");
    assert.deepEqual(await execNow("e-brief"), [3, briefExec, 5], "its status, from while no ckd ran");
    assert.deepEqual((await execNow("e-done")).filter((_, i) => i !== 1), [3, 3]);
    assert.deepEqual(await execNow("e-new"), [1, 0, 0], "created, as it was");
    await api.call("tasks", "Start", { container_id: "t-stop", exec_id: "e-new" });
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-stop", exec_id: "e-new" })).exit_status, 0);
    assert.equal(readFileSync(lateOut, "utf8"), "late\n", "started by this ckd, its output where the earlier one was told");
    const listed = (await api.call("tasks", "ListPids", { container_id: "t-stop" })).processes as Array<{ pid: number; info?: { type_url: string } }>;
    assert.equal(listed.find((p) => p.pid === stopExec)?.info?.type_url, "containerd.runc.v1.ProcessDetails", "the adopted exec is tagged in ListPids");
    const deleted = await api.call("tasks", "DeleteProcess", { container_id: "t-stop", exec_id: "e-done" });
    assert.deepEqual([deleted.id, deleted.exit_status], ["e-done", 3]);
    await rejectsClass(api.call("tasks", "Get", { container_id: "t-stop", exec_id: "e-done" }), "NotFound");
    assert.ok(!existsSync(`${daemon.root}/tasks/${NS}/t-stop/execs/e-done`), "DeleteProcess removed what the exec left");
    const execWait = api.call("tasks", "Wait", { container_id: "t-stop", exec_id: "e-stop" });
    r = await ctr(["tasks", "kill", "--exec-id", "e-stop", "-s", "SIGKILL", "t-stop"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await execWait).exit_status, 137, "the adopted exec's end, recorded by this ckd");
    assert.ok(existsSync(`/proc/${stopPid}`), "only the exec was killed");
    assert.deepEqual(
      (await exitsSince(beforeStop)).filter(([c]) => c === "t-stop").sort(),
      [
        ["t-stop", "e-brief", 5],
        ["t-stop", "e-new", 0],
        ["t-stop", "e-stop", 137],
      ],
      "each exec's end recorded once (e-done's before the stop)",
    );
    await api.call("tasks", "Kill", { container_id: "t-stop", signal: 9 });
    assert.equal((await api.call("tasks", "Wait", { container_id: "t-stop" })).exit_status, 137);
    // The consoles, adopted: resized through this ckd, typed into, ended by their programs.
    assert.deepEqual((await api.call("tasks", "Get", { container_id: "t-stop-tty" })).process.status, 2);
    await api.call("tasks", "ResizePty", { container_id: "t-stop-tty", width: 101, height: 31 });
    writeSync(ttyIn, "stty size\n");
    await printed(ttyIo.stdout, /31 101\r*\n/);
    const ttyExecWait = api.call("tasks", "Wait", { container_id: "t-stop-tty", exec_id: "e-tty" });
    await api.call("tasks", "ResizePty", { container_id: "t-stop-tty", exec_id: "e-tty", width: 77, height: 17 });
    writeSync(execTtyIn, "stty size; exit 4\n");
    await printed(execTtyIo.stdout, /17 77\r*\n/);
    assert.equal((await ttyExecWait).exit_status, 4, "the console exec's end, recorded by this ckd");
    const ttyWait = api.call("tasks", "Wait", { container_id: "t-stop-tty" });
    writeSync(ttyIn, "exit 3\n");
    assert.equal((await ttyWait).exit_status, 3, "the console task's own status");
    closeSync(ttyIn);
    closeSync(execTtyIn);
    assert.deepEqual(
      (await exitsSince(beforeStop)).filter(([c]) => c === "t-stop-tty"),
      [
        ["t-stop-tty", "e-tty", 4],
        ["t-stop-tty", "e-tty-plain", 137],
        ["t-stop-tty", "t-stop-tty", 3],
      ],
      "the execs' ends first",
    );
    for (const id of ["t-stop", "t-stop-held", "t-stop-tty"]) {
      r = await ctr(["tasks", "rm", id]);
      assert.equal(r.code, 0, r.stderr);
      r = await ctr(["containers", "rm", id]);
      assert.equal(r.code, 0, r.stderr);
    }
  });
});
