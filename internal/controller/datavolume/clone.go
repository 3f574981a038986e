package datavolume

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/cdi"
)

const (
	// reasonCloneWithoutSource is CDI's event reason for a clone whose
	// source claim does not exist.
	reasonCloneWithoutSource = "CloneWithoutSource"
	// reasonCloneSourceInUse is CDI's event reason for a clone whose
	// source claim a pod still uses.
	reasonCloneSourceInUse = "CloneSourceInUse"
	// reasonCloneSourceNotPopulated: the source claim's DataVolume has
	// not filled it yet (CDI waits for it too, without an event).
	reasonCloneSourceNotPopulated = "CloneSourceNotPopulated"
	// cloneSourcePoll is how often a held clone looks at its source
	// claim again.
	cloneSourcePoll = 5 * time.Second
)

// cloneSource is the claim a pvc-source DataVolume copies: spec.source.pvc,
// in dv's namespace unless it names another.
func cloneSource(dv *cdiv1.DataVolume) client.ObjectKey {
	src := dv.Spec.Source.PVC
	ns := src.Namespace
	if ns == "" {
		ns = dv.Namespace
	}
	return client.ObjectKey{Namespace: ns, Name: src.Name}
}

// sourceSize is the size a clone that gives none takes from its source
// claim: the claim's capacity once bound, else what it requests.
func sourceSize(src *corev1.PersistentVolumeClaim) (resource.Quantity, bool) {
	for _, l := range []corev1.ResourceList{src.Status.Capacity, src.Spec.Resources.Requests} {
		if q, ok := l[corev1.ResourceStorage]; ok && q.Sign() > 0 {
			return q, true
		}
	}
	return resource.Quantity{}, false
}

// reconcileCloneSource holds a clone until its source claim can be copied,
// as CDI does. While the claim does not exist the DataVolume keeps its
// phase and makes no claim of its own; while the claim's own DataVolume
// has not filled it, or a pod that has not ended uses it (a running VM
// writes to it: a copy would be torn), the DataVolume is CloneScheduled.
// The Ready condition says why (and a Warning event, but for a source
// still being filled), and the source is looked at again after
// cloneSourcePoll. A zero result means the clone can go on.
func (r *Reconciler) reconcileCloneSource(ctx context.Context, dv *cdiv1.DataVolume) (ctrl.Result, error) {
	key := cloneSource(dv)
	src := &corev1.PersistentVolumeClaim{}
	err := r.Client.Get(ctx, key, src)
	switch {
	case apierrors.IsNotFound(err):
		msg := fmt.Sprintf("The source pvc %s doesn't exist", key.Name)
		if key.Namespace != dv.Namespace {
			msg = fmt.Sprintf("The source pvc %s/%s doesn't exist", key.Namespace, key.Name)
		}
		return r.holdClone(dv, reasonCloneWithoutSource, msg), nil
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("get clone source %s: %w", key, err)
	}
	if owner := metav1.GetControllerOf(src); owner != nil && owner.Kind == "DataVolume" && src.Annotations[cdi.AnnPodPhase] != string(corev1.PodSucceeded) {
		dv.Status.Phase = cdiv1.CloneScheduled
		setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, reasonCloneSourceNotPopulated,
			fmt.Sprintf("DataVolume %s has not filled PersistentVolumeClaim %s yet", owner.Name, key.Name))
		return ctrl.Result{RequeueAfter: cloneSourcePoll}, nil
	}
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.InNamespace(key.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("list pods using clone source %s: %w", key, err)
	}
	for i := range pods.Items {
		if pod := &pods.Items[i]; usesClaim(pod, key.Name) {
			dv.Status.Phase = cdiv1.CloneScheduled
			return r.holdClone(dv, reasonCloneSourceInUse,
				fmt.Sprintf("pod %s/%s using PersistentVolumeClaim %s", pod.Namespace, pod.Name, key.Name)), nil
		}
	}
	return ctrl.Result{}, nil
}

// holdClone says why dv's clone waits, in an event and the Ready condition.
func (r *Reconciler) holdClone(dv *cdiv1.DataVolume, reason, msg string) ctrl.Result {
	setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, reason, msg)
	r.Recorder.Event(dv, corev1.EventTypeWarning, reason, msg)
	return ctrl.Result{RequeueAfter: cloneSourcePoll}
}

// usesClaim reports whether pod, not ended, mounts the claim.
func usesClaim(pod *corev1.Pod, claim string) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return false
	}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
			return true
		}
	}
	return false
}
