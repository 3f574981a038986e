package datavolume

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/cdi"
	"github.com/virtkube/virtkube/internal/hostpath"
)

// UploadClaimReconciler places claims made for an upload without a
// DataVolume (`virtctl image-upload pvc`): like a DataVolume's, such a
// claim has no consumer pod before the upload, so its node is chosen here
// and the hostpath provisioner binds it.
type UploadClaimReconciler struct {
	Client client.Client
}

// SetupWithManager registers the reconciler for PVCs.
func (r *UploadClaimReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("upload-claim").For(&corev1.PersistentVolumeClaim{}).Complete(r)
}

// Reconcile places one bare upload claim.
func (r *UploadClaimReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := r.Client.Get(ctx, req.NamespacedName, pvc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if _, ok := pvc.Annotations[cdi.AnnUploadRequest]; !ok || metav1.GetControllerOf(pvc) != nil ||
		pvc.Spec.VolumeName != "" || pvc.Annotations[hostpath.AnnSelectedNode] != "" || pvc.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	node, err := pickNode(ctx, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	pvc.Annotations[hostpath.AnnSelectedNode] = node
	if err := r.Client.Patch(ctx, pvc, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("select node %s for upload claim %s: %w", node, pvc.Name, err)
	}
	klog.FromContext(ctx).V(1).Info("upload claim placed", "pvc", klog.KObj(pvc), "node", node)
	return ctrl.Result{}, nil
}
