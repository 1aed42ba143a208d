// Mounting a snapshotter's Mount list onto a host directory and taking it down again, with
// the host's mount(8)/umount(8) (Node has no mount syscall). Bind and overlay mounts need root.
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { CkError, failedPrecondition, invalidArgument, unavailable } from "../errdefs/errdefs.js";
import type { Mount } from "./types.js";

/** Runs a host command; resolves with stdout, rejects with its stderr as the message. */
export function runCommand(file: string, args: string[], cwd?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: "utf8", cwd }, (err, stdout, stderr) => {
      if (err) {
        const msg = (stderr || err.message).trim();
        reject(Object.assign(new Error(`${file} ${args.join(" ")}: ${msg}`), { stderr: msg }));
      } else resolve(stdout);
    });
  });
}

/** The `mount` arguments for one Mount, as `ctr snapshots mounts` prints them. */
export function mountArgs(m: Mount, target: string): string[] {
  if (m.options.some((o) => o.includes(","))) {
    // mount(8) splits options at commas, so a path holding one cannot be passed through.
    throw invalidArgument(`mount option containing "," (${m.options.join(" ")})`);
  }
  const args = ["-t", m.type, m.source, target];
  if (m.options.length > 0) args.push("-o", m.options.join(","));
  return args;
}

/** The kernel takes at most a page of mount options; past this, overlay paths are made relative. */
const MAX_OPTIONS_BYTES = 4096 - 512;

/**
 * An overlay whose options would not fit a page (an image of ~55 layers and more, each lower
 * ~70 bytes): its directories relative to their longest common parent, to be mounted from
 * there (containerd's compactLowerdirOption; the kernel resolves them from the mounting
 * process's working directory). Anything else as it is.
 */
export function compactOverlay(m: Mount): { mount: Mount; cwd?: string } {
  if (m.type !== "overlay" || Buffer.byteLength(m.options.join(",")) <= MAX_OPTIONS_BYTES) return { mount: m };
  const keys = ["lowerdir", "upperdir", "workdir"];
  const dirs: string[] = [];
  for (const o of m.options) {
    const k = o.slice(0, o.indexOf("="));
    if (keys.includes(k)) dirs.push(...o.slice(k.length + 1).split(":"));
  }
  if (dirs.length === 0 || !dirs.every((d) => path.isAbsolute(d))) return { mount: m };
  let common = path.dirname(dirs[0]!);
  while (!dirs.every((d) => d.startsWith(common.endsWith("/") ? common : `${common}/`)) && common !== "/") common = path.dirname(common);
  if (common === "/") return { mount: m };
  const options = m.options.map((o) => {
    const k = o.slice(0, o.indexOf("="));
    if (!keys.includes(k)) return o;
    return `${k}=${o.slice(k.length + 1).split(":").map((d) => path.relative(common, d)).join(":")}`;
  });
  return { mount: { ...m, options }, cwd: common };
}

/**
 * What the kernel takes: a page of options, its terminating NUL included. Past it, mount(2)
 * cuts the string and still mounts: an overlay's lowest layers (lowerdir comes last) would be
 * silently missing.
 */
const PAGE_OPTIONS_BYTES = 4095;

const OVERLAY_DIR_KEYS = ["lowerdir", "upperdir", "workdir"];

/**
 * An overlay whose options do not fit a page even relative to their common parent (more than
 * ~137 layers of ck's 25-character snapshot ids; containerd's ids are short integers, which
 * fit 500): each directory becomes a short name ("0", "1", ...), a symlink to it in a
 * directory of its own that the mount is made from. The kernel resolves the links as it
 * mounts; they can go once it has. `links` pairs each name with the absolute directory.
 */
export function linkedOverlay(m: Mount): { mount: Mount; links: [string, string][] } {
  const links: [string, string][] = [];
  const options = m.options.map((o) => {
    const k = o.slice(0, o.indexOf("="));
    if (!OVERLAY_DIR_KEYS.includes(k)) return o;
    const names = o.slice(k.length + 1).split(":").map((dir) => {
      if (!path.isAbsolute(dir)) throw invalidArgument(`overlay ${k} "${dir}" is not absolute`);
      links.push([String(links.length), dir]);
      return String(links.length - 1);
    });
    return `${k}=${names.join(":")}`;
  });
  const mount = { ...m, options };
  if (Buffer.byteLength(options.join(",")) > PAGE_OPTIONS_BYTES) {
    throw invalidArgument(`overlay of ${links.length} directories: its mount options do not fit the kernel's page even as short names`);
  }
  return { mount, links };
}

/** Mounts one entry, from a directory of short links when its options would not fit a page. */
async function mountOne(m: Mount, target: string): Promise<void> {
  const { mount, cwd } = compactOverlay(m);
  if (mount.type !== "overlay" || Buffer.byteLength(mount.options.join(",")) <= PAGE_OPTIONS_BYTES) {
    await runCommand("mount", mountArgs(mount, target), cwd);
    return;
  }
  const linked = linkedOverlay(m);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "ck-overlay-"));
  try {
    for (const [name, to] of linked.links) await fs.symlink(to, path.join(dir, name));
    await runCommand("mount", mountArgs(linked.mount, target), dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * Mounts every entry of `mounts` on `target`, in order (later ones stack on earlier ones, as
 * containerd's mount.All does). On failure, whatever was mounted is taken down again.
 */
export async function mountAll(mounts: readonly Mount[], target: string): Promise<void> {
  if (mounts.length === 0) throw invalidArgument("mounts: empty list");
  if (process.getuid?.() !== 0) {
    throw failedPrecondition(`mounting ${mounts[0].type} on ${target} requires root`);
  }
  let done = 0;
  try {
    for (const m of mounts) {
      await mountOne(m, path.resolve(target));
      done++;
    }
  } catch (err) {
    if (done > 0) await unmountAll(target).catch(() => undefined);
    if (err instanceof CkError) throw err;
    throw unavailable(`mount ${target}: ${(err as Error).message}`, { cause: err });
  }
}

/** Whether something is mounted exactly at `target` (per /proc/self/mountinfo). */
export async function isMountPoint(target: string): Promise<boolean> {
  const real = await fs.realpath(target).catch(() => path.resolve(target));
  const info = await fs.readFile("/proc/self/mountinfo", "utf8");
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
  return info.split("\n").some((line) => unescape(line.split(" ")[4] ?? "") === real);
}

/** A busy mount point is tried again this many times, this far apart (containerd's unmount). */
const BUSY_TRIES = 50;
const BUSY_WAIT_MS = 50;

/** Unmounts everything stacked on `target` until it is no longer a mount point. */
export async function unmountAll(target: string): Promise<void> {
  for (let i = 0, busy = 0; i < 64 && (await isMountPoint(target)); i++) {
    try {
      await runCommand("umount", [target]);
    } catch (err) {
      // Busy for a moment (a descriptor being closed, a process leaving): as containerd does.
      if (/busy/i.test((err as Error).message) && ++busy < BUSY_TRIES) {
        await new Promise((r) => setTimeout(r, BUSY_WAIT_MS));
        continue;
      }
      throw unavailable(`umount ${target}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** Where temporary mounts go: the system's temp directory, or ckd's own (useTempMountDir). */
let tempMountParent: string | undefined;

/**
 * Makes `dir` (ckd's `<root>/tmpmounts`, as containerd's) the home of this process's temporary
 * mounts, first unmounting and removing what a ckd killed on this root left there (what
 * cannot be is reported, not fatal). Only for the one process that owns the root.
 */
export async function useTempMountDir(dir: string): Promise<{ removed: number; failed: string[] }> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  let removed = 0;
  const failed: string[] = [];
  for (const name of await fs.readdir(dir)) {
    const left = path.join(dir, name);
    try {
      // withTempMount's mount point inside its directory, or (older ck) the directory itself.
      const inner = path.join(left, TEMP_MOUNT_POINT);
      if (await fs.lstat(inner).then((st) => st.isDirectory(), () => false)) {
        await unmountAll(inner);
        await fs.rmdir(inner);
      }
      await unmountAll(left);
      // rmdir, never a recursive rm: what is still mounted stays untouched.
      await fs.rmdir(left);
      removed++;
    } catch (err) {
      failed.push(`${left}: ${(err as Error).message}`);
    }
  }
  tempMountParent = dir;
  return { removed, failed };
}

/** The mount point inside each temporary mount's directory. */
const TEMP_MOUNT_POINT = "root";

/**
 * Runs `fn` with `mounts` mounted on a fresh temporary mount point, always unmounting and
 * removing it afterwards (containerd's mount.WithTempMount). The mount point is inside a
 * directory only its owner can enter: a mount on the temporary directory itself would hide
 * that directory's mode and let any local user into the mounted tree (its world-writable
 * directories among it) while ck works through it, as root.
 */
export async function withTempMount<T>(
  mounts: readonly Mount[],
  fn: (root: string) => Promise<T>,
): Promise<T> {
  const dir = await fs.mkdtemp(path.join(tempMountParent ?? os.tmpdir(), "ck-mount-"));
  const target = path.join(dir, TEMP_MOUNT_POINT);
  try {
    await fs.chmod(dir, 0o700);
    await fs.mkdir(target, { mode: 0o700 });
    await mountAll(mounts, target);
    try {
      return await fn(target);
    } finally {
      await unmountAll(target);
    }
  } finally {
    // rmdir, never a recursive rm: if the unmount failed this must not delete through it.
    await fs.rmdir(target).catch(() => undefined);
    await fs.rmdir(dir).catch(() => undefined);
  }
}

/** Mounts as a request carries them (containerd.types.Mount), the other way. */
export function mountsFromApi(list: readonly any[] | undefined | null): Mount[] {
  return (list ?? []).map((m) => ({ type: String(m.type ?? ""), source: String(m.source ?? ""), target: m.target || undefined, options: (m.options ?? []).map(String) }));
}
