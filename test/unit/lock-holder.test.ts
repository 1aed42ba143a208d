// Whether a lock's holder is known to be gone (the bases' lock of a compaction killed outright).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { holderGone, ownIdentity, processNow, type HolderIdentity } from "../../src/eventstore/lock-holder.js";

const here: HolderIdentity = { host: "h", boot: "boot-1", pidns: "pid:[4026531836]", pid: 100, start: 5000 };
const holder = { holder: "ck-replay compact on h, pid 200", host: "h", boot: "boot-1", pidns: "pid:[4026531836]", pid: 200, start: 7000 };
const none = () => ({ exists: false });
const runs = (start: number) => () => ({ exists: true, start });
/** The pid exists (kill(pid, 0) says so) but /proc does not show it (hidepid, another's process). */
const hidden = () => ({ exists: true });

test("holderGone: only a holder of this machine, boot and process table whose pid exists no more, or runs another process", () => {
  // Given the holder's pid runs no process: gone.
  assert.equal(holderGone(holder, here, none), true);
  // Given its pid now runs a process started later (the pid reused): gone.
  assert.equal(holderGone(holder, here, runs(9000)), true);
  // Given the holder itself still runs: not gone.
  assert.equal(holderGone(holder, here, runs(7000)), false);
  // Given the pid exists but /proc does not show it (hidepid): unknown, not gone.
  assert.equal(holderGone(holder, here, hidden), false);
  // Another boot (a reboot since), another host (a clone of this machine's image), another
  // container's pid namespace: unknown.
  assert.equal(holderGone({ ...holder, boot: "boot-0" }, here, none), false);
  assert.equal(holderGone({ ...holder, host: "h2" }, here, none), false);
  assert.equal(holderGone({ ...holder, pidns: "pid:[4026532000]" }, here, none), false);
  // A lock written without the identity (an older ck-replay, another tool): unknown.
  assert.equal(holderGone({ holder: "someone else" }, here, none), false);
  assert.equal(holderGone({ ...holder, start: undefined }, here, none), false);
  assert.equal(holderGone({ ...holder, start: "7000" }, here, none), false);
  assert.equal(holderGone({ ...holder, pid: -1 }, here, none), false);
  assert.equal(holderGone({ ...holder, pid: "200" }, here, none), false);
  // This process cannot tell its own boot, namespace or start: nothing is judged.
  for (const k of ["boot", "pidns", "start"] as const) assert.equal(holderGone(holder, { ...here, [k]: undefined }, none), false, k);
  // Ourselves: never gone.
  assert.equal(holderGone({ ...holder, pid: here.pid, start: here.start }, here, none), false);
});

test("ownIdentity and processStart read this machine's /proc: a live holder is not gone, a killed one is", async () => {
  const me = ownIdentity();
  assert.equal(me.pid, process.pid);
  assert.match(me.boot ?? "", /^[0-9a-f-]{36}$/);
  assert.match(me.pidns ?? "", /^pid:\[\d+\]$/);
  assert.deepEqual(processNow(process.pid), { exists: true, start: me.start });
  assert.ok(typeof me.start === "number" && me.start > 0);
  const child = spawn("sleep", ["30"], { stdio: "ignore" });
  await new Promise((r) => child.once("spawn", r));
  const pid = child.pid!;
  const lock = { ...me, pid, start: processNow(pid).start };
  assert.equal(typeof lock.start, "number");
  assert.equal(holderGone(lock, me, processNow), false, "a running holder is not gone");
  // pid 1 exists and started long before: another process than a holder of its pid would be.
  assert.equal(holderGone({ ...me, pid: 1, start: -1 }, me, processNow), true);
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
  assert.deepEqual(processNow(pid), { exists: false });
  assert.equal(holderGone(lock, me, processNow), true, "a killed holder is gone");
});
