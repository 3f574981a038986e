// Package dhcp is the launcher's single-client DHCPv4 server: it hands the
// guest behind one tap device the address the network's phase 1 decided
// (the pod's IP for the bridge binding, 10.0.2.2 for masquerade), with the
// router, DNS servers and search domains, MTU, hostname and classless
// routes, and answers nobody else.
package dhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/rfc1035label"
	"k8s.io/klog/v2"
)

// infiniteLease: the address belongs to the guest for the pod's life.
const infiniteLease = time.Duration(0xffffffff) * time.Second

// Route is a classless static route (option 121).
type Route struct {
	Dst     net.IPNet
	Gateway net.IP
}

// Lease is what the guest gets.
type Lease struct {
	// MAC is the guest's; requests from any other address are ignored.
	MAC      net.HardwareAddr
	IP       net.IPNet
	Router   net.IP // nil: none
	ServerID net.IP // the server's address on the guest's link
	DNS      []net.IP
	Search   []string
	MTU      uint16 // 0: not sent
	Hostname string
	Routes   []Route
}

// Reply answers req for lease: an OFFER to a DISCOVER, an ACK to a REQUEST
// for the lease's address (a NAK for any other), nothing (nil) for other
// clients and messages.
func Reply(req *dhcpv4.DHCPv4, lease Lease) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || req.ClientHWAddr.String() != lease.MAC.String() {
		return nil, nil
	}
	var mt dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		mt = dhcpv4.MessageTypeAck
		if want := requested(req); want != nil && !want.Equal(lease.IP.IP) {
			return dhcpv4.NewReplyFromRequest(req,
				dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(lease.ServerID)),
				dhcpv4.WithOption(dhcpv4.OptMessage(fmt.Sprintf("this link's address is %s", lease.IP.IP))))
		}
	default:
		return nil, nil
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithYourIP(lease.IP.IP),
		dhcpv4.WithServerIP(lease.ServerID),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(lease.ServerID)),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(lease.IP.Mask)),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(infiniteLease)),
	}
	if lease.Router != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(lease.Router)))
	}
	if len(lease.DNS) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(lease.DNS...)))
	}
	if len(lease.Search) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: lease.Search})))
	}
	if lease.MTU > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, lease.MTU))))
	}
	if lease.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(lease.Hostname)))
	}
	if len(lease.Routes) > 0 {
		// RFC 3442: a client that gets classless routes ignores the
		// router option, so the default route goes in here too.
		var routes []*dhcpv4.Route
		if lease.Router != nil {
			routes = append(routes, &dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: lease.Router})
		}
		for _, r := range lease.Routes {
			routes = append(routes, &dhcpv4.Route{Dest: &net.IPNet{IP: r.Dst.IP, Mask: r.Dst.Mask}, Router: r.Gateway})
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(routes...)))
	}
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

// requested is the address a REQUEST asks for: option 50, else ciaddr.
func requested(req *dhcpv4.DHCPv4) net.IP {
	if ip := req.RequestedIPAddress(); ip != nil && !ip.IsUnspecified() {
		return ip
	}
	if req.ClientIPAddr != nil && !req.ClientIPAddr.IsUnspecified() {
		return req.ClientIPAddr
	}
	return nil
}

// Server answers one guest.
type Server struct {
	srv *server4.Server
}

// Listen opens the server's socket on iface (the bridge the guest's tap is
// on), in the calling thread's network namespace.
func Listen(ctx context.Context, iface string, lease Lease) (*Server, error) {
	log := klog.FromContext(ctx).WithValues("interface", iface, "mac", lease.MAC.String())
	handler := func(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
		resp, err := Reply(req, lease)
		if err != nil {
			log.Error(err, "build DHCP reply")
			return
		}
		if resp == nil {
			return
		}
		if _, err := conn.WriteTo(resp.ToBytes(), peer); err != nil {
			log.Error(err, "send DHCP reply", "type", resp.MessageType())
			return
		}
		log.V(2).Info("DHCP reply sent", "type", resp.MessageType(), "ip", lease.IP.String())
	}
	srv, err := server4.NewServer(iface, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
	if err != nil {
		return nil, fmt.Errorf("DHCP server on %s: %w", iface, err)
	}
	return &Server{srv: srv}, nil
}

// Serve answers until ctx is done.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.srv.Close() })
	defer stop()
	err := s.srv.Serve()
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
