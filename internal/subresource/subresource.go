// Package subresource is virt-api's aggregated API, subresources.kubevirt.io,
// as KubeVirt serves it: the kube-apiserver proxies
// /apis/subresources.kubevirt.io/... here (see the APIService virt-api
// registers), after authenticating the user itself; this server trusts the
// user only through the aggregator's front-proxy client certificate and asks
// the apiserver whether that user may act (a SubjectAccessReview per
// request), so RBAC on e.g. virtualmachines/start decides, exactly as with
// KubeVirt.
//
// What it serves:
//   - discovery (/apis, the group, each version), /openapi/v2 and v3,
//     /version and /healthz;
//   - VM start, stop, restart: JSON patches on the VM that
//     internal/controller/vm acts on;
//   - VMI console, vnc and portforward (of a VMI, or of a VM's VMI):
//     websocket (plain.kubevirt.io) proxied to virt-handler on the VMI's
//     node over mutual TLS, which connects to the serial console, the VNC
//     server or a guest port;
//   - VMI pause and unpause: forwarded to virt-handler likewise;
//   - VMI guestosinfo, userlist and filesystemlist: KubeVirt's answer for a
//     guest agent that is not connected (virtkube has no agent channel);
//   - CDI's upload.cdi.kubevirt.io uploadtokenrequests (create only), behind
//     an APIService of its own, as CDI's apiserver serves it: the create is
//     answered with a signed upload token and nothing is stored (see
//     uploadtoken.go).
package subresource

import (
	"context"
	"net/http"
	"slices"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Group is the API group served here.
const Group = "subresources.kubevirt.io"

// Versions are the versions of Group, preferred first, as KubeVirt serves
// them.
var Versions = []string{"v1", "v1alpha3"}

// Server answers subresources.kubevirt.io requests.
type Server struct {
	// Client reads VMs, VMIs and Nodes and patches VMs, with virt-api's
	// own identity (the user's permission was checked before).
	Client client.Client
	// Authenticator recognises the aggregator's requests (front-proxy
	// certificate plus X-Remote-* headers); see NewAuthenticator.
	Authenticator authenticator.Request
	// Authorizer decides whether the user may use a subresource; see
	// NewAuthorizer.
	Authorizer authorizer.UnconditionalAuthorizer
	// Handlers reaches virt-handler on a VMI's node.
	Handlers *Handlers
	// UploadTokenKey returns the key upload tokens are signed with (the
	// upload proxy's, see cdi.TokenKeySecret); nil answers
	// uploadtokenrequests with 503.
	UploadTokenKey func(context.Context) ([]byte, error)
	// Now is the clock tokens expire by; nil is time.Now.
	Now func() time.Time
}

// Handler routes every path of the group. Everything needs an
// authenticated user; subresources of a named object also need RBAC
// permission for it.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /apis", serveGroupList)
	mux.HandleFunc("GET /apis/"+Group, serveGroupDiscovery(apiGroup()))
	mux.HandleFunc("GET /apis/"+Group+"/{version}", withVersion(serveResources(Group, resources)))
	mux.HandleFunc("GET /apis/"+Group+"/{version}/version", withVersion(serveVersion))
	mux.HandleFunc("GET /apis/"+Group+"/{version}/healthz", withVersion(serveHealthz))
	mux.HandleFunc("GET /openapi/v2", serveOpenAPIV2)
	mux.HandleFunc("GET /openapi/v3", serveOpenAPIV3)
	mux.HandleFunc("GET /apis/"+UploadGroup, serveGroupDiscovery(uploadAPIGroup()))
	mux.HandleFunc("GET /apis/"+UploadGroup+"/{version}", withUploadVersion(serveResources(UploadGroup, uploadResources)))
	const utrs = "/apis/" + UploadGroup + "/{version}/namespaces/{namespace}/" + uploadTokenResource
	mux.HandleFunc("POST "+utrs, withUploadVersion(s.createUploadToken))
	mux.HandleFunc(utrs, withUploadVersion(uploadTokenMethodNotAllowed))

	const vms = "/apis/" + Group + "/{version}/namespaces/{namespace}/virtualmachines/{name}/"
	const vmis = "/apis/" + Group + "/{version}/namespaces/{namespace}/virtualmachineinstances/{name}/"
	for _, r := range []struct {
		pattern string
		handle  http.HandlerFunc
	}{
		{"PUT " + vms + "start", vmVerb(s, s.start)},
		{"PUT " + vms + "stop", vmVerb(s, s.stop)},
		{"PUT " + vms + "restart", vmVerb(s, s.restart)},
		{"PUT " + vms + "migrate", vmVerb(s, s.migrate)},
		{"GET " + vms + "portforward/{port}", s.vmPortForward},
		{"GET " + vms + "portforward/{port}/{protocol}", s.vmPortForward},
		{"GET " + vmis + "console", s.console},
		{"GET " + vmis + "vnc", s.vnc},
		{"PUT " + vmis + "pause", s.pause},
		{"PUT " + vmis + "unpause", s.unpause},
		{"GET " + vmis + "guestosinfo", s.guestAgent},
		{"GET " + vmis + "userlist", s.guestAgent},
		{"GET " + vmis + "filesystemlist", s.guestAgent},
		{"GET " + vmis + "portforward/{port}", s.vmiPortForward},
		{"GET " + vmis + "portforward/{port}/{protocol}", s.vmiPortForward},
	} {
		mux.Handle(r.pattern, withVersion(s.authorized(r.handle)))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, notFound(r.URL.Path))
	})
	return s.authenticated(mux)
}

// withVersion answers 404 for a version of Group that is not served.
func withVersion(next http.HandlerFunc) http.HandlerFunc { return inVersions(Versions, next) }

// withUploadVersion answers 404 for a version of UploadGroup that is not
// served.
func withUploadVersion(next http.HandlerFunc) http.HandlerFunc {
	return inVersions(UploadVersions, next)
}

// inVersions runs next for a request whose {version} is one of versions
// and answers 404 to any other.
func inVersions(versions []string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !slices.Contains(versions, r.PathValue("version")) {
			writeError(w, notFound(r.URL.Path))
			return
		}
		next(w, r)
	}
}
