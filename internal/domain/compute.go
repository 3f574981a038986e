package domain

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
	"libvirt.org/go/libvirtxml"

	"github.com/virtkube/virtkube/internal/vmispec"
)

// DefaultMachineType is KubeVirt's default on x86_64.
const DefaultMachineType = "q35"

func configureMemory(v *virtv1.VirtualMachineInstance, _ *Context, d *libvirtxml.Domain) error {
	guest, err := vmispec.GuestMemory(v)
	if err != nil {
		return err
	}
	kib := guest.Value() / 1024
	if kib <= 0 {
		return field.Invalid(field.NewPath("spec", "domain", "resources", "requests", "memory"), guest.String(), "the guest needs at least 1Ki of memory")
	}
	d.Memory = &libvirtxml.DomainMemory{Value: uint(kib), Unit: "KiB"}
	d.CurrentMemory = &libvirtxml.DomainCurrentMemory{Value: uint(kib), Unit: "KiB"}
	return nil
}

// configureCPU sets the vCPU count and topology. Without a topology the
// guest gets one socket with one core, as KubeVirt's default.
func configureCPU(v *virtv1.VirtualMachineInstance, c *Context, d *libvirtxml.Domain) error {
	sockets, cores, threads := uint32(1), uint32(1), uint32(1)
	cpu := v.Spec.Domain.CPU
	if cpu != nil {
		sockets, cores, threads = max(cpu.Sockets, 1), max(cpu.Cores, 1), max(cpu.Threads, 1)
	}
	d.VCPU = &libvirtxml.DomainVCPU{Placement: "static", Value: uint(sockets * cores * threads)}
	d.CPU = &libvirtxml.DomainCPU{Topology: &libvirtxml.DomainCPUTopology{
		Sockets: int(sockets), Cores: int(cores), Threads: int(threads)}}

	model := ""
	if cpu != nil {
		model = cpu.Model
	}
	path := field.NewPath("spec", "domain", "cpu", "model")
	switch {
	case c.Emulation && (model == virtv1.CPUModeHostPassthrough || model == virtv1.CPUModeHostModel):
		return field.Invalid(path, model, "software emulation cannot pass the host CPU through; leave it empty or name a CPU model")
	case c.Emulation && model == "":
		// QEMU's default model under TCG.
	case model == "" || model == virtv1.CPUModeHostModel:
		d.CPU.Mode = "host-model"
	case model == virtv1.CPUModeHostPassthrough:
		d.CPU.Mode = "host-passthrough"
	default:
		d.CPU.Mode = "custom"
		d.CPU.Match = "exact"
		d.CPU.Model = &libvirtxml.DomainCPUModel{Value: model, Fallback: "forbid"}
	}
	if cpu != nil {
		for i, f := range cpu.Features {
			policy := f.Policy
			if policy == "" {
				policy = "require"
			}
			if d.CPU.Mode != "custom" && d.CPU.Mode != "host-model" {
				return field.Invalid(field.NewPath("spec", "domain", "cpu", "features").Index(i), f.Name, "features need a named CPU model or host-model")
			}
			d.CPU.Features = append(d.CPU.Features, libvirtxml.DomainCPUFeature{Name: f.Name, Policy: policy})
		}
	}
	return nil
}

// configureMachine sets machine type and firmware: SeaBIOS unless the VMI
// asks for EFI, which needs OVMF on the node.
func configureMachine(v *virtv1.VirtualMachineInstance, c *Context, d *libvirtxml.Domain) error {
	machine := DefaultMachineType
	if m := v.Spec.Domain.Machine; m != nil && m.Type != "" {
		machine = m.Type
	}
	d.OS = &libvirtxml.DomainOS{Type: &libvirtxml.DomainOSType{Type: "hvm", Arch: "x86_64", Machine: machine}}
	fw := v.Spec.Domain.Firmware
	if fw == nil || fw.Bootloader == nil {
		return nil
	}
	if efi := fw.Bootloader.EFI; efi != nil {
		if c.EFIFirmware == "" {
			return field.Invalid(field.NewPath("spec", "domain", "firmware", "bootloader", "efi"), "{}",
				"EFI needs OVMF on the node (Debian package ovmf), and it is not installed")
		}
		secure := "no"
		if efi.SecureBoot == nil || *efi.SecureBoot {
			return field.Invalid(field.NewPath("spec", "domain", "firmware", "bootloader", "efi", "secureBoot"), fmt.Sprint(efi.SecureBoot),
				"secure boot is not supported yet; set secureBoot: false")
		}
		d.OS.Loader = &libvirtxml.DomainLoader{Path: c.EFIFirmware, Readonly: "yes", Type: "pflash", Secure: secure}
	}
	return nil
}

// TCGTranslationCacheMiB bounds QEMU's cache of translated guest code under
// software emulation. QEMU reserves 1 GiB for it and keeps every page it
// fills: ≈50 MiB after a small Linux guest boots, more the longer the guest
// runs new code, all of it the pod's memory. 16 MiB boots the test guest as
// fast (2.0 s either way); 8 MiB is a third slower (SPECIFICATION 16).
const TCGTranslationCacheMiB = 16

func configureFeaturesAndClock(v *virtv1.VirtualMachineInstance, c *Context, d *libvirtxml.Domain) error {
	d.Features = &libvirtxml.DomainFeatureList{
		ACPI: &libvirtxml.DomainFeature{},
		APIC: &libvirtxml.DomainFeatureAPIC{},
	}
	if c.Emulation {
		d.Features.TCG = &libvirtxml.DomainFeatureTCG{TBCache: &libvirtxml.DomainFeatureTCGTBCache{Unit: "MiB", Size: TCGTranslationCacheMiB}}
	}
	if f := v.Spec.Domain.Features; f != nil && f.ACPI.Enabled != nil && !*f.ACPI.Enabled {
		d.Features.ACPI = nil
	}
	d.Clock = &libvirtxml.DomainClock{Offset: "utc"}
	if clk := v.Spec.Domain.Clock; clk != nil && clk.Timezone != nil {
		d.Clock = &libvirtxml.DomainClock{Offset: "timezone", TimeZone: string(*clk.Timezone)}
	}
	return nil
}
