package vm

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	virtv1 "kubevirt.io/api/core/v1"
)

// Finalizer is KubeVirt's VM controller finalizer. On the VM it holds the
// VM until its VMI is gone; on the VMI it holds the VMI until this
// controller has recorded how it ended (a VMI deleted by someone else would
// otherwise vanish before its failure counted).
const Finalizer = virtv1.VirtualMachineControllerFinalizer

// TemplateHashAnnotation on a VMI is the hash of the VM template it was
// created from. It tells whether the template changed since (the VM then
// shows RestartRequired) and whether a new VM generation may be recorded as
// observed without a restart, the job KubeVirt gives ControllerRevisions.
const TemplateHashAnnotation = "virtkube.io/vm-template-hash"

// templateHash identifies a VM template. The template is JSON-encoded in
// struct order, so equal templates hash equally.
func templateHash(vm *virtv1.VirtualMachine) string {
	body, err := json.Marshal(vm.Spec.Template)
	if err != nil {
		// A template that the API server stored always encodes.
		panic(fmt.Sprintf("encode VM template: %v", err))
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:8])
}

// newVMI is the VMI that runs vm, as KubeVirt builds it: the template's
// labels, annotations and spec, the VM's name and namespace, the VM as
// controller owner, and the VM controller finalizer. KubeVirt adds no label
// of its own (kubevirt.io/vm is a convention of templates, not set by the
// controller). On top it records the VM generation and template hash, asks
// for a paused start when the Start request at the head of the queue says
// so, and gives the guest a firmware UUID that stays the same across
// restarts of this VM.
func newVMI(vm *virtv1.VirtualMachine) *virtv1.VirtualMachineInstance {
	tmpl := vm.Spec.Template
	vmi := &virtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{
			Name:            vm.Name,
			Namespace:       vm.Namespace,
			Labels:          maps.Clone(tmpl.ObjectMeta.Labels),
			Annotations:     maps.Clone(tmpl.ObjectMeta.Annotations),
			Finalizers:      append(append([]string{}, tmpl.ObjectMeta.Finalizers...), Finalizer),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, virtv1.VirtualMachineGroupVersionKind)},
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	if vmi.Annotations == nil {
		vmi.Annotations = map[string]string{}
	}
	vmi.Annotations[virtv1.VirtualMachineGenerationAnnotation] = strconv.FormatInt(vm.Generation, 10)
	vmi.Annotations[TemplateHashAnnotation] = templateHash(vm)

	if startPausedRequested(vm) {
		paused := virtv1.StartStrategyPaused
		vmi.Spec.StartStrategy = &paused
	}
	if vmi.Spec.Domain.Firmware == nil {
		vmi.Spec.Domain.Firmware = &virtv1.Firmware{}
	}
	if vmi.Spec.Domain.Firmware.UUID == "" {
		vmi.Spec.Domain.Firmware.UUID = firmwareUUID(vm.UID)
	}
	return vmi
}

// startPausedRequested reports a Start request at the head of the queue
// asking for a paused start (`virtctl start --paused`).
func startPausedRequested(vm *virtv1.VirtualMachine) bool {
	reqs := vm.Status.StateChangeRequests
	return len(reqs) > 0 && reqs[0].Action == virtv1.StartRequest &&
		reqs[0].Data[virtv1.StartRequestDataPausedKey] == virtv1.StartRequestDataPausedTrue
}

// firmwareUUIDNamespace is the name space of firmware UUIDs (RFC 4122 §4.3):
// itself a fixed random UUID, so no other generator makes the same UUIDs.
var firmwareUUIDNamespace = [16]byte{0x6a, 0x1e, 0x5c, 0x0b, 0x3f, 0x2d, 0x4e, 0x8a, 0x9c, 0x41, 0x7d, 0x20, 0xb5, 0x63, 0xe8, 0x14}

// firmwareUUID is a name-based (version 5) UUID of the VM's UID: the guest
// sees the same SMBIOS UUID on every start, and two VMs never share one.
func firmwareUUID(vmUID types.UID) types.UID {
	h := sha1.New()
	h.Write(firmwareUUIDNamespace[:])
	h.Write([]byte(vmUID))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return types.UID(fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]))
}

// vmiGeneration is the VM generation recorded on vmi; ok is false when it
// carries none or a malformed one.
func vmiGeneration(vmi *virtv1.VirtualMachineInstance) (gen int64, ok bool) {
	s, found := vmi.Annotations[virtv1.VirtualMachineGenerationAnnotation]
	if !found {
		return 0, false
	}
	gen, err := strconv.ParseInt(s, 10, 64)
	return gen, err == nil
}
