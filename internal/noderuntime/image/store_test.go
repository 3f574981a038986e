package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/virtkube/virtkube/test/containerdisk"
)

func TestRemoveAndGC(t *testing.T) {
	host := containerdisk.StartRegistry(t)
	base := layerOf(t, entry{name: "etc/base", body: "base"})
	refA := push(t, host, "vm/a", "v1", base, layerOf(t, entry{name: "disk/a.img", body: "A"}))
	refB := push(t, host, "vm/b", "v1", base, layerOf(t, entry{name: "disk/b.img", body: "B"}))
	ctx := context.Background()
	s := newStore(t)
	a, err := s.Pull(ctx, refA, corev1.PullAlways)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Pull(ctx, refB, corev1.PullAlways)
	if err != nil {
		t.Fatal(err)
	}
	layers := func() []string { return dirNames(t, filepath.Join(s.Root(), layersDir)) }

	// Named images survive GC, whatever keep says.
	if err := s.GC(func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if got := layers(); len(got) != 3 {
		t.Fatalf("GC removed layers of named images: %q left", got)
	}

	if err := s.Remove(refA); err != nil {
		t.Fatalf("Remove(%s): %v", refA, err)
	}
	if _, err := s.Pull(ctx, refA, corev1.PullNever); err == nil {
		t.Errorf("Pull(Never) of a removed reference succeeded")
	}
	// An unnamed image a pod still uses is kept.
	if err := s.GC(func(d string) bool { return d == a.Digest }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.ContainerDisk(); err != nil {
		t.Errorf("GC removed an image keep asked for: %v", err)
	}
	// Then it goes, except for the layer b shares.
	if err := s.GC(nil); err != nil {
		t.Fatal(err)
	}
	if got := layers(); len(got) != 2 || !slices.Contains(got, filepath.Base(b.Layers[0])) || !slices.Contains(got, filepath.Base(b.Layers[1])) {
		t.Errorf("after GC layers/ holds %q, want b's two layers", got)
	}
	if got := dirNames(t, filepath.Join(s.Root(), imagesDir)); len(got) != 1 || !strings.HasPrefix(b.Digest, "sha256:") || got[0] != strings.TrimPrefix(b.Digest, "sha256:")+".json" {
		t.Errorf("after GC images/ holds %q, want only b's record", got)
	}
	if _, _, err := b.ContainerDisk(); err != nil {
		t.Errorf("b is broken after GC: %v", err)
	}

	if err := s.Remove(refA); !errors.Is(err, ErrNotPresent) {
		t.Errorf("Remove of an absent reference = %v, want ErrNotPresent", err)
	}
	var pe *PullError
	if err := s.Remove("Bad Name"); !errors.As(err, &pe) || pe.Reason != ReasonInvalidImageName {
		t.Errorf("Remove of a bad name = %v, want InvalidImageName", err)
	}
}

func TestRecoveryFromInterruptedWork(t *testing.T) {
	var requests atomic.Int64
	host := containerdisk.StartRegistry(t, counter(&requests))
	ref := push(t, host, "vm/disk", "v1",
		layerOf(t, entry{name: "etc/base", body: "base"}),
		layerOf(t, entry{name: "disk/disk.img", body: "disk"}),
	)
	ctx := context.Background()
	s := newStore(t)
	img, err := s.Pull(ctx, ref, corev1.PullIfNotPresent)
	if err != nil {
		t.Fatal(err)
	}

	// What a crash can leave: a half-unpacked layer in tmp/, a record
	// write cut short, and (by hand) a lost layer.
	half := filepath.Join(s.Root(), tmpDir, "layer-0123456789ab-42")
	if err := os.MkdirAll(filepath.Join(half, "disk"), 0o755); err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(s.Root(), imagesDir, ".abc.json.123")
	if err := os.WriteFile(partial, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(img.Layers[1]); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, s.Root())
	if got := dirNames(t, filepath.Join(s.Root(), tmpDir)); len(got) != 0 {
		t.Errorf("New left %q in tmp/", got)
	}
	before := requests.Load()
	again, err := s.Pull(ctx, ref, corev1.PullIfNotPresent)
	if err != nil {
		t.Fatalf("Pull after losing a layer: %v", err)
	}
	if requests.Load() == before {
		t.Errorf("IfNotPresent used an image with a missing layer instead of pulling")
	}
	if p, _, err := again.ContainerDisk(); err != nil {
		t.Errorf("ContainerDisk after re-pull: %v", err)
	} else if b, _ := os.ReadFile(p); string(b) != "disk" {
		t.Errorf("disk holds %q after re-pull", b)
	}
	if err := s.GC(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(partial); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("GC kept the partial record %s", partial)
	}
}

func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	unlock, err := k.lock(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	// Another key is free.
	other, err := k.lock(context.Background(), "y")
	if err != nil {
		t.Fatalf("lock of another key: %v", err)
	}
	other()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := k.lock(ctx, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lock of a held key = %v, want the context's error", err)
	}

	got := make(chan error, 1)
	go func() {
		u, err := k.lock(context.Background(), "x")
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never got the lock after unlock")
	}
}
