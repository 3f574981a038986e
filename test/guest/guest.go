// Package guest provides the test guest: a tiny bootable disk built by
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
	// UserMarkerPrefix precedes the value of a `virtkube-marker: VALUE`
	// line in user data.
	UserMarkerPrefix = "VIRTKUBE-MARKER: "
	// HTTPBody is what the guest serves at / on port 80.
	HTTPBody = "virtkube test guest\n"
)

var (
	once    sync.Once
	diskErr error
	disk    string
)

// Disk returns the path of the raw test guest disk, building it on first
// use under <repo>/_output/test-guest (or $VIRTKUBE_TEST_GUEST_DIR).
// Callers must not write to it: boot it through an overlay.
func Disk() (string, error) {
	once.Do(func() {
		root, err := repoRoot()
		if err != nil {
			diskErr = err
			return
		}
		out := os.Getenv("VIRTKUBE_TEST_GUEST_DIR")
		if out == "" {
			out = filepath.Join(root, "_output", "test-guest")
		}
		disk = filepath.Join(out, "disk.img")
		// Test binaries of several packages run at once: one builds, the
		// others wait for it.
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			diskErr = err
			return
		}
		lock, err := os.OpenFile(out+".lock", os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			diskErr = err
			return
		}
		defer lock.Close()
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			diskErr = err
			return
		}
		if _, err := os.Stat(disk); err == nil {
			return
		}
		cmd := exec.Command(filepath.Join(root, "hack", "test-guest", "build.sh"), out)
		if b, err := cmd.CombinedOutput(); err != nil {
			diskErr = fmt.Errorf("hack/test-guest/build.sh: %w\n%s", err, b)
		}
	})
	return disk, diskErr
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}
