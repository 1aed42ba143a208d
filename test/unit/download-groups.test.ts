// DownloadGroups: the daemon-side download limit of one fetch (Fetch.Blob's download_group),
// over Slots, the counting semaphore the client's own downloads use too.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { DownloadGroups } from "../../src/api/download-groups.js";
import { Slots } from "../../src/remotes/slots.js";
import { isClass } from "../../src/errdefs/errdefs.js";

const tick = () => new Promise((r) => setImmediate(r));

describe("DownloadGroups", () => {
  test("at most max slots of a group at once; the others wait, told once each, and go in turn", async () => {
    const g = new DownloadGroups();
    const live = new AbortController().signal;
    let running = 0;
    let most = 0;
    const waited: number[] = [];
    const order: number[] = [];
    const job = async (i: number) => {
      const release = await g.acquire("ns\0a", 2, live, () => {
        waited.push(i);
      });
      running++;
      most = Math.max(most, running);
      order.push(i);
      await tick();
      await tick();
      running--;
      release();
      release(); // a second release gives back nothing more
    };
    await Promise.all([0, 1, 2, 3, 4].map(job));
    assert.equal(most, 2);
    assert.deepEqual(waited, [2, 3, 4]);
    assert.deepEqual(order, [0, 1, 2, 3, 4]);
    assert.equal(g.size, 0, "a group without holders or waiters is forgotten");
  });

  test("groups do not limit each other", async () => {
    const g = new DownloadGroups();
    const live = new AbortController().signal;
    const a = await g.acquire("ns\0a", 1, live);
    const b = await g.acquire("ns\0b", 1, live);
    assert.equal(g.size, 2);
    a();
    b();
    assert.equal(g.size, 0);
  });

  test("a waiter whose call goes away is Canceled and leaves no trace; the next one still gets the slot", async () => {
    const g = new DownloadGroups();
    const live = new AbortController().signal;
    const held = await g.acquire("k", 1, live);
    const gone = new AbortController();
    const cancelled = g.acquire("k", 1, gone.signal);
    const next = g.acquire("k", 1, live);
    await tick();
    gone.abort();
    await assert.rejects(cancelled, (err) => isClass(err, "Canceled"));
    held();
    const release = await next;
    release();
    assert.equal(g.size, 0);
    const already = new AbortController();
    already.abort();
    const again = await g.acquire("k", 1, live);
    await assert.rejects(g.acquire("k", 1, already.signal), (err) => isClass(err, "Canceled"));
    again();
    assert.equal(g.size, 0);
  });

  test("Slots without a signal (the client's downloads): in turn, onIdle once all have left", async () => {
    let idle = 0;
    const slots = new Slots(1, () => idle++);
    const a = await slots.acquire();
    const b = slots.acquire();
    await tick();
    assert.equal(slots.idle, false);
    a();
    (await b)();
    assert.equal(slots.idle, true);
    assert.equal(idle, 1);
  });
});

test("Slots: a caller still in its onWait keeps the slots from going idle; one whose onWait fails leaves them idle", async () => {
  let idle = 0;
  const slots = new Slots(1, () => idle++);
  const release = await slots.acquire();
  let told!: () => void;
  const second = slots.acquire(undefined, () => new Promise<void>((r) => (told = r)));
  await new Promise((r) => setImmediate(r));
  release(); // the holder leaves while the second caller is still being told to wait
  assert.equal(idle, 0, "not idle: a caller is on its way");
  told();
  const release2 = await second;
  assert.equal(idle, 0);
  release2();
  assert.equal(idle, 1);

  const holder = await slots.acquire();
  const failing = slots.acquire(undefined, async () => {
    holder();
    throw new Error("stream closed");
  });
  await assert.rejects(failing, /stream closed/);
  assert.equal(idle, 2, "the last one out, a failed waiter, reports the slots idle");
});
