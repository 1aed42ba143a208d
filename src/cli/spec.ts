// A default OCI runtime spec for `ck containers create` and `ck run`, as ctr builds one before an
// image's config is known (containerd 1.6's), and ctr run's flags that edit it.
import { CkError } from "../errdefs/errdefs.js";
export const SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/** containerd's default capabilities (oci/spec.go defaultUnixCaps). */
const DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"];

/** The devices a container may use, as containerd's WithDefaultUnixDevices allows them (all others denied). */
function defaultDeviceRules(): Array<Record<string, unknown>> {
  const rwm = "rwm";
  const allow = (major: number, minor?: number) => ({ allow: true, type: "c", major, ...(minor === undefined ? {} : { minor }), access: rwm });
  return [
    { allow: false, access: rwm },
    allow(1, 3), // /dev/null
    allow(1, 8), // /dev/random
    allow(1, 7), // /dev/full
    allow(5, 0), // /dev/tty
    allow(1, 5), // /dev/zero
    allow(1, 9), // /dev/urandom
    allow(5, 1), // /dev/console
    allow(136), // /dev/pts/*
    allow(5, 2), // /dev/ptmx
  ];
}

/**
 * The spec ctr starts from (containerd 1.6's populateDefaultUnixSpec with WithDefaultUnixDevices):
 * root with containerd's default capabilities in its bounding, permitted and effective sets,
 * 1024 open files, its masked and read-only paths, every device denied but the usual ones.
 */
export function defaultSpec(namespace: string, id: string, args: string[]): Record<string, unknown> {
  return {
    ociVersion: "1.0.2-dev",
    process: {
      user: { uid: 0, gid: 0 },
      args,
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      cwd: "/",
      capabilities: { bounding: [...DEFAULT_CAPS], permitted: [...DEFAULT_CAPS], effective: [...DEFAULT_CAPS] },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
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
      resources: { devices: defaultDeviceRules() },
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "network" }],
      maskedPaths: ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
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

/** ctr run's spec flags that ck run takes too (commands.ContainerFlags and run_unix.go). */
export interface RunSpecFlags {
  annotation?: string[];
  /** --label's, annotations too (ctr's WithAnnotations(labels), over --annotation's). */
  label?: string[];
  readOnly?: boolean;
  capAdd?: string[];
  capDrop?: string[];
  /** 0 (or absent) is unset, as ctr takes it; so for the shares and the memory limit. */
  cpus?: string;
  /** ctr's default is 1024. */
  cpuShares?: string;
  memoryLimit?: string;
  allowNewPrivs?: boolean;
}

const NAMESPACE_TYPES = new Set(["pid", "network", "mount", "ipc", "uts", "user", "cgroup"]);

interface FlaggedSpec {
  annotations?: Record<string, string>;
  root?: { path?: string; readonly?: boolean };
  process: { env?: string[]; noNewPrivileges?: boolean; capabilities?: Partial<Record<"bounding" | "effective" | "permitted", string[]>> };
  linux: { namespaces: Array<{ type: string; path?: string }>; resources?: { devices?: unknown[]; memory?: { limit?: number }; cpu?: { quota?: number; period?: number; shares?: number } } };
}

const bad = (what: string, why: string) => new CkError("InvalidArgument", `${what}: ${why}: invalid argument`);

/** runc's bounds for CPU shares on cgroup v1 (the kernel's). */
const MIN_SHARES = 2;
const MAX_SHARES = 262144;

function keyValues(flag: string, list: readonly string[], bare?: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of list) {
    const eq = a.indexOf("=");
    if (eq < 0 && bare !== undefined && a !== "") out[a] = bare;
    else if (eq <= 0) throw bad(`${flag} ${JSON.stringify(a)}`, bare !== undefined ? "want key=value, or a key alone (key=true)" : "want key=value");
    else out[a.slice(0, eq)] = a.slice(eq + 1);
  }
  return out;
}

/** --label's, as ctr's LabelArgs takes them: KEY=VALUE, or KEY alone for KEY=true. */
export function labelArgs(list: readonly string[]): Record<string, string> {
  return keyValues("--label", list, "true");
}

/**
 * Checks ctr run's spec flags and applies them as ctr does: InvalidArgument naming the flag
 * for a value ctr or runc would refuse, before anything is made.
 */
export function applyRunSpecFlags(spec: FlaggedSpec, f: RunSpecFlags): void {
  const annotations = { ...keyValues("--annotation", f.annotation ?? []), ...labelArgs(f.label ?? []) };
  if (Object.keys(annotations).length > 0) spec.annotations = { ...spec.annotations, ...annotations };
  if (f.readOnly) spec.root = { ...spec.root, readonly: true };
  const caps = (spec.process.capabilities ??= {});
  for (const [flag, list, add] of [["--cap-add", f.capAdd ?? [], true], ["--cap-drop", f.capDrop ?? [], false]] as const) {
    for (const c of list) {
      if (!/^CAP_[A-Z_]+$/.test(c)) throw bad(`${flag} ${JSON.stringify(c)}`, "capabilities are named with the CAP_ prefix, as CAP_NET_ADMIN");
      for (const set of ["bounding", "effective", "permitted"] as const) {
        const cur = caps[set] ?? [];
        caps[set] = add ? (cur.includes(c) ? cur : [...cur, c]) : cur.filter((x) => x !== c);
      }
    }
  }
  const whole = (flag: string, v: string, min: number, max: number) => {
    const n = /^\d+$/.test(v) ? Number(v) : NaN;
    if (!(n === 0 || (n >= min && n <= max))) throw bad(`${flag} ${JSON.stringify(v)}`, `want a whole number from ${min} to ${max} (0: none)`);
    return n;
  };
  const resources = (spec.linux.resources ??= {});
  if (f.cpus !== undefined) {
    // A CFS quota of at least 1 ms (the kernel's least) over 100 ms periods.
    const cpus = /^\d+(\.\d+)?$/.test(f.cpus) ? Number(f.cpus) : NaN;
    if (!(cpus === 0 || (cpus >= 0.01 && cpus <= 1_000_000))) throw bad(`--cpus ${JSON.stringify(f.cpus)}`, "want a number of CPUs from 0.01 (0: no limit)");
    if (cpus > 0) resources.cpu = { ...resources.cpu, quota: Math.trunc(cpus * 100_000), period: 100_000 };
  }
  const shares = whole("--cpu-shares", f.cpuShares ?? "1024", MIN_SHARES, MAX_SHARES);
  if (shares > 0) resources.cpu = { ...resources.cpu, shares };
  if (f.memoryLimit !== undefined) {
    const limit = whole("--memory-limit", f.memoryLimit, 1, Number.MAX_SAFE_INTEGER);
    if (limit > 0) resources.memory = { ...resources.memory, limit };
  }
  if (Object.keys(resources).length === 0) delete spec.linux.resources;
  if (f.allowNewPrivs) spec.process.noNewPrivileges = false;
}

/**
 * --with-ns TYPE:PATH flags: each namespace joined at an absolute path, in place of the
 * spec's own of that type (containerd's WithLinuxNamespace). Applied after --net-host, as ctr
 * does, so a network namespace given here is joined.
 */
export function parseWithNs(list: readonly string[]): Array<{ type: string; path: string }> {
  return list.map((w) => {
    const parts = w.split(":");
    if (parts.length !== 2 || !parts[1]!.startsWith("/")) throw bad(`--with-ns ${JSON.stringify(w)}`, "want TYPE:PATH with an absolute path, as pid:/proc/1234/ns/pid");
    if (!NAMESPACE_TYPES.has(parts[0]!)) throw bad(`--with-ns ${JSON.stringify(w)}`, `"${parts[0]}" is not a namespace type (${[...NAMESPACE_TYPES].join(", ")})`);
    return { type: parts[0]!, path: parts[1]! };
  });
}

export function withNamespaces(spec: { linux: { namespaces: Array<{ type: string; path?: string }> } }, list: ReadonlyArray<{ type: string; path: string }>): void {
  for (const ns of list) {
    const i = spec.linux.namespaces.findIndex((n) => n.type === ns.type);
    if (i >= 0) spec.linux.namespaces[i] = { ...ns };
    else spec.linux.namespaces.push({ ...ns });
  }
}

/** Capability names by bit (linux/capability.h), as containerd's pkg/cap knows them. */
const CAP_NAMES = [
  "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
  "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
  "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
  "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
  "CAP_CHECKPOINT_RESTORE",
];

/** The names of a process's effective capabilities from its /proc/PID/status text (unknown bits left out). */
export function effectiveCapabilities(status: string): string[] {
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  if (!hex) return [];
  const bits = BigInt("0x" + hex);
  return CAP_NAMES.filter((_, i) => ((bits >> BigInt(i)) & 1n) === 1n);
}

/** A device of the host's /dev, as the spec's `linux.devices` lists one. */
export interface SpecDevice {
  path: string;
  type: "c" | "b";
  major: number;
  minor: number;
  fileMode: number;
  uid: number;
  gid: number;
}

/**
 * ctr run --privileged (containerd's WithPrivileged, WithAllDevicesAllowed, WithHostDevices):
 * the client's own effective capabilities in the three sets, nothing masked or read-only,
 * sysfs and cgroup mounts writable, no seccomp, AppArmor or SELinux settings, every device
 * allowed and the host's devices made in the container.
 */
export function withPrivileged(
  spec: {
    process: { capabilities?: Partial<Record<"bounding" | "effective" | "permitted", string[]>>; apparmorProfile?: string; selinuxLabel?: string };
    mounts: SpecMount[];
    linux: { maskedPaths?: string[]; readonlyPaths?: string[]; seccomp?: unknown; mountLabel?: string; resources?: { devices?: unknown[] }; devices?: SpecDevice[] };
  },
  caps: readonly string[],
  hostDevices: readonly SpecDevice[],
): void {
  spec.process.capabilities = { bounding: [...caps], effective: [...caps], permitted: [...caps] };
  delete spec.process.apparmorProfile;
  delete spec.process.selinuxLabel;
  spec.linux.maskedPaths = [];
  spec.linux.readonlyPaths = [];
  for (const m of spec.mounts) if (m.type === "sysfs" || m.type === "cgroup") m.options = m.options.map((o) => (o === "ro" ? "rw" : o));
  delete spec.linux.seccomp;
  delete spec.linux.mountLabel;
  spec.linux.resources = { ...spec.linux.resources, devices: [{ allow: true, access: "rwm" }] };
  spec.linux.devices = [...(spec.linux.devices ?? []), ...hostDevices];
}
