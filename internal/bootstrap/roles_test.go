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
		"kubevirt.io:admin":             "rbac.authorization.k8s.io/aggregate-to-admin",
		"kubevirt.io:edit":              "rbac.authorization.k8s.io/aggregate-to-edit",
		"kubevirt.io:view":              "rbac.authorization.k8s.io/aggregate-to-view",
		"cdi.kubevirt.io:admin":         "rbac.authorization.k8s.io/aggregate-to-admin",
		"cdi.kubevirt.io:edit":          "rbac.authorization.k8s.io/aggregate-to-edit",
		"cdi.kubevirt.io:view":          "rbac.authorization.k8s.io/aggregate-to-view",
		"cdi.kubevirt.io:config-reader": "cdi.kubevirt.io",
	}
	if len(roles) != len(want) {
		t.Fatalf("%d roles, want %d", len(roles), len(want))
	}
	for _, r := range roles {
		label, ok := want[r.Name]
		if !ok || (r.Labels[label] != "true" && label != "cdi.kubevirt.io") {
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
		if r.Name == "cdi.kubevirt.io:config-reader" {
			// virtctl image-upload reads the upload proxy's URL.
			if !grantsIn("cdi.kubevirt.io", "get", "cdiconfigs") || len(r.Rules) != 1 {
				t.Errorf("%s: rules %+v, want only reading cdiconfigs", r.Name, r.Rules)
			}
			continue
		}
		if strings.HasPrefix(r.Name, "cdi.kubevirt.io:") {
			// virtctl image-upload asks virt-api for a token.
			user := r.Name != "cdi.kubevirt.io:view"
			if grantsIn("upload.cdi.kubevirt.io", "create", "uploadtokenrequests") != user {
				t.Errorf("%s grants create uploadtokenrequests: %v, want %v", r.Name, !user, user)
			}
			// The DataVolume webhook asks for this before a clone from
			// another namespace; CDI grants it in all three roles.
			if !grantsIn("cdi.kubevirt.io", "create", "datavolumes/source") {
				t.Errorf("%s does not grant create datavolumes/source", r.Name)
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

// Every authenticated user may read the CDIConfig (status.uploadProxyURL),
// as CDI's operator binds its config reader.
func TestConfigReaderBinding(t *testing.T) {
	bindings, err := ClusterRoleBindings()
	if err != nil {
		t.Fatal(err)
	}
	if len(bindings) != 1 {
		t.Fatalf("%d bindings, want 1", len(bindings))
	}
	b := bindings[0]
	if b.Name != "cdi.kubevirt.io:config-reader" || b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != "cdi.kubevirt.io:config-reader" {
		t.Errorf("binding %s -> %+v", b.Name, b.RoleRef)
	}
	if len(b.Subjects) != 1 || b.Subjects[0].Kind != "Group" || b.Subjects[0].Name != "system:authenticated" {
		t.Errorf("subjects %+v, want the group system:authenticated", b.Subjects)
	}
}
