package image

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// layer is a test layer: paths ending in "/" are directories, "->target"
// bodies are symbolic links, anything else a file with that content.
type layer map[string]string

// imageOf writes the layers (bottom first) to disk and returns an Image
// over them.
func imageOf(t *testing.T, layers ...layer) *Image {
	t.Helper()
	img := &Image{Reference: "test.example/vm:v1"}
	for i, l := range layers {
		dir := filepath.Join(t.TempDir(), "layer", string(rune('a'+i)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for p, body := range l {
			full := filepath.Join(dir, p)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			var err error
			switch {
			case strings.HasSuffix(p, "/"):
				err = os.MkdirAll(full, 0o755)
			case strings.HasPrefix(body, "->"):
				err = os.Symlink(strings.TrimPrefix(body, "->"), full)
			default:
				err = os.WriteFile(full, []byte(body), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		img.Layers = append(img.Layers, dir)
	}
	return img
}

func TestLookup(t *testing.T) {
	tests := []struct {
		name   string
		layers []layer
		path   string
		want   string // content of the file found; "" means not found
	}{
		{"single layer", []layer{{"etc/os-release": "one"}}, "/etc/os-release", "one"},
		{"relative path", []layer{{"etc/os-release": "one"}}, "etc/os-release", "one"},
		{"unclean path", []layer{{"etc/os-release": "one"}}, "/etc/../etc/./os-release", "one"},
		{"lower layer shows through", []layer{{"a": "low"}, {"b": "up"}}, "/a", "low"},
		{"top layer wins", []layer{{"a": "low"}, {"a": "up"}}, "/a", "up"},
		{"whiteout deletes", []layer{{"d/a": "low"}, {"d/.wh.a": ""}}, "/d/a", ""},
		{"whiteout then recreate in a later layer", []layer{{"d/a": "low"}, {"d/.wh.a": ""}, {"d/a": "new"}}, "/d/a", "new"},
		{"whiteout beside new file in the same layer", []layer{{"d/a": "low"}, {"d/.wh.a": "", "d/a": "same"}}, "/d/a", "same"},
		{"whiteout of a directory", []layer{{"d/a": "low"}, {".wh.d": ""}}, "/d/a", ""},
		{"directory deleted and recreated", []layer{{"d/a": "low"}, {".wh.d": "", "d/b": "new"}}, "/d/a", ""},
		{"recreated directory's own files", []layer{{"d/a": "low"}, {".wh.d": "", "d/b": "new"}}, "/d/b", "new"},
		{"opaque directory hides lower content", []layer{{"d/a": "low"}, {"d/.wh..wh..opq": "", "d/b": "new"}}, "/d/a", ""},
		{"opaque ancestor hides deeper content", []layer{{"d/e/a": "low"}, {"d/.wh..wh..opq": ""}}, "/d/e/a", ""},
		{"opaque directory keeps its own files", []layer{{"d/a": "low"}, {"d/.wh..wh..opq": "", "d/a": "new"}}, "/d/a", "new"},
		{"file hides lower directory", []layer{{"d/a": "low"}, {"d": "file"}}, "/d/a", ""},
		{"symlink in the path is not followed", []layer{{"real/a": "x", "d": "->real"}}, "/d/a", ""},
		{"whiteout files are invisible", []layer{{"d/.wh.a": ""}}, "/d/.wh.a", ""},
		{"missing", []layer{{"a": "x"}}, "/b", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := imageOf(t, tt.layers...)
			got, err := img.Lookup(tt.path)
			if tt.want == "" {
				if !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Lookup(%q) = %q, %v; want not exist", tt.path, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lookup(%q): %v", tt.path, err)
			}
			if b, _ := os.ReadFile(got); string(b) != tt.want {
				t.Errorf("Lookup(%q) found %s holding %q, want %q", tt.path, got, b, tt.want)
			}
		})
	}
}

func TestLookupRoot(t *testing.T) {
	img := imageOf(t, layer{"a": "x"})
	if _, err := img.Lookup("/"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Lookup(/) = %v, want fs.ErrInvalid", err)
	}
}

func TestContainerDisk(t *testing.T) {
	qcow2 := string(qcow2Header(1 << 30))
	tests := []struct {
		name       string
		layers     []layer
		wantFile   string
		wantFormat string
		wantErr    string // part of the message; a not-containerDisk error
	}{
		{name: "raw", layers: []layer{{"disk/disk.img": "raw bytes"}}, wantFile: "disk.img", wantFormat: FormatRaw},
		{name: "qcow2", layers: []layer{{"disk/fedora.qcow2": qcow2}}, wantFile: "fedora.qcow2", wantFormat: FormatQCOW2},
		{name: "qcow2 magic decides, not the name", layers: []layer{{"disk/disk.img": qcow2}}, wantFile: "disk.img", wantFormat: FormatQCOW2},
		{name: "empty disk file", layers: []layer{{"disk/disk.img": ""}}, wantFile: "disk.img", wantFormat: FormatRaw},
		{name: "disk in a second layer", layers: []layer{{"etc/x": "base"}, {"disk/disk.img": "d"}}, wantFile: "disk.img", wantFormat: FormatRaw},
		{name: "replaced by whiteout", layers: []layer{{"disk/old.img": "old"}, {"disk/.wh.old.img": "", "disk/new.qcow2": qcow2}}, wantFile: "new.qcow2", wantFormat: FormatQCOW2},
		{name: "replaced by opaque dir", layers: []layer{{"disk/a.img": "a", "disk/b.img": "b"}, {"disk/.wh..wh..opq": "", "disk/c.img": "c"}}, wantFile: "c.img", wantFormat: FormatRaw},
		{name: "lower disk overwritten", layers: []layer{{"disk/disk.img": "old"}, {"disk/disk.img": qcow2}}, wantFile: "disk.img", wantFormat: FormatQCOW2},
		{name: "no /disk", layers: []layer{{"etc/x": "x"}}, wantErr: "has no directory /disk/"},
		{name: "/disk is a file", layers: []layer{{"disk": "x"}}, wantErr: "has no directory /disk/"},
		{name: "/disk whited out", layers: []layer{{"disk/disk.img": "x"}, {".wh.disk": ""}}, wantErr: "has no directory /disk/"},
		{name: "empty /disk", layers: []layer{{"disk/": ""}}, wantErr: "has no disk under /disk/: a containerDisk needs exactly one"},
		{name: "only disk deleted", layers: []layer{{"disk/disk.img": "x"}, {"disk/.wh.disk.img": ""}}, wantErr: "has no disk under /disk/"},
		{name: "only a symlink", layers: []layer{{"disk/disk.img": "->/elsewhere.img"}}, wantErr: "has no disk under /disk/, only disk.img (not regular files)"},
		{name: "two disks", layers: []layer{{"disk/a.img": "a"}, {"disk/b.qcow2": qcow2}}, wantErr: "has 2 files under /disk/ (a.img, b.qcow2): a containerDisk needs exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := imageOf(t, tt.layers...)
			p, format, err := img.ContainerDisk()
			if tt.wantErr != "" {
				if !errors.Is(err, ErrNotContainerDisk) {
					t.Fatalf("ContainerDisk() = %q, %q, %v; want an ErrNotContainerDisk error", p, format, err)
				}
				if want := "image test.example/vm:v1 " + tt.wantErr; !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("ContainerDisk(): %v", err)
			}
			if filepath.Base(p) != tt.wantFile || format != tt.wantFormat {
				t.Errorf("ContainerDisk() = %s (%s), want %s (%s)", filepath.Base(p), format, tt.wantFile, tt.wantFormat)
			}
		})
	}
}

func TestRepoDigest(t *testing.T) {
	img := &Image{Reference: "127.0.0.1:5000/vm/disk:v1", Digest: "sha256:" + strings.Repeat("ab", 32)}
	if want := "127.0.0.1:5000/vm/disk@sha256:" + strings.Repeat("ab", 32); img.RepoDigest() != want {
		t.Errorf("RepoDigest() = %q, want %q", img.RepoDigest(), want)
	}
}
