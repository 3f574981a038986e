package subresource

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// HandlerAddressAnnotation is where virt-handler publishes, on its Node,
// the host:port of its console server.
const HandlerAddressAnnotation = "virtkube.io/virt-handler-address"

// Handlers reaches virt-handler's console server on a VMI's node, with
// mutual TLS: virt-api's client certificate, and the CA that signed the
// handlers' serving certificates.
type Handlers struct {
	// Nodes reads the Node a VMI runs on.
	Nodes client.Reader
	// Fallback is used for a Node that publishes no address (embedded
	// mode: the server knows its one handler's address). Empty: none.
	Fallback string

	transport *http.Transport
}

// HandlerTLS names the files of virt-api's identity towards virt-handler.
type HandlerTLS struct {
	CertFile, KeyFile string
	// CAFile verifies virt-handler's serving certificate.
	CAFile string
}

// NewHandlers loads the client certificate and CA of t.
func NewHandlers(nodes client.Reader, fallback string, t HandlerTLS) (*Handlers, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("virt-handler client certificate: %w", err)
	}
	caPEM, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("virt-handler CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("virt-handler CA %s holds no certificate", t.CAFile)
	}
	return &Handlers{Nodes: nodes, Fallback: fallback, transport: &http.Transport{
		// HTTP/1.1 only: a websocket upgrade is an HTTP/1.1 exchange.
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: roots},
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
	}}, nil
}

// address is the console server of node's virt-handler.
func (h *Handlers) address(ctx context.Context, node string) (string, error) {
	n := &corev1.Node{}
	if err := h.Nodes.Get(ctx, client.ObjectKey{Name: node}, n); err != nil && !apierrors.IsNotFound(err) {
		return "", apierrors.NewInternalError(fmt.Errorf("read node %s: %w", node, err))
	}
	if addr := n.Annotations[HandlerAddressAnnotation]; addr != "" {
		return addr, nil
	}
	if h.Fallback != "" {
		return h.Fallback, nil
	}
	return "", apierrors.NewServiceUnavailable(fmt.Sprintf("virt-handler on node %q has not published its address (annotation %s)", node, HandlerAddressAnnotation))
}

// handlerPath is virt-handler's path for one VMI's stream or action.
func handlerPath(vmi *virtv1.VirtualMachineInstance, what string) string {
	return fmt.Sprintf("/v1/namespaces/%s/virtualmachineinstances/%s/%s", vmi.Namespace, vmi.Name, what)
}

// proxy hands the request (a websocket upgrade) to virt-handler and, once
// it answers 101, copies bytes both ways until either side closes. A
// refusal by virt-handler reaches the user as a Status, which kubectl and
// virtctl print. The aggregator's identity headers stay here: virt-handler
// trusts virt-api's certificate, not them.
func (h *Handlers) proxy(w http.ResponseWriter, r *http.Request, addr, path string) {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = "https", addr, addr
			pr.Out.URL.Path, pr.Out.URL.RawPath, pr.Out.URL.RawQuery = path, "", ""
			for k := range pr.Out.Header {
				if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-remote-") || lk == "authorization" || strings.HasPrefix(lk, "impersonate-") {
					pr.Out.Header.Del(k)
				}
			}
		},
		Transport: h.transport,
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusSwitchingProtocols {
				return nil
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			return handlerError(resp.StatusCode, body)
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			var refused *apierrors.StatusError
			if errors.As(err, &refused) {
				writeError(w, refused)
				return
			}
			writeError(w, apierrors.NewServiceUnavailable(fmt.Sprintf("virt-handler at %s: %v", addr, err)))
		},
	}
	rp.ServeHTTP(w, r)
}

// put sends an action (pause, unpause) to virt-handler; a refusal comes
// back as an error with virt-handler's status code and message.
func (h *Handlers) put(ctx context.Context, addr, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "https://"+addr+path, nil)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	resp, err := h.transport.RoundTrip(req)
	if err != nil {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("virt-handler at %s: %v", addr, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return handlerError(resp.StatusCode, body)
}

// handlerError turns virt-handler's refusal into a Status: its own Status
// body when it sent one, else its text.
func handlerError(code int, body []byte) error {
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
		st.Code = int32(code)
		return &apierrors.StatusError{ErrStatus: st}
	}
	msg := strings.TrimSpace(string(body))
	if msg == "" {
		msg = http.StatusText(code)
	}
	reason := metav1.StatusReasonUnknown
	switch code {
	case http.StatusConflict:
		reason = metav1.StatusReasonConflict
	case http.StatusNotFound:
		reason = metav1.StatusReasonNotFound
	case http.StatusBadRequest:
		reason = metav1.StatusReasonBadRequest
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg}}
}

var errNoHandlers = errors.New("virt-api was started without a virt-handler client certificate")
