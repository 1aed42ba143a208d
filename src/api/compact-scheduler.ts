// Compaction on a schedule (`compact_interval_seconds`): every interval ckd runs
// `ck-replay compact --root <its root>` as a child process at a lower CPU priority, so the
// fold that makes the base, and the base's reads, are the tool's own, independent of ckd's
// live projection (a base is folded from the previous base and the log, not copied from
// what ckd serves). One run at a time; a run still going when the next is due is not
// doubled. The outcome is logged; a failed run changes nothing (the tool cuts only after a
// durable, verified base) and the next interval tries again.
import { spawn, type ChildProcess } from "node:child_process";
import { setPriority } from "node:os";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";

/** tools/replay/main.js beside this file's tree in dist. */
export const REPLAY_MAIN = fileURLToPath(new URL("../../tools/replay/main.js", import.meta.url));

export interface CompactSchedule {
  intervalMs: number;
  /** Messages before the base kept in the log (ck-replay compact --keep). */
  keep: number;
  /** The cut follows the k-th newest base (ck-replay compact --keep-bases; default 1). */
  keepBases?: number;
  root: string;
  /** The NATS URL ckd was given (with its password): handed to the tool in CK_NATS, not on its command line. */
  natsUrl?: string;
}

export interface CompactOutcome {
  ok: boolean;
  /** What the tool printed (stdout on success, stderr's tail on failure). */
  output: string;
  ms: number;
}

export class CompactScheduler {
  private timer: NodeJS.Timeout | undefined;
  private child: ChildProcess | undefined;
  private running: Promise<CompactOutcome> | undefined;
  private stopped = false;
  /** Runs so far, by outcome (for tests and metrics). */
  readonly counts = { ok: 0, failed: 0 };

  constructor(
    private readonly schedule: CompactSchedule,
    private readonly logger: Pick<Logger, "info" | "warn">,
  ) {}

  start(): void {
    if (this.schedule.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.runOnce(), this.schedule.intervalMs);
    this.timer.unref();
  }

  /** One compaction now (or the one already under way). */
  runOnce(): Promise<CompactOutcome> {
    if (this.running) return this.running;
    this.running = this.run().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private run(): Promise<CompactOutcome> {
    const t0 = performance.now();
    const args = [REPLAY_MAIN, "compact", "--root", this.schedule.root, "--keep", String(this.schedule.keep), "--keep-bases", String(this.schedule.keepBases ?? 1)];
    const env = { ...process.env };
    if (this.schedule.natsUrl) env.CK_NATS = this.schedule.natsUrl;
    return new Promise<CompactOutcome>((resolve) => {
      if (this.stopped) return resolve({ ok: false, output: "ckd is stopping", ms: 0 });
      const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
      this.child = child;
      try {
        // Background work: ckd's own requests go first on a busy machine.
        if (child.pid) setPriority(child.pid, 10);
      } catch {
        // not allowed here: runs at ckd's priority
      }
      let out = "";
      let err = "";
      child.stdout!.on("data", (d: Buffer) => (out += d));
      child.stderr!.on("data", (d: Buffer) => (err = (err + d).slice(-4000)));
      const done = (code: number | null, why?: string) => {
        this.child = undefined;
        const ms = Math.round(performance.now() - t0);
        const ok = code === 0;
        const outcome = { ok, output: (ok ? out : why ?? (err || out)).trim(), ms };
        if (ok) {
          this.counts.ok++;
          this.logger.info({ ms, output: outcome.output }, "log compaction done");
        } else {
          this.counts.failed++;
          this.logger.warn({ ms, code, output: outcome.output }, "log compaction failed (nothing was cut unless it says so; the next interval tries again)");
        }
        resolve(outcome);
      };
      child.on("error", (e) => done(null, `cannot run ${REPLAY_MAIN}: ${e.message}`));
      child.on("close", (code) => done(code));
    });
  }

  /**
   * Stops the schedule and a run under way (the tool stops where it is: before the cut nothing
   * was removed; its lock on the bases goes stale after 30 minutes, or ck-replay --break-lock).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    const running = this.running;
    this.child?.kill("SIGTERM");
    await running;
  }
}
