package vm

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	virtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

func TestDataVolumeFor(t *testing.T) {
	vm := &virtv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "vm1", Namespace: "ns", UID: types.UID("u1")}}
	url := "http://example/disk.qcow2"
	tmpl := &virtv1.DataVolumeTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Name: "root", Labels: map[string]string{"a": "b"}},
		Spec:       cdiv1.DataVolumeSpec{Source: &cdiv1.DataVolumeSource{HTTP: &cdiv1.DataVolumeSourceHTTP{URL: url}}},
	}
	dv, err := dataVolumeFor(vm, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if dv.GetNamespace() != "ns" || dv.GetName() != "root" || dv.GetLabels()["a"] != "b" || dv.GetKind() != "DataVolume" {
		t.Errorf("DataVolume meta: %s/%s %v %s", dv.GetNamespace(), dv.GetName(), dv.GetLabels(), dv.GetKind())
	}
	owners := dv.GetOwnerReferences()
	if len(owners) != 1 || owners[0].UID != "u1" || owners[0].Kind != "VirtualMachine" || owners[0].Controller == nil || !*owners[0].Controller {
		t.Errorf("owner references = %+v, want the VM as controller", owners)
	}
	if got, _, _ := unstructured.NestedString(dv.Object, "spec", "source", "http", "url"); got != url {
		t.Errorf("spec.source.http.url = %q, want %q", got, url)
	}
}
