package bootstrap

import (
	"slices"
	"strings"
	"testing"
)

// The ClusterRoles carry KubeVirt's names and aggregation labels, and the
// subresource rules virt-api's authorization asks about.
func TestClusterRoles(t *testing.T) {
	roles, err := ClusterRoles()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"kubevirt.io:admin":     "rbac.authorization.k8s.io/aggregate-to-admin",
		"kubevirt.io:edit":      "rbac.authorization.k8s.io/aggregate-to-edit",
		"kubevirt.io:view":      "rbac.authorization.k8s.io/aggregate-to-view",
		"cdi.kubevirt.io:admin": "rbac.authorization.k8s.io/aggregate-to-admin",
		"cdi.kubevirt.io:edit":  "rbac.authorization.k8s.io/aggregate-to-edit",
		"cdi.kubevirt.io:view":  "rbac.authorization.k8s.io/aggregate-to-view",
	}
	if len(roles) != len(want) {
		t.Fatalf("%d roles, want %d", len(roles), len(want))
	}
	for _, r := range roles {
		label, ok := want[r.Name]
		if !ok || r.Labels[label] != "true" {
			t.Errorf("%s: labels %v, want %s", r.Name, r.Labels, label)
		}
		grantsIn := func(group, verb, resource string) bool {
			for _, rule := range r.Rules {
				if slices.Contains(rule.APIGroups, group) && slices.Contains(rule.Verbs, verb) && slices.Contains(rule.Resources, resource) {
					return true
				}
			}
			return false
		}
		if strings.HasPrefix(r.Name, "cdi.kubevirt.io:") {
			// virtctl image-upload asks virt-api for a token.
			user := r.Name != "cdi.kubevirt.io:view"
			if grantsIn("upload.cdi.kubevirt.io", "create", "uploadtokenrequests") != user {
				t.Errorf("%s grants create uploadtokenrequests: %v, want %v", r.Name, !user, user)
			}
			continue
		}
		grants := func(verb, resource string) bool { return grantsIn("subresources.kubevirt.io", verb, resource) }
		user := r.Name != "kubevirt.io:view"
		for _, p := range []struct{ verb, resource string }{
			{"update", "virtualmachines/start"}, {"update", "virtualmachines/stop"}, {"update", "virtualmachines/restart"},
			{"get", "virtualmachineinstances/console"}, {"get", "virtualmachineinstances/vnc"},
			{"update", "virtualmachineinstances/pause"}, {"update", "virtualmachineinstances/unpause"},
		} {
			if grants(p.verb, p.resource) != user {
				t.Errorf("%s grants %s %s: %v, want %v", r.Name, p.verb, p.resource, !user, user)
			}
		}
	}
}
