// Test harness: a real nats-server with JetStream on a free loopback port over a temp store,
// removed again by cleanup().
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NatsServerProcess, type NatsServerOptions } from "../../src/eventstore/nats-server.js";

export interface TestNats {
  server: NatsServerProcess;
  url: string;
  /** The temp dir: the store is `<dir>/nats`, the server's output `<dir>/nats-server.log`. */
  dir: string;
  cleanup(): Promise<void>;
}

export async function startTestNats(opts: Omit<NatsServerOptions, "storeDir"> = {}): Promise<TestNats> {
  const dir = await mkdtemp(join(tmpdir(), "ck-test-"));
  let server: NatsServerProcess;
  try {
    server = await NatsServerProcess.start({ logFile: join(dir, "nats-server.log"), ...opts, storeDir: join(dir, "nats") });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    server,
    url: server.url,
    dir,
    cleanup: async () => {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
