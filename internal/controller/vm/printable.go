package vm

import (
	corev1 "k8s.io/api/core/v1"
	virtv1 "kubevirt.io/api/core/v1"
)

// Reasons on VMI conditions that the printable status surfaces. KubeVirt's
// VMI controller writes them on the Synchronized condition; virtkube's writes
// the image pull reasons on Ready, so both are read.
const (
	reasonErrImagePull      = "ErrImagePull"
	reasonImagePullBackOff  = "ImagePullBackOff"
	reasonFailedPvcNotFound = "FailedPvcNotFound"
)

// volumeFacts is what the printable status needs to know about the volumes
// the VM's template refers to; the reconciler reads them from the cluster.
type volumeFacts struct {
	// DataVolumeError: a referenced DataVolume failed.
	DataVolumeError bool
	// Provisioning: a referenced DataVolume is still being populated.
	Provisioning bool
	// UnboundPVC: a referenced PersistentVolumeClaim is still Pending.
	UnboundPVC bool
}

// printableStatus is the one word `kubectl get vm` shows, derived as
// KubeVirt derives it: the statuses are not exclusive (a VM can be Running
// and Migrating), so they are tried in KubeVirt's order and the first that
// holds wins. vmi is the VMI after this reconcile's action (a VMI just
// deleted carries its deletion timestamp; one just created has no phase).
func printableStatus(vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, strategy virtv1.VirtualMachineRunStrategy, vols volumeFacts) virtv1.VirtualMachinePrintableStatus {
	exists := vmi != nil
	paused := exists && hasVMICondition(vmi, virtv1.VirtualMachineInstancePaused, corev1.ConditionTrue, "")
	checks := []struct {
		status virtv1.VirtualMachinePrintableStatus
		holds  bool
	}{
		{virtv1.VirtualMachineStatusTerminating, vm.DeletionTimestamp != nil},
		{virtv1.VirtualMachineStatusStopping, exists && !vmi.IsFinal() && vmi.DeletionTimestamp != nil},
		{virtv1.VirtualMachineStatusMigrating, exists && migrating(vmi)},
		{virtv1.VirtualMachineStatusPaused, exists && vmi.IsRunning() && paused},
		{virtv1.VirtualMachineStatusRunning, exists && vmi.IsRunning() && !paused},
		{virtv1.VirtualMachineStatusPvcNotFound, exists && vmiFalseBecause(vmi, reasonFailedPvcNotFound)},
		{virtv1.VirtualMachineStatusDataVolumeError, vols.DataVolumeError},
		{virtv1.VirtualMachineStatusUnschedulable, exists && hasVMICondition(vmi, virtv1.VirtualMachineInstanceConditionType(corev1.PodScheduled),
			corev1.ConditionFalse, corev1.PodReasonUnschedulable)},
		{virtv1.VirtualMachineStatusProvisioning, vols.Provisioning},
		{virtv1.VirtualMachineStatusWaitingForVolumeBinding, vols.UnboundPVC && setToRun(vm, vmi, strategy)},
		{virtv1.VirtualMachineStatusErrImagePull, exists && vmiFalseBecause(vmi, reasonErrImagePull)},
		{virtv1.VirtualMachineStatusImagePullBackOff, exists && vmiFalseBecause(vmi, reasonImagePullBackOff)},
		{virtv1.VirtualMachineStatusStarting, exists && (vmi.IsUnprocessed() || vmi.IsScheduling() || vmi.IsScheduled())},
		{virtv1.VirtualMachineStatusCrashLoopBackOff, (!exists || vmi.IsFinal()) && restartsOnFailure(strategy) &&
			vm.Status.StartFailure != nil && vm.Status.StartFailure.ConsecutiveFailCount > 0},
		{virtv1.VirtualMachineStatusStopped, !exists || vmi.IsFinal()},
	}
	for _, c := range checks {
		if c.holds {
			return c.status
		}
	}
	return virtv1.VirtualMachineStatusUnknown
}

// setToRun reports whether the strategy wants a VMI now; only then is an
// unbound PVC worth reporting.
func setToRun(vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, strategy virtv1.VirtualMachineRunStrategy) bool {
	var head *virtv1.VirtualMachineStateChangeRequest
	if len(vm.Status.StateChangeRequests) > 0 {
		head = &vm.Status.StateChangeRequests[0]
	}
	switch strategy {
	case virtv1.RunStrategyAlways:
		return true
	case virtv1.RunStrategyManual:
		if vmi != nil {
			return head == nil || head.Action != virtv1.StopRequest
		}
		return head != nil && head.Action == virtv1.StartRequest
	case virtv1.RunStrategyRerunOnFailure:
		return vmi == nil || vmi.Status.Phase != virtv1.Succeeded
	case virtv1.RunStrategyOnce:
		return vmi == nil
	default:
		return false
	}
}

// migrating reports a live migration in progress.
func migrating(vmi *virtv1.VirtualMachineInstance) bool {
	m := vmi.Status.MigrationState
	return m != nil && m.StartTimestamp != nil && m.EndTimestamp == nil && !m.Completed && !m.Failed
}

// hasVMICondition reports a condition of type t with status s (and reason,
// unless empty).
func hasVMICondition(vmi *virtv1.VirtualMachineInstance, t virtv1.VirtualMachineInstanceConditionType, s corev1.ConditionStatus, reason string) bool {
	for _, c := range vmi.Status.Conditions {
		if c.Type == t {
			return c.Status == s && (reason == "" || c.Reason == reason)
		}
	}
	return false
}

// vmiFalseBecause reports Synchronized or Ready False for reason.
func vmiFalseBecause(vmi *virtv1.VirtualMachineInstance, reason string) bool {
	return hasVMICondition(vmi, virtv1.VirtualMachineInstanceSynchronized, corev1.ConditionFalse, reason) ||
		hasVMICondition(vmi, virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, reason)
}
