package importer

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// randomDisk writes a disk.img of n random bytes in a new directory.
func randomDisk(t *testing.T, n int) (dir string, content []byte) {
	t.Helper()
	content = make([]byte, n)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range content {
		content[i] = byte(rng.Uint32())
	}
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "disk.img"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, content
}

// A clone source sends its claim's disk to the target's upload server.
func TestCloneSource(t *testing.T) {
	needQemuImg(t)
	srcDir, content := randomDisk(t, 1<<20)
	token := writeToken(t, "clone-token")
	dest := t.TempDir()
	target := start(t, "--mode=upload", "--token-file="+token, "--dest="+dest, "--size=1048576")

	r := runMain(t, "--mode=clone-source", "--source-dir="+srcDir, "--upload-url=http://"+target.addr+"/v1beta1/upload", "--token-file="+token, "--owner-uid=dv")
	if r.code != 0 {
		t.Fatalf("clone source: exit %d: %s", r.code, r.stderr)
	}
	if r := target.wait(t); r.code != 0 {
		t.Fatalf("upload server: exit %d: %s", r.code, r.stderr)
	}
	if got := readDisk(t, dest); !bytes.Equal(got, content) {
		t.Errorf("the target's disk.img (%d bytes) differs from the source's (%d bytes)", len(got), len(content))
	}
}

// A target that is still starting (503) is tried again; one that refuses
// the disk fails the clone with its answer's first line.
func TestCloneSourceAnswers(t *testing.T) {
	srcDir, content := randomDisk(t, 200<<10)
	var (
		mu      sync.Mutex
		tries   int
		got     []byte
		refused bool
	)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		tries++
		switch {
		case r.Method != http.MethodPut || r.Header.Get("Authorization") != "Bearer tok" || r.ContentLength != int64(len(content)):
			http.Error(w, "bad request: "+r.Method+" "+r.Header.Get("Authorization"), http.StatusBadRequest)
		case refused:
			http.Error(w, "upload failed: image too large\nmore detail", http.StatusBadRequest)
		case tries == 1:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		default:
			got, _ = io.ReadAll(r.Body)
		}
	}))
	defer target.Close()

	var last float64
	c := &cloneSource{
		client: http.DefaultClient, url: target.URL + "/v1beta1/upload", token: "tok",
		disk: filepath.Join(srcDir, "disk.img"), diskFlag: FlagSourceDir, progress: func(p float64) { last = p }, log: logr.Discard(),
		retryFor: 10 * time.Second, retryEvery: 10 * time.Millisecond,
	}
	if err := c.send(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tries != 2 || !bytes.Equal(got, content) || last != 100 {
		t.Errorf("after %d tries the target got %d bytes (want 2 tries, %d bytes), progress %v (want 100)", tries, len(got), len(content), last)
	}

	refused = true
	err := c.send(context.Background())
	if want := "send disk to " + c.url + ": 400 Bad Request: upload failed: image too large"; err == nil || err.Error() != want {
		t.Errorf("refused: %v, want %q", err, want)
	}

	target.Close()
	c.retryFor = 200 * time.Millisecond
	start := time.Now()
	err = c.send(context.Background())
	if err == nil || !strings.Contains(err.Error(), "connection refused") || time.Since(start) < c.retryFor {
		t.Errorf("no server: %v after %s, want connection refused after trying for %s", err, time.Since(start), c.retryFor)
	}
}

// A clone source sends all of its block claim's device to an upload
// server that fills a filesystem claim.
func TestCloneSourceDevice(t *testing.T) {
	needQemuImg(t)
	srcDir, content := randomDisk(t, 1<<20)
	device := filepath.Join(srcDir, "disk.img") // a regular file standing in for the device
	token := writeToken(t, "clone-token")
	dest := t.TempDir()
	target := start(t, "--mode=upload", "--token-file="+token, "--dest="+dest, "--size=2097152")

	r := runMain(t, "--mode=clone-source", "--source-device="+device, "--source-dir=/nonexistent", "--upload-url=http://"+target.addr+"/v1beta1/upload", "--token-file="+token)
	if r.code != 0 {
		t.Fatalf("clone source: exit %d: %s", r.code, r.stderr)
	}
	if r := target.wait(t); r.code != 0 {
		t.Fatalf("upload server: exit %d: %s", r.code, r.stderr)
	}
	got := readDisk(t, dest)
	if len(got) != 2<<20 || !bytes.Equal(got[:len(content)], content) || !bytes.Equal(got[len(content):], make([]byte, 1<<20)) {
		t.Errorf("the target's disk.img (%d bytes) is not the source device (%d bytes) grown to 2 MiB", len(got), len(content))
	}

	r = runMain(t, "--mode=clone-source", "--source-device="+filepath.Join(srcDir, "none"), "--upload-url=http://"+target.addr+"/v1beta1/upload", "--token-file="+token)
	if r.code != 1 || !strings.HasPrefix(r.lastLine(), "cdi-importer: --source-device: ") {
		t.Errorf("missing device: exit %d, last line %q", r.code, r.lastLine())
	}
}
