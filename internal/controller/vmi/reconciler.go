// Package vmi is virt-controller's VirtualMachineInstance controller: for
// each VMI it creates one launcher pod and moves the VMI through Pending,
// Scheduling and Scheduled, where virt-handler on the chosen node takes
// over. It explains on the VMI why a pod cannot run, so nobody needs to look
// at the pod.
package vmi

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/vmistatus"
)

// Reconciler reconciles VirtualMachineInstances with their launcher pods.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Pods     PodConfig
	// Now is the clock; tests may replace it.
	Now func() metav1.Time
}

// SetupWithManager registers the reconciler: it watches VMIs and the pods
// they own.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	if r.Now == nil {
		r.Now = metav1.Now
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&virtv1.VirtualMachineInstance{}).
		Owns(&corev1.Pod{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("vmi").
		Complete(r)
}

// Reconcile follows cluster-api's shape: read, then phases, then one status
// write at the end.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	vmi := &virtv1.VirtualMachineInstance{}
	if err := r.Client.Get(ctx, req.NamespacedName, vmi); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	log := klog.FromContext(ctx).WithValues("vmi", klog.KObj(vmi))
	ctx = klog.NewContext(ctx, log)

	before := vmi.DeepCopy()
	defer func() {
		if err := vmistatus.Write(ctx, r.Client, before, vmi); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()

	pod, err := r.launcherPod(ctx, vmi)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !vmi.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, vmi, pod)
	}
	return r.reconcileNormal(ctx, vmi, pod)
}

func (r *Reconciler) reconcileNormal(ctx context.Context, vmi *virtv1.VirtualMachineInstance, pod *corev1.Pod) (ctrl.Result, error) {
	if vmi.IsFinal() {
		// A finished VMI keeps no pod around.
		return ctrl.Result{}, r.deletePod(ctx, pod)
	}
	if controllerutil.AddFinalizer(vmi, virtv1.VirtualMachineInstanceFinalizer) {
		if err := r.Client.Update(ctx, vmi); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}
	// The claims first: the launcher pod has a claim in volumeMode Block as
	// a device, and the builder reads the mode from volumeStatus.
	if err := r.claimVolumeStatus(ctx, vmi); err != nil {
		return ctrl.Result{}, err
	}
	now := r.Now()
	if pod == nil && (vmi.Status.Phase == "" || vmi.Status.Phase == virtv1.Pending) {
		created, err := r.createPod(ctx, vmi)
		if err != nil {
			var invalid *field.Error
			if errors.As(err, &invalid) {
				// Bad input: say so on the VMI and stop retrying.
				vmi.Status.Phase = virtv1.Failed
				vmi.Status.Reason = ReasonInvalidSpec
				vmistatus.SetCondition(&vmi.Status, vmistatus.Condition(virtv1.VirtualMachineInstanceSynchronized, corev1.ConditionFalse, ReasonInvalidSpec, invalid.Error(), now))
				r.Recorder.Event(vmi, corev1.EventTypeWarning, ReasonInvalidSpec, invalid.Error())
				return ctrl.Result{}, reconcile.TerminalError(err)
			}
			vmistatus.SetCondition(&vmi.Status, vmistatus.Condition(virtv1.VirtualMachineInstanceSynchronized, corev1.ConditionFalse, ReasonFailedCreate, err.Error(), now))
			r.Recorder.Event(vmi, corev1.EventTypeWarning, ReasonFailedCreate, err.Error())
			return ctrl.Result{}, err
		}
		r.Recorder.Eventf(vmi, corev1.EventTypeNormal, "SuccessfulCreate", "Created virtual machine pod %s", created.Name)
		pod = created
	}
	// In the reconcile that creates the pod already: its readiness gate
	// holds the pod unready until this condition is True.
	if err := r.syncUnpausedCondition(ctx, vmi, pod); err != nil {
		return ctrl.Result{}, err
	}
	o := observe(vmi, pod, now)
	if o.Phase == virtv1.Scheduled && vmi.Labels[virtv1.NodeNameLabel] != o.NodeName {
		// virt-handler watches the VMIs of its node by this label. The
		// update returns the stored status, so the observation is applied
		// after it.
		if vmi.Labels == nil {
			vmi.Labels = map[string]string{}
		}
		vmi.Labels[virtv1.NodeNameLabel] = o.NodeName
		if err := r.Client.Update(ctx, vmi); err != nil {
			return ctrl.Result{}, fmt.Errorf("label VMI with its node: %w", err)
		}
	}
	apply(&vmi.Status, o, now)
	if pod != nil && vmi.Status.Phase != virtv1.Failed {
		if vmi.Status.ActivePods == nil {
			vmi.Status.ActivePods = map[types.UID]string{}
		}
		vmi.Status.ActivePods[pod.UID] = pod.Spec.NodeName
	}
	return ctrl.Result{}, nil
}

// reconcileDelete stops the guest by deleting its pod (the launcher shuts the
// guest down within the grace period), then releases the VMI.
func (r *Reconciler) reconcileDelete(ctx context.Context, vmi *virtv1.VirtualMachineInstance, pod *corev1.Pod) (ctrl.Result, error) {
	if pod != nil {
		if err := r.deletePod(ctx, pod); err != nil {
			return ctrl.Result{}, err
		}
		// The pod's deletion brings us back; poll as a safety net.
		return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
	}
	if !vmi.IsFinal() {
		now := r.Now()
		apply(&vmi.Status, observation{Phase: virtv1.Succeeded, NodeName: vmi.Status.NodeName, Reason: vmi.Status.Reason}, now)
		// Status first: the object may vanish with the finalizer.
		if err := vmistatus.Write(ctx, r.Client, nil, vmi); err != nil {
			return ctrl.Result{}, err
		}
	}
	// The status write refreshed vmi from the server; drop the finalizer
	// from that copy.
	if controllerutil.RemoveFinalizer(vmi, virtv1.VirtualMachineInstanceFinalizer) {
		if err := r.Client.Update(ctx, vmi); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("remove finalizer: %w", err)
		}
	}
	return ctrl.Result{}, nil
}

// launcherPod finds the VMI's pod by owner; there is at most one.
func (r *Reconciler) launcherPod(ctx context.Context, vmi *virtv1.VirtualMachineInstance) (*corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.InNamespace(vmi.Namespace),
		client.MatchingLabels{virtv1.CreatedByLabel: string(vmi.UID)}); err != nil {
		return nil, fmt.Errorf("list launcher pods: %w", err)
	}
	for i := range pods.Items {
		if metav1.IsControlledBy(&pods.Items[i], vmi) {
			return &pods.Items[i], nil
		}
	}
	return nil, nil
}

func (r *Reconciler) createPod(ctx context.Context, vmi *virtv1.VirtualMachineInstance) (*corev1.Pod, error) {
	cfg := r.Pods
	kv := &virtv1.KubeVirt{}
	switch err := r.Client.Get(ctx, bootstrap.KubeVirtKey, kv); {
	case err == nil:
		if dc := kv.Spec.Configuration.DeveloperConfiguration; dc != nil && dc.CPUAllocationRatio > 0 {
			cfg.CPUAllocationRatio = dc.CPUAllocationRatio
		}
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("get the KubeVirt CR: %w", err)
	}
	pod, err := LauncherPod(vmi, cfg)
	if err != nil {
		return nil, err
	}
	if err := r.Client.Create(ctx, pod); apierrors.IsAlreadyExists(err) {
		// Created by an earlier reconcile the cache has not shown yet.
		if err := r.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return nil, fmt.Errorf("get launcher pod: %w", err)
		}
		return pod, nil
	} else if err != nil {
		return nil, fmt.Errorf("create launcher pod: %w", err)
	}
	klog.FromContext(ctx).V(2).Info("launcher pod created", "pod", klog.KObj(pod))
	return pod, nil
}

func (r *Reconciler) deletePod(ctx context.Context, pod *corev1.Pod) error {
	if pod == nil || !pod.DeletionTimestamp.IsZero() {
		return nil
	}
	if err := r.Client.Delete(ctx, pod); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete launcher pod: %w", err)
	}
	return nil
}
