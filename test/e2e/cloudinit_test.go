package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/test/framework"
	"github.com/virtkube/virtkube/test/guest"
)

// A ConfigDrive whose user data is in a Secret (secretRef): the launcher
// pod mounts the Secret, the launcher builds the config-2 ISO from it, and
// the guest prints the value it read.
func TestCloudInitUserDataFromSecret(t *testing.T) {
	s := shared
	ctx := ctxT(t, 5*time.Minute)
	ref := testGuestImage(t, s, "secret")
	ns := s.Namespace(t)
	kubectl(t, s, "", "create", "secret", "generic", "guest-userdata", "-n", ns,
		"--from-literal=userdata=#cloud-config\nvirtkube-marker: from-a-secret\n")
	kubectl(t, s, `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: secret-ci}
spec:
  terminationGracePeriodSeconds: 5
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
      - {name: root, disk: {bus: virtio}}
      - {name: ci, disk: {bus: virtio}}
  volumes:
  - {name: root, containerDisk: {image: `+ref+`}}
  - {name: ci, cloudInitConfigDrive: {secretRef: {name: guest-userdata}}}
`, "apply", "-n", ns, "-f", "-")
	c := crClient(t, s)
	v := waitVMI(t, c, ns, "secret-ci", "Running", func(v *virtv1.VirtualMachineInstance) bool {
		return v.Status.Phase == virtv1.Running
	})
	pods, err := s.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubevirt.io/domain=secret-ci"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("launcher pods: %d, %v", len(pods.Items), err)
	}
	pod := pods.Items[0]
	logPath := filepath.Join(s.DataDir, "kubelet", "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "sockets", "serial0.log")
	framework.Eventually(t, 3*time.Minute, 250*time.Millisecond, func(context.Context) (bool, string) {
		body, _ := os.ReadFile(logPath)
		return strings.Contains(string(body), guest.UserMarkerPrefix+"from-a-secret"),
			"the guest's console has not shown the user data from the secret:\n" + lastLines(string(body), 15)
	})
	kubectl(t, s, "", "delete", "vmi", v.Name, "-n", ns, "--wait=true", "--timeout=2m")
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		_, err := os.Stat(filepath.Join(s.DataDir, "kubelet", "pods", string(pod.UID)))
		return os.IsNotExist(err), "pod directory (with the secret's copy) left behind"
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
