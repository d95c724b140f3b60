package store

// Awaiting steps and resumes against a real PostgreSQL, with the fixture
// of commit_test.go: steps are committed by hand as the step function
// commits them, a wait node's step as the awaiting outcome of its attempt.

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/workflow"
)

const approvalBlueprint = `{"id": "approval", "nodes": [
  {"id": "start", "uses": "noop"},
  {"id": "review", "uses": "wait"},
  {"id": "approve", "uses": "noop"},
  {"id": "reject", "uses": "noop"},
  {"id": "big", "uses": "noop"}
], "edges": [
  {"source": "start", "target": "review"},
  {"source": "review", "target": "approve", "action": "approve"},
  {"source": "review", "target": "reject", "action": "reject"},
  {"source": "review", "target": "big", "action": "size", "condition": "result.output.amount > 100"}
]}`

// awaitOutcome is the outcome of a wait node's attempt: its step awaits.
func (f *commitFixture) awaitOutcome(runID, nodeID string) Outcome {
	f.t.Helper()
	ld, err := f.s.LoadStep(f.ctx, runID, nodeID)
	if err != nil || ld.Step == nil {
		f.t.Fatalf("load %s/%s: %v, %+v", runID, nodeID, err, ld)
	}
	now := time.Now()
	return Outcome{RunID: runID, NodeID: nodeID, LoadedAttempts: ld.Step.Attempts, Attempts: ld.Step.Attempts + 1,
		State: workflow.StepAwaiting, StartedAt: now, FinishedAt: now}
}

// statusRow is a run's bookkeeping.
type statusRow struct {
	Status            string
	Pending, Awaiting int
	UpdatedAt         time.Time
}

func (f *commitFixture) status(runID string) statusRow {
	f.t.Helper()
	var r statusRow
	if err := f.pool.QueryRow(f.ctx, `SELECT status, pending, awaiting, updated_at FROM `+f.s.tables.Statuses+` WHERE run_id = $1`, runID).
		Scan(&r.Status, &r.Pending, &r.Awaiting, &r.UpdatedAt); err != nil {
		f.t.Fatalf("status of %s: %v", runID, err)
	}
	return r
}

// awaitingRun creates run id of the approval blueprint and commits it up
// to its wait node, which awaits.
func (f *commitFixture) awaitingRun(w *workflow.Workflow, id string) {
	f.t.Helper()
	f.createRun(id, w, map[string]any{"order": 7.0})
	f.commit(w, f.outcome(w, id, "start", "doc.pdf"))
	res := f.commit(w, f.awaitOutcome(id, "review"))
	if !res.Applied || res.RunStatus != workflow.RunAwaiting || len(res.Ready) != 0 {
		f.t.Fatalf("commit of the wait node: %+v; want applied, awaiting, nothing ready", res)
	}
}

func TestAwaitingStepMakesTheRunAwait(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, approvalBlueprint)
	f.awaitingRun(w, "r1")
	if got := f.status("r1"); got.Status != "awaiting" || got.Pending != 1 || got.Awaiting != 1 {
		t.Errorf("status row %+v; want awaiting with 1 pending, 1 awaiting", got)
	}
	row := f.row("r1", "review")
	if row.State != "awaiting" || row.Attempts != 1 || row.FinishedAt != nil {
		t.Errorf("wait step %s; want awaiting after 1 attempt, not finished", row)
	}
	// No pending row: nothing for the reconciler to republish.
	if pend, err := f.s.PendingSteps(f.ctx, nil, "r1"); err != nil || len(pend) != 0 {
		t.Errorf("pending steps %v, %v; want none", pend, err)
	}
}

func TestResumeRoutesByAction(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, approvalBlueprint)
	f.awaitingRun(w, "r1")
	res, err := f.s.Resume(f.ctx, w, ResumeRequest{RunID: "r1", Resume: workflow.Resume{Node: "review", Output: map[string]any{"by": "ada"}, Action: "approve"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.RunStatus != workflow.RunRunning || !reflect.DeepEqual(res.Ready, []string{"approve"}) || res.Finished {
		t.Errorf("resumed %+v; want running with approve ready", res)
	}
	if got := f.status("r1"); got.Status != "running" || got.Pending != 1 || got.Awaiting != 0 {
		t.Errorf("status row %+v; want running, 1 pending, 0 awaiting", got)
	}
	row := f.row("r1", "review")
	if row.State != "succeeded" || row.Action == nil || *row.Action != "approve" || !reflect.DeepEqual(row.Taken, []string{"approve"}) ||
		!reflect.DeepEqual(row.Output, map[string]any{"by": "ada"}) || row.FinishedAt == nil {
		t.Errorf("wait step %s; want succeeded with the resume's output and action", row)
	}
	for _, id := range []string{"reject", "big"} {
		if r := f.row("r1", id); r == nil || r.State != "skipped" {
			t.Errorf("%s: %s, want skipped", id, r)
		}
	}
	// The run goes on as any: approve's commit completes it.
	if c := f.commit(w, f.outcome(w, "r1", "approve", "ok")); c.RunStatus != workflow.RunCompleted {
		t.Errorf("after approve: %+v, want completed", c)
	}
}

func TestResumeRefusals(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, approvalBlueprint)
	f.awaitingRun(w, "r1")
	f.createRun("fresh", w, nil)
	before := f.status("r1")
	tests := []struct {
		name string
		req  ResumeRequest
		is   error
		msg  string
	}{
		{"unknown run", ResumeRequest{RunID: "nope", Resume: workflow.Resume{Node: "review"}}, ErrRunNotFound, "run nope"},
		{"unknown node", ResumeRequest{RunID: "r1", Resume: workflow.Resume{Node: "ghost"}}, ErrInvalidResume, `has no node "ghost"`},
		{"not a wait node", ResumeRequest{RunID: "r1", Resume: workflow.Resume{Node: "start"}}, ErrNotAwaiting, "not a wait node"},
		{"not reached", ResumeRequest{RunID: "fresh", Resume: workflow.Resume{Node: "review"}}, ErrNotAwaiting, "not been reached yet"},
		{"routing fails", ResumeRequest{RunID: "r1", Resume: workflow.Resume{Node: "review", Output: "not an object", Action: "size"}}, ErrInvalidResume, "condition"},
	}
	for _, tt := range tests {
		_, err := f.s.Resume(f.ctx, w, tt.req)
		if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: %v; want %v with %q", tt.name, err, tt.is, tt.msg)
		}
	}
	if after := f.status("r1"); after != before {
		t.Errorf("status row %+v after refused resumes, was %+v", after, before)
	}
	if row := f.row("r1", "review"); row.State != "awaiting" {
		t.Errorf("wait step %s after refused resumes", row)
	}
	if row := f.row("r1", "big"); row != nil {
		t.Errorf("a refused resume left %s", row)
	}
}

// Many resumes of one step at once: one wins, every other is refused, and
// what follows is made ready once.
func TestRacingResumes(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 8)
	w := compileBlueprint(t, approvalBlueprint)
	f.awaitingRun(w, "r1")
	const n = 24
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []*Resumed
	var refused int
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			res, err := f.s.Resume(f.ctx, w, ResumeRequest{RunID: "r1", Resume: workflow.Resume{Node: "review", Output: i, Action: "reject"}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, res)
			case errors.Is(err, ErrNotAwaiting) && strings.Contains(err.Error(), "resumed already"):
				refused++
			default:
				t.Errorf("resume %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(won) != 1 || refused != n-1 || !reflect.DeepEqual(won[0].Ready, []string{"reject"}) {
		t.Fatalf("%d won (%+v), %d refused; want 1 making reject ready, %d refused", len(won), won, refused, n-1)
	}
	if got := f.status("r1"); got.Pending != 1 || got.Awaiting != 0 {
		t.Errorf("status row %+v; want 1 pending (reject), 0 awaiting", got)
	}
}

// A wait beside a branch that still runs: the run stays running while the
// branch does, and awaits once it has finished.
func TestAwaitingOnlyWhenNothingElsePending(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, `{"id": "side", "nodes": [
	  {"id": "start", "uses": "noop"}, {"id": "gate", "uses": "wait"}, {"id": "side", "uses": "noop"}
	], "edges": [{"source": "start", "target": "gate"}, {"source": "start", "target": "side"}]}`)
	f.createRun("r1", w, nil)
	f.commit(w, f.outcome(w, "r1", "start", "go"))
	if c := f.commit(w, f.awaitOutcome("r1", "gate")); c.RunStatus != workflow.RunRunning {
		t.Fatalf("gate awaits beside side: %+v, want running", c)
	}
	if got := f.status("r1"); got.Status != "running" || got.Pending != 2 || got.Awaiting != 1 {
		t.Errorf("status row %+v; want running, 2 pending, 1 awaiting", got)
	}
	if c := f.mustCommitGeneral(w, f.outcome(w, "r1", "side", "done")); c.RunStatus != workflow.RunAwaiting {
		t.Fatalf("side finished: %+v, want awaiting", c)
	}
	// The run resumed at its last step completes.
	res, err := f.s.Resume(f.ctx, w, ResumeRequest{RunID: "r1", Resume: workflow.Resume{Node: "gate", Output: "opened"}})
	if err != nil || res.RunStatus != workflow.RunCompleted || !res.Finished || len(res.Ready) != 0 {
		t.Fatalf("resume: %+v, %v; want completed", res, err)
	}
	if got := f.status("r1"); got.Status != "completed" || got.Pending != 0 {
		t.Errorf("status row %+v", got)
	}
}

func TestCancelAwaitingRun(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, approvalBlueprint)
	f.awaitingRun(w, "r1")
	if st, err := f.s.Cancel(f.ctx, "r1"); err != nil || st != workflow.RunCancelled {
		t.Fatalf("cancel: %s, %v", st, err)
	}
	_, err := f.s.Resume(f.ctx, w, ResumeRequest{RunID: "r1", Resume: workflow.Resume{Node: "review"}})
	if !errors.Is(err, ErrNotAwaiting) || !strings.Contains(err.Error(), "is cancelled") {
		t.Errorf("resume of a cancelled run: %v", err)
	}
}

// A run left running with only an awaiting step (a hand-edited row) is
// set awaiting by a resync, not completed.
func TestResyncAwaitingRun(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, approvalBlueprint)
	f.awaitingRun(w, "r1")
	if _, err := f.pool.Exec(f.ctx, `UPDATE `+f.s.tables.Statuses+` SET status = 'running', pending = 0, awaiting = 0 WHERE run_id = 'r1'`); err != nil {
		t.Fatal(err)
	}
	res, err := f.s.ResyncRun(f.ctx, "r1", w)
	if err != nil || res.Status != workflow.RunAwaiting || res.Pending != 1 {
		t.Fatalf("resync: %+v, %v; want awaiting with 1 pending", res, err)
	}
	if got := f.status("r1"); got.Status != "awaiting" || got.Pending != 1 || got.Awaiting != 1 {
		t.Errorf("status row %+v", got)
	}
}

const paymentBlueprint = `{"id": "payment", "nodes": [
  {"id": "hook", "uses": "webhook"}, {"id": "paid", "uses": "wait"}, {"id": "charge", "uses": "noop"}
], "edges": [{"source": "hook", "target": "paid"}, {"source": "paid", "target": "charge"}]}`

func TestWebhookResume(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, paymentBlueprint)
	f.createRun("r1", w, nil)
	const token = "secret-token-of-the-test"
	o := f.outcome(w, "r1", "hook", map[string]any{"url": "https://x/webhooks/r1/hook/" + token, "event": "webhook:hook"})
	o.WebhookHash = HashWebhookToken(token)
	if c := f.commit(w, o); !reflect.DeepEqual(c.Ready, []string{"paid"}) {
		t.Fatalf("hook's commit: %+v", c)
	}
	var stored []byte
	if err := f.pool.QueryRow(f.ctx, `SELECT webhook_hash FROM `+f.s.tables.Steps+` WHERE run_id = 'r1' AND node_id = 'hook'`).Scan(&stored); err != nil || !reflect.DeepEqual(stored, HashWebhookToken(token)) {
		t.Fatalf("stored hash %x, %v", stored, err)
	}
	hook := func(run, step, tok string) error {
		_, err := f.s.Resume(f.ctx, w, ResumeRequest{RunID: run, Webhook: step, Token: tok, Resume: workflow.Resume{Output: map[string]any{"paid": true}}})
		return err
	}
	// Before the wait node awaits: refused, the endpoint kept.
	if err := hook("r1", "hook", token); !errors.Is(err, ErrNotAwaiting) {
		t.Errorf("before the wait awaits: %v, want ErrNotAwaiting", err)
	}
	f.commit(w, f.awaitOutcome("r1", "paid"))
	for _, bad := range []struct{ run, step, token string }{
		{"r1", "hook", token + "x"}, {"r1", "hook", ""}, {"r1", "paid", token}, {"r1", "charge", token}, {"nope", "hook", token},
	} {
		err := hook(bad.run, bad.step, bad.token)
		if !errors.Is(err, ErrWebhookNotFound) && !errors.Is(err, ErrRunNotFound) {
			t.Errorf("%+v: %v, want no such webhook", bad, err)
		}
	}
	if row := f.row("r1", "paid"); row.State != "awaiting" {
		t.Fatalf("after bad requests the wait step is %s", row)
	}
	res, err := f.s.Resume(f.ctx, w, ResumeRequest{RunID: "r1", Webhook: "hook", Token: token, Resume: workflow.Resume{Output: map[string]any{"paid": true}}})
	if err != nil || res.Node != "paid" || !reflect.DeepEqual(res.Ready, []string{"charge"}) {
		t.Fatalf("webhook resume: %+v, %v", res, err)
	}
	if err := hook("r1", "hook", token); !errors.Is(err, ErrWebhookUsed) {
		t.Errorf("replay: %v, want ErrWebhookUsed", err)
	}
	if got := fmt.Sprint(f.row("r1", "paid").Output); got != "map[paid:true]" {
		t.Errorf("wait output %s", got)
	}
}
