// Package storage turns a VMI's volumes into disks on the node: copy-on-write
// overlays for containerDisks, sparse images for emptyDisks, host files for
// hostDisks, cloud-init ISOs, the disk.img or block device of
// persistentVolumeClaims and overlays over it for ephemeral volumes.
// virt-launcher calls Prepare before it starts the domain; everything it
// creates lives in the pod's ephemeral directory and goes with the pod, but
// for hostDisks and claims' disk.img.
package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/containerdisk"
	"github.com/virtkube/virtkube/internal/domain"
	"github.com/virtkube/virtkube/internal/storage/cloudinit"
)

// Dirs are where volumes come from and go to in the launcher pod.
type Dirs struct {
	// ContainerDisks holds the socket of each containerDisk volume's
	// container-disk server (see package containerdisk).
	ContainerDisks string
	// Holder keeps the containerDisks' servers running while the launcher
	// runs; nil resolves without holding.
	Holder *containerdisk.Holder
	// Ephemeral receives overlays, empty disks and cloud-init ISOs.
	Ephemeral string
	// Secrets has the Secrets the cloud-init volume refers to, mounted
	// by the pod (see cloudinit.SecretsDir).
	Secrets string
	// ClaimDisks has each persistentVolumeClaim, dataVolume and ephemeral
	// volume's claim in volumeMode Filesystem mounted at <dir>/<volume>;
	// empty means DefaultClaimDisks.
	ClaimDisks string
	// ClaimDevices has the block device of each such claim in volumeMode
	// Block at <dir>/<volume>; empty means DefaultClaimDevices.
	ClaimDevices string
}

// Prepare makes every volume of vmi usable by QEMU and returns the domain's
// disk sources. Bad volume definitions are field errors.
func Prepare(ctx context.Context, vmi *virtv1.VirtualMachineInstance, dirs Dirs, secrets cloudinit.SecretGetter) (map[string]domain.DiskSource, error) {
	if err := os.MkdirAll(dirs.Ephemeral, 0o700); err != nil {
		return nil, err
	}
	out := map[string]domain.DiskSource{}
	for i, v := range vmi.Spec.Volumes {
		path := field.NewPath("spec", "volumes").Index(i)
		var (
			src domain.DiskSource
			err error
		)
		switch {
		case v.ContainerDisk != nil:
			src, err = containerDisk(ctx, v, dirs)
		case v.EmptyDisk != nil:
			src, err = emptyDisk(ctx, v, path, dirs)
		case v.HostDisk != nil:
			src, err = hostDisk(v, path)
		case v.CloudInitNoCloud != nil || v.CloudInitConfigDrive != nil:
			src, err = cloudInitDisk(vmi, i, dirs, secrets)
		case v.PersistentVolumeClaim != nil:
			src, err = claimDisk(vmi, v, path, dirs)
		case v.DataVolume != nil:
			src, err = claimDisk(vmi, dataVolumeClaim(v), path, dirs)
		case v.Ephemeral != nil:
			src, err = ephemeralDisk(ctx, v, path, dirs)
		default:
			return nil, field.NotSupported(path, volumeKind(v), []string{"containerDisk", "emptyDisk", "hostDisk", "cloudInitNoCloud", "cloudInitConfigDrive", "persistentVolumeClaim", "dataVolume", "ephemeral"})
		}
		if err != nil {
			return nil, err
		}
		out[v.Name] = src
	}
	return out, nil
}

func volumeKind(v virtv1.Volume) string {
	switch {
	case v.PersistentVolumeClaim != nil:
		return "persistentVolumeClaim"
	case v.DataVolume != nil:
		return "dataVolume"
	case v.Ephemeral != nil:
		return "ephemeral"
	case v.ConfigMap != nil:
		return "configMap"
	case v.Secret != nil:
		return "secret"
	case v.ServiceAccount != nil:
		return "serviceAccount"
	case v.DownwardAPI != nil:
		return "downwardAPI"
	}
	return "unknown"
}

// DetectFormat reads a disk's first bytes: qcow2 images start with QFI\xfb.
func DetectFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil && err != io.ErrUnexpectedEOF {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if bytes.Equal(magic, []byte("QFI\xfb")) {
		return "qcow2", nil
	}
	return "raw", nil
}

// containerDiskWait bounds how long the launcher waits for a containerDisk's
// container to serve its disk (its image may still be pulled when the
// compute container starts).
const containerDiskWait = 2 * time.Minute

// containerDisk puts a qcow2 overlay over the image's disk, so the guest
// never writes into the pulled image. The disk is reached through the
// container-disk server of the volume's container.
func containerDisk(ctx context.Context, v virtv1.Volume, dirs Dirs) (domain.DiskSource, error) {
	socket := containerdisk.SocketPath(dirs.ContainerDisks, v.Name)
	ctx, cancel := context.WithTimeout(ctx, containerDiskWait)
	defer cancel()
	var (
		base string
		err  error
	)
	if dirs.Holder != nil {
		base, err = dirs.Holder.Resolve(ctx, socket)
	} else {
		base, err = containerdisk.Resolve(ctx, socket)
	}
	if err != nil {
		return domain.DiskSource{}, fmt.Errorf("containerDisk %s (%s): %w", v.Name, v.ContainerDisk.Image, err)
	}
	format, err := DetectFormat(base)
	if err != nil {
		return domain.DiskSource{}, err
	}
	overlay := filepath.Join(dirs.Ephemeral, v.Name+".qcow2")
	if _, err := os.Stat(overlay); err != nil {
		if err := qemuImg(ctx, "create", "-q", "-f", "qcow2", "-b", base, "-F", format, overlay); err != nil {
			return domain.DiskSource{}, fmt.Errorf("containerDisk %s overlay: %w", v.Name, err)
		}
	}
	return domain.DiskSource{Path: overlay, Format: "qcow2"}, nil
}

// emptyDisk is a sparse qcow2 of the requested capacity, made once per pod.
func emptyDisk(ctx context.Context, v virtv1.Volume, path *field.Path, dirs Dirs) (domain.DiskSource, error) {
	capacity := v.EmptyDisk.Capacity.Value()
	if capacity <= 0 {
		return domain.DiskSource{}, field.Invalid(path.Child("emptyDisk", "capacity"), v.EmptyDisk.Capacity.String(), "must be greater than zero")
	}
	file := filepath.Join(dirs.Ephemeral, v.Name+".qcow2")
	if _, err := os.Stat(file); err != nil {
		if err := qemuImg(ctx, "create", "-q", "-f", "qcow2", file, strconv.FormatInt(capacity, 10)); err != nil {
			return domain.DiskSource{}, fmt.Errorf("emptyDisk %s: %w", v.Name, err)
		}
	}
	return domain.DiskSource{Path: file, Format: "qcow2"}, nil
}

// hostDisk uses a file on the node. DiskOrCreate makes a sparse raw file of
// the given capacity when it does not exist; Disk requires it to exist.
func hostDisk(v virtv1.Volume, path *field.Path) (domain.DiskSource, error) {
	h := v.HostDisk
	if !filepath.IsAbs(h.Path) {
		return domain.DiskSource{}, field.Invalid(path.Child("hostDisk", "path"), h.Path, "must be an absolute path")
	}
	info, err := os.Stat(h.Path)
	switch {
	case err == nil && info.IsDir():
		return domain.DiskSource{}, field.Invalid(path.Child("hostDisk", "path"), h.Path, "is a directory, not a disk image")
	case err == nil:
		format, err := DetectFormat(h.Path)
		if err != nil {
			return domain.DiskSource{}, err
		}
		return domain.DiskSource{Path: h.Path, Format: format}, nil
	case !os.IsNotExist(err):
		return domain.DiskSource{}, fmt.Errorf("hostDisk %s: %w", v.Name, err)
	}
	if h.Type != virtv1.HostDiskExistsOrCreate {
		return domain.DiskSource{}, field.Invalid(path.Child("hostDisk", "path"), h.Path, "does not exist; use type DiskOrCreate with a capacity to create it")
	}
	size := h.Capacity.Value()
	if size <= 0 {
		return domain.DiskSource{}, field.Required(path.Child("hostDisk", "capacity"), "DiskOrCreate needs a capacity for the new disk")
	}
	if err := os.MkdirAll(filepath.Dir(h.Path), 0o755); err != nil {
		return domain.DiskSource{}, fmt.Errorf("hostDisk %s: %w", v.Name, err)
	}
	f, err := os.OpenFile(h.Path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o660)
	if err != nil {
		return domain.DiskSource{}, fmt.Errorf("hostDisk %s: %w", v.Name, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(h.Path)
		return domain.DiskSource{}, fmt.Errorf("hostDisk %s: %w", v.Name, err)
	}
	if err := f.Close(); err != nil {
		return domain.DiskSource{}, err
	}
	return domain.DiskSource{Path: h.Path, Format: "raw"}, nil
}

func cloudInitDisk(vmi *virtv1.VirtualMachineInstance, i int, dirs Dirs, secrets cloudinit.SecretGetter) (domain.DiskSource, error) {
	data, err := cloudinit.Resolve(vmi, i, secrets)
	if err != nil {
		return domain.DiskSource{}, err
	}
	label, files, err := cloudinit.Files(vmi, data)
	if err != nil {
		return domain.DiskSource{}, err
	}
	iso := filepath.Join(dirs.Ephemeral, vmi.Spec.Volumes[i].Name+".iso")
	if err := cloudinit.WriteISO(iso, label, files); err != nil {
		return domain.DiskSource{}, err
	}
	return domain.DiskSource{Path: iso, Format: "raw", ReadOnly: true}, nil
}

func qemuImg(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img %v: %w: %s", args, err, bytes.TrimSpace(out))
	}
	return nil
}
