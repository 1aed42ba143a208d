#!/usr/bin/env node
// ck-replay: rebuild projections from the log, verify a live projection against a fresh
// rebuild byte for byte, and show the state as of a past sequence or time.
//
//   ck-replay rebuild [--root DIR] [--out DIR] [--until SEQ|TIME] [--allow-gaps]
//   ck-replay verify  --root DIR [--allow-gaps]
//   ck-replay show    --root DIR [--namespace NS] [--until SEQ|TIME] [--allow-gaps]
//   ck-replay diff    --root DIR --from SEQ|TIME [--to SEQ|TIME] [--namespace NS] [--json] [--allow-gaps]
//   ck-replay events  --root DIR [--from SEQ|TIME] [--to SEQ|TIME] [--namespace NS] [--topic T]
//   ck-replay base    --root DIR [--break-lock] [--allow-gaps]   (store the state at the last sequence)
//   ck-replay bases   --root DIR
//   ck-replay compact --root DIR [--keep N] [--keep-bases K] [--sync-wait S] [--break-lock] [--dry-run] [--allow-gaps]
//                                                 (a base, then cut the history before it)
//
// Messages deleted from inside the log (src/projections/log-gaps.ts) make every command that
// folds it refuse, naming them (DataLoss); --allow-gaps folds across them, with a warning
// listing them.
//
// With --root the log is found from what ckd recorded there (ckd.json); if ckd ran its own
// nats-server and it is not running any more, a temporary one is started on that store.
// --nats URL (credentials as nats://user:password@host:port), --nats-tls-*, --nats-creds,
// --nats-nkey and --stream NAME override.
import { Command } from "commander";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { ProjectionDb } from "../../src/projections/db.js";
import { Queries } from "../../src/projections/queries.js";
import { rootPaths } from "../../src/api/daemon.js";
import { BaseStore } from "../../src/eventstore/base-store.js";
import { diffProjections, formatDiff, jsonBytes } from "./diff.js";
import { logEvents } from "./events.js";
import { loadProtos } from "../../src/protos/protos.js";
import { baseNow, releaseHeldLocks, isStopping, withTempDir, compact, planCompaction, compareProjections, describeBase, openLogFor, parseCount, parseUntil, rebuild, type LogFlags } from "./replay.js";
import { describeGaps, describeSeqs, type LogGap } from "../../src/projections/log-gaps.js";
import { keepInspectorShut } from "../../src/cli/inspector-signal.js";

const ALLOW_GAPS = "fold across messages deleted from inside the log (refused otherwise: the state then lacks what they did), with a warning listing them";

/** The warning --allow-gaps owes: which deleted messages the state was folded across. */
function warnGaps(gaps: readonly LogGap[], stream: string, what = "the state was"): void {
  if (gaps.length === 0) return;
  process.stderr.write(
    `ck-replay: warning: ${what} folded across messages deleted from inside the log ${stream} (--allow-gaps): ${describeGaps(gaps)}; it lacks whatever they did, and is not one the log recorded\n`,
  );
}


/** Runs `fn` with the log the flags name, closed after (a temporary server stopped). */
async function withLog<T>(flags: LogFlags, fn: (opened: Awaited<ReturnType<typeof openLogFor>>) => Promise<T>): Promise<T> {
  const opened = await openLogFor(flags);
  try {
    return await fn(opened);
  } finally {
    await opened.close();
  }
}

function logOptions(cmd: Command): Command {
  return cmd
    .option("--root <dir>", "ckd root: the log is found from ckd.json there")
    .option("--nats <url>", "NATS server(s) holding the log (nats://[user:password@]host:port, several separated by commas; default $CK_NATS, which keeps a password off the command line)")
    .option("--nats-tls-ca <file>", "CA certificate(s) (PEM) for a NATS server with TLS")
    .option("--nats-tls-cert <file>", "client certificate (PEM) for a NATS server that verifies clients")
    .option("--nats-tls-key <file>", "the client certificate's key (PEM)")
    .option("--nats-creds <file>", "a user's JWT credentials file (.creds) to log in with")
    .option("--nats-nkey <file>", "a file holding a user NKEY seed to log in with")
    .option("--stream <name>", "stream name (default from the root, else CK_EVENTS)");
}

async function main(): Promise<void> {
  const program = new Command("ck-replay").description("rebuild, verify and inspect projections from ck's event log");

  logOptions(program.command("rebuild"))
    .description("fold the log into a fresh projection directory and report events/s")
    .option("--out <dir>", "projection directory to write (default: a temporary one, removed after)")
    .option("--until <seq|time>", "stop at this sequence or time")
    .option("--allow-gaps", ALLOW_GAPS)
    .action(async (opts: LogFlags & { out?: string; until?: string; allowGaps?: boolean }) => {
      const until = parseUntil(opts.until);
      await withLog(opts, async (opened) => {
        const run = async (dir: string) => {
          const r = await rebuild(opened.log, dir, until, { allowGaps: opts.allowGaps });
          await r.db.close();
          for (const why of r.passedOver) process.stderr.write(`ck-replay: passed over: ${why}\n`);
          warnGaps(r.gaps, opened.log.stream);
          const rate = r.seconds > 0 ? Math.round(r.events / r.seconds) : r.events;
          const from = r.base ? ` from the base at sequence ${r.base.seq} (loaded in ${r.baseSeconds!.toFixed(3)} s)` : "";
          // Without --out the directory is gone by the time this is read: not named as if it stayed.
          const where = opts.out ? dir : "a temporary directory (removed; --out DIR keeps one)";
          process.stdout.write(`rebuilt ${r.events} events${from} to ${where} in ${r.seconds.toFixed(3)} s (${rate} events/s), applied sequence ${r.appliedSeq}\n`);
        };
        if (opts.out) await run(opts.out);
        else await withTempDir(run);
      });
    });

  logOptions(program.command("verify"))
    .description("rebuild from the log and compare with the live projection of a stopped ckd, byte for byte")
    .option("--allow-gaps", ALLOW_GAPS)
    .action(async (opts: LogFlags & { allowGaps?: boolean }) => {
      if (!opts.root) throw new Error("verify needs --root DIR (the ckd root whose projection to check)");
      const live = rootPaths(opts.root).meta;
      if (!existsSync(live)) throw new Error(`${live}: no projection to verify`);
      let liveDb: ProjectionDb;
      try {
        liveDb = await ProjectionDb.open(live);
      } catch (err) {
        throw new Error(`cannot open ${live} (is ckd still running? stop it first): ${(err as Error).message}`);
      }
      const opened = await openLogFor(opts);
      try {
        const diffs = await withTempDir(async (dir) => {
          const r = await rebuild(opened.log, join(dir, "meta"), { seq: liveDb.appliedSeq }, { allowGaps: opts.allowGaps });
          warnGaps(r.gaps, opened.log.stream, "the rebuild it is compared with was");
          try {
            if (r.appliedSeq !== liveDb.appliedSeq) {
              return [`live projection is at sequence ${liveDb.appliedSeq}, the log only reaches ${r.appliedSeq}`];
            }
            return await compareProjections(liveDb, r.db);
          } finally {
            await r.db.close();
          }
        });
        if (diffs.length) {
          process.stdout.write(`verify FAILED at sequence ${liveDb.appliedSeq}:\n${diffs.map((d) => `  ${d}\n`).join("")}`);
          process.exitCode = 1;
        } else {
          process.stdout.write(`verify OK: live projection equals a rebuild from the log at sequence ${liveDb.appliedSeq}\n`);
        }
      } finally {
        await liveDb.close();
        await opened.close();
      }
    });

  logOptions(program.command("show"))
    .description("print the state of one namespace (or all) as JSON, rebuilt from the log")
    .option("--namespace <ns>", "only this namespace")
    .option("--until <seq|time>", "state as of this sequence or time")
    .option("--allow-gaps", ALLOW_GAPS)
    .action(async (opts: LogFlags & { namespace?: string; until?: string; allowGaps?: boolean }) => {
      const until = parseUntil(opts.until);
      await withLog(opts, async (opened) => {
        await withTempDir(async (dir) => {
          const r = await rebuild(opened.log, dir, until, { allowGaps: opts.allowGaps });
          warnGaps(r.gaps, opened.log.stream);
          try {
            const q = new Queries(r.db);
            const names = opts.namespace ? [opts.namespace] : (await q.listNamespaces()).map((n) => n.name);
            const state = [];
            for (const name of names) {
              const ns = await q.getNamespace(name).catch(() => undefined);
              state.push({
                namespace: name,
                exists: ns !== undefined,
                labels: ns?.labels ?? {},
                images: (await q.listImages(name)).map((i) => ({ name: i.name, target: i.target, labels: i.labels })),
                containers: (await q.listContainers(name)).map((c) => ({ id: c.id, image: c.image, runtime: c.runtime.name, labels: c.labels })),
                tasks: q.listTasks(name).map((t) => ({ id: t.container_id, pid: t.pid, status: t.status, exit_status: t.exit_status, exited_at: t.exited_at })),
              });
            }
            process.stdout.write(JSON.stringify({ sequence: r.appliedSeq, namespaces: state }, null, 2) + "\n");
          } finally {
            await r.db.close();
          }
        });
      });
    });

  logOptions(program.command("events"))
    .description("the log's events with their sequence numbers: SEQ TIMESTAMP NAMESPACE TOPIC EVENT (ckd need not run)")
    .option("--from <seq|time>", "from this sequence, or the time the log stored it (default: the first stored)")
    .option("--to <seq|time>", "up to this sequence or stored time (default: the last); the times printed are the events' own")
    .option("--namespace <ns>", "only this namespace")
    .option("--topic <prefix>", "only topics starting with this (e.g. /images)")
    .action(async (opts: LogFlags & { from?: string; to?: string; namespace?: string; topic?: string }) => {
      const from = parseUntil(opts.from, "--from");
      const to = parseUntil(opts.to, "--to");
      await withLog(opts, async (opened) => {
        const gap = (first: number) => process.stderr.write(`ck-replay: the log's history before sequence ${first} was compacted away; events from ${first} on\n`);
        const deleted = (g: LogGap) => process.stderr.write(`ck-replay: ${describeSeqs(g)} ${g.from === g.to ? "was" : "were"} deleted from inside the log\n`);
        for await (const line of logEvents(opened.log, loadProtos(), { from, to, namespace: opts.namespace, topic: opts.topic }, gap, deleted)) process.stdout.write(line + "\n");
      });
    });

  logOptions(program.command("diff"))
    .description("what changed in the state between two points of the log (+ added, - removed, ~ changed: its fields)")
    .requiredOption("--from <seq|time>", "the earlier point")
    .option("--to <seq|time>", "the later point (default: the log's end)")
    .option("--namespace <ns>", "only this namespace")
    .option("--json", "one JSON object per change, with the values before and after")
    .option("--allow-gaps", ALLOW_GAPS)
    .action(async (opts: LogFlags & { from: string; to?: string; namespace?: string; json?: boolean; allowGaps?: boolean }) => {
      const from = parseUntil(opts.from, "--from");
      const to = parseUntil(opts.to, "--to");
      const later = (x: { seq?: number; time?: Date }, y: { seq?: number; time?: Date }) =>
        (x.seq !== undefined && y.seq !== undefined && x.seq > y.seq) || (x.time && y.time && x.time > y.time);
      if (later(from, to)) throw new Error(`--from ${opts.from} is after --to ${opts.to}`);
      await withLog(opts, async (opened) => {
        await withTempDir(async (dir) => {
          const a = await rebuild(opened.log, join(dir, "from"), from, { allowGaps: opts.allowGaps });
          try {
            const b = await rebuild(opened.log, join(dir, "to"), to, { allowGaps: opts.allowGaps });
            // Those of the later state include the earlier's.
            warnGaps(b.gaps, opened.log.stream, "the states compared were");
            try {
              if (a.appliedSeq > b.appliedSeq) throw new Error(`--from (sequence ${a.appliedSeq}) is after --to (sequence ${b.appliedSeq})`);
              const lines = diffProjections(a.db, b.db, opts.namespace);
              if (opts.json) {
                for (const l of lines) process.stdout.write(JSON.stringify({ from: a.appliedSeq, to: b.appliedSeq, ...l }, jsonBytes) + "\n");
                return;
              }
              process.stdout.write(`from sequence ${a.appliedSeq} to ${b.appliedSeq}: ${lines.length} change${lines.length === 1 ? "" : "s"}\n`);
              for (const l of formatDiff(lines)) process.stdout.write(l + "\n");
            } finally {
              await b.db.close();
            }
          } finally {
            await a.db.close();
          }
        });
      });
    });

  logOptions(program.command("base"))
    .description("store a base: the state at the log's last sequence, kept in NATS beside the log (<stream>_BASES)")
    .option("--break-lock", "take over the bases' lock from a base or compaction that died holding it")
    .option("--allow-gaps", ALLOW_GAPS)
    .action(async (opts: LogFlags & { breakLock?: boolean; allowGaps?: boolean }) => {
      await withLog(opts, async (opened) => {
        const warn = (m: string) => process.stderr.write(`ck-replay: warning: ${m}\n`);
        const { marker, fresh, gaps } = await baseNow(opened.log, opened.workDir, { breakLock: opts.breakLock, onWarning: warn, allowGaps: opts.allowGaps });
        warnGaps(gaps, opened.log.stream, "the base was");
        process.stdout.write(`${fresh ? "stored" : "already stored:"} ${describeBase(marker)}\n`);
      });
    });

  logOptions(program.command("bases"))
    .description("list the bases stored beside the log")
    .action(async (opts: LogFlags) => {
      await withLog(opts, async (opened) => {
        const bases = await new BaseStore(opened.log).list();
        const rows = [["SEQUENCE", "AT", "RECORDS", "BYTES", "FORMAT", "TAKEN"], ...bases.map((b) => [String(b.seq), b.seqTime, String(b.records), String(b.bytes), String(b.format), b.taken])];
        const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
        for (const r of rows) process.stdout.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ") + "\n");
      });
    });

  logOptions(program.command("compact"))
    .description("store a base at the log's last sequence, then remove the log's history before it (keeping --keep messages of it)")
    .option("--keep <n>", "messages before the base to keep in the log, for followers a little behind", "1000")
    .option("--keep-bases <k>", "cut after the k-th newest base instead of the new one: the history since it stays, and states from it on can still be shown", "1")
    .option("--sync-wait <seconds>", "on a stream of one replica on a server not ckd's own: how long the base must have been stored before the history goes (nats-server syncs every 2 min)", "130")
    .option("--break-lock", "take over the bases' lock from a base or compaction that died holding it")
    .option("--dry-run", "say what would be stored, cut and removed, and change nothing")
    .option("--allow-gaps", "take the base across messages deleted from inside the log (refused otherwise: once the history before it is cut, their loss can no longer be seen), with a warning listing them")
    .action(async (opts: LogFlags & { keep: string; keepBases: string; syncWait: string; breakLock?: boolean; dryRun?: boolean; allowGaps?: boolean }) => {
      const keep = parseCount(opts.keep, "--keep");
      const keepBases = parseCount(opts.keepBases, "--keep-bases", "bases");
      if (keepBases < 1) throw new Error(`--keep-bases: expected a number of bases (1 or more), got "${opts.keepBases}"`);
      const syncWait = parseCount(opts.syncWait, "--sync-wait", "seconds");
      await withLog(opts, async (opened) => {
        if (opts.dryRun) {
          const p = await planCompaction(opened.log, keep, keepBases, { allowGaps: opts.allowGaps });
          if (!p) {
            process.stdout.write(`the log (${opened.log.stream}) holds no message yet: nothing to compact\n`);
            return;
          }
          warnGaps(p.gaps, opened.log.stream, "the base would be");
          const cut =
            p.anchor === undefined
              ? `fewer than ${keepBases} bases: nothing would be cut`
              : p.cut <= p.first
                ? `nothing would be cut (with --keep ${keep}, every message from the log's first, sequence ${p.first}, stays)`
                : `would remove ${p.removes} message${p.removes === 1 ? "" : "s"} (sequences ${p.first} to ${p.cut - 1}), cutting after the base at sequence ${p.anchor}; ${p.firstAfter <= p.last ? `the log would hold sequences ${p.firstAfter} to ${p.last}` : `the log would hold no message (next is ${p.last + 1})`}`;
          for (const d of p.damaged) process.stderr.write(`warning: ${d}\n`);
          const stored = p.baseStored ? `a base at sequence ${p.last} is stored` : p.damaged.length ? `would store a base at sequence ${p.last} in place of the damaged one stored there` : `would store a base at sequence ${p.last}`;
          process.stdout.write(`dry run: ${stored}; ${cut}; ${p.prunes} older base${p.prunes === 1 ? "" : "s"} would be removed; nothing was changed\n`);
          return;
        }
        const onProgress = (m: string) => process.stdout.write(`${m}\n`);
        const r = await compact(opened.log, { keep, storeDir: opened.storeDir, workDir: opened.workDir, syncWaitMs: syncWait * 1000, onProgress, breakLock: opts.breakLock, keepBases, allowGaps: opts.allowGaps });
        warnGaps(r.gaps, opened.log.stream, "the base was");
        if (!r.base) {
          process.stdout.write(`the log (${opened.log.stream}) holds no message yet: nothing to compact\n`);
          return;
        }
        const kept = r.firstSeq <= r.lastSeq ? `the log now holds sequences ${r.firstSeq} to ${r.lastSeq}` : `the log now holds no message (next is ${r.lastSeq + 1})`;
        const after = !r.anchor
          ? `fewer than ${keepBases} bases: nothing cut yet; `
          : r.anchor.seq !== r.base!.seq
            ? `cut after the base at sequence ${r.anchor.seq} (--keep-bases ${keepBases}): states from it on can still be shown; `
            : "";
        process.stdout.write(`${describeBase(r.base!)}\n${after}removed ${r.removed} message${r.removed === 1 ? "" : "s"}; ${kept}; ${r.prunedBases} older base${r.prunedBases === 1 ? "" : "s"} removed\n`);
      });
    });

  await program.parseAsync();
}

// A reader that stops early (`ck-replay events | head`): stop quietly too, locks and temporary
// projections released, as for a stop signal.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code !== "EPIPE") process.stderr.write(`ck-replay: writing to stdout: ${err.message}\n`);
  void releaseHeldLocks().finally(() => process.exit(err.code === "EPIPE" ? 0 : 2));
});

// Stopped (ckd stopping its scheduled compaction, ^C): the bases' lock is released on the way out.
// SIGHUP (its terminal closed) the same way; SIGUSR1 is kept from opening Node's inspector.
for (const [sig, status] of [["SIGTERM", 143], ["SIGINT", 130], ["SIGHUP", 129]] as const) {
  process.once(sig, () => {
    void releaseHeldLocks().finally(() => process.exit(status));
  });
}
keepInspectorShut();

main().catch((err) => {
  if (isStopping()) return; // the signal handler exits; an error from what it cut short says nothing
  process.stderr.write(`ck-replay: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(2);
});
