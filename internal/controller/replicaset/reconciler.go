// Package replicaset is virt-controller's VirtualMachineInstanceReplicaSet
// controller: it keeps spec.replicas VMIs matching the selector running,
// created from the template with generated names, replaces finished ones,
// and reports status.replicas, readyReplicas and the label selector the
// scale subresource (`kubectl scale`, a HorizontalPodAutoscaler) reads.
package replicaset

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Reconciler reconciles VirtualMachineInstanceReplicaSets with their VMIs.
type Reconciler struct {
	Client client.Client
	// APIReader lists VMIs straight from the API server: with generated
	// names, a cache that has not yet seen the last reconcile's creations
	// would make it create them again.
	APIReader client.Reader
	Recorder  record.EventRecorder
	// Now is the clock; tests may replace it.
	Now func() time.Time
}

// SetupWithManager registers the reconciler: it watches ReplicaSets and all
// VMIs, mapping a VMI to its controlling ReplicaSet or, for an orphan, to
// every ReplicaSet whose selector matches it.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&virtv1.VirtualMachineInstanceReplicaSet{}).
		Watches(&virtv1.VirtualMachineInstance{}, handler.EnqueueRequestsFromMapFunc(r.replicaSetsOf)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("vmirs").
		Complete(r)
}

func (r *Reconciler) replicaSetsOf(ctx context.Context, o client.Object) []reconcile.Request {
	if ref := metav1.GetControllerOf(o); ref != nil {
		if ref.Kind != virtv1.VirtualMachineInstanceReplicaSetGroupVersionKind.Kind {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: ref.Name}}}
	}
	list := &virtv1.VirtualMachineInstanceReplicaSetList{}
	if err := r.Client.List(ctx, list, client.InNamespace(o.GetNamespace())); err != nil {
		klog.FromContext(ctx).Error(err, "list VMI replica sets for an orphan VMI", "vmi", klog.KObj(o))
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		rs := &list.Items[i]
		if sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector); err == nil && rs.Spec.Selector != nil && sel.Matches(labels.Set(o.GetLabels())) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(rs)})
		}
	}
	return reqs
}

// Reconcile claims the ReplicaSet's VMIs, scales, replaces finished replicas
// and writes the status once at the end. An adoption refused because the
// VMI changed meanwhile is no error: the next reconcile reads again.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req)
	if apierrors.IsConflict(err) {
		klog.FromContext(ctx).V(2).Info("object changed meanwhile, reconciling again", "err", err)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return res, err
}

func (r *Reconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rs := &virtv1.VirtualMachineInstanceReplicaSet{}
	if err := r.Client.Get(ctx, req.NamespacedName, rs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	log := klog.FromContext(ctx).WithValues("vmirs", klog.KObj(rs))
	ctx = klog.NewContext(ctx, log)
	before := rs.DeepCopy()

	sel, err := selectorOf(rs)
	if err != nil {
		// Bad input: say so and wait for the spec to change.
		r.Recorder.Event(rs, corev1.EventTypeWarning, ReasonInvalidSpec, err.Error())
		rs.Status = nextStatus(rs, nil, nil, &scaleError{reason: ReasonInvalidSpec, err: err}, r.Now())
		return ctrl.Result{}, errors.Join(reconcile.TerminalError(err), r.writeStatus(ctx, before, rs))
	}
	owned, err := r.claim(ctx, rs, sel)
	if err != nil {
		return ctrl.Result{}, err
	}
	active, finished := split(owned)

	var failure *scaleError
	if !rs.Spec.Paused && rs.DeletionTimestamp.IsZero() {
		failure = r.scale(ctx, rs, planScale(rs, active))
		if failure == nil {
			failure = r.deleteFinished(ctx, rs, finished)
		}
	}
	rs.Status = nextStatus(rs, sel, active, failure, r.Now())
	if err := r.writeStatus(ctx, before, rs); err != nil {
		return ctrl.Result{}, err
	}
	r.reportPause(before, rs)
	if failure != nil {
		return ctrl.Result{}, failure
	}
	return ctrl.Result{}, nil
}

// claim lists the namespace's VMIs fresh from the API server, adopts
// matching orphans, releases owned VMIs the selector no longer matches, and
// returns the VMIs rs owns.
func (r *Reconciler) claim(ctx context.Context, rs *virtv1.VirtualMachineInstanceReplicaSet, sel labels.Selector) ([]*virtv1.VirtualMachineInstance, error) {
	list := &virtv1.VirtualMachineInstanceList{}
	if err := r.APIReader.List(ctx, list, client.InNamespace(rs.Namespace)); err != nil {
		return nil, fmt.Errorf("list VMIs: %w", err)
	}
	c := claimVMIs(rs, sel, list.Items)
	log := klog.FromContext(ctx)
	for _, vmi := range c.adopt {
		base := vmi.DeepCopy()
		vmi.OwnerReferences = append(vmi.OwnerReferences, *metav1.NewControllerRef(rs, virtv1.VirtualMachineInstanceReplicaSetGroupVersionKind))
		if err := r.Client.Patch(ctx, vmi, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return nil, fmt.Errorf("adopt VMI %s: %w", vmi.Name, err)
		}
		log.Info("adopted VMI", "vmi", klog.KObj(vmi))
		c.owned = append(c.owned, vmi)
	}
	for _, vmi := range c.release {
		base := vmi.DeepCopy()
		var refs []metav1.OwnerReference
		for _, ref := range vmi.OwnerReferences {
			if ref.UID != rs.UID {
				refs = append(refs, ref)
			}
		}
		vmi.OwnerReferences = refs
		if err := r.Client.Patch(ctx, vmi, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("release VMI %s: %w", vmi.Name, err)
		}
		log.Info("released VMI the selector no longer matches", "vmi", klog.KObj(vmi))
	}
	return c.owned, nil
}

// scale creates or deletes VMIs as planned, stopping at the first failure.
func (r *Reconciler) scale(ctx context.Context, rs *virtv1.VirtualMachineInstanceReplicaSet, s scaling) *scaleError {
	for range s.create {
		vmi := newReplica(rs)
		if err := r.Client.Create(ctx, vmi); apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			// The namespace is going away, and the replica set with it.
			return nil
		} else if err != nil {
			r.Recorder.Eventf(rs, corev1.EventTypeWarning, ReasonFailedCreate, "Error creating virtual machine instance: %v", err)
			return &scaleError{reason: ReasonFailedCreate, err: fmt.Errorf("create VMI: %w", err)}
		}
		r.Recorder.Eventf(rs, corev1.EventTypeNormal, ReasonSuccessfulCreate,
			"Started the virtual machine by creating the new virtual machine instance %s", vmi.Name)
	}
	for _, vmi := range s.delete {
		if err := r.deleteVMI(ctx, vmi); err != nil {
			r.Recorder.Eventf(rs, corev1.EventTypeWarning, ReasonFailedDelete, "Error deleting virtual machine instance %s: %v", vmi.Name, err)
			return &scaleError{reason: ReasonFailedDelete, err: err}
		}
		r.Recorder.Eventf(rs, corev1.EventTypeNormal, ReasonSuccessfulDelete,
			"Stopped the virtual machine by deleting the virtual machine instance %s", vmi.Name)
	}
	return nil
}

// deleteFinished deletes replicas that ended; scale has already created
// their replacements, since finished replicas do not count.
func (r *Reconciler) deleteFinished(ctx context.Context, rs *virtv1.VirtualMachineInstanceReplicaSet, finished []*virtv1.VirtualMachineInstance) *scaleError {
	for _, vmi := range finished[:min(len(finished), burstReplicas)] {
		if err := r.deleteVMI(ctx, vmi); err != nil {
			r.Recorder.Eventf(rs, corev1.EventTypeWarning, ReasonFailedDelete, "Error deleting finished virtual machine %s: %v", vmi.Name, err)
			return &scaleError{reason: ReasonFailedDelete, err: err}
		}
		r.Recorder.Eventf(rs, corev1.EventTypeNormal, ReasonSuccessfulDelete, "Deleted finished virtual machine: %s", vmi.Name)
	}
	return nil
}

func (r *Reconciler) deleteVMI(ctx context.Context, vmi *virtv1.VirtualMachineInstance) error {
	if err := r.Client.Delete(ctx, vmi, client.Preconditions{UID: &vmi.UID}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete VMI %s: %w", vmi.Name, err)
	}
	return nil
}

// reportPause tells the user the controller noticed a pause or resume.
func (r *Reconciler) reportPause(before, rs *virtv1.VirtualMachineInstanceReplicaSet) {
	wasPaused := false
	for _, c := range before.Status.Conditions {
		wasPaused = wasPaused || c.Type == virtv1.VirtualMachineInstanceReplicaSetReplicaPaused
	}
	switch {
	case rs.Spec.Paused && !wasPaused:
		r.Recorder.Event(rs, corev1.EventTypeNormal, ReasonSuccessfulPaused, "Paused")
	case !rs.Spec.Paused && wasPaused:
		r.Recorder.Event(rs, corev1.EventTypeNormal, ReasonSuccessfulResumed, "Resumed")
	}
}

// writeStatus patches the status when it changed since before.
func (r *Reconciler) writeStatus(ctx context.Context, before, rs *virtv1.VirtualMachineInstanceReplicaSet) error {
	if equality.Semantic.DeepEqual(before.Status, rs.Status) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, rs, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("write VMI replica set status: %w", err)
	}
	return nil
}
