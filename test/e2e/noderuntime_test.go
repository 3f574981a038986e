package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/domain"
	"github.com/virtkube/virtkube/internal/handler"
	"github.com/virtkube/virtkube/internal/launcherrpc"
	"github.com/virtkube/virtkube/internal/noderuntime"
	"github.com/virtkube/virtkube/internal/noderuntime/image"
	"github.com/virtkube/virtkube/test/containerdisk"
	"github.com/virtkube/virtkube/test/framework"
	"github.com/virtkube/virtkube/test/guest"
)

// The test's pod network: apart from the server's own (10.244.0.0/24 on
// virtkube0), so the two never meet.
const (
	rtNode    = "worker-rt"
	rtCIDR    = "10.250.0.0/24"
	rtBridge  = "vkt0"
	rtGateway = "10.250.0.1"
)

// nodeRuntime is the local pod runtime under test, run in the test process
// for a worker node; it can be restarted.
type nodeRuntime struct {
	t    *testing.T
	cfg  noderuntime.RuntimeConfig
	mu   sync.Mutex
	stop func()
}

func startNodeRuntime(t *testing.T, s *framework.Server) *nodeRuntime {
	t.Helper()
	// Short: unix socket paths under it must stay short.
	root, err := os.MkdirTemp("/tmp", "rt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	store, err := image.New(filepath.Join(root, "images"))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := framework.Binary()
	if err != nil {
		t.Fatal(err)
	}
	rt := &nodeRuntime{t: t, cfg: noderuntime.RuntimeConfig{
		NodeName: rtNode, PodCIDR: rtCIDR, Bridge: rtBridge, KubeletRoot: root,
		Images: store, Binary: bin, LauncherImagePrefix: "virtkube.local/virt-launcher:", Client: s.Client,
	}}
	t.Cleanup(func() {
		rt.halt()
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(root, "pods", "*", "logs", "*.log"))
			for _, l := range logs {
				body, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", l, body)
			}
		}
		// Whatever a failed test left: processes, namespaces, veths,
		// addresses, directories; then the test's bridge.
		r, err := noderuntime.NewRuntime(rt.cfg)
		if err == nil {
			err = r.RemoveAllPods()
		}
		if err != nil {
			t.Errorf("remove pods: %v", err)
		}
		if err := noderuntime.RemoveBridge(rtBridge); err != nil {
			t.Errorf("remove the test's bridge: %v", err)
		}
	})
	rt.start()
	return rt
}

// start runs a new Runtime on the same configuration and directories and
// waits until it has taken over the node.
func (rt *nodeRuntime) start() {
	rt.t.Helper()
	r, err := noderuntime.NewRuntime(rt.cfg)
	if err != nil {
		rt.t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(rt.t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var runErr error
	go func() {
		runErr = r.Run(ctx)
		close(done)
	}()
	rt.mu.Lock()
	rt.stop = func() {
		cancel()
		<-done
		if runErr != nil {
			rt.t.Errorf("node runtime: %v", runErr)
		}
	}
	rt.mu.Unlock()
	select {
	case <-r.Ready():
	case <-done:
		rt.t.Fatalf("node runtime ended: %v", runErr)
	case <-time.After(time.Minute):
		rt.t.Fatal("node runtime not ready within a minute")
	}
}

// halt stops the Runtime; the pods keep running.
func (rt *nodeRuntime) halt() {
	rt.mu.Lock()
	stop := rt.stop
	rt.stop = nil
	rt.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (rt *nodeRuntime) podDir(uid string) string {
	return filepath.Join(rt.cfg.KubeletRoot, "pods", uid)
}

// The local pod runtime runs launcher pods on its node the way kubelet
// would: a real guest boots in a pod with its own network namespace and
// address, survives a restart of the runtime, and everything made for it
// goes when the VMI is deleted.
func TestNodeRuntime(t *testing.T) {
	disk, err := guest.Disk()
	if err != nil {
		t.Fatal(err)
	}
	s := framework.Start(t)
	kubectl(t, s, "", "patch", "kv", "kubevirt", "-n", "kubevirt", "--type=merge",
		"-p", `{"spec":{"configuration":{"developerConfiguration":{"useEmulation":true}}}}`)
	worker(t, s, rtNode)
	rt := startNodeRuntime(t, s)
	startHandler(t, s, rtNode, rt.cfg.KubeletRoot)
	registry := containerdisk.StartRegistry(t)
	ref, err := containerdisk.Push(ctxT(t, time.Minute), registry, "test-guest", "v1", disk)
	if err != nil {
		t.Fatal(err)
	}
	c := crClient(t, s)

	t.Run("guest runs in a pod and everything goes with it", func(t *testing.T) {
		ns := s.Namespace(t)
		v := newVMI(ns, "rt-guest", rtNode, ref)
		v.Spec.TerminationGracePeriodSeconds = ptr.To[int64](20)
		begin := time.Now()
		if err := c.Create(ctxT(t, time.Minute), v); err != nil {
			t.Fatal(err)
		}
		v = waitVMIFor(t, c, ns, v.Name, 3*time.Minute, "Running and Ready", runningAndReady)
		t.Logf("VMI Running and Ready after %s", time.Since(begin).Round(time.Millisecond))
		pod := launcherPodOf(t, s, v)
		uid := string(pod.UID)
		short := strings.ReplaceAll(uid, "-", "")[:8]
		netnsName, veth := "vk-"+short, "vk"+short

		// The pod as kubelet reports it.
		if pod.Status.Phase != corev1.PodRunning {
			t.Errorf("pod phase %s, want Running", pod.Status.Phase)
		}
		_, cidr, _ := net.ParseCIDR(rtCIDR)
		podIP := net.ParseIP(pod.Status.PodIP)
		if podIP == nil || !cidr.Contains(podIP) || pod.Status.PodIP == rtGateway {
			t.Fatalf("podIP %q, want an address of %s", pod.Status.PodIP, rtCIDR)
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.State.Running == nil || !cs.Ready {
				t.Errorf("container %s: %+v", cs.Name, cs.State)
			}
			if cs.Name == "volumeroot" && !strings.Contains(cs.ImageID, "@sha256:") {
				t.Errorf("imageID of the containerDisk %q, want repo@digest", cs.ImageID)
			}
		}
		if _, err := os.Stat(filepath.Join(rt.cfg.KubeletRoot, "ipam", pod.Status.PodIP)); err != nil {
			t.Errorf("IP reservation: %v", err)
		}
		// The init container put container-disk in the pod and completed;
		// the containerDisk's container runs it from there.
		if ics := pod.Status.InitContainerStatuses; len(ics) != 1 || ics[0].State.Terminated == nil || ics[0].State.Terminated.ExitCode != 0 {
			t.Errorf("init containers: %+v", ics)
		}
		program := filepath.Join(rt.podDir(uid), "volumes/kubernetes.io~empty-dir/virt-bin-share-dir/container-disk")
		if out, err := exec.Command("pgrep", "-f", "^"+program+" --socket /var/run/kubevirt/container-disks/root.sock").Output(); err != nil || len(strings.Fields(string(out))) != 1 {
			t.Errorf("container-disk processes of the pod: %q, %v", out, err)
		}

		// Inside the pod: eth0 with the pod IP, a default route via the
		// bridge, and the host reachable through it.
		addrs := inNetns(t, netnsName, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
		if !strings.Contains(addrs, pod.Status.PodIP+"/24") {
			t.Errorf("eth0 in %s:\n%s", netnsName, addrs)
		}
		if link := inNetns(t, netnsName, "ip", "-o", "link", "show", "dev", "eth0"); !strings.Contains(link, "mtu 1500") || !strings.Contains(link, "state UP") {
			t.Errorf("eth0 in %s:\n%s", netnsName, link)
		}
		if routes := inNetns(t, netnsName, "ip", "-4", "route"); !strings.Contains(routes, "default via "+rtGateway+" dev eth0") {
			t.Errorf("routes in %s:\n%s", netnsName, routes)
		}
		l, err := net.Listen("tcp", rtGateway+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		go func() {
			conn, err := l.Accept()
			if err == nil {
				_, _ = conn.Write([]byte("from-host\n"))
				conn.Close()
			}
		}()
		got := inNetns(t, netnsName, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d; cat <&3", rtGateway, port))
		if strings.TrimSpace(got) != "from-host" {
			t.Errorf("TCP from the pod to the host: %q", got)
		}

		// The guest's console.
		sockets := handler.PodDirs{KubeletRoot: rt.cfg.KubeletRoot}.EmptyDir(pod.UID, "sockets")
		console, err := launcherrpc.DialUnix(ctxT(t, time.Minute), filepath.Join(sockets, domain.SerialSocket))
		if err != nil {
			t.Fatal(err)
		}
		defer console.Close()
		lines := consoleLines(console)
		if !waitLine(lines, guest.ReadyMarker, 3*time.Minute) {
			t.Fatal("no ready marker on the guest console")
		}
		t.Logf("guest ready after %s", time.Since(begin).Round(time.Millisecond))

		// The runtime restarts: the launcher is adopted, not started again
		// and not killed; the pod stays Running.
		pidBefore := readPid(t, filepath.Join(rt.podDir(uid), "compute.pid"))
		rt.halt()
		rt.start()
		framework.Eventually(t, 30*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
			p, err := s.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return p.Status.Phase == corev1.PodRunning && podReady(p), fmt.Sprintf("pod phase %s", p.Status.Phase)
		})
		if pidAfter := readPid(t, filepath.Join(rt.podDir(uid), "compute.pid")); pidAfter != pidBefore || syscall.Kill(pidBefore, 0) != nil {
			t.Errorf("launcher pid %d before the restart, %d after (alive: %v)", pidBefore, pidAfter, syscall.Kill(pidBefore, 0))
		}
		if v := getVMI(t, c, ns, v.Name); v.Status.Phase != virtv1.Running {
			t.Errorf("VMI %s after the runtime's restart", v.Status.Phase)
		}

		// Delete: the guest is stopped, the pod and the VMI go, and so does
		// everything made for the pod.
		deleted := time.Now()
		if err := c.Delete(ctxT(t, time.Minute), v); err != nil {
			t.Fatal(err)
		}
		if !waitLine(lines, guest.PoweroffMarker, time.Minute) {
			t.Error("no poweroff marker: the guest was not shut down gracefully on the VMI's deletion")
		}
		framework.Eventually(t, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
			_, err := s.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprintf("pod still there (%v)", err)
		})
		framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
			err := c.Get(ctx, client.ObjectKeyFromObject(v), &virtv1.VirtualMachineInstance{})
			return apierrors.IsNotFound(err), fmt.Sprintf("VMI still there (%v)", err)
		})
		t.Logf("pod and VMI gone %s after the delete", time.Since(deleted).Round(time.Millisecond))
		if procs := processesWith(domain.Name(v), string(v.UID), uid); len(procs) > 0 {
			t.Errorf("processes of the VMI still run: %v", procs)
		}
		if _, err := os.Lstat(filepath.Join("/run/netns", netnsName)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("netns %s left (%v)", netnsName, err)
		}
		if _, err := netlink.LinkByName(veth); err == nil {
			t.Errorf("veth %s left", veth)
		}
		if _, err := os.Lstat(rt.podDir(uid)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("pod dir left (%v)", err)
		}
		if _, err := os.Lstat(filepath.Join(rt.cfg.KubeletRoot, "ipam", pod.Status.PodIP)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("IP reservation left (%v)", err)
		}
	})

	t.Run("a pod that vanished while the runtime was down is removed when it starts", func(t *testing.T) {
		ns := s.Namespace(t)
		v := newVMI(ns, "rt-vanish", rtNode, ref)
		v.Spec.TerminationGracePeriodSeconds = ptr.To[int64](5)
		if err := c.Create(ctxT(t, time.Minute), v); err != nil {
			t.Fatal(err)
		}
		v = waitVMIFor(t, c, ns, v.Name, 3*time.Minute, "Running", func(v *virtv1.VirtualMachineInstance) bool {
			return v.Status.Phase == virtv1.Running
		})
		pod := launcherPodOf(t, s, v)
		uid := string(pod.UID)
		short := strings.ReplaceAll(uid, "-", "")[:8]
		if procs := processesWith(domain.Name(v)); len(procs) == 0 {
			t.Fatal("no QEMU process for the running VMI")
		}

		rt.halt()
		// Force deletion: the object goes at once, no kubelet asked.
		if err := s.Client.CoreV1().Pods(ns).Delete(ctxT(t, time.Minute), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, string) {
			_, err := s.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprintf("pod still there (%v)", err)
		})
		if procs := processesWith(domain.Name(v)); len(procs) == 0 {
			t.Fatal("the guest stopped while the runtime was down")
		}
		rt.start()
		framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
			if procs := processesWith(domain.Name(v), string(v.UID)); len(procs) > 0 {
				return false, fmt.Sprintf("processes still run: %v", procs)
			}
			for _, p := range []string{filepath.Join("/run/netns", "vk-"+short), rt.podDir(uid), filepath.Join(rt.cfg.KubeletRoot, "ipam", pod.Status.PodIP)} {
				if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
					return false, fmt.Sprintf("%s left (%v)", p, err)
				}
			}
			if _, err := netlink.LinkByName("vk" + short); err == nil {
				return false, "veth left"
			}
			return true, ""
		})
		// Without its pod, the VMI fails; deleting it finishes.
		waitVMIFor(t, c, ns, v.Name, time.Minute, "Failed", func(v *virtv1.VirtualMachineInstance) bool { return v.Status.Phase == virtv1.Failed })
		if err := c.Delete(ctxT(t, time.Minute), v); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("an image that cannot be pulled is explained on the VMI", func(t *testing.T) {
		ns := s.Namespace(t)
		missing := registry + "/test-guest:does-not-exist"
		v := newVMI(ns, "rt-nopull", rtNode, missing)
		if err := c.Create(ctxT(t, time.Minute), v); err != nil {
			t.Fatal(err)
		}
		v = waitVMIFor(t, c, ns, v.Name, 2*time.Minute, "Ready=False with a pull reason", func(v *virtv1.VirtualMachineInstance) bool {
			r := readyCondition(v)
			return r != nil && r.Status == corev1.ConditionFalse && (r.Reason == image.ReasonErrImagePull || r.Reason == "ImagePullBackOff")
		})
		if r := readyCondition(v); !strings.Contains(r.Message, "does-not-exist") {
			t.Errorf("the reason does not name the image: %+v", r)
		}
		pod := launcherPodOf(t, s, v)
		if pod.Status.Phase != corev1.PodPending {
			t.Errorf("pod phase %s, want Pending", pod.Status.Phase)
		}
		if err := c.Delete(ctxT(t, time.Minute), v); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
			_, err := s.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprintf("pod still there (%v)", err)
		})
		if _, err := os.Lstat(rt.podDir(string(pod.UID))); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("pod dir left (%v)", err)
		}
	})
}

// waitVMIFor is waitVMI with a deadline of one's own: guests boot under
// software emulation here.
func waitVMIFor(t *testing.T, c client.Client, ns, name string, timeout time.Duration, what string, check func(*virtv1.VirtualMachineInstance) bool) *virtv1.VirtualMachineInstance {
	t.Helper()
	v := &virtv1.VirtualMachineInstance{}
	framework.Eventually(t, timeout, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, v); err != nil {
			return false, err.Error()
		}
		return check(v), fmt.Sprintf("want %s; phase=%s reason=%q conditions=%+v", what, v.Status.Phase, v.Status.Reason, v.Status.Conditions)
	})
	return v
}

func getVMI(t *testing.T, c client.Client, ns, name string) *virtv1.VirtualMachineInstance {
	t.Helper()
	v := &virtv1.VirtualMachineInstance{}
	if err := c.Get(ctxT(t, time.Minute), client.ObjectKey{Namespace: ns, Name: name}, v); err != nil {
		t.Fatal(err)
	}
	return v
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// inNetns runs a command in the named network namespace and returns its
// output.
func inNetns(t *testing.T, netns string, args ...string) string {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + netns, "--"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", netns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// consoleLines delivers the console's lines until it closes.
func consoleLines(r io.Reader) <-chan string {
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

// waitLine reports whether a line containing want arrives within timeout.
func waitLine(lines <-chan string, want string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				return false
			}
			if strings.Contains(line, want) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(body))[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// processesWith lists running processes whose command line contains any of
// the words.
func processesWith(words ...string) []string {
	entries, _ := os.ReadDir("/proc")
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		line := strings.ReplaceAll(string(cmdline), "\x00", " ")
		for _, w := range words {
			if strings.Contains(line, w) {
				found = append(found, e.Name()+": "+line)
				break
			}
		}
	}
	return found
}
