package hostpath

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// retryAfter is how soon a claim that could not be provisioned is looked at
// again: the user may fix the class or add the pool meanwhile.
const retryAfter = 30 * time.Second

// Options configure the provisioner of one node.
type Options struct {
	// NodeName is this node: only claims scheduled to it are served.
	NodeName string
	// DefaultPoolPath is the pool "local" when no HostPathProvisioner
	// exists.
	DefaultPoolPath string
	// HealthAddr is where /healthz and /readyz are served; "" or "0"
	// serves none.
	HealthAddr string
	// MetricsAddr is where /metrics is served; "" or "0" serves none.
	MetricsAddr string
}

// Validate names the first missing option.
func (o Options) Validate() error {
	if o.NodeName == "" {
		return errors.New("hostpath provisioner: NodeName must be set")
	}
	if o.DefaultPoolPath == "" {
		return errors.New("hostpath provisioner: DefaultPoolPath must be set")
	}
	return nil
}

// Run serves claims on this node until ctx is done.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Logger:                 klog.NewKlogr().WithName("hostpath-provisioner"),
		Metrics:                metricsserver.Options{BindAddress: addrOrOff(o.MetricsAddr)},
		HealthProbeBindAddress: addrOrOff(o.HealthAddr),
	})
	if err != nil {
		return fmt.Errorf("hostpath provisioner manager: %w", err)
	}
	// Healthy while the process runs; ready once the caches of claims,
	// volumes and classes are filled (the controllers act only then).
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("informers", func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("caches of claims, volumes and classes not synced yet")
		}
		return nil
	}); err != nil {
		return err
	}
	if err := (&ClaimReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorderFor(Provisioner), Options: o,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&VolumeReconciler{Client: mgr.GetClient(), NodeName: o.NodeName}).SetupWithManager(mgr); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// addrOrOff is addr, with "" meaning "0": nothing served.
func addrOrOff(addr string) string {
	if addr == "" {
		return "0"
	}
	return addr
}

// ClaimReconciler makes the volume of each claim of a hostpath class that
// the scheduler put on this node.
type ClaimReconciler struct {
	Client client.Client
	// APIReader lists HostPathProvisioners without caching them.
	APIReader client.Reader
	Recorder  record.EventRecorder
	Options
}

// SetupWithManager registers the reconciler for PVCs.
func (r *ClaimReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("hostpath-claim").For(&corev1.PersistentVolumeClaim{}).Complete(r)
}

// Reconcile provisions one claim.
func (r *ClaimReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := r.Client.Get(ctx, req.NamespacedName, pvc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil || pvc.Annotations[AnnSelectedNode] != r.NodeName {
		return ctrl.Result{}, nil
	}
	className := ClassName(pvc)
	if className == "" {
		return ctrl.Result{}, nil
	}
	class := &storagev1.StorageClass{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: className}, class); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if class.Provisioner != Provisioner {
		return ctrl.Result{}, nil
	}
	log := klog.FromContext(ctx).WithValues("pvc", klog.KObj(pvc))

	name := VolumeName(pvc)
	if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, &corev1.PersistentVolume{}); err == nil {
		// Made already; the PV controller binds the claim to it.
		return ctrl.Result{}, nil
	} else if !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	pools, err := r.pools(ctx)
	if err != nil {
		r.Recorder.Event(pvc, corev1.EventTypeWarning, "ProvisioningFailed", err.Error())
		return ctrl.Result{RequeueAfter: retryAfter}, nil
	}
	pv, err := Volume(pvc, class, r.NodeName, pools)
	if err != nil {
		r.Recorder.Event(pvc, corev1.EventTypeWarning, "ProvisioningFailed", err.Error())
		return ctrl.Result{RequeueAfter: retryAfter}, nil
	}
	if err := os.MkdirAll(pv.Spec.HostPath.Path, 0o755); err != nil {
		r.Recorder.Event(pvc, corev1.EventTypeWarning, "ProvisioningFailed", err.Error())
		return ctrl.Result{}, fmt.Errorf("make volume directory: %w", err)
	}
	if err := r.Client.Create(ctx, pv); err != nil && !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, fmt.Errorf("create PV %s: %w", name, err)
	}
	log.Info("volume provisioned", "pv", name, "path", pv.Spec.HostPath.Path)
	r.Recorder.Eventf(pvc, corev1.EventTypeNormal, "ProvisioningSucceeded", "Successfully provisioned volume %s", name)
	return ctrl.Result{}, nil
}

// pools reads the storage pools from the HostPathProvisioner objects; the
// CRD missing (a cluster without it) is the same as none.
func (r *ClaimReconciler) pools(ctx context.Context) (map[string]string, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(GroupVersionKind.GroupVersion().WithKind(GroupVersionKind.Kind + "List"))
	err := r.APIReader.List(ctx, list)
	if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
		list.Items = nil
	} else if err != nil {
		return nil, fmt.Errorf("list HostPathProvisioners: %w", err)
	}
	return Pools(list.Items, r.DefaultPoolPath)
}

// VolumeReconciler deletes the Released volumes of this node whose class
// said Delete, and removes their directories before letting them go.
type VolumeReconciler struct {
	Client   client.Client
	NodeName string
}

// SetupWithManager registers the reconciler for PVs.
func (r *VolumeReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("hostpath-volume").For(&corev1.PersistentVolume{}).Complete(r)
}

// Reconcile reclaims one volume.
func (r *VolumeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pv := &corev1.PersistentVolume{}
	if err := r.Client.Get(ctx, req.NamespacedName, pv); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if Node(pv) != r.NodeName {
		return ctrl.Result{}, nil
	}
	log := klog.FromContext(ctx).WithValues("pv", pv.Name)
	if pv.DeletionTimestamp != nil {
		if !controllerutil.ContainsFinalizer(pv, Finalizer) {
			return ctrl.Result{}, nil
		}
		if dir, ok := ownDir(pv); ok {
			if err := os.RemoveAll(dir); err != nil {
				return ctrl.Result{}, fmt.Errorf("remove volume directory: %w", err)
			}
			log.Info("volume directory removed", "path", dir)
		}
		controllerutil.RemoveFinalizer(pv, Finalizer)
		if err := r.Client.Update(ctx, pv); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("remove finalizer: %w", err)
		}
		return ctrl.Result{}, nil
	}
	if pv.Status.Phase == corev1.VolumeReleased && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete {
		if err := r.Client.Delete(ctx, pv); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("delete released PV: %w", err)
		}
		log.Info("released volume deleted")
	}
	return ctrl.Result{}, nil
}
