// The host's devices as containerd's HostDevices lists them for a privileged container: every
// character and block device under /dev, its subdirectories walked but for pts, shm, fd,
// mqueue, .lxc, .lxd-mounts and .udev, and /dev/console left out.
import { promises as fs } from "node:fs";
import path from "node:path";
import type { SpecDevice } from "./spec.js";

const SKIPPED_DIRS = new Set(["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"]);

/** Linux's major and minor numbers of a dev_t (glibc's gnu_dev_major/minor). */
export function devNumbers(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

/** A device node's entry in the spec (`linux.devices`), from its lstat; undefined for anything else. */
export function deviceOf(p: string, st: import("node:fs").BigIntStats): SpecDevice | undefined {
  if (!(st.isCharacterDevice() || st.isBlockDevice())) return undefined;
  return { path: p, type: st.isBlockDevice() ? "b" : "c", ...devNumbers(st.rdev), fileMode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid) };
}

export async function hostDevices(dir = "/dev"): Promise<SpecDevice[]> {
  const out: SpecDevice[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (!SKIPPED_DIRS.has(e.name)) out.push(...(await hostDevices(p)));
      continue;
    }
    if (e.name === "console") continue;
    const st = await fs.lstat(p, { bigint: true }).catch(() => undefined);
    const dev = st && deviceOf(p, st);
    if (dev) out.push(dev);
  }
  return out;
}
