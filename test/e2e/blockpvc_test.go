package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/test/framework"
)

// A claim in volumeMode Block, bound to a local PV on a loop device of the
// node, is handed to the guest as a block device: the launcher pod has it
// in volumeDevices at /dev/<volume>, the VMI's volumeStatus says Block, the
// guest sees a disk of the device's size, and what it writes there is on
// the loop device once the VMI is gone. The host's /dev gets no entry.
func TestBlockPVC(t *testing.T) {
	s := shared
	image := testGuestImage(t, s, "blockpvc")
	ns := s.Namespace(t)
	c := crClient(t, s)

	const size = 32 << 20
	loop, pv := loopBlockPV(t, s, ns, size)
	kubectl(t, s, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: raw}
spec:
  volumeMode: Block
  accessModes: [ReadWriteOnce]
  storageClassName: local-block
  volumeName: %s
  resources: {requests: {storage: 32Mi}}
`, pv), "apply", "-n", ns, "-f", "-")

	kubectl(t, s, guestWithClaim("blockvm", image, "raw"), "apply", "-n", ns, "-f", "-")
	v := waitVMI(t, c, ns, "blockvm", "Running and Ready", runningAndReady)

	var info *virtv1.PersistentVolumeClaimInfo
	for _, vs := range v.Status.VolumeStatus {
		if vs.Name == "data" {
			info = vs.PersistentVolumeClaimInfo
		}
	}
	if info == nil || info.ClaimName != "raw" || ptr.Deref(info.VolumeMode, "") != corev1.PersistentVolumeBlock {
		t.Errorf("status.volumeStatus of data: %+v; want claim raw in volumeMode Block", info)
	}
	pod := launcherPodOf(t, s, v)
	compute := pod.Spec.Containers[0]
	if len(compute.VolumeDevices) != 1 || compute.VolumeDevices[0] != (corev1.VolumeDevice{Name: "data", DevicePath: "/dev/data"}) {
		t.Errorf("compute container's volumeDevices = %+v, want data at /dev/data", compute.VolumeDevices)
	}
	for _, m := range compute.VolumeMounts {
		if m.Name == "data" {
			t.Errorf("the block claim is also mounted: %+v", m)
		}
	}

	sh := guestShell(t, s, fmt.Sprintf("127.0.0.1:%d", s.ConsolePort), v)
	serial, _ := os.ReadFile(filepath.Join(launcherSockets(t, s, v), "serial0.log"))
	if want := fmt.Sprintf("BLOCKDEV vdb %d", size); !strings.Contains(string(serial), want) {
		t.Errorf("the guest did not report %q:\n%s", want, lastLines(string(serial), 20))
	}
	sh.send(t, "echo block-$((6*7)) | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync 2>/dev/null && sync && echo written-$((1+1))")
	if !sh.wait("written-2", time.Minute) {
		t.Fatal("the guest did not write its marker into the block claim")
	}
	if _, err := os.Lstat("/dev/data"); err == nil {
		t.Error("/dev/data was made on the host")
	}
	kubectl(t, s, "", "delete", "vmi", "blockvm", "-n", ns, "--wait=true", "--timeout=3m")

	dev, err := os.Open(loop)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	marker := make([]byte, 8)
	if _, err := io.ReadFull(dev, marker); err != nil || string(marker) != "block-42" {
		t.Errorf("the loop device starts with %q (%v), want the guest's marker block-42", marker, err)
	}
}

// loopBlockPV makes a loop device of size bytes and a local PersistentVolume
// of it in volumeMode Block (class local-block) on the server's one node,
// removed when the test ends; it returns the device and the volume's name.
func loopBlockPV(t *testing.T, s *framework.Server, ns string, size int64) (loop, pv string) {
	t.Helper()
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	backing := filepath.Join(t.TempDir(), "block.img")
	f, err := os.Create(backing)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	loop = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	nodes, err := s.Client.CoreV1().Nodes().List(ctxT(t, time.Minute), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("want the server's one node: %v, %v", nodes, err)
	}
	node := nodes.Items[0].Labels[corev1.LabelHostname]
	pv = "block-" + ns
	t.Cleanup(func() {
		_ = s.Client.CoreV1().PersistentVolumes().Delete(ctxT(t, time.Minute), pv, metav1.DeleteOptions{})
	})
	kubectl(t, s, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata: {name: %s}
spec:
  capacity: {storage: %d}
  volumeMode: Block
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local-block
  local: {path: %s}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [%s]}
`, pv, size, loop, node), "apply", "-f", "-")
	return loop, pv
}

// A DataVolume in volumeMode Block is filled by its importer pod through
// the device (the http source's qcow2 converted onto it), and a clone from
// it into a filesystem claim copies the device; the loop device then starts
// with the image's bytes and the clone's disk.img with the same.
func TestDataVolumeBlock(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	c := cdiClient(t, s)
	const size = 32 << 20
	loop, pv := loopBlockPV(t, s, ns, size)

	content := bytes.Repeat([]byte("virtkube-block-dv\n"), 60000) // ~1 MiB
	raw := filepath.Join(t.TempDir(), "src.raw")
	if err := os.WriteFile(raw, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, raw+".qcow2").CombinedOutput(); err != nil {
		t.Fatalf("make qcow2: %v: %s", err, out)
	}
	srv := podNetworkServer(t, s, http.FileServer(http.Dir(filepath.Dir(raw))))
	kubectl(t, s, fmt.Sprintf(`apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: blockdv}
spec:
  source: {http: {url: "%s/src.raw.qcow2"}}
  pvc:
    volumeMode: Block
    accessModes: [ReadWriteOnce]
    storageClassName: local-block
    volumeName: %s
    resources: {requests: {storage: 32Mi}}
---
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: fromblock}
spec:
  source: {pvc: {namespace: %s, name: blockdv}}
  storage: {resources: {requests: {storage: 64Mi}}}
`, srv.URL, pv, ns), "apply", "-n", ns, "-f", "-")

	waitDataVolume(t, s, c, ns, "blockdv")
	dev, err := os.Open(loop)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(content))
	_, err = io.ReadFull(dev, got)
	dev.Close()
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("the loop device does not start with the image (%v)", err)
	}
	disk, err := os.ReadFile(waitDataVolume(t, s, c, ns, "fromblock"))
	if err != nil || len(disk) != 64<<20 || !bytes.Equal(disk[:len(content)], content) {
		t.Errorf("clone of the block DataVolume: %d bytes (%v); want 64 MiB starting with the image", len(disk), err)
	}
}
