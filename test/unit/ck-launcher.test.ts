// The `ck` launcher (tools/ck-launcher.cjs, built to dist/ck.cjs): it keeps V8's code cache
// of the CLI bundle in the user's cache directory, private to the user; the first runs of a
// build rewrite it and later runs only read it; a damaged cache is rejected by V8 and made
// again; CK_NO_CODE_CACHE turns it off. Every run answers the same either way.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { CK, runNode } from "../helpers/daemon.js";

const LEARNING_RUNS = 8;

async function cacheFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((n) => n.endsWith(".v8cache")).map((n) => join(dir, n));
  } catch {
    return [];
  }
}

const runsIn = async (file: string) => (await readFile(file)).readUInt32LE(0);

test("ck keeps a private V8 code cache that its first runs fill, survives a damaged one, and can do without", async () => {
  const base = await mkdtemp(join(tmpdir(), "ck-launcher-"));
  const dir = join(base, "cache");
  try {
    const help = async (env: Record<string, string> = {}) => {
      const r = await runNode(CK, ["--help"], { CK_CACHE_DIR: dir, ...env });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^Usage: ck /);
      return r.stdout;
    };
    const expected = await help({ CK_NO_CODE_CACHE: "1" });
    assert.deepEqual(await cacheFiles(dir), [], "CK_NO_CODE_CACHE: no cache written");

    // An earlier build of this install, and a recent cache of another install.
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const install = createHash("sha256").update(join(dirname(CK), "ck-bundle.cjs")).digest("hex").slice(0, 16);
    const earlier = join(dir, `ck-${install}-${"0".repeat(16)}.v8cache`);
    const other = join(dir, `ck-${"f".repeat(16)}-${"0".repeat(16)}.v8cache`);
    await writeFile(earlier, Buffer.alloc(64));
    await writeFile(other, Buffer.alloc(64));

    assert.equal(await help(), expected);
    assert.deepEqual((await cacheFiles(dir)).filter((f) => f === earlier || f === other), [other], "the earlier build's cache went, the other install's stayed");
    await rm(other);
    const [file] = await cacheFiles(dir);
    assert.ok(file, "the first run wrote a cache");
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal(await runsIn(file), 1);
    assert.ok((await stat(file)).size > 100_000, "the cache holds compiled code");

    for (let i = 2; i <= LEARNING_RUNS; i++) {
      assert.equal(await help(), expected);
      assert.equal(await runsIn(file), i);
    }
    const learned = await readFile(file);
    assert.equal(await help(), expected);
    assert.deepEqual(await readFile(file), learned, "past the learning runs the cache is only read");
    assert.equal((await cacheFiles(dir)).length, 1);

    // Damaged: V8 rejects it, the run still answers, and the cache is made again.
    const damaged = Buffer.from(learned);
    damaged.fill(0x5a, 4, 4000);
    await writeFile(file, damaged);
    assert.equal(await help(), expected);
    assert.equal(await runsIn(file), 1, "a rejected cache starts over");
    assert.notDeepEqual(await readFile(file), damaged);

    // Truncated to less than a header: treated as absent.
    await writeFile(file, Buffer.from([1, 2]));
    assert.equal(await help(), expected);
    assert.equal(await runsIn(file), 1);
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});
