package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/virtkube/virtkube/test/framework"
)

// A claim on the server's default StorageClass (hostpath-csi, bound on first
// use) is bound once the launcher pod of the VMI using it is scheduled; the
// guest sees it as a disk of the claim's size, and what it writes there is
// read back by the next VMI on the claim. Deleting the claim removes its
// directory from the storage pool.
func TestStorageClaimOutlivesVMI(t *testing.T) {
	s := shared
	ctx := ctxT(t, 10*time.Minute)
	image := testGuestImage(t, s, "storage")
	ns := s.Namespace(t)
	c := crClient(t, s)

	out := kubectl(t, s, "", "get", "storageclass")
	if !strings.Contains(out, "hostpath-csi (default)") || !strings.Contains(out, "kubevirt.io.hostpath-provisioner") || !strings.Contains(out, "WaitForFirstConsumer") {
		t.Errorf("kubectl get storageclass: want hostpath-csi as the default class:\n%s", out)
	}

	const size = 64 << 20
	kubectl(t, s, `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
`, "apply", "-n", ns, "-f", "-")
	// WaitForFirstConsumer: nothing is made before a pod uses the claim.
	pvc, err := s.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != corev1.ClaimPending || pvc.Spec.VolumeName != "" || ptrString(pvc.Spec.StorageClassName) != "hostpath-csi" {
		t.Errorf("claim before any consumer: phase %s, volume %q, class %q; want Pending, none, hostpath-csi",
			pvc.Status.Phase, pvc.Spec.VolumeName, ptrString(pvc.Spec.StorageClassName))
	}

	consoleAddr := fmt.Sprintf("127.0.0.1:%d", s.ConsolePort)

	// First boot: the claim binds to a volume in the default pool, the
	// guest sees a 64 MiB vdb and writes a marker into it.
	kubectl(t, s, guestWithClaim("writer", image, "data"), "apply", "-n", ns, "-f", "-")
	v := waitVMI(t, c, ns, "writer", "Running and Ready", runningAndReady)
	pvc, err = s.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != "pvc-"+string(pvc.UID) {
		t.Fatalf("claim with a running consumer: phase %s, volume %q; want Bound to pvc-%s", pvc.Status.Phase, pvc.Spec.VolumeName, pvc.UID)
	}
	pv, err := s.Client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.DataDir, "hpvolumes", "csi", pv.Name)
	if pv.Spec.HostPath == nil || pv.Spec.HostPath.Path != dir {
		t.Errorf("PV source = %+v, want hostPath %s", pv.Spec.PersistentVolumeSource, dir)
	}
	if fi, err := os.Stat(filepath.Join(dir, "disk.img")); err != nil || fi.Size() != size {
		t.Errorf("disk.img in the pool: %v, %v; want %d bytes", fi, err, size)
	}
	sh := guestShell(t, s, consoleAddr, v)
	serial, _ := os.ReadFile(filepath.Join(launcherSockets(t, s, v), "serial0.log"))
	if want := fmt.Sprintf("BLOCKDEV vdb %d", size); !strings.Contains(string(serial), want) {
		t.Errorf("the guest did not report %q:\n%s", want, lastLines(string(serial), 20))
	}
	sh.send(t, "echo data-$((6*7)) | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync 2>/dev/null && sync && echo written-$((1+1))")
	if !sh.wait("written-2", time.Minute) {
		t.Fatal("the guest did not write its marker into the claim's disk")
	}
	kubectl(t, s, "", "delete", "vmi", "writer", "-n", ns, "--wait=true", "--timeout=3m")

	// Second boot, a new VMI on the same claim: the marker is there.
	kubectl(t, s, guestWithClaim("reader", image, "data"), "apply", "-n", ns, "-f", "-")
	v = waitVMI(t, c, ns, "reader", "Running and Ready", runningAndReady)
	sh = guestShell(t, s, consoleAddr, v)
	sh.send(t, "echo read-$(dd if=/dev/vdb bs=7 count=1 2>/dev/null)-back")
	if !sh.wait("read-data-42-back", time.Minute) {
		t.Error("the second VMI did not read the first one's marker from the claim")
	}
	kubectl(t, s, "", "delete", "vmi", "reader", "-n", ns, "--wait=true", "--timeout=3m")

	// Deleting the claim releases its volume: the PV and its directory go.
	kubectl(t, s, "", "delete", "pvc", "data", "-n", ns, "--wait=true", "--timeout=2m")
	framework.Eventually(t, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		if _, err := s.Client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("PV %s still there (%v)", pv.Name, err)
		}
		if _, err := os.Stat(dir); err == nil {
			return false, "volume directory " + dir + " still there"
		}
		return true, ""
	})
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// guestWithClaim is a VMI of the test guest (containerDisk image) with
// claim as its second virtio disk, vdb.
func guestWithClaim(name, image, claim string) string {
	return fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: %s}
spec:
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
      - {name: root, disk: {bus: virtio}}
      - {name: data, disk: {bus: virtio}}
  volumes:
  - {name: root, containerDisk: {image: %s}}
  - {name: data, persistentVolumeClaim: {claimName: %s}}
`, name, image, claim)
}
