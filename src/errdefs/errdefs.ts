// The error classes of the containerd API (errdefs), each mapped to exactly one gRPC status
// code and back, so the class of an error survives the wire and its message keeps context.
import { Metadata, status as GrpcStatus } from "@grpc/grpc-js";

export type ErrorClass =
  | "NotFound"
  | "AlreadyExists"
  | "FailedPrecondition"
  | "InvalidArgument"
  | "Unavailable"
  | "NotImplemented"
  | "Conflict"
  | "Aborted"
  | "OutOfRange"
  | "Canceled"
  | "DeadlineExceeded"
  | "ResourceExhausted"
  | "PermissionDenied"
  | "DataLoss"
  | "Unknown";

const toGrpc: Record<ErrorClass, GrpcStatus> = {
  NotFound: GrpcStatus.NOT_FOUND,
  AlreadyExists: GrpcStatus.ALREADY_EXISTS,
  FailedPrecondition: GrpcStatus.FAILED_PRECONDITION,
  InvalidArgument: GrpcStatus.INVALID_ARGUMENT,
  Unavailable: GrpcStatus.UNAVAILABLE,
  NotImplemented: GrpcStatus.UNIMPLEMENTED,
  // containerd maps its "conflict" class onto FailedPrecondition on the wire; keep a
  // distinct class locally but send the code ctr understands.
  Conflict: GrpcStatus.FAILED_PRECONDITION,
  Aborted: GrpcStatus.ABORTED,
  OutOfRange: GrpcStatus.OUT_OF_RANGE,
  Canceled: GrpcStatus.CANCELLED,
  DeadlineExceeded: GrpcStatus.DEADLINE_EXCEEDED,
  // Classes containerd's errdefs gained after 1.6 (its 2.0 maps them to these codes).
  ResourceExhausted: GrpcStatus.RESOURCE_EXHAUSTED,
  PermissionDenied: GrpcStatus.PERMISSION_DENIED,
  // Unrecoverable loss (containerd's errdefs 2.0 ErrDataLoss): messages gone from inside the log.
  DataLoss: GrpcStatus.DATA_LOSS,
  Unknown: GrpcStatus.UNKNOWN,
};

const fromGrpc = new Map<number, ErrorClass>([
  [GrpcStatus.NOT_FOUND, "NotFound"],
  [GrpcStatus.ALREADY_EXISTS, "AlreadyExists"],
  [GrpcStatus.FAILED_PRECONDITION, "FailedPrecondition"],
  [GrpcStatus.INVALID_ARGUMENT, "InvalidArgument"],
  [GrpcStatus.UNAVAILABLE, "Unavailable"],
  [GrpcStatus.UNIMPLEMENTED, "NotImplemented"],
  [GrpcStatus.ABORTED, "Aborted"],
  [GrpcStatus.OUT_OF_RANGE, "OutOfRange"],
  [GrpcStatus.CANCELLED, "Canceled"],
  [GrpcStatus.DEADLINE_EXCEEDED, "DeadlineExceeded"],
  [GrpcStatus.RESOURCE_EXHAUSTED, "ResourceExhausted"],
  [GrpcStatus.PERMISSION_DENIED, "PermissionDenied"],
  [GrpcStatus.DATA_LOSS, "DataLoss"],
]);

/** The phrase containerd's errdefs append to a message (`<msg>: not found`). */
const phrase: Record<ErrorClass, string> = {
  NotFound: "not found",
  AlreadyExists: "already exists",
  FailedPrecondition: "failed precondition",
  InvalidArgument: "invalid argument",
  Unavailable: "unavailable",
  NotImplemented: "not implemented",
  Conflict: "conflict",
  Aborted: "aborted",
  OutOfRange: "out of range",
  Canceled: "context canceled",
  DeadlineExceeded: "context deadline exceeded",
  ResourceExhausted: "resource exhausted",
  PermissionDenied: "permission denied",
  DataLoss: "data loss",
  Unknown: "unknown",
};

/** Prefix of the facts an error carries over the wire (its status's trailing metadata keys). */
const FACT_PREFIX = "ck-";

export class CkError extends Error {
  readonly errorClass: ErrorClass;
  /**
   * What a client may act on without reading the message (where a log now starts, say), keys
   * `ck-...`: sent as the status's trailing metadata, read back by fromGrpcError.
   */
  readonly facts: Readonly<Record<string, string>>;
  constructor(errorClass: ErrorClass, message: string, options?: { cause?: unknown; facts?: Record<string, string> }) {
    super(message, options);
    this.name = "CkError";
    this.errorClass = errorClass;
    this.facts = options?.facts ?? {};
  }
  /** The gRPC status code this class travels as. */
  get grpcCode(): GrpcStatus {
    return toGrpc[this.errorClass];
  }
}

const make = (c: ErrorClass) => (context: string, options?: { cause?: unknown; facts?: Record<string, string> }) =>
  new CkError(c, `${context}: ${phrase[c]}`, options);

export const notFound = make("NotFound");
export const alreadyExists = make("AlreadyExists");
export const failedPrecondition = make("FailedPrecondition");
export const invalidArgument = make("InvalidArgument");
export const unavailable = make("Unavailable");
export const notImplemented = make("NotImplemented");
export const conflict = make("Conflict");
export const aborted = make("Aborted");
export const outOfRange = make("OutOfRange");
export const canceled = make("Canceled");
export const resourceExhausted = make("ResourceExhausted");
export const permissionDenied = make("PermissionDenied");
export const dataLoss = make("DataLoss");
export const unknown = make("Unknown");

/**
 * `err` with `context` before its message, its class kept: Go's `fmt.Errorf("context: %w", err)`,
 * as containerd's stores wrap a validation's error (`create container failed validation: …`).
 */
export function withContext(context: string, err: unknown): unknown {
  return err instanceof CkError ? new CkError(err.errorClass, `${context}: ${err.message}`, { cause: err, facts: { ...err.facts } }) : err;
}

export function isClass(err: unknown, c: ErrorClass): boolean {
  return err instanceof CkError && err.errorClass === c;
}
export const isNotFound = (e: unknown) => isClass(e, "NotFound");
export const isAlreadyExists = (e: unknown) => isClass(e, "AlreadyExists");
export const isInvalidArgument = (e: unknown) => isClass(e, "InvalidArgument");
export const isUnavailable = (e: unknown) => isClass(e, "Unavailable");

/** A gRPC ServiceError-shaped object for an error thrown anywhere in the daemon. */
export function toGrpcError(err: unknown): { code: GrpcStatus; details: string; message: string; metadata?: Metadata } {
  if (err instanceof CkError) {
    const keys = Object.keys(err.facts).filter((k) => k.startsWith(FACT_PREFIX));
    if (keys.length === 0) return { code: err.grpcCode, details: err.message, message: err.message };
    const metadata = new Metadata();
    for (const k of keys) metadata.set(k, err.facts[k]!);
    return { code: err.grpcCode, details: err.message, message: err.message, metadata };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: GrpcStatus.UNKNOWN, details: message, message };
}

/** The errdefs class of an error received from a gRPC call, message kept. */
export function fromGrpcError(err: unknown): CkError {
  if (err instanceof CkError) return err;
  const e = err as { code?: number; details?: string; message?: string; metadata?: unknown };
  const c = (e && typeof e.code === "number" && fromGrpc.get(e.code)) || "Unknown";
  const msg = e?.details || e?.message || String(err);
  const facts: Record<string, string> = {};
  if (e?.metadata instanceof Metadata) {
    for (const [k, v] of Object.entries(e.metadata.getMap())) if (k.startsWith(FACT_PREFIX) && typeof v === "string") facts[k] = v;
  }
  return new CkError(c, msg, { cause: err, facts });
}

/** Class name as ctr prints it, for CLI output. */
export function classPhrase(c: ErrorClass): string {
  return phrase[c];
}
