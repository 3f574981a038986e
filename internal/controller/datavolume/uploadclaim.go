package datavolume

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/cdi"
)

// UploadClaimReconciler is CDI's upload controller: every claim that takes
// an upload (an upload DataVolume's, or one made by `virtctl image-upload
// pvc`) or a clone gets an upload pod, which mounts the claim — so the
// scheduler places it and a WaitForFirstConsumer claim binds — and takes
// data only with the token in the claim's upload Secret. The pod's state is
// written on the claim as CDI does (pod phase, ready, restarts), where the
// DataVolume controller, the upload proxy and virtctl read it. Once the pod
// has written the disk, it and its Secret go.
type UploadClaimReconciler struct {
	Client client.Client
	// APIReader reads Secrets without caching every Secret of the
	// cluster; nil is Client.
	APIReader client.Reader
	// Key returns the upload token key, from which each upload pod's
	// token is derived (cdi.UploadPodToken).
	Key func(context.Context) ([]byte, error)
	// Image is the launcher image, which holds cdi-importer.
	Image string
	// HTTP asks upload pods whether they serve; nil is
	// defaultWorkerHTTP.
	HTTP *http.Client
}

// SetupWithManager registers the reconciler for claims and their upload
// pods.
func (r *UploadClaimReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("upload-claim").
		For(&corev1.PersistentVolumeClaim{}).
		Owns(&corev1.Pod{}).
		Complete(r)
}

// Reconcile runs one claim's upload pod.
func (r *UploadClaimReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := r.Client.Get(ctx, req.NamespacedName, pvc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	_, upload := pvc.Annotations[cdi.AnnUploadRequest]
	_, clone := pvc.Annotations[cdi.AnnCloneRequest]
	if !upload && !clone || pvc.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	podKey := client.ObjectKey{Namespace: pvc.Namespace, Name: cdi.UploadPodName(pvc.Name)}
	if pvc.Annotations[cdi.AnnPodPhase] == string(corev1.PodSucceeded) {
		return ctrl.Result{}, r.cleanup(ctx, pvc)
	}
	pod := &corev1.Pod{}
	err := r.Client.Get(ctx, podKey, pod)
	if apierrors.IsNotFound(err) {
		size, err := claimSize(pvc)
		if err != nil {
			return ctrl.Result{}, err
		}
		// The Secret is read once, when the pod starts.
		if err := r.ensureToken(ctx, pvc); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.Client.Create(ctx, uploadPod(pvc, r.Image, size)); err != nil && !apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, fmt.Errorf("create upload pod %s: %w", podKey, err)
		}
		// Nothing written on the claim yet: the scheduler is about to
		// write it (the selected node), and a write of ours in between
		// makes it retry a second later.
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("get upload pod %s: %w", podKey, err)
	}
	if !metav1.IsControlledBy(pod, pvc) {
		return ctrl.Result{}, fmt.Errorf("pod %s exists and is not the upload pod of claim %s; delete it", podKey, pvc.Name)
	}
	if pod.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	restarts, _ := strconv.Atoi(pvc.Annotations[cdi.AnnPodRestarts])
	o := outcome(pod)
	switch o.Phase {
	case corev1.PodSucceeded:
		if err := r.annotate(ctx, pvc, corev1.PodSucceeded, false, restarts); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.cleanup(ctx, pvc)
	case corev1.PodFailed:
		if err := r.annotate(ctx, pvc, corev1.PodFailed, false, restarts); err != nil {
			return ctrl.Result{}, err
		}
		if wait := retryAfter - time.Since(o.Finished); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
		klog.FromContext(ctx).Info("upload pod failed, starting another", "pod", klog.KObj(pod), "message", o.Message)
		if err := r.annotate(ctx, pvc, corev1.PodFailed, false, restarts+1); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, client.IgnoreNotFound(r.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}))
	case corev1.PodRunning:
		// Ready once its server answers, as a readiness probe of
		// /healthz would make it.
		ready := pod.Status.PodIP != "" && r.answers(ctx, pod)
		if err := r.annotate(ctx, pvc, corev1.PodRunning, ready, restarts); err != nil || ready {
			return ctrl.Result{}, err
		}
		return ctrl.Result{RequeueAfter: readyPoll}, nil
	}
	if pvc.Annotations[cdi.AnnPodPhase] == "" {
		return ctrl.Result{}, nil // as above: a first pod, not placed yet
	}
	return ctrl.Result{}, r.annotate(ctx, pvc, corev1.PodPending, false, restarts)
}

// readyPoll is how often a running upload pod is asked whether it serves.
const readyPoll = 200 * time.Millisecond

// answers reports whether pod's upload server answers /healthz.
func (r *UploadClaimReconciler) answers(ctx context.Context, pod *corev1.Pod) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostPort(pod.Status.PodIP)+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := workerHTTP(r.HTTP).Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// ensureToken makes the claim's upload Secret, owned by the claim.
func (r *UploadClaimReconciler) ensureToken(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	key := client.ObjectKey{Namespace: pvc.Namespace, Name: cdi.UploadTokenSecretName(pvc.Name)}
	var reader client.Reader = r.Client
	if r.APIReader != nil {
		reader = r.APIReader
	}
	if err := reader.Get(ctx, key, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		return err
	}
	k, err := r.Key(ctx)
	if err != nil {
		return err
	}
	token := cdi.UploadPodToken(k, pvc.Namespace, pvc.Name, string(pvc.UID))
	s := tokenSecret(key.Name, key.Namespace, token)
	s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "PersistentVolumeClaim", Name: pvc.Name, UID: pvc.UID, Controller: ptr.To(true)}}
	if err := r.Client.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create upload token %s: %w", key, err)
	}
	return nil
}

// annotate records the upload pod's state on the claim, when it changed.
func (r *UploadClaimReconciler) annotate(ctx context.Context, pvc *corev1.PersistentVolumeClaim, phase corev1.PodPhase, ready bool, restarts int) error {
	want := map[string]string{
		cdi.AnnPodPhase: string(phase), cdi.AnnPodReady: strconv.FormatBool(ready), cdi.AnnPodRestarts: strconv.Itoa(restarts),
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	changed := false
	for k, v := range want {
		if pvc.Annotations[k] != v {
			pvc.Annotations[k], changed = v, true
		}
	}
	if !changed {
		return nil
	}
	if err := r.Client.Patch(ctx, pvc, patch); err != nil {
		return fmt.Errorf("record upload pod state on claim %s: %w", pvc.Name, err)
	}
	return nil
}

// cleanup deletes a populated claim's upload pod and Secret.
func (r *UploadClaimReconciler) cleanup(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	meta := metav1.ObjectMeta{Namespace: pvc.Namespace, Name: cdi.UploadPodName(pvc.Name)}
	if err := r.Client.Delete(ctx, &corev1.Pod{ObjectMeta: meta}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete upload pod: %w", err)
	}
	meta.Name = cdi.UploadTokenSecretName(pvc.Name)
	if err := r.Client.Delete(ctx, &corev1.Secret{ObjectMeta: meta}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete upload token: %w", err)
	}
	return nil
}
