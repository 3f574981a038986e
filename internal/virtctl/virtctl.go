// Package virtctl is virtkube's virtctl: KubeVirt's command-line client, with
// its commands, flags, output and exit codes, so scripts written for one work
// with the other.
package virtctl

import (
	"os"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
)

// NewCommand returns the root command. programName is how it was called
// ("virtctl", or "kubectl virt" as a kubectl plugin).
func NewCommand(programName string) *cobra.Command {
	root := &cobra.Command{
		Use:           programName,
		Short:         "virtctl controls virtual machine related operations on your kubernetes cluster.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	clientConfig := bindClientConfig(root)
	root.AddCommand(newVersionCommand(clientConfig))
	return root
}

// bindClientConfig adds kubectl's connection flags (--kubeconfig, --context,
// --namespace, --server, ...) and returns the config they select.
func bindClientConfig(cmd *cobra.Command) clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.DefaultClientConfig = &clientcmd.DefaultClientConfig
	overrides := &clientcmd.ConfigOverrides{}
	flags := cmd.PersistentFlags()
	flags.StringVar(&rules.ExplicitPath, "kubeconfig", "", "Path to the kubeconfig file to use for CLI requests.")
	clientcmd.BindOverrideFlags(overrides, flags, clientcmd.RecommendedConfigOverrideFlags(""))
	return clientcmd.NewInteractiveDeferredLoadingClientConfig(rules, overrides, os.Stdin)
}
