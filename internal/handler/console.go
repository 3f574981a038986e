package handler

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/controller/vmi"
	"github.com/virtkube/virtkube/internal/domain"
	"github.com/virtkube/virtkube/internal/launcherrpc"
)

// ConsolePort is where virt-handler serves consoles, as KubeVirt's.
const ConsolePort = 8186

// PlainSubprotocol is the websocket subprotocol KubeVirt uses for raw
// console and VNC bytes.
const PlainSubprotocol = "plain.kubevirt.io"

// ConsoleClientName is the common name a client certificate must carry to
// open consoles: only virt-api proxies them, after Kubernetes RBAC allowed
// the user.
const ConsoleClientName = "virt-api"

// AddressAnnotation on a Node is the host:port of its virt-handler's console
// server: where virt-api dials for consoles, VNC, pause and unpause.
const AddressAnnotation = "virtkube.io/virt-handler-address"

// ConsoleServer serves the serial console and VNC of this node's VMIs over
// websockets, and pauses and unpauses them, on mutually authenticated TLS:
//
//	GET /v1/namespaces/{namespace}/virtualmachineinstances/{name}/console
//	GET /v1/namespaces/{namespace}/virtualmachineinstances/{name}/vnc
//	PUT /v1/namespaces/{namespace}/virtualmachineinstances/{name}/pause
//	PUT /v1/namespaces/{namespace}/virtualmachineinstances/{name}/unpause
//	GET /v1/namespaces/{namespace}/virtualmachineinstances/{name}/portforward/{port}/{protocol}
type ConsoleServer struct {
	Client   client.Reader
	NodeName string
	Pods     PodDirs
}

// Handler is the HTTP handler; tests may serve it themselves.
func (s *ConsoleServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/namespaces/{namespace}/virtualmachineinstances/{name}/console", func(w http.ResponseWriter, r *http.Request) {
		s.stream(w, r, domain.SerialSocket)
	})
	mux.HandleFunc("GET /v1/namespaces/{namespace}/virtualmachineinstances/{name}/vnc", func(w http.ResponseWriter, r *http.Request) {
		s.stream(w, r, domain.VNCSocket)
	})
	mux.HandleFunc("PUT /v1/namespaces/{namespace}/virtualmachineinstances/{name}/pause", func(w http.ResponseWriter, r *http.Request) {
		s.changePause(w, r, true)
	})
	mux.HandleFunc("PUT /v1/namespaces/{namespace}/virtualmachineinstances/{name}/unpause", func(w http.ResponseWriter, r *http.Request) {
		s.changePause(w, r, false)
	})
	mux.HandleFunc("GET /v1/namespaces/{namespace}/virtualmachineinstances/{name}/portforward/{port}/{protocol}", s.portForward)
	return mux
}

var upgrader = websocket.Upgrader{
	Subprotocols:    []string{PlainSubprotocol},
	ReadBufferSize:  32 << 10,
	WriteBufferSize: 32 << 10,
	// Only virt-api connects, with a client certificate; there is no
	// browser origin to check.
	CheckOrigin: func(*http.Request) bool { return true },
}

func (s *ConsoleServer) stream(w http.ResponseWriter, r *http.Request, socketName string) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	v := &virtv1.VirtualMachineInstance{}
	if err := s.Client.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: name}, v); err != nil {
		http.Error(w, fmt.Sprintf("VMI %s/%s: %v", ns, name, err), http.StatusNotFound)
		return
	}
	if v.Status.NodeName != s.NodeName || v.Status.Phase != virtv1.Running {
		http.Error(w, fmt.Sprintf("VMI %s/%s is not running on node %s", ns, name, s.NodeName), http.StatusBadRequest)
		return
	}
	dir := s.socketsDir(v)
	if dir == "" {
		http.Error(w, "no launcher pod on this node", http.StatusBadRequest)
		return
	}
	path := filepath.Join(dir, socketName)
	backend, err := launcherrpc.DialUnix(r.Context(), path)
	if err != nil {
		http.Error(w, fmt.Sprintf("%s of VMI %s/%s is not available: %v", socketName, ns, name, err), http.StatusServiceUnavailable)
		return
	}
	defer backend.Close()
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the client
	}
	defer ws.Close()
	klog.FromContext(r.Context()).V(2).Info("console opened", "vmi", ns+"/"+name, "stream", socketName)
	if err := Splice(ws, backend); err != nil && !isClosed(err) {
		klog.FromContext(r.Context()).V(2).Info("console closed", "vmi", ns+"/"+name, "err", err)
	}
}

// socketsDir is the sockets directory of v's launcher pod on this node, ""
// when it has none here.
func (s *ConsoleServer) socketsDir(v *virtv1.VirtualMachineInstance) string {
	for uid, node := range v.Status.ActivePods {
		if node == s.NodeName {
			return s.Pods.EmptyDir(uid, vmi.SocketsVolume)
		}
	}
	return ""
}

// Splice copies between a websocket (binary messages) and a byte stream
// until either side ends.
func Splice(ws *websocket.Conn, conn net.Conn) error {
	errs := make(chan error, 2)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				if werr := ws.WriteMessage(websocket.BinaryMessage, buf[:n]); werr != nil {
					errs <- werr
					return
				}
			}
			if err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		for {
			_, r, err := ws.NextReader()
			if err != nil {
				errs <- err
				return
			}
			if _, err := io.Copy(conn, r); err != nil {
				errs <- err
				return
			}
		}
	}()
	err := <-errs
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return err
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway)
}

// ConsoleTLS is the TLS setup of the console server.
type ConsoleTLS struct {
	CertFile, KeyFile string
	// ClientCAFile verifies client certificates; their common name must be
	// ConsoleClientName.
	ClientCAFile string
}

// ServeConsoles serves s on addr with mutual TLS until ctx is done.
func ServeConsoles(ctx context.Context, addr string, s *ConsoleServer, t ConsoleTLS) error {
	caPEM, err := os.ReadFile(t.ClientCAFile)
	if err != nil {
		return fmt.Errorf("console client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("console client CA %s holds no certificate", t.ClientCAFile)
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return fmt.Errorf("console serving certificate: %w", err)
	}
	srv := &http.Server{
		Addr:              addr,
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName != ConsoleClientName {
					return fmt.Errorf("console clients must present a %q certificate", ConsoleClientName)
				}
				return nil
			},
		},
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("console server: %w", err)
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
