// `ck images export` and `ck images import`, with ctr's flags (archive-export.ts and
// archive-import.ts do the work, through the containerd API like every ck command).
import type { Command } from "commander";
import type { ApiClient } from "./client.js";
import { exportImages } from "./archive-export.js";
import { importArchive } from "./archive-import.js";
import { allPlatforms, defaultPlatforms, orderedPlatforms } from "./image-archive.js";
import { unpackImage } from "./unpack.js";
import { withLease } from "./transfer.js";
import { defaultSnapshotter } from "./defaults.js";
import { collect, parseLabelArgs } from "./format.js";
import { invalidArgument } from "../errdefs/errdefs.js";
import { defaultPlatform, parsePlatform } from "../remotes/platform.js";

type Action = (fn: (api: ApiClient, ...args: any[]) => Promise<void>) => (...args: unknown[]) => Promise<void>;

interface ExportFlags {
  platform?: string[];
  allPlatforms?: boolean;
  skipManifestJson?: boolean;
  skipNonDistributable?: boolean;
}

interface ImportFlags {
  baseName?: string;
  digests?: boolean;
  skipDigestForNamed?: boolean;
  indexName?: string;
  allPlatforms?: boolean;
  platform?: string;
  noUnpack?: boolean;
  unpack?: boolean;
  snapshotter: string;
  label?: string[];
}

export function registerArchiveCommands(images: Command, action: Action): void {
  images
    .command("export <out> <refs...>")
    .description(
      "export images to an OCI image layout tar (OUT, - for stdout) with docker's manifest.json for the platform, as ctr images export; a file appears only once complete",
    )
    .option("--platform <platform>", "of an index, export this platform's manifest (repeatable; default this machine's)", collect)
    .option("--all-platforms", "export every manifest of an index (all must be in the content store)")
    .option("--skip-manifest-json", "do not add docker's manifest.json")
    .option("--skip-non-distributable", "leave out non-distributable (foreign) layers")
    .action(
      action(async (api, out: string, refs: string[], opts: ExportFlags) => {
        const wants = (opts.platform ?? []).map(parsePlatform);
        await exportImages(api, out, refs, {
          platform: orderedPlatforms(wants.length ? wants : [defaultPlatform()]),
          allPlatforms: !!opts.allPlatforms,
          skipManifestJson: !!opts.skipManifestJson,
          skipNonDistributable: !!opts.skipNonDistributable,
        });
      }),
    );

  images
    .command("import <in>")
    .description(
      "import images from an OCI image layout tar or a docker save archive (IN, - for stdin; gzipped or not), as ctr images import: blobs written with their digests checked, images registered once their content is all in, then unpacked",
    )
    .option("--base-name <name>", "name tag-only OCI ref names under this image name; given, ref names of other repositories are dropped (default import-YYYY-MM-DD)")
    .option("--digests", "also register each manifest as BASE@DIGEST")
    .option("--skip-digest-for-named", "with --digests: not for the manifests that have a name")
    .option("--index-name <name>", "register the archive's index under this name")
    .option("--all-platforms", "keep the content of every platform")
    .option("--platform <platform>", "keep (and unpack) only this platform's content")
    .option("--no-unpack", "do not unpack the images")
    .option("--snapshotter <name>", "snapshotter to unpack into ($CONTAINERD_SNAPSHOTTER, else overlayfs)", defaultSnapshotter())
    .option("--label <k=v>", "label to set on the images (repeatable)", collect)
    .action(
      action(async (api, file: string, opts: ImportFlags) => {
        if (opts.skipDigestForNamed && !opts.digests) throw invalidArgument("--skip-digest-for-named must be specified with --digests");
        const platform = opts.platform !== undefined ? parsePlatform(opts.platform) : undefined;
        const labels = parseLabelArgs(opts.label ?? []);
        const imported = await importArchive(api, file, {
          label: file === "-" ? "(stdin)" : file,
          ...(opts.baseName ? { baseName: opts.baseName } : {}),
          digests: !!opts.digests,
          skipDigestForNamed: !!opts.skipDigestForNamed,
          ...(opts.indexName ? { indexName: opts.indexName } : {}),
          platform: opts.allPlatforms ? allPlatforms : platform ? orderedPlatforms([platform]) : defaultPlatforms(),
          labels,
        });
        if (opts.unpack === false) return;
        for (const img of imported) {
          process.stdout.write(`unpacking ${img.name} (${img.target.digest})...`);
          await withLease(api, (metadata) => unpackImage(api, img.target, { snapshotter: opts.snapshotter, platform: platform ?? defaultPlatform(), metadata }));
          process.stdout.write("done\n");
        }
      }),
    );
}
