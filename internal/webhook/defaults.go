package webhook

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
)

// Default disk buses, as KubeVirt picks them on x86_64.
const (
	defaultDiskBus  = virtv1.DiskBusVirtio
	defaultCDROMBus = virtv1.DiskBusSATA
	defaultLUNBus   = virtv1.DiskBusSCSI
)

// DefaultVMI sets on a VMI being created what KubeVirt's virt-api sets: the
// spec defaults of DefaultSpec and the foreground-delete finalizer that lets
// virt-controller stop the guest before the object goes.
//
// Left out on purpose: spec.domain.cpu.model (KubeVirt sets host-model, which
// cannot work under software emulation, so the domain converter picks the
// model when it knows whether KVM is there) and status fields (phase, memory
// and CPU status): status belongs to virt-controller and the status
// subresource drops it on create anyway.
func DefaultVMI(vmi *virtv1.VirtualMachineInstance, cfg Config) error {
	if err := DefaultSpec(field.NewPath("spec"), &vmi.Spec, cfg); err != nil {
		return err
	}
	if !slices.Contains(vmi.Finalizers, virtv1.VirtualMachineInstanceFinalizer) {
		vmi.Finalizers = append(vmi.Finalizers, virtv1.VirtualMachineInstanceFinalizer)
	}
	return nil
}

// DefaultTemplate sets on the template of a VM or VMIRS what KubeVirt's VM
// mutator sets there: architecture and machine type. Everything else is set
// when a VMI is created from the template, by DefaultVMI, so a template stays
// as its author wrote it.
func DefaultTemplate(spec *virtv1.VirtualMachineInstanceSpec, cfg Config) {
	setArchitecture(spec, cfg)
	setMachineType(spec, cfg)
}

// DefaultSpec fills in a VMI spec the way KubeVirt does at admission. It
// fails only when the KubeVirt CR asks for a default pod interface it also
// forbids (or names a binding that does not exist); the error names the
// field of the spec that would have been set.
func DefaultSpec(path *field.Path, spec *virtv1.VirtualMachineInstanceSpec, cfg Config) error {
	setArchitecture(spec, cfg)
	setMachineType(spec, cfg)
	setResourceRequests(spec, cfg)
	setCPUTopology(spec)
	setPullPolicies(spec)
	if spec.EvictionStrategy == nil && cfg.EvictionStrategy != nil {
		s := *cfg.EvictionStrategy
		spec.EvictionStrategy = &s
	}
	if err := setPodNetwork(path, spec, cfg); err != nil {
		return err
	}
	setVolumeDisks(spec)
	setDiskDevices(spec)
	setInputs(spec)
	virtv1.SetDefaults_Probe(spec.ReadinessProbe)
	virtv1.SetDefaults_Probe(spec.LivenessProbe)
	return nil
}

func setArchitecture(spec *virtv1.VirtualMachineInstanceSpec, cfg Config) {
	if spec.Architecture == "" {
		spec.Architecture = cfg.Architecture
	}
}

func setMachineType(spec *virtv1.VirtualMachineInstanceSpec, cfg Config) {
	if spec.Domain.Machine == nil {
		spec.Domain.Machine = &virtv1.Machine{}
	}
	if spec.Domain.Machine.Type == "" {
		spec.Domain.Machine.Type = cfg.MachineType
	}
}

// setResourceRequests copies CPU and memory limits into missing requests and
// derives a missing memory request from domain.memory.guest (scaled by the
// overcommit ratio), as KubeVirt does. KubeVirt does not go the other way:
// with only a request, the guest gets the request's size at boot and
// domain.memory.guest stays unset, so neither does this.
func setResourceRequests(spec *virtv1.VirtualMachineInstanceSpec, cfg Config) {
	r := &spec.Domain.Resources
	set := func(name corev1.ResourceName, q resource.Quantity) {
		if r.Requests == nil {
			r.Requests = corev1.ResourceList{}
		}
		r.Requests[name] = q
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		limit, hasLimit := r.Limits[name]
		if request, ok := r.Requests[name]; hasLimit && !limit.IsZero() && (!ok || request.IsZero()) {
			set(name, limit.DeepCopy())
		}
	}
	if _, ok := r.Requests[corev1.ResourceMemory]; ok {
		return
	}
	var guest *resource.Quantity
	if m := spec.Domain.Memory; m != nil && m.Guest != nil {
		guest = m.Guest
	} else if m != nil && m.Hugepages != nil {
		if size, err := resource.ParseQuantity(m.Hugepages.PageSize); err == nil {
			guest = &size
		}
	}
	if guest == nil || guest.Value() <= 0 {
		return
	}
	if cfg.MemoryOvercommit <= 0 || cfg.MemoryOvercommit == 100 {
		set(corev1.ResourceMemory, guest.DeepCopy())
		return
	}
	set(corev1.ResourceMemory, *resource.NewQuantity(guest.Value()*100/int64(cfg.MemoryOvercommit), guest.Format))
}

// setCPUTopology gives a VMI without any topology one core and one thread on
// as many sockets as it asks CPUs for (KubeVirt prefers sockets: guests
// schedule them best), or one socket.
func setCPUTopology(spec *virtv1.VirtualMachineInstanceSpec) {
	cpu := spec.Domain.CPU
	if cpu != nil && (cpu.Sockets != 0 || cpu.Cores != 0 || cpu.Threads != 0) {
		return
	}
	if cpu == nil {
		cpu = &virtv1.CPU{}
		spec.Domain.CPU = cpu
	}
	sockets := int64(1)
	r := spec.Domain.Resources
	if q, ok := r.Limits[corev1.ResourceCPU]; ok {
		sockets = q.Value() // rounds up: 500m is one socket
	} else if q, ok := r.Requests[corev1.ResourceCPU]; ok {
		sockets = q.Value()
	}
	cpu.Sockets, cpu.Cores, cpu.Threads = uint32(max(sockets, 1)), 1, 1
}

// setPullPolicies pulls containerDisks always when they float (":latest" or
// no tag), else only when missing, like pods' imagePullPolicy default.
func setPullPolicies(spec *virtv1.VirtualMachineInstanceSpec) {
	for _, v := range spec.Volumes {
		cd := v.ContainerDisk
		if cd == nil || cd.ImagePullPolicy != "" {
			continue
		}
		cd.ImagePullPolicy = corev1.PullIfNotPresent
		if strings.HasSuffix(cd.Image, ":latest") || !strings.ContainsAny(lastPathElement(cd.Image), ":@") {
			cd.ImagePullPolicy = corev1.PullAlways
		}
	}
}

// lastPathElement drops the registry and repository path, whose host part
// may carry a port (localhost:5000/disk has no tag).
func lastPathElement(image string) string {
	return image[strings.LastIndex(image, "/")+1:]
}

// setPodNetwork attaches a VMI that declares neither networks nor
// interfaces to the pod network, unless it opts out with
// autoattachPodInterface: false. The binding is the cluster's default.
func setPodNetwork(path *field.Path, spec *virtv1.VirtualMachineInstanceSpec, cfg Config) error {
	devices := &spec.Domain.Devices
	if a := devices.AutoattachPodInterface; a != nil && !*a {
		return nil
	}
	if len(spec.Networks) > 0 || len(devices.Interfaces) > 0 {
		return nil
	}
	ifacePath := path.Child("domain", "devices", "interfaces")
	var iface *virtv1.Interface
	switch virtv1.NetworkInterfaceType(cfg.NetworkInterface) {
	case virtv1.BridgeInterface:
		if !cfg.PermitBridgeOnPodNetwork {
			return field.Forbidden(ifacePath, "the default pod interface would use bridge binding, which "+kubeVirtCR+
				" forbids on the pod network (spec.configuration.network.permitBridgeInterfaceOnPodNetwork: false); declare an interface, or set spec.configuration.network.defaultNetworkInterface to masquerade")
		}
		iface = virtv1.DefaultBridgeNetworkInterface()
	case virtv1.MasqueradeInterface:
		iface = virtv1.DefaultMasqueradeNetworkInterface()
	default:
		return field.NotSupported(field.NewPath("spec", "configuration", "network", "defaultNetworkInterface"),
			cfg.NetworkInterface, []string{string(virtv1.BridgeInterface), string(virtv1.MasqueradeInterface)})
	}
	devices.Interfaces = []virtv1.Interface{*iface}
	spec.Networks = []virtv1.Network{*virtv1.DefaultPodNetwork()}
	return nil
}

// setVolumeDisks gives every volume that no disk or filesystem uses a disk of
// its name, as KubeVirt does: a volume is otherwise invisible to the guest.
// Memory dumps are not guest devices.
func setVolumeDisks(spec *virtv1.VirtualMachineInstanceSpec) {
	used := map[string]bool{}
	for _, d := range spec.Domain.Devices.Disks {
		used[d.Name] = true
	}
	for _, fs := range spec.Domain.Devices.Filesystems {
		used[fs.Name] = true
	}
	for _, v := range spec.Volumes {
		if !used[v.Name] && v.MemoryDump == nil {
			spec.Domain.Devices.Disks = append(spec.Domain.Devices.Disks, virtv1.Disk{Name: v.Name})
			used[v.Name] = true
		}
	}
}

// setDiskDevices makes every disk a disk unless it says cdrom or lun, and
// gives each its default bus; cdroms are read-only with a closed tray.
func setDiskDevices(spec *virtv1.VirtualMachineInstanceSpec) {
	for i := range spec.Domain.Devices.Disks {
		d := &spec.Domain.Devices.Disks[i].DiskDevice
		virtv1.SetDefaults_DiskDevice(d)
		switch {
		case d.Disk != nil && d.Disk.Bus == "":
			d.Disk.Bus = defaultDiskBus
		case d.CDRom != nil:
			if d.CDRom.Bus == "" {
				d.CDRom.Bus = defaultCDROMBus
			}
			virtv1.SetDefaults_CDRomTarget(d.CDRom)
		case d.LUN != nil && d.LUN.Bus == "":
			d.LUN.Bus = defaultLUNBus
		}
	}
}

// setInputs makes input devices USB tablets unless they say otherwise.
func setInputs(spec *virtv1.VirtualMachineInstanceSpec) {
	for i := range spec.Domain.Devices.Inputs {
		in := &spec.Domain.Devices.Inputs[i]
		if in.Bus == "" {
			in.Bus = virtv1.InputBusUSB
		}
		if in.Type == "" {
			in.Type = virtv1.InputTypeTablet
		}
	}
}
