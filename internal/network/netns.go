package network

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// inNetns runs f on an OS thread that is in the network namespace at path.
// Links, addresses, sysctls and nftables all act on the calling thread's
// namespace. A thread that cannot be brought back is not returned to the
// pool.
func inNetns(path string, f func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", path, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer origin.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter %s: %w", path, err)
			return
		}
		errc <- f()
		if netns.Set(origin) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return <-errc
}

// DialInNetns connects to address (a literal IP and a port) from inside the
// network namespace at path, e.g. to a masquerade guest that only the
// launcher pod can reach. A socket belongs to the namespace of the thread
// that creates it and keeps it on every thread that uses it later, so the
// connection works from any goroutine. A host name is refused: Go resolves
// names on other goroutines, outside the namespace.
func DialInNetns(ctx context.Context, path, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("dial %s in %s: %q is not an IP address", address, path, host)
	}
	var conn net.Conn
	err = inNetns(path, func() error {
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return conn, err
}

// setSysctl writes a sysctl of the calling thread's network namespace, e.g.
// "net/ipv4/ip_forward".
func setSysctl(name, value string) error {
	p := filepath.Join("/proc/sys", name)
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(name, "/", "."), value, err)
	}
	return nil
}
