// ck events and ck-replay events print an event as ctr does: Go's encoding/json of
// containerd's generated struct.
import { test } from "node:test";
import assert from "node:assert/strict";
import { loadProtos } from "../../src/protos/protos.js";
import { eventJson, rfc3339 } from "../../src/cli/format.js";

const protos = loadProtos();
const decoded = (type: string, obj: object) => protos.decode(type, protos.encode(type, obj));

test("a map keeps its empty values (a label removed), empty fields and ck's extensions are left out", () => {
  const v = decoded("containerd.events.NamespaceUpdate", { name: "r05", labels: { k: "" }, ck_labels: { labels: {} } });
  assert.equal(JSON.stringify(eventJson(protos, "containerd.events.NamespaceUpdate", v)), '{"name":"r05","labels":{"k":""}}');
  const bare = decoded("containerd.events.NamespaceUpdate", { name: "r05" });
  assert.equal(JSON.stringify(eventJson(protos, "containerd.events.NamespaceUpdate", bare)), '{"name":"r05"}');
});

test("timestamps as time.Time's JSON; nested messages in field order", () => {
  const exit = decoded("containerd.events.TaskExit", { container_id: "c", id: "c", pid: 7, exit_status: 137, exited_at: { seconds: 1796212240, nanos: 622000000 } });
  assert.equal(JSON.stringify(eventJson(protos, "containerd.events.TaskExit", exit)), '{"container_id":"c","id":"c","pid":7,"exit_status":137,"exited_at":"2026-12-02T11:50:40.622Z"}');
  assert.equal(rfc3339({ seconds: 1796212240, nanos: 0 }), "2026-12-02T11:50:40Z");
  assert.equal(rfc3339({ seconds: 1796212240, nanos: 1 }), "2026-12-02T11:50:40.000000001Z");
  const create = decoded("containerd.events.TaskCreate", { container_id: "c", bundle: "/b", rootfs: [{ options: ["ro"], source: "/s", type: "bind" }], io: { stdout: "/o" }, pid: 9 });
  assert.equal(
    JSON.stringify(eventJson(protos, "containerd.events.TaskCreate", create)),
    '{"container_id":"c","bundle":"/b","rootfs":[{"type":"bind","source":"/s","options":["ro"]}],"io":{"stdout":"/o"},"pid":9}',
  );
});
