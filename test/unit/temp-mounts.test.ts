// Temporary mounts: a mount point only root can reach, and the sweep of what a killed ckd left
// in its tmpmounts directory (this layout and the older one, a mount on the directory itself).
// A file of its own: useTempMountDir sets where this process's temporary mounts go.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { useTempMountDir, withTempMount } from "../../src/snapshots/mount.js";

const mounted = (p: string) => readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === p);

test("withTempMount mounts inside a directory only its owner can enter; the sweep takes both layouts", { skip: process.getuid?.() === 0 ? false : "mounting needs root" }, async () => {
  const src = mkdtempSync(join(tmpdir(), "ck-tm-src-"));
  const dir = mkdtempSync(join(tmpdir(), "ck-tm-"));
  try {
    writeFileSync(join(src, "f"), "x");
    const seen = await withTempMount([{ type: "bind", source: src, options: ["rbind", "ro"] }], async (root) => {
      assert.equal(readFileSync(join(root, "f"), "utf8"), "x");
      assert.equal(statSync(dirname(root)).mode & 0o777, 0o700, "the mount point's directory is its owner's alone");
      return root;
    });
    assert.ok(!existsSync(seen) && !existsSync(dirname(seen)), "both removed");

    // What a killed ckd left: a mount in this layout and one in the older.
    mkdirSync(join(dir, "ck-mount-new", "root"), { recursive: true });
    mkdirSync(join(dir, "ck-mount-old"));
    for (const p of [join(dir, "ck-mount-new", "root"), join(dir, "ck-mount-old")]) execFileSync("mount", ["-t", "tmpfs", "tmpfs", p]);
    const swept = await useTempMountDir(dir);
    assert.deepEqual(swept, { removed: 2, failed: [] });
    assert.ok(!mounted(join(dir, "ck-mount-new", "root")) && !mounted(join(dir, "ck-mount-old")));
    assert.ok(!existsSync(join(dir, "ck-mount-new")) && !existsSync(join(dir, "ck-mount-old")));
  } finally {
    for (const p of [join(dir, "ck-mount-new", "root"), join(dir, "ck-mount-old")]) if (mounted(p)) execFileSync("umount", [p]);
    rmSync(src, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});
