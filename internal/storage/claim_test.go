package storage

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/domain"
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
	_, err := Prepare(context.Background(), vmi, Dirs{Ephemeral: t.TempDir(), ClaimDisks: t.TempDir(), ClaimDevices: t.TempDir()}, nil)
	if err == nil || !strings.Contains(err.Error(), "volume data: its claim is not mounted in the pod at") || !strings.Contains(err.Error(), "nor a block device at") {
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

// mknodBlock makes a block device node at path (the numbers of loop0; it
// is only looked at), as root.
func mknodBlock(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a device node")
	}
	if err := syscall.Mknod(path, syscall.S_IFBLK|0o600, 7<<8|0 /* loop0, old encoding */); err != nil {
		t.Skipf("mknod: %v", err)
	}
}

// A claim in volumeMode Block is the block device the pod has at
// <devices>/<volume>: a raw block disk, read-only when the volume says so,
// with no disk.img logic. A mounted claim directory of the same name wins,
// and a device that is not a block device is refused.
func TestClaimBlockDevice(t *testing.T) {
	devices := t.TempDir()
	mknodBlock(t, filepath.Join(devices, "data"))
	mknodBlock(t, filepath.Join(devices, "ro"))
	mknodBlock(t, filepath.Join(devices, "dv"))
	vmi := vmiWith(t, `  - {name: data, persistentVolumeClaim: {claimName: c}}
  - {name: ro, persistentVolumeClaim: {claimName: r, readOnly: true}}
  - {name: dv, dataVolume: {name: imported}}
`)
	dirs := Dirs{Ephemeral: t.TempDir(), ClaimDisks: t.TempDir(), ClaimDevices: devices}
	disks, err := Prepare(context.Background(), vmi, dirs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, readOnly := range map[string]bool{"data": false, "ro": true, "dv": false} {
		want := domain.DiskSource{Path: filepath.Join(devices, name), Format: "raw", Block: true, ReadOnly: readOnly}
		if got := disks[name]; got != want {
			t.Errorf("disk %s = %+v, want %+v", name, got, want)
		}
	}
	if entries, _ := os.ReadDir(dirs.ClaimDisks); len(entries) != 0 {
		t.Errorf("claim disks dir has %v; want nothing made for a block claim", entries)
	}

	// A mount of the volume's name is a Filesystem claim, whatever /dev has.
	if err := os.Mkdir(filepath.Join(dirs.ClaimDisks, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	withClaimStatus(vmi, "data", "8Mi", nil)
	disks, err = Prepare(context.Background(), vmi, dirs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := disks["data"]; got.Block || got.Path != filepath.Join(dirs.ClaimDisks, "data", "disk.img") {
		t.Errorf("disk with a claim mount = %+v, want its disk.img", got)
	}

	if err := os.Symlink("/dev/null", filepath.Join(devices, "chr")); err != nil {
		t.Fatal(err)
	}
	_, err = Prepare(context.Background(), vmiWith(t, "  - {name: chr, persistentVolumeClaim: {claimName: c}}\n"), dirs, nil)
	if err == nil || !strings.Contains(err.Error(), "chr is not a block device") {
		t.Errorf("a character device: err = %v", err)
	}
}

// An ephemeral volume on a Block claim is a qcow2 overlay in the pod whose
// backing file is the claim's block device, read as raw; the device is
// left as it was.
func TestEphemeralOverlaysBlockClaim(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	img := filepath.Join(t.TempDir(), "golden.img")
	if err := createSparse(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	devices := t.TempDir()
	if err := os.Symlink(loop, filepath.Join(devices, "golden")); err != nil {
		t.Fatal(err)
	}
	vmi := vmiWith(t, "  - {name: golden, ephemeral: {persistentVolumeClaim: {claimName: g}}}\n")
	dirs := Dirs{Ephemeral: t.TempDir(), ClaimDisks: t.TempDir(), ClaimDevices: devices}
	disks, err := Prepare(context.Background(), vmi, dirs, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := disks["golden"]
	if got.Format != "qcow2" || got.Block || filepath.Dir(got.Path) != dirs.Ephemeral {
		t.Fatalf("disk = %+v, want a qcow2 overlay file in %s", got, dirs.Ephemeral)
	}
	if format, size := virtualSize(t, got.Path); format != "qcow2" || size != 8<<20 {
		t.Errorf("overlay %s of %d bytes, want qcow2 of 8 MiB", format, size)
	}
	info, err := exec.Command("qemu-img", "info", got.Path).CombinedOutput()
	if err != nil || !strings.Contains(string(info), "backing file: "+filepath.Join(devices, "golden")) || !strings.Contains(string(info), "backing file format: raw") {
		t.Errorf("overlay's backing file is not the claim's device, read as raw: %s %v", info, err)
	}
}
