package framework

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Eventually polls cond every interval until it returns true or timeout
// passes; then it fails t with the last reason cond gave.
func Eventually(t testing.TB, timeout, interval time.Duration, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	if err := Poll(context.Background(), timeout, interval, cond); err != nil {
		t.Fatal(err)
	}
}

// Poll is Eventually without a testing.TB: it returns an error carrying the
// last reason instead of failing. That is the last reason cond gave before
// the deadline: an attempt the deadline cut short mostly says only "context
// deadline exceeded", which would hide why the condition was not met.
func Poll(ctx context.Context, timeout, interval time.Duration, cond func(ctx context.Context) (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var why string
	for {
		ok, reason := cond(ctx)
		if ok {
			return nil
		}
		if ctx.Err() == nil || why == "" {
			why = reason
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("condition not met within %s: %s", timeout, why)
		case <-tick.C:
		}
	}
}
