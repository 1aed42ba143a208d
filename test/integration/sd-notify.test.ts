// ckd under systemd's Type=notify: READY=1 once its socket answers, WATCHDOG=1 when asked
// for, STOPPING=1 at SIGTERM; the variables kept from the programs it starts. systemd's socket
// is stood in for by a datagram socket bound here (unix-dgram, as ckd sends with).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSocket } from "unix-dgram";
import { TestDaemon } from "../helpers/daemon.js";
import { notifyTarget } from "../../src/cli/sd-notify.js";

test("notifyTarget: the socket path and the watchdog's period from systemd's variables", () => {
  assert.deepEqual(notifyTarget({}, 10), {});
  assert.deepEqual(notifyTarget({ NOTIFY_SOCKET: "/run/systemd/notify" }, 10), { target: { socket: "/run/systemd/notify" } });
  // WATCHDOG_USEC for this pid (or for whichever process reads it): pings at half the period.
  assert.deepEqual(notifyTarget({ NOTIFY_SOCKET: "/s", WATCHDOG_USEC: "30000000", WATCHDOG_PID: "10" }, 10), { target: { socket: "/s", watchdogMs: 15_000 } });
  assert.deepEqual(notifyTarget({ NOTIFY_SOCKET: "/s", WATCHDOG_USEC: "30000000" }, 10), { target: { socket: "/s", watchdogMs: 15_000 } });
  // Meant for another process (ckd started by a wrapper that did not pass it on): not ours.
  assert.deepEqual(notifyTarget({ NOTIFY_SOCKET: "/s", WATCHDOG_USEC: "30000000", WATCHDOG_PID: "11" }, 10), { target: { socket: "/s" } });
  // What cannot be sent or timed is said, by name.
  assert.match(notifyTarget({ NOTIFY_SOCKET: "@/org/freedesktop/notify" }, 10).problem!, /NOTIFY_SOCKET @\/org\/freedesktop\/notify: abstract sockets are not supported/);
  assert.match(notifyTarget({ NOTIFY_SOCKET: "run/notify" }, 10).problem!, /NOTIFY_SOCKET run\/notify: not an absolute path/);
  assert.match(notifyTarget({ NOTIFY_SOCKET: "/" + "x".repeat(107) }, 10).problem!, /longer than a socket path can be \(107 bytes\)/);
  assert.equal(notifyTarget({ NOTIFY_SOCKET: "/" + "x".repeat(106) }, 10).problem, undefined);
  // A watchdog period past a Node timer's reach pings at that reach (not every millisecond).
  assert.deepEqual(notifyTarget({ NOTIFY_SOCKET: "/s", WATCHDOG_USEC: String(100 * 86400 * 1e6) }, 10).target, { socket: "/s", watchdogMs: 2 ** 31 - 1 });
  const bad = notifyTarget({ NOTIFY_SOCKET: "/s", WATCHDOG_USEC: "soon" }, 10);
  assert.deepEqual(bad.target, { socket: "/s" });
  assert.match(bad.problem!, /WATCHDOG_USEC soon: not a positive whole number of microseconds/);
});

test("ckd asks systemd for time while it starts, tells it it is ready once its socket answers, pings the watchdog, says it is stopping; its children never see the variables", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-notify-"));
  const path = join(dir, "notify");
  const got: { at: number; text: string }[] = [];
  const listener = createSocket("unix_dgram", (buf) => got.push({ at: Date.now(), text: buf.toString("utf8") }));
  listener.bind(path);
  let d: TestDaemon | undefined;
  try {
    d = await TestDaemon.start({ env: { NOTIFY_SOCKET: path, WATCHDOG_USEC: "400000" } });
    const until = async (what: string, ok: () => boolean) => {
      const deadline = Date.now() + 10_000;
      while (!ok()) {
        if (Date.now() > deadline) throw new Error(`no ${what}; received: ${JSON.stringify(got)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await until("READY=1", () => got.some((m) => m.text.includes("READY=1")));
    const ready = got.find((m) => m.text.includes("READY=1"))!;
    assert.match(ready.text, new RegExp(`^READY=1\nSTATUS=serving the containerd v1 API on ${d.address}\n$`));
    // Before it: more time asked for the start (a catch-up may outlast systemd's 90 s).
    assert.match(got[0]!.text, /^EXTEND_TIMEOUT_USEC=30000000\nSTATUS=starting: opening the log and catching up with it\n$/);
    assert.ok(got.slice(0, got.indexOf(ready)).every((m) => m.text.startsWith("EXTEND_TIMEOUT_USEC=")), JSON.stringify(got));
    // The socket answers once READY=1 is sent (the test helper waited for it before; here
    // again, after the message).
    const c = d.client();
    try {
      const v = await c.call<any>("version", "Version", {});
      assert.ok(v.version);
    } finally {
      c.close();
    }
    // WatchdogSec=0.4: a ping every 200 ms.
    await until("three WATCHDOG=1", () => got.filter((m) => m.text === "WATCHDOG=1\n").length >= 3);
    const pings = got.filter((m) => m.text === "WATCHDOG=1\n").map((m) => m.at);
    assert.ok(pings[2]! - pings[0]! < 3000, `pings ${JSON.stringify(pings)}`);

    // Its managed nats-server, started after the variables were read, does not have them.
    const state = JSON.parse(await readFile(join(d.root, "nats", "nats-server.json"), "utf8")) as { pid: number };
    const environ = (await readFile(`/proc/${state.pid}/environ`, "utf8")).split("\0");
    assert.ok(environ.some((e) => e.startsWith("PATH=")), "the environment was read");
    assert.deepEqual(environ.filter((e) => /^(NOTIFY_SOCKET|WATCHDOG_USEC|WATCHDOG_PID)=/.test(e)), []);

    assert.equal(await d.stop(), 0);
    await until("STOPPING=1", () => got.some((m) => m.text.startsWith("STOPPING=1\n")));
    assert.match(got.find((m) => m.text.startsWith("STOPPING=1"))!.text, /^STOPPING=1\nSTATUS=stopping \(SIGTERM\)\n$/);
  } finally {
    await d?.stop().catch(() => undefined);
    await d?.cleanup().catch(() => undefined);
    listener.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("ckd serves when systemd's socket is unusable, and says why", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-notify-"));
  let gone: TestDaemon | undefined;
  let relative: TestDaemon | undefined;
  try {
    // A socket path nobody listens on: the send fails, logged once; ckd serves.
    gone = await TestDaemon.start({ env: { NOTIFY_SOCKET: join(dir, "nobody") } });
    await gone.stop();
    const warned = gone.logLines().filter((l) => l.msg === "systemd notification failed");
    assert.equal(warned.length, 1, gone.logText());
    assert.equal(warned[0]!.socket, join(dir, "nobody"));
    assert.match(warned[0]!.err, /^(ENOENT|ECONNREFUSED)$/);
    // A relative path: refused by name at start; ckd serves.
    relative = await TestDaemon.start({ env: { NOTIFY_SOCKET: "notify" } });
    const problem = relative.logLines().find((l) => l.msg === "systemd notification");
    assert.match(problem?.problem ?? "", /NOTIFY_SOCKET notify: not an absolute path/, relative.logText());
  } finally {
    await gone?.stop().catch(() => undefined);
    await relative?.stop().catch(() => undefined);
    await gone?.cleanup().catch(() => undefined);
    await relative?.cleanup().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
});
