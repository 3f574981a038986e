package webhook

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	virtv1 "kubevirt.io/api/core/v1"
)

func ptr[T any](v T) *T { return &v }

func TestConfigFrom(t *testing.T) {
	masquerade := virtv1.KubeVirt{Spec: virtv1.KubeVirtSpec{Configuration: virtv1.KubeVirtConfiguration{
		NetworkConfiguration:   &virtv1.NetworkConfiguration{NetworkInterface: "masquerade", PermitBridgeInterfaceOnPodNetwork: ptr(false)},
		DeveloperConfiguration: &virtv1.DeveloperConfiguration{FeatureGates: []string{"HardDisk"}, MemoryOvercommit: 150},
		MachineType:            "pc-q35-old",
		ArchitectureConfiguration: &virtv1.ArchConfiguration{
			Amd64: &virtv1.ArchSpecificConfiguration{MachineType: "pc-q35-9.0"},
		},
	}}}
	for _, tc := range []struct {
		name string
		kv   *virtv1.KubeVirt
		want Config
	}{
		{"no CR", nil, DefaultConfig()},
		{"empty spec", &virtv1.KubeVirt{}, DefaultConfig()},
		{"everything set", &masquerade, Config{
			FeatureGates: []string{"HardDisk"}, Architecture: "amd64", MachineType: "pc-q35-9.0",
			NetworkInterface: "masquerade", PermitBridgeOnPodNetwork: false, MemoryOvercommit: 150,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ConfigFrom(tc.kv)
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(tc.want)
			if string(gj) != string(wj) {
				t.Errorf("ConfigFrom = %s\nwant %s", gj, wj)
			}
		})
	}
}

func TestFeatureGateSpellings(t *testing.T) {
	for _, tc := range []struct {
		gates       []string
		gate        string
		want, warns bool
	}{
		{nil, HostDiskGate, false, false},
		{[]string{"HostDisk"}, HostDiskGate, true, false},
		{[]string{"HardDisk"}, HostDiskGate, true, true},
		{[]string{"HardDisk"}, DataVolumesGate, false, false},
		{[]string{"DataVolumes"}, DataVolumesGate, true, false},
	} {
		ok, warning := Config{FeatureGates: tc.gates}.gate(tc.gate)
		if ok != tc.want || (warning != "") != tc.warns {
			t.Errorf("gates %v, %s: enabled=%v warning=%q; want enabled=%v warning=%v", tc.gates, tc.gate, ok, warning, tc.want, tc.warns)
		}
	}
}

func TestDefaultSpec(t *testing.T) {
	mi := resource.MustParse
	for _, tc := range []struct {
		name  string
		spec  virtv1.VirtualMachineInstanceSpec
		cfg   func(*Config)
		check func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec)
	}{
		{"machine type and architecture", virtv1.VirtualMachineInstanceSpec{}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			if s.Domain.Machine == nil || s.Domain.Machine.Type != "q35" || s.Architecture != "amd64" {
				t.Errorf("machine %+v, architecture %q; want q35 on amd64", s.Domain.Machine, s.Architecture)
			}
		}},
		{"machine type kept", virtv1.VirtualMachineInstanceSpec{Domain: virtv1.DomainSpec{Machine: &virtv1.Machine{Type: "pc"}}}, nil,
			func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
				if s.Domain.Machine.Type != "pc" {
					t.Errorf("machine type = %q, want pc kept", s.Domain.Machine.Type)
				}
			}},
		{"machine type from the CR", virtv1.VirtualMachineInstanceSpec{}, func(c *Config) { c.MachineType = "pc-q35-9.0" },
			func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
				if s.Domain.Machine.Type != "pc-q35-9.0" {
					t.Errorf("machine type = %q, want the CR's", s.Domain.Machine.Type)
				}
			}},
		{"pod network with bridge", virtv1.VirtualMachineInstanceSpec{}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			if len(s.Networks) != 1 || s.Networks[0].Name != "default" || s.Networks[0].Pod == nil {
				t.Errorf("networks = %+v, want one pod network named default", s.Networks)
			}
			if i := s.Domain.Devices.Interfaces; len(i) != 1 || i[0].Name != "default" || i[0].Bridge == nil {
				t.Errorf("interfaces = %+v, want one bridge interface named default", i)
			}
		}},
		{"pod network with the CR's binding", virtv1.VirtualMachineInstanceSpec{}, func(c *Config) { c.NetworkInterface = "masquerade" },
			func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
				if i := s.Domain.Devices.Interfaces; len(i) != 1 || i[0].Masquerade == nil {
					t.Errorf("interfaces = %+v, want masquerade", i)
				}
			}},
		{"no pod network when opted out", virtv1.VirtualMachineInstanceSpec{Domain: virtv1.DomainSpec{Devices: virtv1.Devices{AutoattachPodInterface: ptr(false)}}}, nil,
			func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
				if len(s.Networks) != 0 || len(s.Domain.Devices.Interfaces) != 0 {
					t.Errorf("networks %v interfaces %v, want none", s.Networks, s.Domain.Devices.Interfaces)
				}
			}},
		{"declared networks kept", virtv1.VirtualMachineInstanceSpec{
			Networks: []virtv1.Network{{Name: "net", NetworkSource: virtv1.NetworkSource{Multus: &virtv1.MultusNetwork{NetworkName: "x"}}}},
		}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			if len(s.Networks) != 1 || s.Networks[0].Name != "net" || len(s.Domain.Devices.Interfaces) != 0 {
				t.Errorf("networks %+v interfaces %+v, want the declared ones only", s.Networks, s.Domain.Devices.Interfaces)
			}
		}},
		{"disk buses", virtv1.VirtualMachineInstanceSpec{Domain: virtv1.DomainSpec{Devices: virtv1.Devices{Disks: []virtv1.Disk{
			{Name: "plain"},
			{Name: "disk", DiskDevice: virtv1.DiskDevice{Disk: &virtv1.DiskTarget{}}},
			{Name: "sata", DiskDevice: virtv1.DiskDevice{Disk: &virtv1.DiskTarget{Bus: "sata"}}},
			{Name: "cd", DiskDevice: virtv1.DiskDevice{CDRom: &virtv1.CDRomTarget{}}},
			{Name: "lun", DiskDevice: virtv1.DiskDevice{LUN: &virtv1.LunTarget{}}},
		}}}}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			d := s.Domain.Devices.Disks
			if d[0].Disk == nil || d[0].Disk.Bus != "virtio" || d[1].Disk.Bus != "virtio" || d[2].Disk.Bus != "sata" {
				t.Errorf("disk buses = %+v %+v %+v, want virtio virtio sata", d[0].Disk, d[1].Disk, d[2].Disk)
			}
			if cd := d[3].CDRom; cd.Bus != "sata" || cd.ReadOnly == nil || !*cd.ReadOnly || cd.Tray != virtv1.TrayStateClosed {
				t.Errorf("cdrom = %+v, want sata, read-only, tray closed", cd)
			}
			if d[4].LUN.Bus != "scsi" {
				t.Errorf("lun bus = %q, want scsi", d[4].LUN.Bus)
			}
		}},
		{"a disk for every volume", virtv1.VirtualMachineInstanceSpec{
			Domain: virtv1.DomainSpec{Devices: virtv1.Devices{Disks: []virtv1.Disk{{Name: "root"}}}},
			Volumes: []virtv1.Volume{
				{Name: "root", VolumeSource: virtv1.VolumeSource{ContainerDisk: &virtv1.ContainerDiskSource{Image: "a:1"}}},
				{Name: "cloudinit", VolumeSource: virtv1.VolumeSource{CloudInitNoCloud: &virtv1.CloudInitNoCloudSource{UserData: "x"}}},
				{Name: "dump", VolumeSource: virtv1.VolumeSource{MemoryDump: &virtv1.MemoryDumpVolumeSource{}}},
			},
		}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			d := s.Domain.Devices.Disks
			if len(d) != 2 || d[1].Name != "cloudinit" || d[1].Disk == nil || d[1].Disk.Bus != "virtio" {
				t.Errorf("disks = %+v, want root and a virtio disk for cloudinit (none for the memory dump)", d)
			}
		}},
		{"memory request from guest", virtv1.VirtualMachineInstanceSpec{Domain: virtv1.DomainSpec{Memory: &virtv1.Memory{Guest: ptr(mi("1Gi"))}}}, nil,
			func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
				if got := s.Domain.Resources.Requests[corev1.ResourceMemory]; got.Cmp(mi("1Gi")) != 0 {
					t.Errorf("memory request = %s, want 1Gi", got.String())
				}
			}},
		{"memory request from guest with overcommit", virtv1.VirtualMachineInstanceSpec{Domain: virtv1.DomainSpec{Memory: &virtv1.Memory{Guest: ptr(mi("1500Mi"))}}},
			func(c *Config) { c.MemoryOvercommit = 150 },
			func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
				if got := s.Domain.Resources.Requests[corev1.ResourceMemory]; got.Cmp(mi("1000Mi")) != 0 {
					t.Errorf("memory request = %s, want 1000Mi (1500Mi at 150%%)", got.String())
				}
			}},
		{"requests from limits", virtv1.VirtualMachineInstanceSpec{Domain: virtv1.DomainSpec{Resources: virtv1.ResourceRequirements{
			Limits: corev1.ResourceList{corev1.ResourceMemory: mi("2Gi"), corev1.ResourceCPU: mi("2")},
		}}}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			r := s.Domain.Resources.Requests
			if r.Memory().Cmp(mi("2Gi")) != 0 || r.Cpu().Cmp(mi("2")) != 0 {
				t.Errorf("requests = %v, want the limits", r)
			}
		}},
		{"request kept, guest left unset", virtv1.VirtualMachineInstanceSpec{Domain: virtv1.DomainSpec{Resources: virtv1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceMemory: mi("64Mi")},
		}}}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			if s.Domain.Resources.Requests.Memory().Cmp(mi("64Mi")) != 0 || s.Domain.Memory != nil {
				t.Errorf("requests %v memory %+v, want 64Mi and no guest memory", s.Domain.Resources.Requests, s.Domain.Memory)
			}
		}},
		{"one socket by default", virtv1.VirtualMachineInstanceSpec{}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			if c := s.Domain.CPU; c == nil || c.Sockets != 1 || c.Cores != 1 || c.Threads != 1 {
				t.Errorf("cpu = %+v, want 1/1/1", c)
			}
		}},
		{"sockets from the CPU request", virtv1.VirtualMachineInstanceSpec{Domain: virtv1.DomainSpec{Resources: virtv1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: mi("1500m")},
		}}}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			if c := s.Domain.CPU; c.Sockets != 2 || c.Cores != 1 || c.Threads != 1 {
				t.Errorf("cpu = %+v, want 2 sockets (1500m rounded up)", c)
			}
		}},
		{"partial topology kept", virtv1.VirtualMachineInstanceSpec{Domain: virtv1.DomainSpec{CPU: &virtv1.CPU{Cores: 4}}}, nil,
			func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
				if c := s.Domain.CPU; c.Cores != 4 || c.Sockets != 0 || c.Threads != 0 || c.Model != "" {
					t.Errorf("cpu = %+v, want cores 4 as written and no model", c)
				}
			}},
		{"pull policies", virtv1.VirtualMachineInstanceSpec{Volumes: []virtv1.Volume{
			{Name: "a", VolumeSource: virtv1.VolumeSource{ContainerDisk: &virtv1.ContainerDiskSource{Image: "reg/disk:latest"}}},
			{Name: "b", VolumeSource: virtv1.VolumeSource{ContainerDisk: &virtv1.ContainerDiskSource{Image: "localhost:5000/disk"}}},
			{Name: "c", VolumeSource: virtv1.VolumeSource{ContainerDisk: &virtv1.ContainerDiskSource{Image: "localhost:5000/disk:v1"}}},
			{Name: "d", VolumeSource: virtv1.VolumeSource{ContainerDisk: &virtv1.ContainerDiskSource{Image: "x:latest", ImagePullPolicy: corev1.PullNever}}},
		}}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			want := []corev1.PullPolicy{corev1.PullAlways, corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever}
			for i, v := range s.Volumes {
				if v.ContainerDisk.ImagePullPolicy != want[i] {
					t.Errorf("%s: pull policy %s, want %s", v.ContainerDisk.Image, v.ContainerDisk.ImagePullPolicy, want[i])
				}
			}
		}},
		{"eviction strategy from the CR", virtv1.VirtualMachineInstanceSpec{}, func(c *Config) { c.EvictionStrategy = ptr(virtv1.EvictionStrategyLiveMigrate) },
			func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
				if s.EvictionStrategy == nil || *s.EvictionStrategy != virtv1.EvictionStrategyLiveMigrate {
					t.Errorf("eviction strategy = %v, want LiveMigrate", s.EvictionStrategy)
				}
			}},
		{"inputs and probes", virtv1.VirtualMachineInstanceSpec{
			Domain:         virtv1.DomainSpec{Devices: virtv1.Devices{Inputs: []virtv1.Input{{Name: "tablet"}}}},
			ReadinessProbe: &virtv1.Probe{},
		}, nil, func(t *testing.T, s *virtv1.VirtualMachineInstanceSpec) {
			if in := s.Domain.Devices.Inputs[0]; in.Bus != "usb" || in.Type != "tablet" {
				t.Errorf("input = %+v, want a usb tablet", in)
			}
			if p := s.ReadinessProbe; p.PeriodSeconds != 10 || p.TimeoutSeconds != 1 || p.FailureThreshold != 3 {
				t.Errorf("probe = %+v, want Kubernetes' defaults", p)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			spec := tc.spec.DeepCopy()
			if err := DefaultSpec(nil, spec, cfg); err != nil {
				t.Fatal(err)
			}
			tc.check(t, spec)
			// Defaulting twice changes nothing more.
			again := spec.DeepCopy()
			if err := DefaultSpec(nil, again, cfg); err != nil {
				t.Fatal(err)
			}
			a, _ := json.Marshal(spec)
			b, _ := json.Marshal(again)
			if string(a) != string(b) {
				t.Errorf("defaults are not idempotent:\n%s\n%s", a, b)
			}
		})
	}
}

func TestDefaultPodNetworkRefusals(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       Config
		wantField string
	}{
		{"bridge forbidden on the pod network", Config{NetworkInterface: "bridge"}, "spec.domain.devices.interfaces"},
		{"unknown binding", Config{NetworkInterface: "slirp", PermitBridgeOnPodNetwork: true}, "spec.configuration.network.defaultNetworkInterface"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vmi := &virtv1.VirtualMachineInstance{}
			err := DefaultVMI(vmi, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantField) {
				t.Errorf("DefaultVMI = %v, want an error on %s", err, tc.wantField)
			}
		})
	}
}

func TestDefaultVMIAddsFinalizerOnce(t *testing.T) {
	vmi := &virtv1.VirtualMachineInstance{}
	for range 2 {
		if err := DefaultVMI(vmi, DefaultConfig()); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(vmi.Finalizers, []string{virtv1.VirtualMachineInstanceFinalizer}) {
		t.Errorf("finalizers = %v, want %s once", vmi.Finalizers, virtv1.VirtualMachineInstanceFinalizer)
	}
}

// The patch applies to the request as sent, including one in which objects
// the Go types always write (spec.domain.resources) are missing.
func TestMutatePatchAppliesToTheRequest(t *testing.T) {
	for _, tc := range []struct {
		name, resource, raw string
		create              bool
		want                map[string]string // JSON pointer → JSON value
		wantNoPatch         bool
	}{
		{"VMI", VMIs, `{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineInstance","metadata":{"name":"a"},
			"spec":{"domain":{"memory":{"guest":"128Mi"},"devices":{}}}}`, true,
			map[string]string{
				"/spec/domain/machine/type":                   `"q35"`,
				"/spec/domain/resources/requests/memory":      `"128Mi"`,
				"/spec/networks/0/pod":                        `{}`,
				"/spec/domain/devices/interfaces/0/bridge":    `{}`,
				"/spec/domain/cpu/sockets":                    `1`,
				"/metadata/finalizers/0":                      `"kubevirt.io/foregroundDeleteVirtualMachine"`,
				"/spec/domain/devices/autoattachPodInterface": ``,
				"/status": ``,
			}, false},
		{"VMI without devices, which the schema requires", VMIs, `{"metadata":{"name":"a"},"spec":{"domain":{"resources":{}}}}`, true, nil, true},
		{"VMI update", VMIs, `{"metadata":{"name":"a"},"spec":{"domain":{"devices":{}}}}`, false, nil, true},
		{"VMI that does not decode", VMIs, `{"metadata":{"name":"a"},"spec":{"domain":{"cpu":{"cores":-1},"devices":{}}}}`, true, nil, true},
		{"VM template", VMs, `{"metadata":{"name":"a"},"spec":{"runStrategy":"Halted","template":{"spec":{"domain":{"devices":{}}}}}}`, true,
			map[string]string{
				"/spec/template/spec/domain/machine/type": `"q35"`,
				"/spec/template/spec/architecture":        `"amd64"`,
				"/spec/template/spec/networks":            ``,
			}, false},
		{"VMIRS template", VMIRSs, `{"metadata":{"name":"a"},"spec":{"template":{"spec":{"domain":{"devices":{}}}}}}`, false,
			map[string]string{"/spec/template/spec/domain/machine/type": `"q35"`}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops, err := Mutate(tc.resource, tc.create, []byte(tc.raw), DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantNoPatch {
				if len(ops) != 0 {
					t.Errorf("patch = %v, want none", ops)
				}
				return
			}
			body, _ := json.Marshal(ops)
			patch, err := jsonpatchapply.DecodePatch(body)
			if err != nil {
				t.Fatal(err)
			}
			out, err := patch.Apply([]byte(tc.raw))
			if err != nil {
				t.Fatalf("patch does not apply to the request: %v\n%s", err, body)
			}
			var doc any
			_ = json.Unmarshal(out, &doc)
			for ptrPath, want := range tc.want {
				got := lookup(doc, ptrPath)
				if got != want {
					t.Errorf("%s = %s, want %s", ptrPath, got, orNone(want))
				}
			}
		})
	}
}

// lookup returns the JSON at a JSON pointer of doc, or "" when absent.
func lookup(doc any, pointer string) string {
	for _, key := range strings.Split(pointer[1:], "/") {
		switch d := doc.(type) {
		case map[string]any:
			doc = d[key]
		case []any:
			i := 0
			for _, c := range key {
				i = i*10 + int(c-'0')
			}
			if i >= len(d) {
				return ""
			}
			doc = d[i]
		default:
			return ""
		}
		if doc == nil {
			return ""
		}
	}
	b, _ := json.Marshal(doc)
	return string(b)
}

func orNone(s string) string {
	if s == "" {
		return "(absent)"
	}
	return s
}
