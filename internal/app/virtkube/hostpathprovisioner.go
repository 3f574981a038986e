package virtkube

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"

	"github.com/virtkube/virtkube/internal/hostpath"
)

// nodeNameEnv is where a DaemonSet passes its node's name (downward API
// spec.nodeName), as deploy/hostpath does.
const nodeNameEnv = "NODE_NAME"

// hostPathProvisionerOptions are the flags of `virtkube hostpath-provisioner`.
type hostPathProvisionerOptions struct {
	hostpath.Options
	Kubeconfig string
}

// Validate names the flag to change.
func (o *hostPathProvisionerOptions) Validate() error {
	if o.NodeName == "" {
		return fmt.Errorf("--node-name: must be set, or the %s environment variable (a DaemonSet passes spec.nodeName through the downward API)", nodeNameEnv)
	}
	if errs := validation.IsDNS1123Subdomain(o.NodeName); len(errs) > 0 {
		return fmt.Errorf("--node-name %q: not a node name: %s", o.NodeName, strings.Join(errs, "; "))
	}
	if !filepath.IsAbs(o.DefaultPoolPath) {
		return fmt.Errorf("--default-pool-path %q: must be an absolute path (the pool \"local\" when no HostPathProvisioner exists)", o.DefaultPoolPath)
	}
	for _, a := range []struct{ flag, addr string }{{"--healthz-address", o.HealthAddr}, {"--metrics-bind-address", o.MetricsAddr}} {
		if err := validateListenAddr(a.addr); err != nil {
			return fmt.Errorf("%s %q: %w", a.flag, a.addr, err)
		}
	}
	return nil
}

// validateListenAddr accepts host:port (host may be empty) or "0" for off.
func validateListenAddr(addr string) error {
	if addr == "0" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, :port or 0 to serve nothing")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q: want a number from 0 to 65535", port)
	}
	return nil
}

func newHostPathProvisionerCommand() *cobra.Command {
	o := &hostPathProvisionerOptions{Options: hostpath.Options{
		NodeName: os.Getenv(nodeNameEnv), DefaultPoolPath: "/var/hpvolumes", HealthAddr: ":8081", MetricsAddr: "0",
	}}
	cmd := &cobra.Command{
		Use:   "hostpath-provisioner",
		Short: "Run the hostpath provisioner of one node: volumes of StorageClasses with provisioner " + hostpath.Provisioner,
		Long: `Run the hostpath provisioner of one node, as a DaemonSet runs it on a real
cluster (deploy/hostpath). It makes a directory <pool>/csi/pvc-<uid> and a
hostPath PersistentVolume pinned to this node for each claim whose
volume.kubernetes.io/selected-node is this node, and removes the directory
when a volume of reclaimPolicy Delete is released. Pools come from the
HostPathProvisioner CR; without one, the pool "local" is --default-pool-path.
virtkube server runs its own node's provisioner; do not run this for that node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return runComponent(cmd, o.Kubeconfig, func(ctx context.Context, cfg *rest.Config) error {
				return hostpath.Run(ctx, cfg, o.Options)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig to use; empty means the pod's service account")
	f.StringVar(&o.NodeName, "node-name", o.NodeName, "the node this provisioner serves (default $"+nodeNameEnv+")")
	f.StringVar(&o.DefaultPoolPath, "default-pool-path", o.DefaultPoolPath, `path of the storage pool "local" while no HostPathProvisioner exists`)
	f.StringVar(&o.HealthAddr, "healthz-address", o.HealthAddr, "address of /healthz and /readyz; 0 disables them")
	f.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "address of /metrics; 0 disables it")
	return cmd
}
