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

export type ApplyReply =
  | { id: number; ok: true; digest: string; size: number; implicitDirs: string[]; madeForEntries: string[]; whiteouts: string[]; opaques: string[] }
  | { id: number; ok: false; errorClass?: string; message: string; code?: string; syscall?: string };

parentPort?.on("message", async (req: ApplyRequest) => {
  const layer = createReadStream(req.file, { highWaterMark: 1 << 20 });
  let reply: ApplyReply;
  try {
    const r = await applyLayer(req.root, layer, req.opts);
    reply = { id: req.id, ok: true, digest: r.digest, size: r.size, implicitDirs: r.implicitDirs, madeForEntries: r.madeForEntries, whiteouts: r.whiteouts, opaques: r.opaques };
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
  }
  parentPort!.postMessage(reply);
});
