package domain

import (
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
	"libvirt.org/go/libvirtxml"

	"github.com/virtkube/virtkube/internal/vmispec"
)

// Guest NIC models KubeVirt accepts; virtio is the default.
var supportedModels = []string{"virtio", "e1000", "e1000e", "rtl8139"}

// configureInterfaces wires each VMI interface to the tap device the network
// setup made for it. The wiring itself (bridge or masquerade) happens in the
// pod; the guest only sees an ethernet device.
func configureInterfaces(v *virtv1.VirtualMachineInstance, c *Context, d *libvirtxml.Domain) error {
	networks := map[string]bool{}
	for _, n := range v.Spec.Networks {
		networks[n.Name] = true
	}
	for i, iface := range v.Spec.Domain.Devices.Interfaces {
		path := field.NewPath("spec", "domain", "devices", "interfaces").Index(i)
		if !networks[iface.Name] {
			return field.NotFound(path.Child("name"), iface.Name)
		}
		backend, ok := c.Interfaces[iface.Name]
		if !ok {
			continue
		}
		model := iface.Model
		if model == "" {
			model = "virtio"
		}
		if !slices.Contains(supportedModels, model) {
			return field.NotSupported(path.Child("model"), model, supportedModels)
		}
		out := libvirtxml.DomainInterface{
			Source: &libvirtxml.DomainInterfaceSource{Ethernet: &libvirtxml.DomainInterfaceSourceEthernet{}},
			Target: &libvirtxml.DomainInterfaceTarget{Dev: backend.TapDevice, Managed: "no"},
			Model:  &libvirtxml.DomainInterfaceModel{Type: model},
			Alias:  &libvirtxml.DomainAlias{Name: "ua-" + iface.Name},
		}
		mac := backend.MAC
		if mac == "" {
			mac = iface.MacAddress
		}
		if mac != "" {
			out.MAC = &libvirtxml.DomainInterfaceMAC{Address: strings.ToLower(mac)}
		}
		if backend.MTU > 0 {
			out.MTU = &libvirtxml.DomainInterfaceMTU{Size: backend.MTU}
		}
		if iface.BootOrder != nil {
			out.Boot = &libvirtxml.DomainDeviceBoot{Order: *iface.BootOrder}
		} else {
			// As KubeVirt: a NIC the guest does not boot from gets no
			// option ROM. The BIOS would run its iPXE at every start;
			// under emulation that is ≈1 CPU-second per VM.
			out.ROM = &libvirtxml.DomainROM{Enabled: "no"}
		}
		d.Devices.Interfaces = append(d.Devices.Interfaces, out)
	}
	return nil
}

// configureConsole puts the first serial port on a unix socket that
// virt-handler serves as the VMI's console.
func configureConsole(v *virtv1.VirtualMachineInstance, c *Context, d *libvirtxml.Domain) error {
	if a := v.Spec.Domain.Devices.AutoattachSerialConsole; a != nil && !*a {
		return nil
	}
	port := uint(0)
	source := &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{
		Mode: "bind", Path: filepath.Join(c.SocketsDir, SerialSocket)}}
	d.Devices.Serials = append(d.Devices.Serials, libvirtxml.DomainSerial{
		Source: source,
		Target: &libvirtxml.DomainSerialTarget{Port: &port},
		Log:    &libvirtxml.DomainChardevLog{File: filepath.Join(c.SocketsDir, SerialLog), Append: "on"},
		Alias:  &libvirtxml.DomainAlias{Name: "serial0"},
	})
	d.Devices.Consoles = append(d.Devices.Consoles, libvirtxml.DomainConsole{
		Source: source,
		Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port},
	})
	return nil
}

// configureGraphics adds a VNC display on a unix socket and a video card,
// unless autoattachGraphicsDevice is false.
func configureGraphics(v *virtv1.VirtualMachineInstance, c *Context, d *libvirtxml.Domain) error {
	if !vmispec.GraphicsEnabled(v) {
		return nil
	}
	d.Devices.Graphics = append(d.Devices.Graphics, libvirtxml.DomainGraphic{VNC: &libvirtxml.DomainGraphicVNC{
		Listeners: []libvirtxml.DomainGraphicListener{{Socket: &libvirtxml.DomainGraphicListenerSocket{
			Socket: filepath.Join(c.SocketsDir, VNCSocket)}}},
	}})
	d.Devices.Videos = append(d.Devices.Videos, libvirtxml.DomainVideo{Model: libvirtxml.DomainVideoModel{Type: "vga", Heads: 1, VRam: 16384}})
	return nil
}

// configureMiscDevices adds the balloon (unless disabled), an RNG when asked
// for, and input devices.
func configureMiscDevices(v *virtv1.VirtualMachineInstance, _ *Context, d *libvirtxml.Domain) error {
	dev := v.Spec.Domain.Devices
	if dev.AutoattachMemBalloon == nil || *dev.AutoattachMemBalloon {
		d.Devices.MemBalloon = &libvirtxml.DomainMemBalloon{Model: "virtio"}
	} else {
		d.Devices.MemBalloon = &libvirtxml.DomainMemBalloon{Model: "none"}
	}
	if dev.Rng != nil {
		d.Devices.RNGs = append(d.Devices.RNGs, libvirtxml.DomainRNG{
			Model:   "virtio",
			Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}},
		})
	}
	for i, in := range dev.Inputs {
		path := field.NewPath("spec", "domain", "devices", "inputs").Index(i)
		if in.Type != virtv1.InputTypeTablet {
			return field.NotSupported(path.Child("type"), in.Type, []string{string(virtv1.InputTypeTablet)})
		}
		bus := in.Bus
		if bus == "" {
			bus = virtv1.InputBusUSB
		}
		if bus != virtv1.InputBusUSB && bus != virtv1.InputBusVirtio {
			return field.NotSupported(path.Child("bus"), bus, []string{string(virtv1.InputBusUSB), string(virtv1.InputBusVirtio)})
		}
		d.Devices.Inputs = append(d.Devices.Inputs, libvirtxml.DomainInput{Type: "tablet", Bus: string(bus),
			Alias: &libvirtxml.DomainAlias{Name: "ua-" + in.Name}})
	}
	if !usesUSB(d) {
		// As KubeVirt: no USB controller unless a device needs one.
		// libvirt would add a qemu-xhci, which the BIOS then scans at
		// every start (≈0.13 CPU-seconds per VM under emulation).
		d.Devices.Controllers = append(d.Devices.Controllers, libvirtxml.DomainController{
			Type: "usb", Index: ptrUint(0), Model: "none"})
	}
	return nil
}

// usesUSB reports whether a device of d sits on a USB bus.
func usesUSB(d *libvirtxml.Domain) bool {
	for _, in := range d.Devices.Inputs {
		if in.Bus == "usb" {
			return true
		}
	}
	for _, disk := range d.Devices.Disks {
		if disk.Target != nil && disk.Target.Bus == "usb" {
			return true
		}
	}
	return false
}
