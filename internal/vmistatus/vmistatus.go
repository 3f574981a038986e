// Package vmistatus changes a VirtualMachineInstance's status the way every
// writer of it must: phases record their transition time once, conditions
// keep their transition time while their status holds.
package vmistatus

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/conditions"
)

// SetPhase moves status to phase p, recording the transition.
func SetPhase(status *virtv1.VirtualMachineInstanceStatus, p virtv1.VirtualMachineInstancePhase, now metav1.Time) {
	if status.Phase == p {
		return
	}
	status.Phase = p
	status.PhaseTransitionTimestamps = append(status.PhaseTransitionTimestamps,
		virtv1.VirtualMachineInstancePhaseTransitionTimestamp{Phase: p, PhaseTransitionTimestamp: now})
}

// SetCondition puts c into status. An identical condition is left alone
// (its times too); one whose status did not change keeps its transition time.
func SetCondition(status *virtv1.VirtualMachineInstanceStatus, c virtv1.VirtualMachineInstanceCondition) {
	status.Conditions = conditions.Set(status.Conditions, c, vmiCondition)
}

func vmiCondition(c *virtv1.VirtualMachineInstanceCondition) (conditions.Fields, *metav1.Time) {
	return conditions.Fields{Type: string(c.Type), Status: c.Status, Reason: c.Reason, Message: c.Message}, &c.LastTransitionTime
}

// Condition builds a condition observed now.
func Condition(t virtv1.VirtualMachineInstanceConditionType, s corev1.ConditionStatus, reason, msg string, now metav1.Time) virtv1.VirtualMachineInstanceCondition {
	return virtv1.VirtualMachineInstanceCondition{Type: t, Status: s, Reason: reason, Message: msg, LastProbeTime: now, LastTransitionTime: now}
}
