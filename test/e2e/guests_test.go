package e2e

import (
	"testing"
	"time"

	"github.com/virtkube/virtkube/internal/handler"
	"github.com/virtkube/virtkube/test/containerdisk"
	"github.com/virtkube/virtkube/test/framework"
	"github.com/virtkube/virtkube/test/guest"
)

// testGuestImage pushes the test guest as a containerDisk to a registry on
// loopback, as the seed walkthrough test does, and lets the server emulate
// when this machine has no usable KVM.
func testGuestImage(t *testing.T, s *framework.Server, tag string) string {
	t.Helper()
	disk, err := guest.Disk()
	if err != nil {
		t.Fatal(err)
	}
	registry := containerdisk.StartRegistry(t)
	ref, err := containerdisk.Push(ctxT(t, 5*time.Minute), registry, "virtkube/test-guest", tag, disk)
	if err != nil {
		t.Fatal(err)
	}
	if handler.KVMUsable() != nil {
		kubectl(t, s, "", "patch", "kv", "kubevirt", "-n", "kubevirt", "--type=merge",
			"-p", `{"spec":{"configuration":{"developerConfiguration":{"useEmulation":true}}}}`)
	}
	return ref
}
