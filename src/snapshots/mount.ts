// Mounting a snapshotter's Mount list onto a host directory and taking it down again, with
// the host's mount(8)/umount(8) (Node has no mount syscall). Bind and overlay mounts need root.
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { failedPrecondition, invalidArgument, unavailable } from "../errdefs/errdefs.js";
import type { Mount } from "./types.js";

/** Runs a host command; resolves with stdout, rejects with its stderr as the message. */
export function runCommand(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: "utf8" }, (err, stdout, stderr) => {
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
      await runCommand("mount", mountArgs(m, target));
      done++;
    }
  } catch (err) {
    if (done > 0) await unmountAll(target).catch(() => undefined);
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

/** Unmounts everything stacked on `target` until it is no longer a mount point. */
export async function unmountAll(target: string): Promise<void> {
  for (let i = 0; i < 64 && (await isMountPoint(target)); i++) {
    try {
      await runCommand("umount", [target]);
    } catch (err) {
      throw unavailable(`umount ${target}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/**
 * Runs `fn` with `mounts` mounted on a fresh temporary directory, always unmounting and
 * removing the directory afterwards (containerd's mount.WithTempMount).
 */
export async function withTempMount<T>(
  mounts: readonly Mount[],
  fn: (root: string) => Promise<T>,
): Promise<T> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "ck-mount-"));
  try {
    await mountAll(mounts, dir);
    try {
      return await fn(dir);
    } finally {
      await unmountAll(dir);
    }
  } finally {
    // rmdir, never a recursive rm: if the unmount failed this must not delete through it.
    await fs.rmdir(dir).catch(() => undefined);
  }
}

/** Mounts as a request carries them (containerd.types.Mount), the other way. */
export function mountsFromApi(list: readonly any[] | undefined | null): Mount[] {
  return (list ?? []).map((m) => ({ type: String(m.type ?? ""), source: String(m.source ?? ""), target: m.target || undefined, options: (m.options ?? []).map(String) }));
}
