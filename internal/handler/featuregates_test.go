package handler

import (
	"strings"
	"testing"

	virtv1 "kubevirt.io/api/core/v1"
)

func TestCheckFeatureGates(t *testing.T) {
	hostDisk := &virtv1.VirtualMachineInstance{Spec: virtv1.VirtualMachineInstanceSpec{Volumes: []virtv1.Volume{
		{Name: "root", VolumeSource: virtv1.VolumeSource{ContainerDisk: &virtv1.ContainerDiskSource{Image: "x"}}},
		{Name: "harddrive", VolumeSource: virtv1.VolumeSource{HostDisk: &virtv1.HostDisk{Path: "/data/disk.img", Type: virtv1.HostDiskExistsOrCreate}}},
	}}}
	plain := &virtv1.VirtualMachineInstance{}
	for _, tc := range []struct {
		name        string
		vmi         *virtv1.VirtualMachineInstance
		gates       []string
		wantErr     string
		wantWarning string
	}{
		{"no hostDisk, no gates", plain, nil, "", ""},
		{"hostDisk with the gate", hostDisk, []string{"DataVolumes", "HostDisk"}, "", ""},
		{"hostDisk with the seed's spelling", hostDisk, []string{"HardDisk", "DataVolumes"}, "", `spell it "HostDisk"`},
		{"hostDisk without the gate", hostDisk, []string{"DataVolumes"}, "spec.volumes[1].hostDisk: Forbidden: hostDisk volumes need the HostDisk feature gate", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warning, err := checkFeatureGates(tc.vmi, tc.gates)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
			if (warning == "") != (tc.wantWarning == "") || !strings.Contains(warning, tc.wantWarning) {
				t.Errorf("warning = %q, want %q", warning, tc.wantWarning)
			}
		})
	}
}
