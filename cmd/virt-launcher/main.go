// Command virt-launcher runs one VMI's domain in its launcher pod. It is
// also `virtkube virt-launcher`; this binary of its own holds only what a
// launcher needs, so each pod maps and initialises a tenth of virtkube.
package main

import (
	"flag"
	"fmt"
	"os"

	"k8s.io/klog/v2"

	"github.com/virtkube/virtkube/internal/app/virtlauncher"
)

func main() {
	cmd := virtlauncher.NewCommand()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	logFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(logFlags)
	cmd.PersistentFlags().AddGoFlag(logFlags.Lookup("v"))
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "virt-launcher:", err)
		os.Exit(1)
	}
}
