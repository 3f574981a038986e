package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/virtkube/virtkube/test/framework"
	"github.com/virtkube/virtkube/test/guest"
)

// The seed walkthrough on virtkube alone: `kubectl apply` the seed's
// testvmi-nocloud2 (image swapped for the test guest, pushed to a registry on
// loopback) and virtkube server's own node pulls it, starts the launcher pod
// with an IP from the podCIDR, boots the guest and reports the VMI Running
// and Ready; the console (through virt-handler's console server) shows the
// guest, its user data and the 2Gi emptyDisk; deleting the VMI shuts the
// guest down and leaves nothing behind.
func TestSeedVMIBootsOnTheServersNode(t *testing.T) {
	s := shared
	ctx := ctxT(t, 5*time.Minute)
	ref := testGuestImage(t, s, "seed")
	seed, err := os.ReadFile("../testdata/seed/testvmi-nocloud2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	manifest := strings.NewReplacer(
		"kubevirt/fedora-cloud-container-disk-demo:latest", ref,
		"password: fedora", "virtkube-marker: from-the-seed",
	).Replace(string(seed))
	ns := s.Namespace(t)

	created := time.Now()
	kubectl(t, s, manifest, "apply", "-n", ns, "-f", "-")
	c := crClient(t, s)
	v := waitVMI(t, c, ns, "testvmi-nocloud2", "Running and Ready", runningAndReady)
	t.Logf("create to Running/Ready: %s", time.Since(created).Round(time.Millisecond))

	node := strings.ToLower(hostname(t))
	if v.Status.NodeName != node {
		t.Errorf("nodeName = %q, want this machine's node %q", v.Status.NodeName, node)
	}
	pods, err := s.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubevirt.io/domain=testvmi-nocloud2"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("launcher pods: %v, %v", len(pods.Items), err)
	}
	pod := pods.Items[0]
	_, podNet, err := net.ParseCIDR(s.PodCIDR())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pod.Name, "virt-launcher-testvmi-nocloud2-") || pod.Status.Phase != corev1.PodRunning || !podNet.Contains(net.ParseIP(pod.Status.PodIP)) {
		t.Errorf("launcher pod %s: phase %s, IP %q; want Running with an IP in %s", pod.Name, pod.Status.Phase, pod.Status.PodIP, podNet)
	}
	out := kubectl(t, s, "", "get", "vmi", "-n", ns)
	if !strings.Contains(out, "testvmi-nocloud2") || !strings.Contains(out, "Running") || !strings.Contains(out, node) {
		t.Errorf("kubectl get vmi:\n%s", out)
	}
	// Everything of the pod, QEMU included, runs in the pod's cgroup.
	qemu, _ := exec.Command("pgrep", "-f", "guest="+ns+"_testvmi-nocloud2").Output()
	fields := strings.Fields(string(qemu))
	if len(fields) == 0 {
		t.Fatal("no QEMU process for the VMI")
	}
	cgroups, _ := os.ReadFile("/proc/" + fields[0] + "/cgroup")
	if !strings.Contains(string(cgroups), "/virtkube/"+string(pod.UID)) {
		t.Errorf("QEMU is not in the pod's cgroup:\n%s", cgroups)
	}

	// The console, as virt-api reaches it.
	console, err := dialConsole(t, s, fmt.Sprintf("127.0.0.1:%d", s.ConsolePort), "virt-api-client", ns, "testvmi-nocloud2")
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	_ = console.SetReadDeadline(time.Now().Add(3 * time.Minute))
	want := map[string]bool{
		guest.ReadyMarker:                        false,
		guest.UserMarkerPrefix + "from-the-seed": false,
		fmt.Sprintf("BLOCKDEV vdb %d", 2<<30):    false,
	}
	// The console socket shows what the guest prints from now on; the
	// serial log has what it printed before we connected.
	logPath := filepath.Join(s.DataDir, "kubelet", "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "sockets", "serial0.log")
	if body, err := os.ReadFile(logPath); err == nil {
		markSeen(want, bufio.NewScanner(strings.NewReader(string(body))))
	}
	sc := wsLines(console)
	for !allSeen(want) && sc.Scan() {
		markSeen(want, bufio.NewScanner(strings.NewReader(sc.Text())))
	}
	for line, seen := range want {
		if !seen {
			t.Errorf("the console never showed %q", line)
		}
	}
	t.Logf("create to guest marker: %s", time.Since(created).Round(time.Millisecond))

	// Delete: graceful shutdown, then nothing left.
	deleted := time.Now()
	kubectl(t, s, "", "delete", "vmi", "testvmi-nocloud2", "-n", ns, "--wait=true", "--timeout=3m")
	t.Logf("delete to gone: %s", time.Since(deleted).Round(time.Millisecond))
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		_, err := s.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return err != nil, "launcher pod still there"
	})
	if body, err := os.ReadFile(logPath); err == nil && !strings.Contains(string(body), guest.PoweroffMarker) {
		t.Error("the guest was not powered off gracefully")
	}
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		if _, err := os.Stat(filepath.Join(s.DataDir, "kubelet", "pods", string(pod.UID))); err == nil {
			return false, "pod directory left behind"
		}
		if out, _ := exec.Command("pgrep", "-f", "guest="+ns+"_testvmi-nocloud2").Output(); len(out) > 0 {
			return false, "QEMU still running: " + string(out)
		}
		if out, _ := exec.Command("pgrep", "-f", "--uid "+string(v.UID)).Output(); len(out) > 0 {
			return false, "launcher still running: " + string(out)
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory/virtkube", string(pod.UID))); err == nil {
			return false, "pod cgroup left behind"
		}
		return true, ""
	})
}

func markSeen(want map[string]bool, sc *bufio.Scanner) {
	for sc.Scan() {
		for line := range want {
			if strings.Contains(sc.Text(), line) {
				want[line] = true
			}
		}
	}
}

func allSeen(want map[string]bool) bool {
	for _, seen := range want {
		if !seen {
			return false
		}
	}
	return true
}
