package network

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	virtv1 "kubevirt.io/api/core/v1"
)

// setupMasquerade is the masquerade binding: the guest sits at the second
// address of the masquerade network (10.0.2.2) behind k6t-eth0 (10.0.2.1);
// the pod keeps its address. nftables in the pod's namespace forwards the
// declared ports (every port when none is declared) from eth0 and from the
// pod's loopback to the guest, and masquerades the guest's own traffic.
// Runs in the pod's namespace.
func setupMasquerade(req Request) (*Config, error) {
	nic, err := discover()
	if err != nil {
		return nil, err
	}
	cidr := req.MasqueradeCIDR
	if cidr == "" {
		cidr = DefaultMasqueradeCIDR
	}
	gateway, guest, err := masqueradeAddrs(cidr)
	if err != nil {
		return nil, err
	}
	guestMAC := req.Interface.MacAddress
	if guestMAC == "" {
		mac, err := randomMAC()
		if err != nil {
			return nil, err
		}
		guestMAC = mac.String()
	} else if _, err := net.ParseMAC(guestMAC); err != nil {
		return nil, fmt.Errorf("macAddress %q: %w", guestMAC, err)
	}
	mtu := nic.link.Attrs().MTU
	c := &Config{
		Interface: req.Interface.Name, Binding: BindingMasquerade,
		Tap: TapName, Bridge: BridgeName, MTU: mtu,
		GuestMAC: guestMAC, GuestIP: guest.String(), Router: gateway.IP.String(),
		ServerIP: gateway.IP.String(), PodIP: nic.addr.IP.String(),
	}

	br, err := addBridge(mtu)
	if err != nil {
		return nil, err
	}
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: gateway}); err != nil {
		return nil, fmt.Errorf("address of %s: %w", BridgeName, err)
	}
	if err := addTap(br, mtu); err != nil {
		return nil, err
	}
	// Forwarding between eth0 and the bridge; traffic DNAT'ed from the
	// pod's loopback may leave through the bridge.
	for _, s := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv4/conf/" + BridgeName + "/route_localnet", "1"},
	} {
		if err := setSysctl(s[0], s[1]); err != nil {
			return nil, err
		}
	}
	if err := masqueradeRules(req.Netns, gateway.IP, guest.IP, req.Interface.Ports); err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

// masqueradeAddrs are the bridge's and the guest's addresses in cidr: its
// first and second.
func masqueradeAddrs(cidr string) (gateway, guest *net.IPNet, err error) {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return nil, nil, fmt.Errorf("vmNetworkCIDR %q: must be an IPv4 CIDR", cidr)
	}
	if ones, bits := n.Mask.Size(); bits-ones < 2 {
		return nil, nil, fmt.Errorf("vmNetworkCIDR %q: too small for a gateway and a guest", cidr)
	}
	base := binary.BigEndian.Uint32(n.IP.To4())
	at := func(i uint32) *net.IPNet {
		b := binary.BigEndian.AppendUint32(nil, base+i)
		return &net.IPNet{IP: net.IP(b), Mask: n.Mask}
	}
	return at(1), at(2), nil
}

// natTable is the table of the masquerade rules, KubeVirt's name.
const natTable = "nat"

// masqueradeRules writes the NAT table into the namespace at netnsPath.
func masqueradeRules(netnsPath string, gateway, guest net.IP, ports []virtv1.Port) error {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return err
	}
	table := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: natTable})
	chain := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return conn.AddChain(&nftables.Chain{Name: name, Table: table, Type: nftables.ChainTypeNAT, Hooknum: hook, Priority: prio})
	}
	prerouting := chain("prerouting", nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	output := chain("output", nftables.ChainHookOutput, nftables.ChainPriorityNATDest)
	postrouting := chain("postrouting", nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	// rule adds matches, a counter, then the action.
	rule := func(c *nftables.Chain, action []expr.Any, matches ...[]expr.Any) {
		var exprs []expr.Any
		for _, m := range matches {
			exprs = append(exprs, m...)
		}
		exprs = append(append(exprs, &expr.Counter{}), action...)
		conn.AddRule(&nftables.Rule{Table: table, Chain: c, Exprs: exprs})
	}
	loopback := net.IPv4(127, 0, 0, 1)
	for _, m := range portMatches(ports) {
		// Inbound through the pod's interface, and from the pod itself.
		rule(prerouting, dnat(guest), ifname(unix.NFT_META_IIFNAME, PodInterface), m)
		rule(output, dnat(guest), ipAddr(16, loopback), m)
	}
	// The guest's own traffic leaves as the pod.
	rule(postrouting, []expr.Any{&expr.Masq{}}, ipAddr(12, guest))
	// Traffic from the pod's loopback reaches the guest from the gateway,
	// so the guest can answer it.
	rule(postrouting, snat(gateway), ifname(unix.NFT_META_OIFNAME, BridgeName), ipAddr(12, loopback))
	return conn.Flush()
}

// portMatches are the matches of the declared ports (TCP when no protocol
// is given), or one empty match (every port) when none is declared.
func portMatches(ports []virtv1.Port) [][]expr.Any {
	if len(ports) == 0 {
		return [][]expr.Any{nil}
	}
	var out [][]expr.Any
	for _, p := range ports {
		proto := byte(unix.IPPROTO_TCP)
		if strings.EqualFold(p.Protocol, "UDP") {
			proto = unix.IPPROTO_UDP
		}
		out = append(out, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, uint16(p.Port))},
		})
	}
	return out
}

// ifname matches the input or output interface's name.
func ifname(key uint32, name string) []expr.Any {
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKey(key), Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

// ipAddr matches the IPv4 header's source (offset 12) or destination (16).
func ipAddr(offset uint32, ip net.IP) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip.To4()},
	}
}

func dnat(to net.IP) []expr.Any { return nat(expr.NATTypeDestNAT, to) }
func snat(to net.IP) []expr.Any { return nat(expr.NATTypeSourceNAT, to) }

func nat(t expr.NATType, to net.IP) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: to.To4()},
		&expr.NAT{Type: t, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}
