package datavolume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/virtkube/virtkube/internal/cdi"
	"github.com/virtkube/virtkube/internal/cdi/importer"
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
		if pod := &pods.Items[i]; usesClaim(pod, key.Name) && pod.Labels[labelCDI] != roleCloneSource {
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

// reconcileClone copies the source claim into dv's claim pvc: once the
// claim's upload pod (run by the upload claim controller, as for an
// upload) takes data, a source pod in the source's namespace mounts the
// source claim read-only and streams its disk there with the upload pod's
// token. CloneScheduled until the source pod runs, CloneInProgress with its
// progress while it does; the claim is populated when the upload pod has
// written the disk.
func (r *Reconciler) reconcileClone(ctx context.Context, dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim) (ctrl.Result, error) {
	scheduled := func() {
		dv.Status.Phase = cdiv1.CloneScheduled
		setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, string(cdiv1.CloneScheduled), "")
	}
	if pvc.Annotations[cdi.AnnPodReady] != "true" {
		scheduled()
		return ctrl.Result{}, nil // the claim's annotations wake us
	}
	target := &corev1.Pod{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: pvc.Namespace, Name: cdi.UploadPodName(pvc.Name)}, target); err != nil || target.Status.PodIP == "" {
		scheduled()
		return ctrl.Result{RequeueAfter: progressPoll}, client.IgnoreNotFound(err)
	}
	src := cloneSource(dv)
	key := client.ObjectKey{Namespace: src.Namespace, Name: cloneSourceName(pvc.UID)}
	pod, err := r.workerPod(ctx, dv, key, func() (*corev1.Pod, error) {
		source := &corev1.PersistentVolumeClaim{}
		if err := r.Client.Get(ctx, src, source); err != nil {
			return nil, fmt.Errorf("get clone source %s: %w", src, err)
		}
		if err := r.copyToken(ctx, dv, pvc, key); err != nil {
			return nil, err
		}
		return cloneSourcePod(dv, pvc, source, r.Image, uploadURL(target)), nil
	})
	if err != nil || pod == nil {
		scheduled()
		return ctrl.Result{}, err
	}
	o := outcome(pod)
	switch o.Phase {
	case corev1.PodFailed:
		dv.Status.Phase = cdiv1.CloneInProgress
		return r.retryFailed(ctx, dv, pod, o, "Unable to clone")
	case corev1.PodRunning, corev1.PodSucceeded:
		// Succeeded: the upload pod is writing the last of it; its end
		// populates the claim, which wakes us.
		dv.Status.Phase = cdiv1.CloneInProgress
		setCondition(dv, cdiv1.DataVolumeRunning, corev1.ConditionTrue, "Pod is running", "")
		setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, string(cdiv1.CloneInProgress), "")
		if o.Phase == corev1.PodRunning {
			r.scrapeProgress(ctx, dv, pod, importer.CloneProgressMetric)
			return ctrl.Result{RequeueAfter: progressPoll}, nil
		}
		return ctrl.Result{}, nil
	}
	scheduled()
	return ctrl.Result{}, nil
}

// copyToken gives the source pod at key the target upload pod's token, in a
// Secret of its own namespace marked, as the pod, with dv.
func (r *Reconciler) copyToken(ctx context.Context, dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim, key client.ObjectKey) error {
	k, err := r.Key(ctx)
	if err != nil {
		return err
	}
	s := tokenSecret(key.Name, key.Namespace, cdi.UploadPodToken(k, pvc.Namespace, pvc.Name, string(pvc.UID)))
	s.Labels[labelCDI] = roleCloneSource
	s.Annotations = map[string]string{annCloneTarget: cloneTarget(dv.Namespace, dv.Name)}
	if err := r.Client.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("clone source token %s: %w", key, err)
	}
	return nil
}

// cleanupCloneSources deletes the source pods, and their token Secrets, of
// the DataVolume namespace/name, wherever they are.
func (r *Reconciler) cleanupCloneSources(ctx context.Context, namespace, name string) error {
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.MatchingLabels{labelCDI: roleCloneSource}); err != nil {
		return fmt.Errorf("list clone source pods: %w", err)
	}
	var errs []error
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Annotations[annCloneTarget] != cloneTarget(namespace, name) {
			continue
		}
		if err := r.Client.Delete(ctx, p); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
		if err := r.Client.Delete(ctx, s); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cloneSourceTarget maps a clone source pod to the DataVolume it serves.
func cloneSourceTarget(_ context.Context, o client.Object) []reconcile.Request {
	if o.GetLabels()[labelCDI] != roleCloneSource {
		return nil
	}
	ns, name, ok := strings.Cut(o.GetAnnotations()[annCloneTarget], "/")
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}}}
}
