// Package vmistatus changes a VirtualMachineInstance's status the way every
// writer of it must: phases record their transition time once, conditions
// keep their transition time while their status holds.
package vmistatus

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

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

// Write patches vmi's status when it differs from before's (before nil:
// always), with optimistic locking, since virt-controller and virt-handler
// both write it. A conflict means a newer VMI is on its way through the
// writer's watch, which brings the VMI back to it, and a VMI that is gone
// needs no status: neither is an error (an error would only add back-off).
func Write(ctx context.Context, c client.Client, before, vmi *virtv1.VirtualMachineInstance) error {
	if before != nil && equality.Semantic.DeepEqual(before.Status, vmi.Status) {
		return nil
	}
	base := before
	if base == nil {
		base = &virtv1.VirtualMachineInstance{}
		vmi.ObjectMeta.DeepCopyInto(&base.ObjectMeta)
	}
	patch := client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})
	err := c.Status().Patch(ctx, vmi, patch)
	switch {
	case apierrors.IsConflict(err):
		klog.FromContext(ctx).V(2).Info("status changed meanwhile; waiting for the newer VMI")
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}
