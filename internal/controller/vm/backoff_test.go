package vm

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"
)

func noJitter(int) int { return 0 }

func maxJitter(n int) int { return n - 1 }

func TestBackOffDelay(t *testing.T) {
	tests := []struct {
		fails  int
		jitter func(int) int
		want   time.Duration
	}{
		{0, noJitter, 10 * time.Second},
		{1, noJitter, 10 * time.Second},
		{1, maxJitter, 15 * time.Second},
		{2, noJitter, 40 * time.Second},
		{2, maxJitter, 60 * time.Second},
		{3, noJitter, 90 * time.Second},
		{5, noJitter, 250 * time.Second},
		{5, maxJitter, 300 * time.Second},
		{6, noJitter, 300 * time.Second},
		{50, maxJitter, 300 * time.Second},
	}
	for _, tt := range tests {
		if got := backOffDelay(tt.fails, tt.jitter); got != tt.want {
			t.Errorf("backOffDelay(%d) = %s, want %s", tt.fails, got, tt.want)
		}
	}
}

func TestNextStartFailure(t *testing.T) {
	ran := func(vmi *virtv1.VirtualMachineInstance) {
		vmi.Status.PhaseTransitionTimestamps = []virtv1.VirtualMachineInstancePhaseTransitionTimestamp{{Phase: virtv1.Running}}
	}
	counted := &virtv1.VirtualMachineStartFailure{ConsecutiveFailCount: 2, LastFailedVMIUID: "vmi-uid",
		RetryAfterTimestamp: ptr.To(metav1.NewTime(now))}
	earlier := &virtv1.VirtualMachineStartFailure{ConsecutiveFailCount: 2, LastFailedVMIUID: "old",
		RetryAfterTimestamp: ptr.To(metav1.NewTime(now))}
	tests := []struct {
		name      string
		sf        *virtv1.VirtualMachineStartFailure
		vmi       *virtv1.VirtualMachineInstance
		strategy  virtv1.VirtualMachineRunStrategy
		wantCount int // 0: nil
		wantAfter time.Duration
	}{
		{"first early failure", nil, testVMI(virtv1.Failed), virtv1.RunStrategyAlways, 1, 10 * time.Second},
		{"second early failure", earlier, testVMI(virtv1.Failed), virtv1.RunStrategyAlways, 3, 90 * time.Second},
		{"same VMI counted once", counted, testVMI(virtv1.Failed, deleting), virtv1.RunStrategyAlways, 2, 0},
		{"a VMI that ran resets", counted, testVMI(virtv1.Failed, ran), virtv1.RunStrategyAlways, 0, 0},
		{"running resets", counted, testVMI(virtv1.Running), virtv1.RunStrategyRerunOnFailure, 0, 0},
		{"pending VMI keeps the count", earlier, testVMI(virtv1.Pending), virtv1.RunStrategyAlways, 2, 0},
		{"no VMI keeps the count", earlier, nil, virtv1.RunStrategyAlways, 2, 0},
		{"Manual never backs off", earlier, testVMI(virtv1.Failed), virtv1.RunStrategyManual, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := nextStartFailure(tt.sf, tt.vmi, tt.strategy, now, noJitter)
			if tt.wantCount == 0 {
				if got != nil {
					t.Errorf("start failure %+v, want none", got)
				}
				return
			}
			if got == nil || got.ConsecutiveFailCount != tt.wantCount {
				t.Fatalf("start failure %+v, want count %d", got, tt.wantCount)
			}
			if tt.wantAfter != 0 && (got.LastFailedVMIUID != "vmi-uid" || !got.RetryAfterTimestamp.Time.Equal(now.Add(tt.wantAfter))) {
				t.Errorf("start failure %+v, want retry after %s for vmi-uid", got, tt.wantAfter)
			}
		})
	}
}

func TestBackOffLeft(t *testing.T) {
	sf := &virtv1.VirtualMachineStartFailure{RetryAfterTimestamp: ptr.To(metav1.NewTime(now.Add(5 * time.Second)))}
	if got := backOffLeft(sf, now); got != 5*time.Second {
		t.Errorf("backOffLeft = %s, want 5s", got)
	}
	if got := backOffLeft(sf, now.Add(time.Minute)); got != 0 {
		t.Errorf("backOffLeft after the deadline = %s, want 0", got)
	}
	if got := backOffLeft(nil, now); got != 0 {
		t.Errorf("backOffLeft without failures = %s, want 0", got)
	}
}
