package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/virtkube/virtkube/test/framework"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func kubectl(t *testing.T, s *framework.Server, stdin string, args ...string) string {
	t.Helper()
	var in *strings.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	var out, errOut string
	var err error
	if in != nil {
		out, errOut, err = s.Kubectl(ctxT(t, time.Minute), in, args...)
	} else {
		out, errOut, err = s.Kubectl(ctxT(t, time.Minute), nil, args...)
	}
	if err != nil {
		t.Fatalf("kubectl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func TestServerIsReady(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	s := shared

	if !strings.Contains(s.Stdout(), "export KUBECONFIG="+s.Kubeconfig) {
		t.Errorf("server did not print the export line for %s; stdout:\n%s", s.Kubeconfig, s.Stdout())
	}
	body, err := s.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil || string(body) != "ok" {
		t.Fatalf("/readyz = %q, %v", body, err)
	}
	version := kubectl(t, s, "", "version")
	if !strings.Contains(version, "Server Version: v1.37") {
		t.Errorf("kubectl version does not report a 1.37 server:\n%s", version)
	}
}

func TestNodeIsReadyWithPodCIDR(t *testing.T) {
	s := shared
	var node *corev1.Node
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		nodes, err := s.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) != 1 {
			return false, "want exactly one node"
		}
		node = &nodes.Items[0]
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, "Ready is " + string(c.Status)
			}
		}
		return false, "no Ready condition"
	})
	if node.Spec.PodCIDR != s.PodCIDR() {
		t.Errorf("podCIDR = %q, want %s", node.Spec.PodCIDR, s.PodCIDR())
	}
	if node.Status.Allocatable.Cpu().IsZero() || node.Status.Allocatable.Memory().IsZero() {
		t.Errorf("node has no allocatable cpu/memory: %v", node.Status.Allocatable)
	}
	// Ready means schedulable: the not-ready taint is gone by the time the
	// server says it is ready.
	for _, taint := range node.Spec.Taints {
		t.Errorf("node is tainted: %v", taint)
	}
	out := kubectl(t, s, "", "get", "nodes")
	if !strings.Contains(out, " Ready ") {
		t.Errorf("kubectl get nodes does not show Ready:\n%s", out)
	}
}

var kubevirtCRDs = map[string][]string{
	"virtualmachineinstances.kubevirt.io":           {"vmi", "vmis"},
	"virtualmachines.kubevirt.io":                   {"vm", "vms"},
	"virtualmachineinstancereplicasets.kubevirt.io": {"vmirs", "vmirss"},
	"virtualmachineinstancemigrations.kubevirt.io":  {"vmim", "vmims"},
	"kubevirts.kubevirt.io":                         {"kv", "kvs"},
}

func TestCRDsServedInBothVersions(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	s := shared
	client, err := apiextclient.NewForConfig(s.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	for name, shortNames := range kubevirtCRDs {
		crd, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("CRD %s: %v", name, err)
			continue
		}
		if strings.Join(crd.Spec.Names.ShortNames, ",") != strings.Join(shortNames, ",") {
			t.Errorf("%s short names = %v, want %v", name, crd.Spec.Names.ShortNames, shortNames)
		}
		if strings.Join(crd.Spec.Names.Categories, ",") != "all" {
			t.Errorf("%s categories = %v, want [all]", name, crd.Spec.Names.Categories)
		}
		versions := map[string]apiextv1.CustomResourceDefinitionVersion{}
		for _, v := range crd.Spec.Versions {
			versions[v.Name] = v
			if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil || len(v.Schema.OpenAPIV3Schema.Properties["spec"].Properties) == 0 {
				t.Errorf("%s %s has no structural spec schema", name, v.Name)
			}
			if p := v.Schema.OpenAPIV3Schema.Properties["spec"]; p.XPreserveUnknownFields != nil && *p.XPreserveUnknownFields {
				t.Errorf("%s %s keeps unknown fields in the whole spec", name, v.Name)
			}
		}
		if v := versions["v1"]; !v.Served || !v.Storage {
			t.Errorf("%s v1: served=%v storage=%v, want both", name, v.Served, v.Storage)
		}
		if v := versions["v1alpha3"]; !v.Served || v.Storage {
			t.Errorf("%s v1alpha3: served=%v storage=%v, want served only", name, v.Served, v.Storage)
		}
	}

	// Every short name resolves through discovery, in both versions.
	out := kubectl(t, s, "", "get", "vmi,vm,vmirs,vmim,kv", "-A")
	if !strings.Contains(out, "kubevirt.io/kubevirt") {
		t.Errorf("kubectl get ... kv -A does not list the KubeVirt CR:\n%s", out)
	}
	for _, gv := range []string{"kubevirt.io/v1", "kubevirt.io/v1alpha3"} {
		res := kubectl(t, s, "", "api-resources", "--api-group=kubevirt.io", "-o", "name")
		if !strings.Contains(res, "virtualmachineinstances.kubevirt.io") {
			t.Errorf("api-resources lacks VMIs:\n%s", res)
		}
		raw, err := s.Client.Discovery().ServerResourcesForGroupVersion(gv)
		if err != nil {
			t.Fatalf("discovery %s: %v", gv, err)
		}
		if len(raw.APIResources) < len(kubevirtCRDs) {
			t.Errorf("%s serves %d resources, want at least %d", gv, len(raw.APIResources), len(kubevirtCRDs))
		}
	}
}

// A VMI written as v1alpha3 is read back as v1, and kubectl prints the
// columns the seed shows.
func TestVMIColumnsAndVersions(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	manifest := `apiVersion: kubevirt.io/v1alpha3
kind: VirtualMachineInstance
metadata:
  name: columns
  labels: {app: columns}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices: {}
`
	kubectl(t, s, manifest, "apply", "-n", ns, "-f", "-")
	out := kubectl(t, s, "", "get", "vmi", "-n", ns)
	header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if strings.Join(header, " ") != "NAME AGE PHASE IP NODENAME READY" {
		t.Errorf("kubectl get vmi header = %v, want NAME AGE PHASE IP NODENAME READY", header)
	}
	if !strings.Contains(out, "columns") {
		t.Errorf("kubectl get vmi does not list the VMI:\n%s", out)
	}

	dyn, err := dynamic.NewForConfig(s.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := dyn.Resource(schema.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachineinstances"}).
		Namespace(ns).Get(ctxT(t, time.Minute), "columns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if obj.GetAPIVersion() != "kubevirt.io/v1" {
		t.Errorf("read as %s, want kubevirt.io/v1", obj.GetAPIVersion())
	}
	if mem, _, _ := unstructured.NestedString(obj.Object, "spec", "domain", "resources", "requests", "memory"); mem != "64Mi" {
		t.Errorf("memory request read back as %q, want 64Mi", mem)
	}

	out, errOut, err := s.Kubectl(ctxT(t, time.Minute), nil, "get", "vm", "-n", ns)
	if err != nil || out != "" || !strings.Contains(errOut, "No resources found") {
		t.Errorf("kubectl get vm in a namespace without VMs: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
}

// The scale subresource of a VMIRS is what `kubectl scale` and an HPA use.
// The replica set is paused: this is about the API, not about VMIs.
func TestReplicaSetScaleSubresource(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	manifest := `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstanceReplicaSet
metadata:
  name: scaled
spec:
  paused: true
  replicas: 1
  selector: {matchLabels: {app: scaled}}
  template:
    metadata: {labels: {app: scaled}}
    spec:
      domain:
        resources: {requests: {memory: 64Mi}}
        devices: {}
`
	kubectl(t, s, manifest, "apply", "-n", ns, "-f", "-")
	kubectl(t, s, "", "scale", "-n", ns, "vmirs", "scaled", "--replicas=3")
	out := kubectl(t, s, "", "get", "vmirs", "scaled", "-n", ns, "-o", "jsonpath={.spec.replicas}")
	if out != "3" {
		t.Errorf("after kubectl scale, spec.replicas = %q, want 3", out)
	}
	// Template labels survive: the schema must not prune embedded metadata.
	out = kubectl(t, s, "", "get", "vmirs", "scaled", "-n", ns, "-o", "jsonpath={.spec.template.metadata.labels.app}")
	if out != "scaled" {
		t.Errorf("template label app = %q, want scaled (pruned?)", out)
	}
}

func TestKubeVirtCRDeployed(t *testing.T) {
	// A change of the CR's spec is observed, as by KubeVirt's operator:
	// kubectl wait ignores conditions of an older generation.
	kubectl(t, shared, "", "patch", "kv", "kubevirt", "-n", "kubevirt", "--type=merge", "-p", `{"spec":{"imagePullPolicy":"IfNotPresent"}}`)
	out := kubectl(t, shared, "", "wait", "-n", "kubevirt", "kv", "kubevirt", "--for=condition=Available", "--timeout=30s")
	if !strings.Contains(out, "condition met") {
		t.Errorf("kubectl wait kv: %s", out)
	}
	out = kubectl(t, shared, "", "get", "kv", "kubevirt", "-n", "kubevirt", "-o", "jsonpath={.metadata.generation}/{.status.observedGeneration}/{.status.phase}")
	if gen, observed, _ := strings.Cut(out, "/"); !strings.HasPrefix(observed, gen+"/") || !strings.HasSuffix(out, "/Deployed") {
		t.Errorf("generation/observedGeneration/phase = %s", out)
	}
}

// Every VirtualMachineInstance, VirtualMachine and KubeVirt manifest in the
// seed walkthrough is accepted as written.
func TestSeedManifestsAccepted(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	files, err := filepath.Glob("../testdata/seed/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("seed manifests: %v %v", files, err)
	}
	// The seed turns its feature gates on before it creates the VM that
	// needs one (hostDisk).
	gates, err := os.ReadFile("../testdata/seed/kubevirt-feature-gates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, string(gates), "apply", "-f", "-")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			args := []string{"apply", "--dry-run=server", "-f", "-"}
			if !strings.Contains(string(body), "namespace:") {
				args = append(args, "-n", ns)
			}
			out := kubectl(t, s, string(body), args...)
			if !strings.Contains(out, "(server dry run)") {
				t.Errorf("kubectl apply --dry-run=server: %s", out)
			}
		})
	}
}

// Bad manifests are refused, and the message names the field.
func TestBadManifestsRejected(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	const vmi = `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: bad
spec:
  %s
`
	for _, tc := range []struct {
		name, spec string
		want       []string
	}{
		{"misspelled field", "domain: {resources: {requests: {memory: 64Mi}}, devices: {diskz: []}}",
			[]string{"spec.domain.devices.diskz", "unknown field"}},
		{"misspelled top-level field", "terminationGracePeriodSecond: 30\n  domain: {devices: {}}",
			[]string{"spec.terminationGracePeriodSecond", "unknown field"}},
		{"string for an integer", "terminationGracePeriodSeconds: thirty\n  domain: {devices: {}}",
			[]string{"spec.terminationGracePeriodSeconds", "integer"}},
		{"object for a list", "domain: {devices: {disks: {name: x}}}",
			[]string{"spec.domain.devices.disks"}},
		{"not a quantity", "domain: {resources: {requests: {memory: lots}}, devices: {}}",
			[]string{"spec.domain.resources.requests.memory", "lots"}},
		{"required field missing", "domain: {resources: {requests: {memory: 64Mi}}}",
			[]string{"spec.domain.devices", "Required value"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			manifest := strings.Replace(vmi, "%s", tc.spec, 1)
			out, errOut, err := s.Kubectl(ctxT(t, time.Minute), strings.NewReader(manifest), "apply", "--dry-run=server", "-n", ns, "-f", "-")
			if err == nil {
				t.Fatalf("accepted:\n%s\nstdout: %s", manifest, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error does not mention %q:\n%s", w, errOut)
				}
			}
		})
	}
}

// deploy/crds is what a real cluster applies; it must apply as documented
// (server-side: the largest CRD is too big for client-side apply's
// last-applied annotation).
func TestDeployCRDsApplyServerSide(t *testing.T) {
	out := kubectl(t, shared, "", "apply", "--server-side", "--dry-run=server", "-f", "../../deploy/crds/")
	for name := range kubevirtCRDs {
		if !strings.Contains(out, name) {
			t.Errorf("kubectl apply --server-side -f deploy/crds/ did not apply %s:\n%s", name, out)
		}
	}
}
