// A throwaway containerd 1.6 (Debian package containerd) on a temp root and socket: the
// reference that differential tests and the benchmark hold ckd against. Metadata only: CRI is
// off; it needs root (its snapshotters and state directories).
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApiClient } from "../../src/cli/client.js";

export const CONTAINERD = "/usr/bin/containerd";

/** Why containerd cannot run here, or undefined when it can. */
export function containerdMissing(): string | undefined {
  if (!existsSync(CONTAINERD)) return `${CONTAINERD} is not installed (Debian package containerd)`;
  if (process.getuid?.() !== 0) return "containerd needs root";
  return undefined;
}

/** A config.toml for a containerd whose root, state and sockets are all under `base`. */
export function containerdConfig(base: string, socket: string, metricsAddress?: string): string {
  return [
    "version = 2",
    `root = "${base}/root"`,
    `state = "${base}/state"`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    "[grpc]",
    `  address = "${socket}"`,
    "[ttrpc]",
    `  address = "${socket}.ttrpc"`,
    "[debug]",
    '  level = "warn"',
    ...(metricsAddress ? ["[metrics]", `  address = "${metricsAddress}"`] : []),
    "",
  ].join("\n");
}

export interface TestContainerd {
  socket: string;
  proc: ChildProcess;
  /** Stops it (SIGTERM, then SIGKILL after 15 s) and removes its directory. */
  stop(): Promise<void>;
}

export async function startContainerd(opts: { metricsAddress?: string } = {}): Promise<TestContainerd> {
  const base = await mkdtemp(join(tmpdir(), "ck-test-containerd-"));
  const socket = join(base, "containerd.sock");
  await writeFile(join(base, "config.toml"), containerdConfig(base, socket, opts.metricsAddress));
  const log = createWriteStream(join(base, "containerd.log"));
  const proc = spawn(CONTAINERD, ["--config", join(base, "config.toml")], { stdio: ["ignore", "pipe", "pipe"] });
  proc.stdout!.pipe(log);
  proc.stderr!.pipe(log);
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(t);
    }
    await rm(base, { recursive: true, force: true });
  };
  try {
    const client = new ApiClient({ address: socket, namespace: "default" });
    try {
      for (const deadline = Date.now() + 30_000; ; ) {
        if (proc.exitCode !== null) throw new Error(`containerd exited (${proc.exitCode}); see ${join(base, "containerd.log")}`);
        try {
          if (existsSync(socket)) {
            await client.call("version", "Version", {}, { deadlineMs: 500 });
            break;
          }
        } catch (err) {
          if (Date.now() > deadline) throw err;
        }
        if (Date.now() > deadline) throw new Error(`containerd's socket ${socket} did not answer`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      client.close();
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { socket, proc, stop };
}
