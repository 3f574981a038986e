package subresource

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/storage/names"
	uploadv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/upload/v1beta1"

	"github.com/virtkube/virtkube/internal/cdi"
)

// CDI's upload API, upload.cdi.kubevirt.io: one resource, uploadtokenrequests,
// whose only verb is create. As CDI's own apiserver does it, nothing is
// stored: the create is answered with the request and a signed token in
// status.token (like a TokenReview), which is what KubeVirt's virtctl
// image-upload reads from the response.
const (
	UploadGroup           = "upload.cdi.kubevirt.io"
	uploadTokenResource   = "uploadtokenrequests"
	uploadTokenKind       = "UploadTokenRequest"
	maxUploadTokenRequest = 1 << 20
)

// UploadVersions are the versions of UploadGroup, as CDI serves them.
var UploadVersions = []string{"v1beta1"}

var uploadTokenGroupResource = schema.GroupResource{Group: UploadGroup, Resource: uploadTokenResource}

// uploadResources is the resource list of every version of UploadGroup.
var uploadResources = []metav1.APIResource{{
	Name: uploadTokenResource, SingularName: "uploadtokenrequest", Namespaced: true,
	Kind: uploadTokenKind, Verbs: metav1.Verbs{"create"}, ShortNames: []string{"utr", "utrs"},
}}

func uploadAPIGroup() metav1.APIGroup { return discoveryGroup(UploadGroup, UploadVersions) }

// uploadTokenMethodNotAllowed answers every verb but create on
// uploadtokenrequests as the apiserver answers a verb a resource lacks
// (e.g. `kubectl get uploadtokenrequests`: nothing is stored to list).
func uploadTokenMethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	verb, ok := map[string]string{
		http.MethodGet: "list", http.MethodDelete: "deletecollection", http.MethodPut: "update", http.MethodPatch: "patch",
	}[r.Method]
	if !ok {
		verb = strings.ToLower(r.Method)
	}
	writeError(w, apierrors.NewMethodNotSupported(uploadTokenGroupResource, verb))
}

// createUploadToken answers POST .../namespaces/{namespace}/uploadtokenrequests:
// the user must be allowed to create uploadtokenrequests in the namespace
// (asked here again, as an extension apiserver must not rely on the
// aggregator's own check), the body must be a
// valid UploadTokenRequest, and the answer is 201 with the request, named
// (generateName honoured), and status.token good for cdi.TokenLifetime.
func (s *Server) createUploadToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ns, version := r.PathValue("namespace"), r.PathValue("version")
	u, _ := genericrequest.UserFrom(ctx)
	attrs := authorizer.AttributesRecord{
		User: u, Verb: "create", Namespace: ns, APIGroup: UploadGroup, APIVersion: version,
		Resource: uploadTokenResource, ResourceRequest: true, Path: r.URL.Path,
	}
	decision, reason, err := s.Authorizer.Authorize(ctx, attrs)
	if decision != authorizer.DecisionAllow {
		if err != nil {
			reason = err.Error()
		}
		writeError(w, forbidden(attrs, reason))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeError(w, unsupportedMediaType(ct))
			return
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxUploadTokenRequest+1))
	if err != nil {
		writeError(w, apierrors.NewBadRequest(fmt.Sprintf("read request body: %v", err)))
		return
	}
	if len(body) > maxUploadTokenRequest {
		writeError(w, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d bytes", maxUploadTokenRequest)))
		return
	}
	utr, serr := decodeUploadTokenRequest(body, UploadGroup+"/"+version, ns)
	if serr != nil {
		writeError(w, serr)
		return
	}
	token, err := s.signUploadToken(ctx, ns, utr.Spec.PvcName)
	if err != nil {
		writeError(w, err)
		return
	}
	utr.Status.Token = token
	writeJSON(w, http.StatusCreated, utr)
}

// decodeUploadTokenRequest reads and checks the body of a create in
// namespace ns, and returns the object to answer with (namespace, name and
// creation time filled in, no token yet). A body that is not an
// UploadTokenRequest of apiVersion, or names another namespace, is a bad
// request; missing or malformed fields are Invalid with their field paths.
func decodeUploadTokenRequest(body []byte, apiVersion, ns string) (*uploadv1.UploadTokenRequest, *apierrors.StatusError) {
	utr := &uploadv1.UploadTokenRequest{}
	if err := json.Unmarshal(body, utr); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("decode %s: %v", uploadTokenKind, err))
	}
	switch {
	case utr.APIVersion != "" && utr.APIVersion != apiVersion:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s)", utr.APIVersion, apiVersion))
	case utr.Kind != "" && utr.Kind != uploadTokenKind:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the kind in the data (%s) does not match the expected kind (%s)", utr.Kind, uploadTokenKind))
	case utr.Namespace != "" && utr.Namespace != ns:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the namespace of the provided object (%s) does not match the namespace sent on the request (%s)", utr.Namespace, ns))
	}
	utr.APIVersion, utr.Kind, utr.Namespace = apiVersion, uploadTokenKind, ns
	// As the apiserver: the name is generated first, then checked.
	if utr.Name == "" && utr.GenerateName != "" {
		utr.Name = names.SimpleNameGenerator.GenerateName(utr.GenerateName)
	}
	errs := apivalidation.ValidateObjectMeta(&utr.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	pvc := field.NewPath("spec", "pvcName")
	if utr.Spec.PvcName == "" {
		errs = append(errs, field.Required(pvc, "the name of the PersistentVolumeClaim to upload to"))
	} else if msgs := validation.IsDNS1123Subdomain(utr.Spec.PvcName); len(msgs) > 0 {
		errs = append(errs, field.Invalid(pvc, utr.Spec.PvcName, strings.Join(msgs, "; ")))
	}
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(schema.GroupKind{Group: UploadGroup, Kind: uploadTokenKind}, utr.Name, errs)
	}
	utr.CreationTimestamp = metav1.Now()
	utr.Status = uploadv1.UploadTokenRequestStatus{}
	return utr, nil
}

// signUploadToken signs a token for claim ns/pvc with the key of Secret
// kubevirt/cdi-upload-token-key, the one the upload proxy verifies with.
func (s *Server) signUploadToken(ctx context.Context, ns, pvc string) (string, error) {
	if s.UploadTokenKey == nil {
		return "", apierrors.NewServiceUnavailable("upload tokens are not served by this virt-api: it has no signing key")
	}
	key, err := s.UploadTokenKey(ctx)
	if err != nil {
		// The Secret's own NotFound or Forbidden would read as if the
		// user's request named it.
		return "", apierrors.NewServiceUnavailable(fmt.Sprintf("upload token signing key: %v", err))
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	token, err := cdi.SignToken(key, cdi.TokenClaims{Namespace: ns, PVC: pvc, Expires: now().Add(cdi.TokenLifetime).Unix()})
	if err != nil {
		return "", apierrors.NewInternalError(fmt.Errorf("sign upload token: %w", err))
	}
	return token, nil
}

func unsupportedMediaType(contentType string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType, Reason: metav1.StatusReasonUnsupportedMediaType,
		Message: fmt.Sprintf("the body of the request was in an unknown format (%s); accepted: application/json", contentType),
	}}
}
