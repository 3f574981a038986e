package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/handler"
	"github.com/virtkube/virtkube/internal/launcher"
	"github.com/virtkube/virtkube/internal/launcherrpc"
	"github.com/virtkube/virtkube/test/framework"
	"github.com/virtkube/virtkube/test/guest"
)

// Pause and unpause on the server's own node, through virt-handler's console
// server as virt-api calls it. virt-handler publishes that server's address
// on its Node. A paused guest is held by libvirt and runs nothing (what is
// typed on its console is answered only after unpause); its VMI stays
// Running with KubeVirt's Paused condition and is not Ready; a second pause
// and a needless unpause are refused with 409 and KubeVirt's words. A VMI
// with startStrategy Paused comes up Running and paused the same way.
// The launcher pod's kubevirt.io/virtual-machine-unpaused readiness gate
// makes a paused VM's pod unready, so it leaves the endpoints of a Service
// selecting it until it is unpaused.
func TestPauseAndUnpauseThroughHandler(t *testing.T) {
	s := shared
	image := testGuestImage(t, s, "pause")
	ns := s.Namespace(t)
	c := crClient(t, s)
	ctx := ctxT(t, 10*time.Minute)
	node := strings.ToLower(hostname(t))
	addr := fmt.Sprintf("127.0.0.1:%d", s.ConsolePort)

	n, err := s.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Annotations[handler.AddressAnnotation]; got != addr {
		t.Errorf("node annotation %s = %q, want the console server's %q", handler.AddressAnnotation, got, addr)
	}

	// The held VMI costs no CPU while paused: create it first, next to
	// the one that boots.
	held := newVMI(ns, "held", node, image)
	startPaused := virtv1.StartStrategyPaused
	held.Spec.StartStrategy = &startPaused
	noGrace := int64(0)
	held.Spec.TerminationGracePeriodSeconds = &noGrace
	if err := c.Create(ctx, held); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, newVMI(ns, "guest", node, image)); err != nil {
		t.Fatal(err)
	}

	held = waitVMI(t, c, ns, "held", "Running, paused from the start and not Ready", func(v *virtv1.VirtualMachineInstance) bool {
		return v.Status.Phase == virtv1.Running && pausedByUser(v) && isReady(v) == corev1.ConditionFalse
	})
	if r := readyCondition(held); r.Reason != "ReadinessGatesNotReady" {
		t.Errorf("Ready of a paused VMI = %+v, want reason ReadinessGatesNotReady", r)
	}
	expectDomain(t, s, held, launcher.StatePaused, launcher.PauseUser)
	waitPodGate(t, s, held, corev1.ConditionFalse)

	// A ClusterIP Service selecting the guest's label.
	svc, err := s.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "guest"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "guest"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	v := waitVMI(t, c, ns, "guest", "Running and Ready", func(v *virtv1.VirtualMachineInstance) bool {
		return v.Status.Phase == virtv1.Running && isReady(v) == corev1.ConditionTrue
	})
	pod := waitPodGate(t, s, v, corev1.ConditionTrue)
	waitEndpoint(t, s, svc, pod, true)
	lines := guestShell(t, s, addr, v)

	// Only virt-api's certificate may pause; an unknown VMI is not found.
	if _, _, err := handlerPut(t, s, addr, "admin", ns, "guest", "pause"); err == nil {
		t.Error("virt-handler paused a VMI for a certificate that is not virt-api's")
	}
	expectPut(t, s, addr, ns, "nosuchvmi", "pause", http.StatusNotFound, "")

	expectPut(t, s, addr, ns, "guest", "pause", http.StatusOK, "")
	expectPut(t, s, addr, ns, "guest", "pause", http.StatusConflict, "VMI is already paused")
	v = waitVMI(t, c, ns, "guest", "Paused by user, Running, not Ready", func(v *virtv1.VirtualMachineInstance) bool {
		return v.Status.Phase == virtv1.Running && pausedByUser(v) && isReady(v) == corev1.ConditionFalse
	})
	expectDomain(t, s, v, launcher.StatePaused, launcher.PauseUser)
	// The pod is unready by its readiness gate: out of the Service.
	waitPodGate(t, s, v, corev1.ConditionFalse)
	waitEndpoint(t, s, svc, pod, false)
	// The guest's CPUs stand still: a command typed now is not answered.
	lines.send(t, "echo held-$((6*7))")
	if lines.wait("held-42", 3*time.Second) {
		t.Fatal("the paused guest answered on its console")
	}

	expectPut(t, s, addr, ns, "guest", "unpause", http.StatusOK, "")
	expectPut(t, s, addr, ns, "guest", "unpause", http.StatusConflict, "VMI is not paused")
	if !lines.wait("held-42", time.Minute) {
		t.Fatal("the guest did not answer what was typed while it was paused after unpause")
	}
	waitVMI(t, c, ns, "guest", "unpaused, Running and Ready", func(v *virtv1.VirtualMachineInstance) bool {
		return v.Status.Phase == virtv1.Running && !hasPaused(v) && isReady(v) == corev1.ConditionTrue
	})
	waitPodGate(t, s, v, corev1.ConditionTrue)
	waitEndpoint(t, s, svc, pod, true)

	// The held VMI runs on unpause too; then it goes (no grace to wait).
	expectPut(t, s, addr, ns, "held", "unpause", http.StatusOK, "")
	waitVMI(t, c, ns, "held", "unpaused and Ready", func(v *virtv1.VirtualMachineInstance) bool {
		return v.Status.Phase == virtv1.Running && !hasPaused(v) && isReady(v) == corev1.ConditionTrue
	})
	if err := c.Delete(ctx, held); err != nil {
		t.Error(err)
	}
}

// waitPodGate waits until v's launcher pod has its virtual-machine-unpaused
// condition in status gate, with KubeVirt's reason and message, and the
// pod's Ready that follows from it as kubelet computes it; the node
// runtime's ContainersReady stays True beside it. It returns the pod.
func waitPodGate(t *testing.T, s *framework.Server, v *virtv1.VirtualMachineInstance, gate corev1.ConditionStatus) *corev1.Pod {
	t.Helper()
	wantReason, wantMsg := "NotPaused", "the virtual machine is not paused"
	wantReady := corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue}
	if gate == corev1.ConditionFalse {
		wantReason, wantMsg = "Paused", "the virtual machine is paused"
		wantReady = corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ReadinessGatesNotReady",
			Message: `the status of pod readiness gate "kubevirt.io/virtual-machine-unpaused" is not "True", but False`}
	}
	pod := launcherPodOf(t, s, v)
	framework.Eventually(t, 2*time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, string) {
		p, err := s.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pod = p
		if len(p.Spec.ReadinessGates) != 1 || p.Spec.ReadinessGates[0].ConditionType != virtv1.VirtualMachineUnpaused {
			return false, fmt.Sprintf("readiness gates %+v, want %s", p.Spec.ReadinessGates, virtv1.VirtualMachineUnpaused)
		}
		g, r, cr := podCondition(p, virtv1.VirtualMachineUnpaused), podCondition(p, corev1.PodReady), podCondition(p, corev1.ContainersReady)
		ok := g.Status == gate && g.Reason == wantReason && g.Message == wantMsg &&
			r.Status == wantReady.Status && r.Reason == wantReady.Reason && r.Message == wantReady.Message &&
			cr.Status == corev1.ConditionTrue
		return ok, fmt.Sprintf("pod %s of %s: want gate %s and Ready %s %q; conditions %+v", p.Name, v.Name, gate, wantReady.Status, wantReady.Message, p.Status.Conditions)
	})
	return pod
}

func podCondition(p *corev1.Pod, t corev1.PodConditionType) corev1.PodCondition {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.PodCondition{Type: t, Status: corev1.ConditionUnknown}
}

// waitEndpoint waits until pod is (ready) or is not (!ready) among the ready
// endpoints of svc's EndpointSlices, the addresses kube-proxy sends the
// Service's traffic to.
func waitEndpoint(t *testing.T, s *framework.Server, svc *corev1.Service, pod *corev1.Pod, ready bool) {
	t.Helper()
	framework.Eventually(t, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		slices, err := s.Client.DiscoveryV1().EndpointSlices(svc.Namespace).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		in := false
		for _, sl := range slices.Items {
			for _, ep := range sl.Endpoints {
				epReady := ep.Conditions.Ready == nil || *ep.Conditions.Ready
				seen = append(seen, fmt.Sprintf("%v ready=%v", ep.Addresses, epReady))
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && ep.TargetRef.Name == pod.Name && epReady {
					if len(ep.Addresses) == 0 || ep.Addresses[0] != pod.Status.PodIP {
						return false, fmt.Sprintf("endpoint of pod %s has addresses %v, want its IP %s", pod.Name, ep.Addresses, pod.Status.PodIP)
					}
					in = true
				}
			}
		}
		return in == ready, fmt.Sprintf("want pod %s (%s) among the ready endpoints of Service %s: %v; endpoints %v", pod.Name, pod.Status.PodIP, svc.Name, ready, seen)
	})
}

func hasPaused(v *virtv1.VirtualMachineInstance) bool {
	for _, c := range v.Status.Conditions {
		if c.Type == virtv1.VirtualMachineInstancePaused {
			return true
		}
	}
	return false
}

// pausedByUser reports KubeVirt's Paused condition for a user's pause (also
// what KubeVirt shows for startStrategy Paused: libvirt reports the domain
// paused by the user).
func pausedByUser(v *virtv1.VirtualMachineInstance) bool {
	for _, c := range v.Status.Conditions {
		if c.Type == virtv1.VirtualMachineInstancePaused {
			return c.Status == corev1.ConditionTrue && c.Reason == "PausedByUser" && c.Message == "VMI was paused by user"
		}
	}
	return false
}

func isReady(v *virtv1.VirtualMachineInstance) corev1.ConditionStatus {
	if r := readyCondition(v); r != nil {
		return r.Status
	}
	return corev1.ConditionUnknown
}

// launcherSockets is the sockets directory of v's launcher pod on the
// server's node.
func launcherSockets(t *testing.T, s *framework.Server, v *virtv1.VirtualMachineInstance) string {
	t.Helper()
	for uid := range v.Status.ActivePods {
		return filepath.Join(s.DataDir, "kubelet", "pods", string(uid), "volumes", "kubernetes.io~empty-dir", "sockets")
	}
	t.Fatalf("VMI %s has no launcher pod", v.Name)
	return ""
}

// expectDomain asks v's launcher what libvirt says of the domain.
func expectDomain(t *testing.T, s *framework.Server, v *virtv1.VirtualMachineInstance, state launcher.State, reason launcher.PauseReason) {
	t.Helper()
	lc, err := launcherrpc.Dial(filepath.Join(launcherSockets(t, s, v), launcherrpc.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	st, err := lc.GetDomain(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if st.State != string(state) || st.PauseReason != string(reason) {
		t.Errorf("domain of %s: state %s (pause reason %q), want %s (%q)", v.Name, st.State, st.PauseReason, state, reason)
	}
}

// handlerPut sends PUT .../{verb} to virt-handler's console server with the
// named client certificate, as virt-api does.
func handlerPut(t *testing.T, s *framework.Server, addr, certName, ns, name, verb string) (int, string, error) {
	t.Helper()
	pki := filepath.Join(s.DataDir, "pki")
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, certName+".crt"), filepath.Join(pki, certName+".key"))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{cert}}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodPut, fmt.Sprintf("https://%s/v1/namespaces/%s/virtualmachineinstances/%s/%s", addr, ns, name, verb), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func expectPut(t *testing.T, s *framework.Server, addr, ns, name, verb string, wantCode int, wantBody string) {
	t.Helper()
	code, body, err := handlerPut(t, s, addr, "virt-api-client", ns, name, verb)
	if err != nil {
		t.Fatalf("PUT %s %s: %v", verb, name, err)
	}
	if code != wantCode || !strings.Contains(body, wantBody) {
		t.Fatalf("PUT %s %s = %d %q, want %d %q", verb, name, code, body, wantCode, wantBody)
	}
}

// shell is a guest's serial console, read line by line.
type shell struct {
	ws    *websocket.Conn
	lines chan string
}

// guestShell opens v's console as virt-api does and waits until the guest's
// shell answers on it.
func guestShell(t *testing.T, s *framework.Server, addr string, v *virtv1.VirtualMachineInstance) *shell {
	t.Helper()
	ws, err := dialConsole(t, s, addr, "virt-api-client", v.Namespace, v.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	sh := &shell{ws: ws, lines: make(chan string, 1024)}
	go func() {
		sc := wsLines(ws)
		for sc.Scan() {
			sh.lines <- sc.Text()
		}
		close(sh.lines)
	}()
	// The serial log has what the guest printed before we connected.
	ready := false
	if body, err := os.ReadFile(filepath.Join(launcherSockets(t, s, v), "serial0.log")); err == nil {
		ready = strings.Contains(string(body), guest.ReadyMarker)
	}
	if !ready && !sh.wait(guest.ReadyMarker, 3*time.Minute) {
		t.Fatal("no ready marker on the guest console")
	}
	// Input typed before the shell starts waits in the tty for it.
	sh.send(t, "echo alive-$((6*7))")
	if !sh.wait("alive-42", 2*time.Minute) {
		t.Fatal("the guest shell does not answer on its console")
	}
	return sh
}

func (sh *shell) send(t *testing.T, cmd string) {
	t.Helper()
	if err := sh.ws.WriteMessage(websocket.BinaryMessage, []byte("\n"+cmd+"\n")); err != nil {
		t.Fatal(err)
	}
}

// wait reports whether a line containing want comes within d. The command
// echoed back does not match: its $((...)) is only evaluated by the shell.
func (sh *shell) wait(want string, d time.Duration) bool {
	deadline := time.After(d)
	for {
		select {
		case l, ok := <-sh.lines:
			if !ok {
				return false
			}
			if strings.Contains(l, want) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}
