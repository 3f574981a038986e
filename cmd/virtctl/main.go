// Command virtctl controls KubeVirt virtual machines; it is also the kubectl
// plugin `kubectl virt` when installed as kubectl-virt.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/virtkube/virtkube/internal/virtctl"
)

func main() {
	name := "virtctl"
	if filepath.Base(os.Args[0]) == "kubectl-virt" {
		name = "kubectl virt"
	}
	if err := virtctl.NewCommand(name).ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
