#!/bin/sh
":" //; if [ -n "${NODE_EXTRA_CA_CERTS-}" ] && [ -z "${NODE_USE_SYSTEM_CA-}" ]; then case "${NODE_OPTIONS-}" in *use-openssl-ca*|*use-system-ca*) ;; *) export CK_DEFERRED_EXTRA_CA_CERTS="$NODE_EXTRA_CA_CERTS"; unset NODE_EXTRA_CA_CERTS ;; esac; fi; CK_ARGV_DASHES=1 exec node "$0" -- "$@"
// The two lines above are sh, and JavaScript to Node (a string, then a comment). Run as a
// program, `ck` starts Node without NODE_EXTRA_CA_CERTS: Node reads and parses that file at every
// start, before any code runs (a system bundle of ~140 certificates: ~60-70 ms of each command,
// 2026-11-30, AMD EPYC). The file's name goes along as CK_DEFERRED_EXTRA_CA_CERTS; the CLI puts
// NODE_EXTRA_CA_CERTS back for the programs it starts and adds the file's certificates to its
// registry connections itself (src/remotes/registry.ts, deferExtraCaCerts), so what ck trusts
// is unchanged. Not when Node is told to trust the system's CA store (NODE_USE_SYSTEM_CA, or
// --use-openssl-ca / --use-system-ca in NODE_OPTIONS): ck's list starts from Node's bundled
// one. `node ck.cjs` skips the sh part and Node loads the file as usual.
//
// The arguments follow a `--`, which the launcher takes away again (CK_ARGV_DASHES says it put
// one there): Node 20 looks for its own --env-file anywhere before a `--`, also among a
// script's arguments, and stops at a missing file, so `ck run --env-file F` (ctr's flag) would
// never reach ck.
//
// `ck`: loads the CLI bundle (dist/ck-bundle.cjs, made by tools/bundle-cli.mjs) with V8's code
// cache. Compiling the 1.2 MB bundle and, as commands run, its functions (grpc-js, protobufjs,
// the registry client) was ~90 ms of every command on a slow core: `ck pull` of an image
// already present took 0.45-0.49 s, 0.36-0.37 s with the cache (2026-11-30, AMD EPYC).
//
// The cache is made after a run, so it holds the functions that run compiled, not only the
// top level; the first runs of a version rewrite it (each adds what it compiled) and later
// runs only read it. V8 checks it against the source and its own version and flags, and a
// rejected cache is made again. It lives in the user's cache directory (never a shared temp
// directory: code cache from another user would be code), keyed by the bundle's path, size
// and time and by Node's version; a new build's first run removes its install's old cache.
// CK_NO_CODE_CACHE=1 turns it off.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");
const os = require("node:os");
const crypto = require("node:crypto");
const Module = require("node:module");

const BUNDLE = path.join(__dirname, "ck-bundle.cjs");
/** Runs that still rewrite the cache with what they compiled (creating it costs ~12 ms). */
const LEARNING_RUNS = 8;

function cacheDir() {
  if (process.env.CK_CACHE_DIR) return process.env.CK_CACHE_DIR;
  if (process.env.XDG_CACHE_HOME) return path.join(process.env.XDG_CACHE_HOME, "ck");
  const home = os.homedir();
  return home ? path.join(home, ".cache", "ck") : undefined;
}

const hash = (parts) => crypto.createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 16);

/** `ck-<this install>-<this build and Node>.v8cache`: a new build replaces its install's cache. */
function cachePath(stat) {
  const dir = cacheDir();
  if (!dir) return undefined;
  return path.join(dir, `ck-${hash([BUNDLE])}-${hash([stat.size, stat.mtimeMs, process.version, process.arch])}.v8cache`);
}

/** The cache file: a 4-byte run count, then V8's data. */
function readCache(file) {
  try {
    const raw = fs.readFileSync(file);
    if (raw.length < 8) return undefined;
    return { runs: raw.readUInt32LE(0), data: raw.subarray(4) };
  } catch {
    return undefined;
  }
}

function writeCache(file, runs, data) {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const head = Buffer.alloc(4);
    head.writeUInt32LE(runs, 0);
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, Buffer.concat([head, data]), { mode: 0o600 });
    fs.renameSync(tmp, file); // concurrent ck processes: last one wins, none reads half a file
    if (runs === 1) removeStale(path.dirname(file), file);
  } catch {
    // A cache that cannot be written costs the next run its compile time, nothing else.
  }
}

/**
 * Removes the caches of this install's earlier builds, and those of other installs not
 * rewritten for 30 days (a cache is rewritten by its build's first runs).
 */
function removeStale(dir, keep) {
  const install = path.basename(keep).split("-")[1];
  const cutoff = Date.now() - 30 * 24 * 3600 * 1000;
  for (const name of fs.readdirSync(dir)) {
    const p = path.join(dir, name);
    const m = /^ck-([0-9a-f]+)-[0-9a-f]+\.v8cache$/.exec(name);
    if (p === keep || !m) continue;
    try {
      if (m[1] === install || fs.statSync(p).mtimeMs < cutoff) fs.rmSync(p, { force: true });
    } catch {
      // gone meanwhile
    }
  }
}

function main() {
  if (process.env.CK_ARGV_DASHES === "1") {
    delete process.env.CK_ARGV_DASHES;
    if (process.argv[2] === "--") process.argv.splice(2, 1);
  }
  // The build keeps the bundle ASCII (tools/bundle-cli.mjs checks), so latin1 reads it exactly.
  let source = fs.readFileSync(BUNDLE, "latin1");
  if (source.startsWith("#!")) source = "//" + source.slice(2); // the entry's hashbang; lines kept
  const file = process.env.CK_NO_CODE_CACHE ? undefined : cachePath(fs.statSync(BUNDLE));
  const cached = file ? readCache(file) : undefined;
  const script = new vm.Script(Module.wrap(source), { filename: BUNDLE, cachedData: cached?.data });
  if (file && (!cached || script.cachedDataRejected || cached.runs < LEARNING_RUNS)) {
    const runs = cached && !script.cachedDataRejected ? cached.runs + 1 : 1;
    process.once("exit", () => writeCache(file, runs, script.createCachedData()));
  }
  const mod = new Module(BUNDLE, module);
  mod.filename = BUNDLE;
  mod.paths = Module._nodeModulePaths(path.dirname(BUNDLE));
  const req = (id) => mod.require(id);
  req.resolve = (request) => Module._resolveFilename(request, mod);
  req.main = require.main;
  req.cache = Module._cache;
  script.runInThisContext().call(mod.exports, mod.exports, req, mod, BUNDLE, path.dirname(BUNDLE));
}

main();
