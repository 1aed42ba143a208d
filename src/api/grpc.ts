// Thin gRPC plumbing shared by the services: the caller's namespace from metadata, and
// wrappers that turn async handlers into grpc-js handlers with errors mapped through errdefs.
import type * as grpc from "@grpc/grpc-js";
import { CkError, failedPrecondition, toGrpcError } from "../errdefs/errdefs.js";
import { validateIdentifier } from "../commands/validation.js";

export const NAMESPACE_HEADER = "containerd-namespace";
/** The lease a call's writes are added to (containerd's client.WithLease). */
export const LEASE_HEADER = "containerd-lease";

/** The namespace a call is made in; FailedPrecondition when required and missing, as containerd's NamespaceRequired. */
export function namespaceOf(call: { metadata: grpc.Metadata }): string {
  const ns = optionalNamespaceOf(call);
  if (!ns) throw failedPrecondition("namespace is required");
  return ns;
}

export function optionalNamespaceOf(call: { metadata: grpc.Metadata }): string | undefined {
  const ns = metadataValue(call, NAMESPACE_HEADER);
  if (ns === undefined || ns === "") return undefined;
  // containerd's NamespaceRequired: `namespace validation: identifier "a b" must match …`.
  validateIdentifier("namespace validation", ns);
  return ns;
}

/**
 * The first value a header came with, which is what containerd reads. A Go client whose
 * context was re-scoped (namespaces.WithNamespace, leases.WithLease on a context that had
 * one) sends the header once per scope, the latest first; Node's HTTP/2 joins repeated
 * fields into one value with ", ", so the first is what comes before that separator (a
 * lease id that itself holds ", " is cut there: see README, Limits).
 */
export function metadataValue(call: { metadata: grpc.Metadata }, key: string): string | undefined {
  const v = call.metadata.get(key)[0];
  if (v === undefined) return undefined;
  const s = String(v);
  const cut = s.indexOf(", ");
  return cut < 0 ? s : s.slice(0, cut);
}

type UnaryCall = grpc.ServerUnaryCall<any, any>;

export function unary(fn: (call: UnaryCall) => Promise<unknown>): grpc.handleUnaryCall<any, any> {
  return (call, callback) => {
    fn(call).then(
      (res) => callback(null, res ?? {}),
      (err) => callback(toGrpcError(err) as grpc.ServiceError),
    );
  };
}

type StreamCall = grpc.ServerWritableStream<any, any>;

export function serverStream(fn: (call: StreamCall) => Promise<void>): grpc.handleServerStreamingCall<any, any> {
  return (call) => {
    fn(call).then(
      () => call.end(),
      (err) => {
        if (call.cancelled) return;
        failStream(call, err);
      },
    );
  };
}

/**
 * Ends a server or duplex stream with the error's status. grpc-js sends the status when the
 * stream emits 'error' (destroy() would drop it and leave the client waiting).
 */
export function failStream(call: { emit(ev: "error", err: unknown): boolean }, err: unknown): void {
  const g = toGrpcError(err);
  call.emit("error", Object.assign(new Error(g.details), g));
}

/** Writes to a server (or duplex) stream, waiting for drain when the buffer is full. */
/**
 * Writes one message; when the stream is full, waits for room. A call the client cancelled
 * (or that closed) rejects with Canceled instead of waiting for a drain that never comes, so
 * the handler ends and lets go of what it holds.
 */
export function writeStream(
  call: { write(msg: unknown): boolean; once(ev: string, cb: () => void): unknown; removeListener(ev: string, cb: () => void): unknown; cancelled?: boolean },
  msg: unknown,
): Promise<void> | void {
  if (call.cancelled) return Promise.reject(cancelledCall());
  if (call.write(msg)) return;
  return new Promise((resolve, reject) => {
    const events = ["cancelled", "close", "error"] as const;
    const settle = (err?: CkError) => () => {
      call.removeListener("drain", onDrain);
      for (const ev of events) call.removeListener(ev, onGone);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = settle();
    const onGone = settle(cancelledCall());
    call.once("drain", onDrain);
    for (const ev of events) call.once(ev, onGone);
  });
}

const cancelledCall = () => new CkError("Canceled", "the client cancelled the call");

/**
 * Aborted (with Canceled) once the client cancels the call or goes away. Listens at once, so
 * take it before the handler's first await: a cancel that comes during one is not missed.
 */
export function cancelSignal(call: { on(ev: "cancelled", fn: () => void): unknown; cancelled?: boolean }): AbortSignal {
  const ctl = new AbortController();
  if (call.cancelled) ctl.abort(cancelledCall());
  else call.on("cancelled", () => ctl.abort(cancelledCall()));
  return ctl.signal;
}

export function maskPaths(mask: { paths?: string[] } | null | undefined): string[] {
  return mask?.paths ?? [];
}

/** Requests of a client stream read ahead of the handler before the stream is paused. */
const REQUESTS_AHEAD = 4;

/**
 * The requests of a client or duplex stream, one at a time. Unlike `for await` over the call,
 * leaving the loop early does not destroy the call, so an error status can still be sent.
 */
export async function* requests<T>(call: NodeJS.ReadableStream & { on(ev: string, fn: (...a: any[]) => void): unknown }): AsyncGenerator<T> {
  const queue: T[] = [];
  let done = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  // Backpressure without lock-step: the stream is paused only once several requests wait
  // (pausing at every message halves a pipelined client's throughput).
  let paused = false;
  const onData = (m: T) => {
    queue.push(m);
    if (queue.length >= REQUESTS_AHEAD && !paused) {
      paused = true;
      call.pause();
    }
    notify();
  };
  const onEnd = () => {
    done = true;
    notify();
  };
  const onError = (err: unknown) => {
    failure = err;
    done = true;
    notify();
  };
  // A client that goes away (killed, connection lost) cancels the call; its request stream
  // may then never end or fail, and a handler waiting on it would hold what it holds (an
  // ingest's ref lock) forever.
  const onCancelled = () => onError(cancelledCall());
  call.on("data", onData);
  call.on("end", onEnd);
  call.on("error", onError);
  call.on("cancelled", onCancelled);
  try {
    for (;;) {
      if (queue.length > 0) {
        const m = queue.shift()!;
        if (paused && queue.length < REQUESTS_AHEAD) {
          paused = false;
          call.resume();
        }
        yield m;
        continue;
      }
      if (done) {
        if (failure) throw failure;
        return;
      }
      // Cancelled before this reader listened: the event is gone, the flag stays.
      if ((call as { cancelled?: boolean }).cancelled) {
        onCancelled();
        continue;
      }
      await new Promise<void>((r) => (wake = r));
    }
  } finally {
    call.removeListener("data", onData);
    call.removeListener("end", onEnd);
    call.removeListener("error", onError);
    call.removeListener("cancelled", onCancelled);
  }
}
