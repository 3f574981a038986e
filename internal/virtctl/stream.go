package virtctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

const (
	// plainStreamProtocol is the websocket subprotocol virt-api speaks on
	// console, vnc and portforward: raw bytes in binary messages.
	plainStreamProtocol = "plain.kubevirt.io"
	// streamBufferSize matches KubeVirt's websocket buffers.
	streamBufferSize = 10240
	// handshakeTimeout bounds the upgrade as KubeVirt's client does.
	handshakeTimeout = 45 * time.Second
)

// streamError is a failed websocket upgrade. StatusCode lets callers branch
// on what the server answered (console retries on 400: VMI not running yet).
type streamError struct {
	StatusCode int
	err        error
}

func (e *streamError) Error() string { return e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

// dial opens the websocket of a subresource (console, vnc,
// portforward/22/tcp) through the kube-apiserver with the kubeconfig's TLS
// settings and credentials, the same request KubeVirt's virtctl makes.
func (c *client) dial(ctx context.Context, resource, name, subresource string) (*stream, error) {
	u, err := url.Parse(c.config.Host)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	case "http":
		u.Scheme = "ws"
	default:
		return nil, fmt.Errorf("unsupported protocol %q in server address %s", u.Scheme, c.config.Host)
	}
	u.Path = path.Join(u.Path, subresourceRoot, "namespaces", c.namespace, resource, name, subresource)

	tlsConfig, err := rest.TLSConfigFor(c.config)
	if err != nil {
		return nil, err
	}
	proxy := http.ProxyFromEnvironment
	if c.config.Proxy != nil {
		proxy = c.config.Proxy
	}
	dialer := &wsRoundTripper{dialer: &websocket.Dialer{
		Proxy:            proxy,
		TLSClientConfig:  tlsConfig,
		ReadBufferSize:   streamBufferSize,
		WriteBufferSize:  streamBufferSize,
		Subprotocols:     []string{plainStreamProtocol},
		HandshakeTimeout: handshakeTimeout,
	}}
	// The wrappers add what the REST client would: bearer token, basic
	// auth, impersonation, user agent.
	rt, err := rest.HTTPWrappersForConfig(c.config, dialer)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, upgradeError(err, resp)
	}
	return &stream{conn: dialer.conn}, nil
}

// wsRoundTripper is the innermost http.RoundTripper under client-go's auth
// wrappers: it turns the (wrapped) request into a websocket handshake and
// keeps the connection.
type wsRoundTripper struct {
	dialer *websocket.Dialer
	conn   *websocket.Conn
}

func (rt *wsRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	conn, resp, err := rt.dialer.DialContext(r.Context(), r.URL.String(), r.Header)
	if err != nil {
		return resp, err
	}
	rt.conn = conn
	return resp, nil
}

// upgradeError says why the upgrade failed, using the apiserver's Status
// message when it sent one (as KubeVirt's client does).
func upgradeError(err error, resp *http.Response) error {
	if resp == nil {
		return &streamError{err: fmt.Errorf("can't connect to websocket: %w", err)}
	}
	defer resp.Body.Close()
	wrapped := fmt.Errorf("can't connect to websocket (%d): %w", resp.StatusCode, err)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if len(body) > 0 {
		status := &metav1.Status{}
		if strings.Contains(resp.Header.Get("Content-Type"), "json") &&
			json.Unmarshal(body, status) == nil && status.Kind == "Status" && status.Status != metav1.StatusSuccess {
			wrapped = apierrors.FromObject(status)
		} else {
			wrapped = fmt.Errorf("%w: %s", wrapped, strings.TrimSpace(string(body)))
		}
	}
	return &streamError{StatusCode: resp.StatusCode, err: wrapped}
}

// stream is one open subresource websocket as an io.ReadWriteCloser: bytes
// travel in binary messages; a normal close reads as io.EOF. One reader and
// one writer may use it at the same time.
type stream struct {
	conn   *websocket.Conn
	reader io.Reader
	once   sync.Once
}

func (s *stream) Read(p []byte) (int, error) {
	for {
		if s.reader == nil {
			typ, r, err := s.conn.NextReader()
			if err != nil {
				return 0, closeAsEOF(err)
			}
			if typ != websocket.BinaryMessage {
				continue
			}
			s.reader = r
		}
		n, err := s.reader.Read(p)
		if errors.Is(err, io.EOF) {
			s.reader = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, closeAsEOF(err)
	}
}

// readMessage returns the next whole binary message; UDP forwarding needs the
// datagram boundaries Read does not keep.
func (s *stream) readMessage() ([]byte, error) {
	for {
		typ, data, err := s.conn.ReadMessage()
		if err != nil {
			return nil, closeAsEOF(err)
		}
		if typ == websocket.BinaryMessage {
			return data, nil
		}
	}
}

func (s *stream) Write(p []byte) (int, error) {
	if err := s.conn.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, closeAsEOF(err)
	}
	return len(p), nil
}

// Close says goodbye with a normal close frame, then drops the connection.
func (s *stream) Close() error {
	var err error
	s.once.Do(func() {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = s.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		err = s.conn.Close()
	})
	return err
}

func closeAsEOF(err error) error {
	if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		return io.EOF
	}
	return err
}

// splice copies both ways between a local connection and a stream until one
// side is done, then closes both. It returns the first error that is not an
// ordinary end of stream.
func splice(local io.ReadWriteCloser, remote io.ReadWriteCloser) error {
	errs := make(chan error, 2)
	go func() {
		_, err := io.Copy(remote, local)
		errs <- err
	}()
	go func() {
		_, err := io.Copy(local, remote)
		errs <- err
	}()
	err := <-errs
	local.Close()
	remote.Close()
	<-errs
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
