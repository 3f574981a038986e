package controlplane

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
)

// kubeProxy is a prepared kube-proxy (nftables mode): it makes ClusterIP
// and NodePort Services reach the pods of this machine, VMs' launcher pods
// among them.
type kubeProxy struct {
	opts *proxyapp.Options
}

func prepareKubeProxy(args map[string]string) (*kubeProxy, error) {
	opts := proxyapp.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse(flagArgs(args)); err != nil {
		return nil, fmt.Errorf("kube-proxy flags: %w", err)
	}
	if err := opts.Complete(fs); err != nil {
		return nil, fmt.Errorf("kube-proxy options: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("kube-proxy options: %w", err)
	}
	return &kubeProxy{opts: opts}, nil
}

// Run proxies until ctx is done. Upstream's loop never returns after a
// clean stop, so Run returns when ctx is done and leaves that goroutine to
// the process's end; its rules stay, as kube-proxy's do when it stops.
func (p *kubeProxy) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- p.opts.Run(ctx) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}

// kubeProxyArgs: nftables mode for this node, no ports of its own (health
// and metrics would collide between servers on one machine), and the
// machine's conntrack settings and OOM score left alone.
func (cp *ControlPlane) kubeProxyArgs() map[string]string {
	return map[string]string{
		"kubeconfig":                        cp.AdminKubeconfig,
		"proxy-mode":                        "nftables",
		"hostname-override":                 cp.cfg.NodeName,
		"cluster-cidr":                      cp.cfg.ClusterCIDR,
		"healthz-bind-address":              "",
		"metrics-bind-address":              "",
		"conntrack-max-per-core":            "0",
		"conntrack-tcp-timeout-established": "0",
		"conntrack-tcp-timeout-close-wait":  "0",
		"oom-score-adj":                     "0",
		"nodeport-addresses":                "primary",
		"profiling":                         "false",
	}
}
