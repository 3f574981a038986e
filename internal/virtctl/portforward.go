package virtctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// target is the object a port-forward, ssh or scp talks to.
type target struct {
	kind      string // "vm" or "vmi"
	name      string
	namespace string // empty: the one the kubeconfig and flags select
}

// resource is the API resource of the target's kind.
func (t target) resource() string {
	if t.kind == "vm" {
		return resourceVM
	}
	return resourceVMI
}

// parseTarget reads KubeVirt's type/name[/namespace], and its legacy
// type/name.namespace form (a dot with no third part).
func parseTarget(s string) (target, error) {
	parts := strings.Split(s, "/")
	var t target
	switch len(parts) {
	case 2:
		t.name = parts[1]
		if i := strings.Index(t.name, "."); i >= 0 {
			t.name, t.namespace = t.name[:i], t.name[i+1:]
		}
	case 3:
		t.name, t.namespace = parts[1], parts[2]
		if t.namespace == "" {
			return t, errors.New("namespace cannot be empty")
		}
	case 1:
		return t, errors.New("target must contain type and name separated by '/'")
	default:
		return t, errors.New("target is not valid with more than two '/'")
	}
	switch strings.ToLower(parts[0]) {
	case "vm", "vms", "virtualmachine", "virtualmachines":
		t.kind = "vm"
	case "vmi", "vmis", "virtualmachineinstance", "virtualmachineinstances":
		t.kind = "vmi"
	default:
		return t, fmt.Errorf("unsupported resource type '%s'", parts[0])
	}
	if t.name == "" {
		return t, errors.New("name cannot be empty")
	}
	return t, nil
}

// forwardedPort is one [protocol/]local[:remote] argument.
type forwardedPort struct {
	protocol      string
	local, remote int
}

func parsePort(s string) (forwardedPort, error) {
	p := forwardedPort{protocol: "tcp"}
	if proto, rest, ok := strings.Cut(s, "/"); ok {
		p.protocol, s = strings.ToLower(proto), rest
	}
	if p.protocol != "tcp" && p.protocol != "udp" {
		return p, fmt.Errorf("unknown protocol: %s", p.protocol)
	}
	local, remote, hasRemote := strings.Cut(s, ":")
	var err error
	if p.local, err = strconv.Atoi(local); err != nil {
		return p, fmt.Errorf("invalid port %q: %w", s, err)
	}
	p.remote = p.local
	if hasRemote {
		if p.remote, err = strconv.Atoi(remote); err != nil {
			return p, fmt.Errorf("invalid port %q: %w", s, err)
		}
	}
	return p, nil
}

// portForwardPath is the subresource of one forwarded port.
func portForwardPath(port int, protocol string) string {
	return fmt.Sprintf("portforward/%d/%s", port, protocol)
}

func newPortForwardCommand(cc clientcmd.ClientConfig) *cobra.Command {
	var stdio bool
	address := "127.0.0.1"
	cmd := &cobra.Command{
		Use:   "port-forward type/name[/namespace] [protocol/]localPort[:targetPort]...",
		Short: "Forward local ports to a virtualmachine or virtualmachineinstance.",
		Long: `Forward local ports to a virtualmachine or virtualmachineinstance.

The target argument supports the syntax type/name[/namespace] with /namespace as optional field.
The legacy syntax type/name.namespace is accepted too.

The port argument supports the syntax protocol/localPort:targetPort with protocol/ and :targetPort as optional fields.
Protocol supports TCP (default) and UDP.

Portforwards get established over the Kubernetes control-plane using websocket streams.`,
		Example: `  # Forward the local port 8080 to the vmi port:
  virtctl port-forward vmi/testvmi 8080

  # Forward the local port 8080 to the vmi port 9090 as a UDP connection:
  virtctl port-forward vmi/testvmi/mynamespace udp/8080:9090`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := parseTarget(args[0])
			if err != nil {
				return err
			}
			var ports []forwardedPort
			for _, a := range args[1:] {
				p, err := parsePort(a)
				if err != nil {
					return err
				}
				ports = append(ports, p)
			}
			c, err := newClient(cc)
			if err != nil {
				return err
			}
			if t.namespace != "" {
				c.namespace = t.namespace
			}
			if stdio {
				if len(ports) != 1 {
					return errors.New("only one port supported when forwarding to stdout")
				}
				return forwardStdio(cmd.Context(), c, t, ports[0], cmd.InOrStdin(), cmd.OutOrStdout())
			}
			f := &forwarder{client: c, target: t, log: cmd.ErrOrStderr()}
			for _, p := range ports {
				if err := f.listen(cmd.Context(), address, p); err != nil {
					f.close()
					return err
				}
			}
			<-cmd.Context().Done()
			f.close()
			return nil
		},
	}
	cmd.Flags().BoolVar(&stdio, "stdio", false, "--stdio=true: Set this to true to forward the tunnel to stdout/stdin; Only works with a single port")
	cmd.Flags().StringVar(&address, "address", address, "--address=: Set this to the address the local ports should be opened on")
	return cmd
}

// forwardStdio is the ProxyCommand mode ssh and scp use: one stream, the
// process's stdin and stdout at the local end. Like nc, it keeps printing
// what the VM sends after stdin ends, until the VM closes the stream (ssh
// ends its ProxyCommand itself when the session is over).
func forwardStdio(ctx context.Context, c *client, t target, p forwardedPort, in io.Reader, out io.Writer) error {
	conn, err := c.dial(ctx, t.resource(), t.name, portForwardPath(p.remote, p.protocol))
	if err != nil {
		return fmt.Errorf("can't access %s/%s.%s: %w", t.kind, t.name, c.namespace, err)
	}
	defer conn.Close()
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, in)
		sent <- err
	}()
	received := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, conn)
		received <- err
	}()
	select {
	case err = <-sent:
		if err == nil {
			select {
			case err = <-received:
			case <-ctx.Done():
			}
		}
	case err = <-received:
	case <-ctx.Done():
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// forwarder serves the local ends of one port-forward command.
type forwarder struct {
	client *client
	target target
	log    io.Writer

	mu      sync.Mutex
	closers []io.Closer
}

func (f *forwarder) track(c io.Closer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closers = append(f.closers, c)
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.closers {
		c.Close()
	}
}

// listen opens the local port and serves it in the background: each TCP
// connection gets its own stream; each UDP peer gets its own stream too.
func (f *forwarder) listen(ctx context.Context, address string, p forwardedPort) error {
	hostPort := net.JoinHostPort(address, strconv.Itoa(p.local))
	fmt.Fprintf(f.log, "forwarding %s %s to %d\n", p.protocol, hostPort, p.remote)
	if p.protocol == "udp" {
		pc, err := net.ListenPacket("udp", hostPort)
		if err != nil {
			return err
		}
		f.track(pc)
		go f.serveUDP(ctx, pc, p)
		return nil
	}
	ln, err := net.Listen("tcp", hostPort)
	if err != nil {
		return err
	}
	f.track(ln)
	go f.serveTCP(ctx, ln, p)
	return nil
}

func (f *forwarder) serveTCP(ctx context.Context, ln net.Listener, p forwardedPort) {
	for {
		local, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			klog.V(2).InfoS("opening new tcp tunnel", "port", p.remote)
			remote, err := f.client.dial(ctx, f.target.resource(), f.target.name, portForwardPath(p.remote, p.protocol))
			if err != nil {
				fmt.Fprintf(f.log, "can't access %s/%s.%s: %v\n", f.target.kind, f.target.name, f.client.namespace, err)
				local.Close()
				return
			}
			if err := splice(local, remote); err != nil {
				fmt.Fprintf(f.log, "error handling connection for %d: %v\n", p.local, err)
			}
		}()
	}
}

// serveUDP relays datagrams: one websocket message is one datagram, in
// both directions, per local peer address.
func (f *forwarder) serveUDP(ctx context.Context, pc net.PacketConn, p forwardedPort) {
	var mu sync.Mutex
	peers := map[string]*stream{}
	buf := make([]byte, 65535)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		mu.Lock()
		remote, ok := peers[addr.String()]
		if !ok {
			remote, err = f.client.dial(ctx, f.target.resource(), f.target.name, portForwardPath(p.remote, p.protocol))
			if err != nil {
				mu.Unlock()
				fmt.Fprintf(f.log, "can't access %s/%s.%s: %v\n", f.target.kind, f.target.name, f.client.namespace, err)
				continue
			}
			peers[addr.String()] = remote
			f.track(remote)
			go func() {
				for {
					msg, err := remote.readMessage()
					if err != nil {
						break
					}
					if _, err := pc.WriteTo(msg, addr); err != nil {
						break
					}
				}
				mu.Lock()
				delete(peers, addr.String())
				mu.Unlock()
				remote.Close()
			}()
		}
		mu.Unlock()
		if _, err := remote.Write(buf[:n]); err != nil {
			fmt.Fprintf(f.log, "error handling connection for %d: %v\n", p.local, err)
		}
	}
}
