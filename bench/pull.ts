// Pull benchmark: `ck fetch` (a pull without unpacking) of ../shared/bench-peer's three-layer image from
// a loopback docker-registry, cold and warm (into a second namespace while the first holds
// every blob), next to `ctr content fetch` against a real containerd 1.6 in the same run.
// Then `ck pull` (fetch and unpack) cold with the overlayfs and the native snapshotter and
// warm into a second namespace (which shares the snapshots ckd unpacked for the first: 0
// layers applied), next to `ctr images pull` (overlayfs) in the same run.
// All are timed end to end as a user runs them (process start to exit).
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { ApiClient } from "../src/cli/client.js";
import { freePort } from "../src/eventstore/nats-server.js";

const here = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(here, "..", "..");
// Run as a program, as the installed `ck` is (its launcher starts Node itself).
export const CK = join(REPO, "dist", "ck.cjs");
const SCRIPT = resolve(REPO, "..", "shared", "bench-peer", "make-registry-image.sh");
const CTR = "/usr/bin/ctr";
/** The launcher's learning runs (LEARNING_RUNS in tools/ck-launcher.cjs). */
const CK_LEARNING_RUNS = 8;

export interface PullFigures {
  image: string;
  totalBytes: number;
  /** ck fetch, blobs downloaded by ckd (ck.services.fetch.v1). */
  ckCold: number[];
  ckWarm: number[];
  /** ck fetch --client-fetch: blobs downloaded by ck and written over Content.Write, as ctr does. */
  ckClientCold: number[];
  ctdCold: number[];
  ctdWarm: number[];
  /** `ck pull` (fetch + unpack) cold with overlayfs, then warm into a second namespace. */
  ckPullCold: number[];
  ckPullWarm: number[];
  /** `ck pull --snapshotter native`, cold. */
  ckPullNativeCold: number[];
  /** Layers the warm `ck pull` applied (0 when committed snapshots are shared). */
  ckPullWarmApplied: number[];
  /** `ctr images pull` (fetch + unpack, overlayfs) cold, then warm into a second namespace. */
  ctdPullCold: number[];
  ctdPullWarm: number[];
}

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; ms: number; out: string }> {
  return new Promise((res, rej) => {
    const t0 = process.hrtime.bigint();
    const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    let out = "";
    p.stdout!.on("data", (d) => (out += d));
    p.stderr!.on("data", (d) => (out += d));
    p.on("error", rej);
    p.on("exit", (code) => res({ code: code ?? 1, ms: Number(process.hrtime.bigint() - t0) / 1e6, out }));
  });
}

const SNAPSHOTTERS = ["overlayfs", "native"];

/**
 * Removes the image, every snapshot and every blob from these namespaces (as bench-peer's
 * pull-bench.sh clean). `images rm --sync` lets GC take unreferenced snapshots; whatever is
 * left (held by a lease, or a snapshotter GC did not visit) is removed explicitly, children
 * before parents, so that a cold pull really unpacks again.
 */
async function clean(socket: string, image: string, namespaces: string[]): Promise<void> {
  for (const ns of namespaces) {
    const c = new ApiClient({ address: socket, namespace: ns });
    try {
      await c.call("images", "Delete", { name: image, sync: true }).catch(() => undefined);
      for (const sn of SNAPSHOTTERS) {
        for (let round = 0; round < 16; round++) {
          const keys: string[] = [];
          try {
            for await (const m of c.stream("snapshots", "List", { snapshotter: sn, filters: [] })) for (const i of m.info ?? []) keys.push(i.name);
          } catch {
            break; // snapshotter not there
          }
          if (keys.length === 0) break;
          for (const k of keys) await c.call("snapshots", "Remove", { snapshotter: sn, key: k }).catch(() => undefined);
        }
      }
      const digests: string[] = [];
      for await (const m of c.stream("content", "List", { filters: [] })) for (const i of m.info ?? []) digests.push(i.digest);
      for (const d of digests) await c.call("content", "Delete", { digest: d }).catch(() => undefined);
    } finally {
      c.close();
    }
  }
}

export async function pullBench(work: string, ckSocket: string, ctdSocket: string | undefined, runs: number, log: (m: string) => void): Promise<PullFigures> {
  const dir = join(work, "registry");
  const port = await freePort("127.0.0.1");
  log("building the pull benchmark image (make-registry-image.sh)");
  const made = await run("bash", [SCRIPT, String(port), dir]);
  if (made.code !== 0) throw new Error(`make-registry-image.sh failed:\n${made.out.slice(-2000)}`);
  try {
    const env = Object.fromEntries(
      (await readFile(join(dir, "image.env"), "utf8"))
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    const image = env.IMAGE!;
    const figures: PullFigures = {
      image,
      totalBytes: Number(env.TOTAL_BYTES),
      ckCold: [],
      ckWarm: [],
      ckClientCold: [],
      ctdCold: [],
      ctdWarm: [],
      ckPullCold: [],
      ckPullWarm: [],
      ckPullNativeCold: [],
      ckPullWarmApplied: [],
      ctdPullCold: [],
      ctdPullWarm: [],
    };
    const ck = (ns: string, ...extra: string[]) => run(CK, ["--address", ckSocket, "-n", ns, "fetch", "--plain-http", "-q", ...extra, image]);
    const ctr = (ns: string) => run(CTR, ["--address", ctdSocket!, "-n", ns, "content", "fetch", "--plain-http", image]);
    // Not -q: the last line says how many layers were applied, which checks that a cold
    // pull really unpacked (and shows whether a warm one did).
    const ckPull = async (ns: string, sn: string, what: string, wantApplied?: number) => {
      const r = await run(CK, ["--address", ckSocket, "-n", ns, "pull", "--plain-http", "--snapshotter", sn, image]);
      if (r.code !== 0) throw new Error(`ck pull (${what}) failed: ${r.out}`);
      const m = /unpacked (\d+) layers \((\d+) applied(?:, (\d+) shared)?\)/.exec(r.out);
      if (!m) throw new Error(`ck pull (${what}): no unpack summary in its output:\n${r.out.slice(-2000)}`);
      const applied = Number(m[2]);
      if (wantApplied !== undefined && applied !== wantApplied) throw new Error(`ck pull (${what}) applied ${applied} of ${m[1]} layers, expected ${wantApplied}`);
      return { ms: r.ms, applied, shared: Number(m[3] ?? 0), layers: Number(m[1]) };
    };
    const ctrPull = async (ns: string, what: string) => {
      const r = await run(CTR, ["--address", ctdSocket!, "-n", ns, "images", "pull", "--plain-http", "--snapshotter", "overlayfs", image]);
      if (r.code !== 0) throw new Error(`ctr images pull (${what}) failed: ${r.out}`);
      return r.ms;
    };
    const snapshotCount = async (socket: string, ns: string, sn: string) => {
      const c = new ApiClient({ address: socket, namespace: ns });
      try {
        let n = 0;
        for await (const m of c.stream("snapshots", "List", { snapshotter: sn, filters: [] })) n += (m.info ?? []).length;
        return n;
      } finally {
        c.close();
      }
    };
    // ck's launcher completes its V8 code cache during the first runs after a build
    // (LEARNING_RUNS in tools/ck-launcher.cjs); an installed ck is past them after a few
    // commands. The timed runs measure that steady state: fetches and pulls into scratch
    // namespaces first, all removed again before the first timed run.
    const warmups = Array.from({ length: CK_LEARNING_RUNS }, (_, i) => `warmup-${i}`);
    log(`ck warm-up: ${warmups.length} fetches and pulls into scratch namespaces (untimed)`);
    for (const [i, ns] of warmups.entries()) {
      const r = await run(CK, ["--address", ckSocket, "-n", ns, i % 2 ? "pull" : "fetch", "--plain-http", "-q", image]);
      if (r.code !== 0) throw new Error(`ck warm-up (${ns}) failed: ${r.out}`);
    }
    await clean(ckSocket, image, warmups);
    for (let i = 0; i < runs; i++) {
      await clean(ckSocket, image, ["pull-a", "pull-b"]);
      log(`ck pull cold ${i + 1}/${runs}`);
      const cold = await ck("pull-a");
      if (cold.code !== 0) throw new Error(`ck pull failed: ${cold.out}`);
      figures.ckCold.push(cold.ms);
      const warm = await ck("pull-b");
      if (warm.code !== 0) throw new Error(`ck pull (warm) failed: ${warm.out}`);
      figures.ckWarm.push(warm.ms);
      await clean(ckSocket, image, ["pull-a", "pull-b"]);
      log(`ck fetch --client-fetch cold ${i + 1}/${runs}`);
      const client = await ck("pull-a", "--client-fetch");
      if (client.code !== 0) throw new Error(`ck fetch --client-fetch failed: ${client.out}`);
      figures.ckClientCold.push(client.ms);
      if (ctdSocket) {
        await clean(ctdSocket, image, ["pull-a", "pull-b"]);
        log(`ctr content fetch cold ${i + 1}/${runs}`);
        const c = await ctr("pull-a");
        if (c.code !== 0) throw new Error(`ctr content fetch failed: ${c.out}`);
        figures.ctdCold.push(c.ms);
        const w = await ctr("pull-b");
        if (w.code !== 0) throw new Error(`ctr content fetch (warm) failed: ${w.out}`);
        figures.ctdWarm.push(w.ms);
      }
    }
    // Pull with unpack: cold (overlayfs, native) and warm into a second namespace, next to
    // ctr images pull (overlayfs).
    for (let i = 0; i < runs; i++) {
      await clean(ckSocket, image, ["pull-a", "pull-b"]);
      if ((await snapshotCount(ckSocket, "pull-a", "overlayfs")) + (await snapshotCount(ckSocket, "pull-b", "overlayfs")) > 0) {
        throw new Error("clean left ck snapshots behind");
      }
      log(`ck pull (overlayfs) cold ${i + 1}/${runs}`);
      const cold = await ckPull("pull-a", "overlayfs", "overlayfs cold");
      if (cold.applied !== cold.layers) throw new Error(`cold ck pull applied ${cold.applied} of ${cold.layers} layers: not cold`);
      figures.ckPullCold.push(cold.ms);
      log(`ck pull (overlayfs) warm into a 2nd namespace ${i + 1}/${runs}`);
      // Warm: ckd shares the snapshots it unpacked for pull-a (ck.services.unpack.v1), so
      // nothing is applied again; a layer applied here means sharing did not happen.
      const warm = await ckPull("pull-b", "overlayfs", "overlayfs warm", 0);
      if (warm.shared !== warm.layers) throw new Error(`warm ck pull shared ${warm.shared} of ${warm.layers} layers`);
      figures.ckPullWarm.push(warm.ms);
      figures.ckPullWarmApplied.push(warm.applied);
      await clean(ckSocket, image, ["pull-a", "pull-b"]);
      log(`ck pull (native) cold ${i + 1}/${runs}`);
      const native = await ckPull("pull-a", "native", "native cold");
      if (native.applied !== native.layers) throw new Error(`cold ck pull (native) applied ${native.applied} of ${native.layers} layers: not cold`);
      figures.ckPullNativeCold.push(native.ms);
      if (ctdSocket) {
        await clean(ctdSocket, image, ["pull-a", "pull-b"]);
        if ((await snapshotCount(ctdSocket, "pull-a", "overlayfs")) > 0) throw new Error("clean left containerd snapshots behind");
        log(`ctr images pull cold ${i + 1}/${runs}`);
        figures.ctdPullCold.push(await ctrPull("pull-a", "cold"));
        log(`ctr images pull warm into a 2nd namespace ${i + 1}/${runs}`);
        figures.ctdPullWarm.push(await ctrPull("pull-b", "warm"));
      }
    }
    await clean(ckSocket, image, ["pull-a", "pull-b"]);
    if (ctdSocket) await clean(ctdSocket, image, ["pull-a", "pull-b"]);
    return figures;
  } finally {
    await run("bash", [SCRIPT, "stop", dir]);
  }
}

export const median = (xs: number[]): number | undefined => {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
