package client

import (
	"context"
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
			outputs[st.NodeID] = st.Output
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

func stepDetail(w *workflow.Workflow, st *store.Step) StepDetail {
	sd := StepDetail{
		StepRecord: workflow.StepRecord{NodeID: st.NodeID, State: st.State, Attempts: st.Attempts, Action: st.Action, Error: st.Error, StartedAt: st.StartedAt, FinishedAt: st.FinishedAt},
		Input:      st.Input, Output: st.Output, Taken: st.Taken, WakeAt: st.WakeAt, ReadyAt: st.CreatedAt,
	}
	if w != nil {
		if n, ok := w.Node(st.NodeID); ok {
			sd.Uses = n.Uses
		}
	}
	if st.StartedAt != nil && st.FinishedAt != nil {
		sd.DurationMs = float64(st.FinishedAt.Sub(*st.StartedAt).Microseconds()) / 1000
	}
	return sd
}
