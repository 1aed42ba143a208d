// The sequencer in process, over a real nats-server and RocksDB: what it keeps between
// commands stays bounded by the commands in flight (it once kept the id of every append).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestNats } from "../helpers/nats.js";
import { EventLog } from "../../src/eventstore/log.js";
import { ProjectionDb } from "../../src/projections/db.js";
import { Projector } from "../../src/projections/projector.js";
import { Sequencer } from "../../src/commands/sequencer.js";
import { loadProtos } from "../../src/protos/protos.js";
import { imageHandlers } from "../../src/commands/images.js";
import { nowTimestamp } from "../../src/emitter/envelope.js";
import { keys } from "../../src/projections/views.js";

test("1,000 pipelined commands: all applied, nothing of them kept once they settled", async () => {
  const nats = await startTestNats();
  const dir = await mkdtemp(join(tmpdir(), "ck-seq-"));
  const log = await EventLog.open({ url: nats.url, stream: "SEQ_TEST" });
  const db = await ProjectionDb.open(join(dir, "meta"));
  const protos = loadProtos();
  const projector = new Projector(db, log, protos);
  projector.start();
  const sequencer = new Sequencer(log, projector, protos);
  try {
    const target = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "e".repeat(64), size: 1, annotations: {} };
    const create = (i: number) =>
      sequencer.submit(imageHandlers.create({ namespace: "seq", image: { name: `seq/img:${i}`, labels: {}, target: { media_type: target.mediaType, digest: target.digest, size: target.size, annotations: {} } }, now: nowTimestamp() }));
    // 32 callers at a time, as a busy daemon sees them.
    let next = 0;
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (next < 1000) await create(next++);
    }));
    assert.equal(db.appliedSeq, 1000);
    for (const i of [0, 499, 999]) assert.ok(db.getSync(keys.image("seq", `seq/img:${i}`)), `image ${i} is read back`);
    const internals = sequencer as unknown as { appliedIds: Map<string, number>; watchedIds: Set<string>; inflight: unknown[]; overlay: Map<string, unknown> };
    assert.equal(internals.inflight.length, 0);
    assert.equal(internals.appliedIds.size, 0, "no applied id kept");
    assert.equal(internals.watchedIds.size, 0, "no append left watched");
    assert.equal(internals.overlay.size, 0, "the overlay is empty once everything is applied");
  } finally {
    await projector.stop();
    await db.close();
    await log.close();
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
});
