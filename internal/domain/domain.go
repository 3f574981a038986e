// Package domain converts a VirtualMachineInstance into a libvirt domain.
// Conversion is a pure function of the VMI and a Context that says what the
// launcher resolved on its node (disk files, tap devices, sockets). Each
// device kind has its own small configurator in its own file, run in order
// by Convert; each is table-tested.
package domain

import (
	"fmt"

	virtv1 "kubevirt.io/api/core/v1"
	"libvirt.org/go/libvirtxml"
)

// Context is what the launcher knows that the VMI does not.
type Context struct {
	// Emulation selects software emulation (TCG, domain type "qemu")
	// instead of KVM.
	Emulation bool
	// Disks maps each volume name to the file or device backing it.
	Disks map[string]DiskSource
	// Interfaces maps each network name to the tap device on the pod side.
	// An interface whose network is missing here is left out.
	Interfaces map[string]InterfaceBackend
	// SocketsDir holds the serial console and VNC sockets, and a copy of
	// everything the guest prints on its serial console (SerialLog).
	SocketsDir string
	// EFIFirmware is the OVMF code image; empty when none is installed.
	EFIFirmware string
}

// DiskSource is where a volume's data lives on the node.
type DiskSource struct {
	Path string
	// Format is "raw" or "qcow2".
	Format string
	// Block is true for a block device, false for a file.
	Block bool
	// ReadOnly forces the disk read-only whatever the VMI says (e.g. a
	// cloud-init ISO).
	ReadOnly bool
}

// InterfaceBackend is the pod-side end of a guest NIC.
type InterfaceBackend struct {
	TapDevice string
	// MAC is the guest's address; empty means the VMI's macAddress, else
	// libvirt's choice.
	MAC string
	MTU uint
}

// Socket file names under Context.SocketsDir.
const (
	SerialSocket = "serial0"
	VNCSocket    = "vnc"
	// SerialLog keeps the console output even when nobody is connected,
	// like KubeVirt's guest-console-log.
	SerialLog = "serial0.log"
)

// Name is the libvirt name of vmi's domain, as KubeVirt names it.
func Name(vmi *virtv1.VirtualMachineInstance) string {
	return vmi.Namespace + "_" + vmi.Name
}

type configurator func(vmi *virtv1.VirtualMachineInstance, c *Context, d *libvirtxml.Domain) error

// configurators run in this order; later ones may rely on earlier ones
// (devices need the machine type, for instance).
var configurators = []configurator{
	configureIdentity,
	configureMemory,
	configureCPU,
	configureMachine,
	configureFeaturesAndClock,
	configureDisks,
	configureInterfaces,
	configureConsole,
	configureGraphics,
	configureMiscDevices,
}

// Convert returns the domain for vmi. Errors name the VMI field at fault.
func Convert(vmi *virtv1.VirtualMachineInstance, c Context) (*libvirtxml.Domain, error) {
	d := &libvirtxml.Domain{Devices: &libvirtxml.DomainDeviceList{}}
	for _, configure := range configurators {
		if err := configure(vmi, &c, d); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// XML renders a domain as libvirt expects it.
func XML(d *libvirtxml.Domain) (string, error) {
	s, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal domain: %w", err)
	}
	return s, nil
}

func configureIdentity(vmi *virtv1.VirtualMachineInstance, c *Context, d *libvirtxml.Domain) error {
	d.Type = "kvm"
	if c.Emulation {
		d.Type = "qemu"
	}
	d.Name = Name(vmi)
	d.UUID = string(vmi.UID)
	if fw := vmi.Spec.Domain.Firmware; fw != nil && fw.UUID != "" {
		d.UUID = string(fw.UUID)
	}
	d.OnPoweroff, d.OnReboot, d.OnCrash = "destroy", "restart", "destroy"
	return nil
}
