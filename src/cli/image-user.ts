// The user a container from an image runs as, as containerd's client resolves an image
// config's `User` (oci.WithUser, WithAdditionalGIDs): "uid", "uid:gid", "name", "name:group",
// "uid:group", "name:gid". Names are looked up in the image's own /etc/passwd and /etc/group,
// read from the container's snapshot through a read-only temporary mount (as ctr does).
import { promises as fs } from "node:fs";
import path from "node:path";
import { CkError } from "../errdefs/errdefs.js";
import { withTempMount } from "../snapshots/mount.js";
import type { Mount } from "../snapshots/types.js";

export interface ProcessUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}
interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const isId = (s: string) => /^\d+$/.test(s);

/** Whether `user` names a user or group (looked up in the image's files), not only ids. */
export function hasNames(user: string): boolean {
  return user.split(":").some((part) => part !== "" && !isId(part));
}

function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split(/\r?\n/)) {
    const f = line.split(":");
    if (f.length < 4 || line.startsWith("#") || !isId(f[2]!) || !isId(f[3]!)) continue;
    out.push({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]) });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split(/\r?\n/)) {
    const f = line.split(":");
    if (f.length < 3 || line.startsWith("#") || !isId(f[2]!)) continue;
    out.push({ name: f[0]!, gid: Number(f[2]), members: (f[3] ?? "").split(",").filter(Boolean) });
  }
  return out;
}

/**
 * The uid, gid and supplementary gids for an image's `User`, given the image's /etc/passwd
 * and /etc/group texts (undefined: not read, or the image has none), as containerd's
 * WithImageConfig sets them: WithUser, then WithAdditionalGIDs of the resolved uid's user
 * ("root" when `User` is empty): every group that lists that user, but the group named after
 * it, with the primary gid first unless among them. A name that is not there is
 * FailedPrecondition, naming it; a numeric uid without a gid takes its passwd entry's gid, or 0.
 */
export function resolveUser(user: string, passwd: string | undefined, group: string | undefined, what = "image user"): Required<ProcessUser> {
  const users = parsePasswd(passwd ?? "");
  const groups = parseGroup(group ?? "");
  let uid = 0;
  let gid = 0;
  let entry: PasswdEntry | undefined;
  if (user !== "") {
    const [u, g, ...rest] = user.split(":");
    if (rest.length || u === "" || g === "") throw new CkError("InvalidArgument", `${what} "${user}": not user[:group]: invalid argument`);
    entry = isId(u!) ? users.find((e) => e.uid === Number(u)) : users.find((e) => e.name === u);
    if (!entry && !isId(u!)) {
      throw new CkError("FailedPrecondition", `${what} "${u}": not in the image's /etc/passwd${passwd === undefined ? " (it has none)" : ""}: failed precondition`);
    }
    uid = entry?.uid ?? Number(u);
    gid = entry?.gid ?? 0;
    if (g !== undefined) {
      const ge = isId(g) ? undefined : groups.find((e) => e.name === g);
      if (!isId(g) && !ge) throw new CkError("FailedPrecondition", `image group "${g}": not in the image's /etc/group${group === undefined ? " (it has none)" : ""}: failed precondition`);
      gid = ge?.gid ?? Number(g);
    }
  }
  const username = user === "" ? "root" : users.find((e) => e.uid === uid)?.name;
  const extra = username === undefined ? [] : groups.filter((e) => e.name !== username && e.members.includes(username)).map((e) => e.gid);
  return { uid, gid, additionalGids: extra.includes(gid) ? extra : [gid, ...extra] };
}

/**
 * A file under `root`, its symlinks followed inside `root` as a chroot would (an absolute
 * target starts again at `root`, ".." stops there): never out of it. Undefined if absent.
 * (src/diff/rootpath.ts resolves the same way for ckd's unpack; it loads the xattr addon,
 * which ck's start-up does without.)
 */
export async function readInRoot(root: string, rel: string): Promise<string | undefined> {
  const pending = rel.split("/").filter(Boolean).reverse(); // components still to walk, next last
  const at: string[] = []; // components walked, each a directory or the final file
  for (let hops = 0; pending.length; ) {
    const part = pending.pop()!;
    if (part === ".") continue;
    if (part === "..") {
      at.pop();
      continue;
    }
    const full = path.join(root, ...at, part);
    const st = await fs.lstat(full).catch(() => undefined);
    if (!st) return undefined;
    if (st.isSymbolicLink()) {
      if (++hops > 40) return undefined;
      const target = await fs.readlink(full);
      if (target.startsWith("/")) at.length = 0;
      pending.push(...target.split("/").filter(Boolean).reverse());
      continue;
    }
    at.push(part);
  }
  const file = path.join(root, ...at);
  const st = await fs.lstat(file).catch(() => undefined);
  return st?.isFile() ? fs.readFile(file, "utf8") : undefined;
}

/**
 * The image user of a prepared snapshot (its mounts), its names and groups read through a
 * read-only temporary mount, as ctr does (which needs root). Without root, ids alone are
 * used as given (no supplementary groups from the image); a name cannot be resolved.
 */
/**
 * A user for a process in a running task: names and groups read from the container's own
 * /etc/passwd and /etc/group as it sees them (through /proc/PID/root of its init, symlinks
 * kept inside it), which needs root; without root, ids alone as given.
 */
export async function userInTask(user: string, initPid: number, what: string): Promise<ProcessUser> {
  if (process.getuid?.() !== 0 || !(initPid > 0)) {
    if (hasNames(user)) throw new CkError("FailedPrecondition", `${what} "${user}": reading the container's /etc/passwd needs root: failed precondition`);
    return resolveUser(user, undefined, undefined, what);
  }
  const root = `/proc/${initPid}/root`;
  const [passwd, group] = await Promise.all([readInRoot(root, "etc/passwd"), readInRoot(root, "etc/group")]).catch((err) => {
    throw new CkError("FailedPrecondition", `${what} "${user}": the container's /etc/passwd could not be read (${(err as Error).message}): failed precondition`);
  });
  return resolveUser(user, passwd, group, what);
}

export async function userFromSnapshot(user: string, mounts: readonly Mount[], what = "image user"): Promise<ProcessUser> {
  if (process.getuid?.() !== 0) {
    if (hasNames(user)) throw new CkError("FailedPrecondition", `${what} "${user}": reading the image's /etc/passwd needs root: failed precondition`);
    return resolveUser(user, undefined, undefined, what);
  }
  if (mounts.length === 0) return resolveUser(user, undefined, undefined, what);
  const ro = mounts.map((m) => ({ ...m, options: [...m.options.filter((o) => o !== "rw"), "ro"] }));
  const [passwd, group] = await withTempMount(ro, (root) => Promise.all([readInRoot(root, "etc/passwd"), readInRoot(root, "etc/group")])).catch((err) => {
    throw new CkError("FailedPrecondition", `${what} "${user}": the image's /etc/passwd could not be read (${(err as Error).message}): failed precondition`);
  });
  return resolveUser(user, passwd, group, what);
}
