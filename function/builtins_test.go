package function_test

// Loops and batches through the step function against the real PostgreSQL
// and Redis: each iteration and each batch worker is a step of its own,
// keyed by its step key, and the run ends as the local runner (which
// passes Flowcraft's conformance corpus) ends it.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// readExample decodes examples/<name>.json.
func readExample(t *testing.T, name string) *workflow.Blueprint {
	t.Helper()
	b, err := os.ReadFile("../examples/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	bp, err := workflow.Decode(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return bp
}

// local runs bp in-process: what the stack must agree with.
func (tb *testBundle) local(bp *workflow.Blueprint, runID string, input map[string]any) *workflow.RunResult {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	res, err := workflow.Run(ctx, bp, tb.reg, input, workflow.RunOptions{RunID: runID})
	if err != nil {
		tb.t.Fatalf("local run: %v", err)
	}
	return res
}

// assertLikeLocal checks that the stack's run runID of bp ended as the
// local runner's run of the same blueprint, input and run id.
func (tb *testBundle) assertLikeLocal(bp *workflow.Blueprint, runID string, input map[string]any) *workflow.RunResult {
	tb.t.Helper()
	want := tb.local(bp, runID, input)
	got := tb.run(runID)
	if got.Status != want.Status {
		tb.t.Fatalf("run %s is %s (%s), the local run %s (%+v)", runID, got.Status, got.Error, want.Status, want.Errors)
	}
	if want.Status == workflow.RunCompleted {
		testenv.AssertJSON(tb.t, "final context", got.StatusData, want.Context)
	}
	return want
}

// createRunWithID is createRun with a chosen run id (so that batch ids,
// which derive from it, match a local run's).
func (tb *testBundle) createRunWithID(runID string, bp *workflow.Blueprint, input map[string]any) []wire.Job {
	tb.t.Helper()
	w, err := workflow.Compile(bp, tb.reg)
	if err != nil {
		tb.t.Fatalf("compile: %v", err)
	}
	starts, err := tb.store.CreateRun(tb.ctx, runID, w, input)
	if err != nil {
		tb.t.Fatalf("create run: %v", err)
	}
	jobs := make([]wire.Job, len(starts))
	for i, id := range starts {
		jobs[i] = wire.Job{RunID: runID, BlueprintID: bp.ID, NodeID: id, Attempt: 1}
	}
	return jobs
}

func stepKeys(t *testing.T, tb *testBundle, runID string) []string {
	t.Helper()
	steps, err := tb.store.Steps(tb.ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range steps {
		out = append(out, s.NodeID+"="+string(s.State))
	}
	slices.Sort(out)
	return out
}

func TestLoopRunsItsIterationsAsSteps(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := readExample(t, "loop")
	runID := "loop-" + testenv.RandomHex(6)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, nil)...)
	tb.assertLikeLocal(bp, runID, nil)
	r := tb.run(runID)
	testenv.AssertJSON(t, "liftoff's output", r.StatusData["_outputs.liftoff"], map[string]any{"liftoff": true, "last": 0})
	testenv.AssertJSON(t, "tick's (last) output", r.StatusData["tick"], 0)
	want := []string{"countdown#0=succeeded", "countdown#1=succeeded", "countdown#2=succeeded", "countdown#3=succeeded", "countdown=succeeded",
		"init=succeeded", "liftoff=succeeded", "tick#1=succeeded", "tick#2=succeeded", "tick#3=succeeded"}
	if got := stepKeys(t, tb, runID); !slices.Equal(got, want) {
		t.Errorf("steps %v, want %v", got, want)
	}
	tick := tb.step(runID, "tick#2")
	if tick.Node != "tick" || tick.Iteration != 2 {
		t.Errorf("step tick#2 is stored as node %q iteration %d, want tick 2", tick.Node, tick.Iteration)
	}
}

func TestLoopJobsCarryStepKeys(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := readExample(t, "loop")
	runID, starts := tb.createRun(bp, nil)
	next := tb.mustHandle(starts[0]) // init → countdown#0
	if len(next) != 1 || next[0].NodeID != "countdown" || next[0].StepKey != "countdown#0" || next[0].ID() != runID+":countdown#0:1" {
		t.Fatalf("after init: %+v, want the job of countdown#0", next)
	}
	next = tb.mustHandle(next[0].Job) // countdown#0 → tick#1
	if len(next) != 1 || next[0].NodeID != "tick" || next[0].StepKey != "tick#1" {
		t.Fatalf("after countdown#0: %+v, want the job of tick#1", next)
	}
	tick1 := next[0].Job
	again := tb.mustHandle(tick1)
	if len(again) != 1 || again[0].StepKey != "countdown#1" {
		t.Fatalf("after tick#1: %+v, want the job of countdown#1", again)
	}
	// A redelivery of tick#1 runs nothing and re-emits countdown#1.
	redelivered := tb.mustHandle(tick1)
	if len(redelivered) != 1 || redelivered[0].StepKey != "countdown#1" {
		t.Fatalf("tick#1 redelivered: %+v, want countdown#1 re-emitted", redelivered)
	}
	if n := tb.run(runID).Pending; n != 1 {
		t.Errorf("pending %d after a redelivery, want 1", n)
	}
	// A job naming a step of another node, or a loop node without its
	// iteration, is refused.
	for _, bad := range []wire.Job{
		{RunID: runID, BlueprintID: bp.ID, NodeID: "init", StepKey: "tick#1", Attempt: 1},
		{RunID: runID, BlueprintID: bp.ID, NodeID: "tick", Attempt: 1},
	} {
		if _, err := tb.handle(nil, bad); status(err) != 422 || !strings.Contains(err.Error(), "tick") {
			t.Errorf("job %+v: %v (status %d), want 422 naming the step", bad, err, status(err))
		}
	}
}

func TestLoopMaxIterationsFailsTheRunNamingTheController(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "runaway", "nodes": [
		{"id": "init", "uses": "set-context", "params": {"values": {"n": 10}}},
		{"id": "spin", "uses": "loop-controller", "params": {"condition": "n > 0", "maxIterations": 3}, "config": {"joinStrategy": "any"}},
		{"id": "tick", "uses": "decrement", "params": {"key": "n"}},
		{"id": "after", "uses": "noop"}],
		"edges": [{"source": "init", "target": "spin"}, {"source": "spin", "target": "tick", "action": "continue"},
			{"source": "tick", "target": "spin"}, {"source": "spin", "target": "after", "action": "break"}]}`)
	runID := "runaway-" + testenv.RandomHex(6)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, nil)...)
	local := tb.assertLikeLocal(bp, runID, nil)
	r := tb.run(runID)
	if r.Status != workflow.RunFailed || !strings.Contains(r.Error, `loop-controller "spin": maxIterations 3`) || r.StatusData["nodeId"] != "spin" {
		t.Fatalf("run %s: %q, status data %v; want failed by spin's maxIterations", r.Status, r.Error, r.StatusData)
	}
	if len(local.Errors) == 0 || !strings.Contains(r.Error, local.Errors[0].Message) {
		t.Errorf("error %q, the local run's %+v", r.Error, local.Errors)
	}
	if s := tb.step(runID, "spin#3"); s == nil || s.State != workflow.StepFailed {
		t.Errorf("step spin#3: %+v, want failed", s)
	}
}

func TestLoopFallbackRunsInItsIteration(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "loop-fallback", "nodes": [
		{"id": "init", "uses": "set-context", "params": {"values": {"n": 2}}},
		{"id": "check", "uses": "loop-controller", "params": {"condition": "n > 0"}, "config": {"joinStrategy": "any"}},
		{"id": "work", "uses": "probe", "params": {"fail": "down"}, "config": {"fallback": "rescue"}},
		{"id": "rescue", "uses": "decrement", "params": {"key": "n"}},
		{"id": "end", "uses": "noop"}],
		"edges": [{"source": "init", "target": "check"}, {"source": "check", "target": "work", "action": "continue"},
			{"source": "work", "target": "check"}, {"source": "check", "target": "end", "action": "break"}]}`)
	runID := "fb-" + testenv.RandomHex(6)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, nil)...)
	tb.assertLikeLocal(bp, runID, nil)
	for _, k := range []string{"work#1", "work#2"} {
		if s := tb.step(runID, k); s == nil || s.State != workflow.StepRecovered {
			t.Errorf("step %s: %+v, want recovered", k, s)
		}
	}
	for _, k := range []string{"rescue#1", "rescue#2"} {
		if s := tb.step(runID, k); s == nil || s.State != workflow.StepSucceeded {
			t.Errorf("step %s: %+v, want succeeded", k, s)
		}
	}
}

var _ = fmt.Sprint

func TestBatchExampleGathersInItemOrder(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := readExample(t, "batch")
	input := map[string]any{"items": []any{
		map[string]any{"sku": "KB-101", "qty": 1, "price": 89.9},
		map[string]any{"sku": "MS-202", "qty": 2, "price": 24.5},
		map[string]any{"sku": "CB-303", "qty": 3, "price": 4.99},
	}}
	runID := "batch-" + testenv.RandomHex(6)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, input)...)
	tb.assertLikeLocal(bp, runID, input)
}
