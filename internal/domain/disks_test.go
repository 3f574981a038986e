package domain

import (
	"strings"
	"testing"
)

// A claim's block device is a disk of type block with its device as the
// source, raw, without the host page cache and with native AIO (KubeVirt's
// default), read-only when the source or the VMI says so; a cache mode the
// VMI asks for is kept, and native AIO only goes with cache none. Files
// keep QEMU's defaults.
func TestBlockDisks(t *testing.T) {
	spec := `  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      disks:
      - {name: blk, disk: {bus: virtio}}
      - {name: ro, disk: {bus: virtio}}
      - {name: wt, disk: {bus: virtio}, cache: writethrough}
      - {name: lun, lun: {bus: scsi, readonly: true}}
      - {name: file, disk: {bus: virtio}}
  volumes:
  - {name: blk, persistentVolumeClaim: {claimName: a}}
  - {name: ro, persistentVolumeClaim: {claimName: b, readOnly: true}}
  - {name: wt, persistentVolumeClaim: {claimName: c}}
  - {name: lun, persistentVolumeClaim: {claimName: d}}
  - {name: file, persistentVolumeClaim: {claimName: e}}
`
	c := Context{Emulation: true, SocketsDir: "/s", Disks: map[string]DiskSource{
		"blk":  {Path: "/dev/blk", Format: "raw", Block: true},
		"ro":   {Path: "/dev/ro", Format: "raw", Block: true, ReadOnly: true},
		"wt":   {Path: "/dev/wt", Format: "raw", Block: true},
		"lun":  {Path: "/dev/lun", Format: "raw", Block: true},
		"file": {Path: "/var/run/kubevirt-private/vmi-disks/file/disk.img", Format: "raw"},
	}}
	d, err := Convert(decode(t, spec), c)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		source, cache, io, target string
		readOnly                  bool
	}
	wants := []want{
		{"/dev/blk", "none", "native", "vda", false},
		{"/dev/ro", "none", "native", "vdb", true},
		{"/dev/wt", "writethrough", "", "vdc", false},
		{"/dev/lun", "none", "native", "sda", true},
	}
	if len(d.Devices.Disks) != 5 {
		t.Fatalf("%d disks, want 5", len(d.Devices.Disks))
	}
	for i, w := range wants {
		got := d.Devices.Disks[i]
		if got.Source == nil || got.Source.Block == nil || got.Source.Block.Dev != w.source || got.Source.File != nil {
			t.Errorf("disk %d source = %+v, want block device %s", i, got.Source, w.source)
			continue
		}
		if got.Driver.Type != "raw" || got.Driver.Cache != w.cache || got.Driver.IO != w.io {
			t.Errorf("disk %s driver = %+v, want raw, cache %q, io %q", w.source, got.Driver, w.cache, w.io)
		}
		if (got.ReadOnly != nil) != w.readOnly || got.Target.Dev != w.target {
			t.Errorf("disk %s: readonly %v, target %s; want %v, %s", w.source, got.ReadOnly != nil, got.Target.Dev, w.readOnly, w.target)
		}
	}
	if f := d.Devices.Disks[4]; f.Source.File == nil || f.Driver.Cache != "" || f.Driver.IO != "" {
		t.Errorf("file disk = source %+v, driver %+v; want a file with QEMU's default cache and I/O", f.Source, f.Driver)
	}
	xml, err := XML(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`<disk type="block" device="disk">`, `<driver name="qemu" type="raw" cache="none" io="native">`, `<source dev="/dev/blk">`} {
		if !strings.Contains(xml, s) {
			t.Errorf("domain XML lacks %s\n%s", s, xml)
		}
	}
}
