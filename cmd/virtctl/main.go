// Command virtctl controls KubeVirt virtual machines; it is also the kubectl
// plugin `kubectl virt` when installed as kubectl-virt.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/virtkube/virtkube/internal/virtctl"
)

func main() {
	name := "virtctl"
	if filepath.Base(os.Args[0]) == "kubectl-virt" {
		name = "kubectl virt"
	}
	// Ctrl+C ends waiting commands (port-forward, vnc) cleanly; a console in
	// raw mode passes it to the guest instead.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := virtctl.NewCommand(name).ExecuteContext(ctx)
	stop()
	if err != nil {
		// KubeVirt's virtctl prints the bare error and exits 1.
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
