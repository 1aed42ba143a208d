// The overlayfs snapshotter, laid out as containerd's: `<root>/snapshots/<id>/fs` holds a
// snapshot's own layer (the upperdir while Active, a lowerdir once Committed) and
// `<root>/snapshots/<id>/work` the overlay workdir. Nothing is copied: mounts stack the
// parents' fs directories under the snapshot's own.
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { runCommand } from "./mount.js";
import { checkParentChain } from "./native.js";
import { DirectorySnapshotter } from "./storage.js";
import { checkSnapshotId, type AheadLayer, type Mount, type PrepareOptions, type SnapshotKind } from "./types.js";

export interface OverlayOptions {
  /**
   * Add `index=off` to overlay mounts (containerd does when the kernel has the parameter),
   * so that an upper directory can be mounted again over other lowers. Default: whether
   * /sys/module/overlay/parameters/index exists.
   */
  indexOff?: boolean;
}

export class OverlaySnapshotter extends DirectorySnapshotter {
  readonly name = "overlayfs" as const;
  private readonly indexOff: boolean;

  constructor(root: string, opts: OverlayOptions = {}) {
    super(root);
    this.indexOff = opts.indexOff ?? existsSync("/sys/module/overlay/parameters/index");
  }

  /**
   * Mounts a two-layer overlay in a scratch directory under the root (the same filesystem the
   * snapshots will use) and unmounts it; the mount error is the reason when that fails.
   */
  async available(): Promise<{ ok: boolean; reason?: string }> {
    if (os.platform() !== "linux") return { ok: false, reason: `overlayfs needs Linux, not ${os.platform()}` };
    if (process.getuid?.() !== 0) return { ok: false, reason: `mounting overlayfs needs root (uid ${process.getuid?.()})` };
    let probe: string | undefined;
    try {
      await fs.mkdir(this.root, { recursive: true, mode: 0o700 });
      probe = await fs.mkdtemp(path.join(this.root, ".probe-"));
      const [lower1, lower2, upper, work, merged] = ["l1", "l2", "u", "w", "m"].map((d) => path.join(probe!, d));
      for (const d of [lower1, lower2, upper, work, merged]) await fs.mkdir(d);
      await fs.writeFile(path.join(lower1, "f"), "probe");
      const opts = [`lowerdir=${lower1}:${lower2}`, `upperdir=${upper}`, `workdir=${work}`];
      if (this.indexOff) opts.unshift("index=off");
      await runCommand("mount", ["-t", "overlay", "overlay", merged, "-o", opts.join(",")]);
      try {
        await fs.readFile(path.join(merged, "f"));
      } finally {
        await runCommand("umount", [merged]);
      }
      return { ok: true };
    } catch (err) {
      const e = err as Error & { stderr?: string };
      return { ok: false, reason: `overlay mount in ${this.root} failed: ${e.stderr ?? e.message}` };
    } finally {
      if (probe !== undefined) await fs.rm(probe, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  workDir(id: string): string {
    return path.join(this.dirs.path(id), "work");
  }

  async prepare(id: string, parentIds: readonly string[], opts: PrepareOptions): Promise<Mount[]> {
    checkSnapshotId(id);
    parentIds.forEach(checkSnapshotId);
    checkParentChain(id, parentIds);
    for (const p of parentIds) await this.dirs.mustExist(p);
    await this.dirs.create(id, async (tmp) => {
      const fsDir = path.join(tmp, "fs");
      await fs.mkdir(fsDir, { mode: 0o755 });
      if (!opts.readonly) await fs.mkdir(path.join(tmp, "work"), { mode: 0o700 });
      if (parentIds.length > 0) await this.ownLikeParent(fsDir, parentIds[0]);
    });
    return this.mounts(id, parentIds, opts.readonly ? "View" : "Active");
  }

  lowerDirs(parentIds: readonly string[]): string[] {
    return parentIds.map((p) => this.fsDir(p));
  }

  /** A layer applied ahead of its parent writes overlay whiteouts, as onto a mounted overlay. */
  readonly aheadWhiteouts = "overlay" as const;

  /**
   * An upper directory holds only its own layer (overlayfs merges it with the parents when
   * mounted): of its parents, only their owner matters.
   */
  async rebase(id: string, parentIds: readonly string[], _layer?: AheadLayer): Promise<void> {
    checkSnapshotId(id);
    parentIds.forEach(checkSnapshotId);
    checkParentChain(id, parentIds);
    await this.dirs.mustExist(id);
    for (const p of parentIds) await this.dirs.mustExist(p);
    if (parentIds.length > 0) await this.ownLikeParent(this.fsDir(id), parentIds[0]);
  }

  /** The root of the merged tree shows the upper directory's owner: keep the parent's. */
  private async ownLikeParent(fsDir: string, parentId: string): Promise<void> {
    const st = await fs.stat(this.fsDir(parentId));
    await fs.lchown(fsDir, st.uid, st.gid);
  }

  /**
   * As containerd's overlay snapshotter answers Mounts: no parent, a bind of fs (rw for an
   * Active snapshot); an Active one with parents, an overlay with its fs as upperdir; a View
   * (or, beyond containerd, a Committed snapshot, seen read-only) over one directory, a
   * read-only bind, over several, an overlay of lowerdirs only, nearest first.
   */
  mounts(id: string, parentIds: readonly string[], kind: SnapshotKind): Mount[] {
    const lowers = (kind === "Committed" ? [id, ...parentIds] : parentIds).map((p) => this.fsDir(p));
    if (kind === "Active" && parentIds.length === 0) {
      return [{ type: "bind", source: this.fsDir(id), options: ["rw", "rbind"] }];
    }
    if (kind === "View" && parentIds.length === 0) {
      return [{ type: "bind", source: this.fsDir(id), options: ["ro", "rbind"] }];
    }
    const options = this.indexOff ? ["index=off"] : [];
    if (kind === "Active") {
      options.push(`workdir=${this.workDir(id)}`, `upperdir=${this.fsDir(id)}`);
    } else if (lowers.length === 1) {
      return [{ type: "bind", source: lowers[0], options: ["ro", "rbind"] }];
    }
    options.push(`lowerdir=${lowers.join(":")}`);
    return [{ type: "overlay", source: "overlay", options }];
  }
}
