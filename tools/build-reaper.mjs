// Builds dist/ck-reaper (src/runtime/ck-reaper.c), the subreaper keeper of exec processes,
// with the machine's C compiler. Without one ckd keeps exec processes under a shell keeper
// instead (docs/tasks.md says what that changes), so a missing compiler is said, not fatal.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";

const src = fileURLToPath(new URL("../src/runtime/ck-reaper.c", import.meta.url));
const out = fileURLToPath(new URL("../dist/ck-reaper", import.meta.url));
mkdirSync(fileURLToPath(new URL("../dist/", import.meta.url)), { recursive: true });
// A binary of an earlier build is not left for a source that no longer compiles.
rmSync(out, { force: true });
try {
  execFileSync(process.env.CC || "cc", ["-O2", "-Wall", "-Werror", "-o", out, src], { stdio: ["ignore", "inherit", "inherit"] });
  console.log(`reaper: ${out}`);
} catch (err) {
  console.warn(`reaper: not built (${err.code === "ENOENT" ? "no C compiler: install gcc" : err.message}); exec processes will be kept by a shell instead`);
}
