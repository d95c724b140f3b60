package workflow

import "time"

// RunStatus is a run's status, as Flowcraft's status table spells it.
type RunStatus string

const (
	RunRunning   RunStatus = "running"
	RunCompleted RunStatus = "completed"
	RunFailed    RunStatus = "failed"
	RunCancelled RunStatus = "cancelled"
)

// Final reports whether the status is final.
func (s RunStatus) Final() bool {
	return s == RunCompleted || s == RunFailed || s == RunCancelled
}

// RunResult is a finished (or, from a status query, current) run: what
// `stepflow run --local` and `stepflow start --wait` print.
type RunResult struct {
	RunID       string         `json:"runId"`
	BlueprintID string         `json:"blueprintId"`
	Status      RunStatus      `json:"status"`
	Output      any            `json:"output,omitempty"`
	Context     map[string]any `json:"context"`
	Steps       []StepRecord   `json:"steps"`
	Errors      []StepError    `json:"errors,omitempty"`
	DurationMs  float64        `json:"durationMs"`
	// Parent and Children link a subflow's child run and the run whose
	// step started it, as the distributed engine records them (the local
	// runner leaves them empty).
	Parent   *RunLink  `json:"parent,omitempty"`
	Children []RunLink `json:"children,omitempty"`
}

// RunLink names a run related to another one (its parent or a child) and
// the step that relates them: the parent's subflow step.
type RunLink struct {
	RunID       string    `json:"runId"`
	BlueprintID string    `json:"blueprintId,omitempty"`
	Step        string    `json:"step,omitempty"`
	Status      RunStatus `json:"status,omitempty"`
}

// StepRecord is one step of a run: a node's, a loop iteration's (StepKey
// "<node>#<iteration>") or a dynamic node's.
type StepRecord struct {
	NodeID string `json:"nodeId"`
	// StepKey is the step's key when it is not the node id (see Step).
	StepKey    string     `json:"stepKey,omitempty"`
	Iteration  int        `json:"iteration,omitempty"`
	Uses       string     `json:"uses,omitempty"`
	State      StepState  `json:"state"`
	Attempts   int        `json:"attempts"`
	Action     string     `json:"action,omitempty"`
	Error      string     `json:"error,omitempty"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	DurationMs float64    `json:"durationMs"`
}

// StepError is the error that failed a run.
type StepError struct {
	NodeID  string `json:"nodeId,omitempty"`
	Message string `json:"message"`
}

// FinalOutput is the output a finished run reports: the output of its sink
// node (a node without outgoing edges, fallbacks excluded) that produced
// one, or a map of sink id → output when several did.
func (w *Workflow) FinalOutput(outputs map[string]any) any {
	sinks := map[string]any{}
	var last string
	for _, id := range w.order {
		if len(w.out[id]) > 0 {
			continue
		}
		if _, isFallback := w.backedBy[id]; isFallback {
			continue
		}
		if v, ok := outputs[id]; ok {
			sinks[id] = v
			last = id
		}
	}
	switch len(sinks) {
	case 0:
		return nil
	case 1:
		return sinks[last]
	}
	return sinks
}
