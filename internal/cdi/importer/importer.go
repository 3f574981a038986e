package importer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/containerdisk"
	"github.com/virtkube/virtkube/internal/noderuntime/image"
)

// diskSocketWait bounds the wait for the container-disk program of a
// node-pulled image to serve its disk: its container may start after ours.
const diskSocketWait = 2 * time.Minute

// runImport fills dst, o's claim, from o.Source (ModeImport).
func runImport(ctx context.Context, o Options, dst dest, prog *progress, log logr.Logger) error {
	switch o.Source {
	case SourceBlank:
		return dst.blank(log)
	case SourceHTTP:
		return download(ctx, http.DefaultClient, o.Endpoint, dst, prog.set, log)
	case SourceRegistry:
		if o.DiskSocket != "" {
			return importServedDisk(ctx, o.DiskSocket, o.Endpoint, dst, prog.set, log)
		}
		return pullDisk(ctx, o.Endpoint, o.Scratch, o.InsecureRegistry, dst, prog.set, log)
	}
	return fmt.Errorf("--%s %q: cannot be imported", FlagSource, o.Source)
}

// download imports the image at src into dst, telling progress the share
// of the response's Content-Length read (of the compressed bytes, for a
// compressed image; for a device, see dest.importStream).
func download(ctx context.Context, c *http.Client, src string, dst dest, progress func(float64), log logr.Logger) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return fmt.Errorf("--%s %q: %w", FlagEndpoint, src, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		// A *url.Error repeats the URL; say it once.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("download %s: %w", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download %s: %s", src, resp.Status)
	}
	log.Info("downloading", "url", src, "bytes", resp.ContentLength, "dest", dst)
	n, err := dst.importStream(ctx, resp.Body, resp.ContentLength, progress)
	if err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	log.Info("imported", "url", src, "bytes", n)
	return nil
}

// pullDisk pulls the containerDisk image endpoint (docker://IMAGE) into a
// temporary image store under scratch (empty: os.TempDir()) and imports its
// disk into dst, telling progress how far qemu-img has converted it. The
// store goes afterwards: nothing is kept between imports. insecure speaks
// plain HTTP to the image's registry.
func pullDisk(ctx context.Context, endpoint, scratch string, insecure bool, dst dest, progress func(float64), log logr.Logger) error {
	ref, ok := strings.CutPrefix(endpoint, "docker://")
	if !ok || ref == "" {
		return fmt.Errorf("--%s %q: want docker://<image>", FlagEndpoint, endpoint)
	}
	tmp, err := os.MkdirTemp(scratch, "virtkube-registry-import-")
	if err != nil {
		return fmt.Errorf("--%s: %w", FlagScratch, err)
	}
	defer os.RemoveAll(tmp)
	var opts []image.Option
	if insecure {
		r, err := name.ParseReference(ref)
		if err != nil {
			return fmt.Errorf("--%s %q: %w", FlagEndpoint, endpoint, err)
		}
		opts = append(opts, image.WithInsecureRegistries(r.Context().RegistryStr()))
	}
	store, err := image.New(tmp, opts...)
	if err != nil {
		return fmt.Errorf("--%s: %w", FlagScratch, err)
	}
	log.Info("pulling", "image", ref)
	img, err := store.Pull(ctx, ref, corev1.PullAlways)
	if err != nil {
		return err // names the image and the cause
	}
	disk, _, err := img.ContainerDisk()
	if err != nil {
		return err // names the image and what it holds instead
	}
	log.Info("importing", "image", ref, "disk", disk, "dest", dst)
	if err := dst.importFile(ctx, disk, progress); err != nil {
		return fmt.Errorf("import the disk of image %s: %w", ref, err)
	}
	return nil
}

// importServedDisk imports the disk that the pod's container-disk program
// serves on socket (an image the node pulled: CDI's pullMethod node) into
// dst, telling progress how far qemu-img has converted it. It holds the
// program while it reads the disk and lets it go afterwards, so that the
// image's container ends and the pod can complete. endpoint, when set,
// names the image in messages.
func importServedDisk(ctx context.Context, socket, endpoint string, dst dest, progress func(float64), log logr.Logger) error {
	what := "the containerDisk on " + socket
	if endpoint != "" {
		what = "image " + strings.TrimPrefix(endpoint, "docker://")
	}
	log.Info("waiting for the containerDisk", "socket", socket, "timeout", diskSocketWait)
	wctx, cancel := context.WithTimeout(ctx, diskSocketWait)
	var h containerdisk.Holder
	disk, err := h.Resolve(wctx, socket)
	cancel()
	switch {
	case err != nil && ctx.Err() == nil:
		return fmt.Errorf("--%s: disk of %s not served within %s: %w", FlagDiskSocket, what, diskSocketWait, err)
	case err != nil:
		return fmt.Errorf("--%s: disk of %s: %w", FlagDiskSocket, what, err)
	}
	defer h.Release()
	log.Info("importing", "disk", disk, "dest", dst)
	if err := dst.importFile(ctx, disk, progress); err != nil {
		return fmt.Errorf("import the disk of %s: %w", what, err)
	}
	return nil
}
