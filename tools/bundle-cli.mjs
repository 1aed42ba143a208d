// Build step: bundles the `ck` CLI into one CommonJS file (dist/ck-bundle.cjs) and puts its
// launcher (tools/ck-launcher.cjs, which loads the bundle with V8's code cache) at dist/ck.cjs,
// the `ck` of package.json. Resolving and loading a few hundred small modules cost ck ~40-60
// ms at every start (ck --help: 0.19-0.21 s bundled, 0.23-0.27 s not, measured 2026-11-23);
// CommonJS because V8's code cache is reachable for a vm.Script and not, on Node 20, for an
// ES module. Native addons stay external (they load from node_modules as usual).
import { build } from "esbuild";
import { copyFile, chmod, rm } from "node:fs/promises";

await build({
  entryPoints: ["dist/src/cli/ck.js"],
  outfile: "dist/ck-bundle.cjs",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  external: ["@nxtedition/rocksdb", "@napi-rs/xattr"],
  // The sources are ES modules: their import.meta.url is the bundle's own URL.
  define: { "import.meta.url": "__ckBundleUrl" },
  banner: { js: "const __ckBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: "warning",
  sourcemap: "linked",
});
await copyFile("tools/ck-launcher.cjs", "dist/ck.cjs");
await chmod("dist/ck.cjs", 0o755);
// The ES module bundle of earlier builds.
await rm("dist/ck.mjs", { force: true });
await rm("dist/ck.mjs.map", { force: true });
