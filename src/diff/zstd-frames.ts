// The frame structure of a zstd stream (RFC 8878), walked without decompressing it, so that
// every frame's window is checked before the decompressor sees the frame: fzstd allocates a
// frame's whole window as its header asks, and a layer may hold any number of frames.
import { invalidArgument } from "../errdefs/errdefs.js";

/**
 * The largest zstd window a layer may ask for, as containerd's decoder allows. fzstd allocates
 * the whole window and copies it once a block: a frame of ~800 bytes asking for 1.9 GiB held
 * an apply worker 30 s at 2 GB (a 1 MB one, hours).
 */
export const ZSTD_MAX_WINDOW = 512 << 20;

const FRAME_MAGIC = 0xfd2fb528;
/** Skippable frames have the magic numbers 0x184D2A50 to 0x184D2A5F. */
const SKIPPABLE_MAGIC = 0x184d2a50;
/** The longest frame header: magic, descriptor, window descriptor, dictionary id, content size. */
const MAX_HEADER = 4 + 1 + 1 + 4 + 8;
/** A skippable frame's header: its magic and the length of its data. */
const SKIPPABLE_HEADER = 8;
const BLOCK_HEADER = 3;
const CHECKSUM = 4;

const enum BlockType {
  Raw = 0,
  Rle = 1,
  Compressed = 2,
  Reserved = 3,
}

/**
 * The window a zstd frame header asks for (RFC 8878 3.1.1.1), once `head` holds the header;
 * undefined while it does not yet, or for a skippable frame.
 */
export function zstdWindowSize(head: Buffer): number | undefined {
  if (head.length < 6 || head.readUInt32LE(0) !== FRAME_MAGIC) return undefined;
  const fhd = head[4]!;
  if (((fhd >> 5) & 1) === 0) {
    const wd = head[5]!;
    const base = 2 ** (10 + (wd >> 3));
    return base + (base / 8) * (wd & 7);
  }
  // Single segment: the window is the frame's content size.
  const dictBytes = [0, 1, 2, 4][fhd & 3]!;
  const fcsBytes = [1, 2, 4, 8][fhd >> 6]!;
  const at = 5 + dictBytes;
  if (head.length < at + fcsBytes) return undefined;
  if (fcsBytes === 1) return head[at]!;
  if (fcsBytes === 2) return head.readUInt16LE(at) + 256;
  if (fcsBytes === 4) return head.readUInt32LE(at);
  return Number(head.readBigUInt64LE(at));
}

/**
 * The bytes of a zstd frame header, magic included, as its Frame_Header_Descriptor (`fhd`)
 * says: a window descriptor unless the frame is a single segment, 0-4 bytes of dictionary id,
 * and 0-8 of content size (a single segment always has one, of 1 byte at flag 0).
 */
function frameHeaderSize(fhd: number): number {
  const single = (fhd >> 5) & 1;
  const fcsFlag = fhd >> 6;
  const fcsBytes = fcsFlag === 0 ? single : 1 << fcsFlag;
  return 5 + (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + fcsBytes;
}

/** What the scanner is gathering the bytes of, after its pending skip. */
type Phase = "magic" | "frame header" | "skippable header" | "block header";

/**
 * Walks a zstd stream's frames as its bytes come, chunk by chunk split anywhere, and refuses
 * (InvalidArgument) a frame whose window is over ZSTD_MAX_WINDOW, a stream that is not zstd
 * frames, a reserved block type, and, at end(), a stream cut inside a frame. Block contents
 * and skippable frames are passed over without being held: the scanner keeps only the header
 * it is reading (at most 18 bytes).
 */
export class ZstdFrameScanner {
  private readonly head = Buffer.alloc(MAX_HEADER);
  /** Bytes of the current header gathered in `head`. */
  private have = 0;
  private phase: Phase = "magic";
  /** Bytes still to pass over (a block's content, its frame's checksum, a skippable frame's data) before the phase's. */
  private skip = 0;
  /** Stream bytes consumed so far. */
  private offset = 0;
  /** The current frame: its number (from 1, skippable frames counted) and where it starts. */
  private frame = 0;
  private frameAt = 0;
  /** The current frame's descriptor says a checksum follows its last block. */
  private checksum = false;

  /** @param what names the stream in errors. */
  constructor(private readonly what = "zstd layer") {}

  /** The next bytes of the stream. Throws at the first byte that makes it refused. */
  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        this.offset += n;
        i += n;
        continue;
      }
      if (this.phase === "magic" && this.have === 0) {
        this.frame++;
        this.frameAt = this.offset;
      }
      const want = this.wanted();
      const n = Math.min(want - this.have, chunk.length - i);
      this.head.set(chunk.subarray(i, i + n), this.have);
      this.have += n;
      this.offset += n;
      i += n;
      if (this.have === want) this.parse();
    }
  }

  /** The stream has ended: throws if it ended inside a frame. */
  end(): void {
    if (this.skip > 0 || this.have > 0 || this.phase !== "magic") {
      throw this.malformed(`unexpected EOF inside the frame (${this.offset} bytes read)`);
    }
  }

  /** The bytes of `head` the current phase needs before it can be parsed. */
  private wanted(): number {
    switch (this.phase) {
      case "magic":
        return 4;
      case "frame header":
        // The descriptor first, which says how long the rest is.
        return this.have < 5 ? 5 : frameHeaderSize(this.head[4]!);
      case "skippable header":
        return SKIPPABLE_HEADER;
      case "block header":
        return BLOCK_HEADER;
    }
  }

  /** `head` holds what the phase wanted: moves to the next. */
  private parse(): void {
    switch (this.phase) {
      case "magic":
        return this.magic(this.head.readUInt32LE(0));
      case "frame header":
        if (this.have === 5) return; // the descriptor alone: the rest of the header follows
        return this.frameHeader();
      case "skippable header":
        this.skip = this.head.readUInt32LE(4);
        return this.next("magic");
      case "block header":
        return this.blockHeader(this.head.readUIntLE(0, 3));
    }
  }

  private magic(magic: number): void {
    if (magic === FRAME_MAGIC) {
      this.phase = "frame header"; // keeps the magic in `head`: zstdWindowSize reads it
    } else if ((magic & 0xfffffff0) >>> 0 === SKIPPABLE_MAGIC) {
      this.phase = "skippable header";
    } else {
      throw this.malformed(`not a zstd frame (magic 0x${magic.toString(16).padStart(8, "0")})`);
    }
  }

  private frameHeader(): void {
    const fhd = this.head[4]!;
    // RFC 8878 3.1.1.1.1: a decoder must refuse the reserved bit, as fzstd does.
    if (fhd & 0x08) throw this.malformed(`the reserved bit of the frame header descriptor is set`);
    const window = zstdWindowSize(this.head.subarray(0, this.have))!;
    if (window > ZSTD_MAX_WINDOW) {
      throw invalidArgument(
        `${this.what}: frame ${this.frame} (at byte ${this.frameAt}) asks for a ${window} byte window, more than the ${ZSTD_MAX_WINDOW} bytes allowed`,
      );
    }
    this.checksum = ((fhd >> 2) & 1) === 1;
    this.next("block header");
  }

  /**
   * A block header (RFC 8878 3.1.1.2): bit 0 says the block is its frame's last, bits 1-2
   * its type, bits 3-23 its size; an RLE block's content is one byte, whatever its size.
   */
  private blockHeader(h: number): void {
    const last = (h & 1) === 1;
    const type = ((h >> 1) & 3) as BlockType;
    const size = h >>> 3;
    if (type === BlockType.Reserved) {
      throw this.malformed(`block at byte ${this.offset - BLOCK_HEADER} has the reserved block type`);
    }
    this.skip = type === BlockType.Rle ? 1 : size;
    if (!last) return this.next("block header");
    if (this.checksum) this.skip += CHECKSUM;
    this.next("magic");
  }

  private next(phase: Phase): void {
    this.phase = phase;
    this.have = 0;
  }

  /** A corrupt or cut-short stream, in the words asCkError gives fzstd's failures. */
  private malformed(why: string) {
    return invalidArgument(`${this.what}: malformed: frame ${this.frame} (at byte ${this.frameAt}): ${why}`);
  }
}
