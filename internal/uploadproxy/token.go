package uploadproxy

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/cdi"
)

// KeyReader reads the token signing key from the Secret
// cdi.TokenKeySecret in Namespace: the proxy verifies with it, virt-api
// signs UploadTokenRequests with it (see internal/subresource).
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
