package domain

import (
	"strings"
	"testing"

	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func decode(t *testing.T, spec string) *virtv1.VirtualMachineInstance {
	t.Helper()
	vmi := &virtv1.VirtualMachineInstance{}
	doc := "metadata: {name: vm1, namespace: ns1, uid: 11111111-2222-3333-4444-555555555555}\nspec:\n" + spec
	if err := yaml.UnmarshalStrict([]byte(doc), vmi); err != nil {
		t.Fatalf("decode: %v\n%s", err, doc)
	}
	return vmi
}

// The seed's testvmi-nocloud2, as the launcher would resolve it.
const seedSpec = `  terminationGracePeriodSeconds: 30
  domain:
    resources: {requests: {memory: 1024M}}
    devices:
      disks:
      - {name: containerdisk, disk: {bus: virtio}}
      - {name: emptydisk, disk: {bus: virtio}}
      - {name: cloudinitdisk, disk: {bus: virtio}}
      interfaces:
      - {name: default, bridge: {}}
  networks:
  - {name: default, pod: {}}
  volumes:
  - {name: containerdisk, containerDisk: {image: example/disk}}
  - {name: emptydisk, emptyDisk: {capacity: 2Gi}}
  - {name: cloudinitdisk, cloudInitNoCloud: {userData: "#cloud-config"}}
`

var seedContext = Context{
	Emulation: true,
	Disks: map[string]DiskSource{
		"containerdisk": {Path: "/var/run/kubevirt-ephemeral-disks/containerdisk.qcow2", Format: "qcow2"},
		"emptydisk":     {Path: "/var/run/kubevirt-ephemeral-disks/emptydisk.qcow2", Format: "qcow2"},
		"cloudinitdisk": {Path: "/var/run/kubevirt-ephemeral-disks/cloud-init/noCloud.iso", Format: "raw", ReadOnly: true},
	},
	Interfaces: map[string]InterfaceBackend{"default": {TapDevice: "tap0", MAC: "5e:04:61:17:c1:c9", MTU: 1500}},
	SocketsDir: "/var/run/kubevirt/sockets",
}

func TestConvertSeedVMI(t *testing.T) {
	d, err := Convert(decode(t, seedSpec), seedContext)
	if err != nil {
		t.Fatal(err)
	}
	xml, err := XML(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<domain type="qemu">`,
		`<name>ns1_vm1</name>`,
		`<uuid>11111111-2222-3333-4444-555555555555</uuid>`,
		`<memory unit="KiB">1000000</memory>`, // 1024M = 1024e6 bytes
		`<vcpu placement="static">1</vcpu>`,
		`<type arch="x86_64" machine="q35">hvm</type>`,
		`<source file="/var/run/kubevirt-ephemeral-disks/containerdisk.qcow2">`,
		`<target dev="vda" bus="virtio">`,
		`<target dev="vdc" bus="virtio">`,
		`<driver name="qemu" type="raw">`,
		`<readonly>`,
		`<target dev="tap0" managed="no">`,
		`<mac address="5e:04:61:17:c1:c9">`,
		`<model type="virtio">`,
		`<source mode="bind" path="/var/run/kubevirt/sockets/serial0">`,
		`<log file="/var/run/kubevirt/sockets/serial0.log" append="on">`,
		`<listen type="socket" socket="/var/run/kubevirt/sockets/vnc">`,
		`<memballoon model="virtio">`,
		`<tb-cache unit="MiB">16</tb-cache>`,
		`<rom enabled="no">`,
		`<controller type="usb" index="0" model="none">`,
	} {
		if !strings.Contains(xml, want) {
			t.Errorf("domain XML lacks %s\n%s", want, xml)
		}
	}
	if strings.Contains(xml, "host-model") || strings.Contains(xml, "host-passthrough") {
		t.Errorf("an emulated domain asks for the host CPU:\n%s", xml)
	}
}

// The seed's win10 VM template: cdroms on sata, boot order, e1000, 4 cores.
func TestConvertSeedWindowsTemplate(t *testing.T) {
	vmi := decode(t, `  domain:
    cpu: {cores: 4}
    devices:
      disks:
      - {bootOrder: 1, disk: {bus: virtio}, name: harddrive}
      - {bootOrder: 2, cdrom: {bus: sata}, name: cdromiso}
      - {cdrom: {bus: sata}, name: virtiocontainerdisk}
      interfaces:
      - {masquerade: {}, model: e1000, name: default}
    machine: {type: q35}
    resources: {requests: {memory: 16G}}
  networks:
  - {name: default, pod: {}}
  volumes:
  - {name: cdromiso, persistentVolumeClaim: {claimName: iso-win10-3}}
  - {name: harddrive, hostDisk: {capacity: 50Gi, path: /data/disk.img, type: DiskOrCreate}}
  - {name: virtiocontainerdisk, containerDisk: {image: kubevirt/virtio-container-disk}}
`)
	c := Context{
		Disks: map[string]DiskSource{
			"harddrive":           {Path: "/data/disk.img", Format: "raw"},
			"cdromiso":            {Path: "/var/run/kubevirt-private/vmi-disks/cdromiso/disk.img", Format: "raw"},
			"virtiocontainerdisk": {Path: "/var/run/kubevirt-ephemeral-disks/virtio.qcow2", Format: "qcow2"},
		},
		Interfaces: map[string]InterfaceBackend{"default": {TapDevice: "tap0"}},
		SocketsDir: "/s",
	}
	d, err := Convert(vmi, c)
	if err != nil {
		t.Fatal(err)
	}
	if d.Type != "kvm" || d.CPU.Mode != "host-model" {
		t.Errorf("type/cpu mode = %s/%s, want kvm/host-model", d.Type, d.CPU.Mode)
	}
	if d.Features.TCG != nil {
		t.Errorf("a KVM domain has a TCG translation cache: %+v", d.Features.TCG)
	}
	if d.VCPU.Value != 4 || d.CPU.Topology.Cores != 4 || d.CPU.Topology.Sockets != 1 {
		t.Errorf("vcpu = %d, topology %+v", d.VCPU.Value, d.CPU.Topology)
	}
	disks := d.Devices.Disks
	if len(disks) != 3 {
		t.Fatalf("%d disks", len(disks))
	}
	check := func(i int, device, dev, bus string, boot uint, ro bool) {
		t.Helper()
		got := disks[i]
		gotBoot := uint(0)
		if got.Boot != nil {
			gotBoot = got.Boot.Order
		}
		if got.Device != device || got.Target.Dev != dev || got.Target.Bus != bus || gotBoot != boot || (got.ReadOnly != nil) != ro {
			t.Errorf("disk %d = %s %s %s boot=%d ro=%v, want %s %s %s boot=%d ro=%v",
				i, got.Device, got.Target.Dev, got.Target.Bus, gotBoot, got.ReadOnly != nil, device, dev, bus, boot, ro)
		}
	}
	check(0, "disk", "vda", "virtio", 1, false)
	check(1, "cdrom", "sda", "sata", 2, true)
	check(2, "cdrom", "sdb", "sata", 0, true)
	if m := d.Devices.Interfaces[0].Model.Type; m != "e1000" {
		t.Errorf("NIC model = %s, want e1000", m)
	}
}

func TestConvertErrorsNameTheField(t *testing.T) {
	base := Context{Disks: map[string]DiskSource{"d": {Path: "/d"}}, SocketsDir: "/s"}
	for _, tc := range []struct {
		name, spec string
		c          Context
		want       string
	}{
		{"no memory", "  domain: {devices: {}}\n", base, "spec.domain.resources.requests.memory"},
		{"disk without volume", "  domain: {resources: {requests: {memory: 64Mi}}, devices: {disks: [{name: x}]}}\n", base,
			"spec.domain.devices.disks[0].name: Not found"},
		{"unsupported bus", "  domain: {resources: {requests: {memory: 64Mi}}, devices: {disks: [{name: d, disk: {bus: ide}}]}}\n  volumes: [{name: d, emptyDisk: {capacity: 1Gi}}]\n", base,
			`spec.domain.devices.disks[0].disk.bus: Unsupported value: "ide"`},
		{"virtio cdrom", "  domain: {resources: {requests: {memory: 64Mi}}, devices: {disks: [{name: d, cdrom: {bus: virtio}}]}}\n  volumes: [{name: d, emptyDisk: {capacity: 1Gi}}]\n", base,
			"spec.domain.devices.disks[0].cdrom.bus"},
		{"bad NIC model", "  domain: {resources: {requests: {memory: 64Mi}}, devices: {interfaces: [{name: net, model: ne2k, bridge: {}}]}}\n  networks: [{name: net, pod: {}}]\n",
			Context{Interfaces: map[string]InterfaceBackend{"net": {TapDevice: "tap0"}}}, `spec.domain.devices.interfaces[0].model: Unsupported value: "ne2k"`},
		{"host CPU under emulation", "  domain: {cpu: {model: host-passthrough}, resources: {requests: {memory: 64Mi}}, devices: {}}\n",
			Context{Emulation: true}, "spec.domain.cpu.model"},
		{"EFI without OVMF", "  domain: {firmware: {bootloader: {efi: {secureBoot: false}}}, resources: {requests: {memory: 64Mi}}, devices: {}}\n",
			Context{}, "spec.domain.firmware.bootloader.efi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Convert(decode(t, tc.spec), tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDriveLetters(t *testing.T) {
	for i, want := range map[int]string{0: "a", 25: "z", 26: "aa", 27: "ab", 701: "zz", 702: "aaa"} {
		if got := driveLetters(i); got != want {
			t.Errorf("driveLetters(%d) = %s, want %s", i, got, want)
		}
	}
}

func TestGraphicsAndSerialCanBeTurnedOff(t *testing.T) {
	d, err := Convert(decode(t, "  domain: {resources: {requests: {memory: 64Mi}}, devices: {autoattachGraphicsDevice: false, autoattachSerialConsole: false, autoattachMemBalloon: false}}\n"), Context{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Devices.Graphics) != 0 || len(d.Devices.Videos) != 0 || len(d.Devices.Serials) != 0 {
		t.Errorf("graphics %d, video %d, serial %d; want none", len(d.Devices.Graphics), len(d.Devices.Videos), len(d.Devices.Serials))
	}
	if d.Devices.MemBalloon == nil || d.Devices.MemBalloon.Model != "none" {
		t.Errorf("balloon = %+v, want model none", d.Devices.MemBalloon)
	}
}

// A NIC the guest boots from keeps its option ROM (iPXE); others lose it.
func TestNICBootROMOnlyWhenBootedFrom(t *testing.T) {
	vmi := decode(t, `  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      interfaces: [{name: a, bridge: {}, bootOrder: 1}, {name: b, bridge: {}}]
  networks: [{name: a, pod: {}}, {name: b, multus: {networkName: x}}]
`)
	d, err := Convert(vmi, Context{Interfaces: map[string]InterfaceBackend{"a": {TapDevice: "tap0"}, "b": {TapDevice: "tap1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d.Devices.Interfaces); n != 2 {
		t.Fatalf("%d interfaces, want 2", n)
	}
	if a := d.Devices.Interfaces[0]; a.ROM != nil || a.Boot == nil || a.Boot.Order != 1 {
		t.Errorf("boot NIC: rom %+v, boot %+v; want its ROM and boot order 1", a.ROM, a.Boot)
	}
	if b := d.Devices.Interfaces[1]; b.ROM == nil || b.ROM.Enabled != "no" {
		t.Errorf("other NIC: rom %+v; want enabled=no", b.ROM)
	}
}

// A USB tablet keeps libvirt's USB controller.
func TestUSBControllerOnlyWhenUsed(t *testing.T) {
	d, err := Convert(decode(t, "  domain: {resources: {requests: {memory: 64Mi}}, devices: {inputs: [{name: t, type: tablet}]}}\n"), Context{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range d.Devices.Controllers {
		if c.Type == "usb" {
			t.Errorf("a VMI with a USB tablet has usb controller %+v; want libvirt's default", c)
		}
	}
}
