// Transfer progress as containerd's pull prints it: one line per object
// (`layer-sha256:…: downloading |+++      | 12.0 MiB/30.1 MiB`), then
// `elapsed: 0.9 s total: 86.0 MiB (95.5 MiB/s)`. On a terminal the lines are redrawn in place
// (cli-progress); otherwise each object prints one plain line when it finishes.
import cliProgress from "cli-progress";
import { binarySize } from "./format.js";

export type JobStatus = "waiting" | "resolving" | "resolved" | "downloading" | "uploading" | "committing" | "done" | "exists" | "mounted" | "failed";

export interface ProgressSink {
  /** Registers an object; `name` is the ref ctr would show (`layer-sha256:…`). */
  add(name: string, total: number, status?: JobStatus): ProgressJob;
  /** Ends the display with the summary line. */
  finish(): void;
}

export interface ProgressJob {
  update(offset: number, status?: JobStatus): void;
  /** Bytes that actually crossed the network for this object (the throughput line counts them). */
  transferred(bytes: number): void;
}

const BAR_WIDTH = 40;

/** containerd's progress.Bar: `|` + `+` for the done part + spaces + `|`. */
export function bar(fraction: number, width = BAR_WIDTH): string {
  const f = Math.max(0, Math.min(1, Number.isFinite(fraction) ? fraction : 0));
  const n = Math.round(f * (width - 2));
  return `|${"+".repeat(n)}${" ".repeat(width - 2 - n)}|`;
}

/** containerd's progress.Bytes: binary units with one decimal ("12.0 MiB"), as images ls. */
export const bytes = binarySize;

export interface JobState {
  name: string;
  status: JobStatus;
  offset: number;
  total: number;
}

/** `layer-sha256:<12 hex>` for narrow terminals; other names unchanged. */
export function shortName(name: string): string {
  return name.replace(/(sha256:[0-9a-f]{12})[0-9a-f]{52}$/, "$1");
}

/** One object's line, the name padded to `nameWidth`. */
export function jobLine(j: JobState, nameWidth = 0): string {
  const name = `${j.name}:`.padEnd(nameWidth + 1);
  const status = j.status.padEnd(12);
  if (j.status === "downloading" || j.status === "uploading") {
    return `${name} ${status} ${bar(j.total ? j.offset / j.total : 0)} ${bytes(j.offset)}/${bytes(j.total)}`;
  }
  if (j.status === "done" || j.status === "exists" || j.status === "mounted" || j.status === "resolved") {
    return `${name} ${status} ${bar(1)}`;
  }
  return `${name} ${status}`.trimEnd();
}

/** The closing line: elapsed seconds, bytes of all objects, and the network rate. */
export function summaryLine(elapsedMs: number, totalBytes: number, transferredBytes: number): string {
  const s = elapsedMs / 1000;
  const rate = s > 0 ? transferredBytes / s : 0;
  return `elapsed: ${s.toFixed(1)} s total: ${bytes(totalBytes)} (${bytes(rate)}/s)`;
}

/** A sink that shows nothing (quiet mode, library use). */
export const silentProgress: ProgressSink = {
  add: () => ({ update() {}, transferred() {} }),
  finish() {},
};

/**
 * The display on `stream`: redrawn bars on a terminal, plain lines (one per finished object,
 * then the summary) elsewhere.
 */
export function progressDisplay(stream: NodeJS.WriteStream = process.stdout, exit: (code: number) => void = process.exit): ProgressSink {
  const started = Date.now();
  const jobs: JobState[] = [];
  let transferred = 0;
  let nameWidth = 0;
  const tty = !!stream.isTTY;
  const multi = tty
    ? new cliProgress.MultiBar(
        {
          stream,
          hideCursor: true,
          clearOnComplete: false,
          stopOnComplete: false,
          fps: 10,
          format: (_opts, _params, payload: { job?: JobState; summary?: boolean }) => {
            if (payload.summary) return summaryLine(Date.now() - started, jobs.reduce((a, j) => a + j.total, 0), transferred);
            // A terminal too narrow for full digests gets short ones (cli-progress cuts lines at its width).
            const columns = stream.columns || 80;
            if (nameWidth + 80 <= columns) return jobLine(payload.job!, nameWidth);
            const short = shortName(payload.job!.name);
            return jobLine({ ...payload.job!, name: short }, Math.min(nameWidth, shortName("manifest-sha256:" + "0".repeat(64)).length));
          },
        },
        cliProgress.Presets.legacy,
      )
    : undefined;
  // cli-progress hides the cursor and turns line wrapping off until stop(): a ^C must not
  // leave the terminal that way.
  const unhook = multi ? stopOnSignal(() => multi.stop(), exit) : () => undefined;
  // cli-progress draws bars in creation order: the summary is re-created last after each add.
  let summaryBar: cliProgress.SingleBar | undefined;
  return {
    add(name, total, status = "waiting") {
      const job: JobState = { name, status, offset: 0, total };
      jobs.push(job);
      nameWidth = Math.max(nameWidth, name.length);
      const b = multi?.create(Math.max(total, 1), 0, { job });
      if (multi) {
        if (summaryBar) multi.remove(summaryBar);
        summaryBar = multi.create(1, 0, { summary: true });
      }
      let printed = false;
      const final = (s: JobStatus) => s === "done" || s === "exists" || s === "mounted" || s === "failed";
      return {
        update(offset, s) {
          job.offset = offset;
          if (s) job.status = s;
          if (b) b.update(Math.min(offset, Math.max(total, 1)), { job });
          else if (final(job.status) && !printed) {
            printed = true;
            stream.write(jobLine(job) + "\n");
          }
        },
        transferred(n) {
          transferred += n;
        },
      };
    },
    finish() {
      unhook();
      const line = summaryLine(Date.now() - started, jobs.reduce((a, j) => a + j.total, 0), transferred);
      if (multi) {
        summaryBar?.update(1, { summary: true });
        multi.stop();
      } else stream.write(line + "\n");
    },
  };
}

/**
 * Until the returned function is called, SIGINT and SIGTERM run `stop` (putting the terminal
 * back) and then exit as the signal would have: 130 or 143.
 */
export function stopOnSignal(stop: () => void, exit: (code: number) => void = process.exit): () => void {
  const on = (sig: NodeJS.Signals) => {
    off();
    try {
      stop();
    } finally {
      exit(sig === "SIGINT" ? 130 : 143);
    }
  };
  const off = () => {
    process.removeListener("SIGINT", on);
    process.removeListener("SIGTERM", on);
  };
  process.once("SIGINT", on);
  process.once("SIGTERM", on);
  return off;
}
