package cdi

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
)

func TestImportRawQcow2Gzip(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	ctx := context.Background()
	src := t.TempDir()
	raw := filepath.Join(src, "raw")
	content := bytes.Repeat([]byte("virtkube"), 1<<14) // 128 KiB
	if err := os.WriteFile(raw, content, 0o644); err != nil {
		t.Fatal(err)
	}
	qcow := filepath.Join(src, "qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow).CombinedOutput(); err != nil {
		t.Fatalf("make qcow2: %v: %s", err, out)
	}
	qcowBytes, _ := os.ReadFile(qcow)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(qcowBytes)
	zw.Close()

	const size = 1 << 20
	for name, in := range map[string][]byte{"raw": content, "qcow2": qcowBytes, "qcow2.gz": gz.Bytes()} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			n, err := Import(ctx, dir, bytes.NewReader(in), size)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(in)) {
				t.Errorf("read %d bytes, want %d", n, len(in))
			}
			got, err := os.ReadFile(filepath.Join(dir, DiskFile))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != size {
				t.Errorf("disk.img is %d bytes, want %d", len(got), size)
			}
			if !bytes.Equal(got[:len(content)], content) {
				t.Error("disk.img does not start with the image's content")
			}
			if _, err := os.Stat(filepath.Join(dir, partFile)); err == nil {
				t.Error("part file left behind")
			}
		})
	}
}

func TestImportRefusesTooLargeAndBacked(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := Import(ctx, dir, bytes.NewReader(make([]byte, 2<<20)), 1<<20); err == nil {
		t.Error("an image larger than the size was accepted")
	}
	base := filepath.Join(t.TempDir(), "base")
	os.WriteFile(base, make([]byte, 1<<20), 0o644)
	over := filepath.Join(t.TempDir(), "over.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", over).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := ImportFile(ctx, dir, over, 1<<20, nil); err == nil {
		t.Error("an image with a backing file was accepted")
	}
	if HasDisk(dir) {
		t.Error("a refused image left a disk.img")
	}
}

func TestBlank(t *testing.T) {
	dir := t.TempDir()
	if err := Blank(dir, 64<<20); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, DiskFile))
	if err != nil || fi.Size() != 64<<20 {
		t.Fatalf("disk.img: %v, %v", fi, err)
	}
}

func TestToken(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	now := time.Unix(1000, 0)
	tok, err := SignToken(key, TokenClaims{Namespace: "ns", PVC: "up", Expires: now.Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyToken(key, tok, now)
	if err != nil || c.Namespace != "ns" || c.PVC != "up" {
		t.Fatalf("verify: %+v, %v", c, err)
	}
	other := bytes.Repeat([]byte{8}, 32)
	for name, check := range map[string]func() error{
		"expired":   func() error { _, err := VerifyToken(key, tok, now.Add(time.Hour)); return err },
		"other key": func() error { _, err := VerifyToken(other, tok, now); return err },
		"malformed": func() error { _, err := VerifyToken(key, "garbage", now); return err },
		"tampered":  func() error { _, err := VerifyToken(key, "x"+tok, now); return err },
	} {
		if err := check(); err == nil {
			t.Errorf("%s: token accepted", name)
		}
	}
}

// A raw image is written once, as it arrives, and its runs of zeros stay
// holes: the disk.img has the image's bytes, its length and few blocks.
func TestImportRawStaysSparse(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	const size = 64 << 20
	image := make([]byte, 32<<20+100) // data, 32 MiB of zeros, data in a part block
	copy(image, "head")
	copy(image[len(image)-4:], "tail")
	dir := t.TempDir()
	// Odd-sized reads, as a network delivers them.
	r := &chunkedReader{b: image, n: 3000}
	if _, err := Import(context.Background(), dir, r, size); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, DiskFile)
	got, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != size || !bytes.Equal(got[:len(image)], image) {
		t.Fatalf("disk.img: %d bytes, image intact %v; want %d bytes starting with the image", len(got), bytes.Equal(got[:len(image)], image), size)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(disk, &st); err != nil {
		t.Fatal(err)
	}
	if allocated := st.Blocks * 512; allocated > 1<<20 {
		t.Errorf("disk.img has %d bytes allocated; want the zeros left as holes (< 1 MiB)", allocated)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only disk.img", len(entries))
	}
}

type chunkedReader struct {
	b []byte
	n int
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// deviceFile makes a regular file of size bytes, every one 0xAA, standing
// in for a block device.
func deviceFile(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "device")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xAA}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// An image read from a stream lands on the device from its first byte;
// the rest of the device, and its size, stay as they were.
func TestImportStreamToDevice(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	content := bytes.Repeat([]byte("virtkube"), 1<<14) // 128 KiB
	qcow := filepath.Join(t.TempDir(), "qcow2")
	raw := filepath.Join(t.TempDir(), "raw")
	os.WriteFile(raw, content, 0o644)
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow).CombinedOutput(); err != nil {
		t.Fatalf("make qcow2: %v: %s", err, out)
	}
	qcowBytes, _ := os.ReadFile(qcow)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(qcowBytes)
	zw.Close()

	const size = 4 << 20
	for name, in := range map[string][]byte{"raw": content, "qcow2.gz": gz.Bytes()} {
		t.Run(name, func(t *testing.T) {
			device, scratch := deviceFile(t, size), t.TempDir()
			var reports []float64
			n, err := ImportStreamToDevice(context.Background(), device, scratch, bytes.NewReader(in), func(p float64) { reports = append(reports, p) })
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(in)) {
				t.Errorf("read %d bytes, want %d", n, len(in))
			}
			got, err := os.ReadFile(device)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != size {
				t.Errorf("device is %d bytes after the import, want %d as before", len(got), size)
			}
			if !bytes.Equal(got[:len(content)], content) {
				t.Error("device does not start with the image's content")
			}
			if !bytes.Equal(got[len(content):], bytes.Repeat([]byte{0xAA}, size-len(content))) {
				t.Error("device changed past the image's end")
			}
			if len(reports) == 0 || reports[len(reports)-1] != 100 {
				t.Errorf("progress %v, want reports ending at 100", reports)
			}
			if entries, _ := os.ReadDir(scratch); len(entries) != 0 {
				t.Errorf("scratch keeps %d entries after the import", len(entries))
			}
		})
	}
}

// An image larger than the device is refused with both sizes named, and
// so is one with a backing file, before the device is touched; a cut-off
// stream never reaches the device.
func TestImportToDeviceRefuses(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	ctx := context.Background()
	const size = 4 << 20
	device, scratch := deviceFile(t, size), t.TempDir()
	unchanged := func(what string) {
		t.Helper()
		if got, _ := os.ReadFile(device); !bytes.Equal(got, bytes.Repeat([]byte{0xAA}, size)) {
			t.Errorf("%s: the device changed", what)
		}
	}

	big := bytes.Repeat([]byte{1}, 8<<20)
	_, err := ImportStreamToDevice(ctx, device, scratch, bytes.NewReader(big), nil)
	if err == nil || !strings.Contains(err.Error(), "8388608") || !strings.Contains(err.Error(), "4194304") {
		t.Errorf("8 MiB image onto a 4 MiB device: %v, want an error naming both sizes", err)
	}
	unchanged("too large")

	base := filepath.Join(t.TempDir(), "base")
	os.WriteFile(base, make([]byte, 1<<20), 0o644)
	over := filepath.Join(t.TempDir(), "over.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", over).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := ImportToDevice(ctx, device, over, nil); err == nil || !strings.Contains(err.Error(), "backing file") {
		t.Errorf("image with a backing file: %v, want refused", err)
	}
	unchanged("backing file")

	cut := io.MultiReader(bytes.NewReader(make([]byte, 64<<10)), iotest.ErrReader(io.ErrUnexpectedEOF))
	if _, err := ImportStreamToDevice(ctx, device, scratch, cut, nil); err == nil {
		t.Error("cut-off stream: accepted")
	}
	unchanged("cut-off stream")
	if entries, _ := os.ReadDir(scratch); len(entries) != 0 {
		t.Errorf("scratch keeps %d entries after failed imports", len(entries))
	}

	if err := ImportToDevice(ctx, filepath.Join(t.TempDir(), "none"), base, nil); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing device: %v, want an error naming it", err)
	}
}

// A real block device (a loop device, where losetup can make one): its
// size is the device's, and the image lands on it.
func TestImportToLoopDevice(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	const size = 4 << 20
	backing := deviceFile(t, size)
	out, err := exec.Command("losetup", "--find", "--show", backing).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	device := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", device).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", device, err, out)
		}
	})

	f, err := os.Open(device)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DeviceSize(f)
	f.Close()
	if err != nil || got != size {
		t.Fatalf("DeviceSize(%s): %d, %v; want %d", device, got, err, size)
	}

	content := bytes.Repeat([]byte("loop"), 1<<16) // 256 KiB
	if _, err := ImportStreamToDevice(context.Background(), device, t.TempDir(), bytes.NewReader(content), nil); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(device)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != size || !bytes.Equal(data[:len(content)], content) || !bytes.Equal(data[len(content):], bytes.Repeat([]byte{0xAA}, size-len(content))) {
		t.Errorf("the loop device (%d bytes) does not hold the image followed by what was there", len(data))
	}
}

// DeviceSize refuses what is neither a block device nor a regular file.
func TestDeviceSizeRefusesDirectory(t *testing.T) {
	f, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := DeviceSize(f); err == nil || !strings.Contains(err.Error(), "neither a block device nor a regular file") {
		t.Errorf("directory: %v, want refused", err)
	}
}
