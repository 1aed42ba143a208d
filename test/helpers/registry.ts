// A throwaway docker-registry (Debian's distribution 2.x) on loopback, and test images built
// with umoci (one repack per layer, whiteouts for deletions) and pushed to it with skopeo.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, openSync, closeSync, copyFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../../src/eventstore/nats-server.js";

const REGISTRY = "/usr/bin/docker-registry";
const UMOCI = "/usr/bin/umoci";
const SKOPEO = "/usr/bin/skopeo";

export interface TestRegistry {
  /** "127.0.0.1:PORT", as image references spell it. */
  host: string;
  /** "http://127.0.0.1:PORT" (https with `tls`) */
  url: string;
  dataDir: string;
  pid: number;
  stop(): Promise<void>;
}

/**
 * Starts docker-registry on a free loopback port with filesystem storage in a temp dir;
 * with `tls` it serves https with that certificate and key (PEM files).
 */
export async function startRegistry(opts: { tls?: { cert: string; key: string; clientCa?: string; probe?: { cert: string; key: string } } } = {}): Promise<TestRegistry> {
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const dataDir = mkdtempSync(join(tmpdir(), "ck-registry-"));
    const port = await freePort("127.0.0.1");
    const host = `127.0.0.1:${port}`;
    const config = join(dataDir, "registry.yml");
    writeFileSync(
      config,
      [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        `    rootdirectory: ${join(dataDir, "data")}`,
        "  delete:",
        "    enabled: true",
        "http:",
        `  addr: ${host}`,
        ...(opts.tls ? ["  tls:", `    certificate: ${opts.tls.cert}`, `    key: ${opts.tls.key}`] : []),
        // docker-registry then requires and verifies a client certificate from this CA.
        ...(opts.tls?.clientCa ? ["    clientcas:", `      - ${opts.tls.clientCa}`] : []),
        "",
      ].join("\n"),
    );
    const logFd = openSync(join(dataDir, "registry.log"), "a");
    const child = spawn(REGISTRY, ["serve", config], { stdio: ["ignore", logFd, logFd] });
    closeSync(logFd);
    let exited = false;
    child.once("exit", () => (exited = true));
    const stop = () => stopChild(child, dataDir);
    try {
      const url = `${opts.tls ? "https" : "http"}://${host}`;
      await waitUp(`${url}/v2/`, () => exited, 15_000, opts.tls?.probe);
      return { host, url, dataDir, pid: child.pid ?? 0, stop };
    } catch (err) {
      lastErr = new Error(`${(err as Error).message}; registry log: ${safeRead(join(dataDir, "registry.log"))}`);
      await stop();
    }
  }
  throw lastErr;
}

async function waitUp(url: string, exited: () => boolean, timeoutMs: number, clientCert?: { cert: string; key: string }): Promise<void> {
  const mtls = clientCert ? { cert: readFileSync(clientCert.cert), key: readFileSync(clientCert.key) } : {};
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited()) throw new Error("docker-registry exited during start-up");
    const status = await new Promise<number>((resolve) => {
      const req = (url.startsWith("https:") ? https : http).get(url, { agent: false, rejectUnauthorized: false, ...mtls }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", () => resolve(0));
      req.setTimeout(1000, () => req.destroy());
    });
    if (status === 200 || status === 401) return;
    await sleep(100);
  }
  throw new Error(`docker-registry did not answer ${url} within ${timeoutMs} ms`);
}

async function stopChild(child: ChildProcess, dir: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null && child.pid) {
    const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    process.kill(child.pid, "SIGTERM");
    const timedOut = await Promise.race([gone.then(() => false), sleep(5000).then(() => true)]);
    if (timedOut && child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, "SIGKILL");
      await gone;
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, "utf8").slice(-2000);
  } catch {
    return "(none)";
  }
}

export type LayerEntry = string | Buffer | { symlink: string } | { delete: true };

export interface BuiltImage {
  /** "127.0.0.1:PORT/repo:tag" */
  reference: string;
  manifestDigest: string;
  /** The exact manifest bytes the registry serves. */
  manifestBytes: Buffer;
  manifest: any;
  configDigest: string;
  config: any;
}

/**
 * Builds an image with umoci, one layer per entry of `layers` (paths relative to the root
 * filesystem; `{delete:true}` removes a path so the layer carries a whiteout), and pushes it
 * with skopeo to `host/repo:tag`.
 */
export async function buildImage(opts: { repo: string; tag: string; host: string; layers: Array<Record<string, LayerEntry>>; certDir?: string; user?: string; config?: string[]; docker?: boolean }): Promise<BuiltImage> {
  const work = mkdtempSync(join(tmpdir(), "ck-image-"));
  try {
    const layout = join(work, "oci");
    const bundle = join(work, "bundle");
    const image = `${layout}:${opts.tag}`;
    await run(UMOCI, ["init", "--layout", layout]);
    await run(UMOCI, ["new", "--image", image]);
    await run(UMOCI, ["unpack", "--rootless", "--image", image, bundle]);
    const rootfs = join(bundle, "rootfs");
    for (const [i, layer] of opts.layers.entries()) {
      for (const [path, entry] of Object.entries(layer)) {
        const target = join(rootfs, path);
        if (typeof entry === "string" || Buffer.isBuffer(entry)) {
          mkdirSync(dirname(target), { recursive: true });
          rmSync(target, { force: true, recursive: true });
          writeFileSync(target, entry, { mode: executable(entry) ? 0o755 : 0o644 });
        } else if ("symlink" in entry) {
          mkdirSync(dirname(target), { recursive: true });
          rmSync(target, { force: true, recursive: true });
          symlinkSync(entry.symlink, target);
        } else {
          rmSync(target, { force: true, recursive: true });
        }
      }
      await run(UMOCI, ["repack", "--refresh-bundle", "--history.created_by", `test layer ${i}`, "--image", image, bundle]);
    }
    // The config's User and other settings (umoci config's flags, as --config.label k=v).
    const config = [...(opts.user !== undefined ? ["--config.user", opts.user] : []), ...(opts.config ?? [])];
    if (config.length) await run(UMOCI, ["config", "--image", image, ...config]);
    const reference = `${opts.host}/${opts.repo}:${opts.tag}`;
    // certDir: skopeo's client certificate directory (NAME.cert + NAME.key) for a registry that asks for one.
    const dest = opts.certDir ? ["--dest-cert-dir", opts.certDir] : [];
    const src = opts.certDir ? ["--cert-dir", opts.certDir] : [];
    // docker: pushed with Docker's media types (schema 2), as a Docker-built image is.
    const format = opts.docker ? ["--format", "v2s2"] : [];
    await run(SKOPEO, ["copy", "--quiet", "--dest-tls-verify=false", ...format, ...dest, `oci:${image}`, `docker://${reference}`]);
    const manifestBytes = await run(SKOPEO, ["inspect", "--raw", "--tls-verify=false", ...src, `docker://${reference}`]);
    const manifest = JSON.parse(manifestBytes.toString("utf8"));
    const configDigest: string = manifest.config.digest;
    const configBytes = readFileSync(join(layout, "blobs", "sha256", configDigest.slice("sha256:".length)));
    return {
      reference,
      manifestDigest: "sha256:" + createHash("sha256").update(manifestBytes).digest("hex"),
      manifestBytes,
      manifest,
      configDigest,
      config: JSON.parse(configBytes.toString("utf8")),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function executable(content: string | Buffer): boolean {
  const b = Buffer.isBuffer(content) ? content : Buffer.from(content.slice(0, 4));
  return b.subarray(0, 2).toString() === "#!" || b.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
}

/** Runs a tool to completion; its stdout as bytes, or an error with its stderr. */
function run(cmd: string, args: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: "buffer", maxBuffer: 64 << 20, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(" ")}: ${err.message}\n${stderr.toString("utf8")}`));
      else resolve(stdout);
    });
  });
}

/**
 * A CA and a server certificate it signed for 127.0.0.1 (openssl), as PEM files in `dir`:
 * what a private registry with its own CA looks like.
 */
export async function makeServerCertificate(dir: string, subjectAltName = "IP:127.0.0.1"): Promise<{ ca: string; cert: string; key: string }> {
  const f = (n: string) => join(dir, n);
  const openssl = (args: string[]) => run("openssl", args);
  await openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ck test CA", "-keyout", f("ca.key"), "-out", f("ca.pem")]);
  await openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", f("server.key"), "-out", f("server.csr")]);
  writeFileSync(f("ext.cnf"), `subjectAltName=${subjectAltName}\nbasicConstraints=CA:FALSE\n`);
  await openssl(["x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-days", "2", "-extfile", f("ext.cnf"), "-out", f("server.pem")]);
  return { ca: f("ca.pem"), cert: f("server.pem"), key: f("server.key") };
}

/**
 * A CA of its own (`<name>-ca.pem`) and a client certificate it signed (`<name>.pem`,
 * `<name>.key`), plus `<name>-certs/` holding the pair as skopeo's --cert-dir wants it.
 */
export async function makeClientCertificate(dir: string, name: string): Promise<{ ca: string; cert: string; key: string; certDir: string }> {
  const f = (n: string) => join(dir, n);
  const openssl = (args: string[]) => run("openssl", args);
  await openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=${name} CA`, "-keyout", f(`${name}-ca.key`), "-out", f(`${name}-ca.pem`)]);
  await openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${name}`, "-keyout", f(`${name}.key`), "-out", f(`${name}.csr`)]);
  writeFileSync(f(`${name}-ext.cnf`), "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n");
  await openssl(["x509", "-req", "-in", f(`${name}.csr`), "-CA", f(`${name}-ca.pem`), "-CAkey", f(`${name}-ca.key`), "-CAcreateserial", "-days", "2", "-extfile", f(`${name}-ext.cnf`), "-out", f(`${name}.pem`)]);
  const certDir = f(`${name}-certs`);
  mkdirSync(certDir, { recursive: true });
  copyFileSync(f(`${name}.pem`), join(certDir, "client.cert"));
  copyFileSync(f(`${name}.key`), join(certDir, "client.key"));
  return { ca: f(`${name}-ca.pem`), cert: f(`${name}.pem`), key: f(`${name}.key`), certDir };
}
