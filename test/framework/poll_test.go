package framework

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The error names what cond last said before the deadline, not the
// deadline error of an attempt cut short by it.
func TestPollKeepsTheReasonBeforeTheDeadline(t *testing.T) {
	err := Poll(context.Background(), 200*time.Millisecond, 10*time.Millisecond, func(ctx context.Context) (bool, string) {
		select {
		case <-ctx.Done():
			return false, ctx.Err().Error()
		case <-time.After(30 * time.Millisecond):
			return false, "phase is Pending"
		}
	})
	if err == nil || !strings.Contains(err.Error(), "phase is Pending") {
		t.Errorf("error %v, want the last reason before the deadline", err)
	}
	if err := Poll(context.Background(), time.Second, time.Millisecond, func(context.Context) (bool, string) { return true, "" }); err != nil {
		t.Errorf("a met condition: %v", err)
	}
}
