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
