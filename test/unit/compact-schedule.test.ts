// When ckd's scheduled compaction runs next.
import { test } from "node:test";
import assert from "node:assert/strict";
import { nextDue } from "../../src/api/compact-scheduler.js";

const H = 3600_000;
const D = 24 * H;

test("nextDue: an interval after the latest base, never sooner than a minute after start", () => {
  const start = 1_000 * D;
  // No base yet: an interval from now.
  assert.equal(nextDue(start, start, undefined, D), start + D);
  // The latest base 23 h ago: due in an hour, whatever the restarts.
  assert.equal(nextDue(start, start, start - 23 * H, D), start + H);
  // Overdue (a base 3 days ago): a minute after start, not at once.
  assert.equal(nextDue(start, start, start - 3 * D, D), start + 60_000);
  // An interval shorter than a minute: that interval after start at the soonest.
  assert.equal(nextDue(start, start, start - D, 2_000), start + 2_000);
  // A run that stored no new base (an idle log reuses the stored one; a run that failed): an
  // interval after that run, not at once again.
  assert.equal(nextDue(start + 2 * H, start, start - 3 * D, D, start + H), start + H + D);
  // Intervals past a Node timer's ~24.8 days are planned as such (the timer chains its waits).
  assert.equal(nextDue(start, start, start, 60 * D), start + 60 * D);
});
