package bootstrap

import (
	"testing"

	storagev1 "k8s.io/api/storage/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	hostpathdeploy "github.com/virtkube/virtkube/deploy/hostpath"
	"github.com/virtkube/virtkube/internal/hostpath"
)

// The manifests serve what the seed applies: HostPathProvisioner
// v1beta1 and the class hostpath-csi on pool local, bound on first use.
func TestHostPathManifests(t *testing.T) {
	crd := &apiextv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(hostpathdeploy.CRD, crd); err != nil {
		t.Fatal(err)
	}
	gvk := hostpath.GroupVersionKind
	if crd.Spec.Group != gvk.Group || crd.Spec.Names.Kind != gvk.Kind || len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != gvk.Version {
		t.Errorf("CRD serves %s %s %+v, want %s", crd.Spec.Group, crd.Spec.Names.Kind, crd.Spec.Versions, gvk)
	}
	class := &storagev1.StorageClass{}
	if err := yaml.UnmarshalStrict(hostpathdeploy.StorageClass, class); err != nil {
		t.Fatal(err)
	}
	if class.Name != hostpath.DefaultStorageClass || class.Provisioner != hostpath.Provisioner ||
		class.VolumeBindingMode == nil || *class.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer ||
		class.Parameters[hostpath.PoolParameter] != hostpath.DefaultPoolName {
		t.Errorf("StorageClass = %+v", class)
	}
}

func TestHasDefaultClass(t *testing.T) {
	with := func(ann map[string]string) storagev1.StorageClass {
		return storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Annotations: ann}}
	}
	if hasDefaultClass([]storagev1.StorageClass{with(nil), with(map[string]string{annDefaultClass: "false"})}) {
		t.Error("no default class, but one reported")
	}
	if !hasDefaultClass([]storagev1.StorageClass{with(nil), with(map[string]string{annDefaultClass: "true"})}) {
		t.Error("a default class not seen")
	}
}
