// Package vmispec answers questions about a VirtualMachineInstance spec that
// several components ask the same way: how much memory the guest has, how
// many vCPUs, whether it gets a graphics device.
package vmispec

import (
	"crypto/sha1"
	"encoding/hex"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
)

// GuestMemory is the RAM the guest sees: spec.domain.memory.guest, else the
// memory request, else the memory limit.
func GuestMemory(vmi *virtv1.VirtualMachineInstance) (resource.Quantity, error) {
	d := vmi.Spec.Domain
	if d.Memory != nil && d.Memory.Guest != nil {
		return *d.Memory.Guest, nil
	}
	if q, ok := d.Resources.Requests[corev1.ResourceMemory]; ok {
		return q, nil
	}
	if q, ok := d.Resources.Limits[corev1.ResourceMemory]; ok {
		return q, nil
	}
	return resource.Quantity{}, field.Required(field.NewPath("spec", "domain", "resources", "requests", "memory"),
		"set the guest's memory here or in spec.domain.memory.guest")
}

// VCPUs is sockets × cores × threads, each at least 1.
func VCPUs(vmi *virtv1.VirtualMachineInstance) int {
	if c := vmi.Spec.Domain.CPU; c != nil {
		return int(max(c.Cores, 1) * max(c.Sockets, 1) * max(c.Threads, 1))
	}
	return 1
}

// GraphicsEnabled is true unless autoattachGraphicsDevice is false.
func GraphicsEnabled(vmi *virtv1.VirtualMachineInstance) bool {
	a := vmi.Spec.Domain.Devices.AutoattachGraphicsDevice
	return a == nil || *a
}

// IDLabelValue is the value of the vmi.kubevirt.io/id label KubeVirt puts
// on a VMI's launcher pod (and Services made by virtctl expose select on):
// the VMI's name, or for a name longer than a label value may be, a prefix
// and the first 8 hex digits of the name's SHA-1.
func IDLabelValue(name string) string {
	const maxLen, hashLen = 63, 8
	if len(name) <= maxLen {
		return name
	}
	sum := sha1.Sum([]byte(name))
	return name[:maxLen-hashLen-1] + "-" + hex.EncodeToString(sum[:])[:hashLen]
}
