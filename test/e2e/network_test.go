package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/handler"
	"github.com/virtkube/virtkube/test/containerdisk"
	"github.com/virtkube/virtkube/test/framework"
	"github.com/virtkube/virtkube/test/guest"
)

// The pod network, through each binding: the guest takes its address by
// DHCP, the VMI's status shows the pod IP, and the guest's web server
// answers from this machine at the pod IP. Deleting the VMI leaves no
// network namespace behind.
func TestPodNetworkBindings(t *testing.T) {
	disk, err := guest.Disk()
	if err != nil {
		t.Fatal(err)
	}
	s := shared
	registry := containerdisk.StartRegistry(t)
	ref, err := containerdisk.Push(ctxT(t, time.Minute), registry, "virtkube/test-guest", "net", disk)
	if err != nil {
		t.Fatal(err)
	}
	if handler.KVMUsable() != nil {
		kubectl(t, s, "", "patch", "kv", "kubevirt", "-n", "kubevirt", "--type=merge",
			"-p", `{"spec":{"configuration":{"developerConfiguration":{"useEmulation":true}}}}`)
	}
	for _, tc := range []struct {
		binding, iface string
		guestIP        func(podIP string) string
	}{
		{"bridge", "bridge: {}", func(podIP string) string { return podIP }},
		{"masquerade", "masquerade: {}\n        ports: [{port: 80}]", func(string) string { return "10.0.2.2" }},
	} {
		t.Run(tc.binding, func(t *testing.T) {
			ns := s.Namespace(t)
			name := "net-" + tc.binding
			kubectl(t, s, fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: %s}
spec:
  terminationGracePeriodSeconds: 5
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks: [{name: root, disk: {bus: virtio}}]
      interfaces:
      - name: default
        %s
  networks: [{name: default, pod: {}}]
  volumes: [{name: root, containerDisk: {image: %s}}]
`, name, tc.iface, ref), "apply", "-n", ns, "-f", "-")
			c := crClient(t, s)
			v := waitVMI(t, c, ns, name, "Running", func(v *virtv1.VirtualMachineInstance) bool {
				return v.Status.Phase == virtv1.Running
			})
			pods, err := s.Client.CoreV1().Pods(ns).List(ctxT(t, time.Minute), metav1.ListOptions{LabelSelector: "kubevirt.io/domain=" + name})
			if err != nil || len(pods.Items) != 1 {
				t.Fatalf("launcher pods: %d, %v", len(pods.Items), err)
			}
			pod := pods.Items[0]
			podIP := pod.Status.PodIP
			if len(v.Status.Interfaces) != 1 || v.Status.Interfaces[0].IP != podIP || v.Status.Interfaces[0].Name != "default" || v.Status.Interfaces[0].MAC == "" {
				t.Errorf("status.interfaces = %+v, want default with the pod IP %s", v.Status.Interfaces, podIP)
			}
			if out := kubectl(t, s, "", "get", "vmi", name, "-n", ns); !strings.Contains(out, podIP) {
				t.Errorf("kubectl get vmi does not show the IP %s:\n%s", podIP, out)
			}
			logPath := filepath.Join(s.DataDir, "kubelet", "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "sockets", "serial0.log")
			want := "GUEST-IP " + tc.guestIP(podIP)
			framework.Eventually(t, 3*time.Minute, 250*time.Millisecond, func(context.Context) (bool, string) {
				body, _ := os.ReadFile(logPath)
				return strings.Contains(string(body), want), "no " + want + " on the console:\n" + lastLines(string(body), 12)
			})
			// The guest's web server, from this machine, at the pod IP.
			httpc := &http.Client{Timeout: 3 * time.Second}
			framework.Eventually(t, time.Minute, 500*time.Millisecond, func(context.Context) (bool, string) {
				resp, err := httpc.Get("http://" + podIP + "/")
				if err != nil {
					return false, err.Error()
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return strings.Contains(string(body), "virtkube test guest"), fmt.Sprintf("%s: %q", resp.Status, body)
			})
			if out, err := exec.Command("ping", "-c", "1", "-W", "3", podIP).CombinedOutput(); err != nil {
				t.Errorf("ping %s: %v\n%s", podIP, err, out)
			}

			netns := "vk-" + strings.ReplaceAll(string(pod.UID), "-", "")[:8]
			kubectl(t, s, "", "delete", "vmi", name, "-n", ns, "--wait=true", "--timeout=2m")
			framework.Eventually(t, time.Minute, 200*time.Millisecond, func(context.Context) (bool, string) {
				_, err := os.Stat(filepath.Join("/run/netns", netns))
				return os.IsNotExist(err), "network namespace " + netns + " left behind"
			})
		})
	}
}
