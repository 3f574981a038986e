package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/domain"
)

// DefaultClaimDisks is where the launcher pod mounts each claim volume in
// volumeMode Filesystem, at <dir>/<volume>/ (KubeVirt's path; see
// vmi.ClaimDisksDir).
const DefaultClaimDisks = "/var/run/kubevirt-private/vmi-disks"

// DefaultClaimDevices is where the launcher pod has the block device of
// each claim volume in volumeMode Block, at <dir>/<volume> (KubeVirt's
// path; see vmi.ClaimDevicesDir).
const DefaultClaimDevices = "/dev"

// claimDiskFile is a filesystem claim's disk, as KubeVirt and CDI name it.
const claimDiskFile = "disk.img"

// claimAlignment is what a new disk.img's size is rounded down to, so a
// claim whose filesystem overhead leaves an odd size still gives the guest
// whole sectors.
const claimAlignment = 1 << 20

// claimDisk is a persistentVolumeClaim volume's disk: the block device of a
// claim in volumeMode Block, else the raw disk.img in the claim's mount,
// created sparse at the claim's usable size when missing (a blank claim).
// The format is raw, always, as in KubeVirt: probing a disk the guest
// writes would let the guest choose how the host reads it (a qcow2 header
// naming a backing file).
func claimDisk(vmi *virtv1.VirtualMachineInstance, v virtv1.Volume, path *field.Path, dirs Dirs) (domain.DiskSource, error) {
	c, err := claimOf(v, dirs)
	if err != nil {
		return domain.DiskSource{}, err
	}
	readOnly := v.PersistentVolumeClaim.ReadOnly
	if c.device != "" {
		return domain.DiskSource{Path: c.device, Format: "raw", Block: true, ReadOnly: readOnly}, nil
	}
	file := filepath.Join(c.dir, claimDiskFile)
	src := domain.DiskSource{Path: file, Format: "raw", ReadOnly: readOnly}
	if _, err := os.Stat(file); err == nil {
		return src, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return domain.DiskSource{}, fmt.Errorf("persistentVolumeClaim %s: %w", v.Name, err)
	}
	if src.ReadOnly {
		return domain.DiskSource{}, field.Invalid(path.Child("persistentVolumeClaim", "readOnly"), true,
			fmt.Sprintf("claim %s has no %s to read; a read-only claim must hold a disk", v.PersistentVolumeClaim.ClaimName, claimDiskFile))
	}
	size, err := claimDiskSize(vmi, v.Name)
	if err != nil {
		return domain.DiskSource{}, fmt.Errorf("persistentVolumeClaim %s: %w", v.Name, err)
	}
	if err := createSparse(file, size); err != nil {
		return domain.DiskSource{}, fmt.Errorf("persistentVolumeClaim %s: %w", v.Name, err)
	}
	return src, nil
}

// dataVolumeClaim is volume v of kind dataVolume as the
// persistentVolumeClaim volume it amounts to: CDI names a DataVolume's claim
// after the DataVolume, and the pod mounts it like any claim.
func dataVolumeClaim(v virtv1.Volume) virtv1.Volume {
	v.PersistentVolumeClaim = &virtv1.PersistentVolumeClaimVolumeSource{
		PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: v.DataVolume.Name},
	}
	v.DataVolume = nil
	return v
}

// ephemeralDisk is a qcow2 overlay in the pod over the disk of an ephemeral
// volume's claim (its block device in volumeMode Block, else its
// disk.img): the guest's writes go with the pod, the claim is only read.
func ephemeralDisk(ctx context.Context, v virtv1.Volume, path *field.Path, dirs Dirs) (domain.DiskSource, error) {
	if v.Ephemeral.PersistentVolumeClaim == nil {
		return domain.DiskSource{}, field.Required(path.Child("ephemeral", "persistentVolumeClaim"), "an ephemeral volume needs a claim to read")
	}
	c, err := claimOf(v, dirs)
	if err != nil {
		return domain.DiskSource{}, err
	}
	base := c.device
	if base == "" {
		base = filepath.Join(c.dir, claimDiskFile)
		if _, err := os.Stat(base); err != nil {
			return domain.DiskSource{}, fmt.Errorf("ephemeral %s: claim %s has no %s to start from: %w", v.Name, v.Ephemeral.PersistentVolumeClaim.ClaimName, claimDiskFile, err)
		}
	}
	overlay := filepath.Join(dirs.Ephemeral, v.Name+".qcow2")
	if _, err := os.Stat(overlay); err != nil {
		if err := qemuImg(ctx, "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay); err != nil {
			return domain.DiskSource{}, fmt.Errorf("ephemeral %s overlay: %w", v.Name, err)
		}
	}
	return domain.DiskSource{Path: overlay, Format: "qcow2"}, nil
}

// podClaim is where the pod put a volume's claim: the directory it is
// mounted at (volumeMode Filesystem) or its block device (volumeMode Block).
type podClaim struct {
	dir, device string
}

// claimOf finds volume v's claim in the pod as virt-launcher does: mounted
// at <ClaimDisks>/<volume>/, else a block device at <ClaimDevices>/<volume>.
// The mount is looked for first: a launcher pod without volumeDevices on
// this node's runtime shares the host's /dev, where a device may have a
// volume's name.
func claimOf(v virtv1.Volume, dirs Dirs) (podClaim, error) {
	root, devRoot := dirs.ClaimDisks, dirs.ClaimDevices
	if root == "" {
		root = DefaultClaimDisks
	}
	if devRoot == "" {
		devRoot = DefaultClaimDevices
	}
	dir := filepath.Join(root, v.Name)
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return podClaim{dir: dir}, nil
	case err == nil:
		return podClaim{}, fmt.Errorf("volume %s: %s is not a directory", v.Name, dir)
	case !errors.Is(err, fs.ErrNotExist):
		return podClaim{}, fmt.Errorf("volume %s: %w", v.Name, err)
	}
	dev := filepath.Join(devRoot, v.Name)
	fi, err = os.Stat(dev)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return podClaim{}, fmt.Errorf("volume %s: its claim is not mounted in the pod at %s (volumeMode Filesystem) nor a block device at %s (volumeMode Block)", v.Name, dir, dev)
	case err != nil:
		return podClaim{}, fmt.Errorf("volume %s: %w", v.Name, err)
	case fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0:
		return podClaim{}, fmt.Errorf("volume %s: its claim is not mounted in the pod at %s, and %s is not a block device", v.Name, dir, dev)
	}
	return podClaim{device: dev}, nil
}

// claimDiskSize is the size of a new disk.img for volume name: the claim's
// capacity as virt-controller reports it in the VMI's volumeStatus, less
// the filesystem overhead it reports, rounded down to whole MiB.
func claimDiskSize(vmi *virtv1.VirtualMachineInstance, name string) (int64, error) {
	for _, vs := range vmi.Status.VolumeStatus {
		if vs.Name != name || vs.PersistentVolumeClaimInfo == nil {
			continue
		}
		info := vs.PersistentVolumeClaimInfo
		capacity, ok := info.Capacity[corev1.ResourceStorage]
		if !ok {
			capacity, ok = info.Requests[corev1.ResourceStorage]
		}
		if !ok || capacity.Value() <= 0 {
			break
		}
		size := capacity.Value()
		if info.FilesystemOverhead != nil {
			overhead, err := strconv.ParseFloat(string(*info.FilesystemOverhead), 64)
			if err != nil || overhead < 0 || overhead >= 1 {
				return 0, fmt.Errorf("status.volumeStatus %s: filesystemOverhead %q must be a fraction in [0,1)", name, *info.FilesystemOverhead)
			}
			size = int64(float64(size) * (1 - overhead))
		}
		size = size / claimAlignment * claimAlignment
		if size <= 0 {
			return 0, fmt.Errorf("claim %s: capacity %s leaves no room for a disk", info.ClaimName, capacity.String())
		}
		return size, nil
	}
	return 0, fmt.Errorf("no %s yet and the claim's capacity is unknown (status.volumeStatus has none for this volume)", claimDiskFile)
}

// createSparse makes a new sparse file of size bytes; it never replaces an
// existing one.
func createSparse(file string, size int64) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o660)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(file)
		return err
	}
	return f.Close()
}
