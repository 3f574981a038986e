package bootstrap

import (
	"context"
	"fmt"

	storagev1 "k8s.io/api/storage/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	hostpathdeploy "github.com/virtkube/virtkube/deploy/hostpath"
)

// annDefaultClass marks the StorageClass of claims that name none.
const annDefaultClass = "storageclass.kubernetes.io/is-default-class"

// HostPath installs the hostpath provisioner's API and class, as the seed
// installs them with the hostpath-provisioner operator: the
// HostPathProvisioner CRD (kept up to date) and the StorageClass
// hostpath-csi. The class is created once and then left to the user; it is
// made the default class unless the cluster has one already, so claims
// without a class are served on this node too.
func HostPath(ctx context.Context, cfg *rest.Config) error {
	crd := &apiextv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(hostpathdeploy.CRD, crd); err != nil {
		return fmt.Errorf("decode HostPathProvisioner CRD: %w", err)
	}
	if err := installCRDs(ctx, cfg, []*apiextv1.CustomResourceDefinition{crd}); err != nil {
		return err
	}

	class := &storagev1.StorageClass{}
	if err := yaml.UnmarshalStrict(hostpathdeploy.StorageClass, class); err != nil {
		return fmt.Errorf("decode hostpath StorageClass: %w", err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	api := c.StorageV1().StorageClasses()
	if _, err := api.Get(ctx, class.Name, metav1.GetOptions{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("get StorageClass %s: %w", class.Name, err)
	}
	existing, err := api.List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list StorageClasses: %w", err)
	}
	if !hasDefaultClass(existing.Items) {
		class.Annotations = map[string]string{annDefaultClass: "true"}
	}
	if _, err := api.Create(ctx, class, metav1.CreateOptions{FieldManager: fieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create StorageClass %s: %w", class.Name, err)
	}
	klog.FromContext(ctx).V(1).Info("StorageClass created", "storageClass", class.Name, "default", class.Annotations[annDefaultClass] == "true")
	return nil
}

func hasDefaultClass(classes []storagev1.StorageClass) bool {
	for _, c := range classes {
		if c.Annotations[annDefaultClass] == "true" || c.Annotations["storageclass.beta.kubernetes.io/is-default-class"] == "true" {
			return true
		}
	}
	return false
}
