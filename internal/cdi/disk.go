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
	"unsafe"

	"golang.org/x/sys/unix"
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
	return counted.n, install(ctx, part, dir, size, nil, true)
}

// ImportFile makes the image at path (raw or qcow2) the raw disk.img of
// dir, as Import; path is only read. A non-nil progress is told the
// conversion's percentage as qemu-img reports it.
func ImportFile(ctx context.Context, dir, path string, size int64, progress func(percent float64)) error {
	return install(ctx, path, dir, size, progress, false)
}

// install converts src to raw in dir's tmpFile, grows it to size and
// renames it to disk.img once it is on disk. A raw src that is ours to take
// (owned: the part file an import wrote) becomes tmpFile as it is, so an
// upload or download of a raw image is written once, not three times.
func install(ctx context.Context, src, dir string, size int64, progress func(percent float64), owned bool) error {
	info, err := checkImage(ctx, src)
	if err != nil {
		return err
	}
	if size > 0 && info.VirtualSize > size {
		return fmt.Errorf("image virtual size %d bytes exceeds the requested storage size %d bytes", info.VirtualSize, size)
	}
	tmp := filepath.Join(dir, tmpFile)
	os.Remove(tmp)
	if owned && info.Format == "raw" {
		if err := os.Rename(src, tmp); err != nil {
			return err
		}
	} else if err := convert(ctx, info.Format, src, tmp, progress); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("convert image to raw: %w", err)
	}
	if size > info.VirtualSize {
		if err := os.Truncate(tmp, size); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("grow disk to %d bytes: %w", size, err)
		}
	}
	// Succeeded means the data is on disk: a crash after it must not
	// leave a disk.img whose blocks were still in the page cache.
	if err := syncPath(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sync disk: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, DiskFile)); err != nil {
		return err
	}
	return syncPath(dir)
}

// ImportStreamToDevice reads an image from r, as Import does (raw or
// qcow2, either possibly gzip or xz compressed), into a file in the
// directory scratch, and once r has ended writes it onto device with
// ImportToDevice: a cut-off r leaves the device untouched. The file goes
// afterwards. It returns the bytes read from r; progress is as
// ImportToDevice's.
func ImportStreamToDevice(ctx context.Context, device, scratch string, r io.Reader, progress func(percent float64)) (int64, error) {
	if scratch == "" {
		return 0, errors.New("scratch directory: must be set to write an image onto a device")
	}
	part := filepath.Join(scratch, partFile)
	defer os.Remove(part)
	counted := &countingReader{r: r}
	if err := writeDecompressed(ctx, part, counted); err != nil {
		return counted.n, err
	}
	return counted.n, ImportToDevice(ctx, device, part, progress)
}

// ImportToDevice writes the image at src (raw or qcow2; only read) onto
// the block device at device, as CDI fills a claim of volumeMode Block:
// from the device's first byte, leaving what lies past the image's virtual
// size as it is. An image larger than the device is refused before
// anything is written. When it returns nil the data is on the device, not
// in a cache. A non-nil progress is told the writing's percentage as
// qemu-img reports it. device may be a regular file of a fixed size
// standing in for a device.
func ImportToDevice(ctx context.Context, device, src string, progress func(percent float64)) error {
	cache, size, err := openDevice(device)
	if err != nil {
		return err
	}
	info, err := checkImage(ctx, src)
	if err != nil {
		return err
	}
	if info.VirtualSize > size {
		return fmt.Errorf("image virtual size %d bytes exceeds the size of device %s, %d bytes", info.VirtualSize, device, size)
	}
	// -n: the device is there already; qemu-img writes the image's zeros
	// too, since a device holds whatever was on it before.
	if err := qemuImgConvert(ctx, progress, "-n", "-t", cache, "-f", info.Format, "-O", "raw", src, device); err != nil {
		return fmt.Errorf("write image to device %s: %w", device, err)
	}
	if err := syncPath(device); err != nil {
		return fmt.Errorf("sync device %s: %w", device, err)
	}
	return nil
}

// openDevice checks that device can be written and returns its size and
// the cache mode for qemu-img to write it with: "none" (O_DIRECT, the data
// bypassing the page cache, as CDI writes block volumes), or "writeback"
// where the device's file system refuses O_DIRECT (which only a regular
// file standing in for a device meets).
func openDevice(device string) (cache string, size int64, err error) {
	cache = "none"
	f, err := os.OpenFile(device, os.O_WRONLY|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) {
		cache = "writeback"
		f, err = os.OpenFile(device, os.O_WRONLY, 0)
	}
	if err != nil {
		return "", 0, fmt.Errorf("device: %w", err)
	}
	defer f.Close()
	size, err = DeviceSize(f)
	if err != nil {
		return "", 0, err
	}
	return cache, size, nil
}

// DeviceSize is the size in bytes of f: a block device (as the
// BLKGETSIZE64 ioctl tells), or a regular file standing in for one.
// Anything else is refused.
func DeviceSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		return fi.Size(), nil
	case mode&os.ModeDevice == 0 || mode&os.ModeCharDevice != 0:
		return 0, fmt.Errorf("%s: neither a block device nor a regular file (mode %s)", f.Name(), mode)
	}
	conn, err := f.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", f.Name(), err)
	}
	var size uint64
	var errno unix.Errno
	if err := conn.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	}); err != nil {
		return 0, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if errno != 0 {
		return 0, fmt.Errorf("%s: size of the block device (BLKGETSIZE64): %w", f.Name(), errno)
	}
	return int64(size), nil
}

// checkImage is what qemu-img says of the image at src, refused unless it
// is raw or qcow2 and self-contained.
func checkImage(ctx context.Context, src string) (imageFacts, error) {
	info, err := imageInfo(ctx, src)
	if err != nil {
		return imageFacts{}, err
	}
	if info.BackingFile != "" {
		// A backing file would make qemu-img read a host path the
		// uploader chose.
		return imageFacts{}, fmt.Errorf("image has a backing file (%s); only self-contained images can be imported", info.BackingFile)
	}
	if info.Format != "raw" && info.Format != "qcow2" {
		return imageFacts{}, fmt.Errorf("image format %q is not supported; want raw or qcow2", info.Format)
	}
	return info, nil
}

// syncPath flushes a file's data, or a directory's entries, to disk.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// convert writes src (of format) as a sparse raw image to dst, reporting
// qemu-img's progress to progress unless it is nil.
func convert(ctx context.Context, format, src, dst string, progress func(percent float64)) error {
	return qemuImgConvert(ctx, progress, "-f", format, "-O", "raw", "-S", "4k", src, dst)
}

// qemuImgConvert runs `qemu-img convert` with args, reporting its progress
// to progress unless it is nil.
func qemuImgConvert(ctx context.Context, progress func(percent float64), args ...string) error {
	if progress == nil {
		return run(ctx, "qemu-img", append([]string{"convert", "-q"}, args...)...)
	}
	cmd := exec.CommandContext(ctx, "qemu-img", append([]string{"convert", "-p"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qemuProgress{report: progress}, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("qemu-img: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
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
	file, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o660)
	if err != nil {
		return err
	}
	defer file.Close()
	f := &sparseWriter{f: file}
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
	if err := f.finish(); err != nil {
		return err
	}
	return file.Close()
}

// sparseWriter writes to f in blocks aligned to the file's, leaving a hole
// for each block of zeros, so an image written as it arrives stays as
// sparse as qemu-img would have made it, whatever sizes the writes come in.
// It gathers a run of blocks before it writes, so the data takes few
// system calls.
type sparseWriter struct {
	f   *os.File
	off int64 // file offset of buf
	buf [sparseRun]byte
	n   int // bytes in buf
}

const (
	sparseBlock = 4 << 10
	sparseRun   = 256 * sparseBlock
)

var zeroBlock [sparseBlock]byte

func (w *sparseWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		c := copy(w.buf[w.n:], p)
		w.n += c
		p = p[c:]
		written += c
		if w.n == sparseRun {
			if err := w.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// flush writes buf's runs of data and skips its blocks of zeros.
func (w *sparseWriter) flush() error {
	data := -1 // start of the run of data being gathered
	write := func(end int) error {
		if data < 0 {
			return nil
		}
		_, err := w.f.WriteAt(w.buf[data:end], w.off+int64(data))
		data = -1
		return err
	}
	for i := 0; i < w.n; i += sparseBlock {
		end := min(i+sparseBlock, w.n)
		if end-i == sparseBlock && bytes.Equal(w.buf[i:end], zeroBlock[:]) {
			if err := write(i); err != nil {
				return err
			}
		} else if data < 0 {
			data = i
		}
	}
	if err := write(w.n); err != nil {
		return err
	}
	w.off += int64(w.n)
	w.n = 0
	return nil
}

// finish writes what is left and sets the file's length, holes included.
func (w *sparseWriter) finish() error {
	if err := w.flush(); err != nil {
		return err
	}
	return w.f.Truncate(w.off)
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
