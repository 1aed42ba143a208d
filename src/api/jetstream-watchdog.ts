// A watch on ckd's own nats-server: a server whose process runs and whose connection is up
// but whose JetStream no longer answers is restarted. Seen with nats-server 2.9 once its store
// ran out of disk: it stopped acknowledging appends and answering JetStream's API, and did not
// recover when space was freed, until restarted (which loses nothing acknowledged). Only for
// the server ckd runs itself: a server given with --nats is its operator's to restart.
import type { Logger } from "pino";

export interface WatchState {
  /** Probes failed in a row while the connection was up. */
  failures: number;
}

/**
 * What one probe's outcome means (pure): the next state, and whether to restart now. A probe
 * made while the connection is down does not count and starts the count afresh (the server
 * is down or restarting: its own supervision deals with that).
 */
export function watchVerdict(state: WatchState, outcome: "answered" | "silent" | "disconnected", failuresToRestart: number): { state: WatchState; restart: boolean } {
  // An answer, or a lost connection (the server restarting: a new process starts afresh).
  if (outcome !== "silent") return { state: { failures: 0 }, restart: false };
  const failures = state.failures + 1;
  if (failures >= failuresToRestart) return { state: { failures: 0 }, restart: true };
  return { state: { failures }, restart: false };
}

export interface WatchdogOptions {
  /**
   * Asks JetStream something (the stream's info): "answered" for any answer, an error included
   * (a removed stream is not a silent server); "silent" when none came in time.
   */
  probe: () => Promise<"answered" | "silent">;
  connected: () => boolean;
  restart: () => Promise<void>;
  logger: Logger;
  everyMs: number;
  /** Silent probes in a row before a restart (default 3). */
  failuresToRestart?: number;
}

export class JetStreamWatchdog {
  private timer: NodeJS.Timeout | undefined;
  private state: WatchState = { failures: 0 };
  private running: Promise<void> | undefined;
  private stopped = false;
  /** Restarts done (for tests and the log). */
  restarts = 0;

  constructor(private readonly opts: WatchdogOptions) {}

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.tick().finally(() => (this.running = undefined));
    }, this.opts.everyMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    let outcome: "answered" | "silent" | "disconnected" = await this.opts.probe().catch(() => "silent" as const);
    if (outcome === "silent") {
      outcome = this.opts.connected() ? "silent" : "disconnected";
      if (outcome === "silent") this.opts.logger.warn({ inARow: this.state.failures + 1 }, "JetStream on ckd's own nats-server did not answer");
    }
    const v = watchVerdict(this.state, outcome, this.opts.failuresToRestart ?? 3);
    this.state = v.state;
    if (!v.restart || this.stopped) return;
    this.opts.logger.warn("JetStream on ckd's own nats-server does not answer while it runs: restarting it (what it acknowledged is on its disk)");
    try {
      await this.opts.restart();
      this.restarts++;
      this.opts.logger.info("ckd's own nats-server restarted");
    } catch (err) {
      this.opts.logger.error({ err: (err as Error).message }, "restarting ckd's own nats-server failed; its supervision keeps trying");
    }
  }

  /** Stops probing; waits for a probe or restart under way, at most `waitMs` (ckd's stop goes on). */
  async stop(waitMs = 15_000): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise<void>((r) => (t = setTimeout(r, waitMs)))]);
    clearTimeout(t);
  }
}
