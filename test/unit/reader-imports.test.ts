// The log reader's worker thread starts reading before anything else: its static imports must
// not load nats.js (a fifth of a second of module loading on these machines, in the way of
// the first batch of every rebuild and catch-up). nats.js is imported only when the worker
// falls back to it (a dynamic import).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const src = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "src");

/** Every module reached from `file` by static imports (`import ... from "x"`, `import "x"`, `export ... from "x"`). */
function staticGraph(file: string, seen = new Map<string, string[]>()): Map<string, string[]> {
  if (seen.has(file)) return seen;
  const text = readFileSync(file, "utf8");
  const specs = [
    ...[...text.matchAll(/^(?:import|export)\s+(?!type\b)[^;]*?\sfrom\s+"([^"]+)";/gms)].map((m) => m[1]!),
    ...[...text.matchAll(/^import\s+"([^"]+)";/gm)].map((m) => m[1]!),
  ];
  seen.set(file, specs);
  for (const s of specs) if (s.startsWith(".")) staticGraph(join(dirname(file), s), seen);
  return seen;
}

test("the log reader's worker thread loads no nats.js module until it falls back to it", () => {
  const graph = staticGraph(join(src, "eventstore", "reader-worker.js"));
  assert.ok(graph.has(join(src, "eventstore", "pull-reader.js")), "the walk follows the worker's imports");
  const nats = [...graph].flatMap(([file, specs]) => specs.filter((s) => s.startsWith("@nats-io/")).map((s) => `${file}: ${s}`));
  assert.deepEqual(nats, []);
  // The walk itself sees nats.js where it is statically imported (the check can fail).
  const log = staticGraph(join(src, "eventstore", "log.js"));
  assert.ok([...log.values()].flat().some((s) => s.startsWith("@nats-io/")));
});
