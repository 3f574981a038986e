package virtkube

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/virtkube/virtkube/internal/app/virtcontroller"
)

// Components are the virtkube parts a real cluster deploys on their own. Each
// is a subcommand, and bin/ links its name to virtkube (see cmd/virtkube).
var Components = []string{"virt-controller", "virt-launcher"}

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
			// In a pod, an empty --kubeconfig means the in-cluster config.
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return virtcontroller.Run(ctx, cfg, o)
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
