// systemd's service notifications (sd_notify): with `Type=notify`, as containerd's own unit
// has, systemd waits for READY=1 before it counts ckd as started and starts what is ordered
// after it; `WatchdogSec=` wants WATCHDOG=1 at least that often. The messages are datagrams
// on the AF_UNIX socket NOTIFY_SOCKET names. The variables are removed from ckd's environment
// once read, as sd_notify's unset_environment does: the programs ckd starts (runc above all,
// which would hand the socket to the container and wait on it) must not see them.
import { createSocket, type UnixDgramSocket } from "unix-dgram";

export interface NotifyTarget {
  /** The socket's path. */
  socket: string;
  /** How often to send WATCHDOG=1 (half systemd's WatchdogSec), when it asks for it. */
  watchdogMs?: number;
}

/**
 * What the environment asks for, or why it cannot be done. Pure: reads `env`, changes nothing.
 * NOTIFY_SOCKET unset: nothing (not under systemd, or not Type=notify).
 */
export function notifyTarget(env: NodeJS.ProcessEnv, pid: number): { target?: NotifyTarget; problem?: string } {
  const socket = env.NOTIFY_SOCKET;
  if (socket === undefined || socket === "") return {};
  if (socket.startsWith("@")) return { problem: `NOTIFY_SOCKET ${socket}: abstract sockets are not supported (a path is)` };
  if (!socket.startsWith("/")) return { problem: `NOTIFY_SOCKET ${socket}: not an absolute path` };
  const target: NotifyTarget = { socket };
  const usec = env.WATCHDOG_USEC;
  const forPid = env.WATCHDOG_PID;
  if (usec !== undefined && (forPid === undefined || forPid === String(pid))) {
    if (!/^\d+$/.test(usec) || Number(usec) === 0) return { target, problem: `WATCHDOG_USEC ${usec}: not a positive whole number of microseconds` };
    target.watchdogMs = Math.max(1, Math.floor(Number(usec) / 2000));
  }
  return { target };
}

export interface NotifierLog {
  warn(obj: object, msg: string): void;
}

export class SystemdNotifier {
  private sock: UnixDgramSocket | undefined;
  private watchdog: NodeJS.Timeout | undefined;
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

  /** Sends `KEY=value` lines; a failure is logged once and never stops ckd. */
  send(fields: Record<string, string>): void {
    const text = Object.entries(fields)
      .map(([k, v]) => `${k}=${v.replace(/\n/g, " ")}`)
      .join("\n");
    const buf = Buffer.from(text + "\n");
    try {
      this.sock ??= createSocket("unix_dgram");
      this.sock.send(buf, 0, buf.length, this.target.socket, (err) => err && this.fail(err));
    } catch (err) {
      this.fail(err as Error);
    }
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.log.warn({ socket: this.target.socket, err: err.message }, "systemd notification failed");
  }

  /** Started and serving: READY=1, and the watchdog's pings from now on. */
  ready(status: string): void {
    this.send({ READY: "1", STATUS: status });
    if (this.target.watchdogMs !== undefined && !this.watchdog) {
      this.watchdog = setInterval(() => this.send({ WATCHDOG: "1" }), this.target.watchdogMs);
      this.watchdog.unref();
    }
  }

  /** The stop began. */
  stopping(status: string): void {
    this.send({ STOPPING: "1", STATUS: status });
  }

  close(): void {
    clearInterval(this.watchdog);
    this.watchdog = undefined;
    try {
      this.sock?.close();
    } catch {
      // closing a socket that failed: nothing left to do
    }
    this.sock = undefined;
  }
}
