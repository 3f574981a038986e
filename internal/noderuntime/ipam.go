package noderuntime

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/types"
)

// ErrPodCIDRExhausted means every address of the node's podCIDR is taken.
var ErrPodCIDRExhausted = errors.New("no free address in the pod CIDR")

// ipam hands out the addresses of one IPv4 podCIDR to pods. Its state is a
// directory with one file per address in use, named by the address and
// holding the owning pod's UID. Files are created with O_EXCL, so two pods
// never get the same address, and they survive a restart of the runtime.
// The network's first address is the gateway (on the bridge); the network
// and broadcast addresses are never handed out.
type ipam struct {
	dir     string
	network *net.IPNet
}

func newIPAM(dir, cidr string) (*ipam, error) {
	_, network, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("pod CIDR %q: %w", cidr, err)
	}
	if network.IP.To4() == nil {
		return nil, fmt.Errorf("pod CIDR %q: only IPv4 is supported", cidr)
	}
	if ones, bits := network.Mask.Size(); bits-ones < 2 {
		return nil, fmt.Errorf("pod CIDR %q: too small, want /30 or larger", cidr)
	}
	network.IP = network.IP.To4()
	return &ipam{dir: dir, network: network}, nil
}

// gateway is the network's first address, the bridge's.
func (a *ipam) gateway() *net.IPNet {
	return &net.IPNet{IP: a.nth(1), Mask: a.network.Mask}
}

// nth is the network address plus n.
func (a *ipam) nth(n uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, binary.BigEndian.Uint32(a.network.IP)+n)
	return ip
}

// size is the number of addresses in the network.
func (a *ipam) size() uint32 {
	ones, bits := a.network.Mask.Size()
	return 1 << uint(bits-ones)
}

// Allocate returns the address of pod uid: the one it already holds, or the
// lowest free one.
func (a *ipam) Allocate(uid types.UID) (*net.IPNet, error) {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, err
	}
	held, err := a.Held(uid)
	if err != nil {
		return nil, err
	}
	if len(held) > 0 {
		return &net.IPNet{IP: held[0], Mask: a.network.Mask}, nil
	}
	for n := uint32(2); n < a.size()-1; n++ {
		ip := a.nth(n)
		f, err := os.OpenFile(filepath.Join(a.dir, ip.String()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reserve %s: %w", ip, err)
		}
		_, werr := f.WriteString(string(uid))
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			_ = os.Remove(f.Name())
			return nil, fmt.Errorf("reserve %s: %w", ip, err)
		}
		return &net.IPNet{IP: ip, Mask: a.network.Mask}, nil
	}
	return nil, fmt.Errorf("%w %s: %d addresses in use", ErrPodCIDRExhausted, a.network, a.size()-3)
}

// Held lists the addresses pod uid holds (normally none or one).
func (a *ipam) Held(uid types.UID) ([]net.IP, error) {
	owners, err := a.Owners()
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	for ip, owner := range owners {
		if owner == uid {
			ips = append(ips, net.ParseIP(ip).To4())
		}
	}
	return ips, nil
}

// Owners maps each address in use to its pod.
func (a *ipam) Owners() (map[string]types.UID, error) {
	entries, err := os.ReadDir(a.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read IP reservations: %w", err)
	}
	owners := map[string]types.UID{}
	for _, e := range entries {
		ip := net.ParseIP(e.Name())
		if ip == nil || !a.network.Contains(ip) {
			continue
		}
		body, err := os.ReadFile(filepath.Join(a.dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read IP reservation: %w", err)
		}
		owners[e.Name()] = types.UID(bytes.TrimSpace(body))
	}
	return owners, nil
}

// Release frees every address pod uid holds.
func (a *ipam) Release(uid types.UID) error {
	held, err := a.Held(uid)
	if err != nil {
		return err
	}
	for _, ip := range held {
		if err := os.Remove(filepath.Join(a.dir, ip.String())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("release %s: %w", ip, err)
		}
	}
	return nil
}
