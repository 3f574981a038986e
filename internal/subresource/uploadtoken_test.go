package subresource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	uploadv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/upload/v1beta1"

	"github.com/virtkube/virtkube/internal/cdi"
)

const utrPath = "/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/ns/uploadtokenrequests"

var testKey = bytes.Repeat([]byte{3}, 32)

func tokenServer(user string) *Server {
	return &Server{
		Authenticator:  fakeAuthn{user},
		Authorizer:     allowOnly("admin"),
		UploadTokenKey: func(context.Context) ([]byte, error) { return testKey, nil },
		Now:            func() time.Time { return time.Unix(1000, 0) },
	}
}

func post(s *Server, path, contentType, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	return w
}

// A create is answered at once, 201, with the object (named from
// generateName) and a token the upload proxy accepts for that claim.
func TestCreateUploadToken(t *testing.T) {
	for name, tc := range map[string]struct {
		body       string
		wantName   string
		namePrefix string
	}{
		"named": {
			body:     `{"apiVersion":"upload.cdi.kubevirt.io/v1beta1","kind":"UploadTokenRequest","metadata":{"name":"t1","namespace":"ns"},"spec":{"pvcName":"disk"}}`,
			wantName: "t1",
		},
		"generateName, no type or namespace": {
			body:       `{"metadata":{"generateName":"token-for-virtctl-"},"spec":{"pvcName":"disk"}}`,
			namePrefix: "token-for-virtctl-",
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := post(tokenServer("admin"), utrPath, "application/json", tc.body)
			if w.Code != http.StatusCreated {
				t.Fatalf("%d %s", w.Code, w.Body.String())
			}
			var got uploadv1.UploadTokenRequest
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.APIVersion != "upload.cdi.kubevirt.io/v1beta1" || got.Kind != "UploadTokenRequest" || got.Namespace != "ns" || got.Spec.PvcName != "disk" {
				t.Errorf("answer %+v", got)
			}
			if tc.wantName != "" && got.Name != tc.wantName {
				t.Errorf("name %q, want %q", got.Name, tc.wantName)
			}
			if tc.namePrefix != "" && (!strings.HasPrefix(got.Name, tc.namePrefix) || len(got.Name) <= len(tc.namePrefix)) {
				t.Errorf("name %q, want %q and a suffix", got.Name, tc.namePrefix)
			}
			claims, err := cdi.VerifyToken(testKey, got.Status.Token, time.Unix(1000, 0))
			if err != nil || claims.Namespace != "ns" || claims.PVC != "disk" || claims.Expires != 1000+int64(cdi.TokenLifetime/time.Second) {
				t.Errorf("token %q: %+v, %v", got.Status.Token, claims, err)
			}
		})
	}
}

// Bad bodies are refused with the apiserver's codes and the field named.
func TestCreateUploadTokenRefused(t *testing.T) {
	for name, tc := range []struct {
		contentType, body string
		code              int32
		reason            metav1.StatusReason
		msg               []string
		field             string
	}{
		{body: `{"metadata":{"name":"t"},"spec":{}}`, code: 422, reason: metav1.StatusReasonInvalid,
			msg: []string{`UploadTokenRequest.upload.cdi.kubevirt.io "t" is invalid`, "spec.pvcName: Required value"}, field: "spec.pvcName"},
		{body: `{"metadata":{"name":"t"},"spec":{"pvcName":"Not_A_Claim"}}`, code: 422, reason: metav1.StatusReasonInvalid,
			msg: []string{`spec.pvcName: Invalid value: "Not_A_Claim"`}, field: "spec.pvcName"},
		{body: `{"spec":{"pvcName":"disk"}}`, code: 422, reason: metav1.StatusReasonInvalid,
			msg: []string{"metadata.name: Required value: name or generateName is required"}, field: "metadata.name"},
		{body: `{"metadata":{"name":"t","namespace":"other"},"spec":{"pvcName":"disk"}}`, code: 400, reason: metav1.StatusReasonBadRequest,
			msg: []string{"namespace of the provided object (other) does not match the namespace sent on the request (ns)"}},
		{body: `{"apiVersion":"cdi.kubevirt.io/v1beta1","metadata":{"name":"t"},"spec":{"pvcName":"disk"}}`, code: 400, reason: metav1.StatusReasonBadRequest,
			msg: []string{"API version in the data (cdi.kubevirt.io/v1beta1)"}},
		{body: `{"kind":"DataVolume","metadata":{"name":"t"},"spec":{"pvcName":"disk"}}`, code: 400, reason: metav1.StatusReasonBadRequest,
			msg: []string{"kind in the data (DataVolume)"}},
		{body: `{"metadata":`, code: 400, reason: metav1.StatusReasonBadRequest, msg: []string{"decode UploadTokenRequest"}},
		{contentType: "application/vnd.kubernetes.protobuf", body: "x", code: 415, reason: metav1.StatusReasonUnsupportedMediaType,
			msg: []string{"application/json"}},
	} {
		ct := tc.contentType
		if ct == "" {
			ct = "application/json"
		}
		st := status(t, post(tokenServer("admin"), utrPath, ct, tc.body))
		if st.Code != tc.code || st.Reason != tc.reason {
			t.Errorf("%d %s: %d %s %q, want %d %s", name, tc.body, st.Code, st.Reason, st.Message, tc.code, tc.reason)
		}
		for _, m := range tc.msg {
			if !strings.Contains(st.Message, m) {
				t.Errorf("%d %s: message %q, want it to contain %q", name, tc.body, st.Message, m)
			}
		}
		if tc.field != "" && (st.Details == nil || len(st.Details.Causes) == 0 || st.Details.Causes[0].Field != tc.field) {
			t.Errorf("%d %s: details %+v, want a cause for %s", name, tc.body, st.Details, tc.field)
		}
	}
}

// Only a user RBAC allows to create uploadtokenrequests gets a token; other
// verbs, versions and a missing key get the apiserver's answers.
func TestUploadTokenAuthorizationAndVerbs(t *testing.T) {
	const body = `{"metadata":{"name":"t"},"spec":{"pvcName":"disk"}}`
	var asked authorizer.Attributes
	s := tokenServer("bob")
	s.Authorizer = authorizer.AuthorizerFunc(func(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
		asked = a
		return authorizer.DecisionNoOpinion, "", nil
	})
	st := status(t, post(s, utrPath, "application/json", body))
	if st.Code != http.StatusForbidden || !strings.Contains(st.Message,
		`User "bob" cannot create resource "uploadtokenrequests" in API group "upload.cdi.kubevirt.io" in the namespace "ns"`) {
		t.Errorf("bob: %d %q", st.Code, st.Message)
	}
	if asked == nil || asked.GetVerb() != "create" || asked.GetAPIGroup() != UploadGroup || asked.GetResource() != "uploadtokenrequests" ||
		asked.GetNamespace() != "ns" || asked.GetSubresource() != "" || !asked.IsResourceRequest() {
		t.Errorf("asked RBAC for %+v", asked)
	}

	if st := status(t, post(tokenServer(""), utrPath, "application/json", body)); st.Code != http.StatusUnauthorized {
		t.Errorf("unauthenticated: %d", st.Code)
	}
	if st := status(t, serve(tokenServer("admin"), "GET", utrPath)); st.Code != http.StatusMethodNotAllowed || !strings.Contains(st.Message, "list is not supported") {
		t.Errorf("list: %d %q, want 405, list not supported", st.Code, st.Message)
	}
	if st := status(t, post(tokenServer("admin"), strings.Replace(utrPath, "v1beta1", "v1alpha9", 1), "application/json", body)); st.Code != http.StatusNotFound {
		t.Errorf("unknown version: %d", st.Code)
	}
	noKey := tokenServer("admin")
	noKey.UploadTokenKey = func(context.Context) ([]byte, error) {
		return nil, errors.New(`secrets "cdi-upload-token-key" not found`)
	}
	if st := status(t, post(noKey, utrPath, "application/json", body)); st.Code != http.StatusServiceUnavailable || !strings.Contains(st.Message, "signing key") {
		t.Errorf("no key: %d %q, want 503 naming the signing key", st.Code, st.Message)
	}
}

// Discovery lists uploadtokenrequests with create only, so kubectl and
// client-go map the kind, and /apis names both groups.
func TestUploadDiscovery(t *testing.T) {
	s := tokenServer("bob")
	var list metav1.APIResourceList
	w := serve(s, "GET", "/apis/upload.cdi.kubevirt.io/v1beta1")
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || list.GroupVersion != "upload.cdi.kubevirt.io/v1beta1" || len(list.APIResources) != 1 {
		t.Fatalf("resource list: %d %s", w.Code, w.Body.String())
	}
	r := list.APIResources[0]
	if r.Name != "uploadtokenrequests" || r.Kind != "UploadTokenRequest" || !r.Namespaced || len(r.Verbs) != 1 || r.Verbs[0] != "create" {
		t.Errorf("resource %+v", r)
	}
	var g metav1.APIGroup
	w = serve(s, "GET", "/apis/upload.cdi.kubevirt.io")
	if err := json.Unmarshal(w.Body.Bytes(), &g); err != nil || g.Name != UploadGroup || g.PreferredVersion.Version != "v1beta1" {
		t.Errorf("group: %d %s", w.Code, w.Body.String())
	}
	var groups metav1.APIGroupList
	w = serve(s, "GET", "/apis")
	if err := json.Unmarshal(w.Body.Bytes(), &groups); err != nil || len(groups.Groups) != 2 || groups.Groups[1].Name != UploadGroup {
		t.Errorf("/apis: %s", w.Body.String())
	}
}
