// The snapshot a container with a user namespace starts from, as ctr run --uidmap makes it
// (containerd's WithRemappedSnapshot): the image's files owned by the namespace's ids, that is
// every file's owner moved by the host ids the container's root maps to. Made once per image
// and mapping, as a committed snapshot named `<chain id>-<uid>-<gid>`, and shared by the
// containers that use them.
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import type { ApiClient } from "./client.js";
import { CkError, isClass, isNotFound } from "../errdefs/errdefs.js";
import { mountsFromApi, withTempMount } from "../snapshots/mount.js";
import { LEASE_HEADER } from "./transfer.js";

/**
 * Every entry under `root` (itself too) re-owned to its uid + `uid`, gid + `gid`: links
 * themselves, never followed; a file with several links once; set-user-ID and set-group-ID
 * bits kept (a chown clears them; containerd's does not put them back). Returns how many
 * entries were re-owned.
 */
export async function shiftOwners(root: string, uid: number, gid: number): Promise<number> {
  let n = 0;
  /** Files with several links already re-owned: dev:ino -> the owner they were given. */
  const done = new Map<string, { uid: number; gid: number }>();
  const visit = async (p: string): Promise<void> => {
    const st = await fs.lstat(p);
    const key = `${st.dev}:${st.ino}`;
    const given = st.nlink > 1 && !st.isDirectory() ? done.get(key) : undefined;
    if (!given || given.uid !== st.uid || given.gid !== st.gid) {
      const to = { uid: st.uid + uid, gid: st.gid + gid };
      await fs.lchown(p, to.uid, to.gid);
      if (!st.isSymbolicLink() && st.mode & 0o6000) await fs.chmod(p, st.mode & 0o7777);
      if (st.nlink > 1 && !st.isDirectory()) done.set(key, to);
      n++;
    }
    if (st.isDirectory()) for (const name of await fs.readdir(p)) await visit(path.join(p, name));
  };
  await visit(root);
  return n;
}

/**
 * The remapped snapshot for the image whose top snapshot is `chain`: found (and added to the
 * caller's lease, so that no garbage collection takes it before the caller's Prepare), or made
 * from an active snapshot of `chain` of this call's own whose files are re-owned through a
 * private mount (withTempMount), then committed; a failed one is removed, and one another ck committed first
 * serves. Needs root (mount, chown).
 */
export async function remappedParent(api: ApiClient, snapshotter: string, chain: string, uid: number, gid: number, metadata: Record<string, string>): Promise<string> {
  const name = `${chain}-${uid}-${gid}`;
  const found = await api.call("snapshots", "Stat", { snapshotter, key: name }).then(
    () => true,
    (err) => (isNotFound(err) ? false : Promise.reject(err)),
  );
  const lease = metadata[LEASE_HEADER];
  if (found) {
    if (lease) await api.call("leases", "AddResource", { id: lease, resource: { id: name, type: `snapshots/${snapshotter}` } });
    return name;
  }
  if (process.getuid?.() !== 0) throw new CkError("FailedPrecondition", `--uidmap: re-owning the image's files for the user namespace needs root: failed precondition`);
  // A key of this call's own: another run's, or an interrupted one's left under its lease, is not in the way.
  const key = `${name}-remap-${randomBytes(4).toString("hex")}`;
  try {
    const prepared = await api.call("snapshots", "Prepare", { snapshotter, key, parent: chain }, { metadata });
    // (A mount point only root can reach: see withTempMount.)
    await withTempMount(mountsFromApi(prepared.mounts), (root) => shiftOwners(root, uid, gid));
    await api.call("snapshots", "Commit", { snapshotter, name, key }, { metadata });
  } catch (err) {
    await api.call("snapshots", "Remove", { snapshotter, key }).catch(() => undefined);
    // Another ck made it meanwhile: theirs serves.
    if (isClass(err, "AlreadyExists")) return name;
    throw err;
  }
  return name;
}
