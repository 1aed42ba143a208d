// ck against an https registry whose certificate a private CA signed (docker-registry with
// TLS on loopback, certificates made with openssl): refused until trusted, then pulled and
// pushed with --tlscacert, or with --skip-verify.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runCommand, runNode, CK } from "../helpers/daemon.js";
import { buildImage, makeClientCertificate, makeServerCertificate, startRegistry } from "../helpers/registry.js";

describe("an https registry with a private CA", { timeout: 300_000 }, () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let daemon: TestDaemon;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let image: Awaited<ReturnType<typeof buildImage>>;
  let certs: Awaited<ReturnType<typeof makeServerCertificate>>;
  let dir: string;
  const ck = (ns: string, args: string[]) => runNode(CK, ["--address", daemon.address, "-n", ns, ...args]);
  const ref = (repo = "tls/app", tag = "v1") => `${registry.host}/${repo}:${tag}`;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ck-tls-"));
    certs = await makeServerCertificate(dir);
    nats = await startTestNats();
    registry = await startRegistry({ tls: { cert: certs.cert, key: certs.key } });
    image = await buildImage({ host: registry.host, repo: "tls/app", tag: "v1", layers: [{ "a.txt": "a\n" }, { "b.txt": "b\n" }] });
    daemon = await TestDaemon.start({ natsUrl: nats.url });
  });
  after(async () => {
    await daemon?.cleanup();
    await registry?.stop();
    await nats?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("untrusted: the pull fails at once with the reason and the way out, and commits nothing", async () => {
    const r = await ck("tls-none", ["pull", ref()]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /TLS certificate is not trusted \([A-Z_]+\).*--tlscacert FILE.*--skip-verify/);
    assert.match(r.stderr, /failed precondition/);
    const ls = await ck("tls-none", ["content", "ls", "-q"]);
    assert.equal(ls.stdout.trim(), "");
  });

  test("--tlscacert: pulled, unpacked, the registry's digest; an unreadable or non-PEM file is InvalidArgument", async () => {
    let r = await ck("tls-ca", ["pull", "--tlscacert", certs.ca, ref()]);
    assert.equal(r.code, 0, r.stderr);
    const ls = await ck("tls-ca", ["images", "ls"]);
    assert.ok(ls.stdout.includes(image.manifestDigest), ls.stdout);
    const check = await ck("tls-ca", ["images", "check"]);
    assert.match(check.stdout, /complete \(4\/4\) .* true\n/);

    r = await ck("tls-bad", ["pull", "--tlscacert", join(dir, "missing.pem"), ref()]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--tlscacert .*missing\.pem: ENOENT/);
    assert.match(r.stderr, /invalid argument/);
    r = await ck("tls-bad", ["pull", "--tlscacert", join(dir, "ext.cnf"), ref()]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--tlscacert .*ext\.cnf: no PEM certificate in it/);
    assert.match(r.stderr, /invalid argument/);
    assert.equal((await ck("tls-bad", ["content", "ls", "-q"])).stdout.trim(), "");
  });

  test("-k/--skip-verify fetches without trusting; push with --tlscacert gives skopeo the same digest", async () => {
    let r = await ck("tls-k", ["fetch", "-k", ref()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await ck("tls-k", ["images", "ls", "-q"])).stdout.includes(ref()));

    r = await ck("tls-ca", ["push", "--tlscacert", certs.ca, ref("tls/copy", "v2"), ref()]);
    assert.equal(r.code, 0, r.stderr);
    const inspect = await runCommand("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${ref("tls/copy", "v2")}`]);
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.equal(`sha256:${createHash("sha256").update(inspect.stdout).digest("hex")}`, image.manifestDigest);
  });
});

describe("an https registry that requires a client certificate", { timeout: 300_000 }, () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let daemon: TestDaemon;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let image: Awaited<ReturnType<typeof buildImage>>;
  let server: Awaited<ReturnType<typeof makeServerCertificate>>;
  let client: Awaited<ReturnType<typeof makeClientCertificate>>;
  let stranger: Awaited<ReturnType<typeof makeClientCertificate>>;
  let dir: string;
  const ck = (ns: string, args: string[]) => runNode(CK, ["--address", daemon.address, "-n", ns, ...args]);
  const ref = (repo = "mtls/app", tag = "v1") => `${registry.host}/${repo}:${tag}`;
  const empty = async (ns: string) => assert.equal((await ck(ns, ["content", "ls", "-q"])).stdout.trim(), "", `${ns} has content`);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ck-mtls-"));
    server = await makeServerCertificate(dir);
    client = await makeClientCertificate(dir, "client");
    stranger = await makeClientCertificate(dir, "stranger");
    nats = await startTestNats();
    registry = await startRegistry({ tls: { cert: server.cert, key: server.key, clientCa: client.ca, probe: client } });
    image = await buildImage({ host: registry.host, repo: "mtls/app", tag: "v1", layers: [{ "a.txt": "a\n" }], certDir: client.certDir });
    daemon = await TestDaemon.start({ natsUrl: nats.url });
  });
  after(async () => {
    await daemon?.cleanup();
    await registry?.stop();
    await nats?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("--tlscert/--tlskey: pulled with the registry's digest, and pushed back (skopeo sees the same digest)", async () => {
    let r = await ck("mtls", ["pull", "--tlscacert", server.ca, "--tlscert", client.cert, "--tlskey", client.key, ref()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await ck("mtls", ["images", "ls"])).stdout.includes(image.manifestDigest));
    r = await ck("mtls", ["push", "--tlscacert", server.ca, "--tlscert", client.cert, "--tlskey", client.key, ref("mtls/copy", "v2"), ref()]);
    assert.equal(r.code, 0, r.stderr);
    const inspect = await runCommand("skopeo", ["inspect", "--raw", "--tls-verify=false", "--cert-dir", client.certDir, `docker://${ref("mtls/copy", "v2")}`]);
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.equal(`sha256:${createHash("sha256").update(inspect.stdout).digest("hex")}`, image.manifestDigest);
  });

  test("no client certificate, or one from a CA the registry does not trust: FailedPrecondition naming the flags, nothing written", async () => {
    for (const extra of [[], ["--tlscert", stranger.cert, "--tlskey", stranger.key]]) {
      const r = await ck("mtls-refused", ["fetch", "--tlscacert", server.ca, ...extra, ref()]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /refused the TLS handshake over the client certificate \(.+\): give one it trusts with --tlscert FILE --tlskey FILE/);
      assert.match(r.stderr, /failed precondition/);
    }
    await empty("mtls-refused");
  });

  test("bad --tlscert/--tlskey is InvalidArgument naming the flag: one without the other, unreadable, not PEM, a key of another certificate", async () => {
    const cases: [string[], RegExp][] = [
      [["--tlscert", client.cert], /--tlscert: --tlskey FILE is required with it/],
      [["--tlskey", client.key], /--tlskey: --tlscert FILE is required with it/],
      [["--tlscert", join(dir, "missing.pem"), "--tlskey", client.key], /--tlscert .*missing\.pem: ENOENT/],
      [["--tlscert", client.key, "--tlskey", client.key], /--tlscert .*client\.key: no PEM certificate in it/],
      [["--tlscert", client.cert, "--tlskey", client.cert], /--tlskey .*client\.pem: no PEM private key in it/],
      [["--tlscert", client.cert, "--tlskey", stranger.key], /--tlscert .*client\.pem --tlskey .*stranger\.key: the key does not belong to the certificate/],
    ];
    for (const [flags, want] of cases) {
      const r = await ck("mtls-bad", ["fetch", "--tlscacert", server.ca, ...flags, ref()]);
      assert.notEqual(r.code, 0, flags.join(" "));
      assert.match(r.stderr, want);
      assert.match(r.stderr, /invalid argument/);
    }
    await empty("mtls-bad");
  });
});
