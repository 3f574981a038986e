package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/atomicfile"
)

// platform is the only one this node runs.
var platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Pull makes the image ref names available locally, as kubelet does for a
// container with the given pull policy:
//   - Always asks the registry what ref names now and fetches what is missing;
//   - IfNotPresent uses the stored image for ref without contacting the
//     registry, and pulls only when there is none;
//   - Never uses the stored image or fails with reason ErrImageNeverPull.
//
// Failures a Pod's status should show are a *PullError (use errors.As).
// Registries on a loopback address (localhost, 127.0.0.0/8, ::1), and those
// the store was told are insecure (WithInsecureRegistries), are spoken to
// over plain HTTP, every other one over HTTPS with credentials from the
// store's keychain. An index is resolved to its linux/amd64 image.
func (s *Store) Pull(ctx context.Context, ref string, policy corev1.PullPolicy) (*Image, error) {
	r, err := s.parseReference(ref)
	if err != nil {
		return nil, invalidNameError(ref, err)
	}
	key := r.Name()
	switch policy {
	case corev1.PullNever, corev1.PullIfNotPresent:
		s.meta.Lock()
		img, err := s.local(key)
		s.meta.Unlock()
		if err != nil {
			return nil, &PullError{
				Reason:  ReasonErrImagePull,
				Message: fmt.Sprintf("image %q: local image store: %v", ref, err),
				Err:     err,
			}
		}
		if img != nil {
			return img, nil
		}
		if policy == corev1.PullNever {
			return nil, neverPullError(ref)
		}
	case corev1.PullAlways:
	default:
		return nil, fmt.Errorf("pull image %q: unknown pull policy %q: want %s, %s or %s",
			ref, policy, corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever)
	}
	img, err := s.pull(ctx, r)
	if err != nil {
		return nil, pullError(ref, r, err)
	}
	return img, nil
}

// parseReference parses ref the way kubelet does (docker.io and :latest by
// default) and marks loopback and insecure registries as plain HTTP.
func (s *Store) parseReference(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if s.plainHTTP(r.Context().RegistryStr()) {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

// plainHTTP reports whether the registry at hostport is spoken to without
// TLS: a loopback one, or one the store was told is insecure.
func (s *Store) plainHTTP(hostport string) bool {
	return isLoopback(hostport) || s.insecure[hostport]
}

// isLoopback reports whether a registry host ("host", "host:port",
// "[v6]:port") is this machine's loopback.
func isLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// pull fetches r's manifest and whatever layers the store lacks, then
// records the image under r's name.
func (s *Store) pull(ctx context.Context, r name.Reference) (*Image, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()

	img, err := remote.Image(r, s.remoteOptions(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("manifest digest: %w", err)
	}
	key := r.Name()

	s.meta.Lock()
	have, rec, err := s.complete(digest.String(), key)
	s.meta.Unlock()
	if err != nil {
		return nil, fmt.Errorf("local image store: %w", err)
	}
	if have != nil {
		return s.commit(key, rec)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("fetch config: %w", err)
	}
	if (cf.OS != "" && cf.OS != platform.OS) || (cf.Architecture != "" && cf.Architecture != platform.Architecture) {
		return nil, fmt.Errorf("image is for %s/%s; this node runs %s", cf.OS, cf.Architecture, platform)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("fetch config: %w", err)
	}
	configDigest, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("config digest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("list layers: %w", err)
	}
	rec = &record{Digest: digest.String(), ConfigDigest: configDigest.String(), Config: rawConfig}
	for _, l := range layers {
		diffID, err := l.DiffID()
		if err != nil {
			return nil, fmt.Errorf("layer diffID: %w", err)
		}
		if err := s.ensureLayer(ctx, l, diffID); err != nil {
			return nil, err
		}
		rec.DiffIDs = append(rec.DiffIDs, diffID.String())
	}
	return s.commit(key, rec)
}

func (s *Store) remoteOptions(ctx context.Context) []remote.Option {
	base := s.transport
	if base == nil {
		base = remote.DefaultTransport
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithPlatform(platform),
		remote.WithAuthFromKeychain(s.keychain),
		remote.WithTransport(plainHTTPOnlyTo{next: base, allowed: s.plainHTTP}),
	}
}

// plainHTTPOnlyTo refuses plain-HTTP requests to any registry but those
// allowed (loopback and insecure ones). go-containerregistry would
// otherwise fall back to HTTP for private (RFC 1918) addresses, which a
// node must not do unasked.
type plainHTTPOnlyTo struct {
	next    http.RoundTripper
	allowed func(hostport string) bool
}

func (t plainHTTPOnlyTo) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !t.allowed(req.URL.Host) {
		return nil, fmt.Errorf("refusing plain HTTP to %s: only loopback registries and those listed as insecure are pulled without TLS", req.URL.Host)
	}
	return t.next.RoundTrip(req)
}

// ensureLayer makes layers/<hex of diffID> exist, unpacking l if no one has.
func (s *Store) ensureLayer(ctx context.Context, l v1.Layer, diffID v1.Hash) error {
	dst, err := s.layerPath(diffID.String())
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	if exists, err := pathExists(dst); err != nil || exists {
		return err
	}
	unlock, err := s.layers.lock(ctx, diffID.Hex)
	if err != nil {
		return fmt.Errorf("wait for layer %s: %w", diffID, err)
	}
	defer unlock()
	if exists, err := pathExists(dst); err != nil || exists {
		return err // another pull unpacked it while we waited
	}

	tmp, err := os.MkdirTemp(filepath.Join(s.root, tmpDir), "layer-"+diffID.Hex[:12]+"-")
	if err != nil {
		return fmt.Errorf("layer %s: %w", diffID, err)
	}
	done := false
	defer func() {
		if !done {
			_ = removeTree(tmp)
		}
	}()
	if err := fetchLayer(ctx, l, diffID, tmp); err != nil {
		return fmt.Errorf("layer %s: %w", diffID, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("layer %s: %w", diffID, err)
	}
	if err := syncFS(tmp); err != nil {
		return fmt.Errorf("layer %s: %w", diffID, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		if exists, _ := pathExists(dst); !exists {
			return fmt.Errorf("layer %s: %w", diffID, err)
		}
		return nil // put there by another process: ours is removed
	}
	done = true
	if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("layer %s: %w", diffID, err)
	}
	return nil
}

// fetchLayer streams l's uncompressed tar into dir and checks that the
// content is what diffID says.
func fetchLayer(ctx context.Context, l v1.Layer, diffID v1.Hash, dir string) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	defer rc.Close()
	h := sha256.New()
	tee := io.TeeReader(rc, h)
	if err := unpack(ctx, tee, dir); err != nil {
		return err
	}
	// The tar may end before the stream does (padding); hashing the rest
	// also lets the compressed stream verify its own digest at EOF.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID.String() {
		return fmt.Errorf("content has digest %s, not the one the image's config lists", got)
	}
	return nil
}

func pathExists(p string) (bool, error) {
	_, err := os.Lstat(p)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}
