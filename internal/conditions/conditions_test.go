package conditions

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type cond struct {
	Type, Reason       string
	Status             corev1.ConditionStatus
	LastTransitionTime metav1.Time
}

func of(c *cond) (Fields, *metav1.Time) {
	return Fields{Type: c.Type, Status: c.Status, Reason: c.Reason}, &c.LastTransitionTime
}

func TestSetAndRemove(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	conds := Set(nil, cond{Type: "Ready", Status: corev1.ConditionFalse, Reason: "Starting", LastTransitionTime: t0}, of)
	conds = Set(conds, cond{Type: "Paused", Status: corev1.ConditionTrue, LastTransitionTime: t0}, of)
	// Same status, other reason: reason changes, transition time stays.
	conds = Set(conds, cond{Type: "Ready", Status: corev1.ConditionFalse, Reason: "Booting", LastTransitionTime: t1}, of)
	if len(conds) != 2 || conds[0].Reason != "Booting" || !conds[0].LastTransitionTime.Equal(&t0) {
		t.Fatalf("after a reason change: %+v", conds)
	}
	// New status: a transition.
	conds = Set(conds, cond{Type: "Ready", Status: corev1.ConditionTrue, LastTransitionTime: t1}, of)
	if conds[0].Status != corev1.ConditionTrue || !conds[0].LastTransitionTime.Equal(&t1) {
		t.Fatalf("after a status change: %+v", conds[0])
	}
	conds = Remove(conds, "Paused", of)
	if len(conds) != 1 || conds[0].Type != "Ready" {
		t.Fatalf("after Remove: %+v", conds)
	}
}
