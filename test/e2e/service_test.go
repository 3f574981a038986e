package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/test/framework"
)

// A Service written by hand, selecting the VMI's kubevirt.io/domain label as
// the seed's win10-nginx does, reaches the guest's web server through its
// ClusterIP and its NodePort on this machine (kube-proxy in virtkube server),
// and so does the NodePort of `virtctl expose vmi`.
func TestServiceReachesGuest(t *testing.T) {
	s := shared
	if !s.KubeProxy() {
		t.Skip("Services reach guests through kube-proxy, which this server runs without (VIRTKUBE_TEST_NETWORK)")
	}
	ref := testGuestImage(t, s, "svc")
	ns := s.Namespace(t)
	kubectl(t, s, fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: web, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 5
  domain:
    resources: {requests: {memory: 128Mi}}
    devices: {disks: [{name: root, disk: {bus: virtio}}]}
  volumes: [{name: root, containerDisk: {image: %s}}]
---
apiVersion: v1
kind: Service
metadata: {name: web-nginx}
spec:
  type: NodePort
  selector: {kubevirt.io/domain: web}
  ports: [{port: 8080, targetPort: 80, protocol: TCP}]
`, ref), "apply", "-n", ns, "-f", "-")
	waitVMI(t, crClient(t, s), ns, "web", "Running", func(v *virtv1.VirtualMachineInstance) bool {
		return v.Status.Phase == virtv1.Running
	})
	svc, err := s.Client.CoreV1().Services(ns).Get(ctxT(t, time.Minute), "web-nginx", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := s.Client.CoreV1().Nodes().List(ctxT(t, time.Minute), metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("nodes: %v", err)
	}
	var nodeIP string
	for _, a := range nodes.Items[0].Status.Addresses {
		if a.Type == "InternalIP" {
			nodeIP = a.Address
		}
	}
	// And one made the seed's way: virtctl expose ... --type NodePort.
	if out, errOut, code := virtctl(t, s, "virtctl", "expose", "vmi", "web", "-n", ns, "--name", "web-expose", "--port", "80", "--type", "NodePort"); code != 0 {
		t.Fatalf("virtctl expose: exit %d\n%s%s", code, out, errOut)
	}
	exposed, err := s.Client.CoreV1().Services(ns).Get(ctxT(t, time.Minute), "web-expose", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]string{
		"ClusterIP":          net.JoinHostPort(svc.Spec.ClusterIP, "8080"),
		"NodePort":           net.JoinHostPort(nodeIP, strconv.Itoa(int(svc.Spec.Ports[0].NodePort))),
		"virtctl's NodePort": net.JoinHostPort(nodeIP, strconv.Itoa(int(exposed.Spec.Ports[0].NodePort))),
	}
	httpc := &http.Client{Timeout: 3 * time.Second}
	for kind, addr := range targets {
		framework.Eventually(t, 3*time.Minute, 500*time.Millisecond, func(context.Context) (bool, string) {
			resp, err := httpc.Get("http://" + addr + "/")
			if err != nil {
				return false, kind + " " + addr + ": " + err.Error()
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return strings.Contains(string(body), "virtkube test guest"), fmt.Sprintf("%s %s: %s %q", kind, addr, resp.Status, body)
		})
	}
	kubectl(t, s, "", "delete", "vmi", "web", "-n", ns, "--wait=true", "--timeout=2m")
}
