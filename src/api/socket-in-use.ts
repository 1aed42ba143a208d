// Whether the API socket's path may be taken: ckd replaces a socket left behind by a ckd that
// ended (a kill -9 leaves its path), never one that another process still serves on (a second
// ckd started by mistake on another root would otherwise take the first one's clients).
// Anything that is not a socket is refused by checkSocketAddress (daemon-dirs.ts).
import { lstat } from "node:fs/promises";
import { connect } from "node:net";
import { failedPrecondition } from "../errdefs/errdefs.js";

/** A connect to a socket nobody listens on fails at once; this is for one that hangs. */
const CONNECT_TIMEOUT_MS = 2_000;

/** Resolves unless a process serves on the socket at `path`: then refuses, naming it. */
export async function checkSocketFree(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    // Nothing there (a parent that is no directory is for the bind to report).
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return;
    throw err;
  }
  // Anything else there is checkSocketAddress's to refuse (and the bind's, should it come since).
  if (!st.isSocket()) return;
  const state = await probe(path);
  if (state !== "free") {
    throw failedPrecondition(`--address (address) ${path}: another process serves on this socket (${state}; another ckd?): stop it first, or give another --address`);
  }
}

/** "free" when nobody listens; else what was seen. */
function probe(path: string): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(path);
    const done = (state: string) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(state);
    };
    const timer = setTimeout(() => done("a connection to it did not fail within 2 s"), CONNECT_TIMEOUT_MS);
    sock.once("connect", () => done("it accepted a connection"));
    sock.once("error", (err: NodeJS.ErrnoException) => done(err.code === "ECONNREFUSED" || err.code === "ENOENT" ? "free" : `connecting: ${err.code ?? err.message}`));
  });
}
