// What a snapshotter is: the on-disk half of containerd's snapshots. It owns directories under
// its root, one per snapshot id; which snapshots exist, their keys, kinds, parents and labels
// are metadata held by the caller (an event-sourced projection), passed in on every call.
import { invalidArgument } from "../errdefs/errdefs.js";

/** One filesystem mount, shaped like containerd's types.Mount. */
export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export type SnapshotKind = "Active" | "View" | "Committed";

export interface Usage {
  /** Bytes of disk used (allocated blocks), each inode counted once. */
  size: number;
  inodes: number;
}

/** What rebase needs to know of a layer applied ahead (Applied's fields of that name). */
export interface AheadLayer {
  whiteouts: readonly string[];
  opaques: readonly string[];
}

export interface PrepareOptions {
  readonly: boolean;
  /** Files of the parent tree may be hard links to the parent's (see Snapshotter.prepare). */
  linkFiles?: boolean;
}

export interface Snapshotter {
  readonly name: "native" | "overlayfs";
  /** Root directory of this snapshotter; snapshots live in `<root>/snapshots/<id>`. */
  readonly root: string;
  /** Whether this host can run the snapshotter, and if not, why (introspection shows it). */
  available(): Promise<{ ok: boolean; reason?: string }>;
  /**
   * Makes the snapshot directory ready (once; prepare does it too) and resolves with why new
   * snapshot directories cannot be spread over the filesystem's block groups, if they cannot.
   */
  prepareStorage(): Promise<string | undefined>;
  /**
   * Creates the directories of snapshot `id` on top of `parentIds` (nearest first, all
   * Committed) and returns its mounts: an Active snapshot when `readonly` is false, a View
   * otherwise. AlreadyExists if `id` already has a directory. With `linkFiles`, a snapshotter
   * that copies its parent's tree (native) may hard-link the parent's files instead of copying
   * them: only for a snapshot whose one writer replaces files and never changes one in place
   * (ckd's own layer application, told so by ApplyOptions.sharedInodes), never for one handed out.
   */
  prepare(id: string, parentIds: readonly string[], opts: PrepareOptions): Promise<Mount[]>;
  /** The mounts of an existing snapshot; pure, touches nothing. */
  mounts(id: string, parentIds: readonly string[], kind: SnapshotKind): Mount[];
  /** Seals an Active snapshot's directories as Committed (NotFound if it has none). */
  commit(id: string): Promise<void>;
  /** Deletes the snapshot's directories (NotFound if there are none). */
  remove(id: string): Promise<void>;
  /** Disk usage of what this snapshot itself holds (its own layer, not its parents). */
  usage(id: string): Promise<Usage>;
  /**
   * Removes every directory under `<root>/snapshots` whose name is not kept (in the set, or
   * `keep(name)` true when asked, right before its removal); returns them.
   */
  cleanup(keep: ReadonlySet<string> | ((name: string) => boolean)): Promise<string[]>;
  /** The directory holding the snapshot's own files (native: the tree; overlayfs: upperdir). */
  fsDir(id: string): string;
  /**
   * The directories that, stacked nearest first as an overlay, show the tree of `parentIds`
   * (nearest first): overlayfs, every parent's upper directory; native, the nearest parent's
   * tree, which is complete.
   */
  lowerDirs(parentIds: readonly string[]): string[];
  /**
   * An Active snapshot prepared without parents, whose layer was applied into fsDir with
   * `aheadWhiteouts`, is made ready to be committed on top of `parentIds` (nearest first,
   * Committed), as if prepare had been given them: overlayfs only records the parent, native
   * links the parent's tree under the layer's (`layer`: what its whiteouts removed, the
   * directories it made opaque). Lets a layer be applied while its parent is still being
   * unpacked.
   */
  rebase(id: string, parentIds: readonly string[], layer: AheadLayer): Promise<void>;
  /** How whiteouts are applied into a directory that rebase will put on its parents. */
  readonly aheadWhiteouts: "overlay" | "delete";
}

/**
 * Snapshot ids are ck's own (a counter or a hash), never a user's key: they become directory
 * names and mount options, so only `[A-Za-z0-9._-]`, no leading dot, at most 128 characters.
 */
export function checkSnapshotId(id: string): void {
  if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(id)) {
    throw invalidArgument(`snapshot id ${JSON.stringify(id)} must match [A-Za-z0-9_-][A-Za-z0-9._-]{0,127}`);
  }
}
