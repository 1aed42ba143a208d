// The content aggregate: a blob's metadata per namespace. Committing bytes is the store's
// job (src/content); once they are in place, a commit here makes the blob visible in one
// namespace with its labels, on the committing host (several ckd may share one log: the
// record names the hosts whose stores hold the bytes, and each host sees only those). Update changes labels under a field mask; delete hides it from
// that namespace (the bytes go once no namespace refers to them).
import { alreadyExists, notFound } from "../errdefs/errdefs.js";
import { blobHeldBy, blobRecord, keys, TYPE, type BlobRecord, type LeaseRecord, type Timestamp } from "../projections/views.js";
import { validateDigest, validateLabels, validateFieldMask, type FieldMaskRule } from "./validation.js";
import type { Decision, StateView } from "./sequencer.js";
import { applyLabelMask, dropEmpty, maskedLabels } from "./masks.js";

/** containerd's content store accepts `labels` and `labels.<key>` only. */
const CONTENT_FIELD_MASK: FieldMaskRule = { fields: ["labels"], maps: ["labels"] };

export interface CommitContent {
  namespace: string;
  digest: string;
  size: number;
  labels: Record<string, string>;
  /** The lease the commit is made under (containerd-lease header): the blob is added to it. */
  lease?: string;
  /** This ckd's host id: the host whose content store holds the bytes (BlobRecord.hosts). */
  host?: string;
}
export interface UpdateContent {
  namespace: string;
  digest: string;
  labels: Record<string, string>;
  paths: string[];
  /** The update's time: the event's, and so the record's updated_at (returned as stored). */
  now: Timestamp;
  /** This ckd's host id: a blob another host holds is not found here. */
  host?: string;
}
export interface DeleteContent {
  namespace: string;
  digest: string;
  /** The call's lease (containerd-lease): it lets go of the digest too, as containerd's. */
  lease?: string;
  /** This ckd's host id: the blob leaves this host's store; other hosts holding it keep it. */
  host?: string;
}

/** How containerd's content store names a blob's labels in its refusals (metadata/content.go validateInfo). */
const INFO_LABELS = "info.Labels";

/**
 * The labels a commit stores (empty values dropped), validated: InvalidArgument naming the
 * field. A caller that moves bytes into place before the commit calls it first, so that bad
 * labels move nothing (containerd's metadata store checks them before its backend commits).
 */
export function commitLabels(labels: Record<string, string>): Record<string, string> {
  const kept = dropEmpty(labels);
  validateLabels(kept, INFO_LABELS);
  return kept;
}

/** `lease` is the record of cmd.lease (undefined when absent or when no lease is named). */
export function decideCommitContent(cmd: CommitContent, current: BlobRecord | undefined, lease?: LeaseRecord): Decision<BlobRecord> {
  validateDigest("digest", cmd.digest);
  const labels = commitLabels(cmd.labels);
  if (cmd.lease && !lease) throw notFound(`lease "${cmd.lease}" does not exist`);
  if (current && blobHeldBy(current, cmd.host)) throw alreadyExists(`content ${cmd.digest}`);
  const rec = current
    ? blobRecord({ ...current, labels: { ...current.labels, ...labels }, hosts: current.hosts && [...current.hosts, cmd.host!] })
    : blobRecord({ digest: cmd.digest, size: cmd.size, labels, hosts: cmd.host ? [cmd.host] : undefined });
  const payload: Record<string, unknown> = { digest: rec.digest, size: cmd.size, labels };
  if (cmd.lease) payload.lease = cmd.lease;
  if (cmd.host) payload.host = cmd.host;
  return {
    event: { namespace: cmd.namespace, topic: "/content/commit", typeName: TYPE.ContentCommit, payload },
    result: rec,
  };
}

export function decideUpdateContent(cmd: UpdateContent, current: BlobRecord | undefined): Decision<BlobRecord> {
  validateDigest("digest", cmd.digest);
  validateFieldMask(`content ${cmd.digest}`, cmd.paths, CONTENT_FIELD_MASK);
  validateLabels(maskedLabels(cmd.labels, cmd.paths, "labels"), INFO_LABELS);
  if (!current || !blobHeldBy(current, cmd.host)) throw notFound(`content digest ${cmd.digest}`);
  const labels = cmd.paths.length === 0 ? dropEmpty(cmd.labels) : applyLabelMask(current.labels, cmd.labels, cmd.paths, "labels");
  const rec = blobRecord({ ...current, labels, updated_at: cmd.now });
  return {
    event: { namespace: cmd.namespace, topic: "/content/update", typeName: TYPE.ContentUpdate, payload: { digest: rec.digest, labels: rec.labels }, timestamp: cmd.now },
    result: rec,
  };
}

/** `leaseHolds`: whether the call's lease holds the digest (it then lets go of it with the delete). */
export function decideDeleteContent(cmd: DeleteContent, current: BlobRecord | undefined, leaseHolds = false): Decision<void> {
  validateDigest("digest", cmd.digest);
  if (!current || !blobHeldBy(current, cmd.host)) throw notFound(`content digest ${cmd.digest}`);
  const payload: Record<string, unknown> = { digest: cmd.digest };
  if (leaseHolds && cmd.lease) payload.ck_lease = cmd.lease;
  if (cmd.host) payload.ck_host = cmd.host;
  return {
    event: { namespace: cmd.namespace, topic: "/content/delete", typeName: TYPE.ContentDelete, payload },
    result: undefined,
  };
}

const currentBlob = (view: StateView, ns: string, digest: string) => view.get<BlobRecord>(keys.blob(ns, digest));

export const contentHandlers = {
  commit: (cmd: CommitContent) => (view: StateView) =>
    decideCommitContent(
      cmd,
      currentBlob(view, cmd.namespace, cmd.digest),
      cmd.lease && !cmd.lease.includes("\u0000") ? view.get<LeaseRecord>(keys.lease(cmd.namespace, cmd.lease)) : undefined,
    ),
  update: (cmd: UpdateContent) => (view: StateView) => decideUpdateContent(cmd, currentBlob(view, cmd.namespace, cmd.digest)),
  delete: (cmd: DeleteContent) => (view: StateView) =>
    decideDeleteContent(
      cmd,
      currentBlob(view, cmd.namespace, cmd.digest),
      !!cmd.lease && !cmd.lease.includes("\u0000") && view.get(keys.leaseResource(cmd.namespace, cmd.lease, { id: cmd.digest, type: "content" })) !== undefined,
    ),
};
