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
import { buildImage, makeServerCertificate, startRegistry } from "../helpers/registry.js";

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
