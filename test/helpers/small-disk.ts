// A small disk for tests of what a full one does: a tmpfs of a given size in a temporary
// directory (root only), filled on demand with one preallocated file, unmounted on cleanup.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface SmallDisk {
  /** The temporary directory: `mnt` is in it, and room for what must not be on the disk. */
  work: string;
  /** The tmpfs. */
  mnt: string;
  /** Takes all but `leaveBytes` of the disk. */
  fill(leaveBytes: number): void;
  /** Frees what fill() took. */
  free(): Promise<void>;
  /**
   * Kills a nats-server left running on the disk (named by its pid file under `mnt`), unmounts
   * the disk (lazily if busy) and removes the directory.
   */
  cleanup(natsPidFile?: string): Promise<void>;
}

/** The disk, or why it cannot be had here (not root, no mount). */
export async function smallDisk(prefix: string, sizeMiB: number): Promise<SmallDisk | string> {
  if (process.getuid?.() !== 0) return "mounting a tmpfs needs root";
  const work = await mkdtemp(join(tmpdir(), prefix));
  const mnt = join(work, "mnt");
  await mkdir(mnt);
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${sizeMiB}m`, "tmpfs", mnt]);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    return `cannot mount a tmpfs here: ${(err as Error).message}`;
  }
  const filler = join(mnt, "filler");
  return {
    work,
    mnt,
    fill(leaveBytes) {
      const avail = Number(execFileSync("df", ["-k", "--output=avail", mnt], { encoding: "utf8" }).trim().split("\n").pop()) * 1024;
      execFileSync("fallocate", ["-l", String(avail - leaveBytes), filler]);
    },
    free: () => rm(filler, { force: true }),
    async cleanup(natsPidFile) {
      if (natsPidFile) {
        try {
          const pid = Number(readFileSync(join(mnt, natsPidFile), "utf8").trim());
          if (pid > 0 && /nats-server/.test(readFileSync(`/proc/${pid}/cmdline`, "utf8"))) process.kill(pid, "SIGKILL");
        } catch {
          // no pid file, or no such process: nothing left running
        }
      }
      try {
        execFileSync("umount", [mnt]);
      } catch {
        execFileSync("umount", ["-l", mnt]);
      }
      await rm(work, { recursive: true, force: true });
    },
  };
}
