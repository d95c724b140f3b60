package reconciler_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

const (
	// parentBlueprint runs child as a subflow, then after.
	parentBlueprint = `{"id": "parent", "nodes": [
  {"id": "sub", "uses": "subflow", "params": {"blueprintId": "child"}},
  {"id": "after", "uses": "transform", "inputs": "sub", "params": {"expression": "input + 1"}}
], "edges": [{"source": "sub", "target": "after"}]}`
	childBlueprint = `{"id": "child", "nodes": [
  {"id": "one", "uses": "transform", "params": {"expression": "1"}},
  {"id": "two", "uses": "transform", "inputs": "one", "params": {"expression": "input + 1"}}
], "edges": [{"source": "one", "target": "two"}]}`
)

// subflowRun starts a run of parentBlueprint and delivers its jobs until
// its child run has a ready step, the child's id and that step's job.
func (tb *testBundle) subflowRun() (runID, childID string, childJob wire.Job) {
	tb.t.Helper()
	if err := tb.f.Register(decodeBlueprint(tb.t, childBlueprint)); err != nil {
		tb.t.Fatal(err)
	}
	runID, starts := tb.start(decodeBlueprint(tb.t, parentBlueprint), nil)
	next := tb.deliver(starts[0])
	childID = workflow.ChildRunID(runID, "sub", 1)
	if len(next) != 1 || next[0].RunID != childID {
		tb.t.Fatalf("the subflow step answered %v; want the child's start job", jobIDs(next))
	}
	return runID, childID, next[0]
}

// A parent whose child still runs is not stalled, however long it has not
// moved: nothing is republished for it, and its child (stalled itself) is
// repaired as any run.
func TestParentOfARunningChildIsNotStalled(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, childID, childJob := tb.subflowRun()
	tb.age(runID)
	tb.age(childID) // the child's start job was lost
	r := tb.newReconciler(nil)
	st := tb.reconcile(r)
	want := reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1, AwaitingChildRuns: 1}
	if st != want {
		t.Errorf("stats %+v; want %+v (the child repaired, the parent waiting)", st, want)
	}
	if got := tb.takeQueued(); !reflect.DeepEqual(got, []wire.Job{childJob}) {
		t.Errorf("republished %v; want only the child's job %s", jobIDs(got), childJob.ID())
	}
	if s := tb.steps(runID)["sub"]; s.State != workflow.StepAwaitingChild {
		t.Errorf("sub is %s; want awaiting_child", s.State)
	}
	if r := tb.run(runID); r.Status != workflow.RunRunning || r.Pending != 1 {
		t.Errorf("parent %s with %d pending; want running with 1 (not resynced)", r.Status, r.Pending)
	}
}

// The child's end and the parent's continuation are one commit and one
// publish: a crash between them (the continuation's publish is lost)
// leaves the parent step awaiting a finished child, which a reconcile
// pass continues — once: the continuation's commit absorbs a duplicate.
func TestLostContinuationIsRepairedOnce(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, childID, childJob := tb.subflowRun()
	next := tb.deliver(childJob)
	last := tb.deliver(next[0])
	cont := wire.Job{RunID: runID, BlueprintID: "parent", NodeID: "sub", Attempt: 1}
	if !reflect.DeepEqual(last, []wire.Job{cont}) {
		t.Fatalf("the child's last step answered %v; want the continuation %s", jobIDs(last), cont.ID())
	}
	if r := tb.run(childID); r.Status != workflow.RunCompleted {
		t.Fatalf("child is %s; want completed", r.Status)
	}
	// The continuation is dropped: the process died before publishing it.
	tb.age(runID)
	r := tb.newReconciler(nil)
	st := tb.reconcile(r)
	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("stats %+v; want %+v", st, want)
	}
	republished := tb.takeQueued()
	if !reflect.DeepEqual(republished, []wire.Job{cont}) {
		t.Fatalf("republished %v; want the continuation %s", jobIDs(republished), cont.ID())
	}
	// Delivered twice (the republished one and, say, the original after
	// all): the parent step runs once.
	tb.deliverAll(cont, cont)
	tb.assertCompleted(runID, map[string]any{"sub": 2.0, "after": 3.0})
	if s := tb.steps(runID)["sub"]; s.Attempts != 1 {
		t.Errorf("sub ran %d attempts; want 1", s.Attempts)
	}
	tb.age(runID)
	if st := tb.reconcile(r); st != (reconciler.Stats{}) {
		t.Errorf("a second pass: %+v; want nothing (the parent completed)", st)
	}
	tb.assertNothingQueued()
}

// A parent whose child pauses at a wait node awaits with it: neither is
// stalled, however long they wait; nothing is republished, nor touched.
func TestParentOfAnAwaitingChildIsNeverStalled(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	if err := tb.f.Register(decodeBlueprint(tb.t, reviewBlueprint)); err != nil {
		t.Fatal(err)
	}
	runID, starts := tb.start(decodeBlueprint(t, `{"id": "reviewing", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "review"}}]}`), nil)
	tb.deliverAll(starts...)
	childID := workflow.ChildRunID(runID, "sub", 1)
	for _, id := range []string{childID, runID} {
		if r := tb.run(id); r.Status != workflow.RunAwaiting {
			t.Fatalf("run %s is %s; want awaiting", id, r.Status)
		}
	}
	aged := map[string]time.Time{runID: tb.age(runID), childID: tb.age(childID)}
	r := tb.newReconciler(nil, func(o *reconciler.Options) { o.Threshold = smallestThreshold })
	for range 2 {
		if st := tb.reconcile(r); st != (reconciler.Stats{}) {
			t.Errorf("stats %+v, want all zero", st)
		}
	}
	tb.assertNothingQueued()
	for id, at := range aged {
		if after := tb.run(id); after.Status != workflow.RunAwaiting || !after.UpdatedAt.Equal(at) {
			t.Errorf("run %s is %s, updated_at %s (was %v); want awaiting, untouched", id, after.Status, after.UpdatedAt, at)
		}
	}
}
