package metrics

import "testing"

func TestResource(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/pods":                     "pods",
		"/api/v1/namespaces/ns/pods/p":     "pods",
		"/api/v1/namespaces/ns/pods":       "pods",
		"/api/v1/namespaces/ns":            "namespaces",
		"/api/v1/namespaces":               "namespaces",
		"/api/v1/nodes/n/status":           "nodes/status",
		"/api/v1/watch/namespaces/ns/pods": "pods",
		"/apis/kubevirt.io/v1/namespaces/ns/virtualmachineinstances/v/status": "virtualmachineinstances/status",
		"/apis/kubevirt.io/v1/virtualmachineinstances":                        "virtualmachineinstances",
		"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n":    "leases",
		"/apis":    "",
		"/healthz": "",
		"/api/v1":  "",
	} {
		if got := Resource(path); got != want {
			t.Errorf("Resource(%q) = %q, want %q", path, got, want)
		}
	}
}
