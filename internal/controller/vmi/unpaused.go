package vmi

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The launcher pod's kubevirt.io/virtual-machine-unpaused condition, with
// KubeVirt's reasons and messages. The pod's readiness gate on it makes
// kubelet (or the local node runtime) drop a paused VM's pod from Ready, and
// with it from its Services' endpoints.
const (
	ReasonUnpaused  = "NotPaused"
	MessageUnpaused = "the virtual machine is not paused"
	ReasonPaused    = "Paused"
	MessagePaused   = "the virtual machine is paused"
)

// unpausedCondition is the virtual-machine-unpaused condition pod should get
// for vmi, and whether the pod's current one differs: True while the VMI has
// no Paused=True condition, False while it has. As in KubeVirt, only the
// status counts, so a condition already True (or False) is left alone.
func unpausedCondition(vmi *virtv1.VirtualMachineInstance, pod *corev1.Pod, now metav1.Time) (corev1.PodCondition, bool) {
	want := corev1.PodCondition{
		Type:   virtv1.VirtualMachineUnpaused,
		Status: corev1.ConditionTrue, Reason: ReasonUnpaused, Message: MessageUnpaused,
		LastProbeTime: now, LastTransitionTime: now,
	}
	if vmiPaused(vmi) {
		want.Status, want.Reason, want.Message = corev1.ConditionFalse, ReasonPaused, MessagePaused
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == want.Type {
			return want, c.Status != want.Status
		}
	}
	return want, true
}

func vmiPaused(vmi *virtv1.VirtualMachineInstance) bool {
	for _, c := range vmi.Status.Conditions {
		if c.Type == virtv1.VirtualMachineInstancePaused {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// syncUnpausedCondition keeps the launcher pod's virtual-machine-unpaused
// condition in step with the VMI. pod is the cached pod: nothing is written
// when it already has the right status. The write is a strategic merge
// patch of the status subresource carrying this one condition, so the
// conditions of the node agent (Ready, ContainersReady, ...) stay as they
// are: the API server merges pod conditions by type.
func (r *Reconciler) syncUnpausedCondition(ctx context.Context, vmi *virtv1.VirtualMachineInstance, pod *corev1.Pod) error {
	if pod == nil || !pod.DeletionTimestamp.IsZero() || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	cond, changed := unpausedCondition(vmi, pod, r.Now())
	if !changed {
		return nil
	}
	patch, err := unpausedPatch(pod.UID, cond)
	if err != nil {
		return err
	}
	if err := r.Client.Status().Patch(ctx, pod, client.RawPatch(types.StrategicMergePatchType, patch)); err != nil {
		return fmt.Errorf("set condition %s of launcher pod %s: %w", cond.Type, pod.Name, err)
	}
	klog.FromContext(ctx).V(2).Info("launcher pod condition set", "pod", klog.KObj(pod),
		"condition", cond.Type, "status", cond.Status)
	return nil
}

// unpausedPatch is the strategic merge patch that sets cond on the pod
// with uid; the uid precondition keeps it off a pod recreated under the same
// name.
func unpausedPatch(uid types.UID, cond corev1.PodCondition) ([]byte, error) {
	type status struct {
		Conditions []corev1.PodCondition `json:"conditions"`
	}
	type meta struct {
		UID types.UID `json:"uid"`
	}
	body, err := json.Marshal(struct {
		Metadata meta   `json:"metadata"`
		Status   status `json:"status"`
	}{meta{uid}, status{[]corev1.PodCondition{cond}}})
	if err != nil {
		return nil, fmt.Errorf("encode pod condition patch: %w", err)
	}
	return body, nil
}
