package vm

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/conditions"
)

// Reasons this controller writes on VM conditions and events; the event
// reasons are KubeVirt's.
const (
	ReasonSuccessfulCreate = "SuccessfulCreate"
	ReasonFailedCreate     = "FailedCreate"
	ReasonSuccessfulDelete = "SuccessfulDelete"
	ReasonFailedDelete     = "FailedDelete"
	ReasonFailedUpdate     = "FailedUpdateError"

	reasonVMINotExists        = "VMINotExists"
	reasonVMIConditionMissing = "VMIConditionMissing"

	restartRequiredMessage = "a non-live-updatable field was changed in the template spec"
)

// syncError is a failure of this reconcile that the VM's Failure condition
// reports until a reconcile succeeds.
type syncError struct {
	reason string
	err    error
}

func (e *syncError) Error() string { return e.err.Error() }
func (e *syncError) Unwrap() error { return e.err }

// observation is what one reconcile saw and did, the input of nextStatus.
type observation struct {
	// vmi is the VMI after this reconcile's action; nil when there is none.
	vmi *virtv1.VirtualMachineInstance
	// strategy is the resolved run strategy; "" when the spec is invalid.
	strategy virtv1.VirtualMachineRunStrategy
	// failure is this reconcile's failure, if any.
	failure *syncError
	volumes volumeFacts
	now     time.Time
	// jitter randomises the back-off (rand.IntN).
	jitter func(int) int
}

// nextStatus computes the VM's status from its current status and what this
// reconcile observed. It is a pure function; the reconciler writes its
// result once.
func nextStatus(vm *virtv1.VirtualMachine, o observation) virtv1.VirtualMachineStatus {
	st := *vm.Status.DeepCopy()
	vmi := o.vmi
	st.Created = vmi != nil
	st.Ready = vmi != nil && hasVMICondition(vmi, virtv1.VirtualMachineInstanceReady, corev1.ConditionTrue, "")
	// Recorded from the first start on, so RerunOnFailure can tell
	// "finished" from "never started".
	if o.strategy != "" && (st.RunStrategy != "" || st.Created) {
		st.RunStrategy = o.strategy
	}
	if vmi != nil {
		if gen, ok := vmiGeneration(vmi); ok {
			st.ObservedGeneration = gen
			st.DesiredGeneration = vm.Generation
		}
	}
	st.StateChangeRequests = trimDoneRequests(st.StateChangeRequests, vmi)
	if o.strategy != "" {
		st.StartFailure = nextStartFailure(st.StartFailure, vmi, o.strategy, o.now, o.jitter)
	}

	now := metav1.NewTime(o.now)
	setReadyCondition(&st, vmi, now)
	if o.failure != nil {
		setCondition(&st, virtv1.VirtualMachineCondition{Type: virtv1.VirtualMachineFailure, Status: corev1.ConditionTrue,
			Reason: o.failure.reason, Message: o.failure.Error(), LastProbeTime: now, LastTransitionTime: now})
	} else {
		removeCondition(&st, virtv1.VirtualMachineFailure)
	}
	if restartRequired(vm, vmi) {
		setCondition(&st, virtv1.VirtualMachineCondition{Type: virtv1.VirtualMachineRestartRequired, Status: corev1.ConditionTrue,
			Message: restartRequiredMessage, LastProbeTime: now, LastTransitionTime: now})
	} else {
		removeCondition(&st, virtv1.VirtualMachineRestartRequired)
	}
	copyVMIConditions(&st, vmi)

	withStatus := vm.DeepCopy()
	withStatus.Status = st
	st.PrintableStatus = printableStatus(withStatus, vmi, o.strategy, o.volumes)
	return st
}

// restartRequired reports a running VMI whose VM template changed since it
// was created: the change takes effect on the next start.
func restartRequired(vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance) bool {
	if vmi == nil || vmi.IsFinal() || vmi.DeletionTimestamp != nil || vm.Spec.Template == nil {
		return false
	}
	hash, ok := vmi.Annotations[TemplateHashAnnotation]
	return ok && hash != templateHash(vm)
}

// conditionsOwnedByVM are the VM conditions this controller writes itself;
// every other condition mirrors one of the VMI.
var conditionsOwnedByVM = map[virtv1.VirtualMachineConditionType]bool{
	virtv1.VirtualMachineReady:           true,
	virtv1.VirtualMachineFailure:         true,
	virtv1.VirtualMachineRestartRequired: true,
}

// setReadyCondition mirrors the VMI's Ready condition, or says why there is
// none to mirror.
func setReadyCondition(st *virtv1.VirtualMachineStatus, vmi *virtv1.VirtualMachineInstance, now metav1.Time) {
	c := virtv1.VirtualMachineCondition{Type: virtv1.VirtualMachineReady, Status: corev1.ConditionFalse,
		Reason: reasonVMINotExists, Message: "VMI does not exist", LastProbeTime: now, LastTransitionTime: now}
	if vmi != nil {
		c.Reason, c.Message = reasonVMIConditionMissing, "VMI is missing the Ready condition"
		for _, vc := range vmi.Status.Conditions {
			if vc.Type == virtv1.VirtualMachineInstanceReady {
				c = fromVMICondition(vc)
			}
		}
	}
	setCondition(st, c)
}

// copyVMIConditions mirrors every other VMI condition onto the VM (Paused,
// PodScheduled, Synchronized, ...) and drops mirrored ones the VMI no longer
// has.
func copyVMIConditions(st *virtv1.VirtualMachineStatus, vmi *virtv1.VirtualMachineInstance) {
	onVMI := map[virtv1.VirtualMachineConditionType]bool{}
	if vmi != nil {
		for _, vc := range vmi.Status.Conditions {
			c := fromVMICondition(vc)
			if conditionsOwnedByVM[c.Type] {
				continue
			}
			onVMI[c.Type] = true
			setCondition(st, c)
		}
	}
	kept := st.Conditions[:0]
	for _, c := range st.Conditions {
		if conditionsOwnedByVM[c.Type] || onVMI[c.Type] {
			kept = append(kept, c)
		}
	}
	st.Conditions = kept
}

func fromVMICondition(c virtv1.VirtualMachineInstanceCondition) virtv1.VirtualMachineCondition {
	return virtv1.VirtualMachineCondition{
		Type:               virtv1.VirtualMachineConditionType(c.Type),
		Status:             c.Status,
		Reason:             c.Reason,
		Message:            c.Message,
		LastProbeTime:      c.LastProbeTime,
		LastTransitionTime: c.LastTransitionTime,
	}
}

func setCondition(st *virtv1.VirtualMachineStatus, c virtv1.VirtualMachineCondition) {
	st.Conditions = conditions.Set(st.Conditions, c, vmCondition)
}

func removeCondition(st *virtv1.VirtualMachineStatus, t virtv1.VirtualMachineConditionType) {
	st.Conditions = conditions.Remove(st.Conditions, string(t), vmCondition)
}

func vmCondition(c *virtv1.VirtualMachineCondition) (conditions.Fields, *metav1.Time) {
	return conditions.Fields{Type: string(c.Type), Status: c.Status, Reason: c.Reason, Message: c.Message}, &c.LastTransitionTime
}
