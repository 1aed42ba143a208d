// A default OCI runtime spec for `ck containers create`, as ctr builds one before an image's
// config is known: the process, a root at "rootfs", containerd's default mounts, namespaces.
import { CkError } from "../errdefs/errdefs.js";
export const SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

export function defaultSpec(namespace: string, id: string, args: string[]): Record<string, unknown> {
  return {
    ociVersion: "1.0.2-dev",
    process: {
      user: { uid: 0, gid: 0 },
      args,
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      cwd: "/",
      capabilities: {
        bounding: ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"],
      },
      noNewPrivileges: true,
    },
    root: { path: "rootfs" },
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      // A console (-t) is a pty of the container's own devpts instance.
      { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/run", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    ],
    linux: {
      cgroupsPath: `/${namespace}/${id}`,
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "network" }],
      maskedPaths: ["/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware"],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
}

/**
 * An environment with `overrides` applied as ctr's --env does (containerd's WithEnv): KEY=VALUE
 * replaces KEY's value where the list has it (in place) or is appended; a bare KEY unsets it.
 */
export function withEnv(env: readonly string[], overrides: readonly string[]): string[] {
  const out: Array<string | undefined> = [...env];
  const at = new Map<string, number>();
  env.forEach((e, i) => at.set(e.split("=", 1)[0]!, i));
  for (const o of overrides) {
    const eq = o.indexOf("=");
    const key = eq < 0 ? o : o.slice(0, eq);
    const i = at.get(key);
    if (eq < 0) {
      if (i !== undefined) out[i] = undefined;
    } else if (i !== undefined && out[i] !== undefined) {
      out[i] = o;
    } else {
      at.set(key, out.length);
      out.push(o);
    }
  }
  return out.filter((e): e is string => e !== undefined);
}

export interface SpecMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/**
 * A --mount flag as ctr reads it: comma-separated key=value fields (type, source or src,
 * destination or dst, options as colon-separated words). Any other key, or a field without
 * `=`, is InvalidArgument naming it; so is a mount without a destination.
 */
export function parseMountFlag(flag: string): SpecMount {
  const m: SpecMount = { destination: "", type: "", source: "", options: [] };
  for (const field of flag.split(",")) {
    const eq = field.indexOf("=");
    if (eq < 0) throw new CkError("InvalidArgument", `--mount ${JSON.stringify(flag)}: ${JSON.stringify(field)} is not key=value: invalid argument`);
    const [key, val] = [field.slice(0, eq), field.slice(eq + 1)];
    if (key === "type") m.type = val;
    else if (key === "source" || key === "src") m.source = val;
    else if (key === "destination" || key === "dst") m.destination = val;
    else if (key === "options") m.options = val.split(":");
    else throw new CkError("InvalidArgument", `--mount ${JSON.stringify(flag)}: mount option "${key}" is not supported: invalid argument`);
  }
  if (!m.destination.startsWith("/")) throw new CkError("InvalidArgument", `--mount ${JSON.stringify(flag)}: the destination must be an absolute path: invalid argument`);
  return m;
}

/**
 * The host's network, as ctr run --net-host: no network namespace of the container's own, the
 * host's /etc/hosts and /etc/resolv.conf bound read-only, HOSTNAME set to the host's name.
 */
export function withHostNetwork(spec: { process: { env?: string[] }; mounts: SpecMount[]; linux: { namespaces: Array<{ type: string }> } }, hostname: string): void {
  spec.linux.namespaces = spec.linux.namespaces.filter((n) => n.type !== "network");
  for (const file of ["/etc/hosts", "/etc/resolv.conf"]) spec.mounts.push({ destination: file, type: "bind", source: file, options: ["rbind", "ro"] });
  spec.process.env = withEnv(spec.process.env ?? [], [`HOSTNAME=${hostname}`]);
}

/** One id mapping of a user namespace (runtime-spec `linux.uidMappings`/`gidMappings`). */
export interface IdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

/**
 * A --uidmap/--gidmap flag as ctr reads it: `container-id:host-id:size`, three unsigned
 * 32-bit numbers, a size of at least 1; anything else is InvalidArgument naming the flag.
 */
export function parseIdMapping(flag: string, what: string): IdMapping {
  const parts = flag.split(":");
  const nums = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : NaN));
  if (parts.length !== 3 || nums.some((n) => !Number.isInteger(n) || n > 0xffffffff) || nums[2] === 0) {
    throw new CkError("InvalidArgument", `${what} ${JSON.stringify(flag)}: want container-id:host-id:size (numbers, size at least 1): invalid argument`);
  }
  return { containerID: nums[0]!, hostID: nums[1]!, size: nums[2]! };
}

/** A user namespace with these mappings, as ctr run --uidmap/--gidmap (containerd's WithUserNamespace). */
export function withUserNamespace(spec: { linux: { namespaces: Array<{ type: string }>; uidMappings?: IdMapping[]; gidMappings?: IdMapping[] } }, uid: IdMapping, gid: IdMapping): void {
  if (!spec.linux.namespaces.some((n) => n.type === "user")) spec.linux.namespaces.push({ type: "user" });
  spec.linux.uidMappings = [uid];
  spec.linux.gidMappings = [gid];
}
