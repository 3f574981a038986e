package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"

	"github.com/virtkube/virtkube/test/containerdisk"
)

func TestPullContainerDisk(t *testing.T) {
	host := containerdisk.StartRegistry(t)
	qcow2 := append(qcow2Header(1<<30), bytes.Repeat([]byte("data"), 1000)...)
	raw := append([]byte("\xebc\x90"), bytes.Repeat([]byte{0}, 1<<20)...) // a boot sector start, then zeros
	raw = append(raw, "end"...)

	tests := []struct {
		name       string
		file       string
		content    []byte
		wantFormat string
	}{
		{name: "qcow2", file: "disk.qcow2", content: qcow2, wantFormat: FormatQCOW2},
		{name: "raw", file: "disk.img", content: raw, wantFormat: FormatRaw},
		{name: "tiny raw", file: "x.img", content: []byte("ab"), wantFormat: FormatRaw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := pushDisk(t, host, "vm/"+strings.ReplaceAll(tt.name, " ", "-"), "v1", tt.file, tt.content)
			s := newStore(t)

			img, err := s.Pull(context.Background(), ref, corev1.PullIfNotPresent)
			if err != nil {
				t.Fatalf("Pull(%s): %v", ref, err)
			}
			if img.Reference != ref {
				t.Errorf("Reference = %q, want %q", img.Reference, ref)
			}
			wantDigest := remoteDigest(t, ref)
			if img.Digest != wantDigest {
				t.Errorf("Digest = %s, want the registry's %s", img.Digest, wantDigest)
			}
			if want := strings.TrimSuffix(ref, ":v1") + "@" + wantDigest; img.RepoDigest() != want {
				t.Errorf("RepoDigest() = %q, want %q", img.RepoDigest(), want)
			}

			p, format, err := img.ContainerDisk()
			if err != nil {
				t.Fatalf("ContainerDisk: %v", err)
			}
			if format != tt.wantFormat {
				t.Errorf("format = %q, want %q", format, tt.wantFormat)
			}
			if filepath.Base(p) != tt.file {
				t.Errorf("disk path %s, want a file named %s", p, tt.file)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.content) {
				t.Errorf("disk content differs from what was pushed (%d bytes, want %d)", len(got), len(tt.content))
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != containerdisk.DiskMode {
				t.Errorf("disk mode %v, want %o", fi.Mode().Perm(), containerdisk.DiskMode)
			}
			if st := fi.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && (st.Uid != containerdisk.DiskUID || st.Gid != containerdisk.DiskGID) {
				t.Errorf("disk owned by %d:%d, want %d:%d", st.Uid, st.Gid, containerdisk.DiskUID, containerdisk.DiskGID)
			}
		})
	}
}

func remoteDigest(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r)
	if err != nil {
		t.Fatal(err)
	}
	return d.Digest.String()
}

func TestPullPolicy(t *testing.T) {
	var requests atomic.Int64
	host := containerdisk.StartRegistry(t, counter(&requests))
	ref := pushDisk(t, host, "vm/disk", "v1", "disk.img", []byte("disk"))
	ctx := context.Background()
	s := newStore(t)

	// Never before anything is pulled.
	_, err := s.Pull(ctx, ref, corev1.PullNever)
	var pe *PullError
	if !errors.As(err, &pe) || pe.Reason != ReasonErrImageNeverPull {
		t.Fatalf("Pull(Never) of a missing image = %v, want a PullError with reason %s", err, ReasonErrImageNeverPull)
	}
	if !errors.Is(err, ErrNotPresent) {
		t.Errorf("Pull(Never) error does not match ErrNotPresent: %v", err)
	}

	steps := []struct {
		policy      corev1.PullPolicy
		wantRequest bool
	}{
		{corev1.PullIfNotPresent, true}, // first pull
		{corev1.PullIfNotPresent, false},
		{corev1.PullNever, false},
		{corev1.PullAlways, true},
		{corev1.PullIfNotPresent, false},
	}
	for i, st := range steps {
		before := requests.Load()
		img, err := s.Pull(ctx, ref, st.policy)
		if err != nil {
			t.Fatalf("step %d: Pull(%s): %v", i, st.policy, err)
		}
		if _, _, err := img.ContainerDisk(); err != nil {
			t.Errorf("step %d: ContainerDisk: %v", i, err)
		}
		if asked := requests.Load() > before; asked != st.wantRequest {
			t.Errorf("step %d: Pull(%s) contacted the registry: %v, want %v", i, st.policy, asked, st.wantRequest)
		}
	}

	// A store reopened on the same root still has the image.
	before := requests.Load()
	if _, err := openStore(t, s.Root()).Pull(ctx, ref, corev1.PullNever); err != nil {
		t.Errorf("Pull(Never) after reopening the store: %v", err)
	}
	if requests.Load() != before {
		t.Errorf("reopened store contacted the registry")
	}
}

func TestPullAlwaysFollowsTheTag(t *testing.T) {
	host := containerdisk.StartRegistry(t)
	ctx := context.Background()
	s := newStore(t)
	ref := pushDisk(t, host, "vm/disk", "latest", "one.img", []byte("one"))
	first, err := s.Pull(ctx, ref, corev1.PullAlways)
	if err != nil {
		t.Fatal(err)
	}
	pushDisk(t, host, "vm/disk", "latest", "two.img", []byte("two"))

	cached, err := s.Pull(ctx, ref, corev1.PullIfNotPresent)
	if err != nil {
		t.Fatal(err)
	}
	if cached.Digest != first.Digest {
		t.Errorf("IfNotPresent gave %s, want the stored %s", cached.Digest, first.Digest)
	}
	fresh, err := s.Pull(ctx, ref, corev1.PullAlways)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := fresh.ContainerDisk()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p) != "two.img" {
		t.Errorf("Always gave disk %s, want two.img (the tag was re-pushed)", filepath.Base(p))
	}
	rec, err := s.readRecord(first.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.References) != 0 {
		t.Errorf("the old image still lists references %q after the tag moved", rec.References)
	}
}

func TestPullErrors(t *testing.T) {
	host := containerdisk.StartRegistry(t)
	ref := pushDisk(t, host, "vm/disk", "v1", "disk.img", []byte("disk"))
	index := pushIndex(t, host, "vm/arm", "v1", "arm64")
	closed := closedPort(t)

	tests := []struct {
		name        string
		ref         string
		policy      corev1.PullPolicy
		wantReason  string
		wantMessage []string
	}{
		{
			name: "missing tag", ref: host + "/vm/disk:missing", policy: corev1.PullAlways,
			wantReason:  ReasonErrImagePull,
			wantMessage: []string{host + "/vm/disk:missing", "registry " + host + ": manifest unknown", `tag "missing"`},
		},
		{
			name: "missing repository", ref: host + "/vm/nothing:v1", policy: corev1.PullIfNotPresent,
			wantReason:  ReasonErrImagePull,
			wantMessage: []string{host + "/vm/nothing:v1", "registry " + host + ":"},
		},
		{
			name: "never pulled", ref: host + "/vm/other:v1", policy: corev1.PullNever,
			wantReason:  ReasonErrImageNeverPull,
			wantMessage: []string{host + "/vm/other:v1", "not present", "Never"},
		},
		{
			name: "invalid name", ref: "Not A Valid/Image::x", policy: corev1.PullIfNotPresent,
			wantReason:  ReasonInvalidImageName,
			wantMessage: []string{`"Not A Valid/Image::x"`},
		},
		{
			name: "empty name", ref: "", policy: corev1.PullAlways,
			wantReason: ReasonInvalidImageName,
		},
		{
			name: "registry down", ref: closed + "/vm/disk:v1", policy: corev1.PullAlways,
			wantReason:  ReasonErrImagePull,
			wantMessage: []string{closed + "/vm/disk:v1", "registry " + closed + ": cannot connect"},
		},
		{
			name: "index without linux/amd64", ref: index, policy: corev1.PullAlways,
			wantReason:  ReasonErrImagePull,
			wantMessage: []string{index, "linux/amd64"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			_, err := s.Pull(context.Background(), tt.ref, tt.policy)
			var pe *PullError
			if !errors.As(err, &pe) {
				t.Fatalf("Pull(%q) = %v, want a *PullError", tt.ref, err)
			}
			t.Logf("%s: %s", pe.Reason, pe.Message)
			if pe.Reason != tt.wantReason {
				t.Errorf("Reason = %q, want %q (message %q)", pe.Reason, tt.wantReason, pe.Message)
			}
			for _, w := range tt.wantMessage {
				if !strings.Contains(pe.Message, w) {
					t.Errorf("Message %q does not contain %q", pe.Message, w)
				}
			}
			if len(dirNames(t, filepath.Join(s.Root(), layersDir))) != 0 {
				t.Errorf("a failed pull left layers behind")
			}
		})
	}

	t.Run("unknown policy", func(t *testing.T) {
		_, err := newStore(t).Pull(context.Background(), ref, "Sometimes")
		var pe *PullError
		if err == nil || errors.As(err, &pe) {
			t.Fatalf("Pull with policy Sometimes = %v, want a plain error", err)
		}
		if !strings.Contains(err.Error(), `"Sometimes"`) {
			t.Errorf("error %q does not name the bad policy", err)
		}
	})
}

// closedPort returns a loopback host:port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// pushIndex pushes an index with one image per architecture (linux), each
// a containerDisk whose disk is named <arch>.img.
func pushIndex(t *testing.T, host, repo, tag string, archs ...string) string {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	for _, arch := range archs {
		img := mustImage(t, layerOf(t, entry{name: "disk/" + arch + ".img", body: arch}))
		img, err := mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: arch, RootFS: mustConfig(t, img).RootFS})
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	ref := host + "/" + repo + ":" + tag
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	return ref
}

func mustImage(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := containerdisk.Image(layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustConfig(t *testing.T, img v1.Image) v1.ConfigFile {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return *cf
}

func TestPullIndexPicksLinuxAMD64(t *testing.T) {
	host := containerdisk.StartRegistry(t)
	ref := pushIndex(t, host, "vm/multi", "v1", "arm64", "amd64", "s390x")
	img, err := newStore(t).Pull(context.Background(), ref, corev1.PullAlways)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := img.ContainerDisk()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); filepath.Base(p) != "amd64.img" || string(got) != "amd64" {
		t.Errorf("disk %s holding %q, want amd64.img holding \"amd64\"", filepath.Base(p), got)
	}
	if img.Config.Architecture != "amd64" {
		t.Errorf("Config.Architecture = %q, want amd64", img.Config.Architecture)
	}
}

func TestSharedLayerIsUnpackedOnce(t *testing.T) {
	host := containerdisk.StartRegistry(t)
	base := layerOf(t, entry{name: "etc/", typ: tar.TypeDir}, entry{name: "etc/os-release", body: "ID=test\n"})
	refA := push(t, host, "vm/a", "v1", base, layerOf(t, entry{name: "disk/a.img", body: "A"}))
	refB := push(t, host, "vm/b", "v1", base, layerOf(t, entry{name: "disk/b.img", body: "B"}))
	s := newStore(t)
	ctx := context.Background()

	a, err := s.Pull(ctx, refA, corev1.PullIfNotPresent)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Pull(ctx, refB, corev1.PullIfNotPresent)
	if err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, filepath.Join(s.Root(), layersDir)); len(got) != 3 {
		t.Errorf("layers/ holds %d layers %q, want 3 (one shared base, one disk layer each)", len(got), got)
	}
	if a.Layers[0] != b.Layers[0] {
		t.Errorf("base layers differ: %s and %s", a.Layers[0], b.Layers[0])
	}
	for _, tc := range []struct {
		img  *Image
		disk string
	}{{a, "A"}, {b, "B"}} {
		p, _, err := tc.img.ContainerDisk()
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p); string(got) != tc.disk {
			t.Errorf("%s: disk holds %q, want %q", tc.img.Reference, got, tc.disk)
		}
		if _, err := tc.img.Lookup("/etc/os-release"); err != nil {
			t.Errorf("%s: Lookup of a base-layer file: %v", tc.img.Reference, err)
		}
	}
}

func TestPullWhiteouts(t *testing.T) {
	host := containerdisk.StartRegistry(t)
	ref := push(t, host, "vm/replaced", "v1",
		layerOf(t, entry{name: "disk/", typ: tar.TypeDir}, entry{name: "disk/old.img", body: "old"}),
		layerOf(t, entry{name: "disk/.wh.old.img"}, entry{name: "disk/new.qcow2", body: string(qcow2Header(1 << 20))}),
	)
	img, err := newStore(t).Pull(context.Background(), ref, corev1.PullAlways)
	if err != nil {
		t.Fatal(err)
	}
	p, format, err := img.ContainerDisk()
	if err != nil {
		t.Fatalf("ContainerDisk: %v", err)
	}
	if filepath.Base(p) != "new.qcow2" || format != FormatQCOW2 {
		t.Errorf("ContainerDisk = %s (%s), want new.qcow2 (qcow2)", filepath.Base(p), format)
	}
	if _, err := img.Lookup("/disk/old.img"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Lookup of the whited-out disk = %v, want not exist", err)
	}
}

func TestPullRejectsEscapingLayer(t *testing.T) {
	host := containerdisk.StartRegistry(t)
	ref := push(t, host, "vm/evil", "v1", layerOf(t,
		entry{name: "disk/disk.img", body: "disk"},
		entry{name: "disk/../../escape", body: "gotcha"},
	))
	dir := t.TempDir()
	s := openStore(t, filepath.Join(dir, "store"))

	_, err := s.Pull(context.Background(), ref, corev1.PullAlways)
	var pe *PullError
	if !errors.As(err, &pe) || pe.Reason != ReasonErrImagePull {
		t.Fatalf("Pull of an escaping layer = %v, want ErrImagePull", err)
	}
	t.Logf("%s: %s", pe.Reason, pe.Message)
	if !errors.Is(err, ErrUnsafeLayer) || !strings.Contains(pe.Message, "disk/../../escape") {
		t.Errorf("error %q should match ErrUnsafeLayer and name the entry", pe.Message)
	}
	for _, p := range []string{filepath.Join(dir, "escape"), filepath.Join(dir, "store", "escape")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after the rejected pull", p)
		}
	}
	for _, d := range []string{layersDir, imagesDir, tmpDir} {
		if got := dirNames(t, filepath.Join(s.Root(), d)); len(got) != 0 {
			t.Errorf("%s/ holds %q after the rejected pull, want nothing", d, got)
		}
	}
	if _, err := s.Pull(context.Background(), ref, corev1.PullNever); err == nil {
		t.Errorf("the rejected image is usable with pull policy Never")
	}
}

func TestConcurrentPullsOfOneImage(t *testing.T) {
	var requests atomic.Int64
	host := containerdisk.StartRegistry(t, counter(&requests))
	content := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	ref := push(t, host, "vm/big", "v1",
		layerOf(t, entry{name: "etc/base", body: "base"}),
		layerOf(t, entry{name: "disk/disk.img", body: string(content)}),
	)
	s := newStore(t)

	const n = 8
	var wg sync.WaitGroup
	imgs := make([]*Image, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			imgs[i], errs[i] = s.Pull(context.Background(), ref, corev1.PullAlways)
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("pull %d: %v", i, errs[i])
		}
		if imgs[i].Digest != imgs[0].Digest {
			t.Errorf("pull %d got %s, pull 0 got %s", i, imgs[i].Digest, imgs[0].Digest)
		}
		p, _, err := imgs[i].ContainerDisk()
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p); !bytes.Equal(got, content) {
			t.Errorf("pull %d: disk content differs", i)
		}
	}
	if got := dirNames(t, filepath.Join(s.Root(), layersDir)); len(got) != 2 {
		t.Errorf("layers/ holds %q, want the 2 layers once each", got)
	}
	if got := dirNames(t, filepath.Join(s.Root(), imagesDir)); len(got) != 1 {
		t.Errorf("images/ holds %q, want one record", got)
	}
	if got := dirNames(t, filepath.Join(s.Root(), tmpDir)); len(got) != 0 {
		t.Errorf("tmp/ holds %q after the pulls", got)
	}
	rec, err := s.readRecord(imgs[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.References) != 1 || rec.References[0] != ref {
		t.Errorf("record references %q, want [%s]", rec.References, ref)
	}
}

func TestReferenceScheme(t *testing.T) {
	tests := []struct {
		ref      string
		wantHTTP bool
	}{
		{"localhost:5000/disk:v1", true},
		{"localhost/disk", true},
		{"127.0.0.1:5000/disk:v1", true},
		{"127.0.0.2:5000/disk", true},
		{"[::1]:5000/disk:v1", true},
		{"10.0.0.1:5000/disk:v1", false},
		{"192.168.1.10/disk", false},
		{"quay.io/containerdisks/fedora:latest", false},
		{"busybox", false},
		// Listed as insecure (CDI's insecureRegistries): by host:port.
		{"10.244.0.1:5000/disk:v1", true},
		{"10.244.0.1:5001/disk:v1", false},
	}
	s := &Store{}
	WithInsecureRegistries("10.244.0.1:5000")(s)
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			r, err := s.parseReference(tt.ref)
			if err != nil {
				t.Fatalf("parseReference: %v", err)
			}
			if got := s.plainHTTP(r.Context().RegistryStr()); got != tt.wantHTTP {
				t.Errorf("plainHTTP(%s) = %v, want %v", r.Context().RegistryStr(), got, tt.wantHTTP)
			}
			if tt.wantHTTP && r.Context().Scheme() != "http" {
				t.Errorf("scheme %s, want http", r.Context().Scheme())
			}
			// Whatever go-containerregistry would try, the transport only
			// lets plain HTTP through to loopback and insecure registries.
			req, _ := http.NewRequest(http.MethodGet, "http://"+r.Context().RegistryStr()+"/v2/", nil)
			_, err = plainHTTPOnlyTo{next: refuseAll{}, allowed: s.plainHTTP}.RoundTrip(req)
			if reached := errors.Is(err, errSentinelNext); reached != tt.wantHTTP {
				t.Errorf("plain HTTP to %s let through: %v (err %v), want %v", r.Context().RegistryStr(), reached, err, tt.wantHTTP)
			}
		})
	}
}

var errSentinelNext = errors.New("reached the next transport")

type refuseAll struct{}

func (refuseAll) RoundTrip(*http.Request) (*http.Response, error) { return nil, errSentinelNext }

func TestPullByDigest(t *testing.T) {
	var requests atomic.Int64
	host := containerdisk.StartRegistry(t, counter(&requests))
	tagged := pushDisk(t, host, "vm/disk", "v1", "disk.img", []byte("disk"))
	digest := remoteDigest(t, tagged)
	ref := host + "/vm/disk@" + digest
	s := newStore(t)

	img, err := s.Pull(context.Background(), ref, corev1.PullIfNotPresent)
	if err != nil {
		t.Fatalf("Pull(%s): %v", ref, err)
	}
	if img.Digest != digest || img.Reference != ref || img.RepoDigest() != ref {
		t.Errorf("got Digest %s, Reference %s, RepoDigest %s; want %s and %s", img.Digest, img.Reference, img.RepoDigest(), digest, ref)
	}
	before := requests.Load()
	if _, err := s.Pull(context.Background(), ref, corev1.PullIfNotPresent); err != nil {
		t.Fatal(err)
	}
	if requests.Load() != before {
		t.Errorf("IfNotPresent by digest contacted the registry again")
	}

	missing := host + "/vm/disk@sha256:" + strings.Repeat("0", 64)
	_, err = s.Pull(context.Background(), missing, corev1.PullAlways)
	var pe *PullError
	if !errors.As(err, &pe) || pe.Reason != ReasonErrImagePull || !strings.Contains(pe.Message, "has no manifest sha256:000") {
		t.Errorf("Pull of a missing digest = %v, want ErrImagePull naming the digest", err)
	}
}
