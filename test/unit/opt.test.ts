// containerd's opt directory as ckd sets it up: bin/ and lib/ made, and put first in PATH and
// LD_LIBRARY_PATH (which the programs ckd starts inherit).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setUpOpt } from "../../src/api/daemon.js";

test("setUpOpt: bin/ and lib/ (0711), first in PATH and LD_LIBRARY_PATH, not listed twice", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-opt-"));
  try {
    const opt = join(dir, "opt");
    const env: NodeJS.ProcessEnv = { PATH: "/usr/sbin:/usr/bin" };
    await setUpOpt(opt, env);
    assert.equal((await stat(join(opt, "bin"))).mode & 0o777, 0o711);
    assert.equal((await stat(join(opt, "lib"))).mode & 0o777, 0o711);
    assert.equal(env.PATH, `${opt}/bin:/usr/sbin:/usr/bin`);
    assert.equal(env.LD_LIBRARY_PATH, `${opt}/lib`);
    // Again (a restart with the same environment): moved first, not repeated.
    env.PATH = `/usr/bin:${opt}/bin`;
    await setUpOpt(opt, env);
    assert.equal(env.PATH, `${opt}/bin:/usr/bin`);
    assert.equal(env.LD_LIBRARY_PATH, `${opt}/lib`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
