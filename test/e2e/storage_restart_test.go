package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	virtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/test/framework"
)

// What a guest wrote to its claim is there after `virtkube server` crashes.
// A SIGKILL of the server leaves the VM's launcher and QEMU running (they
// are the pod's, in process groups of their own): the next start adopts
// them, and the same VMI goes on, Running, with the same QEMU. A power cut
// (the server and every process of the pod killed at once) ends the VMI;
// the VM controller starts a new one, whose fresh boot reads the marker
// back from the same volume. Deleting the VM and the claim removes the
// volume's directory.
func TestClaimDataSurvivesServerRestart(t *testing.T) {
	s := framework.Start(t)
	image := testGuestImage(t, s, "storage-restart")
	ns := s.Namespace(t)
	c := crClient(t, s)
	consoleAddr := fmt.Sprintf("127.0.0.1:%d", s.ConsolePort)

	kubectl(t, s, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: keeper}
spec:
  runStrategy: Always
  template:
    spec:
      domain:
        resources: {requests: {memory: 128Mi}}
        devices:
          disks:
          - {name: root, disk: {bus: virtio}}
          - {name: data, disk: {bus: virtio}}
      volumes:
      - {name: root, containerDisk: {image: %s}}
      - {name: data, persistentVolumeClaim: {claimName: data}}
`, image), "apply", "-n", ns, "-f", "-")

	v := waitVMIFor(t, c, ns, "keeper", 5*time.Minute, "Running and Ready", runningAndReady)
	pvc, err := s.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctxT(t, time.Minute), "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	volume := pvc.Spec.VolumeName
	if pvc.Status.Phase != corev1.ClaimBound || volume == "" {
		t.Fatalf("claim with a running VM: phase %s, volume %q; want Bound", pvc.Status.Phase, volume)
	}
	dir := filepath.Join(s.DataDir, "hpvolumes", "csi", volume)
	sh := guestShell(t, s, consoleAddr, v)
	sh.send(t, "echo kept-$((6*7)) | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync 2>/dev/null && sync && echo written-$((1+1))")
	if !sh.wait("written-2", time.Minute) {
		t.Fatal("the guest did not write its marker into the claim's disk")
	}
	pod := launcherPodOf(t, s, v)
	netns := podNetns(pod.UID)
	// The pod's cgroups: one per v1 hierarchy, or one under v2.
	cgroups, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", "virtkube", string(pod.UID)))
	if v2 := filepath.Join("/sys/fs/cgroup", "virtkube", string(pod.UID)); len(cgroups) == 0 {
		cgroups = append(cgroups, v2)
	}
	for _, dir := range cgroups {
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("the launcher pod's cgroup: %v", err)
		}
	}
	qemu := qemuOf(t, netnsProcesses(t, netns))

	// The server crashes; the pod's processes go on without it.
	s.Kill()
	if !processAlive(qemu) {
		t.Fatalf("QEMU (pid %d) died with the server; the pod's processes should outlive it", qemu)
	}
	restartServer(t, s)
	after := waitVMIFor(t, c, ns, "keeper", 5*time.Minute, "Running and Ready", runningAndReady)
	if after.UID != v.UID {
		t.Errorf("after a server crash the VM has a new VMI (%s, was %s); the running one should have been kept", after.UID, v.UID)
	}
	if got := qemuOf(t, netnsProcesses(t, netns)); got != qemu {
		t.Errorf("after a server crash the pod's QEMU is pid %d, was %d: it should have been adopted, not started again", got, qemu)
	}
	if all := processesWith("guest=" + ns + "_keeper"); len(all) != 1 {
		t.Errorf("QEMU processes of the VM after a server crash: want one, have:\n%s", strings.Join(all, "\n"))
	}
	expectClaimOn(t, s, ns, "data", volume)
	// The console goes through the new server to the adopted launcher.
	sh = guestShell(t, s, consoleAddr, after)
	sh.send(t, "echo read-$(dd if=/dev/vdb bs=7 count=1 2>/dev/null)-live")
	if !sh.wait("read-kept-42-live", time.Minute) {
		t.Error("the guest running across the server crash did not read its marker")
	}

	// A power cut: the server and all the pod's processes die at once, and
	// what lives in memory only goes with them: the pod's network
	// namespace (/run is a tmpfs) and its cgroups.
	s.Kill()
	old := netnsProcesses(t, netns)
	for pid := range old {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	framework.Eventually(t, time.Minute, 100*time.Millisecond, func(context.Context) (bool, string) {
		for pid := range old {
			if processAlive(pid) {
				return false, fmt.Sprintf("pid %d (%s) still runs after SIGKILL", pid, old[pid])
			}
		}
		return true, ""
	})
	if out, err := exec.Command("ip", "netns", "delete", netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns delete %s: %v: %s", netns, err, out)
	}
	for _, dir := range cgroups {
		// Co-mounted hierarchies show one group under two names.
		if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
			t.Fatalf("remove the pod's cgroup: %v", err)
		}
	}
	restartServer(t, s)
	fresh := waitVMIFor(t, c, ns, "keeper", 5*time.Minute, "a new VMI Running and Ready", func(v *virtv1.VirtualMachineInstance) bool {
		return v.UID != after.UID && runningAndReady(v)
	})
	waitVM(t, c, ns, "keeper", time.Minute, "Running and ready", func(vm *virtv1.VirtualMachine) bool {
		return vm.Status.PrintableStatus == virtv1.VirtualMachineStatusRunning && vm.Status.Ready
	})
	expectClaimOn(t, s, ns, "data", volume)
	sh = guestShell(t, s, consoleAddr, fresh)
	sh.send(t, "echo read-$(dd if=/dev/vdb bs=7 count=1 2>/dev/null)-back")
	if !sh.wait("read-kept-42-back", time.Minute) {
		t.Error("the VM booted after the power cut did not read the marker from its claim")
	}
	// Nothing of the dead pod stays or comes back: its Pod, its directory,
	// its network namespace and cgroups.
	leftovers := append(cgroups, filepath.Join("/run/netns", netns), filepath.Join(s.DataDir, "kubelet", "pods", string(pod.UID)))
	framework.Eventually(t, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		for _, p := range leftovers {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				return false, fmt.Sprintf("%s of the dead launcher pod left behind (%v)", p, err)
			}
		}
		if _, err := s.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("dead launcher pod %s still there (%v)", pod.Name, err)
		}
		return true, ""
	})

	// Reclaim: the VM goes, then the claim; its volume and directory follow.
	kubectl(t, s, "", "delete", "vm", "keeper", "-n", ns, "--wait=true", "--timeout=3m")
	framework.Eventually(t, 3*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "keeper"}, &virtv1.VirtualMachineInstance{})
		return apierrors.IsNotFound(err), fmt.Sprintf("VMI keeper still there after its VM was deleted (%v)", err)
	})
	if _, err := os.Stat(filepath.Join(dir, "disk.img")); err != nil {
		t.Errorf("the claim's disk went with the VM: %v", err)
	}
	kubectl(t, s, "", "delete", "pvc", "data", "-n", ns, "--wait=true", "--timeout=2m")
	framework.Eventually(t, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		if _, err := s.Client.CoreV1().PersistentVolumes().Get(ctx, volume, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("PV %s still there (%v)", volume, err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			return false, fmt.Sprintf("volume directory %s still there (%v)", dir, err)
		}
		return true, ""
	})
}

// A DataVolume with source pvc copies the claim's disk into a claim of
// its own size (or, into spec.storage with no size, the source's), in the
// source's namespace or another one. As CDI's, a clone waits while its
// source claim does not exist (Pending, event CloneWithoutSource) or a pod
// uses it (CloneScheduled, event CloneSourceInUse), and makes no claim of
// its own before it can copy.
func TestDataVolumeClone(t *testing.T) {
	s := shared
	c := cdiClient(t, s)
	ns, other := s.Namespace(t), s.Namespace(t)

	content := bytes.Repeat([]byte("virtkube-clone!\n"), 65536) // 1 MiB
	srv := podNetworkServer(t, s, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(content) }))
	kubectl(t, s, fmt.Sprintf(`apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: source}
spec:
  source: {http: {url: "%[1]s/disk.img"}}
  storage: {resources: {requests: {storage: 32Mi}}}
---
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: copy}
spec:
  source: {pvc: {namespace: %[2]s, name: source}}
  storage: {resources: {requests: {storage: 64Mi}}}
---
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: orphan}
spec:
  source: {pvc: {namespace: %[2]s, name: later}}
  storage: {resources: {requests: {storage: 32Mi}}}
---
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: sizeless}
spec:
  source: {pvc: {namespace: %[2]s, name: source}}
  storage: {}
`, srv.URL, ns), "apply", "-n", ns, "-f", "-")
	kubectl(t, s, fmt.Sprintf(`apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: copy}
spec:
  source: {pvc: {namespace: %s, name: source}}
  pvc:
    accessModes: [ReadWriteOnce]
    resources: {requests: {storage: 32Mi}}
`, ns), "apply", "-n", other, "-f", "-")

	expectDisk := func(path string, size int) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil || len(got) != size || !bytes.Equal(got[:len(content)], content) || bytes.Count(got[len(content):], []byte{0}) != size-len(content) {
			t.Errorf("%s: %d bytes (%v), starts with the source's bytes: %v; want %d bytes: the source's, then zeros",
				path, len(got), err, bytes.HasPrefix(got, content), size)
		}
	}
	expectDisk(waitDataVolume(t, s, c, ns, "source"), 32<<20)
	expectDisk(waitDataVolume(t, s, c, ns, "copy"), 64<<20)
	expectDisk(waitDataVolume(t, s, c, other, "copy"), 32<<20)
	// A clone into spec.storage with no size takes the source claim's, as
	// CDI's storage API does.
	expectDisk(waitDataVolume(t, s, c, ns, "sizeless"), 32<<20)
	if got := kubectl(t, s, "", "get", "pvc", "sizeless", "-n", ns, "-o", "jsonpath={.spec.resources.requests.storage}"); got != "32Mi" {
		t.Errorf("claim of the clone without a size requests %q, want the source's 32Mi", got)
	}
	if out := kubectl(t, s, "", "get", "dv", "copy", "-n", other); !strings.Contains(out, "Succeeded") || !strings.Contains(out, "100.0%") {
		t.Errorf("kubectl get dv copy: want Succeeded at 100.0%%:\n%s", out)
	}

	// The clone of a claim that does not exist: no claim of its own yet,
	// Pending, and an event naming the missing claim, as CDI.
	waitEvent := func(object, reason, says string) {
		t.Helper()
		framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
			events, err := s.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + object})
			if err != nil {
				return false, err.Error()
			}
			var seen []string
			for _, e := range events.Items {
				if e.Reason == reason && strings.Contains(e.Message, says) {
					return true, ""
				}
				seen = append(seen, e.Reason+": "+e.Message)
			}
			return false, fmt.Sprintf("no %s event saying %q for %s; events: %q", reason, says, object, seen)
		})
	}
	expectHeld := func(phase cdiv1.DataVolumePhase, reason string) {
		t.Helper()
		dv := &cdiv1.DataVolume{}
		if err := c.Get(ctxT(t, time.Minute), client.ObjectKey{Namespace: ns, Name: "orphan"}, dv); err != nil {
			t.Fatal(err)
		}
		var ready cdiv1.DataVolumeCondition
		for _, cond := range dv.Status.Conditions {
			if cond.Type == cdiv1.DataVolumeReady {
				ready = cond
			}
		}
		if dv.Status.Phase != phase || dv.Status.RestartCount != 0 || ready.Status != corev1.ConditionFalse || ready.Reason != reason {
			t.Errorf("DataVolume orphan: phase %s, restarts %d, Ready %+v; want %s, 0, False with reason %s", dv.Status.Phase, dv.Status.RestartCount, ready, phase, reason)
		}
		if _, err := s.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctxT(t, time.Minute), "orphan", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("claim orphan exists while its clone waits for the source (%v); want none", err)
		}
	}
	waitEvent("orphan", "CloneWithoutSource", "The source pvc later doesn't exist")
	expectHeld(cdiv1.Pending, "CloneWithoutSource")

	// The source appears (a DataVolume of that name) while a pod uses it
	// (one that never runs: no node matches): the clone waits, as CDI's
	// does, CloneScheduled, until the pod is gone; then it goes on.
	kubectl(t, s, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: holder}
spec:
  nodeSelector: {kubernetes.io/hostname: no-such-node}
  containers: [{name: c, image: registry.invalid/none}]
  volumes: [{name: disk, persistentVolumeClaim: {claimName: later}}]
---
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: later}
spec:
  source: {http: {url: "%s/disk.img"}}
  storage: {resources: {requests: {storage: 16Mi}}}
`, srv.URL), "apply", "-n", ns, "-f", "-")
	expectDisk(waitDataVolume(t, s, c, ns, "later"), 16<<20)
	waitEvent("orphan", "CloneSourceInUse", "pod "+ns+"/holder using PersistentVolumeClaim later")
	expectHeld(cdiv1.CloneScheduled, "CloneSourceInUse")
	kubectl(t, s, "", "delete", "pod", "holder", "-n", ns, "--wait=true", "--timeout=1m")
	expectDisk(waitDataVolume(t, s, c, ns, "orphan"), 32<<20)
}

// restartServer starts s again on its data dir.
func restartServer(t *testing.T, s *framework.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("server restarted in %s", s.StartupTime.Round(time.Millisecond))
}

// expectClaimOn checks the claim is Bound to volume, and the volume to it.
func expectClaimOn(t *testing.T, s *framework.Server, ns, name, volume string) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	pvc, err := s.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != volume {
		t.Errorf("claim %s: phase %s, volume %q; want Bound to %s", name, pvc.Status.Phase, pvc.Spec.VolumeName, volume)
	}
	pv, err := s.Client.CoreV1().PersistentVolumes().Get(ctx, volume, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Status.Phase != corev1.VolumeBound || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != pvc.UID {
		t.Errorf("volume %s: phase %s, claim %+v; want Bound to %s/%s", volume, pv.Status.Phase, pv.Spec.ClaimRef, ns, name)
	}
}

// podNetns is the name of a pod's network namespace under /run/netns.
func podNetns(uid types.UID) string {
	return "vk-" + strings.ReplaceAll(string(uid), "-", "")[:8]
}

// netnsProcesses lists the processes (pid: command line) in the named
// network namespace: a launcher pod's processes, QEMU among them.
func netnsProcesses(t *testing.T, netns string) map[int]string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", netns), &st); err != nil {
		t.Fatalf("network namespace %s: %v", netns, err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	entries, _ := os.ReadDir("/proc")
	found := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net")); err != nil || link != want {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		found[pid] = strings.ReplaceAll(string(cmdline), "\x00", " ")
	}
	return found
}

// qemuOf is the one QEMU among procs.
func qemuOf(t *testing.T, procs map[int]string) int {
	t.Helper()
	var pids []int
	for pid, cmd := range procs {
		if strings.Contains(cmd, "qemu-system") {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 1 {
		slices.Sort(pids)
		t.Fatalf("want one QEMU in the launcher pod, have %v of %v", pids, procs)
	}
	return pids[0]
}

// processAlive reports whether pid runs (and is no zombie).
func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}
