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
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM `+f.s.T.Blueprints+` WHERE digest = $1`, w.Digest).Scan(&snapshots); err != nil || snapshots != 1 {
		t.Fatalf("%d snapshots of the digest (%v), want 1", snapshots, err)
	}
	if c, err := f.s.Context(f.ctx, "run-2"); err != nil || len(c) != 0 {
		t.Fatalf("context of a run started without input: %v, %v; want {}", c, err)
	}
}
