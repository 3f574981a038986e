package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// ErrUnsafeLayer means a layer's tar tries to write outside its directory.
var ErrUnsafeLayer = errors.New("unsafe layer")

// unsafeEntry describes a rejected tar entry; it matches ErrUnsafeLayer.
type unsafeEntry struct {
	name string
	why  string
}

func (e *unsafeEntry) Error() string {
	return fmt.Sprintf("unsafe layer: tar entry %q %s", e.name, e.why)
}

func (e *unsafeEntry) Is(target error) bool { return target == ErrUnsafeLayer }

// sparseBlock is the granularity at which runs of zeros become holes.
const sparseBlock = 64 << 10

// unpack extracts the tar stream r into dir, an empty directory, as the
// package documentation describes. It streams: memory use does not depend
// on the layer's size.
func unpack(ctx context.Context, r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer root.Close()

	u := &unpacker{root: root, dirs: map[string]*tar.Header{}, buf: make([]byte, sparseBlock), chown: os.Geteuid() == 0}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := u.entry(ctx, hdr, tr); err != nil {
			return err
		}
	}
	return u.finishDirs()
}

type unpacker struct {
	root  *os.Root
	dirs  map[string]*tar.Header // directory entries, applied last
	buf   []byte
	chown bool
}

func (u *unpacker) entry(ctx context.Context, hdr *tar.Header, r io.Reader) error {
	name, err := entryPath(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." {
		return nil // the layer's root keeps 0755
	}
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeGNUSparse, tar.TypeSymlink, tar.TypeLink:
	default:
		return nil // devices, FIFOs, global headers: not needed here
	}
	if err := u.parents(name, true); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := u.root.Lstat(name); err == nil && fi.IsDir() {
			u.dirs[name] = hdr
			return nil
		}
		if err := u.clear(name); err != nil {
			return err
		}
		if err := u.root.Mkdir(name, 0o700); err != nil {
			return fmt.Errorf("unpack %q: %w", name, err)
		}
		u.dirs[name] = hdr
	case tar.TypeReg, tar.TypeGNUSparse:
		if err := u.clear(name); err != nil {
			return err
		}
		return u.file(ctx, name, hdr, r)
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return fmt.Errorf("unpack %q: symbolic link without a target", name)
		}
		if err := u.clear(name); err != nil {
			return err
		}
		if err := u.root.Symlink(hdr.Linkname, name); err != nil {
			return fmt.Errorf("unpack %q: %w", name, err)
		}
		if u.chown {
			if err := u.root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("unpack %q: %w", name, err)
			}
		}
	case tar.TypeLink:
		target, err := entryPath(hdr.Linkname)
		if err != nil || target == "." {
			return &unsafeEntry{name: hdr.Name, why: fmt.Sprintf("links to %q, outside the layer", hdr.Linkname)}
		}
		if err := u.parents(target, false); err != nil {
			return err
		}
		fi, err := u.root.Lstat(target)
		if err != nil {
			return fmt.Errorf("unpack %q: hard link target %q: %w", name, target, err)
		}
		if fi.IsDir() {
			return fmt.Errorf("unpack %q: hard link to directory %q", name, target)
		}
		if target == name {
			return nil
		}
		if err := u.clear(name); err != nil {
			return err
		}
		if err := u.root.Link(target, name); err != nil {
			return fmt.Errorf("unpack %q: %w", name, err)
		}
	}
	return nil
}

// entryPath turns a tar name into a clean path relative to the layer.
func entryPath(name string) (string, error) {
	if name == "" {
		return "", &unsafeEntry{name: name, why: "has an empty name"}
	}
	if path.IsAbs(name) {
		return "", &unsafeEntry{name: name, why: "has an absolute path"}
	}
	p := path.Clean(name)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", &unsafeEntry{name: name, why: "escapes the layer with .."}
	}
	return p, nil
}

// parents checks that every parent directory of name is a real directory,
// not a symbolic link, creating missing ones when create is set.
func (u *unpacker) parents(name string, create bool) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	cur := ""
	for _, c := range strings.Split(dir, "/") {
		cur = path.Join(cur, c)
		fi, err := u.root.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := u.root.Mkdir(cur, 0o755); err != nil {
				return fmt.Errorf("unpack %q: %w", name, err)
			}
		case err != nil:
			return fmt.Errorf("unpack %q: %w", name, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return &unsafeEntry{name: name, why: fmt.Sprintf("goes through symbolic link %q", cur)}
		case !fi.IsDir():
			return fmt.Errorf("unpack %q: %q is not a directory", name, cur)
		}
	}
	return nil
}

// clear removes whatever an earlier entry put at name: in a tar the last
// entry for a path wins, and a new file must never be written through an
// old symbolic link.
func (u *unpacker) clear(name string) error {
	if _, err := u.root.Lstat(name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	delete(u.dirs, name)
	if err := u.root.RemoveAll(name); err != nil {
		return fmt.Errorf("unpack %q: replace: %w", name, err)
	}
	return nil
}

func (u *unpacker) file(ctx context.Context, name string, hdr *tar.Header, r io.Reader) error {
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("unpack %q: %w", name, err)
	}
	if err := u.fill(ctx, f, r, hdr); err != nil {
		f.Close()
		return fmt.Errorf("unpack %q: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("unpack %q: %w", name, err)
	}
	if err := u.root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
		return fmt.Errorf("unpack %q: %w", name, err)
	}
	return nil
}

// fill writes r into f sparsely, then sets f's owner and mode.
func (u *unpacker) fill(ctx context.Context, f *os.File, r io.Reader, hdr *tar.Header) error {
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(r, u.buf)
		if n > 0 {
			chunk := u.buf[:n]
			if !isZero(chunk) {
				if _, werr := f.WriteAt(chunk, off); werr != nil {
					return werr
				}
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if off != hdr.Size {
		return fmt.Errorf("truncated: %d of %d bytes", off, hdr.Size)
	}
	if err := f.Truncate(off); err != nil { // the trailing hole, if any
		return err
	}
	if u.chown {
		if err := f.Chown(hdr.Uid, hdr.Gid); err != nil { // before Chmod: chown clears setuid
			return err
		}
	}
	return f.Chmod(modeOf(hdr))
}

var zeros [sparseBlock]byte

func isZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }

func modeOf(hdr *tar.Header) fs.FileMode {
	return hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// finishDirs gives directories their mode, owner and time once nothing more
// is written into them, deepest first so a time set is not disturbed.
func (u *unpacker) finishDirs() error {
	names := make([]string, 0, len(u.dirs))
	for n := range u.dirs {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, n := range names {
		hdr := u.dirs[n]
		if fi, err := u.root.Lstat(n); err != nil || !fi.IsDir() {
			continue
		}
		if u.chown {
			if err := u.root.Lchown(n, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("unpack %q: %w", n, err)
			}
		}
		if err := u.root.Chmod(n, modeOf(hdr)); err != nil {
			return fmt.Errorf("unpack %q: %w", n, err)
		}
		if err := u.root.Chtimes(n, time.Now(), hdr.ModTime); err != nil {
			return fmt.Errorf("unpack %q: %w", n, err)
		}
	}
	return nil
}
