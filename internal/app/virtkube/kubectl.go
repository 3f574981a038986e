package virtkube

import (
	"os"
	"path/filepath"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/plugin"
)

// DefaultKubeconfig is the admin kubeconfig of a server run with the default
// --data-dir.
var DefaultKubeconfig = filepath.Join(NewServerOptions().DataDir, "kubeconfig")

// RunKubectl runs the upstream kubectl of the embedded Kubernetes version
// with args (without the leading "kubectl"), and returns its exit code. When
// neither KUBECONFIG nor ~/.kube/config says otherwise, it talks to the local
// server.
func RunKubectl(args []string) int {
	if os.Getenv("KUBECONFIG") == "" {
		home, _ := os.UserHomeDir()
		if _, err := os.Stat(filepath.Join(home, ".kube", "config")); err != nil {
			if _, err := os.Stat(DefaultKubeconfig); err == nil {
				os.Setenv("KUBECONFIG", DefaultKubeconfig)
			}
		}
	}
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	cmd := kubectlcmd.NewDefaultKubectlCommandWithArgs(kubectlcmd.KubectlOptions{
		PluginHandler: kubectlcmd.NewDefaultPluginHandler(plugin.ValidPluginFilenamePrefixes),
		Arguments:     append([]string{"kubectl"}, args...),
		ConfigFlags:   genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().WithDiscoveryBurst(300).WithDiscoveryQPS(50).WithWarningPrinter(streams),
		IOStreams:     streams,
	})
	cmd.SetArgs(args)
	return cli.Run(cmd)
}
