// Specifications of the (namespace, topic) <-> NATS subject mapping of the log.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  STREAM_SUBJECTS,
  namespaceSubjectFilter,
  namespaceToken,
  parseSubject,
  subjectFor,
  validateTopic,
} from "../../src/emitter/subjects.js";
import { invalid } from "../helpers/errors.js";

/** NATS subject token rules: non-empty, no whitespace, no `.`, and not a wildcard. */
const isNatsToken = (t: string) => t.length > 0 && !/[\s.*>]/.test(t);

test("topics map to subject tokens under the namespace", () => {
  assert.equal(subjectFor("default", "/images/create"), "containerd.io.default.images.create");
  assert.equal(subjectFor("default", "/namespaces/update"), "containerd.io.default.namespaces.update");
  assert.equal(subjectFor("moby", "/tasks/exec-added"), "containerd.io.moby.tasks.exec-added");
  assert.equal(subjectFor("a", "/x"), "containerd.io.a.x");
});

test("a namespace with dots is one token: . is written ~", () => {
  assert.equal(namespaceToken("k8s.io"), "k8s~io");
  assert.equal(subjectFor("k8s.io", "/containers/delete"), "containerd.io.k8s~io.containers.delete");
  assert.equal(namespaceSubjectFilter("k8s.io"), "containerd.io.k8s~io.>");
  assert.equal(namespaceSubjectFilter("default"), "containerd.io.default.>");
  assert.equal(STREAM_SUBJECTS, "containerd.io.>");
});

test("topic components with dots are escaped the same way", () => {
  assert.equal(subjectFor("default", "/ck/v1.2/x"), "containerd.io.default.ck.v1~2.x");
  assert.deepEqual(parseSubject("containerd.io.default.ck.v1~2.x"), { namespace: "default", topic: "/ck/v1.2/x" });
});

test("subjects round-trip for namespaces with . - _ and mixed case", () => {
  const namespaces = ["default", "k8s.io", "a.b.c", "my-ns", "my_ns", "A-b_C.d", "0", "x".repeat(76), "a.1-2_3"];
  const topics = ["/images/create", "/containers/update", "/a", "/snapshot/prepare", "/x.y/z_w/v-1"];
  for (const ns of namespaces) {
    const tok = namespaceToken(ns);
    assert.ok(isNatsToken(tok), tok);
    for (const topic of topics) {
      const subject = subjectFor(ns, topic);
      assert.ok(subject.split(".").every(isNatsToken), subject);
      assert.equal(subject.split(".")[2], tok, "the namespace is exactly the third token");
      assert.deepEqual(parseSubject(subject), { namespace: ns, topic });
    }
  }
});

test("distinct namespaces never share a token", () => {
  const tokens = ["a.b", "a-b", "a_b", "ab", "a.b.c", "a.bc", "ab.c"].map(namespaceToken);
  assert.equal(new Set(tokens).size, tokens.length);
});

test("invalid namespaces are refused", () => {
  for (const bad of ["", "a..b", "a~b", "a b", "*", ">", "a.", "é"]) {
    invalid(() => namespaceToken(bad), /^namespace: identifier/);
    invalid(() => subjectFor(bad, "/images/create"));
    invalid(() => namespaceSubjectFilter(bad));
  }
});

test("topics must be / and identifiers, as containerd's exchange requires", () => {
  for (const ok of ["/a", "/images/create", "/tasks/exec-added", "/x_y/z.w", "/A/B"]) assert.doesNotThrow(() => validateTopic(ok), ok);
  invalid(() => validateTopic(""), /^topic "": must not be empty: invalid argument$/);
  invalid(() => validateTopic("images/create"), /must start with '\/'/);
  invalid(() => validateTopic("/"), /must have at least one component/);
  invalid(() => validateTopic("/images/"), /failed validation on component "": identifier must not be empty/);
  invalid(() => validateTopic("/images//create"), /component ""/);
  invalid(() => validateTopic("/images/*"), /component "\*"/);
  invalid(() => validateTopic("/images/>"), /component ">"/);
  invalid(() => validateTopic("/images/cre ate"), /component "cre ate"/);
  invalid(() => validateTopic("/images/\tcreate"), /component/);
  invalid(() => validateTopic("/images/a..b"), /component "a\.\.b"/);
  invalid(() => validateTopic("/images/a~b"), /component "a~b"/);
  invalid(() => validateTopic("/" + "a".repeat(77)), /greater than maximum length/);
  invalid(() => subjectFor("default", "/images/*"));
});

test("parseSubject refuses subjects subjectFor cannot produce", () => {
  for (const bad of [
    "containerd.io",
    "containerd.io.default",
    "other.default.images.create",
    "containerd.iox.default.images.create",
    "containerd.io.a~~b.images.create",
    "containerd.io.default.images.*",
    "containerd.io.default.images.>",
    "containerd.io.default..create",
    "containerd.io..images.create",
  ]) {
    invalid(() => parseSubject(bad), /^subject /);
  }
});
