// Command ck-go-client drives a containerd v1 API server (ckd, or containerd itself) through
// containerd 1.6's own Go client library, as a program built on that library would: one
// step after another, each printing one line of JSON that says what happened and, for a
// failure, the errdefs class the client mapped it to. test/integration/go-client.test.ts
// runs it against ckd.
//
// Usage:
//
//	ck-go-client -address SOCK -namespace NS -ref REF [-id ID] [-args JSON] [-exec-args JSON] STEP[=ARG]...
//
// A step that fails prints {"step":...,"ok":false,"class":...,"error":...}; the next steps
// still run. Expected refusals inside a step are reported as fields (e.g.
// "duplicateClass":"AlreadyExists") so that one line tells the whole story.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/stats/v1"
	"github.com/containerd/containerd"
	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/diff"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/images/archive"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/platforms"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/typeurl"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/status"
)

// result is one step's line of output.
type result map[string]interface{}

// step is what one named step does; arg is the text after "=" in its name, if any.
type step func(ctx context.Context, arg string) (result, error)

type driver struct {
	client      *containerd.Client
	namespace   string
	ref         string
	id          string
	snapshotter string
	args        []string
	execArgs    []string

	// events collected by events-start, read by events-wait.
	evMu     sync.Mutex
	evSeen   []result
	evCancel context.CancelFunc
	evErr    error
}

func main() {
	address := flag.String("address", "", "the server's unix socket")
	namespace := flag.String("namespace", "default", "the namespace every call is made in")
	ref := flag.String("ref", "", "an image reference in a plain-HTTP registry")
	id := flag.String("id", "go-ctr", "the container id of the container steps")
	snapshotter := flag.String("snapshotter", "", "snapshotter name (empty: the client's default)")
	args := flag.String("args", `["sh","-c","echo hello from go; echo to stderr >&2; exit 3"]`, "the container's process arguments (JSON array)")
	execArgs := flag.String("exec-args", `["sh","-c","echo from exec; exit 5"]`, "the exec process's arguments (JSON array)")
	timeout := flag.Duration("timeout", 2*time.Minute, "the whole run's deadline")
	flag.Parse()
	if *address == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: ck-go-client -address SOCK [-namespace NS] [-ref REF] [-id ID] STEP[=ARG]...")
		os.Exit(2)
	}
	d := &driver{namespace: *namespace, ref: *ref, id: *id, snapshotter: *snapshotter}
	if err := json.Unmarshal([]byte(*args), &d.args); err != nil {
		fmt.Fprintln(os.Stderr, "-args:", err)
		os.Exit(2)
	}
	if err := json.Unmarshal([]byte(*execArgs), &d.execArgs); err != nil {
		fmt.Fprintln(os.Stderr, "-exec-args:", err)
		os.Exit(2)
	}

	// WithDefaultNamespace covers the calls; spec generation reads the namespace from the
	// context, as the client's documentation sets it up.
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), *namespace), *timeout)
	defer cancel()
	client, err := containerd.New(*address, containerd.WithDefaultNamespace(*namespace), containerd.WithTimeout(20*time.Second))
	if err != nil {
		emit(result{"step": "connect", "ok": false, "class": classOf(err), "error": err.Error()})
		os.Exit(1)
	}
	defer client.Close()
	d.client = client
	if d.snapshotter == "" {
		d.snapshotter = containerd.DefaultSnapshotter
	}

	steps := map[string]step{
		"version":          d.version,
		"namespaces":       d.namespaces,
		"pull":             d.pull,
		"fetch":            d.fetch,
		"unpack":           d.unpack,
		"images":           d.images,
		"image-get":        d.imageGet,
		"image-delete":     d.imageDelete,
		"content":          d.content,
		"leases":           d.leases,
		"snapshots":        d.snapshots,
		"container-create": d.containerCreate,
		"container-info":   d.containerInfo,
		"container-delete": d.containerDelete,
		"task-run":         d.taskRun,
		"task-exec":        d.taskExec,
		"events-start":     d.eventsStart,
		"events-wait":      d.eventsWait,
		"task-stdin":       d.taskStdin,
		"task-logfile":     d.taskLogFile,
		"task-detach":      d.taskDetach,
		"task-attach":      d.taskAttach,
		"diff":             d.diff,
		"push":             d.push,
		"export-import":    d.exportImport,
		"introspection":    d.introspection,
	}
	for _, s := range flag.Args() {
		name, arg := s, ""
		if i := strings.IndexByte(s, '='); i >= 0 {
			name, arg = s[:i], s[i+1:]
		}
		fn, ok := steps[name]
		if !ok {
			emit(result{"step": name, "ok": false, "class": "usage", "error": "unknown step"})
			continue
		}
		r, err := fn(ctx, arg)
		if r == nil {
			r = result{}
		}
		r["step"] = name
		r["ok"] = err == nil
		if err != nil {
			r["class"] = classOf(err)
			r["error"] = err.Error()
		}
		emit(r)
	}
	if d.evCancel != nil {
		d.evCancel()
	}
}

func emit(r result) {
	b, err := json.Marshal(r)
	if err != nil {
		b, _ = json.Marshal(result{"step": r["step"], "ok": false, "class": "internal", "error": err.Error()})
	}
	os.Stdout.Write(append(b, '\n'))
}

// classOf names the errdefs class the client maps an error to. Most of the client's calls
// convert gRPC statuses themselves (errdefs.FromGRPC); a few (Version, Server) return the
// status as it came, which is converted here the same way.
func classOf(err error) string {
	if err == nil {
		return ""
	}
	if c := errdefsClass(err); c != "" {
		return c
	}
	if _, ok := status.FromError(err); ok {
		if c := errdefsClass(errdefs.FromGRPC(err)); c != "" {
			return c
		}
	}
	return "Unknown"
}

func errdefsClass(err error) string {
	switch {
	case errdefs.IsNotFound(err):
		return "NotFound"
	case errdefs.IsAlreadyExists(err):
		return "AlreadyExists"
	case errdefs.IsInvalidArgument(err):
		return "InvalidArgument"
	case errdefs.IsFailedPrecondition(err):
		return "FailedPrecondition"
	case errdefs.IsUnavailable(err):
		return "Unavailable"
	case errdefs.IsNotImplemented(err):
		return "NotImplemented"
	case errdefs.IsCanceled(err):
		return "Canceled"
	case errdefs.IsDeadlineExceeded(err):
		return "DeadlineExceeded"
	case errors.Is(err, errdefs.ErrUnknown):
		return "Unknown"
	}
	return ""
}

// refused records the class of an error that was expected ("" when the call succeeded).
func refused(err error) string {
	if err == nil {
		return "none"
	}
	return classOf(err)
}

func (d *driver) resolverOpt() containerd.RemoteOpt {
	return containerd.WithResolver(docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
	}))
}

func (d *driver) refOr(arg string) string {
	if arg != "" {
		return arg
	}
	return d.ref
}

// version: Version, Server (introspection) and IsServing (health).
func (d *driver) version(ctx context.Context, _ string) (result, error) {
	v, err := d.client.Version(ctx)
	if err != nil {
		return nil, err
	}
	s, err := d.client.Server(ctx)
	if err != nil {
		return nil, err
	}
	serving, err := d.client.IsServing(ctx)
	if err != nil {
		return nil, err
	}
	return result{"version": v.Version, "revision": v.Revision, "uuid": s.UUID, "serving": serving}, nil
}

// namespaces=NAME: create with a label, a duplicate, list, labels set and cleared, delete
// twice.
func (d *driver) namespaces(ctx context.Context, name string) (result, error) {
	if name == "" {
		name = "go-ns"
	}
	store := d.client.NamespaceService()
	r := result{"name": name}
	if err := store.Create(ctx, name, map[string]string{"team": "go"}); err != nil {
		return r, err
	}
	r["duplicateClass"] = refused(store.Create(ctx, name, nil))
	list, err := store.List(ctx)
	if err != nil {
		return r, err
	}
	r["listed"] = contains(list, name)
	if err := store.SetLabel(ctx, name, "size", "small"); err != nil {
		return r, err
	}
	if err := store.SetLabel(ctx, name, "team", ""); err != nil {
		return r, err
	}
	labels, err := store.Labels(ctx, name)
	if err != nil {
		return r, err
	}
	r["labels"] = labels
	_, err = store.Labels(ctx, name+"-missing")
	r["missingLabelsClass"] = refused(err)
	r["invalidCreateClass"] = refused(store.Create(ctx, "Not A Name!", nil))
	if err := store.Delete(ctx, name); err != nil {
		return r, err
	}
	list, err = store.List(ctx)
	if err != nil {
		return r, err
	}
	r["listedAfterDelete"] = contains(list, name)
	r["deleteAgainClass"] = refused(store.Delete(ctx, name))
	return r, nil
}

// pull[=REF]: client.Pull with unpack for this machine's platform.
func (d *driver) pull(ctx context.Context, arg string) (result, error) {
	ref := d.refOr(arg)
	img, err := d.client.Pull(ctx, ref, containerd.WithPullUnpack, containerd.WithPlatform(platforms.DefaultString()),
		containerd.WithPullSnapshotter(d.snapshotter), d.resolverOpt())
	if err != nil {
		return result{"ref": ref}, err
	}
	return d.describeImage(ctx, img)
}

// fetch[=REF]: client.Pull without unpack (the image is registered, its layers are not
// unpacked).
func (d *driver) fetch(ctx context.Context, arg string) (result, error) {
	ref := d.refOr(arg)
	img, err := d.client.Pull(ctx, ref, containerd.WithPlatform(platforms.DefaultString()), d.resolverOpt())
	if err != nil {
		return result{"ref": ref}, err
	}
	return d.describeImage(ctx, img)
}

func (d *driver) describeImage(ctx context.Context, img containerd.Image) (result, error) {
	r := result{"name": img.Name(), "digest": img.Target().Digest.String(), "mediaType": img.Target().MediaType}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return r, err
	}
	r["diffIDs"] = diffIDs
	r["chainID"] = identity.ChainID(diffIDs).String()
	size, err := img.Size(ctx)
	if err != nil {
		return r, err
	}
	r["size"] = size
	unpacked, err := img.IsUnpacked(ctx, d.snapshotter)
	if err != nil {
		return r, err
	}
	r["unpacked"] = unpacked
	return r, nil
}

// unpack[=REF]: Image.Unpack into the snapshotter, IsUnpacked before and after.
func (d *driver) unpack(ctx context.Context, arg string) (result, error) {
	img, err := d.client.GetImage(ctx, d.refOr(arg))
	if err != nil {
		return nil, err
	}
	before, err := img.IsUnpacked(ctx, d.snapshotter)
	if err != nil {
		return nil, err
	}
	r := result{"before": before}
	if err := img.Unpack(ctx, d.snapshotter); err != nil {
		return r, err
	}
	after, err := img.IsUnpacked(ctx, d.snapshotter)
	if err != nil {
		return r, err
	}
	r["after"] = after
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return r, err
	}
	r["chainID"] = identity.ChainID(diffIDs).String()
	return r, nil
}

// images: list, get, labels updated through the image store, a second name for the same
// target (and its duplicate), delete, get of an unknown name.
func (d *driver) images(ctx context.Context, _ string) (result, error) {
	r := result{}
	list, err := d.client.ListImages(ctx)
	if err != nil {
		return r, err
	}
	names := []string{}
	for _, i := range list {
		names = append(names, i.Name())
	}
	r["names"] = names
	filtered, err := d.client.ListImages(ctx, fmt.Sprintf("name==%q", d.ref))
	if err != nil {
		return r, err
	}
	r["filtered"] = len(filtered)
	img, err := d.client.GetImage(ctx, d.ref)
	if err != nil {
		return r, err
	}
	store := d.client.ImageService()
	meta := img.Metadata()
	meta.Labels = map[string]string{"origin": "go-client", "stage": "test"}
	updated, err := store.Update(ctx, meta, "labels.origin", "labels.stage")
	if err != nil {
		return r, err
	}
	r["labels"] = updated.Labels
	again, err := d.client.GetImage(ctx, d.ref)
	if err != nil {
		return r, err
	}
	r["labelsAfterGet"] = again.Labels()
	r["updatedAfterCreated"] = !updated.UpdatedAt.Before(updated.CreatedAt)

	copyName := d.ref + "-copy"
	created, err := store.Create(ctx, images.Image{Name: copyName, Target: img.Target()})
	if err != nil {
		return r, err
	}
	r["copyDigest"] = created.Target.Digest.String()
	_, err = store.Create(ctx, images.Image{Name: copyName, Target: img.Target()})
	r["duplicateClass"] = refused(err)
	_, err = store.Create(ctx, images.Image{Name: d.ref + "-bad", Target: ocispec.Descriptor{}})
	r["emptyTargetClass"] = refused(err)
	if err := store.Delete(ctx, copyName); err != nil {
		return r, err
	}
	r["deleteAgainClass"] = refused(store.Delete(ctx, copyName))
	_, err = d.client.GetImage(ctx, "example.invalid/no/such:image")
	r["unknownGetClass"] = refused(err)
	_, err = store.Update(ctx, images.Image{Name: "example.invalid/no/such:image", Labels: map[string]string{"a": "b"}}, "labels.a")
	r["unknownUpdateClass"] = refused(err)
	return r, nil
}

// image-get[=REF]: what GetImage answers (a missing image's class).
func (d *driver) imageGet(ctx context.Context, arg string) (result, error) {
	img, err := d.client.GetImage(ctx, d.refOr(arg))
	if err != nil {
		return nil, err
	}
	return result{"name": img.Name(), "digest": img.Target().Digest.String()}, nil
}

// image-delete[=REF]: a synchronous delete (garbage collected before it answers).
func (d *driver) imageDelete(ctx context.Context, arg string) (result, error) {
	ref := d.refOr(arg)
	if err := d.client.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		return nil, err
	}
	_, err := d.client.GetImage(ctx, ref)
	return result{"getAfterClass": refused(err)}, nil
}

// content: Info and ReaderAt of the image's manifest, Walk, WriteBlob of a new blob (twice),
// a Writer committed with a wrong digest, labels, Delete.
func (d *driver) content(ctx context.Context, _ string) (result, error) {
	r := result{}
	cs := d.client.ContentStore()
	img, err := d.client.GetImage(ctx, d.ref)
	if err != nil {
		return r, err
	}
	target := img.Target()
	info, err := cs.Info(ctx, target.Digest)
	if err != nil {
		return r, err
	}
	r["manifestSize"] = info.Size
	r["manifestSizeMatches"] = info.Size == target.Size
	r["manifestLabels"] = info.Labels
	ra, err := cs.ReaderAt(ctx, target)
	if err != nil {
		return r, err
	}
	buf := make([]byte, ra.Size())
	n, err := ra.ReadAt(buf, 0)
	ra.Close()
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == info.Size) {
		return r, err
	}
	r["manifestDigestMatches"] = digest.FromBytes(buf[:n]) == target.Digest
	// A read from the middle, as a client that resumes would.
	ra, err = cs.ReaderAt(ctx, target)
	if err != nil {
		return r, err
	}
	part := make([]byte, 10)
	if _, err := ra.ReadAt(part, 5); err != nil && !errors.Is(err, io.EOF) {
		ra.Close()
		return r, err
	}
	ra.Close()
	r["readAtOffset"] = bytes.Equal(part, buf[5:15])

	var walked []string
	if err := cs.Walk(ctx, func(i content.Info) error {
		walked = append(walked, i.Digest.String())
		return nil
	}); err != nil {
		return r, err
	}
	sort.Strings(walked)
	r["walked"] = walked
	var filtered []string
	if err := cs.Walk(ctx, func(i content.Info) error {
		filtered = append(filtered, i.Digest.String())
		return nil
	}, fmt.Sprintf("digest==%s", target.Digest)); err != nil {
		return r, err
	}
	r["walkFiltered"] = filtered

	blob := []byte(fmt.Sprintf("a blob the go client wrote at %d\n", time.Now().UnixNano()))
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	// Held by a gc.root label: an unreferenced blob could be collected at any time.
	root := content.WithLabels(map[string]string{"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339)})
	if err := content.WriteBlob(ctx, cs, "go-client-blob", bytes.NewReader(blob), desc, root); err != nil {
		return r, err
	}
	r["blobDigest"] = desc.Digest.String()
	// Again: the store answers AlreadyExists, which WriteBlob takes as done.
	r["writeAgain"] = refused(content.WriteBlob(ctx, cs, "go-client-blob", bytes.NewReader(blob), desc))
	got, err := content.ReadBlob(ctx, cs, desc)
	if err != nil {
		return r, err
	}
	r["readBack"] = bytes.Equal(got, blob)

	// A writer by hand: Status, Write, a Commit with the wrong digest, then the right one.
	manualRef := fmt.Sprintf("go-client-manual-%d", time.Now().UnixNano())
	w, err := content.OpenWriter(ctx, cs, content.WithRef(manualRef))
	if err != nil {
		return r, err
	}
	if _, err := w.Write([]byte("manual bytes")); err != nil {
		w.Close()
		return r, err
	}
	st, err := w.Status()
	if err != nil {
		w.Close()
		return r, err
	}
	r["writerOffset"] = st.Offset
	r["writerRefMatches"] = st.Ref == manualRef
	r["writerDigest"] = w.Digest().String()
	r["wrongCommitClass"] = refused(w.Commit(ctx, 12, digest.FromString("other bytes")))
	w.Close()
	statuses, err := cs.ListStatuses(ctx)
	if err != nil {
		return r, err
	}
	r["activeAfterFailedCommit"] = false
	for _, s := range statuses {
		if s.Ref == manualRef {
			r["activeAfterFailedCommit"] = true
			r["activeOffset"] = s.Offset
		}
	}
	// The ingest outlives a failed commit: a new writer on its ref resumes at its offset.
	w, err = content.OpenWriter(ctx, cs, content.WithRef(manualRef))
	if err != nil {
		return r, err
	}
	st, err = w.Status()
	if err != nil {
		w.Close()
		return r, err
	}
	r["resumedOffset"] = st.Offset
	r["wrongSizeClass"] = refused(w.Commit(ctx, 99, ""))
	w.Close()
	w, err = content.OpenWriter(ctx, cs, content.WithRef(manualRef))
	if err != nil {
		return r, err
	}
	err = w.Commit(ctx, 12, digest.FromString("manual bytes"), root)
	w.Close()
	if err != nil {
		return r, err
	}
	_, err = cs.Status(ctx, manualRef)
	r["statusAfterCommitClass"] = refused(err)

	updated, err := cs.Update(ctx, content.Info{Digest: desc.Digest, Labels: map[string]string{"purpose": "test"}}, "labels.purpose")
	if err != nil {
		return r, err
	}
	r["blobLabels"] = updated.Labels
	if err := cs.Delete(ctx, desc.Digest); err != nil {
		return r, err
	}
	if err := cs.Delete(ctx, digest.FromString("manual bytes")); err != nil {
		return r, err
	}
	_, err = cs.Info(ctx, desc.Digest)
	r["infoAfterDeleteClass"] = refused(err)
	r["deleteAgainClass"] = refused(cs.Delete(ctx, desc.Digest))
	_, err = cs.ReaderAt(ctx, desc)
	r["readerAfterDeleteClass"] = refused(err)
	_, err = cs.Info(ctx, "sha256:not-a-digest")
	r["badDigestClass"] = refused(err)
	return r, nil
}

// leases: a blob written under client.WithLease, the lease's resources, a lease deleted
// synchronously taking its unreferenced blob with it.
func (d *driver) leases(ctx context.Context, _ string) (result, error) {
	r := result{}
	lm := d.client.LeasesService()
	cs := d.client.ContentStore()

	lctx, done, err := d.client.WithLease(ctx)
	if err != nil {
		return r, err
	}
	id, _ := leases.FromContext(lctx)
	r["clientLeaseIDSet"] = id != ""
	blob := []byte(fmt.Sprintf("leased blob %d", time.Now().UnixNano()))
	desc := ocispec.Descriptor{Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	if err := content.WriteBlob(lctx, cs, "go-client-leased", bytes.NewReader(blob), desc); err != nil {
		done(ctx)
		return r, err
	}
	listed, err := lm.List(ctx, fmt.Sprintf("id==%s", id))
	if err != nil {
		done(ctx)
		return r, err
	}
	r["clientLeaseListed"] = len(listed) == 1
	if len(listed) == 1 {
		_, hasExpire := listed[0].Labels["containerd.io/gc.expire"]
		r["clientLeaseExpires"] = hasExpire
	}
	res, err := lm.ListResources(ctx, leases.Lease{ID: id})
	if err != nil {
		done(ctx)
		return r, err
	}
	r["clientLeaseResources"] = resources(res)
	if err := done(ctx); err != nil {
		return r, err
	}

	l, err := lm.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour), leases.WithLabels(map[string]string{"owner": "go-client"}))
	if err != nil {
		return r, err
	}
	r["leaseLabels"] = l.Labels
	_, err = lm.Create(ctx, leases.WithID(l.ID))
	r["duplicateClass"] = refused(err)
	bctx := leases.WithLease(ctx, l.ID)
	blob2 := []byte(fmt.Sprintf("second leased blob %d", time.Now().UnixNano()))
	desc2 := ocispec.Descriptor{Digest: digest.FromBytes(blob2), Size: int64(len(blob2))}
	if err := content.WriteBlob(bctx, cs, "go-client-leased-2", bytes.NewReader(blob2), desc2); err != nil {
		return r, err
	}
	// A context re-scoped to another lease: the client then sends both lease headers, the
	// latest first, and the server holds the work under that one.
	inner, err := lm.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return r, err
	}
	nctx := leases.WithLease(bctx, inner.ID)
	blob3 := []byte(fmt.Sprintf("nested lease blob %d", time.Now().UnixNano()))
	desc3 := ocispec.Descriptor{Digest: digest.FromBytes(blob3), Size: int64(len(blob3))}
	if err := content.WriteBlob(nctx, cs, "go-client-leased-3", bytes.NewReader(blob3), desc3); err != nil {
		r["nestedWriteClass"] = classOf(err)
		r["nestedWriteError"] = err.Error()
	} else {
		res, err := lm.ListResources(ctx, inner)
		if err != nil {
			return r, err
		}
		r["nestedHeldByInner"] = contains(resources(res), "content:"+desc3.Digest.String())
	}
	if err := lm.Delete(ctx, inner, leases.SynchronousDelete); err != nil {
		return r, err
	}
	// A resource added by hand: the first blob, which the client's lease held.
	if err := lm.AddResource(ctx, l, leases.Resource{ID: desc.Digest.String(), Type: "content"}); err != nil {
		r["addResourceError"] = err.Error()
		r["addResourceClass"] = classOf(err)
	}
	res, err = lm.ListResources(ctx, l)
	if err != nil {
		return r, err
	}
	r["resources"] = resources(res)
	if err := lm.DeleteResource(ctx, l, leases.Resource{ID: desc.Digest.String(), Type: "content"}); err != nil {
		return r, err
	}
	res, err = lm.ListResources(ctx, l)
	if err != nil {
		return r, err
	}
	r["resourcesAfterDeleteResource"] = resources(res)
	if err := lm.Delete(ctx, l, leases.SynchronousDelete); err != nil {
		return r, err
	}
	_, err = cs.Info(ctx, desc2.Digest)
	r["blobAfterLeaseDeleteClass"] = refused(err)
	_, err = cs.Info(ctx, desc.Digest)
	r["firstBlobAfterLeaseDeleteClass"] = refused(err)
	r["deleteAgainClass"] = refused(lm.Delete(ctx, l))
	_, err = lm.ListResources(ctx, l)
	r["resourcesOfDeletedClass"] = refused(err)
	return r, nil
}

func resources(rs []leases.Resource) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Type+":"+r.ID)
	}
	sort.Strings(out)
	return out
}

// snapshots: Prepare and View on the image's chain, Mounts, Stat, Usage, Walk, Commit,
// refusals (duplicate, unknown parent, a parent with children), Remove.
func (d *driver) snapshots(ctx context.Context, _ string) (result, error) {
	r := result{"snapshotter": d.snapshotter}
	img, err := d.client.GetImage(ctx, d.ref)
	if err != nil {
		return r, err
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return r, err
	}
	chain := identity.ChainID(diffIDs).String()
	r["chainID"] = chain
	sn := d.client.SnapshotService(d.snapshotter)

	parent, err := sn.Stat(ctx, chain)
	if err != nil {
		return r, err
	}
	r["chainKind"] = parent.Kind.String()
	key := "go-client-active"
	labels := snapshots.WithLabels(map[string]string{"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339), "purpose": "test"})
	mounts, err := sn.Prepare(ctx, key, chain, labels)
	if err != nil {
		return r, err
	}
	r["prepareMounts"] = len(mounts)
	if len(mounts) > 0 {
		r["mountType"] = mounts[0].Type
	}
	again, err := sn.Mounts(ctx, key)
	if err != nil {
		return r, err
	}
	r["mountsMatch"] = fmt.Sprint(again) == fmt.Sprint(mounts)
	info, err := sn.Stat(ctx, key)
	if err != nil {
		return r, err
	}
	r["activeKind"] = info.Kind.String()
	r["activeParent"] = info.Parent
	r["activeLabel"] = info.Labels["purpose"]
	_, err = sn.Prepare(ctx, key, chain)
	r["duplicateClass"] = refused(err)
	_, err = sn.Prepare(ctx, "go-client-orphan", "sha256:"+strings.Repeat("0", 64))
	r["unknownParentClass"] = refused(err)

	view := "go-client-view"
	vm, err := sn.View(ctx, view, chain)
	if err != nil {
		return r, err
	}
	r["viewMounts"] = len(vm)
	if len(vm) > 0 {
		r["viewReadOnly"] = contains(vm[0].Options, "ro") || vm[0].Type == "overlay" && !hasPrefix(vm[0].Options, "upperdir=")
	}
	vi, err := sn.Stat(ctx, view)
	if err != nil {
		return r, err
	}
	r["viewKind"] = vi.Kind.String()

	u, err := sn.Usage(ctx, key)
	if err != nil {
		return r, err
	}
	r["activeUsageSize"] = u.Size

	updated, err := sn.Update(ctx, snapshots.Info{Name: key, Labels: map[string]string{"purpose": "updated"}}, "labels.purpose")
	if err != nil {
		return r, err
	}
	r["updatedLabel"] = updated.Labels["purpose"]

	walked := []string{}
	if err := sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		walked = append(walked, i.Kind.String()+":"+i.Name)
		return nil
	}); err != nil {
		return r, err
	}
	sort.Strings(walked)
	r["walked"] = walked
	filtered := []string{}
	if err := sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		filtered = append(filtered, i.Name)
		return nil
	}, "labels.purpose==updated"); err != nil {
		return r, err
	}
	r["walkFiltered"] = filtered

	committed := "go-client-committed"
	if err := sn.Commit(ctx, committed, key, labels); err != nil {
		return r, err
	}
	ci, err := sn.Stat(ctx, committed)
	if err != nil {
		return r, err
	}
	r["committedKind"] = ci.Kind.String()
	r["committedParent"] = ci.Parent
	_, err = sn.Stat(ctx, key)
	r["activeAfterCommitClass"] = refused(err)
	child := "go-client-child"
	if _, err := sn.Prepare(ctx, child, committed); err != nil {
		return r, err
	}
	r["removeParentClass"] = refused(sn.Remove(ctx, committed))
	for _, k := range []string{child, committed, view} {
		if err := sn.Remove(ctx, k); err != nil {
			return r, fmt.Errorf("remove %s: %w", k, err)
		}
	}
	r["removeAgainClass"] = refused(sn.Remove(ctx, view))
	_, err = sn.Stat(ctx, view)
	r["statRemovedClass"] = refused(err)
	_, err = d.client.SnapshotService("no-such-snapshotter").Stat(ctx, chain)
	r["unknownSnapshotterClass"] = refused(err)
	return r, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func hasPrefix(list []string, p string) bool {
	for _, x := range list {
		if strings.HasPrefix(x, p) {
			return true
		}
	}
	return false
}

// container-create[=ID]: NewContainer from the image with a new snapshot and a spec from the
// image's config and -args.
func (d *driver) containerCreate(ctx context.Context, arg string) (result, error) {
	id := d.idOr(arg)
	img, err := d.client.GetImage(ctx, d.ref)
	if err != nil {
		return nil, err
	}
	// A snapshot key of its own per attempt: a second create with the same id then reaches
	// the container store's own refusal.
	snapshotKey := fmt.Sprintf("%s-snapshot-%d", id, time.Now().UnixNano())
	c, err := d.client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(d.snapshotter),
		containerd.WithNewSnapshot(snapshotKey, img),
		containerd.WithContainerLabels(map[string]string{"made-by": "go-client"}),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(d.args...), oci.WithHostname(id)),
	)
	if err != nil {
		return result{"id": id}, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return result{"id": id}, err
	}
	return result{"id": c.ID(), "image": info.Image, "runtime": info.Runtime.Name, "snapshotter": info.Snapshotter, "snapshotKey": info.SnapshotKey, "labels": info.Labels}, nil
}

func (d *driver) idOr(arg string) string {
	if arg != "" {
		return arg
	}
	return d.id
}

// withLabel is an update of the container record, as a program would write one.
func withLabel(k, v string) containerd.UpdateContainerOpts {
	return func(_ context.Context, _ *containerd.Client, c *containers.Container) error {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		c.Labels[k] = v
		return nil
	}
}

// loadContainer: the container a step names (its argument, else the driver's), and the step's
// result with its id.
func (d *driver) loadContainer(ctx context.Context, arg string) (result, containerd.Container, error) {
	id := d.idOr(arg)
	r := result{"id": id}
	c, err := d.client.LoadContainer(ctx, id)
	return r, c, err
}

// container-info[=ID]: LoadContainer, Info, Labels, SetLabels, Spec, Image, Update.
func (d *driver) containerInfo(ctx context.Context, arg string) (result, error) {
	r, c, err := d.loadContainer(ctx, arg)
	if err != nil {
		return r, err
	}
	id := r["id"].(string)
	info, err := c.Info(ctx)
	if err != nil {
		return r, err
	}
	r["created"] = !info.CreatedAt.IsZero()
	r["specType"] = info.Spec.GetTypeUrl()
	labels, err := c.SetLabels(ctx, map[string]string{"stage": "info"})
	if err != nil {
		return r, err
	}
	r["labelsAfterSet"] = labels
	spec, err := c.Spec(ctx)
	if err != nil {
		return r, err
	}
	r["specArgs"] = spec.Process.Args
	r["specHostname"] = spec.Hostname
	r["specRoot"] = spec.Root.Path
	img, err := c.Image(ctx)
	if err != nil {
		return r, err
	}
	r["imageName"] = img.Name()
	if err := c.Update(ctx, withLabel("updated", "yes")); err != nil {
		return r, err
	}
	labels, err = c.Labels(ctx)
	if err != nil {
		return r, err
	}
	r["labelsAfterUpdate"] = labels
	list, err := d.client.Containers(ctx, `labels."made-by"==go-client`)
	if err != nil {
		return r, err
	}
	ids := []string{}
	for _, x := range list {
		ids = append(ids, x.ID())
	}
	sort.Strings(ids)
	r["listedByLabel"] = ids
	_, err = d.client.LoadContainer(ctx, id+"-missing")
	r["missingClass"] = refused(err)
	_, err = c.Task(ctx, nil)
	r["taskBeforeStartClass"] = refused(err)
	return r, nil
}

// syncBuffer is an output buffer the client's copy goroutines and this one share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// task-run[=ID]: NewTask with buffers as its stdio, Wait before Start, the exit status and
// the output, Delete.
func (d *driver) taskRun(ctx context.Context, arg string) (result, error) {
	r, c, err := d.loadContainer(ctx, arg)
	if err != nil {
		return r, err
	}
	var stdout, stderr syncBuffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr)))
	if err != nil {
		return r, err
	}
	r["createdPid"] = task.Pid() > 0
	st, err := task.Status(ctx)
	if err != nil {
		return r, err
	}
	r["statusAfterCreate"] = string(st.Status)
	exitCh, err := task.Wait(ctx)
	if err != nil {
		return r, err
	}
	if err := task.Start(ctx); err != nil {
		return r, err
	}
	select {
	case es := <-exitCh:
		code, at, err := es.Result()
		if err != nil {
			return r, err
		}
		r["exitCode"] = code
		r["exitedAtSet"] = !at.IsZero()
	case <-ctx.Done():
		return r, ctx.Err()
	}
	st, err = task.Status(ctx)
	if err != nil {
		return r, err
	}
	r["statusAfterExit"] = string(st.Status)
	r["statusExitCode"] = st.ExitStatus
	ds, err := task.Delete(ctx)
	if err != nil {
		return r, err
	}
	r["deleteExitCode"] = ds.ExitCode()
	r["stdout"] = stdout.String()
	r["stderr"] = stderr.String()
	_, err = c.Task(ctx, nil)
	r["taskAfterDeleteClass"] = refused(err)
	return r, nil
}

// task-exec[=ID]: a long-running task (the container's -args must keep running and exit on
// SIGTERM), an exec process with its own output and exit code, Pids, Kill, the exit status.
func (d *driver) taskExec(ctx context.Context, arg string) (result, error) {
	r, c, err := d.loadContainer(ctx, arg)
	if err != nil {
		return r, err
	}
	var stdout syncBuffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stdout)))
	if err != nil {
		return r, err
	}
	// Whatever fails below, the task does not outlive this step.
	defer func() {
		task.Kill(ctx, syscall.SIGKILL)
		task.Delete(ctx, containerd.WithProcessKill)
	}()
	exitCh, err := task.Wait(ctx)
	if err != nil {
		return r, err
	}
	if err := task.Start(ctx); err != nil {
		return r, err
	}
	st, err := task.Status(ctx)
	if err != nil {
		return r, err
	}
	r["status"] = string(st.Status)

	spec, err := c.Spec(ctx)
	if err != nil {
		return r, err
	}
	pspec := *spec.Process
	pspec.Args = d.execArgs
	var execOut syncBuffer
	p, err := task.Exec(ctx, "go-exec", &pspec, cio.NewCreator(cio.WithStreams(nil, &execOut, &execOut)))
	if err != nil {
		return r, err
	}
	_, err = task.Exec(ctx, "go-exec", &pspec, cio.NewCreator(cio.WithStreams(nil, io.Discard, io.Discard)))
	r["execDuplicateClass"] = refused(err)
	pExit, err := p.Wait(ctx)
	if err != nil {
		return r, err
	}
	if err := p.Start(ctx); err != nil {
		return r, err
	}
	select {
	case es := <-pExit:
		r["execExitCode"] = es.ExitCode()
	case <-ctx.Done():
		return r, ctx.Err()
	}
	pds, err := p.Delete(ctx)
	if err != nil {
		return r, err
	}
	r["execDeleteExitCode"] = pds.ExitCode()
	r["execOutput"] = execOut.String()
	_, err = task.LoadProcess(ctx, "go-exec", nil)
	r["execAfterDeleteClass"] = refused(err)

	pids, err := task.Pids(ctx)
	if err != nil {
		return r, err
	}
	hasInit := false
	for _, pi := range pids {
		if pi.Pid == task.Pid() {
			hasInit = true
		}
	}
	r["pidsIncludeInit"] = hasInit
	r["pidCount"] = len(pids)
	_, err = task.Delete(ctx)
	r["deleteRunningClass"] = refused(err)

	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		return r, err
	}
	select {
	case es := <-exitCh:
		r["exitCode"] = es.ExitCode()
	case <-ctx.Done():
		return r, ctx.Err()
	}
	ds, err := task.Delete(ctx)
	if err != nil {
		return r, err
	}
	r["deleteExitCode"] = ds.ExitCode()
	r["output"] = stdout.String()
	r["killDeletedClass"] = refused(task.Kill(ctx, syscall.SIGTERM))
	return r, nil
}

// container-delete[=ID]: Delete with the snapshot's cleanup; the snapshot is gone after.
func (d *driver) containerDelete(ctx context.Context, arg string) (result, error) {
	r, c, err := d.loadContainer(ctx, arg)
	if err != nil {
		return r, err
	}
	id := r["id"].(string)
	info, err := c.Info(ctx)
	if err != nil {
		return r, err
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		return r, err
	}
	_, err = d.client.SnapshotService(info.Snapshotter).Stat(ctx, info.SnapshotKey)
	r["snapshotAfterClass"] = refused(err)
	_, err = d.client.LoadContainer(ctx, id)
	r["loadAfterClass"] = refused(err)
	r["deleteAgainClass"] = refused(c.Delete(ctx))
	return r, nil
}

// events-start[=FILTER]: subscribes (by default to this namespace's task events) and waits
// until the subscription delivers an event of its own (Publish), so nothing after this step
// is missed.
func (d *driver) eventsStart(ctx context.Context, filter string) (result, error) {
	if filter == "" {
		filter = fmt.Sprintf(`namespace==%s,topic~="^/tasks/"`, d.namespace)
	}
	probe := fmt.Sprintf(`namespace==%s,topic=="/go-client/probe"`, d.namespace)
	sctx, cancel := context.WithCancel(ctx)
	d.evCancel = cancel
	ch, errs := d.client.EventService().Subscribe(sctx, filter, probe)
	ready := make(chan struct{})
	go func() {
		readyOnce := sync.Once{}
		for {
			select {
			case env, ok := <-ch:
				if !ok {
					return
				}
				if env.Topic == "/go-client/probe" {
					readyOnce.Do(func() { close(ready) })
					continue
				}
				e := result{"topic": env.Topic, "namespace": env.Namespace, "type": env.Event.GetTypeUrl()}
				if v, err := typeurl.UnmarshalAny(env.Event); err == nil {
					e["event"] = v
				} else {
					e["decodeError"] = err.Error()
				}
				d.evMu.Lock()
				d.evSeen = append(d.evSeen, e)
				d.evMu.Unlock()
			case err, ok := <-errs:
				if ok && err != nil {
					d.evMu.Lock()
					d.evErr = err
					d.evMu.Unlock()
				}
				return
			}
		}
	}()
	deadline := time.After(20 * time.Second)
	for i := 0; ; i++ {
		if err := d.client.EventService().Publish(ctx, "/go-client/probe", &apievents.NamespaceUpdate{Name: d.namespace}); err != nil {
			return nil, err
		}
		select {
		case <-ready:
			return result{"filter": filter, "probes": i + 1}, nil
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			d.evMu.Lock()
			err := d.evErr
			d.evMu.Unlock()
			if err == nil {
				err = fmt.Errorf("no probe event came back: %w", errdefs.ErrUnavailable)
			}
			return nil, err
		}
	}
}

// events-wait=TOPIC: waits (at most 20 s) until an event of TOPIC was received, then prints
// every event received since events-start.
func (d *driver) eventsWait(ctx context.Context, topic string) (result, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		d.evMu.Lock()
		seen := append([]result(nil), d.evSeen...)
		evErr := d.evErr
		d.evMu.Unlock()
		found := false
		for _, e := range seen {
			if e["topic"] == topic {
				found = true
			}
		}
		if found || evErr != nil || time.Now().After(deadline) || topic == "" {
			r := result{"events": seen, "found": found}
			if evErr != nil {
				return r, evErr
			}
			return r, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitFor polls until the buffer holds want (at most 20 s).
func waitFor(ctx context.Context, b *syncBuffer, want string) bool {
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// task-stdin[=ID]: a task reading its stdin (the container's -args echo each line as "got
// LINE" and exit at the end of input), paused and resumed, its metrics, a resource update,
// a line through stdin, CloseIO and its exit.
func (d *driver) taskStdin(ctx context.Context, arg string) (result, error) {
	r, c, err := d.loadContainer(ctx, arg)
	if err != nil {
		return r, err
	}
	inR, inW := io.Pipe()
	var out syncBuffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(inR, &out, &out)))
	if err != nil {
		return r, err
	}
	defer func() {
		inW.Close()
		task.Kill(ctx, syscall.SIGKILL)
		task.Delete(ctx, containerd.WithProcessKill)
	}()
	exitCh, err := task.Wait(ctx)
	if err != nil {
		return r, err
	}
	if err := task.Start(ctx); err != nil {
		return r, err
	}
	if err := task.Pause(ctx); err != nil {
		return r, err
	}
	st, err := task.Status(ctx)
	if err != nil {
		return r, err
	}
	r["statusPaused"] = string(st.Status)
	r["pauseAgainClass"] = refused(task.Pause(ctx))
	if err := task.Resume(ctx); err != nil {
		return r, err
	}
	st, err = task.Status(ctx)
	if err != nil {
		return r, err
	}
	r["statusResumed"] = string(st.Status)

	m, err := task.Metrics(ctx)
	if err != nil {
		return r, err
	}
	r["metricsType"] = m.Data.GetTypeUrl()
	if v, err := typeurl.UnmarshalAny(m.Data); err == nil {
		r["metricsDecoded"] = fmt.Sprintf("%T", v)
		if m1, ok := v.(*cgroupsv1.Metrics); ok && m1.Pids != nil {
			r["metricsPids"] = m1.Pids.Current
			r["metricsMemorySet"] = m1.Memory != nil && m1.Memory.Usage != nil && m1.Memory.Usage.Usage > 0
		}
	} else {
		r["metricsDecodeError"] = err.Error()
	}
	limit := int64(64 << 20)
	r["updateError"] = refused(task.Update(ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})))

	if _, err := io.WriteString(inW, "hello stdin\n"); err != nil {
		return r, err
	}
	r["echoed"] = waitFor(ctx, &out, "got hello stdin")
	inW.Close()
	if err := task.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
		return r, err
	}
	select {
	case es := <-exitCh:
		r["exitCode"] = es.ExitCode()
	case <-time.After(20 * time.Second):
		r["exitCode"] = "none within 20 s"
	}
	if _, err := task.Delete(ctx); err != nil {
		return r, err
	}
	r["output"] = out.String()
	return r, nil
}

// task-logfile[=ID]: a task whose output goes to a file (cio.LogFile), run to its end.
func (d *driver) taskLogFile(ctx context.Context, arg string) (result, error) {
	r, c, err := d.loadContainer(ctx, arg)
	if err != nil {
		return r, err
	}
	dir, err := os.MkdirTemp("", "ck-go-client-log-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	path := dir + "/task.log"
	task, err := c.NewTask(ctx, cio.LogFile(path))
	if err != nil {
		return r, err
	}
	exitCh, err := task.Wait(ctx)
	if err != nil {
		return r, err
	}
	if err := task.Start(ctx); err != nil {
		return r, err
	}
	es := <-exitCh
	r["exitCode"] = es.ExitCode()
	if _, err := task.Delete(ctx); err != nil {
		return r, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	r["logged"] = string(b)
	return r, nil
}

// task-detach[=ID]: starts a long-running task, waits for its first output and leaves it
// running (this process ends; the task's FIFOs stay, as with ctr run -d).
func (d *driver) taskDetach(ctx context.Context, arg string) (result, error) {
	r, c, err := d.loadContainer(ctx, arg)
	if err != nil {
		return r, err
	}
	var out syncBuffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &out, &out)))
	if err != nil {
		return r, err
	}
	if err := task.Start(ctx); err != nil {
		return r, err
	}
	r["started"] = waitFor(ctx, &out, "started")
	r["pid"] = task.Pid()
	return r, nil
}

// task-attach[=ID]: attaches to the running task another process started (its FIFOs),
// signals it, reads what it prints on its way out, and deletes it.
func (d *driver) taskAttach(ctx context.Context, arg string) (result, error) {
	r, c, err := d.loadContainer(ctx, arg)
	if err != nil {
		return r, err
	}
	var out syncBuffer
	task, err := c.Task(ctx, cio.NewAttach(cio.WithStreams(nil, &out, &out)))
	if err != nil {
		return r, err
	}
	st, err := task.Status(ctx)
	if err != nil {
		return r, err
	}
	r["status"] = string(st.Status)
	r["pidKnown"] = task.Pid() > 0
	exitCh, err := task.Wait(ctx)
	if err != nil {
		return r, err
	}
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		return r, err
	}
	es := <-exitCh
	r["exitCode"] = es.ExitCode()
	r["gotTerm"] = waitFor(ctx, &out, "got TERM")
	if _, err := task.Delete(ctx); err != nil {
		return r, err
	}
	return r, nil
}

// diff: a file written into an active snapshot through the client's own mount, the change
// compared into a layer (DiffService.Compare) and applied onto another snapshot (Apply).
func (d *driver) diff(ctx context.Context, _ string) (result, error) {
	r := result{}
	img, err := d.client.GetImage(ctx, d.ref)
	if err != nil {
		return r, err
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return r, err
	}
	chain := identity.ChainID(diffIDs).String()
	ctx, done, err := d.client.WithLease(ctx)
	if err != nil {
		return r, err
	}
	defer done(ctx)
	sn := d.client.SnapshotService(d.snapshotter)
	upper, err := sn.Prepare(ctx, "go-client-diff-upper", chain)
	if err != nil {
		return r, err
	}
	defer sn.Remove(ctx, "go-client-diff-upper")
	if err := mount.WithTempMount(ctx, upper, func(root string) error {
		return os.WriteFile(root+"/go-client.txt", []byte("written by the go client\n"), 0o644)
	}); err != nil {
		return r, err
	}
	lower, err := sn.View(ctx, "go-client-diff-lower", chain)
	if err != nil {
		return r, err
	}
	defer sn.Remove(ctx, "go-client-diff-lower")
	ds := d.client.DiffService()
	desc, err := ds.Compare(ctx, lower, upper, diff.WithMediaType(ocispec.MediaTypeImageLayerGzip), diff.WithReference("go-client-diff"))
	if err != nil {
		return r, err
	}
	r["layerMediaType"] = desc.MediaType
	r["layerSize"] = desc.Size > 0
	info, err := d.client.ContentStore().Info(ctx, desc.Digest)
	if err != nil {
		return r, err
	}
	r["layerUncompressedLabel"] = info.Labels["containerd.io/uncompressed"] != ""
	target, err := sn.Prepare(ctx, "go-client-diff-target", chain)
	if err != nil {
		return r, err
	}
	defer sn.Remove(ctx, "go-client-diff-target")
	applied, err := ds.Apply(ctx, desc, target)
	if err != nil {
		return r, err
	}
	r["appliedDigest"] = applied.Digest.String()
	r["appliedMatchesLabel"] = applied.Digest.String() == info.Labels["containerd.io/uncompressed"]
	err = mount.WithReadonlyTempMount(ctx, target, func(root string) error {
		b, err := os.ReadFile(root + "/go-client.txt")
		r["appliedFile"] = string(b)
		return err
	})
	if err != nil {
		return r, err
	}
	// The mounts as Mounts gives them again: WithReadonlyTempMount rewrote the slice it was
	// given into read-only options.
	target, err = sn.Mounts(ctx, "go-client-diff-target")
	if err != nil {
		return r, err
	}
	_, err = ds.Apply(ctx, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("missing"), Size: 10}, target)
	r["applyMissingClass"] = refused(err)
	if err != nil {
		r["applyMissingError"] = err.Error()
	}
	return r, nil
}

// push=REF: the image pushed under another reference (the client reads content from the
// server, the registry gets it).
func (d *driver) push(ctx context.Context, ref string) (result, error) {
	img, err := d.client.GetImage(ctx, d.ref)
	if err != nil {
		return nil, err
	}
	if err := d.client.Push(ctx, ref, img.Target(), d.resolverOpt()); err != nil {
		return result{"ref": ref}, err
	}
	return result{"ref": ref, "digest": img.Target().Digest.String()}, nil
}

// export-import=NAMESPACE: the image exported to an OCI archive, imported into NAMESPACE.
func (d *driver) exportImport(ctx context.Context, ns string) (result, error) {
	r := result{}
	var buf bytes.Buffer
	if err := d.client.Export(ctx, &buf, archive.WithImage(d.client.ImageService(), d.ref), archive.WithPlatform(platforms.Default())); err != nil {
		return r, err
	}
	r["archiveBytes"] = buf.Len() > 0
	ictx := namespaces.WithNamespace(ctx, ns)
	imgs, err := d.client.Import(ictx, &buf, containerd.WithImportPlatform(platforms.Default()))
	if err != nil {
		return r, err
	}
	names := []string{}
	for _, i := range imgs {
		names = append(names, i.Name+"@"+i.Target.Digest.String())
	}
	r["imported"] = names
	img, err := d.client.GetImage(ictx, d.ref)
	if err != nil {
		return r, err
	}
	if err := img.Unpack(ictx, d.snapshotter); err != nil {
		return r, err
	}
	unpacked, err := img.IsUnpacked(ictx, d.snapshotter)
	if err != nil {
		return r, err
	}
	r["unpacked"] = unpacked
	return r, nil
}

// introspection: the plugins the server lists, and the snapshotter's platforms.
func (d *driver) introspection(ctx context.Context, _ string) (result, error) {
	r := result{}
	resp, err := d.client.IntrospectionService().Plugins(ctx, []string{fmt.Sprintf("type==io.containerd.snapshotter.v1,id==%s", d.snapshotter)})
	if err != nil {
		return r, err
	}
	ids := []string{}
	for _, p := range resp.Plugins {
		ids = append(ids, p.Type+"."+p.ID)
	}
	r["snapshotterPlugins"] = ids
	all, err := d.client.IntrospectionService().Plugins(ctx, nil)
	if err != nil {
		return r, err
	}
	r["pluginCount"] = len(all.Plugins)
	m, err := d.client.GetSnapshotterSupportedPlatforms(ctx, d.snapshotter)
	if err != nil {
		return r, err
	}
	r["snapshotterRunsDefault"] = m.Match(platforms.DefaultSpec())
	usage, err := d.imageUsage(ctx)
	if err != nil {
		return r, err
	}
	for k, v := range usage {
		r[k] = v
	}
	return r, nil
}

func (d *driver) imageUsage(ctx context.Context) (result, error) {
	img, err := d.client.GetImage(ctx, d.ref)
	if err != nil {
		return nil, err
	}
	size, err := img.Size(ctx)
	if err != nil {
		return nil, err
	}
	withSnapshots, err := img.Usage(ctx, containerd.WithSnapshotUsage())
	if err != nil {
		return nil, err
	}
	cfg, err := img.Config(ctx)
	if err != nil {
		return nil, err
	}
	return result{"imageSize": size, "usageWithSnapshotsAtLeastSize": withSnapshots >= size, "configMediaType": cfg.MediaType}, nil
}
