// ck's output helpers against what ctr prints (go-units and Go formatting).
import { test } from "node:test";
import assert from "node:assert/strict";
import { humanDuration, parseLabelArgs } from "../../src/cli/format.js";

test("humanDuration is go-units HumanDuration, as ctr's content ls and active print an AGE", () => {
  const s = 1000;
  const h = 3600 * s;
  const cases: [number, string][] = [
    [0, "Less than a second"],
    [999, "Less than a second"],
    [1 * s, "1 second"],
    [59 * s + 999, "59 seconds"],
    [60 * s, "About a minute"],
    [119 * s, "About a minute"],
    [120 * s, "2 minutes"],
    [59 * 60 * s, "59 minutes"],
    [60 * 60 * s, "About an hour"],
    [h * 1.49, "About an hour"],
    [h * 1.5, "2 hours"],
    [h * 47.4, "47 hours"],
    [h * 47.5, "2 days"],
    [h * 24 * 13, "13 days"],
    [h * 24 * 14, "2 weeks"],
    [h * 24 * 59, "8 weeks"],
    [h * 24 * 60, "2 months"],
    [h * 24 * 729, "24 months"],
    [h * 24 * 730, "2 years"],
  ];
  for (const [ms, want] of cases) assert.equal(humanDuration(ms), want, `${ms} ms`);
});

test("parseLabelArgs is ctr's LabelArgs: a bare key is key=true, key= is kept (to remove), the last of a key wins", () => {
  assert.deepEqual(parseLabelArgs(["flag", "a=1", "b=", "c=x=y", "a=2"]), { flag: "true", a: "2", b: "", c: "x=y" });
  assert.throws(() => parseLabelArgs(["=v"]), /must be key=value/);
});
