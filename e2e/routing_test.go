package e2e

// Runs that succeed: chains, fan-out/fan-in, any joins and exclusive
// branches, each checked step by step.

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

func TestLinearChain(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "chain10")

	runID := tb.start(bp, map[string]any{"order": "A-1", "n": 1})
	res := tb.wait(runID, 20*time.Second)

	if res.Status != workflow.RunCompleted {
		t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"order":"A-1","n":1}`))
	want := map[string]wantStep{}
	wantCtx := map[string]any{"order": "A-1", "n": 1}
	for i := 1; i <= 10; i++ {
		id := fmt.Sprintf("s%d", i)
		want[id] = wantStep{workflow.StepSucceeded, 1}
		wantCtx["_outputs."+id] = map[string]any{"order": "A-1", "n": 1}
		wantCtx[id] = map[string]any{"order": "A-1", "n": 1}
		if n := tb.nodes.count(runID, id); n != 1 {
			t.Errorf("node %s ran %d times, want 1", id, n)
		}
	}
	assertSteps(t, res, want)
	testenv.AssertJSON(t, "final context", res.Context, wantCtx)
	if w := tb.finalWrites(runID); len(w) != 1 || w[0] != "completed" {
		t.Errorf("final status writes %v, want [completed]", w)
	}
}

func TestFanOutAllJoin(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "fanout")

	runID := tb.start(bp, map[string]any{"k": "v"})
	res := tb.wait(runID, 20*time.Second)

	if res.Status != workflow.RunCompleted {
		t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
	}
	const joinInput = `{"b1":{"k":"v"},"b2":{"k":"v"},"b3":{"k":"v"},"b4":{"k":"v"},"b5":{"k":"v"},"b6":{"k":"v"},"b7":{"k":"v"},"b8":{"k":"v"}}`
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(joinInput))
	want := map[string]wantStep{}
	for _, id := range []string{"start", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "join", "end"} {
		want[id] = wantStep{workflow.StepSucceeded, 1}
		if n := tb.nodes.count(runID, id); n != 1 {
			t.Errorf("node %s ran %d times, want 1", id, n)
		}
	}
	assertSteps(t, res, want)
	calls := tb.nodes.of(runID, "join")
	if len(calls) != 1 {
		t.Fatalf("join called %d times, want 1", len(calls))
	}
	testenv.AssertJSON(t, "input the join node received", calls[0].Input, json.RawMessage(joinInput))
	testenv.AssertJSON(t, "join's stored input", tb.step(runID, "join").Input, json.RawMessage(joinInput))
	// The join started after every branch had finished.
	for i := 1; i <= 8; i++ {
		b := tb.nodes.of(runID, fmt.Sprintf("b%d", i))
		if len(b) == 1 && b[0].End.After(calls[0].Start) {
			t.Errorf("join started at %s, before b%d ended at %s", calls[0].Start, i, b[0].End)
		}
	}
}

// An any join with three predecessors fires once, at the first arrival, and
// the run completes once. Several runs at once make the arrivals race.
func TestAnyJoinFiresOnce(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := blueprint(t, `{"id":"any3","metadata":{"version":"1"},
	  "nodes":[
	    {"id":"start","uses":"noop"},
	    {"id":"p1","uses":"transform","params":{"expression":"'p1'"}},
	    {"id":"p2","uses":"transform","params":{"expression":"'p2'"}},
	    {"id":"p3","uses":"transform","params":{"expression":"'p3'"}},
	    {"id":"join","uses":"noop","config":{"joinStrategy":"any"}},
	    {"id":"end","uses":"noop"}],
	  "edges":[
	    {"source":"start","target":"p1"},{"source":"start","target":"p2"},{"source":"start","target":"p3"},
	    {"source":"p1","target":"join"},{"source":"p2","target":"join"},{"source":"p3","target":"join"},
	    {"source":"join","target":"end"}]}`)

	const runs = 8
	ids := make([]string, runs)
	for i := range ids {
		ids[i] = tb.start(bp, nil)
	}
	for _, runID := range ids {
		res := tb.wait(runID, 20*time.Second)
		if res.Status != workflow.RunCompleted {
			t.Errorf("run %s: status %s, want completed; errors %v", runID, res.Status, res.Errors)
			continue
		}
		assertSteps(t, res, map[string]wantStep{
			"start": {workflow.StepSucceeded, 1}, "p1": {workflow.StepSucceeded, 1}, "p2": {workflow.StepSucceeded, 1},
			"p3": {workflow.StepSucceeded, 1}, "join": {workflow.StepSucceeded, 1}, "end": {workflow.StepSucceeded, 1},
		})
		for _, id := range []string{"start", "p1", "p2", "p3", "join", "end"} {
			if n := tb.nodes.count(runID, id); n != 1 {
				t.Errorf("run %s: node %s ran %d times, want 1", runID, id, n)
			}
		}
		// The join's input is the first arrival's value, and the run's
		// output is the same.
		first, _ := res.Output.(string)
		if first != "p1" && first != "p2" && first != "p3" {
			t.Errorf("run %s: output %v, want one of p1, p2, p3", runID, res.Output)
		}
		if in := tb.step(runID, "join").Input; in != first {
			t.Errorf("run %s: join input %v, output %v: want the same arrival", runID, in, first)
		}
		if w := tb.finalWrites(runID); len(w) != 1 || w[0] != "completed" {
			t.Errorf("run %s: final status writes %v, want [completed]", runID, w)
		}
	}
	if n := counter(t, tb.fnMetrics, "stepflow_runs_finished_total", map[string]string{"status": "completed"}); n != runs {
		t.Errorf("the function finished %v runs, want %d", n, runs)
	}
}

// Exclusive action branches (approve / reject) meet in an all join: the
// untaken branch is skipped, the join fires once with the taken branch's
// value only.
func TestExclusiveBranchesIntoAllJoin(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := blueprint(t, `{"id":"review","metadata":{"version":"1"},
	  "nodes":[
	    {"id":"decide","uses":"transform","params":{"expression":"input","action":"result.output.choice"}},
	    {"id":"approve","uses":"transform","params":{"expression":"{'approved': true, 'by': input.who}"}},
	    {"id":"reject","uses":"transform","params":{"expression":"{'approved': false, 'by': input.who}"}},
	    {"id":"join","uses":"noop","config":{"joinStrategy":"all"}},
	    {"id":"end","uses":"noop"}],
	  "edges":[
	    {"source":"decide","target":"approve","action":"approve"},
	    {"source":"decide","target":"reject","action":"reject"},
	    {"source":"approve","target":"join"},{"source":"reject","target":"join"},
	    {"source":"join","target":"end"}]}`)

	for _, tc := range []struct{ choice, taken, untaken, output string }{
		{"approve", "approve", "reject", `{"approve":{"approved":true,"by":"ada"}}`},
		{"reject", "reject", "approve", `{"reject":{"approved":false,"by":"ada"}}`},
	} {
		t.Run(tc.choice, func(t *testing.T) {
			runID := tb.start(bp, map[string]any{"choice": tc.choice, "who": "ada"})
			res := tb.wait(runID, 20*time.Second)
			if res.Status != workflow.RunCompleted {
				t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
			}
			testenv.AssertJSON(t, "output", res.Output, json.RawMessage(tc.output))
			assertSteps(t, res, map[string]wantStep{
				"decide": {workflow.StepSucceeded, 1}, tc.taken: {workflow.StepSucceeded, 1},
				tc.untaken: {workflow.StepSkipped, 0}, "join": {workflow.StepSucceeded, 1}, "end": {workflow.StepSucceeded, 1},
			})
			if got := tb.step(runID, "decide").Action; got != tc.choice {
				t.Errorf("decide's action %q, want %q", got, tc.choice)
			}
			if n := tb.nodes.count(runID, tc.untaken); n != 0 {
				t.Errorf("untaken branch %s ran %d times", tc.untaken, n)
			}
			if n := tb.nodes.count(runID, "join"); n != 1 {
				t.Errorf("join ran %d times, want 1", n)
			}
			if _, ok := res.Context["_outputs."+tc.untaken]; ok {
				t.Errorf("the final context has an output for the skipped %s: %v", tc.untaken, res.Context)
			}
		})
	}
}

// The documents example routes by action into an any join: German text
// goes through translate-de, the fr branch and the direct edge are not
// taken.
func TestActionRoutingIntoAnyJoin(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "documents")
	local, err := workflow.Run(tb.ctx, bp, nodes.Registry(), exampleInput(t, "documents"), workflow.RunOptions{})
	if err != nil {
		t.Fatalf("local run: %v", err)
	}

	runID := tb.start(bp, exampleInput(t, "documents"))
	res := tb.wait(runID, 20*time.Second)
	if res.Status != workflow.RunCompleted {
		t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output (as the local runner computes it)", res.Output, local.Output)
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"summary":"[de→en] Der Bericht beschreibt, wie das Team die neue Plattform in drei …","truncated":true,"language":"en"}`))
	assertSteps(t, res, map[string]wantStep{
		"extract": {workflow.StepSucceeded, 1}, "detect": {workflow.StepSucceeded, 1},
		"translate-de": {workflow.StepSucceeded, 1}, "translate-fr": {workflow.StepSkipped, 0},
		"summarize": {workflow.StepSucceeded, 1},
	})
	if n := tb.nodes.count(runID, "summarize"); n != 1 {
		t.Errorf("summarize ran %d times, want 1", n)
	}
}
