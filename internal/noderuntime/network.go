package noderuntime

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"
)

const (
	// DefaultBridge is the host bridge pods' veths are attached to.
	DefaultBridge = "virtkube0"
	// netnsDir is where named network namespaces are bound, as by
	// `ip netns add`.
	netnsDir        = "/run/netns"
	podMTU          = 1500
	podIface        = "eth0"
	ipForwardSysctl = "/proc/sys/net/ipv4/ip_forward"
)

// podNetwork names a pod's network objects; all derive from its UID, so a
// restarted runtime finds them again.
type podNetwork struct {
	// Netns is the namespace's name under /run/netns.
	Netns string
	// HostVeth is the host end of the pod's veth, on the bridge.
	HostVeth string
}

func podNetworkOf(uid types.UID) podNetwork {
	short := shortUID(uid)
	return podNetwork{Netns: "vk-" + short, HostVeth: "vk" + short}
}

// NetnsPath is the pod's network namespace as a file.
func (n podNetwork) NetnsPath() string { return filepath.Join(netnsDir, n.Netns) }

// shortUID is the first 8 hex digits of a pod UID.
func shortUID(uid types.UID) string {
	s := strings.ReplaceAll(string(uid), "-", "")
	if len(s) > 8 {
		s = s[:8]
	}
	return s
}

// ensureBridge creates the bridge with the gateway address if it is missing
// and brings it up; it also lets the host forward IPv4 between its links.
func ensureBridge(name string, gateway *net.IPNet) error {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = name, podMTU
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("find bridge %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("find bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return fmt.Errorf("link %s exists and is a %s, not a bridge", name, link.Type())
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: gateway}); err != nil {
		return fmt.Errorf("address %s on bridge %s: %w", gateway, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring bridge %s up: %w", name, err)
	}
	if err := os.WriteFile(ipForwardSysctl, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}

// ensureNetnsDir makes /run/netns a shared mount point, as `ip netns add`
// does, so namespaces bound under it can be unbound everywhere.
func ensureNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	for bound := false; ; bound = true {
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
		}
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", netnsDir, err)
		}
	}
}

// ensureNetns returns a handle on the pod's named network namespace,
// creating it if needed. The caller closes the handle.
func ensureNetns(name string) (netns.NsHandle, error) {
	h, err := netns.GetFromName(name)
	if err == nil {
		var st unix.Statfs_t
		if err := unix.Fstatfs(int(h), &st); err == nil && st.Type == unix.NSFS_MAGIC {
			return h, nil
		}
		h.Close()
	}
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		// A file left without its bind mount (a crash between the two):
		// start again.
		if err := deleteNetns(name); err != nil {
			return netns.None(), err
		}
	}
	// netns.NewNamed moves the calling thread into the new namespace. Do
	// it on a locked thread of a goroutine of our own and move back; if
	// moving back fails, the thread stays locked and dies with the
	// goroutine instead of serving other goroutines in the wrong namespace.
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{netns.None(), fmt.Errorf("current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if serr := netns.Set(orig); serr != nil {
			if err == nil {
				h.Close()
			}
			ch <- result{netns.None(), fmt.Errorf("return to the host network namespace: %w", serr)}
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("create network namespace %s: %w", name, err)
		}
		ch <- result{h, err}
	}()
	r := <-ch
	return r.h, r.err
}

// deleteNetns unbinds and removes a named network namespace; a missing one
// is no error.
func deleteNetns(name string) error {
	p := filepath.Join(netnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unbind network namespace %s: %w", name, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove network namespace %s: %w", name, err)
	}
	return nil
}

// setupPodNetwork gives the pod's namespace eth0 (one end of a veth whose
// other end is on the bridge) with addr, lo up and a default route via the
// gateway. It is idempotent: what exists is kept or corrected.
func setupPodNetwork(n podNetwork, bridge string, addr *net.IPNet, gateway net.IP) error {
	ns, err := ensureNetns(n.Netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", n.Netns, err)
	}
	defer h.Delete()

	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", bridge, err)
	}
	host, err := netlink.LinkByName(n.HostVeth)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		// A stale eth0 (its host end is gone) would block the new one.
		if old, err := h.LinkByName(podIface); err == nil {
			_ = h.LinkDel(old)
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU, attrs.MasterIndex = n.HostVeth, podMTU, br.Attrs().Index
		veth := &netlink.Veth{LinkAttrs: attrs, PeerName: podIface, PeerNamespace: netlink.NsFd(int(ns))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s: %w", n.HostVeth, err)
		}
		host, err = netlink.LinkByName(n.HostVeth)
	}
	if err != nil {
		return fmt.Errorf("find veth %s: %w", n.HostVeth, err)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(host, br); err != nil {
			return fmt.Errorf("attach %s to %s: %w", n.HostVeth, bridge, err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring %s up: %w", n.HostVeth, err)
	}

	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", n.Netns, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up in %s: %w", n.Netns, err)
	}
	eth, err := h.LinkByName(podIface)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", podIface, n.Netns, err)
	}
	if eth.Attrs().MTU != podMTU {
		if err := h.LinkSetMTU(eth, podMTU); err != nil {
			return fmt.Errorf("MTU of %s in %s: %w", podIface, n.Netns, err)
		}
	}
	if err := h.AddrReplace(eth, &netlink.Addr{IPNet: addr}); err != nil {
		return fmt.Errorf("address %s on %s in %s: %w", addr, podIface, n.Netns, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring %s up in %s: %w", podIface, n.Netns, err)
	}
	def := &netlink.Route{
		LinkIndex: eth.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        gateway,
	}
	if err := h.RouteReplace(def); err != nil {
		return fmt.Errorf("default route via %s in %s: %w", gateway, n.Netns, err)
	}
	return nil
}

// teardownPodNetwork removes the pod's veth (both ends go together) and
// its network namespace.
func teardownPodNetwork(n podNetwork) error {
	var errs []error
	if link, err := netlink.LinkByName(n.HostVeth); err == nil {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", n.HostVeth, err))
		}
	}
	if err := deleteNetns(n.Netns); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
