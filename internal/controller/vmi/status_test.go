package vmi

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/vmistatus"
)

func TestObserve(t *testing.T) {
	now := metav1.NewTime(time.Unix(1000, 0))
	scheduled := func(p *corev1.Pod) *corev1.Pod {
		p.Spec.NodeName = "node1"
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue})
		return p
	}
	running := func(p *corev1.Pod) *corev1.Pod {
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
		return p
	}
	// The pod runs with its containers but is not Ready: the unpaused
	// readiness gate's condition is not written yet.
	gated := func(p *corev1.Pod) *corev1.Pod {
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = []corev1.ContainerStatus{
			{Name: "compute", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
			{Name: "volumeroot", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
		}
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse,
			Reason: "ReadinessGatesNotReady", Message: `corresponding condition of pod readiness gate "kubevirt.io/virtual-machine-unpaused" does not exist.`})
		return p
	}
	sidecarStarting := func(p *corev1.Pod) *corev1.Pod {
		p.Status.ContainerStatuses[1].Ready = false
		return p
	}
	deleting := func(p *corev1.Pod) *corev1.Pod {
		p.DeletionTimestamp = &now
		return p
	}
	pod := func(mutate ...func(*corev1.Pod) *corev1.Pod) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-x-abcde"}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
		for _, m := range mutate {
			p = m(p)
		}
		return p
	}
	waiting := func(reason string) func(*corev1.Pod) *corev1.Pod {
		return func(p *corev1.Pod) *corev1.Pod {
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
				Name: "volumecontainerdisk", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "pull failed"}},
			})
			return p
		}
	}
	failed := func(p *corev1.Pod) *corev1.Pod {
		p.Status.Phase = corev1.PodFailed
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "compute", State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error", Message: "libvirt failed"}}}}
		return p
	}
	for _, tc := range []struct {
		name       string
		phase      virtv1.VirtualMachineInstancePhase
		pod        *corev1.Pod
		wantPhase  virtv1.VirtualMachineInstancePhase
		wantNode   string
		wantReady  string // reason of the Ready condition, "" for none
		wantReason string
	}{
		{"new VMI, no pod yet", "", nil, virtv1.Pending, "", "", ""},
		{"pod created", virtv1.Pending, pod(), virtv1.Scheduling, "", virtv1.GuestNotRunningReason, ""},
		{"pod scheduled, starting", virtv1.Scheduling, pod(scheduled), virtv1.Scheduling, "", virtv1.GuestNotRunningReason, ""},
		{"image cannot be pulled", virtv1.Scheduling, pod(scheduled, waiting("ErrImagePull")), virtv1.Scheduling, "", "ErrImagePull", ""},
		{"image back-off", virtv1.Scheduling, pod(scheduled, waiting("ImagePullBackOff")), virtv1.Scheduling, "", "ImagePullBackOff", ""},
		{"a volume cannot be set up (a message while ContainerCreating)", virtv1.Scheduling, pod(scheduled, waiting("ContainerCreating")), virtv1.Scheduling, "", "ContainerCreating", ""},
		{"pod running and ready", virtv1.Scheduling, pod(scheduled, running), virtv1.Scheduled, "node1", virtv1.GuestNotRunningReason, ""},
		{"pod running, unready by its readiness gate", virtv1.Scheduling, pod(scheduled, gated), virtv1.Scheduled, "node1", virtv1.GuestNotRunningReason, ""},
		{"a container other than compute not ready", virtv1.Scheduling, pod(scheduled, gated, sidecarStarting), virtv1.Scheduling, "", virtv1.GuestNotRunningReason, ""},
		{"pod going away", virtv1.Scheduling, pod(scheduled, gated, deleting), virtv1.Scheduling, "", virtv1.GuestNotRunningReason, ""},
		{"pod failed before handover", virtv1.Scheduling, pod(scheduled, failed), virtv1.Failed, "", "Error", "Error"},
		{"pod failed under a running VMI", virtv1.Running, pod(scheduled, failed), virtv1.Failed, "", "Error", "Error"},
		{"pod vanished", virtv1.Scheduled, nil, virtv1.Failed, "", ReasonPodNotExists, ReasonPodNotExists},
		{"running VMI is the handler's", virtv1.Running, pod(scheduled, running), virtv1.Running, "", "", ""},
		{"launcher done after guest poweroff", virtv1.Running, pod(scheduled, func(p *corev1.Pod) *corev1.Pod { p.Status.Phase = corev1.PodSucceeded; return p }), virtv1.Running, "", "", ""},
		{"final stays final", virtv1.Succeeded, nil, virtv1.Succeeded, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vmi := &virtv1.VirtualMachineInstance{Status: virtv1.VirtualMachineInstanceStatus{Phase: tc.phase}}
			o := observe(vmi, tc.pod, now)
			if o.Phase != tc.wantPhase || o.NodeName != tc.wantNode || o.Reason != tc.wantReason {
				t.Errorf("phase/node/reason = %s/%q/%q, want %s/%q/%q", o.Phase, o.NodeName, o.Reason, tc.wantPhase, tc.wantNode, tc.wantReason)
			}
			ready := ""
			for _, c := range o.Conditions {
				if c.Type == virtv1.VirtualMachineInstanceReady {
					ready = c.Reason
				}
			}
			if ready != tc.wantReady {
				t.Errorf("Ready reason = %q, want %q", ready, tc.wantReady)
			}
		})
	}
}

func TestApplyRecordsTransitionsOnce(t *testing.T) {
	t0, t1 := metav1.NewTime(time.Unix(1, 0)), metav1.NewTime(time.Unix(2, 0))
	var status virtv1.VirtualMachineInstanceStatus
	apply(&status, observation{Phase: virtv1.Scheduling, Conditions: []virtv1.VirtualMachineInstanceCondition{
		vmistatus.Condition(virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, "ErrImagePull", "x", t0)}}, t0)
	if len(status.PhaseTransitionTimestamps) != 2 || status.PhaseTransitionTimestamps[0].Phase != virtv1.Pending {
		t.Fatalf("transitions = %+v, want Pending then Scheduling", status.PhaseTransitionTimestamps)
	}
	apply(&status, observation{Phase: virtv1.Scheduling, Conditions: []virtv1.VirtualMachineInstanceCondition{
		vmistatus.Condition(virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, "ErrImagePull", "x", t1)}}, t1)
	if len(status.PhaseTransitionTimestamps) != 2 {
		t.Errorf("an unchanged phase added a transition: %+v", status.PhaseTransitionTimestamps)
	}
	if c := status.Conditions[0]; !c.LastProbeTime.Equal(&t0) {
		t.Errorf("an unchanged condition was rewritten: %+v", c)
	}
}
