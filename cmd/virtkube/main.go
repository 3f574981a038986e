// Command virtkube runs virtual machines as Kubernetes resources.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

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
	cmd := virtkube.NewCommand()
	// Called as a component (bin/virt-controller -> virtkube): run it.
	if slices.Contains(virtkube.Components, filepath.Base(os.Args[0])) {
		cmd.SetArgs(append([]string{filepath.Base(os.Args[0])}, os.Args[1:]...))
	}
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "virtkube:", err)
		os.Exit(1)
	}
}
