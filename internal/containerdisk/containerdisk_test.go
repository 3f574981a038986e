package containerdisk

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindDisk(t *testing.T) {
	dir := t.TempDir()
	one := filepath.Join(dir, "one")
	write(t, filepath.Join(one, "disk.qcow2"), "q")
	if err := os.Mkdir(filepath.Join(one, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	two := filepath.Join(dir, "two")
	write(t, filepath.Join(two, "a.img"), "a")
	write(t, filepath.Join(two, "b.img"), "b")
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dir, name, want, err string
	}{
		{dir: one, want: filepath.Join(one, "disk.qcow2")},
		{dir: two, name: "b.img", want: filepath.Join(two, "b.img")},
		{dir: two, name: filepath.Join(two, "a.img"), want: filepath.Join(two, "a.img")},
		{dir: two, err: "more than one file"},
		{dir: two, name: "c.img", err: "containerDisk path c.img"},
		{dir: one, name: "sub", err: "not a regular file"},
		{dir: empty, err: "no disk file"},
		{dir: filepath.Join(dir, "missing"), err: "no " + filepath.Join(dir, "missing") + " directory"},
	}
	for _, tt := range tests {
		got, err := FindDisk(tt.dir, tt.name)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("FindDisk(%s, %q) = %q, %v; want error with %q", tt.dir, tt.name, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("FindDisk(%s, %q) = %q, %v; want %q", tt.dir, tt.name, got, err, tt.want)
		}
	}
}

// Resolve finds the disk through the serving process's root.
func TestServeResolve(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk", "disk.img")
	write(t, disk, "the disk")
	socket := SocketPath(dir, "root")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, socket, disk, nil) }()

	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	got, err := Resolve(rctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join("/proc", strconv.Itoa(os.Getpid()), "root", disk); got != want {
		t.Errorf("Resolve = %q, want %q", got, want)
	}
	// A probe leaves the server running; a holder's end ends it.
	var h Holder
	if held, err := h.Resolve(rctx, socket); err != nil || held != got {
		t.Fatalf("Holder.Resolve = %q, %v; want %q", held, err, got)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve ended while held: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	h.Release()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still runs after its holder went")
	}
	cancel()
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	// Nobody serves any more: Resolve waits, then names the socket.
	short, scancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer scancel()
	if _, err := Resolve(short, socket); err == nil || !strings.Contains(err.Error(), socket) {
		t.Errorf("Resolve without a server: %v", err)
	}
}

// The program serves its disk, gives up its capabilities, so a process
// without any (QEMU under libvirt) can read the disk through
// /proc/<pid>/root, and ends cleanly when the launcher holding it goes.
func TestProgramWithoutCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the point is a root process's capabilities")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv not installed")
	}
	dir := t.TempDir()
	write(t, filepath.Join(dir, "disk", "guest.img"), "guest bytes")
	socket := SocketPath(dir, "vol")
	// The real program: built without cgo, as the Makefile builds it.
	bin := filepath.Join(dir, "container-disk")
	build := exec.Command("go", "build", "-o", bin, "github.com/virtkube/virtkube/cmd/container-disk")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build container-disk: %v\n%s", err, out)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--socket", socket, "--disk-dir", filepath.Join(dir, "disk"))
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var h Holder
	p, err := h.Resolve(ctx, socket)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if !strings.HasPrefix(p, "/proc/"+strconv.Itoa(cmd.Process.Pid)+"/") {
		t.Errorf("Resolve = %q, not through pid %d", p, cmd.Process.Pid)
	}
	out, err := exec.Command(setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--", "cat", p).CombinedOutput()
	if err != nil || string(out) != "guest bytes" {
		t.Errorf("reading %s without capabilities: %v: %q", p, err, out)
	}
	// The launcher's end ends the program, so the pod can complete.
	h.Release()
	if err := cmd.Wait(); err != nil {
		t.Errorf("container-disk after its holder went: %v\n%s", err, stderr.String())
	}
}

func TestCopySelfAndUsage(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "bin", "container-disk")
	var stderr bytes.Buffer
	if code := Main([]string{"--copy-to", dst}, &stderr); code != 0 {
		t.Fatalf("--copy-to: exit %d: %s", code, stderr.String())
	}
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("copied binary: %v %v", fi, err)
	}
	stderr.Reset()
	if code := Main(nil, &stderr); code != 2 || !strings.Contains(stderr.String(), "--socket") {
		t.Errorf("no arguments: exit %d: %s", code, stderr.String())
	}
	stderr.Reset()
	if code := Main([]string{"--socket", filepath.Join(t.TempDir(), "s"), "--disk-dir", "/nonexistent"}, &stderr); code != 1 || !strings.Contains(stderr.String(), "/nonexistent") {
		t.Errorf("missing disk dir: exit %d: %s", code, stderr.String())
	}
}
