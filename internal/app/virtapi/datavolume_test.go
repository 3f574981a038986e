package virtapi

import (
	"context"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	virtv1 "kubevirt.io/api/core/v1"
)

// denyAll is an AccessReviewer under which nobody may do anything.
func denyAll(context.Context, authorizationv1.SubjectAccessReviewSpec) (bool, error) {
	return false, nil
}

func dvRequest(op admissionv1.Operation, spec string) admissionv1.AdmissionRequest {
	return admissionv1.AdmissionRequest{
		Kind:      metav1.GroupVersionKind{Group: "cdi.kubevirt.io", Version: "v1beta1", Kind: "DataVolume"},
		Resource:  metav1.GroupVersionResource{Group: "cdi.kubevirt.io", Version: "v1beta1", Resource: "datavolumes"},
		Name:      "disk",
		Namespace: "a",
		Operation: op,
		UserInfo:  authenticationv1.UserInfo{Username: "bob", Groups: []string{"system:authenticated"}},
		Object: runtime.RawExtension{Raw: []byte(`{"apiVersion":"cdi.kubevirt.io/v1beta1","kind":"DataVolume",
			"metadata":{"name":"disk","namespace":"a"},"spec":` + spec + `}`)},
	}
}

const dvStorage = `"storage":{"resources":{"requests":{"storage":"1Gi"}}}`

func TestDataVolumeWebhook(t *testing.T) {
	// A clone from another namespace, by a user the API server says no to.
	resp := serve(t, nil, "/datavolume-validate", dvRequest(admissionv1.Create, `{"source":{"pvc":{"namespace":"b","name":"golden"}},`+dvStorage+`}`))
	if resp.Allowed || resp.Result.Code != http.StatusUnprocessableEntity {
		t.Fatalf("a forbidden clone: %+v, want 422", resp.Result)
	}
	if m := resp.Result.Message; !strings.Contains(m, `DataVolume.cdi.kubevirt.io "disk" is invalid: spec.source.pvc: Forbidden: User bob has insufficient permissions in clone source namespace b`) {
		t.Errorf("message %q", m)
	}

	resp = serve(t, nil, "/datavolume-validate", dvRequest(admissionv1.Create, `{"source":{"blank":{},"upload":{}},`+dvStorage+`}`))
	if resp.Allowed || resp.Result.Details == nil || resp.Result.Details.Causes[0].Field != "spec.source" {
		t.Errorf("two sources: %+v, want a cause on spec.source", resp.Result)
	}
	resp = serve(t, nil, "/datavolume-validate", dvRequest(admissionv1.Create, `{"source":{"blank":{}},"storage":{"resources":{"requests":{"storage":-1}}}}`))
	if resp.Allowed {
		t.Error("a negative size was admitted")
	}
	resp = serve(t, nil, "/datavolume-validate", dvRequest(admissionv1.Create, `{"source":{"pvc":{"namespace":"a","name":"golden"}},`+dvStorage+`}`))
	if !resp.Allowed {
		t.Errorf("a clone within the namespace: %+v", resp.Result)
	}

	update := dvRequest(admissionv1.Update, `{"source":{"blank":{}},`+dvStorage+`}`)
	update.OldObject = dvRequest(admissionv1.Create, `{"source":{"upload":{}},`+dvStorage+`}`).Object
	if resp = serve(t, nil, "/datavolume-validate", update); resp.Allowed || !strings.Contains(resp.Result.Message, "spec.source: Forbidden") {
		t.Errorf("a changed source: %+v", resp.Result)
	}
	update.OldObject = update.Object
	if resp = serve(t, nil, "/datavolume-validate", update); !resp.Allowed {
		t.Errorf("an update that keeps the spec: %+v", resp.Result)
	}
}

func vmRequest(op admissionv1.Operation, clone string) admissionv1.AdmissionRequest {
	return admissionv1.AdmissionRequest{
		Kind:      metav1.GroupVersionKind{Group: "kubevirt.io", Version: "v1", Kind: "VirtualMachine"},
		Resource:  metav1.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachines"},
		Name:      "vm",
		Namespace: "a",
		Operation: op,
		UserInfo:  authenticationv1.UserInfo{Username: "bob", Groups: []string{"system:authenticated"}},
		Object: runtime.RawExtension{Raw: []byte(`{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine",
			"metadata":{"name":"vm","namespace":"a"},"spec":{"runStrategy":"Halted",
			"dataVolumeTemplates":[{"metadata":{"name":"root"},"spec":{"source":{"pvc":` + clone + `},"storage":{}}}],
			"template":{"spec":{"domain":{"devices":{"disks":[{"name":"root","disk":{}}]}},
			"volumes":[{"name":"root","dataVolume":{"name":"root"}}]}}}}`)},
	}
}

// The VM webhook asks about the clone sources of its DataVolume templates,
// for the VM's ServiceAccount as KubeVirt: virt-controller makes the
// DataVolumes, as itself.
func TestVMDataVolumeTemplateWebhook(t *testing.T) {
	kv := &virtv1.KubeVirt{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kubevirt", Name: "kubevirt"},
		Spec: virtv1.KubeVirtSpec{Configuration: virtv1.KubeVirtConfiguration{
			DeveloperConfiguration: &virtv1.DeveloperConfiguration{FeatureGates: []string{"DataVolumes"}},
		}},
	}
	resp := serve(t, kv, "/virtualmachines-validate", vmRequest(admissionv1.Create, `{"namespace":"b","name":"golden"}`))
	if resp.Allowed || resp.Result.Code != http.StatusUnprocessableEntity {
		t.Fatalf("a VM cloning a claim of b: %+v, want 422", resp.Result)
	}
	if m := resp.Result.Message; !strings.Contains(m, `VirtualMachine.kubevirt.io "vm" is invalid: spec.dataVolumeTemplates[0].spec.source.pvc: Forbidden: User system:serviceaccount:a:default has insufficient permissions in clone source namespace b`) {
		t.Errorf("message %q", m)
	}
	if resp := serve(t, kv, "/virtualmachines-validate", vmRequest(admissionv1.Create, `{"name":"golden"}`)); !resp.Allowed {
		t.Errorf("a VM cloning a claim of its own namespace: %+v", resp.Result)
	}
	// An update that leaves the template alone is not asked about again.
	update := vmRequest(admissionv1.Update, `{"namespace":"b","name":"golden"}`)
	update.OldObject = update.Object
	update.Object.Raw = []byte(strings.Replace(string(update.Object.Raw), `"Halted"`, `"Always"`, 1))
	if resp := serve(t, kv, "/virtualmachines-validate", update); !resp.Allowed {
		t.Errorf("starting a VM whose template was admitted before: %+v", resp.Result)
	}
}
