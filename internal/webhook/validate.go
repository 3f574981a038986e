package webhook

import (
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
)

// Allowed values, as KubeVirt allows them on x86_64.
var (
	diskBuses      = []string{string(virtv1.DiskBusSATA), string(virtv1.DiskBusSCSI), string(virtv1.DiskBusUSB), string(virtv1.DiskBusVirtio)}
	cdromBuses     = []string{string(virtv1.DiskBusSATA), string(virtv1.DiskBusSCSI)}
	hostDiskTypes  = []string{string(virtv1.HostDiskExists), string(virtv1.HostDiskExistsOrCreate)}
	nicModels      = []string{"e1000", "e1000e", "igb", "ne2k_pci", "pcnet", "rtl8139", "virtio"}
	podNICBindings = []string{"bridge", "masquerade"}
)

// specRules say which checks apply: some run only on a VMI, because on a VM
// or VMIRS template an instancetype or the VMI's own defaults still fill in
// what is missing.
type specRules struct {
	// volumesNeedDevices: every volume is used by a disk or filesystem
	// (DefaultSpec adds the disks, so this only fails for a VMI created
	// without the mutating webhook).
	volumesNeedDevices bool
	// memoryRequired: the guest's memory is set somewhere.
	memoryRequired bool
}

// validateSpec checks a VMI spec found at path (spec for a VMI,
// spec.template.spec for a VM or VMIRS). Warnings are for things that work
// but should be written differently.
func validateSpec(path *field.Path, spec *virtv1.VirtualMachineInstanceSpec, cfg Config, rules specRules) (errs field.ErrorList, warnings []string) {
	volumes := map[string]*virtv1.Volume{}
	for i := range spec.Volumes {
		volumes[spec.Volumes[i].Name] = &spec.Volumes[i]
	}
	errs = append(errs, validateDisks(path, spec, volumes)...)
	errs = append(errs, validateBootOrder(path, spec)...)
	volErrs, gateErrs, warnings := validateVolumes(path.Child("volumes"), spec.Volumes, cfg)
	errs = append(errs, volErrs...)
	errs = append(errs, gateErrs...)
	if rules.volumesNeedDevices {
		errs = append(errs, validateVolumesUsed(path, spec)...)
	}
	errs = append(errs, validateNetworks(path, spec, cfg)...)
	errs = append(errs, validateMemory(path, spec, rules.memoryRequired)...)
	return errs, warnings
}

// validateDisks: names unique, one device kind each, a known bus, and a
// volume of the same name behind every disk.
func validateDisks(path *field.Path, spec *virtv1.VirtualMachineInstanceSpec, volumes map[string]*virtv1.Volume) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, d := range spec.Domain.Devices.Disks {
		p := path.Child("domain", "devices", "disks").Index(i)
		switch {
		case d.Name == "":
			errs = append(errs, field.Required(p.Child("name"), "every disk needs a name, the name of its volume in "+path.Child("volumes").String()))
		case seen[d.Name]:
			errs = append(errs, field.Duplicate(p.Child("name"), d.Name))
		case volumes[d.Name] == nil:
			errs = append(errs, field.Invalid(p.Child("name"), d.Name,
				fmt.Sprintf("no volume of this name in %s; every disk needs a matching volume (volumes: %s)", path.Child("volumes"), quotedNames(spec.Volumes))))
		}
		seen[d.Name] = true

		kinds := 0
		for _, set := range []bool{d.Disk != nil, d.CDRom != nil, d.LUN != nil} {
			if set {
				kinds++
			}
		}
		if kinds > 1 {
			errs = append(errs, field.Invalid(p, d.Name, "set only one of disk, cdrom, lun"))
		}
		switch {
		case d.Disk != nil && d.Disk.Bus != "" && !slices.Contains(diskBuses, string(d.Disk.Bus)):
			errs = append(errs, field.NotSupported(p.Child("disk", "bus"), d.Disk.Bus, diskBuses))
		case d.CDRom != nil && d.CDRom.Bus != "" && !slices.Contains(cdromBuses, string(d.CDRom.Bus)):
			errs = append(errs, field.NotSupported(p.Child("cdrom", "bus"), d.CDRom.Bus, cdromBuses))
		case d.LUN != nil && d.LUN.Bus != "" && !slices.Contains(diskBuses, string(d.LUN.Bus)):
			errs = append(errs, field.NotSupported(p.Child("lun", "bus"), d.LUN.Bus, diskBuses))
		}
	}
	return errs
}

// validateBootOrder: boot orders of disks and interfaces are positive and
// no two devices share one.
func validateBootOrder(path *field.Path, spec *virtv1.VirtualMachineInstanceSpec) field.ErrorList {
	var errs field.ErrorList
	owner := map[uint]*field.Path{}
	check := func(p *field.Path, order *uint) {
		if order == nil {
			return
		}
		switch prev, taken := owner[*order]; {
		case *order < 1:
			errs = append(errs, field.Invalid(p, *order, "must be greater than 0"))
		case taken:
			errs = append(errs, field.Invalid(p, *order, fmt.Sprintf("already used by %s; every boot order must be unique", prev)))
		default:
			owner[*order] = p
		}
	}
	for i, d := range spec.Domain.Devices.Disks {
		check(path.Child("domain", "devices", "disks").Index(i).Child("bootOrder"), d.BootOrder)
	}
	for i, iface := range spec.Domain.Devices.Interfaces {
		check(path.Child("domain", "devices", "interfaces").Index(i).Child("bootOrder"), iface.BootOrder)
	}
	return errs
}

// validateVolumes: names unique, exactly one source each, and the rules and
// feature gates of the sources virtkube serves. Missing gates come apart
// from the other errors, for templates to turn into warnings.
func validateVolumes(path *field.Path, volumes []virtv1.Volume, cfg Config) (errs, gateErrs field.ErrorList, warnings []string) {
	seen := map[string]bool{}
	for i, v := range volumes {
		p := path.Index(i)
		switch {
		case v.Name == "":
			errs = append(errs, field.Required(p.Child("name"), "every volume needs a name"))
		case seen[v.Name]:
			errs = append(errs, field.Duplicate(p.Child("name"), v.Name))
		}
		seen[v.Name] = true

		switch set := volumeSources(&v.VolumeSource); {
		case len(set) == 0:
			errs = append(errs, field.Required(p, "set one volume source: "+strings.Join(allVolumeSources(), ", ")))
		case len(set) > 1:
			errs = append(errs, field.Invalid(p, v.Name, "set only one volume source, not "+strings.Join(set, " and ")))
		}

		if cd := v.ContainerDisk; cd != nil && cd.Image == "" {
			errs = append(errs, field.Required(p.Child("containerDisk", "image"), "the OCI image holding the disk under /disk/"))
		}
		if hd := v.HostDisk; hd != nil {
			e, gateErr, w := validateHostDisk(p.Child("hostDisk"), hd, cfg)
			errs = append(errs, e...)
			if gateErr != nil {
				gateErrs = append(gateErrs, gateErr)
			}
			if w != "" && !slices.Contains(warnings, w) {
				warnings = append(warnings, w)
			}
		}
		if dv := v.DataVolume; dv != nil {
			if dv.Name == "" {
				errs = append(errs, field.Required(p.Child("dataVolume", "name"), "the DataVolume to use"))
			}
			if ok, _ := cfg.gate(DataVolumesGate); !ok {
				gateErrs = append(gateErrs, gateMissing(p.Child("dataVolume"), DataVolumesGate, "dataVolume"))
			}
		}
	}
	return errs, gateErrs, warnings
}

func validateHostDisk(p *field.Path, hd *virtv1.HostDisk, cfg Config) (errs field.ErrorList, gateErr *field.Error, warning string) {
	ok, warning := cfg.gate(HostDiskGate)
	if !ok {
		gateErr = gateMissing(p, HostDiskGate, "hostDisk")
	}
	switch {
	case hd.Path == "":
		errs = append(errs, field.Required(p.Child("path"), "the absolute path of the disk image on the node"))
	case !filepath.IsAbs(hd.Path):
		errs = append(errs, field.Invalid(p.Child("path"), hd.Path, "must be an absolute path"))
	}
	if !slices.Contains(hostDiskTypes, string(hd.Type)) {
		errs = append(errs, field.NotSupported(p.Child("type"), hd.Type, hostDiskTypes))
	}
	if hd.Type == virtv1.HostDiskExistsOrCreate && hd.Capacity.IsZero() {
		errs = append(errs, field.Required(p.Child("capacity"), "the size of the disk to create when type is DiskOrCreate"))
	}
	return errs, gateErr, warning
}

// gateMissing says which gate a volume kind needs and where to turn it on.
// It keeps KubeVirt's wording ("HostDisk feature gate is not enabled") so
// what users search for still matches.
func gateMissing(p *field.Path, gate, kind string) *field.Error {
	return field.Forbidden(p, fmt.Sprintf("%s feature gate is not enabled: %s volumes need it in spec.configuration.developerConfiguration.featureGates of %s",
		gate, kind, kubeVirtCR))
}

// volumeSources lists the JSON names of the sources set in s. It walks the
// struct so a source added to the API is counted without a change here.
func volumeSources(s *virtv1.VolumeSource) []string {
	var set []string
	v := reflect.ValueOf(s).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			set = append(set, jsonName(v.Type().Field(i)))
		}
	}
	return set
}

func allVolumeSources() []string {
	var all []string
	t := reflect.TypeFor[virtv1.VolumeSource]()
	for i := range t.NumField() {
		if t.Field(i).Type.Kind() == reflect.Pointer {
			all = append(all, jsonName(t.Field(i)))
		}
	}
	return all
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return f.Name
	}
	return name
}

// validateVolumesUsed: a volume no disk or filesystem uses is a mistake the
// guest would never show.
func validateVolumesUsed(path *field.Path, spec *virtv1.VirtualMachineInstanceSpec) field.ErrorList {
	used := map[string]bool{}
	for _, d := range spec.Domain.Devices.Disks {
		used[d.Name] = true
	}
	for _, fs := range spec.Domain.Devices.Filesystems {
		used[fs.Name] = true
	}
	var errs field.ErrorList
	for i, v := range spec.Volumes {
		if v.Name != "" && !used[v.Name] && v.MemoryDump == nil {
			errs = append(errs, field.Invalid(path.Child("volumes").Index(i).Child("name"), v.Name,
				"no disk or filesystem in "+path.Child("domain", "devices").String()+" uses this volume"))
		}
	}
	return errs
}

// validateNetworks: interfaces and networks pair up by name, at most one
// network is the pod network, and interfaces on it use a binding the pod
// network supports.
func validateNetworks(path *field.Path, spec *virtv1.VirtualMachineInstanceSpec, cfg Config) field.ErrorList {
	var errs field.ErrorList
	networks := map[string]*virtv1.Network{}
	var podNetwork *field.Path
	for i := range spec.Networks {
		n := &spec.Networks[i]
		p := path.Child("networks").Index(i)
		switch {
		case n.Name == "":
			errs = append(errs, field.Required(p.Child("name"), "every network needs a name, the name of its interface"))
		case networks[n.Name] != nil:
			errs = append(errs, field.Duplicate(p.Child("name"), n.Name))
		}
		networks[n.Name] = n
		switch {
		case n.Pod == nil && n.Multus == nil && n.ResourceClaim == nil:
			errs = append(errs, field.Required(p, "set one network source: pod, multus, resourceClaim"))
		case n.Pod != nil && (n.Multus != nil || n.ResourceClaim != nil):
			errs = append(errs, field.Invalid(p, n.Name, "set only one network source of pod, multus, resourceClaim"))
		}
		if n.Pod != nil {
			if podNetwork != nil {
				errs = append(errs, field.Forbidden(p.Child("pod"), "only one pod network is allowed; "+podNetwork.String()+" is already one"))
			} else {
				podNetwork = p
			}
		}
	}

	ifaces := map[string]bool{}
	for i, iface := range spec.Domain.Devices.Interfaces {
		p := path.Child("domain", "devices", "interfaces").Index(i)
		switch {
		case iface.Name == "":
			errs = append(errs, field.Required(p.Child("name"), "every interface needs a name, the name of its network"))
		case ifaces[iface.Name]:
			errs = append(errs, field.Duplicate(p.Child("name"), iface.Name))
		case networks[iface.Name] == nil:
			errs = append(errs, field.Invalid(p.Child("name"), iface.Name,
				fmt.Sprintf("no network of this name in %s; every interface needs a matching network (networks: %s)", path.Child("networks"), quotedNetworks(spec.Networks))))
		}
		ifaces[iface.Name] = true
		if iface.Model != "" && !slices.Contains(nicModels, iface.Model) {
			errs = append(errs, field.NotSupported(p.Child("model"), iface.Model, nicModels))
		}
		if iface.MacAddress != "" {
			if _, err := net.ParseMAC(iface.MacAddress); err != nil {
				errs = append(errs, field.Invalid(p.Child("macAddress"), iface.MacAddress, "must be a MAC address such as 02:00:00:00:00:01"))
			}
		}
		if n := networks[iface.Name]; n != nil && n.Pod != nil {
			errs = append(errs, validatePodBinding(p, iface, cfg)...)
		}
	}
	for i, n := range spec.Networks {
		if n.Name != "" && !ifaces[n.Name] {
			errs = append(errs, field.Invalid(path.Child("networks").Index(i).Child("name"), n.Name,
				"no interface of this name in "+path.Child("domain", "devices", "interfaces").String()+"; every network needs a matching interface"))
		}
	}
	return errs
}

// validatePodBinding: on the pod network an interface is bridged or
// masqueraded (virtkube wires those two), or uses a binding plugin.
func validatePodBinding(p *field.Path, iface virtv1.Interface, cfg Config) field.ErrorList {
	if iface.Binding != nil {
		return nil
	}
	b := iface.InterfaceBindingMethod
	var set []string
	for _, m := range []struct {
		name string
		on   bool
	}{
		{"bridge", b.Bridge != nil}, {"masquerade", b.Masquerade != nil}, {"sriov", b.SRIOV != nil},
		{"slirp", b.DeprecatedSlirp != nil}, {"macvtap", b.DeprecatedMacvtap != nil},
		{"passt", b.DeprecatedPasst != nil}, {"passtBinding", b.PasstBinding != nil},
	} {
		if m.on {
			set = append(set, m.name)
		}
	}
	switch {
	case len(set) > 1:
		return field.ErrorList{field.Invalid(p, iface.Name, "set only one binding, not "+strings.Join(set, " and "))}
	case len(set) == 1 && !slices.Contains(podNICBindings, set[0]):
		return field.ErrorList{field.NotSupported(p.Child(set[0]), set[0], podNICBindings)}
	case b.Bridge != nil && !cfg.PermitBridgeOnPodNetwork:
		return field.ErrorList{field.Forbidden(p.Child("bridge"), "bridge binding on the pod network is turned off in "+kubeVirtCR+
			" (spec.configuration.network.permitBridgeInterfaceOnPodNetwork: false); use masquerade")}
	}
	return nil
}

// validateMemory: the guest's memory fits the limit, the request fits the
// limit, and (on a VMI) the guest gets memory from somewhere.
func validateMemory(path *field.Path, spec *virtv1.VirtualMachineInstanceSpec, required bool) field.ErrorList {
	var errs field.ErrorList
	res := spec.Domain.Resources
	resPath := path.Child("domain", "resources")
	limit, hasLimit := res.Limits[corev1.ResourceMemory]
	request, hasRequest := res.Requests[corev1.ResourceMemory]
	var guest *resource.Quantity
	if spec.Domain.Memory != nil {
		guest = spec.Domain.Memory.Guest
	}
	if hasRequest && request.Sign() < 0 {
		errs = append(errs, field.Invalid(resPath.Child("requests", "memory"), request.String(), "must not be negative"))
	}
	if hasLimit && hasRequest && request.Cmp(limit) > 0 {
		errs = append(errs, field.Invalid(resPath.Child("requests", "memory"), request.String(),
			fmt.Sprintf("must not exceed %s (%s)", resPath.Child("limits", "memory"), limit.String())))
	}
	if guest != nil {
		gp := path.Child("domain", "memory", "guest")
		switch {
		case guest.Sign() <= 0:
			errs = append(errs, field.Invalid(gp, guest.String(), "must be greater than 0"))
		case hasLimit && guest.Cmp(limit) > 0:
			errs = append(errs, field.Invalid(gp, guest.String(),
				fmt.Sprintf("must not exceed %s (%s)", resPath.Child("limits", "memory"), limit.String())))
		}
	}
	hugepages := spec.Domain.Memory != nil && spec.Domain.Memory.Hugepages != nil
	if required && guest == nil && !hasRequest && !hasLimit && !hugepages {
		errs = append(errs, field.Required(resPath.Child("requests", "memory"),
			"the guest needs memory: set "+resPath.Child("requests", "memory").String()+" or "+path.Child("domain", "memory", "guest").String()))
	}
	return errs
}

// validateCPU: sockets, cores and threads are at least 1 where set. The API
// types spell "not set" as 0, so this reads the request's JSON, where an
// explicit 0 or a negative count (which would not even decode) is visible.
func validateCPU(p *field.Path, spec map[string]any) field.ErrorList {
	cpu, _ := nestedMap(spec, "domain", "cpu")
	var errs field.ErrorList
	for _, name := range []string{"sockets", "cores", "threads"} {
		v, ok := cpu[name]
		if !ok || v == nil {
			continue
		}
		if n, isNumber := v.(float64); !isNumber || n < 1 || n != float64(int64(n)) {
			errs = append(errs, field.Invalid(p.Child(name), v, "must be a whole number of at least 1; leave it out for the default of 1"))
		}
	}
	return errs
}

func quotedNames(volumes []virtv1.Volume) string {
	if len(volumes) == 0 {
		return "none"
	}
	names := make([]string, len(volumes))
	for i, v := range volumes {
		names[i] = fmt.Sprintf("%q", v.Name)
	}
	return strings.Join(names, ", ")
}

func quotedNetworks(networks []virtv1.Network) string {
	if len(networks) == 0 {
		return "none"
	}
	names := make([]string, len(networks))
	for i, n := range networks {
		names[i] = fmt.Sprintf("%q", n.Name)
	}
	return strings.Join(names, ", ")
}
