package subresource

import (
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/virtkube/virtkube/internal/version"
)

// resources are the subresources KubeVirt lists in its discovery document,
// each with the verb its clients use (PUT is update, GET is get), which is
// also the verb RBAC rules must grant.
var resources = []metav1.APIResource{
	{Name: "virtualmachineinstances/vnc", Namespaced: true, Verbs: metav1.Verbs{"get"}},
	{Name: "virtualmachineinstances/console", Namespaced: true, Verbs: metav1.Verbs{"get"}},
	{Name: "virtualmachineinstances/portforward", Namespaced: true, Verbs: metav1.Verbs{"get"}},
	{Name: "virtualmachineinstances/pause", Namespaced: true, Verbs: metav1.Verbs{"update"}},
	{Name: "virtualmachineinstances/unpause", Namespaced: true, Verbs: metav1.Verbs{"update"}},
	{Name: "virtualmachineinstances/guestosinfo", Namespaced: true, Verbs: metav1.Verbs{"get"}},
	{Name: "virtualmachineinstances/userlist", Namespaced: true, Verbs: metav1.Verbs{"get"}},
	{Name: "virtualmachineinstances/filesystemlist", Namespaced: true, Verbs: metav1.Verbs{"get"}},
	{Name: "virtualmachines/start", Namespaced: true, Verbs: metav1.Verbs{"update"}},
	{Name: "virtualmachines/stop", Namespaced: true, Verbs: metav1.Verbs{"update"}},
	{Name: "virtualmachines/restart", Namespaced: true, Verbs: metav1.Verbs{"update"}},
	{Name: "virtualmachines/migrate", Namespaced: true, Verbs: metav1.Verbs{"update"}},
	{Name: "virtualmachines/portforward", Namespaced: true, Verbs: metav1.Verbs{"get"}},
}

// discoveryGroup is the discovery document of group served in versions,
// the first preferred.
func discoveryGroup(group string, versions []string) metav1.APIGroup {
	g := metav1.APIGroup{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "APIGroup"}, Name: group}
	for _, v := range versions {
		g.Versions = append(g.Versions, metav1.GroupVersionForDiscovery{GroupVersion: group + "/" + v, Version: v})
	}
	g.PreferredVersion = g.Versions[0]
	return g
}

func apiGroup() metav1.APIGroup { return discoveryGroup(Group, Versions) }

// serveGroupList answers /apis with both groups served here. The
// aggregator asks it first for the aggregated discovery format; a plain
// APIGroupList makes it fall back to each version's resource list, which is
// all these groups have.
func serveGroupList(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, metav1.APIGroupList{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "APIGroupList"},
		Groups:   []metav1.APIGroup{apiGroup(), uploadAPIGroup()},
	})
}

// serveGroupDiscovery answers /apis/<group> with its discovery document.
func serveGroupDiscovery(g metav1.APIGroup) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, g) }
}

// serveResources answers /apis/<group>/{version} with the resources of
// group, the same in every version served.
func serveResources(group string, list []metav1.APIResource) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, metav1.APIResourceList{
			TypeMeta:     metav1.TypeMeta{APIVersion: "v1", Kind: "APIResourceList"},
			GroupVersion: group + "/" + r.PathValue("version"),
			APIResources: list,
		})
	}
}

// serveVersion answers KubeVirt's version document; `virtctl version`
// prints it as the server version.
func serveVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, version.Get())
}

func serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok"))
}

// serveOpenAPIV2 answers the aggregator's OpenAPI download with a valid,
// pathless document. The aggregator merges every APIService's spec; a 404
// here it logs as an error and retries with back-off forever. Subresources
// have no schema of their own (their bodies are kubevirt.io options), so
// there is nothing more to publish.
func serveOpenAPIV2(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"swagger": "2.0",
		"info":    map[string]string{"title": "KubeVirt subresources API", "version": version.Version},
		"paths":   map[string]any{},
	})
}

// serveOpenAPIV3 answers the aggregator's OpenAPI v3 discovery with no
// group versions. A 404 would make the aggregator publish the v2 document
// converted, as a schema for these groups with no paths; kubectl create
// (--validate=strict) then finds the group but no operation for
// UploadTokenRequest, falls back to asking whether it is a CRD, and a user
// who may not list CRDs is refused before the request is even sent. With no
// schema at all, kubectl validates nothing client-side and sends it.
func serveOpenAPIV3(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"paths": map[string]any{}})
}
