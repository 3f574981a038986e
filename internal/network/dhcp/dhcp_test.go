package dhcp

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

var (
	guestMAC, _ = net.ParseMAC("02:00:00:aa:bb:cc")
	lease       = Lease{
		MAC:      guestMAC,
		IP:       net.IPNet{IP: net.IPv4(10, 244, 0, 7).To4(), Mask: net.CIDRMask(24, 32)},
		Router:   net.IPv4(10, 244, 0, 1).To4(),
		ServerID: net.IPv4(169, 254, 75, 10).To4(),
		DNS:      []net.IP{net.IPv4(10, 96, 0, 10).To4()},
		Search:   []string{"default.svc.cluster.local", "svc.cluster.local"},
		MTU:      1450,
		Hostname: "testvmi",
		Routes:   []Route{{Dst: net.IPNet{IP: net.IPv4(192, 168, 5, 0).To4(), Mask: net.CIDRMask(24, 32)}, Gateway: net.IPv4(10, 244, 0, 254).To4()}},
	}
)

func request(t *testing.T, mac net.HardwareAddr, mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	req, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(mt)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestReply(t *testing.T) {
	other, _ := net.ParseMAC("02:00:00:00:00:01")
	offer, err := Reply(request(t, guestMAC, dhcpv4.MessageTypeDiscover), lease)
	if err != nil || offer == nil {
		t.Fatalf("offer: %v, %v", offer, err)
	}
	if offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(lease.IP.IP) {
		t.Errorf("offer = %s for %s", offer.MessageType(), offer.YourIPAddr)
	}
	if got := offer.SubnetMask(); net.IP(got).String() != "255.255.255.0" {
		t.Errorf("mask = %v", got)
	}
	if r := offer.Router(); len(r) != 1 || !r[0].Equal(lease.Router) {
		t.Errorf("router = %v", r)
	}
	if d := offer.DNS(); len(d) != 1 || !d[0].Equal(lease.DNS[0]) {
		t.Errorf("dns = %v", d)
	}
	if s := offer.DomainSearch(); s == nil || len(s.Labels) != 2 || s.Labels[0] != "default.svc.cluster.local" {
		t.Errorf("search = %v", s)
	}
	if mtu := offer.Options.Get(dhcpv4.OptionInterfaceMTU); len(mtu) != 2 || int(mtu[0])<<8|int(mtu[1]) != 1450 {
		t.Errorf("mtu = %v", mtu)
	}
	if offer.HostName() != "testvmi" {
		t.Errorf("hostname = %q", offer.HostName())
	}
	if lt := offer.IPAddressLeaseTime(0); lt != infiniteLease {
		t.Errorf("lease time = %s", lt)
	}
	routes := offer.ClasslessStaticRoute()
	if len(routes) != 2 || routes[0].Dest.String() != "0.0.0.0/0" || !routes[0].Router.Equal(lease.Router) ||
		routes[1].Dest.String() != "192.168.5.0/24" || !routes[1].Router.Equal(lease.Routes[0].Gateway) {
		t.Errorf("classless routes = %v (the default route must be among them)", routes)
	}
	if id := offer.ServerIdentifier(); !id.Equal(lease.ServerID) {
		t.Errorf("server id = %v", id)
	}

	ack, err := Reply(request(t, guestMAC, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(lease.IP.IP))), lease)
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(lease.IP.IP) {
		t.Errorf("ack = %v, %v", ack, err)
	}
	nak, err := Reply(request(t, guestMAC, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 244, 0, 99)))), lease)
	if err != nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("request for another address: %v, %v", nak, err)
	}
	for _, req := range []*dhcpv4.DHCPv4{
		request(t, other, dhcpv4.MessageTypeDiscover),
		request(t, guestMAC, dhcpv4.MessageTypeRelease),
	} {
		if r, err := Reply(req, lease); r != nil || err != nil {
			t.Errorf("reply to %s from %s: %v, %v", req.MessageType(), req.ClientHWAddr, r, err)
		}
	}
	noRoutes := lease
	noRoutes.Routes = nil
	if r, _ := Reply(request(t, guestMAC, dhcpv4.MessageTypeDiscover), noRoutes); r.Options.Has(dhcpv4.OptionClasslessStaticRoute) {
		t.Error("classless routes sent without any extra route")
	}
}

// inNetns runs f on a thread in ns.
func inNetns(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread is left to die in ns: never back in the pool.
		if err := netns.Set(ns); err != nil {
			t.Error(err)
			return
		}
		f()
	}()
	<-done
}

// A real exchange over a veth between two network namespaces: the server
// bound to a bridge, as in the launcher pod; the client gets the lease.
func TestServeLease(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and network namespaces")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	origin, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
	serverNS, err := netns.New()
	if err != nil {
		t.Skipf("network namespaces: %v", err)
	}
	defer serverNS.Close()
	clientNS, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer clientNS.Close()
	if err := netns.Set(origin); err != nil {
		t.Fatal(err)
	}

	srv, err := netlink.NewHandleAt(serverNS)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := netlink.NewHandleAt(clientNS)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tap-end"}, PeerName: "guest-end", PeerHardwareAddr: guestMAC, PeerNamespace: netlink.NsFd(clientNS)}
	if err := srv.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "k6t-eth0"}}
	if err := srv.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: lease.ServerID, Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	tapEnd, _ := srv.LinkByName("tap-end")
	for _, step := range []error{srv.LinkSetMaster(tapEnd, br), srv.LinkSetUp(tapEnd), srv.LinkSetUp(br)} {
		if step != nil {
			t.Fatal(step)
		}
	}
	guestEnd, err := cli.LinkByName("guest-end")
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.LinkSetUp(guestEnd); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	inNetns(t, serverNS, func() {
		// The socket is made here, in the server's namespace; Serve may
		// then run on any thread.
		s, err := Listen(ctx, "k6t-eth0", lease)
		if err != nil {
			t.Error(err)
			served <- nil
			return
		}
		go func() { served <- s.Serve(ctx) }()
	})
	var got *nclient4.Lease
	inNetns(t, clientNS, func() {
		c, err := nclient4.New("guest-end", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
		defer rcancel()
		got, err = c.Request(rctx)
		if err != nil {
			t.Error(err)
		}
	})
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if got == nil {
		t.Fatal("no lease")
	}
	if !got.ACK.YourIPAddr.Equal(lease.IP.IP) || !got.ACK.Router()[0].Equal(lease.Router) {
		t.Errorf("lease: %s", got.ACK.Summary())
	}
}
