// Default locations shared by ck and ckd: system-wide as root, per user otherwise.
import { homedir } from "node:os";
import { join } from "node:path";

const isRoot = () => typeof process.getuid === "function" && process.getuid() === 0;

export function defaultRoot(): string {
  if (isRoot()) return "/var/lib/ck";
  const data = process.env.XDG_DATA_HOME || join(homedir(), ".local", "share");
  return join(data, "ck");
}

export function defaultAddress(root?: string): string {
  if (process.env.CK_ADDRESS) return process.env.CK_ADDRESS;
  if (isRoot()) return "/run/ck/ck.sock";
  const run = process.env.XDG_RUNTIME_DIR;
  return run ? join(run, "ck", "ck.sock") : join(root ?? defaultRoot(), "ck.sock");
}

/** The snapshotter ck's commands use unless told otherwise: $CONTAINERD_SNAPSHOTTER, as ctr, else overlayfs. */
export function defaultSnapshotter(): string {
  return process.env.CONTAINERD_SNAPSHOTTER || "overlayfs";
}
