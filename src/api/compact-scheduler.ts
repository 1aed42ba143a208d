// Compaction on a schedule (`compact_interval_seconds`): every interval ckd runs
// `ck-replay compact --root <its root>` as a child process at a lower CPU priority, so the
// fold that makes the base, and the base's reads, are the tool's own, independent of ckd's
// live projection (a base is folded from the previous base and the log, not copied from
// what ckd serves). One run at a time. The interval runs from the latest base's time (or this
// ckd's last run, if later), so a ckd restarted more often than the interval still compacts,
// and a run that stored no base (an idle log, a failure) is not repeated at once. The outcome is logged; a failed
// run changes nothing (the tool cuts only after a durable, verified base) and the next
// interval tries again.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { setPriority } from "node:os";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";

/** tools/replay/main.js beside this file's tree in dist. */
export const REPLAY_MAIN = fileURLToPath(new URL("../../tools/replay/main.js", import.meta.url));

/** The longest a Node timer waits (2^31-1 ms, ~24.8 days); longer waits are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** A first run is never sooner than this (or the interval, if shorter) after ckd starts: its start has the machine first. */
const AFTER_START_MS = 60_000;

/**
 * When the next compaction is due: an interval after the later of the latest base and this
 * ckd's last run (a run that stored no new base, on an idle log or a failure, still counts),
 * or after now with neither; and no sooner than a minute (or the interval, if shorter) after
 * ckd started.
 */
export function nextDue(now: number, startedAt: number, lastTaken: number | undefined, intervalMs: number, lastRunStarted?: number): number {
  const notBefore = startedAt + Math.min(AFTER_START_MS, intervalMs);
  const last = lastTaken === undefined && lastRunStarted === undefined ? now : Math.max(lastTaken ?? -Infinity, lastRunStarted ?? -Infinity);
  return Math.max(notBefore, last + intervalMs);
}

export interface CompactSchedule {
  intervalMs: number;
  /** Messages before the base kept in the log (ck-replay compact --keep). */
  keep: number;
  /** The cut follows the k-th newest base (ck-replay compact --keep-bases; default 1). */
  keepBases?: number;
  root: string;
  /** The NATS URL ckd was given (with its password): handed to the tool in CK_NATS, not on its command line. */
  natsUrl?: string;
  /** When the latest base was taken, if any (the next run is due an interval after it). */
  lastTaken?: () => Promise<Date | undefined>;
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
  private readonly startedAt = Date.now();
  /** When this ckd's latest run started. */
  private lastRunStarted: number | undefined;

  constructor(
    private readonly schedule: CompactSchedule,
    private readonly logger: Pick<Logger, "info" | "warn">,
  ) {}

  start(): void {
    if (this.schedule.intervalMs <= 0) return;
    if (!existsSync(REPLAY_MAIN)) {
      this.logger.warn({ tool: REPLAY_MAIN }, "log compaction cannot run: ck-replay is not where ckd expects it");
      return;
    }
    void this.planNext();
  }

  /** Sets the timer for the next run: an interval after the latest base, not before AFTER_START_MS. */
  private async planNext(): Promise<void> {
    if (this.stopped) return;
    let last: Date | undefined;
    try {
      last = await this.schedule.lastTaken?.();
    } catch {
      // unknown: an interval from now
    }
    this.wait(nextDue(Date.now(), this.startedAt, last?.getTime(), this.schedule.intervalMs, this.lastRunStarted));
  }

  private wait(due: number): void {
    if (this.stopped) return;
    const ms = Math.max(0, due - Date.now());
    this.timer = setTimeout(() => {
      if (Date.now() < due) return this.wait(due);
      void this.runOnce()
        .catch((err) => this.logger.warn({ err }, "log compaction failed"))
        .finally(() => void this.planNext());
    }, Math.min(ms, MAX_TIMER_MS));
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
    this.lastRunStarted = Date.now();
    const args = [REPLAY_MAIN, "compact", "--root", this.schedule.root, "--keep", String(this.schedule.keep), "--keep-bases", String(this.schedule.keepBases ?? 1)];
    const env = { ...process.env };
    if (this.schedule.natsUrl) env.CK_NATS = this.schedule.natsUrl;
    return new Promise<CompactOutcome>((resolve) => {
      if (this.stopped) return resolve({ ok: false, output: "ckd is stopping", ms: 0 });
      let child: ReturnType<typeof spawn>;
      try {
        child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
      } catch (e) {
        // Thrown at once (out of memory, say): a failed run, never an unhandled rejection.
        this.logger.warn({ err: e }, "log compaction failed to start (the next interval tries again)");
        return resolve({ ok: false, output: `cannot run ${REPLAY_MAIN}: ${(e as Error).message}`, ms: 0 });
      }
      this.child = child;
      try {
        // Background work: ckd's own requests go first on a busy machine.
        if (child.pid) setPriority(child.pid, 10);
      } catch {
        // not allowed here: runs at ckd's priority
      }
      let out = "";
      let err = "";
      // No pipes when the spawn failed early (out of file descriptors): its "error" says why.
      child.stdout?.on("data", (d: Buffer) => (out += d));
      child.stderr?.on("data", (d: Buffer) => (err = (err + d).slice(-4000)));
      let settled = false;
      const done = (code: number | null, why?: string) => {
        if (settled) return; // a spawn that fails reports both "error" and "close"
        settled = true;
        this.child = undefined;
        const ms = Math.round(performance.now() - t0);
        const ok = code === 0;
        const outcome = { ok, output: (ok ? out : why ?? (err || out)).trim(), ms };
        if (ok) {
          this.logger.info({ ms, output: outcome.output }, "log compaction done");
        } else if (this.stopped) {
          this.logger.info({ ms, output: out.trim() || undefined }, "log compaction stopped with ckd (what it printed, if anything, was done)");
        } else {
          this.logger.warn({ ms, code, output: outcome.output }, "log compaction failed (nothing was cut unless it says so; the next interval tries again)");
        }
        resolve(outcome);
      };
      child.on("error", (e) => done(null, `cannot run ${REPLAY_MAIN}: ${e.message}`));
      child.on("close", (code) => done(code));
    });
  }

  /**
   * Stops the schedule and a run under way: SIGTERM (the tool releases its lock and stops
   * where it is: before the cut nothing was removed), SIGKILL after 10 s.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const running = this.running;
    const child = this.child;
    if (!child || !running) return;
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await running;
    clearTimeout(killer);
  }
}
