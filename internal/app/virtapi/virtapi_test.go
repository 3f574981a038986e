package virtapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/virtkube/virtkube/internal/bootstrap"
)

// serve runs one AdmissionReview through the mux with the given KubeVirt CR
// (nil: none) and returns the response.
func serve(t *testing.T, kv *virtv1.KubeVirt, path string, req admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	scheme, err := bootstrap.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(scheme)
	if kv != nil {
		b = b.WithObjects(kv)
	}
	mux := newMux(&configSource{reader: b.Build()}, denyAll, logr.Discard())
	req.UID = types.UID("uid-1")
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req,
	})
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &review); err != nil || review.Response == nil {
		t.Fatalf("no AdmissionReview back (%v): %s", err, w.Body.String())
	}
	if review.Response.UID != req.UID {
		t.Errorf("response uid = %q, want the request's", review.Response.UID)
	}
	return review.Response
}

func vmiRequest(op admissionv1.Operation, spec string) admissionv1.AdmissionRequest {
	return admissionv1.AdmissionRequest{
		Kind:      metav1.GroupVersionKind{Group: "kubevirt.io", Version: "v1", Kind: "VirtualMachineInstance"},
		Resource:  metav1.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachineinstances"},
		Name:      "bad",
		Namespace: "default",
		Operation: op,
		Object:    runtime.RawExtension{Raw: []byte(`{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineInstance","metadata":{"name":"bad"},"spec":` + spec + `}`)},
	}
}

const hostDiskSpec = `{"domain":{"resources":{"requests":{"memory":"64Mi"}},"devices":{"disks":[{"name":"hd"}]}},
	"volumes":[{"name":"hd","hostDisk":{"path":"/data/disk.img","type":"Disk"}}]}`

func TestValidatingWebhookRefusesLikeTheAPIServer(t *testing.T) {
	resp := serve(t, nil, "/virtualmachineinstances-validate-create",
		vmiRequest(admissionv1.Create, `{"domain":{"resources":{"requests":{"memory":"64Mi"}},"devices":{"disks":[{"name":"data"}]}}}`))
	if resp.Allowed || resp.Result == nil {
		t.Fatalf("allowed a disk without a volume: %+v", resp)
	}
	s := resp.Result
	if s.Code != http.StatusUnprocessableEntity || s.Reason != metav1.StatusReasonInvalid {
		t.Errorf("status %d %s, want 422 Invalid", s.Code, s.Reason)
	}
	if !strings.Contains(s.Message, `VirtualMachineInstance.kubevirt.io "bad" is invalid: spec.domain.devices.disks[0].name`) {
		t.Errorf("message = %q, want the API server's shape with the field path", s.Message)
	}
	if s.Details == nil || len(s.Details.Causes) != 1 || s.Details.Causes[0].Field != "spec.domain.devices.disks[0].name" {
		t.Errorf("causes = %+v, want one on spec.domain.devices.disks[0].name", s.Details)
	}
}

func TestValidatingWebhookReadsGatesFromTheCR(t *testing.T) {
	resp := serve(t, nil, "/virtualmachineinstances-validate-create", vmiRequest(admissionv1.Create, hostDiskSpec))
	if resp.Allowed || !strings.Contains(resp.Result.Message, "HostDisk feature gate is not enabled") {
		t.Errorf("without a gate: allowed=%v %v", resp.Allowed, resp.Result)
	}
	kv := &virtv1.KubeVirt{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kubevirt", Name: "kubevirt"},
		Spec: virtv1.KubeVirtSpec{Configuration: virtv1.KubeVirtConfiguration{
			DeveloperConfiguration: &virtv1.DeveloperConfiguration{FeatureGates: []string{"HardDisk"}},
		}},
	}
	resp = serve(t, kv, "/virtualmachineinstances-validate-create", vmiRequest(admissionv1.Create, hostDiskSpec))
	if !resp.Allowed || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], `spell it "HostDisk"`) {
		t.Errorf("with HardDisk: allowed=%v warnings=%q, want allowed with a spelling warning", resp.Allowed, resp.Warnings)
	}
}

func TestMutatingWebhookPatches(t *testing.T) {
	resp := serve(t, nil, "/virtualmachineinstances-mutate", vmiRequest(admissionv1.Create, `{"domain":{"devices":{}}}`))
	if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response %+v, want an allowed JSON patch", resp)
	}
	if !strings.Contains(string(resp.Patch), `"/spec/domain/machine"`) || !strings.Contains(string(resp.Patch), `"q35"`) {
		t.Errorf("patch does not set the machine type: %s", resp.Patch)
	}

	resp = serve(t, &virtv1.KubeVirt{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kubevirt", Name: "kubevirt"},
		Spec: virtv1.KubeVirtSpec{Configuration: virtv1.KubeVirtConfiguration{
			NetworkConfiguration: &virtv1.NetworkConfiguration{NetworkInterface: "slirp"},
		}},
	}, "/virtualmachineinstances-mutate", vmiRequest(admissionv1.Create, `{"domain":{"devices":{}}}`))
	if resp.Allowed || resp.Result.Code != http.StatusUnprocessableEntity || !strings.Contains(resp.Result.Message, "defaultNetworkInterface") {
		t.Errorf("an unsupported default binding: %+v, want 422 naming the CR field", resp.Result)
	}
}

func TestHealthz(t *testing.T) {
	w := httptest.NewRecorder()
	newMux(&configSource{}, denyAll, logr.Discard()).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if w.Code != http.StatusOK || w.Body.String() != "ok" {
		t.Errorf("/healthz = %d %q", w.Code, w.Body.String())
	}
}

func TestWebhookConfigurations(t *testing.T) {
	mutator, validator := webhookConfigurations(Target{URL: "https://127.0.0.1:1234", CABundle: []byte("ca")})
	if mutator.Name != "virt-api-mutator" || validator.Name != "virt-api-validator" {
		t.Errorf("names %s, %s", mutator.Name, validator.Name)
	}
	if len(mutator.Webhooks) != 3 || len(validator.Webhooks) != 5 {
		t.Fatalf("%d mutating and %d validating webhooks, want 3 and 5", len(mutator.Webhooks), len(validator.Webhooks))
	}
	resources := map[string]bool{}
	for _, w := range validator.Webhooks {
		if *w.FailurePolicy != admissionregv1.Fail || *w.SideEffects != admissionregv1.SideEffectClassNone ||
			strings.Join(w.AdmissionReviewVersions, ",") != "v1" || string(w.ClientConfig.CABundle) != "ca" {
			t.Errorf("%s: failurePolicy %s sideEffects %s versions %v", w.Name, *w.FailurePolicy, *w.SideEffects, w.AdmissionReviewVersions)
		}
		if w.ClientConfig.URL == nil || !strings.HasPrefix(*w.ClientConfig.URL, "https://127.0.0.1:1234/") || w.ClientConfig.Service != nil {
			t.Errorf("%s: client config %+v, want a URL on the target", w.Name, w.ClientConfig)
		}
		for _, r := range w.Rules {
			resources[r.Resources[0]] = true
			if want := map[bool]string{true: "cdi.kubevirt.io", false: "kubevirt.io"}[r.Resources[0] == "datavolumes"]; r.APIGroups[0] != want {
				t.Errorf("%s: group %v", w.Name, r.APIGroups)
			}
		}
	}
	for _, r := range []string{"virtualmachineinstances", "virtualmachines", "virtualmachineinstancereplicasets", "datavolumes"} {
		if !resources[r] {
			t.Errorf("no validating webhook for %s", r)
		}
	}

	port := int32(443)
	mutator, _ = webhookConfigurations(Target{Service: &admissionregv1.ServiceReference{Namespace: "kubevirt", Name: "virt-api", Port: &port}, CABundle: []byte("ca")})
	cc := mutator.Webhooks[0].ClientConfig
	if cc.URL != nil || cc.Service == nil || cc.Service.Name != "virt-api" || *cc.Service.Path != "/virtualmachineinstances-mutate" {
		t.Errorf("service client config %+v", cc)
	}
}

// Registering again replaces the webhooks (new port, new CA) rather than
// adding objects.
func TestRegisterUpdatesInPlace(t *testing.T) {
	ctx := context.Background()
	c := k8sfake.NewClientset()
	if err := Register(ctx, c, Target{URL: "https://127.0.0.1:1111", CABundle: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	if err := Register(ctx, c, Target{URL: "https://127.0.0.1:2222", CABundle: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	ms, _ := c.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	vs, _ := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if len(ms.Items) != 1 || len(vs.Items) != 1 {
		t.Fatalf("%d mutating and %d validating configurations, want one each", len(ms.Items), len(vs.Items))
	}
	for _, w := range vs.Items[0].Webhooks {
		if !strings.HasPrefix(*w.ClientConfig.URL, "https://127.0.0.1:2222/") || string(w.ClientConfig.CABundle) != "new" {
			t.Errorf("%s still points at %s with CA %q", w.Name, *w.ClientConfig.URL, w.ClientConfig.CABundle)
		}
	}
	if err := Register(ctx, c, Target{CABundle: []byte("ca")}); err == nil {
		t.Error("Register accepted a target with neither URL nor Service")
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Addr: ":8443", CertFile: "c", KeyFile: "k"}, ""},
		{Options{CertFile: "c", KeyFile: "k"}, "--address"},
		{Options{Addr: ":8443", CertFile: "c"}, "--tls-key-file"},
	} {
		err := tc.o.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}
