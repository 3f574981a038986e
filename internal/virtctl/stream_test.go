package virtctl

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const vmiSubresources = "/apis/subresources.kubevirt.io/v1/namespaces/testns/virtualmachineinstances/"

func TestVirtctlConsole(t *testing.T) {
	s := newFakeAPIServer(t)
	typed := make(chan string, 1)
	s.handle("GET "+vmiSubresources+"testvmi/console", wsHandler(t, func(conn *websocket.Conn) {
		if err := conn.WriteMessage(websocket.BinaryMessage, []byte("login: ")); err != nil {
			t.Error(err)
			return
		}
		var got strings.Builder
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				break
			}
			got.Write(data)
		}
		typed <- got.String()
	}))

	// The user types "root\r", then Ctrl+] and more that must not be sent.
	res := s.run(context.Background(), strings.NewReader("root\r\x1dignored"), "console", "testvmi")
	if res.err != nil {
		t.Fatalf("console: %v", res.err)
	}
	if want := "Successfully connected to testvmi console. The escape sequence is ^]\n"; res.stderr != want {
		t.Errorf("stderr = %q, want %q", res.stderr, want)
	}
	select {
	case got := <-typed:
		if got != "root\r" {
			t.Errorf("console received %q, want %q", got, "root\r")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("console server never saw the session end")
	}
}

func TestVirtctlConsoleShowsGuestOutput(t *testing.T) {
	s := newFakeAPIServer(t)
	s.handle("GET "+vmiSubresources+"testvmi/console", wsHandler(t, func(conn *websocket.Conn) {
		_ = conn.WriteMessage(websocket.BinaryMessage, []byte("Welcome to the guest\r\n"))
		_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	}))
	in, _ := io.Pipe() // the user types nothing; the guest ends the session
	res := s.run(context.Background(), in, "console", "testvmi")
	if res.err != nil {
		t.Fatalf("console: %v", res.err)
	}
	if res.stdout != "Welcome to the guest\r\n" {
		t.Errorf("stdout = %q", res.stdout)
	}
}

func TestVirtctlConsoleWaitsForRunningVMI(t *testing.T) {
	old := consoleRetryInterval
	consoleRetryInterval = 10 * time.Millisecond
	t.Cleanup(func() { consoleRetryInterval = old })

	s := newFakeAPIServer(t)
	attempts := 0
	ws := wsHandler(t, func(conn *websocket.Conn) {
		_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	})
	s.handle("GET "+vmiSubresources+"testvmi/console", func(w http.ResponseWriter, r *http.Request) {
		attempts++
		if attempts < 3 {
			writeStatus(w, http.StatusBadRequest, "BadRequest", "VMI is not running")
			return
		}
		ws(w, r)
	})
	in, _ := io.Pipe()
	res := s.run(context.Background(), in, "console", "testvmi")
	if res.err != nil || attempts != 3 {
		t.Fatalf("console: err %v after %d attempts, want success on the 3rd", res.err, attempts)
	}

	res = s.run(context.Background(), in, "console", "missing")
	if res.err == nil || !strings.Contains(res.err.Error(), "could not find the requested resource") {
		t.Errorf("console missing: error = %v, want the server's message", res.err)
	}
}

func TestVirtctlVNCProxyOnly(t *testing.T) {
	s := newFakeAPIServer(t)
	s.handle("GET "+vmiSubresources+"testvmi/vnc", wsHandler(t, echo))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	var out syncBuffer
	go func() {
		cmd := NewCommand("virtctl")
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs([]string{"--kubeconfig", s.kubeconfig, "vnc", "testvmi", "--proxy-only"})
		done <- result{err: cmd.ExecuteContext(ctx)}
	}()
	waitFor(t, "the port on stdout", func() bool { return strings.HasSuffix(out.String(), "}\n") })
	var printed struct {
		Port int `json:"port"`
	}
	if err := json.Unmarshal([]byte(out.String()), &printed); err != nil || printed.Port == 0 {
		t.Fatalf("stdout %q is not {\"port\": N}: %v", out.String(), err)
	}

	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", printed.Port))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "RFB 003.008\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "RFB 003.008\n" {
		t.Fatalf("read through proxy: %q, %v", line, err)
	}
	conn.Close()
	select {
	case res := <-done:
		if res.err != nil {
			t.Errorf("vnc: %v", res.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("vnc did not end after its client left")
	}
}

func TestVirtctlVNCWithoutViewer(t *testing.T) {
	old := lookPath
	lookPath = func(string) (string, error) { return "", fmt.Errorf("not found") }
	t.Cleanup(func() { lookPath = old })
	s := newFakeAPIServer(t)
	res := s.run(context.Background(), nil, "vnc", "testvmi")
	if res.err == nil || !strings.Contains(res.err.Error(), "--proxy-only") {
		t.Errorf("error = %v, want advice to use --proxy-only", res.err)
	}
}

func TestVirtctlPortForwardStdio(t *testing.T) {
	s := newFakeAPIServer(t)
	// The guest answers the client's greeting, then hangs up.
	s.handle("GET /apis/subresources.kubevirt.io/v1/namespaces/other/virtualmachines/testvm/portforward/22/tcp", wsHandler(t, func(conn *websocket.Conn) {
		if _, data, err := conn.ReadMessage(); err == nil {
			_ = conn.WriteMessage(websocket.BinaryMessage, data)
		}
		_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	}))
	res := s.run(context.Background(), strings.NewReader("SSH-2.0-test\r\n"), "port-forward", "--stdio=true", "vm/testvm/other", "22")
	if res.err != nil {
		t.Fatalf("port-forward: %v", res.err)
	}
	if res.stdout != "SSH-2.0-test\r\n" {
		t.Errorf("stdout = %q", res.stdout)
	}
}

func TestVirtctlPortForwardTCPAndUDP(t *testing.T) {
	s := newFakeAPIServer(t)
	s.handle("GET "+vmiSubresources+"testvmi/portforward/80/tcp", wsHandler(t, echo))
	s.handle("GET "+vmiSubresources+"testvmi/portforward/53/udp", wsHandler(t, echo))
	tcpPort, udpPort := freePort(t, "tcp"), freePort(t, "udp")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	var stderr syncBuffer
	go func() {
		cmd := NewCommand("virtctl")
		cmd.SetOut(io.Discard)
		cmd.SetErr(&stderr)
		cmd.SetArgs([]string{"--kubeconfig", s.kubeconfig, "port-forward", "vmi/testvmi",
			fmt.Sprintf("%d:80", tcpPort), fmt.Sprintf("udp/%d:53", udpPort)})
		done <- result{err: cmd.ExecuteContext(ctx)}
	}()
	want := fmt.Sprintf("forwarding tcp 127.0.0.1:%d to 80\nforwarding udp 127.0.0.1:%d to 53\n", tcpPort, udpPort)
	waitFor(t, "both forwards", func() bool { return stderr.String() == want })

	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "GET / HTTP/1.0\n")
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "GET / HTTP/1.0\n" {
		t.Errorf("tcp through forward: %q, %v", line, err)
	}
	conn.Close()

	uc, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", udpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	for _, msg := range []string{"query-1", "query-2"} {
		if _, err := uc.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := uc.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Errorf("udp datagram back: %q, %v; want %q", buf[:n], err, msg)
		}
	}

	cancel()
	if res := <-done; res.err != nil {
		t.Errorf("port-forward ended with %v, want nil on interrupt", res.err)
	}
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestParseTargetAndPort(t *testing.T) {
	targets := []struct {
		in      string
		want    target
		wantErr bool
	}{
		{"vmi/testvmi", target{kind: "vmi", name: "testvmi"}, false},
		{"VirtualMachines/testvm/ns1", target{kind: "vm", name: "testvm", namespace: "ns1"}, false},
		{"vm/testvm.ns1", target{kind: "vm", name: "testvm", namespace: "ns1"}, false},
		{"testvm", target{}, true},
		{"pod/x", target{}, true},
		{"vm/x/", target{}, true},
	}
	for _, tt := range targets {
		got, err := parseTarget(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("parseTarget(%q) = %+v, %v", tt.in, got, err)
		}
	}
	ports := []struct {
		in      string
		want    forwardedPort
		wantErr bool
	}{
		{"8080", forwardedPort{"tcp", 8080, 8080}, false},
		{"8080:80", forwardedPort{"tcp", 8080, 80}, false},
		{"UDP/5353:53", forwardedPort{"udp", 5353, 53}, false},
		{"sctp/1", forwardedPort{}, true},
		{"x:80", forwardedPort{}, true},
	}
	for _, tt := range ports {
		got, err := parsePort(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("parsePort(%q) = %+v, %v", tt.in, got, err)
		}
	}
}
