package launcher

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strings"

	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/domain"
	"github.com/virtkube/virtkube/internal/network"
	"github.com/virtkube/virtkube/internal/network/dhcp"
)

// resolvConf is the pod's DNS configuration, handed to the guest.
var resolvConf = "/etc/resolv.conf"

// plugNetwork is phase 2 of the pod network: for each interface on the pod
// network, the tap phase 1 made becomes the guest NIC's backend, and a DHCP
// server on its bridge gives the guest its address until the launcher
// ends. The backends are keyed by network name, as domain.Context wants.
func (l *Launcher) plugNetwork(ctx context.Context, vmi *virtv1.VirtualMachineInstance) (map[string]domain.InterfaceBackend, error) {
	pod := map[string]bool{}
	for _, n := range vmi.Spec.Networks {
		if n.Pod != nil {
			pod[n.Name] = true
		}
	}
	backends := map[string]domain.InterfaceBackend{}
	dns, search := readResolvConf(resolvConf)
	hostname := vmi.Spec.Hostname
	if hostname == "" {
		hostname = vmi.Name
	}
	for _, iface := range vmi.Spec.Domain.Devices.Interfaces {
		if !pod[iface.Name] {
			continue
		}
		c, err := network.ReadConfig(network.CacheDir(l.cfg.SocketsDir), iface.Name)
		if err != nil {
			return nil, fmt.Errorf("interface %s: phase 1 result: %w", iface.Name, err)
		}
		lease, err := c.Lease(dns, search, hostname)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", iface.Name, err)
		}
		srv, err := dhcp.Listen(ctx, c.Bridge, lease)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", iface.Name, err)
		}
		// The server lives as long as the launcher.
		sctx, cancel := context.WithCancel(klog.NewContext(context.Background(), klog.FromContext(ctx)))
		go func() {
			<-l.closing
			cancel()
		}()
		go func() {
			if err := srv.Serve(sctx); err != nil {
				klog.FromContext(ctx).Error(err, "DHCP server ended", "interface", iface.Name)
			}
		}()
		backends[iface.Name] = domain.InterfaceBackend{TapDevice: c.Tap, MAC: c.GuestMAC, MTU: uint(c.MTU)}
	}
	return backends, nil
}

// readResolvConf reads nameservers and search domains. Loopback name
// servers (a resolver on the node itself) are useless to a guest and left
// out.
func readResolvConf(path string) (dns []net.IP, search []string) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if ip := net.ParseIP(fields[1]).To4(); ip != nil && !ip.IsLoopback() {
				dns = append(dns, ip)
			}
		case "search":
			search = fields[1:]
		}
	}
	return dns, search
}
