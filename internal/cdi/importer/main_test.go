package importer

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtkube/virtkube/internal/cdi"
)

// result is how one run of the program ended.
type result struct {
	code   int
	stderr string
}

// lastLine is the last line the program printed.
func (r result) lastLine() string {
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	return lines[len(lines)-1]
}

// syncBuffer is a bytes.Buffer the test may read while the program writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// program is the program running in the background.
type program struct {
	addr   string // where its server listens
	ended  chan result
	cancel context.CancelFunc
}

// start runs the program with args (plus --listen 127.0.0.1:0) until it
// ends or the test does, and returns once its server listens.
func start(t *testing.T, args ...string) *program {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &program{ended: make(chan result, 1), cancel: cancel}
	addr := make(chan string, 1)
	var stderr syncBuffer
	go func() {
		code := mainWith(ctx, append(args, "--listen=127.0.0.1:0"), &stderr, func(a string) { addr <- a })
		p.ended <- result{code, stderr.String()}
		close(addr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.ended:
		case <-time.After(10 * time.Second):
			t.Error("the program did not end when cancelled")
		}
	})
	a, ok := <-addr
	if !ok {
		r := <-p.ended
		p.ended <- r
		t.Fatalf("the program ended before it listened: exit %d: %s", r.code, r.stderr)
	}
	p.addr = a
	return p
}

// wait is how the program ended.
func (p *program) wait(t *testing.T) result {
	t.Helper()
	select {
	case r := <-p.ended:
		p.ended <- r // for the cleanup
		return r
	case <-time.After(time.Minute):
		t.Fatal("the program did not end")
		return result{}
	}
}

// runMain runs the program to its end.
func runMain(t *testing.T, args ...string) result {
	t.Helper()
	var stderr syncBuffer
	code := mainWith(context.Background(), append(args, "--listen=127.0.0.1:0"), &stderr, nil)
	return result{code, stderr.String()}
}

// needQemuImg skips a test that writes images when qemu-img is missing.
func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
}

// readDisk is dir's disk.img.
func readDisk(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, cdi.DiskFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deviceFile makes a regular file of size bytes, every one 0xAA, standing
// in for a claim's block device.
func deviceFile(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "device")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xAA}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// deviceHolds fails unless device, size bytes long, holds content followed
// by the 0xAA of deviceFile.
func deviceHolds(t *testing.T, device string, size int, content []byte) {
	t.Helper()
	got, err := os.ReadFile(device)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case len(got) != size:
		t.Errorf("device is %d bytes, want %d: its size must not change", len(got), size)
	case !bytes.Equal(got[:len(content)], content):
		t.Errorf("device does not start with the %d bytes of the image", len(content))
	case !bytes.Equal(got[len(content):], bytes.Repeat([]byte{0xAA}, size-len(content))):
		t.Error("device changed past the image's end")
	}
}

// noDisk fails unless dir holds no disk.img and nothing half-written.
func noDisk(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("%s holds %s; want nothing after a failed write", dir, e.Name())
	}
}

func TestValidate(t *testing.T) {
	valid := func(change func(*Options)) Options {
		o := NewOptions()
		o.Mode, o.Source, o.Endpoint, o.Size = ModeImport, SourceHTTP, "http://example.com/disk.img", 1<<20
		change(&o)
		return o
	}
	for _, tc := range []struct {
		name    string
		o       Options
		wantErr string // "" is valid
	}{
		{"http", valid(func(*Options) {}), ""},
		{"blank", valid(func(o *Options) { o.Source, o.Endpoint = SourceBlank, "" }), ""},
		{"registry", valid(func(o *Options) { o.Source, o.Endpoint = SourceRegistry, "docker://quay.io/x/y:1" }), ""},
		{"registry node", valid(func(o *Options) { o.Source, o.Endpoint, o.DiskSocket = SourceRegistry, "", "/s/disk.sock" }), ""},
		{"upload", valid(func(o *Options) { o.Mode, o.TokenFile = ModeUpload, "/t" }), ""},
		{"clone source without size", valid(func(o *Options) {
			o.Mode, o.Size, o.UploadURL, o.TokenFile = ModeCloneSource, 0, "http://10.0.0.1:8443/v1beta1/upload", "/t"
		}), ""},
		{"no mode", valid(func(o *Options) { o.Mode = "" }), "--mode must be set"},
		{"bad mode", valid(func(o *Options) { o.Mode = "export" }), `--mode "export"`},
		{"no size", valid(func(o *Options) { o.Size = 0 }), "--size 0: must be positive"},
		{"no source", valid(func(o *Options) { o.Source = "" }), "--source must be set"},
		{"bad source", valid(func(o *Options) { o.Source = "s3" }), `--source "s3"`},
		{"http without URL", valid(func(o *Options) { o.Endpoint = "" }), "--endpoint"},
		{"http not a URL", valid(func(o *Options) { o.Endpoint = "ftp://x/y" }), `--endpoint "ftp://x/y": want an http:// or https:// URL`},
		{"registry not docker://", valid(func(o *Options) { o.Source, o.Endpoint = SourceRegistry, "quay.io/x/y" }), "want docker://<image>"},
		{"upload without token", valid(func(o *Options) { o.Mode = ModeUpload }), "--token-file must be set"},
		{"clone source without URL", valid(func(o *Options) { o.Mode, o.TokenFile = ModeCloneSource, "/t" }), "--upload-url"},
		{"clone source without token", valid(func(o *Options) { o.Mode, o.UploadURL = ModeCloneSource, "http://x/v1beta1/upload" }), "--token-file must be set"},
		{"bad listen", valid(func(o *Options) { o.Listen = "8443" }), `--listen "8443"`},
		{"device", valid(func(o *Options) { o.DestDevice, o.Scratch = "/dev/b", "/scratch" }), ""},
		{"device without dest or size", valid(func(o *Options) { o.DestDevice, o.Scratch, o.Dest, o.Size = "/dev/b", "/scratch", "", 0 }), ""},
		{"upload to device", valid(func(o *Options) { o.Mode, o.TokenFile, o.DestDevice, o.Scratch = ModeUpload, "/t", "/dev/b", "/s" }), ""},
		{"device without scratch", valid(func(o *Options) { o.DestDevice = "/dev/b" }), "--scratch must be set with --dest-device"},
		{"source device on import", valid(func(o *Options) { o.SourceDevice = "/dev/s" }), "--source-device /dev/s: only with --mode clone-source"},
		{"clone source from device", valid(func(o *Options) {
			o.Mode, o.Size, o.UploadURL, o.TokenFile, o.SourceDir, o.SourceDevice = ModeCloneSource, 0, "http://10.0.0.1:8443/v1beta1/upload", "/t", "", "/dev/s"
		}), ""},
		{"clone source without source", valid(func(o *Options) {
			o.Mode, o.UploadURL, o.TokenFile, o.SourceDir = ModeCloneSource, "http://10.0.0.1:8443/v1beta1/upload", "/t", ""
		}), "--source-dir or --source-device must be set"},
		{"dest device on clone source", valid(func(o *Options) {
			o.Mode, o.UploadURL, o.TokenFile, o.DestDevice = ModeCloneSource, "http://10.0.0.1:8443/v1beta1/upload", "/t", "/dev/b"
		}), "--dest-device /dev/b: only with --mode import or upload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate: %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// Args is the command line that parses back into the same options.
func TestArgsRoundTrip(t *testing.T) {
	for _, o := range []Options{
		{Mode: ModeImport, Source: SourceHTTP, Endpoint: "http://x/y.img?a=b c", Dest: DefaultDest, Size: 5 << 30, Listen: DefaultListen, OwnerUID: "u-1", SourceDir: DefaultSourceDir},
		{Mode: ModeImport, Source: SourceRegistry, DiskSocket: "/var/run/cdi/disk.sock", Dest: "/d", Size: 1, Listen: ":9000", Scratch: "/scratch", SourceDir: DefaultSourceDir},
		{Mode: ModeCloneSource, SourceDir: "/src", UploadURL: "http://10.0.0.1:8443/v1beta1/upload", TokenFile: "/t/token", Dest: DefaultDest, Listen: DefaultListen},
		{Mode: ModeUpload, DestDevice: "/dev/cdi-block-volume", Scratch: "/scratch", Size: 1 << 30, TokenFile: "/t/token", Dest: DefaultDest, Listen: DefaultListen, SourceDir: DefaultSourceDir},
		{Mode: ModeCloneSource, SourceDevice: "/dev/cdi-source-block-volume", UploadURL: "http://10.0.0.1:8443/v1beta1/upload", TokenFile: "/t/token", Dest: DefaultDest, Listen: DefaultListen, SourceDir: DefaultSourceDir},
	} {
		got := NewOptions()
		fs := got.flagSet()
		if err := fs.Parse(o.Args()); err != nil {
			t.Fatalf("parse %q: %v", o.Args(), err)
		}
		if !reflect.DeepEqual(got, o) {
			t.Errorf("Args %q parsed to %+v, want %+v", o.Args(), got, o)
		}
	}
	if DefaultListen != ":"+strconv.Itoa(DefaultPort) {
		t.Errorf("DefaultListen %q is not DefaultPort %d", DefaultListen, DefaultPort)
	}
	if args := NewOptions().Args(); len(args) != 0 {
		t.Errorf("defaults render as %q, want no flags", args)
	}
}

// Bad flags end the program with one line that names them.
func TestMainBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mode=import", "--source=blank"}, "cdi-importer: --size 0: must be positive"},
		{[]string{"--mode=import", "--bogus"}, "cdi-importer: unknown flag: --bogus"},
		{[]string{"--mode=import", "--source=blank", "--size=1", "extra"}, `cdi-importer: unexpected arguments ["extra"]`},
	} {
		r := runMain(t, tc.args...)
		if r.code != 1 || !strings.HasPrefix(r.lastLine(), tc.want) {
			t.Errorf("%q: exit %d, last line %q; want 1 and %q", tc.args, r.code, r.lastLine(), tc.want)
		}
	}
	if r := runMain(t, "--help"); r.code != 0 || !strings.Contains(r.stderr, "--"+FlagUploadURL) || !strings.Contains(r.stderr, "--"+FlagDestDevice) {
		t.Errorf("--help: exit %d: %s", r.code, r.stderr)
	}
}
