// systemd's service notifications (sd_notify): with `Type=notify`, as containerd's own unit
// has, systemd waits for READY=1 before it counts ckd as started and starts what is ordered
// after it; `WatchdogSec=` wants WATCHDOG=1 at least that often. The messages are datagrams
// on the AF_UNIX socket NOTIFY_SOCKET names (unix-dgram: Node's dgram has no AF_UNIX, loaded
// only when asked for). The variables are removed from ckd's environment once read, as
// sd_notify's unset_environment does: the programs ckd starts (runc above all, which would
// hand the socket to the container and wait on it) must not see them.
import { getSystemErrorName } from "node:util";
import type { UnixDgramSocket } from "unix-dgram";

export interface NotifyTarget {
  /** The socket's path. */
  socket: string;
  /** How often to send WATCHDOG=1 (half systemd's WatchdogSec), when it asks for it. */
  watchdogMs?: number;
}

/** sockaddr_un's sun_path: 108 bytes, the last one the terminating NUL. */
const MAX_SOCKET_PATH = 107;
/** The longest wait a Node timer keeps (2^31 - 1 ms); a longer watchdog period pings at that. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * What the environment asks for, or why it cannot be done. Pure: reads `env`, changes nothing.
 * NOTIFY_SOCKET unset: nothing (not under systemd, or not Type=notify).
 */
export function notifyTarget(env: NodeJS.ProcessEnv, pid: number): { target?: NotifyTarget; problem?: string } {
  const socket = env.NOTIFY_SOCKET;
  if (socket === undefined || socket === "") return {};
  if (socket.startsWith("@")) return { problem: `NOTIFY_SOCKET ${socket}: abstract sockets are not supported (a path is)` };
  if (!socket.startsWith("/")) return { problem: `NOTIFY_SOCKET ${socket}: not an absolute path` };
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) return { problem: `NOTIFY_SOCKET ${socket}: longer than a socket path can be (${MAX_SOCKET_PATH} bytes)` };
  const target: NotifyTarget = { socket };
  const usec = env.WATCHDOG_USEC;
  const forPid = env.WATCHDOG_PID;
  if (usec !== undefined && (forPid === undefined || forPid === String(pid))) {
    if (!/^\d+$/.test(usec) || Number(usec) === 0) return { target, problem: `WATCHDOG_USEC ${usec}: not a positive whole number of microseconds` };
    target.watchdogMs = Math.min(MAX_TIMER_MS, Math.max(1, Math.floor(Number(usec) / 2000)));
  }
  return { target };
}

export interface NotifierLog {
  warn(obj: object, msg: string): void;
}

/** An errno as unix-dgram gives it (a negative number), by name. */
function errnoName(err: Error & { errno?: unknown }): string {
  return typeof err.errno === "number" && err.errno < 0 ? getSystemErrorName(err.errno) : err.message;
}

/** How often, while ckd starts, it asks systemd for more time (EXTEND_TIMEOUT_USEC). */
const EXTEND_EVERY_MS = 10_000;
/** Sends given up after this many tries with a full queue at systemd (EAGAIN, ENOBUFS). */
const SEND_TRIES = 6;

export class SystemdNotifier {
  private sock: Promise<UnixDgramSocket> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failed = false;

  private constructor(
    private readonly target: NotifyTarget,
    private readonly log: NotifierLog,
  ) {}

  /**
   * The notifier the environment asks for (undefined when it asks for none, or for one that
   * cannot be sent: said in the log), the variables removed from the environment either way.
   */
  static fromEnv(log: NotifierLog, env: NodeJS.ProcessEnv = process.env, pid = process.pid): SystemdNotifier | undefined {
    const { target, problem } = notifyTarget(env, pid);
    for (const k of ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]) delete env[k];
    if (problem) log.warn({ problem }, "systemd notification");
    return target ? new SystemdNotifier(target, log) : undefined;
  }

  /**
   * Sends `KEY=value` lines. A full queue at systemd is tried again a few times; a failure is
   * logged once and never stops ckd.
   */
  async send(fields: Record<string, string>): Promise<void> {
    const text = Object.entries(fields)
      .map(([k, v]) => `${k}=${v.replace(/\n/g, " ")}`)
      .join("\n");
    const buf = Buffer.from(text + "\n");
    try {
      this.sock ??= import("unix-dgram").then((m) => m.createSocket("unix_dgram"));
      const sock = await this.sock;
      for (let attempt = 1; ; attempt++) {
        const err = await new Promise<(Error & { errno?: unknown }) | undefined>((resolve) => sock.send(buf, 0, buf.length, this.target.socket, resolve));
        if (!err) return;
        const name = errnoName(err);
        if ((name !== "EAGAIN" && name !== "ENOBUFS") || attempt >= SEND_TRIES) throw new Error(name);
        await new Promise((r) => setTimeout(r, 20 * 2 ** attempt));
      }
    } catch (err) {
      if (this.failed) return;
      this.failed = true;
      this.log.warn({ socket: this.target.socket, err: (err as Error).message }, "systemd notification failed");
    }
  }

  /**
   * Starting: systemd's start timeout (90 s by default) is extended while ckd starts, which
   * takes as long as its catch-up with the log (a full rebuild of a long log takes minutes).
   */
  starting(status: string): void {
    const extend = () => void this.send({ EXTEND_TIMEOUT_USEC: String(3 * EXTEND_EVERY_MS * 1000), STATUS: status });
    extend();
    this.timer = setInterval(extend, EXTEND_EVERY_MS);
    this.timer.unref();
  }

  /** Started and serving: READY=1, and the watchdog's pings from now on. */
  ready(status: string): void {
    clearInterval(this.timer);
    this.timer = undefined;
    void this.send({ READY: "1", STATUS: status });
    if (this.target.watchdogMs !== undefined) {
      this.timer = setInterval(() => void this.send({ WATCHDOG: "1" }), this.target.watchdogMs);
      this.timer.unref();
    }
  }

  /** The stop began. */
  stopping(status: string): void {
    clearInterval(this.timer);
    this.timer = undefined;
    void this.send({ STOPPING: "1", STATUS: status });
  }
}
