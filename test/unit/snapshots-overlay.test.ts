// The overlayfs snapshotter against the snapshotter conformance suite (skipped, with the
// kernel's reason, where this host cannot mount overlayfs), plus its mount shapes, which
// follow containerd's overlay snapshotter since ctr mounts them itself.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { OverlaySnapshotter } from "../../src/snapshots/overlay.js";
import { newSnapshotId, SNAPSHOT_ID_LENGTH } from "../../src/snapshots/store.js";
import { checkSnapshotId, type Mount } from "../../src/snapshots/types.js";
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

/**
 * The mount data containerd's Go clients (ctr, nerdctl, buildkit) hand the kernel for an
 * overlay, as mount/mount_linux.go (containerd 1.6) computes it: options of 3,584 bytes or
 * more (pagesize - 512) have their lowerdirs made relative to the parent of their longest
 * common prefix (compactLowerdirOption, longestCommonPrefix), the lowerdir option moved last;
 * flag options (ro, rbind, ...) are taken out (parseMountOptions); past the page size the mount
 * fails with "mount options is too long".
 */
function goMountData(m: Mount, pagesize = 4096): string {
  let options = m.options;
  if (m.type === "overlay" && options.reduce((n, o) => n + o.length, 0) >= pagesize - 512) {
    const idx = options.findIndex((o) => o.startsWith("lowerdir="));
    const dirs = idx === -1 ? [] : options[idx]!.slice("lowerdir=".length).split(":");
    if (dirs.length > 1) {
      const min = dirs.reduce((a, b) => (b < a ? b : a));
      const max = dirs.reduce((a, b) => (b > a ? b : a));
      let i = 0;
      while (i < min.length && i < max.length && min[i] === max[i]) i++;
      const common = min.slice(0, i);
      // Go's path.Dir: the prefix without its last element (a trailing slash dropped first).
      const dir = common === "" ? "" : path.posix.dirname(common.endsWith("/") && common !== "/" ? common + "x" : common);
      if (dir !== "" && dir !== "/") {
        const cut = dir.length + 1;
        options = [...options.slice(0, idx), ...options.slice(idx + 1), `lowerdir=${dirs.map((d) => d.slice(cut)).join(":")}`];
      }
    }
  }
  const flags = new Set(["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid", "rbind", "relatime", "remount", "ro", "rw", "strictatime", "suid", "sync", "loop"]);
  return options.filter((o) => !flags.has(o)).join(",");
}

describe("snapshot ids and containerd's limit on overlay mount options", () => {
  test("a new id is 8 base36 characters, a valid directory name, random", () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newSnapshotId()));
    assert.equal(ids.size, 1000);
    for (const id of ids) {
      assert.match(id, new RegExp(`^[0-9a-z]{${SNAPSHOT_ID_LENGTH}}$`));
      checkSnapshotId(id);
    }
  });

  test("the Mounts of a 300-layer chain fit containerd's Go clients (4,096 bytes once compacted); the old 25-character ids failed near 135", () => {
    const sn = new OverlaySnapshotter("/var/lib/ck/snapshots/overlayfs", { indexOff: true });
    const oldId = (i: number) => `${(1_764_000_000_000 + i).toString(36)}-${i.toString(16).padStart(16, "0")}`;
    const longest = (ids: string[]) => {
      const [top, ...parents] = ids;
      return Math.max(...[sn.mounts(top!, parents, "Active"), sn.mounts(top!, parents, "View")].map((ms) => goMountData(ms[0]!).length));
    };
    const fresh = Array.from({ length: 301 }, () => newSnapshotId());
    const now = longest(fresh);
    assert.ok(now <= 4096, `a 300-layer chain's mount data takes ${now} bytes`);
    const old = Array.from({ length: 301 }, (_, i) => oldId(i));
    assert.equal(old[0]!.length, 25);
    assert.ok(longest(old) > 4096, `old ids: ${longest(old)} bytes`);
    const fits = (n: number) => longest(old.slice(0, n + 1)) <= 4096;
    let n = 1;
    while (fits(n + 1)) n++;
    assert.ok(n >= 120 && n <= 140, `old ids fit ${n} layers`);
    // Layers made now on a chain made before: the old ones keep their length, each new one takes 12 bytes.
    const mixed = [...fresh.slice(0, 150), ...old.slice(0, 60)];
    assert.ok(longest(mixed) <= 4096, `mixed: ${longest(mixed)} bytes`);
    assert.equal(longest(mixed) - longest([fresh[0]!, ...fresh.slice(2, 150), ...old.slice(0, 60)]), SNAPSHOT_ID_LENGTH + "/fs:".length);
  });
});
