package virtctl

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const testToken = "secret-token"

// request is what the fake apiserver saw.
type request struct {
	Method, Path string
	Body         string
}

// fakeAPIServer plays kube-apiserver and virt-api's aggregated API over TLS:
// it checks the bearer token, records requests, and answers with the
// handler registered for "METHOD /path" (or 404 Status).
type fakeAPIServer struct {
	*httptest.Server
	kubeconfig string

	mu       sync.Mutex
	requests []request
	handlers map[string]http.HandlerFunc
}

func newFakeAPIServer(t *testing.T) *fakeAPIServer {
	t.Helper()
	s := &fakeAPIServer{handlers: map[string]http.HandlerFunc{}}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)

	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{
		Server:                   s.URL,
		CertificateAuthorityData: certPEM(s.Certificate().Raw),
	}
	cfg.AuthInfos["test"] = &clientcmdapi.AuthInfo{Token: testToken}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test", Namespace: "testns"}
	cfg.CurrentContext = "test"
	s.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, s.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *fakeAPIServer) handle(methodPath string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[methodPath] = h
}

func (s *fakeAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		writeStatus(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.mu.Lock()
	s.requests = append(s.requests, request{Method: r.Method, Path: r.URL.Path, Body: string(body)})
	h := s.handlers[r.Method+" "+r.URL.Path]
	s.mu.Unlock()
	if h == nil {
		writeStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		return
	}
	h(w, r)
}

func (s *fakeAPIServer) seen() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.requests...)
}

// writeStatus answers like the apiserver does on errors: a Status object.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(&metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Reason: reason, Message: message, Code: int32(code),
	})
}

func writeJSON(obj any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(obj)
	}
}

// wsHandler upgrades with plain.kubevirt.io and hands the connection to fn.
func wsHandler(t *testing.T, fn func(*websocket.Conn)) http.HandlerFunc {
	up := websocket.Upgrader{Subprotocols: []string{plainStreamProtocol}}
	return func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			t.Errorf("%s: not a websocket upgrade", r.URL.Path)
		}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		defer conn.Close()
		if conn.Subprotocol() != plainStreamProtocol {
			t.Errorf("subprotocol = %q, want %q", conn.Subprotocol(), plainStreamProtocol)
		}
		fn(conn)
	}
}

// echo answers every binary message with the same bytes.
func echo(conn *websocket.Conn) {
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if err := conn.WriteMessage(typ, data); err != nil {
			return
		}
	}
}

// result is one in-process virtctl run.
type result struct {
	stdout, stderr string
	err            error
}

// run executes virtctl args against s with stdin in, as a user would.
func (s *fakeAPIServer) run(ctx context.Context, in io.Reader, args ...string) result {
	cmd := NewCommand("virtctl")
	var stdout, stderr syncBuffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	if in == nil {
		in = strings.NewReader("")
	}
	cmd.SetIn(in)
	cmd.SetArgs(append([]string{"--kubeconfig", s.kubeconfig}, args...))
	err := cmd.ExecuteContext(ctx)
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond until it holds or fails t after a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
