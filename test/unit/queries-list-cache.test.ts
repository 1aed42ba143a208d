// The List cache of src/projections/queries.ts over real RocksDB: a repeated List reads
// nothing from the database, and any change under the listed prefix is seen by the next List.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProjectionDb } from "../../src/projections/db.js";
import { Queries } from "../../src/projections/queries.js";
import { RecordMemo } from "../../src/projections/record-memo.js";
import { isClass } from "../../src/errdefs/errdefs.js";
import { imageRecord, keys, type ImageRecord } from "../../src/projections/views.js";

const img = (name: string, labels: Record<string, string> = {}) =>
  imageRecord({ name, labels, target: { media_type: "m", digest: "sha256:" + "0".repeat(64), size: 1, annotations: {} } });
const wire = (r: ImageRecord) => Buffer.from(`${r.name}|${JSON.stringify(r.labels)}`);

test("List cache: repeated Lists skip the scan; creates, label changes and deletes under the prefix show at once", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-listcache-"));
  try {
    const db = await ProjectionDb.open(join(dir, "meta"));
    let scans = 0;
    const scanRaw = db.scanRaw.bind(db);
    db.scanRaw = (prefix, opts) => {
      scans++;
      return scanRaw(prefix, opts);
    };
    const q = new Queries(db);
    const memo = new RecordMemo();
    const list = (ns: string, filters: string[] = []) => q.encodedImages(ns, filters, memo, wire).map((b) => b.toString());
    let seq = 0;
    const put = (ns: string, r: ImageRecord | undefined, name = r?.name ?? "") => db.apply([[keys.image(ns, name), r]], ++seq);

    await put("a", img("one", { k: "1" }));
    await put("a", img("two"));
    assert.deepEqual(list("a"), ['one|{"k":"1"}', "two|{}"]);
    assert.equal(scans, 1);
    assert.deepEqual(list("a"), ['one|{"k":"1"}', "two|{}"]);
    assert.deepEqual(list("a", ["labels.k==1"]), ['one|{"k":"1"}'], "filters run over the cached records");
    assert.equal(scans, 1, "unchanged: served from the cache");

    await put("b", img("other"));
    assert.deepEqual(list("a"), ['one|{"k":"1"}', "two|{}"]);
    assert.equal(scans, 1, "a write in another namespace leaves namespace a's cache");

    await put("a", img("one", { k: "2" }));
    assert.deepEqual(list("a"), ['one|{"k":"2"}', "two|{}"], "a label change is seen by the next List");
    await put("a", img("three"));
    assert.deepEqual(list("a"), ['one|{"k":"2"}', "three|{}", "two|{}"], "a create is seen");
    await put("a", undefined, "two");
    assert.deepEqual(list("a"), ['one|{"k":"2"}', "three|{}"], "a delete is seen");
    assert.deepEqual(list("b"), ["other|{}"]);
    assert.equal(scans, 5);
    await db.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("List cache: a bad filter is InvalidArgument before any read", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-listcache-"));
  try {
    const db = await ProjectionDb.open(join(dir, "meta"));
    const q = new Queries(db);
    let scanned = false;
    db.scanRaw = function* () {
      scanned = true;
    };
    assert.throws(() => q.encodedImages("a", ["labels.=="], new RecordMemo(), wire), (err: unknown) => isClass(err, "InvalidArgument"));
    assert.equal(scanned, false);
    await db.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
