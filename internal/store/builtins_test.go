package store

// Loops and dynamic nodes in the commit: a loop's exit step written with
// the commit that ends the loop, a loop node's latest output, and a
// result's dynamic nodes kept with it, made ready wave by wave, counted
// as they resolve (one group commit of several workers included), and
// gathered once, in order.

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// stepOutcome is buildOutcome for any step: a dynamic node's by the
// definition its row keeps.
func (f *commitFixture) stepOutcome(w *workflow.Workflow, runID, key string, res workflow.NodeResult) Outcome {
	f.t.Helper()
	ld, err := f.s.LoadStep(f.ctx, runID, key)
	if err != nil || ld.Step == nil {
		f.t.Fatalf("load %s/%s: %v (step %v)", runID, key, err, ld.Step)
	}
	step, ok := w.Step(key)
	if !ok {
		if ld.Step.Definition == nil {
			f.t.Fatalf("step %s has no definition", key)
		}
		if step, err = w.DynamicStep(*ld.Step.Definition); err != nil {
			f.t.Fatal(err)
		}
	}
	routing, err := w.RouteStep(step, res, workflow.Env{Context: ld.Context})
	if err != nil {
		f.t.Fatalf("route %s: %v", key, err)
	}
	now := time.Now()
	return Outcome{RunID: runID, NodeID: key, Definition: step.Dynamic, LoadedAttempts: ld.Step.Attempts, Attempts: ld.Step.Attempts + 1,
		State: workflow.StepSucceeded, Result: res, Routing: routing, StartedAt: now, FinishedAt: now}
}

func (f *commitFixture) commitGroup(w *workflow.Workflow, os ...Outcome) []*Commit {
	f.t.Helper()
	cs := make([]*Commit, len(os))
	for i, o := range os {
		cs[i] = &Commit{W: w, O: o}
	}
	f.s.CommitSteps(f.ctx, cs)
	for _, c := range cs {
		if c.Err != nil || c.Res == nil {
			f.t.Fatalf("commit %s: %+v %v", c.O.NodeID, c.Res, c.Err)
		}
	}
	return cs
}

func TestCommitKeepsDynamicNodesAndGathersThemOnce(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 3)
	w := compileBlueprint(t, `{"id": "dyn", "nodes": [{"id": "split", "uses": "noop"}, {"id": "join", "uses": "noop"}],
		"edges": [{"source": "split", "target": "join"}]}`)
	runID := "dyn-" + testenv.RandomHex(4)
	f.createRun(runID, w, nil)
	var ds []workflow.DynamicNode
	for i := range 6 {
		ds = append(ds, workflow.DynamicNode{ID: fmt.Sprintf("part_%d", i), Uses: "noop", Wave: i / 3})
	}
	res := f.commit(w, f.stepOutcome(w, runID, "split", workflow.NodeResult{Output: "items", DynamicNodes: ds, Gather: "join"}))
	if !slices.Equal(res.Ready, []string{"part_0", "part_1", "part_2"}) {
		t.Fatalf("the creator made %v ready, want wave 0", res.Ready)
	}
	split := f.s.mustStep(t, runID, "split")
	if len(split.Dynamic) != 6 || split.Gather != "join" || split.Dynamic[4].Source != "split" {
		t.Fatalf("the creator's row keeps %+v gathering into %q", split.Dynamic, split.Gather)
	}
	part := f.s.mustStep(t, runID, "part_1")
	if part.Definition == nil || part.Definition.ID != "part_1" || part.Definition.Gather != "join" {
		t.Fatalf("part_1's row keeps the definition %+v", part.Definition)
	}
	testenv.AssertJSON(t, "part_1's input", part.Input, "items")

	// Wave 0 in one group commit: counted together, wave 1 made ready once.
	cs := f.commitGroup(w,
		f.stepOutcome(w, runID, "part_2", workflow.NodeResult{Output: 2}),
		f.stepOutcome(w, runID, "part_0", workflow.NodeResult{Output: 0}),
		f.stepOutcome(w, runID, "part_1", workflow.NodeResult{Output: 1}))
	var ready []string
	for _, c := range cs {
		ready = append(ready, c.Res.Ready...)
	}
	slices.Sort(ready)
	if !slices.Equal(ready, []string{"part_3", "part_4", "part_5"}) {
		t.Fatalf("wave 0 made %v ready, want wave 1", ready)
	}
	if got := f.s.counted(t, runID, "split"); !slices.Equal(got, []int32{3, 0}) {
		t.Errorf("counted %v after wave 0, want [3 0]", got)
	}

	// A worker committed twice counts once.
	o4 := f.stepOutcome(w, runID, "part_4", workflow.NodeResult{Output: 4})
	if r := f.commit(w, o4); !r.Applied || len(r.Ready) != 0 {
		t.Fatalf("part_4: %+v, want applied with nothing ready", r)
	}
	if r := f.commit(w, o4); r.Applied {
		t.Fatalf("part_4 again: %+v, want not applied", r)
	}
	f.commit(w, f.stepOutcome(w, runID, "part_3", workflow.NodeResult{Output: 3}))
	if got := f.s.counted(t, runID, "split"); !slices.Equal(got, []int32{3, 2}) {
		t.Errorf("counted %v, want [3 2]", got)
	}
	last := f.commit(w, f.stepOutcome(w, runID, "part_5", workflow.NodeResult{Output: 5}))
	if !slices.Equal(last.Ready, []string{"join"}) {
		t.Fatalf("the last worker made %v ready, want join", last.Ready)
	}
	testenv.AssertJSON(t, "join's input", f.s.mustStep(t, runID, "join").Input, []any{0, 1, 2, 3, 4, 5})
	if r := f.run(runID); r.Pending != 1 {
		t.Errorf("pending %d, want 1 (join)", r.Pending)
	}
	f.commit(w, f.stepOutcome(w, runID, "join", workflow.NodeResult{Output: "joined"}))
	if r := f.run(runID); r.Status != workflow.RunCompleted || r.StatusData["_outputs.part_5"] != float64(5) {
		t.Errorf("run %s with %v, want completed with every worker's output", r.Status, r.StatusData)
	}
}

func TestCommitWritesTheLoopExitStep(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 3)
	w := compileBlueprint(t, `{"id": "loop", "nodes": [
		{"id": "start", "uses": "noop"},
		{"id": "check", "uses": "loop-controller", "params": {"condition": "true"}, "config": {"joinStrategy": "any"}},
		{"id": "body", "uses": "noop"},
		{"id": "after", "uses": "noop", "inputs": "body"}],
		"edges": [{"source": "start", "target": "check"}, {"source": "check", "target": "body", "action": "continue"},
			{"source": "body", "target": "check"}, {"source": "check", "target": "after", "action": "break", "transform": "'left after ' + string(input)"}]}`)
	runID := "loop-" + testenv.RandomHex(4)
	f.createRun(runID, w, nil)
	steps := []struct {
		key    string
		res    workflow.NodeResult
		ready  []string
		output any
	}{
		{"start", workflow.NodeResult{Output: "s"}, []string{"check#0"}, nil},
		{"check#0", workflow.NodeResult{Action: "continue"}, []string{"body#1"}, nil},
		{"body#1", workflow.NodeResult{Output: "first"}, []string{"check#1"}, nil},
		{"check#1", workflow.NodeResult{Action: "continue"}, []string{"body#2"}, nil},
		{"body#2", workflow.NodeResult{Output: "second"}, []string{"check#2"}, nil},
		{"check#2", workflow.NodeResult{Output: 7, Action: "break"}, []string{"after"}, nil},
	}
	for _, s := range steps {
		res := f.commit(w, f.stepOutcome(w, runID, s.key, s.res))
		if !slices.Equal(res.Ready, s.ready) {
			t.Fatalf("%s made %v ready, want %v", s.key, res.Ready, s.ready)
		}
	}
	exit, last := f.row(runID, "check"), f.row(runID, "check#2")
	if exit == nil || exit.State != "succeeded" || !slices.Equal(exit.Taken, last.Taken) || exit.Output != last.Output {
		t.Fatalf("the exit step %v, want a copy of check#2 %v", exit, last)
	}
	testenv.AssertJSON(t, "after's input", f.s.mustStep(t, runID, "after").Input, "left after 7")
	outs, err := f.s.Outputs(f.ctx, nil, runID, []string{"body", "check"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.AssertJSON(t, "latest outputs", outs, map[string]any{"body": "second", "check": 7})
	if b := f.s.mustStep(t, runID, "body#2"); b.Node != "body" || b.Iteration != 2 {
		t.Errorf("body#2 stored as node %q iteration %d", b.Node, b.Iteration)
	}
	f.commit(w, f.stepOutcome(w, runID, "after", workflow.NodeResult{Output: "done"}))
	r := f.run(runID)
	if r.Status != workflow.RunCompleted || r.StatusData["_outputs.body"] != "second" || r.StatusData["check"] != float64(7) {
		t.Errorf("run %s with %v, want completed with each node's last output", r.Status, r.StatusData)
	}
}

func (s *Store) mustStep(t *testing.T, runID, key string) *Step {
	t.Helper()
	steps, err := s.Steps(t.Context(), runID)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range steps {
		if st.NodeID == key {
			return st
		}
	}
	t.Fatalf("run %s has no step %s", runID, key)
	return nil
}

func (s *Store) counted(t *testing.T, runID, key string) []int32 {
	t.Helper()
	var n []int32
	if err := s.pool.QueryRow(t.Context(), `SELECT dynamic_resolved FROM `+s.tables.Steps+` WHERE run_id = $1 AND node_id = $2`, runID, key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
