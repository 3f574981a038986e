package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtkube/virtkube/test/framework"
)

// hostDisk needs the HostDisk feature gate, as in KubeVirt: without it the
// VMI is refused with the gate and the field named; with the seed's spelling
// (HardDisk) it runs, and the guest sees a disk of the requested capacity,
// created on the node.
func TestHostDiskNeedsItsFeatureGate(t *testing.T) {
	s := framework.Start(t)
	ctx := ctxT(t, 5*time.Minute)
	ref := testGuestImage(t, s, "hostdisk")
	hostPath := filepath.Join(t.TempDir(), "data", "disk.img")
	manifest := func(name string) string {
		return fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: %s}
spec:
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
      - {name: root, disk: {bus: virtio}}
      - {name: harddrive, disk: {bus: virtio}}
  volumes:
  - {name: root, containerDisk: {image: %s}}
  - {name: harddrive, hostDisk: {capacity: 1Gi, path: %s, type: DiskOrCreate}}
`, name, ref, hostPath)
	}
	ns := s.Namespace(t)
	c := crClient(t, s)

	// Without the gate, admission refuses the VMI and says which gate and
	// which volume; nothing is created on the node.
	_, stderr, err := s.Kubectl(ctx, strings.NewReader(manifest("nogate")), "apply", "-n", ns, "-f", "-")
	if err == nil || !strings.Contains(stderr, "spec.volumes[1].hostDisk") || !strings.Contains(stderr, "HostDisk feature gate is not enabled") {
		t.Errorf("a hostDisk VMI without the gate: %v\n%s", err, stderr)
	}
	if _, err := os.Stat(hostPath); err == nil {
		t.Error("a hostDisk was created although its feature gate is off")
	}

	gates, err := os.ReadFile("../testdata/seed/kubevirt-feature-gates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, string(gates), "apply", "-f", "-")
	kubectl(t, s, manifest("withgate"), "apply", "-n", ns, "-f", "-")
	v := waitVMI(t, c, ns, "withgate", "Running and Ready", runningAndReady)
	info, err := os.Stat(hostPath)
	if err != nil || info.Size() != 1<<30 {
		t.Fatalf("hostDisk on the node: %v; want a 1Gi file at %s", err, hostPath)
	}
	// The guest lists its disks on its console at boot (kept in the pod's
	// serial log).
	pod := launcherPodOf(t, s, v)
	logPath := filepath.Join(s.DataDir, "kubelet", "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "sockets", "serial0.log")
	want := fmt.Sprintf("BLOCKDEV vdb %d", 1<<30)
	framework.Eventually(t, 3*time.Minute, 200*time.Millisecond, func(context.Context) (bool, string) {
		body, err := os.ReadFile(logPath)
		return err == nil && strings.Contains(string(body), want), "console has no " + want
	})
	out := kubectl(t, s, "", "get", "events", "-n", ns, "--field-selector", "reason=FeatureGateMisspelt")
	if !strings.Contains(out, `spell it "HostDisk"`) {
		t.Errorf("no warning about the HardDisk spelling:\n%s", out)
	}
}
