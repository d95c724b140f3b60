package e2e

// The example workflows end to end, as `make demo` runs them, and under
// load.

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// The order example with examples/order.input.json: every node's output
// as examples/README.md lists it.
func TestOrderExample(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "order")

	runID := tb.start(bp, exampleInput(t, "order"))
	res := tb.wait(runID, 20*time.Second)

	if res.Status != workflow.RunCompleted {
		t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"notified":"ada@example.com","channel":"email"}`))
	assertSteps(t, res, map[string]wantStep{
		"validate": {workflow.StepSucceeded, 1}, "review": {workflow.StepSucceeded, 1}, "reserve": {workflow.StepSucceeded, 1},
		"payment-gateway": {workflow.StepSucceeded, 2}, "charge": {workflow.StepSucceeded, 1}, "ship": {workflow.StepSucceeded, 1},
		"notify": {workflow.StepSucceeded, 1},
	})
	order := `{"orderId":"A-1001","total":138.9,"items":[{"sku":"KB-101","qty":1,"price":89.9},{"sku":"MS-202","qty":2,"price":24.5}],"customer":"ada@example.com"}`
	outputs := map[string]string{
		"validate":        order,
		"review":          `{"reviewed":true}`,
		"reserve":         `{"reserved":["KB-101","MS-202"],"warehouse":"central"}`,
		"payment-gateway": order,
		"charge":          fmt.Sprintf(`{"chargeId":"ch-%s","amount":138.9,"currency":"EUR"}`, runID),
		"ship":            fmt.Sprintf(`{"trackingId":"trk-%s","carrier":"DHL"}`, runID),
		"notify":          `{"notified":"ada@example.com","channel":"email"}`,
	}
	for id, want := range outputs {
		testenv.AssertJSON(t, "_outputs."+id, res.Context["_outputs."+id], json.RawMessage(want))
	}
	for _, s := range res.Steps {
		if s.NodeID == "validate" && s.Action != "big" {
			t.Errorf("validate's action %q, want big", s.Action)
		}
	}
	gw := tb.nodes.of(runID, "payment-gateway")
	if len(gw) != 2 || errString(gw[0].Err) != "flaky: attempt 1 of 1 planned failures" || gw[1].Err != nil {
		t.Errorf("payment-gateway calls %+v, want a planned failure then a success", gw)
	}
	steps := tb.steps(runID)
	testenv.AssertJSON(t, "ship's input", steps["ship"].Input, json.RawMessage(fmt.Sprintf(`{"review":{"reviewed":true},"reserve":{"reserved":["KB-101","MS-202"],"warehouse":"central"},"charge":{"chargeId":"ch-%s","amount":138.9,"currency":"EUR"}}`, runID)))
	testenv.AssertJSON(t, "notify's input", steps["notify"].Input, json.RawMessage(fmt.Sprintf(`{"customer":"ada@example.com","trackingId":"trk-%s"}`, runID)))
	for id := range outputs {
		want := 1
		if id == "payment-gateway" {
			want = 2
		}
		if n := tb.nodes.count(runID, id); n != want {
			t.Errorf("node %s ran %d times, want %d", id, n, want)
		}
	}
}

// 100 runs of the fan-out example at once all complete, each with its own
// output, within a bounded time.
func TestManyConcurrentRuns(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "fanout")
	const runs = 100

	began := time.Now()
	ids := make([]string, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() { ids[i] = tb.start(bp, map[string]any{"i": i}) })
	}
	wg.Wait()
	deadline := began.Add(60 * time.Second)
	for i, runID := range ids {
		res := tb.wait(runID, time.Until(deadline))
		if res.Status != workflow.RunCompleted {
			t.Errorf("run %d (%s): status %s, errors %v", i, runID, res.Status, res.Errors)
			continue
		}
		want := map[string]any{}
		for b := 1; b <= 8; b++ {
			want[fmt.Sprintf("b%d", b)] = map[string]any{"i": i}
		}
		testenv.AssertJSON(t, fmt.Sprintf("run %d output", i), res.Output, want)
		if len(res.Steps) != 11 {
			t.Errorf("run %d: %d steps, want 11", i, len(res.Steps))
		}
		for _, s := range res.Steps {
			if s.State != workflow.StepSucceeded || s.Attempts != 1 {
				t.Errorf("run %d: step %s %s after %d attempts", i, s.NodeID, s.State, s.Attempts)
			}
			if n := tb.nodes.count(runID, s.NodeID); n != 1 {
				t.Errorf("run %d: node %s ran %d times", i, s.NodeID, n)
			}
		}
	}
	t.Logf("%d runs of fanout (%d steps) in %s", runs, runs*11, time.Since(began).Round(time.Millisecond))
}

// assertLikeLocal checks that a run of the stack ended as the local
// runner's run of the same blueprint, input and run id ends: status,
// output, context, and its steps (loop iterations and batch workers by
// step key) in order.
func assertLikeLocal(t *testing.T, bp *workflow.Blueprint, input map[string]any, res *workflow.RunResult) {
	t.Helper()
	want, err := workflow.Run(t.Context(), bp, nodes.Registry(), input, workflow.RunOptions{RunID: res.RunID})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != want.Status {
		t.Fatalf("status %s, the local run's %s; errors %v", res.Status, want.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, want.Output)
	testenv.AssertJSON(t, "context", res.Context, want.Context)
	type step struct {
		Node, Key string
		Iteration int
		State     workflow.StepState
		Attempts  int
	}
	list := func(r *workflow.RunResult) []step {
		var out []step
		for _, s := range r.Steps {
			out = append(out, step{s.NodeID, s.StepKey, s.Iteration, s.State, s.Attempts})
		}
		return out
	}
	testenv.AssertJSON(t, "steps", list(res), list(want))
}

// The batch example on the stack: a price-line worker per line, two at a
// time, gathered in line order.
func TestBatchExample(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "batch")
	input := exampleInput(t, "batch")
	runID := tb.start(bp, input)
	res := tb.wait(runID, 30*time.Second)
	assertLikeLocal(t, bp, input, res)
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"lines":3,"total":153.87}`))
	batch := workflow.BatchID(runID, "lines_scatter")
	for i := range 3 {
		if n := tb.nodes.count(runID, fmt.Sprintf("price-line_%s_%d", batch, i)); n != 1 {
			t.Errorf("worker %d ran %d times, want once", i, n)
		}
	}
}

// The loop example on the stack: tick#1 … tick#3, then liftoff.
func TestLoopExample(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "loop")
	runID := tb.start(bp, nil)
	res := tb.wait(runID, 30*time.Second)
	assertLikeLocal(t, bp, nil, res)
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"liftoff":true,"last":0}`))
	var keys []string
	for _, s := range res.Steps {
		if s.NodeID == "tick" {
			keys = append(keys, s.StepKey)
		}
	}
	if fmt.Sprint(keys) != "[tick#1 tick#2 tick#3]" {
		t.Errorf("tick's steps %v, want tick#1 … tick#3", keys)
	}
}

// A batch of 60 lines through the bridge, whose requests carry many
// workers of the run at once (group commits of one batch's workers):
// every worker runs once and the gather has the lines in order.
func TestBatchOf60(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "batch")
	for i := range bp.Nodes {
		if bp.Nodes[i].ID == "lines_scatter" {
			delete(bp.Nodes[i].Params, "chunkSize")
		}
	}
	var lines []any
	for i := range 60 {
		lines = append(lines, map[string]any{"sku": fmt.Sprintf("S-%02d", i), "qty": 1, "price": float64(i)})
	}
	input := map[string]any{"items": lines}
	runID := tb.start(bp, input)
	res := tb.wait(runID, 60*time.Second)
	assertLikeLocal(t, bp, input, res)
	got, _ := res.Context["lines"].([]any)
	if len(got) != 60 {
		t.Fatalf("lines has %d entries, want 60", len(got))
	}
	batch := workflow.BatchID(runID, "lines_scatter")
	for i, l := range got {
		if m, _ := l.(map[string]any); m["sku"] != fmt.Sprintf("S-%02d", i) {
			t.Errorf("lines[%d] = %v, want S-%02d", i, l, i)
		}
		if n := tb.nodes.count(runID, fmt.Sprintf("price-line_%s_%d", batch, i)); n != 1 {
			t.Errorf("worker %d ran %d times, want once", i, n)
		}
	}
}

// The subflow example on the stack: its child, examples/subflows/pricing,
// is a run of its own (a batch of price-line workers), and the parent ends
// as the local runner ends it.
func TestSubflowExample(t *testing.T) {
	t.Parallel()
	child := testenv.Example(t, "subflows/pricing")
	tb := setup(t, withBlueprints(child))
	bp := testenv.Example(t, "subflow")
	input := exampleInput(t, "subflow")
	runID := tb.start(bp, input)
	res := tb.wait(runID, 30*time.Second)
	want, err := workflow.Run(t.Context(), bp, nodes.Registry(), input, workflow.RunOptions{
		RunID: runID, Blueprints: map[string]*workflow.Blueprint{child.ID: child}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != workflow.RunCompleted || want.Status != workflow.RunCompleted {
		t.Fatalf("status %s (errors %v), the local run's %s; want both completed", res.Status, res.Errors, want.Status)
	}
	testenv.AssertJSON(t, "output", res.Output, want.Output)
	testenv.AssertJSON(t, "context", res.Context, want.Context)
	if len(res.Children) != 1 || res.Children[0].BlueprintID != "pricing" || res.Children[0].Status != workflow.RunCompleted {
		t.Fatalf("children %+v, want one completed pricing run", res.Children)
	}
	cres := tb.wait(res.Children[0].RunID, 5*time.Second)
	if cres.Parent == nil || cres.Parent.RunID != runID {
		t.Errorf("child's parent %+v, want %s", cres.Parent, runID)
	}
}
