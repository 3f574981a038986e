package virtkube

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/virtkube/virtkube/internal/app/virtcontroller"
	"github.com/virtkube/virtkube/internal/app/virthandler"
	"github.com/virtkube/virtkube/internal/handler"
	"github.com/virtkube/virtkube/internal/noderuntime"
)

// Components are the virtkube parts a real cluster deploys on their own. Each
// is a subcommand, and bin/ links its name to virtkube (see cmd/virtkube).
var Components = []string{"virt-api", "virt-controller", "virt-handler", "virt-launcher", "hostpath-provisioner", "cdi-importer"}

func newVirtControllerCommand() *cobra.Command {
	o := virtcontroller.NewOptions()
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "virt-controller",
		Short: "Run virt-controller: launcher pods for VMIs and their phases up to Scheduled",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return runComponent(cmd, kubeconfig, func(ctx context.Context, cfg *rest.Config) error {
				return virtcontroller.Run(ctx, cfg, o)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig to use; empty means the pod's service account")
	f.StringVar(&o.LauncherImage, "launcher-image", o.LauncherImage, "image of the launcher pods' compute container")
	f.IntVar(&o.Workers, "workers", o.Workers, "VMIs reconciled in parallel")
	f.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "take turns with other replicas through a Lease")
	f.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "namespace of the leader-election Lease")
	f.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "address of /metrics; 0 disables it")
	return cmd
}

func newVirtHandlerCommand() *cobra.Command {
	o := &virthandler.Options{NodeName: noderuntime.DefaultName(), KubeletRoot: "/var/lib/kubelet", MetricsAddr: "0",
		ConsoleAddr: fmt.Sprintf(":%d", handler.ConsolePort)}
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "virt-handler",
		Short: "Run virt-handler: the node agent that starts, follows and stops this node's VMIs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return runComponent(cmd, kubeconfig, func(ctx context.Context, cfg *rest.Config) error {
				return virthandler.Run(ctx, cfg, o)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig to use; empty means the pod's service account")
	f.StringVar(&o.NodeName, "node-name", o.NodeName, "the node this handler serves")
	f.StringVar(&o.KubeletRoot, "kubelet-root", o.KubeletRoot, "kubelet's root directory, where pods keep their volumes")
	f.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "address of /metrics; 0 disables it")
	f.StringVar(&o.ConsoleAddr, "console-address", o.ConsoleAddr, "address the console server listens on")
	f.StringVar(&o.ConsoleTLS.CertFile, "tls-cert-file", "", "console server certificate")
	f.StringVar(&o.ConsoleTLS.KeyFile, "tls-key-file", "", "console server key")
	f.StringVar(&o.ConsoleTLS.ClientCAFile, "client-ca-file", "", "CA of the client certificates allowed to open consoles (virt-api's)")
	return cmd
}

// runComponent runs a cluster component with the given kubeconfig (empty:
// the pod's service account) until SIGINT or SIGTERM.
func runComponent(cmd *cobra.Command, kubeconfig string, run func(context.Context, *rest.Config) error) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, cfg)
}
