package hostpath

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// documents splits a multi-document manifest and decodes each strictly into
// the type its kind names.
func documents(t *testing.T, body []byte) map[string][]any {
	t.Helper()
	out := map[string][]any{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(body)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		var obj any
		switch tm.Kind {
		case "Namespace":
			obj = &corev1.Namespace{}
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "ClusterRole":
			obj = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			obj = &rbacv1.ClusterRoleBinding{}
		case "DaemonSet":
			obj = &appsv1.DaemonSet{}
		case "HostPathProvisioner":
			obj = &unstructured.Unstructured{}
		default:
			t.Fatalf("unexpected kind %q", tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s: %v", tm.Kind, err)
		}
		out[tm.Kind] = append(out[tm.Kind], obj)
	}
}

// The DaemonSet runs the provisioner as the ServiceAccount the ClusterRole
// is bound to, with its node's name, and mounts every pool path of the
// seed's CR (and its default pool) at the node's path.
func TestProvisionerManifests(t *testing.T) {
	docs := documents(t, Provisioner)
	for kind, n := range map[string]int{"Namespace": 1, "ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1, "DaemonSet": 1} {
		if len(docs[kind]) != n {
			t.Fatalf("%d %s documents, want %d", len(docs[kind]), kind, n)
		}
	}
	ns := docs["Namespace"][0].(*corev1.Namespace)
	sa := docs["ServiceAccount"][0].(*corev1.ServiceAccount)
	role := docs["ClusterRole"][0].(*rbacv1.ClusterRole)
	binding := docs["ClusterRoleBinding"][0].(*rbacv1.ClusterRoleBinding)
	ds := docs["DaemonSet"][0].(*appsv1.DaemonSet)

	if sa.Namespace != ns.Name || ds.Namespace != ns.Name || ds.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("ServiceAccount %s/%s, DaemonSet in %s running as %s; want all in %s as the ServiceAccount",
			sa.Namespace, sa.Name, ds.Namespace, ds.Spec.Template.Spec.ServiceAccountName, ns.Name)
	}
	if binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 ||
		binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("ClusterRoleBinding %+v does not bind %s to %s/%s", binding, role.Name, sa.Namespace, sa.Name)
	}

	c := ds.Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Command[1:], []string{"hostpath-provisioner"}) {
		t.Errorf("command %v, want virtkube hostpath-provisioner", c.Command)
	}
	var nodeFromDownwardAPI bool
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			nodeFromDownwardAPI = true
		}
	}
	if !nodeFromDownwardAPI {
		t.Errorf("env %v: want NODE_NAME from spec.nodeName", c.Env)
	}
	mounted := map[string]bool{}
	for _, m := range c.VolumeMounts {
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == m.MountPath {
				mounted[m.MountPath] = true
			}
		}
	}
	var defaultPool string
	for _, a := range c.Args {
		if p, ok := strings.CutPrefix(a, "--default-pool-path="); ok {
			defaultPool = p
		}
	}
	pools := []string{defaultPool}
	example := documents(t, ExampleHostPathProvisioner)["HostPathProvisioner"]
	if len(example) != 1 {
		t.Fatalf("%d HostPathProvisioners in the example, want 1", len(example))
	}
	list, _, _ := unstructured.NestedSlice(example[0].(*unstructured.Unstructured).Object, "spec", "storagePools")
	for _, p := range list {
		pools = append(pools, p.(map[string]any)["path"].(string))
	}
	for _, p := range pools {
		if !mounted[p] {
			t.Errorf("pool path %q is not a hostPath volume mounted at the same path (mounted: %v)", p, mounted)
		}
	}
}
