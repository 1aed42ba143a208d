// The look-up of a task's program at Create, as runc's init makes it (Go's exec.LookPath, then
// access(2)): which container paths it tries, and what it finds in a root directory laid out
// like a container's (absolute symlinks re-rooted, a noexec mount).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { missingProgram, programCandidates } from "../../src/runtime/lookpath.js";

const PATH = "PATH=/usr/local/bin:/usr/bin:/bin";

describe("programCandidates", () => {
  test("a bare name: each PATH directory, the last PATH in the env winning", () => {
    assert.deepEqual(programCandidates({ args: ["sh", "-c", "x"], env: ["PATH=/nowhere", "A=b", PATH] }), {
      kind: "search",
      program: "sh",
      at: ["/usr/local/bin/sh", "/usr/bin/sh", "/bin/sh"],
    });
  });

  test("a name with a slash: that path as given, relative ones under cwd, not cleaned (the kernel takes .. after symlinks)", () => {
    assert.deepEqual(programCandidates({ args: ["/bin/sh"], env: [] }), { kind: "path", program: "/bin/sh", at: "/bin/sh" });
    assert.deepEqual(programCandidates({ args: ["./run.sh"], cwd: "/app" }), { kind: "path", program: "./run.sh", at: "/app/./run.sh" });
    assert.deepEqual(programCandidates({ args: ["bin/x"] }), { kind: "path", program: "bin/x", at: "//bin/x" });
    assert.deepEqual(programCandidates({ args: ["../../x"], cwd: "/a" }), { kind: "path", program: "../../x", at: "/a/../../x" });
  });

  test("a bare name: PATH entries joined and cleaned, as Go's filepath.Join", () => {
    assert.deepEqual(programCandidates({ args: ["x"], env: ["PATH=/a/../b:/c/"] }), { kind: "search", program: "x", at: ["/b/x", "/c/x"] });
  });

  test("nothing to judge: no program, a relative cwd, no PATH, a relative or empty PATH entry", () => {
    assert.equal(programCandidates({ args: ["./x"], cwd: "app" }), undefined);
    assert.equal(programCandidates({ args: [], env: [PATH] }), undefined);
    assert.equal(programCandidates({ env: [PATH] }), undefined);
    assert.equal(programCandidates({ args: ["sh"], env: ["HOME=/"] }), undefined);
    assert.equal(programCandidates({ args: ["sh"], env: ["PATH=/bin:bin"] }), undefined);
    assert.equal(programCandidates({ args: ["sh"], env: ["PATH=/bin::/usr/bin"] }), undefined);
  });
});

describe("missingProgram in a container's root", () => {
  let root: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), "ck-lookpath-"));
    for (const d of ["bin", "usr/bin", "app", "etc"]) mkdirSync(join(root, d), { recursive: true });
    writeFileSync(join(root, "bin/busybox"), "#!/bin/true\n", { mode: 0o755 });
    // Absolute links, as images have them: they resolve inside the root, not on the host.
    symlinkSync("/bin/busybox", join(root, "bin/sh"));
    symlinkSync("/bin/nothing-here", join(root, "bin/dangling"));
    writeFileSync(join(root, "etc/motd"), "hello\n", { mode: 0o644 });
    writeFileSync(join(root, "app/run.sh"), "#!/bin/sh\n", { mode: 0o700 });
    // A working directory that is a link: .. from it is the link target's parent.
    mkdirSync(join(root, "opt/real"), { recursive: true });
    mkdirSync(join(root, "opt/bin"), { recursive: true });
    writeFileSync(join(root, "opt/bin/tool"), "#!/bin/sh\n", { mode: 0o755 });
    symlinkSync("/opt/real", join(root, "app/work"));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test("found: through PATH and absolute symlinks, by path, relative to cwd", async () => {
    assert.equal(await missingProgram(root, { args: ["sh"], env: [PATH] }), undefined);
    assert.equal(await missingProgram(root, { args: ["/bin/sh"] }), undefined);
    assert.equal(await missingProgram(root, { args: ["./run.sh"], cwd: "/app" }), undefined);
  });

  test(".. after a symlink is the link target's parent, as the kernel resolves it", async () => {
    // cwd /app/work -> /opt/real: ../bin/tool is /opt/bin/tool (lexically it would be /app/bin/tool).
    assert.equal(await missingProgram(root, { args: ["../bin/tool"], cwd: "/app/work" }), undefined);
    assert.equal(await missingProgram(root, { args: ["/app/work/../bin/tool"] }), undefined);
    assert.equal(await missingProgram(root, { args: ["../run.sh"], cwd: "/app/work" }), 'exec: "../run.sh": stat ../run.sh: no such file or directory');
  });

  test("a host program does not count: the look-up stays inside the root", async () => {
    // /usr/bin/env is on the host (coreutils), not in this root.
    assert.equal(await missingProgram(root, { args: ["env"], env: [PATH] }), 'exec: "env": executable file not found in $PATH');
    assert.equal(await missingProgram(root, { args: ["/usr/bin/env"] }), 'exec: "/usr/bin/env": stat /usr/bin/env: no such file or directory');
  });

  test("missing, dangling, under a file, a directory, no x bit: runc's words", async () => {
    assert.equal(await missingProgram(root, { args: ["nope"], env: [PATH] }), 'exec: "nope": executable file not found in $PATH');
    assert.equal(await missingProgram(root, { args: ["/bin/dangling"] }), 'exec: "/bin/dangling": stat /bin/dangling: no such file or directory');
    assert.equal(await missingProgram(root, { args: ["/etc/motd/x"] }), 'exec: "/etc/motd/x": stat /etc/motd/x: not a directory');
    assert.equal(await missingProgram(root, { args: ["/app"] }), 'exec: "/app": permission denied');
    assert.equal(await missingProgram(root, { args: ["/etc/motd"] }), 'exec: "/etc/motd": permission denied');
    // On PATH, a file without an x bit is passed over, as Go's LookPath does.
    assert.equal(await missingProgram(root, { args: ["motd"], env: ["PATH=/etc"] }), 'exec: "motd": executable file not found in $PATH');
  });

  test("what cannot be judged is let through: no PATH, a root that is not there", async () => {
    assert.equal(await missingProgram(root, { args: ["nope"], env: [] }), undefined);
    assert.equal(await missingProgram(join(root, "no-such-root"), { args: ["/bin/sh"] }), undefined);
    assert.equal(await missingProgram(join(root, "etc/motd"), { args: ["/bin/sh"] }), undefined);
  });

  test("an x bit on a noexec mount is let through: only runc, as the container's user, can tell what access(2) says", async (t) => {
    if (process.getuid?.() !== 0) return t.skip("mounting a tmpfs needs root");
    const mnt = join(root, "mnt");
    mkdirSync(mnt);
    execFileSync("mount", ["-t", "tmpfs", "-o", "noexec,size=1m", "tmpfs", mnt]);
    try {
      copyFileSync(join(root, "bin/busybox"), join(mnt, "prog"));
      chmodSync(join(mnt, "prog"), 0o755);
      assert.equal(await missingProgram(root, { args: ["/mnt/prog"] }), undefined);
      assert.equal(await missingProgram(root, { args: ["prog"], env: ["PATH=/mnt:/bin"] }), undefined);
    } finally {
      execFileSync("umount", [mnt]);
    }
  });

  test("a look-up that does not end in time lets the program through", async () => {
    // 2,000 PATH entries, each looked at in turn: far longer than 5 ms.
    const long = { args: ["nope"], env: ["PATH=" + Array.from({ length: 2000 }, (_, i) => `/d${i}`).join(":")] };
    assert.equal(await missingProgram(root, long, 5), undefined);
    assert.equal(await missingProgram(root, long), 'exec: "nope": executable file not found in $PATH');
  });
});
