package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/virtkube/virtkube/internal/atomicfile"
)

const (
	layersDir = "layers"
	imagesDir = "images"
	tmpDir    = "tmp"
	refsFile  = "refs.json"
)

// Store is the node's image store under one root directory (see the package
// documentation for its layout).
type Store struct {
	root      string
	keychain  authn.Keychain
	transport http.RoundTripper
	// insecure are registries ("host:port") spoken to over plain HTTP.
	insecure map[string]bool

	// gc is held for reading by every pull and for writing by GC, so GC never
	// removes a layer a pull has unpacked but not recorded yet.
	gc sync.RWMutex
	// meta serialises read-modify-write of refs.json and image records.
	meta sync.Mutex
	// layers lets one pull at a time unpack a given layer.
	layers keyedMutex
}

// Option changes how a Store talks to registries.
type Option func(*Store)

// WithKeychain sets where registry credentials come from
// (default: authn.DefaultKeychain, i.e. the Docker config of the user).
func WithKeychain(k authn.Keychain) Option {
	return func(s *Store) { s.keychain = k }
}

// WithTransport sets the HTTP transport for registry requests
// (default: remote.DefaultTransport). Whatever it is, plain HTTP is only
// used for loopback registries.
func WithTransport(t http.RoundTripper) Option {
	return func(s *Store) { s.transport = t }
}

// WithInsecureRegistries makes the store speak plain HTTP to the registries
// given as "host[:port]" (CDI's insecureRegistries), as it does to loopback
// ones.
func WithInsecureRegistries(hosts ...string) Option {
	return func(s *Store) {
		if s.insecure == nil {
			s.insecure = map[string]bool{}
		}
		for _, h := range hosts {
			s.insecure[h] = true
		}
	}
}

// New opens the store at root, creating it if needed, and removes what an
// interrupted pull left in root/tmp. One process owns a root.
func New(root string, opts ...Option) (*Store, error) {
	s := &Store{root: root, keychain: authn.DefaultKeychain}
	for _, o := range opts {
		o(s)
	}
	for _, d := range []string{layersDir, imagesDir} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("create image store: %w", err)
		}
	}
	if err := s.resetTmp(); err != nil {
		return nil, fmt.Errorf("create image store: %w", err)
	}
	return s, nil
}

// Root is the directory the store lives in.
func (s *Store) Root() string { return s.root }

func (s *Store) resetTmp() error {
	tmp := filepath.Join(s.root, tmpDir)
	if err := removeTree(tmp); err != nil {
		return fmt.Errorf("clear %s: %w", tmp, err)
	}
	return os.Mkdir(tmp, 0o700)
}

// record is one image as stored in images/<hex>.json.
type record struct {
	Digest       string          `json:"digest"`
	ConfigDigest string          `json:"configDigest"`
	Config       json.RawMessage `json:"config"`
	DiffIDs      []string        `json:"diffIDs"`
	References   []string        `json:"references"`
}

func (s *Store) recordPath(digest string) (string, error) {
	hex, err := hexOf(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.root, imagesDir, hex+".json"), nil
}

func (s *Store) layerPath(diffID string) (string, error) {
	hex, err := hexOf(diffID)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.root, layersDir, hex), nil
}

// hexOf returns the hex part of a sha256 digest, the only kind the store
// names files by.
func hexOf(digest string) (string, error) {
	h, err := v1.NewHash(digest)
	if err != nil {
		return "", fmt.Errorf("digest %q: %w", digest, err)
	}
	if h.Algorithm != "sha256" {
		return "", fmt.Errorf("digest %q: only sha256 is supported", digest)
	}
	return h.Hex, nil
}

func (s *Store) readRefs() (map[string]string, error) {
	refs := map[string]string{}
	b, err := os.ReadFile(filepath.Join(s.root, refsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return refs, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read references: %w", err)
	}
	if err := json.Unmarshal(b, &refs); err != nil {
		return nil, fmt.Errorf("read references: %s: %w", refsFile, err)
	}
	return refs, nil
}

func (s *Store) writeRefs(refs map[string]string) error {
	b, err := json.MarshalIndent(refs, "", "  ")
	if err != nil {
		return fmt.Errorf("write references: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(s.root, refsFile), b, 0o644); err != nil {
		return fmt.Errorf("write references: %w", err)
	}
	return nil
}

func (s *Store) readRecord(digest string) (*record, error) {
	p, err := s.recordPath(digest)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read image record: %w", err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("read image record %s: %w", p, err)
	}
	return &rec, nil
}

func (s *Store) writeRecord(rec *record) error {
	p, err := s.recordPath(rec.Digest)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("write image record: %w", err)
	}
	if err := atomicfile.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("write image record: %w", err)
	}
	return nil
}

// local returns the stored image ref names, or nil if the store has no
// complete image for it. The caller holds s.meta.
func (s *Store) local(key string) (*Image, error) {
	refs, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	digest, ok := refs[key]
	if !ok {
		return nil, nil
	}
	img, _, err := s.complete(digest, key)
	return img, err
}

// complete returns the image with this manifest digest, and its record, if
// the record and every layer are on disk; else nil.
func (s *Store) complete(digest, reference string) (*Image, *record, error) {
	rec, err := s.readRecord(digest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	img, err := s.imageOf(rec, reference)
	if err != nil {
		return nil, nil, err
	}
	for _, l := range img.Layers {
		if _, err := os.Lstat(l); errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil
		} else if err != nil {
			return nil, nil, fmt.Errorf("check layer: %w", err)
		}
	}
	return img, rec, nil
}

func (s *Store) imageOf(rec *record, reference string) (*Image, error) {
	img := &Image{Reference: reference, Digest: rec.Digest, ID: rec.ConfigDigest}
	if len(rec.Config) > 0 {
		if err := json.Unmarshal(rec.Config, &img.Config); err != nil {
			return nil, fmt.Errorf("image %s: config: %w", rec.Digest, err)
		}
	}
	for _, d := range rec.DiffIDs {
		p, err := s.layerPath(d)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", rec.Digest, err)
		}
		img.Layers = append(img.Layers, p)
	}
	return img, nil
}

// commit records rec as what reference key means now: it writes the image
// record (merging references with an existing one), then refs.json, and
// drops key from the record of the image it named before.
func (s *Store) commit(key string, rec *record) (*Image, error) {
	s.meta.Lock()
	defer s.meta.Unlock()

	refs, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	if old, err := s.readRecord(rec.Digest); err == nil {
		rec.References = old.References
		if refs[key] == rec.Digest && slices.Contains(rec.References, key) {
			return s.imageOf(old, key) // nothing changed: no writes
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if !slices.Contains(rec.References, key) {
		rec.References = append(rec.References, key)
		slices.Sort(rec.References)
	}
	if err := s.writeRecord(rec); err != nil {
		return nil, err
	}
	prev, had := refs[key]
	refs[key] = rec.Digest
	if err := s.writeRefs(refs); err != nil {
		return nil, err
	}
	if had && prev != rec.Digest {
		if err := s.dropReference(prev, key); err != nil {
			return nil, err
		}
	}
	return s.imageOf(rec, key)
}

// dropReference removes key from the references listed in digest's record,
// if that record still exists.
func (s *Store) dropReference(digest, key string) error {
	rec, err := s.readRecord(digest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	rec.References = slices.DeleteFunc(rec.References, func(r string) bool { return r == key })
	return s.writeRecord(rec)
}

// Remove forgets the reference ref. The image's files stay until GC finds
// nothing else naming or keeping it. Removing a reference the store does not
// have returns an error wrapping ErrNotPresent.
func (s *Store) Remove(ref string) error {
	r, err := s.parseReference(ref)
	if err != nil {
		return fmt.Errorf("remove image: %w", invalidNameError(ref, err))
	}
	key := r.Name()

	s.meta.Lock()
	defer s.meta.Unlock()
	refs, err := s.readRefs()
	if err != nil {
		return fmt.Errorf("remove image %q: %w", ref, err)
	}
	digest, ok := refs[key]
	if !ok {
		return fmt.Errorf("remove image %q: %w", ref, ErrNotPresent)
	}
	delete(refs, key)
	if err := s.writeRefs(refs); err != nil {
		return fmt.Errorf("remove image %q: %w", ref, err)
	}
	if err := s.dropReference(digest, key); err != nil {
		return fmt.Errorf("remove image %q: %w", ref, err)
	}
	return nil
}

// GC deletes every image that no reference names, unless keep (which may be
// nil) says to keep its manifest digest, e.g. because a running pod uses it;
// then every layer directory no remaining image uses, and whatever
// interrupted pulls left in tmp/. Named images are always kept: Remove a
// reference first to let GC take its image. An unreadable image record
// counts as garbage. GC waits for pulls in progress and holds new ones back.
func (s *Store) GC(keep func(digest string) bool) error {
	s.gc.Lock()
	defer s.gc.Unlock()
	s.meta.Lock()
	defer s.meta.Unlock()

	refs, err := s.readRefs()
	if err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	named := map[string]bool{}
	for _, d := range refs {
		named[d] = true
	}
	entries, err := os.ReadDir(filepath.Join(s.root, imagesDir))
	if err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	used := map[string]bool{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") { // a record write a crash interrupted
			if err := os.Remove(filepath.Join(s.root, imagesDir, e.Name())); err != nil {
				return fmt.Errorf("image gc: %w", err)
			}
			continue
		}
		hex, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		digest := "sha256:" + hex
		rec, err := s.readRecord(digest)
		if err == nil && (named[digest] || (keep != nil && keep(digest))) {
			for _, d := range rec.DiffIDs {
				used[d] = true
			}
			continue
		}
		if err := os.Remove(filepath.Join(s.root, imagesDir, e.Name())); err != nil {
			return fmt.Errorf("image gc: remove image %s: %w", digest, err)
		}
	}
	layers, err := os.ReadDir(filepath.Join(s.root, layersDir))
	if err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	for _, l := range layers {
		if used["sha256:"+l.Name()] {
			continue
		}
		if err := removeTree(filepath.Join(s.root, layersDir, l.Name())); err != nil {
			return fmt.Errorf("image gc: remove layer sha256:%s: %w", l.Name(), err)
		}
	}
	if err := s.resetTmp(); err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	return nil
}

// syncFS flushes the filesystem holding dir.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// removeTree is os.RemoveAll that also copes with read-only directories an
// image may contain when the store does not run as root.
func removeTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// keyedMutex is a set of mutexes by name whose Lock gives up when the
// context ends.
type keyedMutex struct {
	mu   sync.Mutex
	held map[string]chan struct{}
}

func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	for {
		k.mu.Lock()
		if k.held == nil {
			k.held = map[string]chan struct{}{}
		}
		ch, busy := k.held[key]
		if !busy {
			ch = make(chan struct{})
			k.held[key] = ch
			k.mu.Unlock()
			return func() {
				k.mu.Lock()
				delete(k.held, key)
				k.mu.Unlock()
				close(ch)
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
