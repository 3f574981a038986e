package vmi

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/vmistatus"
)

// Reasons this controller writes on a VMI.
const (
	ReasonPodNotExists = virtv1.PodNotExistsReason
	ReasonPodFailed    = "PodFailed"
	ReasonInvalidSpec  = "InvalidSpec"
	ReasonFailedCreate = "FailedCreate"
)

// imagePullReasons are container waiting reasons that mean the image cannot
// be had; KubeVirt surfaces them on the VM as ErrImagePull/ImagePullBackOff.
var imagePullReasons = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true,
}

// observe is what this controller derives for a VMI from its launcher pod:
// the next phase and the conditions that explain it. It is a pure function;
// the reconciler writes its result.
type observation struct {
	Phase      virtv1.VirtualMachineInstancePhase
	NodeName   string
	Reason     string
	Conditions []virtv1.VirtualMachineInstanceCondition
}

// observe computes the controller's view of vmi given its launcher pod (nil
// when there is none). Phases from Scheduled on belong to virt-handler; here
// they change only when the pod fails under the VMI.
func observe(vmi *virtv1.VirtualMachineInstance, pod *corev1.Pod, now metav1.Time) observation {
	o := observation{Phase: vmi.Status.Phase, NodeName: vmi.Status.NodeName, Reason: vmi.Status.Reason}
	if o.Phase == "" {
		o.Phase = virtv1.Pending
	}
	if vmi.IsFinal() {
		return o
	}
	if pod == nil {
		switch o.Phase {
		case virtv1.Pending:
		default:
			o.Phase, o.Reason = virtv1.Failed, ReasonPodNotExists
			o.Conditions = append(o.Conditions, vmistatus.Condition(virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse,
				ReasonPodNotExists, "the launcher pod is gone", now))
		}
		return o
	}
	if o.Phase == virtv1.Pending {
		o.Phase = virtv1.Scheduling
	}

	// PodScheduled is mirrored as KubeVirt mirrors it.
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			o.Conditions = append(o.Conditions, virtv1.VirtualMachineInstanceCondition{
				Type:               virtv1.VirtualMachineInstanceConditionType(corev1.PodScheduled),
				Status:             c.Status,
				Reason:             c.Reason,
				Message:            c.Message,
				LastProbeTime:      now,
				LastTransitionTime: c.LastTransitionTime,
			})
		}
	}

	// A launcher that exits 0 under a running VMI has seen its guest power
	// off: virt-handler reports that as Succeeded. Any other end of the pod
	// fails the VMI.
	handedOver := o.Phase == virtv1.Running || o.Phase == virtv1.Scheduled
	if pod.Status.Phase == corev1.PodFailed || (pod.Status.Phase == corev1.PodSucceeded && !handedOver) {
		reason, msg := podFailure(pod)
		o.Phase, o.Reason = virtv1.Failed, reason
		o.Conditions = append(o.Conditions, vmistatus.Condition(virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, reason, msg, now))
		return o
	}
	if o.Phase != virtv1.Scheduling {
		return o
	}
	if reason, msg, waiting := waitingContainer(pod); waiting {
		o.Conditions = append(o.Conditions, vmistatus.Condition(virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, reason, msg, now))
		return o
	}
	if handoverReady(pod) {
		o.Phase, o.NodeName = virtv1.Scheduled, pod.Spec.NodeName
		o.Conditions = append(o.Conditions, vmistatus.Condition(virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse,
			virtv1.GuestNotRunningReason, "the guest is not running yet", now))
		return o
	}
	o.Conditions = append(o.Conditions, vmistatus.Condition(virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse,
		virtv1.GuestNotRunningReason, "waiting for the launcher pod to start", now))
	return o
}

// handoverReady reports whether the pod is ready to be handed to
// virt-handler, KubeVirt's rule: the pod runs and is not going away, its
// compute container runs and every other container is ready. The pod's own
// Ready is not asked: the compute container's readiness and the pod's
// virtual-machine-unpaused readiness gate follow the guest, which only
// virt-handler starts.
func handoverReady(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || !pod.DeletionTimestamp.IsZero() {
		return false
	}
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == ComputeContainer {
			if s.State.Running == nil {
				return false
			}
		} else if !s.Ready {
			return false
		}
	}
	return true
}

// waitingContainer reports the first container that cannot start because of
// its image, its configuration or its volumes, with the reason and message
// of kubelet (or of the local node runtime).
func waitingContainer(pod *corev1.Pod) (reason, msg string, ok bool) {
	statuses := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, s := range statuses {
		w := s.State.Waiting
		if w == nil {
			continue
		}
		// ContainerCreating says why only when something is in the way
		// (e.g. a Secret of a volume that does not exist).
		blocked := w.Reason == "ContainerCreating" && w.Message != ""
		if imagePullReasons[w.Reason] || w.Reason == "CreateContainerConfigError" || w.Reason == "CreateContainerError" || blocked {
			return w.Reason, fmt.Sprintf("container %s: %s", s.Name, w.Message), true
		}
	}
	return "", "", false
}

// podFailure explains why a pod ended: a terminated container's reason and
// message, else the pod's own.
func podFailure(pod *corev1.Pod) (reason, msg string) {
	statuses := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	sort.SliceStable(statuses, func(i, j int) bool {
		return statuses[i].Name == ComputeContainer && statuses[j].Name != ComputeContainer
	})
	for _, s := range statuses {
		if t := s.State.Terminated; t != nil && (t.ExitCode != 0 || t.Reason != "Completed") {
			reason := t.Reason
			if reason == "" {
				reason = ReasonPodFailed
			}
			return reason, fmt.Sprintf("container %s exited with code %d: %s", s.Name, t.ExitCode, t.Message)
		}
	}
	if pod.Status.Reason != "" {
		return pod.Status.Reason, pod.Status.Message
	}
	return ReasonPodFailed, fmt.Sprintf("launcher pod %s is %s", pod.Name, pod.Status.Phase)
}

// apply writes o into status, keeping transition times of conditions that
// did not change and recording phase transitions.
func apply(status *virtv1.VirtualMachineInstanceStatus, o observation, now metav1.Time) {
	if status.Phase != o.Phase {
		if status.Phase == "" && o.Phase != virtv1.Pending {
			// The VMI passed through Pending within this one reconcile.
			status.PhaseTransitionTimestamps = append(status.PhaseTransitionTimestamps,
				virtv1.VirtualMachineInstancePhaseTransitionTimestamp{Phase: virtv1.Pending, PhaseTransitionTimestamp: now})
		}
		status.PhaseTransitionTimestamps = append(status.PhaseTransitionTimestamps,
			virtv1.VirtualMachineInstancePhaseTransitionTimestamp{Phase: o.Phase, PhaseTransitionTimestamp: now})
		status.Phase = o.Phase
	}
	status.NodeName, status.Reason = o.NodeName, o.Reason
	for _, c := range o.Conditions {
		vmistatus.SetCondition(status, c)
	}
}
