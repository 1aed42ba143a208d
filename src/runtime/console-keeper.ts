// A console's keeper where ck-reaper was not built (where it was, the reaper itself keeps the
// console: ck-reaper.c): one process's runc on a pty of the keeper's own, started by ckd (see
// runc.ts, launchConsole) and outliving it, as a shim keeps a console through containerd's
// restarts. It copies the pty to the process's stdout and stdin into the pty (console.ts),
// leaves runc's exit status in `<dir>/exit` (and runc's own last words in `<dir>/console.err`)
// as the plain keepers do, and takes ckd's requests on its socket (consoleSocket in console.ts), one per line:
//   start          the process runs its program: stdin flows
//   closeio        our hold on stdin lets go: it ends once what was written is read (CloseIO)
//   resize C R     the console's size (ResizePty)
//   proc PID       the container process's pid (what a paced copy watches)
// each answered `ok` once done, and tells every connection `exit STATUS` once the exit file
// is there. After that it stays only while a lagging reader of stdout still takes the last
// output, then ends. runc's pid is left in `<dir>/console.pid` (its own session's leader, for
// ckd to stop it should the keeper be ended first).
//
// Run as: node console-keeper.js CONFIG_JSON, with fd 3 the process's stdout, fd 4 its stdin
// FIFO's reader and fd 5 ckd's writer holding it open (each if the config says so), every
// other descriptor closed (ckd starts it through bash): runc, forked by node-pty, inherits
// these (node-pty closes nothing), and is itself started through bash closing them.
import { lstatSync, mkdirSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { CONSOLE_ERR, CONSOLE_RUNC_PID, KEEPER_EXIT, consoleStdin, releaseConsoleHolder, runOnPty, type ConsoleKeeperConfig, type ConsoleStdin } from "./console.js";
import { keptProcessLine } from "./proc.js";
import { keepInspectorShut } from "../cli/inspector-signal.js";

const OUT_FD = 3;
const STDIN_FD = 4;
const HOLDER_FD = 5;

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? "") as ConsoleKeeperConfig;
  // As the plain keepers: TERM, HUP and INT sent to the keeper do not end it under runc.
  for (const sig of ["SIGTERM", "SIGHUP", "SIGINT"] as const) process.on(sig, () => undefined);
  keepInspectorShut();
  const mod = (await import("node-pty")) as typeof import("node-pty") & { default?: typeof import("node-pty") };
  const pty = mod.default ?? mod;
  const stdin: ConsoleStdin | undefined = cfg.stdin ? consoleStdin(STDIN_FD, cfg.holder ? HOLDER_FD : undefined) : undefined;
  let proc: number | undefined;
  const clients = new Set<net.Socket>();
  let exitLine: string | undefined;
  const sockPath = cfg.sock;
  mkdirSync(path.dirname(sockPath), { recursive: true, mode: 0o700 });
  // Only a directory of our own, closed to others: no one else may stand in for this socket.
  const at = lstatSync(path.dirname(sockPath));
  if (!at.isDirectory() || at.uid !== process.getuid?.() || (at.mode & 0o077) !== 0) throw new Error(`${path.dirname(sockPath)} is not a directory of this user's, closed to others`);
  try {
    unlinkSync(sockPath);
  } catch {
    // none left
  }
  const launched = runOnPty(pty, cfg.file, cfg.args, { out: cfg.out ? OUT_FD : undefined, stdin, size: { cols: cfg.cols, rows: cfg.rows } }, () => proc);
  // With its start time: a pid freed and reused since is never taken for runc's.
  const runcLine = keptProcessLine(launched.term?.pid);
  if (runcLine) writeFileSync(path.join(cfg.dir, CONSOLE_RUNC_PID), runcLine);
  const server = net.createServer((conn) => {
    clients.add(conn);
    conn.on("error", () => undefined);
    conn.on("close", () => clients.delete(conn));
    if (exitLine) conn.write(exitLine);
    let buf = "";
    conn.on("data", (d) => {
      buf += d.toString("utf8");
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const [cmd, a, b] = buf.slice(0, nl).trim().split(" ");
        buf = buf.slice(nl + 1);
        if (cmd === "start") {
          // stdin stays held until CloseIO (or the end), as containerd's shim holds it.
          launched.started();
        } else if (cmd === "closeio") {
          if (stdin) releaseConsoleHolder(stdin);
        } else if (cmd === "resize") {
          try {
            launched.term?.resize(Number(a), Number(b));
          } catch {
            // Its pty closed as the process ended: nothing left to size.
          }
        } else if (cmd === "proc") {
          proc = Number(a) || undefined;
        }
        conn.write("ok\n");
      }
    });
  });
  // Without its socket the console runs on, unresizable; ckd's requests then go unanswered.
  server.on("error", (err) => process.stderr.write(`console keeper: ${cfg.sock}: ${err.message}\n`));
  server.listen(sockPath);
  const finish = (status: number, error: string) => {
    // runc's last words first, then the status (its presence is the end, for any ckd).
    writeFileSync(path.join(cfg.dir, CONSOLE_ERR), error);
    const exitFile = path.join(cfg.dir, KEEPER_EXIT);
    writeFileSync(`${exitFile}.tmp`, `${status}\n`);
    renameSync(`${exitFile}.tmp`, exitFile);
    exitLine = `exit ${status}\n`;
    for (const c of clients) c.write(exitLine);
  };
  launched.failed.catch((err: Error) => {
    finish(255, err.message);
    process.exit(255);
  });
  const exit = await launched.exited;
  finish(exit.status, launched.errorText());
  if (stdin) releaseConsoleHolder(stdin);
  // A reader that lags may take the last output for as long as it reads; ckd ends this keeper
  // when the process is deleted.
  await launched.drained;
  server.close();
  try {
    unlinkSync(sockPath);
  } catch {
    // gone already
  }
  for (const c of clients) c.end();
  process.exit(exit.status & 0xff);
}

void main().catch((err) => {
  process.stderr.write(`console keeper: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(255);
});
