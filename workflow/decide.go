package workflow

import (
	"fmt"
	"slices"
)

// AppliedStep is one attempt's outcome as a commit applied it to its step
// (the run was running and the attempt was still the step's): what the
// run's next decision needs of it.
type AppliedStep struct {
	NodeID string    // the step key (see Step); for a node outside loops, its id
	State  StepState // succeeded, retrying, sleeping, awaiting_child, awaiting, awaiting_fallback or failed
	Taken  []string  // targets of the edges its result took
	Error  string    // with StepFailed: why, which becomes the run's error
	// Fallback, with StepAwaitingFallback: the step made ready in its
	// place (Workflow.FallbackStep), with FallbackInput.
	Fallback      string
	FallbackInput any
	// Recovered lists the nodes this (fallback) step stands in for whose
	// recovery applied with it.
	Recovered []RecoveredStep
}

// RecoveredStep is a step resolved by its fallback's result, with the
// targets that result took on the node's own outgoing edges.
type RecoveredStep struct {
	NodeID string
	Taken  []string
}

// OwnedReady is a node made ready, with the index (among the applied
// steps) of the outcome that owns it: the one whose reply publishes its
// job, and whose redelivery re-emits it.
type OwnedReady struct {
	ReadyNode
	Owner int
}

// RunDecision is what a run's applied steps decide, for a runtime to write
// in the same transaction.
type RunDecision struct {
	// Status is the run's status afterwards: running, or the final status
	// these steps give it (completed or failed).
	Status  RunStatus
	Ready   []OwnedReady // steps to make ready, each exactly once (dynamic ones with their definition)
	Skipped []string     // steps on dead paths
	// LoopExits are loops that ended: record each controller step's result
	// once more under the loop's exit step (see LoopExit).
	LoopExits []LoopExit
	// Pending is the number of the run's steps still to run afterwards
	// (zero with a final status).
	Pending int
	// Finisher, with a final status, is the index of the applied step that
	// gave it; -1 otherwise.
	Finisher int
	// FailedNode and Error, with RunFailed: the node that failed and why.
	FailedNode, Error string
}

// DecideRun decides what follows for a run from the steps one commit
// applied, in order, given the run's status and pending count before the
// commit; states must already show the applied steps (and the nodes they
// recovered) in their new states.
//
// A failed step fails the run, whatever the others did. Otherwise each
// step that is no longer in flight leaves the pending count, a step
// awaiting its fallback makes the fallback ready, and Advance over every
// node resolved decides joins and skips. Each ready node is owned by the
// step whose fallback it is, else by a step that routed to it (or that
// stands in for one that did, or created it as a dynamic node), else by
// the first. A step awaiting its child run, or a resume (StepAwaiting),
// stays pending. With nothing pending afterwards, the run is completed, by
// the last step. (Status stays running when what is pending only awaits:
// AwaitStatus says when that makes the run awaiting.)
//
// A run that is not running, or no step applied, decides nothing.
func (w *Workflow) DecideRun(status RunStatus, pending int, applied []AppliedStep, states States) RunDecision {
	d := RunDecision{Status: status, Pending: pending, Finisher: -1}
	if status != RunRunning || len(applied) == 0 {
		return d
	}
	for i := range applied {
		if a := &applied[i]; a.State == StepFailed {
			d.Status, d.Pending, d.Finisher, d.FailedNode, d.Error = RunFailed, 0, i, a.NodeID, a.Error
			return d
		}
	}
	delta := 0
	var resolved []string
	for i := range applied {
		a := &applied[i]
		if a.State != StepRetrying && a.State != StepSleeping && a.State != StepAwaitingChild && a.State != StepAwaiting {
			delta-- // this step is no longer pending
		}
		if a.Fallback != "" {
			d.Ready = append(d.Ready, OwnedReady{ReadyNode: ReadyNode{ID: a.Fallback, Input: a.FallbackInput}, Owner: i})
		}
		if a.State.Resolved() {
			resolved = append(resolved, a.NodeID)
		}
		for _, r := range a.Recovered {
			resolved = append(resolved, r.NodeID)
		}
	}
	if len(resolved) > 0 {
		tr := w.Advance(resolved, states)
		for _, rn := range tr.Ready {
			d.Ready = append(d.Ready, OwnedReady{ReadyNode: rn, Owner: w.routedBy(applied, rn)})
		}
		d.Skipped, d.LoopExits = tr.Skipped, tr.LoopExits
	}
	if d.Pending = pending + delta + len(d.Ready); d.Pending > 0 {
		return d
	}
	d.Status, d.Pending, d.Finisher = RunCompleted, 0, len(applied)-1
	return d
}

// routedBy returns the index of the step among applied that routed to
// rn (or stands in for a node that did, or created it), else 0.
func (w *Workflow) routedBy(applied []AppliedStep, rn ReadyNode) int {
	id := rn.ID // Taken names target nodes, not their steps
	if s, ok := w.Step(rn.ID); ok {
		id = s.Node.ID
	}
	if rn.Dynamic != nil {
		for i := range applied {
			if applied[i].NodeID == rn.Dynamic.Source {
				return i
			}
		}
	}
	for i := range applied {
		if slices.Contains(applied[i].Taken, id) {
			return i
		}
		for _, r := range applied[i].Recovered {
			if slices.Contains(r.Taken, id) {
				return i
			}
		}
	}
	return 0
}

// StoredStep is a step as a runtime stores it: what a resync needs besides
// its routing.
type StoredStep struct {
	NodeID string
	State  StepState
	Error  string // with StepFailed: why
}

// Resync is what a run's stored steps decide when the run was left
// running with nothing pending.
type Resync struct {
	Transition // the nodes to make ready and to skip
	// Status is running (Pending steps to run), completed, or failed by
	// FailedNode with Error.
	Status            RunStatus
	Pending           int
	FailedNode, Error string
}

// DecideResync decides a run's frontier again from every step it has, for
// a run that is running with nothing pending (which no commit leaves
// behind; a lost or hand-edited row can): Advance over every resolved step,
// in node id order, makes ready or skips what is missing; the steps still
// in flight and those made ready are pending. A run with nothing pending
// is completed, or failed when one of its steps failed (the first in
// steps) or a step waits for a fallback that has no step in flight.
// states must answer for every node of w.
func (w *Workflow) DecideResync(steps []StoredStep, states States) Resync {
	var d Resync
	var resolved []string
	var awaiting []string
	var failedError string
	for _, st := range steps {
		switch {
		case st.State.Resolved():
			resolved = append(resolved, st.NodeID)
		case st.State == StepFailed && d.FailedNode == "":
			d.FailedNode, failedError = st.NodeID, st.Error
		case st.State == StepAwaitingFallback:
			awaiting = append(awaiting, st.NodeID)
		case st.State.Pending() || st.State == StepAwaitingChild || st.State == StepAwaiting:
			d.Pending++
		}
	}
	slices.Sort(resolved) // a stable order of decisions
	d.Transition = w.Advance(resolved, states)
	for _, id := range awaiting {
		if fb, ok := w.FallbackStep(id); ok {
			if st, ok := states.Status(fb); ok && st.State.Pending() {
				continue // counted above
			}
		}
		if d.FailedNode == "" {
			d.FailedNode, failedError = id, "its fallback has no step"
		}
	}
	d.Pending += len(d.Ready)
	switch {
	case d.Pending > 0:
		d.Status, d.FailedNode = RunRunning, ""
	case d.FailedNode != "":
		d.Status, d.Error = RunFailed, fmt.Sprintf("node %s failed: %s", d.FailedNode, failedError)
	default:
		d.Status = RunCompleted
	}
	return d
}
