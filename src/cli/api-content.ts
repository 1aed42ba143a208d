// The content store seen through the Content API, as a client (ck's pull/push, like ctr's,
// runs client side): Info/Update/Read, and writers over Content.Write that wait on a locked
// ref, resume at the offset the daemon holds, and pipeline WRITEs (the daemon answers each in
// order, so several may be in flight; ctr waits for every answer, which costs a round trip per
// MiB).
import type { ApiClient } from "./client.js";
import { CkError, isAlreadyExists, isClass, isNotFound } from "../errdefs/errdefs.js";

const STAT = 0;
const WRITE = 1;
const COMMIT = 2;
/** Largest WRITE message: ctr's 1 MiB, well under gRPC's 4 MiB default limit. */
export const WRITE_CHUNK = 1 << 20;
/** WRITE messages in flight before waiting for answers. */
const WINDOW = 8;

export interface ContentInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

export interface OpenOptions {
  expected?: string;
  total?: number;
  /** Stop waiting for a locked ref. */
  signal?: AbortSignal;
  /** Called once while waiting on a ref another writer holds. */
  onLocked?: () => void;
}

/** An open ingest: `offset` is where the daemon's bytes end (resume point). */
export interface RemoteWriter {
  readonly offset: number;
  /** True when the daemon already holds the whole blob (shared from another namespace). */
  readonly complete: boolean;
  /** Writes at the current offset; several buffers go out as one message without a copy first. */
  write(data: Buffer | Buffer[]): Promise<void>;
  /** Drops the held bytes and restarts at offset 0, under the same lock. */
  truncate(): Promise<void>;
  /** Waits for every pending WRITE, then commits; AlreadyExists counts as success. */
  commit(size: number, expected: string, labels?: Record<string, string>): Promise<string>;
  /** Ends the stream without committing: the ingest stays for a later resume. */
  close(): void;
}

/** Splits buffers into runs of at most WRITE_CHUNK bytes (slicing only where a run is full). */
function* messages(data: Buffer | Buffer[]): Generator<Buffer[]> {
  let run: Buffer[] = [];
  let size = 0;
  for (let b of Array.isArray(data) ? data : [data]) {
    while (b.length > 0) {
      const take = Math.min(b.length, WRITE_CHUNK - size);
      run.push(take === b.length ? b : b.subarray(0, take));
      size += take;
      b = b.subarray(take);
      if (size === WRITE_CHUNK) {
        yield run;
        run = [];
        size = 0;
      }
    }
  }
  if (size > 0) yield run;
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

/**
 * WriteContentRequest{action: WRITE, offset, data} in protobuf wire format, built around the
 * data in one copy (fields 1, 5 and 6 of containerd's content.proto).
 */
export function encodeWrite(offset: number, parts: Buffer[], length: number): Buffer {
  const head = Buffer.from([0x08, WRITE, 0x28, ...varint(offset), 0x32, ...varint(length)]);
  return Buffer.concat([head, ...parts], head.length + length);
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        reject(new CkError("Canceled", "waiting for a locked ref: canceled"));
      },
      { once: true },
    );
  });

export class ApiContent {
  constructor(
    private readonly api: ApiClient,
    /** Sent with every call, e.g. containerd-lease. */
    private readonly metadata: Record<string, string> = {},
  ) {}

  async info(digest: string): Promise<ContentInfo | undefined> {
    try {
      const r = await this.api.call("content", "Info", { digest }, { metadata: this.metadata });
      return { digest: r.info.digest, size: Number(r.info.size), labels: r.info.labels ?? {} };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Sets these labels (others kept), as ctr does with one mask path per key. */
  async setLabels(digest: string, labels: Record<string, string>): Promise<void> {
    const paths = Object.keys(labels).map((k) => `labels.${k}`);
    if (paths.length === 0) return;
    await this.api.call("content", "Update", { info: { digest, labels }, update_mask: { paths } }, { metadata: this.metadata });
  }

  async *read(digest: string, offset = 0): AsyncGenerator<Buffer> {
    for await (const m of this.api.stream("content", "Read", { digest, offset, size: 0 }, { metadata: this.metadata })) {
      yield Buffer.from(m.data ?? []);
    }
  }

  async readAll(digest: string, limit = Infinity): Promise<Buffer> {
    const parts: Buffer[] = [];
    let n = 0;
    for await (const b of this.read(digest)) {
      n += b.length;
      if (n > limit) throw new CkError("InvalidArgument", `content ${digest} is larger than ${limit} bytes`);
      parts.push(b);
    }
    return Buffer.concat(parts);
  }

  async abort(ref: string): Promise<void> {
    await this.api.call("content", "Abort", { ref }, { metadata: this.metadata }).catch((err) => {
      if (!isNotFound(err)) throw err;
    });
  }

  /**
   * Opens a writer for `ref`. Resolves "exists" when the expected blob is already in this
   * namespace (also after waiting on a lock another writer held for it); waits while the ref
   * is locked, as containerd's content.OpenWriter does.
   */
  async open(ref: string, opts: OpenOptions = {}): Promise<RemoteWriter | "exists"> {
    let delay = 20;
    let told = false;
    for (;;) {
      try {
        return await this.tryOpen(ref, opts);
      } catch (err) {
        if (opts.expected && isAlreadyExists(err)) return "exists";
        if (!isClass(err, "Unavailable") || !/locked/.test((err as Error).message)) throw err;
        if (!told) opts.onLocked?.();
        told = true;
      }
      await sleep(delay, opts.signal);
      delay = Math.min(delay * 2, 500);
      if (opts.expected && (await this.info(opts.expected))) return "exists";
    }
  }

  private async tryOpen(ref: string, opts: OpenOptions): Promise<RemoteWriter> {
    const w = this.api.lockstep<object>("content", "Write", { metadata: this.metadata });
    let st: any;
    try {
      st = await w.send({ action: STAT, ref, total: opts.total ?? 0, expected: opts.expected ?? "" });
    } catch (err) {
      w.cancel();
      throw err;
    }
    let offset = Number(st.offset ?? 0);
    const total = Number(st.total ?? opts.total ?? 0);
    const complete = !!opts.expected && total > 0 && offset === total && st.digest === opts.expected;
    const pending: Promise<unknown>[] = [];
    let failed: unknown;
    const settle = async (upTo: number) => {
      while (pending.length > upTo) await pending.shift();
      if (failed) throw failed;
    };
    return {
      get offset() {
        return offset;
      },
      complete,
      async write(data: Buffer | Buffer[]) {
        for (const parts of messages(data)) {
          const length = parts.reduce((n, b) => n + b.length, 0);
          const p = w.send(encodeWrite(offset, parts, length)).catch((err) => {
            failed ??= err;
          });
          offset += length;
          pending.push(p);
          await settle(WINDOW - 1);
        }
      },
      async truncate() {
        await settle(0);
        await w.send({ action: WRITE, offset: 0, data: Buffer.alloc(0) });
        offset = 0;
      },
      async commit(size, expected, labels = {}) {
        await settle(0);
        try {
          // The offset this writer reached, as containerd's client sends: the daemon checks it (a
          // COMMIT is a WRITE first), and `size` is checked as the total.
          const r: any = await w.send({ action: COMMIT, total: size, offset, expected, labels });
          return r.digest as string;
        } catch (err) {
          if (isAlreadyExists(err)) return expected;
          throw err;
        } finally {
          w.end();
        }
      },
      close() {
        w.end();
      },
    };
  }
}
