// Package datavolume is CDI's DataVolume controller, run by virt-controller:
// it makes each DataVolume's PersistentVolumeClaim and fills the claim's
// disk.img from the DataVolume's source (blank, http, registry, pvc), or
// leaves it UploadReady for the upload proxy (upload). The import is done
// by this controller on the claim's directory, which it can reach because
// virt-controller runs on the node of the hostpath volumes inside
// `virtkube server`; docs/design/0006-datavolumes.md says why and what it
// costs.
package datavolume

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

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
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/virtkube/virtkube/internal/cdi"
	"github.com/virtkube/virtkube/internal/hostpath"
	"github.com/virtkube/virtkube/internal/noderuntime/image"
)

const (
	// bindPoll is how often a claim waiting for its volume is looked at.
	bindPoll = time.Second
	// retryAfter is how soon a failed import is tried again, as CDI
	// restarts its importer pod.
	retryAfter = 10 * time.Second
	// importTimeout bounds one import.
	importTimeout = 30 * time.Minute
)

// Reconciler fills DataVolumes.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// HTTP downloads http sources; nil is http.DefaultClient.
	HTTP *http.Client
}

// SetupWithManager registers the controller; claims wake their DataVolume
// (the upload proxy reports through the claim). A DataVolume's own status
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
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// Reconcile moves one DataVolume towards Succeeded; its status is written
// once, at the end.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	dv := &cdiv1.DataVolume{}
	if err := r.Client.Get(ctx, req.NamespacedName, dv); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if dv.DeletionTimestamp != nil || dv.Status.Phase == cdiv1.Succeeded {
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
		succeed(dv)
		return ctrl.Result{}, nil
	}
	if pvc.Status.Phase != corev1.ClaimBound {
		return r.reconcileBinding(ctx, dv, pvc, kind)
	}
	setCondition(dv, cdiv1.DataVolumeBound, corev1.ConditionTrue, "Bound", "PVC "+pvc.Name+" Bound")
	if kind == sourceUpload {
		dv.Status.Phase = cdiv1.UploadReady
		setCondition(dv, cdiv1.DataVolumeRunning, corev1.ConditionTrue, "Pod is running", "")
		setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, string(cdiv1.UploadReady), "upload through the upload proxy")
		return ctrl.Result{}, nil
	}
	return r.reconcileImport(ctx, dv, pvc, kind)
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

// reconcileBinding forces the WaitForFirstConsumer claim onto a node, as
// CDI does for its importer pod: the writer of the data is its first
// consumer.
func (r *Reconciler) reconcileBinding(ctx context.Context, dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim, kind string) (ctrl.Result, error) {
	dv.Status.Phase = scheduledPhase(kind)
	setCondition(dv, cdiv1.DataVolumeBound, corev1.ConditionFalse, "Pending", "PVC "+pvc.Name+" Pending")
	setCondition(dv, cdiv1.DataVolumeReady, corev1.ConditionFalse, string(dv.Status.Phase), "")
	if pvc.Annotations[hostpath.AnnSelectedNode] != "" {
		return ctrl.Result{RequeueAfter: bindPoll}, nil
	}
	node, err := pickNode(ctx, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	if pvc.Annotations == nil {
		pvc.Annotations = map[string]string{}
	}
	pvc.Annotations[hostpath.AnnSelectedNode] = node
	if err := r.Client.Patch(ctx, pvc, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("select node %s for claim %s: %w", node, pvc.Name, err)
	}
	klog.FromContext(ctx).V(1).Info("claim placed", "pvc", pvc.Name, "node", node)
	return ctrl.Result{RequeueAfter: bindPoll}, nil
}

// pickNode is the first Ready node by name: the node of `virtkube server`.
func pickNode(ctx context.Context, c client.Reader) (string, error) {
	nodes := &corev1.NodeList{}
	if err := c.List(ctx, nodes); err != nil {
		return "", fmt.Errorf("list nodes: %w", err)
	}
	var ready []string
	for _, n := range nodes.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && !n.Spec.Unschedulable {
				ready = append(ready, n.Name)
			}
		}
	}
	if len(ready) == 0 {
		return "", errors.New("no Ready node to import on")
	}
	slices.Sort(ready)
	return ready[0], nil
}

// reconcileImport fills the bound claim. It first only records
// ImportInProgress, so the phase shows while the (blocking) import runs in
// the next pass.
func (r *Reconciler) reconcileImport(ctx context.Context, dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim, kind string) (ctrl.Result, error) {
	phase := cdiv1.ImportInProgress
	if kind == sourcePVC {
		phase = cdiv1.CloneInProgress
	}
	if dv.Status.Phase != phase {
		dv.Status.Phase, dv.Status.Progress = phase, cdiv1.DataVolumeProgress(cdi.Progress(0, 1))
		setCondition(dv, cdiv1.DataVolumeRunning, corev1.ConditionTrue, "Pod is running", "")
		return ctrl.Result{Requeue: true}, nil
	}
	dir, err := cdi.VolumeDir(ctx, r.Client, pvc)
	if err != nil {
		return ctrl.Result{}, err
	}
	size, err := claimSize(pvc)
	if err != nil {
		return ctrl.Result{}, err
	}
	ictx, cancel := context.WithTimeout(ctx, importTimeout)
	defer cancel()
	// The one write besides the final one: the import's progress, as
	// CDI's importer pod reports it while it runs (see
	// cdi.ProgressReporter). A retry starts again from 0.00%.
	progress := &cdi.ProgressReporter{Client: r.Client, Namespace: dv.Namespace, Name: dv.Name, Shown: string(dv.Status.Progress)}
	progress.Report(ictx, cdi.Progress(0, 1))
	if err := r.populate(ictx, dv, dir, size, kind, progress); err != nil {
		dv.Status.RestartCount++
		setCondition(dv, cdiv1.DataVolumeRunning, corev1.ConditionFalse, "Error", err.Error())
		r.Recorder.Eventf(dv, corev1.EventTypeWarning, "Error", "Unable to import %s: %v", kind, err)
		klog.FromContext(ctx).Info("import failed, will retry", "source", kind, "err", err)
		return ctrl.Result{RequeueAfter: retryAfter}, nil
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	pvc.Annotations[cdi.AnnPodPhase] = string(corev1.PodSucceeded)
	if err := r.Client.Patch(ctx, pvc, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("mark claim %s populated: %w", pvc.Name, err)
	}
	succeed(dv)
	r.Recorder.Eventf(dv, corev1.EventTypeNormal, string(cdiv1.Succeeded), "Successfully imported into PVC %s", pvc.Name)
	return ctrl.Result{}, nil
}

// populate writes dv's source into dir as disk.img of size bytes,
// reporting how far it has got: an http source by the bytes downloaded of
// its Content-Length (compressed bytes, for a compressed image), a
// registry image and a clone by qemu-img's progress converting the disk.
func (r *Reconciler) populate(ctx context.Context, dv *cdiv1.DataVolume, dir string, size int64, kind string, progress *cdi.ProgressReporter) error {
	src := dv.Spec.Source
	switch kind {
	case sourceBlank:
		return cdi.Blank(dir, size)
	case sourceHTTP:
		return r.download(ctx, src.HTTP.URL, dir, size, progress)
	case sourceRegistry:
		return pullDisk(ctx, *src.Registry.URL, dir, size, progress.Percent(ctx))
	case sourcePVC:
		ns := src.PVC.Namespace
		if ns == "" {
			ns = dv.Namespace
		}
		from := &corev1.PersistentVolumeClaim{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: src.PVC.Name}, from); err != nil {
			return fmt.Errorf("spec.source.pvc: %w", err)
		}
		srcDir, err := cdi.VolumeDir(ctx, r.Client, from)
		if err != nil {
			return fmt.Errorf("spec.source.pvc %s/%s: %w", ns, src.PVC.Name, err)
		}
		return cdi.Clone(ctx, srcDir, dir, size, progress.Percent(ctx))
	}
	return fmt.Errorf("source %s cannot be imported", kind)
}

func (r *Reconciler) download(ctx context.Context, url, dir string, size int64, progress *cdi.ProgressReporter) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("spec.source.http.url %q: %w", url, err)
	}
	c := r.HTTP
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download %s: %s", url, resp.Status)
	}
	_, err = cdi.Import(ctx, dir, progress.Reader(ctx, resp.Body, resp.ContentLength), size)
	return err
}

// pullDisk pulls a containerDisk image into a scratch store and imports
// its disk; the store goes afterwards (nothing is cached between imports).
// progress, when not nil, follows the conversion of the disk.
func pullDisk(ctx context.Context, url, dir string, size int64, progress func(percent float64)) error {
	ref, ok := strings.CutPrefix(url, "docker://")
	if !ok {
		return fmt.Errorf("spec.source.registry.url %q: want docker://<image>", url)
	}
	scratch, err := os.MkdirTemp("", "virtkube-registry-import-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	store, err := image.New(scratch)
	if err != nil {
		return err
	}
	img, err := store.Pull(ctx, ref, corev1.PullAlways)
	if err != nil {
		return fmt.Errorf("spec.source.registry.url: %w", err)
	}
	disk, _, err := img.ContainerDisk()
	if err != nil {
		return fmt.Errorf("spec.source.registry.url: %w", err)
	}
	return cdi.ImportFile(ctx, dir, disk, size, progress)
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
