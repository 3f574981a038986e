package containerdisk

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// Main is the container-disk program; it returns the exit code.
//
//	container-disk --socket S [--disk-dir /disk] [--path FILE]
//	    serve the disk on socket S until SIGTERM
//	container-disk --copy-to FILE
//	    put this binary at FILE (an init container fills the pod's
//	    shared bin directory with it)
func Main(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("container-disk", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "unix socket to serve the disk's path on")
	diskDir := fs.String("disk-dir", DefaultDiskDir, "directory of the image holding the disk")
	name := fs.String("path", "", "the disk file, when the directory holds more than one (the volume's containerDisk.path)")
	copyTo := fs.String("copy-to", "", "copy this binary to the given file and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "container-disk: %v\n", err)
		return 1
	}
	switch {
	case *copyTo != "":
		if err := copySelf(*copyTo); err != nil {
			return fail(err)
		}
		return 0
	case *socket == "":
		fmt.Fprintln(stderr, "container-disk: --socket or --copy-to is required")
		return 2
	}
	disk := os.Getenv(DiskFileEnv)
	if disk == "" {
		var err error
		if disk, err = FindDisk(*diskDir, *name); err != nil {
			return fail(err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := Serve(ctx, *socket, disk, func() error {
		fmt.Fprintf(stderr, "container-disk: serving %s on %s\n", disk, *socket)
		return DropCapabilities()
	})
	if err != nil {
		return fail(err)
	}
	return 0
}

// copySelf puts the running binary at dst: a hard link when both are on one
// filesystem, else a copy.
func copySelf(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Link(self, dst); err == nil {
		return nil
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
