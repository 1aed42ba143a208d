// Registry credentials: docker's config.json as a credential store, and the parsing of the
// WWW-Authenticate challenges a registry answers with. Secrets never enter an error message.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { invalidArgument } from "../errdefs/errdefs.js";

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
 * A credential store over docker's config.json "auths" (auth = base64("user:pass"), or
 * username/password, or identitytoken). A missing file is an empty store; a file that is
 * not JSON, or an entry that cannot be decoded, is InvalidArgument naming the file (and the
 * host, never the secret). Credential helpers (credsStore/credHelpers) are not consulted.
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
  return (host: string) => {
    const c = byHost.get(credentialHost(host));
    return c ? { ...c } : undefined;
  };
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
