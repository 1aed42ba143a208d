// Answers registry authentication challenges: Basic from the credential store, Bearer by
// asking the challenge's token server (anonymously, with basic credentials, or with an
// identity token), caching tokens per host and scope. Tokens and passwords stay in here.
import { parseChallenges, type Challenge, type CredentialStore, type Credentials } from "./auth.js";
import { tokenServerError, unauthorized, RegistryError } from "./errors.js";

/** The HTTP the authorizer needs: one request, the whole (small) answer. */
export type TokenHttp = (req: {
  method: "GET" | "POST";
  url: URL;
  headers: Record<string, string>;
  body?: Buffer;
}) => Promise<{ status: number; body: Buffer }>;

interface CachedToken {
  value: string;
  expiresAt: number;
}

/** Token server answers larger than this are refused. */
export const MAX_TOKEN_RESPONSE = 1 << 20;

export class Authorizer {
  /** The last challenge each registry host sent, so later requests authorize up front. */
  private readonly challenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();

  constructor(
    private readonly credentials: CredentialStore | undefined,
    private readonly http: TokenHttp,
    private readonly log: (msg: string) => void,
    private readonly clientId = "ck",
  ) {}

  /** Whether `host` has asked this client to authenticate (a 401 with a challenge). */
  challenged(host: string): boolean {
    return this.challenges.has(host);
  }

  /** The Authorization header to send to `host` before any challenge, from what it asked last time. */
  async upfront(host: string, scopes: string[]): Promise<string | undefined> {
    const ch = this.challenges.get(host);
    if (!ch) return undefined;
    try {
      return await this.forChallenge(host, ch, scopes, false);
    } catch {
      return undefined; // let the request itself draw the challenge and report properly
    }
  }

  /** Answers a 401's WWW-Authenticate header; throws the unauthorized error when we cannot. */
  async answer(host: string, header: string | undefined, scopes: string[]): Promise<string> {
    const all = parseChallenges(header ?? "");
    const ch = all.find((c) => c.scheme === "bearer" && c.params.realm) ?? all.find((c) => c.scheme === "basic");
    if (!ch) {
      throw unauthorized(host, header ? `unsupported authentication challenge (${all.map((c) => c.scheme).join(", ") || "unparsable"})` : "401 without a WWW-Authenticate challenge");
    }
    this.challenges.set(host, ch);
    return this.forChallenge(host, ch, scopes, true);
  }

  private async forChallenge(host: string, ch: Challenge, scopes: string[], fresh: boolean): Promise<string> {
    const creds = this.credentials?.(host);
    if (ch.scheme === "basic") {
      if (creds?.username === undefined || creds.password === undefined) {
        throw unauthorized(host, "registry demands basic authentication and no credentials are configured for it");
      }
      return "Basic " + Buffer.from(`${creds.username}:${creds.password}`).toString("base64");
    }
    // A challenge's own scope (what the failing request needed) joins ours.
    const wanted = [...new Set([...scopes, ...(fresh && ch.params.scope ? ch.params.scope.split(" ").filter((s) => s) : [])])].sort();
    const key = `${host}\n${ch.params.realm}\n${ch.params.service ?? ""}\n${wanted.join(" ")}`;
    if (fresh) this.tokens.delete(key);
    const hit = this.tokens.get(key);
    if (hit && hit.expiresAt > Date.now()) return "Bearer " + hit.value;
    let p = this.pending.get(key);
    if (!p) {
      p = this.fetchToken(host, ch, wanted, creds).then(
        (t) => {
          this.tokens.set(key, t);
          return t.value;
        },
      );
      p = p.finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return "Bearer " + (await p);
  }

  private async fetchToken(host: string, ch: Challenge, scopes: string[], creds: Credentials | undefined): Promise<CachedToken> {
    let realm: URL;
    try {
      realm = new URL(ch.params.realm);
    } catch {
      throw unauthorized(host, `bearer challenge has an invalid realm ${JSON.stringify(ch.params.realm)}`);
    }
    if (realm.protocol !== "https:" && realm.protocol !== "http:") throw unauthorized(host, `bearer realm scheme ${realm.protocol} is not http(s)`);
    const where = `${realm.origin}${realm.pathname}`;
    const who = creds?.identityToken ? "an identity token" : creds?.username !== undefined ? `user ${JSON.stringify(creds.username)}` : "anonymous access";
    this.log(`${host}: requesting a bearer token from ${where} for ${scopes.join(" ") || "no scope"} with ${who}`);

    /** The docker token spec's GET, with basic credentials when given. */
    const get = (basic?: { username: string; password: string }) => {
      const url = new URL(realm);
      if (ch.params.service) url.searchParams.set("service", ch.params.service);
      for (const s of scopes) url.searchParams.append("scope", s);
      const headers: Record<string, string> = {};
      if (basic) headers.authorization = "Basic " + Buffer.from(`${basic.username}:${basic.password}`).toString("base64");
      return this.http({ method: "GET", url, headers });
    };
    let answer: { status: number; body: Buffer };
    if (creds?.identityToken) {
      // docker token spec, OAuth2 refresh-token grant.
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: creds.identityToken, client_id: this.clientId });
      if (ch.params.service) form.set("service", ch.params.service);
      if (scopes.length) form.set("scope", scopes.join(" "));
      answer = await this.http({
        method: "POST",
        url: realm,
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: Buffer.from(form.toString()),
      });
      if (oauthPostUnsupported(answer.status, creds.username !== undefined)) {
        this.log(`${host}: token server ${where} does not take the OAuth2 POST (HTTP ${answer.status}); asking with GET and the identity token as password`);
        answer = await get({ username: creds.username ?? "", password: creds.identityToken });
      }
    } else {
      answer = await get(creds?.username !== undefined && creds.password !== undefined ? { username: creds.username, password: creds.password } : undefined);
    }
    if (answer.status === 401 || answer.status === 403) {
      throw unauthorized(host, `token server ${where} refused ${who} for ${scopes.join(" ") || "no scope"} (HTTP ${answer.status})`, answer.status);
    }
    if (answer.status < 200 || answer.status > 299) throw tokenServerError(host, answer.status, `token server ${where}`, answer.body);
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      doc = JSON.parse(answer.body.toString("utf8"));
    } catch {
      throw new RegistryError("Unknown", host, `${host}: token server ${where} answered with something that is not JSON`);
    }
    const value = typeof doc.token === "string" && doc.token ? doc.token : typeof doc.access_token === "string" ? doc.access_token : "";
    if (!value) throw new RegistryError("Unknown", host, `${host}: token server ${where} answered without a token`);
    const lifetime = typeof doc.expires_in === "number" && doc.expires_in > 0 ? doc.expires_in : 60;
    // Renew a little early so a token does not expire in flight.
    return { value, expiresAt: Date.now() + Math.max(lifetime - 10, 1) * 1000 };
  }
}

/**
 * Whether a token server's answer to the OAuth2 POST means it does not take that grant, so the
 * GET with basic credentials is tried instead, as containerd does: 404 (GCR), 401 (JFrog
 * Artifactory), 400 (ACR), and 405 when a user name goes with the token.
 */
export function oauthPostUnsupported(status: number, withUsername: boolean): boolean {
  return status === 404 || status === 401 || status === 400 || (status === 405 && withUsername);
}
