package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestUnpackRejectsEscapes(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
	}{
		{"absolute path", []entry{{name: "/etc/evil", body: "x"}}},
		{"parent directory", []entry{{name: "../outside/new", body: "x"}}},
		{"parent after clean", []entry{{name: "a/../../outside/new", body: "x"}}},
		{"through absolute symlink", []entry{
			{name: "link", typ: tar.TypeSymlink, link: "/"},
			{name: "link/new", body: "x"},
		}},
		{"through relative symlink", []entry{
			{name: "link", typ: tar.TypeSymlink, link: "../outside"},
			{name: "link/new", body: "x"},
		}},
		{"through symlink staying inside", []entry{
			{name: "d/", typ: tar.TypeDir},
			{name: "link", typ: tar.TypeSymlink, link: "d"},
			{name: "link/new", body: "x"},
		}},
		{"hard link outside", []entry{{name: "h", typ: tar.TypeLink, link: "../outside/secret"}}},
		{"hard link absolute", []entry{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, layer := layerDirs(t)
			err := unpack(context.Background(), bytes.NewReader(tarOf(t, tt.entries...)), layer)
			if !errors.Is(err, ErrUnsafeLayer) {
				t.Fatalf("unpack = %v, want an error matching ErrUnsafeLayer", err)
			}
			checkOutsideUntouched(t, base)
		})
	}
}

func TestUnpackNeverWritesThroughSymlinks(t *testing.T) {
	base, layer := layerDirs(t)
	err := unpack(context.Background(), bytes.NewReader(tarOf(t,
		entry{name: "s", typ: tar.TypeSymlink, link: "../outside/secret"},
		entry{name: "s", body: "replaced"},
		entry{name: "d", typ: tar.TypeSymlink, link: "../outside"},
		entry{name: "d/", typ: tar.TypeDir},
	)), layer)
	if err != nil {
		t.Fatalf("unpack: %v", err)
	}
	checkOutsideUntouched(t, base)
	if got, err := os.ReadFile(filepath.Join(layer, "s")); err != nil || string(got) != "replaced" {
		t.Errorf("s = %q, %v; want the regular file that replaced the link", got, err)
	}
	if fi, err := os.Lstat(filepath.Join(layer, "d")); err != nil || !fi.IsDir() {
		t.Errorf("d is %v, %v; want the directory that replaced the link", fi, err)
	}
}

// layerDirs makes base/outside/secret and an empty base/layer.
func layerDirs(t *testing.T) (base, layer string) {
	t.Helper()
	base = t.TempDir()
	layer = filepath.Join(base, "layer")
	if err := os.Mkdir(layer, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(base, "outside"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "outside", "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	return base, layer
}

func checkOutsideUntouched(t *testing.T, base string) {
	t.Helper()
	if got := dirNames(t, base); !slices.Equal(got, []string{"layer", "outside"}) {
		t.Errorf("%s holds %q, want only layer and outside", base, got)
	}
	if got := dirNames(t, filepath.Join(base, "outside")); !slices.Equal(got, []string{"secret"}) {
		t.Errorf("outside/ holds %q, want only secret", got)
	}
	if got, _ := os.ReadFile(filepath.Join(base, "outside", "secret")); string(got) != "secret" {
		t.Errorf("outside/secret changed to %q", got)
	}
	if _, err := os.Lstat("/etc/evil"); err == nil {
		t.Errorf("/etc/evil exists")
	}
}

func TestUnpackIsFaithful(t *testing.T) {
	_, layer := layerDirs(t)
	err := unpack(context.Background(), bytes.NewReader(tarOf(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o700},
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "bin/tool", body: "#!/bin/sh\n", mode: 0o4755},
		entry{name: "bin/tool2", typ: tar.TypeLink, link: "bin/tool"},
		entry{name: "etc/conf", body: "first", mode: 0o600},
		entry{name: "etc/conf", body: "second", mode: 0o640, uid: 1000, gid: 1001},
		entry{name: "etc/link", typ: tar.TypeSymlink, link: "/etc/conf"},
		entry{name: "ro/", typ: tar.TypeDir, mode: 0o555},
		entry{name: "ro/f", body: "in a read-only dir", mode: 0o444},
		entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		entry{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o644},
		entry{name: "disk/.wh.gone"},
		entry{name: "implicit/parent/file", body: "x"},
	)), layer)
	if err != nil {
		t.Fatalf("unpack: %v", err)
	}

	modes := []struct {
		path string
		want fs.FileMode
	}{
		{"bin", fs.ModeDir | 0o755},
		{"bin/tool", 0o755 | fs.ModeSetuid},
		{"etc/conf", 0o640},
		{"ro", fs.ModeDir | 0o555},
		{"ro/f", 0o444},
		{"implicit/parent", fs.ModeDir | 0o755},
		{"disk/.wh.gone", 0o644},
	}
	for _, m := range modes {
		fi, err := os.Lstat(filepath.Join(layer, m.path))
		if err != nil {
			t.Errorf("%s: %v", m.path, err)
			continue
		}
		if fi.Mode() != m.want {
			t.Errorf("%s: mode %v, want %v", m.path, fi.Mode(), m.want)
		}
		if want := time.Unix(1700000000, 0); m.path != "implicit/parent" && !fi.ModTime().Equal(want) {
			t.Errorf("%s: mtime %v, want %v", m.path, fi.ModTime(), want)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(layer, "etc/conf")); string(got) != "second" {
		t.Errorf("etc/conf = %q, want the later entry's \"second\"", got)
	}
	if os.Geteuid() == 0 {
		st := statOf(t, filepath.Join(layer, "etc/conf"))
		if st.Uid != 1000 || st.Gid != 1001 {
			t.Errorf("etc/conf owned by %d:%d, want 1000:1001", st.Uid, st.Gid)
		}
	}
	if target, err := os.Readlink(filepath.Join(layer, "etc/link")); err != nil || target != "/etc/conf" {
		t.Errorf("etc/link -> %q, %v; want /etc/conf kept verbatim", target, err)
	}
	if a, b := statOf(t, filepath.Join(layer, "bin/tool")), statOf(t, filepath.Join(layer, "bin/tool2")); a.Ino != b.Ino {
		t.Errorf("bin/tool2 is not a hard link of bin/tool")
	}
	for _, p := range []string{"dev/null", "dev/fifo"} {
		if _, err := os.Lstat(filepath.Join(layer, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists; devices and FIFOs are skipped", p)
		}
	}
}

func statOf(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// TestUnpackStreamsSparsely unpacks a 256 MiB disk that is zeros but for a
// few bytes: it must end up as holes on disk, read back intact.
func TestUnpackStreamsSparsely(t *testing.T) {
	const size = 256 << 20
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Name: "disk/disk.img", Typeflag: tar.TypeReg, Size: size, Mode: 0o644})
		if err == nil {
			_, err = io.WriteString(tw, "head")
		}
		if err == nil {
			_, err = io.CopyN(tw, zeroReader{}, size-8)
		}
		if err == nil {
			_, err = io.WriteString(tw, "tail")
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	_, layer := layerDirs(t)
	if err := unpack(context.Background(), pr, layer); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	p := filepath.Join(layer, "disk/disk.img")
	st := statOf(t, p)
	if st.Size != size {
		t.Errorf("size %d, want %d", st.Size, size)
	}
	if used := st.Blocks * 512; used > 1<<20 {
		t.Errorf("the disk uses %d bytes on disk, want holes for its zeros", used)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4)
	for off, want := range map[int64]string{0: "head", size - 4: "tail", size / 2: "\x00\x00\x00\x00"} {
		if _, err := f.ReadAt(buf, off); err != nil || string(buf) != want {
			t.Errorf("at %d: %q, %v; want %q", off, buf, err, want)
		}
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestUnpackStopsOnCancelAndBadInput(t *testing.T) {
	good := tarOf(t, entry{name: "a", body: string(bytes.Repeat([]byte("x"), 1000))})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name string
		ctx  context.Context
		tar  []byte
		want func(error) bool
	}{
		{"cancelled", cancelled, good, func(err error) bool { return errors.Is(err, context.Canceled) }},
		{"truncated", context.Background(), good[:900], func(err error) bool { return err != nil && !errors.Is(err, ErrUnsafeLayer) }},
		{"not a tar", context.Background(), bytes.Repeat([]byte("not a tar "), 100), func(err error) bool { return err != nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, layer := layerDirs(t)
			if err := unpack(tt.ctx, bytes.NewReader(tt.tar), layer); !tt.want(err) {
				t.Errorf("unpack = %v", err)
			}
		})
	}
}
