// Package virtcontroller is virt-controller: the cluster-wide controllers of
// virtkube. It runs inside `virtkube server`, or alone
// (`virtkube virt-controller`) as a Deployment on a real cluster.
package virtcontroller

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/cdi"
	"github.com/virtkube/virtkube/internal/controller/datavolume"
	"github.com/virtkube/virtkube/internal/controller/kubevirt"
	"github.com/virtkube/virtkube/internal/controller/replicaset"
	"github.com/virtkube/virtkube/internal/controller/vm"
	"github.com/virtkube/virtkube/internal/controller/vmi"
	"github.com/virtkube/virtkube/internal/metrics"
	"github.com/virtkube/virtkube/internal/uploadproxy"
	"github.com/virtkube/virtkube/internal/version"
)

// Options configure virt-controller.
type Options struct {
	// LauncherImage is the image of launcher pods' compute container.
	LauncherImage string
	// Workers is the number of objects each controller reconciles in
	// parallel.
	Workers int
	// LeaderElect makes replicas on a real cluster take turns.
	LeaderElect bool
	// LeaderElectionNamespace holds the lease when LeaderElect is set.
	LeaderElectionNamespace string
	// MetricsAddr serves /metrics; "0" disables it.
	MetricsAddr string
}

// LauncherImagePrefix starts virtkube's own launcher image names. The local
// node runtime of `virtkube server` runs such images from its own binary; a
// real cluster pulls them.
const LauncherImagePrefix = "virtkube.local/virt-launcher:"

// DefaultLauncherImage is the launcher image of this version.
func DefaultLauncherImage() string {
	return LauncherImagePrefix + version.Version
}

// LauncherCommand starts virt-launcher inside the launcher image.
var LauncherCommand = []string{"/usr/bin/virt-launcher"}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		LauncherImage:           DefaultLauncherImage(),
		Workers:                 4,
		LeaderElectionNamespace: bootstrap.KubeVirtNamespace,
		MetricsAddr:             "0",
	}
}

// Validate names the first bad option.
func (o *Options) Validate() error {
	if o.LauncherImage == "" {
		return errors.New("--launcher-image must be set")
	}
	if o.Workers < 1 {
		return fmt.Errorf("--workers %d: must be at least 1", o.Workers)
	}
	return nil
}

// Run runs the controllers until ctx is done.
func Run(ctx context.Context, cfg *rest.Config, o *Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	scheme, err := bootstrap.Scheme()
	if err != nil {
		return err
	}
	if err := cdi.AddToScheme(scheme); err != nil {
		return err
	}
	ctrl.SetLogger(klog.NewKlogr())
	mgr, err := ctrl.NewManager(metrics.Instrument(cfg), ctrl.Options{
		Scheme:                  scheme,
		Logger:                  klog.NewKlogr().WithName("virt-controller"),
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  "0",
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        "virt-controller",
		LeaderElectionNamespace: o.LeaderElectionNamespace,
	})
	if err != nil {
		return fmt.Errorf("virt-controller manager: %w", err)
	}
	if err := setupControllers(mgr, o); err != nil {
		return err
	}
	vmiMetrics := vmi.NewMetrics(mgr)
	if err := vmiMetrics.SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	if err := metrics.RegisterWhile(ctx, vmiMetrics); err != nil {
		return fmt.Errorf("register VMI metrics: %w", err)
	}
	return mgr.Start(ctx)
}

// setupControllers registers virt-controller's controllers with mgr. Their
// event recorders carry KubeVirt's component names, so `kubectl get events`
// reads as on KubeVirt.
func setupControllers(mgr ctrl.Manager, o *Options) error {
	vmis := &vmi.Reconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorderFor("virtualmachine-controller"),
		Pods:     vmi.PodConfig{LauncherImage: o.LauncherImage, LauncherCommand: LauncherCommand},
	}
	if err := vmis.SetupWithManager(mgr, o.Workers); err != nil {
		return fmt.Errorf("VMI controller: %w", err)
	}
	vms := &vm.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorderFor("virtualmachine-controller"),
	}
	if err := vms.SetupWithManager(mgr, o.Workers); err != nil {
		return fmt.Errorf("VM controller: %w", err)
	}
	replicaSets := &replicaset.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorderFor("virtualmachinereplicaset-controller"),
	}
	if err := replicaSets.SetupWithManager(mgr, o.Workers); err != nil {
		return fmt.Errorf("VMI replica set controller: %w", err)
	}
	if err := (&kubevirt.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("KubeVirt CR controller: %w", err)
	}
	// CDI's controllers. (Upload tokens are virt-api's: CDI answers
	// UploadTokenRequests in its aggregated apiserver.)
	// Upload pods' tokens derive from the upload token key.
	keys := uploadproxy.KeyReader{Reader: mgr.GetAPIReader(), Namespace: bootstrap.KubeVirtNamespace}
	dataVolumes := &datavolume.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("datavolume-controller"),
		Key: keys.Key, Image: o.LauncherImage}
	if err := dataVolumes.SetupWithManager(mgr, o.Workers); err != nil {
		return fmt.Errorf("DataVolume controller: %w", err)
	}
	if err := (&datavolume.UploadClaimReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Key: keys.Key, Image: o.LauncherImage}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("upload claim controller: %w", err)
	}
	return nil
}
