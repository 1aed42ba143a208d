// containerd's opt directory as ckd sets it up: bin/ and lib/ made, runc looked up in bin/
// first, ckd's own environment left alone, a directory others can write to named.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setUpOpt } from "../../src/api/daemon.js";
import { optBinary } from "../../src/runtime/proc.js";

test("setUpOpt: bin/ and lib/ made, writable by ckd's user only; ckd's PATH and LD_LIBRARY_PATH untouched; an unsafe directory named", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-opt-"));
  try {
    const opt = join(dir, "opt");
    const path = process.env.PATH;
    const ld = process.env.LD_LIBRARY_PATH;
    const r = await setUpOpt(opt);
    assert.deepEqual(r, { bin: join(opt, "bin") });
    for (const d of ["bin", "lib"]) assert.equal((await stat(join(opt, d))).mode & 0o022, 0, d);
    assert.equal(process.env.PATH, path);
    assert.equal(process.env.LD_LIBRARY_PATH, ld);
    await chmod(join(opt, "bin"), 0o777);
    assert.match((await setUpOpt(opt)).unsafe ?? "", /opt\/bin is writable by others than ckd's user \(mode 777/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("setUpOpt: a directory that cannot be made is refused naming opt_path (under /proc too, where Node's recursive mkdir never returns)", async () => {
  await assert.rejects(setUpOpt("/proc/ck-opt-test"), /opt_path \/proc\/ck-opt-test: cannot make \/proc\/ck-opt-test\/bin: ENOENT/);
  await assert.rejects(setUpOpt("/etc/passwd/opt"), /opt_path \/etc\/passwd\/opt: cannot make \/etc\/passwd\/opt\/bin: ENOTDIR/);
});

test("optBinary: a name found executable in the opt bin/ is run from there; otherwise the name, or the path as given", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-opt-"));
  try {
    await writeFile(join(dir, "runc"), "#!/bin/sh\n", { mode: 0o755 });
    await writeFile(join(dir, "notexec"), "x", { mode: 0o644 });
    assert.equal(optBinary("runc", dir), join(dir, "runc"));
    assert.equal(optBinary("crun", dir), "crun");
    assert.equal(optBinary("notexec", dir), "notexec");
    assert.equal(optBinary("/usr/sbin/runc", dir), "/usr/sbin/runc");
    assert.equal(optBinary("runc", undefined), "runc");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("optPathOf: <root>/opt by default, the configured path, off with \"\" or when disabled_plugins names the opt plugin", async () => {
  const { optPathOf, OPT_PLUGIN } = await import("../../src/api/daemon.js");
  assert.equal(optPathOf({ root: "/var/lib/ck" }), "/var/lib/ck/opt");
  assert.equal(optPathOf({ root: "/var/lib/ck", optPath: "/opt/ck" }), "/opt/ck");
  assert.equal(optPathOf({ root: "/var/lib/ck", optPath: "" }), "");
  assert.equal(optPathOf({ root: "/var/lib/ck", optPath: "/opt/ck", disabledPlugins: [OPT_PLUGIN] }), "");
  assert.equal(OPT_PLUGIN, "io.containerd.internal.v1.opt");
});
