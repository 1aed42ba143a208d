// Pull benchmark: `ck fetch` (a pull without unpacking) of ../shared/bench-peer's three-layer image from
// a loopback docker-registry, cold and warm (into a second namespace while the first holds
// every blob), next to `ctr content fetch` against a real containerd 1.6 in the same run.
// Both are timed end to end as a user runs them (process start to exit).
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { ApiClient } from "../src/cli/client.js";
import { freePort } from "../src/eventstore/nats-server.js";

const here = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(here, "..", "..");
const CK = join(REPO, "dist", "ck.mjs");
const SCRIPT = resolve(REPO, "..", "shared", "bench-peer", "make-registry-image.sh");
const CTR = "/usr/bin/ctr";

export interface PullFigures {
  image: string;
  totalBytes: number;
  ckCold: number[];
  ckWarm: number[];
  ctdCold: number[];
  ctdWarm: number[];
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

/** Removes the image and every blob from these namespaces (as bench-peer's pull-bench.sh clean). */
async function clean(socket: string, image: string, namespaces: string[]): Promise<void> {
  for (const ns of namespaces) {
    const c = new ApiClient({ address: socket, namespace: ns });
    try {
      await c.call("images", "Delete", { name: image, sync: true }).catch(() => undefined);
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
    const figures: PullFigures = { image, totalBytes: Number(env.TOTAL_BYTES), ckCold: [], ckWarm: [], ctdCold: [], ctdWarm: [] };
    const ck = (ns: string) => run(process.execPath, [CK, "--address", ckSocket, "-n", ns, "fetch", "--plain-http", "-q", image]);
    const ctr = (ns: string) => run(CTR, ["--address", ctdSocket!, "-n", ns, "content", "fetch", "--plain-http", image]);
    for (let i = 0; i < runs; i++) {
      await clean(ckSocket, image, ["pull-a", "pull-b"]);
      log(`ck pull cold ${i + 1}/${runs}`);
      const cold = await ck("pull-a");
      if (cold.code !== 0) throw new Error(`ck pull failed: ${cold.out}`);
      figures.ckCold.push(cold.ms);
      const warm = await ck("pull-b");
      if (warm.code !== 0) throw new Error(`ck pull (warm) failed: ${warm.out}`);
      figures.ckWarm.push(warm.ms);
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
