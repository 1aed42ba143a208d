// A container made from an image, as ctr's run.NewContainer makes one for `ctr run` and
// `ctr containers create`: the image unpacked if it is not yet, a snapshot prepared on it,
// the default spec with the image's config and ctr's container flags applied in ctr's order,
// the container's labels from the image (its config's and its record's), the command line
// and the image's stop signal.
import { promises as fs, readFileSync } from "node:fs";
import os from "node:os";
import type { Command } from "commander";
import type { ApiClient } from "./client.js";
import { CkError, isNotFound } from "../errdefs/errdefs.js";
import { collect } from "./format.js";
import { defaultSnapshotter } from "./defaults.js";
import { applyRunSpecFlags, defaultSpec, labelArgs, effectiveCapabilities, parseIdMapping, parseMountFlag, parseWithNs, SPEC_TYPE_URL, withEnv, withHostNetwork, withNamespaces, withPrivileged, withUserNamespace, type IdMapping, type SpecDevice, type SpecMount } from "./spec.js";
import { deviceOf, hostDevices } from "./host-devices.js";
import { remappedParent } from "./remap.js";
import { fromApiDescriptor, withLease } from "./transfer.js";
import { imageLayers, unpackImage } from "./unpack.js";
import { defaultPlatform } from "../remotes/platform.js";
import { userFromSnapshot } from "./image-user.js";
import { mountsFromApi } from "../snapshots/mount.js";
import { validateLabel } from "../commands/validation.js";

/** containerd's label for the signal that stops a container's task (the image's STOPSIGNAL). */
export const STOP_SIGNAL_LABEL = "io.containerd.image.config.stop-signal";
const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
export const DEFAULT_RUNTIME = "io.containerd.runc.v2";

/** ctr's container flags (commands.ContainerFlags and run_unix.go's platform flags) that ck takes. */
export interface ContainerOptions {
  snapshotter: string;
  runtime: string;
  label: string[];
  env: string[];
  envFile?: string;
  cwd?: string;
  user?: string;
  mount: string[];
  netHost?: boolean;
  uidmap?: string;
  gidmap?: string;
  annotation: string[];
  readOnly?: boolean;
  capAdd: string[];
  capDrop: string[];
  cpus?: string;
  cpuShares?: string;
  cpuQuota?: string;
  cpuPeriod?: string;
  memoryLimit?: string;
  withNs: string[];
  allowNewPrivs?: boolean;
  privileged?: boolean;
  tty?: boolean;
  device: string[];
  cgroup?: string;
}

/**
 * Adds ctr's container flags to `cmd` (`ck run` and `ck containers create` share them; as
 * ctr's, only run's --cpu-shares defaults to 1024).
 */
export function containerOptions(cmd: Command, kind: "run" | "create"): Command {
  const shares = "the task's CPU shares" + (kind === "run" ? " (ctr run's default: 1024)" : "");
  return cmd
    .option("--snapshotter <name>", "snapshotter to unpack the image into and prepare the container's snapshot on", defaultSnapshotter())
    .option("--runtime <name>", "runtime", DEFAULT_RUNTIME)
    .option("-t, --tty", "give the process a console (TERM=xterm, as ctr's)")
    .option("--label <k=v>", "container label, and annotation of the spec (repeatable; KEY alone is KEY=true)", collect, [])
    .option("--env <KEY=VALUE>", "set an environment variable over the image's, as ctr run --env (repeatable)", collect, [])
    .option("--env-file <file>", "environment variables from a file, one KEY=VALUE a line (before --env), as ctr's")
    .option("--cwd <dir>", "the process's working directory in the container")
    .option("-u, --user <user[:group]>", "run as this user (a name or uid, and group), looked up in the image as its own user is")
    .option("--mount <spec>", "add a mount, as ctr run --mount: type=bind,src=/host/dir,dst=/dir,options=rbind:ro; repeatable", collect, [])
    .option("--net-host", "the host's network: no network namespace of its own, the host's /etc/hosts and /etc/resolv.conf")
    .option("--uidmap <container:host:size>", "run in a user namespace with this uid mapping (with --gidmap), the image's files re-owned to match, as ctr run --uidmap")
    .option("--gidmap <container:host:size>", "the user namespace's gid mapping (with --uidmap)")
    .option("--annotation <k=v>", "an annotation of the spec (repeatable)", collect, [])
    .option("--read-only", "the container's root file system read-only")
    .option("--cap-add <CAP_NAME>", "add a capability (repeatable)", collect, [])
    .option("--cap-drop <CAP_NAME>", "drop a capability (repeatable)", collect, [])
    .option("--cpus <n>", "CPUs the task may use (a CFS quota over 100 ms periods)")
    .option("--cpu-quota <us>", "the CFS quota in microseconds (-1: none), with --cpu-period; not with --cpus")
    .option("--cpu-period <us>", "the CFS period in microseconds, with --cpu-quota")
    .option("--cpu-shares <n>", shares, kind === "run" ? "1024" : "0")
    .option("--memory-limit <bytes>", "the task's memory limit")
    .option("--device <path>", "a host device (or a directory of them) in the container, read, write and mknod allowed (repeatable)", collect, [])
    .option("--cgroup <path>", "the task's cgroup path (default /NAMESPACE/ID; empty: runc's choice)")
    .option("--with-ns <type:path>", "join an existing namespace, as pid:/proc/1234/ns/pid (repeatable)", collect, [])
    .option("--allow-new-privs", "let the process gain privileges (no no_new_privs)")
    .option("--privileged", "this client's capabilities, every device, nothing masked, as ctr run --privileged");
}

/**
 * The process of a container made from an image config: its args, env, working directory,
 * and the config's `User` as written (resolved against the image's files by image-user.ts).
 * `userEnv` (an --env-file's then --env's, bare keys already dropped) is laid over the image's
 * Env (or the default PATH), as containerd's WithImageConfig lays the spec's over it.
 */
export function processFromImage(config: any, args: string[], userEnv: readonly string[] = []): { args: string[]; env: string[]; cwd: string; imageUser: string } {
  const c = config?.config ?? {};
  const argv = args.length ? args : [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])];
  if (argv.length === 0) throw new CkError("InvalidArgument", "no command given and the image sets none: invalid argument");
  return {
    args: argv,
    env: withEnv(c.Env?.length ? c.Env : [DEFAULT_PATH], userEnv),
    cwd: c.WorkingDir || "/",
    imageUser: String(c.User ?? ""),
  };
}

/**
 * The environment the flags give before the image's is laid under it (ctr applies --env-file
 * and --env to the default spec, whose env is empty): a bare KEY unsets only what an earlier
 * line or flag set, never the image's variable.
 */
export function flagEnv(envFile: readonly string[] | undefined, env: readonly string[]): string[] {
  return withEnv(withEnv([], (envFile ?? []).filter((l) => l !== "")), env);
}

/**
 * A container's labels as ctr's NewContainer gives them: the image config's Labels, the image
 * record's labels (those a label may be; others are left out, as ctr warns and leaves them),
 * the command line's over both, and the image's stop signal (SIGTERM when it sets none).
 */
export function containerLabels(config: any, imageLabels: Readonly<Record<string, string>>, cmdLabels: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = { ...(config?.config?.Labels ?? {}) };
  for (const [k, v] of Object.entries(imageLabels)) {
    try {
      validateLabel(k, v);
      out[k] = v;
    } catch {
      process.stderr.write(`ck: the image's label ${JSON.stringify(k)} is not a valid container label: left out\n`);
    }
  }
  Object.assign(out, cmdLabels);
  out[STOP_SIGNAL_LABEL] = String(config?.config?.StopSignal || "SIGTERM");
  return out;
}

/** --device PATH: the device (or a directory's devices, walked as containerd's getDevices does). */
export async function devicesAt(p: string): Promise<SpecDevice[]> {
  const st = await fs.stat(p).catch((err: NodeJS.ErrnoException) => {
    throw new CkError("InvalidArgument", `--device ${JSON.stringify(p)}: ${err.code === "ENOENT" ? "no such file" : err.message}: invalid argument`);
  });
  if (st.isDirectory()) return hostDevices(p);
  const dev = deviceOf(p, await fs.lstat(p, { bigint: true }));
  if (!dev) throw new CkError("InvalidArgument", `--device ${JSON.stringify(p)}: not a device node: invalid argument`);
  return [dev];
}

/** --cwd: a path in the container, absolute (runc would fail on another only at start). */
export function checkCwd(cwd: string | undefined): void {
  if (cwd !== undefined && !cwd.startsWith("/")) throw new CkError("InvalidArgument", `--cwd ${JSON.stringify(cwd)}: must be an absolute path: invalid argument`);
}

/** --cpu-quota/--cpu-period as ctr takes them (-1 and 0: unset), checked against --cpus. */
function cfsFlags(opts: ContainerOptions): { quota: number; period: number } | undefined {
  const quota = opts.cpuQuota === undefined ? -1 : /^-?\d+$/.test(opts.cpuQuota) ? Number(opts.cpuQuota) : NaN;
  const period = opts.cpuPeriod === undefined ? 0 : /^\d+$/.test(opts.cpuPeriod) ? Number(opts.cpuPeriod) : NaN;
  if (!Number.isSafeInteger(quota) || quota < -1) throw new CkError("InvalidArgument", `--cpu-quota ${JSON.stringify(opts.cpuQuota)}: want microseconds, or -1 for none: invalid argument`);
  if (!Number.isSafeInteger(period)) throw new CkError("InvalidArgument", `--cpu-period ${JSON.stringify(opts.cpuPeriod)}: want microseconds: invalid argument`);
  if (quota === -1 && period === 0) return undefined;
  if (opts.cpus !== undefined && Number(opts.cpus) > 0) throw new CkError("InvalidArgument", "--cpus and --cpu-quota/--cpu-period cannot be used together: invalid argument");
  return { quota, period };
}

/** An --env-file's lines (InvalidArgument naming the file if it cannot be read). */
async function readEnvFile(file: string): Promise<string[]> {
  const text = await fs.readFile(file, "utf8").catch((err: Error) => {
    throw new CkError("InvalidArgument", `--env-file ${JSON.stringify(file)}: ${err.message}: invalid argument`);
  });
  return text.split(/\r?\n/);
}

type BuiltSpec = {
  process: Record<string, unknown> & { env?: string[] };
  mounts: SpecMount[];
  linux: { namespaces: Array<{ type: string }>; uidMappings?: IdMapping[]; gidMappings?: IdMapping[]; cgroupsPath?: string; devices?: SpecDevice[]; resources?: { devices?: unknown[]; cpu?: Record<string, number> } };
};

/**
 * Makes container `id` from `image` (its process `args`, else the image's), as ctr's
 * NewContainer: every flag is checked before anything is made; the image is unpacked into the
 * snapshotter if it is not yet; the snapshot and the container are made under a lease, and the
 * snapshot is removed again if the container cannot be made.
 */
export async function createContainer(api: ApiClient, image: string, id: string, args: string[], opts: ContainerOptions, consoleSize?: () => object): Promise<void> {
  const mounts: SpecMount[] = opts.mount.map(parseMountFlag);
  checkCwd(opts.cwd);
  if ((opts.uidmap === undefined) !== (opts.gidmap === undefined)) throw new CkError("InvalidArgument", "--uidmap and --gidmap go together: invalid argument");
  const idMaps = opts.uidmap !== undefined ? { uid: parseIdMapping(opts.uidmap, "--uidmap"), gid: parseIdMapping(opts.gidmap!, "--gidmap") } : undefined;
  const userEnv = flagEnv(opts.envFile === undefined ? undefined : await readEnvFile(opts.envFile), opts.env);
  const cmdLabels = labelArgs(opts.label);
  const specFlags = { annotation: opts.annotation, label: opts.label, readOnly: opts.readOnly, capAdd: opts.capAdd, capDrop: opts.capDrop, cpus: opts.cpus, cpuShares: opts.cpuShares, memoryLimit: opts.memoryLimit, allowNewPrivs: opts.allowNewPrivs };
  const cfs = cfsFlags(opts);
  const joined = parseWithNs(opts.withNs);
  const devices = (await Promise.all(opts.device.map(devicesAt))).flat();
  const img = (await api.call("images", "Get", { name: image })).image;
  const target = fromApiDescriptor(img.target);
  const { chainIds, configJson } = await imageLayers(api, target, defaultPlatform());
  const top = chainIds.at(-1);
  if (!top) throw new CkError("FailedPrecondition", `image ${image} has no layers: failed precondition`);
  const spec = defaultSpec(api.opts.namespace ?? "default", id, []) as BuiltSpec;
  const { imageUser, ...proc } = processFromImage(configJson, args, userEnv);
  Object.assign(spec.process, proc);
  if (opts.tty) {
    // As containerd's WithTTY: a console, and TERM appended (after the image's env).
    Object.assign(spec.process, { terminal: true }, consoleSize?.() ?? {});
    spec.process.env = [...(spec.process.env ?? []), "TERM=xterm"];
  }
  // As ctr: --privileged first (its capabilities then edited by --cap-add/--cap-drop).
  if (opts.privileged) withPrivileged(spec as unknown as Parameters<typeof withPrivileged>[0], effectiveCapabilities(readFileSync("/proc/self/status", "utf8")), await hostDevices());
  applyRunSpecFlags(spec as unknown as Parameters<typeof applyRunSpecFlags>[0], specFlags);
  if (opts.cwd) spec.process.cwd = opts.cwd;
  spec.mounts.push(...mounts);
  if (opts.netHost) withHostNetwork(spec, os.hostname());
  if (idMaps) withUserNamespace(spec, idMaps.uid, idMaps.gid);
  withNamespaces(spec, joined);
  if (cfs) spec.linux.resources = { ...spec.linux.resources, cpu: { ...spec.linux.resources?.cpu, quota: cfs.quota, period: cfs.period } };
  if (opts.cgroup !== undefined) spec.linux.cgroupsPath = opts.cgroup;
  for (const d of devices) {
    (spec.linux.devices ??= []).push(d);
    const resources = (spec.linux.resources ??= {});
    (resources.devices ??= []).push({ allow: true, type: d.type, major: d.major, minor: d.minor, access: "rwm" });
  }
  const labels = containerLabels(configJson, img.labels ?? {}, cmdLabels);
  const sn = opts.snapshotter;
  // Under a lease until the container refers to the snapshot: GC takes neither before.
  await withLease(api, async (metadata) => {
    // As ctr: an image not unpacked for the snapshotter is unpacked first.
    const unpacked = await api.call("snapshots", "Stat", { snapshotter: sn, key: top }, { metadata }).then(
      () => true,
      (err) => (isNotFound(err) ? false : Promise.reject(err)),
    );
    if (!unpacked) await unpackImage(api, target, { snapshotter: sn, metadata });
    const prepareOn = (parent: string) => api.call("snapshots", "Prepare", { snapshotter: sn, key: id, parent }, { metadata });
    // In a user namespace, from the image's files re-owned to the namespace's root; made
    // again if a garbage collection took the one found before it was used (as ctr does).
    const remapped = () => remappedParent(api, sn, top, idMaps!.uid.hostID, idMaps!.gid.hostID, metadata);
    const prepared = idMaps ? await prepareOn(await remapped()).catch(async (err) => (isNotFound(err) ? prepareOn(await remapped()) : Promise.reject(err))) : await prepareOn(top);
    try {
      // A named user is looked up in the image's own /etc/passwd, as ctr does.
      spec.process.user = await userFromSnapshot(opts.user ?? imageUser, mountsFromApi(prepared.mounts), opts.user !== undefined ? "--user" : "image user");
      await api.call(
        "containers",
        "Create",
        {
          container: {
            id,
            image,
            labels,
            runtime: { name: opts.runtime },
            spec: { type_url: SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(spec)) },
            snapshotter: sn,
            snapshot_key: id,
          },
        },
        { metadata },
      );
    } catch (err) {
      await api.call("snapshots", "Remove", { snapshotter: sn, key: id }).catch(() => undefined);
      throw err;
    }
  });
}
