// Package launcherrpc is the protocol between virt-handler and virt-launcher:
// a gRPC service on a unix socket in the pod's sockets directory. Messages
// are the kubevirt.io Go types and small structs, carried with a JSON codec
// (gRPC's content-subtype "json"), so no generated code stands between the
// two sides and a VMI travels exactly as the API server stores it.
package launcherrpc

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	virtv1 "kubevirt.io/api/core/v1"
)

// SocketName is the launcher's socket in the pod's sockets directory.
const SocketName = "launcher.sock"

const serviceName = "virtkube.launcher.v1.Launcher"

// codec marshals messages as JSON.
type codec struct{}

func (codec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (codec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (codec) Name() string                       { return "json" }

func init() { encoding.RegisterCodec(codec{}) }

// Empty is a message without fields.
type Empty struct{}

// PingResponse says who answers.
type PingResponse struct {
	Version string `json:"version"`
}

// SyncRequest asks the launcher to run vmi; a launcher that already runs it
// does nothing.
type SyncRequest struct {
	VMI *virtv1.VirtualMachineInstance `json:"vmi"`
	// Emulation selects software emulation (TCG): the KubeVirt CR allows it
	// and the node has no usable KVM.
	Emulation bool `json:"emulation"`
}

// ShutdownRequest asks for an ACPI shutdown, forced after the grace period.
type ShutdownRequest struct {
	GracePeriodSeconds int64 `json:"gracePeriodSeconds"`
}

// DomainStatus is what the launcher knows of its domain.
type DomainStatus struct {
	// State is one of launcher's State values.
	State string `json:"state"`
	// Reason explains a failed start or an unexpected stop.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// StoppedByGuest is true when the guest powered itself off.
	StoppedByGuest bool `json:"stoppedByGuest,omitempty"`
	// PauseReason is libvirt's reason for a paused domain ("User",
	// "IOError", ...; see launcher.PauseReason); empty unless State is
	// Paused. virt-handler writes the VMI's Paused condition from it.
	PauseReason string `json:"pauseReason,omitempty"`
}

// Refusals of Pause and Unpause, in the words KubeVirt's virt-api uses for
// them: the launcher answers codes.FailedPrecondition with one of these and
// virt-handler passes it on to virt-api as the body of a 409.
const (
	MsgNotRunning    = "VM is not running"
	MsgAlreadyPaused = "VMI is already paused"
	MsgNotPaused     = "VMI is not paused"
)

// Server is what a launcher implements.
type Server interface {
	Ping(context.Context, *Empty) (*PingResponse, error)
	Sync(context.Context, *SyncRequest) (*Empty, error)
	Shutdown(context.Context, *ShutdownRequest) (*Empty, error)
	Kill(context.Context, *Empty) (*Empty, error)
	GetDomain(context.Context, *Empty) (*DomainStatus, error)
	// Pause suspends the guest's CPUs; Unpause resumes them. Both refuse
	// with codes.FailedPrecondition when the domain is not in the state
	// they leave.
	Pause(context.Context, *Empty) (*Empty, error)
	Unpause(context.Context, *Empty) (*Empty, error)
	// Watch sends the domain's status now and on every change; it returns
	// once the launcher is done, after sending the final status.
	Watch(*Empty, grpc.ServerStreamingServer[DomainStatus]) error
}

func unary[Req, Resp any](call func(Server, context.Context, *Req) (*Resp, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		req := new(Req)
		if err := dec(req); err != nil {
			return nil, err
		}
		return call(srv.(Server), ctx, req)
	}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*Server)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Ping", Handler: unary(Server.Ping)},
		{MethodName: "Sync", Handler: unary(Server.Sync)},
		{MethodName: "Shutdown", Handler: unary(Server.Shutdown)},
		{MethodName: "Kill", Handler: unary(Server.Kill)},
		{MethodName: "GetDomain", Handler: unary(Server.GetDomain)},
		{MethodName: "Pause", Handler: unary(Server.Pause)},
		{MethodName: "Unpause", Handler: unary(Server.Unpause)},
	},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Watch",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			req := new(Empty)
			if err := stream.RecvMsg(req); err != nil {
				return err
			}
			return srv.(Server).Watch(req, &grpc.GenericServerStream[Empty, DomainStatus]{ServerStream: stream})
		},
	}},
}

// Serve serves impl on the unix socket at path until ctx is done. The socket
// is readable and writable by root only: virt-handler is its only client.
func Serve(ctx context.Context, path string, impl Server) error {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return err
	}
	s := grpc.NewServer()
	s.RegisterService(&serviceDesc, impl)
	registerStats(s, impl)
	go func() {
		<-ctx.Done()
		// Let answers in flight (a Watch's last status above all) reach
		// their clients; streams must end by themselves (see Server).
		done := make(chan struct{})
		go func() { s.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			s.Stop()
		}
	}()
	if err := s.Serve(l); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// Client talks to one launcher.
type Client struct{ conn *grpc.ClientConn }

// maxSocketPath is the longest path a unix socket address holds.
const maxSocketPath = 107

// DialUnix connects to the unix socket at path, however long the path: a
// kubelet pod directory easily exceeds the 108 bytes of a socket address, so
// a long path is reached through /proc/self/fd of its opened directory.
func DialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	if len(path) <= maxSocketPath {
		return d.DialContext(ctx, "unix", path)
	}
	dir, err := os.OpenFile(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	return d.DialContext(ctx, "unix", fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path)))
}

// Dial connects to the launcher socket at path.
func Dial(path string) (*Client, error) {
	conn, err := grpc.NewClient("passthrough:///"+path,
		grpc.WithContextDialer(DialUnix),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(codec{}.Name())))
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func invoke[Resp any](ctx context.Context, c *Client, method string, req any) (*Resp, error) {
	out := new(Resp)
	if err := c.conn.Invoke(ctx, "/"+serviceName+"/"+method, req, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Ping checks the launcher answers.
func (c *Client) Ping(ctx context.Context) (*PingResponse, error) {
	return invoke[PingResponse](ctx, c, "Ping", &Empty{})
}

// Sync asks the launcher to run the VMI.
func (c *Client) Sync(ctx context.Context, req *SyncRequest) error {
	_, err := invoke[Empty](ctx, c, "Sync", req)
	return err
}

// Shutdown asks for a graceful stop.
func (c *Client) Shutdown(ctx context.Context, grace time.Duration) error {
	_, err := invoke[Empty](ctx, c, "Shutdown", &ShutdownRequest{GracePeriodSeconds: int64(grace / time.Second)})
	return err
}

// Kill stops the domain at once.
func (c *Client) Kill(ctx context.Context) error {
	_, err := invoke[Empty](ctx, c, "Kill", &Empty{})
	return err
}

// GetDomain returns the domain's status.
func (c *Client) GetDomain(ctx context.Context) (*DomainStatus, error) {
	return invoke[DomainStatus](ctx, c, "GetDomain", &Empty{})
}

// Pause suspends the guest.
func (c *Client) Pause(ctx context.Context) error {
	_, err := invoke[Empty](ctx, c, "Pause", &Empty{})
	return err
}

// Unpause resumes a paused guest.
func (c *Client) Unpause(ctx context.Context) error {
	_, err := invoke[Empty](ctx, c, "Unpause", &Empty{})
	return err
}

// Watch streams domain status changes until ctx is done or the launcher
// goes away.
func (c *Client) Watch(ctx context.Context) (func() (*DomainStatus, error), error) {
	stream, err := c.conn.NewStream(ctx, &serviceDesc.Streams[0], "/"+serviceName+"/Watch")
	if err != nil {
		return nil, err
	}
	if err := stream.SendMsg(&Empty{}); err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	return func() (*DomainStatus, error) {
		out := new(DomainStatus)
		if err := stream.RecvMsg(out); err != nil {
			return nil, err
		}
		return out, nil
	}, nil
}
