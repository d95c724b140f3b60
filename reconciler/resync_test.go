package reconciler_test

import (
	"strings"
	"testing"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

// A run that is running with nothing pending — the row of its next step
// was lost — gets the missing step made ready again from what its finished
// steps decided, and completes.
func TestReconcileRebuildsALostStepRow(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.start(decodeBlueprint(t, chainBlueprint), map[string]any{"n": 1})
	next := tb.deliver(starts[0]) // a
	next = tb.deliver(next[0])    // b
	assertJobs(t, "after b", next, job(runID, "chain", "c", 1))
	// c's job and its step row are lost, and the pending count with them.
	tb.exec(`DELETE FROM `+tb.tables.Quoted().Steps+` WHERE run_id = $1 AND node_id = 'c'`, runID)
	tb.exec(`UPDATE `+tb.tables.Quoted().Statuses+` SET pending = 0 WHERE run_id = $1`, runID)
	tb.age(runID)

	st := tb.reconcile(tb.newReconciler(nil))

	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, job(runID, "chain", "c", 1))
	tb.assertNothingQueued()
	steps := tb.steps(runID)
	if c := steps["c"]; c == nil || c.State != workflow.StepReady {
		t.Fatalf("c after the resync: %+v, want ready", c)
	}
	testenv.AssertJSON(t, "c's input", steps["c"].Input, 20) // b's output, as b's commit delivered it
	if r := tb.run(runID); r.Status != workflow.RunRunning || r.Pending != 1 {
		t.Fatalf("run %s with %d pending, want running with 1", r.Status, r.Pending)
	}
	tb.deliverAll(republished...)
	tb.assertCompleted(runID, chainOutputs)
}

// A run whose every step finished but that was left running with nothing
// pending is completed, with its outputs, and nothing is published.
func TestReconcileCompletesARunWithNothingLeft(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.start(decodeBlueprint(t, branchBlueprint), map[string]any{"kind": "left"})
	next := tb.deliver(starts[0])
	next = tb.deliver(next[0]) // left
	tb.deliverAll(next...)     // join completes the run
	tb.assertCompleted(runID, nil)
	// Put it back to "running, nothing pending", as a lost final commit
	// of the status row alone would leave it.
	tb.exec(`UPDATE `+tb.tables.Quoted().Statuses+` SET status = 'running', pending = 0, finished_at = NULL, status_data = NULL WHERE run_id = $1`, runID)
	tb.age(runID)

	st := tb.reconcile(tb.newReconciler(nil))

	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	tb.assertNothingQueued()
	tb.assertCompleted(runID, map[string]any{"decide": map[string]any{"kind": "left"}, "left": "went left", "join": map[string]any{"left": "went left"}})
	if s := tb.steps(runID)["right"]; s == nil || s.State != workflow.StepSkipped {
		t.Errorf("right: %+v, want still skipped", s)
	}
	// A second pass finds nothing.
	if st := tb.reconcile(tb.newReconciler(nil)); st != (reconciler.Stats{}) {
		t.Errorf("second pass stats %+v, want zero", st)
	}
}

// A run with a failed step and nothing pending is failed, naming the step.
func TestReconcileFailsARunWhoseStepFailed(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.start(decodeBlueprint(t, chainBlueprint), map[string]any{"n": 1})
	next := tb.deliver(starts[0]) // a
	// b failed for good, but the run was left running.
	tb.exec(`UPDATE `+tb.tables.Quoted().Steps+` SET state = 'failed', attempts = 1, error = 'boom', finished_at = now() WHERE run_id = $1 AND node_id = 'b'`, runID)
	tb.exec(`UPDATE `+tb.tables.Quoted().Statuses+` SET pending = 0 WHERE run_id = $1`, runID)
	tb.age(runID)

	st := tb.reconcile(tb.newReconciler(nil))

	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	tb.assertNothingQueued()
	r := tb.run(runID)
	if r.Status != workflow.RunFailed || !strings.Contains(r.Error, "b") || !strings.Contains(r.Error, "boom") {
		t.Fatalf("run %s (%q), want failed naming b and its error", r.Status, r.Error)
	}
	// b's lost job, delivered now, runs nothing.
	if jobs := tb.deliver(next[0]); len(jobs) != 0 {
		t.Errorf("b's job after the run failed: %v, want nothing", jobIDs(jobs))
	}
}

// exec changes rows behind stepflow's back, as a lost write or a hand edit
// would; it must change exactly the rows it names.
func (tb *testBundle) exec(sql string, args ...any) {
	tb.t.Helper()
	tag, err := tb.pool.Exec(tb.ctx, sql, args...)
	if err != nil || tag.RowsAffected() == 0 {
		tb.t.Fatalf("%s: %v (%d rows)", sql, err, tag.RowsAffected())
	}
}
