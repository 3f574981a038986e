// Package virthandler is the virt-handler command: the node agent that runs
// as a DaemonSet on a real cluster (and inside `virtkube server` for its
// node). See internal/handler.
package virthandler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/handler"
	"github.com/virtkube/virtkube/internal/metrics"
)

// Options configure virt-handler.
type Options struct {
	// NodeName is the node this handler serves.
	NodeName string
	// KubeletRoot is where the node's pods keep their volumes.
	KubeletRoot string
	// MetricsAddr serves /metrics; "0" disables it.
	MetricsAddr string
	// ConsoleAddr serves VMI consoles, pause and unpause to virt-api (and
	// is published on the Node for it); with no TLS files the console
	// server is off.
	ConsoleAddr string
	ConsoleTLS  handler.ConsoleTLS
}

// Validate names the first bad option.
func (o *Options) Validate() error {
	if o.NodeName == "" {
		return errors.New("--node-name must be set")
	}
	if o.KubeletRoot == "" {
		return errors.New("--kubelet-root must be set")
	}
	t := o.ConsoleTLS
	if (t.CertFile == "") != (t.KeyFile == "") || (t.CertFile != "" && t.ClientCAFile == "") {
		return errors.New("--tls-cert-file, --tls-key-file and --client-ca-file go together")
	}
	return nil
}

// Run serves the node until ctx is done.
func Run(ctx context.Context, cfg *rest.Config, o *Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	scheme, err := bootstrap.Scheme()
	if err != nil {
		return err
	}
	onThisNode := labels.SelectorFromSet(labels.Set{virtv1.NodeNameLabel: o.NodeName})
	mgr, err := ctrl.NewManager(metrics.Instrument(cfg), ctrl.Options{
		Scheme:                 scheme,
		Logger:                 klog.NewKlogr().WithName("virt-handler"),
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress: "0",
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&virtv1.VirtualMachineInstance{}: {Label: onThisNode},
			&corev1.Pod{}:                    {Field: fields.OneTermEqualSelector("spec.nodeName", o.NodeName)},
		}},
	})
	if err != nil {
		return fmt.Errorf("virt-handler manager: %w", err)
	}
	r := &handler.Reconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorderFor("virt-handler"),
		NodeName: o.NodeName,
		Pods:     handler.PodDirs{KubeletRoot: o.KubeletRoot},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	if err := metrics.RegisterWhile(ctx, &handler.DomainStatsCollector{Reconciler: r}); err != nil {
		return fmt.Errorf("register domain stats: %w", err)
	}
	consoleAddr := ""
	if o.ConsoleTLS.CertFile != "" {
		consoleAddr = o.ConsoleAddr
	}
	if err := registerNode(ctx, cfg, o.NodeName, consoleAddr); err != nil {
		return err
	}
	errs := make(chan error, 2)
	if consoleAddr != "" {
		consoles := &handler.ConsoleServer{Client: mgr.GetAPIReader(), NodeName: o.NodeName, Pods: r.Pods}
		go func() { errs <- handler.ServeConsoles(ctx, o.ConsoleAddr, consoles, o.ConsoleTLS) }()
	} else {
		klog.FromContext(ctx).Info("console server off: no --tls-cert-file")
	}
	go func() { errs <- mgr.Start(ctx) }()
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
		return nil
	}
}

// registerNode labels the node kubevirt.io/schedulable=true, as KubeVirt's
// virt-handler does (launcher pods only go to nodes whose handler runs), and
// publishes where virt-api reaches this handler's console server in the
// handler.AddressAnnotation; with the console server off (consoleAddr "")
// the annotation is removed, so virt-api never dials a stale address.
func registerNode(ctx context.Context, cfg *rest.Config, nodeName, consoleAddr string) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var address *string
	if consoleAddr != "" {
		node, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read node %s: %w", nodeName, err)
		}
		a, err := dialAddress(consoleAddr, node)
		if err != nil {
			return err
		}
		address = &a
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"labels":      map[string]string{virtv1.NodeSchedulable: "true"},
		"annotations": map[string]*string{handler.AddressAnnotation: address},
	}})
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("register node %s: %w", nodeName, err)
	}
	return nil
}

// dialAddress is the host:port others dial to reach a server listening on
// listen: the listen address itself when it names an IP or host, the
// node's InternalIP when it listens on all interfaces.
func dialAddress(listen string, node *corev1.Node) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("--console-address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return listen, nil
	}
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return net.JoinHostPort(a.Address, port), nil
		}
	}
	return "", fmt.Errorf("node %s has no InternalIP for virt-api to reach the console server on %s; set --console-address to this node's IP", node.Name, listen)
}
