#!/usr/bin/env node
// ck: ck's CLI, one more client of the containerd v1 API (nothing here bypasses the API).
// Flags and columns follow ctr: -n/--namespace (CONTAINERD_NAMESPACE), --address
// (CK_ADDRESS), -q for names only.
import { Command } from "commander";
import { ApiClient } from "./client.js";
import { defaultAddress, defaultSnapshotter } from "./defaults.js";
import { CkError, classPhrase, invalidArgument, isAlreadyExists, isClass, isNotFound, outOfRange } from "../errdefs/errdefs.js";
import { parseRfc3339 } from "../commands/validation.js";
import { collect, eventJson, goTime, labelsLine, labelsString, parseLabelArgs, table, binarySize } from "./format.js";
import { registerContentCommands } from "./content-commands.js";
import { registerDistributionCommands } from "./distribution-commands.js";
import { registerArchiveCommands } from "./archive-commands.js";
import { registerLeaseCommands } from "./lease-commands.js";
import { registerSnapshotCommands } from "./snapshot-commands.js";
import { commandAfterDashes, registerTaskCommands } from "./task-commands.js";
import { containerOptions, createContainer, type ContainerOptions } from "./container-create.js";
import { fromApiDescriptor, imageContents, mapLimit, type ImageContents } from "./transfer.js";
import { imageLayers } from "./unpack.js";
import { defaultPlatform } from "../remotes/platform.js";
import { deferExtraCaCerts } from "../remotes/registry.js";
import { CK_VERSION } from "../version.js";

// Before anything reads the environment or dials a registry (tools/ck-launcher.cjs).
deferExtraCaCerts();

interface Globals {
  address: string;
  namespace: string;
}

function clientOf(cmd: Command): ApiClient {
  const g = cmd.optsWithGlobals<Globals>();
  return new ApiClient({ address: g.address, namespace: g.namespace });
}

/** Wraps an action: opens a client, runs, closes, maps errors to `ck: msg` and exit 1. */
function action<A extends unknown[]>(fn: (api: ApiClient, ...args: A) => Promise<void>) {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const api = clientOf(cmd);
    try {
      await fn(api, ...(args.slice(0, -1) as A));
    } finally {
      api.close();
    }
  };
}

function out(s: string): void {
  process.stdout.write(s);
}

// A reader that stops early (`ck content get D | head -c 10`, `ck events | grep -m1 x`): ck
// stops too, quietly, as a Unix tool killed by SIGPIPE would, instead of dying on an unhandled
// EPIPE with a stack trace.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  process.stderr.write(`ck: writing to stdout: ${err.message}\n`);
  process.exit(1);
});

const program = new Command("ck")
  .description("ck: containers metadata over an event-sourced containerd v1 API")
  .option("--address <socket>", "ckd's socket (env CK_ADDRESS)", defaultAddress())
  .option("-n, --namespace <ns>", "namespace (env CONTAINERD_NAMESPACE)", process.env.CONTAINERD_NAMESPACE || "default")
  .version(CK_VERSION);

// --- namespaces
const ns = program.command("namespaces").alias("namespace").alias("ns").description("manage namespaces");
ns.command("create <name> [labels...]")
  .description("create a namespace with optional key=value labels")
  .action(
    action(async (api, name: string, labels: string[]) => {
      await api.call("namespaces", "Create", { namespace: { name, labels: parseLabelArgs(labels ?? []) } });
    }),
  );
ns.command("ls")
  .alias("list")
  .option("-q, --quiet", "print only names")
  .description("list namespaces")
  .action(
    action(async (api, opts: { quiet?: boolean }) => {
      const res = await api.call("namespaces", "List", {});
      const list = (res.namespaces ?? []) as { name: string; labels: Record<string, string> }[];
      if (opts.quiet) return out(list.map((n) => n.name + "\n").join(""));
      out(table([["NAME", "LABELS"], ...list.map((n) => [n.name, labelsString(n.labels) === "-" ? "" : labelsString(n.labels)])]));
    }),
  );
ns.command("label <name> [labels...]")
  .description("set labels on a namespace (key= removes a label)")
  .action(
    action(async (api, name: string, labelArgs: string[]) => {
      const labels = parseLabelArgs(labelArgs ?? []);
      for (const [k, v] of Object.entries(labels)) {
        await api.call("namespaces", "Update", { namespace: { name, labels: { [k]: v } }, update_mask: { paths: [`labels.${k}`] } });
      }
    }),
  );
ns.command("rm <names...>")
  .alias("remove")
  .description("remove namespaces (they must be empty)")
  .action(
    action(async (api, names: string[]) => {
      let failed = false;
      for (const name of names) {
        try {
          await api.call("namespaces", "Delete", { name });
          out(name + "\n");
        } catch (err) {
          if (isNotFound(err)) {
            out(name + "\n");
            continue;
          }
          failed = true;
          process.stderr.write(`ck: unable to delete ${name}: ${(err as Error).message}\n`);
        }
      }
      if (failed) process.exitCode = 1;
    }),
  );

// --- images
/** Image walks (content reads) run at once by images ls and check. */
const IMAGE_WALKS = 8;

/** An image's content walked once per target digest within one command (tags share a target). */
function contentsByTarget(api: ApiClient): (target: any) => Promise<ImageContents> {
  const walks = new Map<string, Promise<ImageContents>>();
  return (target) => {
    const d = fromApiDescriptor(target);
    let p = walks.get(d.digest);
    if (!p) {
      p = imageContents(api, d, defaultPlatform());
      walks.set(d.digest, p);
    }
    return p;
  };
}

const images = program.command("images").alias("image").alias("i").description("manage images");
images
  .command("ls")
  .alias("list")
  .option("-q, --quiet", "print only refs")
  .description("list images: REF TYPE DIGEST SIZE PLATFORMS LABELS")
  .argument("[filters...]")
  .action(
    action(async (api, filters: string[], opts: { quiet?: boolean }) => {
      const res = await api.call("images", "List", { filters: filters ?? [] });
      const list = (res.images ?? []) as any[];
      if (opts.quiet) return out(list.map((i) => i.name + "\n").join(""));
      // SIZE and PLATFORMS come from the image's content, as ctr reads them ("-" when absent):
      // walked once per target (tags share one), several at once.
      const walk = contentsByTarget(api);
      const contents = await mapLimit(list, IMAGE_WALKS, (i) => walk(i.target).catch(() => undefined));
      const rows = list.map((i, n) => {
        const c = contents[n];
        const complete = c !== undefined && c.present.length === c.objects.length;
        const size = c && complete ? binarySize(c.objects.reduce((a, d) => a + d.size, 0)) : "-";
        return [i.name, i.target?.media_type ?? "", i.target?.digest ?? "", size, c?.platforms.join(",") || "-", labelsString(i.labels)];
      });
      out(table([["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"], ...rows]));
    }),
  );
images
  .command("check")
  .argument("[filters...]")
  .option("-q, --quiet", "print only refs")
  .option("--snapshotter <name>", "snapshotter to look for the unpacked image in ($CONTAINERD_SNAPSHOTTER, else overlayfs)", defaultSnapshotter())
  .description("check that an image's content is all present: REF TYPE DIGEST STATUS SIZE UNPACKED")
  .action(
    action(async (api, filters: string[], opts: { quiet?: boolean; snapshotter: string }) => {
      const res = await api.call("images", "List", { filters: filters ?? [] });
      const rows: string[][] = [["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"]];
      let incomplete = false;
      const walk = contentsByTarget(api);
      const checked = await mapLimit((res.images ?? []) as any[], IMAGE_WALKS, async (i) => {
        const c = await walk(i.target);
        const n = c.objects.length;
        const k = c.present.length;
        const have = c.present.reduce((a, d) => a + d.size, 0);
        const all = c.objects.reduce((a, d) => a + d.size, 0);
        // As ctr: without the platform's manifest what the image needs is unknown, not counted.
        const [status, size] = !c.manifest
          ? [`unavailable (${k}/?)`, `${binarySize(have)}/?`]
          : [`${k === n ? "complete" : "incomplete"} (${k}/${n})`, `${binarySize(have)}/${binarySize(all)}`];
        return [i.name, i.target?.media_type ?? "", i.target?.digest ?? "", status, size, String(await unpacked(api, i, opts.snapshotter, c))];
      });
      for (const row of checked) {
        if (!row[3]!.startsWith("complete")) incomplete = true;
        rows.push(row);
      }
      // As ctr: -q lists only the complete images, and no image at all prints nothing, not
      // even the header.
      if (opts.quiet) out(checked.filter((r) => r[3]!.startsWith("complete")).map((r) => r[0] + "\n").join(""));
      else if (checked.length) out(table(rows));
      if (incomplete) process.exitCode = 1;
    }),
  );
images
  .command("create <name>")
  .description("register an image pointing at a target descriptor already in the content store (ck pull does this for a registry's image)")
  .requiredOption("--digest <digest>", "target digest (sha256:...)")
  .requiredOption("--size <bytes>", "target size in bytes")
  .requiredOption("--media-type <type>", "target media type")
  .option("--label <k=v>", "label (repeatable)", collect, [])
  .action(
    action(async (api, name: string, opts: { digest: string; size: string; mediaType: string; label: string[] }) => {
      const size = Number(opts.size);
      if (!Number.isInteger(size)) throw new CkError("InvalidArgument", `--size "${opts.size}" must be an integer: invalid argument`);
      const res = await api.call("images", "Create", {
        image: { name, labels: parseLabelArgs(opts.label), target: { media_type: opts.mediaType, digest: opts.digest, size } },
      });
      out(res.image.name + "\n");
    }),
  );
images
  .command("tag <source> <targets...>")
  .option("--force", "replace an existing target")
  .description("create references to an existing image")
  .action(
    action(async (api, source: string, targets: string[], opts: { force?: boolean }) => {
      const src = (await api.call("images", "Get", { name: source })).image;
      for (const t of targets) {
        const image = { name: t, labels: src.labels, target: src.target };
        try {
          await api.call("images", "Create", { image });
        } catch (err) {
          if (!(opts.force && isAlreadyExists(err))) throw err;
          await api.call("images", "Delete", { name: t });
          await api.call("images", "Create", { image });
        }
        out(t + "\n");
      }
    }),
  );
images
  .command("label <name> [labels...]")
  .description("set labels on an image (key= removes a label)")
  .action(
    action(async (api, name: string, labelArgs: string[]) => {
      const labels = parseLabelArgs(labelArgs ?? []);
      const paths = Object.keys(labels).map((k) => `labels.${k}`);
      const res = await api.call("images", "Update", { image: { name, labels }, update_mask: { paths } });
      out(labelsLine(res.image.labels) + "\n");
    }),
  );
images
  .command("rm <names...>")
  .alias("remove")
  .option("--sync", "wait for garbage collection")
  .description("remove images")
  .action(
    action(async (api, names: string[], opts: { sync?: boolean }) => {
      // As ctr: every name is tried; a failure is reported and makes the exit status 1.
      let failed = false;
      for (const name of names) {
        try {
          await api.call("images", "Delete", { name, sync: !!opts.sync });
          out(name + "\n");
        } catch (err) {
          if (isNotFound(err)) {
            process.stderr.write(`WARN: ${name}: image not found\n`);
            continue;
          }
          failed = true;
          process.stderr.write(`ck: unable to delete ${name}: ${(err as Error).message}\n`);
        }
      }
      if (failed) process.exitCode = 1;
    }),
  );

// --- containers
const containers = program.command("containers").alias("container").alias("c").description("manage containers");
containerOptions(
  containers
    .command("create <image> <id> [args...]")
    .description("create a container from an image, as ctr containers create: the image unpacked first if it is not, a snapshot named ID prepared on it, the image's config, labels and stop signal, the program after -- (else the image's); no task is started (ck tasks start ID)"),
  "create",
).action(
  action(async (api, image: string, id: string, args: string[], opts: ContainerOptions) => {
    await createContainer(api, image, id, commandAfterDashes(args, "ck containers create IMAGE ID -- PROGRAM [ARGS...]"), opts);
  }),
);
containers
  .command("ls")
  .alias("list")
  .option("-q, --quiet", "print only ids")
  .argument("[filters...]")
  .description("list containers: CONTAINER IMAGE RUNTIME")
  .action(
    action(async (api, filters: string[], opts: { quiet?: boolean }) => {
      const list: any[] = [];
      for await (const m of api.stream("containers", "ListStream", { filters: filters ?? [] })) list.push(m.container);
      if (opts.quiet) return out(list.map((c) => c.id + "\n").join(""));
      out(table([["CONTAINER", "IMAGE", "RUNTIME"], ...list.map((c) => [c.id, c.image || "-", c.runtime?.name ?? ""])]));
    }),
  );
containers
  .command("info <id>")
  .description("show a container as JSON")
  .action(
    action(async (api, id: string) => {
      const c = (await api.call("containers", "Get", { id })).container;
      out(JSON.stringify(containerJson(c), null, 4) + "\n");
    }),
  );
containers
  .command("label <id> [labels...]")
  .description("set labels on a container (key= removes a label)")
  .action(
    action(async (api, id: string, labelArgs: string[]) => {
      const labels = parseLabelArgs(labelArgs ?? []);
      const res = await api.call("containers", "Update", {
        container: { id, labels },
        update_mask: { paths: Object.keys(labels).map((k) => `labels.${k}`) },
      });
      out(labelsLine(res.container.labels) + "\n");
    }),
  );
/** Task statuses as the Tasks API numbers them. */
const TASK_STATUS = ["unknown", "created", "running", "stopped", "paused", "pausing"];

/**
 * As ctr's deleteContainer: a created or stopped task goes first (the daemon refuses to delete
 * a container that has one), anything else is refused here, before the container is touched;
 * then, unless kept, the container's snapshot (containerd's WithSnapshotCleanup, which ctr
 * passes: left to GC, the snapshot would still hold the ID a moment later, and an immediate
 * `ck run` of the same ID fail AlreadyExists), then the container.
 */
async function deleteContainer(api: ApiClient, id: string, keepSnapshot = false): Promise<void> {
  const container = (await api.call("containers", "Get", { id })).container;
  let task: any;
  try {
    task = (await api.call("tasks", "Get", { container_id: id })).process;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (task) {
    const status = TASK_STATUS[task.status ?? 0] ?? String(task.status);
    if (status !== "created" && status !== "stopped") throw new CkError("FailedPrecondition", `cannot delete a non stopped container: ${status}`);
    await api.call("tasks", "Delete", { container_id: id });
  }
  if (!keepSnapshot && container.snapshot_key) {
    if (!container.snapshotter) throw new CkError("InvalidArgument", "container.Snapshotter must be set to cleanup rootfs snapshot: invalid argument");
    try {
      await api.call("snapshots", "Remove", { snapshotter: container.snapshotter, key: container.snapshot_key });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  await api.call("containers", "Delete", { id });
}
containers
  .command("rm <ids...>")
  .alias("delete")
  .description("remove containers, with their snapshots (as ctr containers rm)")
  .option("--keep-snapshot", "do not remove the container's snapshot")
  .action(
    action(async (api, ids: string[], opts: { keepSnapshot?: boolean }) => {
      // As ctr: every id is tried; a failure is reported and makes the exit status 1.
      let failed = false;
      for (const id of ids) {
        try {
          await deleteContainer(api, id, opts.keepSnapshot === true);
        } catch (err) {
          failed = true;
          process.stderr.write(`ck: failed to delete container ${JSON.stringify(id)}: ${(err as Error).message}\n`);
        }
      }
      if (failed) process.exitCode = 1;
    }),
  );

// --- events
program
  .command("events")
  .description("tail events: TIMESTAMP NAMESPACE TOPIC EVENT (JSON); all namespaces unless -n/--namespace is given")
  .option("--topic <topic>", "only events whose topic starts with this (e.g. /images)")
  .option("--from-seq <n>", "replay the log from this sequence first")
  .option("--since <time>", "replay events stored since this time (RFC 3339) first")
  .argument("[filters...]", "containerd filters, e.g. 'topic==\"/images/create\"'")
  .action(
    action(async (api, filters: string[], opts: { topic?: string; fromSeq?: string; since?: string }) => {
      // Like ctr, events of every namespace by default; an explicit -n/--namespace narrows.
      const namespace = program.getOptionValueSource("namespace") === "cli" ? api.opts.namespace : undefined;
      if (opts.fromSeq !== undefined && opts.since !== undefined) throw invalidArgument("--from-seq and --since are exclusive");
      // Checked here, by the flags' names (ckd would name its metadata keys, ck-from-seq and ck-since).
      if (opts.fromSeq !== undefined && !/^[1-9]\d{0,15}$/.test(opts.fromSeq)) throw invalidArgument(`--from-seq ${JSON.stringify(opts.fromSeq)} must be a sequence number, 1 or more`);
      if (opts.since !== undefined && !parseRfc3339(opts.since)) throw invalidArgument(`--since ${JSON.stringify(opts.since)} must be an RFC 3339 time with its zone (e.g. 2026-12-01T10:00:00Z)`);
      const clauses: string[] = [];
      if (namespace) clauses.push(`namespace==${JSON.stringify(namespace)}`);
      if (opts.topic) clauses.push(`topic~=${JSON.stringify("^" + escapeRegex(opts.topic))}`);
      let all = filters ?? [];
      if (clauses.length) all = all.length ? all.map((f) => [f, ...clauses].join(",")) : [clauses.join(",")];
      // ck's own events too (content commits, leases, GC), which ctr is not sent.
      const md: Record<string, string> = { "ck-events": "all" };
      if (opts.fromSeq !== undefined) md["ck-from-seq"] = opts.fromSeq;
      if (opts.since !== undefined) md["ck-since"] = opts.since;
      const abort = new AbortController();
      process.once("SIGINT", () => abort.abort());
      process.once("SIGTERM", () => abort.abort());
      const events = api.stream("events", "Subscribe", { filters: all }, { metadata: md, signal: abort.signal });
      for await (const env of refusedStart(events, opts)) {
        let body = "";
        if (env.event) {
          try {
            const { typeName, value } = api.protos.unpackAny(env.event);
            body = JSON.stringify(eventJson(api.protos, typeName, value));
          } catch {
            body = `{"type_url":${JSON.stringify(env.event.type_url)}}`;
          }
        }
        out(`${goTime(env.timestamp ?? { seconds: 0, nanos: 0 })} ${env.namespace} ${env.topic} ${body}\n`);
      }
    }),
  );

/**
 * `events`, with a start before the log's (refused OutOfRange, ckd's message naming its
 * metadata key) said in the flags the user gave, from the facts the refusal carries.
 */
async function* refusedStart<T>(events: AsyncGenerator<T>, opts: { fromSeq?: string; since?: string }): AsyncGenerator<T> {
  try {
    yield* events;
  } catch (err) {
    const first = err instanceof CkError && err.errorClass === "OutOfRange" ? err.facts["ck-first-seq"] : undefined;
    if (first === undefined) throw err;
    const compacted = `the log now starts at sequence ${first}, the history before it compacted away (ck-replay compact)`;
    if (opts.fromSeq !== undefined) throw outOfRange(`--from-seq ${opts.fromSeq}: ${compacted}: ask for --from-seq ${first} or later, or leave --from-seq out for new events only`, { cause: err });
    const until = (err as CkError).facts["ck-cut-until"];
    if (opts.since !== undefined && until !== undefined) {
      throw outOfRange(`--since ${opts.since}: ${compacted}, events up to ${until} with it: ask for a --since after ${until}, or --from-seq ${first}`, { cause: err });
    }
    throw err;
  }
}

// --- content
registerContentCommands(program, action as never, out);
registerLeaseCommands(program, action as never, out);
registerSnapshotCommands(program, action as never, out);
registerTaskCommands(program, action as never, out);

// --- registries: fetch, pull, push, fetch-object
registerDistributionCommands(program, action as never);
// Where ctr has them too: ctr images pull|push, ctr content fetch|fetch-object.
registerDistributionCommands(images, action as never, ["pull", "push"]);
registerArchiveCommands(images, action as never);
registerDistributionCommands(program.commands.find((c) => c.name() === "content")!, action as never, ["fetch", "fetch-object"]);

// --- version
program
  .command("version")
  .description("print client and server versions")
  .action(
    action(async (api) => {
      const v = await api.call("version", "Version", {});
      const s = await api.call("introspection", "Server", {});
      out(`Client:\n  Version:  ${CK_VERSION}\n\nServer:\n  Version:  ${v.version}\n  Revision: ${v.revision}\n  UUID: ${s.uuid}\n`);
    }),
  );

// --- plugins (ctr plugins ls): what loaded, and why what did not
const plugins = program.command("plugins").alias("plugin").description("list ckd's plugins (introspection), as ctr plugins");
plugins
  .command("ls")
  .alias("list")
  .argument("[filters...]", "containerd filters, e.g. 'type==io.containerd.snapshotter.v1'")
  .option("-q, --quiet", "print only the plugin ids")
  .option("-d, --detailed", "print each plugin's requirements, exports and error")
  .description("list plugins: TYPE ID PLATFORMS STATUS (ok, skip: not usable here, error)")
  .action(
    action(async (api, filters: string[], opts: { quiet?: boolean; detailed?: boolean }) => {
      const list = ((await api.call("introspection", "Plugins", { filters: filters ?? [] })).plugins ?? []) as any[];
      if (opts.quiet) return out(list.map((p) => `${p.id}\n`).join(""));
      const platforms = (p: any) => ((p.platforms ?? []) as any[]).map((x) => [x.os, x.architecture, x.variant].filter(Boolean).join("/")).join(",") || "-";
      // ctr's rule: an init error carrying plugin.ErrSkipPlugin's words is a skip.
      const status = (p: any) => (!p.init_error ? "ok" : String(p.init_error.message ?? "").includes("skip plugin") ? "skip" : "error");
      if (!opts.detailed) return out(table([["TYPE", "ID", "PLATFORMS", "STATUS"], ...list.map((p) => [p.type, p.id, platforms(p), status(p)])]));
      out(
        list
          .map((p) => {
            const lines = [`Type:      ${p.type}`, `ID:        ${p.id}`];
            if (p.requires?.length) lines.push(`Requires:  ${p.requires.join(", ")}`);
            if (p.platforms?.length) lines.push(`Platforms: ${platforms(p)}`);
            const exports = Object.entries((p.exports ?? {}) as Record<string, string>).sort(([a], [b]) => (a < b ? -1 : 1));
            if (exports.length) lines.push(`Exports:   ${exports.map(([k, v]) => `${k}=${v}`).join(", ")}`);
            if (p.init_error) lines.push(`Status:    ${status(p)}: ${p.init_error.message}`);
            return lines.join("\n") + "\n";
          })
          .join("\n"),
      );
    }),
  );

/** As ctr's images check: the snapshot of the image's top chain ID exists in this snapshotter. */
async function unpacked(api: ApiClient, image: any, snapshotter: string, walked: ImageContents): Promise<boolean> {
  try {
    const { chainIds } = await imageLayers(api, fromApiDescriptor(image.target), defaultPlatform(), { walked });
    const top = chainIds[chainIds.length - 1];
    if (!top) return false;
    await api.call("snapshots", "Stat", { snapshotter, key: top });
    return true;
  } catch (err) {
    if (isNotFound(err) || isClass(err, "FailedPrecondition")) return false;
    throw err;
  }
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function containerJson(c: any): any {
  const spec = c.spec?.value?.length ? safeJson(Buffer.from(c.spec.value).toString()) : undefined;
  return {
    ID: c.id,
    Labels: c.labels,
    Image: c.image,
    Runtime: { Name: c.runtime?.name, Options: c.runtime?.options ? { type_url: c.runtime.options.type_url } : null },
    SnapshotKey: c.snapshot_key,
    Snapshotter: c.snapshotter,
    CreatedAt: c.created_at ? new Date(c.created_at.seconds * 1000 + c.created_at.nanos / 1e6).toISOString() : undefined,
    UpdatedAt: c.updated_at ? new Date(c.updated_at.seconds * 1000 + c.updated_at.nanos / 1e6).toISOString() : undefined,
    Extensions: c.extensions,
    Spec: spec,
  };
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

/** Resolves once everything written to the stream so far has left the process. */
const drained = (s: NodeJS.WriteStream) => new Promise<void>((resolve) => s.write("", () => resolve()));

/**
 * Once the command is done (its output written out: stdout and stderr can be asynchronous
 * pipes), ck exits at once instead of waiting for its gRPC channel and timers to wind down and
 * for Node to tear its environment down: ~6 ms from the exit event to the process's end of a
 * `ck pull` here (2026-11-30). The exit handlers (the launcher's code cache) still run.
 */
async function exitWith(code: number): Promise<never> {
  await Promise.all([drained(process.stdout), drained(process.stderr)]);
  process.exit(code);
}

/**
 * grpc-js's words for a socket it cannot reach ("No connection established. Last error:
 * Error: connect ENOENT /run/ck.sock. Resolution note: ") said as a user needs them.
 */
function plainMessage(msg: string): string {
  const m = /^No connection established\. Last error: (?:Error: )?(.*?)\.? Resolution note: ?(.*)$/s.exec(msg);
  if (!m) return msg;
  const cause = m[1]!.trim();
  // The socket is there, this user may not use it: "is it running?" would send them looking elsewhere.
  const hint = /\b(EACCES|EPERM)\b/.test(cause)
    ? "permission denied: ckd's socket (mode 0660) is for root and the members of its --socket-group"
    : "is it running, and is --address (CK_ADDRESS) its socket?";
  return `cannot reach ckd: ${cause}${m[2]!.trim() ? ` (${m[2]!.trim()})` : ""}: ${hint}`;
}

program.parseAsync().then(
  () => exitWith(Number(process.exitCode ?? 0)),
  (err) => {
    const msg = plainMessage(err instanceof Error ? err.message : String(err));
    process.stderr.write(`ck: ${msg}\n`);
    if (err instanceof CkError && !msg.endsWith(classPhrase(err.errorClass))) process.stderr.write(`(${classPhrase(err.errorClass)})\n`);
    return exitWith(1);
  },
);
