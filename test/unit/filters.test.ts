// Specifications of containerd's filter syntax and semantics, and of the adaptors that expose
// namespaces, images, containers and event envelopes to it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  compileGoRegexp,
  blobFieldpath,
  containerFieldpath,
  envelopeFieldpath,
  imageFieldpath,
  labelsAdaptor,
  namespaceFieldpath,
  parseFilters,
  pinnedNamespace,
  MAX_REGEXP_BYTES,
  type Adaptor,
} from "../../src/projections/filters.js";
import { CkError } from "../../src/errdefs/errdefs.js";

/** An adaptor over a flat map of dotted fieldpaths: absent keys are not present. */
const fields =
  (m: Record<string, string>): Adaptor =>
  (fp) =>
    Object.hasOwn(m, fp.join(".")) ? { value: m[fp.join(".")], present: true } : { value: "", present: false };

const matches = (filters: string[], m: Record<string, string>) => parseFilters(filters).match(fields(m));

function invalid(filters: string[], re?: RegExp): void {
  assert.throws(
    () => parseFilters(filters),
    (err: unknown) => {
      assert.ok(err instanceof CkError, `expected CkError, got ${err}`);
      assert.equal(err.errorClass, "InvalidArgument", err.message);
      if (re) assert.match(err.message, re);
      return true;
    },
  );
}

test("no filters and the empty filter match everything", () => {
  assert.equal(matches([], {}), true);
  assert.equal(matches([""], {}), true);
  assert.equal(matches(["", "name==x"], { name: "y" }), true, "an empty branch of an OR matches");
});

test("== needs the field present and equal", () => {
  assert.equal(matches(["name==foo"], { name: "foo" }), true);
  assert.equal(matches(["name==foo"], { name: "foobar" }), false);
  assert.equal(matches(["name==foo"], {}), false);
  assert.equal(matches(['name==""'], {}), false, "absent is not equal to the empty string");
  assert.equal(matches(['name==""'], { name: "" }), true);
});

test("!= compares the value even when the field is absent", () => {
  assert.equal(matches(["name!=foo"], { name: "bar" }), true);
  assert.equal(matches(["name!=foo"], { name: "foo" }), false);
  assert.equal(matches(["name!=foo"], {}), true);
  assert.equal(matches(['name!=""'], {}), false, "an absent field has the value \"\"");
});

test("~= searches with a regular expression, unanchored", () => {
  assert.equal(matches(["name~=oo"], { name: "foo" }), true);
  assert.equal(matches(["name~=^oo"], { name: "foo" }), false);
  assert.equal(matches(["name~=^docker.io/"], { name: "docker.io/library/alpine" }), true);
  assert.equal(matches(["name~=^$"], {}), true, "an absent field is searched as \"\"");
  assert.equal(matches(["name~=/^fo+$/"], { name: "foooo" }), true, "slash-quoted");
  assert.equal(matches(["name~=|^a,b$|"], { name: "a,b" }), true, "pipe-quoted, comma inside");
  assert.equal(matches(['name~="^a\\\\.b$"'], { name: "a.b" }), true, "double-quoted with escaped backslash");
  assert.equal(matches(['name~="^a\\\\.b$"'], { name: "axb" }), false);
});

test("a bare fieldpath tests presence", () => {
  assert.equal(matches(["labels.foo"], { "labels.foo": "" }), true);
  assert.equal(matches(["labels.foo"], {}), false);
  assert.equal(matches(["labels.foo,name"], { "labels.foo": "1" }), false);
});

test("commas AND within a filter; separate filters are OR'ed", () => {
  const m = { name: "a", "labels.x": "1" };
  assert.equal(matches(["name==a,labels.x==1"], m), true);
  assert.equal(matches(["name==a,labels.x==2"], m), false);
  assert.equal(matches(["name==b", "labels.x==1"], m), true);
  assert.equal(matches(["name==b", "labels.x==2"], m), false);
});

test("whitespace is allowed before operators and values", () => {
  assert.equal(matches(["name == foo"], { name: "foo" }), true);
  assert.equal(matches(["name==foo, labels.x==1"], { name: "foo", "labels.x": "1" }), true);
});

test("quoted fields and values, with Go escapes", () => {
  assert.equal(matches(['labels."com.example/owner"==me'], { "labels.com.example/owner": "me" }), true);
  assert.equal(matches(['labels."a b"=="x y"'], { "labels.a b": "x y" }), true);
  assert.equal(matches(['name=="a\\"b"'], { name: 'a"b' }), true);
  assert.equal(matches(['name=="tab\\there"'], { name: "tab\there" }), true);
  assert.equal(matches(['name=="\\u00e9\\xc3\\xa9\\303\\251"'], { name: "ééé" }), true, "escapes spell UTF-8");
  assert.equal(matches(["name==café"], { name: "café" }), true, "unquoted non-ASCII value");
  assert.equal(matches(["name=='x'"], { name: "'x'" }), true, "single quotes are not quotes");
});

test("unquoted values keep dots, slashes, colons and equals signs", () => {
  assert.equal(matches(["name==docker.io/library/alpine:3.19"], { name: "docker.io/library/alpine:3.19" }), true);
  assert.equal(matches(["target.digest==sha256:ab=cd"], { "target.digest": "sha256:ab=cd" }), true);
});

test("label keys with dots need no quotes; with slashes they do", () => {
  const img = imageFieldpath({
    name: "x",
    labels: { "io.cri-containerd.image": "managed", "example.com/team": "infra" },
    target: { media_type: "m", digest: "d" },
  });
  invalid(["labels.io.cri-containerd.image==managed"], /\[labels\.io\.cri >\|-\|< containerd\.image==managed\]: expected an operator/); // `-` ends a field
  assert.equal(parseFilters(['labels."io.cri-containerd.image"==managed']).match(img), true);
  assert.equal(parseFilters(['labels.io."cri-containerd".image==managed']).match(img), true, "components joined by .");
  assert.equal(parseFilters(['labels."example.com/team"==infra']).match(img), true);
  assert.equal(parseFilters(['labels."example.com/team"']).match(img), true);
  assert.equal(parseFilters(['labels."example.com/other"']).match(img), false);
});

test("malformed filters are InvalidArgument naming the filter and the position", () => {
  // containerd's words: the filter with the position marked, or whole when the input ran out.
  invalid(["name=="], /^filters: parse error: \[name==\]: expected value or quoted: invalid argument$/);
  invalid(["^ref"], /^filters: parse error: \[ >\|\^\|< ref\]: expected field or quoted: invalid argument$/);
  invalid(["name foo"], /\[name  >\|f\|< oo\]: expected an operator/);
  invalid(["name===foo"], /unsupported operator "==="/);
  invalid(["name=~foo"], /unsupported operator "=~"/);
  invalid(["a..b"], /\[a\. >\|\.\|< b\]: expected field or quoted/);
  invalid([".a==b"], /expected field or quoted/);
  invalid(["name==foo,"], /expected field or quoted/);
  invalid([","], /expected field or quoted/);
  invalid(["   "], /expected field or quoted/);
  invalid(["name==foo bar"], /\[name==foo >\| \|< bar\]: unexpected input:  :/);
  invalid(['name=="unterminated'], /quoted literal not terminated/);
  invalid(['name=="bad\\q"'], /illegal escape sequence/);
  invalid(['name=="\\x4"'], /illegal numeric escape sequence/);
  invalid(['name=="\\xff"'], /not valid UTF-8/);
  invalid(["name==/re/"], /invalid quote encountered/);
  invalid(["/name/==x"], /invalid quote encountered/);
  invalid(["name@==x"], /unexpected input|expected an operator/);
  invalid(["na\u0000me==x"], /./);
  invalid(["name==,x"], /expected value or quoted/);
  invalid(["topic==/containers"], /quoted literal not terminated/); // as in containerd: quote topics
  invalid(["topic==/containers/create"], /invalid quote encountered/);
  invalid(["topic==/containers/"], /invalid quote encountered/);
  invalid(["ok==1", "name=="], /\[name==\]/);
});

test("the ~= expressions of one request are refused past 64 KiB in all, before any is compiled", () => {
  const half = "a".repeat(MAX_REGEXP_BYTES / 2);
  assert.equal(matches([`name~=${half}`, `labels.x~=${half}`], { name: half }), true, "exactly the limit");
  invalid([`name~=${half}`, `labels.x~=${half}b`], /^filters: ~= expressions of more than 65536 bytes in all are refused \(the one of labels\.x at offset 10 crosses it\): invalid argument$/);
  invalid([`name~=${half}x,name~=${half}`], /the one of name at offset 32782 crosses it/);
  // Counted in bytes (a 3-byte character counts 3), and before compiling: this one is invalid too.
  invalid([`name~=/(${"€".repeat(MAX_REGEXP_BYTES / 3 + 1)}/`], /more than 65536 bytes/);
  // == and != values do not count.
  assert.equal(matches([`name==${"b".repeat(MAX_REGEXP_BYTES)},name~=b`], { name: "b".repeat(MAX_REGEXP_BYTES) }), true);
});

test("invalid regular expressions are InvalidArgument at parse time, in Go's words", () => {
  invalid(["name~=(a"], /invalid regular expression "\(a": error parsing regexp: missing closing \): `\(a`/);
  invalid(["name~=[a"], /missing closing \]: `\[a`/);
  invalid(["name~=a**"], /invalid nested repetition operator: `\*\*`/);
  invalid(["name~=(a)\\1"], /invalid escape sequence: `\\1`/);
  invalid(["name~=(?=a)"], /invalid or unsupported Perl syntax: `\(\?=`/);
  invalid(["name~=(?<!a)b"], /invalid named capture: `\(\?<!a\)b`/);
  invalid(["name~=a{1001}"], /invalid repeat count: `\{1001\}`/);
  invalid(["name~=[z-a]"], /invalid character class range: `z-a`/);
  invalid(["name~=\\8"], /invalid escape sequence: `\\8`/);
  invalid(["name~=[[:nope:]]"], /invalid character class range: `\[:nope:\]`/);
  invalid(["name~=\\p{Nope}"], /invalid character class range: `\\p\{Nope\}`/);
  invalid(["name~=a\\"], /trailing backslash at end of expression/);
  invalid(["name~=x{2}{3}"], /invalid nested repetition operator/);
});

test("flags anywhere, scoped and ungreedy, as Go takes them", () => {
  const re = (src: string) => compileGoRegexp(src);
  assert.equal(re("a(?i)b").test("aB"), true);
  assert.equal(re("a(?i)b").test("AB"), false);
  assert.equal(re("(?i:a)b").test("Ab"), true);
  assert.equal(re("(?i:a)b").test("AB"), false);
  assert.equal(re("^(?U)a+$").test("aaa"), true);
  assert.equal(re("(?s-i:A.B)").test("A\nB"), true);
});

test("matching takes time linear in the input: a nested repeat over a long name answers (a backtracking RegExp took ~10 s at 29 characters, and never ends at 100,000)", () => {
  // In a process of its own, ended after 60 s: a match that backtracks holds its thread, which
  // no timer of this one could interrupt.
  const filters = new URL("../../src/projections/filters.js", import.meta.url).href;
  const script = `import("${filters}").then((f) => {
    const filter = f.parseFilters(["name~=^(a+)+$"]);
    const at = (name) => filter.match((fp) => ({ value: name, present: true }));
    process.stdout.write(JSON.stringify([at("a".repeat(100000) + "b"), at("aaaa")]));
  });`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.signal, null, "the match did not end within 60 s");
  assert.equal(r.stdout, "[false,true]", r.stderr);
});

test("Go regular expressions match with RE2's meaning", () => {
  const re = (src: string) => compileGoRegexp(src);
  assert.equal(re("(?i)^ABC$").test("abc"), true);
  assert.equal(re("(?s)a.b").test("a\nb"), true);
  assert.equal(re("a.b").test("a\nb"), false);
  assert.equal(re("a.b").test("a\rb"), true, "RE2's . excludes only \\n");
  assert.equal(re("(?m)^b$").test("a\nb\nc"), true);
  assert.equal(re("^b$").test("a\nb\nc"), false);
  assert.equal(re("\\s").test("\v"), false, "RE2's \\s has no \\v");
  assert.equal(re("\\S").test("\u00a0"), true, "RE2's \\s is ASCII");
  assert.equal(re("[\\s]").test(" "), true);
  assert.equal(re("^[\\S]+$").test("a\u00a0b"), true);
  assert.equal(re("^\\d+$").test("١٢"), false, "\\d is ASCII");
  assert.equal(re("^[[:alpha:]]+$").test("abcXYZ"), true);
  assert.equal(re("^[[:^digit:]]+$").test("abc"), true);
  assert.equal(re("^[[:^digit:]]+$").test("a1"), false);
  assert.equal(re("^\\pL+$").test("héllo"), true);
  assert.equal(re("^\\p{Greek}+$").test("αβγ"), true);
  assert.equal(re("^\\P{L}+$").test("123"), true);
  assert.equal(re("^\\p{^L}+$").test("123"), true);
  assert.equal(re("\\Qa.b*\\E$").test("xa.b*"), true);
  assert.equal(re("\\Qa.b*\\E$").test("xaxb"), false);
  assert.equal(re("^\\x41\\x{1F600}\\101\\0$").test("A\u{1F600}A\0"), true);
  assert.equal(re("^a{2}$").test("aa"), true);
  assert.equal(re("^a{,2}$").test("a{,2}"), true, "a brace that starts no repeat is literal");
  assert.equal(re("^a}]$").test("a}]"), true);
  assert.equal(re("^[]a]+$").test("]a]"), true, "] first in a class is literal");
  assert.equal(re("^[^]a]$").test("b"), true);
  assert.equal(re("^[a-c-e]+$").test("b-e"), true);
  assert.equal(re("^\\-\\#\\:\\_$").test("-#:_"), true, "escaped punctuation is itself");
  assert.equal(re("^(?P<x>a)(?<y>b)$").test("ab"), true);
  assert.equal(re("\\Aab\\z").test("ab"), true);
  assert.equal(re("(?m)\\Ab").test("a\nb"), false);
  assert.equal(re("").test("anything"), true);
});

test("namespaces expose name and labels", () => {
  const ns = namespaceFieldpath({ name: "k8s.io", labels: { "containerd.io/defaults.snapshotter": "overlayfs" } });
  assert.equal(parseFilters(["name==k8s.io"]).match(ns), true);
  assert.equal(parseFilters(['labels."containerd.io/defaults.snapshotter"==overlayfs']).match(ns), true);
  assert.equal(parseFilters(["id==k8s.io"]).match(ns), false);
  assert.equal(parseFilters(["labels.x"]).match(namespaceFieldpath({ name: "a", labels: {} })), false);
});

test("content exposes digest and labels; size is absent, as containerd's AdaptInfo leaves it (==N matches none, !=N all)", () => {
  const D = "sha256:" + "a".repeat(64);
  const blob = blobFieldpath({ digest: D, labels: { "containerd.io/gc.root": "1" } });
  assert.equal(parseFilters([`digest==${D}`]).match(blob), true);
  assert.equal(parseFilters(['labels."containerd.io/gc.root"']).match(blob), true);
  assert.equal(parseFilters(["size==100"]).match(blob), false);
  assert.equal(parseFilters(["size!=100"]).match(blob), true);
  assert.equal(parseFilters(["size"]).match(blob), false);
});

test("images expose name, target.mediatype, target.digest, labels and annotations", () => {
  const img = imageFieldpath({
    name: "docker.io/library/alpine:latest",
    labels: { env: "prod" },
    target: { media_type: "application/vnd.oci.image.index.v1+json", digest: "sha256:abc", annotations: { "org.opencontainers.image.ref.name": "latest" } },
  });
  assert.equal(parseFilters(["name~=alpine"]).match(img), true);
  assert.equal(parseFilters(["target.mediatype==application/vnd.oci.image.index.v1+json"]).match(img), true);
  assert.equal(parseFilters(["target.media_type"]).match(img), false, "containerd spells it mediatype");
  assert.equal(parseFilters(["target.digest==sha256:abc"]).match(img), true);
  assert.equal(parseFilters(["target"]).match(img), false);
  assert.equal(parseFilters(["labels.env==prod"]).match(img), true);
  assert.equal(parseFilters(["annotations.org.opencontainers.image.ref.name==latest"]).match(img), true);
  assert.equal(parseFilters(["created_at"]).match(img), false);
});

test("containers expose id, image, runtime.name and labels, not snapshotter", () => {
  const c = containerFieldpath({
    id: "web-1",
    image: "docker.io/library/nginx:1",
    runtime: { name: "io.containerd.runc.v2" },
    labels: { "io.kubernetes.pod.name": "web" },
  });
  assert.equal(parseFilters(["id==web-1"]).match(c), true);
  assert.equal(parseFilters(["image~=nginx"]).match(c), true);
  assert.equal(parseFilters(["runtime.name==io.containerd.runc.v2"]).match(c), true);
  assert.equal(parseFilters(["runtime"]).match(c), false);
  assert.equal(parseFilters(["labels.io.kubernetes.pod.name==web"]).match(c), true);
  assert.equal(parseFilters(["snapshotter"]).match(c), false);
  assert.equal(parseFilters(["image"]).match(containerFieldpath({ id: "x", image: "" })), false, "empty is absent");
});

test("labelsAdaptor joins the rest of the path and ignores inherited keys", () => {
  const a = labelsAdaptor({ "a.b": "1" });
  assert.deepEqual(a(["a", "b"]), { value: "1", present: true });
  assert.deepEqual(a(["a.b"]), { value: "1", present: true });
  assert.deepEqual(a(["constructor"]), { value: "", present: false });
  assert.deepEqual(labelsAdaptor(undefined)(["a"]), { value: "", present: false });
});

test("envelopes expose namespace, topic and event fields, decoding the event lazily", () => {
  let decodes = 0;
  const event = () => {
    decodes++;
    return { id: "c1", image: "", runtime: { name: "io.containerd.runc.v2" }, labels: { "a.b": "1" }, exited: false, snapshotKey: "k", exitStatus: 3 };
  };
  const env = { namespace: "default", topic: "/containers/create", event };
  const m = (f: string) => parseFilters([f]).match(envelopeFieldpath(env));
  assert.equal(m('topic=="/containers/create"'), true);
  assert.equal(m("topic~=^/containers/"), true);
  assert.equal(m("namespace==default"), true);
  assert.equal(decodes, 0, "no event field asked for, no decoding");

  const adaptor = envelopeFieldpath(env);
  const f = parseFilters(["event.id==c1,event.runtime.name==io.containerd.runc.v2,event.labels.a.b==1"]);
  assert.equal(f.match(adaptor), true);
  assert.equal(decodes, 1, "decoded once per envelope");
  assert.equal(m("event.image"), false, "empty string is absent");
  assert.equal(m("event.exited==false"), true, "booleans are always present");
  assert.equal(m("event.snapshot_key==k"), true, "snake_case path finds a camelCase field");
  assert.equal(m("event.exit_status"), false, "numbers are not exposed, as in containerd");
  assert.equal(m("event.constructor"), false);
  assert.equal(m("event"), false);
  assert.equal(parseFilters(["event.id"]).match(envelopeFieldpath({ namespace: "n", topic: "/t" })), false);
  assert.equal(parseFilters(["event.id==x"]).match(envelopeFieldpath({ namespace: "n", topic: "/t", event: { id: "x" } })), true);
  assert.equal(parseFilters(["event.id"]).match(envelopeFieldpath({ namespace: "n", topic: "/t", event: () => null })), false);
});

test("pinnedNamespace finds a namespace every branch pins with ==", () => {
  const pin = (fs: string[]) => pinnedNamespace(parseFilters(fs));
  assert.equal(pin(["namespace==default"]), "default");
  assert.equal(pin(['namespace=="k8s.io",topic~=^/images/']), "k8s.io");
  assert.equal(pin(['namespace==a,topic=="/x"', "namespace==a"]), "a");
  assert.equal(pin(["namespace==a", "namespace==b"]), undefined);
  assert.equal(pin(["namespace==a", 'topic=="/x"']), undefined);
  assert.equal(pin(["namespace!=a"]), undefined);
  assert.equal(pin(["namespace~=^a$"]), undefined);
  assert.equal(pin(["namespace"]), undefined);
  assert.equal(pin([""]), undefined);
  assert.equal(pin([]), undefined);
  assert.equal(pin(["namespace==a", "namespace==b,namespace==c"]), "a", "a contradictory branch matches nothing");
  assert.equal(pin(["namespace==a", 'namespace=="not valid"']), "a", "an invalid namespace matches nothing");
  assert.equal(pin(['namespace=="not valid"']), undefined);
});
