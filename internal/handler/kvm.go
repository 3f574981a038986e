package handler

import (
	"errors"
	"os"
)

// ErrNoKVM says why this node cannot run a guest with KVM.
type ErrNoKVM struct{ Why string }

func (e *ErrNoKVM) Error() string { return e.Why }

// KVMUsable reports whether guests can run with KVM here. "/dev/kvm exists"
// is not enough: a nested PVM device (kvm_pvm) opens fine but cannot run
// ordinary guest kernels, so it counts as unusable.
func KVMUsable() error {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &ErrNoKVM{Why: "this node has no /dev/kvm"}
		}
		return &ErrNoKVM{Why: "/dev/kvm: " + err.Error()}
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return &ErrNoKVM{Why: "/dev/kvm on this node is a nested PVM device (kvm_pvm), which cannot run ordinary guest kernels"}
	}
	return nil
}
