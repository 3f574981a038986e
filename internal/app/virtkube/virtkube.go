// Package virtkube is the virtkube command: `virtkube server` and friends.
package virtkube

import (
	"flag"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/virtkube/virtkube/internal/app/virtlauncher"
	"github.com/virtkube/virtkube/internal/version"
)

// NewCommand returns the root command.
func NewCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "virtkube",
		Short:         "Virtual machines as Kubernetes resources, speaking KubeVirt's API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	logFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(logFlags)
	if v := logFlags.Lookup("v"); v != nil {
		root.PersistentFlags().AddGoFlag(v)
	}
	root.AddCommand(newServerCommand(), newResetCommand(), newVirtAPICommand(), newVirtControllerCommand(), newVirtHandlerCommand(), newHostPathProvisionerCommand(), newCDIImporterCommand(), newCDIUploadProxyCommand(), virtlauncher.NewCommand(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), version.String())
		},
	})
	return root
}
