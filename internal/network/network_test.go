package network

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	virtv1 "kubevirt.io/api/core/v1"
)

// fakePod makes a network namespace shaped like a launcher pod's: eth0 with
// 10.251.0.5/24, MTU 1400, a default route via 10.251.0.1 and one more
// route through a gateway; its peer stays on the host. It returns the
// namespace's path.
func fakePod(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	name := fmt.Sprintf("vknet-%d", os.Getpid()%100000)
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join("/run/netns", name)); err != nil {
			break
		}
		name = fmt.Sprintf("vknet-%d-%d", os.Getpid()%100000, i)
	}
	runtime.LockOSThread()
	origin, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(origin); err != nil {
		t.Fatal(err)
	}
	runtime.UnlockOSThread()
	origin.Close()
	t.Cleanup(func() {
		ns.Close()
		_ = netns.DeleteNamed(name)
	})
	host := "vkt" + name[len("vknet-"):]
	if len(host) > 15 {
		host = host[:15]
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: 1400}, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(host); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("10.251.0.5/24")
	_, extra, _ := net.ParseCIDR("192.168.77.0/24")
	for _, step := range []func() error{
		func() error { return h.LinkSetMTU(eth0, 1400) },
		func() error { return h.AddrAdd(eth0, addr) },
		func() error { return h.LinkSetUp(eth0) },
		func() error {
			return h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.251.0.1")})
		},
		func() error {
			return h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: extra, Gw: net.ParseIP("10.251.0.254")})
		},
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join("/run/netns", name)
}

// run runs a command in the namespace at path.
func run(t *testing.T, path string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + path, "--"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestBridgeBinding(t *testing.T) {
	path := fakePod(t)
	before := run(t, path, "ip", "-o", "link", "show", "eth0")
	podMAC := strings.Fields(before[strings.Index(before, "link/ether"):])[1]
	cache := t.TempDir()
	req := Request{Netns: path, CacheDir: cache, Interface: virtv1.Interface{
		Name: "default", InterfaceBindingMethod: virtv1.InterfaceBindingMethod{Bridge: &virtv1.InterfaceBridge{}}}}
	c, err := Setup(req)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Interface: "default", Binding: BindingBridge, Tap: "tap0", Bridge: "k6t-eth0", MTU: 1400,
		GuestMAC: podMAC, GuestIP: "10.251.0.5/24", Router: "10.251.0.1", ServerIP: "169.254.75.10",
		Routes: []Route{{Dst: "192.168.77.0/24", Gateway: "10.251.0.254"}}, PodIP: "10.251.0.5"}
	if fmt.Sprint(*c) != fmt.Sprint(want) {
		t.Errorf("config =\n%+v\nwant\n%+v", *c, want)
	}

	links := run(t, path, "ip", "-o", "-d", "link", "show")
	nic := lineOf(links, PodNICRenamed+"@")
	switch {
	case nic == "":
		t.Fatalf("no %s:\n%s", PodNICRenamed, links)
	case !strings.Contains(nic, "master k6t-eth0") || !strings.Contains(nic, "learning off") || strings.Contains(nic, podMAC):
		t.Errorf("%s must be a port of k6t-eth0, learning off, with a MAC other than the guest's:\n%s", PodNICRenamed, nic)
	}
	if tap := lineOf(links, "tap0:"); !strings.Contains(tap, "master k6t-eth0") || !strings.Contains(tap, "mtu 1400") || !strings.Contains(tap, "tun type tap") {
		t.Errorf("tap0:\n%s", tap)
	}
	if addrs := run(t, path, "ip", "-o", "-4", "addr", "show"); strings.Contains(addrs, "10.251.0.5") || !strings.Contains(addrs, "169.254.75.10/32") {
		t.Errorf("the pod address must be gone from the pod, the bridge must hold 169.254.75.10:\n%s", addrs)
	}
	if got := strings.TrimSpace(run(t, path, "cat", "/proc/sys/net/ipv4/conf/k6t-eth0/arp_ignore")); got != "1" {
		t.Errorf("arp_ignore on k6t-eth0 = %s", got)
	}

	// Again: the cached result, nothing changed.
	if again, err := Setup(req); err != nil || fmt.Sprint(*again) != fmt.Sprint(*c) {
		t.Errorf("second Setup = %+v, %v", again, err)
	}
	// A phase 1 that started and did not finish is not run again.
	if err := os.Remove(CacheFile(cache, "default")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(startedFile(cache, "default"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Setup(req); !errors.Is(err, ErrHalfDone) {
		t.Errorf("Setup after a half-done phase 1: %v, want ErrHalfDone", err)
	}
}

func TestMasqueradeBinding(t *testing.T) {
	path := fakePod(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (apt-get install nftables) to read the rules back")
	}
	req := Request{Netns: path, CacheDir: t.TempDir(), Interface: virtv1.Interface{
		Name: "default", MacAddress: "02:00:00:12:34:56",
		InterfaceBindingMethod: virtv1.InterfaceBindingMethod{Masquerade: &virtv1.InterfaceMasquerade{}},
		Ports:                  []virtv1.Port{{Port: 80}, {Port: 53, Protocol: "UDP"}}}}
	c, err := Setup(req)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Interface: "default", Binding: BindingMasquerade, Tap: "tap0", Bridge: "k6t-eth0", MTU: 1400,
		GuestMAC: "02:00:00:12:34:56", GuestIP: "10.0.2.2/24", Router: "10.0.2.1", ServerIP: "10.0.2.1", PodIP: "10.251.0.5"}
	if fmt.Sprint(*c) != fmt.Sprint(want) {
		t.Errorf("config =\n%+v\nwant\n%+v", *c, want)
	}
	if addrs := run(t, path, "ip", "-o", "-4", "addr", "show"); !strings.Contains(addrs, "10.251.0.5/24") || !strings.Contains(addrs, "10.0.2.1/24") {
		t.Errorf("the pod keeps its address, the bridge holds the gateway:\n%s", addrs)
	}
	if got := strings.TrimSpace(run(t, path, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "1" {
		t.Errorf("ip_forward = %s", got)
	}
	rules := run(t, path, "nft", "list", "table", "ip", "nat")
	for _, r := range []string{
		`iifname "eth0" tcp dport 80 counter packets 0 bytes 0 dnat to 10.0.2.2`,
		`iifname "eth0" udp dport 53 counter packets 0 bytes 0 dnat to 10.0.2.2`,
		`ip daddr 127.0.0.1 tcp dport 80 counter packets 0 bytes 0 dnat to 10.0.2.2`,
		`ip saddr 10.0.2.2 counter packets 0 bytes 0 masquerade`,
		`oifname "k6t-eth0" ip saddr 127.0.0.1 counter packets 0 bytes 0 snat to 10.0.2.1`,
	} {
		if !strings.Contains(rules, r) {
			t.Errorf("no rule %q in:\n%s", r, rules)
		}
	}
}

func TestMasqueradeAddrs(t *testing.T) {
	for _, tc := range []struct{ cidr, gw, guest, err string }{
		{cidr: "10.0.2.0/24", gw: "10.0.2.1/24", guest: "10.0.2.2/24"},
		{cidr: "192.168.100.0/30", gw: "192.168.100.1/30", guest: "192.168.100.2/30"},
		{cidr: "10.0.2.0/31", err: "too small"},
		{cidr: "fd10::/64", err: "IPv4"},
		{cidr: "nonsense", err: "IPv4"},
	} {
		gw, guest, err := masqueradeAddrs(tc.cidr)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want error with %q", tc.cidr, err, tc.err)
			}
			continue
		}
		if err != nil || gw.String() != tc.gw || guest.String() != tc.guest {
			t.Errorf("%s: %v %v %v", tc.cidr, gw, guest, err)
		}
	}
}

func lineOf(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], prefix) {
			return l
		}
	}
	return ""
}
