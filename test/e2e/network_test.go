package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/test/framework"
)

// The pod network through each binding, one guest each, side by side: each
// takes its address by DHCP, the VMI's status shows the pod IP, it answers
// ping and HTTP at the pod IP from this machine and from the other guest,
// reaches a server on this machine, and reaches the other guest through a
// ClusterIP Service. Deleting the VMIs leaves no network namespace behind.
func TestPodNetworkBindings(t *testing.T) {
	s := shared
	ref := testGuestImage(t, s, "net")
	ns := s.Namespace(t)
	type vm struct {
		binding, iface string
		guestIP        func(podIP string) string
		v              *virtv1.VirtualMachineInstance
		podIP, podUID  string
	}
	vms := []*vm{
		{binding: "bridge", iface: "bridge: {}", guestIP: func(podIP string) string { return podIP }},
		{binding: "masquerade", iface: "masquerade: {}\n        ports: [{port: 80}]", guestIP: func(string) string { return "10.0.2.2" }},
	}
	for _, m := range vms {
		kubectl(t, s, fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: net-%[1]s, labels: {binding: %[1]s}}
spec:
  terminationGracePeriodSeconds: 5
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks: [{name: root, disk: {bus: virtio}}]
      interfaces:
      - name: default
        %[2]s
  networks: [{name: default, pod: {}}]
  volumes: [{name: root, containerDisk: {image: %[3]s}}]
`, m.binding, m.iface, ref), "apply", "-n", ns, "-f", "-")
	}
	// A Service in front of the masquerade guest, for the bridge guest.
	kubectl(t, s, `apiVersion: v1
kind: Service
metadata: {name: masq-web}
spec:
  selector: {binding: masquerade}
  ports: [{port: 8081, targetPort: 80}]
`, "apply", "-n", ns, "-f", "-")

	c := crClient(t, s)
	for _, m := range vms {
		m.v = waitVMI(t, c, ns, "net-"+m.binding, "Running", func(v *virtv1.VirtualMachineInstance) bool {
			return v.Status.Phase == virtv1.Running
		})
		pods, err := s.Client.CoreV1().Pods(ns).List(ctxT(t, time.Minute), metav1.ListOptions{LabelSelector: "kubevirt.io/domain=net-" + m.binding})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("launcher pods of %s: %d, %v", m.binding, len(pods.Items), err)
		}
		m.podIP, m.podUID = pods.Items[0].Status.PodIP, string(pods.Items[0].UID)
		ifs := m.v.Status.Interfaces
		if len(ifs) != 1 || ifs[0].IP != m.podIP || ifs[0].Name != "default" || ifs[0].MAC == "" {
			t.Errorf("%s: status.interfaces = %+v, want default with the pod IP %s", m.binding, ifs, m.podIP)
		}
		if out := kubectl(t, s, "", "get", "vmi", m.v.Name, "-n", ns); !strings.Contains(out, m.podIP) {
			t.Errorf("%s: kubectl get vmi does not show the IP %s:\n%s", m.binding, m.podIP, out)
		}
	}

	// A server on this machine, on the pod network's gateway (the first
	// address of the pod range, on the bridge).
	_, podNet, err := net.ParseCIDR(s.PodCIDR())
	if err != nil {
		t.Fatal(err)
	}
	gateway := podNet.IP.To4()
	gateway[3]++
	hostSrv, err := net.Listen("tcp", net.JoinHostPort(gateway.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(hostSrv, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "hello-from-the-host") }))
	defer hostSrv.Close()

	consoleAddr := fmt.Sprintf("127.0.0.1:%d", s.ConsolePort)
	httpc := &http.Client{Timeout: 3 * time.Second}
	for i, m := range vms {
		other := vms[1-i]
		t.Run(m.binding, func(t *testing.T) {
			want := "GUEST-IP " + m.guestIP(m.podIP)
			logPath := filepath.Join(s.DataDir, "kubelet", "pods", m.podUID, "volumes", "kubernetes.io~empty-dir", "sockets", "serial0.log")
			framework.Eventually(t, 3*time.Minute, 250*time.Millisecond, func(context.Context) (bool, string) {
				body, _ := os.ReadFile(logPath)
				return strings.Contains(string(body), want), "no " + want + " on the console:\n" + lastLines(string(body), 12)
			})
			// From this machine: HTTP and ping at the pod IP.
			framework.Eventually(t, time.Minute, 500*time.Millisecond, func(context.Context) (bool, string) {
				resp, err := httpc.Get("http://" + m.podIP + "/")
				if err != nil {
					return false, err.Error()
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return strings.Contains(string(body), "virtkube test guest"), fmt.Sprintf("%s: %q", resp.Status, body)
			})
			if out, err := exec.Command("ping", "-c", "1", "-W", "3", m.podIP).CombinedOutput(); err != nil {
				t.Errorf("ping %s: %v\n%s", m.podIP, err, out)
			}
			// From the guest: the other guest (ping and HTTP), the host's
			// server, and (bridge guest) the other through its Service.
			sh := guestShell(t, s, consoleAddr, m.v)
			checks := []struct{ cmd, want string }{
				{"ping -c 1 -W 5 " + other.podIP + " >/dev/null && echo ping-$((1+1))-ok", "ping-2-ok"},
				{"timeout 10 wget -q -O - http://" + other.podIP + "/", "virtkube test guest"},
				{"timeout 10 wget -q -O - http://" + hostSrv.Addr().String() + "/", "hello-from-the-host"},
			}
			// (Services need kube-proxy, which an isolated test network's
			// server runs without.)
			if m.binding == "bridge" && s.KubeProxy() {
				svc, err := s.Client.CoreV1().Services(ns).Get(ctxT(t, time.Minute), "masq-web", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				checks = append(checks, struct{ cmd, want string }{"timeout 10 wget -q -O - http://" + svc.Spec.ClusterIP + ":8081/ | sed 's/test/tested/'", "virtkube tested guest"})
			}
			for _, ch := range checks {
				ok := false
				for attempt := 0; attempt < 3 && !ok; attempt++ {
					sh.send(t, ch.cmd)
					ok = sh.wait(ch.want, 20*time.Second)
				}
				if !ok {
					t.Errorf("in the %s guest, %q never printed %q", m.binding, ch.cmd, ch.want)
				}
			}
		})
	}

	for _, m := range vms {
		kubectl(t, s, "", "delete", "vmi", m.v.Name, "-n", ns, "--wait=true", "--timeout=2m")
		netns := "vk-" + strings.ReplaceAll(m.podUID, "-", "")[:8]
		framework.Eventually(t, time.Minute, 200*time.Millisecond, func(context.Context) (bool, string) {
			_, err := os.Stat(filepath.Join("/run/netns", netns))
			return os.IsNotExist(err), "network namespace " + netns + " left behind"
		})
	}
}
