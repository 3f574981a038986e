// Package virtctl is virtkube's virtctl: KubeVirt's command-line client, with
// its commands, flags, output and exit codes, so scripts written for one work
// with the other.
package virtctl

import (
	"flag"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// NewCommand returns the root command. programName is how it was called
// ("virtctl", or "kubectl virt" as a kubectl plugin).
func NewCommand(programName string) *cobra.Command {
	root := &cobra.Command{
		Use:           programName,
		Short:         programName + " controls virtual machine related operations on your kubernetes cluster.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	clientConfig := bindClientConfig(root)
	addVerbosityFlag(root)
	root.AddCommand(
		newConsoleCommand(clientConfig),
		newVNCCommand(clientConfig),
		newPortForwardCommand(clientConfig),
		newSSHCommand(clientConfig),
		newSCPCommand(clientConfig),
		newStartCommand(clientConfig),
		newStopCommand(clientConfig),
		newRestartCommand(clientConfig),
		newMigrateCommand(clientConfig),
		newPauseCommand(clientConfig),
		newUnpauseCommand(clientConfig),
		newExposeCommand(clientConfig),
		newCreateCommand(clientConfig),
		newVersionCommand(clientConfig),
		newImageUploadCommand(clientConfig),
	)
	return root
}

// bindClientConfig adds kubectl's connection flags (--kubeconfig, --context,
// -n/--namespace, -s/--server, --token, ...) and returns the config they
// select, resolved as kubectl resolves it.
func bindClientConfig(cmd *cobra.Command) clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.DefaultClientConfig = &clientcmd.DefaultClientConfig
	overrides := &clientcmd.ConfigOverrides{ClusterDefaults: clientcmd.ClusterDefaults}
	flags := cmd.PersistentFlags()
	flags.StringVar(&rules.ExplicitPath, "kubeconfig", "", "Path to the kubeconfig file to use for CLI requests.")
	names := clientcmd.RecommendedConfigOverrideFlags("")
	// KubeVirt keeps kubectl's old -s for scripts that still use it.
	names.ClusterOverrideFlags.APIServer.ShortName = "s"
	clientcmd.BindOverrideFlags(overrides, flags, names)
	return clientcmd.NewInteractiveDeferredLoadingClientConfig(rules, overrides, os.Stdin)
}

// addVerbosityFlag exposes klog's -v as KubeVirt's virtctl does.
func addVerbosityFlag(cmd *cobra.Command) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	cmd.PersistentFlags().AddGoFlag(fs.Lookup("v"))
}
