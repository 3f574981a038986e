package uploadproxy

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	uploadv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/upload/v1beta1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/cdi"
)

// KeyReader reads the token signing key from the Secret
// cdi.TokenKeySecret in Namespace.
type KeyReader struct {
	Reader    client.Reader
	Namespace string
}

// Key returns the signing key.
func (k KeyReader) Key(ctx context.Context) ([]byte, error) {
	s := &corev1.Secret{}
	if err := k.Reader.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: cdi.TokenKeySecret}, s); err != nil {
		return nil, fmt.Errorf("upload token key: %w", err)
	}
	return s.Data[cdi.TokenKeyField], nil
}

// TokenReconciler answers UploadTokenRequests: it writes a token for the
// requested claim, good for cdi.TokenLifetime, into status.token. (CDI's
// apiserver answers in the create response; here the client reads the
// status back, see virtctl image-upload.)
type TokenReconciler struct {
	Client client.Client
	Keys   KeyReader
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// SetupWithManager registers the reconciler.
func (r *TokenReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("uploadtokenrequest").For(&uploadv1.UploadTokenRequest{}).Complete(r)
}

// Reconcile signs one request.
func (r *TokenReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	utr := &uploadv1.UploadTokenRequest{}
	if err := r.Client.Get(ctx, req.NamespacedName, utr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if utr.Status.Token != "" || utr.Spec.PvcName == "" {
		return ctrl.Result{}, nil
	}
	key, err := r.Keys.Key(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	token, err := cdi.SignToken(key, cdi.TokenClaims{
		Namespace: utr.Namespace, PVC: utr.Spec.PvcName, Expires: now().Add(cdi.TokenLifetime).Unix(),
	})
	if err != nil {
		return ctrl.Result{}, err
	}
	patch := client.MergeFrom(utr.DeepCopy())
	utr.Status.Token = token
	if err := r.Client.Status().Patch(ctx, utr, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("write upload token: %w", err)
	}
	return ctrl.Result{}, nil
}
