// Test harness: a real three-node nats-server cluster with JetStream on loopback, each node
// with its own temp store, so tests can kill -9 one node (or wipe its store) and bring it back.
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { freePort, resolveNatsServerBinary } from "../../src/eventstore/nats-server.js";

export interface ClusterNode {
  name: string;
  port: number;
  clusterPort: number;
  url: string;
  storeDir: string;
  confFile: string;
  proc?: ChildProcess;
}

export class TestNatsCluster {
  private constructor(
    readonly dir: string,
    readonly nodes: ClusterNode[],
    private readonly binary: string,
  ) {}

  /** All client URLs, comma-separated (as ckd's --nats takes a cluster). */
  get url(): string {
    return this.nodes.map((n) => n.url).join(",");
  }

  node(name: string): ClusterNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  static async start(size = 3): Promise<TestNatsCluster> {
    const dir = await mkdtemp(join(tmpdir(), "ck-test-cluster-"));
    const nodes: ClusterNode[] = [];
    for (let i = 1; i <= size; i++) {
      const port = await freePort();
      const clusterPort = await freePort();
      nodes.push({ name: `n${i}`, port, clusterPort, url: `nats://127.0.0.1:${port}`, storeDir: join(dir, `n${i}`), confFile: join(dir, `n${i}.conf`) });
    }
    const routes = nodes.map((n) => `"nats://127.0.0.1:${n.clusterPort}"`).join(", ");
    for (const n of nodes) {
      await mkdir(n.storeDir, { recursive: true });
      await writeFile(
        n.confFile,
        [
          `server_name: ${n.name}`,
          `listen: "127.0.0.1:${n.port}"`,
          `jetstream { store_dir: "${n.storeDir}" }`,
          `cluster { name: "ck-test", listen: "127.0.0.1:${n.clusterPort}", routes: [${routes}] }`,
          "",
        ].join("\n"),
      );
    }
    const c = new TestNatsCluster(dir, nodes, resolveNatsServerBinary());
    try {
      for (const n of nodes) c.spawnNode(n);
      await c.waitReplicated();
    } catch (err) {
      await c.cleanup();
      throw err;
    }
    return c;
  }

  private spawnNode(n: ClusterNode): void {
    const log = createWriteStream(join(this.dir, `${n.name}.log`), { flags: "a" });
    const p = spawn(this.binary, ["-c", n.confFile], { stdio: ["ignore", "pipe", "pipe"] });
    p.stdout!.pipe(log);
    p.stderr!.pipe(log);
    n.proc = p;
  }

  /** Client URLs of the nodes running now. */
  liveUrls(): string[] {
    return this.nodes.filter((n) => n.proc && n.proc.exitCode === null && n.proc.signalCode === null).map((n) => n.url);
  }

  /** A stream's info from whichever running node answers (with per-subject counts). */
  async streamInfo(stream: string) {
    const nc = await connect({ servers: this.liveUrls(), reconnect: false, timeout: 1000 });
    try {
      return await (await jetstreamManager(nc)).streams.info(stream, { subjects_filter: ">" });
    } finally {
      await nc.close();
    }
  }

  /**
   * Waits until the cluster can hold a three-replica stream (a meta leader elected and every
   * peer known): a probe stream is created and removed again.
   */
  async waitReplicated(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const nc = await connect({ servers: this.liveUrls(), reconnect: false, timeout: 1000 });
        try {
          const jsm = await jetstreamManager(nc, { timeout: 2000 });
          const name = `PROBE_${Date.now()}`;
          await jsm.streams.add({ name, subjects: [`probe.${name}`], num_replicas: Math.min(3, this.nodes.length), storage: "memory" as never });
          await jsm.streams.delete(name);
          return;
        } finally {
          await nc.close();
        }
      } catch (err) {
        last = err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    throw new Error(`cluster not ready within ${timeoutMs} ms: ${(last as Error)?.message}`);
  }

  /** The name of the node leading a stream now. */
  async leaderOf(stream: string): Promise<string> {
    const leader = (await this.streamInfo(stream)).cluster?.leader;
    if (!leader) throw new Error(`stream ${stream} has no leader`);
    return leader;
  }

  async kill9(name: string): Promise<void> {
    const p = this.node(name).proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once("exit", r));
    p.kill("SIGKILL");
    await gone;
  }

  /** Starts a killed node again on its ports and store (which may have been wiped). */
  restart(name: string): void {
    this.spawnNode(this.node(name));
  }

  async wipe(name: string): Promise<void> {
    const n = this.node(name);
    await rm(n.storeDir, { recursive: true, force: true });
    await mkdir(n.storeDir, { recursive: true });
  }

  async cleanup(): Promise<void> {
    for (const n of this.nodes) await this.kill9(n.name);
    await rm(this.dir, { recursive: true, force: true });
  }
}
