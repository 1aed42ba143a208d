// ck against an https registry whose certificate a private CA signed (docker-registry with
// TLS on loopback, certificates made with openssl): refused until trusted, then pulled and
// pushed with --tlscacert, or with --skip-verify.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runCommand, runNode, CK } from "../helpers/daemon.js";
import { buildImage, makeClientCertificate, makeServerCertificate, startRegistry } from "../helpers/registry.js";
import { Registry } from "../../src/remotes/registry.js";
import { parseReference } from "../../src/remotes/reference.js";
import { isClass } from "../../src/errdefs/errdefs.js";

/**
 * One nats-server, one https docker-registry and one ckd for a describe block, with `make`
 * choosing the certificates, the registry's TLS settings and the image pushed to it. The
 * fields are filled in by the block's before() hook.
 */
function tlsWorld(
  prefix: string,
  repo: string,
  layers: Parameters<typeof buildImage>[0]["layers"],
  make: (dir: string) => Promise<{ tls: NonNullable<Parameters<typeof startRegistry>[0]>["tls"]; certDir?: string }>,
) {
  const w = {} as { dir: string; nats: Awaited<ReturnType<typeof startTestNats>>; registry: Awaited<ReturnType<typeof startRegistry>>; image: Awaited<ReturnType<typeof buildImage>>; daemon: TestDaemon };
  before(async () => {
    w.dir = mkdtempSync(join(tmpdir(), prefix));
    const m = await make(w.dir);
    w.nats = await startTestNats();
    w.registry = await startRegistry({ tls: m.tls });
    w.image = await buildImage({ host: w.registry.host, repo, tag: "v1", layers, ...(m.certDir ? { certDir: m.certDir } : {}) });
    w.daemon = await TestDaemon.start({ natsUrl: w.nats.url });
  });
  after(async () => {
    await w.daemon?.cleanup();
    await w.registry?.stop();
    await w.nats?.cleanup();
    if (w.dir) rmSync(w.dir, { recursive: true, force: true });
  });
  return {
    w,
    ck: (ns: string, args: string[]) => runNode(CK, ["--address", w.daemon.address, "-n", ns, ...args]),
    ref: (r = repo, tag = "v1") => `${w.registry.host}/${r}:${tag}`,
  };
}

describe("an https registry with a private CA", { timeout: 300_000 }, () => {
  let certs: Awaited<ReturnType<typeof makeServerCertificate>>;
  const { w, ck, ref } = tlsWorld("ck-tls-", "tls/app", [{ "a.txt": "a\n" }, { "b.txt": "b\n" }], async (dir) => {
    certs = await makeServerCertificate(dir);
    return { tls: { cert: certs.cert, key: certs.key } };
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
    assert.ok(ls.stdout.includes(w.image.manifestDigest), ls.stdout);
    const check = await ck("tls-ca", ["images", "check"]);
    assert.match(check.stdout, /complete \(4\/4\) .* true\n/);

    r = await ck("tls-bad", ["pull", "--tlscacert", join(w.dir, "missing.pem"), ref()]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--tlscacert .*missing\.pem: ENOENT/);
    assert.match(r.stderr, /invalid argument/);
    r = await ck("tls-bad", ["pull", "--tlscacert", join(w.dir, "ext.cnf"), ref()]);
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
    assert.equal(`sha256:${createHash("sha256").update(inspect.stdout).digest("hex")}`, w.image.manifestDigest);
  });

  test("NODE_EXTRA_CA_CERTS: ck run as a program starts Node without it, yet trusts it and hands it on to the programs it runs", async () => {
    const env = { NODE_EXTRA_CA_CERTS: certs.ca };
    const asProgram = (ns: string, args: string[]) => runCommand(CK, ["--address", w.daemon.address, "-n", ns, ...args], env);
    // The registry client here, not ckd's, dials the registry for every object.
    let r = await asProgram("tls-env", ["fetch", "--client-fetch", ref()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await ck("tls-env", ["images", "ls"])).stdout.includes(w.image.manifestDigest));
    // Started by node itself, Node loads the file as usual: the same answer.
    r = await runNode(CK, ["--address", w.daemon.address, "-n", "tls-env-node", "fetch", "--client-fetch", ref()], env);
    assert.equal(r.code, 0, r.stderr);
    // Without it, the same program is refused: the trust came from the file.
    r = await runCommand(CK, ["--address", w.daemon.address, "-n", "tls-env-none", "fetch", "--client-fetch", ref()], { NODE_EXTRA_CA_CERTS: "" });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /TLS certificate is not trusted/);
    // An unreadable file: the warning Node would have printed at its start, and no trust from it.
    const missing = join(w.dir, "no-such-ca.pem");
    r = await runCommand(CK, ["--address", w.daemon.address, "-n", "tls-env-missing", "fetch", "--client-fetch", ref()], { NODE_EXTRA_CA_CERTS: missing });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`Ignoring extra certs from \`${missing}\`, load failed: ENOENT`));
    assert.match(r.stderr, /TLS certificate is not trusted/);
    assert.equal((await ck("tls-env-missing", ["content", "ls", "-q"])).stdout, "");

    // An editor started by `ck content edit` sees the variable as it was given, and not the launcher's.
    const seen = join(w.dir, "editor-env");
    const editor = join(w.dir, "editor.sh");
    writeFileSync(editor, `#!/bin/sh\nprintf '%s|%s' "$NODE_EXTRA_CA_CERTS" "\${CK_DEFERRED_EXTRA_CA_CERTS-unset}" > ${seen}\necho edited >> "$1"\n`, { mode: 0o755 });
    r = await asProgram("tls-env", ["content", "edit", "--editor", editor, w.image.manifestDigest]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(seen, "utf8"), `${certs.ca}|unset`);
  });
});

describe("an https registry that requires a client certificate", { timeout: 300_000 }, () => {
  let server: Awaited<ReturnType<typeof makeServerCertificate>>;
  let client: Awaited<ReturnType<typeof makeClientCertificate>>;
  let stranger: Awaited<ReturnType<typeof makeClientCertificate>>;
  const { w, ck, ref } = tlsWorld("ck-mtls-", "mtls/app", [{ "a.txt": "a\n" }], async (dir) => {
    server = await makeServerCertificate(dir);
    client = await makeClientCertificate(dir, "client");
    stranger = await makeClientCertificate(dir, "stranger");
    return {
      tls: { cert: server.cert, key: server.key, clientCa: client.ca, probe: client },
      certDir: client.certDir,
    };
  });
  const empty = async (ns: string) => assert.equal((await ck(ns, ["content", "ls", "-q"])).stdout.trim(), "", `${ns} has content`);

  test("--tlscert/--tlskey: pulled with the registry's digest, and pushed back (skopeo sees the same digest)", async () => {
    let r = await ck("mtls", ["pull", "--tlscacert", server.ca, "--tlscert", client.cert, "--tlskey", client.key, ref()]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await ck("mtls", ["images", "ls"])).stdout.includes(w.image.manifestDigest));
    r = await ck("mtls", ["push", "--tlscacert", server.ca, "--tlscert", client.cert, "--tlskey", client.key, ref("mtls/copy", "v2"), ref()]);
    assert.equal(r.code, 0, r.stderr);
    const inspect = await runCommand("skopeo", ["inspect", "--raw", "--tls-verify=false", "--cert-dir", client.certDir, `docker://${ref("mtls/copy", "v2")}`]);
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.equal(`sha256:${createHash("sha256").update(inspect.stdout).digest("hex")}`, w.image.manifestDigest);
  });

  test("the registry client itself, with either HTTP engine: a refused client certificate is FailedPrecondition naming the flags", async () => {
    for (const engine of ["node", "undici"] as const) {
      for (const clientCert of [undefined, { cert: readFileSync(stranger.cert, "utf8"), key: readFileSync(stranger.key, "utf8") }]) {
        const r = new Registry({ engine, retries: 0, tls: { ca: [readFileSync(server.ca, "utf8")], ...(clientCert ? { clientCert } : {}) } });
        try {
          await assert.rejects(r.resolve(parseReference(ref())), (err: Error) => {
            assert.ok(isClass(err, "FailedPrecondition"), `${engine}: ${err.message}`);
            assert.match(err.message, /refused the TLS handshake over the client certificate \(.+\): give one it trusts with --tlscert FILE --tlskey FILE/);
            return true;
          });
        } finally {
          r.close();
        }
      }
      const ok = new Registry({ engine, tls: { ca: [readFileSync(server.ca, "utf8")], clientCert: { cert: readFileSync(client.cert, "utf8"), key: readFileSync(client.key, "utf8") } } });
      try {
        assert.equal((await ok.resolve(parseReference(ref()))).digest, w.image.manifestDigest, engine);
      } finally {
        ok.close();
      }
    }
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
      [["--tlscert", join(w.dir, "missing.pem"), "--tlskey", client.key], /--tlscert .*missing\.pem: ENOENT/],
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
