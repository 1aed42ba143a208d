// Writes of large ingests that bypass the page cache (O_DIRECT). On the virtual machines ck
// runs on here, a page of new page cache costs the host a fault the first time the guest
// touches it (and the guest hands free memory back within seconds): writing 512 MiB into a
// new file took 1.26-1.28 s buffered and 0.28 s with O_DIRECT, copy into aligned memory
// included (2026-11-30, AMD EPYC 2 vCPU, ext4 on virtio-blk). The bytes are on the device once
// a write returns, so the commit's fdatasync has no dirty pages left to write either.
//
// O_DIRECT wants the memory, the file offset and the length aligned (to the device's logical
// block; 4 KiB here covers every device). Node cannot align a Buffer, but a WebAssembly
// memory starts on a page: its 1 MiB slots are the aligned staging buffers, each write's
// bytes are copied there. Whole blocks go to the device from there; the bytes of a last,
// partial block go through the page cache (the ordinary file handle) and are kept, so the
// next write rewrites that block whole. The file always holds every byte written, as with
// buffered writes, so resume after a crash is unchanged. A filesystem without O_DIRECT
// (tmpfs) or a refused write falls back to buffered writes.
import { promises as fs, constants as fsc } from "node:fs";
import type { FileHandle } from "node:fs/promises";

/** Alignment of offsets, lengths and memory for O_DIRECT. */
export const DIRECT_ALIGN = 4096;
/**
 * Writes with fewer whole blocks than this go through the page cache: each O_DIRECT write
 * waits for the device, a buffered one does not.
 */
const MIN_DIRECT_BYTES = 64 * 1024;
const WASM_PAGE = 65536;

/** A few page-aligned buffers, lent to one write at a time. */
export class AlignedBuffers {
  private free: Buffer[] | undefined;

  constructor(
    private readonly slots = 8,
    readonly slotSize = 1 << 20,
  ) {
    if (slotSize % DIRECT_ALIGN !== 0) throw new Error(`slot size ${slotSize} is not a multiple of ${DIRECT_ALIGN}`);
  }

  /** A free slot, or undefined when all are lent (the caller writes through the page cache). */
  take(): Buffer | undefined {
    if (!this.free) {
      // Made on first use: a store that never sees a large ingest reserves nothing. Where the
      // process may not reserve that address space (ulimit -v), there are no slots: every
      // write goes through the page cache.
      try {
        const memory = new WebAssembly.Memory({ initial: Math.ceil((this.slots * this.slotSize) / WASM_PAGE) });
        this.free = Array.from({ length: this.slots }, (_, i) => Buffer.from(memory.buffer, i * this.slotSize, this.slotSize));
      } catch {
        this.free = [];
      }
    }
    return this.free.pop();
  }

  give(b: Buffer): void {
    this.free!.push(b);
  }
}

export const isErrno = (err: unknown, code: string): boolean =>
  typeof err === "object" && err !== null && (err as NodeJS.ErrnoException).code === code;

/** Writes all of `data` at `position` (a write may take less than it was given). */
export async function writeAll(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** Reads into all of `buf` from `position`, or up to the end of the file; returns the bytes read. */
export async function readAll(fh: FileHandle, buf: Buffer, position: number): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/** The last `n` bytes of a + b, copied. */
function lastBytes(a: Buffer, b: Buffer, n: number): Buffer {
  if (n <= b.length) return Buffer.from(b.subarray(b.length - n));
  return Buffer.concat([a.subarray(a.length - (n - b.length)), b]);
}

/**
 * Appends to one file, whole blocks with O_DIRECT and the rest through `fh`. Not for
 * concurrent use: the caller serialises writes, each at the file's current end.
 */
export class DirectAppender {
  /** Bytes written with O_DIRECT (for tests and measurements). */
  directBytes = 0;
  private broken = false;

  private constructor(
    private readonly fh: FileHandle,
    private dh: FileHandle | undefined,
    /** The file's bytes from the last block boundary to its end. */
    private tail: Buffer,
    private readonly buffers: AlignedBuffers,
  ) {}

  /**
   * For the file at `path`, open as `fh` and `size` bytes long. Without O_DIRECT on this
   * filesystem the appender writes through `fh` only.
   */
  static async open(path: string, fh: FileHandle, size: number, buffers: AlignedBuffers): Promise<DirectAppender> {
    let dh: FileHandle | undefined;
    try {
      dh = await fs.open(path, fsc.O_WRONLY | fsc.O_DIRECT);
    } catch (err) {
      if (!isErrno(err, "EINVAL") && !isErrno(err, "EOPNOTSUPP")) throw err;
    }
    const tailLength = size % DIRECT_ALIGN;
    const tail = Buffer.alloc(tailLength);
    try {
      if ((await readAll(fh, tail, size - tailLength)) < tailLength) throw new Error(`${path} is shorter than ${size} bytes`);
    } catch (err) {
      await dh?.close();
      throw err;
    }
    return new DirectAppender(fh, dh, tail, buffers);
  }

  /** Writes `data` at `offset`, the file's end. */
  async write(data: Buffer, offset: number): Promise<void> {
    if (data.length === 0) return;
    const blockStart = offset - this.tail.length;
    const combined = this.tail.length + data.length;
    const whole = combined - (combined % DIRECT_ALIGN);
    let written = 0; // of the combined bytes, from blockStart
    if (this.dh && !this.broken && whole >= MIN_DIRECT_BYTES) {
      while (written < whole) {
        const slot = this.buffers.take();
        if (!slot) break;
        try {
          const n = Math.min(slot.length, whole - written);
          // Fill the slot with combined[written, written + n): the tail's bytes, then data's.
          const filled = written < this.tail.length ? this.tail.copy(slot, 0, written) : 0;
          const dataStart = Math.max(0, written - this.tail.length);
          data.copy(slot, filled, dataStart, dataStart + n - filled);
          await writeAll(this.dh, slot.subarray(0, n), blockStart + written);
          this.directBytes += n;
          written += n;
        } catch (err) {
          if (!isErrno(err, "EINVAL")) throw err;
          this.broken = true; // refused (alignment): the page cache from here on
          break;
        } finally {
          this.buffers.give(slot);
        }
      }
    }
    // The rest (a partial last block, or all of it without O_DIRECT) through the page cache:
    // only data's bytes, since the tail's are in the file already.
    const from = Math.max(0, blockStart + written - offset);
    if (from < data.length) await writeAll(this.fh, data.subarray(from), offset + from);
    this.tail = lastBytes(this.tail, data, (offset + data.length) % DIRECT_ALIGN);
  }

  /** Closes the O_DIRECT handle; `fh` stays the caller's. */
  async close(): Promise<void> {
    const dh = this.dh;
    this.dh = undefined;
    await dh?.close();
  }
}
