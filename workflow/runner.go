package workflow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// RunOptions tune a local run.
type RunOptions struct {
	// RunID names the run (default "local").
	RunID string
	// OnStep, when set, is called each time a step finishes, is skipped or
	// starts awaiting its fallback.
	OnStep func(StepRecord)
	// Blueprints are the blueprints a subflow node may run as its child,
	// by id. The child runs in this process, with the same registry and
	// these blueprints; the run itself counts too.
	Blueprints map[string]*Blueprint
	// StartInput, when not nil, is what start nodes get instead of the
	// run's initial context (a subflow's child without params.inputs).
	StartInput any
	// OnAwait, when set, is called when nothing is left to run but steps
	// await (wait nodes, and subflow steps whose child run awaits), with
	// the run as it stands (status awaiting): the run is resumed as it
	// says and goes on. A resume of a subflow step goes to its child's
	// one awaiting step (a child awaiting at several fails the run).
	// Without it, or when it returns false, the run ends awaiting.
	OnAwait func(*RunResult) (Resume, bool)

	depth int // of subflows: the run's depth below the top run
}

// maxSubflowDepth bounds the nesting of child runs.
const maxSubflowDepth = 64

// Run executes a whole run in-process with the same semantics as the
// distributed runtime: parallel branches, retries with backoff, timeouts,
// fallbacks, joins, skips, sleeps, loops, batches, subflows and waits
// (see RunOptions.OnAwait). input (a JSON object, or nil) becomes the
// run's initial context and the input of start nodes without `inputs`.
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
	step       Step
	status     StepStatus
	input      any
	output     any
	action     string
	deliveries map[string]any
	attempts   int
	err        string
	started    *time.Time
	finished   *time.Time
	order      [4]int // see add
	exit       bool   // a loop's exit step: recorded, never run
}

type localRun struct {
	w       *Workflow
	runID   string
	steps   map[string]*localStep
	dynamic map[string]DynamicNode
	context map[string]any
	outputs map[string]any
	index   map[string]int // node id → position in the blueprint
	// parked are the subflow steps whose child run awaits (a resume of
	// the step is forwarded to it), by step key.
	parked map[string]*childPause
}

// childPause is a child run that awaits: its run is blocked in OnAwait
// until reply says how it goes on (false: it ends awaiting).
type childPause struct {
	key    string
	result *RunResult // the child as it awaits
	reply  chan childReply
}

type childReply struct {
	resume Resume
	ok     bool
}

func (r *localRun) Status(key string) (StepStatus, bool) {
	s, ok := r.steps[key]
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

func (r *localRun) Dynamic(key string) (DynamicNode, bool) {
	d, ok := r.dynamic[key]
	return d, ok
}

// add creates the step of s. Steps are listed in blueprint order, a
// loop's iteration by iteration from its first node's place, and dynamic
// nodes after the step that created them: order is (place, iteration,
// node index, position among its creator's dynamic nodes).
func (r *localRun) add(s Step, state StepState, input any) *localStep {
	i := r.index[s.Node.ID]
	place := i
	if l := r.w.loopOf[s.Node.ID]; l != nil && s.InLoop {
		for id := range l.scope {
			place = min(place, r.index[id])
		}
		if s.Node.ID == l.controller {
			i = len(r.index) // its step #n checks after iteration n's body
		}
	}
	st := &localStep{step: s, status: StepStatus{State: state}, input: input, order: [4]int{place, s.Iteration, i, -1}}
	if d := s.Dynamic; d != nil {
		if src := r.steps[d.Source]; src != nil {
			st.order = src.order
			st.order[3] = len(r.steps)
		}
	}
	r.steps[s.Key] = st
	return st
}

type wakeUp struct {
	key     string
	attempt int
	resumed *time.Time
	child   *RunResult
}

type attemptDone struct {
	key     string
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
	r := &localRun{w: w, runID: opts.RunID, steps: map[string]*localStep{}, dynamic: map[string]DynamicNode{},
		context: map[string]any{}, outputs: map[string]any{}, index: map[string]int{}, parked: map[string]*childPause{}}
	for i, id := range w.order {
		r.index[id] = i
	}
	for k, v := range input {
		r.context[k] = normalize(v)
	}
	var initial any = map[string]any{}
	switch {
	case opts.StartInput != nil:
		initial = Normalize(opts.StartInput)
	case input != nil:
		initial = Normalize(input)
	}
	start := time.Now()
	done := make(chan attemptDone)
	inflight := 0
	result := &RunResult{RunID: opts.RunID, BlueprintID: w.Blueprint.ID, Status: RunRunning}

	// due receives delayed attempts (retry backoff, sleep) when their time
	// comes and subflow nodes whose child finished; they are launched then,
	// so that they read the input and context as they are at that time, as
	// in the distributed runtime.
	due := make(chan wakeUp)
	launch := func(key string, attempt int, delay time.Duration, resumed *time.Time, child *RunResult) {
		inflight++
		if delay > 0 {
			go func() {
				t := time.NewTimer(delay)
				select {
				case <-t.C:
					due <- wakeUp{key: key, attempt: attempt, resumed: resumed}
				case <-runCtx.Done():
					t.Stop()
					done <- attemptDone{key: key, attempt: attempt, err: runCtx.Err()}
				}
			}()
			return
		}
		st := r.steps[key]
		n := st.step.Node
		nodeInput := n.ResolveInput(st.input, r.context, r.outputs)
		snapshot := make(map[string]any, len(r.context))
		for k, v := range r.context {
			snapshot[k] = v
		}
		in := NodeInput{RunID: opts.RunID, NodeID: n.ID, StepKey: key, Iteration: st.step.Iteration, Attempt: attempt,
			Input: nodeInput, Params: n.Params, Resumed: resumed, Child: child}
		go func() {
			mc := NewMapContext(snapshot)
			in.Context = mc
			actx := runCtx
			var cancelAttempt context.CancelFunc = func() {}
			if n.Timeout > 0 {
				actx, cancelAttempt = context.WithTimeout(runCtx, n.Timeout)
			}
			began := time.Now()
			res, err := Invoke(actx, n.Func, in)
			if err == nil && actx.Err() != nil && runCtx.Err() == nil {
				err = actx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) && runCtx.Err() == nil {
				err = fmt.Errorf("timed out after %s", n.Timeout)
			}
			cancelAttempt()
			done <- attemptDone{key: key, attempt: attempt, res: res, err: err, changes: mc, started: began, ended: time.Now()}
		}()
	}
	// pauses receives the child runs that await (Flowcraft's subflow
	// pauses with its child): the run awaits at their steps, and a resume
	// of such a step is forwarded to the child's awaiting step.
	pauses := make(chan *childPause)
	// startChild runs the child run a subflow step asked for, then calls
	// the step's node again with its result.
	startChild := func(key string, attempt int, c ChildRun) {
		inflight++
		onAwait := func(cr *RunResult) (Resume, bool) {
			p := &childPause{key: key, result: cr, reply: make(chan childReply)}
			pauses <- p
			rep := <-p.reply
			return rep.resume, rep.ok
		}
		go func() {
			res, err := w.runChild(runCtx, opts, key, attempt, c, onAwait)
			if err != nil {
				done <- attemptDone{key: key, attempt: attempt, err: err, changes: NewMapContext(nil)}
				return
			}
			due <- wakeUp{key: key, attempt: attempt, child: res}
		}()
	}
	record := func(key string) {
		if opts.OnStep != nil {
			opts.OnStep(r.record(key))
		}
	}
	fail := func(key, msg string) {
		if result.Status == RunRunning {
			result.Status = RunFailed
			node := key
			if st := r.steps[key]; st != nil {
				node = st.step.Node.ID
			}
			result.Errors = append(result.Errors, StepError{NodeID: node, Message: msg})
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
		for _, key := range tr.Skipped {
			if s, ok := w.Step(key); ok {
				r.add(s, StepSkipped, nil)
				record(key)
			}
		}
		for _, ex := range tr.LoopExits {
			occ := r.steps[ex.Step]
			s, _ := w.Step(ex.Loop)
			st := r.add(s, occ.status.State, nil)
			st.status.Taken, st.output, st.action, st.deliveries, st.exit = occ.status.Taken, occ.output, occ.action, occ.deliveries, true
		}
		for _, rn := range tr.Ready {
			var s Step
			if rn.Dynamic != nil {
				var err error
				if s, err = w.DynamicStep(*rn.Dynamic); err != nil {
					fail(rn.Dynamic.Source, err.Error())
					return
				}
			} else {
				s, _ = w.Step(rn.ID)
			}
			r.add(s, StepReady, rn.Input)
			launch(rn.ID, 1, 0, nil, nil)
		}
	}
	// resolve stores a step's result and routing and advances the run.
	resolve := func(key string, res NodeResult, state StepState) error {
		st := r.steps[key]
		routing, err := w.RouteStep(st.step, res, Env{Context: r.context, Outputs: r.outputs})
		if err != nil {
			return err
		}
		st.status = StepStatus{State: state, Taken: routing.Taken, Dynamic: routing.Dynamic, Gather: routing.Gather}
		st.output, st.action, st.deliveries = res.Output, res.Action, routing.Deliveries
		node := st.step.Node.ID
		r.outputs[node] = res.Output
		r.context[OutputKey(node)] = res.Output
		r.context[node] = res.Output // Flowcraft writes every output to the bare key too
		for _, d := range routing.Dynamic {
			r.dynamic[d.ID] = d
		}
		return nil
	}

	var starts []ReadyNode
	for _, id := range w.starts {
		starts = append(starts, ReadyNode{ID: id, Input: initial})
	}
	makeReady(Transition{Ready: starts})

	// resume applies the resume OnAwait gives a run with nothing left to
	// run but steps that await; false: the run does not go on.
	resume := func() bool {
		rs, ok := r.nextResume(opts, result, msSince(start))
		if !ok {
			return false
		}
		if p := r.parked[rs.Node]; p != nil {
			// The step's child awaits: the resume goes to its awaiting step.
			var at []string
			for _, s := range p.result.Steps {
				if s.State == StepAwaiting || s.State == StepAwaitingChild {
					k := s.StepKey
					if k == "" {
						k = s.NodeID
					}
					at = append(at, k)
				}
			}
			if len(at) != 1 {
				fail(rs.Node, fmt.Sprintf("resume: node %q runs child run %s, which awaits at %d steps (%s): a resume through it goes to one",
					rs.Node, p.result.RunID, len(at), strings.Join(at, ", ")))
				return false
			}
			delete(r.parked, rs.Node)
			inflight++
			p.reply <- childReply{resume: Resume{Node: at[0], Output: rs.Output, Action: rs.Action}, ok: true}
			return true
		}
		st, found := r.Status(rs.Node)
		if err := w.CheckResume(rs.Node, st, found); err != nil {
			fail(rs.Node, "resume: "+err.Error())
			return false
		}
		if err := resolve(rs.Node, NodeResult{Output: Normalize(rs.Output), Action: rs.Action}, StepSucceeded); err != nil {
			r.steps[rs.Node].status.State, r.steps[rs.Node].err = StepFailed, err.Error()
			record(rs.Node)
			fail(rs.Node, err.Error())
			return false
		}
		t := time.Now()
		r.steps[rs.Node].finished = &t
		record(rs.Node)
		makeReady(w.Advance([]string{rs.Node}, r))
		return true
	}

	for inflight > 0 || resume() {
		if inflight == 0 {
			continue // resumed at a sink: nothing made ready
		}
		var d attemptDone
		select {
		case p := <-pauses:
			inflight-- // until a resume goes to it
			r.parked[p.key] = p
			continue
		case wk := <-due:
			inflight--
			noteCancel()
			if result.Status == RunRunning {
				launch(wk.key, wk.attempt, 0, wk.resumed, wk.child)
			}
			continue
		case d = <-done:
			inflight--
		}
		noteCancel()
		if result.Status != RunRunning {
			continue
		}
		st := r.steps[d.key]
		n := st.step.Node
		if st.started == nil && !d.started.IsZero() {
			t := d.started
			st.started = &t
		}
		switch out := n.Outcome(d.attempt, d.err); out.State {
		case StepSleeping:
			// Resumed at its wake time as the same attempt, not counted again.
			st.status.State = StepSleeping
			wake := out.Wake
			launch(d.key, out.Attempt, time.Until(wake), &wake, nil)
		case StepAwaitingChild:
			st.status.State = StepAwaitingChild
			startChild(d.key, out.Attempt, *out.Child)
		case StepAwaiting:
			st.attempts, st.status.State = d.attempt, StepAwaiting
			record(d.key)
		case StepRetrying:
			st.attempts, st.err = d.attempt, d.err.Error()
			st.status.State = StepRetrying
			launch(d.key, out.Attempt, out.Delay, nil, nil)
		case StepAwaitingFallback, StepFailed:
			st.attempts, st.err = d.attempt, d.err.Error()
			t := d.ended
			st.finished = &t
			st.status.State = out.State
			record(d.key)
			if out.State == StepFailed {
				fail(d.key, d.err.Error())
				continue
			}
			fb, _ := w.FallbackStep(d.key)
			fs, _ := w.Step(fb)
			r.add(fs, StepReady, n.ResolveInput(st.input, r.context, r.outputs))
			launch(fb, 1, 0, nil, nil)
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
			resolved := []string{d.key}
			if err := resolve(d.key, d.res, StepSucceeded); err != nil {
				st.status.State = StepFailed
				st.err = err.Error()
				record(d.key)
				fail(d.key, err.Error())
				continue
			}
			record(d.key)
			// A fallback's result stands in for the step it backs (its
			// dynamic nodes are the fallback's own).
			standIn := NodeResult{Output: d.res.Output, Action: d.res.Action}
			for backed, ok := w.backedStep(d.key); ok; backed, ok = w.backedStep(backed) {
				if r.steps[backed] == nil || r.steps[backed].status.State != StepAwaitingFallback {
					break
				}
				if err := resolve(backed, standIn, StepRecovered); err != nil {
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
	if result.Status == RunRunning && r.awaiting() {
		result.Status = RunAwaiting
	}
	// The children that await end awaiting with the run.
	for key, p := range r.parked {
		p.reply <- childReply{}
		<-due
		delete(r.parked, key)
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

// runChild runs the child run c of attempt of step key, in this process.
func (w *Workflow) runChild(ctx context.Context, opts RunOptions, key string, attempt int, c ChildRun, onAwait func(*RunResult) (Resume, bool)) (*RunResult, error) {
	if opts.depth >= maxSubflowDepth {
		return nil, fmt.Errorf("subflow %q: runs nested more than %d deep (does a blueprint run itself?)", c.BlueprintID, maxSubflowDepth)
	}
	bp := opts.Blueprints[c.BlueprintID]
	if bp == nil && c.BlueprintID == w.Blueprint.ID {
		bp = w.Blueprint
	}
	if bp == nil {
		return nil, fmt.Errorf("subflow: no blueprint %q among those given (%s)", c.BlueprintID, knownIDs(opts.Blueprints))
	}
	child, err := Compile(bp, w.reg)
	if err != nil {
		return nil, fmt.Errorf("subflow %q: %w", c.BlueprintID, err)
	}
	return child.Run(ctx, c.Context, RunOptions{
		RunID:      ChildRunID(opts.RunID, key, attempt),
		Blueprints: opts.Blueprints,
		StartInput: c.Input,
		OnAwait:    onAwait,
		depth:      opts.depth + 1,
	})
}

func (r *localRun) record(key string) StepRecord {
	st := r.steps[key]
	n := st.step.Node
	rec := StepRecord{NodeID: n.ID, Uses: n.Uses, State: st.status.State, Attempts: st.attempts, Action: st.action,
		Error: st.err, StartedAt: st.started, FinishedAt: st.finished, Iteration: st.step.Iteration}
	if key != n.ID {
		rec.StepKey = key
	}
	if st.started != nil && st.finished != nil {
		rec.DurationMs = float64(st.finished.Sub(*st.started).Microseconds()) / 1000
	}
	if st.status.State == StepSucceeded {
		rec.Error = ""
	}
	return rec
}

// records lists the steps in their order (see add). A loop's exit step is
// not listed: it runs nothing.
func (r *localRun) records() []StepRecord {
	keys := make([]string, 0, len(r.steps))
	for k, st := range r.steps {
		if !st.exit {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		return slices.Compare(r.steps[a].order[:], r.steps[b].order[:])
	})
	out := make([]StepRecord, 0, len(keys))
	for _, k := range keys {
		out = append(out, r.record(k))
	}
	return out
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
