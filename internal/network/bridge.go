package network

import (
	"crypto/rand"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// podNIC is what phase 1 finds of the pod's interface.
type podNIC struct {
	link    netlink.Link
	addr    *netlink.Addr // the IPv4 address
	gateway net.IP        // the default route's
	routes  []Route       // other routes through a gateway
}

// discover reads the pod's interface, in the calling thread's namespace.
func discover() (*podNIC, error) {
	link, err := netlink.LinkByName(PodInterface)
	if err != nil {
		return nil, fmt.Errorf("pod interface %s: %w", PodInterface, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	nic := &podNIC{link: link}
	for i := range addrs {
		if addrs[i].Scope == unix.RT_SCOPE_UNIVERSE {
			nic.addr = &addrs[i]
			break
		}
	}
	if nic.addr == nil {
		return nil, fmt.Errorf("pod interface %s has no IPv4 address", PodInterface)
	}
	routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		switch {
		case r.Gw == nil:
		case r.Dst == nil || r.Dst.IP.IsUnspecified() && isDefault(r.Dst):
			nic.gateway = r.Gw
		default:
			nic.routes = append(nic.routes, Route{Dst: r.Dst.String(), Gateway: r.Gw.String()})
		}
	}
	return nic, nil
}

func isDefault(n *net.IPNet) bool { ones, _ := n.Mask.Size(); return ones == 0 }

// setupBridge is the bridge binding: the pod's address and MAC go to the
// guest. The pod NIC (renamed eth0-nic, given a new MAC, without address,
// MAC learning off) and tap0 are ports of k6t-eth0, which holds only a
// link-local address for the DHCP server. Runs in the pod's namespace.
//
// KubeVirt once parked the pod's address on a dummy link named eth0 so that
// processes in the pod still saw it; this kernel has no dummy links, and
// nothing in virtkube's launcher pod needs it, so the address lives only in
// the guest.
func setupBridge(req Request) (*Config, error) {
	nic, err := discover()
	if err != nil {
		return nil, err
	}
	attrs := nic.link.Attrs()
	guestMAC := attrs.HardwareAddr.String()
	if req.Interface.MacAddress != "" {
		mac, err := net.ParseMAC(req.Interface.MacAddress)
		if err != nil {
			return nil, fmt.Errorf("macAddress %q: %w", req.Interface.MacAddress, err)
		}
		guestMAC = mac.String()
	}
	c := &Config{
		Interface: req.Interface.Name, Binding: BindingBridge,
		Tap: TapName, Bridge: BridgeName, MTU: attrs.MTU,
		GuestMAC: guestMAC, GuestIP: nic.addr.IPNet.String(),
		ServerIP: bridgeFakeIP, Routes: nic.routes, PodIP: nic.addr.IP.String(),
	}
	if nic.gateway != nil {
		c.Router = nic.gateway.String()
	}

	// The pod's NIC gives up its address and MAC and becomes a bridge port.
	newMAC, err := randomMAC()
	if err != nil {
		return nil, err
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"set eth0 down", func() error { return netlink.LinkSetDown(nic.link) }},
		{"remove the pod address from eth0", func() error { return netlink.AddrDel(nic.link, nic.addr) }},
		{"rename eth0 to " + PodNICRenamed, func() error { return netlink.LinkSetName(nic.link, PodNICRenamed) }},
		{"give " + PodNICRenamed + " a MAC of its own", func() error { return netlink.LinkSetHardwareAddr(nic.link, newMAC) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.what, err)
		}
	}
	br, err := addBridge(attrs.MTU)
	if err != nil {
		return nil, err
	}
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(bridgeFakeIP), Mask: net.CIDRMask(32, 32)}}); err != nil {
		return nil, fmt.Errorf("address of %s: %w", BridgeName, err)
	}
	// The bridge answers ARP only for its own link-local address on its own
	// side, never for the guest's.
	if err := setSysctl("net/ipv4/conf/"+BridgeName+"/arp_ignore", "1"); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetMaster(nic.link, br); err != nil {
		return nil, fmt.Errorf("%s into %s: %w", PodNICRenamed, BridgeName, err)
	}
	// The bridge must not learn the guest's MAC on the pod side (traffic
	// for it comes in there): learning off on that port.
	if err := netlink.LinkSetLearning(nic.link, false); err != nil {
		return nil, fmt.Errorf("learning off on %s: %w", PodNICRenamed, err)
	}
	if err := netlink.LinkSetUp(nic.link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", PodNICRenamed, err)
	}
	if err := addTap(br, attrs.MTU); err != nil {
		return nil, err
	}
	return c, nil
}

// addBridge makes k6t-eth0 with mtu, up.
func addBridge(mtu int) (netlink.Link, error) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName, MTU: mtu}}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("create %s: %w", BridgeName, err)
	}
	link, err := netlink.LinkByName(BridgeName)
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", BridgeName, err)
	}
	return link, nil
}

// addTap makes the guest's tap0 (persistent: QEMU opens it by name), a port
// of br.
func addTap(br netlink.Link, mtu int) error {
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: TapName, MTU: mtu},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("create %s: %w", TapName, err)
	}
	link, err := netlink.LinkByName(TapName)
	if err != nil {
		return err
	}
	// The MTU given at creation does not reach a tap: set it.
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("MTU of %s: %w", TapName, err)
	}
	if err := netlink.LinkSetMaster(link, br); err != nil {
		return fmt.Errorf("%s into %s: %w", TapName, BridgeName, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", TapName, err)
	}
	return nil
}

// randomMAC is a random unicast, locally administered address.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, err
	}
	mac[0] = mac[0]&0xfe | 0x02
	return mac, nil
}
