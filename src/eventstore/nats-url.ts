// NATS URLs as ck takes them (one server or a cluster's several, credentials in the URL) and
// the files a connection may need: parsing and redaction only. Kept apart from log.ts, which
// loads nats.js, so the log reader's worker thread (pull-reader.ts) starts without loading it.
import type { Authenticator } from "@nats-io/transport-node";

/**
 * The servers of a NATS URL as ck takes it: one URL, or a cluster's several separated by
 * commas (as the nats CLI's --server), each tried in turn on connect and reconnect.
 */
export function natsServers(url: string): string[] {
  const servers = url.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (servers.length === 0) throw new Error(`no NATS server in "${url}"`);
  return servers;
}

/**
 * Files a NATS connection is made with, as the nats CLI's --tlsca, --tlscert, --tlskey, --creds
 * and --nkey. Paths only: they cross to the worker thread and into ckd.json.
 */
export interface NatsFiles {
  /** CA certificate(s) (PEM) the server's certificate must chain to (else the system's CAs). */
  caFile?: string;
  /** Client certificate and key (PEM), for servers that verify clients. */
  certFile?: string;
  keyFile?: string;
  /** A user's JWT credentials (`.creds`: the user JWT and its NKEY seed), for operator-mode servers. */
  credsFile?: string;
  /** A user NKEY seed (`SU...`), for servers that list users by NKEY. */
  nkeyFile?: string;
}

/** What nats.js's connect() takes from a ck NATS URL and its files; see natsConnectOptions. */
export interface NatsConnectTarget {
  servers: string[];
  user?: string;
  pass?: string;
  token?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  authenticator?: Authenticator;
}

/** Where each file comes from, for messages: ckd's flag and its config key. */
export const FILE_FLAGS: Record<keyof NatsFiles, string> = {
  caFile: "--nats-tls-ca (nats_tls_ca)",
  certFile: "--nats-tls-cert (nats_tls_cert)",
  keyFile: "--nats-tls-key (nats_tls_key)",
  credsFile: "--nats-creds (nats_creds)",
  nkeyFile: "--nats-nkey (nats_nkey)",
};

/** The files given (from flags or a config file), or undefined when none is. */
export function natsFilesOf(files: NatsFiles): NatsFiles | undefined {
  const given = Object.fromEntries(Object.entries(files).filter(([, v]) => v !== undefined && v !== "")) as NatsFiles;
  return Object.keys(given).length ? given : undefined;
}

/** True when the files ask for what only nats.js speaks (TLS, NKEY signatures). */
export function needsNatsJs(files: NatsFiles | undefined): boolean {
  return !!files && Object.values(files).some((f) => f !== undefined && f !== "");
}

/** One server of a NATS URL, its credentials apart. */
export interface ParsedServer {
  /** `nats://host:port` or `tls://host:port`, without credentials. */
  server: string;
  tls: boolean;
  cred: { user?: string; pass?: string; token?: string };
}

/**
 * Parses one server of a NATS URL. The credentials are read from the text itself (everything
 * between the scheme and the last `@`): `user:password` (percent-decoded; `user:` is a user
 * with an empty password, as Go's client reads it) or a token. Error messages never repeat
 * the text: it may hold a password.
 */
function parseServer(text: string, where: string): ParsedServer {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  const protocol = scheme ? scheme[1]!.toLowerCase() : "nats";
  if (protocol !== "nats" && protocol !== "tls") throw new Error(`${where}: scheme ${protocol}: (nats:// or tls://)`);
  const rest = scheme ? text.slice(scheme[0].length) : text;
  const at = rest.lastIndexOf("@");
  const userinfo = at >= 0 ? rest.slice(0, at) : undefined;
  const hostPart = at >= 0 ? rest.slice(at + 1) : rest;
  let cred: ParsedServer["cred"] = {};
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(":");
    let user: string;
    let pass: string | undefined;
    try {
      user = decodeURIComponent(colon >= 0 ? userinfo.slice(0, colon) : userinfo);
      pass = colon >= 0 ? decodeURIComponent(userinfo.slice(colon + 1)) : undefined;
    } catch {
      throw new Error(`${where}: its credentials are not valid percent-encoding (write % as %25)`);
    }
    if (user === "") throw new Error(`${where}: ${pass !== undefined ? "a password without a user" : "an empty user or token before @"}`);
    cred = pass !== undefined ? { user, pass } : { token: user };
  }
  let u: URL;
  try {
    u = new URL(`${protocol}://${hostPart}`);
  } catch {
    throw new Error(`${where} is not a URL (nats://[user:password@]host:port; percent-encode % and , in a password)`);
  }
  if (!u.hostname || u.pathname.replace(/^\/$/, "") !== "" || u.search || u.hash || u.username) {
    throw new Error(`${where} is not a URL (nats://[user:password@]host:port; percent-encode % and , in a password)`);
  }
  return { server: `${protocol}://${u.host}`, tls: protocol === "tls", cred };
}

export function parseServers(url: string): ParsedServer[] {
  const list = natsServers(url);
  return list.map((s, i) => parseServer(s, list.length > 1 ? `NATS server ${i + 1} of ${list.length}` : "the NATS server"));
}


/**
 * A NATS URL's servers (credentials taken off), the credentials they name (servers that name
 * different ones are refused) and whether it asks for TLS (`tls://`).
 */
export function parseNatsUrl(url: string): { servers: string[]; cred: ParsedServer["cred"]; tls: boolean } {
  const parsed = parseServers(url);
  const credOf = JSON.stringify(parsed[0]!.cred);
  if (parsed.some((p) => JSON.stringify(p.cred) !== credOf)) {
    throw new Error("the NATS servers name different credentials: give them once, or the same on every server (percent-encode , in a password)");
  }
  return { servers: parsed.map((p) => p.server), cred: parsed[0]!.cred, tls: parsed.some((p) => p.tls) };
}

/**
 * The URL as logs, messages and ckd.json show it: each server rebuilt from what parsing took
 * from it, a password or token as `***` (`nats://ck:***@127.0.0.1:4222`). Text that does not
 * parse is not shown at all: where a password ends in it is unknown.
 */
export function redactNatsUrl(url: string): string {
  const secret = url.includes("@");
  return url
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((s) => {
      try {
        const p = parseServer(s, "");
        const [scheme, host] = p.server.split("://");
        const who = p.cred.user !== undefined ? `${encodeURIComponent(p.cred.user)}:***@` : p.cred.token !== undefined ? "***@" : "";
        return `${scheme}://${who}${host}`;
      } catch {
        return secret ? "(a server that does not parse)" : s;
      }
    })
    .join(",");
}
