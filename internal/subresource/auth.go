package subresource

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/request/headerrequest"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/apiserver/pkg/server/options"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// The ConfigMap in which kube-apiserver publishes how it authenticates to
// extension apiservers: the front-proxy CA, the allowed client names and
// the header names.
const (
	authConfigMapNamespace = metav1.NamespaceSystem
	authConfigMapName      = "extension-apiserver-authentication"
)

// NewAuthenticator trusts the kube-apiserver's aggregator the way every
// extension apiserver does: a client certificate signed by the
// requestheader CA with an allowed common name, whose X-Remote-User,
// X-Remote-Group and X-Remote-Extra-* headers then name the user. The CA,
// names and headers are read from extension-apiserver-authentication and
// followed while ctx lives, so a rotated front-proxy CA is picked up.
func NewAuthenticator(ctx context.Context, c kubernetes.Interface) (authenticator.Request, error) {
	ca, err := dynamiccertificates.NewDynamicCAFromConfigMapController("requestheader-client-ca",
		authConfigMapNamespace, authConfigMapName, "requestheader-client-ca-file", c)
	if err != nil {
		return nil, err
	}
	headers := headerrequest.NewRequestHeaderAuthRequestController(authConfigMapName, authConfigMapNamespace, c,
		"requestheader-username-headers", "requestheader-uid-headers", "requestheader-group-headers",
		"requestheader-extra-headers-prefix", "requestheader-allowed-names")
	// The CA controller reads through its own informer: start it, then
	// wait until it holds the CA (the apiserver writes the ConfigMap
	// shortly after it starts serving), so no request of the aggregator is
	// turned away as unauthenticated in the meantime.
	go ca.Run(ctx, 1)
	err = pollUntil(ctx, time.Minute, func() error {
		if _, ok := ca.VerifyOptions(); !ok {
			return errors.New("no requestheader-client-ca-file yet")
		}
		return headers.RunOnce(ctx)
	})
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", authConfigMapNamespace, authConfigMapName, err)
	}
	go headers.Run(ctx, 1)
	return headerrequest.NewDynamicVerifyOptionsSecure(ca.VerifyOptions,
		headerrequest.StringSliceProviderFunc(headers.AllowedClientNames),
		headerrequest.StringSliceProviderFunc(headers.UsernameHeaders),
		headerrequest.StringSliceProviderFunc(headers.UIDHeaders),
		headerrequest.StringSliceProviderFunc(headers.GroupHeaders),
		headerrequest.StringSliceProviderFunc(headers.ExtraHeaderPrefixes)), nil
}

// NewAuthorizer asks the apiserver (SubjectAccessReview) and caches the
// answers briefly, as delegated authorization in k8s.io/apiserver does.
func NewAuthorizer(c kubernetes.Interface) (authorizer.Authorizer, error) {
	return authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: c.AuthorizationV1(),
		AllowCacheTTL:             10 * time.Second,
		DenyCacheTTL:              5 * time.Second,
		WebhookRetryBackoff:       options.DefaultAuthWebhookRetryBackoff(),
	}.New()
}

func pollUntil(ctx context.Context, timeout time.Duration, try func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := try()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// authenticated lets only requests through that the authenticator
// recognises, with the user in their context.
func (s *Server) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, ok, err := s.Authenticator.AuthenticateRequest(r)
		if err != nil || !ok {
			if err != nil {
				klog.FromContext(r.Context()).V(2).Info("request not authenticated", "path", r.URL.Path, "err", err)
			}
			writeError(w, apierrors.NewUnauthorized("Unauthorized"))
			return
		}
		next.ServeHTTP(w, r.WithContext(genericrequest.WithUser(r.Context(), resp.User)))
	})
}

// authorized lets a subresource request through when the user may use the
// subresource on the named object.
func (s *Server) authorized(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, _ := genericrequest.UserFrom(r.Context())
		attrs, err := attributes(r.Method, r.URL.Path, u)
		if err != nil {
			writeError(w, apierrors.NewBadRequest(err.Error()))
			return
		}
		decision, reason, err := s.Authorizer.Authorize(r.Context(), attrs)
		if decision != authorizer.DecisionAllow {
			if err != nil {
				reason = err.Error()
			}
			writeError(w, forbidden(attrs, reason))
			return
		}
		next(w, r)
	}
}

// attributes is what a subresource request asks RBAC for, in the terms
// KubeVirt's rules use: e.g. PUT .../namespaces/ns/virtualmachines/vm1/start
// is verb update on virtualmachines/start of subresources.kubevirt.io.
func attributes(method, path string, u user.Info) (authorizer.AttributesRecord, error) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	// apis, group, version, namespaces, ns, resource, name, subresource[, ...]
	if len(parts) < 8 || parts[0] != "apis" || parts[1] != Group || parts[3] != "namespaces" {
		return authorizer.AttributesRecord{}, fmt.Errorf("%s is not a subresource path", path)
	}
	verb, ok := map[string]string{
		http.MethodGet: "get", http.MethodPut: "update", http.MethodPost: "create",
		http.MethodPatch: "patch", http.MethodDelete: "delete",
	}[method]
	if !ok {
		return authorizer.AttributesRecord{}, fmt.Errorf("method %s is not allowed on %s", method, path)
	}
	return authorizer.AttributesRecord{
		User:            u,
		Verb:            verb,
		Namespace:       parts[4],
		APIGroup:        Group,
		APIVersion:      parts[2],
		Resource:        parts[5],
		Name:            parts[6],
		Subresource:     parts[7],
		ResourceRequest: true,
		Path:            path,
	}, nil
}

// forbidden is the apiserver's own 403 wording, e.g. `virtualmachines.
// subresources.kubevirt.io "vm1" is forbidden: User "bob" cannot update
// resource "virtualmachines/start" in API group ... in the namespace "ns"`.
func forbidden(a authorizer.AttributesRecord, reason string) *apierrors.StatusError {
	name := "<anonymous>"
	if a.User != nil {
		name = a.User.GetName()
	}
	resource := a.Resource
	if a.Subresource != "" {
		resource += "/" + a.Subresource
	}
	msg := fmt.Sprintf("User %q cannot %s resource %q in API group %q in the namespace %q",
		name, a.Verb, resource, a.APIGroup, a.Namespace)
	if reason != "" {
		msg += ": " + reason
	}
	return apierrors.NewForbidden(schema.GroupResource{Group: a.APIGroup, Resource: a.Resource}, a.Name, fmt.Errorf("%s", msg))
}
