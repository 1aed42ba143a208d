// Platforms ("linux/arm64/v8"): this machine's, parsing, and choosing the entries of an image
// index that run here, with containerd's default matcher (normalised arch and variant, older
// compatible variants ranked after the exact one).
import { arch as osArch, endianness } from "node:os";
import { invalidArgument } from "../errdefs/errdefs.js";
import { isIndex, isManifest, type ParsedManifest } from "./manifest.js";
import type { Descriptor, Platform } from "./types.js";

const PART_RE = /^[A-Za-z0-9_-]+$/;

/** The platform images are pulled for on this machine, GOARCH-style. */
export function defaultPlatform(): Platform {
  const os = process.platform === "win32" ? "windows" : "linux";
  const a = osArch();
  switch (a) {
    case "x64":
      return { os, architecture: "amd64" };
    case "ia32":
      return { os, architecture: "386" };
    case "arm64":
      return { os, architecture: "arm64", variant: "v8" };
    case "arm": {
      const v = Number((process.config.variables as Record<string, unknown>).arm_version ?? 7);
      return { os, architecture: "arm", variant: `v${Number.isInteger(v) && v >= 5 ? v : 7}` };
    }
    case "ppc64":
      return { os, architecture: endianness() === "LE" ? "ppc64le" : "ppc64" };
    case "mipsel":
      return { os, architecture: "mipsle" };
    default:
      // s390x, riscv64, loong64, mips, ppc share node's and Go's spelling.
      return { os, architecture: a };
  }
}

/** Parses "os[/arch[/variant]]" or a bare architecture; bad input is InvalidArgument. */
export function parsePlatform(s: string): Platform {
  const bad = (problem: string) => invalidArgument(`platform ${JSON.stringify(s)}: ${problem}`);
  if (typeof s !== "string" || s === "") throw bad("must not be empty");
  const parts = s.split("/");
  if (parts.length > 3) throw bad("want os[/arch[/variant]]");
  for (const p of parts) {
    if (!PART_RE.test(p)) throw bad(p === "" ? "empty component" : `invalid component ${JSON.stringify(p)}`);
  }
  const def = defaultPlatform();
  if (parts.length === 1) {
    const os = normalizeOS(parts[0]);
    if (KNOWN_OS.has(os)) return { ...def, os };
    const [architecture, variant] = normalizeArch(parts[0], "");
    if (KNOWN_ARCH.has(architecture)) return withVariant({ os: def.os, architecture }, variant);
    throw bad(`unknown operating system or architecture ${JSON.stringify(parts[0])}`);
  }
  const os = normalizeOS(parts[0]);
  if (!KNOWN_OS.has(os)) throw bad(`unknown operating system ${JSON.stringify(parts[0])}`);
  const [architecture, variant] = normalizeArch(parts[1], parts[2] ?? "");
  if (!KNOWN_ARCH.has(architecture)) throw bad(`unknown architecture ${JSON.stringify(parts[1])}`);
  // A variant given explicitly is kept as written once normalised (linux/arm64/v8 stays v8
  // for display); matching normalises again.
  if (parts.length === 3 && architecture === "arm64" && variant === "") return { os, architecture, variant: parts[2].toLowerCase() === "8" ? "v8" : parts[2].toLowerCase() };
  return withVariant({ os, architecture }, variant);
}

/** The canonical string of a platform: "linux/arm64/v8". */
export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter((x) => x).join("/");
}

/**
 * containerd's default matcher: `candidate` runs on `want` when their normalised os and
 * architecture agree and the variant is the wanted one or an older compatible one (arm v6 on
 * an arm v7, amd64 v2 on v3, arm on arm64, 386 on amd64). A descriptor without a platform
 * (a plain manifest) matches.
 */
export function matchPlatform(candidate: Platform | undefined, want: Platform): boolean {
  if (!candidate) return true;
  return rank(candidate, want) >= 0;
}

/** The manifests (and nested indexes) of `index` that run on `want`, best first. */
export function selectManifests(index: ParsedManifest, want: Platform): Descriptor[] {
  const vector = platformVector(normalizePlatform(want));
  const scored: Array<{ d: Descriptor; score: number; order: number }> = [];
  index.manifests.forEach((d, order) => {
    if (!isManifest(d.mediaType) && !isIndex(d.mediaType)) return;
    // Entries without a platform are kept but ranked after every platform-specific one.
    const score = d.platform ? rankIn(d.platform, vector) : vector.length;
    if (score >= 0) scored.push({ d, score, order });
  });
  scored.sort((a, b) => a.score - b.score || a.order - b.order);
  return scored.map((s) => s.d);
}

/**
 * What a fetch or push for `wants` takes of an index, in the index's order: for each wanted
 * platform the one entry that serves it best (containerd's Only order: the platform itself,
 * then older compatible ones), and the entries without a platform (containerd's
 * FilterPlatforms keeps those). Not every compatible entry: on amd64 a 386 image is not
 * fetched beside the amd64 one, nor arm/v6 and arm/v7 beside arm64.
 */
export function manifestsFor(index: ParsedManifest, wants: readonly Platform[]): Descriptor[] {
  const best = new Set<Descriptor>();
  for (const w of wants) {
    const first = selectManifests(index, w).find((d) => d.platform);
    if (first) best.add(first);
  }
  return index.manifests.filter((d) => !d.platform || best.has(d));
}

/**
 * The one entry of `index` a push for `wants` sends under the tag in its place: for each
 * wanted platform the entry that serves it best (selectManifests' first), which must be the
 * same entry for all of them. The index itself is not pushed: narrowed to some platforms it
 * would name manifests the registry never got (docker-registry refuses it with
 * MANIFEST_BLOB_UNKNOWN, after every blob went up), and edited it would be another document
 * with another digest. None, or several different entries, is InvalidArgument naming the
 * platforms the index has (`what` names the index in it).
 */
export function pushedManifest(index: ParsedManifest, wants: readonly Platform[], what: string): Descriptor {
  const chosen = new Map<string, Descriptor>();
  const missing: Platform[] = [];
  for (const w of wants) {
    const best = selectManifests(index, w)[0];
    if (best) chosen.set(best.digest, best);
    else missing.push(w);
  }
  const has = index.manifests.map((d) => (d.platform ? formatPlatform(d.platform) : "(no platform)")).join(", ") || "no entries";
  if (missing.length > 0) {
    throw invalidArgument(`${what}: no manifest for ${missing.map(formatPlatform).join(", ")} (the index has ${has})`);
  }
  if (chosen.size !== 1) {
    throw invalidArgument(
      `${what}: --platform ${wants.map(formatPlatform).join(", ")} selects ${chosen.size} of its manifests (the index has ${has}); ` +
        "a push with --platform sends one platform's manifest under the tag: push each platform to its own tag, or push without --platform to send the whole index",
    );
  }
  return [...chosen.values()][0]!;
}

function rank(candidate: Platform, want: Platform): number {
  return rankIn(candidate, platformVector(normalizePlatform(want)));
}

function rankIn(candidate: Platform, vector: Platform[]): number {
  const c = normalizePlatform(candidate);
  return vector.findIndex((w) => w.os === c.os && w.architecture === c.architecture && (w.variant ?? "") === (c.variant ?? ""));
}

/** `want` followed by the platforms it can also run, most preferred first. */
function platformVector(want: Platform): Platform[] {
  const out: Platform[] = [want];
  const base = { os: want.os };
  const version = (v: string | undefined) => Number((v ?? "").replace(/^v/, ""));
  switch (want.architecture) {
    case "amd64": {
      const n = version(want.variant);
      if (Number.isInteger(n) && n > 1) {
        for (let i = n - 1; i >= 1; i--) out.push(withVariant({ ...base, architecture: "amd64" }, i === 1 ? "" : `v${i}`));
      }
      out.push({ ...base, architecture: "386" });
      break;
    }
    case "arm": {
      const n = version(want.variant);
      if (Number.isInteger(n) && n > 5) {
        for (let i = n - 1; i >= 5; i--) out.push({ ...base, architecture: "arm", variant: `v${i}` });
      }
      break;
    }
    case "arm64": {
      // arm64 (v8) also runs 32-bit arm v8 and below.
      out.push(...platformVector({ ...base, architecture: "arm", variant: "v8" }));
      break;
    }
  }
  return out;
}

const KNOWN_OS = new Set([
  "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
  "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos",
]);
const KNOWN_ARCH = new Set([
  "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips", "mipsle",
  "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "ppc64", "ppc64le", "riscv", "riscv64",
  "s390", "s390x", "sparc", "sparc64", "wasm",
]);

function normalizeOS(os: string): string {
  const l = os.toLowerCase();
  return l === "macos" ? "darwin" : l;
}

function normalizeArch(arch: string, variant: string): [string, string] {
  const a = arch.toLowerCase();
  let v = variant.toLowerCase();
  switch (a) {
    case "i386":
      return ["386", ""];
    case "x86_64":
    case "x86-64":
    case "amd64":
      return ["amd64", v === "v1" ? "" : v];
    case "aarch64":
    case "arm64":
      // containerd treats arm64 and arm64/v8 as the same platform.
      if (v === "8" || v === "v8" || v === "v8.0") v = "";
      return ["arm64", v];
    case "armhf":
      return ["arm", "v7"];
    case "armel":
      return ["arm", "v6"];
    case "arm":
      if (v === "" || v === "7" || v === "7.0" || v === "v7.0") v = "v7";
      else if (v === "5" || v === "6" || v === "8") v = "v" + v;
      return ["arm", v];
    default:
      return [a, v];
  }
}

/** Normalised for comparison: lower case, aliases resolved, default variants made explicit or dropped. */
export function normalizePlatform(p: Platform): Platform {
  const [architecture, variant] = normalizeArch(p.architecture, p.variant ?? "");
  return withVariant({ os: normalizeOS(p.os), architecture }, variant);
}

function withVariant(p: Platform, variant: string): Platform {
  return variant ? { ...p, variant } : p;
}
