// Prometheus metrics (containerd's `[metrics] address`): every call counted and timed under
// go-grpc-prometheus's names, the projection against the log, the NATS connection, the
// sequencer; a bad or taken address refused before anything is written. A real ckd and
// nats-server, scraped over loopback HTTP.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestDaemon, runNode, CKD } from "../helpers/daemon.js";
import { startTestNats } from "../helpers/nats.js";
import { freePort } from "../../src/eventstore/nats-server.js";

const target = { media_type: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:" + "3".repeat(64), size: 10 };

/** `name{b="2",a="1"}` as `name{a="1",b="2"}`: label order is the exporter's choice. */
function canonical(series: string): string {
  const open = series.indexOf("{");
  if (open < 0) return series;
  const labels = series.slice(open + 1, -1).match(/[a-z_]+="(?:[^"\\]|\\.)*"/g) ?? [];
  return `${series.slice(0, open)}{${labels.sort().join(",")}}`;
}

/** Scrapes and parses the text format: `name{labels}` (labels sorted) -> value. */
async function scrape(port: number): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
  const out = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(canonical(line.slice(0, i)), Number(line.slice(i + 1)));
  }
  return out;
}

function grpcKey(name: string, type: string, service: string, method: string, code?: string): string {
  const labels = [...(code ? [`grpc_code="${code}"`] : []), `grpc_method="${method}"`, `grpc_service="${service}"`, `grpc_type="${type}"`];
  return `${name}{${labels.join(",")}}`;
}

test("ckd's metrics: calls by service, method and code; the projection against the log; the NATS connection", async () => {
  const nats = await startTestNats();
  const port = await freePort();
  const d = await TestDaemon.start({ natsUrl: nats.url, extraArgs: ["--metrics-address", `127.0.0.1:${port}`] });
  const c = d.client("met");
  try {
    const images = "containerd.services.images.v1.Images";
    for (const name of ["a", "b", "c"]) await c.call("images", "Create", { image: { name, target } });
    await assert.rejects(c.call("images", "Create", { image: { name: "a", target } }), /already exists/);
    await assert.rejects(c.call("images", "Create", { image: { name: "", target } }), /name/);
    await c.call("images", "List", {});
    for await (const _ of c.stream("content", "List", {})) void _;
    // A subscription the client gives up (as `ctr events` ended by Ctrl-C): Canceled.
    const ac = new AbortController();
    const subscription = c.stream("events", "Subscribe", { filters: [] }, { signal: ac.signal, onMetadata: () => setTimeout(() => ac.abort(), 50) });
    for await (const _ of subscription) void _; // ends when the client cancels
    // An ingest left open.
    const w = c.lockstep("content", "Write");
    await w.send({ action: 1, ref: "metrics-ingest", offset: 0, data: Buffer.from("half") });

    let m = await scrape(port);
    const handled = (method: string, code: string, type = "unary", service = images) => m.get(grpcKey("grpc_server_handled_total", type, service, method, code));
    assert.equal(handled("Create", "OK"), 3);
    assert.equal(handled("Create", "AlreadyExists"), 1);
    assert.equal(handled("Create", "InvalidArgument"), 1);
    assert.equal(handled("List", "OK"), 1);
    assert.equal(handled("List", "OK", "server_stream", "containerd.services.content.v1.Content"), 1);
    assert.equal(m.get(grpcKey("grpc_server_started_total", "unary", images, "Create")), 5);
    assert.equal(m.get(canonical(`grpc_server_handling_seconds_count{grpc_method="Create",grpc_service="${images}",grpc_type="unary"}`)), 5);
    const events = "containerd.services.events.v1.Events";
    for (let i = 0; i < 50 && m.get(grpcKey("grpc_server_handled_total", "server_stream", events, "Subscribe", "Canceled")) !== 1; i++) {
      await new Promise((r) => setTimeout(r, 100));
      m = await scrape(port);
    }
    assert.equal(m.get(grpcKey("grpc_server_handled_total", "server_stream", events, "Subscribe", "Canceled")), 1);
    assert.equal(m.get(grpcKey("grpc_server_started_total", "server_stream", events, "Subscribe")), 1);

    assert.equal(m.get('ck_projection_applied_sequence{stream="CK_EVENTS"}'), 3);
    assert.equal(m.get('ck_log_last_sequence{stream="CK_EVENTS"}'), 3);
    assert.equal(m.get('ck_log_first_sequence{stream="CK_EVENTS"}'), 1);
    const bytes = m.get('ck_log_bytes{stream="CK_EVENTS"}') ?? 0;
    assert.ok(bytes > 3 * 100 && bytes < 3 * 4096, `ck_log_bytes ${bytes} for three image creates`);
    assert.equal(m.get("ck_log_connected"), 1);
    assert.equal(m.get("ck_sequencer_appends_total"), 3);
    assert.equal(m.get("ck_sequencer_aborted_total"), 0);
    assert.equal(m.get("ck_content_ingests_active"), 1);
    w.cancel();
    assert.ok((m.get("process_resident_memory_bytes") ?? 0) > 0, "no process metrics");

    // NATS gone: the connection shows it, the log's sequence is unknown; back: both again.
    await nats.server.stop();
    const deadline = Date.now() + 15_000;
    do {
      m = await scrape(port);
      if (m.get("ck_log_connected") === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < deadline);
    assert.equal(m.get("ck_log_connected"), 0);
    assert.equal(m.has('ck_log_last_sequence{stream="CK_EVENTS"}'), false);
    assert.equal(m.has('ck_log_first_sequence{stream="CK_EVENTS"}'), false);
    assert.equal(m.has('ck_log_bytes{stream="CK_EVENTS"}'), false);
    await nats.server.restart();
    const back = Date.now() + 15_000;
    do {
      m = await scrape(port);
      if (m.get("ck_log_connected") === 1 && m.get('ck_log_last_sequence{stream="CK_EVENTS"}') === 3) break;
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < back);
    assert.equal(m.get("ck_log_connected"), 1);
    assert.equal(m.get('ck_log_last_sequence{stream="CK_EVENTS"}'), 3);

    // Only /v1/metrics, only GET (and HEAD).
    assert.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${port}/v1/metrics`, { method: "POST" })).status, 405);

    // A taken port, or an address that is not HOST:PORT: refused at once, nothing written.
    for (const [address, message] of [
      [`127.0.0.1:${port}`, /--metrics-address \(metrics_address\) 127\.0\.0\.1:\d+: address in use/],
      ["localhost", /--metrics-address \(metrics_address\) "localhost": want HOST:PORT/],
      ["127.0.0.1:99999", /want HOST:PORT/],
      ["[nope]:1338", /"\[nope\]:1338": want HOST:PORT/],
      ["[1.2.3.4]:1338", /\[1\.2\.3\.4\] is not an IPv6 address/],
    ] as const) {
      const root = await mkdtemp(join(tmpdir(), "ck-test-root-"));
      try {
        const r = await runNode(CKD, ["--root", root, "--address", join(root, "ck.sock"), "--nats", nats.url, "--metrics-address", address]);
        assert.equal(r.code, 1, `${address}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, message, address);
        assert.deepEqual(readdirSync(root), [], `${address}: wrote into the root`);
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    }
  } finally {
    c.close();
    await d.cleanup();
    await nats.cleanup();
  }
  // Gone with ckd.
  await assert.rejects(fetch(`http://127.0.0.1:${port}/v1/metrics`));
});
