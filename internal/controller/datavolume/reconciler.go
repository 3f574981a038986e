// Package datavolume is CDI's DataVolume controller, run by virt-controller:
// it makes each DataVolume's PersistentVolumeClaim and has it filled, as
// CDI does, by pods that mount the claim and run cdi-importer from the
// launcher image: an importer pod (blank, http, registry), the claim's
// upload pod (upload; the upload claim controller runs it and the upload
// proxy forwards to it), or for a clone (pvc) the target's upload pod fed
// by a source pod in the source claim's namespace. The scheduler places
// the pods, so a WaitForFirstConsumer claim binds on their node, on any
// cluster. docs/design/0008-datavolumes-on-a-cluster.md says why and what
// it costs.
package datavolume

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/apimachinery/pkg/util/validation/field"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/virtkube/virtkube/internal/cdi"
	"github.com/virtkube/virtkube/internal/cdi/importer"
)

const (
	// retryAfter is how soon a failed import is tried again, as CDI
	// restarts its importer pod.
	retryAfter = 10 * time.Second
	// progressPoll is how often a running worker pod's progress is read.
	progressPoll = time.Second
)

// Reconciler fills DataVolumes.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// Key returns the upload token key, from which a clone's upload pod
	// token is derived (cdi.UploadPodToken).
	Key func(context.Context) ([]byte, error)
	// Image is the launcher image, which holds cdi-importer.
	Image string
	// HTTP reads worker pods' progress; nil is defaultWorkerHTTP.
	HTTP *http.Client
}

// SetupWithManager registers the controller; claims (the upload claim
// controller reports through them), importer pods and clone source pods
// wake their DataVolume. A DataVolume's own status
// writes (this controller's, the import's progress) wake nothing: the
// controller asks for the passes it needs, and a failed import waits
// retryAfter for its retry instead of being woken by its own failure.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("datavolume").
		For(&cdiv1.DataVolume{}, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool { return !statusOnly(e.ObjectOld, e.ObjectNew) },
		})).
		Owns(&corev1.PersistentVolumeClaim{}).
		Owns(&corev1.Pod{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(cloneSourceTarget)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// Reconcile moves one DataVolume towards Succeeded; its status is written
// once, at the end.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	dv := &cdiv1.DataVolume{}
	if err := r.Client.Get(ctx, req.NamespacedName, dv); err != nil {
		if apierrors.IsNotFound(err) {
			// A clone's source pod in another namespace has no owner
			// the garbage collector could follow.
			return ctrl.Result{}, r.cleanupCloneSources(ctx, req.Namespace, req.Name)
		}
		return ctrl.Result{}, err
	}
	if dv.DeletionTimestamp != nil {
		return ctrl.Result{}, r.cleanupCloneSources(ctx, dv.Namespace, dv.Name)
	}
	if dv.Status.Phase == cdiv1.Succeeded {
		return ctrl.Result{}, nil
	}
	log := klog.FromContext(ctx).WithValues("dataVolume", klog.KObj(dv))
	ctx = klog.NewContext(ctx, log)
	before := dv.DeepCopy()
	defer func() {
		if equality.Semantic.DeepEqual(before.Status, dv.Status) {
			return
		}
		if err := r.Client.Status().Patch(ctx, dv, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
			retErr = errors.Join(retErr, fmt.Errorf("patch DataVolume status: %w", err))
		}
	}()
	if dv.Status.Phase == cdiv1.PhaseUnset {
		dv.Status.Phase, dv.Status.Progress = cdiv1.Pending, "N/A"
	}

	kind, err := sourceKind(dv)
	if err != nil {
		return r.fail(dv, err)
	}
	if kind == sourcePVC {
		if res, err := r.reconcileCloneSource(ctx, dv); err != nil || !res.IsZero() {
			return res, err
		}
	}
	pvc, err := r.reconcileClaim(ctx, dv, kind)
	if err != nil {
		return ctrl.Result{}, err
	}
	if pvc == nil {
		return ctrl.Result{}, nil // failed; said in the status
	}
	dv.Status.ClaimName = pvc.Name
	if pvc.Annotations[cdi.AnnPodPhase] == string(corev1.PodSucceeded) {
		if err := r.cleanupWorkers(ctx, dv, pvc); err != nil {
			return ctrl.Result{}, err
		}
		if dv.Status.Phase != cdiv1.Succeeded {
			r.Recorder.Eventf(dv, corev1.EventTypeNormal, string(cdiv1.Succeeded), "Successfully populated PVC %s", pvc.Name)
		}
		succeed(dv)
		return ctrl.Result{}, nil
	}
	if pvc.Status.Phase == corev1.ClaimBound {
		setCondition(dv, cdiv1.DataVolumeBound, corev1.ConditionTrue, "Bound", "PVC "+pvc.Name+" Bound")
	} else {
		setCondition(dv, cdiv1.DataVolumeBound, corev1.ConditionFalse, "Pending", "PVC "+pvc.Name+" Pending")
	}
	switch kind {
	case sourceUpload:
		return r.reconcileUpload(dv, pvc)
	case sourcePVC:
		return r.reconcileClone(ctx, dv, pvc)
	}
	return r.reconcileImporter(ctx, dv, pvc, kind)
}

// statusOnly reports whether an update of a DataVolume changed nothing
// but its status.
func statusOnly(before, after client.Object) bool {
	a, ok := before.(*cdiv1.DataVolume)
	b, ok2 := after.(*cdiv1.DataVolume)
	if !ok || !ok2 {
		return false
	}
	a, b = a.DeepCopy(), b.DeepCopy()
	for _, dv := range []*cdiv1.DataVolume{a, b} {
		dv.Status, dv.ResourceVersion, dv.ManagedFields = cdiv1.DataVolumeStatus{}, "", nil
	}
	return equality.Semantic.DeepEqual(a, b)
}

// reconcileClaim creates dv's claim or reads it back; nil with no error
// means dv failed (a foreign claim of its name, or a bad spec).
func (r *Reconciler) reconcileClaim(ctx context.Context, dv *cdiv1.DataVolume, kind string) (*corev1.PersistentVolumeClaim, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: dv.Namespace, Name: dv.Name}, pvc)
	switch {
	case apierrors.IsNotFound(err):
		var source *corev1.PersistentVolumeClaim
		if kind == sourcePVC {
			source = &corev1.PersistentVolumeClaim{}
			if err := r.Client.Get(ctx, cloneSource(dv), source); err != nil {
				return nil, fmt.Errorf("get clone source %s: %w", cloneSource(dv), err)
			}
		}
		want, err := claimFor(dv, kind, source)
		if err != nil {
			_, terr := r.fail(dv, err)
			return nil, terr
		}
		if err := r.Client.Create(ctx, want); err != nil {
			return nil, fmt.Errorf("create claim %s: %w", want.Name, err)
		}
		r.Recorder.Eventf(dv, corev1.EventTypeNormal, "Pending", "PVC %s Pending", want.Name)
		return want, nil
	case err != nil:
		return nil, fmt.Errorf("get claim %s: %w", dv.Name, err)
	}
	if !metav1.IsControlledBy(pvc, dv) {
		_, terr := r.fail(dv, fmt.Errorf("PersistentVolumeClaim %s exists and is not owned by this DataVolume; delete it or name the DataVolume differently", pvc.Name))
		return nil, terr
	}
	return pvc, nil
}

// reconcileImporter runs dv's importer pod and follows it: ImportScheduled
// until it runs (its claim binds once the scheduler places it),
// ImportInProgress with the pod's progress while it runs, Succeeded once it
// has filled the claim. A failed pod is kept retryAfter for its status to be
// read, then replaced, counting status.restartCount, as CDI restarts its
// importer.
func (r *Reconciler) reconcileImporter(ctx context.Context, dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim, kind string) (ctrl.Result, error) {
	size, err := claimSize(pvc)
	if err != nil {
		return r.fail(dv, err)
	}
	pod, err := r.workerPod(ctx, dv, client.ObjectKey{Namespace: dv.Namespace, Name: importerPodName(pvc.Name)},
		func() (*corev1.Pod, error) {
			insecure, err := r.insecureRegistry(ctx, dv, kind)
			if err != nil {
				return nil, err
			}
			return importerPod(dv, pvc, kind, r.Image, size, insecure), nil
		})
	if err != nil || pod == nil {
		if dv.Status.Phase == cdiv1.Pending {
			dv.Status.Phase = cdiv1.ImportScheduled
		}
		return ctrl.Result{}, err
	}
	o := outcome(pod)
	switch o.Phase {
	case corev1.PodSucceeded:
		return ctrl.Result{}, r.populated(ctx, pvc)
	case corev1.PodFailed:
		dv.Status.Phase = cdiv1.ImportInProgress
		return r.retryFailed(ctx, dv, pod, o, "Unable to import "+kind)
	case corev1.PodRunning:
		dv.Status.Phase = cdiv1.ImportInProgress
		setCondition(dv, cdiv1.DataVolumeRunning, corev1.ConditionTrue, "Pod is running", "")
		setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, string(cdiv1.ImportInProgress), "")
		r.scrapeProgress(ctx, dv, pod, importer.ProgressMetric)
		return ctrl.Result{RequeueAfter: progressPoll}, nil
	}
	dv.Status.Phase = cdiv1.ImportScheduled
	setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, string(cdiv1.ImportScheduled), "")
	return ctrl.Result{}, nil
}

// insecureRegistry reports whether dv's registry source is pulled over
// plain HTTP: CDIConfig config lists its registry ("host[:port]") in
// spec.insecureRegistries, as CDI has it.
func (r *Reconciler) insecureRegistry(ctx context.Context, dv *cdiv1.DataVolume, kind string) (bool, error) {
	if kind != sourceRegistry {
		return false, nil
	}
	ref, err := name.ParseReference(strings.TrimPrefix(*dv.Spec.Source.Registry.URL, "docker://"))
	if err != nil {
		_, terr := r.fail(dv, field.Invalid(field.NewPath("spec", "source", "registry", "url"), *dv.Spec.Source.Registry.URL, err.Error()))
		return false, terr
	}
	config := &cdiv1.CDIConfig{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: cdi.ConfigName}, config); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return slices.Contains(config.Spec.InsecureRegistries, ref.Context().RegistryStr()), nil
}

// reconcileUpload follows the claim's upload pod, which the upload claim
// controller runs: UploadReady once it takes data.
func (r *Reconciler) reconcileUpload(dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim) (ctrl.Result, error) {
	if pvc.Annotations[cdi.AnnPodReady] != "true" {
		dv.Status.Phase = cdiv1.UploadScheduled
		setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, string(cdiv1.UploadScheduled), "")
		return ctrl.Result{}, nil
	}
	dv.Status.Phase = cdiv1.UploadReady
	setCondition(dv, cdiv1.DataVolumeRunning, corev1.ConditionTrue, "Pod is running", "")
	setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, string(cdiv1.UploadReady), "upload through the upload proxy")
	return ctrl.Result{}, nil
}

// workerPod reads the pod at key, creating it with make when it is not
// there; nil, nil while it is being created. A pod of that name dv does
// not control is an error the user must resolve.
func (r *Reconciler) workerPod(ctx context.Context, dv *cdiv1.DataVolume, key client.ObjectKey, make func() (*corev1.Pod, error)) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	err := r.Client.Get(ctx, key, pod)
	if apierrors.IsNotFound(err) {
		want, err := make()
		if err != nil {
			return nil, err
		}
		if err := r.Client.Create(ctx, want); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create pod %s: %w", key, err)
		}
		klog.FromContext(ctx).V(1).Info("worker pod created", "pod", key)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get pod %s: %w", key, err)
	}
	if !metav1.IsControlledBy(pod, dv) && pod.Annotations[annCloneTarget] != cloneTarget(dv.Namespace, dv.Name) {
		_, terr := r.fail(dv, fmt.Errorf("pod %s exists and was not made for this DataVolume; delete it", key))
		return nil, terr
	}
	if pod.DeletionTimestamp != nil {
		return nil, nil // its deletion wakes us
	}
	return pod, nil
}

// retryFailed shows why pod failed and, once it has been kept retryAfter,
// deletes it so the next pass starts another, counting the restart.
func (r *Reconciler) retryFailed(ctx context.Context, dv *cdiv1.DataVolume, pod *corev1.Pod, o podOutcome, what string) (ctrl.Result, error) {
	setCondition(dv, cdiv1.DataVolumeRunning, corev1.ConditionFalse, "Error", o.Message)
	if wait := retryAfter - time.Since(o.Finished); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	if err := r.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("delete failed pod %s: %w", pod.Name, err)
	}
	dv.Status.RestartCount++
	r.Recorder.Eventf(dv, corev1.EventTypeWarning, "Error", "%s: %s", what, o.Message)
	klog.FromContext(ctx).Info("worker pod failed, starting another", "pod", klog.KObj(pod), "message", o.Message)
	return ctrl.Result{}, nil
}

// scrapeProgress reads the running pod's progress into dv's status; a
// pod that does not answer leaves the value as it was (progress is a
// hint).
func (r *Reconciler) scrapeProgress(ctx context.Context, dv *cdiv1.DataVolume, pod *corev1.Pod, metric string) {
	if pod.Status.PodIP == "" {
		return
	}
	pct, ok, err := importer.ScrapeProgress(ctx, workerHTTP(r.HTTP), metricsURL(pod), metric, string(dv.UID))
	if err != nil {
		klog.FromContext(ctx).V(2).Info("progress not read", "pod", klog.KObj(pod), "err", err)
		return
	}
	if ok {
		dv.Status.Progress = cdiv1.DataVolumeProgress(cdi.ProgressPercent(pct))
	}
}

// populated records on the claim that it holds its data: CDI's pod phase
// annotation, which the upload proxy, virtctl and clones read.
func (r *Reconciler) populated(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	patch := client.MergeFrom(pvc.DeepCopy())
	if pvc.Annotations == nil {
		pvc.Annotations = map[string]string{}
	}
	pvc.Annotations[cdi.AnnPodPhase] = string(corev1.PodSucceeded)
	pvc.Annotations[cdi.AnnPodReady] = "false"
	if err := r.Client.Patch(ctx, pvc, patch); err != nil {
		return fmt.Errorf("mark claim %s populated: %w", pvc.Name, err)
	}
	return nil // the claim's update wakes the DataVolume
}

// cleanupWorkers deletes what filled dv's claim once it is populated.
func (r *Reconciler) cleanupWorkers(ctx context.Context, dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim) error {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: dv.Namespace, Name: importerPodName(pvc.Name)}}
	if err := r.Client.Delete(ctx, pod); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete importer pod: %w", err)
	}
	return r.cleanupCloneSources(ctx, dv.Namespace, dv.Name)
}

// fail marks dv Failed for a reason the user must fix; it is not retried
// until dv changes.
func (r *Reconciler) fail(dv *cdiv1.DataVolume, err error) (ctrl.Result, error) {
	dv.Status.Phase = cdiv1.Failed
	setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, "Failed", err.Error())
	setCondition(dv, cdiv1.DataVolumeRunning, corev1.ConditionFalse, "Failed", err.Error())
	r.Recorder.Event(dv, corev1.EventTypeWarning, "Failed", err.Error())
	return ctrl.Result{}, reconcile.TerminalError(err)
}

func succeed(dv *cdiv1.DataVolume) {
	dv.Status.Phase, dv.Status.Progress = cdiv1.Succeeded, cdi.ProgressDone
	setCondition(dv, cdiv1.DataVolumeBound, corev1.ConditionTrue, "Bound", "PVC "+dv.Name+" Bound")
	setCondition(dv, cdiv1.DataVolumeRunning, corev1.ConditionFalse, "Completed", "")
	setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionTrue, "", "")
}

// scheduledPhase is the phase of a DataVolume whose claim waits for its
// volume.
func scheduledPhase(kind string) cdiv1.DataVolumePhase {
	switch kind {
	case sourceUpload:
		return cdiv1.UploadScheduled
	case sourcePVC:
		return cdiv1.CloneScheduled
	}
	return cdiv1.ImportScheduled
}

// setCondition sets one of CDI's DataVolume conditions (CDI keeps its own
// condition type, not metav1.Condition), moving the transition time only
// when the status changes.
func setCondition(dv *cdiv1.DataVolume, t cdiv1.DataVolumeConditionType, status corev1.ConditionStatus, reason, msg string) {
	for i := range dv.Status.Conditions {
		c := &dv.Status.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != status {
			c.LastTransitionTime = metav1.Now()
		}
		c.Status, c.Reason, c.Message = status, reason, msg
		return
	}
	dv.Status.Conditions = append(dv.Status.Conditions, cdiv1.DataVolumeCondition{
		Type: t, Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.Now(),
	})
}
