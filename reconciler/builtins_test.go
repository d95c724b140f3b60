package reconciler_test

// Reconciling runs in the middle of a loop or a batch: the steps are keyed
// by step key, so a pass republishes exactly the iteration or the worker
// whose job is missing, and a lost step row is rebuilt at its iteration.

import (
	"testing"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

func stepJob(runID, blueprintID, nodeID, key string, attempt int) wire.Job {
	return wire.NewJob(runID, blueprintID, nodeID, key, attempt)
}

// A loop's iteration whose job was lost is republished with its step key,
// and nothing else is.
func TestReconcileDuringALoopRepublishesTheMissingIteration(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.start(testenv.Example(t, "loop"), nil)
	next := tb.deliver(starts[0]) // init → countdown#0
	next = tb.deliver(next[0])    // countdown#0 → tick#1
	next = tb.deliver(next[0])    // tick#1 → countdown#1
	next = tb.deliver(next[0])    // countdown#1 → tick#2, whose job is lost
	assertJobs(t, "after countdown#1", next, stepJob(runID, "loop", "tick", "tick#2", 1))
	tb.age(runID)

	st := tb.reconcile(tb.newReconciler(nil))

	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, stepJob(runID, "loop", "tick", "tick#2", 1))
	tb.deliverAll(republished...)
	tb.assertCompleted(runID, map[string]any{"tick": 0, "liftoff": map[string]any{"liftoff": true, "last": 0}})
	steps := tb.steps(runID)
	for _, k := range []string{"tick#1", "tick#2", "tick#3", "countdown#3", "countdown"} {
		if s := steps[k]; s == nil || s.State != workflow.StepSucceeded {
			t.Errorf("step %s: %+v, want succeeded", k, s)
		}
	}
	if s := steps["tick#4"]; s != nil {
		t.Errorf("step tick#4 exists: %+v", s)
	}
}

// A run in a loop left running with nothing pending (its next iteration's
// row lost) gets that iteration's row back from the controller step's
// stored routing, with its input.
func TestReconcileRebuildsALostIterationRow(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.start(testenv.Example(t, "loop"), nil)
	next := tb.deliver(starts[0])
	next = tb.deliver(next[0]) // countdown#0 → tick#1
	next = tb.deliver(next[0]) // tick#1 → countdown#1
	next = tb.deliver(next[0]) // countdown#1 → tick#2
	assertJobs(t, "after countdown#1", next, stepJob(runID, "loop", "tick", "tick#2", 1))
	input := tb.steps(runID)["tick#2"].Input
	tb.exec(`DELETE FROM `+tb.tables.Quoted().Steps+` WHERE run_id = $1 AND node_id = 'tick#2'`, runID)
	tb.exec(`UPDATE `+tb.tables.Quoted().Statuses+` SET pending = 0 WHERE run_id = $1`, runID)
	tb.age(runID)

	st := tb.reconcile(tb.newReconciler(nil))

	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, stepJob(runID, "loop", "tick", "tick#2", 1))
	s := tb.steps(runID)["tick#2"]
	if s == nil || s.State != workflow.StepReady || s.Node != "tick" || s.Iteration != 2 {
		t.Fatalf("tick#2 after the resync: %+v, want ready, node tick, iteration 2", s)
	}
	testenv.AssertJSON(t, "tick#2's input", s.Input, input)
	tb.deliverAll(republished...)
	tb.assertCompleted(runID, map[string]any{"tick": 0})
}

// A batch worker whose job was lost is republished alone; the gather
// still waits for it.
func TestReconcileDuringABatchRepublishesTheMissingWorker(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "batch")
	input := map[string]any{"items": []any{
		map[string]any{"sku": "A", "qty": 1, "price": 1.5},
		map[string]any{"sku": "B", "qty": 2, "price": 2},
	}}
	runID, starts := tb.start(bp, input)
	workers := tb.deliver(starts[0]) // the scatter: both workers (chunkSize 2)
	if len(workers) != 2 {
		t.Fatalf("the scatter made %v ready, want 2 workers", jobIDs(workers))
	}
	if next := tb.deliver(workers[0]); len(next) != 0 {
		t.Fatalf("the first worker made %v ready", jobIDs(next))
	}
	tb.age(runID) // workers[1]'s job is lost

	st := tb.reconcile(tb.newReconciler(nil))

	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, workers[1])
	tb.deliverAll(republished...)
	tb.assertCompleted(runID, map[string]any{"total": map[string]any{"lines": 2, "total": 5.5}})
}

// A batch left running with nothing pending — the gather's row lost, and
// the scatter's count of resolved workers with it — gets its count taken
// again from the workers' rows and the gather made ready, with their
// outputs in order.
func TestReconcileRebuildsALostGatherAndItsCount(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "batch")
	input := map[string]any{"items": []any{
		map[string]any{"sku": "A", "qty": 1, "price": 1},
		map[string]any{"sku": "B", "qty": 1, "price": 2},
		map[string]any{"sku": "C", "qty": 1, "price": 3},
	}}
	runID, starts := tb.start(bp, input)
	jobs := tb.deliver(starts[0])
	for len(jobs) > 0 && jobs[0].NodeID != "lines_gather" {
		var next []wire.Job
		for _, j := range jobs {
			next = append(next, tb.deliver(j)...)
		}
		jobs = next
	}
	assertJobs(t, "after the workers", jobs, job(runID, "batch", "lines_gather", 1))
	q := tb.tables.Quoted()
	tb.exec(`DELETE FROM `+q.Steps+` WHERE run_id = $1 AND node_id = 'lines_gather'`, runID)
	tb.exec(`UPDATE `+q.Steps+` SET dynamic_resolved = '{0,0}' WHERE run_id = $1 AND node_id = 'lines_scatter'`, runID)
	tb.exec(`UPDATE `+q.Statuses+` SET pending = 0 WHERE run_id = $1`, runID)
	tb.age(runID)

	st := tb.reconcile(tb.newReconciler(nil))

	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, job(runID, "batch", "lines_gather", 1))
	var counted []int32
	if err := tb.pool.QueryRow(tb.ctx, `SELECT dynamic_resolved FROM `+q.Steps+` WHERE run_id = $1 AND node_id = 'lines_scatter'`, runID).Scan(&counted); err != nil {
		t.Fatal(err)
	}
	if len(counted) != 2 || counted[0] != 2 || counted[1] != 1 {
		t.Errorf("the scatter counts %v after the resync, want [2 1]", counted)
	}
	tb.deliverAll(republished...)
	tb.assertCompleted(runID, map[string]any{"total": map[string]any{"lines": 3, "total": 6}})
}
