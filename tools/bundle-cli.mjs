// Build step: bundles the `ck` CLI into one CommonJS file (dist/ck-bundle.cjs) and puts its
// launcher (tools/ck-launcher.cjs, which loads the bundle with V8's code cache) at dist/ck.cjs,
// the `ck` of package.json. Resolving and loading a few hundred small modules cost ck ~40-60
// ms at every start (ck --help: 0.19-0.21 s bundled, 0.23-0.27 s not, measured 2026-11-23);
// CommonJS because V8's code cache is reachable for a vm.Script and not, on Node 20, for an
// ES module. Native addons stay external (they load from node_modules as usual), and so does
// undici, which only ckd uses (the CLI's registry engine is node:http): bundled, its 0.47 MB
// were read and checked against the code cache at every start without ever running.
// The bundle must be ASCII: the launcher reads it as latin1, a plain copy, where decoding
// 1.7 MB of UTF-8 cost ~6 ms of every start (2026-11-30, AMD EPYC).
import { build } from "esbuild";
import { copyFile, chmod, rm, readFile } from "node:fs/promises";

await build({
  // The message codecs generated at build time (tools/protos-json.ts) are installed first.
  stdin: { contents: 'import "./protos-codecs.js";\nimport "./src/cli/ck.js";\n', resolveDir: "dist", sourcefile: "ck-entry.js", loader: "js" },
  outfile: "dist/ck-bundle.cjs",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  external: ["@nxtedition/rocksdb", "@napi-rs/xattr", "undici"],
  // The sources are ES modules: their import.meta.url is the bundle's own URL.
  define: { "import.meta.url": "__ckBundleUrl" },
  banner: { js: "const __ckBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: "warning",
  sourcemap: "linked",
  minifyWhitespace: true,
  minifySyntax: true,
});
const bundled = await readFile("dist/ck-bundle.cjs");
const nonAscii = bundled.findIndex((b) => b > 0x7f);
if (nonAscii >= 0) {
  const line = bundled.subarray(0, nonAscii).toString("latin1").split("\n").length;
  throw new Error(`dist/ck-bundle.cjs line ${line}: a non-ASCII byte (write it as a \\u escape in the source); the launcher reads the bundle as latin1`);
}
await copyFile("tools/ck-launcher.cjs", "dist/ck.cjs");
await chmod("dist/ck.cjs", 0o755);
// The ES module bundle of earlier builds.
await rm("dist/ck.mjs", { force: true });
await rm("dist/ck.mjs.map", { force: true });
// package.json's other programs, executable as they are: a unit's ExecStart (or a link npm
// made before a rebuild, whose tsc output is written anew) runs them without `node` before.
await chmod("dist/src/cli/ckd.js", 0o755);
await chmod("dist/tools/replay/main.js", 0o755);
