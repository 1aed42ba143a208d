// containerd 1.6's own Go client library (github.com/containerd/containerd, the sources of
// Debian's golang-github-containerd-containerd-dev) against ckd: test/go-client/main.go, built
// here with Debian's Go in GOPATH mode from /usr/share/gocode only, drives ckd step by step,
// one JSON line per step, and the test asserts what the client saw: pull and unpack from a
// loopback registry, images, content, leases, snapshots, containers, tasks and exec
// processes with their output and exit codes, events, diff, push, export/import, and the
// errdefs classes the client maps refusals to.
//
// The build's cache is dist/.go-cache (dist/ is the ignored build output): the first build
// on a machine takes ~30 s on two cores, later ones ~4 s. The binary goes to the test's
// temp dir.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestNats } from "../helpers/nats.js";
import { TestDaemon, runCommand, DIST } from "../helpers/daemon.js";
import { startRegistry, buildImage, type BuiltImage } from "../helpers/registry.js";
import { CK_REVISION, CK_VERSION } from "../../src/version.js";
import { rejectsClass } from "../helpers/errors.js";
import type { ApiClient } from "../../src/cli/client.js";

const GOCODE = "/usr/share/gocode";
const SOURCE = join(DIST, "..", "test", "go-client");
const GO_CACHE = join(DIST, ".go-cache");
const NS = "goclient";

function goBinary(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/bin", "/usr/lib/go/bin"])) {
    if (dir && existsSync(join(dir, "go"))) return join(dir, "go");
  }
  return undefined;
}

/** Why the Go client cannot be built and run here, or false. */
function skipReason(): string | false {
  if (!goBinary()) return "go is not installed (Debian package golang-go)";
  if (!existsSync(join(GOCODE, "src/github.com/containerd/containerd/client.go"))) return `containerd's Go sources are not in ${GOCODE} (Debian package golang-github-containerd-containerd-dev)`;
  if (process.getuid?.() !== 0) return "runc containers and overlay mounts need root";
  return false;
}

type Line = Record<string, any> & { step: string; ok: boolean; class?: string; error?: string };

/** The environment of a GOPATH-mode build from Debian's sources only (no module download). */
function goBuildEnv(cache: string): Record<string, string> {
  return { GO111MODULE: "off", GOPATH: GOCODE, GOCACHE: cache, GOPROXY: "off", GOFLAGS: "" };
}

describe("containerd's Go client against ckd", { timeout: 600_000, skip: skipReason() }, () => {
  let nats: Awaited<ReturnType<typeof startTestNats>>;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let daemon: TestDaemon;
  let api: ApiClient;
  let image: BuiltImage;
  let work = "";
  let bin = "";

  /** Runs the program with these steps in `ns`; one parsed line per step. */
  async function go(steps: string[], opts: { ns?: string; id?: string; args?: string[]; execArgs?: string[] } = {}): Promise<Line[]> {
    const argv = ["-address", daemon.address, "-namespace", opts.ns ?? NS, "-ref", image.reference];
    if (opts.id) argv.push("-id", opts.id);
    if (opts.args) argv.push("-args", JSON.stringify(opts.args));
    if (opts.execArgs) argv.push("-exec-args", JSON.stringify(opts.execArgs));
    const r = await runCommand(bin, [...argv, ...steps], {}, undefined, 180_000);
    assert.equal(r.code, 0, `go client exited ${r.code}: ${r.stderr}`);
    const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Line);
    assert.deepEqual(
      lines.map((l) => l.step),
      steps.map((s) => s.split("=")[0]),
      r.stdout,
    );
    return lines;
  }

  /** The one line of a step that must have succeeded. */
  function ok(line: Line | undefined): Line {
    assert.ok(line, "no such step");
    assert.equal(line.ok, true, `${line.step}: ${line.class}: ${line.error}`);
    return line;
  }

  before(async () => {
    work = mkdtempSync(join(tmpdir(), "ck-go-client-"));
    bin = join(work, "ck-go-client");
    // Built before anything is started: the build is the slow part, and its failure says so.
    execFileSync(goBinary()!, ["build", "-o", bin, "."], { cwd: SOURCE, env: { ...process.env, ...goBuildEnv(GO_CACHE) }, stdio: ["ignore", "inherit", "inherit"], timeout: 480_000 });
    nats = await startTestNats();
    registry = await startRegistry();
    const busybox = readFileSync("/bin/busybox");
    image = await buildImage({
      host: registry.host,
      repo: "go/busybox",
      tag: "v1",
      layers: [Object.fromEntries([["bin/busybox", busybox], ...["sh", "echo", "sleep", "cat"].map((c) => [`bin/${c}`, { symlink: "busybox" }])]), { "etc/motd": "a second layer\n" }],
    });
    daemon = await TestDaemon.start({ natsUrl: nats.url });
    api = daemon.client(NS);
  });

  after(async () => {
    try {
      await daemon?.removeTasks([NS, `${NS}-2`]);
    } finally {
      api?.close();
      await daemon?.cleanup().catch(() => undefined);
      await registry?.stop();
      await nats?.cleanup();
      if (work) rmSync(work, { recursive: true, force: true });
    }
  });

  test("Version, Server (introspection) and IsServing (health)", async () => {
    const [v] = await go(["version"]);
    ok(v);
    assert.equal(v!.version, CK_VERSION);
    assert.equal(v!.revision, CK_REVISION);
    assert.equal(v!.uuid, readFileSync(join(daemon.root, "uuid"), "utf8").trim());
    assert.equal(v!.serving, true);
  });

  test("namespaces: create, duplicate, labels set and cleared, delete; refusals by class", async () => {
    const [n] = await go(["namespaces=go-ns"]);
    ok(n);
    assert.equal(n!.duplicateClass, "AlreadyExists");
    assert.equal(n!.listed, true);
    assert.deepEqual(n!.labels, { size: "small" });
    // As containerd: Labels of a namespace that does not exist is empty, not an error.
    assert.equal(n!.missingLabelsClass, "none");
    assert.equal(n!.invalidCreateClass, "InvalidArgument");
    assert.equal(n!.listedAfterDelete, false);
    assert.equal(n!.deleteAgainClass, "NotFound");
  });

  test("Pull with unpack from the loopback registry: the image and its snapshot chain, also as ck's API sees them", async () => {
    const [p] = await go(["pull"]);
    ok(p);
    assert.equal(p!.name, image.reference);
    assert.equal(p!.digest, image.manifestDigest);
    assert.equal(p!.mediaType, "application/vnd.oci.image.manifest.v1+json");
    assert.deepEqual(p!.diffIDs, image.config.rootfs.diff_ids);
    assert.equal(p!.unpacked, true);
    const got = await api.call("images", "Get", { name: image.reference });
    assert.equal(got.image.target.digest, image.manifestDigest);
    // The chain: the top snapshot (named by its chain ID) on the first layer's.
    const top = await api.call("snapshots", "Stat", { snapshotter: "overlayfs", key: p!.chainID });
    const COMMITTED = 3; // containerd.services.snapshots.v1.Kind, as ck's client decodes it
    assert.equal(top.info.kind, COMMITTED);
    assert.equal(top.info.parent, image.config.rootfs.diff_ids[0]);
    const bottom = await api.call("snapshots", "Stat", { snapshotter: "overlayfs", key: image.config.rootfs.diff_ids[0] });
    assert.equal(bottom.info.kind, COMMITTED);
    assert.ok(!bottom.info.parent);
  });

  test("Pull refusals: a tag and a repository the registry does not have are NotFound", async () => {
    const repo = image.reference.replace(/:v1$/, "");
    const [tag, other] = await go([`pull=${repo}:missing`, `pull=${registry.host}/no/such:v1`]);
    assert.equal(tag!.ok, false);
    assert.equal(tag!.class, "NotFound", tag!.error);
    assert.equal(other!.class, "NotFound", other!.error);
  });

  test("images: list, get, label update, a second name and its duplicate, delete, unknown names", async () => {
    const [i] = await go(["images"]);
    ok(i);
    assert.ok(i!.names.includes(image.reference));
    assert.equal(i!.filtered, 1);
    assert.deepEqual(i!.labels, { origin: "go-client", stage: "test" });
    assert.deepEqual(i!.labelsAfterGet, { origin: "go-client", stage: "test" });
    assert.equal(i!.updatedAfterCreated, true);
    assert.equal(i!.copyDigest, image.manifestDigest);
    assert.equal(i!.duplicateClass, "AlreadyExists");
    assert.equal(i!.emptyTargetClass, "InvalidArgument");
    assert.equal(i!.deleteAgainClass, "NotFound");
    assert.equal(i!.unknownGetClass, "NotFound");
    assert.equal(i!.unknownUpdateClass, "NotFound");
  });

  test("content: Info, ReaderAt, Walk, WriteBlob (twice), a Writer's failed commits and its resume, labels, Delete", async () => {
    const [c] = await go(["content"]);
    ok(c);
    assert.equal(c!.manifestSizeMatches, true);
    assert.equal(c!.manifestDigestMatches, true);
    assert.equal(c!.readAtOffset, true);
    // Pull's labels: the GC references from the manifest to config and layers.
    assert.equal(c!.manifestLabels["containerd.io/gc.ref.content.config"], image.configDigest);
    for (const [n, l] of image.manifest.layers.entries()) assert.equal(c!.manifestLabels[`containerd.io/gc.ref.content.l.${n}`], l.digest);
    for (const d of [image.manifestDigest, image.configDigest, ...image.manifest.layers.map((l: any) => l.digest)]) assert.ok(c!.walked.includes(d), d);
    assert.deepEqual(c!.walkFiltered, [image.manifestDigest]);
    assert.equal(c!.writeAgain, "none");
    assert.equal(c!.readBack, true);
    assert.equal(c!.writerOffset, 12);
    assert.equal(c!.writerRefMatches, true);
    assert.equal(c!.wrongCommitClass, "FailedPrecondition");
    assert.equal(c!.activeAfterFailedCommit, true);
    assert.equal(c!.activeOffset, 12);
    assert.equal(c!.resumedOffset, 12);
    assert.equal(c!.wrongSizeClass, "FailedPrecondition");
    assert.equal(c!.statusAfterCommitClass, "NotFound");
    assert.equal(c!.blobLabels.purpose, "test");
    assert.equal(c!.infoAfterDeleteClass, "NotFound");
    assert.equal(c!.deleteAgainClass, "NotFound");
    assert.equal(c!.readerAfterDeleteClass, "NotFound");
    assert.equal(c!.badDigestClass, "InvalidArgument");
  });

  test("leases: client.WithLease, resources, a re-scoped lease context, a synchronous delete collecting the blobs", async () => {
    const [l] = await go(["leases"]);
    ok(l);
    assert.equal(l!.clientLeaseIDSet, true);
    assert.equal(l!.clientLeaseListed, true);
    assert.equal(l!.clientLeaseExpires, true);
    assert.equal(l!.clientLeaseResources.length, 1);
    assert.match(l!.clientLeaseResources[0], /^content:sha256:/);
    assert.equal(l!.leaseLabels.owner, "go-client");
    assert.equal(l!.duplicateClass, "AlreadyExists");
    // leases.WithLease on a context that has one: the client sends both headers, the latest
    // first; the work joins that lease (ck refused "b, a" as an unknown lease before).
    assert.equal(l!.nestedWriteClass, undefined, l!.nestedWriteError);
    assert.equal(l!.nestedHeldByInner, true);
    assert.equal(l!.addResourceClass, undefined, l!.addResourceError);
    assert.equal(l!.resources.length, 2);
    assert.equal(l!.resourcesAfterDeleteResource.length, 1);
    assert.equal(l!.blobAfterLeaseDeleteClass, "NotFound");
    assert.equal(l!.firstBlobAfterLeaseDeleteClass, "NotFound");
    assert.equal(l!.deleteAgainClass, "NotFound");
    assert.equal(l!.resourcesOfDeletedClass, "NotFound");
  });

  test("snapshots: Prepare, Mounts, Stat, View, Usage, Update, Walk, Commit, Remove; refusals by class", async () => {
    const [s] = await go(["snapshots"]);
    ok(s);
    assert.equal(s!.snapshotter, "overlayfs");
    assert.equal(s!.chainKind, "Committed");
    assert.equal(s!.mountType, "overlay");
    assert.equal(s!.mountsMatch, true);
    assert.equal(s!.activeKind, "Active");
    assert.equal(s!.activeParent, s!.chainID);
    assert.equal(s!.activeLabel, "test");
    assert.equal(s!.duplicateClass, "AlreadyExists");
    assert.equal(s!.unknownParentClass, "NotFound");
    assert.equal(s!.viewKind, "View");
    assert.equal(s!.viewReadOnly, true);
    assert.equal(typeof s!.activeUsageSize, "number");
    assert.equal(s!.updatedLabel, "updated");
    assert.ok(s!.walked.includes(`Committed:${s!.chainID}`));
    assert.ok(s!.walked.includes("Active:go-client-active"));
    assert.ok(s!.walked.includes("View:go-client-view"));
    assert.deepEqual(s!.walkFiltered, ["go-client-active"]);
    assert.equal(s!.committedKind, "Committed");
    assert.equal(s!.committedParent, s!.chainID);
    assert.equal(s!.activeAfterCommitClass, "NotFound");
    assert.equal(s!.removeParentClass, "FailedPrecondition");
    assert.equal(s!.removeAgainClass, "NotFound");
    assert.equal(s!.statRemovedClass, "NotFound");
    assert.equal(s!.unknownSnapshotterClass, "InvalidArgument");
  });

  test("a container from the image runs: its output, exit code, the task's events; a duplicate id is AlreadyExists", async () => {
    const args = ["sh", "-c", "echo hello from go; echo to stderr >&2; exit 3"];
    const [created, dup, info, subscribed, run, events, deleted] = await go(
      ["container-create", "container-create", "container-info", "events-start", "task-run", "events-wait=/tasks/delete", "container-delete"],
      { id: "go-run", args },
    );
    ok(created);
    assert.equal(created!.image, image.reference);
    assert.equal(created!.runtime, "io.containerd.runc.v2");
    assert.equal(created!.snapshotter, "overlayfs");
    assert.equal(dup!.ok, false);
    assert.equal(dup!.class, "AlreadyExists", dup!.error);

    ok(info);
    assert.deepEqual(info!.specArgs, args);
    assert.equal(info!.specHostname, "go-run");
    assert.equal(info!.specType, "types.containerd.io/opencontainers/runtime-spec/1/Spec");
    assert.deepEqual(info!.labelsAfterSet, { "made-by": "go-client", stage: "info" });
    assert.deepEqual(info!.labelsAfterUpdate, { "made-by": "go-client", stage: "info", updated: "yes" });
    assert.deepEqual(info!.listedByLabel, ["go-run"]);
    assert.equal(info!.imageName, image.reference);
    assert.equal(info!.missingClass, "NotFound");
    assert.equal(info!.taskBeforeStartClass, "NotFound");

    ok(subscribed);
    ok(run);
    assert.equal(run!.statusAfterCreate, "created");
    assert.equal(run!.createdPid, true);
    assert.equal(run!.stdout, "hello from go\n");
    assert.equal(run!.stderr, "to stderr\n");
    assert.equal(run!.exitCode, 3);
    assert.equal(run!.exitedAtSet, true);
    assert.equal(run!.statusAfterExit, "stopped");
    assert.equal(run!.statusExitCode, 3);
    assert.equal(run!.deleteExitCode, 3);
    assert.equal(run!.taskAfterDeleteClass, "NotFound");

    ok(events);
    assert.equal(events!.found, true);
    const seen = events!.events as Array<{ topic: string; namespace: string; type: string; event: any }>;
    assert.deepEqual(
      seen.map((e) => e.topic),
      ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"],
    );
    assert.ok(seen.every((e) => e.namespace === NS));
    assert.deepEqual(
      seen.map((e) => e.type),
      ["containerd.events.TaskCreate", "containerd.events.TaskStart", "containerd.events.TaskExit", "containerd.events.TaskDelete"],
    );
    const [create, start, exit, del] = seen.map((e) => e.event);
    assert.equal(create.container_id, "go-run");
    assert.equal(create.pid, start.pid);
    assert.deepEqual([exit.container_id, exit.id, exit.pid, exit.exit_status], ["go-run", "go-run", start.pid, 3]);
    assert.equal(del.exit_status, 3);

    ok(deleted);
    assert.equal(deleted!.snapshotAfterClass, "NotFound");
    assert.equal(deleted!.loadAfterClass, "NotFound");
    assert.equal(deleted!.deleteAgainClass, "NotFound");
  });

  test("Exec into a running task: its output and exit code, Pids, a duplicate exec id, Kill, the exit status, the exec events", async () => {
    const args = ["sh", "-c", 'echo started; trap "echo got TERM; exit 42" TERM; while true; do sleep 1; done'];
    const [, , t, events, del] = await go(["container-create", "events-start", "task-exec", "events-wait=/tasks/delete", "container-delete"], { id: "go-exec-ctr", args });
    ok(t);
    assert.equal(t!.status, "running");
    assert.equal(t!.execOutput, "from exec\n");
    assert.equal(t!.execExitCode, 5);
    assert.equal(t!.execDeleteExitCode, 5);
    assert.equal(t!.execDuplicateClass, "AlreadyExists");
    assert.equal(t!.execAfterDeleteClass, "NotFound");
    assert.equal(t!.pidsIncludeInit, true);
    assert.equal(t!.deleteRunningClass, "FailedPrecondition");
    assert.equal(t!.exitCode, 42);
    assert.equal(t!.deleteExitCode, 42);
    assert.equal(t!.output, "started\ngot TERM\n");
    assert.equal(t!.killDeletedClass, "NotFound");
    const seen = (events!.events as Array<{ topic: string; event: any }>).map((e) => [e.topic, e.event.exec_id ?? e.event.id ?? ""]);
    assert.deepEqual(seen, [
      ["/tasks/create", ""],
      ["/tasks/start", ""],
      ["/tasks/exec-added", "go-exec"],
      ["/tasks/exec-started", "go-exec"],
      ["/tasks/exit", "go-exec"],
      ["/tasks/exit", "go-exec-ctr"],
      ["/tasks/delete", ""],
    ]);
    ok(del);
  });

  test("stdin, Pause/Resume, Metrics (cgroups v1), Update, CloseIO; a log file as stdio", async () => {
    const args = ["sh", "-c", 'while read line; do echo "got $line"; done; echo eof'];
    const [, s, f, del] = await go(["container-create", "task-stdin", "task-logfile", "container-delete"], { id: "go-stdin", args });
    ok(s);
    assert.equal(s!.statusPaused, "paused");
    assert.equal(s!.statusResumed, "running");
    // containerd's shim answers Unknown (runc's words); ck FailedPrecondition (README, Limits).
    assert.equal(s!.pauseAgainClass, "FailedPrecondition");
    assert.equal(s!.metricsType, "io.containerd.cgroups.v1.Metrics");
    assert.equal(s!.metricsDecoded, "*v1.Metrics");
    assert.equal(s!.metricsPids, 1);
    assert.equal(s!.metricsMemorySet, true);
    assert.equal(s!.updateError, "none");
    assert.equal(s!.echoed, true);
    assert.equal(s!.exitCode, 0);
    assert.equal(s!.output, "got hello stdin\neof\n");
    ok(f);
    assert.equal(f!.exitCode, 0);
    assert.equal(f!.logged, "eof\n");
    ok(del);
  });

  test("a task started by one client process and attached to by another (its FIFOs)", async () => {
    const args = ["sh", "-c", 'echo started; trap "echo got TERM; exit 42" TERM; while true; do sleep 1; done'];
    const [, d] = await go(["container-create", "task-detach"], { id: "go-attach", args });
    ok(d);
    assert.equal(d!.started, true);
    const tasks = await api.call("tasks", "Get", { container_id: "go-attach" });
    assert.equal(tasks.process.status, 2); // containerd.v1.types.Status RUNNING
    const [a, del] = await go(["task-attach", "container-delete"], { id: "go-attach" });
    ok(a);
    assert.equal(a!.status, "running");
    assert.equal(a!.exitCode, 42);
    assert.equal(a!.gotTerm, true);
    ok(del);
  });

  test("Diff: Compare of a change the client wrote through its own mount, Apply onto another snapshot", async () => {
    const [d] = await go(["diff"]);
    ok(d);
    assert.equal(d!.layerMediaType, "application/vnd.oci.image.layer.v1.tar+gzip");
    assert.equal(d!.layerUncompressedLabel, true);
    assert.equal(d!.appliedMatchesLabel, true);
    assert.equal(d!.appliedFile, "written by the go client\n");
    assert.equal(d!.applyMissingClass, "NotFound", d!.applyMissingError);
  });

  test("Push to the registry; Export and Import into another namespace (a re-scoped context), unpacked there", async () => {
    const pushed = image.reference.replace(/:v1$/, ":pushed");
    const [p, e] = await go([`push=${pushed}`, `export-import=${NS}-2`]);
    ok(p);
    const head = await new Promise<{ status: number; digest: string }>((resolve, reject) => {
      const req = http.request(
        `${registry.url}/v2/go/busybox/manifests/pushed`,
        { method: "HEAD", headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } },
        (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, digest: String(res.headers["docker-content-digest"] ?? "") });
        },
      );
      req.on("error", reject);
      req.end();
    });
    assert.deepEqual(head, { status: 200, digest: image.manifestDigest });
    ok(e);
    assert.deepEqual(e!.imported, [`${image.reference}@${image.manifestDigest}`]);
    assert.equal(e!.unpacked, true);
    const other = daemon.client(`${NS}-2`);
    try {
      assert.equal((await other.call("images", "Get", { name: image.reference })).image.target.digest, image.manifestDigest);
    } finally {
      other.close();
    }
  });

  test("a pull without unpack, then Image.Unpack; introspection; a synchronous image delete", async () => {
    const ns = `${NS}-3`;
    const [f, u, i] = await go(["fetch", "unpack", "introspection"], { ns });
    ok(f);
    assert.equal(f!.unpacked, false);
    ok(u);
    assert.equal(u!.before, false);
    assert.equal(u!.after, true);
    const c = daemon.client(ns);
    const stat = () => c.call("snapshots", "Stat", { snapshotter: "overlayfs", key: u!.chainID });
    try {
      assert.equal((await stat()).info.kind, 3); // COMMITTED
      const [del, get] = await go(["image-delete", "image-get"], { ns });
      ok(del);
      assert.equal(del!.getAfterClass, "NotFound");
      assert.equal(get!.ok, false);
      assert.equal(get!.class, "NotFound");
      // The delete was synchronous: the chain, which only the image held, was collected.
      await rejectsClass(stat(), "NotFound");
    } finally {
      c.close();
    }
    ok(i);
    assert.deepEqual(i!.snapshotterPlugins, ["io.containerd.snapshotter.v1.overlayfs"]);
    assert.equal(i!.snapshotterRunsDefault, true);
    assert.equal(i!.configMediaType, "application/vnd.oci.image.config.v1+json");
    assert.equal(i!.usageWithSnapshotsAtLeastSize, true);
  });
});
