package storage

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	virtv1 "kubevirt.io/api/core/v1"
)

func withClaimStatus(vmi *virtv1.VirtualMachineInstance, volume, capacity string, overhead *virtv1.Percent) {
	vmi.Status.VolumeStatus = append(vmi.Status.VolumeStatus, virtv1.VolumeStatus{Name: volume, PersistentVolumeClaimInfo: &virtv1.PersistentVolumeClaimInfo{
		ClaimName: "c", Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(capacity)}, FilesystemOverhead: overhead,
	}})
}

// A blank filesystem claim gets a sparse raw disk.img of the claim's
// capacity; the next VMI on the claim finds the same file, data and all.
func TestClaimDiskCreatedOnceAtCapacity(t *testing.T) {
	claims := t.TempDir()
	if err := os.Mkdir(filepath.Join(claims, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	vmi := vmiWith(t, "  - {name: data, persistentVolumeClaim: {claimName: c}}\n")
	withClaimStatus(vmi, "data", "64Mi", nil)
	dirs := Dirs{Ephemeral: t.TempDir(), ClaimDisks: claims}
	disks, err := Prepare(context.Background(), vmi, dirs, nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(claims, "data", "disk.img")
	if got := disks["data"]; got.Path != file || got.Format != "raw" || got.ReadOnly {
		t.Errorf("disk = %+v, want raw read-write %s", got, file)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Size() != 64<<20 {
		t.Fatalf("disk.img: %v, %v; want 64 MiB", fi, err)
	}
	if err := os.WriteFile(file, []byte("data-42"), 0o660); err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(context.Background(), vmiWith(t, "  - {name: data, persistentVolumeClaim: {claimName: c}}\n"), dirs, nil); err != nil {
		t.Fatalf("second VMI, disk.img there, no volumeStatus needed: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "data-42" {
		t.Errorf("disk.img was replaced: %q", b)
	}
}

func TestClaimDiskSize(t *testing.T) {
	overhead := virtv1.Percent("0.055")
	bad := virtv1.Percent("1.5")
	tests := []struct {
		name     string
		capacity string
		overhead *virtv1.Percent
		want     int64
		wantErr  string
	}{
		{"capacity", "1Gi", nil, 1 << 30, ""},
		{"overhead, rounded to MiB", "1Gi", &overhead, 967 << 20, ""},
		{"bad overhead", "1Gi", &bad, 0, "filesystemOverhead"},
		{"tiny", "100Ki", nil, 0, "leaves no room"},
		{"unknown", "", nil, 0, "capacity is unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vmi := vmiWith(t, "  - {name: data, persistentVolumeClaim: {claimName: c}}\n")
			if tt.capacity != "" {
				withClaimStatus(vmi, "data", tt.capacity, tt.overhead)
			}
			got, err := claimDiskSize(vmi, "data")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("size = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestClaimNotMounted(t *testing.T) {
	vmi := vmiWith(t, "  - {name: data, persistentVolumeClaim: {claimName: c}}\n")
	withClaimStatus(vmi, "data", "64Mi", nil)
	_, err := Prepare(context.Background(), vmi, Dirs{Ephemeral: t.TempDir(), ClaimDisks: t.TempDir()}, nil)
	if err == nil || !strings.Contains(err.Error(), "volume data: its claim is not mounted") {
		t.Errorf("err = %v", err)
	}
}

// An ephemeral volume reads the claim's disk through an overlay in the pod.
func TestEphemeralOverlaysClaim(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	claims := t.TempDir()
	base := filepath.Join(claims, "golden", "disk.img")
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := createSparse(base, 8<<20); err != nil {
		t.Fatal(err)
	}
	vmi := vmiWith(t, "  - {name: golden, ephemeral: {persistentVolumeClaim: {claimName: g}}}\n")
	dirs := Dirs{Ephemeral: t.TempDir(), ClaimDisks: claims}
	disks, err := Prepare(context.Background(), vmi, dirs, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := disks["golden"]
	if got.Format != "qcow2" || filepath.Dir(got.Path) != dirs.Ephemeral {
		t.Fatalf("disk = %+v, want a qcow2 overlay in %s", got, dirs.Ephemeral)
	}
	if format, size := virtualSize(t, got.Path); format != "qcow2" || size != 8<<20 {
		t.Errorf("overlay %s of %d bytes, want qcow2 of 8 MiB", format, size)
	}
	out, err := exec.Command("qemu-img", "info", got.Path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), base) {
		t.Errorf("overlay's backing file is not the claim's disk.img: %s %v", out, err)
	}

	// Without a disk.img in the claim there is nothing to overlay.
	if err := os.Remove(base); err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(context.Background(), vmi, Dirs{Ephemeral: t.TempDir(), ClaimDisks: claims}, nil); err == nil || !strings.Contains(err.Error(), "has no disk.img") {
		t.Errorf("ephemeral on an empty claim: err = %v", err)
	}
}

// A dataVolume volume is its DataVolume's claim (named as the DataVolume),
// mounted under the volume's name: the imported disk.img is used as is.
func TestDataVolumeUsesClaimDisk(t *testing.T) {
	claims := t.TempDir()
	if err := os.Mkdir(filepath.Join(claims, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(claims, "root", "disk.img")
	if err := os.WriteFile(file, []byte("imported"), 0o660); err != nil {
		t.Fatal(err)
	}
	vmi := vmiWith(t, "  - {name: root, dataVolume: {name: fedora-dv}}\n")
	disks, err := Prepare(context.Background(), vmi, Dirs{Ephemeral: t.TempDir(), ClaimDisks: claims}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := disks["root"]; got.Path != file || got.Format != "raw" || got.ReadOnly {
		t.Errorf("disk = %+v, want raw read-write %s", got, file)
	}
}
