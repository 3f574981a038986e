package domain

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
	"libvirt.org/go/libvirtxml"
)

// Default buses, as KubeVirt's: disks on virtio, cdroms on sata, luns on
// scsi.
const (
	defaultDiskBus  = virtv1.DiskBusVirtio
	defaultCDROMBus = virtv1.DiskBusSATA
	defaultLUNBus   = virtv1.DiskBusSCSI
)

var supportedBuses = []string{string(virtv1.DiskBusVirtio), string(virtv1.DiskBusSATA), string(virtv1.DiskBusSCSI), string(virtv1.DiskBusUSB)}

// deviceNamer hands out target names in order: vda, vdb, ... for virtio and
// sda, sdb, ... for the buses that share the sd namespace.
type deviceNamer struct{ next map[string]int }

func (n *deviceNamer) name(bus virtv1.DiskBus) string {
	prefix := "sd"
	if bus == virtv1.DiskBusVirtio {
		prefix = "vd"
	}
	i := n.next[prefix]
	n.next[prefix]++
	return prefix + driveLetters(i)
}

// driveLetters is the Linux suffix for index i: a..z, aa..az, ...
func driveLetters(i int) string {
	s := ""
	for i >= 0 {
		s = string(rune('a'+i%26)) + s
		i = i/26 - 1
	}
	return s
}

func configureDisks(v *virtv1.VirtualMachineInstance, c *Context, d *libvirtxml.Domain) error {
	volumes := map[string]bool{}
	for _, vol := range v.Spec.Volumes {
		volumes[vol.Name] = true
	}
	namer := &deviceNamer{next: map[string]int{}}
	needSCSI := false
	for i, disk := range v.Spec.Domain.Devices.Disks {
		path := field.NewPath("spec", "domain", "devices", "disks").Index(i)
		if !volumes[disk.Name] {
			return field.NotFound(path.Child("name"), disk.Name)
		}
		src, ok := c.Disks[disk.Name]
		if !ok {
			return fmt.Errorf("volume %q of disk %s has no source on this node", disk.Name, path)
		}
		out := libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: src.Format},
			Alias:  &libvirtxml.DomainAlias{Name: "ua-" + disk.Name},
		}
		if src.Format == "" {
			out.Driver.Type = "raw"
		}
		var bus virtv1.DiskBus
		readOnly := src.ReadOnly
		switch {
		case disk.CDRom != nil:
			out.Device, bus = "cdrom", disk.CDRom.Bus
			if bus == "" {
				bus = defaultCDROMBus
			}
			readOnly = readOnly || disk.CDRom.ReadOnly == nil || *disk.CDRom.ReadOnly
			if disk.CDRom.Bus == virtv1.DiskBusVirtio {
				return field.NotSupported(path.Child("cdrom", "bus"), disk.CDRom.Bus, []string{string(virtv1.DiskBusSATA), string(virtv1.DiskBusSCSI)})
			}
		case disk.LUN != nil:
			out.Device, bus = "lun", disk.LUN.Bus
			if bus == "" {
				bus = defaultLUNBus
			}
			readOnly = readOnly || disk.LUN.ReadOnly
		default:
			bus = defaultDiskBus
			if disk.Disk != nil {
				if disk.Disk.Bus != "" {
					bus = disk.Disk.Bus
				}
				readOnly = readOnly || disk.Disk.ReadOnly
			}
		}
		if !slices.Contains(supportedBuses, string(bus)) {
			return field.NotSupported(path.Child(busField(disk), "bus"), bus, supportedBuses)
		}
		needSCSI = needSCSI || bus == virtv1.DiskBusSCSI
		out.Target = &libvirtxml.DomainDiskTarget{Dev: namer.name(bus), Bus: string(bus)}
		if src.Block {
			out.Source = &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: src.Path}}
		} else {
			out.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: src.Path}}
		}
		if readOnly {
			out.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		}
		if disk.Serial != "" {
			out.Serial = disk.Serial
		}
		if disk.Cache != "" {
			out.Driver.Cache = string(disk.Cache)
		}
		if src.Block {
			blockDriver(out.Driver)
		}
		if disk.BootOrder != nil {
			if *disk.BootOrder < 1 {
				return field.Invalid(path.Child("bootOrder"), *disk.BootOrder, "must be 1 or greater")
			}
			out.Boot = &libvirtxml.DomainDeviceBoot{Order: *disk.BootOrder}
		}
		d.Devices.Disks = append(d.Devices.Disks, out)
	}
	if needSCSI {
		d.Devices.Controllers = append(d.Devices.Controllers, libvirtxml.DomainController{
			Type: "scsi", Index: ptrUint(0), Model: "virtio-scsi"})
	}
	return nil
}

// blockDriver sets the I/O of a disk on a block device as KubeVirt's
// default: without the host's page cache (cache none, unless the VMI asks
// for a mode) and, with the cache off, native AIO. Block devices take the
// O_DIRECT that cache none means, so no probe is needed.
func blockDriver(drv *libvirtxml.DomainDiskDriver) {
	if drv.Cache == "" {
		drv.Cache = string(virtv1.CacheNone)
	}
	if drv.Cache == string(virtv1.CacheNone) {
		drv.IO = string(virtv1.IONative)
	}
}

func busField(disk virtv1.Disk) string {
	switch {
	case disk.CDRom != nil:
		return "cdrom"
	case disk.LUN != nil:
		return "lun"
	default:
		return "disk"
	}
}

func ptrUint(u uint) *uint { return &u }
