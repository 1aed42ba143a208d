// What a container with a user namespace needs of its bundle's directories: the host ids its
// root maps to, and whether those may pass through a directory.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { firstUnsearchable, remappedRoot, searchable } from "../../src/runtime/userns.js";

const userns = { type: "user" };
const pick = (r: { uid: number; gid: number } | undefined) => (r ? { uid: r.uid, gid: r.gid } : r);

describe("remappedRoot", () => {
  test("the host ids container ids 0 map to, from the range holding 0", () => {
    assert.deepEqual(
      pick(remappedRoot({ linux: { namespaces: [{ type: "pid" }, userns], uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }], gidMappings: [{ containerID: 0, hostID: 200000, size: 1 }] } })),
      { uid: 100000, gid: 200000 },
    );
    // A range not holding 0 maps nothing of root's.
    assert.deepEqual(pick(remappedRoot({ linux: { namespaces: [userns], uidMappings: [{ containerID: 1, hostID: 5000, size: 10 }, { containerID: 0, hostID: 700, size: 1 }], gidMappings: [] } })), { uid: 700, gid: 0 });
  });

  test("none without a user namespace, whatever the mappings say", () => {
    assert.equal(remappedRoot({}), undefined);
    assert.equal(remappedRoot({ linux: { namespaces: [{ type: "mount" }], uidMappings: [{ containerID: 0, hostID: 100000, size: 1 }] } }), undefined);
  });
});

describe("searchable", () => {
  const who = { uid: 100000, gid: 100000 };
  test("by owner, group or others, as the kernel picks the class", () => {
    assert.equal(searchable({ uid: 0, gid: 0, mode: 0o711 }, who), true);
    assert.equal(searchable({ uid: 0, gid: 0, mode: 0o700 }, who), false);
    assert.equal(searchable({ uid: 0, gid: 100000, mode: 0o710 }, who), true);
    // The group class applies, so others' bit does not count.
    assert.equal(searchable({ uid: 0, gid: 100000, mode: 0o701 }, who), false);
    assert.equal(searchable({ uid: 100000, gid: 0, mode: 0o100 }, who), true);
    assert.equal(searchable({ uid: 0, gid: 0, mode: 0o700 }, { uid: 0, gid: 0 }), true);
  });

  test("a directory whose owner and group are both mapped is the namespace's root's own", () => {
    const root = remappedRoot({ linux: { namespaces: [userns], uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }], gidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }] } })!;
    assert.equal(searchable({ uid: 101000, gid: 101000, mode: 0o700 }, root), true);
    assert.equal(searchable({ uid: 101000, gid: 0, mode: 0o700 }, root), false, "its group unmapped");
    assert.equal(searchable({ uid: 0, gid: 101000, mode: 0o700 }, root), false, "its owner unmapped");
  });

  test("firstUnsearchable walks from / down to the directory", () => {
    const top = mkdtempSync(join(tmpdir(), "ck-userns-"));
    try {
      const deep = join(top, "a", "b");
      mkdirSync(deep, { recursive: true });
      chmodSync(top, 0o711);
      chmodSync(join(top, "a"), 0o700);
      assert.deepEqual(firstUnsearchable(deep, { uid: 100000, gid: 100000 }), { dir: join(top, "a"), mode: 0o700 });
      chmodSync(join(top, "a"), 0o711);
      assert.equal(firstUnsearchable(deep, { uid: 100000, gid: 100000 }), undefined);
    } finally {
      rmSync(top, { recursive: true, force: true });
    }
  });
});
