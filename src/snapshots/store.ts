// Snapshots per namespace: the event-sourced metadata (src/commands/snapshots.ts) paired with
// the snapshotters' directories. Disk first, event second: a directory is made under a fresh
// ck-chosen id before the event that makes the snapshot visible, and removed again when the
// event is refused; a removal appends its event before deleting the directory. A crash
// between the two leaves a directory no snapshot owns, which Cleanup (and GC) removes.
import { randomInt } from "node:crypto";
import path from "node:path";
import type { Sequencer } from "../commands/sequencer.js";
import type { Queries } from "../projections/queries.js";
import { nowTimestamp } from "../emitter/envelope.js";
import { chainIdOf, checkCommit, checkParentStands, checkPrepare, checkUnpack, parentIds, snapshotHandlers, validateSnapshotKey } from "../commands/snapshots.js";
import { validateDigest } from "../commands/validation.js";
import { alreadyExists, canceled, failedPrecondition, invalidArgument, isClass, unavailable } from "../errdefs/errdefs.js";
import { inheritLowerAttributes, isMissingLinkTarget, needsItsLowers, type Applied } from "../diff/apply.js";
import { keys, type ChainIndexRecord, type SnapshotKind, type SnapshotRecord } from "../projections/views.js";
import { keepSnapshotDir, UnsettledIds } from "./sweep.js";
import type { Mount, PrepareOptions, Snapshotter, Usage } from "./types.js";

export interface SnapshotterEntry {
  sn: Snapshotter;
  /** Set when available() said no: the snapshotter is listed but refuses every call. */
  unavailable?: string;
}

/** Longest an unpack waits for its parent (the caller is unpacking it: a download may be slow). */
const PARENT_WAIT_MS = 30 * 60_000;
/** How often a waiting unpack looks for a parent committed by another process. */
const PARENT_POLL_MS = 250;
/**
 * Fresh ids tried for one new snapshot: one is taken only by a directory no record names (a
 * leftover) or a record another ckd made since the look (1 in 36^8 each).
 */
const ID_ATTEMPTS = 5;
/** Longest a sweep of unowned directories waits for the projection to catch up with the log. */
const CAUGHT_UP_WAIT_MS = 15_000;

/**
 * Where unpack applies a layer: a snapshot's mounts, whose files may be hard links shared
 * with its parent (apply with ApplyOptions.sharedInodes), or a parentless directory of its
 * own that rebase puts on the parents later, with whiteouts applied as the snapshotter says.
 */
export type ApplyTarget = { mounts: Mount[] } | { dir: string; whiteouts: "overlay" | "delete" };


export interface UnpackOutcome {
  chainId: string;
  status: "exists" | "shared" | "applied";
  verified: boolean;
}

/** The snapshot an unpack makes in the caller's namespace. */
interface UnpackCmd {
  namespace: string;
  snapshotter: string;
  /** The chain ID. */
  name: string;
  parent: string;
  labels: Record<string, string>;
  lease?: string;
}

/** What makes an unpacked snapshot verified (shareable): its layer, parent directory and diff_id. */
interface Verification {
  layer: string;
  parent_id: string;
  diff_id: string;
}

function checkDiffId(got: string, want: string): void {
  if (got !== want) throw failedPrecondition(`wrong diff id calculated on extraction "${got}", expected "${want}"`);
}

export class SnapshotStore {
  /** Ids whose directories are being made or removed right now: Cleanup leaves them alone. */
  private readonly busy = new Set<string>();
  /** Ids whose recording append's outcome is unknown: Cleanup leaves them until it read the log past them. */
  private readonly unsettled = new UnsettledIds();
  /** Callers of waitCommitted, by namespace, snapshotter and key. */
  private readonly waiters = new Map<string, Set<() => void>>();

  constructor(
    private readonly sequencer: Sequencer,
    private readonly queries: Queries,
    private readonly snapshotters: ReadonlyMap<string, SnapshotterEntry>,
  ) {}

  /**
   * The snapshotter named in a request; InvalidArgument for an empty or unknown name, in
   * containerd's snapshots service's words (`snapshotter not loaded: nope`).
   */
  snapshotter(name: string): Snapshotter {
    if (!name) throw invalidArgument("snapshotter argument missing");
    const e = this.snapshotters.get(name);
    if (!e) throw invalidArgument(`snapshotter not loaded: ${name}`);
    if (e.unavailable) throw failedPrecondition(`snapshotter ${name} is not available: ${e.unavailable}`);
    return e.sn;
  }

  /** Snapshotters that loaded (for GC and introspection). */
  names(): string[] {
    return [...this.snapshotters.entries()].filter(([, e]) => !e.unavailable).map(([n]) => n);
  }

  /** The real directory roots of loaded snapshotters (Diff.Apply writes only below them). */
  roots(): string[] {
    return this.names().map((n) => this.snapshotters.get(n)!.sn.root);
  }

  async prepare(
    ns: string,
    snapshotter: string,
    req: { key: string; parent: string; labels: Record<string, string>; readonly: boolean; lease?: string },
  ): Promise<Mount[]> {
    const sn = this.snapshotter(snapshotter);
    const cmd = { namespace: ns, snapshotter, key: req.key, parent: req.parent, kind: req.readonly ? ("View" as const) : ("Active" as const), labels: req.labels, lease: req.lease };
    // Bad input is refused before any directory is made.
    const current = await this.find(ns, snapshotter, req.key);
    const parent = req.parent ? await this.find(ns, snapshotter, req.parent) : undefined;
    const lease = req.lease ? await this.queries.getLease(ns, req.lease).catch(() => undefined) : undefined;
    checkPrepare(cmd, current, parent, lease);
    const parents = parent ? [parent.id, ...parentIds((k) => this.findSync(ns, snapshotter, k), parent)] : [];
    const { id, mounts } = await this.freshDirectory(ns, sn, parents, { readonly: req.readonly }, parent && req.parent);
    try {
      // Decided against the parent directory it was built on, not just the parent's name.
      await this.sequencer.submit(snapshotHandlers.prepare({ ...cmd, id, parentId: parent?.id, now: nowTimestamp() }));
    } catch (err) {
      if (outcomeUnknown(err)) this.unsettled.add(id);
      else await sn.remove(id).catch(() => undefined);
      throw err;
    } finally {
      this.busy.delete(id);
    }
    return mounts;
  }

  /**
   * A new directory on `parents` (nearest first) under a fresh id, in the busy set from the
   * moment the id is chosen (the caller takes it out). An id some record names or a directory
   * has already is not used: another is tried. When the disk work on the parent `parentKey`
   * fails, the parent is looked up again: a Remove or GC that took it (and its directory)
   * meanwhile is the answer, as containerd gives it (NotFound; Aborted when another snapshot
   * was committed under its name), not the missing path it tripped on.
   */
  private async freshDirectory(
    ns: string,
    sn: Snapshotter,
    parents: readonly string[],
    opts: PrepareOptions,
    parentKey?: string,
  ): Promise<{ id: string; mounts: Mount[] }> {
    for (let attempt = 1; ; attempt++) {
      const id = newSnapshotId();
      if (this.idTaken(sn.name, id)) {
        if (attempt < ID_ATTEMPTS) continue;
        throw alreadyExists(`snapshot id: ${ID_ATTEMPTS} fresh ids were all taken`);
      }
      this.busy.add(id);
      try {
        return { id, mounts: await sn.prepare(id, parents, opts) };
      } catch (err) {
        this.busy.delete(id);
        // A directory of that id is there (a leftover no record names): another id.
        if (isClass(err, "AlreadyExists") && attempt < ID_ATTEMPTS) continue;
        if (parentKey) await this.parentStands(ns, sn.name, parentKey, parents[0]!, err);
        throw err;
      }
    }
  }

  /**
   * After disk work on the directory `parentId` of parent `parentKey` failed: a Remove or GC
   * that took the parent (and its directory) meanwhile is the answer, as containerd gives it
   * (NotFound; Aborted when another snapshot was committed under its name), not the missing
   * path the work tripped on. Returns when the parent stands as it was (`err` stays the answer).
   */
  private async parentStands(ns: string, snapshotter: string, parentKey: string, parentId: string, err: unknown): Promise<void> {
    checkParentStands({ parent: parentKey, parentId }, await this.find(ns, snapshotter, parentKey), err);
  }

  /** Whether an id is in use: by a record (any namespace's), a call under way, or an append whose outcome is unknown. */
  private idTaken(snapshotter: string, id: string): boolean {
    return this.busy.has(id) || this.unsettled.has(id) || this.queries.snapshotIdSync(snapshotter, id) !== undefined;
  }

  async commit(ns: string, snapshotter: string, req: { key: string; name: string; labels: Record<string, string>; lease?: string }): Promise<SnapshotRecord> {
    const sn = this.snapshotter(snapshotter);
    const cmd = { namespace: ns, snapshotter, ...req };
    const current = await this.find(ns, snapshotter, req.key);
    const lease = req.lease ? await this.queries.getLease(ns, req.lease).catch(() => undefined) : undefined;
    checkCommit(cmd, current, await this.find(ns, snapshotter, req.name), lease);
    await sn.commit(current!.id);
    const rec = await this.sequencer.submit(snapshotHandlers.commit({ ...cmd, now: nowTimestamp() }));
    this.committed(ns, snapshotter, req.name);
    return rec;
  }

  /**
   * ckd's own unpack of one layer into the committed snapshot named by its chain ID (see
   * docs/snapshots.md, "Sharing"). `apply` writes the layer onto the mounts of a directory no
   * client ever saw and answers the uncompressed digest; it is not called when the snapshot
   * exists in the namespace already or a verified directory can be shared.
   *
   * With `waitParent`, a parent that is not committed yet is waited for (until `signal` aborts,
   * or PARENT_WAIT_MS): the caller is unpacking it in another call. On a snapshotter that can
   * rebase (overlayfs) the layer is applied meanwhile into a directory of its own, so that the
   * layers of an image are applied side by side; its commit still waits for the parent. Where
   * the chain ID could be shared instead, nothing is applied before the parent is there.
   */
  async unpack(
    ns: string,
    snapshotter: string,
    req: { layer: string; diffId: string; parent: string; lease?: string; waitParent?: boolean; signal?: AbortSignal },
    apply: (target: ApplyTarget) => Promise<Applied>,
  ): Promise<UnpackOutcome> {
    const sn = this.snapshotter(snapshotter);
    validateDigest("layer.digest", req.layer);
    validateDigest("diff_id", req.diffId);
    if (req.parent) validateSnapshotKey("parent", req.parent);
    const name = chainIdOf(req.parent, req.diffId);
    const exists = async () => {
      const e = await this.find(ns, snapshotter, name);
      return e && { chainId: name, status: "exists" as const, verified: !!e.verified };
    };
    const already = await exists();
    if (already) return already;
    const cmd: UnpackCmd = { namespace: ns, snapshotter, name, parent: req.parent, labels: {}, lease: req.lease };
    let parent = req.parent ? await this.find(ns, snapshotter, req.parent) : undefined;
    if (req.parent && !parent && req.waitParent) {
      if (!this.shareable(snapshotter, name, req.layer)) return this.unpackAhead(ns, sn, req, cmd, apply, exists);
      parent = await this.waitCommitted(ns, snapshotter, req.parent, req.signal);
      const now = await exists();
      if (now) return now;
    }
    const decided = await this.onParent(cmd, req, parent, exists);
    if ("status" in decided) return decided;
    const parents = this.parentChain(ns, snapshotter, parent);
    // Never returned to anyone: nothing but the layer is written through these mounts.
    return this.applyFresh(sn, parents, cmd, exists, async (_id, mounts) => {
      checkDiffId((await apply({ mounts })).digest, req.diffId);
      return decided;
    });
  }

  /**
   * unpack's side-by-side path: the layer goes into a parentless directory now, and onto its
   * parent once that is committed (rebase, then the attributes of the directories the layer
   * implies from the lower layers, then the commit).
   */
  private async unpackAhead(
    ns: string,
    sn: Snapshotter,
    req: { layer: string; diffId: string; parent: string; lease?: string; signal?: AbortSignal },
    cmd: UnpackCmd,
    apply: (target: ApplyTarget) => Promise<Applied>,
    exists: () => Promise<UnpackOutcome | undefined>,
  ): Promise<UnpackOutcome> {
    return this.applyFresh(sn, [], cmd, exists, async (id) => {
      // A layer that links a lower layer's file cannot be applied without its lowers: it is
      // applied onto them once they are there.
      const applied = await apply({ dir: sn.fsDir(id), whiteouts: sn.aheadWhiteouts }).catch((err: unknown) => {
        if (isMissingLinkTarget(err)) return undefined;
        throw err;
      });
      if (applied) checkDiffId(applied.digest, req.diffId);
      const parent = await this.waitCommitted(ns, cmd.snapshotter, req.parent, req.signal);
      const now = await exists();
      if (now) return now;
      // Another namespace may have finished the same layer on the same parent meanwhile.
      const decided = await this.onParent(cmd, req, parent, exists);
      if ("status" in decided) return decided;
      const parents = this.parentChain(ns, cmd.snapshotter, parent);
      const lowers = sn.lowerDirs(parents);
      if (!applied || (await needsItsLowers(applied.madeForEntries, lowers))) {
        // Applied (again) onto its lower layers, which resolve the path as the mounted overlay does.
        return this.applyFresh(sn, parents, cmd, exists, async (_id, mounts) => {
          checkDiffId((await apply({ mounts })).digest, req.diffId);
          return decided;
        });
      }
      try {
        await sn.rebase(id, parents, applied);
        await inheritLowerAttributes(sn.fsDir(id), applied.implicitDirs, lowers);
      } catch (err) {
        await this.parentStands(ns, cmd.snapshotter, req.parent, parents[0]!, err);
        throw err;
      }
      // Rebased onto this parent directory: the record is checked against it (a parent removed
      // and committed again under its key meanwhile is another directory: Aborted).
      return { ...decided, parentId: parents[0] };
    });
  }

  /**
   * A fresh directory on `parents` (in the busy set while no record owns it) that `fill`
   * applies the layer into. Unless `fill` answers an outcome of its own (the snapshot exists
   * or was shared meanwhile), the directory is sealed and recorded by an unpack event: "applied".
   * It is removed again on any other way out; AlreadyExists (a concurrent unpack of the chain
   * ID in the namespace committed first) answers "exists".
   */
  private async applyFresh(
    sn: Snapshotter,
    parents: readonly string[],
    cmd: UnpackCmd,
    exists: () => Promise<UnpackOutcome | undefined>,
    fill: (id: string, mounts: Mount[]) => Promise<UnpackOutcome | { verified: Verification | undefined; parentId?: string }>,
  ): Promise<UnpackOutcome> {
    let outcome: UnpackOutcome;
    // Only the layer is written here, by an apply that replaces files (see ApplyTarget).
    const { id, mounts } = await this.freshDirectory(cmd.namespace, sn, parents, { readonly: false, linkFiles: true }, parents.length > 0 ? cmd.parent : undefined);
    try {
      let committed = false;
      let unknown = false;
      try {
        const r = await fill(id, mounts).catch(async (err: unknown) => {
          // Applied through the parents' directories: one removed meanwhile is the answer.
          if (parents.length > 0) await this.parentStands(cmd.namespace, cmd.snapshotter, cmd.parent, parents[0]!, err);
          throw err;
        });
        if ("status" in r) return r;
        await sn.commit(id);
        await this.sequencer.submit(snapshotHandlers.unpack({ ...cmd, id, parentId: r.parentId ?? parents[0], share: false, verified: r.verified, now: nowTimestamp() })).catch((err) => {
          unknown = outcomeUnknown(err);
          if (unknown) this.unsettled.add(id);
          throw err;
        });
        committed = true;
        outcome = { chainId: cmd.name, status: "applied", verified: !!r.verified };
      } finally {
        if (!committed && !unknown) await sn.remove(id).catch(() => undefined);
      }
    } catch (err) {
      if (isClass(err, "AlreadyExists")) {
        const e = await exists();
        if (e) return e;
      }
      throw err;
    } finally {
      this.busy.delete(id);
    }
    this.committed(cmd.namespace, cmd.snapshotter, cmd.name);
    return outcome;
  }

  /**
   * Once the parent is known: the checks of a new snapshot on it, then a share if a verified
   * directory can be shared (that outcome), else the verification the applied one gets. Only
   * what ckd applied itself on a verified chain is verified (and ever shared).
   */
  private async onParent(
    cmd: UnpackCmd,
    req: { layer: string; diffId: string; lease?: string },
    parent: SnapshotRecord | undefined,
    exists: () => Promise<UnpackOutcome | undefined>,
  ): Promise<UnpackOutcome | { verified: Verification | undefined }> {
    const lease = req.lease ? await this.queries.getLease(cmd.namespace, req.lease).catch(() => undefined) : undefined;
    checkUnpack(cmd, undefined, parent, lease);
    const verified = !parent || parent.verified ? { layer: req.layer, parent_id: parent?.id ?? "", diff_id: req.diffId } : undefined;
    const shared = verified && (await this.share(cmd, verified, exists));
    return shared || { verified };
  }

  /** Whether some namespace has a verified directory for this chain ID made from this layer. */
  private shareable(snapshotter: string, name: string, layer: string): boolean {
    for (const [, c] of this.queries.scanRecords<ChainIndexRecord>(keys.snapshotChainPrefix(snapshotter, name))) if (c.layer === layer) return true;
    return false;
  }

  /** Records a verified directory made from the same layer on the same parent, if one is left. */
  private async share(
    cmd: UnpackCmd,
    verified: Verification,
    exists: () => Promise<UnpackOutcome | undefined>,
  ): Promise<UnpackOutcome | undefined> {
    for (const [, c] of [...this.queries.scanRecords<ChainIndexRecord>(keys.snapshotChainPrefix(cmd.snapshotter, cmd.name))]) {
      if (c.parent_id !== verified.parent_id || c.layer !== verified.layer) continue;
      try {
        await this.sequencer.submit(snapshotHandlers.unpack({ ...cmd, id: c.id, share: true, verified, now: nowTimestamp() }));
        this.committed(cmd.namespace, cmd.snapshotter, cmd.name);
        return { chainId: cmd.name, status: "shared", verified: true };
      } catch (err) {
        if (isClass(err, "AlreadyExists")) {
          const e = await exists();
          if (e) return e;
        }
        // The directory lost its last owner meanwhile: try another, or apply.
        if (!isClass(err, "FailedPrecondition")) throw err;
      }
    }
    return undefined;
  }

  private parentChain(ns: string, snapshotter: string, parent: SnapshotRecord | undefined): string[] {
    return parent ? [parent.id, ...parentIds((k) => this.findSync(ns, snapshotter, k), parent)] : [];
  }

  /**
   * Resolves with snapshot `key` of the namespace once it exists: at once when it does, on the
   * commit when this process makes it, else by looking again every PARENT_POLL_MS (another
   * process may commit it). Rejects with Canceled when `signal` aborts, with FailedPrecondition
   * after PARENT_WAIT_MS.
   */
  private async waitCommitted(ns: string, snapshotter: string, key: string, signal?: AbortSignal): Promise<SnapshotRecord> {
    const deadline = Date.now() + PARENT_WAIT_MS;
    const slot = `${ns}\u0000${snapshotter}\u0000${key}`;
    for (;;) {
      // An Active or View snapshot of that name is returned too: checkUnpack refuses it.
      const rec = await this.find(ns, snapshotter, key);
      if (rec) return rec;
      if (signal?.aborted) throw canceled(`waiting for parent ${JSON.stringify(key)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw failedPrecondition(`parent ${JSON.stringify(key)} was not committed within ${PARENT_WAIT_MS / 1000} s`);
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", done);
          this.waiters.get(slot)?.delete(done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(PARENT_POLL_MS, left));
        signal?.addEventListener("abort", done, { once: true });
        const set = this.waiters.get(slot) ?? new Set();
        set.add(done);
        this.waiters.set(slot, set);
      });
      if (this.waiters.get(slot)?.size === 0) this.waiters.delete(slot);
    }
  }

  /** Wakes whoever waits for this snapshot to be committed. */
  private committed(ns: string, snapshotter: string, key: string): void {
    const set = this.waiters.get(`${ns}\u0000${snapshotter}\u0000${key}`);
    if (set) for (const wake of [...set]) wake();
  }

  /** `lease`: the caller's (containerd-lease header), which the key leaves. */
  async remove(ns: string, snapshotter: string, key: string, lease?: string): Promise<void> {
    const sn = this.snapshotter(snapshotter);
    const removed = await this.sequencer.submit(snapshotHandlers.remove({ namespace: ns, snapshotter, key, lease }));
    await this.removeDirs(sn, [removed.id]);
  }

  async mounts(ns: string, snapshotter: string, key: string): Promise<Mount[]> {
    const sn = this.snapshotter(snapshotter);
    const rec = await this.get(ns, snapshotter, key);
    // As containerd's storage.GetSnapshot: only Active and View snapshots have mounts.
    if (rec.kind === "Committed") throw failedPrecondition(`snapshot ${JSON.stringify(key)} is committed: only active or view snapshots have mounts`);
    return sn.mounts(rec.id, parentIds((k) => this.findSync(ns, snapshotter, k), rec), rec.kind);
  }

  async stat(ns: string, snapshotter: string, key: string): Promise<SnapshotRecord> {
    this.snapshotter(snapshotter);
    return this.get(ns, snapshotter, key);
  }

  async update(ns: string, snapshotter: string, req: { key: string; labels: Record<string, string>; paths: string[] }): Promise<SnapshotRecord> {
    this.snapshotter(snapshotter);
    return this.sequencer.submit(snapshotHandlers.update({ namespace: ns, snapshotter, ...req, now: nowTimestamp() }));
  }

  async list(ns: string, snapshotter: string, filters: string[]): Promise<SnapshotRecord[]> {
    this.snapshotter(snapshotter);
    return this.queries.listSnapshots(ns, snapshotter, filters);
  }

  async usage(ns: string, snapshotter: string, key: string): Promise<Usage> {
    const sn = this.snapshotter(snapshotter);
    const rec = await this.get(ns, snapshotter, key);
    // A view uses nothing of its own, as containerd answers it (its stored usage: none), even
    // where its directory is a copy (native) or an empty upper (overlay).
    if (rec.kind === "View") return { size: 0, inodes: 0 };
    return sn.usage(rec.id);
  }

  /**
   * Snapshots.Cleanup: removes the directories (and leftovers of interrupted work) that no
   * snapshot owns; returns them. Unavailable while the projection may not hold the whole log
   * (sweepUnowned): nothing is removed then.
   */
  async cleanup(snapshotter: string): Promise<string[]> {
    this.snapshotter(snapshotter);
    const removed = await this.sweepUnowned(snapshotter);
    if (!removed) {
      throw unavailable(`snapshotter ${snapshotter}: cannot tell which directories no snapshot owns while the projection may not hold the whole log (event log unreachable or behind); try again`);
    }
    return removed;
  }

  /**
   * The sweep of directories no snapshot owns, Cleanup's and GC's. A directory is made before
   * the event that records it, so it is swept only once the projection has caught up with the
   * log (within CAUGHT_UP_WAIT_MS; undefined, nothing removed, when it has not): a Prepare whose
   * append's outcome was unknown may have been stored. Its id stays claimed until a sweep that
   * started after that append failed has caught up (UnsettledIds); directories being made or
   * removed right now are kept (keepSnapshotDir), and a record is looked for right before each
   * removal. Returns the names removed.
   */
  async sweepUnowned(snapshotter: string): Promise<string[] | undefined> {
    const e = this.snapshotters.get(snapshotter);
    if (!e || e.unavailable) return [];
    const mark = this.unsettled.mark();
    if (!(await within(this.sequencer.caughtUp(), CAUGHT_UP_WAIT_MS, false))) return undefined;
    const held = this.unsettled.held(mark);
    const removed = await e.sn.cleanup((name) =>
      keepSnapshotDir(name, {
        owned: (id) => this.queries.snapshotIdSync(snapshotter, id) !== undefined,
        claimed: () => [...this.busy, ...held],
      }),
    );
    this.unsettled.settle(mark);
    return removed;
  }

  /** Deletes the directories of snapshots whose records are gone (after Remove or GC). */
  async removeDirs(sn: Snapshotter, ids: readonly string[]): Promise<void> {
    const owned = this.queries.snapshotIds(sn.name);
    for (const id of ids) {
      if (owned.has(id)) continue;
      this.busy.add(id);
      try {
        await sn.remove(id);
      } catch (err) {
        if (!isClass(err, "NotFound")) throw err;
      } finally {
        this.busy.delete(id);
      }
    }
  }

  /** GC's sweep, after its SnapshotCollect event: the directories of the collected ids. */
  async removeCollected(snapshotter: string, ids: readonly string[]): Promise<void> {
    const e = this.snapshotters.get(snapshotter);
    if (!e || e.unavailable) return;
    await this.removeDirs(e.sn, ids);
  }

  private async get(ns: string, sn: string, key: string): Promise<SnapshotRecord> {
    validateSnapshotKey("key", key);
    return this.queries.getSnapshot(ns, sn, key);
  }

  /**
   * Mounts a client hands back to be written or read (Diff.Apply, Diff.Diff) are taken only
   * when they are what Mounts (or Prepare/View) gave for a snapshot of one of `kinds` in the
   * caller's namespace: exactly, to be written; or the same directories read-only (an
   * overlay's upper as its top lower, `ro`: what a client's read-only wrapper makes of
   * them), to be read. A check of the paths alone let a client pass options the check did
   * not read (an overlay with `bind`), a path through a symlink a layer planted, or another
   * namespace's (or a shared, verified) directory. Only the snapshots the paths name are
   * looked at (by their directories' ids), not the whole namespace.
   */
  async checkClientMounts(ns: string, mounts: readonly Mount[], kinds: readonly SnapshotKind[], what: string): Promise<void> {
    if (mounts.length === 0) throw invalidArgument(`${what} must not be empty`);
    const writing = kinds.length === 1 && kinds[0] === "Active";
    const wanted = writing ? sameMounts(mounts) : sameTree(mounts);
    // To be read, a committed snapshot's own directories qualify too: a View over one parent
    // is mounted as that parent's directories (overlayfs), which the parent's record owns.
    const allowed: readonly SnapshotKind[] = writing ? kinds : [...kinds, "Committed"];
    for (const name of this.names()) {
      const sn = this.snapshotter(name);
      for (const id of idsIn(mounts, path.join(sn.root, "snapshots"))) {
        const owners = this.queries.snapshotIdSync(name, id)?.owners ?? [];
        for (const owner of owners) {
          if (owner.namespace !== ns) continue;
          const rec = this.findSync(ns, name, owner.key);
          if (!rec || rec.id !== id || !allowed.includes(rec.kind)) continue;
          let own: Mount[];
          try {
            own = sn.mounts(rec.id, parentIds((k) => this.findSync(ns, name, k), rec), rec.kind);
          } catch {
            continue; // a broken chain has no mounts to match
          }
          if ((writing ? sameMounts(own) : sameTree(own)) === wanted) return;
        }
      }
    }
    throw invalidArgument(`${what}: not the mounts of ${kinds.map((k) => (k === "Active" ? "an active" : `a ${k.toLowerCase()}`)).join(" or ")} snapshot in namespace ${JSON.stringify(ns)} (pass them as Mounts gave them)`);
  }

  private async find(ns: string, sn: string, key: string): Promise<SnapshotRecord | undefined> {
    if (!key || key.includes("\u0000")) return undefined;
    return this.queries.getSnapshot(ns, sn, key).catch((err) => {
      if (isClass(err, "NotFound")) return undefined;
      throw err;
    });
  }

  private findSync(ns: string, sn: string, key: string): SnapshotRecord | undefined {
    return this.queries.snapshotSync(ns, sn, key);
  }
}

/** Characters of a snapshot id: base36, lower case. */
const ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";
/**
 * Characters of a new snapshot id. Short, because an overlay's mount options name every lower
 * directory: containerd's Go clients (ctr, nerdctl, buildkit) mount them with the lowerdirs
 * relative to their common directory (compactLowerdirOption, `<id>/fs` each) and fail past 4,096
 * bytes ("mount options is too long"). With 8 characters a 300-layer chain fits (12 bytes a
 * layer); the 25 of the ids made before 2026-12-03 (`<ms base36>-<16 hex>`) stopped near 135.
 */
export const SNAPSHOT_ID_LENGTH = 8;

/**
 * A fresh on-disk id: random, never derived from a user's key (41 bits; a collision is met by
 * another try, see freshDirectory). Ids are opaque wherever they are stored: those of the
 * older, longer form keep working.
 */
export function newSnapshotId(): string {
  let id = "";
  for (let i = 0; i < SNAPSHOT_ID_LENGTH; i++) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return id;
}

/** `p`, or `otherwise` once `ms` passed first. */
async function within<T>(p: Promise<T>, ms: number, otherwise: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((resolve) => (timer = setTimeout(() => resolve(otherwise), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Mounts as one comparable string: type, source and options in order (a target is the caller's). */
function sameMounts(mounts: readonly Mount[]): string {
  return JSON.stringify(mounts.map((m) => [m.type, m.source, m.options]));
}

/**
 * What a mount list shows, as one comparable string, whether mounted to write or only to
 * read: an overlay's directories top first (upper, then lowers; no work directory), a bind's
 * source, the other options sorted, `ro`/`rw` left out.
 */
function sameTree(mounts: readonly Mount[]): string {
  return JSON.stringify(
    mounts.map((m) => {
      const plain = m.options.filter((o) => o !== "ro" && o !== "rw" && !/^(upperdir|workdir|lowerdir)=/.test(o)).sort();
      if (m.type !== "overlay") return [m.type, m.source, plain];
      const opt = (k: string) => m.options.find((o) => o.startsWith(`${k}=`))?.slice(k.length + 1);
      const dirs = [opt("upperdir"), ...(opt("lowerdir")?.split(":") ?? [])].filter((d): d is string => !!d);
      return [m.type, m.source, plain, dirs];
    }),
  );
}

/** Ids of the snapshot directories (`<dir>/<id>/…`) a mount list names, upper ones first. */
function idsIn(mounts: readonly Mount[], dir: string): string[] {
  const paths: string[] = [];
  for (const m of mounts) {
    if (m.type !== "overlay") paths.push(m.source);
    for (const o of m.options) {
      if (o.startsWith("upperdir=")) paths.unshift(o.slice("upperdir=".length));
      else if (o.startsWith("lowerdir=")) paths.push(...o.slice("lowerdir=".length).split(":"));
    }
  }
  const ids: string[] = [];
  for (const p of paths) {
    const rel = path.relative(dir, path.resolve(p));
    const id = rel.split(path.sep)[0];
    if (!id || rel.startsWith("..") || path.isAbsolute(rel) || ids.includes(id)) continue;
    ids.push(id);
  }
  return ids;
}

/** Rejects mounts whose writable directories lie outside the snapshotters' roots. */
export function checkMountsUnder(mounts: readonly Mount[], roots: readonly string[]): void {
  if (mounts.length === 0) throw invalidArgument("mounts must not be empty");
  const inside = (p: string) => roots.some((r) => {
    const rel = path.relative(r, path.resolve(p));
    return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel);
  });
  for (const m of mounts) {
    const dirs: string[] = [];
    if (m.type === "bind" || m.options.includes("bind") || m.options.includes("rbind")) dirs.push(m.source);
    else if (m.type === "overlay") {
      for (const o of m.options) {
        const [k, v] = [o.slice(0, o.indexOf("=")), o.slice(o.indexOf("=") + 1)];
        if (k === "upperdir" || k === "workdir") dirs.push(v);
        if (k === "lowerdir") dirs.push(...v.split(":"));
      }
    } else throw invalidArgument(`mount type ${JSON.stringify(m.type)} is not supported here`);
    for (const d of dirs) if (!inside(d)) throw invalidArgument(`mount source ${JSON.stringify(d)} is not a snapshot of this daemon`);
  }
}

/**
 * An append that failed Unavailable may have been stored all the same (the connection lost
 * after it was sent): its directory is kept, since a record without its directory cannot be
 * mended, while a directory no record names is removed by GC's sweep (or Cleanup) once the
 * projection has caught up with the log past that append (sweepUnowned).
 */
function outcomeUnknown(err: unknown): boolean {
  return isClass(err, "Unavailable");
}
