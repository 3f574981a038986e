// Package handler is virt-handler, the node agent: it takes each VMI on its
// node from Scheduled on, drives the VMI's launcher over its socket, and
// writes what KubeVirt's virt-handler writes into the VMI's status: phase
// Running, Succeeded or Failed, the Ready and Paused conditions and the
// reason when something fails. Its console server (console.go, pause.go)
// serves virt-api's consoles and pause/unpause requests for the node.
// Launchers outlive virt-handler: after a restart it finds them again
// through their sockets and kills nothing.
package handler

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/controller/vmi"
	"github.com/virtkube/virtkube/internal/launcher"
	"github.com/virtkube/virtkube/internal/launcherrpc"
	"github.com/virtkube/virtkube/internal/vmistatus"
)

// Reasons virt-handler writes.
const (
	ReasonKVMUnavailable = "KVMUnavailable"
	ReasonSyncFailed     = "SyncFailed"
	ReasonGuestCrashed   = "GuestCrashed"
	ReasonLauncherGone   = "LauncherGone"
	// ReasonFeatureGateMissing: the VMI uses something the KubeVirt CR
	// has not enabled.
	ReasonFeatureGateMissing = "FeatureGateMissing"
)

// PodDirs finds a pod's emptyDir volumes on this node. Kubelet keeps them
// under <root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>; virtkube's
// local runtime uses the same layout.
type PodDirs struct{ KubeletRoot string }

// EmptyDir is the directory of the named emptyDir volume of pod.
func (p PodDirs) EmptyDir(podUID types.UID, name string) string {
	return filepath.Join(p.KubeletRoot, "pods", string(podUID), "volumes", "kubernetes.io~empty-dir", name)
}

// Reconciler is virt-handler's VMI reconciler for one node.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	NodeName string
	Pods     PodDirs
	// KVM reports whether KVM works here; nil means it does.
	KVM func() error

	mu       sync.Mutex
	watching map[types.UID]context.CancelFunc
	// last is the last domain status each launcher sent: a launcher exits
	// once its guest has powered off, and its final word must survive it.
	last   map[types.UID]launcherrpc.DomainStatus
	events chan event.GenericEvent
}

// workers is how many VMIs of the node are reconciled at once.
const workers = 8

// SetupWithManager watches the VMIs of this node (by the kubevirt.io/nodeName
// label virt-controller sets) and the launchers' domain events.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.watching = map[types.UID]context.CancelFunc{}
	r.last = map[types.UID]launcherrpc.DomainStatus{}
	r.events = make(chan event.GenericEvent, 256)
	if r.KVM == nil {
		r.KVM = KVMUsable
	}
	// VMIs start in parallel: a start waits seconds for its domain, and a
	// single worker made a burst of VMIs start one after the other.
	return ctrl.NewControllerManagedBy(mgr).
		For(&virtv1.VirtualMachineInstance{}).
		WatchesRawSource(source.Channel(r.events, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("virt-handler").
		Complete(r)
}

// Reconcile moves one VMI of this node along.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	v := &virtv1.VirtualMachineInstance{}
	if err := r.Client.Get(ctx, req.NamespacedName, v); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if v.Status.NodeName != r.NodeName {
		return ctrl.Result{}, nil
	}
	log := klog.FromContext(ctx).WithValues("vmi", klog.KObj(v))
	ctx = klog.NewContext(ctx, log)
	if v.IsFinal() {
		r.stopWatching(v.UID)
		r.mu.Lock()
		delete(r.last, v.UID)
		r.mu.Unlock()
		return ctrl.Result{}, nil
	}
	before := v.DeepCopy()
	defer func() {
		// After a conflict the newer VMI brings this one back (the
		// launcher's Sync is idempotent).
		if err := vmistatus.Write(ctx, r.Client, before, v); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()

	socket, err := r.launcherSocket(ctx, v)
	if err != nil {
		return ctrl.Result{}, err
	}
	lc, err := launcherrpc.Dial(socket)
	if err != nil {
		return ctrl.Result{}, err
	}
	defer lc.Close()
	now := metav1.Now()

	switch v.Status.Phase {
	case virtv1.Scheduled:
		return r.reconcileStart(ctx, v, lc, now)
	case virtv1.Running:
		return r.reconcileRunning(ctx, v, lc, socket, now)
	}
	return ctrl.Result{}, nil
}

// reconcileStart asks the launcher to run the domain.
func (r *Reconciler) reconcileStart(ctx context.Context, v *virtv1.VirtualMachineInstance, lc *launcherrpc.Client, now metav1.Time) (ctrl.Result, error) {
	kv, err := r.kubeVirt(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	var gates []string
	if dc := kv.Spec.Configuration.DeveloperConfiguration; dc != nil {
		gates = dc.FeatureGates
	}
	warning, err := checkFeatureGates(v, gates)
	if err != nil {
		fail(v, ReasonFeatureGateMissing, err.Error(), now)
		r.Recorder.Event(v, corev1.EventTypeWarning, ReasonFeatureGateMissing, err.Error())
		return ctrl.Result{}, nil
	}
	if warning != "" {
		r.Recorder.Event(v, corev1.EventTypeWarning, "FeatureGateMisspelt", warning)
	}
	emulation := false
	if err := r.KVM(); err != nil {
		dc := kv.Spec.Configuration.DeveloperConfiguration
		if dc == nil || !dc.UseEmulation {
			msg := err.Error() + "; to use software emulation set spec.configuration.developerConfiguration.useEmulation: true in the KubeVirt CR kubevirt/kubevirt"
			fail(v, ReasonKVMUnavailable, msg, now)
			r.Recorder.Event(v, corev1.EventTypeWarning, ReasonKVMUnavailable, msg)
			return ctrl.Result{}, nil
		}
		emulation = true
	}
	pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := lc.Ping(pingCtx); err != nil {
		// The launcher is still starting: its readiness brings us back.
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, nil
	}
	// Phase 1 of the pod network, before the launcher's phase 2 in Sync.
	socket, err := r.launcherSocket(ctx, v)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.setupNetwork(ctx, v, socket); err != nil {
		fail(v, ReasonNetworkSetupFailed, err.Error(), now)
		r.Recorder.Event(v, corev1.EventTypeWarning, ReasonNetworkSetupFailed, err.Error())
		return ctrl.Result{}, nil
	}
	if err := lc.Sync(ctx, &launcherrpc.SyncRequest{VMI: v, Emulation: emulation}); err != nil {
		fail(v, ReasonSyncFailed, err.Error(), now)
		r.Recorder.Event(v, corev1.EventTypeWarning, ReasonSyncFailed, err.Error())
		return ctrl.Result{}, nil
	}
	vmistatus.SetPhase(&v.Status, virtv1.Running, now)
	setCondition(v, virtv1.VirtualMachineInstanceReady, corev1.ConditionTrue, "", "", now)
	// A VMI started paused (startStrategy Paused) is paused from its
	// first Running status on.
	if st, err := lc.GetDomain(ctx); err == nil {
		reflectPause(v, *st, now)
	}
	if emulation {
		setCondition(v, virtv1.VirtualMachineInstanceSoftwareEmulation, corev1.ConditionTrue, "SoftwareEmulation", "the guest runs under software emulation (TCG)", now)
	}
	r.Recorder.Event(v, corev1.EventTypeNormal, "Started", "VirtualMachineInstance started.")
	return ctrl.Result{}, nil
}

// reconcileRunning follows the domain: when it ends, so does the VMI; while
// it runs, its pause state shows in the VMI's conditions.
func (r *Reconciler) reconcileRunning(ctx context.Context, v *virtv1.VirtualMachineInstance, lc *launcherrpc.Client, socket string, now metav1.Time) (ctrl.Result, error) {
	st, err := lc.GetDomain(ctx)
	if err != nil {
		r.mu.Lock()
		last, ok := r.last[v.UID]
		r.mu.Unlock()
		if !ok {
			// Unreachable and never heard from (the guest may have ended
			// while virt-handler was down): the pod tells how it ended.
			return r.reconcileFromPod(ctx, v, now)
		}
		st = &last
	}
	switch launcher.State(st.State) {
	case launcher.StateGone, launcher.StateShutoff:
		if st.StoppedByGuest || st.Reason == "" {
			vmistatus.SetPhase(&v.Status, virtv1.Succeeded, now)
			setCondition(v, virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, virtv1.GuestNotRunningReason, "the guest powered off", now)
		} else {
			fail(v, st.Reason, st.Message, now)
		}
		r.stopWatching(v.UID)
		return ctrl.Result{}, nil
	case launcher.StateCrashed:
		fail(v, ReasonGuestCrashed, "the guest crashed", now)
		r.stopWatching(v.UID)
		return ctrl.Result{}, nil
	}
	reflectPause(v, *st, now)
	r.watch(v, socket)
	return ctrl.Result{}, nil
}

// reconcileFromPod ends a VMI whose launcher cannot be reached by what its
// pod says: a launcher that exited 0 saw its guest power off.
func (r *Reconciler) reconcileFromPod(ctx context.Context, v *virtv1.VirtualMachineInstance, now metav1.Time) (ctrl.Result, error) {
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.InNamespace(v.Namespace), client.MatchingLabels{virtv1.CreatedByLabel: string(v.UID)}); err != nil {
		return ctrl.Result{}, err
	}
	for _, p := range pods.Items {
		if v.Status.ActivePods[p.UID] != r.NodeName {
			continue
		}
		switch p.Status.Phase {
		case corev1.PodSucceeded:
			vmistatus.SetPhase(&v.Status, virtv1.Succeeded, now)
			setCondition(v, virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, virtv1.GuestNotRunningReason, "the guest powered off", now)
			return ctrl.Result{}, nil
		case corev1.PodFailed:
			fail(v, ReasonLauncherGone, "the launcher pod failed: "+p.Status.Message, now)
			return ctrl.Result{}, nil
		}
	}
	return ctrl.Result{RequeueAfter: time.Second}, nil
}

// watch follows a launcher's domain events and enqueues the VMI on each.
func (r *Reconciler) watch(v *virtv1.VirtualMachineInstance, socket string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.watching[v.UID]; ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.watching[v.UID] = cancel
	obj := &virtv1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Namespace: v.Namespace, Name: v.Name}}
	go func() {
		defer r.stopWatching(v.UID)
		lc, err := launcherrpc.Dial(socket)
		if err != nil {
			return
		}
		defer lc.Close()
		next, err := lc.Watch(ctx)
		if err != nil {
			return
		}
		for {
			st, err := next()
			if err != nil {
				// Launcher gone: one last look.
				r.events <- event.GenericEvent{Object: obj}
				return
			}
			r.mu.Lock()
			r.last[v.UID] = *st
			r.mu.Unlock()
			r.events <- event.GenericEvent{Object: obj}
		}
	}()
}

func (r *Reconciler) stopWatching(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cancel, ok := r.watching[uid]; ok {
		cancel()
		delete(r.watching, uid)
	}
}

// launcherSocket finds the launcher pod's socket on this node.
func (r *Reconciler) launcherSocket(ctx context.Context, v *virtv1.VirtualMachineInstance) (string, error) {
	for uid, node := range v.Status.ActivePods {
		if node == r.NodeName {
			return filepath.Join(r.Pods.EmptyDir(uid, vmi.SocketsVolume), launcherrpc.SocketName), nil
		}
	}
	return "", fmt.Errorf("VMI %s/%s has no launcher pod on node %s", v.Namespace, v.Name, r.NodeName)
}

// kubeVirt reads the KubeVirt CR: its configuration decides emulation and
// feature gates.
func (r *Reconciler) kubeVirt(ctx context.Context) (*virtv1.KubeVirt, error) {
	kv := &virtv1.KubeVirt{}
	if err := r.Client.Get(ctx, bootstrap.KubeVirtKey, kv); err != nil {
		return nil, fmt.Errorf("read KubeVirt CR: %w", err)
	}
	return kv, nil
}

func fail(v *virtv1.VirtualMachineInstance, reason, msg string, now metav1.Time) {
	vmistatus.SetPhase(&v.Status, virtv1.Failed, now)
	v.Status.Reason = reason
	setCondition(v, virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, reason, msg, now)
	setCondition(v, virtv1.VirtualMachineInstanceSynchronized, corev1.ConditionFalse, reason, msg, now)
}

func setCondition(v *virtv1.VirtualMachineInstance, t virtv1.VirtualMachineInstanceConditionType, s corev1.ConditionStatus, reason, msg string, now metav1.Time) {
	vmistatus.SetCondition(&v.Status, vmistatus.Condition(t, s, reason, msg, now))
}
