package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// EventuallyInterval is how often Eventually checks its condition.
const EventuallyInterval = 5 * time.Millisecond

// Eventually checks cond every EventuallyInterval until it holds, and
// fails the test at once if it does not within timeout; what names the
// condition in that failure. Call it from the test's goroutine.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := Poll(t.Context(), timeout, EventuallyInterval, func() (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Poll checks cond every interval until it reports true, and returns nil
// then. It returns an error once within has passed, naming the last error
// cond reported, or when ctx ends. A cond error is not final: polling goes
// on, as for a service that does not answer yet.
func Poll(ctx context.Context, within, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if !time.Now().Before(deadline) {
			if last != nil {
				return fmt.Errorf("not within %s (last error: %w)", within, last)
			}
			return fmt.Errorf("not within %s", within)
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %w)", context.Cause(ctx), last)
			}
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
}
