package virtctl

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/virtkube/virtkube/internal/vmispec"

	virtv1 "kubevirt.io/api/core/v1"
)

func TestVirtctlExpose(t *testing.T) {
	s := newFakeAPIServer(t)
	s.handle("GET /apis/kubevirt.io/v1/namespaces/testns/virtualmachineinstances/testvmi", writeJSON(map[string]any{
		"metadata": map[string]any{"name": "testvmi", "labels": map[string]any{"special": "key", "kubevirt.io/nodeName": "n1"}},
		"spec": map[string]any{
			"domain":   map[string]any{"devices": map[string]any{"interfaces": []any{map[string]any{"name": "default", "ports": []any{map[string]any{"port": 80}, map[string]any{"port": 53, "protocol": "UDP"}}}}}},
			"networks": []any{map[string]any{"name": "default", "pod": map[string]any{}}},
		},
	}))
	s.handle("GET /apis/kubevirt.io/v1/namespaces/testns/virtualmachineinstancereplicasets/rs", writeJSON(map[string]any{
		"metadata": map[string]any{"name": "rs"},
		"spec":     map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}}},
	}))
	var created []corev1.Service
	s.handle("POST /api/v1/namespaces/testns/services", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
		svc, ok := obj.(*corev1.Service)
		if err != nil || !ok {
			t.Errorf("POST services: %v (%T)", err, obj)
			return
		}
		created = append(created, *svc)
		writeJSON(svc)(w, r)
	})

	res := s.run(context.Background(), nil, "expose", "vmi", "testvmi", "--name", "ssh", "--port", "2222", "--target-port", "22", "--type", "NodePort")
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.stdout != "Service ssh successfully exposed for vmi testvmi\n" {
		t.Errorf("stdout = %q", res.stdout)
	}
	res = s.run(context.Background(), nil, "expose", "VMI", "testvmi", "--name", "all-ports")
	if res.err != nil {
		t.Fatal(res.err)
	}
	res = s.run(context.Background(), nil, "expose", "vmirs", "rs", "--name", "web", "--port", "80", "--ip-family", "IPv4,IPv6")
	if res.err != nil {
		t.Fatal(res.err)
	}
	if len(created) != 3 {
		t.Fatalf("%d services created, want 3", len(created))
	}

	ssh := created[0]
	if ssh.Name != "ssh" || ssh.Spec.Type != corev1.ServiceTypeNodePort ||
		len(ssh.Spec.Selector) != 1 || ssh.Spec.Selector[virtv1.VirtualMachineInstanceIDLabel] != "testvmi" {
		t.Errorf("service for vmi: %+v", ssh.Spec)
	}
	if len(ssh.Spec.Ports) != 1 || ssh.Spec.Ports[0].Port != 2222 || ssh.Spec.Ports[0].TargetPort != intstr.FromInt(22) ||
		ssh.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("ports: %+v", ssh.Spec.Ports)
	}
	all := created[1].Spec.Ports
	if len(all) != 2 || all[0].Name != "port-1" || all[0].Port != 80 || all[1].Name != "port-2" || all[1].Protocol != corev1.ProtocolUDP {
		t.Errorf("introspected ports: %+v", all)
	}
	web := created[2].Spec
	if web.Selector["app"] != "web" || len(web.IPFamilies) != 2 || web.IPFamilyPolicy == nil ||
		*web.IPFamilyPolicy != corev1.IPFamilyPolicyPreferDualStack {
		t.Errorf("service for vmirs: %+v", web)
	}

	for _, args := range [][]string{
		{"expose", "vm", "absent", "--name", "x", "--port", "1"},
		{"expose", "vmi", "testvmi", "--name", "x", "--port", "1", "--type", "ExternalName"},
		{"expose", "vmi", "testvmi", "--port", "1"},
	} {
		if res := s.run(context.Background(), nil, args...); res.err == nil {
			t.Errorf("virtctl %v succeeded, want an error", args)
		}
	}
}

func TestVMIID(t *testing.T) {
	long := strings.Repeat("a", 70)
	got := vmispec.IDLabelValue(long)
	if len(got) != 63 || !strings.HasPrefix(got, strings.Repeat("a", 54)+"-") {
		t.Errorf("vmispec.IDLabelValue(70 a's) = %q", got)
	}
	if vmispec.IDLabelValue("short") != "short" {
		t.Error("short names are their own id")
	}
}

func TestVirtctlCreateVM(t *testing.T) {
	s := newFakeAPIServer(t)
	res := s.run(context.Background(), nil, "create", "vm", "--name", "my-vm", "--run-strategy", "Manual",
		"--volume-containerdisk", "src:registry.local/cirros:latest",
		"--volume-pvc", "src:data,bootorder:2",
		"--cloud-init-user-data", "I2Nsb3VkLWNvbmZpZwo=")
	if res.err != nil {
		t.Fatal(res.err)
	}
	if len(s.seen()) != 0 {
		t.Error("create vm must not call the server")
	}
	var vm virtv1.VirtualMachine
	if err := yaml.UnmarshalStrict([]byte(res.stdout), &vm); err != nil {
		t.Fatalf("output is not a VirtualMachine: %v\n%s", err, res.stdout)
	}
	if vm.APIVersion != "kubevirt.io/v1" || vm.Kind != "VirtualMachine" || vm.Name != "my-vm" || vm.Namespace != "" {
		t.Errorf("header: %+v", vm.TypeMeta)
	}
	spec := vm.Spec.Template.Spec
	if *vm.Spec.RunStrategy != virtv1.RunStrategyManual || *spec.TerminationGracePeriodSeconds != 180 ||
		spec.Domain.Memory.Guest.String() != "512Mi" {
		t.Errorf("defaults: %+v", vm.Spec)
	}
	if len(spec.Volumes) != 3 || spec.Volumes[0].Name != "my-vm-containerdisk-0" ||
		spec.Volumes[0].ContainerDisk.Image != "registry.local/cirros:latest" ||
		spec.Volumes[1].Name != "data" || spec.Volumes[1].PersistentVolumeClaim.ClaimName != "data" ||
		spec.Volumes[2].Name != "cloudinitdisk" || spec.Volumes[2].CloudInitNoCloud.UserDataBase64 != "I2Nsb3VkLWNvbmZpZwo=" {
		t.Errorf("volumes: %+v", spec.Volumes)
	}
	// The PVC has the only boot order, so it is what the server infers from.
	if vm.Spec.Instancetype == nil || vm.Spec.Instancetype.InferFromVolume != "data" {
		t.Errorf("instancetype: %+v", vm.Spec.Instancetype)
	}

	res = s.run(context.Background(), nil, "create", "vm", "-n", "prod", "--instancetype", "u1.small")
	if res.err != nil {
		t.Fatal(res.err)
	}
	if err := yaml.Unmarshal([]byte(res.stdout), &vm); err != nil {
		t.Fatal(err)
	}
	if vm.Namespace != "prod" || !strings.HasPrefix(vm.Name, "vm-") || vm.Spec.Instancetype.Name != "u1.small" ||
		vm.Spec.Template.Spec.Domain.Memory != nil {
		t.Errorf("second manifest: %s", res.stdout)
	}
	if res := s.run(context.Background(), nil, "create", "vm", "--run-strategy", "Sometimes"); res.err == nil {
		t.Error("an unknown run strategy must be refused")
	}
}

func TestVirtctlSSHAndSCPRunLocalClients(t *testing.T) {
	dir := t.TempDir()
	for _, bin := range []string{"ssh", "scp"} {
		script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > " + filepath.Join(dir, bin+".args") + "\n"
		if err := os.WriteFile(filepath.Join(dir, bin), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	s := newFakeAPIServer(t)

	res := s.run(context.Background(), nil, "ssh", "fedora@vm/testvm", "-i", "/keys/id", "-t", "-o StrictHostKeyChecking=no", "-c", "hostname")
	if res.err != nil {
		t.Fatal(res.err)
	}
	args := readLines(t, filepath.Join(dir, "ssh.args"))
	if len(args) != 8 || args[0] != "-o" || !strings.HasPrefix(args[1], "ProxyCommand=") ||
		args[2] != "-o" || args[3] != "StrictHostKeyChecking=no" || args[4] != "-i" || args[5] != "/keys/id" ||
		args[6] != "fedora@vm/testvm.testns" || args[7] != "hostname" {
		t.Fatalf("ssh args = %q", args)
	}
	if !strings.Contains(args[1], "--kubeconfig="+s.kubeconfig) || !strings.HasSuffix(args[1], " port-forward --stdio=true vm/testvm/testns 22") {
		t.Errorf("ProxyCommand = %q", args[1])
	}

	res = s.run(context.Background(), nil, "scp", "-r", "--port", "2222", "./dir", "root@vmi/web/prod:/srv")
	if res.err != nil {
		t.Fatal(res.err)
	}
	args = readLines(t, filepath.Join(dir, "scp.args"))
	if len(args) != 5 || !strings.HasSuffix(args[1], " vmi/web/prod 2222") || args[2] != "-r" ||
		args[3] != "./dir" || args[4] != "root@vmi/web.prod:/srv" {
		t.Errorf("scp args = %q", args)
	}
	if res := s.run(context.Background(), nil, "scp", "a", "b"); res.err == nil {
		t.Error("scp between two local paths must be refused")
	}
	if res := s.run(context.Background(), nil, "ssh", "--local-ssh=false", "vmi/x"); res.err == nil {
		t.Error("ssh without the local client must be refused")
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
}
