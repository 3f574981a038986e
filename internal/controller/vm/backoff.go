package vm

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"
)

// The start-failure back-off, with KubeVirt's figures: a VMI that ends
// before it ever ran counts as a failed start; the n-th failure in a row
// waits 10 s × n² plus up to half that again at random (so VMs that fail
// together do not retry together), never more than 5 minutes. Reaching
// Running resets the count.
const (
	backOffStep = 10 * time.Second
	backOffMax  = 300 * time.Second
)

// backOffDelay is how long to wait after the failCount-th failed start in a
// row. jitter(n) returns a number in [0, n); tests pass a fixed one.
func backOffDelay(failCount int, jitter func(n int) int) time.Duration {
	if failCount < 1 {
		failCount = 1
	}
	delay := backOffStep * time.Duration(failCount*failCount)
	if delay >= backOffMax {
		return backOffMax
	}
	seconds := int(delay / time.Second)
	delay += time.Duration(jitter(seconds/2+1)) * time.Second
	return min(delay, backOffMax)
}

// backOffLeft is how much of the back-off remains at now.
func backOffLeft(sf *virtv1.VirtualMachineStartFailure, now time.Time) time.Duration {
	if sf == nil || sf.RetryAfterTimestamp == nil {
		return 0
	}
	return max(sf.RetryAfterTimestamp.Sub(now), 0)
}

// restartsOnFailure reports whether strategy creates the VMI again by itself
// after it failed: only those strategies back off and can crash-loop.
func restartsOnFailure(strategy virtv1.VirtualMachineRunStrategy) bool {
	return strategy == virtv1.RunStrategyAlways || strategy == virtv1.RunStrategyRerunOnFailure
}

// everRan reports whether vmi reached Running at some point.
func everRan(vmi *virtv1.VirtualMachineInstance) bool {
	if vmi == nil {
		return false
	}
	if vmi.Status.Phase == virtv1.Running {
		return true
	}
	for _, t := range vmi.Status.PhaseTransitionTimestamps {
		if t.Phase == virtv1.Running {
			return true
		}
	}
	return false
}

// nextStartFailure counts vmi into the start-failure record sf: a VMI that
// ran clears it, as does a strategy that never restarts; a VMI that ended
// without running adds one failure (once per VMI) and sets when the next
// start may happen.
func nextStartFailure(sf *virtv1.VirtualMachineStartFailure, vmi *virtv1.VirtualMachineInstance,
	strategy virtv1.VirtualMachineRunStrategy, now time.Time, jitter func(int) int) *virtv1.VirtualMachineStartFailure {
	if everRan(vmi) || !restartsOnFailure(strategy) {
		return nil
	}
	if vmi == nil || !vmi.IsFinal() || (sf != nil && sf.LastFailedVMIUID == vmi.UID) {
		return sf
	}
	count := 1
	if sf != nil {
		count = sf.ConsecutiveFailCount + 1
	}
	retryAfter := metav1.NewTime(now.Add(backOffDelay(count, jitter)))
	return &virtv1.VirtualMachineStartFailure{
		ConsecutiveFailCount: count,
		LastFailedVMIUID:     vmi.UID,
		RetryAfterTimestamp:  &retryAfter,
	}
}
