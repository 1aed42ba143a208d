// The sha256 and byte count of a stream passing through, as a layer's descriptor needs them.
import { createHash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";

/** A pass-through that hashes and counts what flows through it. */
export class Digester extends Transform {
  private readonly hash = createHash("sha256");
  size = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    cb(null, chunk);
  }
  /** `sha256:<hex>`; call once, after the stream ended. */
  digest(): string {
    return "sha256:" + this.hash.digest("hex");
  }
}
