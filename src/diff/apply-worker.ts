// Worker thread side of applyLayerFile: applies layers (read from a blob file) onto
// directories, one request at a time, off ckd's event loop. The file system calls of an apply
// are synchronous (see apply.ts); here they block only this thread.
import { createReadStream } from "node:fs";
import { parentPort } from "node:worker_threads";
import { CkError } from "../errdefs/errdefs.js";
import { applyLayer, type ApplyOptions } from "./apply.js";

export interface ApplyRequest {
  id: number;
  root: string;
  file: string;
  opts: ApplyOptions;
}

/** The caller of request `cancel` went away: it stops before its next entry. */
export interface ApplyCancel {
  cancel: number;
}

export type ApplyReply =
  | { id: number; ok: true; digest: string; size: number; implicitDirs: string[]; madeForEntries: string[]; whiteouts: string[]; opaques: string[]; skippedDevices: string[] }
  | { id: number; ok: false; errorClass?: string; message: string; code?: string; syscall?: string };

/** The request under way (one at a time) and how to stop it. */
let current: { id: number; stop: AbortController } | undefined;

parentPort?.on("message", async (msg: ApplyRequest | ApplyCancel) => {
  if ("cancel" in msg) {
    if (current?.id === msg.cancel) current.stop.abort(new CkError("Canceled", "apply layer: the caller went away"));
    return;
  }
  const req = msg;
  const stop = new AbortController();
  current = { id: req.id, stop };
  const layer = createReadStream(req.file, { highWaterMark: 1 << 20 });
  let reply: ApplyReply;
  try {
    const r = await applyLayer(req.root, layer, { ...req.opts, signal: stop.signal });
    reply = { id: req.id, ok: true, digest: r.digest, size: r.size, implicitDirs: r.implicitDirs, madeForEntries: r.madeForEntries, whiteouts: r.whiteouts, opaques: r.opaques, skippedDevices: r.skippedDevices };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    reply = {
      id: req.id,
      ok: false,
      errorClass: err instanceof CkError ? err.errorClass : undefined,
      message: e?.message ?? String(err),
      code: e?.code,
      syscall: e?.syscall,
    };
  } finally {
    layer.destroy();
    current = undefined;
  }
  parentPort!.postMessage(reply);
});
