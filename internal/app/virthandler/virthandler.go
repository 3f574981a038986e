// Package virthandler is the virt-handler command: the node agent that runs
// as a DaemonSet on a real cluster (and inside `virtkube server` for its
// node). See internal/handler.
package virthandler

import (
	"context"
	"errors"
	"fmt"

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
)

// Options configure virt-handler.
type Options struct {
	// NodeName is the node this handler serves.
	NodeName string
	// KubeletRoot is where the node's pods keep their volumes.
	KubeletRoot string
	// MetricsAddr serves /metrics; "0" disables it.
	MetricsAddr string
	// ConsoleAddr serves VMI consoles to virt-api; with no TLS files the
	// console server is off.
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
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
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
	if err := markSchedulable(ctx, cfg, o.NodeName); err != nil {
		return err
	}
	errs := make(chan error, 2)
	if o.ConsoleTLS.CertFile != "" {
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

// markSchedulable labels the node kubevirt.io/schedulable=true, as KubeVirt's
// virt-handler does: launcher pods only go to nodes whose handler runs.
func markSchedulable(ctx context.Context, cfg *rest.Config, node string) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, virtv1.NodeSchedulable)
	if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("label node %s schedulable: %w", node, err)
	}
	return nil
}
