package store

// Subflows against a real PostgreSQL, with the fixture of commit_test.go:
// a step awaiting its child run is committed as the step function commits
// it, and the commit creates the child; the child's finishing commit names
// the parent step's continuation.

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/workflow"
)

const (
	parentBlueprint = `{"id": "parent", "nodes": [
  {"id": "sub", "uses": "subflow", "params": {"blueprintId": "child"}},
  {"id": "after", "uses": "noop"}
], "edges": [{"source": "sub", "target": "after"}]}`
	childBlueprint = `{"id": "child", "nodes": [
  {"id": "c1", "uses": "noop"},
  {"id": "c2", "uses": "noop"}
], "edges": [{"source": "c1", "target": "c2"}]}`
	// middleBlueprint runs child as a subflow of its own: a grandchild.
	middleBlueprint = `{"id": "middle", "nodes": [
  {"id": "inner", "uses": "subflow", "params": {"blueprintId": "child"}}
]}`
)

// childOutcome is the outcome of a subflow node's attempt that asked for a
// child run of cw: the step awaits it, the attempt not counted.
func (f *commitFixture) childOutcome(runID, nodeID string, cw *workflow.Workflow, childContext map[string]any, input any) Outcome {
	f.t.Helper()
	ld, err := f.s.LoadStep(f.ctx, runID, nodeID)
	if err != nil || ld.Step == nil {
		f.t.Fatalf("load %s/%s: %v, %+v", runID, nodeID, err, ld)
	}
	now := time.Now()
	return Outcome{RunID: runID, NodeID: nodeID, LoadedAttempts: ld.Step.Attempts, Attempts: ld.Step.Attempts,
		State: workflow.StepAwaitingChild, StartedAt: now, FinishedAt: now,
		Child: &ChildStart{RunID: workflow.ChildRunID(runID, nodeID, ld.Step.Attempts+1), W: cw, Context: childContext, Input: input}}
}

// awaitChild creates parent run id and commits its sub step awaiting a
// child; it returns the child run's id.
func (f *commitFixture) awaitChild(pw, cw *workflow.Workflow, id string) string {
	f.t.Helper()
	f.createRun(id, pw, map[string]any{"order": 7.0})
	res := f.commit(pw, f.childOutcome(id, "sub", cw, map[string]any{"items": []any{1.0, 2.0}}, nil))
	if !res.Applied || res.RunStatus != workflow.RunRunning || len(res.Ready) != 0 || res.Child == nil {
		f.t.Fatalf("commit of the subflow step: %+v; want applied, running, nothing ready, a child", res)
	}
	return res.Child.RunID
}

func TestAwaitingChildCreatesTheChildRun(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	pw, cw := compileBlueprint(t, parentBlueprint), compileBlueprint(t, childBlueprint)
	f.createRun("p1", pw, map[string]any{"order": 7.0})
	o := f.childOutcome("p1", "sub", cw, map[string]any{"items": []any{1.0, 2.0}}, nil)
	res := f.commit(pw, o)
	wantID := workflow.ChildRunID("p1", "sub", 1)
	if !res.Applied || res.RunStatus != workflow.RunRunning || len(res.Ready) != 0 ||
		!reflect.DeepEqual(res.Child, &StartedChild{RunID: wantID, BlueprintID: "child", Starts: []string{"c1"}}) {
		t.Fatalf("commit: %+v (child %+v); want applied, running, child %s with start c1", res, res.Child, wantID)
	}
	// The parent step waits, its attempt not counted, and counts as
	// pending: the run is running (not awaiting), with nothing to
	// republish.
	if r := f.row("p1", "sub"); r.State != "awaiting_child" || r.Attempts != 0 || r.FinishedAt != nil {
		t.Errorf("sub: %s; want awaiting_child, 0 attempts, not finished", r)
	}
	if got := f.status("p1"); got.Status != "running" || got.Pending != 1 || got.Awaiting != 0 {
		t.Errorf("parent status row %+v; want running, 1 pending, 0 awaiting", got)
	}
	if pend, err := f.s.PendingSteps(f.ctx, nil, "p1"); err != nil || len(pend) != 0 {
		t.Errorf("pending steps %v, %v; want none", pend, err)
	}
	// The child: running, pinned to its blueprint, linked to the parent
	// step, with its context and its start step ready on it.
	child := f.run(wantID)
	wantRun(t, "child", child, workflow.RunRunning, 1)
	if child.BlueprintID != "child" || child.Digest != cw.Digest {
		t.Errorf("child blueprint %s %s; want child %s", child.BlueprintID, child.Digest, cw.Digest)
	}
	wantCtx := map[string]any{"items": []any{1.0, 2.0}}
	if got := f.context(wantID); !reflect.DeepEqual(got, wantCtx) {
		t.Errorf("child context %v; want %v", got, wantCtx)
	}
	wantReadyStep(t, "child c1", f.row(wantID, "c1"), wantCtx)
	if p, err := f.s.Parent(f.ctx, wantID); err != nil || p == nil || p.RunID != "p1" || p.Step != "sub" || p.BlueprintID != "parent" || p.Status != workflow.RunRunning {
		t.Errorf("parent of the child: %+v, %v; want p1's step sub", p, err)
	}
	kids, err := f.s.Children(f.ctx, "p1")
	if err != nil || len(kids) != 1 || kids[0].RunID != wantID || kids[0].BlueprintID != "child" || kids[0].Step != "sub" {
		t.Errorf("children of p1: %+v, %v; want %s", kids, err, wantID)
	}
	if p, err := f.s.Parent(f.ctx, "p1"); err != nil || p != nil {
		t.Errorf("parent of p1: %+v, %v; want none", p, err)
	}

	// The same outcome committed again (a redelivery that ran the node
	// once more) creates no second child and changes no count.
	again := f.commit(pw, o)
	if again.Child != nil {
		t.Errorf("second commit created child %+v", again.Child)
	}
	if kids, _ := f.s.Children(f.ctx, "p1"); len(kids) != 1 {
		t.Errorf("children after a second commit: %+v; want one", kids)
	}
	if got := f.status("p1"); got.Pending != 1 {
		t.Errorf("parent pending %d after a second commit; want 1", got.Pending)
	}
}

// A child's start nodes get ChildStart.Input when it is set, the context
// otherwise.
func TestChildStartInput(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	pw, cw := compileBlueprint(t, parentBlueprint), compileBlueprint(t, childBlueprint)
	f.createRun("p1", pw, nil)
	res := f.commit(pw, f.childOutcome("p1", "sub", cw, map[string]any{}, map[string]any{"n": 3.0}))
	wantReadyStep(t, "child c1", f.row(res.Child.RunID, "c1"), map[string]any{"n": 3.0})
}

func TestChildEndContinuesTheParent(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	pw, cw := compileBlueprint(t, parentBlueprint), compileBlueprint(t, childBlueprint)
	childID := f.awaitChild(pw, cw, "p1")
	if c := f.commit(cw, f.outcome(cw, childID, "c1", "one")); c.Continue != nil || c.Finished {
		t.Fatalf("c1: %+v; want no continuation before the child ends", c)
	}
	if kids, err := f.s.AwaitingChildren(f.ctx, "p1"); err != nil || len(kids) != 1 || kids[0].ChildStatus != workflow.RunRunning || !kids[0].ChildFound {
		t.Errorf("awaiting children: %+v, %v; want sub's child running", kids, err)
	}
	end := f.commit(cw, f.outcome(cw, childID, "c2", "two"))
	want := &Continuation{RunID: "p1", BlueprintID: "parent", NodeID: "sub", Node: "sub", Attempt: 1}
	if !end.Finished || end.RunStatus != workflow.RunCompleted || !reflect.DeepEqual(end.Continue, want) {
		t.Fatalf("child's last step: %+v (continue %+v); want completed, continuing %+v", end, end.Continue, want)
	}
	kids, err := f.s.AwaitingChildren(f.ctx, "p1")
	if err != nil || len(kids) != 1 || kids[0].ChildStatus != workflow.RunCompleted || kids[0].Attempt != 1 || kids[0].ChildRunID != childID {
		t.Errorf("awaiting children: %+v, %v; want sub's child completed", kids, err)
	}
	// The continuation: the node's result, as the same attempt.
	cont := f.outcome(pw, "p1", "sub", map[string]any{"total": 3.0})
	if cont.LoadedAttempts != 0 || cont.Attempts != 1 {
		t.Fatalf("continuation attempts %d → %d; want 0 → 1", cont.LoadedAttempts, cont.Attempts)
	}
	res := f.commit(pw, cont)
	wantResult(t, "continuation", res, true, workflow.RunRunning, []string{"after"}, nil)
	if r := f.row("p1", "sub"); r.State != "succeeded" || r.Attempts != 1 || !reflect.DeepEqual(r.Output, map[string]any{"total": 3.0}) {
		t.Errorf("sub: %s; want succeeded after 1 attempt", r)
	}
	if got := f.status("p1"); got.Pending != 1 {
		t.Errorf("parent pending %d; want 1 (after)", got.Pending)
	}
	// A second continuation (a duplicate job) changes nothing.
	if again := f.commit(pw, cont); again.Applied {
		t.Errorf("second continuation applied: %+v", again)
	}
	if c := f.commit(pw, f.outcome(pw, "p1", "after", nil)); c.RunStatus != workflow.RunCompleted {
		t.Errorf("after: %+v; want the parent completed", c)
	}
}

// A failing child continues its parent too (its node then fails the
// attempt); a retry of the parent step starts a fresh child.
func TestFailedChildContinuesAndRetryStartsAFreshChild(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	pw, cw := compileBlueprint(t, parentBlueprint), compileBlueprint(t, childBlueprint)
	childID := f.awaitChild(pw, cw, "p1")
	o := f.outcome(cw, childID, "c1", nil)
	o.State, o.Error, o.Result, o.Routing = workflow.StepFailed, "child broke", workflow.NodeResult{}, workflow.Routing{}
	end := f.commit(cw, o)
	if end.RunStatus != workflow.RunFailed || end.Continue == nil || end.Continue.NodeID != "sub" || end.Continue.Attempt != 1 {
		t.Fatalf("child's failure: %+v (continue %+v); want failed, continuing sub attempt 1", end, end.Continue)
	}
	// The node fails attempt 1 and retries.
	ld, err := f.s.LoadStep(f.ctx, "p1", "sub")
	if err != nil {
		t.Fatal(err)
	}
	wake := time.Now()
	retry := Outcome{RunID: "p1", NodeID: "sub", LoadedAttempts: ld.Step.Attempts, Attempts: 1, State: workflow.StepRetrying,
		Error: "Sub-workflow 'child' did not complete successfully", WakeAt: &wake, StartedAt: wake, FinishedAt: wake}
	if res := f.commit(pw, retry); !res.Applied || res.RunStatus != workflow.RunRunning {
		t.Fatalf("retry: %+v", res)
	}
	// Attempt 2 starts a child of its own.
	second := f.commit(pw, f.childOutcome("p1", "sub", cw, nil, nil))
	if second.Child == nil || second.Child.RunID != workflow.ChildRunID("p1", "sub", 2) || second.Child.RunID == childID {
		t.Fatalf("attempt 2: child %+v; want a fresh child", second.Child)
	}
	kids, err := f.s.Children(f.ctx, "p1")
	if err != nil || len(kids) != 2 || kids[0].Status != workflow.RunFailed || kids[1].Status != workflow.RunRunning {
		t.Errorf("children: %+v, %v; want the failed first and the running second", kids, err)
	}
	// Only the child of the awaiting attempt continues the parent.
	aw, err := f.s.AwaitingChildren(f.ctx, "p1")
	if err != nil || len(aw) != 1 || aw[0].Attempt != 2 || aw[0].ChildStatus != workflow.RunRunning {
		t.Errorf("awaiting children: %+v, %v; want attempt 2's, running", aw, err)
	}
}

// Cancelling a parent cancels its child and the child's own child; so
// does the parent's failure.
func TestCancelAndFailureCascadeToChildren(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	pw, cw := compileBlueprint(t, parentBlueprint), compileBlueprint(t, childBlueprint)
	mw := compileBlueprint(t, middleBlueprint)
	for _, id := range []string{"cancelled", "failed"} {
		middleID := f.awaitChild(pw, mw, id)
		inner := f.commit(mw, f.childOutcome(middleID, "inner", cw, nil, nil))
		grandchild := inner.Child.RunID
		other := f.awaitChild(pw, cw, "bystander-"+id) // another parent's child
		if id == "cancelled" {
			st, err := f.s.Cancel(f.ctx, id)
			if err != nil || st != workflow.RunCancelled {
				t.Fatalf("cancel: %s, %v", st, err)
			}
		} else {
			// A parallel branch of the parent fails: here the parent's
			// other step, after, made ready by hand as a branch would be.
			if _, err := f.pool.Exec(f.ctx, `INSERT INTO `+f.s.tables.Steps+` (run_id, node_id, state) VALUES ($1, 'after', 'ready')`, id); err != nil {
				t.Fatal(err)
			}
			o := f.outcome(pw, id, "after", nil)
			o.State, o.Error, o.Result, o.Routing = workflow.StepFailed, "broke", workflow.NodeResult{}, workflow.Routing{}
			if res := f.commit(pw, o); res.RunStatus != workflow.RunFailed {
				t.Fatalf("failing step: %+v", res)
			}
		}
		for _, run := range []string{middleID, grandchild} {
			r := f.run(run)
			if r.Status != workflow.RunCancelled || !strings.Contains(r.Error, id) || r.FinishedAt == nil {
				t.Errorf("%s: descendant %s is %s (%q); want cancelled, naming %s", id, run, r.Status, r.Error, id)
			}
		}
		if r := f.run(other); r.Status != workflow.RunRunning {
			t.Errorf("%s: another parent's child is %s; want running", id, r.Status)
		}
		// The cancelled middle run's step commits nothing any more.
		if res := f.commit(cw, f.outcome(cw, grandchild, "c1", nil)); res.Applied {
			t.Errorf("%s: a cancelled grandchild's step applied: %+v", id, res)
		}
	}
}

const (
	// pausingChildBlueprint pauses at a wait node.
	pausingChildBlueprint = `{"id": "pausing", "nodes": [
  {"id": "ask", "uses": "wait"},
  {"id": "got", "uses": "noop"}
], "edges": [{"source": "ask", "target": "got"}]}`
	// pausingMiddleBlueprint runs pausing as a subflow of its own.
	pausingMiddleBlueprint = `{"id": "pausing-middle", "nodes": [
  {"id": "inner", "uses": "subflow", "params": {"blueprintId": "pausing"}}
]}`
	// wideParentBlueprint runs a subflow beside another branch.
	wideParentBlueprint = `{"id": "wide", "nodes": [
  {"id": "sub", "uses": "subflow", "params": {"blueprintId": "pausing"}},
  {"id": "side", "uses": "noop"}
]}`
)

// A grandchild that pauses makes the whole chain awaiting, in the commit
// that pauses it (migration 010's trigger); AwaitedChildOf leads a resume
// from the top down to its wait step; the grandchild's resume sets the
// chain running again in its transaction, and its end continues its
// parent.
func TestChildAwaitingMakesTheChainAwait(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	pw, mw, cw := compileBlueprint(t, parentBlueprint), compileBlueprint(t, pausingMiddleBlueprint), compileBlueprint(t, pausingChildBlueprint)
	middle := f.awaitChild(pw, mw, "p1")
	grandchild := f.commit(mw, f.childOutcome(middle, "inner", cw, nil, nil)).Child.RunID
	if ac, err := f.s.AwaitedChildOf(f.ctx, "p1", "sub"); err != nil || ac == nil || ac.RunID != middle || ac.Status != workflow.RunRunning || len(ac.Awaiting) != 0 {
		t.Fatalf("awaited child of sub while it runs: %+v, %v; want %s running, awaiting nowhere", ac, err, middle)
	}
	if res := f.commit(cw, f.awaitOutcome(grandchild, "ask")); res.RunStatus != workflow.RunAwaiting {
		t.Fatalf("the grandchild's wait: %+v; want awaiting", res)
	}
	for _, id := range []string{grandchild, middle, "p1"} {
		if got := f.status(id); got.Status != "awaiting" || got.Pending != 1 || got.Awaiting != 1 {
			t.Errorf("%s: %+v; want awaiting, 1 pending, 1 awaiting", id, got)
		}
	}
	// Not stalled: only running runs are claimed.
	f.age("p1", time.Hour)
	f.age(middle, time.Hour)
	if got := f.claim(time.Minute, 10); len(got) != 0 {
		t.Errorf("claimed %+v; want no awaiting run", got)
	}
	// From the top down to the wait step.
	ac, err := f.s.AwaitedChildOf(f.ctx, "p1", "sub")
	if err != nil || ac == nil || ac.RunID != middle || !ac.Found || ac.Status != workflow.RunAwaiting || !reflect.DeepEqual(ac.Awaiting, []string{"inner"}) {
		t.Fatalf("awaited child of sub: %+v, %v; want %s awaiting at inner", ac, err, middle)
	}
	ac, err = f.s.AwaitedChildOf(f.ctx, middle, "inner")
	if err != nil || ac == nil || ac.RunID != grandchild || ac.Status != workflow.RunAwaiting || !reflect.DeepEqual(ac.Awaiting, []string{"ask"}) {
		t.Fatalf("awaited child of inner: %+v, %v; want %s awaiting at ask", ac, err, grandchild)
	}
	if ac, err := f.s.AwaitedChildOf(f.ctx, grandchild, "ask"); err != nil || ac != nil {
		t.Errorf("awaited child of a wait step: %+v, %v; want none", ac, err)
	}
	res, err := f.s.Resume(f.ctx, cw, ResumeRequest{RunID: grandchild, Resume: workflow.Resume{Node: "ask", Output: "yes"}})
	if err != nil || res.RunStatus != workflow.RunRunning {
		t.Fatalf("resume the grandchild: %+v, %v", res, err)
	}
	for _, id := range []string{grandchild, middle, "p1"} {
		if got := f.status(id); got.Status != "running" || got.Awaiting != 0 {
			t.Errorf("%s after the resume: %+v; want running, 0 awaiting", id, got)
		}
	}
	end := f.commit(cw, f.outcome(cw, grandchild, "got", nil))
	if !end.Finished || end.Continue == nil || end.Continue.RunID != middle || end.Continue.NodeID != "inner" {
		t.Fatalf("the grandchild's end: %+v (continue %+v); want completed, continuing %s's inner", end, end.Continue, middle)
	}
}

// A parent with other work stays running while its child awaits, awaits
// once that work is done, and runs again when the child ends otherwise
// (here: cancelled by id), its count back to 0.
func TestChildAwaitingBesideOtherWork(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	pw, cw := compileBlueprint(t, wideParentBlueprint), compileBlueprint(t, pausingChildBlueprint)
	f.createRun("p1", pw, nil)
	childID := f.commit(pw, f.childOutcome("p1", "sub", cw, nil, nil)).Child.RunID
	f.commit(cw, f.awaitOutcome(childID, "ask"))
	if got := f.status("p1"); got.Status != "running" || got.Pending != 2 || got.Awaiting != 1 {
		t.Errorf("parent with side still ready: %+v; want running, 2 pending, 1 awaiting", got)
	}
	if c := f.commit(pw, f.outcome(pw, "p1", "side", nil)); c.RunStatus != workflow.RunAwaiting {
		t.Errorf("side's commit: %+v; want the parent awaiting (its child awaits)", c)
	}
	if st, err := f.s.Cancel(f.ctx, childID); err != nil || st != workflow.RunCancelled {
		t.Fatalf("cancel the child: %s, %v", st, err)
	}
	if got := f.status("p1"); got.Status != "running" || got.Pending != 1 || got.Awaiting != 0 {
		t.Errorf("parent after its child's cancel: %+v; want running, 1 pending, 0 awaiting", got)
	}
}

// A resync of a parent whose step's child awaits counts that step as
// awaiting: a parent with nothing else pending is set awaiting.
func TestResyncCountsAnAwaitingChild(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	pw, cw := compileBlueprint(t, parentBlueprint), compileBlueprint(t, pausingChildBlueprint)
	childID := f.awaitChild(pw, cw, "p1")
	f.commit(cw, f.awaitOutcome(childID, "ask"))
	// The parent's row as a lost update would leave it.
	f.exec(`UPDATE ` + f.s.tables.Statuses + ` SET status = 'running', awaiting = 0 WHERE run_id = 'p1'`)
	res, err := f.s.ResyncRun(f.ctx, "p1", pw)
	if err != nil || res.Status != workflow.RunAwaiting {
		t.Fatalf("resync: %+v, %v; want awaiting", res, err)
	}
	if got := f.status("p1"); got.Status != "awaiting" || got.Pending != 1 || got.Awaiting != 1 {
		t.Errorf("parent after the resync: %+v; want awaiting, 1 pending, 1 awaiting", got)
	}
}
