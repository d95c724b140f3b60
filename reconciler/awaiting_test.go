package reconciler_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

// reviewBlueprint: a, then the wait node review, then b.
const reviewBlueprint = `{"id": "review", "nodes": [
  {"id": "a", "uses": "noop"},
  {"id": "review", "uses": "wait"},
  {"id": "b", "uses": "transform", "params": {"expression": "input.ok"}}
], "edges": [{"source": "a", "target": "review"}, {"source": "review", "target": "b"}]}`

// smallestThreshold is the smallest threshold the reconciler takes: every
// running run not claimed is stalled at once.
const smallestThreshold = time.Nanosecond

// awaitingRun starts a run of reviewBlueprint and delivers its jobs until
// it awaits at review.
func (tb *testBundle) awaitingRun() string {
	tb.t.Helper()
	runID, starts := tb.start(decodeBlueprint(tb.t, reviewBlueprint), nil)
	tb.deliverAll(starts...)
	if r := tb.run(runID); r.Status != workflow.RunAwaiting {
		tb.t.Fatalf("run %s is %s, want awaiting", runID, r.Status)
	}
	return runID
}

// An awaiting run is never stalled, however long it waits: nothing is
// republished and the run is not touched.
func TestAwaitingRunIsNeverStalled(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID := tb.awaitingRun()
	aged := tb.age(runID)
	r := tb.newReconciler(nil, func(o *reconciler.Options) { o.Threshold = smallestThreshold })
	for range 3 {
		if st := tb.reconcile(r); st != (reconciler.Stats{}) {
			t.Errorf("stats %+v, want all zero", st)
		}
	}
	tb.assertNothingQueued()
	if after := tb.run(runID); after.Status != workflow.RunAwaiting || !after.UpdatedAt.Equal(aged) {
		t.Errorf("run is %s, updated_at %s (was %s); want awaiting, untouched", after.Status, after.UpdatedAt, aged)
	}
	if s := tb.steps(runID)["review"]; s.State != workflow.StepAwaiting {
		t.Errorf("review is %s", s.State)
	}
}

// A resume whose job never reached RabbitMQ (the process died between
// its commit and its publish; here the broker is unreachable) leaves the
// run running with its successor ready: the reconciler republishes it.
func TestLostResumePublishIsRepaired(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID := tb.awaitingRun()
	// A client whose RabbitMQ does not answer: the commit is made, the
	// publish fails.
	lost, err := client.New(tb.ctx, client.Config{PostgresURL: testenv.PostgresURL(), AMQPURL: "amqp://guest:guest@127.0.0.1:1/", Queue: tb.queue, Tables: tb.tables})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lost.Close)
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	res, err := lost.Resume(ctx, runID, workflow.Resume{Node: "review", Output: map[string]any{"ok": "yes"}})
	if err == nil || !strings.Contains(err.Error(), "reconciler will republish") || res == nil || res.Status != workflow.RunRunning {
		t.Fatalf("resume without RabbitMQ: %+v, %v; want resumed with the publish error", res, err)
	}
	tb.assertNothingQueued()
	if s := tb.steps(runID)["b"]; s == nil || s.State != workflow.StepReady {
		t.Fatalf("b: %+v, want ready", s)
	}
	// Not stalled until the threshold passes; then repaired.
	if st := tb.reconcile(tb.newReconciler(nil)); st != (reconciler.Stats{}) {
		t.Errorf("before the threshold: stats %+v", st)
	}
	tb.age(runID)
	st := tb.reconcile(tb.newReconciler(nil))
	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, job(runID, "review", "b", 1))
	tb.deliverAll(republished...)
	tb.assertCompleted(runID, map[string]any{"review": map[string]any{"ok": "yes"}, "b": "yes"})
}

// A sleep beside a wait keeps the run running (its step is pending): the
// reconciler treats it as any sleeping run, and the run awaits once the
// sleep is over.
func TestSleepBesideAWait(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "both", "nodes": [
	  {"id": "a", "uses": "noop"}, {"id": "gate", "uses": "wait"}, {"id": "nap", "uses": "sleep", "params": {"duration": "1h"}}
	], "edges": [{"source": "a", "target": "gate"}, {"source": "a", "target": "nap"}]}`)
	runID, starts := tb.start(bp, nil)
	next := tb.deliver(starts[0])
	var napJob []string
	for _, j := range next {
		wake := tb.deliver(j) // gate awaits; nap answers with its delayed wake-up
		for _, w := range wake {
			napJob = append(napJob, w.NodeID)
		}
	}
	if r := tb.run(runID); r.Status != workflow.RunRunning || len(napJob) != 1 || napJob[0] != "nap" {
		t.Fatalf("run %s, wake-ups %v; want running with nap's wake-up held", r.Status, napJob)
	}
	tb.age(runID)
	st := tb.reconcile(tb.newReconciler(nil, func(o *reconciler.Options) { o.Threshold = smallestThreshold }))
	if want := (reconciler.Stats{StalledRuns: 1}); st != want {
		t.Errorf("stats %+v, want %+v (the sleep is not due)", st, want)
	}
	tb.assertNothingQueued()
	// The sleep wakes (now): the run then only awaits.
	tb.setWakeAt(runID, "nap", "-1 second")
	tb.deliver(job(runID, "both", "nap", 1))
	if r := tb.run(runID); r.Status != workflow.RunAwaiting {
		t.Errorf("after the sleep: %s, want awaiting", r.Status)
	}
}
