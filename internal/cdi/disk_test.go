package cdi

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
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
