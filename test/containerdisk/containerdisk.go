// Package containerdisk builds KubeVirt containerDisk images for tests and
// serves them from an in-process OCI registry on loopback.
//
// A containerDisk built here looks like one made by KubeVirt's documented
// Dockerfile (FROM scratch; ADD --chown=107:107 disk.img /disk/): one layer
// holding the directory /disk (root, 0755) and the disk at /disk/<basename>,
// owned by uid/gid 107 (qemu in KubeVirt's launcher) with mode 0440, which
// qemu as 107 and root (by CAP_DAC_OVERRIDE) can read.
package containerdisk

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Owner and mode of the disk file, as in KubeVirt's containerDisks.
const (
	DiskUID  = 107
	DiskGID  = 107
	DiskMode = 0o440
)

// StartRegistry serves an in-memory OCI registry over plain HTTP on
// 127.0.0.1 until the test ends and returns its host:port. Each wrap (for
// example a request counter) is applied around the registry's handler in
// order, so the last one sees requests first.
func StartRegistry(t testing.TB, wrap ...func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	for _, w := range wrap {
		h = w(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// Push builds a containerDisk holding the file at diskPath and pushes it to
// the registry at registryHost (plain HTTP) as repo:tag. It returns the
// reference to pull it by, "<registryHost>/<repo>:<tag>".
func Push(ctx context.Context, registryHost, repo, tag, diskPath string) (string, error) {
	img, err := Build(diskPath)
	if err != nil {
		return "", err
	}
	return PushImage(ctx, registryHost, repo, tag, img)
}

// Build makes the containerDisk image for the file at diskPath without
// pushing it. The disk is streamed from the file whenever the image's layer
// is read, never held in memory.
func Build(diskPath string) (v1.Image, error) {
	fi, err := os.Stat(diskPath)
	if err != nil {
		return nil, fmt.Errorf("build containerDisk: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("build containerDisk: %s is not a regular file", diskPath)
	}
	base := filepath.Base(diskPath)
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return diskTar(diskPath, base, fi.Size())
	})
	if err != nil {
		return nil, fmt.Errorf("build containerDisk layer: %w", err)
	}
	return Image(layer)
}

// Image makes a linux/amd64 image from scratch with the given layers,
// bottom first: for tests that need more than one layer.
func Image(layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		OS:           "linux",
		Architecture: "amd64",
	})
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	img, err = mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, fmt.Errorf("image layers: %w", err)
	}
	return img, nil
}

// PushImage pushes img to the registry at registryHost (plain HTTP) as
// repo:tag and returns the reference "<registryHost>/<repo>:<tag>".
func PushImage(ctx context.Context, registryHost, repo, tag string, img v1.Image) (string, error) {
	ref := fmt.Sprintf("%s/%s:%s", registryHost, repo, tag)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return ref, nil
}

// diskTar streams a tar of /disk/ and the disk file from a pipe.
func diskTar(diskPath, base string, size int64) (io.ReadCloser, error) {
	f, err := os.Open(diskPath)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		pw.CloseWithError(writeDiskTar(pw, f, base, size))
	}()
	return pr, nil
}

func writeDiskTar(w io.Writer, disk io.Reader, base string, size int64) error {
	mtime := time.Unix(0, 0)
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir, Name: "disk/", Mode: 0o755, ModTime: mtime,
	}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: "disk/" + base, Size: size, Mode: DiskMode,
		Uid: DiskUID, Gid: DiskGID, ModTime: mtime,
	}); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, disk, size); err != nil {
		return fmt.Errorf("copy disk: %w", err)
	}
	return tw.Close()
}

var (
	serverOnce sync.Once
	serverBin  string
	serverErr  error
)

// ServerBinary is the container-disk program, built without cgo as the
// Makefile builds it, once per test binary.
func ServerBinary() (string, error) {
	serverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "container-disk-bin")
		if err != nil {
			serverErr = err
			return
		}
		serverBin = filepath.Join(dir, "container-disk")
		cmd := exec.Command("go", "build", "-o", serverBin, "github.com/virtkube/virtkube/cmd/container-disk")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			serverErr = fmt.Errorf("build container-disk: %w\n%s", err, out)
		}
	})
	return serverBin, serverErr
}

// Serve runs the container-disk program for disk on socket, as a
// containerDisk's container does in a launcher pod, until the test ends or
// the launcher holding it lets go.
func Serve(t testing.TB, socket, disk string) {
	t.Helper()
	bin, err := ServerBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--socket", socket)
	cmd.Env = append(os.Environ(), "VIRTKUBE_CONTAINER_DISK_FILE="+disk)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}
