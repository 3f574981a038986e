// Command virtkube runs virtual machines as Kubernetes resources.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/virtkube/virtkube/internal/app/virtkube"
)

func main() {
	// virtkube is also kubectl, called by that name or as `virtkube kubectl`.
	if filepath.Base(os.Args[0]) == "kubectl" {
		os.Exit(virtkube.RunKubectl(os.Args[1:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "kubectl" {
		os.Exit(virtkube.RunKubectl(os.Args[2:]))
	}
	if err := virtkube.NewCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "virtkube:", err)
		os.Exit(1)
	}
}
