// The snapshot a container with a user namespace starts from, as ctr run --uidmap makes it
// (containerd's WithRemappedSnapshot): the image's files owned by the namespace's ids, that is
// every file's owner moved by the host ids the container's root maps to. Made once per image
// and mapping, as a committed snapshot named `<chain id>-<uid>-<gid>`, and shared by the
// containers that use them.
import { promises as fs } from "node:fs";
import path from "node:path";
import type { ApiClient } from "./client.js";
import { CkError, isNotFound } from "../errdefs/errdefs.js";
import { mountsFromApi, withTempMount } from "../snapshots/mount.js";

/** Every entry under `root` (itself too) re-owned to its uid + `uid`, gid + `gid`; links themselves, never followed. */
export async function shiftOwners(root: string, uid: number, gid: number): Promise<number> {
  let n = 0;
  const visit = async (p: string): Promise<void> => {
    const st = await fs.lstat(p);
    await fs.lchown(p, st.uid + uid, st.gid + gid);
    n++;
    if (st.isDirectory()) for (const name of await fs.readdir(p)) await visit(path.join(p, name));
  };
  await visit(root);
  return n;
}

/**
 * The remapped snapshot for the image whose top snapshot is `chain`: found, or made from an
 * active `<name>-remap` snapshot of `chain` whose files are re-owned through a local mount,
 * then committed (a failed one is removed). Needs root (mount, chown). Runs under the caller's
 * lease, as ctr's does.
 */
export async function remappedParent(api: ApiClient, snapshotter: string, chain: string, uid: number, gid: number, metadata: Record<string, string>): Promise<string> {
  const name = `${chain}-${uid}-${gid}`;
  const found = await api.call("snapshots", "Stat", { snapshotter, key: name }).then(
    () => true,
    (err) => (isNotFound(err) ? false : Promise.reject(err)),
  );
  if (found) return name;
  if (process.getuid?.() !== 0) throw new CkError("FailedPrecondition", `--uidmap: re-owning the image's files for the user namespace needs root: failed precondition`);
  const key = `${name}-remap`;
  const prepared = await api.call("snapshots", "Prepare", { snapshotter, key, parent: chain }, { metadata });
  try {
    await withTempMount(mountsFromApi(prepared.mounts), (root) => shiftOwners(root, uid, gid));
    await api.call("snapshots", "Commit", { snapshotter, name, key }, { metadata });
  } catch (err) {
    await api.call("snapshots", "Remove", { snapshotter, key }).catch(() => undefined);
    // Another ck made it meanwhile: theirs serves.
    if ((err as CkError).errorClass === "AlreadyExists") return name;
    throw err;
  }
  return name;
}
