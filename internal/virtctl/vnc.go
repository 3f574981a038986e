package virtctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// viewerConnectTimeout is how long vnc waits for the viewer it started to
// connect to the local proxy (KubeVirt's listen timeout).
const viewerConnectTimeout = time.Minute

// viewer is a VNC client vnc knows how to start on a local port.
type viewer struct {
	bin  string
	args func(addr string, port int) []string
}

// viewers are tried in order; the first one on $PATH is used.
var viewers = []viewer{
	{"remote-viewer", func(addr string, port int) []string {
		return []string{fmt.Sprintf("vnc://%s", net.JoinHostPort(addr, strconv.Itoa(port)))}
	}},
	// TigerVNC, TightVNC and RealVNC read "host::port" as a raw TCP port.
	{"vncviewer", func(addr string, port int) []string { return []string{fmt.Sprintf("%s::%d", addr, port)} }},
	{"xtigervncviewer", func(addr string, port int) []string { return []string{fmt.Sprintf("%s::%d", addr, port)} }},
}

// lookPath finds viewer binaries; tests replace it.
var lookPath = exec.LookPath

func newVNCCommand(cc clientcmd.ClientConfig) *cobra.Command {
	var proxyOnly bool
	var port int
	var address string
	cmd := &cobra.Command{
		Use:   "vnc (VMI)",
		Short: "Open a vnc connection to a virtual machine instance.",
		Example: `  # Connect to 'testvmi' via remote-viewer:
  virtctl vnc testvmi

  # Only start the proxy and print its port, for any VNC client:
  virtctl vnc testvmi --proxy-only`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cc)
			if err != nil {
				return err
			}
			var v *viewer
			if !proxyOnly {
				if v, err = findViewer(); err != nil {
					return err
				}
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(address, strconv.Itoa(port)))
			if err != nil {
				return fmt.Errorf("can't listen on %s:%d: %w", address, port, err)
			}
			defer ln.Close()
			return runVNC(cmd, c, args[0], ln, v)
		},
	}
	cmd.Flags().BoolVar(&proxyOnly, "proxy-only", false, "--proxy-only=false: Setting this true will run only the virtctl vnc proxy and show the port where VNC viewers can connect")
	cmd.Flags().IntVar(&port, "port", 0, "--port=0: Assigning a port value to this will try to run the proxy on the given port if the port is accessible; If unassigned, the proxy will run on a random port")
	cmd.Flags().StringVar(&address, "address", "127.0.0.1", "--address=127.0.0.1: Setting this will change the listening address of the VNC server. Example: --address=0.0.0.0 will make the server listen on all interfaces.")
	return cmd
}

func findViewer() (*viewer, error) {
	for i := range viewers {
		if _, err := lookPath(viewers[i].bin); err == nil {
			return &viewers[i], nil
		}
	}
	return nil, errors.New("could not find a VNC viewer (remote-viewer, vncviewer or xtigervncviewer) in $PATH; " +
		"use --proxy-only and connect any VNC client to the port it prints")
}

// runVNC proxies one VNC client connection on ln to the VMI's vnc websocket.
// With a viewer it starts the viewer on ln's port and ends when the viewer
// does; with --proxy-only (v nil) it prints {"port": N} and serves the first
// client that connects.
func runVNC(cmd *cobra.Command, c *client, name string, ln net.Listener, v *viewer) error {
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	addr := ln.Addr().(*net.TCPAddr)

	viewerDone := make(chan error, 1)
	if v == nil {
		out, err := json.Marshal(struct {
			Port int `json:"port"`
		}{addr.Port})
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), string(out))
	} else {
		args := v.args(addr.IP.String(), addr.Port)
		klog.V(2).InfoS("starting VNC viewer", "binary", v.bin, "args", args)
		viewerCmd := exec.CommandContext(ctx, v.bin, args...)
		viewerCmd.Stdout, viewerCmd.Stderr = cmd.ErrOrStderr(), cmd.ErrOrStderr()
		if err := viewerCmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", v.bin, err)
		}
		go func() { viewerDone <- viewerCmd.Wait() }()
		if tl, ok := ln.(*net.TCPListener); ok {
			_ = tl.SetDeadline(time.Now().Add(viewerConnectTimeout))
		}
	}

	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			acceptErr <- err
			return
		}
		accepted <- conn
	}()

	var local net.Conn
	select {
	case <-ctx.Done():
		return nil
	case err := <-viewerDone:
		return viewerExit(v, err)
	case err := <-acceptErr:
		return fmt.Errorf("no VNC client connected: %w", err)
	case local = <-accepted:
	}
	conn, err := c.dial(ctx, resourceVMI, name, "vnc")
	if err != nil {
		local.Close()
		return fmt.Errorf("Can't access VMI %s: %w", name, err)
	}
	proxied := make(chan error, 1)
	go func() { proxied <- splice(local, conn) }()
	select {
	case <-ctx.Done():
		local.Close()
		conn.Close()
		return nil
	case err := <-viewerDone:
		local.Close()
		conn.Close()
		return viewerExit(v, err)
	case err := <-proxied:
		// The session is over (the VM went away or the client left); a
		// viewer we started has nothing left to show and ends with us.
		return err
	}
}

func viewerExit(v *viewer, err error) error {
	if err != nil {
		return fmt.Errorf("%s exited: %w", v.bin, err)
	}
	return nil
}
