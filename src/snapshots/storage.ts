// The on-disk bookkeeping both snapshotters share: one directory per snapshot id under
// `<root>/snapshots`, created under a temporary name and renamed into place so that a crash
// never leaves a half-made directory under a real id, disk usage, removal and cleanup.
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { alreadyExists, notFound } from "../errdefs/errdefs.js";
import { spreadSubdirectories } from "../content/placement.js";
import { checkSnapshotId, type AheadLayer, type Mount, type PrepareOptions, type Snapshotter, type SnapshotKind, type Usage } from "./types.js";

/** A temporary name: `.new-<id>-<8 hex>` while `<id>` is made, `.rm-<id>-<8 hex>` while it is removed. */
const TEMP_NAME = /^\.(?:new|rm)-(.+)-[0-9a-f]{8}$/;

function tempName(kind: "new" | "rm", id: string): string {
  return `.${kind}-${id}-${randomBytes(4).toString("hex")}`;
}

/** The id whose directory a temporary name of create or remove stands for; undefined for any other name. */
export function tempNameId(name: string): string | undefined {
  return TEMP_NAME.exec(name)?.[1];
}

export class SnapshotDirs {
  readonly dir: string;
  private made: Promise<string | undefined> | undefined;
  constructor(readonly root: string) {
    this.dir = path.join(root, "snapshots");
  }

  /**
   * Creates `<root>/snapshots` once and marks it a top of directory hierarchies (ext4's
   * `chattr +T`), so each snapshot directory, and with it the files unpacked into it, is
   * placed in its own block group instead of packed into the group of its siblings. Without
   * it every layer lands where the layers removed a minute ago were, and on ext4 without a
   * journal each new inode is allocated only after skipping every recently deleted one in
   * that group: measured here, a 6,160-file layer applied in 1.0-4.5 s right after a pull
   * was removed, 0.55-0.95 s with the flag. Resolves with why the flag could not be set
   * (another filesystem, no chattr), which costs nothing but the placement.
   */
  ensure(): Promise<string | undefined> {
    this.made ??= (async () => {
      await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
      return spreadSubdirectories(this.dir);
    })();
    this.made.catch(() => (this.made = undefined));
    return this.made;
  }

  path(id: string): string {
    checkSnapshotId(id);
    return path.join(this.dir, id);
  }

  /**
   * Creates `<id>` by letting `fill` populate a temporary directory, then renaming it into
   * place. AlreadyExists if `<id>` is there; the temporary directory never outlives a failure
   * (and Cleanup removes it after a crash, since no snapshot owns it).
   */
  async create(id: string, fill: (tmp: string) => Promise<void>): Promise<string> {
    const final = this.path(id);
    await this.ensure();
    if (await exists(final)) throw alreadyExists(`snapshot directory ${id}`);
    const tmp = path.join(this.dir, tempName("new", id));
    await fs.mkdir(tmp, { mode: 0o700 });
    try {
      await fill(tmp);
      if (await exists(final)) throw alreadyExists(`snapshot directory ${id}`);
      await fs.rename(tmp, final);
    } catch (err) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw err;
    }
    return final;
  }

  async mustExist(id: string): Promise<string> {
    const p = this.path(id);
    if (!(await exists(p))) throw notFound(`snapshot directory ${id}`);
    return p;
  }

  /** Renames away first, so a crash mid-removal leaves a name Cleanup will take. */
  async remove(id: string): Promise<void> {
    const p = await this.mustExist(id);
    const doomed = path.join(this.dir, tempName("rm", id));
    await fs.rename(p, doomed);
    await fs.rm(doomed, { recursive: true, force: true });
  }

  async cleanup(keep: ReadonlySet<string> | ((name: string) => boolean)): Promise<string[]> {
    const kept = typeof keep === "function" ? keep : (name: string) => keep.has(name);
    let entries: string[];
    try {
      entries = await fs.readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const removed: string[] = [];
    for (const name of entries.sort()) {
      if (kept(name)) continue;
      await fs.rm(path.join(this.dir, name), { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** Allocated bytes and inode count of a tree, each inode once (containerd's fs.DiskUsage). */
export async function diskUsage(dir: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  const visit = async (p: string): Promise<void> => {
    const st = await fs.lstat(p, { bigint: true });
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      size += Number(st.blocks) * 512;
    }
    if (st.isDirectory()) {
      for (const name of await fs.readdir(p)) await visit(path.join(p, name));
    }
  };
  await visit(dir);
  return { size, inodes: seen.size };
}

/**
 * What the directory-backed snapshotters share: a snapshot is `<root>/snapshots/<id>` with its
 * own files under `fs`; commit only checks the directory is there (nothing changes on disk).
 */
export abstract class DirectorySnapshotter implements Snapshotter {
  abstract readonly name: "native" | "overlayfs";
  protected readonly dirs: SnapshotDirs;

  constructor(readonly root: string) {
    this.dirs = new SnapshotDirs(root);
  }

  abstract available(): Promise<{ ok: boolean; reason?: string }>;
  abstract prepare(id: string, parentIds: readonly string[], opts: PrepareOptions): Promise<Mount[]>;
  abstract mounts(id: string, parentIds: readonly string[], kind: SnapshotKind): Mount[];
  abstract lowerDirs(parentIds: readonly string[]): string[];
  abstract rebase(id: string, parentIds: readonly string[], layer: AheadLayer): Promise<void>;
  abstract readonly aheadWhiteouts: "overlay" | "delete";

  prepareStorage(): Promise<string | undefined> {
    return this.dirs.ensure();
  }

  fsDir(id: string): string {
    return path.join(this.dirs.path(id), "fs");
  }

  async commit(id: string): Promise<void> {
    await this.dirs.mustExist(id);
  }

  async remove(id: string): Promise<void> {
    await this.dirs.remove(id);
  }

  async usage(id: string): Promise<Usage> {
    await this.dirs.mustExist(id);
    return diskUsage(this.fsDir(id));
  }

  async cleanup(keep: ReadonlySet<string> | ((name: string) => boolean)): Promise<string[]> {
    return this.dirs.cleanup(keep);
  }
}
