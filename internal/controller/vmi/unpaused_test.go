package vmi

import (
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"
)

func TestUnpausedCondition(t *testing.T) {
	now := metav1.NewTime(time.Unix(1000, 0))
	vmi := func(conds ...virtv1.VirtualMachineInstanceCondition) *virtv1.VirtualMachineInstance {
		return &virtv1.VirtualMachineInstance{Status: virtv1.VirtualMachineInstanceStatus{Phase: virtv1.Running, Conditions: conds}}
	}
	paused := func(s corev1.ConditionStatus) virtv1.VirtualMachineInstanceCondition {
		return virtv1.VirtualMachineInstanceCondition{Type: virtv1.VirtualMachineInstancePaused, Status: s, Reason: "PausedByUser"}
	}
	pod := func(conds ...corev1.PodCondition) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: append([]corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue}}, conds...)}}
	}
	gate := func(s corev1.ConditionStatus, reason string) corev1.PodCondition {
		return corev1.PodCondition{Type: "kubevirt.io/virtual-machine-unpaused", Status: s, Reason: reason}
	}
	for _, tc := range []struct {
		name        string
		vmi         *virtv1.VirtualMachineInstance
		pod         *corev1.Pod
		wantStatus  corev1.ConditionStatus
		wantReason  string
		wantMessage string
		wantWrite   bool
	}{
		{"new pod, running VMI", vmi(), pod(), corev1.ConditionTrue, "NotPaused", "the virtual machine is not paused", true},
		{"already True", vmi(), pod(gate(corev1.ConditionTrue, "NotPaused")), corev1.ConditionTrue, "NotPaused", "the virtual machine is not paused", false},
		{"paused VMI, gate True", vmi(paused(corev1.ConditionTrue)), pod(gate(corev1.ConditionTrue, "NotPaused")), corev1.ConditionFalse, "Paused", "the virtual machine is paused", true},
		{"paused VMI, gate already False", vmi(paused(corev1.ConditionTrue)), pod(gate(corev1.ConditionFalse, "Paused")), corev1.ConditionFalse, "Paused", "the virtual machine is paused", false},
		{"paused from the start, no gate condition yet", vmi(paused(corev1.ConditionTrue)), pod(), corev1.ConditionFalse, "Paused", "the virtual machine is paused", true},
		{"unpaused again", vmi(), pod(gate(corev1.ConditionFalse, "Paused")), corev1.ConditionTrue, "NotPaused", "the virtual machine is not paused", true},
		{"Paused condition False counts as running", vmi(paused(corev1.ConditionFalse)), pod(gate(corev1.ConditionFalse, "Paused")), corev1.ConditionTrue, "NotPaused", "the virtual machine is not paused", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, write := unpausedCondition(tc.vmi, tc.pod, now)
			if c.Type != virtv1.VirtualMachineUnpaused || c.Status != tc.wantStatus || c.Reason != tc.wantReason || c.Message != tc.wantMessage {
				t.Errorf("condition = %+v, want %s %s %q %q", c, virtv1.VirtualMachineUnpaused, tc.wantStatus, tc.wantReason, tc.wantMessage)
			}
			if write != tc.wantWrite {
				t.Errorf("write = %v, want %v", write, tc.wantWrite)
			}
			if !c.LastTransitionTime.Equal(&now) {
				t.Errorf("lastTransitionTime = %v, want %v", c.LastTransitionTime, now)
			}
		})
	}
}

// The patch carries the one condition (the API server merges pod conditions
// by type) and the pod's UID as a precondition, nothing else.
func TestUnpausedPatch(t *testing.T) {
	now := metav1.NewTime(time.Unix(1000, 0))
	cond, _ := unpausedCondition(&virtv1.VirtualMachineInstance{}, &corev1.Pod{}, now)
	body, err := unpausedPatch("uid-1", cond)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"metadata": map[string]any{"uid": "uid-1"},
		"status": map[string]any{"conditions": []any{map[string]any{
			"type": "kubevirt.io/virtual-machine-unpaused", "status": "True", "reason": "NotPaused",
			"message": "the virtual machine is not paused", "lastProbeTime": "1970-01-01T00:16:40Z", "lastTransitionTime": "1970-01-01T00:16:40Z",
		}}},
	}
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Errorf("patch = %s\nwant    %s", g, w)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
