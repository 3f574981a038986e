// Package network connects a VMI's guest to its launcher pod's network, as
// KubeVirt's bindings do, in two phases:
//
//   - Phase 1 runs in virt-handler (privileged) against the launcher pod's
//     network namespace: it looks at the pod's interface (address, MAC, MTU,
//     routes), builds the in-pod bridge k6t-eth0 and the guest's tap0, and
//     for the bridge binding moves the pod's address and MAC to the guest;
//     for masquerade it puts the guest behind NAT (nftables). What the guest
//     is to get is cached in a file of the pod's shared directory.
//   - Phase 2 runs in virt-launcher: it reads that file, plugs tap0 into the
//     domain and serves the guest its address by DHCP (package dhcp).
//
// Phase 1 changes the pod's network in steps that cannot all be undone; a
// marker file records that it started, and a phase 1 that started and did
// not finish is never run again over a half-changed pod: the VMI fails
// instead (its pod must go).
package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/atomicfile"
	"github.com/virtkube/virtkube/internal/network/dhcp"
)

// Names inside the launcher pod, as KubeVirt's.
const (
	PodInterface  = "eth0"
	PodNICRenamed = "eth0-nic"
	BridgeName    = "k6t-eth0"
	TapName       = "tap0"
	// bridgeFakeIP is the bridge binding's DHCP server address: the pod's
	// own address goes to the guest.
	bridgeFakeIP = "169.254.75.10"
	// DefaultMasqueradeCIDR is the guest's network behind masquerade.
	DefaultMasqueradeCIDR = "10.0.2.0/24"
)

// Bindings this package implements.
const (
	BindingBridge     = "bridge"
	BindingMasquerade = "masquerade"
)

// Config is what phase 1 decided for one interface: the input of phase 2
// and of the VMI's status.interfaces. It is cached as JSON.
type Config struct {
	// Interface is the VMI's interface name (spec.domain.devices.interfaces).
	Interface string `json:"interface"`
	Binding   string `json:"binding"`
	Tap       string `json:"tap"`
	Bridge    string `json:"bridge"`
	MTU       int    `json:"mtu"`
	// GuestMAC is the guest NIC's address.
	GuestMAC string `json:"guestMAC"`
	// GuestIP is what DHCP hands out, with its prefix.
	GuestIP string `json:"guestIP"`
	// Router is the guest's default gateway; empty for none.
	Router string `json:"router,omitempty"`
	// ServerIP is the DHCP server's address on the bridge.
	ServerIP string `json:"serverIP"`
	// Routes are the pod's other routes through a gateway (classless
	// routes for the guest).
	Routes []Route `json:"routes,omitempty"`
	// PodIP is the pod's address, the one the VMI's status shows.
	PodIP string `json:"podIP"`
}

// Route is a route through a gateway.
type Route struct {
	Dst     string `json:"dst"`
	Gateway string `json:"gateway"`
}

// Lease is the DHCP lease of c, with the pod's DNS settings and the
// guest's hostname.
func (c *Config) Lease(dns []net.IP, search []string, hostname string) (dhcp.Lease, error) {
	mac, err := net.ParseMAC(c.GuestMAC)
	if err != nil {
		return dhcp.Lease{}, fmt.Errorf("guest MAC %q: %w", c.GuestMAC, err)
	}
	ip, ipnet, err := net.ParseCIDR(c.GuestIP)
	if err != nil {
		return dhcp.Lease{}, fmt.Errorf("guest IP %q: %w", c.GuestIP, err)
	}
	l := dhcp.Lease{
		MAC: mac, IP: net.IPNet{IP: ip.To4(), Mask: ipnet.Mask},
		ServerID: net.ParseIP(c.ServerIP).To4(), DNS: dns, Search: search,
		MTU: uint16(c.MTU), Hostname: hostname,
	}
	if c.Router != "" {
		l.Router = net.ParseIP(c.Router).To4()
	}
	for _, r := range c.Routes {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return dhcp.Lease{}, fmt.Errorf("route %q: %w", r.Dst, err)
		}
		l.Routes = append(l.Routes, dhcp.Route{Dst: *dst, Gateway: net.ParseIP(r.Gateway).To4()})
	}
	return l, nil
}

// Request is what phase 1 is asked to do for one interface.
type Request struct {
	// Netns is the path of the launcher pod's network namespace.
	Netns string
	// CacheDir holds the phase's markers and results (in the directory
	// the pod shares with virt-handler).
	CacheDir  string
	Interface virtv1.Interface
	// MasqueradeCIDR is the network's vmNetworkCIDR, or empty.
	MasqueradeCIDR string
}

// Binding is the binding of iface, or an error naming what is not supported.
func Binding(iface virtv1.Interface) (string, error) {
	switch {
	case iface.Bridge != nil:
		return BindingBridge, nil
	case iface.Masquerade != nil:
		return BindingMasquerade, nil
	}
	return "", fmt.Errorf("interface %s: only the bridge and masquerade bindings are supported on the pod network", iface.Name)
}

// CacheDir is where phase 1 leaves its results for phase 2, under the
// sockets directory virt-handler and virt-launcher share.
func CacheDir(socketsDir string) string { return filepath.Join(socketsDir, "network") }

// CacheFile is where phase 1's result for interface is kept in dir.
func CacheFile(dir, iface string) string { return filepath.Join(dir, iface+".json") }

func startedFile(dir, iface string) string { return filepath.Join(dir, iface+".started") }

// ErrHalfDone is returned for an interface whose phase 1 started earlier and
// did not finish: the pod's network is in an unknown state.
var ErrHalfDone = errors.New("phase 1 of the pod network started earlier and did not finish; the pod's network is in an unknown state and is not changed again (delete the VMI)")

// Setup runs phase 1 for req once: a finished phase 1 returns its cached
// result, a half-done one ErrHalfDone.
func Setup(req Request) (*Config, error) {
	if c, err := ReadConfig(req.CacheDir, req.Interface.Name); err == nil {
		return c, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	binding, err := Binding(req.Interface)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(req.CacheDir, 0o755); err != nil {
		return nil, err
	}
	started := startedFile(req.CacheDir, req.Interface.Name)
	if _, err := os.Stat(started); err == nil {
		return nil, fmt.Errorf("interface %s: %w", req.Interface.Name, ErrHalfDone)
	}
	if err := atomicfile.WriteFile(started, nil, 0o644); err != nil {
		return nil, err
	}
	var c *Config
	err = inNetns(req.Netns, func() error {
		var err error
		switch binding {
		case BindingBridge:
			c, err = setupBridge(req)
		case BindingMasquerade:
			c, err = setupMasquerade(req)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("interface %s (%s binding): %w", req.Interface.Name, binding, err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(CacheFile(req.CacheDir, req.Interface.Name), body, 0o644); err != nil {
		return nil, err
	}
	return c, os.Remove(started)
}

// ReadConfig reads phase 1's result for iface from dir.
func ReadConfig(dir, iface string) (*Config, error) {
	body, err := os.ReadFile(CacheFile(dir, iface))
	if err != nil {
		return nil, err
	}
	c := &Config{}
	if err := json.Unmarshal(body, c); err != nil {
		return nil, fmt.Errorf("%s: %w", CacheFile(dir, iface), err)
	}
	return c, nil
}
