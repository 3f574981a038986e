package handler

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/controller/vmi"
	"github.com/virtkube/virtkube/internal/network"
)

func TestParseForwardedPort(t *testing.T) {
	for _, tc := range []struct {
		port, protocol string
		want           forwardedPort
		bad            string
	}{
		{port: "22", protocol: "tcp", want: forwardedPort{22, "tcp"}},
		{port: "53", protocol: "udp", want: forwardedPort{53, "udp"}},
		{port: "65535", protocol: "tcp", want: forwardedPort{65535, "tcp"}},
		{port: "0", protocol: "tcp", bad: "from 1 to 65535"},
		{port: "65536", protocol: "tcp", bad: "from 1 to 65535"},
		{port: "ssh", protocol: "tcp", bad: "from 1 to 65535"},
		{port: "22", protocol: "sctp", bad: "must be tcp or udp"},
		{port: "22", protocol: "TCP", bad: "must be tcp or udp"},
	} {
		got, err := parseForwardedPort(tc.port, tc.protocol)
		switch {
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s/%s: %v, want an error saying %q", tc.port, tc.protocol, err, tc.bad)
		case tc.bad == "" && (err != nil || got != tc.want):
			t.Errorf("%s/%s: %+v %v, want %+v", tc.port, tc.protocol, got, err, tc.want)
		}
	}
}

// portForwardNode is a node running bridge guests whose "guest IP" is this
// machine's loopback, so virt-handler's own namespace reaches them.
type portForwardNode struct {
	srv *httptest.Server
}

func newPortForwardNode(t *testing.T) *portForwardNode {
	t.Helper()
	const node = "node1"
	pods := PodDirs{KubeletRoot: t.TempDir()}
	vmis := vmiReader{}
	add := func(name string, phase virtv1.VirtualMachineInstancePhase, withNetwork, networkReady bool) {
		uid := types.UID("pod-" + name)
		v := &virtv1.VirtualMachineInstance{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Status: virtv1.VirtualMachineInstanceStatus{NodeName: node, Phase: phase,
				ActivePods: map[types.UID]string{uid: node}},
		}
		if withNetwork {
			v.Spec.Networks = []virtv1.Network{*virtv1.DefaultPodNetwork()}
			v.Spec.Domain.Devices.Interfaces = []virtv1.Interface{*virtv1.DefaultBridgeNetworkInterface()}
		}
		vmis[client.ObjectKeyFromObject(v)] = v
		dir := network.CacheDir(pods.EmptyDir(uid, vmi.SocketsVolume))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if !networkReady {
			return
		}
		body, _ := json.Marshal(network.Config{Interface: "default", Binding: network.BindingBridge, GuestIP: "127.0.0.1/8", PodIP: "127.0.0.1"})
		if err := os.WriteFile(network.CacheFile(dir, "default"), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	add("guest", virtv1.Running, true, true)
	add("booting", virtv1.Running, true, false)
	add("nonet", virtv1.Running, false, false)
	add("starting", virtv1.Scheduled, true, true)
	n := &portForwardNode{srv: httptest.NewServer((&ConsoleServer{Client: vmis, NodeName: node, Pods: pods}).Handler())}
	t.Cleanup(n.srv.Close)
	return n
}

func (n *portForwardNode) url(scheme, vmi, port, protocol string) string {
	return scheme + strings.TrimPrefix(n.srv.URL, "http") + "/v1/namespaces/ns/virtualmachineinstances/" + vmi + "/portforward/" + port + "/" + protocol
}

func (n *portForwardNode) dial(t *testing.T, port, protocol string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{PlainSubprotocol}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(n.url("ws", "guest", port, protocol), nil)
	if err != nil {
		body := ""
		if resp != nil {
			body = readAll(t, resp)
		}
		t.Fatalf("dial: %v %s", err, body)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func readMessage(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, msg, err := ws.ReadMessage()
	if err != nil || typ != websocket.BinaryMessage {
		t.Fatalf("read: type %d, %v", typ, err)
	}
	return string(msg)
}

// A TCP port: bytes go both ways, and the guest closing its end closes the
// websocket normally, so `virtctl port-forward --stdio` ends.
func TestPortForwardTCP(t *testing.T) {
	n := newPortForwardNode(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		k, _ := c.Read(buf)
		_, _ = c.Write([]byte("got " + string(buf[:k])))
	}()
	ws := n.dial(t, portOf(l.Addr()), "tcp")
	if ws.Subprotocol() != PlainSubprotocol {
		t.Errorf("subprotocol %q, want %s", ws.Subprotocol(), PlainSubprotocol)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got := readMessage(t, ws); got != "got hello" {
		t.Errorf("guest answered %q, want %q", got, "got hello")
	}
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("after the guest closed: %v, want a normal close", err)
	}
}

// A UDP port: every message is one datagram and every datagram one
// message, boundaries kept.
func TestPortForwardUDP(t *testing.T) {
	n := newPortForwardNode(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte("echo "+string(buf[:k])), from)
		}
	}()
	ws := n.dial(t, portOf(pc.LocalAddr()), "udp")
	for _, m := range []string{"one", "two"} {
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"echo one", "echo two"} {
		if got := readMessage(t, ws); got != want {
			t.Errorf("datagram %q, want %q", got, want)
		}
	}
}

// Refusals come before the upgrade, with a status code virt-api passes on.
func TestPortForwardRefusals(t *testing.T) {
	n := newPortForwardNode(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := portOf(closed.Addr())
	closed.Close()
	for _, tc := range []struct {
		vmi, port, protocol string
		code                int
		body                string
	}{
		{"guest", "0", "tcp", http.StatusBadRequest, "from 1 to 65535"},
		{"guest", "80", "sctp", http.StatusBadRequest, "must be tcp or udp"},
		{"missing", "80", "tcp", http.StatusNotFound, "ns/missing"},
		{"starting", "80", "tcp", http.StatusBadRequest, "is not running on node node1"},
		{"nonet", "80", "tcp", http.StatusBadRequest, "no network interfaces are present"},
		{"booting", "80", "tcp", http.StatusServiceUnavailable, "pod network of interface default"},
		{"guest", refusing, "tcp", http.StatusInternalServerError, "dialing VM: "},
	} {
		resp, err := http.Get(n.url("http", tc.vmi, tc.port, tc.protocol))
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s %s/%s: %d %q, want %d %q", tc.vmi, tc.port, tc.protocol, resp.StatusCode, body, tc.code, tc.body)
		}
	}
}

func portOf(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return port
}
