// The overlayfs snapshotter against the snapshotter conformance suite (skipped, with the
// kernel's reason, where this host cannot mount overlayfs), plus its mount shapes, which
// follow containerd's overlay snapshotter since ctr mounts them itself.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { OverlaySnapshotter } from "../../src/snapshots/overlay.js";
import { snapshotterConformance } from "../conformance/snapshotter.js";

async function fresh(opts = {}): Promise<{ sn: OverlaySnapshotter; base: string }> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), "ck-overlay-"));
  return { sn: new OverlaySnapshotter(path.join(base, "overlayfs"), opts), base };
}

const probe = await fresh();
const availability = await probe.sn.available();
await fs.rm(probe.base, { recursive: true, force: true });

if (availability.ok) {
  snapshotterConformance("overlayfs", async () => {
    const { sn, base } = await fresh();
    return { sn, cleanup: () => fs.rm(base, { recursive: true, force: true }) };
  });
} else {
  test(`Snapshotter conformance: overlayfs`, {
    skip: `overlayfs is not available on this host: ${availability.reason}`,
  }, () => undefined);
}

describe("overlayfs snapshotter mounts (no mounting needed)", () => {
  test("shapes as containerd's overlay snapshotter returns them", async () => {
    const { sn, base } = await fresh({ indexOff: true });
    try {
      const fsOf = (id: string) => path.join(sn.root, "snapshots", id, "fs");
      const workOf = (id: string) => path.join(sn.root, "snapshots", id, "work");
      assert.deepEqual(await sn.prepare("1", [], { readonly: false }), [
        { type: "bind", source: fsOf("1"), options: ["rw", "rbind"] },
      ]);
      await sn.commit("1");
      assert.deepEqual(await sn.prepare("2", ["1"], { readonly: false }), [
        {
          type: "overlay",
          source: "overlay",
          options: ["index=off", `workdir=${workOf("2")}`, `upperdir=${fsOf("2")}`, `lowerdir=${fsOf("1")}`],
        },
      ]);
      await sn.commit("2");
      // A View over one parent is a read-only bind of it; over several, lowerdirs only.
      assert.deepEqual(await sn.prepare("v1", ["1"], { readonly: true }), [
        { type: "bind", source: fsOf("1"), options: ["ro", "rbind"] },
      ]);
      assert.deepEqual(await sn.prepare("v2", ["2", "1"], { readonly: true }), [
        { type: "overlay", source: "overlay", options: ["index=off", `lowerdir=${fsOf("2")}:${fsOf("1")}`] },
      ]);
      assert.deepEqual(sn.mounts("v0", [], "View"), [{ type: "bind", source: fsOf("v0"), options: ["ro", "rbind"] }]);
      // A View has no workdir; an Active snapshot does.
      await assert.rejects(fs.access(workOf("v2")));
      await fs.access(workOf("2"));
      // Committed, seen read-only: its own layer on top of its parents.
      assert.deepEqual(sn.mounts("2", ["1"], "Committed"), [
        { type: "overlay", source: "overlay", options: ["index=off", `lowerdir=${fsOf("2")}:${fsOf("1")}`] },
      ]);
      assert.deepEqual(sn.mounts("1", [], "Committed"), [{ type: "bind", source: fsOf("1"), options: ["ro", "rbind"] }]);
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  test("available() reports why when it cannot mount", { skip: process.getuid?.() === 0 ? "running as root" : false }, async () => {
    const { sn, base } = await fresh();
    try {
      const a = await sn.available();
      assert.equal(a.ok, false);
      assert.match(a.reason ?? "", /root/);
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });
});

/** A chain of `layers` committed overlay snapshots (layer i holding `layer-<i>`), an active one on top. */
async function layeredChain(layers: number) {
  const { sn, base } = await fresh({ indexOff: true });
  const ids: string[] = [];
  for (let i = 0; i < layers; i++) {
    const id = `${Date.now().toString(36)}-${String(i).padStart(16, "0")}`;
    await sn.prepare(id, [...ids].reverse(), { readonly: false });
    await fs.writeFile(path.join(sn.root, "snapshots", id, "fs", `layer-${i}`), String(i));
    await sn.commit(id);
    ids.push(id);
  }
  const top = `${Date.now().toString(36)}-top`;
  const mounts = await sn.prepare(top, [...ids].reverse(), { readonly: false });
  return { sn, base, top, mounts };
}

test("an overlay of 300 layers (a page even relative to their parent) mounts every layer, through short links; past what any page holds it is refused, never cut", { skip: availability.ok ? false : `overlayfs is not available on this host: ${availability.reason}` }, async () => {
  const { mountAll, unmountAll, compactOverlay, linkedOverlay } = await import("../../src/snapshots/mount.js");
  const { sn, base, top, mounts } = await layeredChain(300);
  const target = await fs.mkdtemp(path.join(os.tmpdir(), "ck-overlay-target-"));
  try {
    // The kernel would cut these at its page and mount without the lowest layers.
    assert.ok(compactOverlay(mounts[0]!).mount.options.join(",").length > 4095, "past a page even relative to their parent");
    const linked = linkedOverlay(mounts[0]!);
    assert.equal(linked.links.length, 302, "300 lowers, the upper and the work directory");
    assert.ok(linked.mount.options.join(",").length < 4095);
    await mountAll(mounts, target);
    try {
      const names = await fs.readdir(target);
      assert.equal(names.filter((n) => n.startsWith("layer-")).length, 300);
      assert.ok(names.includes("layer-0"), "the lowest layer too");
      assert.deepEqual(names.filter((n) => !n.startsWith("layer-")), [], "nothing of a cut path shows");
      await fs.writeFile(path.join(target, "written-on-top"), "x");
    } finally {
      await unmountAll(target);
    }
    assert.ok((await fs.readdir(path.join(sn.root, "snapshots", top, "fs"))).includes("written-on-top"), "writes land in the upper directory");
    // More directories than even short names fit in a page: refused, with how many.
    const huge = { ...mounts[0]!, options: [`lowerdir=${Array.from({ length: 2000 }, (_, i) => `/x/${i}`).join(":")}`] };
    assert.throws(() => linkedOverlay(huge), /overlay of 2000 directories: its mount options do not fit the kernel's page/);
  } finally {
    await fs.rmdir(target).catch(() => undefined);
    await fs.rm(base, { recursive: true, force: true });
  }
});

test("an overlay of 120 layers (options past a page) mounts: its directories relative to their common parent, as containerd compacts them", { skip: availability.ok ? false : `overlayfs is not available on this host: ${availability.reason}` }, async () => {
  const { mountAll, unmountAll, compactOverlay } = await import("../../src/snapshots/mount.js");
  const { sn, base, top, mounts } = await layeredChain(120);
  const target = await fs.mkdtemp(path.join(os.tmpdir(), "ck-overlay-target-"));
  try {
    assert.ok(mounts[0]!.options.join(",").length > 4096, "the options alone are past a page");
    const compact = compactOverlay(mounts[0]!);
    assert.equal(compact.cwd, path.join(sn.root, "snapshots"));
    assert.ok(compact.mount.options.join(",").length < 4096);
    await mountAll(mounts, target);
    try {
      const names = await fs.readdir(target);
      assert.equal(names.filter((n) => n.startsWith("layer-")).length, 120);
      await fs.writeFile(path.join(target, "written-on-top"), "x");
    } finally {
      await unmountAll(target);
    }
    assert.ok((await fs.readdir(path.join(sn.root, "snapshots", top, "fs"))).includes("written-on-top"), "writes land in the upper directory");
  } finally {
    await fs.rmdir(target).catch(() => undefined);
    await fs.rm(base, { recursive: true, force: true });
  }
});
