package vm

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"
)

func cond(t virtv1.VirtualMachineInstanceConditionType, s corev1.ConditionStatus, reason string) func(*virtv1.VirtualMachineInstance) {
	return func(vmi *virtv1.VirtualMachineInstance) {
		vmi.Status.Conditions = append(vmi.Status.Conditions, virtv1.VirtualMachineInstanceCondition{Type: t, Status: s, Reason: reason})
	}
}

func TestPrintableStatus(t *testing.T) {
	crashing := func(vm *virtv1.VirtualMachine) {
		vm.Status.StartFailure = &virtv1.VirtualMachineStartFailure{ConsecutiveFailCount: 2}
	}
	vmDeleting := func(vm *virtv1.VirtualMachine) { vm.DeletionTimestamp = ptr.To(metav1.NewTime(now)) }
	migratingNow := func(vmi *virtv1.VirtualMachineInstance) {
		vmi.Status.MigrationState = &virtv1.VirtualMachineInstanceMigrationState{StartTimestamp: ptr.To(metav1.NewTime(now))}
	}
	tests := []struct {
		name string
		vm   *virtv1.VirtualMachine
		vmi  *virtv1.VirtualMachineInstance
		vols volumeFacts
		want virtv1.VirtualMachinePrintableStatus
	}{
		{"no VMI", testVM(withStrategy(virtv1.RunStrategyHalted)), nil, volumeFacts{}, virtv1.VirtualMachineStatusStopped},
		{"just created", testVM(), testVMI(""), volumeFacts{}, virtv1.VirtualMachineStatusStarting},
		{"scheduling", testVM(), testVMI(virtv1.Scheduling), volumeFacts{}, virtv1.VirtualMachineStatusStarting},
		{"scheduled", testVM(), testVMI(virtv1.Scheduled), volumeFacts{}, virtv1.VirtualMachineStatusStarting},
		{"running", testVM(), testVMI(virtv1.Running), volumeFacts{}, virtv1.VirtualMachineStatusRunning},
		{"paused", testVM(), testVMI(virtv1.Running, cond(virtv1.VirtualMachineInstancePaused, corev1.ConditionTrue, "PausedByUser")), volumeFacts{}, virtv1.VirtualMachineStatusPaused},
		{"stopping", testVM(), testVMI(virtv1.Running, deleting), volumeFacts{}, virtv1.VirtualMachineStatusStopping},
		{"deleted VMI that finished is stopped", testVM(), testVMI(virtv1.Succeeded, deleting), volumeFacts{}, virtv1.VirtualMachineStatusStopped},
		{"terminating wins", testVM(vmDeleting), testVMI(virtv1.Running, deleting), volumeFacts{}, virtv1.VirtualMachineStatusTerminating},
		{"migrating wins over running", testVM(), testVMI(virtv1.Running, migratingNow), volumeFacts{}, virtv1.VirtualMachineStatusMigrating},
		{"finished Manual VMI", testVM(withStrategy(virtv1.RunStrategyManual)), testVMI(virtv1.Succeeded), volumeFacts{}, virtv1.VirtualMachineStatusStopped},
		{"crash loop", testVM(crashing), nil, volumeFacts{}, virtv1.VirtualMachineStatusCrashLoopBackOff},
		{"crash loop with the failed VMI", testVM(crashing), testVMI(virtv1.Failed, deleting), volumeFacts{}, virtv1.VirtualMachineStatusCrashLoopBackOff},
		{"no crash loop for Halted", testVM(crashing, withStrategy(virtv1.RunStrategyHalted)), nil, volumeFacts{}, virtv1.VirtualMachineStatusStopped},
		{"unschedulable", testVM(), testVMI(virtv1.Scheduling, cond("PodScheduled", corev1.ConditionFalse, "Unschedulable")), volumeFacts{}, virtv1.VirtualMachineStatusUnschedulable},
		{"image pull error from Ready", testVM(), testVMI(virtv1.Scheduling, cond(virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, "ErrImagePull")), volumeFacts{}, virtv1.VirtualMachineStatusErrImagePull},
		{"image pull back-off from Synchronized", testVM(), testVMI(virtv1.Scheduling, cond(virtv1.VirtualMachineInstanceSynchronized, corev1.ConditionFalse, "ImagePullBackOff")), volumeFacts{}, virtv1.VirtualMachineStatusImagePullBackOff},
		{"PVC not found", testVM(), testVMI(virtv1.Pending, cond(virtv1.VirtualMachineInstanceSynchronized, corev1.ConditionFalse, "FailedPvcNotFound")), volumeFacts{}, virtv1.VirtualMachineStatusPvcNotFound},
		{"data volume error", testVM(), nil, volumeFacts{DataVolumeError: true}, virtv1.VirtualMachineStatusDataVolumeError},
		{"provisioning", testVM(), nil, volumeFacts{Provisioning: true}, virtv1.VirtualMachineStatusProvisioning},
		{"waiting for binding", testVM(), testVMI(virtv1.Scheduling), volumeFacts{UnboundPVC: true}, virtv1.VirtualMachineStatusWaitingForVolumeBinding},
		{"unbound PVC of a halted VM does not matter", testVM(withStrategy(virtv1.RunStrategyHalted)), nil, volumeFacts{UnboundPVC: true}, virtv1.VirtualMachineStatusStopped},
		{"running wins over an unbound PVC", testVM(), testVMI(virtv1.Running), volumeFacts{UnboundPVC: true}, virtv1.VirtualMachineStatusRunning},
		{"unknown phase", testVM(), testVMI(virtv1.Unknown), volumeFacts{}, virtv1.VirtualMachineStatusUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			strategy, err := runStrategy(tt.vm)
			if err != nil {
				t.Fatal(err)
			}
			if got := printableStatus(tt.vm, tt.vmi, strategy, tt.vols); got != tt.want {
				t.Errorf("printableStatus = %s, want %s", got, tt.want)
			}
		})
	}
}
