import { build } from "esbuild";
await build({ entryPoints: ["dist/src/cli/ck.js"], outfile: "dist/ck-exp.cjs", bundle: true, platform: "node", target: "node20", format: "cjs", external: ["@nxtedition/rocksdb", "@napi-rs/xattr"], logLevel: "warning",
  define: { "import.meta.url": "__ckImportMetaUrl" }, banner: { js: "const __ckImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" } });
