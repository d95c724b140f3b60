package client

import (
	"context"
	"slices"
	"time"

	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/workflow"
)

// RunDetail is all that is recorded of one run: what a person looking at
// it wants (the console's run page reads it). Result is the same run in
// the shape an in-memory run prints.
type RunDetail struct {
	// Run is the run's status row as Runs lists it, with its progress.
	Run RunSummary `json:"run"`
	// Blueprint is the snapshot the run is pinned to; nil for a run started
	// Flowcraft's way that no step has pinned one to yet.
	Blueprint *workflow.Blueprint `json:"blueprint,omitempty"`
	// Steps are the run's steps in the order they became ready (ties by
	// step key), each with its input and output.
	Steps []StepDetail `json:"steps"`
	// Context is the run's context: the user keys while it runs, the whole
	// Flowcraft-shaped context (with _outputs.<id>) once it completed.
	Context map[string]any `json:"context"`
	// Output is a completed run's output (as RunResult.Output).
	Output any `json:"output,omitempty"`
	// FailedNode is the node a failed run failed at, when it is known.
	FailedNode string `json:"failedNode,omitempty"`
	// Parent and Children link a subflow's run and the run whose step
	// started it; empty for runs that are neither.
	Parent   *RunLink  `json:"parent,omitempty"`
	Children []RunLink `json:"children,omitempty"`
}

// RunLink names a run related to another one, and the step that relates
// them (the parent's subflow step).
type RunLink = workflow.RunLink

// StepDetail is a step with what it was given and what it gave.
type StepDetail struct {
	workflow.StepRecord
	Input  any `json:"input,omitempty"`
	Output any `json:"output,omitempty"`
	// Taken are the targets of the step's outgoing edges that were taken.
	Taken   []string   `json:"taken,omitempty"`
	WakeAt  *time.Time `json:"wakeAt,omitempty"` // when a retrying or sleeping step is due
	ReadyAt time.Time  `json:"readyAt"`          // when the step was made ready
}

// Inspect reads a run with its blueprint snapshot, its steps (inputs and
// outputs included) and its context; ErrRunNotFound for an unknown id.
func (c *Client) Inspect(ctx context.Context, runID string) (*RunDetail, error) {
	run, err := c.store.GetRun(ctx, runID)
	if err != nil {
		return nil, ownError(err)
	}
	steps, err := c.store.Steps(ctx, runID)
	if err != nil {
		return nil, err
	}
	d := &RunDetail{Steps: make([]StepDetail, 0, len(steps))}
	var w *workflow.Workflow
	var version string
	if run.Digest != "" {
		bp, err := c.store.LoadBlueprint(ctx, run.Digest)
		if err != nil {
			return nil, err
		}
		d.Blueprint = bp
		version = bp.Version()
		w, _ = workflow.Compile(bp, nil) // it compiled when the run started
	}
	end := time.Now()
	if run.FinishedAt != nil {
		end = *run.FinishedAt
	}
	d.Run = RunSummary{
		RunID: run.RunID, BlueprintID: run.BlueprintID, Status: run.Status, Error: run.Error,
		CreatedAt: run.CreatedAt, UpdatedAt: run.UpdatedAt, FinishedAt: run.FinishedAt,
		DurationMs: float64(end.Sub(run.CreatedAt).Microseconds()) / 1000, BlueprintVersion: version,
	}
	outputs := map[string]any{}
	counts := &StepCounts{Total: len(steps)}
	for _, st := range steps {
		d.Steps = append(d.Steps, stepDetail(w, st))
		switch st.State {
		case workflow.StepSucceeded, workflow.StepRecovered:
			outputs[stepNode(w, st)] = st.Output // steps are oldest first: a loop's last iteration stands
		}
		if st.State.Terminal() {
			counts.Finished++
		}
		if st.State == workflow.StepFailed {
			counts.Failed++
		}
	}
	if w != nil && run.Status != workflow.RunCompleted {
		counts.Total = max(counts.Total, len(w.NodeIDs()))
	}
	d.Run.Steps = counts
	if run.Status == workflow.RunCompleted && run.StatusData != nil {
		d.Context = run.StatusData
	} else if d.Context, err = c.store.Context(ctx, runID); err != nil {
		return nil, err
	}
	if run.Status == workflow.RunCompleted && w != nil {
		d.Output = w.FinalOutput(outputs)
	}
	if run.Status == workflow.RunFailed {
		d.FailedNode, _ = run.StatusData["nodeId"].(string)
	}
	if d.Parent, d.Children, err = c.links(ctx, runID); err != nil { // subflows (children.go)
		return nil, err
	}
	return d, nil
}

// stepDetail is a stored step as Inspect shows it: NodeID is the step
// key as stored (a loop iteration's "<node>#<n>", a batch worker's id), and
// StepKey and Iteration are set for a step that is not its node's only one.
func stepDetail(w *workflow.Workflow, st *store.Step) StepDetail {
	sd := StepDetail{
		StepRecord: stepRecord(w, st),
		Input:      st.Input, Output: st.Output, Taken: st.Taken, WakeAt: st.WakeAt, ReadyAt: st.CreatedAt,
	}
	sd.NodeID = st.NodeID
	if st.StartedAt != nil && st.FinishedAt != nil {
		sd.DurationMs = float64(st.FinishedAt.Sub(*st.StartedAt).Microseconds()) / 1000
	}
	return sd
}

// stepRecord is the StepRecord of a stored step: its node, its node type,
// and for a loop iteration or a dynamic node its step key and iteration.
func stepRecord(w *workflow.Workflow, st *store.Step) workflow.StepRecord {
	rec := workflow.StepRecord{NodeID: stepNode(w, st), State: st.State, Attempts: st.Attempts, Action: st.Action, Error: st.Error,
		StartedAt: st.StartedAt, FinishedAt: st.FinishedAt, Iteration: st.Iteration}
	if rec.NodeID != st.NodeID {
		rec.StepKey = st.NodeID
	}
	switch {
	case st.Definition != nil:
		rec.Uses = st.Definition.Uses
	case w != nil:
		if n, ok := w.Node(rec.NodeID); ok {
			rec.Uses = n.Uses
		}
	}
	return rec
}

// stepNode is the node a stored step runs.
func stepNode(w *workflow.Workflow, st *store.Step) string {
	switch {
	case st.Node != "":
		return st.Node
	case w != nil:
		return w.StepNode(st.NodeID)
	}
	return st.NodeID
}

// orderSteps lists a run's steps as the local runner lists them: by the
// blueprint position of their node (a loop's steps from its first node's
// place, iteration by iteration, its controller's step after the body's),
// a dynamic node after the step that created it, in creation order. A
// loop's exit step, which runs nothing, is left out; without a blueprint
// the steps stay as stored.
func orderSteps(w *workflow.Workflow, steps []*store.Step) []*store.Step {
	if w == nil {
		return steps
	}
	index := map[string]int{}
	ids := w.NodeIDs()
	for i, id := range ids {
		index[id] = i
	}
	place := map[string]int{} // loop-controller → its loop's first place
	for _, id := range ids {
		if c, ok := w.InLoop(id); ok {
			if p, seen := place[c]; !seen || index[id] < p {
				place[c] = index[id]
			}
		}
	}
	byKey := map[string]*store.Step{}
	for _, st := range steps {
		byKey[st.NodeID] = st
	}
	type ordered struct {
		st  *store.Step
		key [4]int
	}
	var keyOf func(st *store.Step, depth int) ([4]int, bool)
	keyOf = func(st *store.Step, depth int) ([4]int, bool) {
		if d := st.Definition; d != nil {
			src := byKey[d.Source]
			if src == nil || depth > 1 {
				return [4]int{len(ids), 0, 0, 0}, true
			}
			k, _ := keyOf(src, depth+1)
			k[3] = slices.IndexFunc(src.Dynamic, func(x workflow.DynamicNode) bool { return x.ID == st.NodeID })
			return k, true
		}
		s, ok := w.Step(st.NodeID)
		if !ok {
			return [4]int{len(ids), 0, 0, 0}, true
		}
		i := index[s.Node.ID]
		if !s.InLoop {
			if _, looped := w.InLoop(s.Node.ID); looped {
				return [4]int{}, false // a loop's exit step
			}
			return [4]int{i, 0, i, -1}, true
		}
		c, _ := w.InLoop(s.Node.ID)
		if s.Node.ID == c {
			i = len(ids) // its step #n checks after iteration n's body
		}
		return [4]int{place[c], s.Iteration, i, -1}, true
	}
	var list []ordered
	for _, st := range steps {
		if k, ok := keyOf(st, 0); ok {
			list = append(list, ordered{st, k})
		}
	}
	slices.SortStableFunc(list, func(a, b ordered) int { return slices.Compare(a.key[:], b.key[:]) })
	out := make([]*store.Step, len(list))
	for i, o := range list {
		out[i] = o.st
	}
	return out
}
