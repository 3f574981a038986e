package virtkube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/app/virtapi"
	"github.com/virtkube/virtkube/internal/app/virtcontroller"
	"github.com/virtkube/virtkube/internal/app/virthandler"
	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/controlplane"
	"github.com/virtkube/virtkube/internal/handler"
	"github.com/virtkube/virtkube/internal/hostpath"
	"github.com/virtkube/virtkube/internal/metrics"
	"github.com/virtkube/virtkube/internal/noderuntime"
	"github.com/virtkube/virtkube/internal/noderuntime/image"
	"github.com/virtkube/virtkube/internal/subresource"
	"github.com/virtkube/virtkube/internal/uploadproxy"
)

// ServerOptions are the flags of `virtkube server`.
type ServerOptions struct {
	DataDir     string
	BindAddress string
	APIPort     int
	NodeName    string
	ServiceCIDR string
	ClusterCIDR string
	PodCIDR     string
	Bridge      string
	ConsolePort int
	// KubeProxy runs kube-proxy (nftables) for Services on this machine;
	// off when the machine has one already.
	KubeProxy bool
	// VirtAPIPort is virt-api's loopback port; 0 picks a free one at each
	// start (the webhook configurations follow it).
	VirtAPIPort int
	// MetricsAddress serves /metrics of every virtkube component; a port
	// 0 picks a free one at each start, "0" turns it off.
	MetricsAddress string
	// UploadProxyPort is the HTTPS port of CDI's upload proxy on
	// --bind-address; 0 picks a free one at each start. CDIConfig
	// config's status.uploadProxyURL names it either way.
	UploadProxyPort int
}

// NewServerOptions returns the defaults.
func NewServerOptions() *ServerOptions {
	return &ServerOptions{
		DataDir:     "/var/lib/virtkube",
		BindAddress: "127.0.0.1",
		APIPort:     6443,
		NodeName:    noderuntime.DefaultName(),
		ServiceCIDR: "10.96.0.0/16",
		ClusterCIDR: "10.244.0.0/16",
		PodCIDR:     "10.244.0.0/24",
		Bridge:      noderuntime.DefaultBridge,
		ConsolePort: handler.ConsolePort,
		KubeProxy:   true,
		// A free port by default: several servers share a machine in
		// tests, and the ready message names the port.
		MetricsAddress: "127.0.0.1:0",
	}
}

// Validate reports the first bad flag, by name.
func (o *ServerOptions) Validate() error {
	if net.ParseIP(o.BindAddress) == nil {
		return fmt.Errorf("--bind-address %q: must be an IP address", o.BindAddress)
	}
	if err := noderuntime.ValidateName(o.NodeName); err != nil {
		return err
	}
	_, cluster, err := net.ParseCIDR(o.ClusterCIDR)
	if err != nil {
		return fmt.Errorf("--cluster-cidr %q: %w", o.ClusterCIDR, err)
	}
	podIP, _, err := net.ParseCIDR(o.PodCIDR)
	if err != nil {
		return fmt.Errorf("--pod-cidr %q: %w", o.PodCIDR, err)
	}
	if o.ConsolePort < 1 || o.ConsolePort > 65535 {
		return fmt.Errorf("--console-port %d: must be between 1 and 65535", o.ConsolePort)
	}
	if o.VirtAPIPort < 0 || o.VirtAPIPort > 65535 {
		return fmt.Errorf("--virt-api-port %d: must be between 0 (any free port) and 65535", o.VirtAPIPort)
	}
	if o.UploadProxyPort < 0 || o.UploadProxyPort > 65535 {
		return fmt.Errorf("--upload-proxy-port %d: must be between 0 (any free port) and 65535", o.UploadProxyPort)
	}
	if o.MetricsAddress != "0" {
		if _, _, err := net.SplitHostPort(o.MetricsAddress); err != nil {
			return fmt.Errorf("--metrics-address %q: want host:port, or 0 for none: %w", o.MetricsAddress, err)
		}
	}
	if !cluster.Contains(podIP) {
		return fmt.Errorf("--pod-cidr %s: must lie inside --cluster-cidr %s", o.PodCIDR, o.ClusterCIDR)
	}
	return o.controlPlaneConfig().Validate()
}

func (o *ServerOptions) controlPlaneConfig() controlplane.Config {
	return controlplane.Config{
		DataDir:     o.DataDir,
		BindAddress: net.ParseIP(o.BindAddress),
		APIPort:     o.APIPort,
		ServiceCIDR: o.ServiceCIDR,
		ClusterCIDR: o.ClusterCIDR,
		KubeProxy:   o.KubeProxy,
		NodeName:    o.NodeName,
	}
}

func newServerCommand() *cobra.Command {
	o := NewServerOptions()
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a single-machine Kubernetes control plane with virtkube on it",
		Long: `server runs, in this one process, etcd, kube-apiserver, kube-controller-manager
and kube-scheduler (upstream Kubernetes), registers this machine as a Node and
serves KubeVirt's API (kubevirt.io). Its state lives in --data-dir; starting it
again on the same directory keeps every object.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return RunServer(ctx, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data-dir", o.DataDir, "directory for etcd data, certificates and kubeconfigs")
	f.StringVar(&o.BindAddress, "bind-address", o.BindAddress, "address kube-apiserver listens on")
	f.IntVar(&o.APIPort, "api-port", o.APIPort, "port kube-apiserver listens on")
	f.StringVar(&o.NodeName, "node-name", o.NodeName, "name of this machine's Node")
	f.StringVar(&o.ServiceCIDR, "service-cidr", o.ServiceCIDR, "range Service ClusterIPs are allocated from")
	f.StringVar(&o.ClusterCIDR, "cluster-cidr", o.ClusterCIDR, "range all pod addresses come from")
	f.StringVar(&o.PodCIDR, "pod-cidr", o.PodCIDR, "this node's pod address range, inside --cluster-cidr")
	f.StringVar(&o.Bridge, "bridge", o.Bridge, "host bridge the pods of this node are attached to")
	f.IntVar(&o.ConsolePort, "console-port", o.ConsolePort, "loopback port of virt-handler's console server")
	f.BoolVar(&o.KubeProxy, "kube-proxy", o.KubeProxy, "run kube-proxy (nftables mode) so ClusterIP and NodePort Services reach the VMs on this machine; turn off when the machine runs a kube-proxy already")
	f.IntVar(&o.VirtAPIPort, "virt-api-port", o.VirtAPIPort, "loopback port of virt-api's admission webhooks; 0 picks a free port at each start")
	f.StringVar(&o.MetricsAddress, "metrics-address", o.MetricsAddress, "host:port serving /metrics (Prometheus) of virt-controller, virt-handler and virt-api; port 0 picks a free one at each start, 0 turns it off")
	f.IntVar(&o.UploadProxyPort, "upload-proxy-port", o.UploadProxyPort, "HTTPS port of CDI's upload proxy (virtctl image-upload) on --bind-address; 0 picks a free port at each start, named by CDIConfig config's status.uploadProxyURL")
	return cmd
}

// RunServer runs the server until ctx is done.
func RunServer(ctx context.Context, o *ServerOptions, out io.Writer) error {
	log := klog.FromContext(ctx)
	begin := time.Now()
	cp, err := controlplane.New(o.controlPlaneConfig())
	if err != nil {
		return err
	}
	if err := cp.Start(ctx); err != nil {
		return err
	}
	defer cp.Stop()

	cfg := cp.RESTConfig()
	if err := bootstrap.CRDs(ctx, cfg); err != nil {
		return fmt.Errorf("install CRDs: %w", err)
	}
	if err := bootstrap.KubeVirt(ctx, cfg); err != nil {
		return err
	}
	if err := bootstrap.RBAC(ctx, cfg); err != nil {
		return err
	}
	if err := bootstrap.HostPath(ctx, cfg); err != nil {
		return fmt.Errorf("install hostpath provisioner: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	node := &noderuntime.Node{Name: o.NodeName, IP: cp.NodeIP, PodCIDR: o.PodCIDR, DataDir: o.DataDir, Client: client}
	if err := node.Register(ctx); err != nil {
		return err
	}
	go node.Heartbeat(ctx)
	// Ready means a pod can be scheduled: wait for the node lifecycle
	// controller to lift the not-ready taint the apiserver put on the Node.
	if err := node.WaitSchedulable(ctx, time.Minute); err != nil {
		return err
	}

	// Identities of the console path: virt-handler serves, virt-api calls.
	handlerCert, handlerKey, err := cp.IssueCertificate("virt-handler", "virt-handler", true,
		[]string{"localhost", o.NodeName}, []net.IP{net.IPv4(127, 0, 0, 1), cp.NodeIP})
	if err != nil {
		return err
	}
	apiClientCert, apiClientKey, err := cp.IssueCertificate("virt-api-client", handler.ConsoleClientName, false, nil, nil)
	if err != nil {
		return err
	}

	// This machine's node: the pod runtime and virt-handler.
	kubeletRoot := filepath.Join(o.DataDir, "kubelet")
	images, err := image.New(filepath.Join(o.DataDir, "images"))
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	rt, err := noderuntime.NewRuntime(noderuntime.RuntimeConfig{
		NodeName: o.NodeName, PodCIDR: o.PodCIDR, Bridge: o.Bridge, NodeIP: cp.NodeIP,
		KubeletRoot: kubeletRoot, Images: images, Binary: self,
		LauncherImagePrefix: virtcontroller.LauncherImagePrefix, Client: client,
	})
	if err != nil {
		return err
	}

	components := make(chan error, 5)
	run := func(name string, f func() error) {
		go func() {
			if err := f(); err != nil && ctx.Err() == nil {
				components <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	run("pod runtime", func() error { return rt.Run(ctx) })
	run("hostpath provisioner", func() error { return hostpath.Run(ctx, cfg, hostPathOptions(o)) })
	if err := startUploadProxy(ctx, cp, o, run); err != nil {
		return err
	}
	metricsURL, err := serveMetrics(ctx, o.MetricsAddress, run)
	if err != nil {
		return err
	}
	run("virt-controller", func() error { return virtcontroller.Run(ctx, cfg, virtcontroller.NewOptions()) })
	consoleAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(o.ConsolePort))
	run("virt-handler", func() error {
		return virthandler.Run(ctx, cfg, &virthandler.Options{
			NodeName: o.NodeName, KubeletRoot: kubeletRoot, MetricsAddr: "0",
			ConsoleAddr: consoleAddr,
			ConsoleTLS:  handler.ConsoleTLS{CertFile: handlerCert, KeyFile: handlerKey, ClientCAFile: cp.CAFile()},
		})
	})
	// virt-api: KubeVirt's admission webhooks and subresources.kubevirt.io
	// (see virtapi.go); it opens consoles on the handler above.
	aggregated, err := startVirtAPI(ctx, cp, virtAPIEmbedding{
		Port:           o.VirtAPIPort,
		HandlerTLS:     subresource.HandlerTLS{CertFile: apiClientCert, KeyFile: apiClientKey, CAFile: cp.CAFile()},
		HandlerAddress: consoleAddr,
	}, run)
	if err != nil {
		return err
	}
	select {
	case <-rt.Ready():
	case err := <-components:
		return err
	case <-ctx.Done():
		return nil
	}

	if err := virtapi.WaitAnswering(ctx, cfg, time.Minute); err != nil {
		return err
	}
	if aggregated {
		if err := virtapi.WaitAPIServiceAvailable(ctx, cfg, time.Minute); err != nil {
			return err
		}
	}

	if metricsURL != "" {
		fmt.Fprintf(out, "metrics: %s\n", metricsURL)
	}
	log.Info("virtkube ready", "elapsed", time.Since(begin).Round(time.Millisecond), "node", o.NodeName, "metrics", metricsURL)
	fmt.Fprintf(out, "virtkube is ready (%s).\nkubeconfig: %s\n  export KUBECONFIG=%s\n",
		time.Since(begin).Round(time.Millisecond), cp.AdminKubeconfig, cp.AdminKubeconfig)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case err := <-components:
		return err
	case err := <-cp.Err():
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
}

func newResetCommand() *cobra.Command {
	o := NewServerOptions()
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Stop and remove every VM and pod this node runs (the server must be stopped)",
		Long: `reset kills the processes of every pod the local runtime of --data-dir runs
(virt-launcher, libvirtd, QEMU) and removes their network namespaces, veths,
addresses and directories. The cluster's objects (in etcd) stay; use it to
uninstall, or after tests.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return noderuntime.Reset(filepath.Join(o.DataDir, "kubelet"), o.PodCIDR, o.Bridge)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data-dir", o.DataDir, "data directory of the server")
	f.StringVar(&o.PodCIDR, "pod-cidr", o.PodCIDR, "this node's pod address range")
	f.StringVar(&o.Bridge, "bridge", o.Bridge, "host bridge of this node's pods")
	return cmd
}

// serveMetrics serves /metrics of the in-process components on addr ("0":
// not at all) and returns its URL. They all register into one registry
// (see internal/metrics), so the components' own metrics servers stay off.
func serveMetrics(ctx context.Context, addr string, run func(string, func() error)) (string, error) {
	if addr == "0" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("--metrics-address: %w", err)
	}
	run("metrics", func() error { return metrics.Serve(ctx, ln) })
	return "http://" + ln.Addr().String() + "/metrics", nil
}

// hostPathOptions run this node's hostpath provisioner. Without a
// HostPathProvisioner CR, its pool "local" (the StorageClass hostpath-csi's)
// is <data-dir>/hpvolumes, the seed's /var/hpvolumes kept with the rest of
// the server's state.
func hostPathOptions(o *ServerOptions) hostpath.Options {
	return hostpath.Options{NodeName: o.NodeName, DefaultPoolPath: filepath.Join(o.DataDir, "hpvolumes")}
}

// startUploadProxy serves CDI's upload proxy on --bind-address and
// --upload-proxy-port and publishes its URL in CDIConfig config.
func startUploadProxy(ctx context.Context, cp *controlplane.ControlPlane, o *ServerOptions, run func(string, func() error)) error {
	bind := net.ParseIP(o.BindAddress)
	cert, key, err := cp.IssueCertificate("cdi-uploadproxy", "cdi-uploadproxy", true,
		[]string{"localhost", "cdi-uploadproxy", o.NodeName}, []net.IP{net.IPv4(127, 0, 0, 1), bind, cp.NodeIP})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(o.BindAddress, strconv.Itoa(o.UploadProxyPort)))
	if err != nil {
		return fmt.Errorf("--upload-proxy-port: %w", err)
	}
	cfg := cp.RESTConfig()
	if err := bootstrap.CDI(ctx, cfg, "https://"+ln.Addr().String()); err != nil {
		ln.Close()
		return fmt.Errorf("install CDI config: %w", err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		ln.Close()
		return err
	}
	keys := uploadproxy.KeyReader{Reader: c, Namespace: bootstrap.KubeVirtNamespace}
	srv := &uploadproxy.Server{Client: c, Key: keys.Key}
	// Serve closes ln when ctx is done.
	run("upload proxy", func() error { return uploadproxy.Serve(ctx, ln, cert, key, srv) })
	return nil
}
