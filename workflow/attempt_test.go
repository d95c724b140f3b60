package workflow

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestOutcome(t *testing.T) {
	t.Parallel()
	wake := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	failed := errors.New("boom")
	var (
		once       = &CompiledNode{MaxAttempts: 1}
		three      = &CompiledNode{MaxAttempts: 3, RetryDelay: 100 * time.Millisecond}
		backed     = &CompiledNode{MaxAttempts: 2, Fallback: "fb"}
		noDelay    = &CompiledNode{MaxAttempts: 2}
		backedOnce = &CompiledNode{MaxAttempts: 1, Fallback: "fb"}
	)
	tests := []struct {
		name     string
		node     *CompiledNode
		attempt  int
		err      error
		want     AttemptOutcome
		min, max time.Duration // bounds of the retry's jittered delay
	}{
		{name: "success", node: three, attempt: 1, want: AttemptOutcome{State: StepSucceeded}},
		{name: "success on the last attempt", node: three, attempt: 3, want: AttemptOutcome{State: StepSucceeded}},
		{name: "suspend keeps the attempt", node: once, attempt: 1, err: Suspend(wake),
			want: AttemptOutcome{State: StepSleeping, Attempt: 1, Wake: wake}},
		{name: "suspend on a later attempt", node: three, attempt: 2, err: Suspend(wake),
			want: AttemptOutcome{State: StepSleeping, Attempt: 2, Wake: wake}},
		{name: "wrapped suspend", node: once, attempt: 1, err: fmt.Errorf("node: %w", Suspend(wake)),
			want: AttemptOutcome{State: StepSleeping, Attempt: 1, Wake: wake}},
		{name: "suspend with attempts exhausted still sleeps", node: backedOnce, attempt: 1, err: Suspend(wake),
			want: AttemptOutcome{State: StepSleeping, Attempt: 1, Wake: wake}},
		{name: "first failure retries with the base delay", node: three, attempt: 1, err: failed,
			want: AttemptOutcome{State: StepRetrying, Attempt: 2}, min: 50 * time.Millisecond, max: 100 * time.Millisecond},
		{name: "second failure retries with the doubled delay", node: three, attempt: 2, err: failed,
			want: AttemptOutcome{State: StepRetrying, Attempt: 3}, min: 100 * time.Millisecond, max: 200 * time.Millisecond},
		{name: "retry without retryDelay is immediate", node: noDelay, attempt: 1, err: failed,
			want: AttemptOutcome{State: StepRetrying, Attempt: 2}},
		{name: "maxRetries counts every attempt", node: three, attempt: 3, err: failed,
			want: AttemptOutcome{State: StepFailed}},
		{name: "a single attempt fails at once", node: once, attempt: 1, err: failed,
			want: AttemptOutcome{State: StepFailed}},
		{name: "retries come before the fallback", node: backed, attempt: 1, err: failed,
			want: AttemptOutcome{State: StepRetrying, Attempt: 2}},
		{name: "exhausted with a fallback", node: backed, attempt: 2, err: failed,
			want: AttemptOutcome{State: StepAwaitingFallback, Fallback: "fb"}},
		{name: "single attempt with a fallback", node: backedOnce, attempt: 1, err: failed,
			want: AttemptOutcome{State: StepAwaitingFallback, Fallback: "fb"}},
		{name: "timeout is an ordinary failure", node: once, attempt: 1, err: context.DeadlineExceeded,
			want: AttemptOutcome{State: StepFailed}},
		{name: "panic is an ordinary failure", node: backed, attempt: 2, err: &panicError{Value: "x"},
			want: AttemptOutcome{State: StepAwaitingFallback, Fallback: "fb"}},
	}
	for _, tt := range tests {
		got := tt.node.Outcome(tt.attempt, tt.err)
		if got.Delay < tt.min || got.Delay > tt.max {
			t.Errorf("%s: Delay = %s, want within [%s, %s]", tt.name, got.Delay, tt.min, tt.max)
		}
		got.Delay = 0
		if got != tt.want {
			t.Errorf("%s: Outcome(%d, %v) = %+v, want %+v", tt.name, tt.attempt, tt.err, got, tt.want)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		base     time.Duration
		next     int
		min, max time.Duration
	}{
		{"no delay configured", 0, 2, 0, 0},
		{"first attempt has no delay", 100 * time.Millisecond, 1, 0, 0},
		{"second attempt: base with equal jitter", 100 * time.Millisecond, 2, 50 * time.Millisecond, 100 * time.Millisecond},
		{"third attempt doubles", 100 * time.Millisecond, 3, 100 * time.Millisecond, 200 * time.Millisecond},
		{"fourth attempt doubles again", 100 * time.Millisecond, 4, 200 * time.Millisecond, 400 * time.Millisecond},
		{"capped", 40 * time.Minute, 10, maxRetryDelay / 2, maxRetryDelay},
		{"base above the cap is capped", 3 * time.Hour, 2, maxRetryDelay / 2, maxRetryDelay},
		{"many attempts do not overflow", time.Millisecond, 1000, maxRetryDelay / 2, maxRetryDelay},
	}
	for _, tt := range tests {
		n := &CompiledNode{RetryDelay: tt.base}
		seen := map[time.Duration]bool{}
		for range 200 {
			d := n.retryDelayFor(tt.next)
			if d < tt.min || d > tt.max {
				t.Fatalf("%s: retryDelayFor(%d) = %s, want within [%s, %s]", tt.name, tt.next, d, tt.min, tt.max)
			}
			seen[d] = true
		}
		if tt.max > 0 && len(seen) < 2 {
			t.Errorf("%s: 200 delays were all %v; want jitter", tt.name, seen)
		}
	}
}
