package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/virtkube/virtkube/test/containerdisk"
)

// entry is one tar entry of a test layer; typ defaults to a regular file.
type entry struct {
	name string
	typ  byte
	body string
	mode int64
	link string
	uid  int
	gid  int
}

func tarOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link,
			Uid: e.uid, Gid: e.gid, ModTime: time.Unix(1700000000, 0),
		}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func layerOf(t testing.TB, entries ...entry) v1.Layer {
	t.Helper()
	b := tarOf(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// push pushes an image made of layers (bottom first) and returns its
// reference.
func push(t testing.TB, host, repo, tag string, layers ...v1.Layer) string {
	t.Helper()
	img, err := containerdisk.Image(layers...)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := containerdisk.PushImage(context.Background(), host, repo, tag, img)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// pushDisk pushes a containerDisk holding a file named base with content.
func pushDisk(t testing.TB, host, repo, tag, base string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), base)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	ref, err := containerdisk.Push(context.Background(), host, repo, tag, p)
	if err != nil {
		t.Fatalf("push containerDisk: %v", err)
	}
	return ref
}

// counter counts the requests a registry gets.
func counter(n *atomic.Int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			next.ServeHTTP(w, r)
		})
	}
}

// newStore opens a store in a fresh directory, with anonymous registry
// access so the tests do not depend on the user's Docker config.
func newStore(t testing.TB) *Store {
	t.Helper()
	return openStore(t, filepath.Join(t.TempDir(), "store"))
}

func openStore(t testing.TB, root string) *Store {
	t.Helper()
	s, err := New(root, WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// qcow2Header is the start of a qcow2 v3 image of the given virtual size.
func qcow2Header(size uint64) []byte {
	h := make([]byte, 512)
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint32(h[4:], 3)     // version
	binary.BigEndian.PutUint32(h[20:], 16)   // cluster bits
	binary.BigEndian.PutUint64(h[24:], size) // virtual size
	return h
}

// dirNames lists a directory of the store.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}
