package workflow

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// RunOptions tune a local run.
type RunOptions struct {
	// RunID names the run (default "local").
	RunID string
	// OnStep, when set, is called each time a step finishes, is skipped or
	// starts awaiting its fallback.
	OnStep func(StepRecord)
}

// Run executes a whole run in-process with the same semantics as the
// distributed runtime: parallel branches, retries with backoff, timeouts,
// fallbacks, joins, skips and sleeps. input (a JSON object, or nil) becomes
// the run's initial context and the input of start nodes without `inputs`.
//
// It returns an error only when the run cannot start (an invalid blueprint,
// or a nil registry, which leaves the nodes without implementations); a
// node failure is a RunResult with status failed.
func Run(ctx context.Context, bp *Blueprint, reg *Registry, input map[string]any, opts RunOptions) (*RunResult, error) {
	w, err := Compile(bp, reg)
	if err != nil {
		return nil, err
	}
	return w.Run(ctx, input, opts)
}

type localStep struct {
	status     StepStatus
	uses       string
	input      any
	output     any
	action     string
	deliveries map[string]any
	attempts   int
	err        string
	started    *time.Time
	finished   *time.Time
}

type localRun struct {
	w       *Workflow
	runID   string
	steps   map[string]*localStep
	context map[string]any
	outputs map[string]any
}

func (r *localRun) Status(id string) (StepStatus, bool) {
	s, ok := r.steps[id]
	if !ok {
		return StepStatus{}, false
	}
	return s.status, true
}

func (r *localRun) Delivery(source, target string) any {
	if s, ok := r.steps[source]; ok {
		return s.deliveries[target]
	}
	return nil
}

type wakeUp struct {
	node    string
	attempt int
	resumed *time.Time
}

type attemptDone struct {
	node    string
	attempt int
	res     NodeResult
	err     error
	changes *MapContext
	started time.Time
	ended   time.Time
}

// Run executes the compiled workflow in-process (see the package-level Run).
func (w *Workflow) Run(ctx context.Context, input map[string]any, opts RunOptions) (*RunResult, error) {
	if opts.RunID == "" {
		opts.RunID = "local"
	}
	for _, n := range w.nodes {
		if n.Func == nil {
			return nil, fmt.Errorf("node %q: %w %q (compile the blueprint with a registry)", n.ID, errUnknownNode, n.Uses)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &localRun{w: w, runID: opts.RunID, steps: map[string]*localStep{}, context: map[string]any{}, outputs: map[string]any{}}
	for k, v := range input {
		r.context[k] = normalize(v)
	}
	var initial any = map[string]any{}
	if input != nil {
		initial = Normalize(input)
	}
	start := time.Now()
	done := make(chan attemptDone)
	inflight := 0
	result := &RunResult{RunID: opts.RunID, BlueprintID: w.Blueprint.ID, Status: RunRunning}

	// due receives delayed attempts (retry backoff, sleep) when their time
	// comes; they are launched then, so that they read the input and
	// context as they are at that time, as in the distributed runtime.
	due := make(chan wakeUp)
	launch := func(id string, attempt int, delay time.Duration, resumed *time.Time) {
		inflight++
		if delay > 0 {
			go func() {
				t := time.NewTimer(delay)
				select {
				case <-t.C:
					due <- wakeUp{node: id, attempt: attempt, resumed: resumed}
				case <-runCtx.Done():
					t.Stop()
					done <- attemptDone{node: id, attempt: attempt, err: runCtx.Err()}
				}
			}()
			return
		}
		st := r.steps[id]
		n := w.nodes[id]
		nodeInput := w.ResolveInput(id, st.input, r.context, r.outputs)
		snapshot := make(map[string]any, len(r.context))
		for k, v := range r.context {
			snapshot[k] = v
		}
		go func() {
			mc := NewMapContext(snapshot)
			actx := runCtx
			var cancelAttempt context.CancelFunc = func() {}
			if n.Timeout > 0 {
				actx, cancelAttempt = context.WithTimeout(runCtx, n.Timeout)
			}
			began := time.Now()
			res, err := Invoke(actx, n.Func, NodeInput{
				RunID: opts.RunID, NodeID: id, Attempt: attempt, Input: nodeInput,
				Params: n.Params, Context: mc, Resumed: resumed,
			})
			if err == nil && actx.Err() != nil && runCtx.Err() == nil {
				err = actx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) && runCtx.Err() == nil {
				err = fmt.Errorf("timed out after %s", n.Timeout)
			}
			cancelAttempt()
			done <- attemptDone{node: id, attempt: attempt, res: res, err: err, changes: mc, started: began, ended: time.Now()}
		}()
	}
	record := func(id string) {
		if opts.OnStep != nil {
			opts.OnStep(r.record(id))
		}
	}
	fail := func(id, msg string) {
		if result.Status == RunRunning {
			result.Status = RunFailed
			result.Errors = append(result.Errors, StepError{NodeID: id, Message: msg})
			cancel()
		}
	}
	noteCancel := func() {
		if result.Status == RunRunning && runCtx.Err() != nil {
			result.Status = RunCancelled
			result.Errors = append(result.Errors, StepError{Message: "run cancelled: " + context.Cause(runCtx).Error()})
		}
	}
	makeReady := func(tr Transition) {
		for _, id := range tr.Skipped {
			r.steps[id] = &localStep{status: StepStatus{State: StepSkipped}, uses: w.nodes[id].Uses}
			record(id)
		}
		for _, rn := range tr.Ready {
			r.steps[rn.ID] = &localStep{status: StepStatus{State: StepReady}, uses: w.nodes[rn.ID].Uses, input: rn.Input}
			launch(rn.ID, 1, 0, nil)
		}
	}
	// resolve stores a node's result and routing and advances the run.
	resolve := func(id string, res NodeResult, state StepState) error {
		st := r.steps[id]
		env := Env{Context: r.context, Outputs: r.outputs}
		routing, err := w.Route(id, res, env)
		if err != nil {
			return err
		}
		st.status = StepStatus{State: state, Taken: routing.Taken}
		st.output, st.action, st.deliveries = res.Output, res.Action, routing.Deliveries
		r.outputs[id] = res.Output
		r.context[OutputKey(id)] = res.Output
		return nil
	}

	makeReady(Transition{Ready: func() []ReadyNode {
		var rs []ReadyNode
		for _, id := range w.starts {
			rs = append(rs, ReadyNode{ID: id, Input: initial})
		}
		return rs
	}()})

	for inflight > 0 {
		var d attemptDone
		select {
		case wk := <-due:
			inflight--
			noteCancel()
			if result.Status == RunRunning {
				launch(wk.node, wk.attempt, 0, wk.resumed)
			}
			continue
		case d = <-done:
			inflight--
		}
		noteCancel()
		if result.Status != RunRunning {
			continue
		}
		st := r.steps[d.node]
		n := w.nodes[d.node]
		if st.started == nil && !d.started.IsZero() {
			t := d.started
			st.started = &t
		}
		switch out := n.Outcome(d.attempt, d.err); out.State {
		case StepSleeping:
			// Resumed at its wake time as the same attempt, not counted again.
			st.status.State = StepSleeping
			wake := out.Wake
			launch(d.node, out.Attempt, time.Until(wake), &wake)
		case StepRetrying:
			st.attempts, st.err = d.attempt, d.err.Error()
			st.status.State = StepRetrying
			launch(d.node, out.Attempt, out.Delay, nil)
		case StepAwaitingFallback, StepFailed:
			st.attempts, st.err = d.attempt, d.err.Error()
			t := d.ended
			st.finished = &t
			st.status.State = out.State
			record(d.node)
			if out.State == StepFailed {
				fail(d.node, d.err.Error())
				continue
			}
			r.steps[out.Fallback] = &localStep{status: StepStatus{State: StepReady}, uses: w.nodes[out.Fallback].Uses, input: w.ResolveInput(d.node, st.input, r.context, r.outputs)}
			launch(out.Fallback, 1, 0, nil)
		default:
			// Outputs are stored in JSON form, as a durable runtime stores them.
			d.res.Output = normalize(d.res.Output)
			st.attempts = d.attempt
			st.err = ""
			t := d.ended
			st.finished = &t
			set, deleted := d.changes.Changes()
			for k, v := range set {
				r.context[k] = v
			}
			for _, k := range deleted {
				delete(r.context, k)
			}
			resolved := []string{d.node}
			if err := resolve(d.node, d.res, StepSucceeded); err != nil {
				st.status.State = StepFailed
				st.err = err.Error()
				record(d.node)
				fail(d.node, err.Error())
				continue
			}
			record(d.node)
			// A fallback's result stands in for the node it backs.
			for backed, ok := w.backedBy[d.node]; ok; backed, ok = w.backedBy[backed] {
				if r.steps[backed] == nil || r.steps[backed].status.State != StepAwaitingFallback {
					break
				}
				if err := resolve(backed, d.res, StepRecovered); err != nil {
					r.steps[backed].status.State = StepFailed
					r.steps[backed].err = err.Error()
					record(backed)
					fail(backed, err.Error())
					break
				}
				record(backed)
				resolved = append(resolved, backed)
			}
			if result.Status == RunRunning {
				makeReady(w.Advance(resolved, r))
			}
		}
	}
	if result.Status == RunRunning {
		result.Status = RunCompleted
		result.Output = w.FinalOutput(r.outputs)
	}
	result.Context = r.context
	result.Steps = r.records()
	result.DurationMs = msSince(start)
	return result, nil
}

func (r *localRun) record(id string) StepRecord {
	st := r.steps[id]
	rec := StepRecord{NodeID: id, Uses: st.uses, State: st.status.State, Attempts: st.attempts, Action: st.action, Error: st.err, StartedAt: st.started, FinishedAt: st.finished}
	if st.started != nil && st.finished != nil {
		rec.DurationMs = float64(st.finished.Sub(*st.started).Microseconds()) / 1000
	}
	if st.status.State == StepSucceeded {
		rec.Error = ""
	}
	return rec
}

// records lists the steps in blueprint order.
func (r *localRun) records() []StepRecord {
	out := []StepRecord{}
	for _, id := range r.w.order {
		if _, ok := r.steps[id]; ok {
			out = append(out, r.record(id))
		}
	}
	return out
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
