// Package vm is virt-controller's VirtualMachine controller: it keeps a VM's
// one VirtualMachineInstance (same name, same namespace) created or deleted
// as the VM's run strategy and state change requests say, restarts failed
// ones with KubeVirt's crash-loop back-off, and reports the VMI's state on
// the VM (printableStatus, ready, conditions).
//
// # What this controller expects from virt-api
//
// The start, stop and restart subresources (written elsewhere) change a VM
// only the way KubeVirt's virt-api does, and this controller acts on exactly
// that:
//
//   - start: Halted → spec.runStrategy Always (spec.running true when the
//     VM uses spec.running); with --paused, a Start request with data
//     {"paused": "true"} is appended to status.stateChangeRequests instead,
//     and this controller switches the VM to Always and starts the VMI
//     paused. Manual → append Start; RerunOnFailure/Manual whose VMI has
//     finished → append Stop{uid of that VMI} then Start. Always and Once
//     refuse (409).
//   - stop: Always and Once → spec.runStrategy Halted (spec.running false).
//     Manual and RerunOnFailure → append Stop{uid of the running VMI}.
//     Halted refuses unless a shorter grace period is given, then appends
//     Stop{uid}.
//   - restart: append Stop{uid of the running VMI} then Start.
//
// Requests are appended with a JSON patch on the status subresource that
// tests the current list, so concurrent writers cannot lose each other's
// requests; this controller writes the status with optimistic locking for
// the same reason. It handles the head of the queue only and removes a
// request once it is done: Stop when no VMI or a VMI with another UID
// exists, Start when a VMI exists that is neither finished nor deleting. A
// Stop without a UID applies to whatever VMI exists.
package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Reconciler reconciles VirtualMachines with their VMIs.
type Reconciler struct {
	Client client.Client
	// APIReader reads objects this controller does not watch (CDI
	// DataVolumes, whose API may not be installed).
	APIReader client.Reader
	Recorder  record.EventRecorder
	// Now is the clock and Jitter the back-off's randomness; tests may
	// replace them.
	Now    func() time.Time
	Jitter func(n int) int
}

// SetupWithManager registers the reconciler. Every VMI event is mapped to
// the VM of the same name: that covers the VMIs it owns and an orphan VMI it
// may adopt.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Jitter == nil {
		r.Jitter = rand.IntN
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	sameName := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(o)}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&virtv1.VirtualMachine{}).
		Watches(&virtv1.VirtualMachineInstance{}, sameName).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("vm").
		Complete(r)
}

// errForeignVMI: a VMI of the VM's name exists that another object controls.
var errForeignVMI = errors.New("a VMI of this name is controlled by another object")

// errStale: a write based on a cached copy was refused because the object
// changed meanwhile.
var errStale = errors.New("object changed since it was read")

// Reconcile reads the VM and its VMI, acts on the VMI, and writes the VM's
// status once at the end. A write refused because the cache was behind is
// no error: every action is idempotent, so the next reconcile, with fresh
// objects, simply runs again.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req)
	if apierrors.IsConflict(err) || errors.Is(err, errStale) {
		klog.FromContext(ctx).V(2).Info("object changed meanwhile, reconciling again", "err", err)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return res, err
}

func (r *Reconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	vm := &virtv1.VirtualMachine{}
	if err := r.Client.Get(ctx, req.NamespacedName, vm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	log := klog.FromContext(ctx).WithValues("vm", klog.KObj(vm))
	ctx = klog.NewContext(ctx, log)

	vmi, err := r.vmiOf(ctx, vm)
	if err != nil && !errors.Is(err, errForeignVMI) {
		return ctrl.Result{}, err
	}
	if !vm.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, vm, vmi)
	}
	if !controllerutil.ContainsFinalizer(vm, Finalizer) {
		if err := r.patchFinalizers(ctx, vm, append(append([]string{}, vm.Finalizers...), Finalizer)); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer to VM: %w", err)
		}
	}
	return r.reconcileNormal(ctx, vm, vmi, err)
}

// reconcileNormal runs the strategy: decide, act on the VMI, record.
func (r *Reconciler) reconcileNormal(ctx context.Context, vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, vmiErr error) (ctrl.Result, error) {
	before := vm.DeepCopy()
	o := observation{vmi: vmi, now: r.Now(), jitter: r.Jitter}
	var res ctrl.Result
	var invalid error
	strategy, err := runStrategy(vm)
	switch {
	case err != nil:
		invalid = err
	case vm.Spec.Template == nil:
		invalid = errors.New("spec.template must be set: it is the VMI this VM runs")
	case vmiErr != nil:
		o.strategy = strategy
		o.failure = &syncError{reason: ReasonFailedCreate, err: fmt.Errorf("VMI %s: %w", vm.Name, vmiErr)}
	default:
		o.strategy = strategy
		vm.Status.StateChangeRequests = trimDoneRequests(vm.Status.StateChangeRequests, vmi)
		d := decide(vm, vmi, strategy, o.now)
		dataVolumesReady, err := r.reconcileDataVolumes(ctx, vm)
		if err != nil {
			return ctrl.Result{}, err
		}
		if d.action == startVMI && !dataVolumesReady {
			// The VMI waits for its DataVolumes (status: Provisioning).
			d, res.RequeueAfter = decision{action: noAction, why: "DataVolumes not ready"}, dataVolumePoll
		}
		if d.action == switchToAlways {
			// A spec change: the next reconcile starts the VMI.
			return ctrl.Result{}, r.switchToAlways(ctx, vm)
		}
		o.vmi, o.failure = r.act(ctx, vm, vmi, d)
		if d.action == backOff {
			res.RequeueAfter = d.retryIn
		}
		if d.requestStart && o.failure == nil {
			vm.Status.StateChangeRequests = append(vm.Status.StateChangeRequests,
				virtv1.VirtualMachineStateChangeRequest{Action: virtv1.StartRequest})
		}
		if err := r.recordGeneration(ctx, vm, o.vmi); err != nil {
			return ctrl.Result{}, err
		}
	}
	if invalid != nil {
		o.failure = &syncError{reason: ReasonFailedCreate, err: invalid}
		r.Recorder.Event(vm, corev1.EventTypeWarning, ReasonFailedCreate, invalid.Error())
	}
	o.volumes = r.volumeFacts(ctx, vm)
	vm.Status = nextStatus(vm, o)
	if err := r.writeStatus(ctx, before, vm); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.releaseVMI(ctx, vmi, vmi != nil && vmi.IsFinal()); err != nil {
		return ctrl.Result{}, err
	}
	switch {
	case invalid != nil:
		return ctrl.Result{}, reconcile.TerminalError(invalid)
	case o.failure != nil:
		return ctrl.Result{}, o.failure
	}
	return res, nil
}

// reconcileDelete deletes the VMI (unless the VM is deleted with orphaning)
// and releases the VM once the VMI is gone; the VM shows Terminating
// meanwhile.
func (r *Reconciler) reconcileDelete(ctx context.Context, vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance) (ctrl.Result, error) {
	before := vm.DeepCopy()
	strategy, _ := runStrategy(vm)
	o := observation{vmi: vmi, strategy: strategy, now: r.Now(), jitter: r.Jitter}
	orphan := controllerutil.ContainsFinalizer(vm, metav1.FinalizerOrphanDependents)
	if vmi != nil && !orphan {
		o.vmi, o.failure = r.act(ctx, vm, vmi, decision{action: stopVMI, why: "VM is being deleted"})
	}
	vm.Status = nextStatus(vm, o)
	if err := r.writeStatus(ctx, before, vm); err != nil {
		return ctrl.Result{}, err
	}
	// An orphaned VMI must not wait for a controller that is going away.
	if err := r.releaseVMI(ctx, vmi, vmi != nil && (orphan || vmi.IsFinal())); err != nil {
		return ctrl.Result{}, err
	}
	if o.failure != nil {
		return ctrl.Result{}, o.failure
	}
	if vmi != nil && !orphan {
		// The VMI's deletion brings us back.
		return ctrl.Result{}, nil
	}
	if controllerutil.ContainsFinalizer(vm, Finalizer) {
		if err := r.patchFinalizers(ctx, vm, without(vm.Finalizers, Finalizer)); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("remove finalizer from VM: %w", err)
		}
	}
	return ctrl.Result{}, nil
}

// vmiOf returns the VM's VMI, nil when there is none. An orphan of the VM's
// name is adopted, as KubeVirt claims VMIs by name; one controlled by
// another object is returned as errForeignVMI and left alone.
func (r *Reconciler) vmiOf(ctx context.Context, vm *virtv1.VirtualMachine) (*virtv1.VirtualMachineInstance, error) {
	vmi := &virtv1.VirtualMachineInstance{}
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(vm), vmi); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("get VMI: %w", err)
	}
	if metav1.IsControlledBy(vmi, vm) {
		return vmi, nil
	}
	if owner := metav1.GetControllerOf(vmi); owner != nil {
		return nil, fmt.Errorf("%w: %s %s", errForeignVMI, owner.Kind, owner.Name)
	}
	if !vm.DeletionTimestamp.IsZero() || !vmi.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	base := vmi.DeepCopy()
	vmi.OwnerReferences = append(vmi.OwnerReferences, *metav1.NewControllerRef(vm, virtv1.VirtualMachineGroupVersionKind))
	if err := r.Client.Patch(ctx, vmi, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return nil, fmt.Errorf("adopt VMI: %w", err)
	}
	klog.FromContext(ctx).Info("adopted orphan VMI", "vmi", klog.KObj(vmi))
	return vmi, nil
}

// act carries out d and returns the VMI as it is afterwards: the one created,
// or the deleted one marked with its deletion time.
func (r *Reconciler) act(ctx context.Context, vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, d decision) (*virtv1.VirtualMachineInstance, *syncError) {
	log := klog.FromContext(ctx)
	switch d.action {
	case startVMI:
		created := newVMI(vm)
		err := r.Client.Create(ctx, created)
		if apierrors.IsAlreadyExists(err) {
			// Created by an earlier reconcile the cache has not shown yet, or
			// the old VMI is still going; its events bring us back.
			if err := r.Client.Get(ctx, client.ObjectKeyFromObject(created), created); err != nil {
				return vmi, &syncError{reason: ReasonFailedCreate, err: fmt.Errorf("get VMI: %w", err)}
			}
			return created, nil
		}
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			// The namespace is going away, and the VM with it.
			return vmi, nil
		}
		if err != nil {
			r.Recorder.Eventf(vm, corev1.EventTypeWarning, ReasonFailedCreate, "Error creating virtual machine instance: %v", err)
			return vmi, &syncError{reason: ReasonFailedCreate, err: fmt.Errorf("create VMI: %w", err)}
		}
		log.Info("VMI created", "why", d.why)
		r.Recorder.Eventf(vm, corev1.EventTypeNormal, ReasonSuccessfulCreate,
			"Started the virtual machine by creating the new virtual machine instance %s", created.Name)
		return created, nil
	case stopVMI:
		if !vmi.DeletionTimestamp.IsZero() {
			return vmi, nil
		}
		err := r.Client.Delete(ctx, vmi, client.Preconditions{UID: &vmi.UID})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			r.Recorder.Eventf(vm, corev1.EventTypeWarning, ReasonFailedDelete, "Error deleting virtual machine instance %s: %v", vmi.Name, err)
			return vmi, &syncError{reason: ReasonFailedDelete, err: fmt.Errorf("delete VMI: %w", err)}
		}
		log.Info("VMI deleted", "why", d.why, "phase", vmi.Status.Phase)
		r.Recorder.Eventf(vm, corev1.EventTypeNormal, ReasonSuccessfulDelete,
			"Stopped the virtual machine by deleting the virtual machine instance %s", vmi.UID)
		stopping := vmi.DeepCopy()
		stopping.DeletionTimestamp = ptr.To(metav1.NewTime(r.Now()))
		return stopping, nil
	case backOff:
		log.V(2).Info("waiting before the next start", "retryIn", d.retryIn)
	}
	return vmi, nil
}

// switchToAlways answers a Start request on a Halted VM: the VM runs from
// now on, in whichever field it uses for its strategy.
func (r *Reconciler) switchToAlways(ctx context.Context, vm *virtv1.VirtualMachine) error {
	base := vm.DeepCopy()
	if vm.Spec.Running != nil {
		vm.Spec.Running = ptr.To(true)
	} else {
		vm.Spec.RunStrategy = ptr.To(virtv1.RunStrategyAlways)
	}
	if err := r.Client.Patch(ctx, vm, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		r.Recorder.Eventf(vm, corev1.EventTypeWarning, ReasonFailedUpdate, "Error switching the virtual machine to runStrategy Always: %v", err)
		return fmt.Errorf("switch VM to runStrategy Always: %w", err)
	}
	return nil
}

// recordGeneration marks a running VMI as created from the VM's current
// generation when the template it came from is still the VM's template:
// a change of run strategy alone needs no restart to be observed.
func (r *Reconciler) recordGeneration(ctx context.Context, vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance) error {
	if vmi == nil || !vmi.DeletionTimestamp.IsZero() || vmi.IsFinal() || vmi.Annotations[TemplateHashAnnotation] != templateHash(vm) {
		return nil
	}
	if gen, ok := vmiGeneration(vmi); ok && gen == vm.Generation {
		return nil
	}
	base := vmi.DeepCopy()
	vmi.Annotations[virtv1.VirtualMachineGenerationAnnotation] = fmt.Sprint(vm.Generation)
	if err := r.Client.Patch(ctx, vmi, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("record VM generation on VMI: %w", err)
	}
	return nil
}

// releaseVMI drops this controller's finalizer from vmi when release is
// true. It runs after the status write, so a VMI's end is on the VM before
// the VMI may vanish. The patch tests the finalizer list it replaces, so it
// cannot undo another controller's concurrent change, whatever the VMI's
// resource version.
func (r *Reconciler) releaseVMI(ctx context.Context, vmi *virtv1.VirtualMachineInstance, release bool) error {
	if !release || !controllerutil.ContainsFinalizer(vmi, Finalizer) {
		return nil
	}
	patch := fmt.Sprintf(`[{"op":"test","path":"/metadata/finalizers","value":%s},{"op":"replace","path":"/metadata/finalizers","value":%s}]`,
		jsonList(vmi.Finalizers), jsonList(without(vmi.Finalizers, Finalizer)))
	obj := vmi.DeepCopy()
	err := r.Client.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, []byte(patch)))
	switch {
	case apierrors.IsInvalid(err):
		// The test failed: the finalizers changed since the VMI was read.
		return fmt.Errorf("remove finalizer from VMI: %w", errStale)
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("remove finalizer from VMI: %w", err)
	}
	return nil
}

// patchFinalizers sets the VM's finalizers, failing on a concurrent change.
func (r *Reconciler) patchFinalizers(ctx context.Context, vm *virtv1.VirtualMachine, finalizers []string) error {
	base := vm.DeepCopy()
	vm.Finalizers = finalizers
	return r.Client.Patch(ctx, vm, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
}

// writeStatus patches the status when it changed since before. Optimistic
// locking: virt-api appends state change requests to the same status.
func (r *Reconciler) writeStatus(ctx context.Context, before, vm *virtv1.VirtualMachine) error {
	if equality.Semantic.DeepEqual(before.Status, vm.Status) {
		return nil
	}
	patch := client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})
	if err := r.Client.Status().Patch(ctx, vm, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("write VM status: %w", err)
	}
	return nil
}

// dataVolumeGVK is CDI's DataVolume, read unstructured: CDI's API is
// optional and not in virt-controller's scheme.
var dataVolumeGVK = schema.GroupVersionKind{Group: "cdi.kubevirt.io", Version: "v1beta1", Kind: "DataVolume"}

// volumeFacts reads the state of the PVCs and DataVolumes the template
// refers to. What cannot be read counts as fine: these facts only refine
// the printable status.
func (r *Reconciler) volumeFacts(ctx context.Context, vm *virtv1.VirtualMachine) volumeFacts {
	var f volumeFacts
	if vm.Spec.Template == nil {
		return f
	}
	for _, v := range vm.Spec.Template.Spec.Volumes {
		claim := ""
		switch {
		case v.PersistentVolumeClaim != nil:
			claim = v.PersistentVolumeClaim.ClaimName
		case v.Ephemeral != nil && v.Ephemeral.PersistentVolumeClaim != nil:
			claim = v.Ephemeral.PersistentVolumeClaim.ClaimName
		case v.DataVolume != nil:
			claim = v.DataVolume.Name
			r.dataVolumeFacts(ctx, vm.Namespace, v.DataVolume.Name, &f)
		}
		if claim == "" {
			continue
		}
		pvc := &corev1.PersistentVolumeClaim{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: claim}, pvc); err == nil && pvc.Status.Phase == corev1.ClaimPending {
			f.UnboundPVC = true
		}
	}
	return f
}

// dataVolumeFacts adds what CDI reports of one DataVolume: Failed is an
// error; any phase short of Succeeded (or of waiting for its consumer, which
// is the VMI itself) is still provisioning.
func (r *Reconciler) dataVolumeFacts(ctx context.Context, ns, name string, f *volumeFacts) {
	dv := &unstructured.Unstructured{}
	dv.SetGroupVersionKind(dataVolumeGVK)
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, dv); err != nil {
		if !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
			klog.FromContext(ctx).V(2).Info("cannot read DataVolume", "dataVolume", name, "err", err)
		}
		return
	}
	phase, _, _ := unstructured.NestedString(dv.Object, "status", "phase")
	switch phase {
	case "Failed":
		f.DataVolumeError = true
	case "Succeeded", "WaitForFirstConsumer", "PendingPopulation":
	default:
		f.Provisioning = true
	}
}

// jsonList encodes a list of strings for a JSON patch.
func jsonList(list []string) string {
	body, _ := json.Marshal(list) // strings always encode
	return string(body)
}

func without(list []string, s string) []string {
	out := []string{}
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}
