// What a container with a user namespace needs of its bundle's directories. runc's init makes
// the container's mounts as the namespace's root, which is another user on the host (the
// host ids that container ids 0 map to): every directory above the rootfs must let that
// user through. containerd keeps its bundles under 0711 directories and gives the
// bundle itself to the mapped root's group (0710); ck does the same.
import fss from "node:fs";
import path from "node:path";

/** An OCI spec's id mapping (`linux.uidMappings`/`gidMappings`). */
export interface IdMapping {
  containerID?: number;
  hostID?: number;
  size?: number;
}

export interface UserNsSpec {
  linux?: { namespaces?: Array<{ type?: string }>; uidMappings?: IdMapping[]; gidMappings?: IdMapping[] };
}

/**
 * The namespace's root as the host sees it: the host ids a container's uid and gid 0 map to,
 * and the host ids mapped at all (whose files that root may treat as its own); undefined
 * without a user namespace.
 */
export interface RemappedRoot {
  uid: number;
  gid: number;
  uidMappings: IdMapping[];
  gidMappings: IdMapping[];
}

export function remappedRoot(spec: UserNsSpec): RemappedRoot | undefined {
  if (!spec.linux?.namespaces?.some((n) => n.type === "user")) return undefined;
  const hostOf0 = (maps: IdMapping[] | undefined) => {
    const m = maps?.find((x) => (x.containerID ?? 0) <= 0 && (x.containerID ?? 0) + (x.size ?? 0) > 0);
    return m ? (m.hostID ?? 0) - (m.containerID ?? 0) : 0;
  };
  const uidMappings = spec.linux.uidMappings ?? [];
  const gidMappings = spec.linux.gidMappings ?? [];
  return { uid: hostOf0(uidMappings), gid: hostOf0(gidMappings), uidMappings, gidMappings };
}

const isMapped = (maps: IdMapping[], hostId: number) => maps.some((m) => hostId >= (m.hostID ?? 0) && hostId < (m.hostID ?? 0) + (m.size ?? 0));

/**
 * Whether the namespace's root may pass through a directory with these owner and mode bits:
 * by the mode's class, or as the owner in its namespace (CAP_DAC_OVERRIDE there) when both
 * the directory's owner and group are mapped into it.
 */
export function searchable(st: { uid: number; gid: number; mode: number }, who: RemappedRoot | { uid: number; gid: number }): boolean {
  if (who.uid === 0) return true;
  if ("uidMappings" in who && isMapped(who.uidMappings, st.uid) && isMapped(who.gidMappings, st.gid)) return true;
  if (st.uid === who.uid) return (st.mode & 0o100) !== 0;
  if (st.gid === who.gid) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

/**
 * The first directory from "/" down to `dir` (itself included) that `who` cannot pass
 * through, with its mode; undefined when all let it through.
 */
export function firstUnsearchable(dir: string, who: RemappedRoot | { uid: number; gid: number }): { dir: string; mode: number } | undefined {
  const parts = path.resolve(dir).split("/").filter(Boolean);
  for (let i = 0; i <= parts.length; i++) {
    const d = "/" + parts.slice(0, i).join("/");
    const st = fss.statSync(d);
    if (!searchable(st, who)) return { dir: d, mode: st.mode & 0o7777 };
  }
  return undefined;
}
