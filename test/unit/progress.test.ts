// The progress display on a terminal: a signal while it shows puts the terminal back (cursor
// shown, line wrapping on) before ck exits as the signal would have.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { progressDisplay, stopOnSignal } from "../../src/cli/progress.js";

const SHOW_CURSOR = "\u001b[?25h";
const WRAP_ON = "\u001b[?7h";

function fakeTerminal(): { stream: NodeJS.WriteStream; text: () => string } {
  let out = "";
  const w = new Writable({
    write(chunk, _enc, cb) {
      out += chunk.toString();
      cb();
    },
  }) as unknown as NodeJS.WriteStream & { isTTY: boolean; columns: number; rows: number };
  Object.assign(w, { isTTY: true, columns: 160, rows: 40, cursorTo: () => true, clearLine: () => true, clearScreenDown: () => true, moveCursor: () => true });
  return { stream: w, text: () => out };
}

test("stopOnSignal: SIGINT runs stop, then exits 130 (SIGTERM: 143); unhooked, a signal is not taken", () => {
  const before = [process.listenerCount("SIGINT"), process.listenerCount("SIGTERM")];
  const calls: string[] = [];
  stopOnSignal(() => calls.push("stop"), (code) => calls.push(`exit ${code}`));
  process.emit("SIGINT", "SIGINT");
  assert.deepEqual(calls, ["stop", "exit 130"]);
  assert.deepEqual([process.listenerCount("SIGINT"), process.listenerCount("SIGTERM")], before, "no listener left");
  stopOnSignal(() => calls.push("stop"), (code) => calls.push(`exit ${code}`));
  process.emit("SIGTERM", "SIGTERM");
  assert.deepEqual(calls.slice(2), ["stop", "exit 143"]);
  const off = stopOnSignal(() => calls.push("stop"), (code) => calls.push(`exit ${code}`));
  off();
  assert.deepEqual([process.listenerCount("SIGINT"), process.listenerCount("SIGTERM")], before);
});

test("a ^C while bars are drawn on a terminal shows the cursor and turns wrapping back on before exiting 130", () => {
  const t = fakeTerminal();
  const codes: number[] = [];
  const p = progressDisplay(t.stream, (code) => codes.push(code));
  const job = p.add("layer-sha256:" + "a".repeat(64), 1000);
  job.update(100, "downloading");
  assert.ok(!t.text().includes(SHOW_CURSOR), "the cursor was hidden while drawing");
  process.emit("SIGINT", "SIGINT");
  assert.deepEqual(codes, [130]);
  assert.ok(t.text().includes(SHOW_CURSOR), "cursor shown again");
  assert.ok(t.text().includes(WRAP_ON), "line wrapping on again");
});

test("a display that finished no longer takes signals", () => {
  const t = fakeTerminal();
  const before = process.listenerCount("SIGINT");
  const p = progressDisplay(t.stream, () => assert.fail("exit after finish"));
  p.add("index-sha256:" + "b".repeat(64), 10).update(10, "done");
  p.finish();
  assert.equal(process.listenerCount("SIGINT"), before);
});
