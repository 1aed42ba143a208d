// ckd's metrics for Prometheus, as containerd serves them (`[metrics] address`, GET /v1/metrics):
// the gRPC server's calls under go-grpc-prometheus's names (so containerd's dashboards read
// them), the log and the projection (how far the projection is behind the stream, whether the
// NATS connection is up, what the sequencer appended, had refused or gave up), active ingests,
// and the process (prom-client's defaults). Off unless an address is given.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { isIP } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { ContainerMetric } from "./container-metrics.js";
import { containerMetricsFor } from "./container-metrics.js";
import type { TaskStats } from "./tasks-service.js";

export const METRICS_PATH = "/v1/metrics";

/** What the metrics read when scraped. */
export interface MetricsSources {
  /** The stream holding the log (a label of the sequence gauges). */
  stream: string;
  /** The stream sequence the projection has applied. */
  appliedSeq(): number;
  /** The stream's last sequence and the bytes of its stored messages (asks JetStream). */
  logState(): Promise<{ lastSeq: number; firstSeq: number; bytes: number }>;
  /** Whether the NATS connection is up. */
  connected(): boolean;
  sequencer: { readonly stats: { appended: number; refused: number; recoveries: number; aborted: number } };
  /** Ingests in progress (content Writers open or resumable). */
  activeIngests(): Promise<number>;
  /** What containerd_build_info_total labels. */
  build: { version: string; revision: string };
  /**
   * The per-container series: the table of this host's cgroup version (containerd's v1 or v2
   * collector) and the statistics of every task whose cgroups exist, read once a scrape.
   */
  containers?: { table: readonly ContainerMetric[]; stats(): Promise<TaskStats[]> };
}

/** Go's names of the gRPC codes (codes.Code.String()), as go-grpc-prometheus labels them. */
const CODE_NAMES = [
  "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
  "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
  "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
];

/** `host:port` (`[v6]:port` for IPv6), as containerd's metrics address; throws naming the setting. */
export function parseMetricsAddress(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) {
    throw new Error(`--metrics-address (metrics_address) "${value}": want HOST:PORT, e.g. 127.0.0.1:1338 or [::1]:1338`);
  }
  const host = m[1] ?? m[2]!;
  if (m[1] !== undefined && isIP(host) !== 6) throw new Error(`--metrics-address (metrics_address) "${value}": [${host}] is not an IPv6 address`);
  return { host, port };
}

export class Metrics {
  readonly registry = new Registry();
  private sources: MetricsSources | undefined;
  private readonly started: Counter<string>;
  private readonly handled: Counter<string>;
  private readonly seconds: Histogram<string>;
  /** The question to JetStream in flight for the log gauges, if any. */
  private logState: Promise<{ lastSeq: number; firstSeq: number; bytes: number } | undefined> | undefined;
  /** The read of the tasks' statistics in flight for the container gauges, if any. */
  private containerStats: Promise<TaskStats[]> | undefined;

  private constructor(private readonly server: Server) {
    const registers = [this.registry];
    const grpcLabels = ["grpc_type", "grpc_service", "grpc_method"];
    this.started = new Counter({ name: "grpc_server_started_total", help: "Total number of RPCs started on the server.", labelNames: grpcLabels, registers });
    this.handled = new Counter({ name: "grpc_server_handled_total", help: "Total number of RPCs completed on the server, regardless of success or failure.", labelNames: [...grpcLabels, "grpc_code"], registers });
    this.seconds = new Histogram({
      name: "grpc_server_handling_seconds",
      help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
      labelNames: grpcLabels,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    const self = this;
    new Gauge({
      name: "ck_projection_applied_sequence",
      help: "The stream sequence the projection has applied.",
      labelNames: ["stream"],
      registers,
      collect() {
        if (self.sources) this.set({ stream: self.sources.stream }, self.sources.appliedSeq());
      },
    });
    const logGauge = (name: string, help: string, key: "lastSeq" | "firstSeq" | "bytes") =>
      new Gauge({
        name,
        help,
        labelNames: ["stream"],
        registers,
        async collect() {
          const state = await self.currentLogState();
          if (state === undefined || !self.sources) this.reset();
          else this.set({ stream: self.sources.stream }, state[key]);
        },
      });
    logGauge("ck_log_last_sequence", "The last sequence of the event log's stream (absent while JetStream does not answer).", "lastSeq");
    logGauge("ck_log_first_sequence", "The first sequence still stored in the event log's stream: past 1 once ck-replay compact cut its history (absent while JetStream does not answer).", "firstSeq");
    logGauge("ck_log_bytes", "The event log's stream size in bytes (absent while JetStream does not answer).", "bytes");
    new Gauge({
      name: "ck_log_connected",
      help: "1 while the connection to NATS is up, else 0.",
      registers,
      collect() {
        if (self.sources) this.set(self.sources.connected() ? 1 : 0);
      },
    });
    const sequencerCounter = (name: string, help: string, key: keyof MetricsSources["sequencer"]["stats"]) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          if (!self.sources) return;
          this.reset();
          this.inc(self.sources.sequencer.stats[key]);
        },
      });
    sequencerCounter("ck_sequencer_appends_total", "Events appended to the log and acknowledged.", "appended");
    sequencerCounter("ck_sequencer_refusals_total", "Appends refused because another writer appended first (decided again).", "refused");
    sequencerCounter("ck_sequencer_recoveries_total", "Times the append chain broke (a refusal, a timeout, a lost connection) and was rebuilt.", "recoveries");
    sequencerCounter("ck_sequencer_aborted_total", "Commands given up (Aborted) after their retries.", "aborted");
    new Gauge({
      name: "ck_content_ingests_active",
      help: "Content ingests in progress.",
      registers,
      async collect() {
        // A scan of the ingest directory: a failure leaves this one out, not the whole scrape.
        const n = self.sources ? await self.sources.activeIngests().catch(() => undefined) : undefined;
        if (n === undefined) this.reset();
        else this.set(n);
      },
    });
    collectDefaultMetrics({ register: this.registry });
  }

  /**
   * Binds the HTTP listener (at start, before anything is written: a taken port fails ckd
   * at once). Until attach(), scrapes answer 503.
   */
  static async listen(address: string): Promise<Metrics> {
    const { host, port } = parseMetricsAddress(address);
    let metrics: Metrics | undefined;
    const server = createServer((req, res) => void metrics!.answer(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) =>
        reject(new Error(`--metrics-address (metrics_address) ${address}: ${err.code === "EADDRINUSE" ? "address in use" : err.message}`)),
      );
      server.listen({ host, port }, () => resolve());
    });
    metrics = new Metrics(server);
    return metrics;
  }

  /**
   * The stream's state for the log gauges of one scrape: prom-client collects them together,
   * so one question to JetStream in flight serves both (1 s timeout).
   */
  private currentLogState(): Promise<{ lastSeq: number; firstSeq: number; bytes: number } | undefined> {
    const sources = this.sources;
    if (!sources) return Promise.resolve(undefined);
    if (this.logState) return this.logState;
    const asked: Promise<{ lastSeq: number; firstSeq: number; bytes: number } | undefined> = new Promise((resolve) => {
      const done = (s: { lastSeq: number; firstSeq: number; bytes: number } | undefined) => {
        clearTimeout(t);
        // A late answer to an older question leaves a newer one in place.
        if (this.logState === asked) this.logState = undefined;
        resolve(s);
      };
      const t = setTimeout(() => done(undefined), 1000);
      sources.logState().then(done, () => done(undefined));
    });
    this.logState = asked;
    return asked;
  }

  attach(sources: MetricsSources): void {
    const registers = [this.registry];
    // containerd's build information: a counter at 1, labelled with the Version service's answer.
    new Counter({ name: "containerd_build_info_total", help: "containerd build information", labelNames: ["version", "revision"], registers }).inc(sources.build);
    const containers = sources.containers;
    if (containers) {
      const self = this;
      for (const m of containers.table) {
        const labelNames = ["container_id", "namespace", "runtime", ...m.labels];
        new Gauge({
          name: m.name,
          help: m.help,
          labelNames,
          registers,
          async collect() {
            this.reset();
            for (const t of await self.currentContainerStats(containers.stats)) {
              // Only the statistics this table reads (a host runs one cgroup version).
              if (containerMetricsFor(t.type) !== containers.table) continue;
              for (const sample of m.samples(t.data)) {
                const labels: Record<string, string> = { container_id: t.id, namespace: t.namespace, runtime: t.runtime };
                m.labels.forEach((l, i) => (labels[l] = sample.labels[i] ?? ""));
                this.set(labels, sample.value);
              }
            }
          },
        });
      }
    }
    this.sources = sources;
  }

  /** Every task's statistics for one scrape: its gauges collect together and share one read. */
  private currentContainerStats(read: () => Promise<TaskStats[]>): Promise<TaskStats[]> {
    if (this.containerStats) return this.containerStats;
    const asked: Promise<TaskStats[]> = read()
      .catch(() => [])
      .finally(() => {
        if (this.containerStats === asked) this.containerStats = undefined;
      });
    this.containerStats = asked;
    return asked;
  }

  /** The port it listens on. */
  get port(): number {
    const a = this.server.address();
    return a && typeof a === "object" ? a.port : 0;
  }

  private async answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "").split("?")[0];
    if (path !== METRICS_PATH) {
      res.writeHead(404, { "content-type": "text/plain" }).end(`not found: metrics are at ${METRICS_PATH}\n`);
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("method not allowed\n");
      return;
    }
    if (!this.sources) {
      res.writeHead(503, { "content-type": "text/plain" }).end("ckd is starting\n");
      return;
    }
    try {
      const body = await this.registry.metrics();
      res.writeHead(200, { "content-type": this.registry.contentType }).end(req.method === "HEAD" ? undefined : body);
    } catch (err) {
      res.writeHead(500, { "content-type": "text/plain" }).end(`${(err as Error).message}\n`);
    }
  }

  /** A server interceptor counting and timing every call by service, method, type and code. */
  interceptor(): grpc.ServerInterceptor {
    return (method, call) => {
      const slash = method.path.lastIndexOf("/");
      const labels = {
        grpc_type: method.requestStream ? (method.responseStream ? "bidi_stream" : "client_stream") : method.responseStream ? "server_stream" : "unary",
        grpc_service: method.path.slice(1, slash),
        grpc_method: method.path.slice(slash + 1),
      };
      this.started.inc(labels);
      const t0 = performance.now();
      // Once per call: the status the handler sends, or (a call the client cancelled or whose
      // deadline passed, whose status grpc-js sends past the interceptors or not at all) the
      // cancellation. A normal end is followed by onCancel too, hence the flag.
      let done = false;
      const record = (code: number) => {
        if (done) return;
        done = true;
        this.handled.inc({ ...labels, grpc_code: CODE_NAMES[code] ?? String(code) });
        this.seconds.observe(labels, (performance.now() - t0) / 1000);
      };
      return new grpc.ServerInterceptingCall(call, {
        start: (next) =>
          next({
            onCancel: () => {
              const deadline = call.getDeadline();
              const passed = deadline instanceof Date ? deadline.getTime() <= Date.now() : Number.isFinite(deadline) && deadline <= Date.now();
              record(passed ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED);
            },
          }),
        sendStatus: (status, next) => {
          record(status.code);
          next(status);
        },
      });
    };
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
