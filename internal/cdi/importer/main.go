// Package importer is `virtkube cdi-importer`, the program of the pods that
// fill a DataVolume's claim, as CDI's importer, upload server and clone
// source pods do (docs/design/0008-datavolumes-on-a-cluster.md). The
// DataVolume controller makes the pod from the launcher image with the claim
// mounted at --dest and one --mode:
//
//   - import: fill the claim from an http URL, a registry image (pulled
//     here, or by the node and served by the container-disk program in the
//     pod: CDI's pullMethod node) or with a blank disk;
//   - upload: take one upload, forwarded unchanged by the upload proxy;
//   - clone-source: stream a claim's disk.img to the upload server of the
//     clone's target claim.
//
// A claim of volumeMode Block is a device in the pod instead: import and
// upload write the image onto --dest-device, through a file under
// --scratch so that nothing is written before the image is whole;
// clone-source sends all of --source-device.
//
// The pod reports its progress as CDI's pods do, as a Prometheus gauge on
// --listen that the controller reads with ScrapeProgress, and its outcome by
// its exit status: on failure the last line it prints is
// "cdi-importer: <error>", which the pod's terminationMessagePolicy
// FallbackToLogsOnError makes the container's termination message. The disk
// is written with package cdi, so a cut-off write never leaves a disk.img.
package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2/textlogger"

	"github.com/virtkube/virtkube/internal/cdi"
)

// Modes (--mode).
const (
	// ModeImport fills the claim from --source.
	ModeImport = "import"
	// ModeUpload serves one upload into the claim.
	ModeUpload = "upload"
	// ModeCloneSource sends the claim's disk to a clone's upload server.
	ModeCloneSource = "clone-source"
)

// Sources of ModeImport (--source).
const (
	// SourceHTTP downloads --endpoint.
	SourceHTTP = "http"
	// SourceBlank makes an empty disk.
	SourceBlank = "blank"
	// SourceRegistry imports the disk of a containerDisk image: pulled
	// from --endpoint, or served on --disk-socket.
	SourceRegistry = "registry"
)

// Flag names, for the controller that writes the pod's command line (see
// Options.Args).
const (
	FlagMode       = "mode"
	FlagSource     = "source"
	FlagEndpoint   = "endpoint"
	FlagDest       = "dest"
	FlagSize       = "size"
	FlagListen     = "listen"
	FlagOwnerUID   = "owner-uid"
	FlagScratch    = "scratch"
	FlagDiskSocket = "disk-socket"
	FlagTokenFile  = "token-file"
	FlagSourceDir  = "source-dir"
	FlagUploadURL  = "upload-url"
	// FlagDestDevice is the block device to fill instead of --dest.
	FlagDestDevice = "dest-device"
	// FlagSourceDevice is the block device clone-source sends instead of
	// --source-dir's disk.img.
	FlagSourceDevice = "source-device"
	// FlagInsecureRegistry speaks plain HTTP to --endpoint's registry.
	FlagInsecureRegistry = "insecure-registry"
)

// Defaults of the flags.
const (
	// DefaultPort is the port of /metrics, /healthz and the upload
	// server.
	DefaultPort = 8443
	// DefaultDest is where the pod mounts the claim to fill.
	DefaultDest = "/data"
	// DefaultSourceDir is where a clone-source pod mounts the claim to
	// send.
	DefaultSourceDir = "/source"
)

// DefaultListen is the default --listen: DefaultPort on every address.
const DefaultListen = ":8443"

// Options are the flags of `virtkube cdi-importer`.
type Options struct {
	// Mode is ModeImport, ModeUpload or ModeCloneSource.
	Mode string
	// Source is what ModeImport fills the claim from: SourceHTTP,
	// SourceBlank or SourceRegistry.
	Source string
	// Endpoint is the http(s) URL of SourceHTTP, or the docker://IMAGE of
	// SourceRegistry.
	Endpoint string
	// Dest is the directory of the claim to fill, where disk.img goes;
	// ignored with DestDevice.
	Dest string
	// DestDevice, in ModeImport and ModeUpload, is the block device of a
	// claim of volumeMode Block, filled instead of Dest from its first
	// byte; what lies past the image is left as it is (SourceBlank writes
	// nothing). The image waits in Scratch, which must be set, until it
	// is whole, and must not be larger than the device.
	DestDevice string
	// Size is the disk's size in bytes, the claim's requested storage;
	// every mode but ModeCloneSource needs it. With DestDevice the
	// device's own size bounds the image instead.
	Size int64
	// Listen is the address of /metrics and /healthz, and of the upload
	// server in ModeUpload.
	Listen string
	// OwnerUID is the ownerUID label of the progress metric: the
	// DataVolume's UID.
	OwnerUID string
	// Scratch is the directory under which SourceRegistry pulls the image
	// into a temporary directory of its own; empty is os.TempDir(). With
	// DestDevice it must be set: the image waits there until it is whole.
	Scratch string
	// DiskSocket, with SourceRegistry, is the unix socket on which the
	// pod's container-disk program serves the image's disk (CDI's
	// pullMethod node); the image is not pulled here then.
	DiskSocket string
	// TokenFile holds the bearer token: the one an upload must bear in
	// ModeUpload, the one to send in ModeCloneSource.
	TokenFile string
	// SourceDir is the directory of the claim ModeCloneSource sends;
	// ignored with SourceDevice.
	SourceDir string
	// SourceDevice is the block device of a claim of volumeMode Block
	// that ModeCloneSource sends, all of it, instead of SourceDir's
	// disk.img.
	SourceDevice string
	// InsecureRegistry makes SourceRegistry pull from --endpoint's
	// registry over plain HTTP: CDIConfig spec.insecureRegistries lists
	// it.
	InsecureRegistry bool
	// UploadURL is where ModeCloneSource PUTs the disk: the target's
	// upload server, e.g. http://10.1.2.3:8443/v1beta1/upload.
	UploadURL string

	// ready, when set, is told the address the server listens on once it
	// does (tests listen on 127.0.0.1:0).
	ready func(addr string)
}

// NewOptions returns the defaults.
func NewOptions() Options {
	return Options{Dest: DefaultDest, Listen: DefaultListen, SourceDir: DefaultSourceDir}
}

// Validate names the first flag to change.
func (o *Options) Validate() error {
	switch o.Mode {
	case ModeImport, ModeUpload, ModeCloneSource:
	case "":
		return fmt.Errorf("--%s must be set: %s, %s or %s", FlagMode, ModeImport, ModeUpload, ModeCloneSource)
	default:
		return fmt.Errorf("--%s %q: want %s, %s or %s", FlagMode, o.Mode, ModeImport, ModeUpload, ModeCloneSource)
	}
	if o.Mode == ModeCloneSource {
		if o.DestDevice != "" {
			return fmt.Errorf("--%s %s: only with --%s %s or %s", FlagDestDevice, o.DestDevice, FlagMode, ModeImport, ModeUpload)
		}
	} else {
		if o.SourceDevice != "" {
			return fmt.Errorf("--%s %s: only with --%s %s", FlagSourceDevice, o.SourceDevice, FlagMode, ModeCloneSource)
		}
		if err := o.validateDest(); err != nil {
			return err
		}
	}
	if err := validateListen(o.Listen); err != nil {
		return fmt.Errorf("--%s %q: %w", FlagListen, o.Listen, err)
	}
	switch o.Mode {
	case ModeImport:
		return o.validateImport()
	case ModeUpload:
		if o.TokenFile == "" {
			return fmt.Errorf("--%s must be set: the file holding the token an upload must bear", FlagTokenFile)
		}
	case ModeCloneSource:
		if o.SourceDir == "" && o.SourceDevice == "" {
			return fmt.Errorf("--%s or --%s must be set: the directory or block device of the claim to send", FlagSourceDir, FlagSourceDevice)
		}
		if err := validateHTTPURL(o.UploadURL); err != nil {
			return fmt.Errorf("--%s %q: %w", FlagUploadURL, o.UploadURL, err)
		}
		if o.TokenFile == "" {
			return fmt.Errorf("--%s must be set: the file holding the token of the target's upload server", FlagTokenFile)
		}
	}
	return nil
}

// validateDest checks the flags of the claim that ModeImport and
// ModeUpload fill.
func (o *Options) validateDest() error {
	if o.DestDevice != "" {
		if o.Scratch == "" {
			return fmt.Errorf("--%s must be set with --%s: the directory where the image waits until it is whole", FlagScratch, FlagDestDevice)
		}
		return nil
	}
	if o.Dest == "" {
		return fmt.Errorf("--%s must be set: the directory of the claim to fill", FlagDest)
	}
	if o.Size <= 0 {
		return fmt.Errorf("--%s %d: must be positive (the claim's requested storage in bytes)", FlagSize, o.Size)
	}
	return nil
}

// validateImport checks the flags of ModeImport.
func (o *Options) validateImport() error {
	switch o.Source {
	case SourceBlank:
	case SourceHTTP:
		if err := validateHTTPURL(o.Endpoint); err != nil {
			return fmt.Errorf("--%s %q: %w", FlagEndpoint, o.Endpoint, err)
		}
	case SourceRegistry:
		if o.DiskSocket != "" {
			return nil
		}
		ref, ok := strings.CutPrefix(o.Endpoint, "docker://")
		if !ok || ref == "" {
			return fmt.Errorf("--%s %q: want docker://<image>, or --%s for an image the node pulled", FlagEndpoint, o.Endpoint, FlagDiskSocket)
		}
	case "":
		return fmt.Errorf("--%s must be set with --%s %s: %s, %s or %s", FlagSource, FlagMode, ModeImport, SourceHTTP, SourceBlank, SourceRegistry)
	default:
		return fmt.Errorf("--%s %q: want %s, %s or %s", FlagSource, o.Source, SourceHTTP, SourceBlank, SourceRegistry)
	}
	return nil
}

// validateHTTPURL accepts an absolute http or https URL.
func validateHTTPURL(s string) error {
	if s == "" {
		return errors.New("must be set")
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want an http:// or https:// URL")
	}
	return nil
}

// validateListen accepts host:port, host may be empty.
func validateListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port or :port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q: want a number from 0 to 65535", port)
	}
	return nil
}

// flagSet binds o to the program's flags.
func (o *Options) flagSet() *pflag.FlagSet {
	fs := pflag.NewFlagSet("cdi-importer", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.Mode, FlagMode, o.Mode, "what to do: import, upload or clone-source")
	fs.StringVar(&o.Source, FlagSource, o.Source, "import: where the disk comes from: http, blank or registry")
	fs.StringVar(&o.Endpoint, FlagEndpoint, o.Endpoint, "import: the http(s) URL, or docker://IMAGE for registry")
	fs.StringVar(&o.Dest, FlagDest, o.Dest, "directory of the claim to fill (disk.img goes there)")
	fs.StringVar(&o.DestDevice, FlagDestDevice, o.DestDevice, "import, upload: block device of the claim to fill instead of --dest (needs --scratch)")
	fs.Int64Var(&o.Size, FlagSize, o.Size, "size of the disk in bytes (the claim's requested storage); with --dest-device, the device's size bounds the image")
	fs.StringVar(&o.Listen, FlagListen, o.Listen, "address of /metrics, /healthz and the upload server")
	fs.StringVar(&o.OwnerUID, FlagOwnerUID, o.OwnerUID, "ownerUID label of the progress metric (the DataVolume's UID)")
	fs.StringVar(&o.Scratch, FlagScratch, o.Scratch, "import from registry: directory to pull the image under (default the system's temporary directory); with --dest-device: where the image waits until it is whole")
	fs.StringVar(&o.DiskSocket, FlagDiskSocket, o.DiskSocket, "import from registry: socket of the container-disk program serving the node-pulled image's disk")
	fs.StringVar(&o.TokenFile, FlagTokenFile, o.TokenFile, "upload: token an upload must bear; clone-source: token to send")
	fs.StringVar(&o.SourceDir, FlagSourceDir, o.SourceDir, "clone-source: directory of the claim to send")
	fs.StringVar(&o.SourceDevice, FlagSourceDevice, o.SourceDevice, "clone-source: block device of the claim to send, all of it, instead of --source-dir's disk.img")
	fs.StringVar(&o.UploadURL, FlagUploadURL, o.UploadURL, "clone-source: URL of the target's upload server to PUT the disk to")
	fs.BoolVar(&o.InsecureRegistry, FlagInsecureRegistry, o.InsecureRegistry, "import from registry: pull from --endpoint's registry over plain HTTP (CDIConfig spec.insecureRegistries lists it)")
	return fs
}

// Args is the command line (after `virtkube cdi-importer`) that runs o:
// every flag that differs from NewOptions.
func (o Options) Args() []string {
	def := NewOptions()
	var args []string
	add := func(name, value, dflt string) {
		if value != dflt {
			args = append(args, "--"+name+"="+value)
		}
	}
	add(FlagMode, o.Mode, def.Mode)
	add(FlagSource, o.Source, def.Source)
	add(FlagEndpoint, o.Endpoint, def.Endpoint)
	add(FlagDest, o.Dest, def.Dest)
	add(FlagDestDevice, o.DestDevice, def.DestDevice)
	if o.Size != def.Size {
		args = append(args, "--"+FlagSize+"="+strconv.FormatInt(o.Size, 10))
	}
	add(FlagListen, o.Listen, def.Listen)
	add(FlagOwnerUID, o.OwnerUID, def.OwnerUID)
	add(FlagScratch, o.Scratch, def.Scratch)
	add(FlagDiskSocket, o.DiskSocket, def.DiskSocket)
	add(FlagTokenFile, o.TokenFile, def.TokenFile)
	add(FlagSourceDir, o.SourceDir, def.SourceDir)
	add(FlagSourceDevice, o.SourceDevice, def.SourceDevice)
	add(FlagUploadURL, o.UploadURL, def.UploadURL)
	if o.InsecureRegistry != def.InsecureRegistry {
		args = append(args, "--"+FlagInsecureRegistry+"="+strconv.FormatBool(o.InsecureRegistry))
	}
	return args
}

// Main is `virtkube cdi-importer` with args (the flags); it returns the exit
// code: 0 once the claim is filled (or sent), 1 on failure, after printing
// "cdi-importer: <error>" as the last line on stderr. SIGTERM and SIGINT
// stop it; what it wrote of the disk goes.
func Main(args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return mainWith(ctx, args, stderr, nil)
}

// mainWith is Main under ctx; ready is Options.ready.
func mainWith(ctx context.Context, args []string, stderr io.Writer, ready func(addr string)) int {
	stderr = &lockedWriter{w: stderr}
	o := NewOptions()
	fs := o.flagSet()
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage: virtkube cdi-importer --mode MODE [flags]\n%s", fs.FlagUsages())
			return 0
		}
		return fail(stderr, err)
	}
	if fs.NArg() > 0 {
		return fail(stderr, fmt.Errorf("unexpected arguments %q: cdi-importer takes flags only", fs.Args()))
	}
	if err := o.Validate(); err != nil {
		return fail(stderr, err)
	}
	o.ready = ready
	log := textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(stderr)))
	if err := run(ctx, o, log); err != nil {
		return fail(stderr, err)
	}
	return 0
}

// fail prints err as the program's last line and returns the exit code.
func fail(stderr io.Writer, err error) int {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintf(stderr, "cdi-importer: %s\n", msg)
	return 1
}

// run does o.Mode with the progress metric served on o.Listen.
func run(ctx context.Context, o Options, log logr.Logger) error {
	metric := ProgressMetric
	if o.Mode == ModeCloneSource {
		metric = CloneProgressMetric
	}
	prog := newProgress(metric, o.OwnerUID, log)
	dst := destOf(o)
	if o.Mode != ModeCloneSource {
		if err := dst.check(log); err != nil {
			return err
		}
		// A device holds no marker of a finished import: it is filled
		// again.
		if dst.device == "" && alreadyFilled(o.Dest, log) {
			return nil
		}
	}
	var up *uploadServer
	if o.Mode == ModeUpload {
		token, err := readToken(o.TokenFile)
		if err != nil {
			return err
		}
		up = &uploadServer{dest: dst, token: token, progress: prog, log: log, done: make(chan struct{})}
	}
	srv, err := serve(ctx, o.Listen, prog, up, o.ready)
	if err != nil {
		return err
	}
	defer srv.stop()
	switch o.Mode {
	case ModeImport:
		err = runImport(ctx, o, dst, prog, log)
	case ModeUpload:
		err = up.wait(ctx, srv.failed)
	case ModeCloneSource:
		err = runCloneSource(ctx, o, prog, log)
	}
	if err != nil {
		return err
	}
	prog.set(100)
	return nil
}

// checkDest makes sure the claim to fill is there.
func checkDest(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("--%s: %w", FlagDest, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("--%s %s: not a directory", FlagDest, dir)
	}
	return nil
}

// alreadyFilled reports whether the claim holds its disk already (the pod
// ran before and its container restarted): there is nothing left to do.
func alreadyFilled(dir string, log logr.Logger) bool {
	if !cdi.HasDisk(dir) {
		return false
	}
	log.Info("claim holds its disk already; nothing to do", "dir", dir, "file", cdi.DiskFile)
	return true
}

// readToken is the trimmed content of the token file.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", FlagTokenFile, err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("--%s %s: the file is empty", FlagTokenFile, path)
	}
	return token, nil
}

// lockedWriter serialises the writes of the program's goroutines, so a log
// line is never cut by another.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
