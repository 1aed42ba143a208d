// A loopback HTTP proxy in front of a test registry that records every request and lets a
// test misbehave on purpose: answer instead of the registry, cut a response after N bytes,
// or flip a byte of a body.
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface SeenRequest {
  method: string;
  url: string;
  range?: string;
  /** The User-Agent header: who asked (ck, ckd, ctr). */
  userAgent?: string;
  status?: number;
  /** Body bytes sent to the client. */
  bytes: number;
}

export type Misbehave =
  | { answer: { status: number; headers?: Record<string, string>; body?: string | Buffer } }
  | { cutAfter: number }
  /** Sends this many body bytes, then holds the connection open without sending more. */
  | { stallAfter: number }
  | { tamper: true }
  /** Waits this long, then passes the request through. */
  | { delayMs: number }
  /** Waits until this settles, then passes the request through. */
  | { until: () => Promise<unknown> };

export interface TestProxy {
  host: string;
  seen: SeenRequest[];
  /** Decides per request; undefined = pass through unchanged. */
  rule: ((req: http.IncomingMessage) => Misbehave | undefined) | undefined;
  /** Most blob GETs ever in flight at once (since the last reset). */
  maxBlobGets: number;
  /** Requests whose path matches (method + path, e.g. "GET /v2/a/blobs/"). */
  count(method: string, pathPart: string | RegExp): number;
  close(): Promise<void>;
}

export async function startProxy(upstream: string): Promise<TestProxy> {
  const [upHost, upPort] = upstream.split(":") as [string, string];
  const seen: SeenRequest[] = [];
  let blobGets = 0;
  const agent = new http.Agent({ keepAlive: true });
  const proxy: TestProxy = {
    host: "",
    seen,
    rule: undefined,
    maxBlobGets: 0,
    count(method, part) {
      return seen.filter((r) => r.method === method && (typeof part === "string" ? r.url.includes(part) : part.test(r.url))).length;
    },
    close: () =>
      new Promise((resolve) => {
        agent.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  const server = http.createServer((req, res) => {
    const rec: SeenRequest = { method: req.method ?? "", url: req.url ?? "", range: req.headers.range, userAgent: req.headers["user-agent"], bytes: 0 };
    seen.push(rec);
    if (req.method === "GET" && req.url?.includes("/blobs/")) {
      proxy.maxBlobGets = Math.max(proxy.maxBlobGets, ++blobGets);
      res.on("close", () => blobGets--);
    }
    const m = proxy.rule?.(req);
    if (m && "delayMs" in m) {
      setTimeout(() => forward(req, res, rec, undefined), m.delayMs);
      return;
    }
    if (m && "until" in m) {
      void m.until().catch(() => undefined).then(() => forward(req, res, rec, undefined));
      return;
    }
    forward(req, res, rec, m);
  });
  function forward(req: http.IncomingMessage, res: http.ServerResponse, rec: SeenRequest, m: Misbehave | undefined): void {
    if (m && "answer" in m) {
      rec.status = m.answer.status;
      res.writeHead(m.answer.status, m.answer.headers ?? {});
      res.end(m.answer.body ?? "");
      req.resume();
      return;
    }
    const headers = { ...req.headers, host: upstream };
    const up = http.request({ host: upHost, port: Number(upPort), method: req.method, path: req.url, headers, agent }, (ur) => {
      rec.status = ur.statusCode;
      const outHeaders = { ...ur.headers };
      // Location headers pointing at the registry must come back through the proxy.
      if (typeof outHeaders.location === "string") outHeaders.location = outHeaders.location.replace(`//${upstream}`, `//${proxy.host}`);
      res.writeHead(ur.statusCode ?? 502, outHeaders);
      let flipped = false;
      ur.on("data", (chunk: Buffer) => {
        if (m && "stallAfter" in m && rec.bytes + chunk.length > m.stallAfter) {
          const part = chunk.subarray(0, Math.max(0, m.stallAfter - rec.bytes));
          rec.bytes += part.length;
          res.write(part);
          ur.pause();
          ur.removeAllListeners("data");
          ur.removeAllListeners("end");
          res.on("close", () => ur.destroy());
          return;
        }
        if (m && "cutAfter" in m && rec.bytes + chunk.length > m.cutAfter) {
          const part = chunk.subarray(0, Math.max(0, m.cutAfter - rec.bytes));
          rec.bytes += part.length;
          res.write(part, () => res.destroy());
          ur.destroy();
          return;
        }
        if (m && "tamper" in m && !flipped && chunk.length > 0) {
          chunk = Buffer.from(chunk);
          chunk[0] = chunk[0]! ^ 0xff;
          flipped = true;
        }
        rec.bytes += chunk.length;
        res.write(chunk);
      });
      ur.on("end", () => res.end());
      ur.on("error", () => res.destroy());
    });
    up.on("error", () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
