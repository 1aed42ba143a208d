// Assertions on errdefs classes, shared by the specifications and the integration tests.
import assert from "node:assert/strict";
import { CkError, type ErrorClass } from "../../src/errdefs/errdefs.js";

function check(err: unknown, cls: ErrorClass, re?: RegExp): true {
  assert.ok(err instanceof CkError, `expected CkError, got ${err}`);
  assert.equal(err.errorClass, cls, err.message);
  if (re) assert.match(err.message, re);
  return true;
}

/** `fn` throws a CkError of class `cls` whose message matches `re`. */
export function throwsClass(fn: () => unknown, cls: ErrorClass, re?: RegExp): void {
  assert.throws(fn, (err: unknown) => check(err, cls, re));
}

/** `p` rejects with a CkError of class `cls` whose message matches `re`. */
export async function rejectsClass(p: Promise<unknown>, cls: ErrorClass, re?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => check(err, cls, re));
}

/** Shorthand for the most common case: InvalidArgument. */
export function invalid(fn: () => unknown, re?: RegExp): void {
  throwsClass(fn, "InvalidArgument", re);
}
