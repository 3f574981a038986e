package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/test/framework"
)

// guestPage is what the test guest's httpd serves on port 80.
const guestPage = "virtkube test guest"

// `virtctl port-forward` reaches port 80 of a bridge guest (a VM's VMI) and
// of a masquerade guest (a plain VMI), running side by side: through a
// local port with an HTTP client, and through --stdio with a request on
// stdin. A user without RBAC is refused with 403; a guest without an agent
// answers guestosinfo with KubeVirt's 409. Finally `virtctl stop
// --grace-period 5 --force` shortens the VMI's grace period and stops the VM.
func TestPortForwardToBridgeAndMasqueradeGuests(t *testing.T) {
	s := shared
	image := testGuestImage(t, s, "portforward")
	ns := s.Namespace(t)
	c := crClient(t, s)
	spec := func(iface string) string {
		return fmt.Sprintf(`terminationGracePeriodSeconds: 30
domain:
  resources: {requests: {memory: 128Mi}}
  devices:
    disks: [{name: root, disk: {bus: virtio}}]
    interfaces: [{name: default, %s: {}}]
networks: [{name: default, pod: {}}]
volumes: [{name: root, containerDisk: {image: %s}}]
`, iface, image)
	}
	indent := func(s, by string) string { return by + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n"+by) + "\n" }
	kubectl(t, s, `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: pf-bridge}
spec:
  runStrategy: Always
  template:
    metadata: {labels: {kubevirt.io/vm: pf-bridge}}
    spec:
`+indent(spec("bridge"), "      "), "apply", "-n", ns, "-f", "-")
	kubectl(t, s, `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: pf-masquerade}
spec:
`+indent(spec("masquerade"), "  "), "apply", "-n", ns, "-f", "-")
	for _, name := range []string{"pf-bridge", "pf-masquerade"} {
		waitVMIFor(t, c, ns, name, 5*time.Minute, "Running", func(v *virtv1.VirtualMachineInstance) bool {
			return v.Status.Phase == virtv1.Running
		})
	}

	for _, binding := range []string{"bridge", "masquerade"} {
		t.Run(binding, func(t *testing.T) {
			target := "vmi/pf-" + binding + "/" + ns
			// The guest may still be booting: its httpd answers last.
			framework.Eventually(t, 4*time.Minute, time.Second, func(ctx context.Context) (bool, string) {
				out, errOut, err := portForwardStdio(ctx, t, s, target, "80", "GET / HTTP/1.0\r\n\r\n")
				return strings.Contains(out, guestPage), fmt.Sprintf("--stdio: %v\nstdout: %q\nstderr: %s", err, out, errOut)
			})
			port, err := framework.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			stop := portForwardLocal(t, s, target, strconv.Itoa(port)+":80")
			defer stop()
			httpc := &http.Client{Timeout: 10 * time.Second}
			framework.Eventually(t, time.Minute, 500*time.Millisecond, func(context.Context) (bool, string) {
				resp, err := httpc.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
				if err != nil {
					return false, err.Error()
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode == http.StatusOK && strings.Contains(string(body), guestPage), fmt.Sprintf("%s: %q", resp.Status, body)
			})
		})
	}

	// Through the VM as well: the tunnel goes to the VMI it created.
	ctx := ctxT(t, 2*time.Minute)
	if out, errOut, err := portForwardStdio(ctx, t, s, "vm/pf-bridge/"+ns, "80", "GET / HTTP/1.0\r\n\r\n"); !strings.Contains(out, guestPage) {
		t.Errorf("port-forward --stdio vm/pf-bridge: %v\nstdout: %q\nstderr: %s", err, out, errOut)
	}

	// RBAC decides, as for the console.
	_, errOut, err := portForwardStdio(ctx, t, s, "vmi/pf-masquerade/"+ns, "80", "", "--as", "nobody")
	if err == nil || !strings.Contains(errOut, `User "nobody" cannot get resource "virtualmachineinstances/portforward"`) {
		t.Errorf("port-forward as a user without RBAC: %v, stderr %q; want 403 naming the subresource", err, errOut)
	}
	vmiPath := fmt.Sprintf("%s/namespaces/%s/virtualmachineinstances/pf-masquerade", subresourcesV1, ns)
	if code, msg := statusOf(get(ctx, s.RESTConfig, vmiPath+"/portforward/80/sctp")); code != http.StatusBadRequest || !strings.Contains(msg, `protocol "sctp" is not supported`) {
		t.Errorf("port-forward over sctp: %d %q, want 400", code, msg)
	}
	if code, msg := statusOf(get(ctx, s.RESTConfig, vmiPath+"/guestosinfo")); code != http.StatusConflict || !strings.Contains(msg, "VMI does not have guest agent connected") {
		t.Errorf("guestosinfo: %d %q, want 409 VMI does not have guest agent connected", code, msg)
	}

	// virtctl stop --grace-period patches the running VMI's grace period
	// (the webhook allows that one spec change), then stops the VM.
	out, errOut, code := virtctl(t, s, "virtctl", "stop", "pf-bridge", "-n", ns, "--grace-period", "5", "--force")
	if code != 0 || out != "VM pf-bridge was scheduled to stop\n" {
		t.Fatalf("virtctl stop --grace-period 5 --force: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	v := &virtv1.VirtualMachineInstance{}
	switch err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pf-bridge"}, v); {
	case err == nil && (v.Spec.TerminationGracePeriodSeconds == nil || *v.Spec.TerminationGracePeriodSeconds != 5):
		t.Errorf("VMI grace period %v after the stop, want 5", v.Spec.TerminationGracePeriodSeconds)
	case err != nil && !apierrors.IsNotFound(err):
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pf-bridge"}, &virtv1.VirtualMachineInstance{})
		return apierrors.IsNotFound(err), fmt.Sprintf("VMI still there (%v)", err)
	})
}

// virtctlPath is bin/virtctl, built next to the server binary.
func virtctlPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(filepath.Dir(mustBinary(t)), "virtctl")
}

// portForwardStdio runs `virtctl port-forward --stdio target port` with
// stdin as its input, until the guest closes the connection.
func portForwardStdio(ctx context.Context, t *testing.T, s *framework.Server, target, port, stdin string, flags ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	args := append([]string{"--kubeconfig", s.Kubeconfig}, flags...)
	cmd := exec.CommandContext(ctx, virtctlPath(t), append(args, "port-forward", "--stdio", target, port)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// portForwardLocal starts `virtctl port-forward target ports` in the
// background; the returned func ends it.
func portForwardLocal(t *testing.T, s *framework.Server, target, ports string) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, virtctlPath(t), "--kubeconfig", s.Kubeconfig, "port-forward", target, ports)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	return func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("virtctl port-forward %s %s:\n%s", target, ports, stderr.String())
		}
	}
}
