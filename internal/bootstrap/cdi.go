package bootstrap

import (
	"context"
	"crypto/rand"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/cdi"
)

// CDIClient is an uncached client of core and CDI objects.
func CDIClient(cfg *rest.Config) (client.Client, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := cdi.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

// CDI puts what CDI's operator would into the cluster, beyond the CRDs
// (installed by CRDs): the CDIConfig "config" whose status names the upload
// proxy at uploadProxyURL — virtctl image-upload finds the proxy there — and
// the key upload tokens are signed with, made once and kept.
func CDI(ctx context.Context, cfg *rest.Config, uploadProxyURL string) error {
	c, err := CDIClient(cfg)
	if err != nil {
		return err
	}
	if err := tokenKey(ctx, c); err != nil {
		return err
	}
	return UploadProxyURL(ctx, c, uploadProxyURL)
}

// UploadProxyURL shows uploadProxyURL in the status.uploadProxyURL of the
// CDIConfig "config" (made if missing) — or the config's
// spec.uploadProxyURLOverride when set, as CDI's config controller does —
// where virtctl image-upload finds the upload proxy. It needs get on
// cdiconfigs (create only while the config is missing) and update on
// cdiconfigs/status, nothing else: `virtkube cdi-uploadproxy
// --upload-proxy-url` publishes its URL with it.
func UploadProxyURL(ctx context.Context, c client.Client, uploadProxyURL string) error {
	config := &cdiv1.CDIConfig{ObjectMeta: metav1.ObjectMeta{Name: cdi.ConfigName}}
	err := c.Get(ctx, client.ObjectKeyFromObject(config), config)
	if apierrors.IsNotFound(err) {
		err = c.Create(ctx, config, client.FieldOwner(fieldManager))
		if apierrors.IsAlreadyExists(err) {
			err = c.Get(ctx, client.ObjectKeyFromObject(config), config)
		} else if err != nil {
			return fmt.Errorf("create CDIConfig %s: %w", cdi.ConfigName, err)
		}
	}
	if err != nil {
		return fmt.Errorf("get CDIConfig %s: %w", cdi.ConfigName, err)
	}
	// The proxy's port may change between starts (a free port).
	url := uploadProxyURL
	if o := config.Spec.UploadProxyURLOverride; o != nil && *o != "" {
		url = *o
	}
	if config.Status.UploadProxyURL == nil || *config.Status.UploadProxyURL != url {
		config.Status.UploadProxyURL = &url
		if err := c.Status().Update(ctx, config, client.FieldOwner(fieldManager)); err != nil {
			return fmt.Errorf("update CDIConfig %s status.uploadProxyURL: %w", cdi.ConfigName, err)
		}
	}
	return nil
}

// tokenKey makes the Secret with the upload token signing key unless it
// exists.
func tokenKey(ctx context.Context, c client.Client) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: KubeVirtNamespace, Name: cdi.TokenKeySecret},
		Data:       map[string][]byte{cdi.TokenKeyField: key},
	}
	if err := c.Create(ctx, s, client.FieldOwner(fieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Secret %s/%s: %w", KubeVirtNamespace, cdi.TokenKeySecret, err)
	}
	return nil
}
