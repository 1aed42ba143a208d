// `ck snapshot ls|prepare|view|commit|rm|info|usage|mounts|tree|label` over the Snapshots
// API, with ctr's columns and habits (`--snapshotter`, default overlayfs or
// $CONTAINERD_SNAPSHOTTER; prepare and commit label gc.root so GC keeps what a user made).
import type { Command } from "commander";
import type { ApiClient } from "./client.js";
import { humanSize, labelsLine, parseLabelArgs, table } from "./format.js";
import { defaultSnapshotter } from "./defaults.js";
import { mountArgs } from "../snapshots/mount.js";

type Action<A extends unknown[]> = (fn: (api: ApiClient, ...args: A) => Promise<void>) => (...args: unknown[]) => Promise<void>;

const KIND_NAMES: Record<number, string> = { 0: "Unknown", 1: "View", 2: "Active", 3: "Committed" };
const GC_ROOT = "containerd.io/gc.root";

interface Info {
  name: string;
  parent: string;
  kind: number | string;
  labels: Record<string, string>;
  created_at?: { seconds: number; nanos: number };
  updated_at?: { seconds: number; nanos: number };
}

const kindName = (k: number | string) => (typeof k === "string" ? k.charAt(0) + k.slice(1).toLowerCase() : KIND_NAMES[k] ?? String(k));
const iso = (t?: { seconds: number; nanos: number }) => new Date(Number(t?.seconds ?? 0) * 1000 + Math.floor(Number(t?.nanos ?? 0) / 1e6)).toISOString();

async function listAll(api: ApiClient, snapshotter: string, filters: string[] = []): Promise<Info[]> {
  const out: Info[] = [];
  for await (const m of api.stream("snapshots", "List", { snapshotter, filters })) out.push(...((m.info ?? []) as Info[]));
  return out;
}

/** The snapshots below `parent` as tree lines (ctr's `snapshots tree`). */
export function treeLines(infos: readonly Info[]): string[] {
  const children = new Map<string, Info[]>();
  const names = new Set(infos.map((i) => i.name));
  for (const i of infos) {
    const p = i.parent && names.has(i.parent) ? i.parent : "";
    children.set(p, [...(children.get(p) ?? []), i]);
  }
  const lines: string[] = [];
  const walk = (p: string, depth: number) => {
    for (const c of (children.get(p) ?? []).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      lines.push(`${"  ".repeat(depth)}\\_ ${c.name}`);
      walk(c.name, depth + 1);
    }
  };
  walk("", 0);
  return lines;
}

export function registerSnapshotCommands(program: Command, action: Action<any[]>, out: (s: string) => void): void {
  const snap = program
    .command("snapshots")
    .alias("snapshot")
    .description("manage snapshots")
    .option("--snapshotter <name>", "snapshotter (native or overlayfs)", defaultSnapshotter());
  const sn = () => String(snap.opts().snapshotter);

  snap
    .command("ls [filters...]")
    .alias("list")
    .description("list snapshots: KEY PARENT KIND")
    .action(
      action(async (api, filters: string[]) => {
        const list = await listAll(api, sn(), filters ?? []);
        out(table([["KEY", "PARENT", "KIND"], ...list.map((i) => [i.name, i.parent, kindName(i.kind)])]));
      }),
    );

  const printMounts = (target: string, mounts: any[]) => {
    for (const m of mounts) out(`mount ${mountArgs({ type: m.type, source: m.source, options: m.options ?? [] }, target).join(" ")}\n`);
  };

  snap
    .command("prepare <key> [parent]")
    .description("prepare an active snapshot (labelled gc.root)")
    .option("--target <dir>", "print the mount command for this directory")
    .action(
      action(async (api, key: string, parent: string | undefined, opts: { target?: string }) => {
        const r = await api.call("snapshots", "Prepare", { snapshotter: sn(), key, parent: parent ?? "", labels: { [GC_ROOT]: new Date().toISOString() } });
        if (opts.target) printMounts(opts.target, r.mounts ?? []);
      }),
    );

  snap
    .command("view <key> <parent>")
    .description("create a read-only view of a committed snapshot")
    .option("--target <dir>", "print the mount command for this directory")
    .action(
      action(async (api, key: string, parent: string, opts: { target?: string }) => {
        const r = await api.call("snapshots", "View", { snapshotter: sn(), key, parent });
        if (opts.target) printMounts(opts.target, r.mounts ?? []);
      }),
    );

  snap
    .command("commit <name> <key>")
    .description("commit an active snapshot under a name (labelled gc.root)")
    .action(
      action(async (api, name: string, key: string) => {
        await api.call("snapshots", "Commit", { snapshotter: sn(), name, key, labels: { [GC_ROOT]: new Date().toISOString() } });
      }),
    );

  snap
    .command("rm <keys...>")
    .alias("delete")
    .alias("remove")
    .description("remove snapshots (refused while one has children)")
    .action(
      action(async (api, keys: string[]) => {
        for (const key of keys) await api.call("snapshots", "Remove", { snapshotter: sn(), key });
      }),
    );

  snap
    .command("info <key>")
    .description("print a snapshot's metadata as JSON")
    .action(
      action(async (api, key: string) => {
        const { info } = await api.call("snapshots", "Stat", { snapshotter: sn(), key });
        const i = info as Info;
        out(
          JSON.stringify(
            { Kind: kindName(i.kind), Name: i.name, Parent: i.parent || undefined, Labels: Object.keys(i.labels ?? {}).length ? i.labels : undefined, Created: iso(i.created_at), Updated: iso(i.updated_at) },
            null,
            4,
          ) + "\n",
        );
      }),
    );

  snap
    .command("usage [keys...]")
    .description("disk usage of snapshots: KEY SIZE INODES")
    .action(
      action(async (api, keys: string[]) => {
        const names = keys?.length ? keys : (await listAll(api, sn())).map((i) => i.name);
        const rows: string[][] = [["KEY", "SIZE", "INODES"]];
        for (const key of names) {
          const u = await api.call("snapshots", "Usage", { snapshotter: sn(), key });
          rows.push([key, humanSize(Number(u.size ?? 0)), String(Number(u.inodes ?? 0))]);
        }
        out(table(rows));
      }),
    );

  snap
    .command("mounts <target> <key>")
    .description("print the mount command(s) for an active or view snapshot")
    .action(
      action(async (api, target: string, key: string) => {
        const r = await api.call("snapshots", "Mounts", { snapshotter: sn(), key });
        printMounts(target, r.mounts ?? []);
      }),
    );

  snap
    .command("tree")
    .description("show the snapshots as a tree of parents and children")
    .action(
      action(async (api) => {
        const lines = treeLines(await listAll(api, sn()));
        out(lines.map((l) => l + "\n").join(""));
      }),
    );

  snap
    .command("label <key> [labels...]")
    .description("set (k=v) or remove (k=) labels of a snapshot; prints the labels")
    .action(
      action(async (api, key: string, labelArgs: string[]) => {
        const labels = parseLabelArgs(labelArgs ?? []);
        const paths = Object.keys(labels).map((k) => `labels.${k}`);
        const r = paths.length
          ? await api.call("snapshots", "Update", { snapshotter: sn(), info: { name: key, labels }, update_mask: { paths } })
          : await api.call("snapshots", "Stat", { snapshotter: sn(), key });
        // As ctr snapshots label and ck's other label commands: k=v,k=v on one line.
        out(labelsLine(r.info?.labels) + "\n");
      }),
    );

  snap
    .command("cleanup")
    .description("remove snapshot directories that no snapshot owns (left by crashes)")
    .action(
      action(async (api) => {
        await api.call("snapshots", "Cleanup", { snapshotter: sn() });
      }),
    );
}
