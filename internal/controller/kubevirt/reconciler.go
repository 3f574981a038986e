// Package kubevirt keeps the status of the KubeVirt CR current, as KubeVirt's
// operator does: every generation of its spec is observed.
package kubevirt

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	virtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/virtkube/virtkube/internal/bootstrap"
)

// Reconciler reports the installation deployed for the CR's current
// generation. virtkube's components read their configuration from the CR
// (admission, handler); there is nothing to roll out.
type Reconciler struct {
	Client client.Client
}

// Reconcile observes the CR's generation.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	kv := &virtv1.KubeVirt{}
	if err := r.Client.Get(ctx, req.NamespacedName, kv); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	err := bootstrap.ReportDeployed(ctx, r.Client, kv)
	if apierrors.IsConflict(err) {
		return ctrl.Result{Requeue: true}, nil
	}
	return ctrl.Result{}, err
}

// SetupWithManager watches the spec of the KubeVirt CR.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("kubevirt").
		For(&virtv1.KubeVirt{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}
