package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/virtkube/virtkube/test/containerdisk"
	"github.com/virtkube/virtkube/test/guest"
)

// haltSector is a boot sector that stops the CPU for good: cli; hlt; and a
// jump back to the hlt, in case something wakes it; then the 0x55AA boot
// signature at bytes 510-511.
func haltSector() []byte {
	b := make([]byte, 512)
	copy(b, []byte{0xfa, 0xf4, 0xeb, 0xfd}) // cli; hlt; jmp short -3 (to the hlt)
	b[510], b[511] = 0x55, 0xaa
	return b
}

// guestImage builds the disk of kind ("halt" or "linux"), serves it as a
// containerDisk from a registry on loopback that lives until ctx is done,
// and returns its reference.
func guestImage(ctx context.Context, kind, workDir string) (string, error) {
	var disk string
	switch kind {
	case "halt":
		disk = filepath.Join(workDir, "halt.img")
		if err := os.WriteFile(disk, haltSector(), 0o644); err != nil {
			return "", err
		}
	case "linux":
		var err error
		if disk, err = guest.Disk(); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("--guest %q: want halt or linux", kind)
	}
	host, err := startRegistry(ctx)
	if err != nil {
		return "", err
	}
	return containerdisk.Push(ctx, host, "virtkube/bench-"+kind, "latest", disk)
}

// startRegistry serves an in-memory OCI registry on 127.0.0.1 until ctx is
// done, as containerdisk.StartRegistry does for tests.
func startRegistry(ctx context.Context) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{
		Handler:           registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	context.AfterFunc(ctx, func() { srv.Close() })
	return ln.Addr().String(), nil
}
