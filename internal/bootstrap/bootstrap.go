// Package bootstrap puts into a fresh cluster what KubeVirt's operator would:
// the kubevirt.io CRDs and the KubeVirt CR kubevirt/kubevirt. It is idempotent
// and runs on every start of virtkube server, so an upgraded binary brings its
// CRDs up to date without touching any stored object.
package bootstrap

import (
	"context"
	"fmt"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/virtkube/virtkube/deploy"
)

// CRDs creates or updates every CRD under deploy/crds and waits until the
// apiserver serves them.
func CRDs(ctx context.Context, cfg *rest.Config) error {
	crds, err := deploy.CRDs()
	if err != nil {
		return err
	}
	return installCRDs(ctx, cfg, crds)
}

// installCRDs creates or updates crds and waits until the apiserver serves
// them.
func installCRDs(ctx context.Context, cfg *rest.Config, crds []*apiextv1.CustomResourceDefinition) error {
	client, err := apiextclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	api := client.ApiextensionsV1().CustomResourceDefinitions()
	for _, want := range crds {
		got, err := api.Get(ctx, want.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			if _, err := api.Create(ctx, want, metav1.CreateOptions{FieldManager: fieldManager}); err != nil {
				return fmt.Errorf("create CRD %s: %w", want.Name, err)
			}
			klog.FromContext(ctx).V(1).Info("CRD created", "crd", want.Name)
		case err != nil:
			return fmt.Errorf("get CRD %s: %w", want.Name, err)
		case !equality.Semantic.DeepEqual(got.Spec, want.Spec) || !equality.Semantic.DeepEqual(got.Labels, want.Labels):
			got.Spec, got.Labels = want.Spec, want.Labels
			if _, err := api.Update(ctx, got, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
				return fmt.Errorf("update CRD %s: %w", want.Name, err)
			}
			klog.FromContext(ctx).Info("CRD updated", "crd", want.Name)
		}
	}
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, want := range crds {
			got, err := api.Get(ctx, want.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			if !established(got) {
				return false, nil
			}
		}
		return true, nil
	})
}

const fieldManager = "virtkube"

func established(crd *apiextv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextv1.Established && c.Status == apiextv1.ConditionTrue {
			return true
		}
	}
	return false
}
