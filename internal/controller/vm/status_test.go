package vm

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	virtv1 "kubevirt.io/api/core/v1"
)

func findCondition(st virtv1.VirtualMachineStatus, t virtv1.VirtualMachineConditionType) *virtv1.VirtualMachineCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

func TestNextStatusRunningVMI(t *testing.T) {
	vm := testVM(withRequests(start))
	vmi := newVMI(vm)
	vmi.UID = "vmi-uid"
	vmi.Status.Phase = virtv1.Running
	cond(virtv1.VirtualMachineInstanceReady, corev1.ConditionTrue, "")(vmi)
	cond("LiveMigratable", corev1.ConditionFalse, "NotMigratable")(vmi)
	vm.Status.Conditions = []virtv1.VirtualMachineCondition{{Type: "Paused", Status: corev1.ConditionTrue}}

	st := nextStatus(vm, observation{vmi: vmi, strategy: virtv1.RunStrategyAlways, now: now, jitter: noJitter})
	if !st.Created || !st.Ready || st.PrintableStatus != virtv1.VirtualMachineStatusRunning {
		t.Errorf("created %v ready %v printable %s; want true, true, Running", st.Created, st.Ready, st.PrintableStatus)
	}
	if st.RunStrategy != virtv1.RunStrategyAlways {
		t.Errorf("status.runStrategy %q, want Always once created", st.RunStrategy)
	}
	if st.ObservedGeneration != 3 || st.DesiredGeneration != 3 {
		t.Errorf("generations observed %d desired %d, want 3 and 3", st.ObservedGeneration, st.DesiredGeneration)
	}
	if len(st.StateChangeRequests) != 0 {
		t.Errorf("start request kept after the VMI runs: %+v", st.StateChangeRequests)
	}
	if c := findCondition(st, virtv1.VirtualMachineReady); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("Ready condition %+v, want True", c)
	}
	if c := findCondition(st, "LiveMigratable"); c == nil || c.Reason != "NotMigratable" {
		t.Errorf("LiveMigratable not copied from the VMI: %+v", c)
	}
	if c := findCondition(st, "Paused"); c != nil {
		t.Errorf("Paused condition kept though the VMI has none: %+v", c)
	}
	if c := findCondition(st, virtv1.VirtualMachineRestartRequired); c != nil {
		t.Errorf("RestartRequired with an unchanged template: %+v", c)
	}

	// The template changes under the running VMI.
	vm.Spec.Template.ObjectMeta.Labels["app"] = "other"
	st = nextStatus(vm, observation{vmi: vmi, strategy: virtv1.RunStrategyAlways, now: now, jitter: noJitter})
	if c := findCondition(st, virtv1.VirtualMachineRestartRequired); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("RestartRequired %+v, want True after a template change", c)
	}
}

func TestNextStatusStoppedVM(t *testing.T) {
	vm := testVM(withStrategy(virtv1.RunStrategyHalted), withRequests(stop("vmi-uid")))
	st := nextStatus(vm, observation{strategy: virtv1.RunStrategyHalted, now: now, jitter: noJitter})
	if st.Created || st.Ready || st.PrintableStatus != virtv1.VirtualMachineStatusStopped {
		t.Errorf("created %v ready %v printable %s; want false, false, Stopped", st.Created, st.Ready, st.PrintableStatus)
	}
	if st.RunStrategy != "" {
		t.Errorf("status.runStrategy %q before any start, want empty", st.RunStrategy)
	}
	if len(st.StateChangeRequests) != 0 {
		t.Errorf("stop request kept with no VMI: %+v", st.StateChangeRequests)
	}
	if c := findCondition(st, virtv1.VirtualMachineReady); c == nil || c.Reason != reasonVMINotExists {
		t.Errorf("Ready condition %+v, want False/VMINotExists", c)
	}
}

func TestNextStatusFailure(t *testing.T) {
	vm := testVM()
	st := nextStatus(vm, observation{failure: &syncError{reason: ReasonFailedCreate, err: errRunningAndRunStrategy}, now: now, jitter: noJitter})
	c := findCondition(st, virtv1.VirtualMachineFailure)
	if c == nil || c.Status != corev1.ConditionTrue || c.Reason != ReasonFailedCreate || c.Message != errRunningAndRunStrategy.Error() {
		t.Fatalf("Failure condition %+v", c)
	}
	vm.Status = st
	st = nextStatus(vm, observation{strategy: virtv1.RunStrategyAlways, now: now, jitter: noJitter})
	if c := findCondition(st, virtv1.VirtualMachineFailure); c != nil {
		t.Errorf("Failure condition kept after a clean reconcile: %+v", c)
	}
}

func TestNextStatusCrashLoop(t *testing.T) {
	vm := testVM()
	failed := testVMI(virtv1.Failed, deleting)
	st := nextStatus(vm, observation{vmi: failed, strategy: virtv1.RunStrategyAlways, now: now, jitter: noJitter})
	if st.StartFailure == nil || st.StartFailure.ConsecutiveFailCount != 1 || st.PrintableStatus != virtv1.VirtualMachineStatusCrashLoopBackOff {
		t.Errorf("start failure %+v printable %s; want one failure and CrashLoopBackOff", st.StartFailure, st.PrintableStatus)
	}
}

func TestNewVMI(t *testing.T) {
	vm := testVM(withRequests(virtv1.VirtualMachineStateChangeRequest{Action: virtv1.StartRequest,
		Data: map[string]string{virtv1.StartRequestDataPausedKey: virtv1.StartRequestDataPausedTrue}}))
	vmi := newVMI(vm)
	if vmi.Name != "vm1" || vmi.Namespace != "ns" {
		t.Errorf("VMI %s/%s, want ns/vm1", vmi.Namespace, vmi.Name)
	}
	if vmi.Labels["app"] != "web" || len(vmi.Labels) != 1 {
		t.Errorf("labels %v, want the template's only", vmi.Labels)
	}
	if vmi.Annotations["note"] != "x" || vmi.Annotations[virtv1.VirtualMachineGenerationAnnotation] != "3" || vmi.Annotations[TemplateHashAnnotation] != templateHash(vm) {
		t.Errorf("annotations %v", vmi.Annotations)
	}
	owner := vmi.OwnerReferences
	if len(owner) != 1 || owner[0].UID != vm.UID || owner[0].Kind != "VirtualMachine" || owner[0].Controller == nil || !*owner[0].Controller {
		t.Errorf("owner references %+v, want the VM as controller", owner)
	}
	if len(vmi.Finalizers) != 1 || vmi.Finalizers[0] != Finalizer {
		t.Errorf("finalizers %v, want %s", vmi.Finalizers, Finalizer)
	}
	if vmi.Spec.StartStrategy == nil || *vmi.Spec.StartStrategy != virtv1.StartStrategyPaused {
		t.Errorf("start strategy %v, want Paused for a paused start request", vmi.Spec.StartStrategy)
	}
	uuid := vmi.Spec.Domain.Firmware.UUID
	if len(uuid) != 36 || uuid[14] != '5' || uuid != newVMI(vm).Spec.Domain.Firmware.UUID {
		t.Errorf("firmware UUID %q, want a stable version 5 UUID", uuid)
	}
	other := testVM(func(vm *virtv1.VirtualMachine) { vm.UID = types.UID("other") })
	if newVMI(other).Spec.Domain.Firmware.UUID == uuid {
		t.Error("two VMs share a firmware UUID")
	}
	// The template is not changed by building a VMI from it.
	if vm.Spec.Template.Spec.Domain.Firmware != nil {
		t.Error("newVMI wrote into the VM's template")
	}
}
