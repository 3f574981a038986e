package subresource

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/virtkube/virtkube/internal/handler"
)

// fakeHandler stands in for virt-handler: it upgrades a websocket and sends
// the path it was asked for, and refuses port 81 as a guest would.
func fakeHandler(t *testing.T) *httptest.Server {
	up := websocket.Upgrader{Subprotocols: []string{handler.PlainSubprotocol}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/portforward/81/") {
			http.Error(w, "dialing VM: connection refused", http.StatusInternalServerError)
			return
		}
		if r.Header.Get("X-Remote-User") != "" {
			http.Error(w, "identity headers reached virt-handler", http.StatusBadRequest)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte(r.URL.Path))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// portForwardServer is virt-api with VMIs in every state a port forward
// meets, and a VM that created one of them.
func portForwardServer(t *testing.T) *Server {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := virtv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	vmi := func(name string, phase virtv1.VirtualMachineInstancePhase, edit ...func(*virtv1.VirtualMachineInstance)) *virtv1.VirtualMachineInstance {
		v := &virtv1.VirtualMachineInstance{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Status: virtv1.VirtualMachineInstanceStatus{Phase: phase, NodeName: "node1",
				Interfaces: []virtv1.VirtualMachineInstanceNetworkInterface{{Name: "default", IP: "10.244.0.9"}}},
		}
		for _, e := range edit {
			e(v)
		}
		return v
	}
	vm := &virtv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "vm1", UID: "vm-uid"}, Status: virtv1.VirtualMachineStatus{Created: true}}
	stopped := &virtv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "stopped"}}
	objs := []client.Object{
		vm, stopped,
		vmi("up", virtv1.Running),
		vmi("vm1", virtv1.Running, func(v *virtv1.VirtualMachineInstance) {
			v.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(vm, virtv1.VirtualMachineGroupVersionKind)}
		}),
		vmi("paused", virtv1.Running, func(v *virtv1.VirtualMachineInstance) {
			v.Status.Conditions = []virtv1.VirtualMachineInstanceCondition{{Type: virtv1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue}}
		}),
		vmi("scheduled", virtv1.Scheduled),
		vmi("nonet", virtv1.Running, func(v *virtv1.VirtualMachineInstance) { v.Status.Interfaces = nil }),
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	backend := fakeHandler(t)
	transport := backend.Client().Transport.(*http.Transport).Clone()
	return &Server{
		Client: c, Authenticator: fakeAuthn{"admin"}, Authorizer: allowOnly("admin"),
		Handlers: &Handlers{Nodes: c, Fallback: strings.TrimPrefix(backend.URL, "https://"), transport: transport},
	}
}

const nsPath = "/apis/subresources.kubevirt.io/v1/namespaces/ns/"

// A port forward is proxied to virt-handler's path for the VMI, with the
// protocol spelled out (tcp by default), for a VMI and for a VM's VMI.
func TestPortForwardRouting(t *testing.T) {
	s := portForwardServer(t)
	api := httptest.NewServer(s.Handler())
	defer api.Close()
	for _, tc := range []struct{ path, want string }{
		{"virtualmachineinstances/up/portforward/80", "/v1/namespaces/ns/virtualmachineinstances/up/portforward/80/tcp"},
		{"virtualmachineinstances/up/portforward/53/udp", "/v1/namespaces/ns/virtualmachineinstances/up/portforward/53/udp"},
		{"virtualmachines/vm1/portforward/22/tcp", "/v1/namespaces/ns/virtualmachineinstances/vm1/portforward/22/tcp"},
	} {
		d := websocket.Dialer{Subprotocols: []string{handler.PlainSubprotocol}, HandshakeTimeout: 5 * time.Second}
		header := http.Header{"X-Remote-User": {"admin"}}
		ws, resp, err := d.Dial("ws"+strings.TrimPrefix(api.URL, "http")+nsPath+tc.path, header)
		if err != nil {
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			t.Errorf("%s: %v (%d)", tc.path, err, code)
			continue
		}
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, got, err := ws.ReadMessage()
		ws.Close()
		if err != nil || string(got) != tc.want {
			t.Errorf("%s reached virt-handler at %q (%v), want %q", tc.path, got, err, tc.want)
		}
		if ws.Subprotocol() != handler.PlainSubprotocol {
			t.Errorf("%s: subprotocol %q", tc.path, ws.Subprotocol())
		}
	}
}

// KubeVirt's refusals, before any upgrade, as Statuses; virt-handler's own
// refusal (the guest port closed) comes back as a Status too.
func TestPortForwardRefusals(t *testing.T) {
	s := portForwardServer(t)
	for _, tc := range []struct {
		path string
		code int32
		msg  string
	}{
		{"virtualmachineinstances/up/portforward/http", 400, `port "http": must be a number from 1 to 65535`},
		{"virtualmachineinstances/up/portforward/80/sctp", 400, `protocol "sctp" is not supported`},
		{"virtualmachineinstances/missing/portforward/80", 404, `virtualmachineinstance.kubevirt.io "missing" not found`},
		{"virtualmachineinstances/paused/portforward/80", 409, "VMI is paused"},
		{"virtualmachineinstances/scheduled/portforward/80", 400, "phase is Scheduled instead of Running"},
		{"virtualmachineinstances/nonet/portforward/80", 400, "no network interfaces are present"},
		{"virtualmachineinstances/up/portforward/81", 500, "dialing VM: connection refused"},
		{"virtualmachines/missing/portforward/80", 404, `virtualmachine.kubevirt.io "missing" not found`},
		{"virtualmachines/stopped/portforward/80", 409, "VMI is not started"},
	} {
		st := status(t, serve(s, http.MethodGet, nsPath+tc.path))
		if st.Code != tc.code || !strings.Contains(st.Message, tc.msg) {
			t.Errorf("%s: %d %q, want %d %q", tc.path, st.Code, st.Message, tc.code, tc.msg)
		}
	}
}

// Without a guest agent channel every guest agent query is KubeVirt's 409
// for an agent that is not connected.
func TestGuestAgentQueries(t *testing.T) {
	s := portForwardServer(t)
	for _, tc := range []struct {
		path string
		code int32
		msg  string
	}{
		{"virtualmachineinstances/up/guestosinfo", 409, `Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "up": VMI does not have guest agent connected`},
		{"virtualmachineinstances/up/userlist", 409, "VMI does not have guest agent connected"},
		{"virtualmachineinstances/up/filesystemlist", 409, "VMI does not have guest agent connected"},
		{"virtualmachineinstances/scheduled/guestosinfo", 409, "VMI is not running"},
		{"virtualmachineinstances/missing/userlist", 404, "not found"},
	} {
		st := status(t, serve(s, http.MethodGet, nsPath+tc.path))
		if st.Code != tc.code || !strings.Contains(st.Message, tc.msg) {
			t.Errorf("%s: %d %q, want %d %q", tc.path, st.Code, st.Message, tc.code, tc.msg)
		}
	}
}
