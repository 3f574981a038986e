package containerdisk_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/virtkube/virtkube/test/containerdisk"
)

func TestPushServesAContainerDisk(t *testing.T) {
	ctx := context.Background()
	host := containerdisk.StartRegistry(t)
	disk := filepath.Join(t.TempDir(), "disk.img")
	content := []byte("raw disk bytes")
	if err := os.WriteFile(disk, content, 0o600); err != nil {
		t.Fatal(err)
	}

	ref, err := containerdisk.Push(ctx, host, "vm/disk", "v1", disk)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if want := host + "/vm/disk:v1"; ref != want {
		t.Errorf("Push returned %q, want %q", ref, want)
	}

	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("pull back %s: %v", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Name != "disk/disk.img" {
			continue
		}
		if hdr.Uid != containerdisk.DiskUID || hdr.Gid != containerdisk.DiskGID || hdr.Mode != containerdisk.DiskMode {
			t.Errorf("disk entry %d:%d mode %o, want 107:107 mode 440", hdr.Uid, hdr.Gid, hdr.Mode)
		}
		got, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(content) {
			t.Errorf("disk content %q, want %q", got, content)
		}
	}
	if len(names) != 2 || names[0] != "disk/" || names[1] != "disk/disk.img" {
		t.Errorf("layer entries %q, want [disk/ disk/disk.img]", names)
	}
}

func TestBuildRejectsNonRegularFile(t *testing.T) {
	if _, err := containerdisk.Build(t.TempDir()); err == nil {
		t.Fatal("Build of a directory succeeded, want an error")
	}
}
