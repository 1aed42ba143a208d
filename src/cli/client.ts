// A typed-enough client of the containerd v1 API over a unix socket, used by `ck`, the tests
// and the benchmark. Every call carries the namespace header; errors come back as errdefs.
import * as grpc from "@grpc/grpc-js";
import { loadProtos, type Protos } from "../protos/protos.js";
import { fromGrpcError } from "../errdefs/errdefs.js";

/**
 * CK_TRACE=1: every unary call's method, outcome and duration on stderr, stamped with the
 * time since the process started (where a slow command spends its time).
 */
const TRACE = Boolean(process.env.CK_TRACE);
function trace(what: string, startedAt: number): void {
  process.stderr.write(`[ck trace ${startedAt.toFixed(0).padStart(5)} ms] ${what}\n`);
}

/**
 * Traces a stream when its status arrives; or, called, at once (a client ending its side of a
 * stream it is done with may exit before the status comes).
 */
function traceStream(call: { once(ev: "status", cb: (st: grpc.StatusObject) => void): unknown }, what: string): (outcome: string) => void {
  const started = performance.now();
  let traced = false;
  const done = (outcome: string) => {
    if (traced) return;
    traced = true;
    trace(`${what} (stream) ${outcome} ${(performance.now() - started).toFixed(1)} ms`, started);
  };
  call.once("status", (st) => done(grpc.status[st.code]!));
  return done;
}

export const SERVICES = {
  namespaces: "containerd.services.namespaces.v1.Namespaces",
  images: "containerd.services.images.v1.Images",
  containers: "containerd.services.containers.v1.Containers",
  events: "containerd.services.events.v1.Events",
  version: "containerd.services.version.v1.Version",
  introspection: "containerd.services.introspection.v1.Introspection",
  content: "containerd.services.content.v1.Content",
  leases: "containerd.services.leases.v1.Leases",
  snapshots: "containerd.services.snapshots.v1.Snapshots",
  diff: "containerd.services.diff.v1.Diff",
  tasks: "containerd.services.tasks.v1.Tasks",
  gc: "ck.services.gc.v1.GC",
  unpack: "ck.services.unpack.v1.Unpack",
  fetch: "ck.services.fetch.v1.Fetch",
  health: "grpc.health.v1.Health",
} as const;

export type ServiceName = keyof typeof SERVICES;

export interface ClientOptions {
  address: string;
  namespace?: string;
  /** Extra metadata sent on every call (e.g. containerd-lease). */
  metadata?: Record<string, string>;
}

export class ApiClient {
  readonly protos: Protos;
  private readonly clients = new Map<ServiceName, grpc.Client>();
  private readonly channel: grpc.Channel;

  constructor(readonly opts: ClientOptions) {
    this.protos = loadProtos();
    this.channel = new grpc.Channel(`unix://${opts.address}`, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 16 << 20,
      "grpc.max_send_message_length": 16 << 20,
    });
  }

  private client(service: ServiceName): grpc.Client {
    let c = this.clients.get(service);
    if (!c) {
      const Ctor = grpc.makeGenericClientConstructor(this.protos.serviceDefinition(SERVICES[service]), service);
      c = new Ctor(`unix://${this.opts.address}`, grpc.credentials.createInsecure(), {
        channelOverride: this.channel,
      });
      this.clients.set(service, c);
    }
    return c;
  }

  metadata(extra?: Record<string, string>, namespace = this.opts.namespace): grpc.Metadata {
    const md = new grpc.Metadata();
    if (namespace) md.set("containerd-namespace", namespace);
    for (const [k, v] of Object.entries({ ...this.opts.metadata, ...extra })) md.set(k, v);
    return md;
  }

  /** A unary call; rejects with a CkError carrying the errdefs class. */
  call<T = any>(
    service: ServiceName,
    method: string,
    request: object,
    opts: { metadata?: Record<string, string>; namespace?: string; deadlineMs?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    const c = this.client(service) as unknown as Record<string, Function>;
    const fn = c[method];
    if (typeof fn !== "function") return Promise.reject(new Error(`no method ${service}.${method}`));
    const md = this.metadata(opts.metadata, opts.namespace ?? this.opts.namespace);
    const callOpts: grpc.CallOptions = {};
    if (opts.deadlineMs) callOpts.deadline = Date.now() + opts.deadlineMs;
    const started = TRACE ? performance.now() : 0;
    return new Promise((resolve, reject) => {
      const signal = opts.signal;
      const call = fn.call(c, request, md, callOpts, (err: grpc.ServiceError | null, res: T) => {
        signal?.removeEventListener("abort", cancel);
        if (TRACE) trace(`${service}.${method} ${err ? grpc.status[err.code] : "OK"} ${(performance.now() - started).toFixed(1)} ms`, started);
        err ? reject(fromGrpcError(err)) : resolve(res);
      }) as grpc.ClientUnaryCall;
      // Aborting cancels the call: it rejects with Canceled and the server sees it go.
      const cancel = () => call.cancel();
      if (signal?.aborted) cancel();
      else signal?.addEventListener("abort", cancel, { once: true });
    });
  }

  /** A server-streaming call as an async iterable; errors are errdefs. */
  async *stream<T = any>(service: ServiceName, method: string, request: object, opts: { metadata?: Record<string, string>; namespace?: string; signal?: AbortSignal; onMetadata?: () => void } = {}): AsyncGenerator<T> {
    const c = this.client(service) as unknown as Record<string, Function>;
    const call = c[method]!.call(c, request, this.metadata(opts.metadata, opts.namespace ?? this.opts.namespace)) as grpc.ClientReadableStream<T>;
    if (TRACE) traceStream(call, `${service}.${method}`);
    const cancel = () => call.cancel();
    opts.signal?.addEventListener("abort", cancel, { once: true });
    if (opts.onMetadata) call.once("metadata", opts.onMetadata);
    try {
      for await (const m of call) yield m as T;
    } catch (err) {
      if ((err as grpc.ServiceError).code === grpc.status.CANCELLED && opts.signal?.aborted) return;
      throw fromGrpcError(err);
    } finally {
      opts.signal?.removeEventListener("abort", cancel);
      call.cancel();
    }
  }

  /**
   * A bidirectional stream driven in lock-step: `send` writes one request and resolves with
   * the next response (errors as errdefs). Used for Content.Write.
   */
  lockstep<Req extends object, Res = any>(service: ServiceName, method: string, opts: { metadata?: Record<string, string>; namespace?: string } = {}) {
    const c = this.client(service) as unknown as Record<string, Function>;
    const call = c[method]!.call(c, this.metadata(opts.metadata, opts.namespace ?? this.opts.namespace)) as grpc.ClientDuplexStream<Req, Res>;
    const traced = TRACE ? traceStream(call, `${service}.${method}`) : undefined;
    const queue: Res[] = [];
    const waiting: { resolve: (r: Res) => void; reject: (e: unknown) => void }[] = [];
    let failed: unknown;
    let ended = false;
    call.on("data", (r: Res) => {
      const w = waiting.shift();
      if (w) w.resolve(r);
      else queue.push(r);
    });
    call.on("error", (err) => {
      failed = fromGrpcError(err);
      for (const w of waiting.splice(0)) w.reject(failed);
    });
    call.on("end", () => {
      ended = true;
      for (const w of waiting.splice(0)) w.reject(failed ?? new Error(`${service}.${method}: stream ended`));
    });
    return {
      send(req: Req): Promise<Res> {
        if (failed) return Promise.reject(failed);
        call.write(req);
        const r = queue.shift();
        if (r !== undefined) return Promise.resolve(r);
        if (ended) return Promise.reject(new Error(`${service}.${method}: stream ended`));
        return new Promise<Res>((resolve, reject) => waiting.push({ resolve, reject }));
      },
      end(): void {
        traced?.(failed ? "FAILED" : "OK (client ended)");
        call.end();
      },
      cancel(): void {
        traced?.("CANCELLED (by the client)");
        call.cancel();
      },
    };
  }

  /** Waits until the socket accepts connections. */
  waitReady(timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client("version").waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()));
    });
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.channel.close();
  }
}
