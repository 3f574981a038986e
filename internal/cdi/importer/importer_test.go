package importer

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtkube/virtkube/internal/containerdisk"
	testcd "github.com/virtkube/virtkube/test/containerdisk"
)

// testImages makes a raw image and the same as gzip'd qcow2.
func testImages(t *testing.T) (content, qcow2gz []byte) {
	t.Helper()
	dir := t.TempDir()
	content = bytes.Repeat([]byte("virtkube"), 1<<15) // 256 KiB
	raw := filepath.Join(dir, "raw")
	if err := os.WriteFile(raw, content, 0o644); err != nil {
		t.Fatal(err)
	}
	qcow := filepath.Join(dir, "qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow).CombinedOutput(); err != nil {
		t.Fatalf("make qcow2: %v: %s", err, out)
	}
	q, err := os.ReadFile(qcow)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(q)
	zw.Close()
	return content, gz.Bytes()
}

// An http source is imported, its progress shown by the bytes read of its
// Content-Length.
func TestImportHTTP(t *testing.T) {
	needQemuImg(t)
	content, qcow2gz := testImages(t)
	const size = 1 << 20
	for name, body := range map[string][]byte{"raw": content, "qcow2.gz": qcow2gz} {
		t.Run(name, func(t *testing.T) {
			// The source holds back the last byte until the test has
			// seen the progress of the others.
			scraped := make(chan struct{})
			src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.Write(body[:len(body)-1])
				w.(http.Flusher).Flush()
				<-scraped
				w.Write(body[len(body)-1:])
			}))
			defer src.Close()
			released := false
			defer func() {
				if !released {
					close(scraped)
				}
			}()
			dest := t.TempDir()
			p := start(t, "--mode=import", "--source=http", "--endpoint="+src.URL+"/disk", "--dest="+dest, "--size="+strconv.Itoa(size), "--owner-uid=dv-uid")

			want := 100 * float64(len(body)-1) / float64(len(body))
			deadline := time.Now().Add(30 * time.Second)
			for {
				pct, ok, err := ScrapeProgress(context.Background(), nil, "http://"+p.addr+"/metrics", ProgressMetric, "dv-uid")
				if err != nil {
					t.Fatal(err)
				}
				if ok && math.Abs(pct-want) < 1e-9 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("progress %v (shown: %v), want %v with all but the last byte read", pct, ok, want)
				}
				time.Sleep(20 * time.Millisecond)
			}
			released = true
			close(scraped)

			r := p.wait(t)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			got := readDisk(t, dest)
			if len(got) != size || !bytes.Equal(got[:len(content)], content) || !bytes.Equal(got[len(content):], make([]byte, size-len(content))) {
				t.Errorf("disk.img (%d bytes) is not the image grown to %d bytes", len(got), size)
			}
		})
	}
}

// A source that is not there fails the import with one last line that
// names it, and leaves nothing behind.
func TestImportHTTPNotFound(t *testing.T) {
	src := httptest.NewServer(http.NotFoundHandler())
	defer src.Close()
	dest := t.TempDir()
	url := src.URL + "/missing.img"
	r := runMain(t, "--mode=import", "--source=http", "--endpoint="+url, "--dest="+dest, "--size=1048576")
	want := "cdi-importer: download " + url + ": 404 Not Found"
	if r.code != 1 || r.lastLine() != want {
		t.Errorf("exit %d, last line %q; want 1 and %q\n%s", r.code, r.lastLine(), want, r.stderr)
	}
	noDisk(t, dest)
}

func TestImportBlank(t *testing.T) {
	dest := t.TempDir()
	if r := runMain(t, "--mode=import", "--source=blank", "--dest="+dest, "--size=3145728"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := readDisk(t, dest); len(got) != 3<<20 || !bytes.Equal(got, make([]byte, 3<<20)) {
		t.Errorf("disk.img is %d bytes, want 3 MiB of zeros", len(got))
	}
}

// A claim that holds its disk already (the pod ran before) is left as it is.
func TestImportAlreadyDone(t *testing.T) {
	dest := t.TempDir()
	if err := os.WriteFile(filepath.Join(dest, "disk.img"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runMain(t, "--mode=import", "--source=http", "--endpoint=http://127.0.0.1:1/never", "--dest="+dest, "--size=1048576"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := readDisk(t, dest); string(got) != "kept" {
		t.Errorf("disk.img changed to %d bytes", len(got))
	}
}

// CDI's pullMethod node: the disk of the image the node pulled is served by
// container-disk in the pod; the importer imports it and then lets the
// server go, so the image's container ends.
func TestImportDiskSocket(t *testing.T) {
	needQemuImg(t)
	content := bytes.Repeat([]byte{1, 2, 3, 4}, 1<<16)
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, content, 0o644); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(t.TempDir(), "disk.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	// The server comes after the importer starts waiting, as the image's
	// container may.
	go func() {
		time.Sleep(300 * time.Millisecond)
		served <- containerdisk.Serve(ctx, socket, disk, nil)
	}()
	dest := t.TempDir()
	r := runMain(t, "--mode=import", "--source=registry", "--endpoint=docker://example.com/disk:1", "--disk-socket="+socket, "--dest="+dest, "--size=1048576")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := readDisk(t, dest); len(got) != 1<<20 || !bytes.Equal(got[:len(content)], content) {
		t.Errorf("disk.img (%d bytes) is not the served disk grown to 1 MiB", len(got))
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("container-disk: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("container-disk still serves after the import: the importer did not let it go")
	}
}

// A registry source is pulled into a scratch directory that goes
// afterwards.
func TestImportRegistry(t *testing.T) {
	needQemuImg(t)
	host := testcd.StartRegistry(t)
	content := bytes.Repeat([]byte("disk"), 1<<15)
	diskFile := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(diskFile, content, 0o644); err != nil {
		t.Fatal(err)
	}
	ref, err := testcd.Push(context.Background(), host, "vm/disk", "v1", diskFile)
	if err != nil {
		t.Fatal(err)
	}
	scratch, dest := t.TempDir(), t.TempDir()
	r := runMain(t, "--mode=import", "--source=registry", "--endpoint=docker://"+ref, "--scratch="+scratch, "--dest="+dest, "--size=1048576")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := readDisk(t, dest); len(got) != 1<<20 || !bytes.Equal(got[:len(content)], content) {
		t.Errorf("disk.img (%d bytes) is not the image's disk grown to 1 MiB", len(got))
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch directory keeps %d entries after the import", len(left))
	}

	r = runMain(t, "--mode=import", "--source=registry", "--endpoint=docker://"+host+"/vm/none:v1", "--scratch="+scratch, "--dest="+dest+"/x", "--size=1048576")
	if r.code != 1 || !strings.HasPrefix(r.lastLine(), "cdi-importer: --dest") {
		t.Errorf("missing --dest: exit %d, last line %q", r.code, r.lastLine())
	}
	dest = t.TempDir()
	r = runMain(t, "--mode=import", "--source=registry", "--endpoint=docker://"+host+"/vm/none:v1", "--scratch="+scratch, "--dest="+dest, "--size=1048576")
	if r.code != 1 || !strings.HasPrefix(r.lastLine(), "cdi-importer: ") || !strings.Contains(r.lastLine(), host+"/vm/none:v1") {
		t.Errorf("missing image: exit %d, last line %q; want one naming the image", r.code, r.lastLine())
	}
	noDisk(t, dest)
}

// An http source lands on a block claim's device from its first byte,
// through --scratch; the device keeps its size and what lies past the
// image.
func TestImportHTTPDevice(t *testing.T) {
	needQemuImg(t)
	content, qcow2gz := testImages(t)
	const size = 4 << 20
	for name, body := range map[string][]byte{"raw": content, "qcow2.gz": qcow2gz} {
		t.Run(name, func(t *testing.T) {
			src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
			defer src.Close()
			device, scratch := deviceFile(t, size), t.TempDir()
			r := runMain(t, "--mode=import", "--source=http", "--endpoint="+src.URL+"/disk", "--dest-device="+device, "--scratch="+scratch, "--size=1048576", "--dest=/nonexistent")
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			deviceHolds(t, device, size, content)
			if left, _ := os.ReadDir(scratch); len(left) != 0 {
				t.Errorf("scratch keeps %d entries after the import", len(left))
			}
		})
	}
}

// An image larger than the device fails the import with both sizes named
// and the device untouched; a device that is not there fails at once.
func TestImportHTTPDeviceTooSmall(t *testing.T) {
	needQemuImg(t)
	body := bytes.Repeat([]byte{1}, 2<<20)
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer src.Close()
	device := deviceFile(t, 1<<20)
	r := runMain(t, "--mode=import", "--source=http", "--endpoint="+src.URL+"/disk", "--dest-device="+device, "--scratch="+t.TempDir(), "--size=4194304")
	want := "image virtual size 2097152 bytes exceeds the size of device " + device + ", 1048576 bytes"
	if r.code != 1 || !strings.HasPrefix(r.lastLine(), "cdi-importer: ") || !strings.Contains(r.lastLine(), want) {
		t.Errorf("exit %d, last line %q; want 1 and %q", r.code, r.lastLine(), want)
	}
	deviceHolds(t, device, 1<<20, nil)

	missing := filepath.Join(t.TempDir(), "none")
	r = runMain(t, "--mode=import", "--source=http", "--endpoint="+src.URL+"/disk", "--dest-device="+missing, "--scratch="+t.TempDir())
	if r.code != 1 || !strings.HasPrefix(r.lastLine(), "cdi-importer: --dest-device: ") {
		t.Errorf("missing device: exit %d, last line %q", r.code, r.lastLine())
	}
}

// A blank block claim is left as it is, as CDI leaves it.
func TestImportBlankDevice(t *testing.T) {
	device := deviceFile(t, 1<<20)
	if r := runMain(t, "--mode=import", "--source=blank", "--dest-device="+device, "--scratch="+t.TempDir(), "--size=1048576"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	deviceHolds(t, device, 1<<20, nil)
}

// A registry image pulled into --scratch lands on the device.
func TestImportRegistryDevice(t *testing.T) {
	needQemuImg(t)
	host := testcd.StartRegistry(t)
	content := bytes.Repeat([]byte("disk"), 1<<15)
	diskFile := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(diskFile, content, 0o644); err != nil {
		t.Fatal(err)
	}
	ref, err := testcd.Push(context.Background(), host, "vm/disk", "v1", diskFile)
	if err != nil {
		t.Fatal(err)
	}
	device, scratch := deviceFile(t, 2<<20), t.TempDir()
	r := runMain(t, "--mode=import", "--source=registry", "--endpoint=docker://"+ref, "--dest-device="+device, "--scratch="+scratch, "--size=2097152")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	deviceHolds(t, device, 2<<20, content)
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch keeps %d entries after the import", len(left))
	}
}

// A device's progress is reading (0 to 50) and then writing (50 to 100):
// it never goes back.
func TestDeviceProgress(t *testing.T) {
	needQemuImg(t)
	content := bytes.Repeat([]byte("progress"), 1<<16) // 512 KiB
	d := dest{device: deviceFile(t, 1<<20), scratch: t.TempDir()}
	var reports []float64
	r := &slowReader{b: content, n: 4096}
	if _, err := d.importStream(context.Background(), r, int64(len(content)), func(p float64) { reports = append(reports, p) }); err != nil {
		t.Fatal(err)
	}
	deviceHolds(t, d.device, 1<<20, content)
	reading := 0
	for i, p := range reports {
		if i > 0 && p < reports[i-1] {
			t.Fatalf("progress went back from %v to %v: %v", reports[i-1], p, reports)
		}
		if p <= 50 {
			reading++
		}
	}
	if reading < 2 || reports[len(reports)-1] != 100 {
		t.Errorf("%d reports up to 50 and the last %v; want reading reported up to 50, then writing to 100", reading, reports[len(reports)-1])
	}
}

// slowReader hands out b n bytes at a time.
type slowReader struct {
	b []byte
	n int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	c := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[c:]
	return c, nil
}
