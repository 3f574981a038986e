package subresource

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/handler"
	"github.com/virtkube/virtkube/internal/version"
)

func TestAttributes(t *testing.T) {
	u := &user.DefaultInfo{Name: "alice"}
	for _, tc := range []struct {
		method, path string
		want         string // verb resource/subresource ns/name
		bad          bool
	}{
		{method: "PUT", path: "/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/vm1/start", want: "update virtualmachines/start ns/vm1 v1"},
		{method: "GET", path: "/apis/subresources.kubevirt.io/v1alpha3/namespaces/ns/virtualmachineinstances/v/console", want: "get virtualmachineinstances/console ns/v v1alpha3"},
		{method: "GET", path: "/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachineinstances/v/portforward/22/tcp", want: "get virtualmachineinstances/portforward ns/v v1"},
		{method: "GET", path: "/apis/subresources.kubevirt.io/v1/version", bad: true},
		{method: "GET", path: "/apis/kubevirt.io/v1/namespaces/ns/virtualmachines/vm1/start", bad: true},
		{method: "OPTIONS", path: "/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/vm1/start", bad: true},
	} {
		a, err := attributes(tc.method, tc.path, u)
		if tc.bad {
			if err == nil {
				t.Errorf("%s %s: attributes %+v, want an error", tc.method, tc.path, a)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %s: %v", tc.method, tc.path, err)
			continue
		}
		got := a.Verb + " " + a.Resource + "/" + a.Subresource + " " + a.Namespace + "/" + a.Name + " " + a.APIVersion
		if got != tc.want || a.APIGroup != Group || !a.ResourceRequest || a.User != u {
			t.Errorf("%s %s: %s (group %q), want %s", tc.method, tc.path, got, a.APIGroup, tc.want)
		}
	}
}

type fakeAuthn struct{ user string }

func (f fakeAuthn) AuthenticateRequest(*http.Request) (*authenticator.Response, bool, error) {
	if f.user == "" {
		return nil, false, nil
	}
	return &authenticator.Response{User: &user.DefaultInfo{Name: f.user}}, true, nil
}

// allowOnly allows one user everything.
func allowOnly(name string) authorizer.AuthorizerFunc {
	return func(_ context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
		if attrs.GetUser().GetName() == name {
			return authorizer.DecisionAllow, "", nil
		}
		return authorizer.DecisionNoOpinion, "", nil
	}
}

func serve(s *Server, method, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(method, path, nil))
	return w
}

func status(t *testing.T, w *httptest.ResponseRecorder) metav1.Status {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || st.Kind != "Status" {
		t.Fatalf("body is no Status (%v): %s", err, w.Body.String())
	}
	if int(st.Code) != w.Code {
		t.Errorf("Status code %d, HTTP code %d", st.Code, w.Code)
	}
	return st
}

func TestAuthenticationAndAuthorization(t *testing.T) {
	const start = "/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/vm1/start"

	w := serve(&Server{Authenticator: fakeAuthn{}, Authorizer: allowOnly("admin")}, "GET", "/apis/subresources.kubevirt.io/v1")
	if st := status(t, w); st.Code != http.StatusUnauthorized {
		t.Errorf("unauthenticated discovery: %d %s", st.Code, st.Message)
	}

	w = serve(&Server{Authenticator: fakeAuthn{"bob"}, Authorizer: allowOnly("admin")}, "PUT", start)
	st := status(t, w)
	if st.Code != http.StatusForbidden || st.Reason != metav1.StatusReasonForbidden ||
		!strings.Contains(st.Message, `User "bob" cannot update resource "virtualmachines/start" in API group "subresources.kubevirt.io" in the namespace "ns"`) {
		t.Errorf("forbidden start: %d %s %q", st.Code, st.Reason, st.Message)
	}

	// Discovery and version need no RBAC beyond being authenticated.
	w = serve(&Server{Authenticator: fakeAuthn{"bob"}, Authorizer: allowOnly("admin")}, "GET", "/apis/subresources.kubevirt.io/v1/version")
	var info version.Info
	if err := json.Unmarshal(w.Body.Bytes(), &info); w.Code != http.StatusOK || err != nil || info.GitVersion != version.Version || info.Platform == "" {
		t.Errorf("version: %d %s", w.Code, w.Body.String())
	}
}

func TestDiscovery(t *testing.T) {
	s := &Server{Authenticator: fakeAuthn{"bob"}, Authorizer: allowOnly("admin")}
	var list metav1.APIResourceList
	w := serve(s, "GET", "/apis/subresources.kubevirt.io/v1alpha3")
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || list.GroupVersion != "subresources.kubevirt.io/v1alpha3" || len(list.APIResources) == 0 {
		t.Errorf("resource list: %d %s", w.Code, w.Body.String())
	}
	for _, r := range list.APIResources {
		if !r.Namespaced || len(r.Verbs) != 1 {
			t.Errorf("%s: namespaced %v verbs %v", r.Name, r.Namespaced, r.Verbs)
		}
	}

	var groups metav1.APIGroupList
	w = serve(s, "GET", "/apis")
	if err := json.Unmarshal(w.Body.Bytes(), &groups); err != nil || len(groups.Groups) == 0 || groups.Groups[0].Name != Group ||
		groups.Groups[0].PreferredVersion.Version != "v1" || len(groups.Groups[0].Versions) != 2 {
		t.Errorf("/apis: %s", w.Body.String())
	}

	if st := status(t, serve(s, "GET", "/apis/subresources.kubevirt.io/v2")); st.Code != http.StatusNotFound {
		t.Errorf("unknown version: %d", st.Code)
	}
	var spec struct {
		Swagger string         `json:"swagger"`
		Paths   map[string]any `json:"paths"`
	}
	w = serve(s, "GET", "/openapi/v2")
	if err := json.Unmarshal(w.Body.Bytes(), &spec); err != nil || spec.Swagger != "2.0" || spec.Paths == nil {
		t.Errorf("/openapi/v2: %d %s", w.Code, w.Body.String())
	}
	var v3 struct {
		Paths map[string]any `json:"paths"`
	}
	w = serve(s, "GET", "/openapi/v3")
	if err := json.Unmarshal(w.Body.Bytes(), &v3); err != nil || w.Code != http.StatusOK || v3.Paths == nil || len(v3.Paths) != 0 {
		t.Errorf("/openapi/v3: %d %s, want 200 with no group versions (so kubectl skips client-side validation)", w.Code, w.Body.String())
	}
}

func TestVMIChecks(t *testing.T) {
	running := vmiIn(virtv1.Running)
	pausedVMI := vmiIn(virtv1.Running)
	pausedVMI.Status.Conditions = []virtv1.VirtualMachineInstanceCondition{{Type: virtv1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue}}
	probed := vmiIn(virtv1.Running)
	probed.Spec.LivenessProbe = &virtv1.Probe{}
	scheduled := vmiIn(virtv1.Scheduled)
	for _, tc := range []struct {
		name  string
		check vmiCheck
		vmi   *virtv1.VirtualMachineInstance
		code  int32
		msg   string
	}{
		{"console of a running VMI", streamable, running, 0, ""},
		{"console of a scheduled VMI", streamable, scheduled, 400, "Unable to connect to VirtualMachineInstance because phase is Scheduled instead of Running"},
		{"pause", pausable, running, 0, ""},
		{"pause not running", pausable, scheduled, 409, "VM is not running"},
		{"pause paused", pausable, pausedVMI, 409, "VMI is already paused"},
		{"pause with liveness probe", pausable, probed, 403, "Pausing VMIs with LivenessProbe is currently not supported"},
		{"unpause paused", unpausable, pausedVMI, 0, ""},
		{"unpause running", unpausable, running, 409, "VMI is not paused"},
		{"unpause not running", unpausable, scheduled, 409, "VMI is not running"},
	} {
		serr := tc.check(tc.vmi)
		switch {
		case tc.code == 0 && serr != nil:
			t.Errorf("%s: %v", tc.name, serr)
		case tc.code != 0 && (serr == nil || serr.Status().Code != tc.code || !strings.Contains(serr.Status().Message, tc.msg)):
			t.Errorf("%s: %v, want %d %q", tc.name, serr, tc.code, tc.msg)
		}
	}
}

// virt-handler publishes its address under the name virt-api reads.
func TestHandlerAddressAnnotation(t *testing.T) {
	if HandlerAddressAnnotation != handler.AddressAnnotation {
		t.Errorf("virt-api reads %q, virt-handler writes %q", HandlerAddressAnnotation, handler.AddressAnnotation)
	}
}

func TestHandlerError(t *testing.T) {
	for _, tc := range []struct {
		code   int
		body   string
		reason metav1.StatusReason
		msg    string
	}{
		{409, "VMI is already paused\n", metav1.StatusReasonConflict, "VMI is already paused"},
		{404, "", metav1.StatusReasonNotFound, "Not Found"},
		{409, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"busy","reason":"Conflict"}`, metav1.StatusReasonConflict, "busy"},
	} {
		err := handlerError(tc.code, []byte(tc.body))
		w := httptest.NewRecorder()
		writeError(w, err)
		st := status(t, w)
		if int(st.Code) != tc.code || st.Reason != tc.reason || st.Message != tc.msg {
			t.Errorf("handler %d %q: %d %s %q", tc.code, tc.body, st.Code, st.Reason, st.Message)
		}
	}
}
