package reconciler_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

// chain: a → b → c → d, each a transform of the one before.
const chainBlueprint = `{"id": "chain", "metadata": {"version": "1"},
 "nodes": [
  {"id": "a", "uses": "transform", "params": {"expression": "input.n + 1"}},
  {"id": "b", "uses": "transform", "params": {"expression": "input * 10"}},
  {"id": "c", "uses": "transform", "params": {"expression": "input + 5"}},
  {"id": "d", "uses": "transform", "params": {"expression": "{\"final\": input}"}}],
 "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}, {"source": "c", "target": "d"}]}`

// chainOutputs are the outputs of a chain run with input {"n": 1}.
var chainOutputs = map[string]any{"a": 2, "b": 20, "c": 25, "d": map[string]any{"final": 25}}

// branch: decide takes exactly one of left and right (by action); join
// waits for both edges to be resolved.
const branchBlueprint = `{"id": "branch", "metadata": {"version": "1"},
 "nodes": [
  {"id": "decide", "uses": "transform", "params": {"expression": "input", "action": "input.kind"}},
  {"id": "left", "uses": "transform", "params": {"expression": "\"went left\""}},
  {"id": "right", "uses": "transform", "params": {"expression": "\"went right\""}},
  {"id": "join", "uses": "noop"}],
 "edges": [
  {"source": "decide", "target": "left", "action": "left"},
  {"source": "decide", "target": "right", "action": "right"},
  {"source": "left", "target": "join"},
  {"source": "right", "target": "join"}]}`

// sleeper: start → wait (sleeps an hour) → end.
const sleepBlueprint = `{"id": "sleeper", "metadata": {"version": "1"},
 "nodes": [
  {"id": "start", "uses": "noop"},
  {"id": "wait", "uses": "sleep", "params": {"duration": "1h"}},
  {"id": "end", "uses": "transform", "params": {"expression": "\"woke\""}}],
 "edges": [{"source": "start", "target": "wait"}, {"source": "wait", "target": "end"}]}`

// slowRetry: a fails its first attempt and retries after 30–60 s.
const slowRetryBlueprint = `{"id": "slow-retry", "metadata": {"version": "1"},
 "nodes": [
  {"id": "a", "uses": "flaky", "params": {"failures": 1}, "config": {"maxRetries": 3, "retryDelay": 60000}},
  {"id": "b", "uses": "transform", "params": {"expression": "\"done\""}}],
 "edges": [{"source": "a", "target": "b"}]}`

func job(runID, blueprintID, nodeID string, attempt int) wire.Job {
	return wire.Job{RunID: runID, BlueprintID: blueprintID, NodeID: nodeID, Attempt: attempt}
}

// assertJobs checks that jobs are exactly want (order aside).
func assertJobs(t *testing.T, what string, got []wire.Job, want ...wire.Job) {
	t.Helper()
	g, w := jobIDs(got), jobIDs(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Fatalf("%s: jobs %q, want %q", what, g, w)
	}
	for _, j := range got {
		if j.BlueprintID != want[0].BlueprintID {
			t.Errorf("%s: job %s has blueprintId %q, want %q", what, j.ID(), j.BlueprintID, want[0].BlueprintID)
		}
	}
}

// chainMissingB starts a chain run, delivers its first step and drops the job
// that step produced (b), as a lost message would.
func (tb *testBundle) chainMissingB() string {
	tb.t.Helper()
	runID, starts := tb.start(decodeBlueprint(tb.t, chainBlueprint), map[string]any{"n": 1})
	assertJobs(tb.t, "start jobs", starts, job(runID, "chain", "a", 1))
	next := tb.deliver(starts[0])
	assertJobs(tb.t, "after a", next, job(runID, "chain", "b", 1))
	return runID
}

func TestReconcileLeavesHealthyRunsAlone(t *testing.T) {
	t.Parallel()

	t.Run("recently updated", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		// The start job is taken off the queue and never delivered: the run
		// misses it, but it is not stalled yet.
		runID, _ := tb.start(decodeBlueprint(t, chainBlueprint), map[string]any{"n": 1})
		before := tb.run(runID)

		st := tb.reconcile(tb.newReconciler(nil))

		if st != (reconciler.Stats{}) {
			t.Errorf("stats %+v, want all zero", st)
		}
		tb.assertNothingQueued()
		if after := tb.run(runID); !after.UpdatedAt.Equal(before.UpdatedAt) || after.Status != workflow.RunRunning {
			t.Errorf("run changed: updated_at %s → %s, status %s", before.UpdatedAt, after.UpdatedAt, after.Status)
		}
	})

	t.Run("sleeping until a future wake time", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		runID, starts := tb.start(decodeBlueprint(t, sleepBlueprint), nil)
		next := tb.deliver(starts[0])
		assertJobs(t, "after start", next, job(runID, "sleeper", "wait", 1))
		// The sleep's delayed wake-up job is "in the delay queue": the test
		// holds it, the run waits for it.
		wake := tb.deliver(next[0])
		assertJobs(t, "sleep reply", wake, job(runID, "sleeper", "wait", 1))
		if s := tb.steps(runID)["wait"]; s.State != workflow.StepSleeping || s.WakeAt == nil || time.Until(*s.WakeAt) < 59*time.Minute {
			t.Fatalf("wait step: %s wake_at %v, want sleeping about an hour", s.State, s.WakeAt)
		}
		aged := tb.age(runID)

		st := tb.reconcile(tb.newReconciler(nil))

		if want := (reconciler.Stats{StalledRuns: 1}); st != want {
			t.Errorf("stats %+v, want %+v (stalled but nothing to republish)", st, want)
		}
		tb.assertNothingQueued()
		after := tb.run(runID)
		if !after.UpdatedAt.Equal(aged) || after.Status != workflow.RunRunning {
			t.Errorf("run touched: updated_at %s → %s, status %s", aged, after.UpdatedAt, after.Status)
		}
		if s := tb.steps(runID)["wait"]; s.State != workflow.StepSleeping {
			t.Errorf("wait step is %s, want still sleeping", s.State)
		}
	})
}

func TestReconcileResumesAtTheMissingStep(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.start(decodeBlueprint(t, chainBlueprint), map[string]any{"n": 1})
	next := tb.deliver(starts[0]) // a
	next = tb.deliver(next[0])    // b
	assertJobs(t, "after b", next, job(runID, "chain", "c", 1))
	// c's job is lost.
	aged := tb.age(runID)

	st := tb.reconcile(tb.newReconciler(nil))

	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, job(runID, "chain", "c", 1))
	tb.assertNothingQueued()
	if r := tb.run(runID); !r.UpdatedAt.After(aged.Add(30 * time.Minute)) {
		t.Errorf("updated_at %s not bumped (was %s): the run would be reconciled again at once", r.UpdatedAt, aged)
	}
	// A second pass finds nothing stalled.
	if st := tb.reconcile(tb.newReconciler(nil)); st != (reconciler.Stats{}) {
		t.Errorf("second pass stats %+v, want zero", st)
	}
	tb.assertNothingQueued()

	tb.deliverAll(republished...)
	tb.assertCompleted(runID, chainOutputs)
	for id, s := range tb.steps(runID) {
		if s.State != workflow.StepSucceeded || s.Attempts != 1 {
			t.Errorf("step %s: %s after %d attempts, want succeeded after 1", id, s.State, s.Attempts)
		}
	}
}

func TestReconcileNeverResurrectsAnUntakenBranch(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.start(decodeBlueprint(t, branchBlueprint), map[string]any{"kind": "left"})
	next := tb.deliver(starts[0])
	assertJobs(t, "after decide", next, job(runID, "branch", "left", 1))
	if s := tb.steps(runID); s["right"] == nil || s["right"].State != workflow.StepSkipped {
		t.Fatalf("right after decide: %+v, want skipped", s["right"])
	}
	// left's job is lost.
	tb.age(runID)

	st := tb.reconcile(tb.newReconciler(nil))

	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, job(runID, "branch", "left", 1))
	tb.assertNothingQueued()

	tb.deliverAll(republished...)
	tb.assertCompleted(runID, map[string]any{"decide": map[string]any{"kind": "left"}, "left": "went left", "join": map[string]any{"left": "went left"}})
	steps := tb.steps(runID)
	if s := steps["right"]; s.State != workflow.StepSkipped || s.Attempts != 0 {
		t.Errorf("right: %s after %d attempts, want skipped and never run", s.State, s.Attempts)
	}
	if _, ok := tb.run(runID).StatusData[workflow.OutputKey("right")]; ok {
		t.Errorf("status_data has an output of the untaken node right")
	}
}

func TestConcurrentReconcilersRepublishEachMissingJobOnce(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	const runs = 8
	var want []wire.Job
	for range runs {
		runID := tb.chainMissingB()
		tb.age(runID)
		want = append(want, job(runID, "chain", "b", 1))
	}
	// Two reconcilers on their own pools and broker connections, taking one
	// run per transaction so that they interleave.
	rs := []*reconciler.Reconciler{
		tb.newReconciler(tb.newPublisher(), func(o *reconciler.Options) { o.BatchSize = 1 }),
		tb.newReconciler(tb.newPublisher(), func(o *reconciler.Options) { o.BatchSize = 1 }),
	}
	stats := make([]reconciler.Stats, len(rs))
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, r := range rs {
		wg.Go(func() {
			<-gate
			stats[i], errs[i] = r.Run(tb.ctx)
		})
	}
	close(gate)
	wg.Wait()

	var total reconciler.Stats
	for i, st := range stats {
		if errs[i] != nil {
			t.Fatalf("reconciler %d: %v", i, errs[i])
		}
		t.Logf("reconciler %d: %+v", i, st)
		total.StalledRuns += st.StalledRuns
		total.ReconciledRuns += st.ReconciledRuns
		total.Republished += st.Republished
		total.FailedRuns += st.FailedRuns
	}
	if w := (reconciler.Stats{StalledRuns: runs, ReconciledRuns: runs, Republished: runs}); total != w {
		t.Errorf("total stats %+v, want %+v", total, w)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, want...)

	tb.deliverAll(republished...)
	for _, j := range want {
		tb.assertCompleted(j.RunID, chainOutputs)
	}
}

func TestReconcileSkipsLeasedSteps(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID := tb.chainMissingB()
	aged := tb.age(runID)
	// Another delivery of b is running right now.
	lease := wire.LeaseKey(tb.redisPrefix, runID, "b")
	if err := tb.rdb.Set(tb.ctx, lease, "another-delivery", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	st := tb.reconcile(tb.newReconciler(nil))

	if want := (reconciler.Stats{StalledRuns: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	tb.assertNothingQueued()
	if r := tb.run(runID); !r.UpdatedAt.Equal(aged) {
		t.Errorf("updated_at %s, want untouched %s", r.UpdatedAt, aged)
	}

	// The lease expires (its holder crashed): now b is republished.
	if err := tb.rdb.Del(tb.ctx, lease).Err(); err != nil {
		t.Fatal(err)
	}
	st = tb.reconcile(tb.newReconciler(nil))
	if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
		t.Errorf("after the lease: stats %+v, want %+v", st, want)
	}
	republished := tb.takeQueued()
	assertJobs(t, "republished", republished, job(runID, "chain", "b", 1))
	tb.deliverAll(republished...)
	tb.assertCompleted(runID, chainOutputs)
}

func TestReconcileDelayedSteps(t *testing.T) {
	t.Parallel()
	grace := func(extra time.Duration) string { return "-" + (reconciler.OverdueGrace + extra).String() }

	t.Run("retrying", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		runID, starts := tb.start(decodeBlueprint(t, slowRetryBlueprint), map[string]any{"x": "y"})
		retry := tb.deliver(starts[0])
		assertJobs(t, "after a failed attempt", retry, job(runID, "slow-retry", "a", 2))
		s := tb.steps(runID)["a"]
		if s.State != workflow.StepRetrying || s.Attempts != 1 || s.WakeAt == nil || time.Until(*s.WakeAt) < 25*time.Second {
			t.Fatalf("a: %s attempts %d wake_at %v, want retrying after 1 attempt, due in 30–60 s", s.State, s.Attempts, s.WakeAt)
		}
		// The delayed retry is lost.
		aged := tb.age(runID)
		r := tb.newReconciler(nil)

		// Wake time ahead: its delayed job is still on its way.
		if st := tb.reconcile(r); st != (reconciler.Stats{StalledRuns: 1}) {
			t.Errorf("wake time ahead: stats %+v, want only stalled", st)
		}
		tb.assertNothingQueued()
		// Wake time just past, within the grace: still presumed in flight.
		tb.setWakeAt(runID, "a", "-"+(reconciler.OverdueGrace/2).String())
		if st := tb.reconcile(r); st != (reconciler.Stats{StalledRuns: 1}) {
			t.Errorf("within grace: stats %+v, want only stalled", st)
		}
		tb.assertNothingQueued()
		if r := tb.run(runID); !r.UpdatedAt.Equal(aged) {
			t.Errorf("updated_at %s, want untouched %s", r.UpdatedAt, aged)
		}
		// Overdue by more than the grace: lost, republished at the next attempt.
		tb.setWakeAt(runID, "a", grace(2*time.Second))
		if st := tb.reconcile(r); st != (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}) {
			t.Errorf("overdue: stats %+v, want one republished", st)
		}
		republished := tb.takeQueued()
		assertJobs(t, "republished", republished, job(runID, "slow-retry", "a", 2))
		tb.deliverAll(republished...)
		tb.assertCompleted(runID, map[string]any{"a": map[string]any{"x": "y"}, "b": "done"})
		if s := tb.steps(runID)["a"]; s.Attempts != 2 {
			t.Errorf("a ran %d attempts, want 2", s.Attempts)
		}
	})

	t.Run("sleeping", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		runID, starts := tb.start(decodeBlueprint(t, sleepBlueprint), nil)
		next := tb.deliver(starts[0])
		tb.deliver(next[0]) // wait: sleeping; its wake-up job is lost
		tb.setWakeAt(runID, "wait", grace(2*time.Second))
		tb.age(runID)

		st := tb.reconcile(tb.newReconciler(nil))

		if want := (reconciler.Stats{StalledRuns: 1, ReconciledRuns: 1, Republished: 1}); st != want {
			t.Errorf("stats %+v, want %+v", st, want)
		}
		republished := tb.takeQueued()
		assertJobs(t, "republished", republished, job(runID, "sleeper", "wait", 1))
		tb.deliverAll(republished...)
		tb.assertCompleted(runID, map[string]any{"end": "woke"})
	})
}
