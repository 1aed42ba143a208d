// npm run bench: ck's figures next to containerd 1.6's, measured in the same run on this
// machine, printed as a table. The API workloads are ../shared/bench-peer (one client for
// any containerd-API socket) run against ckd and against a throwaway containerd; ck's own
// figures (replay rebuild, cold start) are measured here. Targets are ratios from the issue.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile, symlink } from "node:fs/promises";
import { tmpdir, cpus, totalmem } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { NatsServerProcess } from "../src/eventstore/nats-server.js";
import { EventLog } from "../src/eventstore/log.js";
import { loadProtos } from "../src/protos/protos.js";
import { encodeEnvelope, nowTimestamp, ORIGIN_COMMAND, ORIGIN_HEADER } from "../src/emitter/envelope.js";
import { subjectFor } from "../src/emitter/subjects.js";
import { imageRecord, TYPE } from "../src/projections/views.js";
import { ApiClient } from "../src/cli/client.js";
import { isClass } from "../src/errdefs/errdefs.js";
import { CK, pullBench, median } from "./pull.js";
import { containerdConfig } from "../test/helpers/containerd.js";

const here = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(here, "..", "..");
const CKD = join(REPO, "dist", "src", "cli", "ckd.js");
const REPLAY = join(REPO, "dist", "tools", "replay", "main.js");
const FLOOR = join(REPO, "dist", "bench", "floor-server.js");
const PEER = resolve(REPO, "..", "shared", "bench-peer");

const quick = process.argv.includes("--quick");
const skipContainerd = process.argv.includes("--no-containerd");
/** Only the pull rows (image build, ck fetch / pull, ctr content fetch / images pull). */
const onlyPull = process.argv.includes("--only-pull");
const REPLAY_EVENTS = quick ? 20_000 : 100_000;

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/**
 * Polls until the socket answers Version. A fresh client (channel) per attempt: a grpc-js
 * channel that failed once backs off for a second, which would measure grpc-js, not ckd.
 */
async function waitSocket(address: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (existsSync(address)) {
      const c = new ApiClient({ address, namespace: "default" });
      try {
        await c.call("version", "Version", {}, { deadlineMs: 500 });
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
      } finally {
        c.close();
      }
    } else if (Date.now() > deadline) throw new Error(`${address} did not appear`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function startProcess(cmd: string, args: string[], logFile: string): ChildProcess {
  const p = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  let buf = "";
  p.stderr!.on("data", (d) => {
    buf += d;
    if (buf.length > 1 << 20) buf = buf.slice(-(1 << 19));
  });
  p.on("exit", () => void writeFile(logFile, buf).catch(() => undefined));
  return p;
}

async function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise((r) => p.once("exit", r));
  p.kill("SIGTERM");
  const t = setTimeout(() => p.kill("SIGKILL"), 15_000);
  await done;
  clearTimeout(t);
}

/** Prepares a runnable copy of bench-peer whose imports resolve to this repo's node_modules. */
async function peerBench(work: string): Promise<string> {
  const dir = join(work, "bench-peer");
  await mkdir(dir, { recursive: true });
  await cp(join(PEER, "bench.mjs"), join(dir, "bench.mjs"));
  await symlink(join(REPO, "node_modules"), join(dir, "node_modules"));
  return join(dir, "bench.mjs");
}

async function runPeer(script: string, socket: string, serverPid: number, label: string, only = "images,containers,events,content", namespace = "bench"): Promise<any> {
  const out = join(dirname(script), `${label}.json`);
  await new Promise<void>((resolveRun, reject) => {
    const p = spawn(process.execPath, [script, "--socket", socket, "--namespace", namespace, "--server-pid", String(serverPid), "--only", only, "--out", out, "--label", label], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    p.on("exit", (code) => (code === 0 ? resolveRun() : reject(new Error(`bench-peer against ${label} exited ${code}`))));
  });
  return JSON.parse(await readFile(out, "utf8"));
}

async function startContainerd(work: string): Promise<{ proc: ChildProcess; socket: string } | undefined> {
  if (skipContainerd || !existsSync("/usr/bin/containerd")) return undefined;
  if (process.getuid?.() !== 0) {
    log("containerd comparison needs root; skipped");
    return undefined;
  }
  const base = join(work, "ctd");
  await mkdir(base, { recursive: true });
  const socket = join(base, "containerd.sock");
  await writeFile(join(base, "config.toml"), containerdConfig(base, socket));
  const proc = startProcess("/usr/bin/containerd", ["--config", join(base, "config.toml")], join(base, "containerd.log"));
  await waitSocket(socket);
  return { proc, socket };
}

/** Appends n image-create events straight to the log, pipelined, as a ckd would. */
export async function fillLog(url: string, stream: string, n: number): Promise<void> {
  const protos = loadProtos();
  const log = await EventLog.open({ url, stream });
  let expected = await log.lastSeq();
  const window = 512;
  const inflight: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const now = nowTimestamp();
    const rec = imageRecord({
      name: `replay.local/img-${i}:latest`,
      labels: { "bench/group": `g${i % 10}` },
      target: { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + (i.toString(16).padStart(64, "0")), size: 1000 + i, annotations: {} },
      created_at: now,
      updated_at: now,
    });
    const data = encodeEnvelope(protos, { namespace: "replay", topic: "/images/create", typeName: TYPE.ImageCreate, payload: { name: rec.name, labels: rec.labels, ck_image: rec } }, now);
    inflight.push(log.append(subjectFor("replay", "/images/create"), data, { msgId: `fill-${i}-${expected}`, expectLastSeq: expected++, headers: { [ORIGIN_HEADER]: ORIGIN_COMMAND } }));
    if (inflight.length >= window) await Promise.all(inflight.splice(0));
  }
  await Promise.all(inflight);
  await log.close();
}

/** A process's peak resident set (VmHWM) in MiB, undefined when it cannot be read. */
async function peakRssMiB(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** This machine's sha256 speed and sequential disk write speed (with fsync), in MB/s. */
async function machineSpeeds(work: string): Promise<{ sha256: number; disk: number }> {
  const { createHash, randomBytes } = await import("node:crypto");
  const { open } = await import("node:fs/promises");
  const chunk = randomBytes(1 << 20);
  let t = process.hrtime.bigint();
  const h = createHash("sha256");
  for (let i = 0; i < 256; i++) h.update(chunk);
  h.digest();
  const sha256 = (256 * 1.048576) / (Number(process.hrtime.bigint() - t) / 1e9);
  const f = await open(join(work, "disk-speed"), "w");
  t = process.hrtime.bigint();
  for (let i = 0; i < 256; i++) await f.write(chunk);
  await f.sync();
  const disk = (256 * 1.048576) / (Number(process.hrtime.bigint() - t) / 1e9);
  await f.close();
  await rm(join(work, "disk-speed"), { force: true });
  return { sha256, disk };
}

/**
 * `ck content ingest` of a 512 MiB file of random bytes (stdin redirected from the file, as a
 * user runs it), into a namespace of its own: MB/s end to end, process start included, and the
 * ck process's peak RSS (MiB).
 */
async function ckIngest(work: string, sock: string): Promise<{ mbps: number; rssMiB: number }> {
  const { createHash, randomBytes } = await import("node:crypto");
  const { open } = await import("node:fs/promises");
  const file = join(work, "ingest-512MiB");
  const f = await open(file, "w");
  const h = createHash("sha256");
  for (let i = 0; i < 512; i++) {
    const chunk = randomBytes(1 << 20);
    h.update(chunk);
    await f.write(chunk);
  }
  await f.close();
  const digest = `sha256:${h.digest("hex")}`;
  const input = await open(file, "r");
  try {
    const t = process.hrtime.bigint();
    // /usr/bin/time reports the peak RSS of the process it runs.
    const p = spawn("/usr/bin/time", ["-f", "%M", CK, "--address", sock, "-n", "bench-ingest", "content", "ingest", "--expected-digest", digest, "--expected-size", String(512 << 20), "bench-ingest"], {
      stdio: [input.fd, "ignore", "pipe"],
    });
    let stderr = "";
    p.stderr!.on("data", (d) => (stderr += d));
    const code = await new Promise<number | null>((r) => p.on("close", r));
    const secs = Number(process.hrtime.bigint() - t) / 1e9;
    if (code !== 0) throw new Error(`ck content ingest exited with ${code}: ${stderr}`);
    return { mbps: (512 * 1.048576) / secs, rssMiB: Number(stderr.trim().split("\n").pop()) / 1024 };
  } finally {
    await input.close();
    await rm(file, { force: true });
  }
}

interface Row {
  what: string;
  ck: string;
  containerd: string;
  /** The same measure against the floor server (bench/floor-server.ts), where it means something. */
  floor?: string;
  target: string;
  verdict: string;
}

const fmt = (x: number | undefined, digits = 2) => (x === undefined || Number.isNaN(x) ? "-" : Math.abs(x) >= 100 ? String(Math.round(x)) : x.toFixed(digits));

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "ck-bench-"));
  const rows: Row[] = [];
  const started = new Date();
  let nats: NatsServerProcess | undefined;
  let ckd: ChildProcess | undefined;
  let ctd: { proc: ChildProcess; socket: string } | undefined;
  try {
    nats = await NatsServerProcess.start({ storeDir: join(work, "nats") });
    const root = join(work, "ck");
    const sock = join(work, "ck.sock");
    const ckdArgs = [CKD, "--root", root, "--address", sock, "--nats", nats.url, "--log-level", "warn"];
    ckd = startProcess(process.execPath, ckdArgs, join(work, "ckd.log"));
    await waitSocket(sock);
    const peer = await peerBench(work);

    let ck: any = {};
    let ck2: any;
    let ref2: any;
    // Peak resident memory after the API workloads: ckd with its nats-server, and containerd.
    let rss: { ckd?: number; nats?: number; containerd?: number } = {};
    if (!onlyPull) {
      log("bench-peer against ckd");
      ck = await runPeer(peer, sock, ckd.pid!, "ckd");
      rss = { ckd: await peakRssMiB(ckd.pid), nats: await peakRssMiB(nats.pid) };
      // The same creates again on the same daemon (a namespace of their own): a daemon that
      // has been running a while. The first pass above is a fresh ckd's, JIT warm-up and all.
      log("bench-peer against ckd, second pass (images, containers)");
      ck2 = await runPeer(peer, sock, ckd.pid!, "ckd-2", "images,containers", "bench2");
    }
    ctd = await startContainerd(work);
    let ref: any;
    if (ctd && !onlyPull) {
      log("bench-peer against containerd");
      ref = await runPeer(peer, ctd.socket, ctd.proc.pid!, "containerd");
      rss.containerd = await peakRssMiB(ctd.proc.pid);
      log("bench-peer against containerd, second pass (images, containers)");
      ref2 = await runPeer(peer, ctd.socket, ctd.proc.pid!, "containerd-2", "images,containers", "bench2");
    }
    // The floor: the same client against a grpc-js server with ckd's codecs that does no work.
    let floor: any;
    if (!onlyPull) {
      log("bench-peer against the floor (a grpc-js server that does no work)");
      const floorSock = join(work, "floor.sock");
      const fp = startProcess(process.execPath, [FLOOR, floorSock], join(work, "floor.log"));
      try {
        await waitSocket(floorSock);
        floor = await runPeer(peer, floorSock, fp.pid!, "floor", "images,containers,content");
      } finally {
        await stopProcess(fp);
      }
    }
    const skipPull = process.argv.includes("--no-pull");
    const pulls = skipPull ? undefined : await pullBench(work, sock, ctd?.socket, quick ? 1 : 3, log);
    if (ctd) {
      await stopProcess(ctd.proc);
      ctd = undefined;
    }

    const g = (o: any, path: string): number | undefined => path.split(".").reduce((x: any, k) => (x == null ? x : x[k]), o);
    // Lists answered empty by the floor server say nothing: no floor for them.
    const floorOf = (path: string) => (/_list_/.test(path) ? undefined : g(floor, path));
    const ratioRow = (what: string, path: string, unit: string, minRatio?: number, maxAbs?: number, lowerIsBetter = false) => {
      const a = g(ck, path);
      const b = ref ? g(ref, path) : undefined;
      const f = floorOf(path);
      let target = "";
      let verdict = "";
      if (minRatio !== undefined) {
        target = `>= ${minRatio}x containerd`;
        if (a !== undefined && b !== undefined) {
          const r = lowerIsBetter ? b / a : a / b;
          verdict = `${r.toFixed(2)}x ${r >= minRatio ? "met" : "MISSED"}`;
        }
      }
      if (maxAbs !== undefined) {
        target = `<= ${maxAbs} ${unit}`;
        if (a !== undefined) verdict = a <= maxAbs ? "met" : "MISSED";
      }
      rows.push({ what: `${what} (${unit})`, ck: fmt(a), containerd: fmt(b), floor: fmt(f), target, verdict });
    };
    if (!onlyPull) {
    ratioRow("Images.Create c=1", "images_create_c1.ops_per_s", "ops/s", 1.5);
    ratioRow("Images.Create c=1 p50", "images_create_c1.p50_ms", "ms");
    ratioRow("Images.Create c=1 p99", "images_create_c1.p99_ms", "ms");
    ratioRow("Images.Create c=32", "images_create_cN.ops_per_s", "ops/s", 3);
    ratioRow("Images.Create c=32 p50", "images_create_cN.p50_ms", "ms");
    ratioRow("Images.Create c=32 p99", "images_create_cN.p99_ms", "ms");
    ratioRow("Images.Get p50", "images_get_c1.p50_ms", "ms");
    ratioRow("Images.Get p99", "images_get_c1.p99_ms", "ms", undefined, 1);
    ratioRow("Images.List 5,000 median", "images_list_all.median_ms", "ms", undefined, 20);
    ratioRow("Images.List name~= (500 hits)", "images_list_name_regex.median_ms", "ms");
    ratioRow("Images.List label== (500 hits)", "images_list_label.median_ms", "ms");
    ratioRow("Containers.Create c=32", "containers_create_cN.ops_per_s", "ops/s", 3);
    // Second passes: the same daemons after the first pass's creates (not the targets' measure).
    for (const [what, path] of [
      ["Images.Create c=1, second pass", "images_create_c1.ops_per_s"],
      ["Images.Create c=32, second pass", "images_create_cN.ops_per_s"],
      ["Containers.Create c=32, second pass", "containers_create_cN.ops_per_s"],
    ] as const) {
      const a = g(ck2, path);
      const b = g(ref2, path);
      rows.push({ what: `${what} (ops/s)`, ck: fmt(a), containerd: fmt(b), target: "", verdict: a !== undefined && b !== undefined ? `${(a / b).toFixed(2)}x` : "" });
    }
    ratioRow("Containers.List 2,000", "containers_list_all.ms", "ms");
    ratioRow("Containers.Delete c=32", "containers_delete_cN.ops_per_s", "ops/s");
    ratioRow("Event publish->receive p50", "events_image_create.latency_publish_to_receive.p50_ms", "ms");
    ratioRow("Event publish->receive p99", "events_image_create.latency_publish_to_receive.p99_ms", "ms", undefined, 5);
    ratioRow("Images.Delete c=32", "images_delete_cN.ops_per_s", "ops/s");
    ratioRow("Content.Write 512 MiB lock-step 1 MiB", "content_write_big.MB_per_s", "MB/s", 2);
    ratioRow("Content.Write 512 MiB window 8", "content_write_big_pipelined.MB_per_s", "MB/s");
    ratioRow("Content.Write 4 KiB x2000 c=16", "content_write_small.blobs_per_s", "blobs/s", 4);
    ratioRow("Content.Info x2000 c=16", "content_info_small.ops_per_s", "ops/s");
    ratioRow("Content.Delete x2000 c=16", "content_delete_small.ops_per_s", "ops/s");
    if (rss.ckd !== undefined) {
      rows.push({
        what: "peak RSS after the API workloads (MiB; ck: ckd + its nats-server)",
        ck: rss.nats !== undefined ? `${fmt(rss.ckd + rss.nats)} (${fmt(rss.ckd)} + ${fmt(rss.nats)})` : fmt(rss.ckd),
        containerd: fmt(rss.containerd),
        target: "",
        verdict: "",
      });
    }
    }
    if (pulls) {
      const mb = (pulls.totalBytes / 1e6).toFixed(1);
      const ckCold = median(pulls.ckCold);
      const ctdCold = median(pulls.ctdCold);
      const ckWarm = median(pulls.ckWarm);
      const sec = (ms: number | undefined) => (ms === undefined ? undefined : ms / 1000);
      rows.push({
        what: `pull cold, ${mb} MB 3 layers, no unpack, ckd downloads (s, median of ${pulls.ckCold.length})`,
        ck: fmt(sec(ckCold)),
        containerd: fmt(sec(ctdCold)),
        target: "<= containerd",
        verdict: ckCold !== undefined && ctdCold !== undefined ? `${(ctdCold / ckCold).toFixed(2)}x ${ckCold <= ctdCold ? "met" : "MISSED"}` : "",
      });
      const ckClientCold = median(pulls.ckClientCold);
      rows.push({
        what: `pull cold, no unpack, --client-fetch (ck downloads, Content.Write as ctr; s)`,
        ck: fmt(sec(ckClientCold)),
        containerd: fmt(sec(ctdCold)),
        target: "",
        verdict: ckClientCold !== undefined && ctdCold !== undefined ? `${(ctdCold / ckClientCold).toFixed(2)}x` : "",
      });
      // Rows in seconds: against containerd's pull with unpack (<= 0.8x), or against 0.3 s.
      const secRow = (what: string, ms: number | undefined, ctdMs: number | undefined, target: "0.8x" | "0.3s") => {
        let verdict = "";
        if (target === "0.3s" && ms !== undefined) verdict = ms <= 300 ? "met" : "MISSED";
        if (target === "0.8x" && ms !== undefined && ctdMs !== undefined) verdict = `${(ms / ctdMs).toFixed(2)}x ${ms <= 0.8 * ctdMs ? "met" : "MISSED"}`;
        rows.push({ what, ck: fmt(sec(ms)), containerd: fmt(sec(ctdMs)), target: target === "0.3s" ? "<= 0.3" : "<= 0.8x containerd", verdict });
      };
      const ctdPullCold = median(pulls.ctdPullCold);
      secRow("pull warm into a 2nd namespace (s)", ckWarm, median(pulls.ctdWarm), "0.3s");
      secRow(`pull + unpack cold, overlayfs (s, median of ${pulls.ckPullCold.length})`, median(pulls.ckPullCold), ctdPullCold, "0.8x");
      secRow("pull + unpack cold, native (s; containerd: overlayfs)", median(pulls.ckPullNativeCold), ctdPullCold, "0.8x");
      secRow(
        `pull + unpack warm into a 2nd namespace, overlayfs (s; layers applied ${pulls.ckPullWarmApplied.join(",")})`,
        median(pulls.ckPullWarm),
        median(pulls.ctdPullWarm),
        "0.3s",
      );
    }
    if (onlyPull) return printTable(started, rows);
    const machine = await machineSpeeds(work);
    const bound = Math.min(machine.sha256, machine.disk);
    const big = g(ck, "content_write_big.MB_per_s");
    rows.push({ what: "sha256, one core (MB/s)", ck: fmt(machine.sha256), containerd: "", target: "", verdict: "" });
    rows.push({ what: "disk write + fsync, 256 MiB (MB/s)", ck: fmt(machine.disk), containerd: "", target: "", verdict: "" });
    const floorBig = floorOf("content_write_big.MB_per_s");
    rows.push({
      what: "large ingest / min(sha256, disk)",
      ck: big === undefined ? "-" : `${Math.round((big / bound) * 100)}%`,
      containerd: "",
      floor: floorBig === undefined ? "" : `${Math.round((floorBig / bound) * 100)}%`,
      target: ">= 70%",
      verdict: big === undefined ? "" : big / bound >= 0.7 ? "met" : "MISSED",
    });
    log("ck content ingest of 512 MiB");
    const ingest = await ckIngest(work, sock);
    rows.push({ what: "ck content ingest, 512 MiB file on stdin (MB/s; ck's peak RSS MiB)", ck: `${fmt(ingest.mbps)} (${fmt(ingest.rssMiB)})`, containerd: "", target: "", verdict: "" });

    // ck's own: replay and cold start with REPLAY_EVENTS events in the log.
    log(`filling the log with ${REPLAY_EVENTS} events`);
    await fillLog(nats.url, "CK_EVENTS", REPLAY_EVENTS);
    // ckd follows the same log and folds the filled events too: let it finish first, so the
    // rebuild below has the machine to itself and ckd's projection is intact for the cold starts.
    await waitSocket(sock);
    await waitApplied(sock, `replay.local/img-${REPLAY_EVENTS - 1}:latest`);
    await stopProcess(ckd);
    // As a user runs it: ck-replay in a process of its own, with the machine to itself.
    log("replay rebuild (ck-replay rebuild)");
    const replayOut = await runCapture(process.execPath, [REPLAY, "rebuild", "--nats", nats.url, "--stream", "CK_EVENTS", "--out", join(work, "rebuild")]);
    const m = /rebuilt (\d+) events .* \((\d+) events\/s\)/.exec(replayOut);
    if (!m) throw new Error(`ck-replay rebuild printed no rate: ${replayOut}`);
    const total = Number(m[1]);
    const rate = Number(m[2]);
    rows.push({ what: `replay rebuild, ${total} events (events/s)`, ck: fmt(rate), containerd: "n/a", target: ">= 100000", verdict: rate >= 100_000 ? "met" : "MISSED" });

    // The median of three ckd starts, each timed until its socket answers; `before` runs ahead of each.
    const medianStart = async (name: string, before?: () => Promise<void>): Promise<number> => {
      const ms: number[] = [];
      for (let i = 0; i < 3; i++) {
        await before?.();
        const t0 = process.hrtime.bigint();
        ckd = startProcess(process.execPath, ckdArgs, join(work, `ckd-${name}-${i}.log`));
        await waitSocket(sock);
        ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
        await stopProcess(ckd);
      }
      return ms.sort((a, b) => a - b)[1]!;
    };
    const cold = await medianStart("cold");
    rows.push({ what: `ckd cold start, ${total} events, intact projection (ms, median of 3)`, ck: fmt(cold), containerd: "n/a", target: "<= 1000", verdict: cold <= 1000 ? "met" : "MISSED" });

    // Compaction of that log into a base, then starts that must load it (projection removed).
    // --sync-wait 0: the bench's nats-server is not ckd's own, and its base need not outlive a power loss.
    log("compaction (ck-replay compact --keep 0 --sync-wait 0)");
    const c0 = process.hrtime.bigint();
    const compactOut = await runCapture(process.execPath, [REPLAY, "compact", "--nats", nats.url, "--stream", "CK_EVENTS", "--keep", "0", "--sync-wait", "0"]);
    const compactS = Number(process.hrtime.bigint() - c0) / 1e9;
    const cm = /base at sequence (\d+) .*: (\d+) records, (\d+) bytes/.exec(compactOut);
    if (!cm) throw new Error(`ck-replay compact printed no base: ${compactOut}`);
    rows.push({ what: `ck-replay compact of ${cm[1]} events: s (base: records, MiB)`, ck: `${compactS.toFixed(2)} (${cm[2]}, ${fmt(Number(cm[3]) / 1048576)})`, containerd: "n/a", target: "", verdict: "" });
    const load = await medianStart("base", () => rm(join(root, "meta"), { recursive: true, force: true }));
    rows.push({ what: `ckd start, projection removed, log compacted: loads the base (ms, median of 3)`, ck: fmt(load), containerd: "n/a", target: "", verdict: "" });
  } finally {
    if (ckd) await stopProcess(ckd);
    if (ctd) await stopProcess(ctd.proc);
    await nats?.stop();
    // --keep leaves the roots and the daemons' logs for a look afterwards.
    if (process.argv.includes("--keep")) log(`kept ${work}`);
    else await rm(work, { recursive: true, force: true });
  }

  printTable(started, rows);
}

/** Runs a command to its end; its stdout, or an error with its stderr. */
function runCapture(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("error", reject);
    p.on("close", (code) => (code === 0 ? resolvePromise(out) : reject(new Error(`${cmd} ${args.join(" ")} exited ${code}: ${err}`))));
  });
}

/** Waits (at most two minutes) until ckd's projection holds the image, i.e. applied its event. */
async function waitApplied(sock: string, image: string): Promise<void> {
  const c = new ApiClient({ address: sock, namespace: "replay" });
  try {
    const deadline = Date.now() + 120_000;
    for (;;) {
      try {
        await c.call("images", "Get", { name: image });
        return;
      } catch (err) {
        // NotFound: not applied yet. Anything else is a failure, not something to wait out.
        if (!isClass(err, "NotFound")) throw err;
        if (Date.now() > deadline) throw new Error(`ckd did not apply the filled log within 2 minutes: ${(err as Error).message}`);
        await new Promise((res) => setTimeout(res, 100));
      }
    }
  } finally {
    c.close();
  }
}

function printTable(started: Date, rows: Row[]): void {
  const cpu = cpus()[0]?.model ?? "?";
  process.stdout.write(`\nck benchmark, ${started.toISOString().slice(0, 10)}, ${cpus().length} cpu (${cpu}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB, node ${process.version}\n`);
  process.stdout.write(`containerd: ${skipContainerd ? "skipped" : "1.6 (Debian), same run, same client (shared/bench-peer)"}\n`);
  process.stdout.write("floor: the same client against a grpc-js server with ckd's codecs that answers at once and does no work (bench/floor-server.ts)\n\n");
  const header: Row = { what: "measure", ck: "ck", containerd: "containerd", floor: "floor", target: "target", verdict: "verdict" };
  const all = [header, ...rows];
  const w = (k: keyof Row) => Math.max(...all.map((r) => (r[k] ?? "").length));
  const line = (r: Row) =>
    `| ${r.what.padEnd(w("what"))} | ${r.ck.padStart(w("ck"))} | ${r.containerd.padStart(w("containerd"))} | ${(r.floor ?? "").padStart(w("floor"))} | ${r.target.padEnd(w("target"))} | ${r.verdict.padEnd(w("verdict"))} |`;
  process.stdout.write(line(header) + "\n");
  process.stdout.write(
    `|${"-".repeat(w("what") + 2)}|${"-".repeat(w("ck") + 1)}:|${"-".repeat(w("containerd") + 1)}:|${"-".repeat(w("floor") + 1)}:|${"-".repeat(w("target") + 2)}|${"-".repeat(w("verdict") + 2)}|\n`,
  );
  for (const r of rows) process.stdout.write(line(r) + "\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main().catch((err) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
