// A process on a console. Where ck-reaper was built, the reaper keeps it (ck-reaper.c: it
// relays the console runc makes, as containerd's shim does). Without it, its runc runs on a
// pty (node-pty) whose output is copied to the process's stdout and into which its stdin is
// typed (runOnPty), in a console's keeper (console-keeper.ts), a Node process. Either keeper
// outlives ckd as the plain keepers do; ckd speaks to it over a unix socket (consoleSocket;
// see runc.ts, launchConsole), the same requests to both.
import { createHash } from "node:crypto";
import { createWriteStream, closeSync, fstatSync, type WriteStream } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import type { IPty } from "node-pty";
import { unavailable } from "../errdefs/errdefs.js";
import { isAlive } from "./proc.js";

/** What a console's keeper is started with (console-keeper.ts). */
export interface ConsoleKeeperConfig {
  /** runc and its arguments (through bash closing inherited descriptors, where there is bash). */
  file: string;
  args: string[];
  /** The process's directory: the bundle, or an exec's. */
  dir: string;
  /** The keeper's socket (see consoleSocket). */
  sock: string;
  cols: number;
  rows: number;
  /** Which of fds 3 (stdout), 4 (stdin's reader) and 5 (ckd's writer holding stdin open) it has. */
  out: boolean;
  stdin: boolean;
  holder: boolean;
}

/**
 * A console keeper's socket: under ckd's root, named by a hash of the process's directory
 * (a unix socket's path is at most 107 bytes, and Node cuts a longer one short, silently),
 * or, when even that is too long, under /run (root) or the user's runtime directory: places
 * that stay the same across ckd's restarts. The keeper uses the directory only if it is the
 * user's own and closed to others.
 */
export function consoleSocket(root: string, dir: string): string {
  const name = `${createHash("sha256").update(dir).digest("hex").slice(0, 32)}.sock`;
  const inRoot = path.join(root, "consoles", name);
  if (Buffer.byteLength(inRoot) <= 100) return inRoot;
  const uid = process.getuid?.() ?? 0;
  const runtimeDir = uid === 0 ? "/run" : (process.env.XDG_RUNTIME_DIR ?? os.tmpdir());
  return path.join(runtimeDir, `ck-consoles-${uid}`, name);
}

/** Where runc hands a console's master to ck-reaper: next to the keeper's socket. */
export function ttySocket(sock: string): string {
  return sock.replace(/\.sock$/, ".tty");
}

/** In a console process's directory: runc's last words, runc's pid, the keeper's own log. */
export const CONSOLE_ERR = "console.err";
export const CONSOLE_RUNC_PID = "console.pid";
export const CONSOLE_LOG = "console.log";
/** In a keeper's directory: the exit status it leaves (plain keepers and consoles' alike). */
export const KEEPER_EXIT = "exit";

export interface Exit {
  status: number;
  at: Date;
}

/** A spawned runc (or its keeper): how it ends, and what it said. */
export interface Launched {
  exited: Promise<Exit>;
  /** Rejects (Unavailable) when it could not be spawned at all. */
  failed: Promise<never>;
  /** Settles once all of its own output is read. */
  closed: Promise<unknown>;
  ended(): boolean;
  /** The end of what runc wrote (its errors), trimmed. */
  errorText(): string;
  /** The process runs its program: stdin may flow (a console's is raw by now). */
  started(): void;
}

/** The last 4 KiB of a process's output, for its error message. */
export function tail(): { add(b: Buffer | string): void; text(): string } {
  let t = "";
  return {
    add: (b) => (t = (t + b.toString()).slice(-4096)),
    // runc's log lines on a pty come coloured, with CR LF.
    text: () => t.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r/g, "").trim(),
  };
}

/** A console's stdin: the FIFO's reader, what was read of it, and the writer that holds it open. */
export interface ConsoleStdin {
  sock: net.Socket;
  buffered: PassThrough;
  /** The writer holding the FIFO open until CloseIO or the process's end, as containerd's shim holds its own. */
  holder: number | undefined;
}

/** A console's stdin from the FIFO's reader and holder descriptors. */
export function consoleStdin(reader: number, holder: number | undefined): ConsoleStdin {
  const sock = new net.Socket({ fd: reader, readable: true, writable: false });
  sock.on("error", () => undefined);
  const buffered = new PassThrough();
  sock.pipe(buffered);
  // Held until CloseIO or the process's end (console-keeper.ts), as containerd's shim holds
  // its writer: a client's writer that comes and goes does not end the console's input.
  return { sock, buffered, holder };
}

export function releaseConsoleHolder(stdin: ConsoleStdin): void {
  if (stdin.holder === undefined) return;
  closeSync(stdin.holder);
  stdin.holder = undefined;
}

/** Output a console keeps for a reader that lags once its process has ended; the rest is dropped. */
const CONSOLE_TAIL_BYTES = 1 << 20;
/** Output held for a console's reader before the console is paused (the container waits). */
const CONSOLE_PAUSE_BYTES = 1 << 20;

/**
 * runc on a pty (node-pty: a new session whose controlling terminal it is). What the pty
 * prints goes to stdout, paced by its reader while the process runs (the pty pauses while
 * stdout's buffer is full, so the container blocks, as under containerd). Once the process
 * has ended, nothing waits on a reader that lags (runc exits only after copying all of its
 * console): up to CONSOLE_TAIL_BYTES more are kept for it, the rest dropped. Stdin's bytes go
 * into the pty from Start on (runc has made its terminal raw by then), paced by the pty; its
 * end is typed as ^D (end of file at the console), where containerd hangs the console up.
 * `exited` settles once stdout has its last bytes, or a second after the process ended;
 * `drained` once stdout has ended (a reader that lags may hold it up to the keeper's end).
 * `proc` is the container process's pid once known (what the paced copy watches).
 */
export function runOnPty(
  pty: typeof import("node-pty"),
  file: string,
  args: string[],
  io: { out: number | undefined; stdin: ConsoleStdin | undefined; size: { cols: number; rows: number } },
  proc: () => number | undefined,
): Launched & { term: IPty | undefined; drained: Promise<void> } {
  // Stdout first (a FIFO through a socket, a file through a stream): nothing runs before it.
  let out: (net.Socket | WriteStream) | undefined;
  if (io.out !== undefined) {
    // Each owns the descriptor from here, closing it with itself.
    out = fstatSync(io.out).isFIFO() ? new net.Socket({ fd: io.out, readable: false, writable: true }) : createWriteStream("", { fd: io.out });
    out.on("error", () => undefined);
  }
  const drained = out ? new Promise<void>((resolve) => out.once("close", () => resolve())) : Promise.resolve();
  let term: IPty;
  try {
    term = pty.spawn(file, args, { name: "xterm", cols: io.size.cols, rows: io.size.rows, cwd: "/", env: process.env as Record<string, string>, encoding: null });
  } catch (e) {
    const failed = Promise.reject(unavailable(`runc on a pty: ${(e as Error).message}`));
    failed.catch(() => undefined);
    const never = new Promise<Exit>(() => undefined);
    out?.destroy();
    return { exited: never, failed, closed: Promise.resolve(), ended: () => true, errorText: () => "", started: () => undefined, term: undefined, drained };
  }
  const said = tail();
  let ended = false;
  let paused = false;
  let draining = false;
  let dropping = false;
  let watch: NodeJS.Timeout | undefined;
  const resume = () => {
    paused = false;
    clearInterval(watch);
    term.resume();
  };
  out?.on("drain", () => {
    if (paused && out.writableLength < CONSOLE_PAUSE_BYTES / 2) resume();
  });
  term.onData((d: string | Buffer) => {
    said.add(d);
    if (!out || out.destroyed) return;
    if (draining) {
      // Past the tail's size, the rest is dropped: a cut, not holes.
      if (!dropping && out.writableLength + d.length > CONSOLE_TAIL_BYTES) dropping = true;
      if (!dropping) out.write(d);
      return;
    }
    // Paced at a buffer's worth, not at the stream's 16 KiB mark: a pty paused when runc exits
    // gets its last bytes dropped by node-pty 200 ms later, so a burst must not pause it.
    out.write(d);
    if (paused || out.writableLength < CONSOLE_PAUSE_BYTES) return;
    paused = true;
    term.pause();
    // While paused: once the process has ended, its runc waits only for this copy.
    watch = setInterval(() => {
      const pid = proc();
      if (pid !== undefined && !isAlive(pid)) {
        draining = true;
        resume();
      }
    }, 100);
  });
  // The pty's own stream, written through libuv (paced, no busy retry); node-pty's write if absent.
  const ptyIn = (term as unknown as { _socket?: net.Socket })._socket;
  let typing = false;
  const started = () => {
    const buffered = io.stdin?.buffered;
    if (!buffered || typing) return;
    typing = true;
    // ^D ends input at a line's start; after a partial line the first only sends the line.
    let last = 0x0a;
    buffered.on("data", (b: Buffer) => {
      if (b.length) last = b[b.length - 1]!;
    });
    const eof = () => {
      if (!ended) (ptyIn ?? term).write(Buffer.from(last === 0x0a || last === 0x0d ? [4] : [4, 4]));
    };
    if (ptyIn?.writable) {
      buffered.pipe(ptyIn, { end: false });
    } else {
      buffered.on("data", (b: Buffer) => {
        if (!ended) term.write(b);
      });
    }
    buffered.once("end", eof);
  };
  const exited = new Promise<Exit>((resolve) => {
    // node-pty reports the exit once the pty is closed (every byte handed to onData), or
    // 200 ms after runc's exit if it is not: see the paused case above.
    term.onExit(({ exitCode, signal }) => {
      ended = true;
      clearInterval(watch);
      if (io.stdin?.buffered && ptyIn) io.stdin.buffered.unpipe(ptyIn);
      io.stdin?.sock.destroy();
      const exit = { status: signal ? 128 + signal : exitCode, at: new Date() };
      // Reported once stdout has its last bytes (a log file read right after Wait has them),
      // or after a second for a reader that lags.
      if (!out || out.destroyed || out.writableFinished) return resolve(exit);
      const timer = setTimeout(() => resolve(exit), 1000);
      out.once("finish", () => {
        clearTimeout(timer);
        resolve(exit);
      });
      out.end();
    });
  });
  return {
    exited,
    failed: new Promise<never>(() => undefined),
    closed: exited,
    ended: () => ended,
    errorText: said.text,
    started,
    term,
    drained,
  };
}
