package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/handler"
	"github.com/virtkube/virtkube/test/framework"
	"github.com/virtkube/virtkube/test/guest"
)

// kubeletRunLauncher does what kubelet does for a launcher pod on the test's
// worker, from the pod's spec: it makes the pod's emptyDirs under
// kubeletRoot, runs the init container to its end, then the containers, each
// with its volumes at their mount paths in a mount namespace of its own,
// and reports the pod Running and Ready. Programs of the launcher image
// (/usr/bin/…) come from bin/. The containerDisk image holds disk; as the
// image is not unpacked here, container-disk is told where the disk is.
func kubeletRunLauncher(t *testing.T, s *framework.Server, pod *corev1.Pod, kubeletRoot, disk string) *exec.Cmd {
	t.Helper()
	bin, err := framework.Binary()
	if err != nil {
		t.Fatal(err)
	}
	dirs := handler.PodDirs{KubeletRoot: kubeletRoot}
	podDir := filepath.Join(kubeletRoot, "pods", string(pod.UID))
	launcherProgram := func(argv []string) []string {
		if sibling := filepath.Join(filepath.Dir(bin), filepath.Base(argv[0])); filepath.Base(argv[0]) == "container-disk" {
			return append([]string{sibling}, argv[1:]...)
		}
		return append([]string{bin, filepath.Base(argv[0])}, argv[1:]...)
	}
	run := func(c corev1.Container, argv []string, env ...string) *exec.Cmd {
		// Like a container runtime, give the container its volumes at
		// the paths of the pod spec, in a mount namespace of its own.
		mounts := map[string]string{}
		for _, m := range c.VolumeMounts {
			mounts[dirs.EmptyDir(pod.UID, m.Name)] = m.MountPath
		}
		if c.Name == "compute" {
			// The image's writable layer.
			mounts[filepath.Join(podDir, "ephemeral")] = "/var/run/kubevirt-ephemeral-disks"
			mounts[filepath.Join(podDir, "libvirt")] = "/var/run/kubevirt-private/libvirt"
		}
		var script strings.Builder
		script.WriteString("set -e; mount --make-rprivate /\n")
		for src, dst := range mounts {
			for _, d := range []string{src, dst} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			fmt.Fprintf(&script, "mount --bind %q %q\n", src, dst)
		}
		script.WriteString(`exec "$0" "$@"` + "\n")
		cmd := exec.Command("/bin/sh", append([]string{"-c", script.String()}, argv...)...)
		cmd.Env = append(os.Environ(), env...)
		logFile, err := os.Create(filepath.Join(podDir, c.Name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Unshareflags: syscall.CLONE_NEWNS}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			if c.Name == "compute" {
				// libvirtd starts QEMU in a session of its own: find it by name.
				_ = exec.Command("pkill", "-KILL", "-f", "guest="+pod.Namespace+"_"+pod.Labels["vmi.kubevirt.io/id"]+",").Run()
			}
			_, _ = cmd.Process.Wait()
			logFile.Close()
			if t.Failed() {
				body, _ := os.ReadFile(logFile.Name())
				t.Logf("%s log:\n%s", c.Name, body)
			}
		})
		return cmd
	}
	if err := os.MkdirAll(podDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range pod.Spec.InitContainers {
		if err := run(c, launcherProgram(c.Command)).Wait(); err != nil {
			t.Fatalf("init container %s: %v", c.Name, err)
		}
	}
	var compute *exec.Cmd
	var statuses []corev1.ContainerStatus
	for _, c := range pod.Spec.Containers {
		if c.Name == "compute" {
			compute = run(c, append(launcherProgram(c.Command), "--private-libvirt"))
		} else {
			run(c, c.Command, "VIRTKUBE_CONTAINER_DISK_FILE="+disk)
		}
		statuses = append(statuses, corev1.ContainerStatus{Name: c.Name, Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}})
	}
	kubeletStatus(t, s, pod, func(st *corev1.PodStatus) {
		st.Phase = corev1.PodRunning
		st.ContainerStatuses = statuses
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
	})
	return compute
}

// startHandler runs a standalone virt-handler for node, its console server
// on a free loopback port with the server's certificates; it returns the
// console address and a function that kills the handler at once.
func startHandler(t *testing.T, s *framework.Server, node, kubeletRoot string) (string, func()) {
	t.Helper()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	consoleAddr := fmt.Sprintf("127.0.0.1:%d", port)
	pki := filepath.Join(s.DataDir, "pki")
	bin, err := framework.Binary()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "virt-handler.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "virt-handler", "--kubeconfig", s.Kubeconfig, "--node-name", node, "--kubelet-root", kubeletRoot,
		"--console-address", consoleAddr,
		"--tls-cert-file", filepath.Join(pki, "virt-handler.crt"), "--tls-key-file", filepath.Join(pki, "virt-handler.key"),
		"--client-ca-file", filepath.Join(pki, "ca.crt"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _, _ = cmd.Process.Wait(); close(done) }()
	kill := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		logFile.Close()
		if t.Failed() {
			body, _ := os.ReadFile(logPath)
			t.Logf("virt-handler log:\n%s", body)
		}
	})
	return consoleAddr, kill
}

// dialConsole opens a VMI's console on virt-handler as virt-api does:
// websocket, subprotocol plain.kubevirt.io, client certificate.
func dialConsole(t *testing.T, s *framework.Server, consoleAddr, certName, ns, name string) (*websocket.Conn, error) {
	t.Helper()
	pki := filepath.Join(s.DataDir, "pki")
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if certName != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(pki, certName+".crt"), filepath.Join(pki, certName+".key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	d := websocket.Dialer{TLSClientConfig: cfg, Subprotocols: []string{handler.PlainSubprotocol}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial(fmt.Sprintf("wss://%s/v1/namespaces/%s/virtualmachineinstances/%s/console", consoleAddr, ns, name), nil)
	return ws, err
}

// wsLines turns a console websocket into lines.
func wsLines(ws *websocket.Conn) *bufio.Scanner {
	r, w := io.Pipe()
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				w.CloseWithError(err)
				return
			}
			if _, err := w.Write(b); err != nil {
				return
			}
		}
	}()
	return bufio.NewScanner(r)
}

// A VMI runs a real guest through virt-controller, virt-handler and
// virt-launcher: Running and Ready, then the guest powers itself off and the
// VMI is Succeeded. The test stands in for kubelet on a worker node.
func TestVMIRunsGuestThroughHandlerAndLauncher(t *testing.T) {
	disk, err := guest.Disk()
	if err != nil {
		t.Fatal(err)
	}
	s := shared
	kubectl(t, s, "", "patch", "kv", "kubevirt", "-n", "kubevirt", "--type=merge",
		"-p", `{"spec":{"configuration":{"developerConfiguration":{"useEmulation":true}}}}`)
	ns := s.Namespace(t)
	worker(t, s, "worker-guest")
	kubeletRoot := t.TempDir()
	consoleAddr, killHandler := startHandler(t, s, "worker-guest", kubeletRoot)
	c := crClient(t, s)

	v := newVMI(ns, "guest", "worker-guest", "registry.invalid/test-guest:1")
	v.Spec.Domain.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("128Mi")
	if err := c.Create(ctxT(t, time.Minute), v); err != nil {
		t.Fatal(err)
	}
	v = waitVMI(t, c, ns, "guest", "Scheduling", func(v *virtv1.VirtualMachineInstance) bool { return v.Status.Phase == virtv1.Scheduling })
	pod := launcherPodOf(t, s, v)
	kubeletRunLauncher(t, s, pod, kubeletRoot, disk)

	v = waitVMI(t, c, ns, "guest", "Running and Ready", runningAndReady)
	if v.Status.NodeName != "worker-guest" || v.Labels[virtv1.NodeNameLabel] != "worker-guest" {
		t.Errorf("nodeName %q, label %q; want worker-guest", v.Status.NodeName, v.Labels[virtv1.NodeNameLabel])
	}
	emulated := false
	for _, cond := range v.Status.Conditions {
		emulated = emulated || (cond.Type == virtv1.VirtualMachineInstanceSoftwareEmulation && cond.Status == corev1.ConditionTrue)
	}
	if handler.KVMUsable() != nil && !emulated {
		t.Errorf("no SoftwareEmulation condition on a node without usable KVM: %+v", v.Status.Conditions)
	}
	out := kubectl(t, s, "", "get", "vmi", "guest", "-n", ns)
	if !strings.Contains(out, "Running") || !strings.Contains(out, "True") {
		t.Errorf("kubectl get vmi:\n%s", out)
	}

	// The guest's console through virt-handler's console server, as
	// virt-api reaches it; only virt-api's certificate opens it.
	if ws, err := dialConsole(t, s, consoleAddr, "admin", ns, "guest"); err == nil {
		ws.Close()
		t.Error("virt-handler opened a console for a certificate that is not virt-api's")
	}
	if ws, err := dialConsole(t, s, consoleAddr, "", ns, "guest"); err == nil {
		ws.Close()
		t.Error("virt-handler opened a console without a client certificate")
	}
	console, err := dialConsole(t, s, consoleAddr, "virt-api-client", ns, "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	if console.Subprotocol() != handler.PlainSubprotocol {
		t.Errorf("subprotocol = %q, want %s", console.Subprotocol(), handler.PlainSubprotocol)
	}
	_ = console.SetReadDeadline(time.Now().Add(3 * time.Minute))
	sc := wsLines(console)
	ready := false
	for !ready && sc.Scan() {
		ready = strings.Contains(sc.Text(), guest.ReadyMarker)
	}
	if !ready {
		t.Fatal("no ready marker on the guest console")
	}

	// virt-handler crashes and comes back: the guest keeps running, the
	// new handler finds it again.
	console.Close()
	killHandler()
	consoleAddr, _ = startHandler(t, s, "worker-guest", kubeletRoot)
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(context.Context) (bool, string) {
		c, err := dialConsole(t, s, consoleAddr, "virt-api-client", ns, "guest")
		if err != nil {
			return false, err.Error()
		}
		console = c
		return true, ""
	})
	defer console.Close()
	if err := console.WriteMessage(websocket.BinaryMessage, []byte("\necho still-$((40+2))\n")); err != nil {
		t.Fatal(err)
	}
	_ = console.SetReadDeadline(time.Now().Add(time.Minute))
	sc = wsLines(console)
	alive := false
	for !alive && sc.Scan() {
		alive = strings.Contains(sc.Text(), "still-42")
	}
	if !alive {
		t.Fatal("the guest does not answer on its console after virt-handler restarted")
	}
	if got := waitVMI(t, c, ns, "guest", "Running", func(v *virtv1.VirtualMachineInstance) bool { return true }); got.Status.Phase != virtv1.Running {
		t.Fatalf("after a virt-handler restart the VMI is %s", got.Status.Phase)
	}
	// The user powers the guest off from inside: the VMI is Succeeded.
	if err := console.WriteMessage(websocket.BinaryMessage, []byte("\n/sbin/poweroff -f\n")); err != nil {
		t.Fatal(err)
	}
	v = waitVMI(t, c, ns, "guest", "Succeeded", func(v *virtv1.VirtualMachineInstance) bool { return v.Status.Phase == virtv1.Succeeded })
	if r := readyCondition(v); r == nil || r.Status != corev1.ConditionFalse {
		t.Errorf("Ready of a finished VMI = %+v", r)
	}
	var phases []string
	for _, p := range v.Status.PhaseTransitionTimestamps {
		phases = append(phases, string(p.Phase))
	}
	if strings.Join(phases, ",") != "Pending,Scheduling,Scheduled,Running,Succeeded" {
		t.Errorf("phases = %v", phases)
	}
}

// Without usable KVM and without useEmulation, the VMI fails and says how
// to fix it.
func TestVMIFailsWithoutKVMUnlessEmulationAllowed(t *testing.T) {
	if handler.KVMUsable() == nil {
		t.Skip("this node has usable KVM")
	}
	s := framework.Start(t)
	ns := s.Namespace(t)
	worker(t, s, "worker-nokvm")
	kubeletRoot := t.TempDir()
	startHandler(t, s, "worker-nokvm", kubeletRoot)
	c := crClient(t, s)
	disk, err := guest.Disk()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctxT(t, time.Minute), newVMI(ns, "nokvm", "worker-nokvm", "registry.invalid/test-guest:1")); err != nil {
		t.Fatal(err)
	}
	v := waitVMI(t, c, ns, "nokvm", "Scheduling", func(v *virtv1.VirtualMachineInstance) bool { return v.Status.Phase == virtv1.Scheduling })
	kubeletRunLauncher(t, s, launcherPodOf(t, s, v), kubeletRoot, disk)
	v = waitVMI(t, c, ns, "nokvm", "Failed/KVMUnavailable", func(v *virtv1.VirtualMachineInstance) bool {
		return v.Status.Phase == virtv1.Failed && v.Status.Reason == handler.ReasonKVMUnavailable
	})
	if r := readyCondition(v); r == nil || !strings.Contains(r.Message, "useEmulation: true") {
		t.Errorf("the reason does not say how to fix it: %+v", r)
	}
}
