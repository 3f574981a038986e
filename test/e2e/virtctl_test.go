package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/test/framework"
)

// unpullableImage keeps a VM's guest from booting: these tests are about the
// API objects virtctl touches, not the guest.
const unpullableImage = "registry.invalid/virtkube/none:latest"

// virtctl runs bin/<name> (virtctl, or the kubectl-virt plugin link) against
// s and returns stdout, stderr and the exit code.
func virtctl(t *testing.T, s *framework.Server, name string, args ...string) (string, string, int) {
	t.Helper()
	bin, err := framework.Binary()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(filepath.Dir(bin), name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s not found next to %s (run `make build`): %v", name, bin, err)
	}
	cmd := exec.CommandContext(ctxT(t, time.Minute), path, append([]string{"--kubeconfig", s.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return stdout.String(), stderr.String(), 0
}

func vmManifest(name, runStrategy string) string {
	return `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: ` + name + `
spec:
  runStrategy: ` + runStrategy + `
  template:
    metadata:
      labels: {kubevirt.io/vm: ` + name + `}
    spec:
      domain:
        resources: {requests: {memory: 64Mi}}
        devices:
          disks:
          - name: containerdisk
            disk: {bus: virtio}
          interfaces:
          - name: default
            masquerade: {}
            ports:
            - port: 80
      networks:
      - name: default
        pod: {}
      volumes:
      - name: containerdisk
        containerDisk: {image: ` + unpullableImage + `}
`
}

// `virtctl expose` creates, on a real API server, the Service KubeVirt's
// virtctl creates: selected by the vmi.kubevirt.io/id label launcher pods
// carry, with the requested ports, type and node port; the seed's
// `virtctl expose vm win10 --name win10-rdp --port 3389 --target-port 3389
// --type NodePort` works through the kubectl plugin too.
func TestVirtctlExposeCreatesServices(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	kubectl(t, s, vmManifest("win10", "Halted"), "apply", "-n", ns, "-f", "-")
	kubectl(t, s, `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: testvmi
  labels: {special: key}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      disks:
      - name: containerdisk
        disk: {bus: virtio}
  volumes:
  - name: containerdisk
    containerDisk: {image: `+unpullableImage+`}
`, "apply", "-n", ns, "-f", "-")

	out, errOut, code := virtctl(t, s, "virtctl", "expose", "vmi", "testvmi", "-n", ns,
		"--name", "testvmi-ssh", "--port", "2222", "--target-port", "22", "--type", "NodePort")
	if code != 0 || out != "Service testvmi-ssh successfully exposed for vmi testvmi\n" {
		t.Fatalf("virtctl expose vmi: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	out, errOut, code = virtctl(t, s, "kubectl-virt", "expose", "vm", "win10", "-n", ns,
		"--name", "win10-rdp", "--port", "3389", "--target-port", "3389", "--type", "NodePort")
	if code != 0 || out != "Service win10-rdp successfully exposed for vm win10\n" {
		t.Fatalf("kubectl-virt expose vm: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	out, errOut, code = virtctl(t, s, "virtctl", "expose", "vm", "win10", "-n", ns, "--name", "win10-ports")
	if code != 0 {
		t.Fatalf("virtctl expose vm without --port: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}

	ctx := ctxT(t, time.Minute)
	svc, err := s.Client.CoreV1().Services(ns).Get(ctx, "testvmi-ssh", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeNodePort || len(svc.Spec.Selector) != 1 ||
		svc.Spec.Selector[virtv1.VirtualMachineInstanceIDLabel] != "testvmi" {
		t.Errorf("testvmi-ssh: type %s selector %v", svc.Spec.Type, svc.Spec.Selector)
	}
	if p := svc.Spec.Ports; len(p) != 1 || p[0].Port != 2222 || p[0].TargetPort != intstr.FromInt(22) ||
		p[0].Protocol != corev1.ProtocolTCP || p[0].NodePort == 0 {
		t.Errorf("testvmi-ssh ports: %+v", p)
	}
	rdp, err := s.Client.CoreV1().Services(ns).Get(ctx, "win10-rdp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rdp.Spec.Selector[virtv1.VirtualMachineInstanceIDLabel] != "win10" || rdp.Spec.Ports[0].Port != 3389 {
		t.Errorf("win10-rdp: %+v", rdp.Spec)
	}
	ports, err := s.Client.CoreV1().Services(ns).Get(ctx, "win10-ports", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := ports.Spec.Ports; len(p) != 1 || p[0].Name != "port-1" || p[0].Port != 80 {
		t.Errorf("win10-ports (from the VM's interface ports): %+v", p)
	}

	// Errors exit 1 with KubeVirt's message on stderr.
	out, errOut, code = virtctl(t, s, "virtctl", "expose", "vmi", "absent", "-n", ns, "--name", "x", "--port", "1")
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "error fetching VirtualMachineInstance: ") ||
		!strings.Contains(errOut, `"absent" not found`) {
		t.Errorf("expose of a missing VMI: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	_, errOut, code = virtctl(t, s, "virtctl", "expose", "vmi", "testvmi", "-n", ns, "--name", "testvmi-ssh", "--port", "22")
	if code != 1 || !strings.HasPrefix(errOut, "service creation failed: ") || !strings.Contains(errOut, "already exists") {
		t.Errorf("expose twice: exit %d, stderr %s", code, errOut)
	}
}

// `virtctl start` and `virtctl stop` go through virt-api's aggregated API and
// move the VM's runStrategy; their errors carry the server's message.
func TestVirtctlStartStopMoveRunStrategy(t *testing.T) {
	s := shared
	if _, err := s.Client.Discovery().ServerResourcesForGroupVersion("subresources.kubevirt.io/v1"); err != nil {
		t.Skipf("virt-api does not serve subresources.kubevirt.io/v1 yet (%v); start/stop need it", err)
	}
	ns := s.Namespace(t)
	kubectl(t, s, vmManifest("testvm", "Halted"), "apply", "-n", ns, "-f", "-")

	runStrategy := func(ctx context.Context) string {
		out, _, err := s.Kubectl(ctx, nil, "get", "vm", "testvm", "-n", ns, "-o", "jsonpath={.spec.runStrategy}")
		if err != nil {
			return "error: " + err.Error()
		}
		return out
	}

	out, errOut, code := virtctl(t, s, "virtctl", "start", "testvm", "-n", ns)
	if code != 0 || out != "VM testvm was scheduled to start\n" {
		t.Fatalf("virtctl start: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		rs := runStrategy(ctx)
		return rs == string(virtv1.RunStrategyAlways), "runStrategy " + rs
	})

	out, errOut, code = virtctl(t, s, "kubectl-virt", "stop", "testvm", "-n", ns)
	if code != 0 || out != "VM testvm was scheduled to stop\n" {
		t.Fatalf("kubectl virt stop: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		rs := runStrategy(ctx)
		return rs == string(virtv1.RunStrategyHalted), "runStrategy " + rs
	})

	out, errOut, code = virtctl(t, s, "virtctl", "start", "absent", "-n", ns)
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "Error starting VirtualMachine ") {
		t.Errorf("start of a missing VM: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}
