package virtctl

import (
	"testing"
	"time"
)

func TestRenderBar(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		want        string
	}{
		{0, 10 << 20, " 0 B / 10.00 MiB [>                                       ] 0.00% 0s"},
		{5 << 20, 10 << 20, " 5.00 MiB / 10.00 MiB [====================>                   ] 50.00% 0s"},
		{10 << 20, 10 << 20, " 10.00 MiB / 10.00 MiB [========================================] 100.00% 0s"},
		{3 << 30, 6 << 30, " 3.00 GiB / 6.00 GiB [====================>                   ] 50.00% 0s"},
	} {
		if got := renderBar(tc.done, tc.total, 0*time.Second); got != tc.want {
			t.Errorf("renderBar(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
}

func TestUploadTarget(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		pvcName   string
		kind, nm  string
		wantError bool
	}{
		{args: []string{"dv", "up"}, kind: "dv", nm: "up"},
		{args: []string{"PVC", "up"}, kind: "pvc", nm: "up"},
		{pvcName: "iso-win10", kind: "pvc", nm: "iso-win10"},
		{args: []string{"vm", "x"}, wantError: true},
		{wantError: true},
	} {
		kind, name, err := uploadTarget(tc.args, tc.pvcName)
		if (err != nil) != tc.wantError || kind != tc.kind || name != tc.nm {
			t.Errorf("uploadTarget(%v, %q) = %q, %q, %v", tc.args, tc.pvcName, kind, name, err)
		}
	}
}
