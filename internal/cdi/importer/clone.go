package importer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/virtkube/virtkube/internal/cdi"
)

const (
	// cloneRetryFor is how long a clone source keeps trying a target
	// upload server that refuses connections or answers 503: its pod may
	// still be starting.
	cloneRetryFor = 2 * time.Minute
	// cloneRetryEvery is the pause between two tries.
	cloneRetryEvery = 2 * time.Second
)

// runCloneSource sends o.SourceDir's disk.img, or all of o.SourceDevice,
// to o.UploadURL (ModeCloneSource).
func runCloneSource(ctx context.Context, o Options, prog *progress, log logr.Logger) error {
	token, err := readToken(o.TokenFile)
	if err != nil {
		return err
	}
	// The target is a pod on the pod network: never through a proxy the
	// environment may name for the outside world.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	c := &cloneSource{
		client: &http.Client{Transport: transport}, url: o.UploadURL, token: token,
		disk: filepath.Join(o.SourceDir, cdi.DiskFile), diskFlag: FlagSourceDir, progress: prog.set, log: log,
		retryFor: cloneRetryFor, retryEvery: cloneRetryEvery,
	}
	if o.SourceDevice != "" {
		c.disk, c.diskFlag = o.SourceDevice, FlagSourceDevice
	}
	return c.send(ctx)
}

// cloneSource PUTs a claim's disk to a clone's upload server.
type cloneSource struct {
	client     *http.Client
	url, token string
	// disk is a filesystem claim's disk.img or a block claim's device,
	// sent whole as a raw image; diskFlag is the flag that named it.
	disk       string
	diskFlag   string
	progress   func(float64)
	log        logr.Logger
	retryFor   time.Duration
	retryEvery time.Duration
}

// errRetry marks a try the target may take next time.
var errRetry = errors.New("upload server not ready")

// send sends the disk, trying again for retryFor while the upload server
// refuses connections or answers 503.
func (c *cloneSource) send(ctx context.Context) error {
	f, err := os.Open(c.disk)
	if err != nil {
		return fmt.Errorf("--%s: %w", c.diskFlag, err)
	}
	defer f.Close()
	size, err := cdi.DeviceSize(f)
	if err != nil {
		return fmt.Errorf("--%s: %w", c.diskFlag, err)
	}
	c.log.Info("sending", "disk", c.disk, "bytes", size, "url", c.url)
	deadline := time.Now().Add(c.retryFor)
	for {
		err := c.try(ctx, io.NewSectionReader(f, 0, size), size)
		if err == nil {
			c.log.Info("sent", "bytes", size)
			return nil
		}
		if !errors.Is(err, errRetry) || time.Now().After(deadline) {
			return err
		}
		c.log.Info("upload server not ready; trying again", "err", err.Error(), "after", c.retryEvery)
		select {
		case <-ctx.Done():
			return fmt.Errorf("send disk to %s: %w", c.url, context.Cause(ctx))
		case <-time.After(c.retryEvery):
		}
	}
}

// try PUTs body, size bytes, once. A refused connection or a 503 is
// errRetry.
func (c *cloneSource) try(ctx context.Context, body io.Reader, size int64) error {
	c.progress(0)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url, cdi.ProgressReader(body, size, c.progress))
	if err != nil {
		return fmt.Errorf("--%s %q: %w", FlagUploadURL, c.url, err)
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.client.Do(req)
	if err != nil {
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err // a *url.Error repeats the URL; say it once
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("send disk to %s: %w: %w", c.url, errRetry, err)
		}
		return fmt.Errorf("send disk to %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	msg := firstLine(resp.Body)
	if resp.StatusCode == http.StatusServiceUnavailable {
		return fmt.Errorf("send disk to %s: %w: %s: %s", c.url, errRetry, resp.Status, msg)
	}
	if msg == "" {
		return fmt.Errorf("send disk to %s: %s", c.url, resp.Status)
	}
	return fmt.Errorf("send disk to %s: %s: %s", c.url, resp.Status, msg)
}

// firstLine is the first line of an error response's body.
func firstLine(r io.Reader) string {
	s := bufio.NewScanner(io.LimitReader(r, 4096))
	s.Buffer(make([]byte, 4096), 4096)
	if s.Scan() {
		return strings.TrimSpace(s.Text())
	}
	return ""
}
