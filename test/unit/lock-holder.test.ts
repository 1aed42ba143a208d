// Whether a lock's holder is known to be gone (the bases' lock of a compaction killed outright).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { holderGone, ownIdentity, processStart, startTimeOf, type HolderIdentity } from "../../src/eventstore/lock-holder.js";

const here: HolderIdentity = { host: "h", boot: "boot-1", pidns: "pid:[4026531836]", pid: 100, start: "5000" };
const holder = { holder: "ck-replay compact on h, pid 200", host: "h", boot: "boot-1", pidns: "pid:[4026531836]", pid: 200, start: "7000" };
const none = () => ({ running: false });
const runs = (start?: string) => () => ({ running: true, start });

test("startTimeOf reads field 22, whatever the command name holds", () => {
  const fields = (comm: string) => `4242 (${comm}) S 1 4242 4242 0 -1 4194560 300 0 0 0 5 3 0 0 20 0 1 0 987654 1234 56 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0`;
  assert.equal(startTimeOf(fields("node")), "987654");
  assert.equal(startTimeOf(fields("a) S 1 2 (b")), "987654");
  assert.equal(startTimeOf(fields("with space")), "987654");
  assert.equal(startTimeOf("garbage"), undefined);
  assert.equal(startTimeOf("1 (x) S 1 2"), undefined);
});

test("holderGone: only a holder of this boot and process table whose pid runs no more, or runs another process", () => {
  // Given the holder's pid runs no process: gone.
  assert.equal(holderGone(holder, here, none), true);
  // Given its pid now runs a process started later (the pid reused): gone.
  assert.equal(holderGone(holder, here, runs("9000")), true);
  // Given the holder itself still runs: not gone.
  assert.equal(holderGone(holder, here, runs("7000")), false);
  // Given a process runs with that pid whose start cannot be read: not gone (left to go stale).
  assert.equal(holderGone(holder, here, runs(undefined)), false);
  // Another boot (a reboot since, or another machine), another container's pid namespace: unknown.
  assert.equal(holderGone({ ...holder, boot: "boot-0" }, here, none), false);
  assert.equal(holderGone({ ...holder, pidns: "pid:[4026532000]" }, here, none), false);
  // A lock written without the identity (an older ck-replay, another tool): unknown.
  assert.equal(holderGone({ holder: "someone else" }, here, none), false);
  assert.equal(holderGone({ ...holder, start: undefined }, here, none), false);
  assert.equal(holderGone({ ...holder, pid: -1 }, here, none), false);
  assert.equal(holderGone({ ...holder, pid: "200" }, here, none), false);
  // This process cannot tell its own boot or namespace: nothing is judged.
  assert.equal(holderGone(holder, { ...here, boot: undefined }, none), false);
  assert.equal(holderGone(holder, { ...here, pidns: undefined }, none), false);
  // Ourselves: never gone.
  assert.equal(holderGone({ ...holder, pid: here.pid, start: here.start }, here, none), false);
});

test("ownIdentity and processStart agree on this machine's /proc: a live process runs, an ended one is gone", async () => {
  const me = ownIdentity();
  assert.equal(me.pid, process.pid);
  assert.match(me.boot ?? "", /^[0-9a-f-]{36}$/);
  assert.match(me.pidns ?? "", /^pid:\[\d+\]$/);
  assert.deepEqual(processStart(process.pid), { running: true, start: me.start });
  const child = spawn("sleep", ["30"], { stdio: "ignore" });
  await new Promise((r) => child.once("spawn", r));
  const pid = child.pid!;
  const seen = processStart(pid);
  assert.equal(seen.running, true);
  const lock = { ...me, pid, start: seen.start };
  assert.equal(holderGone(lock, me, processStart), false, "a running holder is not gone");
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
  assert.equal(holderGone(lock, me, processStart), true, "a killed holder is gone");
});
