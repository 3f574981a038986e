package handler

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"syscall"

	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/launcherrpc"
	"github.com/virtkube/virtkube/internal/network"
	"github.com/virtkube/virtkube/internal/unixpeer"
)

// ReasonNetworkSetupFailed is the VMI's failure reason when phase 1 of its
// pod network fails.
const ReasonNetworkSetupFailed = "NetworkSetupFailed"

// podInterface is the VMI's interface on the pod network and that network,
// or nils when it has none.
func podInterface(v *virtv1.VirtualMachineInstance) (*virtv1.Interface, *virtv1.Network) {
	for i := range v.Spec.Networks {
		n := &v.Spec.Networks[i]
		if n.Pod == nil {
			continue
		}
		for j := range v.Spec.Domain.Devices.Interfaces {
			if iface := &v.Spec.Domain.Devices.Interfaces[j]; iface.Name == n.Name {
				return iface, n
			}
		}
	}
	return nil, nil
}

// setupNetwork runs phase 1 of the VMI's pod network in its launcher's
// network namespace, and records the interface in the VMI's status, the pod
// IP first, as KubeVirt reports it.
func (r *Reconciler) setupNetwork(ctx context.Context, v *virtv1.VirtualMachineInstance, socket string) error {
	iface, podNet := podInterface(v)
	if iface == nil {
		return nil
	}
	nsPath, err := launcherNetns(ctx, socket)
	if err != nil {
		return err
	}
	c, err := network.Setup(network.Request{
		Netns:          nsPath,
		CacheDir:       network.CacheDir(filepath.Dir(socket)),
		Interface:      *iface,
		MasqueradeCIDR: podNet.Pod.VMNetworkCIDR,
	})
	if err != nil {
		return err
	}
	v.Status.Interfaces = []virtv1.VirtualMachineInstanceNetworkInterface{{
		Name:             c.Interface,
		MAC:              c.GuestMAC,
		IP:               c.PodIP,
		IPs:              []string{c.PodIP},
		InfoSource:       "domain",
		PodInterfaceName: network.PodInterface,
	}}
	return nil
}

// launcherNetns is the network namespace of the launcher serving socket, as
// /proc/<pid>/ns/net: the kernel gives the peer's pid in this process's
// pid namespace. A launcher in this process's own namespace (host network)
// has no pod network to bind to, and the node's interfaces must never be
// touched.
func launcherNetns(ctx context.Context, socket string) (string, error) {
	conn, err := launcherrpc.DialUnix(ctx, socket)
	if err != nil {
		return "", fmt.Errorf("launcher socket: %w", err)
	}
	defer conn.Close()
	pid, err := unixpeer.PID(conn)
	if err != nil {
		return "", fmt.Errorf("launcher's pid: %w", err)
	}
	if pid <= 0 {
		return "", errors.New("the launcher is in a pid namespace virt-handler cannot see (run virt-handler with hostPID)")
	}
	path := filepath.Join("/proc", strconv.Itoa(pid), "ns", "net")
	same, err := sameFile(path, "/proc/self/ns/net")
	if err != nil {
		return "", err
	}
	if same {
		return "", errors.New("the launcher runs in virt-handler's own network namespace (host network): there is no pod network to connect the guest to")
	}
	return path, nil
}

func sameFile(a, b string) (bool, error) {
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(a, &sa); err != nil {
		return false, err
	}
	if err := syscall.Stat(b, &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}
