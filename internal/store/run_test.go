package store

import (
	"errors"
	"slices"
	"testing"

	"github.com/stepflow/stepflow/workflow"
)

// TestCreateRun records a run in one statement: snapshot, status, context
// and start steps; a taken id is refused and changes nothing.
func TestCreateRun(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, `{"id":"fork2","nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop"},{"id":"c","uses":"noop"}],
		"edges":[{"source":"a","target":"c"},{"source":"b","target":"c"}]}`)

	starts, err := f.s.CreateRun(f.ctx, "run-1", w, map[string]any{"k": "first"})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(starts)
	if !slices.Equal(starts, []string{"a", "b"}) {
		t.Fatalf("start nodes %q, want a, b", starts)
	}
	run, err := f.s.GetRun(f.ctx, "run-1")
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != workflow.RunRunning || run.Pending != 2 || run.Digest != w.Digest || run.BlueprintID != "fork2" {
		t.Fatalf("run %+v: want running, pending 2, digest %s, blueprint fork2", run, w.Digest)
	}
	if bp, err := f.s.LoadBlueprint(f.ctx, w.Digest); err != nil || bp.ID != "fork2" || len(bp.Nodes) != 3 {
		t.Fatalf("snapshot: %+v, %v", bp, err)
	}
	steps, err := f.s.Steps(f.ctx, "run-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 {
		t.Fatalf("%d steps, want the 2 start steps", len(steps))
	}
	for _, st := range steps {
		if st.State != workflow.StepReady || st.Attempts != 0 {
			t.Errorf("step %s: %s at %d, want ready at 0", st.NodeID, st.State, st.Attempts)
		}
		if in, _ := st.Input.(map[string]any); in["k"] != "first" {
			t.Errorf("step %s input %v, want the run's input", st.NodeID, st.Input)
		}
	}

	// The same id again, with another input: refused, nothing changed.
	_, err = f.s.CreateRun(f.ctx, "run-1", w, map[string]any{"k": "second"})
	if !errors.Is(err, ErrRunExists) {
		t.Fatalf("second create: %v, want ErrRunExists", err)
	}
	c, err := f.s.Context(f.ctx, "run-1")
	if err != nil || c["k"] != "first" {
		t.Fatalf("context after the refused create: %v, %v; want k=first", c, err)
	}
	again, err := f.s.Steps(f.ctx, "run-1")
	if err != nil || len(again) != 2 {
		t.Fatalf("steps after the refused create: %d, %v", len(again), err)
	}
	for _, st := range again {
		if in, _ := st.Input.(map[string]any); in["k"] != "first" {
			t.Errorf("step %s input %v after the refused create, want the first input", st.NodeID, st.Input)
		}
	}

	// A second run of the same blueprint shares the snapshot.
	if _, err := f.s.CreateRun(f.ctx, "run-2", w, nil); err != nil {
		t.Fatal(err)
	}
	var snapshots int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM `+f.s.tables.Blueprints+` WHERE digest = $1`, w.Digest).Scan(&snapshots); err != nil || snapshots != 1 {
		t.Fatalf("%d snapshots of the digest (%v), want 1", snapshots, err)
	}
	if c, err := f.s.Context(f.ctx, "run-2"); err != nil || len(c) != 0 {
		t.Fatalf("context of a run started without input: %v, %v; want {}", c, err)
	}
}

// Of the outcomes of one run committed together, exactly one reports
// that it finished the run, so a run is counted (and logged) once.
func TestCommitFinishedOnce(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t, 4)
	w := compileBlueprint(t, `{"id":"sinks","nodes":[{"id":"s","uses":"noop"},{"id":"x","uses":"noop"},{"id":"y","uses":"noop"},{"id":"z","uses":"noop"}],
		"edges":[{"source":"s","target":"x"},{"source":"s","target":"y"},{"source":"s","target":"z"}]}`)
	f.createRun("fin", w, nil)
	if res := f.commit(w, f.outcome(w, "fin", "s", "s")); !res.Applied || res.Finished || len(res.Ready) != 3 {
		t.Fatalf("start: %+v, want applied, three ready, not finished", res)
	}
	// x alone leaves y and z pending; then y and z together finish the run.
	if res := f.commit(w, f.outcome(w, "fin", "x", "x")); !res.Applied || res.Finished || res.RunStatus != workflow.RunRunning {
		t.Fatalf("x: %+v, want applied, running, not finished", res)
	}
	cs := []*Commit{{W: w, O: f.outcome(w, "fin", "y", "y")}, {W: w, O: f.outcome(w, "fin", "z", "z")}}
	f.s.CommitSteps(f.ctx, cs)
	finished := 0
	for _, c := range cs {
		if c.Err != nil {
			t.Fatalf("%s: %v", c.O.NodeID, c.Err)
		}
		if !c.Res.Applied || c.Res.RunStatus != workflow.RunCompleted {
			t.Errorf("%s: %+v, want applied with the run completed", c.O.NodeID, c.Res)
		}
		if c.Res.Finished {
			finished++
		}
	}
	if finished != 1 {
		t.Errorf("%d outcomes say they finished the run, want 1", finished)
	}
	wantRun(t, "after y and z", f.run("fin"), workflow.RunCompleted, 0)
}
