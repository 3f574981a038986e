package webhook

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
)

// goodSpec is a VMI spec that passes every rule: one containerDisk, one
// bridged pod interface, 64Mi.
func goodSpec() virtv1.VirtualMachineInstanceSpec {
	return virtv1.VirtualMachineInstanceSpec{
		Domain: virtv1.DomainSpec{
			Resources: virtv1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
			Devices: virtv1.Devices{
				Disks:      []virtv1.Disk{{Name: "root", DiskDevice: virtv1.DiskDevice{Disk: &virtv1.DiskTarget{Bus: "virtio"}}}},
				Interfaces: []virtv1.Interface{*virtv1.DefaultBridgeNetworkInterface()},
			},
		},
		Networks: []virtv1.Network{*virtv1.DefaultPodNetwork()},
		Volumes: []virtv1.Volume{{Name: "root", VolumeSource: virtv1.VolumeSource{
			ContainerDisk: &virtv1.ContainerDiskSource{Image: "registry/disk:v1"}}}},
	}
}

func hostDiskVolume(name string, hd virtv1.HostDisk) virtv1.Volume {
	return virtv1.Volume{Name: name, VolumeSource: virtv1.VolumeSource{HostDisk: &hd}}
}

func withDisk(s *virtv1.VirtualMachineInstanceSpec, name string) {
	s.Domain.Devices.Disks = append(s.Domain.Devices.Disks, virtv1.Disk{Name: name})
}

// wantError is one expected field error: its path, type, and words its
// detail must contain (allowed values, the fix).
type wantError struct {
	field  string
	typ    field.ErrorType
	detail []string
}

func checkErrors(t *testing.T, errs field.ErrorList, want []wantError) {
	t.Helper()
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(want), errs.ToAggregate())
	}
	for i, w := range want {
		e := errs[i]
		if e.Field != w.field || e.Type != w.typ {
			t.Errorf("error %d = %s %q, want %s %q", i, e.Field, e.Type, w.field, w.typ)
		}
		for _, d := range w.detail {
			if !strings.Contains(e.Error(), d) {
				t.Errorf("error %d %q does not mention %q", i, e.Error(), d)
			}
		}
	}
}

func TestValidateVMI(t *testing.T) {
	hostDiskOn := func(c *Config) { c.FeatureGates = []string{"HostDisk"} }
	for _, tc := range []struct {
		name        string
		edit        func(*virtv1.VirtualMachineInstanceSpec)
		cfg         func(*Config)
		want        []wantError
		wantWarning string
	}{
		{"good", func(*virtv1.VirtualMachineInstanceSpec) {}, nil, nil, ""},
		{"disk without volume", func(s *virtv1.VirtualMachineInstanceSpec) { withDisk(s, "data") }, nil,
			[]wantError{{"spec.domain.devices.disks[1].name", field.ErrorTypeInvalid, []string{`"data"`, "no volume", `"root"`}}}, ""},
		{"disk without name", func(s *virtv1.VirtualMachineInstanceSpec) { withDisk(s, "") }, nil,
			[]wantError{{"spec.domain.devices.disks[1].name", field.ErrorTypeRequired, nil}}, ""},
		{"duplicate disk", func(s *virtv1.VirtualMachineInstanceSpec) { withDisk(s, "root") }, nil,
			[]wantError{{"spec.domain.devices.disks[1].name", field.ErrorTypeDuplicate, []string{`"root"`}}}, ""},
		{"disk and cdrom at once", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Domain.Devices.Disks[0].CDRom = &virtv1.CDRomTarget{}
		}, nil, []wantError{{"spec.domain.devices.disks[0]", field.ErrorTypeInvalid, []string{"disk, cdrom, lun"}}}, ""},
		{"unknown disk bus", func(s *virtv1.VirtualMachineInstanceSpec) { s.Domain.Devices.Disks[0].Disk.Bus = "ide" }, nil,
			[]wantError{{"spec.domain.devices.disks[0].disk.bus", field.ErrorTypeNotSupported, []string{`"virtio"`, `"sata"`}}}, ""},
		{"virtio cdrom", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Domain.Devices.Disks[0].DiskDevice = virtv1.DiskDevice{CDRom: &virtv1.CDRomTarget{Bus: "virtio"}}
		}, nil, []wantError{{"spec.domain.devices.disks[0].cdrom.bus", field.ErrorTypeNotSupported, []string{`"sata"`, `"scsi"`}}}, ""},
		{"volume without disk", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Volumes = append(s.Volumes, virtv1.Volume{Name: "spare", VolumeSource: virtv1.VolumeSource{EmptyDisk: &virtv1.EmptyDiskSource{Capacity: resource.MustParse("1Gi")}}})
		}, nil, []wantError{{"spec.volumes[1].name", field.ErrorTypeInvalid, []string{"no disk or filesystem"}}}, ""},
		{"duplicate volume", func(s *virtv1.VirtualMachineInstanceSpec) { s.Volumes = append(s.Volumes, s.Volumes[0]) }, nil,
			[]wantError{{"spec.volumes[1].name", field.ErrorTypeDuplicate, nil}}, ""},
		{"volume without source", func(s *virtv1.VirtualMachineInstanceSpec) { s.Volumes[0].ContainerDisk = nil }, nil,
			[]wantError{{"spec.volumes[0]", field.ErrorTypeRequired, []string{"containerDisk", "hostDisk", "persistentVolumeClaim"}}}, ""},
		{"volume with two sources", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Volumes[0].EmptyDisk = &virtv1.EmptyDiskSource{Capacity: resource.MustParse("1Gi")}
		}, nil, []wantError{{"spec.volumes[0]", field.ErrorTypeInvalid, []string{"containerDisk and emptyDisk"}}}, ""},
		{"containerDisk without image", func(s *virtv1.VirtualMachineInstanceSpec) { s.Volumes[0].ContainerDisk.Image = "" }, nil,
			[]wantError{{"spec.volumes[0].containerDisk.image", field.ErrorTypeRequired, nil}}, ""},
		{"duplicate boot order", func(s *virtv1.VirtualMachineInstanceSpec) {
			withDisk(s, "cloud")
			s.Volumes = append(s.Volumes, virtv1.Volume{Name: "cloud", VolumeSource: virtv1.VolumeSource{CloudInitNoCloud: &virtv1.CloudInitNoCloudSource{UserData: "x"}}})
			s.Domain.Devices.Disks[0].BootOrder = ptr[uint](1)
			s.Domain.Devices.Disks[1].BootOrder = ptr[uint](1)
		}, nil, []wantError{{"spec.domain.devices.disks[1].bootOrder", field.ErrorTypeInvalid, []string{"spec.domain.devices.disks[0].bootOrder", "unique"}}}, ""},
		{"boot order shared with an interface", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Domain.Devices.Disks[0].BootOrder = ptr[uint](2)
			s.Domain.Devices.Interfaces[0].BootOrder = ptr[uint](2)
		}, nil, []wantError{{"spec.domain.devices.interfaces[0].bootOrder", field.ErrorTypeInvalid, []string{"disks[0]"}}}, ""},
		{"zero boot order", func(s *virtv1.VirtualMachineInstanceSpec) { s.Domain.Devices.Disks[0].BootOrder = ptr[uint](0) }, nil,
			[]wantError{{"spec.domain.devices.disks[0].bootOrder", field.ErrorTypeInvalid, []string{"greater than 0"}}}, ""},
		{"interface without network", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Domain.Devices.Interfaces = append(s.Domain.Devices.Interfaces, virtv1.Interface{Name: "second"})
		}, nil, []wantError{{"spec.domain.devices.interfaces[1].name", field.ErrorTypeInvalid, []string{"no network", `"default"`}}}, ""},
		{"network without interface", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Networks = append(s.Networks, virtv1.Network{Name: "extra", NetworkSource: virtv1.NetworkSource{Multus: &virtv1.MultusNetwork{NetworkName: "n"}}})
		}, nil, []wantError{{"spec.networks[1].name", field.ErrorTypeInvalid, []string{"no interface"}}}, ""},
		{"two pod networks", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Networks = append(s.Networks, virtv1.Network{Name: "second", NetworkSource: virtv1.NetworkSource{Pod: &virtv1.PodNetwork{}}})
			s.Domain.Devices.Interfaces = append(s.Domain.Devices.Interfaces, virtv1.Interface{Name: "second",
				InterfaceBindingMethod: virtv1.InterfaceBindingMethod{Masquerade: &virtv1.InterfaceMasquerade{}}})
		}, nil, []wantError{{"spec.networks[1].pod", field.ErrorTypeForbidden, []string{"only one pod network", "spec.networks[0]"}}}, ""},
		{"network without source", func(s *virtv1.VirtualMachineInstanceSpec) { s.Networks[0].Pod = nil }, nil,
			[]wantError{{"spec.networks[0]", field.ErrorTypeRequired, []string{"pod, multus"}}}, ""},
		{"sriov on the pod network", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Domain.Devices.Interfaces[0].InterfaceBindingMethod = virtv1.InterfaceBindingMethod{SRIOV: &virtv1.InterfaceSRIOV{}}
		}, nil, []wantError{{"spec.domain.devices.interfaces[0].sriov", field.ErrorTypeNotSupported, []string{`"bridge"`, `"masquerade"`}}}, ""},
		{"bridge forbidden by the CR", func(*virtv1.VirtualMachineInstanceSpec) {}, func(c *Config) { c.PermitBridgeOnPodNetwork = false },
			[]wantError{{"spec.domain.devices.interfaces[0].bridge", field.ErrorTypeForbidden, []string{"permitBridgeInterfaceOnPodNetwork"}}}, ""},
		{"unknown NIC model", func(s *virtv1.VirtualMachineInstanceSpec) { s.Domain.Devices.Interfaces[0].Model = "vmxnet3" }, nil,
			[]wantError{{"spec.domain.devices.interfaces[0].model", field.ErrorTypeNotSupported, []string{`"virtio"`, `"e1000"`}}}, ""},
		{"bad MAC", func(s *virtv1.VirtualMachineInstanceSpec) { s.Domain.Devices.Interfaces[0].MacAddress = "nope" }, nil,
			[]wantError{{"spec.domain.devices.interfaces[0].macAddress", field.ErrorTypeInvalid, nil}}, ""},
		{"guest memory over the limit", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Domain.Memory = &virtv1.Memory{Guest: ptr(resource.MustParse("2Gi"))}
			s.Domain.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}
		}, nil, []wantError{{"spec.domain.memory.guest", field.ErrorTypeInvalid, []string{"spec.domain.resources.limits.memory", "1Gi"}}}, ""},
		{"request over the limit", func(s *virtv1.VirtualMachineInstanceSpec) {
			s.Domain.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}
		}, nil, []wantError{{"spec.domain.resources.requests.memory", field.ErrorTypeInvalid, []string{"32Mi"}}}, ""},
		{"no memory at all", func(s *virtv1.VirtualMachineInstanceSpec) { s.Domain.Resources.Requests = nil }, nil,
			[]wantError{{"spec.domain.resources.requests.memory", field.ErrorTypeRequired, []string{"spec.domain.memory.guest"}}}, ""},
		{"hostDisk without its gate", func(s *virtv1.VirtualMachineInstanceSpec) {
			withDisk(s, "hd")
			s.Volumes = append(s.Volumes, hostDiskVolume("hd", virtv1.HostDisk{Path: "/data/disk.img", Type: "Disk"}))
		}, nil, []wantError{{"spec.volumes[1].hostDisk", field.ErrorTypeForbidden, []string{"HostDisk feature gate is not enabled", "featureGates"}}}, ""},
		{"hostDisk with the gate misspelt", func(s *virtv1.VirtualMachineInstanceSpec) {
			withDisk(s, "hd")
			s.Volumes = append(s.Volumes, hostDiskVolume("hd", virtv1.HostDisk{Path: "/data/disk.img", Type: "Disk"}))
		}, func(c *Config) { c.FeatureGates = []string{"HardDisk"} }, nil, `spell it "HostDisk"`},
		{"hostDisk with a relative path", func(s *virtv1.VirtualMachineInstanceSpec) {
			withDisk(s, "hd")
			s.Volumes = append(s.Volumes, hostDiskVolume("hd", virtv1.HostDisk{Path: "disk.img", Type: "Disk"}))
		}, hostDiskOn, []wantError{{"spec.volumes[1].hostDisk.path", field.ErrorTypeInvalid, []string{"absolute"}}}, ""},
		{"hostDisk of an unknown type", func(s *virtv1.VirtualMachineInstanceSpec) {
			withDisk(s, "hd")
			s.Volumes = append(s.Volumes, hostDiskVolume("hd", virtv1.HostDisk{Path: "/d.img", Type: "File"}))
		}, hostDiskOn, []wantError{{"spec.volumes[1].hostDisk.type", field.ErrorTypeNotSupported, []string{`"Disk"`, `"DiskOrCreate"`}}}, ""},
		{"hostDisk to create without capacity", func(s *virtv1.VirtualMachineInstanceSpec) {
			withDisk(s, "hd")
			s.Volumes = append(s.Volumes, hostDiskVolume("hd", virtv1.HostDisk{Path: "/d.img", Type: "DiskOrCreate"}))
		}, hostDiskOn, []wantError{{"spec.volumes[1].hostDisk.capacity", field.ErrorTypeRequired, []string{"DiskOrCreate"}}}, ""},
		{"hostDisk without path", func(s *virtv1.VirtualMachineInstanceSpec) {
			withDisk(s, "hd")
			s.Volumes = append(s.Volumes, hostDiskVolume("hd", virtv1.HostDisk{Type: "Disk"}))
		}, hostDiskOn, []wantError{{"spec.volumes[1].hostDisk.path", field.ErrorTypeRequired, nil}}, ""},
		{"dataVolume without its gate", func(s *virtv1.VirtualMachineInstanceSpec) {
			withDisk(s, "dv")
			s.Volumes = append(s.Volumes, virtv1.Volume{Name: "dv", VolumeSource: virtv1.VolumeSource{DataVolume: &virtv1.DataVolumeSource{Name: "dv"}}})
		}, nil, []wantError{{"spec.volumes[1].dataVolume", field.ErrorTypeForbidden, []string{"DataVolumes feature gate"}}}, ""},
		{"dataVolume with its gate", func(s *virtv1.VirtualMachineInstanceSpec) {
			withDisk(s, "dv")
			s.Volumes = append(s.Volumes, virtv1.Volume{Name: "dv", VolumeSource: virtv1.VolumeSource{DataVolume: &virtv1.DataVolumeSource{Name: "dv"}}})
		}, func(c *Config) { c.FeatureGates = []string{"DataVolumes"} }, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			vmi := &virtv1.VirtualMachineInstance{Spec: goodSpec()}
			tc.edit(&vmi.Spec)
			errs, warnings := ValidateVMI(vmi, cfg)
			checkErrors(t, errs, tc.want)
			if got := strings.Join(warnings, "\n"); (tc.wantWarning == "") != (got == "") || !strings.Contains(got, tc.wantWarning) {
				t.Errorf("warnings = %q, want %q", got, tc.wantWarning)
			}
		})
	}
}

// What DefaultSpec produces passes validation: the mutating webhook runs
// before the validating one.
func TestDefaultedVMIIsValid(t *testing.T) {
	vmi := &virtv1.VirtualMachineInstance{Spec: virtv1.VirtualMachineInstanceSpec{
		Domain: virtv1.DomainSpec{Memory: &virtv1.Memory{Guest: ptr(resource.MustParse("128Mi"))}},
		Volumes: []virtv1.Volume{{Name: "root", VolumeSource: virtv1.VolumeSource{
			ContainerDisk: &virtv1.ContainerDiskSource{Image: "disk"}}}},
	}}
	if err := DefaultVMI(vmi, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if errs, _ := ValidateVMI(vmi, DefaultConfig()); len(errs) > 0 {
		t.Errorf("defaulted VMI is invalid: %v", errs.ToAggregate())
	}
}

func TestValidateVMIUpdate(t *testing.T) {
	old := &virtv1.VirtualMachineInstance{Spec: goodSpec()}
	for _, tc := range []struct {
		name string
		edit func(*virtv1.VirtualMachineInstance)
		want []wantError
	}{
		{"metadata only", func(v *virtv1.VirtualMachineInstance) { v.Labels = map[string]string{"kubevirt.io/nodeName": "n"} }, nil},
		{"same quantity written differently", func(v *virtv1.VirtualMachineInstance) {
			v.Spec.Domain.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("65536Ki")
		}, nil},
		{"volumes changed", func(v *virtv1.VirtualMachineInstance) { v.Spec.Volumes[0].ContainerDisk.Image = "other" }, []wantError{
			{"spec.volumes", field.ErrorTypeForbidden, []string{"cannot change after it is created"}}}},
		{"grace period shortened", func(v *virtv1.VirtualMachineInstance) { v.Spec.TerminationGracePeriodSeconds = ptr[int64](5) }, nil},
		{"grace period negative", func(v *virtv1.VirtualMachineInstance) { v.Spec.TerminationGracePeriodSeconds = ptr[int64](-1) }, []wantError{
			{"spec.terminationGracePeriodSeconds", field.ErrorTypeInvalid, []string{"greater than or equal to 0"}}}},
		{"grace period and hostname changed", func(v *virtv1.VirtualMachineInstance) {
			v.Spec.TerminationGracePeriodSeconds = ptr[int64](0)
			v.Spec.Hostname = "h"
		}, []wantError{{"spec.hostname", field.ErrorTypeForbidden, []string{"except terminationGracePeriodSeconds"}}}},
		{"two fields changed", func(v *virtv1.VirtualMachineInstance) {
			v.Spec.Hostname = "h"
			v.Spec.Domain.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("128Mi")
		}, []wantError{
			{"spec.domain", field.ErrorTypeForbidden, nil}, {"spec.hostname", field.ErrorTypeForbidden, nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			updated := old.DeepCopy()
			tc.edit(updated)
			checkErrors(t, ValidateVMIUpdate(old, updated), tc.want)
		})
	}
}

func TestValidateVM(t *testing.T) {
	strategy := func(s virtv1.VirtualMachineRunStrategy) *virtv1.VirtualMachineRunStrategy { return &s }
	dvTemplate := func(name string) virtv1.DataVolumeTemplateSpec {
		return virtv1.DataVolumeTemplateSpec{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	withDataVolume := func(vm *virtv1.VirtualMachine, name string) {
		s := &vm.Spec.Template.Spec
		withDisk(s, name)
		s.Volumes = append(s.Volumes, virtv1.Volume{Name: name, VolumeSource: virtv1.VolumeSource{DataVolume: &virtv1.DataVolumeSource{Name: name}}})
	}
	dataVolumesOn := func(c *Config) { c.FeatureGates = []string{"DataVolumes"} }
	for _, tc := range []struct {
		name string
		edit func(*virtv1.VirtualMachine)
		cfg  func(*Config)
		want []wantError
	}{
		{"good", func(*virtv1.VirtualMachine) {}, nil, nil},
		{"running", func(vm *virtv1.VirtualMachine) { vm.Spec.RunStrategy, vm.Spec.Running = nil, ptr(false) }, nil, nil},
		{"running and runStrategy", func(vm *virtv1.VirtualMachine) { vm.Spec.Running = ptr(true) }, nil, []wantError{
			{"spec.running", field.ErrorTypeInvalid, []string{"mutually exclusive", "runStrategy"}}}},
		{"neither", func(vm *virtv1.VirtualMachine) { vm.Spec.RunStrategy = nil }, nil, []wantError{
			{"spec.runStrategy", field.ErrorTypeRequired, []string{"Always", "Halted", "RerunOnFailure"}}}},
		{"unknown runStrategy", func(vm *virtv1.VirtualMachine) { vm.Spec.RunStrategy = strategy("Sometimes") }, nil, []wantError{
			{"spec.runStrategy", field.ErrorTypeNotSupported, []string{`"Always"`, `"Manual"`, `"Once"`}}}},
		{"no template", func(vm *virtv1.VirtualMachine) { vm.Spec.Template = nil }, nil, []wantError{
			{"spec.template", field.ErrorTypeRequired, nil}}},
		{"template checked as a VMI spec", func(vm *virtv1.VirtualMachine) { withDisk(&vm.Spec.Template.Spec, "data") }, nil, []wantError{
			{"spec.template.spec.domain.devices.disks[1].name", field.ErrorTypeInvalid, []string{"no volume"}}}},
		{"template hostDisk without gate: refused, as KubeVirt does", func(vm *virtv1.VirtualMachine) {
			s := &vm.Spec.Template.Spec
			withDisk(s, "hd")
			s.Volumes = append(s.Volumes, hostDiskVolume("hd", virtv1.HostDisk{Path: "/d.img", Type: "Disk"}))
		}, nil, []wantError{{"spec.template.spec.volumes[1].hostDisk", field.ErrorTypeForbidden, []string{"HostDisk feature gate is not enabled"}}}},
		{"template without memory or disks for volumes", func(vm *virtv1.VirtualMachine) {
			s := &vm.Spec.Template.Spec
			s.Domain.Resources.Requests = nil
			s.Domain.Devices.Disks = nil
		}, nil, nil},
		{"dataVolumeTemplate used", func(vm *virtv1.VirtualMachine) {
			vm.Spec.DataVolumeTemplates = []virtv1.DataVolumeTemplateSpec{dvTemplate("root-dv")}
			withDataVolume(vm, "root-dv")
		}, dataVolumesOn, nil},
		{"dataVolumeTemplate unused", func(vm *virtv1.VirtualMachine) {
			vm.Spec.DataVolumeTemplates = []virtv1.DataVolumeTemplateSpec{dvTemplate("lonely")}
		}, nil, []wantError{{"spec.dataVolumeTemplates[0].metadata.name", field.ErrorTypeInvalid, []string{"dataVolume: {name: lonely}"}}}},
		{"dataVolumeTemplate names", func(vm *virtv1.VirtualMachine) {
			vm.Spec.DataVolumeTemplates = []virtv1.DataVolumeTemplateSpec{dvTemplate("a"), dvTemplate("a"), dvTemplate(""), dvTemplate("Bad_Name")}
			withDataVolume(vm, "a")
			withDataVolume(vm, "Bad_Name")
		}, dataVolumesOn, []wantError{
			{"spec.dataVolumeTemplates[1].metadata.name", field.ErrorTypeDuplicate, nil},
			{"spec.dataVolumeTemplates[2].metadata.name", field.ErrorTypeRequired, nil},
			{"spec.dataVolumeTemplates[3].metadata.name", field.ErrorTypeInvalid, []string{"RFC 1123"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			vm := &virtv1.VirtualMachine{Spec: virtv1.VirtualMachineSpec{
				RunStrategy: strategy(virtv1.RunStrategyHalted),
				Template:    &virtv1.VirtualMachineInstanceTemplateSpec{Spec: goodSpec()},
			}}
			tc.edit(vm)
			errs, _ := ValidateVM(vm, cfg)
			checkErrors(t, errs, tc.want)
		})
	}
}

// A template that needs a gate which is off is stored with a warning naming
// the field and the gate; the VMIs made from it are what gets refused.
func TestValidateVMIRS(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*virtv1.VirtualMachineInstanceReplicaSet)
		want []wantError
	}{
		{"good", func(*virtv1.VirtualMachineInstanceReplicaSet) {}, nil},
		{"zero replicas", func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Replicas = ptr[int32](0) }, nil},
		{"negative replicas", func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Replicas = ptr[int32](-1) }, []wantError{
			{"spec.replicas", field.ErrorTypeInvalid, []string{"greater than or equal to 0"}}}},
		{"no selector", func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Selector = nil }, []wantError{
			{"spec.selector", field.ErrorTypeRequired, nil}}},
		{"empty selector", func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Selector = &metav1.LabelSelector{} }, []wantError{
			{"spec.selector", field.ErrorTypeRequired, nil}}},
		{"selector not matching the template", func(rs *virtv1.VirtualMachineInstanceReplicaSet) {
			rs.Spec.Template.ObjectMeta.Labels = map[string]string{"app": "other"}
		}, []wantError{{"spec.template.metadata.labels", field.ErrorTypeInvalid, []string{"app=web"}}}},
		{"bad selector operator", func(rs *virtv1.VirtualMachineInstanceReplicaSet) {
			rs.Spec.Selector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}
		}, []wantError{{"spec.selector.matchExpressions[0].operator", field.ErrorTypeInvalid, nil}}},
		{"no template", func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Template = nil }, []wantError{
			{"spec.template", field.ErrorTypeRequired, nil}}},
		{"template checked as a VMI spec", func(rs *virtv1.VirtualMachineInstanceReplicaSet) {
			rs.Spec.Template.Spec.Volumes[0].ContainerDisk.Image = ""
		}, []wantError{{"spec.template.spec.volumes[0].containerDisk.image", field.ErrorTypeRequired, nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := &virtv1.VirtualMachineInstanceReplicaSet{Spec: virtv1.VirtualMachineInstanceReplicaSetSpec{
				Replicas: ptr[int32](2),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Template: &virtv1.VirtualMachineInstanceTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "tier": "front"}},
					Spec:       goodSpec(),
				},
			}}
			tc.edit(rs)
			errs, _ := ValidateVMIRS(rs, DefaultConfig())
			checkErrors(t, errs, tc.want)
		})
	}
}

// Validate works on the request's JSON: CPU counts the Go types cannot
// hold, values of the wrong type, and the dispatch by resource and
// operation.
func TestValidateRequest(t *testing.T) {
	const vmi = `{"metadata":{"name":"a"},"spec":{"domain":{%s"resources":{"requests":{"memory":"64Mi"}},"devices":{%s}}}}`
	for _, tc := range []struct {
		name, resource, raw, old string
		want                     []wantError
	}{
		{"good VMI", VMIs, fmt.Sprintf(vmi, "", ""), "", nil},
		{"zero cores", VMIs, fmt.Sprintf(vmi, `"cpu":{"cores":0},`, ""), "", []wantError{
			{"spec.domain.cpu.cores", field.ErrorTypeInvalid, []string{"at least 1"}}}},
		{"negative sockets and fractional threads", VMIs, fmt.Sprintf(vmi, `"cpu":{"sockets":-2,"threads":1.5},`, ""), "", []wantError{
			{"spec.domain.cpu.sockets", field.ErrorTypeInvalid, nil}, {"spec.domain.cpu.threads", field.ErrorTypeInvalid, nil}}},
		{"VM template cores", VMs, `{"spec":{"runStrategy":"Halted","template":{"spec":{"domain":{"cpu":{"cores":0},"devices":{}}}}}}`, "", []wantError{
			{"spec.template.spec.domain.cpu.cores", field.ErrorTypeInvalid, nil}}},
		{"negative boot order", VMIs, fmt.Sprintf(vmi, "", `"disks":[{"name":"a","bootOrder":-1}]`), "", []wantError{
			{"spec.domain.devices.disks.bootOrder", field.ErrorTypeInvalid, []string{"uint"}}}},
		{"VMI update", VMIs, fmt.Sprintf(vmi, "", `"disks":[]`), fmt.Sprintf(vmi, "", ""), nil},
		{"VMI spec changed", VMIs, fmt.Sprintf(vmi, "", `"disks":[{"name":"a"}]`), fmt.Sprintf(vmi, "", ""), []wantError{
			{"spec.domain", field.ErrorTypeForbidden, nil}}},
		{"VMI being deleted", VMIs, `{"metadata":{"name":"a","deletionTimestamp":"2025-01-01T00:00:00Z"},"spec":{"domain":{"devices":{"disks":[{"name":"a"}]}}}}`,
			fmt.Sprintf(vmi, "", ""), nil},
		{"VM label added, spec as admitted earlier", VMs, `{"metadata":{"labels":{"a":"b"}},"spec":{"template":{"spec":{"domain":{"devices":{}}}}}}`,
			`{"spec":{"template":{"spec":{"domain":{"devices":{}}}}}}`, nil},
		{"VM spec changed", VMs, `{"spec":{"runStrategy":"Halted","template":{"spec":{"domain":{"devices":{"disks":[{"name":"x"}]}}}}}}`,
			`{"spec":{"runStrategy":"Halted","template":{"spec":{"domain":{"devices":{}}}}}}`, []wantError{
				{"spec.template.spec.domain.devices.disks[0].name", field.ErrorTypeInvalid, nil}}},
		{"VMIRS", VMIRSs, `{"spec":{"template":{"spec":{"domain":{"devices":{}}}}}}`, "", []wantError{
			{"spec.selector", field.ErrorTypeRequired, nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var old []byte
			if tc.old != "" {
				old = []byte(tc.old)
			}
			errs, _, err := Validate(tc.resource, []byte(tc.raw), old, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			checkErrors(t, errs, tc.want)
		})
	}
	if _, _, err := Validate("pods", []byte(`{}`), nil, DefaultConfig()); err == nil {
		t.Error("Validate accepted a resource it does not know")
	}
	if _, _, err := Validate(VMIs, []byte(`[`), nil, DefaultConfig()); err == nil {
		t.Error("Validate accepted a request that is not JSON")
	}
}
