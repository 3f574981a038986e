package cdi_test

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/virtkube/virtkube/deploy/cdi"
	"github.com/virtkube/virtkube/internal/app/virtkube"
	internalcdi "github.com/virtkube/virtkube/internal/cdi"
)

// manifest is uploadproxy.yaml's documents by kind.
type manifest struct {
	serviceAccounts     []*corev1.ServiceAccount
	clusterRoles        []*rbacv1.ClusterRole
	clusterRoleBindings []*rbacv1.ClusterRoleBinding
	roles               []*rbacv1.Role
	roleBindings        []*rbacv1.RoleBinding
	services            []*corev1.Service
	deployments         []*appsv1.Deployment
}

// decode splits body into its documents and decodes each strictly with the
// Kubernetes scheme; an unknown kind or field fails the test.
func decode(t *testing.T, body []byte) manifest {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	codec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var m manifest
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(body)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := codec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode %s: %v", doc, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			m.serviceAccounts = append(m.serviceAccounts, o)
		case *rbacv1.ClusterRole:
			m.clusterRoles = append(m.clusterRoles, o)
		case *rbacv1.ClusterRoleBinding:
			m.clusterRoleBindings = append(m.clusterRoleBindings, o)
		case *rbacv1.Role:
			m.roles = append(m.roles, o)
		case *rbacv1.RoleBinding:
			m.roleBindings = append(m.roleBindings, o)
		case *corev1.Service:
			m.services = append(m.services, o)
		case *appsv1.Deployment:
			m.deployments = append(m.deployments, o)
		default:
			t.Fatalf("unexpected kind %s", gvk)
		}
	}
}

// commentedArg is a flag the Deployment offers commented out.
var commentedArg = regexp.MustCompile(`(?m)^\s*#\s*- (--[a-z-]+=\S+)\s*$`)

// The Service publishes the proxy's HTTPS port on NodePort 31001; the
// Deployment runs `virtkube cdi-uploadproxy` with flags the real command
// accepts and validates (also the commented-out --upload-proxy-url), as the
// ServiceAccount the RBAC binds, with the certificate Secret mounted where
// the flags point and probes on /healthz over HTTPS.
func TestUploadProxyManifest(t *testing.T) {
	m := decode(t, cdi.UploadProxy)
	if len(m.serviceAccounts) != 1 || len(m.services) != 1 || len(m.deployments) != 1 ||
		len(m.clusterRoles) != 2 || len(m.clusterRoleBindings) != 2 || len(m.roles) != 1 || len(m.roleBindings) != 1 {
		t.Fatalf("documents: %d ServiceAccounts, %d Services, %d Deployments, %d ClusterRoles, %d ClusterRoleBindings, %d Roles, %d RoleBindings; want 1, 1, 1, 2, 2, 1, 1",
			len(m.serviceAccounts), len(m.services), len(m.deployments), len(m.clusterRoles), len(m.clusterRoleBindings), len(m.roles), len(m.roleBindings))
	}
	sa, svc, dep := m.serviceAccounts[0], m.services[0], m.deployments[0]
	const ns = "kubevirt"
	for kind, got := range map[string]string{"ServiceAccount": sa.Namespace, "Service": svc.Namespace, "Deployment": dep.Namespace,
		"Role": m.roles[0].Namespace, "RoleBinding": m.roleBindings[0].Namespace} {
		if got != ns {
			t.Errorf("%s in namespace %q, want %q", kind, got, ns)
		}
	}
	pod := dep.Spec.Template.Spec
	if pod.ServiceAccountName != sa.Name || sa.Name != "cdi-uploadproxy" {
		t.Errorf("Deployment runs as %q, ServiceAccount is %q; want both cdi-uploadproxy", pod.ServiceAccountName, sa.Name)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Command) != 2 || c.Command[1] != "cdi-uploadproxy" {
		t.Fatalf("command %v, want virtkube cdi-uploadproxy", c.Command)
	}

	// The args as the real command parses and validates them.
	args := slices.Clone(c.Args)
	for _, match := range commentedArg.FindAllSubmatch(cdi.UploadProxy, -1) {
		args = append(args, string(match[1]))
	}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--upload-proxy-url=") }) {
		t.Errorf("args %v: want a commented-out --upload-proxy-url to offer", args)
	}
	cmd, _, err := virtkube.NewCommand().Find(c.Command[1:])
	if err != nil || cmd.Name() != "cdi-uploadproxy" {
		t.Fatalf("no subcommand %v (%v)", c.Command[1:], err)
	}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("virtkube cdi-uploadproxy %v: %v", args, err)
	}
	if err := cmd.PreRunE(cmd, cmd.Flags().Args()); err != nil {
		t.Fatalf("virtkube cdi-uploadproxy %v: %v", args, err)
	}
	flag := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }

	// --listen, the container port, the probes and the Service agree.
	const port = 8443
	if got := flag("listen"); got != ":8443" {
		t.Errorf("--listen %q, want :%d", got, port)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != port {
		t.Errorf("container ports %+v, want %d", c.Ports, port)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port != intstr.FromInt32(port) {
			t.Errorf("%s probe %+v, want HTTPS GET /healthz on %d", name, p, port)
		}
	}
	if svc.Spec.Type != corev1.ServiceTypeNodePort || len(svc.Spec.Ports) != 1 {
		t.Fatalf("Service %s ports %+v, want one NodePort", svc.Spec.Type, svc.Spec.Ports)
	}
	if sp := svc.Spec.Ports[0]; sp.Port != 443 || sp.TargetPort != intstr.FromInt32(port) || sp.NodePort != 31001 {
		t.Errorf("Service port %d -> %s, nodePort %d; want 443 -> %d, nodePort 31001", sp.Port, sp.TargetPort.String(), sp.NodePort, port)
	}
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("Service selector %v does not select the pods (labels %v)", svc.Spec.Selector, dep.Spec.Template.Labels)
		}
	}
	if !strings.HasSuffix(flag("upload-proxy-url"), ":31001") {
		t.Errorf("--upload-proxy-url %q, want the NodePort 31001", flag("upload-proxy-url"))
	}

	// The certificate flags point into the mounted Secret
	// cdi-uploadproxy-certs.
	secretMount := ""
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "cdi-uploadproxy-certs" {
			for _, vm := range c.VolumeMounts {
				if vm.Name == v.Name {
					secretMount = vm.MountPath
				}
			}
		}
	}
	if secretMount == "" {
		t.Fatalf("Secret cdi-uploadproxy-certs is not mounted (volumes %v, mounts %v)", pod.Volumes, c.VolumeMounts)
	}
	for _, f := range []string{"tls-cert-file", "tls-private-key-file"} {
		if !strings.HasPrefix(flag(f), secretMount+"/") {
			t.Errorf("--%s %q is not in the mounted Secret at %s", f, flag(f), secretMount)
		}
	}

	// RBAC: exactly the proxy's requests, bound to its ServiceAccount.
	grants := func(rules []rbacv1.PolicyRule) []grant {
		var out []grant
		for _, r := range rules {
			names := r.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						for _, n := range names {
							out = append(out, grant{g, res, v, n})
						}
					}
				}
			}
		}
		slices.SortFunc(out, compareGrants)
		return out
	}
	wantClusterRoles := map[string][]grant{
		"virtkube:cdi-uploadproxy": {
			{"", "persistentvolumeclaims", "get", ""},
			{"", "pods", "get", ""},
			{"cdi.kubevirt.io", "datavolumes/status", "patch", ""},
		},
		"virtkube:cdi-uploadproxy:publish-url": {
			{"cdi.kubevirt.io", "cdiconfigs", "create", ""},
			{"cdi.kubevirt.io", "cdiconfigs", "get", internalcdi.ConfigName},
			{"cdi.kubevirt.io", "cdiconfigs/status", "update", internalcdi.ConfigName},
		},
	}
	for _, want := range wantClusterRoles {
		slices.SortFunc(want, compareGrants)
	}
	for _, r := range m.clusterRoles {
		if got, want := grants(r.Rules), wantClusterRoles[r.Name]; !slices.Equal(got, want) {
			t.Errorf("ClusterRole %s grants %v, want %v", r.Name, got, want)
		}
	}
	role := m.roles[0]
	if got, want := grants(role.Rules), []grant{{"", "secrets", "get", internalcdi.TokenKeySecret}}; !slices.Equal(got, want) {
		t.Errorf("Role %s grants %v, want %v", role.Name, got, want)
	}
	if got := flag("token-key-namespace"); got != role.Namespace {
		t.Errorf("--token-key-namespace %q, but the Role on the key is in %q", got, role.Namespace)
	}
	bound := map[string]bool{}
	for _, b := range m.clusterRoleBindings {
		if len(b.Subjects) == 1 && b.Subjects[0].Kind == rbacv1.ServiceAccountKind && b.Subjects[0].Name == sa.Name && b.Subjects[0].Namespace == sa.Namespace && b.RoleRef.Kind == "ClusterRole" {
			bound["ClusterRole/"+b.RoleRef.Name] = true
		}
	}
	for _, b := range m.roleBindings {
		if len(b.Subjects) == 1 && b.Subjects[0].Kind == rbacv1.ServiceAccountKind && b.Subjects[0].Name == sa.Name && b.Subjects[0].Namespace == sa.Namespace && b.RoleRef.Kind == "Role" {
			bound["Role/"+b.RoleRef.Name] = true
		}
	}
	for _, r := range m.clusterRoles {
		if !bound["ClusterRole/"+r.Name] {
			t.Errorf("ClusterRole %s is not bound to ServiceAccount %s/%s", r.Name, sa.Namespace, sa.Name)
		}
	}
	if !bound["Role/"+role.Name] {
		t.Errorf("Role %s is not bound to ServiceAccount %s/%s", role.Name, sa.Namespace, sa.Name)
	}
}

// grant is one verb on one resource (of one name; empty: any) a rule allows.
type grant struct{ group, resource, verb, name string }

// compareGrants orders grants by group, resource, verb and name.
func compareGrants(a, b grant) int {
	return cmp.Or(strings.Compare(a.group, b.group), strings.Compare(a.resource, b.resource),
		strings.Compare(a.verb, b.verb), strings.Compare(a.name, b.name))
}
