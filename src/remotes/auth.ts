// Registry credentials: docker's config.json as a credential store, and the parsing of the
// WWW-Authenticate challenges a registry answers with. Secrets never enter an error message.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { failedPrecondition, invalidArgument } from "../errdefs/errdefs.js";

export interface Credentials {
  username?: string;
  password?: string;
  identityToken?: string;
}

/** Credentials for a registry host ("docker.io", "127.0.0.1:5000"), if any. */
export type CredentialStore = (host: string) => Credentials | undefined;

/** Every spelling docker uses for Docker Hub in config.json and on the wire. */
const DOCKER_HUB_ALIASES = ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

/** The host a config.json "auths" key names: scheme and path dropped, Hub aliases folded. */
export function credentialHost(key: string): string {
  let h = key.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
  const slash = h.indexOf("/");
  if (slash >= 0) h = h.slice(0, slash);
  h = h.toLowerCase();
  return DOCKER_HUB_ALIASES.includes(h) ? "docker.io" : h;
}

/** The docker config file a client reads by default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json. */
export function defaultDockerConfigPath(): string {
  const dir = process.env.DOCKER_CONFIG || join(homedir(), ".docker");
  return join(dir, "config.json");
}

/**
 * A credential store over docker's config.json: "auths" (auth = base64("user:pass"), or
 * username/password, or identitytoken), and credential helpers as the docker CLI uses them:
 * `credHelpers[host]` names the helper for that host, else `credsStore` the one for every
 * host; a helper that has nothing for the host leaves it to "auths". A missing file is an
 * empty store; a file that is not JSON, or an entry that cannot be decoded, is InvalidArgument
 * naming the file (and the host, never the secret). Helpers run only when a registry asks
 * for credentials, once per host.
 */
export function loadDockerConfig(file?: string): CredentialStore {
  const path = file ?? defaultDockerConfigPath();
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return () => undefined;
    throw invalidArgument(`docker config ${path}: cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // The parser's message quotes the text around the fault, which may be a password.
    throw invalidArgument(`docker config ${path}: not valid JSON`);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw invalidArgument(`docker config ${path}: not a JSON object`);
  const auths = (doc as Record<string, unknown>).auths;
  const byHost = new Map<string, Credentials>();
  if (auths !== undefined) {
    if (auths === null || typeof auths !== "object" || Array.isArray(auths)) {
      throw invalidArgument(`docker config ${path}: "auths" is not an object`);
    }
    for (const [key, entry] of Object.entries(auths as Record<string, unknown>)) {
      const creds = parseAuthEntry(path, key, entry);
      const host = credentialHost(key);
      // An exact host key beats a URL-shaped one for the same host.
      if (creds && (!byHost.has(host) || credentialHost(key) === key)) byHost.set(host, creds);
    }
  }
  const helpers = parseHelpers(path, doc as Record<string, unknown>);
  const asked = new Map<string, Credentials | undefined>();
  return (host: string) => {
    const h = credentialHost(host);
    const helper = helpers.byHost.get(h) ?? helpers.store;
    if (helper !== undefined) {
      if (!asked.has(h)) asked.set(h, runCredentialHelper(helper, h));
      const c = asked.get(h);
      if (c) return { ...c };
    }
    const c = byHost.get(h);
    return c ? { ...c } : undefined;
  };
}

const HELPER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** What a helper answers when it has nothing for the host (docker-credential-helpers' ErrCredentialsNotFound). */
const NOT_FOUND = /credentials not found/i;

function parseHelpers(path: string, doc: Record<string, unknown>): { store?: string; byHost: Map<string, string> } {
  const name = (v: unknown, where: string) => {
    if (typeof v !== "string" || !HELPER_NAME.test(v)) {
      throw invalidArgument(`docker config ${path}: ${where}: ${JSON.stringify(v)} is not a credential helper name (docker-credential-<name>)`);
    }
    return v;
  };
  const byHost = new Map<string, string>();
  const ch = doc.credHelpers;
  if (ch !== undefined) {
    if (ch === null || typeof ch !== "object" || Array.isArray(ch)) throw invalidArgument(`docker config ${path}: "credHelpers" is not an object`);
    for (const [key, v] of Object.entries(ch as Record<string, unknown>)) byHost.set(credentialHost(key), name(v, `credHelpers[${JSON.stringify(key)}]`));
  }
  const cs = doc.credsStore;
  return { ...(cs !== undefined && cs !== "" ? { store: name(cs, "credsStore") } : {}), byHost };
}

/** The server URL a helper is asked about: Docker Hub's legacy index URL, else the host, as the docker CLI does. */
export function helperServerUrl(host: string): string {
  return host === "docker.io" ? "https://index.docker.io/v1/" : host;
}

/**
 * `docker-credential-<helper> get` with the server URL on stdin: its JSON answer
 * ({Username, Secret}; Username "<token>" makes Secret an identity token), or undefined when
 * it has none. A helper that cannot run or fails otherwise is FailedPrecondition; its output
 * is never quoted beyond its first line of errors.
 */
export function runCredentialHelper(helper: string, host: string): Credentials | undefined {
  const program = `docker-credential-${helper}`;
  const r = spawnSync(program, ["get"], { input: helperServerUrl(host), encoding: "utf8", timeout: 60_000, maxBuffer: 1 << 20, stdio: ["pipe", "pipe", "pipe"] });
  // A helper that answers without reading stdin makes writing the URL fail with EPIPE: its answer still counts.
  const failure = r.error as NodeJS.ErrnoException | undefined;
  if (failure?.code === "ENOENT") throw failedPrecondition(`credential helper ${program} (for ${host}) is not installed (not on PATH)`);
  if ((failure && failure.code !== "EPIPE") || r.status !== 0) {
    if (NOT_FOUND.test(String(r.stdout ?? "")) || NOT_FOUND.test(String(r.stderr ?? ""))) return undefined;
    const said = String(r.stderr ?? "").trim().split("\n")[0]?.slice(0, 200);
    const how = r.status != null && r.status !== 0 ? ` with exit code ${r.status}` : r.signal ? ` (${r.signal})` : failure ? ` (${failure.code ?? failure.message})` : "";
    throw failedPrecondition(`credential helper ${program} get (for ${host}) failed${how}${said ? `: ${said}` : ""}`);
  }
  const out = String(r.stdout);
  let doc: { Username?: unknown; Secret?: unknown };
  try {
    doc = JSON.parse(out) as typeof doc;
  } catch {
    throw failedPrecondition(`credential helper ${program} get (for ${host}) did not answer JSON`);
  }
  const username = typeof doc.Username === "string" ? doc.Username : "";
  const secret = typeof doc.Secret === "string" ? doc.Secret : "";
  if (username === "<token>") return secret ? { identityToken: secret } : undefined;
  if (!username && !secret) return undefined;
  return { ...(username ? { username } : {}), ...(secret ? { password: secret } : {}) };
}

function parseAuthEntry(path: string, key: string, entry: unknown): Credentials | undefined {
  const bad = (problem: string) => invalidArgument(`docker config ${path}: auths[${JSON.stringify(key)}]: ${problem}`);
  if (entry === null || typeof entry !== "object" || Array.isArray(entry)) throw bad("not an object");
  const e = entry as Record<string, unknown>;
  for (const f of ["auth", "username", "password", "identitytoken"]) {
    if (e[f] !== undefined && typeof e[f] !== "string") throw bad(`${f} is not a string`);
  }
  const creds: Credentials = {};
  if (typeof e.auth === "string" && e.auth !== "") {
    const decoded = Buffer.from(e.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (!/^[A-Za-z0-9+/=\s]+$/.test(e.auth) || colon < 0) throw bad('auth is not base64 of "user:password"');
    creds.username = decoded.slice(0, colon);
    creds.password = decoded.slice(colon + 1);
  }
  if (typeof e.username === "string" && e.username !== "") creds.username = e.username;
  if (typeof e.password === "string" && e.password !== "") creds.password = e.password;
  if (typeof e.identitytoken === "string" && e.identitytoken !== "") creds.identityToken = e.identitytoken;
  return creds.username !== undefined || creds.password !== undefined || creds.identityToken !== undefined ? creds : undefined;
}

/** One challenge of a WWW-Authenticate header: `Bearer realm="...",service="..."`. */
export interface Challenge {
  scheme: string; // lower case: "basic", "bearer"
  params: Record<string, string>; // keys lower case
}

/** Parses a WWW-Authenticate header (RFC 7235), which may hold several challenges. */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipSpace = () => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(header[i])) i++;
    return header.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipSpace();
    if (header[i] === ",") {
      i++;
      continue;
    }
    const word = token();
    if (word === "") {
      i++; // skip a stray character
      continue;
    }
    skipSpace();
    if (header[i] === "=" && current) {
      // auth-param: name = token / quoted-string
      i++;
      skipSpace();
      let value = "";
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === "\\" && i + 1 < n) i++;
          value += header[i++];
        }
        i++;
      } else {
        const start = i;
        while (i < n && header[i] !== ",") i++;
        value = header.slice(start, i).trim();
      }
      current.params[word.toLowerCase()] = value;
    } else {
      // a new challenge: scheme, optionally followed by token68 which we ignore
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
      if (header[i] !== "," && i < n && !/[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(header[i])) i++;
    }
  }
  return out;
}
