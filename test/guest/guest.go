// Package guest provides the test guest: a tiny bootable disk and CD built by
// hack/test-guest/build.sh from Debian packages. It prints markers on its
// serial console, reads cloud-init user data, takes an address by DHCP and
// serves HTTP on port 80.
package guest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Console lines the guest prints.
const (
	ReadyMarker    = "VIRTKUBE-TEST-GUEST-READY"
	PoweroffMarker = "GUEST-POWEROFF"
	// BootedFromDisk and BootedFromISO follow ReadyMarker when the guest
	// was booted by the bootloader on Disk() or on ISO().
	BootedFromDisk = "BOOTED-FROM disk"
	BootedFromISO  = "BOOTED-FROM iso"
	// UserMarkerPrefix precedes the value of a `virtkube-marker: VALUE`
	// line in user data.
	UserMarkerPrefix = "VIRTKUBE-MARKER: "
	// HTTPBody is what the guest serves at / on port 80.
	HTTPBody = "virtkube test guest\n"
)

// outputs are the files build.sh writes. A directory that lacks one (made by
// an older build.sh) is built again.
var outputs = []string{"disk.img", "disk.qcow2", "disk.iso", "vmlinuz", "initrd.img"}

var (
	once     sync.Once
	buildErr error
	outDir   string
)

// Disk returns the path of the raw test guest disk (MBR, SYSLINUX), building
// the guest on first use under <repo>/_output/test-guest (or
// $VIRTKUBE_TEST_GUEST_DIR). Callers must not write to it: boot it through
// an overlay.
func Disk() (string, error) { return output("disk.img") }

// ISO returns the path of the test guest's bootable CD image (ISO9660,
// ISOLINUX by El Torito) holding the same kernel and initramfs as Disk(),
// building the guest on first use. The BIOS loads both, so it boots from a
// SATA CD-ROM although the guest's kernel has no SATA driver; it prints
// BootedFromISO after ReadyMarker.
func ISO() (string, error) { return output("disk.iso") }

func output(name string) (string, error) {
	once.Do(build)
	if buildErr != nil {
		return "", buildErr
	}
	return filepath.Join(outDir, name), nil
}

// build runs build.sh unless the output directory has all its outputs.
func build() {
	root, err := repoRoot()
	if err != nil {
		buildErr = err
		return
	}
	out := os.Getenv("VIRTKUBE_TEST_GUEST_DIR")
	if out == "" {
		out = filepath.Join(root, "_output", "test-guest")
	}
	// Test binaries of several packages run at once: one builds, the
	// others wait for it.
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		buildErr = err
		return
	}
	lock, err := os.OpenFile(out+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		buildErr = err
		return
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		buildErr = err
		return
	}
	outDir = out
	if complete(out) {
		return
	}
	cmd := exec.Command(filepath.Join(root, "hack", "test-guest", "build.sh"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("hack/test-guest/build.sh: %w\n%s", err, b)
		return
	}
	if !complete(out) {
		buildErr = fmt.Errorf("hack/test-guest/build.sh did not write all of %v into %s", outputs, out)
	}
}

func complete(dir string) bool {
	for _, name := range outputs {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return false
		}
	}
	return true
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}
