// Test harness: runs the real ckd (the built dist/src/cli/ckd.js) as a child process on a
// temp root and socket, against a given NATS URL or its own managed nats-server.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createWriteStream, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ApiClient } from "../../src/cli/client.js";

const here = dirname(fileURLToPath(import.meta.url));
/** dist/ root of the built project. */
export const DIST = resolve(here, "..", "..");
export const CKD = join(DIST, "src", "cli", "ckd.js");
// The bundled CLI, as installed (package.json bin); the build writes it (tools/bundle-cli.mjs).
export const CK = join(DIST, "ck.cjs");
export const CK_REPLAY = join(DIST, "tools", "replay", "main.js");

export interface DaemonOptions {
  natsUrl?: string;
  root?: string;
  /** The API socket (default `<root>/ck.sock`). */
  address?: string;
  stream?: string;
  extraArgs?: string[];
  /** Added to ckd's environment. */
  env?: NodeJS.ProcessEnv;
  /** Where ckd's output goes (default `<root>/ckd-test.log`). */
  logFile?: string;
  /** Another build's ckd.js (default: this build's, CKD). */
  ckd?: string;
}

export class TestDaemon {
  proc: ChildProcess | undefined;
  readonly logFile: string;
  private starts = 0;

  private constructor(
    readonly root: string,
    readonly address: string,
    private readonly opts: DaemonOptions,
    private readonly ownsRoot: boolean,
  ) {
    this.logFile = opts.logFile ?? join(root, "ckd-test.log");
  }

  static async start(opts: DaemonOptions = {}): Promise<TestDaemon> {
    const root = opts.root ?? (await mkdtemp(join(tmpdir(), "ck-test-root-")));
    const d = new TestDaemon(root, opts.address ?? join(root, "ck.sock"), opts, !opts.root);
    try {
      await d.launch();
    } catch (err) {
      // A daemon that never came up leaves nothing behind: no process, no root the test made.
      if (d.proc && d.proc.exitCode === null && d.proc.signalCode === null) {
        // SIGTERM first: ckd then stops the nats-server it may have started.
        const gone = new Promise((r) => d.proc!.once("exit", r));
        d.proc.kill("SIGTERM");
        const t = setTimeout(() => d.proc?.kill("SIGKILL"), 10_000);
        await gone;
        clearTimeout(t);
      }
      if (!opts.root) await rm(root, { recursive: true, force: true });
      throw err;
    }
    return d;
  }

  get pid(): number {
    return this.proc!.pid!;
  }

  args(): string[] {
    const a = ["--root", this.root, "--address", this.address, "--log-level", "info"];
    if (this.opts.natsUrl) a.push("--nats", this.opts.natsUrl);
    if (this.opts.stream) a.push("--stream", this.opts.stream);
    return [...a, ...(this.opts.extraArgs ?? [])];
  }

  /** Starts ckd and waits until its socket answers. */
  async launch(): Promise<void> {
    this.starts++;
    const log = createWriteStream(this.logFile, { flags: "a" });
    const proc = spawn(process.execPath, [this.opts.ckd ?? CKD, ...this.args()], { stdio: ["ignore", "pipe", "pipe"], env: this.opts.env ? { ...process.env, ...this.opts.env } : undefined });
    proc.stdout!.pipe(log);
    proc.stderr!.pipe(log);
    this.proc = proc;
    const exited = new Promise<never>((_, reject) =>
      proc.once("exit", (code, sig) => reject(new Error(`ckd exited early (${code ?? sig}); log:\n${this.logText().slice(-3000)}`))),
    );
    const client = new ApiClient({ address: this.address, namespace: "default" });
    const stopWaiting = { stopped: false };
    try {
      await Promise.race([this.waitServing(client, stopWaiting), exited]);
    } finally {
      // A ckd that exited early: the wait for its socket ends too (not at its deadline).
      stopWaiting.stopped = true;
      client.close();
    }
    proc.removeAllListeners("exit");
  }

  private async waitServing(client: ApiClient, until: { stopped: boolean }): Promise<void> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await client.call("version", "Version", {}, { deadlineMs: 1000 });
        return;
      } catch (err) {
        if (Date.now() > deadline || until.stopped) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  logText(): string {
    try {
      return readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }

  /** Parsed JSON log lines of ckd (pino). */
  logLines(): Record<string, any>[] {
    return this.logText()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l));
  }

  client(namespace = "default"): ApiClient {
    return new ApiClient({ address: this.address, namespace });
  }

  /**
   * Whatever a failed test left running in these namespaces: its tasks killed, waited for and
   * deleted (their rootfs unmounted), each call bounded so that a hung one cannot leave ckd,
   * nats-server and a registry running. Nothing when ckd is not running.
   */
  async removeTasks(namespaces: string[]): Promise<void> {
    if (this.proc?.exitCode !== null) return;
    const bounded = { deadlineMs: 20_000 };
    for (const ns of namespaces) {
      const c = this.client(ns);
      try {
        for (const t of (await c.call("tasks", "List", {}, bounded).catch(() => ({ tasks: [] }))).tasks ?? []) {
          await c.call("tasks", "Kill", { container_id: t.container_id, signal: 9, all: true }, bounded).catch(() => undefined);
          await c.call("tasks", "Wait", { container_id: t.container_id }, bounded).catch(() => undefined);
          await c.call("tasks", "Delete", { container_id: t.container_id }, bounded).catch(() => undefined);
        }
      } finally {
        c.close();
      }
    }
  }

  async kill9(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const done = new Promise((r) => p.once("exit", r));
    p.kill("SIGKILL");
    await done;
  }

  /** SIGTERM and wait; returns the exit code. */
  async stop(): Promise<number | null> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null;
    const done = new Promise<number | null>((r) => p.once("exit", (code) => r(code)));
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 15_000);
    const code = await done;
    clearTimeout(t);
    return code;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  async cleanup(): Promise<void> {
    await this.stop();
    if (this.ownsRoot) await rm(this.root, { recursive: true, force: true });
  }
}

/** Runs a CLI (ck, ck-replay) to completion; returns exit code and output. */
export function runNode(script: string, args: string[], env: Record<string, string> = {}, input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCommand(process.execPath, [script, ...args], env, input);
}

export function runCommand(cmd: string, args: string[], env: Record<string, string> = {}, input?: string, timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    const t = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("error", reject);
    p.on("close", (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    // A command may stop reading its input early (a blob the daemon has already): not an error.
    p.stdin.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "EPIPE") reject(err);
    });
    if (input !== undefined) p.stdin.end(input);
    else p.stdin.end();
  });
}
