package importer

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/go-logr/logr"

	"github.com/virtkube/virtkube/internal/cdi"
)

// dest is the claim that ModeImport and ModeUpload fill: a filesystem
// claim's directory, where disk.img goes, or a block claim's device,
// written through a file under scratch once the image is whole.
type dest struct {
	dir     string // --dest, unless device is set
	size    int64  // --size: disk.img's size
	device  string // --dest-device
	scratch string // --scratch, with device
}

// destOf is the claim o fills.
func destOf(o Options) dest {
	if o.DestDevice != "" {
		return dest{device: o.DestDevice, scratch: o.Scratch}
	}
	return dest{dir: o.Dest, size: o.Size}
}

// String names d in logs: its device or its directory.
func (d dest) String() string {
	if d.device != "" {
		return d.device
	}
	return d.dir
}

// check makes sure the claim is there: its directory, or its device (that
// this program may write) and the scratch directory.
func (d dest) check(log logr.Logger) error {
	if d.device == "" {
		return checkDest(d.dir)
	}
	f, err := os.OpenFile(d.device, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("--%s: %w", FlagDestDevice, err)
	}
	defer f.Close()
	size, err := cdi.DeviceSize(f)
	if err != nil {
		return fmt.Errorf("--%s: %w", FlagDestDevice, err)
	}
	fi, err := os.Stat(d.scratch)
	if err != nil {
		return fmt.Errorf("--%s: %w", FlagScratch, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("--%s %s: not a directory", FlagScratch, d.scratch)
	}
	log.Info("claim is a block device", "device", d.device, "bytes", size, "scratch", d.scratch)
	return nil
}

// blank gives the claim an empty disk of its size. A device is left as it
// is, as CDI leaves a blank block volume.
func (d dest) blank(log logr.Logger) error {
	if d.device != "" {
		log.Info("blank disk on a block device: nothing to write", "device", d.device)
		return nil
	}
	log.Info("making a blank disk", "dir", d.dir, "size", d.size)
	if err := cdi.Blank(d.dir, d.size); err != nil {
		return fmt.Errorf("blank disk: %w", err)
	}
	return nil
}

// importStream fills the claim with the image read from r, total bytes
// long (0 or less: unknown), and returns the bytes read. progress is told
// the share of total read; for a device, whose image is written after it
// has been read, reading is the first half (0 to 50) and writing the
// device the second (50 to 100), so the percentage never goes back.
func (d dest) importStream(ctx context.Context, r io.Reader, total int64, progress func(float64)) (int64, error) {
	if d.device == "" {
		return cdi.Import(ctx, d.dir, cdi.ProgressReader(r, total, progress), d.size)
	}
	return cdi.ImportStreamToDevice(ctx, d.device, d.scratch, cdi.ProgressReader(r, total, halfOf(progress, 0)), halfOf(progress, 50))
}

// importFile fills the claim with the image at path (only read), telling
// progress how far qemu-img has written it.
func (d dest) importFile(ctx context.Context, path string, progress func(float64)) error {
	if d.device == "" {
		return cdi.ImportFile(ctx, d.dir, path, d.size, progress)
	}
	return cdi.ImportToDevice(ctx, d.device, path, progress)
}

// halfOf reports a percentage to progress as half as much, from 'from'.
func halfOf(progress func(float64), from float64) func(float64) {
	return func(pct float64) { progress(from + pct/2) }
}
