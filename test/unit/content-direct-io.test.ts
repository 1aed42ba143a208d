// Large ingests written past the page cache (src/content/direct-io.ts): whatever the sizes of
// the writes, the file holds exactly the bytes written; whole blocks went to the device with
// O_DIRECT (fincore shows them absent from the page cache); a file ending mid-block is
// continued; without a free staging buffer or without O_DIRECT (tmpfs) the page cache is used.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, promises as fs, constants as fsc } from "node:fs";
import os from "node:os";
import path from "node:path";
import { AlignedBuffers, DIRECT_ALIGN, DirectAppender } from "../../src/content/direct-io.js";

async function withDir(base: string, body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(base, "ck-direct-"));
  try {
    await body(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Appends `sizes` random chunks through an appender on `file` (which may hold bytes already). */
async function appendChunks(file: string, sizes: number[], buffers: AlignedBuffers): Promise<{ written: Buffer; appender: DirectAppender }> {
  const fh = await fs.open(file, fsc.O_RDWR | fsc.O_CREAT, 0o644);
  try {
    let offset = (await fh.stat()).size;
    const appender = await DirectAppender.open(file, fh, offset, buffers);
    const parts: Buffer[] = [];
    for (const n of sizes) {
      const chunk = randomBytes(n);
      await appender.write(chunk, offset);
      parts.push(chunk);
      offset += n;
    }
    await appender.close();
    return { written: Buffer.concat(parts), appender };
  } finally {
    await fh.close();
  }
}

/** Bytes of `file` in the page cache. */
function cachedBytes(file: string): number {
  return Number(execFileSync("fincore", ["--bytes", "--noheadings", "--output", "RES", file], { encoding: "utf8" }).trim());
}

test("writes of any size leave exactly the bytes written; whole blocks bypass the page cache", async () => {
  await withDir(os.tmpdir(), async (dir) => {
    const file = path.join(dir, "data");
    const sizes = [1, 4095, 70_000, 1 << 20, 3, 2 * 65_536 + 5, 200_000, 20 * DIRECT_ALIGN, (3 << 20) + 17, 10];
    const { written, appender } = await appendChunks(file, sizes, new AlignedBuffers(2, 1 << 20));
    assert.ok((await fs.readFile(file)).equals(written), "the file is the bytes written, in order");
    assert.ok(appender.directBytes > 4 << 20, `direct bytes ${appender.directBytes}`);
    assert.equal(appender.directBytes % DIRECT_ALIGN, 0);
    // What went past the page cache is not in it (checked before anything reads the file).
    const again = path.join(dir, "again");
    const second = await appendChunks(again, [8 << 20, 1000], new AlignedBuffers(2, 1 << 20));
    const cached = cachedBytes(again);
    assert.ok(cached <= DIRECT_ALIGN, `cached ${cached} of ${second.written.length} bytes`);
    assert.ok((await fs.readFile(again)).equals(second.written));
  });
});

test("a file that ends mid-block is continued, its last block rewritten whole", async () => {
  await withDir(os.tmpdir(), async (dir) => {
    const file = path.join(dir, "data");
    const head = randomBytes(5_000);
    await fs.writeFile(file, head);
    const { written, appender } = await appendChunks(file, [300_000, 1 << 20], new AlignedBuffers(1, 1 << 20));
    assert.ok((await fs.readFile(file)).equals(Buffer.concat([head, written])));
    assert.ok(appender.directBytes >= 300_000 - DIRECT_ALIGN, `direct bytes ${appender.directBytes}`);
  });
});

test("with every staging buffer lent, or on a filesystem without O_DIRECT, writes go through the page cache", async () => {
  await withDir(os.tmpdir(), async (dir) => {
    const buffers = new AlignedBuffers(1, 1 << 20);
    const lent = buffers.take()!;
    const file = path.join(dir, "data");
    const busy = await appendChunks(file, [1 << 20, 70_000], buffers);
    assert.equal(busy.appender.directBytes, 0);
    assert.ok((await fs.readFile(file)).equals(busy.written));
    buffers.give(lent);
    const freed = await appendChunks(file, [1 << 20], buffers);
    assert.ok(freed.appender.directBytes > 0, "a buffer given back is used");
    assert.ok((await fs.readFile(file)).equals(Buffer.concat([busy.written, freed.written])));
  });
  const shm = "/dev/shm";
  let tmpfs = existsSync(shm);
  if (tmpfs) {
    // Where O_DIRECT opens after all, there is no fallback to see.
    const probe = path.join(shm, `ck-direct-probe-${process.pid}`);
    await fs.writeFile(probe, "");
    tmpfs = await fs.open(probe, fsc.O_WRONLY | fsc.O_DIRECT).then((h) => h.close().then(() => false), () => true);
    await fs.rm(probe, { force: true });
  }
  if (!tmpfs) return;
  await withDir(shm, async (dir) => {
    const file = path.join(dir, "data");
    const { written, appender } = await appendChunks(file, [1 << 20, 5, 200_000], new AlignedBuffers(2, 1 << 20));
    assert.equal(appender.directBytes, 0);
    assert.ok((await fs.readFile(file)).equals(written));
  });
});

test("where the staging memory cannot be reserved (an address-space limit), there are no slots and writes go through the page cache", async () => {
  const Memory = WebAssembly.Memory;
  (WebAssembly as { Memory: unknown }).Memory = function () {
    throw new RangeError("WebAssembly.Memory(): could not allocate memory");
  };
  try {
    const buffers = new AlignedBuffers(2, 1 << 20);
    assert.equal(buffers.take(), undefined);
    assert.equal(buffers.take(), undefined, "not tried again on every write");
    await withDir(os.tmpdir(), async (dir) => {
      const file = path.join(dir, "data");
      const { written, appender } = await appendChunks(file, [1 << 20, 70_000], buffers);
      assert.equal(appender.directBytes, 0);
      assert.ok((await fs.readFile(file)).equals(written));
    });
  } finally {
    (WebAssembly as { Memory: unknown }).Memory = Memory;
  }
});

