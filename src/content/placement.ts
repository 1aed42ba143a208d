// Where new inodes land on ext4, and why it matters here. On ext4 without a journal, each new
// inode is allocated only after skipping every inode of its block group that was freed in the
// last 60-360 s (`recently_deleted` under `find_inode_bit`, a linear scan, under the
// directory's lock). A directory that receives many new files in the same block group as
// files just deleted (a removed root, a garbage collection) pays that scan per file. Spreading
// directories over block groups (`chattr +T` on their parent, the Orlov allocator's rule for
// top-level directories, with a start group hashed from the name) keeps them away from it.
import { execFile } from "node:child_process";

/**
 * `chattr +T dir`: new subdirectories of `dir` are spread over the filesystem's block groups.
 * Resolves with the reason when the filesystem or host does not support it, else undefined;
 * failing costs nothing but the placement.
 */
export function spreadSubdirectories(dir: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile("chattr", ["+T", dir], { encoding: "utf8" }, (err, _stdout, stderr) => {
      if (!err) resolve(undefined);
      else if ((err as NodeJS.ErrnoException).code === "ENOENT") resolve("chattr is not installed (e2fsprogs)");
      else resolve((stderr || err.message).trim());
    });
  });
}
