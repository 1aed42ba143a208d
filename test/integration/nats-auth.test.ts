// Who may reach the log. ckd's own nats-server listens on a loopback port any local user can
// connect to, and the log is what every view (and every task's spec) is rebuilt from: it asks
// for a password kept in the root, readable by root alone. An existing server is reached with
// the credentials in --nats's URL (as the nats CLI takes them), TLS files, an NKEY seed or JWT
// credentials; no secret is ever logged or recorded. Real nats-servers with their own
// authorization, operator and TLS configurations.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { TestDaemon, runNode, CK_REPLAY, CKD } from "../helpers/daemon.js";
import { startTestNats } from "../helpers/nats.js";
import { makeClientCertificate, makeServerCertificate } from "../helpers/registry.js";
import { readRootRecord, rootPaths } from "../../src/api/daemon.js";
import { CLIENT_URL_FILE, CONFIG_FILE, READER_URL_FILE, freePort, readState, resolveNatsServerBinary } from "../../src/eventstore/nats-server.js";
import { jetstreamManager } from "@nats-io/jetstream";
import { natsConnectOptions } from "../../src/eventstore/log.js";
import { readInWorker } from "../../src/eventstore/worker-reader.js";
import { createAccount, createOperator, createUser } from "@nats-io/nkeys";
import { encodeAccount, encodeOperator, encodeUser, fmtCreds } from "@nats-io/jwt";

const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "2".repeat(64), size: 10 };

async function createImages(d: TestDaemon, ns: string, n: number): Promise<void> {
  const c = d.client(ns);
  try {
    for (let i = 0; i < n; i++) await c.call("images", "Create", { image: { name: `img${i}`, target } });
  } finally {
    c.close();
  }
}

async function imageNames(d: TestDaemon, ns: string): Promise<string[]> {
  const c = d.client(ns);
  try {
    return ((await c.call("images", "List", {})).images as { name: string }[]).map((i) => i.name).sort();
  } finally {
    c.close();
  }
}

/**
 * How many image creates of namespace `ns` an Events.Subscribe from the start of the log
 * delivers, waiting for `n` (at most 20 s): Subscribe reads on a NATS connection of its own,
 * which logs in as ckd's does.
 */
async function subscribedImageCreates(d: TestDaemon, ns: string, n: number): Promise<number> {
  const c = d.client(ns);
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 20_000);
  let got = 0;
  try {
    for await (const e of c.stream("events", "Subscribe", { filters: [`namespace==${ns}`] }, { metadata: { "ck-from-seq": "1" }, signal: ac.signal })) {
      if (e.topic === "/images/create" && ++got === n) break;
    }
  } finally {
    clearTimeout(timer);
    ac.abort();
    c.close();
  }
  return got;
}

/** How a connection attempt ends: "ok", or the error's message. */
async function tryConnect(opts: Parameters<typeof connect>[0]): Promise<string> {
  try {
    const nc = await connect({ ...opts, reconnect: false, timeout: 3000 });
    await nc.close();
    return "ok";
  } catch (err) {
    return (err as Error).message;
  }
}

/** The subject of the first message a subscription gets, or a note that none came in 10 s. */
async function firstSubject(sub: AsyncIterable<{ subject: string }>): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      (async () => {
        for await (const m of sub) return m.subject;
        return "(the subscription ended)";
      })(),
      new Promise<string>((r) => (timer = setTimeout(() => r("(nothing in 10 s)"), 10_000))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Each ckd command line exits 1 with its message, nothing written under its (new) root. */
async function assertRefused(cases: [string[], RegExp][], roots: string[]): Promise<void> {
  for (const [args, message] of cases) {
    const bad = await mkdtemp(join(tmpdir(), "ck-test-root-"));
    roots.push(bad);
    const res = await runNode(CKD, ["--root", bad, "--address", join(bad, "ck.sock"), ...args]);
    assert.equal(res.code, 1, `${args.join(" ")}: ${res.stdout}${res.stderr}`);
    assert.match(res.stderr, message, args.join(" "));
    assert.deepEqual(readdirSync(bad), [], `${args.join(" ")} wrote into the root`);
  }
}

function assertNoSecret(text: string, secret: string, what: string): void {
  assert.ok(!text.includes(secret), `${what} shows the password`);
}

test("ckd's own nats-server lets in only clients with its password, which only root can read", async () => {
  const d = await TestDaemon.start({});
  const store = rootPaths(d.root).natsStore;
  try {
    const clientUrl = (await readFile(join(store, CLIENT_URL_FILE), "utf8")).trim();
    const m = /^nats:\/\/ck:([A-Za-z0-9_-]{43})@127\.0\.0\.1:(\d+)$/.exec(clientUrl);
    assert.ok(m, `client.url: ${clientUrl}`);
    const [, password, port] = m;
    for (const f of [CLIENT_URL_FILE, CONFIG_FILE]) {
      assert.equal((await stat(join(store, f))).mode & 0o077, 0, `${f} is readable by others`);
    }
    // What the log holds is in the projection too, and the server's store: root's only.
    assert.equal((await stat(rootPaths(d.root).meta)).mode & 0o077, 0, "the projection is open to others");
    assert.equal((await stat(store)).mode & 0o007, 0, "the NATS store is open to others");
    assert.equal((await stat(rootPaths(d.root).natsLog)).mode & 0o007, 0, "nats-server's log is open to others");
    // Nowhere else: not the server's command line, the state file, ckd.json or ckd's log.
    const state = (await readState(store))!;
    assert.equal(state.url, `nats://127.0.0.1:${port}`);
    assertNoSecret(readFileSync(`/proc/${state.pid}/cmdline`, "utf8"), password!, "nats-server's command line");
    assertNoSecret(readFileSync(join(store, "nats-server.json"), "utf8"), password!, "nats-server.json");
    assertNoSecret(readFileSync(rootPaths(d.root).record, "utf8"), password!, "ckd.json");
    // ckd says where the URL is.
    assert.equal(d.logLines().find((l) => l.msg === "event log ready")?.credentials, join(store, CLIENT_URL_FILE));

    const address = `nats://127.0.0.1:${port}`;
    assert.match(await tryConnect({ servers: address }), /authorization/i, "a client without the password got in");
    assert.match(await tryConnect({ servers: address, user: "ck", pass: "guess" }), /authorization/i, "a wrong password got in");
    assert.match(await tryConnect({ servers: address, token: password }), /authorization/i);

    // With it, any NATS client follows the log.
    const nc = await connect({ ...natsConnectOptions(clientUrl), reconnect: false });
    try {
      const sub = nc.subscribe("containerd.io.authns.>", { max: 1 });
      await nc.flush();
      const c = d.client("authns");
      await c.call("namespaces", "Create", { namespace: { name: "authns", labels: {} } });
      c.close();
      assert.equal(await firstSubject(sub), "containerd.io.authns.namespaces.create");
    } finally {
      await nc.close();
    }
    await createImages(d, "authns", 5);
    // Subscribe's own connection: the password, and ck's reply prefix (the read-only user may
    // subscribe to _INBOX.>).
    assert.equal(await subscribedImageCreates(d, "authns", 5), 5);

    // The password stays across restarts (a client given client.url keeps working); a
    // projection made open by an older ckd is closed again.
    await chmod(rootPaths(d.root).meta, 0o755);
    await d.restart();
    assert.equal((await stat(rootPaths(d.root).meta)).mode & 0o777, 0o700);
    assert.equal((await readFile(join(store, CLIENT_URL_FILE), "utf8")).trim().split("@")[0], clientUrl.split("@")[0]);
    assert.deepEqual(await imageNames(d, "authns"), ["img0", "img1", "img2", "img3", "img4"]);
    assertNoSecret(d.logText(), password!, "ckd's log");

    // ck-replay on the stopped root starts the server itself, with the same password.
    assert.equal(await d.stop(), 0);
    const r = await runNode(CK_REPLAY, ["verify", "--root", d.root]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /verify OK/);
    assert.equal((await readFile(join(store, CLIENT_URL_FILE), "utf8")).trim().split("@")[0], clientUrl.split("@")[0], "ck-replay changed the password");
    assertNoSecret(r.stdout + r.stderr, password!, "ck-replay's output");
    assertNoSecret(readFileSync(rootPaths(d.root).natsLog, "utf8"), password!, "nats-server's log");
  } finally {
    await d.cleanup();
  }
});

test("ckd against a NATS server that asks for a password: the URL's credentials are used by every reader and never shown", async () => {
  const nats = await startTestNats({ auth: true });
  const password = new URL(nats.url).password;
  assert.ok(password.length >= 32);
  const roots: string[] = [];
  try {
    const a = await TestDaemon.start({ natsUrl: nats.url });
    try {
      await createImages(a, "pw", 40);
      assert.equal(await subscribedImageCreates(a, "pw", 40), 40);
      const rec = (await readRootRecord(a.root))!;
      assert.equal(rec.natsUrl, nats.url.replace(password, "***"));
      assertNoSecret(a.logText(), password, "ckd's log");
    } finally {
      await a.cleanup();
    }

    // A fresh root catches up through the worker thread's own NATS reader (it logs in too).
    const root = await mkdtemp(join(tmpdir(), "ck-test-root-"));
    roots.push(root);
    const config = join(root, "ckd.toml");
    await writeFile(config, "catch_up_thread_events = 0\n");
    const b = await TestDaemon.start({ root, natsUrl: nats.url, extraArgs: ["--config", config] });
    try {
      assert.equal((await imageNames(b, "pw")).length, 40);
      const caughtUp = b.logLines().find((l) => l.msg === "projection caught up");
      assert.equal(caughtUp?.catchUpThread, true, JSON.stringify(caughtUp));
      assertNoSecret(b.logText(), password, "ckd's log");
    } finally {
      await b.stop();
    }
    // The pull reader itself (no nats.js to fall back on) with the URL's credentials.
    let read = 0;
    for await (const batch of readInWorker({ url: nats.url, stream: "CK_EVENTS", fromSeq: 1, engine: "pull" })) {
      read += batch.length;
      if (batch.at(-1)!.pending === 0) break;
    }
    assert.equal(read, 40, "the pull reader read the 40 creates");

    // ckd.json does not keep the password: ck-replay says so, and takes it from --nats.
    const hidden = await runNode(CK_REPLAY, ["verify", "--root", root]);
    assert.equal(hidden.code, 2, hidden.stdout + hidden.stderr);
    assert.match(hidden.stderr, /does not keep the NATS password: pass --nats URL/);
    const r = await runNode(CK_REPLAY, ["verify", "--root", root], { CK_NATS: nats.url });
    assert.equal(r.code, 0, r.stdout + r.stderr);

    // A wrong password: ckd exits at once naming the server, not the password, and writes nothing.
    const bad = await mkdtemp(join(tmpdir(), "ck-test-root-"));
    roots.push(bad);
    const wrong = nats.url.replace(password, "not-the-password");
    const w = await runNode(CKD, ["--root", bad, "--address", join(bad, "ck.sock")], { CK_NATS: wrong });
    assert.equal(w.code, 1, w.stdout + w.stderr);
    assert.match(w.stderr, /cannot connect to NATS at nats:\/\/ck:\*\*\*@127\.0\.0\.1:\d+: .*authorization/i);
    assert.ok(!w.stderr.includes("not-the-password"), w.stderr);
    assert.deepEqual(readdirSync(bad), [], "a refused login wrote into the root");
  } finally {
    for (const r of roots) await rm(r, { recursive: true, force: true });
    await nats.cleanup();
  }
});

test("ckd against a NATS server that asks for a token (nats://TOKEN@host), both readers included", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-test-token-"));
  const port = await freePort();
  const token = "tok-" + randomBytes(16).toString("hex");
  const server = spawn(resolveNatsServerBinary(), ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", join(dir, "store"), "--auth", token], { stdio: "ignore" });
  const roots: string[] = [];
  try {
    const url = `nats://${token}@127.0.0.1:${port}`;
    const deadline = Date.now() + 30_000;
    while ((await tryConnect(natsConnectOptions(url))) !== "ok") {
      assert.ok(Date.now() < deadline, "nats-server did not come up");
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(await tryConnect({ servers: `127.0.0.1:${port}` }), /authorization/i);
    // The URL in a config file others can read: ckd says so at start (and starts).
    const cfg = join(dir, "ckd.toml");
    await writeFile(cfg, `nats = "${url}"\n`);
    await chmod(cfg, 0o644);
    const a = await TestDaemon.start({ extraArgs: ["--config", cfg] });
    try {
      const warned = a.logLines().find((l) => l.level === 40 && l.file === cfg);
      assert.match(String(warned?.msg), /the config file holds a NATS password or token, and other users can read the file/);
      await createImages(a, "tok", 10);
      assert.equal(await subscribedImageCreates(a, "tok", 10), 10);
      assert.equal((await readRootRecord(a.root))!.natsUrl, `nats://***@127.0.0.1:${port}`);
      assertNoSecret(a.logText(), token, "ckd's log");
    } finally {
      await a.cleanup();
    }
    const root = await mkdtemp(join(tmpdir(), "ck-test-root-"));
    roots.push(root);
    await writeFile(join(root, "ckd.toml"), "catch_up_thread_events = 0\n");
    const b = await TestDaemon.start({ root, natsUrl: url, extraArgs: ["--config", join(root, "ckd.toml")] });
    try {
      assert.equal((await imageNames(b, "tok")).length, 10);
      assert.equal(b.logLines().find((l) => l.msg === "projection caught up")?.catchUpThread, true);
    } finally {
      await b.stop();
    }
    let read = 0;
    for await (const batch of readInWorker({ url, stream: "CK_EVENTS", fromSeq: 1, engine: "pull" })) {
      read += batch.length;
      if (batch.at(-1)!.pending === 0) break;
    }
    assert.equal(read, 10);
  } finally {
    server.kill("SIGTERM");
    await new Promise((r) => (server.exitCode !== null || server.signalCode !== null ? r(undefined) : server.once("exit", r)));
    for (const r of roots) await rm(r, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  }
});

test("ckd against a NATS server with TLS that verifies clients; bad TLS settings are refused before anything is written", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-test-tls-"));
  const roots: string[] = [];
  try {
    // nats.js checks a certificate against the server's host name (for an IP address: "localhost").
    const server = await makeServerCertificate(dir, "DNS:localhost,IP:127.0.0.1");
    const client = await makeClientCertificate(dir, "ckd");
    const tlsConfig = [
      "tls {",
      `  cert_file: "${server.cert}"`,
      `  key_file: "${server.key}"`,
      `  ca_file: "${client.ca}"`,
      "  verify: true",
      "}",
    ].join("\n");
    const clientFiles = { caFile: server.ca, certFile: client.cert, keyFile: client.key };
    const nats = await startTestNats({ config: tlsConfig, clientFiles });
    try {
      const url = nats.url.replace("nats://127.0.0.1", "tls://localhost");
      const tlsArgs = ["--nats-tls-ca", server.ca, "--nats-tls-cert", client.cert, "--nats-tls-key", client.key];
      assert.match(await tryConnect({ servers: nats.url }), /certificate|tls|self.signed/i, "a client without the CA got in");
      assert.match(await tryConnect({ servers: nats.url, tls: { caFile: server.ca } }), /certificate|tls|closed|handshake|alert|ECONNRESET/i, "a client without a certificate got in");

      const a = await TestDaemon.start({ natsUrl: url, extraArgs: tlsArgs });
      try {
        await createImages(a, "tls", 30);
        assert.equal(await subscribedImageCreates(a, "tls", 30), 30);
      } finally {
        await a.cleanup();
      }
      // A fresh root catches up in the worker thread, which reads through nats.js over TLS.
      const root = await mkdtemp(join(tmpdir(), "ck-test-root-"));
      roots.push(root);
      const config = join(root, "ckd.toml");
      await writeFile(config, `catch_up_thread_events = 0\nnats = "${url}"\nnats_tls_ca = "${server.ca}"\nnats_tls_cert = "${client.cert}"\nnats_tls_key = "${client.key}"\n`);
      const b = await TestDaemon.start({ root, extraArgs: ["--config", config] });
      try {
        assert.equal((await imageNames(b, "tls")).length, 30);
        assert.equal(b.logLines().find((l) => l.msg === "projection caught up")?.catchUpThread, true);
      } finally {
        await b.stop();
      }
      // ck-replay takes the TLS files from ckd.json.
      assert.deepEqual((await readRootRecord(root))!.natsFiles, clientFiles);
      const r = await runNode(CK_REPLAY, ["verify", "--root", root]);
      assert.equal(r.code, 0, r.stdout + r.stderr);

      // Refused, each before the root is touched.
      const cases: [string[], RegExp][] = [
        [["--nats", url], /cannot connect to NATS at tls:\/\/localhost:\d+: /],
        [["--nats", url, "--nats-tls-ca", server.ca], /cannot connect to NATS at tls:\/\/localhost:\d+: /],
        [["--nats", url, "--nats-tls-ca", server.ca, "--nats-tls-cert", client.cert], /--nats-tls-cert \(nats_tls_cert\) and --nats-tls-key \(nats_tls_key\) go together/],
        [["--nats", url, "--nats-tls-ca", join(dir, "missing.pem")], /--nats-tls-ca \(nats_tls_ca\) .*missing\.pem: cannot read it \(ENOENT\)/],
        [["--nats", url, "--nats-tls-ca", join(dir, "ext.cnf")], /--nats-tls-ca \(nats_tls_ca\) .*ext\.cnf: not a PEM file/],
        [["--nats-tls-ca", server.ca], /--nats-tls-\*, --nats-creds and --nats-nkey \(nats_tls_\*, nats_creds, nats_nkey\) are for a NATS server given with --nats/],
        [["--nats", `${url},nats://ck:x@127.0.0.1:1`], /--nats \(nats\): the NATS servers name different credentials/],
      ];
      await assertRefused(cases, roots);
    } finally {
      await nats.cleanup();
    }
  } finally {
    for (const r of roots) await rm(r, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  }
});

/** nats-server configurations that log users in by NKEY, and by JWT (operator mode), with the files a client needs. */
async function keyedServers(dir: string): Promise<Record<"nkey" | "creds", { config: string; file: string; wrong: string }>> {
  const user = createUser();
  const nkeyFile = join(dir, "user.nk");
  await writeFile(nkeyFile, new TextDecoder().decode(user.getSeed()) + "\n", { mode: 0o600 });
  const otherNkey = join(dir, "other.nk");
  await writeFile(otherNkey, new TextDecoder().decode(createUser().getSeed()) + "\n", { mode: 0o600 });

  const operator = createOperator();
  const account = createAccount();
  const system = createAccount();
  const jwtUser = createUser();
  const opJwt = await encodeOperator("ck-test-operator", operator, { system_account: system.getPublicKey() });
  // A limit left out is zero (no connections, and JetStream off): -1 is no limit.
  const limits = { subs: -1, conn: -1, leaf: -1, imports: -1, exports: -1, data: -1, payload: -1, wildcards: true, disk_storage: -1, mem_storage: -1, streams: -1, consumer: -1 };
  const accJwt = await encodeAccount("ck", account, { limits } as never, { signer: operator });
  const sysJwt = await encodeAccount("SYS", system, {}, { signer: operator });
  const userJwt = await encodeUser("ckd", jwtUser, account);
  const credsFile = join(dir, "ckd.creds");
  await writeFile(credsFile, fmtCreds(userJwt, jwtUser), { mode: 0o600 });
  // A user of an account the server does not know.
  const stranger = createUser();
  const strangerFile = join(dir, "stranger.creds");
  await writeFile(strangerFile, fmtCreds(await encodeUser("stranger", stranger, createAccount()), stranger), { mode: 0o600 });
  return {
    nkey: { config: `authorization {\n  users = [ { nkey: "${user.getPublicKey()}" } ]\n}`, file: nkeyFile, wrong: otherNkey },
    creds: {
      config: [
        `operator: "${opJwt}"`,
        `system_account: "${system.getPublicKey()}"`,
        "resolver: MEMORY",
        "resolver_preload: {",
        `  "${account.getPublicKey()}": "${accJwt}"`,
        `  "${system.getPublicKey()}": "${sysJwt}"`,
        "}",
      ].join("\n"),
      file: credsFile,
      wrong: strangerFile,
    },
  };
}

test("ckd against NATS servers that log users in by NKEY and by JWT credentials (operator mode), both readers and ck-replay", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-test-keys-"));
  const roots: string[] = [];
  try {
    const servers = await keyedServers(dir);
    for (const [kind, flag, key] of [["nkey", "--nats-nkey", "nkeyFile"], ["creds", "--nats-creds", "credsFile"]] as const) {
      const { config, file } = servers[kind];
      const nats = await startTestNats({ config, clientFiles: { [key]: file } });
      try {
        assert.match(await tryConnect({ servers: nats.url }), /authorization|authentication/i, `${kind}: a client without the key got in`);
        const a = await TestDaemon.start({ natsUrl: nats.url, extraArgs: [flag, file] });
        try {
          // The key file is 0600: nothing to say about it.
          assert.deepEqual(a.logLines().filter((l) => /other users can read/.test(String(l.msg))), []);
          await createImages(a, kind, 10);
          assert.equal(await subscribedImageCreates(a, kind, 10), 10, kind);
        } finally {
          await a.cleanup();
        }
        // A fresh root catches up in the worker thread (through nats.js: the pull reader signs nothing).
        const root = await mkdtemp(join(tmpdir(), "ck-test-root-"));
        roots.push(root);
        await writeFile(join(root, "ckd.toml"), `catch_up_thread_events = 0\nnats = "${nats.url}"\nnats_${kind} = "${file}"\n`);
        const b = await TestDaemon.start({ root, extraArgs: ["--config", join(root, "ckd.toml")] });
        try {
          assert.deepEqual(await imageNames(b, kind), Array.from({ length: 10 }, (_, i) => `img${i}`).sort());
          assert.equal(b.logLines().find((l) => l.msg === "projection caught up")?.catchUpThread, true);
        } finally {
          await b.stop();
        }
        assert.deepEqual((await readRootRecord(root))!.natsFiles, { [key]: file });
        const r = await runNode(CK_REPLAY, ["verify", "--root", root]);
        assert.equal(r.code, 0, `${kind}: ${r.stdout}${r.stderr}`);
        // The wrong key: refused at connect, nothing written.
        const bad = await mkdtemp(join(tmpdir(), "ck-test-root-"));
        roots.push(bad);
        // (Readable by others, too: said before anything else.)
        await chmod(servers[kind].wrong, 0o644);
        const w = await runNode(CKD, ["--root", bad, "--address", join(bad, "ck.sock"), "--nats", nats.url, flag, servers[kind].wrong]);
        assert.equal(w.code, 1, w.stdout + w.stderr);
        assert.match(w.stderr, kind === "nkey" ? /the NKEY seed file holds a key, and other users can read the file/ : /the NATS credentials file holds a key, and other users can read the file/);
        assert.match(w.stderr, /cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+: .*(authorization|authentication)/i);
        assert.deepEqual(readdirSync(bad), [], `${kind}: a refused login wrote into the root`);
      } finally {
        await nats.cleanup();
      }
    }

    // Files of the wrong kind, or two ways to log in: refused before the root is touched.
    const pem = join(dir, "not-creds.pem");
    await writeFile(pem, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    const cases: [string[], RegExp][] = [
      [["--nats", "nats://127.0.0.1:1", "--nats-creds", pem], /--nats-creds \(nats_creds\) .*not-creds\.pem: not a NATS credentials file/],
      [["--nats", "nats://127.0.0.1:1", "--nats-nkey", pem], /--nats-nkey \(nats_nkey\) .*not-creds\.pem: not a user NKEY seed/],
      [["--nats", "nats://127.0.0.1:1", "--nats-nkey", join(dir, "absent.nk")], /--nats-nkey \(nats_nkey\) .*absent\.nk: cannot read it \(ENOENT\)/],
      [["--nats", "nats://127.0.0.1:1", "--nats-creds", servers.creds.file, "--nats-nkey", servers.nkey.file], /--nats-creds \(nats_creds\) and --nats-nkey \(nats_nkey\): give one way to log in/],
      [["--nats", "nats://u:p@127.0.0.1:1", "--nats-nkey", servers.nkey.file], /--nats-nkey \(nats_nkey\) and credentials in --nats \(nats\): give one way to log in/],
      [["--nats-creds", servers.creds.file], /are for a NATS server given with --nats/],
    ];
    await assertRefused(cases, roots);
  } finally {
    for (const r of roots) await rm(r, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  }
});

test("ckd's own nats-server has a read-only user: it follows the events and reads the stream's messages, and can neither change the log nor disturb ckd", async () => {
  const d = await TestDaemon.start({});
  const store = rootPaths(d.root).natsStore;
  try {
    const readerUrl = (await readFile(join(store, READER_URL_FILE), "utf8")).trim();
    assert.match(readerUrl, /^nats:\/\/reader:[A-Za-z0-9_-]{43}@127\.0\.0\.1:\d+$/);
    assert.equal((await stat(join(store, READER_URL_FILE))).mode & 0o777, 0o640);
    await createImages(d, "ro", 3);

    // The test's own reader connections reply under _INBOX.test, told apart from anyone else's.
    const nc = await connect({ ...natsConnectOptions(readerUrl), reconnect: false, inboxPrefix: "_INBOX.test" });
    const violations: string[] = [];
    void (async () => {
      for await (const st of nc.status()) if (st.type === "error") violations.push(String((st as { error?: unknown }).error ?? ""));
    })();
    // A second reader that only listens where replies go: none of ckd's may come there.
    const snoop = await connect({ ...natsConnectOptions(readerUrl), reconnect: false });
    const snooped: string[] = [];
    const inboxes = snoop.subscribe("_INBOX.>", {
      callback: (_e, m) => {
        if (!m.subject.startsWith("_INBOX.test.")) snooped.push(m.subject);
      },
    });
    await snoop.flush();
    try {
      // History by sequence (as `nats stream get`), and the stream's info.
      const jsm = await jetstreamManager(nc);
      const first = await jsm.streams.getMessage("CK_EVENTS", { seq: 1 });
      assert.equal(first?.subject, "containerd.io.ro.images.create");
      const before = (await jsm.streams.info("CK_EVENTS")).state.messages;
      assert.equal(before, 3);
      // Live events on a plain subscription.
      const sub = nc.subscribe("containerd.io.ro.>", { max: 1 });
      await nc.flush();
      const c = d.client("ro");
      await c.call("images", "Create", { image: { name: "img3", target } });
      c.close();
      assert.equal(await firstSubject(sub), "containerd.io.ro.images.create");

      // Refused, each named by the server: publishing an event, removing or purging the
      // stream, creating (or taking over) a consumer, fetching from ckd's, reading ck's replies.
      const denied = [
        "containerd.io.ro.images.delete",
        "$JS.API.STREAM.DELETE.CK_EVENTS",
        "$JS.API.STREAM.PURGE.CK_EVENTS",
        "$JS.API.CONSUMER.CREATE.CK_EVENTS",
        "$JS.API.CONSUMER.MSG.NEXT.CK_EVENTS.any",
        "$JS.API.CONSUMER.DELETE.CK_EVENTS.any",
      ];
      for (const subject of denied) nc.publish(subject, new TextEncoder().encode("{}"), { reply: "_INBOX.x" });
      nc.subscribe("_CK_INBOX.>");
      await nc.flush();
      const deadline = Date.now() + 5000;
      while (violations.length < denied.length + 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const subject of denied) {
        assert.ok(violations.some((v) => /permissions violation for publish/i.test(v) && v.includes(`"${subject}"`)), `${subject} not refused: ${violations.join("; ")}`);
      }
      assert.ok(violations.some((v) => /permissions violation for subscription/i.test(v) && v.includes('"_CK_INBOX.>"')), `_CK_INBOX.> not refused: ${violations.join("; ")}`);
      const after = await connect({ ...natsConnectOptions(readerUrl), reconnect: false, inboxPrefix: "_INBOX.test" });
      try {
        assert.equal((await (await jetstreamManager(after)).streams.info("CK_EVENTS")).state.messages, before + 1, "a reader changed the log");
      } finally {
        await after.close();
      }
      // ckd went on writing, and a subscriber replayed the log (on Subscribe's own connection):
      // their acknowledgements, replies and deliveries never came to _INBOX.
      await createImages(d, "ro2", 3);
      assert.equal(await subscribedImageCreates(d, "ro2", 3), 3);
      await snoop.flush();
      assert.deepEqual(snooped, [], "ck's replies came to _INBOX");
    } finally {
      inboxes.unsubscribe();
      await snoop.close();
      await nc.close();
    }
    assert.deepEqual(await imageNames(d, "ro"), ["img0", "img1", "img2", "img3"]);
    assert.equal(d.logLines().filter((l) => l.msg === "log reader: replacing its consumer").length, 0);
  } finally {
    await d.cleanup();
  }
});

test("ck-replay refuses a NATS URL or files it cannot use, naming the flag, without repeating a password", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ck-test-replay-"));
  try {
    const cert = join(dir, "client.pem");
    await writeFile(cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    const cases: [string[], Record<string, string>, RegExp][] = [
      [["rebuild"], { CK_NATS: "nats://:s3cret@127.0.0.1:1" }, /--nats \(CK_NATS\): the NATS server: a password without a user/],
      [["rebuild", "--nats", "nats://u:s3cret@127.0.0.1:1/x"], {}, /--nats \(CK_NATS\): the NATS server is not a URL/],
      [["rebuild", "--nats", "nats://127.0.0.1:1", "--nats-tls-cert", cert], {}, /--nats-tls-cert \(nats_tls_cert\) and --nats-tls-key \(nats_tls_key\) go together/],
      [["rebuild", "--nats", "nats://127.0.0.1:1", "--nats-nkey", cert], {}, /--nats-nkey \(nats_nkey\) .*client\.pem: not a user NKEY seed/],
    ];
    for (const [args, env, message] of cases) {
      const r = await runNode(CK_REPLAY, [...args, "--out", join(dir, "out")], env);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, message, args.join(" "));
      assert.ok(!r.stderr.includes("s3cret"), r.stderr);
    }
    assert.deepEqual(readdirSync(dir), ["client.pem"], "ck-replay wrote something");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
