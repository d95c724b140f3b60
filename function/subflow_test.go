package function_test

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// orderBlueprint runs pricing as a subflow: the child gets items, and its
// total node's output comes back at the parent's context key total.
const (
	orderBlueprint = `{"id": "order", "nodes": [
  {"id": "price", "uses": "subflow", "params": {"blueprintId": "pricing", "inputs": {"items": "items"}, "outputs": {"total": "sum"}}},
  {"id": "receipt", "uses": "transform", "inputs": "total", "params": {"expression": "{\"due\": input}"}}
], "edges": [{"source": "price", "target": "receipt"}]}`
	pricingBlueprint = `{"id": "pricing", "nodes": [
  {"id": "count", "uses": "transform", "inputs": "items", "params": {"expression": "len(input)"}},
  {"id": "sum", "uses": "transform", "inputs": "items", "params": {"expression": "sum(input)"}}
], "edges": [{"source": "count", "target": "sum"}]}`
)

func jobsOf(next []wire.NextJob) []wire.Job {
	out := make([]wire.Job, len(next))
	for i, n := range next {
		out[i] = n.Job
	}
	return out
}

// A subflow step starts its child run (its start jobs are the answer),
// holds nothing while the child runs, and is continued by the child's last
// commit, once: the parent ends as the local runner ends it.
func TestSubflowStepRunsItsChild(t *testing.T) {
	t.Parallel()
	pricing := decodeBlueprint(t, pricingBlueprint)
	tb := setup(t, withBlueprints(pricing))
	order := decodeBlueprint(t, orderBlueprint)
	input := map[string]any{"items": []any{2.0, 3.0, 5.0}}
	runID, starts := tb.createRun(order, input)

	next := tb.mustHandle(starts[0])
	childID := workflow.ChildRunID(runID, "price", 1)
	want := []wire.Job{{RunID: childID, BlueprintID: "pricing", NodeID: "count", Attempt: 1}}
	if got := jobsOf(next); !reflect.DeepEqual(got, want) {
		t.Fatalf("answer of the subflow step: %+v; want the child's start job %+v", got, want)
	}
	if s := tb.step(runID, "price"); s.State != workflow.StepAwaitingChild || s.Attempts != 0 {
		t.Errorf("price: %s after %d attempts; want awaiting_child, not counted", s.State, s.Attempts)
	}
	if r := tb.run(runID); r.Status != workflow.RunRunning || r.Pending != 1 {
		t.Errorf("parent %s with %d pending; want running, 1", r.Status, r.Pending)
	}
	if keys, err := tb.redisKeys(tb.ctx); err != nil || len(keys) != 0 {
		t.Errorf("redis keys %v, %v; want no lease held while the child runs", keys, err)
	}

	// A redelivery of the subflow job runs nothing and starts no second
	// child: it re-sends the child's pending start job.
	if again := tb.mustHandle(starts[0]); !reflect.DeepEqual(jobsOf(again), want) {
		t.Errorf("redelivery answered %+v; want the child's pending job again", again)
	}
	kids, err := tb.store.Children(tb.ctx, runID)
	if err != nil || len(kids) != 1 || kids[0].RunID != childID {
		t.Fatalf("children %+v, %v; want exactly %s", kids, err, childID)
	}

	// The child runs; its last commit answers with the parent's
	// continuation, the same attempt.
	next = tb.mustHandle(want[0])
	if len(next) != 1 || next[0].NodeID != "sum" {
		t.Fatalf("count answered %+v; want sum", next)
	}
	next = tb.mustHandle(next[0].Job)
	cont := wire.Job{RunID: runID, BlueprintID: "order", NodeID: "price", Attempt: 1}
	if got := jobsOf(next); !reflect.DeepEqual(got, []wire.Job{cont}) {
		t.Fatalf("the child's last step answered %+v; want the continuation %+v", got, cont)
	}
	next = tb.mustHandle(cont)
	if len(next) != 1 || next[0].NodeID != "receipt" {
		t.Fatalf("continuation answered %+v; want receipt", next)
	}
	// The continuation again (a duplicate) re-emits, runs nothing.
	if s := tb.step(runID, "price"); s.State != workflow.StepSucceeded || s.Attempts != 1 {
		t.Errorf("price: %s after %d attempts; want succeeded after 1", s.State, s.Attempts)
	}
	tb.deliverAll(nil, next[0].Job, cont)
	got := tb.assertCompleted(runID, map[string]any{"receipt": map[string]any{"due": 10.0}})

	// The same as in process.
	local, err := workflow.Run(tb.ctx, order, tb.reg, input, workflow.RunOptions{RunID: runID, Blueprints: map[string]*workflow.Blueprint{"pricing": pricing}})
	if err != nil || local.Status != workflow.RunCompleted {
		t.Fatalf("local run: %+v, %v", local, err)
	}
	if !reflect.DeepEqual(workflow.Normalize(got.StatusData), workflow.Normalize(local.Context)) {
		t.Errorf("final context on the stack %v; in process %v", got.StatusData, local.Context)
	}
}

// A child that fails fails the attempt of its subflow step: the step
// retries with a fresh child, then its fallback runs.
func TestSubflowFailedChildRetriesThenFallsBack(t *testing.T) {
	t.Parallel()
	broken := decodeBlueprint(t, `{"id": "broken", "nodes": [{"id": "bad", "uses": "probe", "params": {"fail": "child broke"}}]}`)
	tb := setup(t, withBlueprints(broken))
	parent := decodeBlueprint(t, `{"id": "parent", "nodes": [
  {"id": "sub", "uses": "subflow", "params": {"blueprintId": "broken"}, "config": {"maxRetries": 2, "fallback": "plan-b"}},
  {"id": "plan-b", "uses": "transform", "params": {"expression": "'fallback'"}}
]}`)
	runID, starts := tb.createRun(parent, nil)
	tb.deliverAll(nil, starts...)
	tb.assertCompleted(runID, map[string]any{"sub": "fallback", "plan-b": "fallback"})
	if n := tb.probes.count("bad"); n != 2 {
		t.Errorf("the child's node ran %d times; want 2 (one child per attempt)", n)
	}
	kids, err := tb.store.Children(tb.ctx, runID)
	if err != nil || len(kids) != 2 {
		t.Fatalf("children %+v, %v; want two", kids, err)
	}
	for i, k := range kids {
		if k.RunID != workflow.ChildRunID(runID, "sub", i+1) || k.Status != workflow.RunFailed {
			t.Errorf("child %d: %+v; want attempt %d's, failed", i, k, i+1)
		}
	}
	s := tb.step(runID, "sub")
	if s.State != workflow.StepRecovered || s.Attempts != 2 || !strings.Contains(s.Error, "Sub-workflow 'broken' did not complete successfully. Status: failed. Error: node 'bad': child broke") {
		t.Errorf("sub: %s after %d attempts, error %q; want recovered after 2, naming the child's failure", s.State, s.Attempts, s.Error)
	}
}

// A child blueprint that is neither registered nor stored fails the step
// with an error naming it; one stored by an earlier run is found.
func TestSubflowChildBlueprintLookup(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	parent := decodeBlueprint(t, `{"id": "parent", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "elsewhere"}}]}`)
	runID, starts := tb.createRun(parent, nil)
	tb.deliverAll(nil, starts...)
	r := tb.run(runID)
	if r.Status != workflow.RunFailed || !strings.Contains(r.Error, `no blueprint "elsewhere"`) || !strings.Contains(r.Error, "BLUEPRINTS_DIR") {
		t.Errorf("run %s: %q; want failed, naming the blueprint and BLUEPRINTS_DIR", r.Status, r.Error)
	}
	if kids, _ := tb.store.Children(tb.ctx, runID); len(kids) != 0 {
		t.Errorf("children %+v; want none", kids)
	}

	// Stored: a run of it stored its snapshot.
	elsewhere := decodeBlueprint(t, `{"id": "elsewhere", "nodes": [{"id": "x", "uses": "transform", "params": {"expression": "42"}}]}`)
	tb.createRun(elsewhere, nil)
	runID, starts = tb.createRun(parent, nil)
	tb.deliverAll(nil, starts...)
	tb.assertCompleted(runID, map[string]any{"sub": 42.0})
}

// A blueprint that runs itself stops 64 runs deep, as in process: the
// innermost subflow step fails, and each run above fails with its child.
func TestSubflowDepthIsBounded(t *testing.T) {
	t.Parallel()
	selfish := decodeBlueprint(t, `{"id": "selfish", "nodes": [{"id": "again", "uses": "subflow", "params": {"blueprintId": "selfish"}}]}`)
	tb := setup(t)
	runID, starts := tb.createRun(selfish, nil)
	tb.deliverAll(nil, starts...)
	r := tb.run(runID)
	if r.Status != workflow.RunFailed || !strings.Contains(r.Error, `subflow "selfish": runs nested more than 64 deep`) {
		t.Fatalf("run %s: %.300q; want failed, saying how deep", r.Status, r.Error)
	}
	var runs int
	if err := tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM `+tb.tables.Quoted().Statuses).Scan(&runs); err != nil {
		t.Fatal(err)
	}
	if runs != 65 {
		t.Errorf("%d runs; want 65 (the run and 64 nested children)", runs)
	}
	local, err := workflow.Run(tb.ctx, selfish, tb.reg, nil, workflow.RunOptions{RunID: runID})
	if err != nil || local.Status != workflow.RunFailed || len(local.Errors) == 0 || local.Errors[0].Message != r.Error {
		t.Errorf("in process: %s, %v; want the same failure as on the stack", local.Status, err)
		if len(local.Errors) > 0 {
			t.Logf("in process ...%s\non the stack ...%s", tail(local.Errors[0].Message), tail(r.Error))
		}
	}
}

func tail(s string) string { return s[max(0, len(s)-200):] }

// A child that pauses in the same request (one group commit) as its
// parent's other branch finishing: the child's status row is locked and
// updated first (its id sorts before the parent's), moving the parent's
// awaiting count through migration 010's trigger; the parent's own update
// in that transaction keeps the move, so the parent, left with only the
// subflow step awaiting its paused child, is awaiting.
func TestChildPausesInItsParentsGroupCommit(t *testing.T) {
	t.Parallel()
	child := decodeBlueprint(t, `{"id": "asker", "nodes": [{"id": "decide", "uses": "wait"}]}`)
	tb := setup(t, withBlueprints(child))
	parent := decodeBlueprint(t, `{"id": "asks", "nodes": [{"id": "start", "uses": "noop"},
	  {"id": "sub", "uses": "subflow", "params": {"blueprintId": "asker"}}, {"id": "side", "uses": "noop"}],
	  "edges": [{"source": "start", "target": "sub"}, {"source": "start", "target": "side"}]}`)
	runID, starts := tb.createRun(parent, nil)
	var sub, side wire.Job
	for _, j := range jobsOf(tb.mustHandle(starts[0])) {
		switch j.NodeID {
		case "sub":
			sub = j
		case "side":
			side = j
		}
	}
	kids := jobsOf(tb.mustHandle(sub))
	childID := workflow.ChildRunID(runID, "sub", 1)
	if len(kids) != 1 || kids[0].RunID != childID || childID > runID {
		t.Fatalf("the subflow step answered %+v; want the start job of child %s (which sorts before %s)", kids, childID, runID)
	}
	for i, r := range tb.f.HandleBatch(tb.ctx, jobEvents(kids[0], side)) {
		if r.Status != http.StatusOK {
			t.Fatalf("job %d of the batch: %d %s", i, r.Status, r.Error)
		}
	}
	if r := tb.run(childID); r.Status != workflow.RunAwaiting {
		t.Fatalf("child %s, want awaiting", r.Status)
	}
	if r := tb.run(runID); r.Status != workflow.RunAwaiting || r.Pending != 1 {
		t.Errorf("parent %s with %d pending; want awaiting, its one pending step awaiting the paused child", r.Status, r.Pending)
	}
}
