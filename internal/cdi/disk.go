package cdi

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// Writing into a claim never leaves a half-made disk.img: data goes to
// partFile, is converted to tmpFile, and only a complete raw image is
// renamed to disk.img. A failed or cut-off write can simply be retried.
const (
	partFile = ".disk.img.part"
	tmpFile  = ".disk.img.tmp"
)

// HasDisk reports whether dir holds a complete disk.img.
func HasDisk(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, DiskFile))
	return err == nil
}

// Blank makes an empty sparse raw disk.img of size bytes in dir.
func Blank(dir string, size int64) error {
	if size <= 0 {
		return fmt.Errorf("blank disk: size %d must be positive", size)
	}
	tmp := filepath.Join(dir, tmpFile)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o660)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, DiskFile))
}

// Import reads an image from r — raw or qcow2, either possibly gzip or xz
// compressed — and makes it the raw disk.img of dir, grown to size bytes
// when smaller. An image larger than size is refused. It returns the bytes
// read from r. (Progress is the reading of r: see ProgressReporter.Reader.)
func Import(ctx context.Context, dir string, r io.Reader, size int64) (int64, error) {
	part := filepath.Join(dir, partFile)
	defer os.Remove(part)
	counted := &countingReader{r: r}
	if err := writeDecompressed(ctx, part, counted); err != nil {
		return counted.n, err
	}
	return counted.n, install(ctx, part, dir, size, nil)
}

// ImportFile makes the image at path (raw or qcow2) the raw disk.img of
// dir, as Import; path is only read. A non-nil progress is told the
// conversion's percentage as qemu-img reports it.
func ImportFile(ctx context.Context, dir, path string, size int64, progress func(percent float64)) error {
	return install(ctx, path, dir, size, progress)
}

// install converts src to raw in dir's tmpFile, grows it to size and
// renames it to disk.img.
func install(ctx context.Context, src, dir string, size int64, progress func(percent float64)) error {
	info, err := imageInfo(ctx, src)
	if err != nil {
		return err
	}
	if info.BackingFile != "" {
		// A backing file would make qemu-img read a host path the
		// uploader chose.
		return fmt.Errorf("image has a backing file (%s); only self-contained images can be imported", info.BackingFile)
	}
	if info.Format != "raw" && info.Format != "qcow2" {
		return fmt.Errorf("image format %q is not supported; want raw or qcow2", info.Format)
	}
	if size > 0 && info.VirtualSize > size {
		return fmt.Errorf("image virtual size %d bytes exceeds the requested storage size %d bytes", info.VirtualSize, size)
	}
	tmp := filepath.Join(dir, tmpFile)
	os.Remove(tmp)
	if err := convert(ctx, info.Format, src, tmp, progress); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("convert image to raw: %w", err)
	}
	if size > info.VirtualSize {
		if err := os.Truncate(tmp, size); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("grow disk to %d bytes: %w", size, err)
		}
	}
	return os.Rename(tmp, filepath.Join(dir, DiskFile))
}

// convert writes src (of format) as a sparse raw image to dst, reporting
// qemu-img's progress to progress unless it is nil.
func convert(ctx context.Context, format, src, dst string, progress func(percent float64)) error {
	args := []string{"convert", "-q", "-f", format, "-O", "raw", "-S", "4k", src, dst}
	if progress == nil {
		return run(ctx, "qemu-img", args...)
	}
	args[1] = "-p"
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qemuProgress{report: progress}, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("qemu-img: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// Clone copies the disk.img of srcDir into dstDir, grown to size, telling
// progress (when not nil) how far the copy has got.
func Clone(ctx context.Context, srcDir, dstDir string, size int64, progress func(percent float64)) error {
	src := filepath.Join(srcDir, DiskFile)
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("source claim has no %s: %w", DiskFile, err)
	}
	return install(ctx, src, dstDir, size, progress)
}

// imageFacts is what `qemu-img info` says of an image.
type imageFacts struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
	BackingFile string `json:"backing-filename"`
}

func imageInfo(ctx context.Context, path string) (imageFacts, error) {
	// Probing is safe here: the result only picks the input format of a
	// conversion and a backing file is refused.
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "--output=json", path).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return imageFacts{}, fmt.Errorf("qemu-img info: %s", bytes.TrimSpace(ee.Stderr))
		}
		return imageFacts{}, fmt.Errorf("qemu-img info: %w", err)
	}
	var f imageFacts
	if err := json.Unmarshal(out, &f); err != nil {
		return imageFacts{}, fmt.Errorf("qemu-img info: %w", err)
	}
	return f, nil
}

// writeDecompressed copies r into path, undoing gzip or xz compression
// recognised by their magic bytes.
func writeDecompressed(ctx context.Context, path string, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(6)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o660)
	if err != nil {
		return err
	}
	defer f.Close()
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		if _, err := io.Copy(f, zr); err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		cmd := exec.CommandContext(ctx, "xz", "-dc")
		var stderr bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = br, f, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("xz: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
	default:
		if _, err := io.Copy(f, br); err != nil {
			return err
		}
	}
	return f.Close()
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
