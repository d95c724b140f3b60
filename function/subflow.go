package function

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// Subflows on the stack. A node that returns workflow.StartChild (the
// subflow node) ends its attempt awaiting a child run: the step's commit
// records it awaiting_child, not counting the attempt, and creates the
// child run (store.ChildStart), whose start jobs the answer carries. The
// step holds no lease and no message meanwhile. The child's finishing
// commit names the parent step's job (store.Committed.Continue), which its
// answer carries too; running that job, the function finds the step
// awaiting a child that has finished and calls the node again, as the same
// attempt, with workflow.NodeInput.Child set to the child's result. What
// the node returns then is an attempt's end like any other (retries,
// fallback). A retry starts a fresh child: its id is derived from the
// attempt.

// childDone is prepare's question for a step awaiting its child run:
// has the child finished? If so it keeps the child's result for the node
// (s.child) and the step runs. If not, the job is a redelivery of the one
// that started the child, or a stray: it runs nothing, and re-sends the
// child's pending jobs, in case the answer that carried its start jobs
// was lost.
func (f *Function) childDone(ctx context.Context, st *store.Store, s *stepRun) bool {
	id := workflow.ChildRunID(s.job.RunID, s.job.NodeID, s.job.Attempt)
	res, run, err := f.childResult(ctx, st, id)
	switch {
	case err != nil:
		s.finish(f.unavailable(s.log, "load child run", err))
		return false
	case run == nil:
		s.log.Warn("job for a step awaiting a child run it did not start; ignored", "child_run_id", id)
		s.finish(f.done("no_child"))
		return false
	case res == nil:
		pend, err := st.PendingSteps(ctx, nil, id)
		if err != nil {
			s.finish(f.unavailable(s.log, "pending steps of the child run", err))
			return false
		}
		next := make([]wire.NextJob, 0, len(pend))
		for _, p := range pend {
			var delay int64
			if p.WakeAt != nil {
				delay = max(0, time.Until(*p.WakeAt).Milliseconds())
			}
			next = append(next, wire.NextJob{Job: wire.Job{RunID: id, BlueprintID: run.BlueprintID, NodeID: p.NodeID, Attempt: p.Attempts + 1}, DelayMs: delay})
		}
		s.finish(f.reply(next, "awaiting_child"))
		return false
	}
	s.child = res
	return true
}

// childResult reads child run id: its run row (nil when there is no such
// run) and, once it has finished, its result as the node sees it, in the
// shape the local runner gives (workflow.RunResult).
func (f *Function) childResult(ctx context.Context, st *store.Store, id string) (*workflow.RunResult, *store.Run, error) {
	run, err := st.GetRun(ctx, id)
	if errors.Is(err, store.ErrRunNotFound) {
		return nil, nil, nil
	}
	if err != nil || !run.Status.Final() {
		return nil, run, err
	}
	res := &workflow.RunResult{RunID: id, BlueprintID: run.BlueprintID, Status: run.Status}
	switch run.Status {
	case workflow.RunCompleted:
		res.Context = run.StatusData // the final context, _outputs.<id> included
		w, err := f.workflowFor(ctx, st, run.Digest, run.BlueprintID)
		if err != nil {
			return nil, run, fmt.Errorf("child run %s: %w", id, err)
		}
		outputs, err := st.Outputs(ctx, nil, id, nil)
		if err != nil {
			return nil, run, err
		}
		res.Output = w.FinalOutput(outputs)
	default:
		if res.Context, err = st.Context(ctx, id); err != nil {
			return nil, run, err
		}
		msg := run.Error
		if msg == "" {
			msg = string(run.Status)
		}
		node, _ := run.StatusData["nodeId"].(string)
		res.Errors = []workflow.StepError{{NodeID: node, Message: msg}}
	}
	if res.Context == nil {
		res.Context = map[string]any{}
	}
	return res, run, nil
}

// maxSubflowDepth bounds the nesting of child runs, as in the local
// runner: a run with this many ancestors starts no child.
const maxSubflowDepth = 64

// startChild completes run's decision for an attempt that asked for a
// child run: the child's blueprint, found by id among the registered
// blueprints (BLUEPRINTS_DIR), the run's own blueprint and the stored
// snapshots, goes into the outcome with the child's id, context and input,
// and the attempt is not counted (its continuation is the same attempt).
// A blueprint found nowhere fails the attempt with an error naming it
// (retries and fallback apply); so does one stored that does not compile,
// and a run nested maxSubflowDepth deep.
//
// ok is false when PostgreSQL could not answer: the job's result is set
// (503, retried) and nothing is committed.
func (f *Function) startChild(ctx context.Context, st *store.Store, s *stepRun, o *store.Outcome, verdict *workflow.AttemptOutcome, runErr *error) (ok bool) {
	if verdict.State != workflow.StepAwaitingChild {
		return true
	}
	c := verdict.Child
	depth, err := st.Depth(ctx, s.job.RunID, maxSubflowDepth)
	if err != nil {
		s.finish(f.unavailable(s.log, "subflow depth", err))
		return false
	}
	var cw *workflow.Workflow
	if depth >= maxSubflowDepth {
		err = fmt.Errorf("subflow %q: runs nested more than %d deep (does a blueprint run itself?)", c.BlueprintID, maxSubflowDepth)
	} else if cw, err = f.childWorkflow(ctx, st, s.w, c.BlueprintID); errors.Is(err, errTransient) {
		s.finish(f.unavailable(s.log, "child blueprint", err))
		return false
	}
	if err != nil {
		*runErr = err
		*verdict = s.step.Node.Outcome(s.job.Attempt, err)
		return true
	}
	o.Attempts = s.load.Step.Attempts
	o.Child = &store.ChildStart{RunID: workflow.ChildRunID(s.job.RunID, s.job.NodeID, s.job.Attempt), W: cw, Context: c.Context, Input: c.Input}
	s.outcome = "awaiting_child"
	return true
}

// childWorkflow finds a child blueprint by id: registered, the parent's
// own, or the newest stored snapshot.
func (f *Function) childWorkflow(ctx context.Context, st *store.Store, parent *workflow.Workflow, id string) (*workflow.Workflow, error) {
	f.mu.RLock()
	w := f.registered[id]
	known := make([]string, 0, len(f.registered))
	for k := range f.registered {
		known = append(known, k)
	}
	f.mu.RUnlock()
	if w != nil {
		return w, nil
	}
	if id == parent.Blueprint.ID {
		return parent, nil
	}
	bp, err := st.LatestBlueprint(ctx, id)
	if errors.Is(err, store.ErrBlueprintNotFound) {
		sort.Strings(known)
		list := "none"
		if len(known) > 0 {
			list = strings.Join(known, ", ")
		}
		return nil, fmt.Errorf("subflow: no blueprint %q: not registered with the step function (BLUEPRINTS_DIR; registered: %s) and not stored by any run", id, list)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTransient, err)
	}
	w, err = workflow.Compile(bp, f.reg)
	if err != nil {
		return nil, fmt.Errorf("subflow %q: the stored blueprint: %w", id, err)
	}
	if cached, ok := f.compiled.LoadOrStore(w.Digest, w); ok {
		w = cached.(*workflow.Workflow)
	}
	return w, nil
}

// childJobs are the jobs a commit's subflow consequences add to its
// answer: the start jobs of the child run it created, and the job of the
// parent step a finished child continues.
func childJobs(res *store.Committed) []wire.NextJob {
	var out []wire.NextJob
	if c := res.Child; c != nil {
		for _, id := range c.Starts {
			out = append(out, wire.NextJob{Job: wire.Job{RunID: c.RunID, BlueprintID: c.BlueprintID, NodeID: id, Attempt: 1}})
		}
	}
	if k := res.Continue; k != nil {
		out = append(out, wire.NextJob{Job: wire.Job{RunID: k.RunID, BlueprintID: k.BlueprintID, NodeID: k.NodeID, Attempt: k.Attempt}})
	}
	return out
}
