// Specifications of registry credentials: docker's config.json as a credential store (every
// entry shape, Docker Hub aliases, refusals that never quote a secret), and the parsing of
// WWW-Authenticate challenges.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultDockerConfigPath, loadDockerConfig, parseChallenges } from "../../src/remotes/auth.js";
import { CkError } from "../../src/errdefs/errdefs.js";
import { invalid } from "../helpers/errors.js";

const dir = mkdtempSync(join(tmpdir(), "ck-auth-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(content: string): string {
  const p = join(dir, `config-${n++}.json`);
  writeFileSync(p, content);
  return p;
}
const b64 = (s: string) => Buffer.from(s).toString("base64");

test("auths entries in every shape, keyed by host or by URL", () => {
  const store = loadDockerConfig(
    file(
      JSON.stringify({
        auths: {
          "127.0.0.1:5000": { auth: b64("alice:pa:ss") },
          "https://registry.example.com/v2/": { username: "bob", password: "hunter2" },
          "ghcr.io": { identitytoken: "refresh-me" },
          "empty.io": {},
        },
      }),
    ),
  );
  assert.deepEqual(store("127.0.0.1:5000"), { username: "alice", password: "pa:ss" }, "password keeps its colons");
  assert.deepEqual(store("registry.example.com"), { username: "bob", password: "hunter2" });
  assert.deepEqual(store("REGISTRY.example.com"), { username: "bob", password: "hunter2" }, "hosts compare case-insensitively");
  assert.deepEqual(store("ghcr.io"), { identityToken: "refresh-me" });
  assert.equal(store("empty.io"), undefined);
  assert.equal(store("other.io"), undefined);
});

test("Docker Hub is found under any of its names", () => {
  for (const key of ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io"]) {
    const store = loadDockerConfig(file(JSON.stringify({ auths: { [key]: { auth: b64("u:p") } } })));
    for (const host of ["docker.io", "registry-1.docker.io", "index.docker.io"]) {
      assert.deepEqual(store(host), { username: "u", password: "p" }, `${key} -> ${host}`);
    }
  }
});

test("a missing file is an empty store; no auths is an empty store", () => {
  assert.equal(loadDockerConfig(join(dir, "does-not-exist.json"))("docker.io"), undefined);
  assert.equal(loadDockerConfig(file("{}"))("docker.io"), undefined);
});

test("the default path honours DOCKER_CONFIG", () => {
  const saved = process.env.DOCKER_CONFIG;
  try {
    process.env.DOCKER_CONFIG = "/some/dir";
    assert.equal(defaultDockerConfigPath(), "/some/dir/config.json");
    delete process.env.DOCKER_CONFIG;
    assert.match(defaultDockerConfigPath(), /\.docker\/config\.json$/);
  } finally {
    if (saved === undefined) delete process.env.DOCKER_CONFIG;
    else process.env.DOCKER_CONFIG = saved;
  }
});

test("unparsable files are InvalidArgument naming the file, never quoting the secret", () => {
  const secret = "s3cr3t-password";
  const cases: Array<[string, RegExp]> = [
    [`{"auths": {"h": {"auth": "${b64("u:" + secret)}"} ,}`, /not valid JSON/],
    [`{"auths": {"h": {"password": "${secret}"`, /not valid JSON/],
    ["[]", /not a JSON object/],
    [`{"auths": []}`, /"auths" is not an object/],
    [`{"auths": {"h": "x"}}`, /auths\["h"\]: not an object/],
    [`{"auths": {"h": {"auth": 7}}}`, /auths\["h"\]: auth is not a string/],
    [`{"auths": {"h": {"auth": "${b64(secret)}"}}}`, /auths\["h"\]: auth is not base64 of "user:password"/],
    [`{"auths": {"h": {"auth": "!!${secret}!!"}}}`, /auths\["h"\]: auth is not base64/],
  ];
  for (const [content, re] of cases) {
    const p = file(content);
    invalid(() => loadDockerConfig(p), re);
    invalid(() => loadDockerConfig(p), new RegExp(`^docker config ${p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: `));
    try {
      loadDockerConfig(p);
    } catch (err) {
      assert.ok(err instanceof CkError);
      assert.ok(!err.message.includes(secret) && !err.message.includes(b64(secret)), err.message);
    }
  }
});

describe("credential helpers (docker-credential-<name> get)", () => {
  // Helpers as the docker CLI runs them: real executables on PATH speaking the helper protocol.
  const bin = join(dir, "bin");
  const helper = (name: string, script: string) => {
    const p = join(bin, `docker-credential-${name}`);
    writeFileSync(p, `#!/bin/sh\n${script}\n`);
    chmodSync(p, 0o755);
  };
  const savedPath = process.env.PATH;
  before(() => {
    mkdirSync(bin, { recursive: true });
    // Answers for the servers it knows, echoing the URL it was asked about in the user name.
    helper("store", 'read url; case "$url" in registry.example.com|https://index.docker.io/v1/) printf \'{"ServerURL":"%s","Username":"from-store %s","Secret":"s1"}\' "$url" "$url";; *) echo "credentials not found in native keychain"; exit 1;; esac');
    helper("token", 'read url; printf \'{"ServerURL":"%s","Username":"<token>","Secret":"refresh-tok"}\' "$url"');
    helper("broken", 'echo "keychain is locked" >&2; exit 3');
    helper("garbage", "echo not json");
    // Closes stdin before ck writes the URL to it (EPIPE on ck's side), then answers anyway.
    helper("deaf", `exec 0<&-; printf '{"Username":"deaf","Secret":"s2"}'`);
    process.env.PATH = `${bin}:${savedPath}`;
  });
  after(() => {
    process.env.PATH = savedPath;
  });

  test("credHelpers for a host, else credsStore; a helper without an answer leaves it to auths", () => {
    const store = loadDockerConfig(
      file(JSON.stringify({
        auths: { "other.io": { auth: b64("file:user") }, "registry.example.com": {} },
        credsStore: "store",
        credHelpers: { "ghcr.io": "token", "https://locked.io": "broken" },
      })),
    );
    assert.deepEqual(store("registry.example.com"), { username: "from-store registry.example.com", password: "s1" });
    assert.deepEqual(store("docker.io"), { username: "from-store https://index.docker.io/v1/", password: "s1" }, "Docker Hub is asked about by its index URL");
    assert.deepEqual(store("other.io"), { username: "file", password: "user" }, "not found in the helper: the auths entry");
    assert.equal(store("nowhere.io"), undefined);
    assert.deepEqual(store("ghcr.io"), { identityToken: "refresh-tok" }, "<token> makes the secret an identity token");
    const deaf = loadDockerConfig(file(JSON.stringify({ credHelpers: { "d.io": "deaf" } })));
    for (let i = 0; i < 20; i++) assert.deepEqual(deaf("d.io"), { username: "deaf", password: "s2" }, "a helper that never reads its stdin still answers");
    assert.throws(() => store("locked.io"), (err: unknown) => err instanceof CkError && err.errorClass === "FailedPrecondition" && /docker-credential-broken get \(for locked\.io\) failed with exit code 3: keychain is locked/.test(err.message));
  });

  test("a helper that is not installed, answers garbage or has a bad name is a clear error", () => {
    const missing = loadDockerConfig(file(JSON.stringify({ credsStore: "desktop" })));
    assert.throws(() => missing("any.io"), (err: unknown) => err instanceof CkError && err.errorClass === "FailedPrecondition" && /docker-credential-desktop \(for any\.io\) is not installed/.test(err.message));
    const garbage = loadDockerConfig(file(JSON.stringify({ credHelpers: { "g.io": "garbage" } })));
    assert.throws(() => garbage("g.io"), /did not answer JSON/);
    invalid(() => loadDockerConfig(file(JSON.stringify({ credsStore: "../../bin/sh" }))), /credsStore: "..\/..\/bin\/sh" is not a credential helper name/);
    invalid(() => loadDockerConfig(file(JSON.stringify({ credHelpers: { "h.io": 5 } }))), /credHelpers\["h.io"\]: 5 is not a credential helper name/);
    invalid(() => loadDockerConfig(file(JSON.stringify({ credHelpers: [] }))), /"credHelpers" is not an object/);
  });
});

test("WWW-Authenticate challenges parse, quoted commas and several challenges included", () => {
  assert.deepEqual(parseChallenges('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'), [
    { scheme: "bearer", params: { realm: "https://auth.example.com/token", service: "registry.example.com", scope: "repository:a/b:pull,push" } },
  ]);
  assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [{ scheme: "basic", params: { realm: "Registry Realm" } }]);
  assert.deepEqual(parseChallenges('Basic realm="a", Bearer realm="https://t/x", service=svc'), [
    { scheme: "basic", params: { realm: "a" } },
    { scheme: "bearer", params: { realm: "https://t/x", service: "svc" } },
  ]);
  assert.deepEqual(parseChallenges('bearer Realm="a\\"b"'), [{ scheme: "bearer", params: { realm: 'a"b' } }]);
  assert.deepEqual(parseChallenges(""), []);
});
