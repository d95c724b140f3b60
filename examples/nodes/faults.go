package nodes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stepflow/stepflow/workflow"
)

// Bounds of the fault nodes' params.
const (
	MaxFlakyFailures = 1000
	MaxSlowMillis    = 60 * 60 * 1000 // an hour
)

// DefaultFailMessage is the error of a fail node without params.message.
const DefaultFailMessage = "failed on purpose"

// flaky fails its first params.failures attempts, then passes its input
// through. It counts by the attempt number the runtime hands it, not by
// state of its own, so it behaves the same whichever process runs which
// attempt.
func flaky(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	failures, err := requiredInt(in.Params, "failures", 0, MaxFlakyFailures)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("flaky: params.%w", err)
	}
	attempt := max(in.Attempt, 1)
	if attempt <= failures {
		return workflow.NodeResult{}, fmt.Errorf("flaky: attempt %d of %d planned failures", attempt, failures)
	}
	return workflow.NodeResult{Output: in.Input}, nil
}

func checkFlakyParams(p map[string]any) error {
	_, err := requiredInt(p, "failures", 0, MaxFlakyFailures)
	return err
}

// slow holds its attempt for params.ms milliseconds, then passes its input
// through. Unlike the built-in sleep node it keeps the worker busy, which
// is what a test of node timeouts and cancellation needs; it gives up as
// soon as ctx is done.
func slow(ctx context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	ms, err := requiredInt(in.Params, "ms", 0, MaxSlowMillis)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("slow: params.%w", err)
	}
	if err := ctx.Err(); err != nil {
		return workflow.NodeResult{}, fmt.Errorf("slow: cancelled before waiting %dms: %w", ms, err)
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return workflow.NodeResult{}, fmt.Errorf("slow: cancelled while waiting %dms: %w", ms, ctx.Err())
	case <-t.C:
		return workflow.NodeResult{Output: in.Input}, nil
	}
}

func checkSlowParams(p map[string]any) error {
	_, err := requiredInt(p, "ms", 0, MaxSlowMillis)
	return err
}

// fail always fails with params.message, for fallback and failure tests.
func fail(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	msg, err := optionalString(in.Params, "message", DefaultFailMessage)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("fail: params.%w", err)
	}
	return workflow.NodeResult{}, errors.New(msg)
}

func checkFailParams(p map[string]any) error {
	_, err := optionalString(p, "message", DefaultFailMessage)
	return err
}
