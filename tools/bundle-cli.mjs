// Build step: bundles the `ck` CLI into one ES module (dist/ck.mjs). Resolving and loading a
// few hundred small modules costs ck ~40-60 ms at every start (ck --help: 0.19-0.21 s bundled,
// 0.23-0.27 s not, measured 2026-11-23).
// Native addons stay external (they load from node_modules as usual).
import { build } from "esbuild";

await build({
  entryPoints: ["dist/src/cli/ck.js"],
  outfile: "dist/ck.mjs",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  external: ["@nxtedition/rocksdb", "@napi-rs/xattr"],
  banner: { js: "import { createRequire as __ckRequire } from 'node:module'; const require = __ckRequire(import.meta.url);" },
  logLevel: "warning",
  sourcemap: "linked",
});
