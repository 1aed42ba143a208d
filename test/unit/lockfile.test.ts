// npm ci refuses a lock file that does not list every optional dependency of a locked package
// (even one for another platform), and this registry lacks some of those packages, so a plain
// `npm install` may silently drop them from the lock. CI runs npm ci: check the lock here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

test("package-lock.json lists every dependency and optional dependency of every locked package", () => {
  const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8"));
  const packages: Record<string, any> = lock.packages;
  const missing: string[] = [];
  for (const [path, pkg] of Object.entries(packages)) {
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      // Node's lookup: nested under this package, then each ancestor node_modules, then the top.
      let found = false;
      let base = path;
      for (;;) {
        if (packages[`${base ? base + "/" : ""}node_modules/${name}`]) {
          found = true;
          break;
        }
        if (!base) break;
        const i = base.lastIndexOf("/node_modules/");
        base = i < 0 ? "" : base.slice(0, i);
      }
      if (!found) missing.push(`${path || "(root)"} -> ${name}`);
    }
  }
  // Fix: add an entry per missing package (version, "optional": true, its "os"/"cpu"), as the
  // @cbor-extract/* entries are.
  assert.deepEqual(missing, [], "package-lock.json lacks these: npm ci would refuse it");
});
