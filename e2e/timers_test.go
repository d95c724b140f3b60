package e2e

// Durable timers and cancellation.

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// sleep.json: the `wait` node sleeps 1 s between two steps. While it
// sleeps its step row reads `sleeping` and nothing calls the function: the
// delayed wake-up job waits in RabbitMQ's delay queues, not in a worker.
func TestSleepHoldsNoWorker(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "sleep")

	runID := tb.start(bp, map[string]any{"x": 1})
	var wakeAt time.Time
	testenv.Eventually(t, 5*time.Second, "the wait step to sleep", func() bool {
		s := tb.step(runID, "wait")
		if s != nil && s.State == workflow.StepSleeping && s.WakeAt != nil {
			wakeAt = *s.WakeAt
			return true
		}
		return false
	})
	res := tb.wait(runID, 10*time.Second)

	if res.Status != workflow.RunCompleted {
		t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"x":1}`))
	assertSteps(t, res, map[string]wantStep{
		"start": {workflow.StepSucceeded, 1}, "wait": {workflow.StepSucceeded, 1}, "end": {workflow.StepSucceeded, 1},
	})
	if res.DurationMs < 1000 || res.DurationMs > 2500 {
		t.Errorf("the run took %.1f ms, want 1000–2500 ms", res.DurationMs)
	}
	calls := tb.nodes.of(runID, "wait")
	if len(calls) != 2 {
		t.Fatalf("the sleep node was called %d times, want 2 (sleep, wake)", len(calls))
	}
	if calls[1].Start.Before(wakeAt.Add(-50 * time.Millisecond)) {
		t.Errorf("woken at %s, more than 50 ms before its wake time %s", calls[1].Start, wakeAt)
	}
	reqs := tb.http.of(runID, "wait")
	if len(reqs) != 2 {
		t.Fatalf("the function was asked %d times to run wait, want 2: %+v", len(reqs), reqs)
	}
	// Between the reply that put the step to sleep and its wake time, the
	// function served nothing at all: no worker was held by the sleep.
	from, until := reqs[0].End, wakeAt.Add(-50*time.Millisecond)
	for _, r := range tb.http.all() {
		if r.Start.Before(until) && r.End.After(from) && r != reqs[0] {
			t.Errorf("request for %s/%s (attempt %d) ran %s–%s, during the sleep (%s–%s)",
				r.RunID, r.NodeID, r.Attempt, r.Start.Format("15:04:05.000"), r.End.Format("15:04:05.000"),
				from.Format("15:04:05.000"), until.Format("15:04:05.000"))
		}
	}
	if end := tb.nodes.of(runID, "end"); len(end) != 1 || end[0].Start.Before(wakeAt.Add(-50*time.Millisecond)) {
		t.Errorf("end ran %d times (%v), want once, after the wake time %s", len(end), end, wakeAt)
	}
}

// chainWithGate is a → hold (a gate the test opens) → after.
const chainWithGate = `{"id":"gated","metadata":{"version":"1"},
  "nodes":[{"id":"a","uses":"noop"},{"id":"hold","uses":"gate"},{"id":"after","uses":"noop"}],
  "edges":[{"source":"a","target":"hold"},{"source":"hold","target":"after"}]}`

// Cancelling a run while one of its nodes runs: the run is cancelled, and
// nothing after that node starts, even once the node returns.
func TestCancelMidRun(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := blueprint(t, chainWithGate)

	runID := tb.start(bp, map[string]any{"x": 1})
	g := tb.waitStarted(runID, "hold", 10*time.Second)
	status, err := tb.client.Cancel(context.Background(), runID)
	if err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if status != workflow.RunCancelled {
		t.Fatalf("Cancel returned %s, want cancelled", status)
	}
	g.open() // let the node return, cancelled or not
	testenv.Eventually(t, 10*time.Second, "the function to answer the hold job", func() bool {
		return len(tb.http.of(runID, "hold")) >= 1
	})

	res, err := tb.client.Result(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != workflow.RunCancelled {
		t.Errorf("status %s after the node returned, want cancelled", res.Status)
	}
	if len(res.Errors) != 1 || res.Errors[0].Message != "cancelled" {
		t.Errorf("errors %+v, want [cancelled]", res.Errors)
	}
	if n := tb.nodes.count(runID, "after"); n != 0 {
		t.Errorf("after ran %d times in a cancelled run", n)
	}
	if s := tb.step(runID, "after"); s != nil {
		t.Errorf("after has a step (%s) in a cancelled run", s.State)
	}
	if s := tb.step(runID, "hold"); s != nil && s.State == workflow.StepSucceeded {
		t.Errorf("hold's result was committed after the run was cancelled")
	}
	if n := tb.queueDepth(tb.queue); n != 0 {
		t.Errorf("%d job(s) left on the queue after the cancelled run's last reply", n)
	}
	if w := tb.finalWrites(runID); len(w) != 1 || w[0] != "cancelled" {
		t.Errorf("final status writes %v, want [cancelled]", w)
	}
}

// docs/semantics.md, "Run outcome": cancelled — "the run was cancelled;
// running attempts see their context cancelled". A node blocked on its
// context must be released by Cancel.
func TestCancelCancelsRunningAttempt(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := blueprint(t, chainWithGate)

	runID := tb.start(bp, nil)
	g := tb.waitStarted(runID, "hold", 10*time.Second)
	if _, err := tb.client.Cancel(context.Background(), runID); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	select {
	case <-g.cancelled:
	case <-time.After(3 * time.Second):
		t.Errorf("3 s after Cancel, the running attempt of hold still has a live context: a cancelled run's running attempts must see their context cancelled (docs/semantics.md)")
	}
}
