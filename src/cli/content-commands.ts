// `ck content ...`: ingest, active, ls, path, rm, get, edit, label, all over the Content API
// (the blob path comes from the content plugin's `root` export in Introspection, as in
// containerd).
import type { Command } from "commander";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ApiClient } from "./client.js";
import { CkError, isAlreadyExists, isNotFound } from "../errdefs/errdefs.js";
import { humanDuration, humanSize, labelsLine, labelsString, parseLabelArgs, table } from "./format.js";
import { ApiContent, WRITE_CHUNK } from "./api-content.js";

type Action<A extends unknown[]> = (fn: (api: ApiClient, ...args: A) => Promise<void>) => (...args: unknown[]) => Promise<void>;

const CHUNK = 1 << 20;
const STAT = 0;
const WRITE = 1;
const COMMIT = 2;

/** Time since `ts`, as ctr prints it (go-units HumanDuration of time.Since). */
function age(ts: { seconds: number; nanos?: number } | undefined): string {
  if (!ts) return "-";
  return humanDuration(Date.now() - (Number(ts.seconds) * 1000 + Number(ts.nanos ?? 0) / 1e6));
}

const sha256Of = (data: Uint8Array): string => "sha256:" + createHash("sha256").update(data).digest("hex");

/**
 * Writes `data` under `ref` through Content.Write, resuming at the offset the server already
 * holds. AlreadyExists on the first message means the blob is there: success. What an earlier
 * try of another size left under the ref the daemon starts over itself (as containerd does).
 */
export async function writeBlob(api: ApiClient, ref: string, data: Buffer, opts: { expected?: string; labels?: Record<string, string> } = {}): Promise<string> {
  const w = api.lockstep<object>("content", "Write");
  try {
    let st: any;
    try {
      st = await w.send({ action: STAT, ref, total: data.length, expected: opts.expected ?? "" });
    } catch (err) {
      if (isAlreadyExists(err) && opts.expected) return opts.expected;
      throw err;
    }
    let offset = Number(st.offset ?? 0);
    // Resume only on a prefix of these bytes (what an earlier try of the same data left): a
    // WRITE at offset 0 drops what the ref holds and starts over (Truncate(0)).
    if (offset > data.length || (offset > 0 && st.digest !== sha256Of(data.subarray(0, offset)))) offset = 0;
    while (offset < data.length) {
      const chunk = data.subarray(offset, offset + CHUNK);
      const r: any = await w.send({ action: WRITE, offset, data: chunk });
      offset = Number(r.offset);
    }
    const done: any = await w.send({ action: COMMIT, total: data.length, offset: data.length, expected: opts.expected ?? "", labels: opts.labels ?? {} });
    return done.digest;
  } finally {
    w.end();
  }
}

/**
 * Writes a stream under `ref` as it is read, never holding more than the WRITEs in flight: a
 * blob the daemon has in this namespace already is done; one it has from another namespace
 * is committed without a byte; an ingest the daemon holds part of resumes when the expected
 * digest is given (the stream's first bytes, which it has, are read and dropped; the commit
 * checks the digest), else starts over. A stream of another length than `size` commits
 * nothing and drops the ingest; one longer is read and sent no further than `size`.
 */
async function ingestStream(content: ApiContent, ref: string, input: AsyncIterable<Buffer | string>, opts: { expected?: string; size?: number }): Promise<void> {
  const w = await content.open(ref, {
    expected: opts.expected,
    total: opts.size,
    onLocked: () => process.stderr.write(`ck: ref ${ref} is locked by another writer; waiting\n`),
  });
  const wrongSize = (read: number, expected: number | string) =>
    new CkError("FailedPrecondition", `read ${read} bytes from stdin, expected ${expected}: failed precondition`);
  if (w === "exists" || w.complete) {
    // Nothing to send; the input is still read to its end (a writer into a pipe gets no
    // SIGPIPE) and its length checked.
    let read = 0;
    for await (const c of input) read += c.length;
    if (opts.size !== undefined && read !== opts.size) {
      if (w !== "exists") w.close();
      throw wrongSize(read, opts.size);
    }
    if (w !== "exists") await w.commit(w.offset, opts.expected ?? "");
    return;
  }
  // Without an expected digest nothing would tell whether the held bytes are this input's.
  if (w.offset > 0 && !opts.expected) await w.truncate();
  let read = 0;
  let skip = w.offset;
  let run: Buffer[] = [];
  let runBytes = 0;
  let tooLong = false;
  try {
    for await (const c of input) {
      let b = typeof c === "string" ? Buffer.from(c) : c;
      read += b.length;
      // Past --expected-size nothing more is read or sent (the daemon would take it all).
      if (opts.size !== undefined && read > opts.size) {
        tooLong = true;
        break;
      }
      if (skip > 0) {
        const dropped = Math.min(skip, b.length);
        skip -= dropped;
        b = b.subarray(dropped);
      }
      if (b.length === 0) continue;
      run.push(b);
      runBytes += b.length;
      if (runBytes >= WRITE_CHUNK) {
        await w.write(run);
        run = [];
        runBytes = 0;
      }
    }
    if (runBytes > 0 && !tooLong) await w.write(run);
  } catch (err) {
    w.close();
    throw err;
  }
  if ((opts.size !== undefined && read !== opts.size) || skip > 0) {
    w.close();
    await content.abort(ref);
    throw wrongSize(read, opts.size ?? `at least ${w.offset} (what the daemon held of ${ref})`);
  }
  await w.commit(read, opts.expected ?? "");
}

async function readBlob(api: ApiClient, digest: string, sink: (b: Buffer) => void): Promise<void> {
  for await (const m of api.stream("content", "Read", { digest, offset: 0, size: 0 })) sink(Buffer.from(m.data));
}

export function registerContentCommands(program: Command, action: Action<any[]>, out: (s: string) => void): void {
  const content = program.command("content").description("manage content (blobs by digest, ingests by ref)");

  content
    .command("release-host <uuid>")
    .description("take a ckd gone for good (its uuid, on a log several ckd share) out of every blob record: what only it held leaves the namespaces")
    .option("-q, --quiet", "print nothing")
    .action(
      action(async (api, host: string, opts: { quiet?: boolean }) => {
        const res = await api.call("gc", "ReleaseHost", { host });
        if (opts.quiet) return;
        const rows = (res.namespaces ?? []) as { namespace: string; blobs: number }[];
        if (rows.length) out(table([["NAMESPACE", "BLOBS"], ...rows.map((r) => [r.namespace, String(r.blobs)])]));
        out(`released ${host} from ${rows.reduce((n, r) => n + Number(r.blobs), 0)} blob records\n`);
      }),
    );

  content
    .command("ingest <ref>")
    .description("write stdin into the content store under ref")
    .option("--expected-digest <digest>", "verify the content against this digest")
    .option("--expected-size <bytes>", "verify the content is this long")
    .action(
      action(async (api, ref: string, opts: { expectedDigest?: string; expectedSize?: string }) => {
        let size: number | undefined;
        if (opts.expectedSize !== undefined) {
          size = Number(opts.expectedSize);
          if (!/^\d+$/.test(opts.expectedSize) || !Number.isSafeInteger(size)) {
            throw new CkError("InvalidArgument", `--expected-size "${opts.expectedSize}" must be a number of bytes: invalid argument`);
          }
        }
        await ingestStream(new ApiContent(api), ref, process.stdin, { expected: opts.expectedDigest, size });
      }),
    );

  content
    .command("active")
    .description("list active ingests: REF SIZE AGE")
    .argument("[regexp]", "only refs matching")
    .action(
      action(async (api, re: string | undefined) => {
        const res = await api.call("content", "ListStatuses", { filters: re ? [`ref~=${JSON.stringify(re)}`] : [""] });
        out(table([["REF", "SIZE", "AGE"], ...(res.statuses ?? []).map((s: any) => [s.ref, `${humanSize(Number(s.offset))}/${s.total ? humanSize(Number(s.total)) : "?"}`, age(s.started_at)])]));
      }),
    );

  content
    .command("ls")
    .alias("list")
    .option("-q, --quiet", "print only digests")
    .argument("[filters...]")
    .description("list content: DIGEST SIZE AGE LABELS")
    .action(
      action(async (api, filters: string[], opts: { quiet?: boolean }) => {
        const rows: any[] = [];
        for await (const m of api.stream("content", "List", { filters: filters ?? [] })) rows.push(...(m.info ?? []));
        if (opts.quiet) return out(rows.map((i) => i.digest + "\n").join(""));
        out(table([["DIGEST", "SIZE", "AGE", "LABELS"], ...rows.map((i) => [i.digest, humanSize(Number(i.size)), age(i.created_at), labelsString(i.labels)])]));
      }),
    );

  content
    .command("path <digest>")
    .description("print the path of a blob on the daemon's host")
    .action(
      action(async (api, digest: string) => {
        await api.call("content", "Info", { digest });
        const res = await api.call("introspection", "Plugins", { filters: ["type==io.containerd.content.v1"] });
        const root = res.plugins?.[0]?.exports?.root;
        if (!root) throw new CkError("NotImplemented", "the daemon does not export its content root: not implemented");
        const [alg, hex] = digest.split(":");
        out(join(root, "blobs", alg!, hex!) + "\n");
      }),
    );

  content
    .command("rm [digests...]")
    .alias("delete")
    .description("remove content from this namespace; prints what it deleted")
    .action(
      action(async (api, digests: string[]) => {
        // As ctr: every digest is tried, a failure is reported and makes the exit status 1, and
        // only what was deleted is printed (an absent blob is neither). No digest is no work, so
        // `ck content ls -q | xargs ck content rm` on an empty store succeeds.
        let failed = false;
        for (const digest of digests ?? []) {
          try {
            await api.call("content", "Delete", { digest });
            out(digest + "\n");
          } catch (err) {
            if (isNotFound(err)) continue;
            failed = true;
            process.stderr.write(`ck: could not delete ${digest}: ${(err as Error).message}\n`);
          }
        }
        if (failed) process.exitCode = 1;
      }),
    );

  content
    .command("get <digest>")
    .description("write a blob to stdout")
    .action(
      action(async (api, digest: string) => {
        await readBlob(api, digest, (b) => process.stdout.write(b));
      }),
    );

  content
    .command("label <digest> [labels...]")
    .description("set labels on content (key= removes a label)")
    .action(
      action(async (api, digest: string, labelArgs: string[]) => {
        const labels = parseLabelArgs(labelArgs ?? []);
        const paths = Object.keys(labels).map((k) => `labels.${k}`);
        const res = paths.length
          ? await api.call("content", "Update", { info: { digest, labels }, update_mask: { paths } })
          : await api.call("content", "Info", { digest });
        out(labelsLine(res.info.labels) + "\n");
      }),
    );

  content
    .command("edit <digest>")
    .description("edit a copy of a blob in $EDITOR and store the result; prints its digest")
    .option("--editor <cmd>", "editor to run (default $EDITOR, else vi)")
    .action(
      action(async (api, digest: string, opts: { editor?: string }) => {
        const parts: Buffer[] = [];
        await readBlob(api, digest, (b) => parts.push(b));
        const dir = await mkdtemp(join(tmpdir(), "ck-edit-"));
        try {
          const file = join(dir, "blob");
          await writeFile(file, Buffer.concat(parts));
          // An empty EDITOR (or --editor "") is no editor: sh would run the blob itself.
          const editor = opts.editor || process.env.EDITOR || "vi";
          const r = spawnSync("/bin/sh", ["-c", `${editor} "$1"`, "sh", file], { stdio: "inherit" });
          if (r.status !== 0) throw new Error(`editor exited with ${r.status ?? r.signal}`);
          const data = await readFile(file);
          const next = sha256Of(data);
          await writeBlob(api, `edit-${digest}`, data, { expected: next });
          out(next + "\n");
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      }),
    );
}
