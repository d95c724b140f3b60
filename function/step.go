package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/telemetry"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// LeaseTTL is how long a step's lease lives unless renewed. It is renewed
// every LeaseTTL/3 until the step's outcome is committed, so a killed
// function's leases free their steps within LeaseTTL, whatever the node's
// time limit.
const LeaseTTL = 5 * time.Second

// earlyTolerance: a sleeping step woken this much before its due time runs.
const earlyTolerance = 50 * time.Millisecond

// Handle runs one job (HandleBatch of one) and answers in the one-event
// form: the reply event with the next jobs, no event, or an error carrying
// the HTTP status.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	resp, release, err := f.handleOne(ctx, e)
	release()
	return resp, err
}

// handleOne is Handle, leaving the release of the step's lease to the
// caller (see handleBatch).
func (f *Function) handleOne(ctx context.Context, e event.Event) (*event.Event, func(), error) {
	rs, release := f.handleBatch(ctx, []event.Event{e})
	r := rs[0]
	if r.Status != http.StatusOK {
		return nil, release, cehttp.NewResult(r.Status, "%s", r.Error)
	}
	if len(r.Jobs) == 0 {
		return nil, release, nil
	}
	resp := event.New()
	resp.SetID(e.ID() + "/reply")
	resp.SetType(wire.JobsEventType)
	resp.SetSource(wire.FunctionSource)
	if s := e.Subject(); s != "" {
		resp.SetSubject(s)
	}
	if err := resp.SetData(event.ApplicationJSON, wire.Reply{Jobs: r.Jobs}); err != nil {
		return nil, release, cehttp.NewResult(http.StatusInternalServerError, "encode reply: %v", err)
	}
	return &resp, release, nil
}

// HandleBatch runs the step algorithm for every job of a batch and returns
// one result per event, in order. Each job's result is what it would get
// alone; the work is shared where that saves round trips:
//
//  1. Decode each job (malformed → 400). Take the steps' leases in Redis,
//     one pipeline for the batch (held by another delivery → 409, the
//     bridge retries later), so two deliveries of one job never run its
//     node at the same time.
//  2. Load the runs, the steps and the contexts: one round trip for the
//     batch. A run that is not running → 200 without jobs. A finished step
//     is not run again: its stored routing decision is re-emitted.
//  3. Run the nodes, each with its time limit, side by side.
//  4. Commit every result — routing, context changes, successors, run
//     bookkeeping — in one transaction (store.CommitSteps: group commit).
//  5. Answer each job with the jobs to publish: successors, a delayed
//     retry, a fallback, or the wake-up of a sleeping node.
//
// Error results carry a status the bridge acts on: 400 and 422 dead-letter
// the job; 409, 500 (a panic while deciding) and 503 are retried.
func (f *Function) HandleBatch(ctx context.Context, events []event.Event) []wire.Result {
	out, release := f.handleBatch(ctx, events)
	release()
	return out
}

// handleBatch is HandleBatch, leaving the release of the steps' leases to
// the caller, who may answer first: the leases only keep out concurrent
// deliveries of the same jobs, which cannot start before the answer.
func (f *Function) handleBatch(ctx context.Context, events []event.Event) (out []wire.Result, release func()) {
	st, rdb, cfg := f.deps()
	f.metrics.batchJobs.Observe(float64(len(events)))
	out = make([]wire.Result, len(events))
	release = func() {}
	if st == nil {
		for i := range out {
			out[i] = f.reject(http.StatusServiceUnavailable, "not_started", "step function is not started")
		}
		return out, release
	}

	// 1. Decode, then lease, before reading anything: a second delivery
	// either waits for the first to commit or sees its result.
	steps := make([]*stepRun, 0, len(events))
	var twins []*stepRun
	seen := make(map[store.StepKey]bool, len(events))
	for i, e := range events {
		s, res := f.decode(ctx, e)
		if res != nil {
			out[i] = *res
			continue
		}
		s.out = &out[i]
		if seen[s.key()] {
			// A second copy of a job in the batch: answered as a job
			// whose lease another delivery holds (heldElsewhere).
			twins = append(twins, s)
			continue
		}
		seen[s.key()] = true
		steps = append(steps, s)
	}
	defer func() {
		for _, s := range steps {
			s.span.End()
		}
		for _, s := range twins {
			s.span.End()
		}
	}()
	if len(steps) == 0 {
		return out, release
	}
	leases, err := acquireLeases(ctx, rdb, cfg.RedisPrefix, keys(steps), LeaseTTL)
	release = func() { releaseLeases(rdb, leases) }
	if err != nil {
		for _, s := range append(steps, twins...) {
			s.finish(f.unavailable(s.log, "lease", err))
		}
		return out, release
	}
	// The leases last until the outcomes are committed: renewed together,
	// while the batch's nodes run and while they wait for its slowest one.
	stopKeeping := keepLeases(rdb, leases, LeaseTTL, func(l *lease) {
		f.log.Warn("step lease lost before its outcome was committed; another delivery may run the step", "lease", l.key)
	})
	defer stopKeeping()
	// A job whose lease another delivery holds (or a second copy in this
	// batch) is read too, unleased: a finished step's row no longer
	// changes, so its duplicate is answered at once instead of coming back
	// until the holder lets go.
	var leased []*stepRun
	held := twins
	for i, s := range steps {
		if leases[i] == nil {
			held = append(held, s)
			continue
		}
		leased = append(leased, s)
	}

	// 2. Load.
	loading := append(leased[:len(leased):len(leased)], held...)
	lds, err := st.LoadSteps(ctx, keys(loading))
	if err != nil {
		for _, s := range loading {
			s.finish(f.unavailable(s.log, "load", err))
		}
		return out, release
	}
	for i, s := range held {
		f.heldElsewhere(s, lds[len(leased)+i])
	}
	lds = lds[:len(leased)]
	var ready []*stepRun
	for i, s := range leased {
		if f.prepare(ctx, st, s, lds[i]) {
			ready = append(ready, s)
		}
	}

	// 3. Run the nodes.
	if len(ready) == 1 {
		f.run(ready[0], st, cfg)
	} else {
		var wg sync.WaitGroup
		for _, s := range ready {
			wg.Go(func() { f.run(s, st, cfg) })
		}
		wg.Wait()
	}

	// 4. Commit.
	var commits []*store.Commit
	var committing []*stepRun
	for _, s := range ready {
		if s.commit != nil {
			commits = append(commits, s.commit)
			committing = append(committing, s)
		}
	}
	if len(commits) > 0 {
		// Nodes that finished are committed even if the request was
		// cancelled meanwhile (the bridge timed out waiting for a slower
		// node of the batch, or is stopping): their redelivery then
		// re-emits the stored routing instead of running them again.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		start := time.Now()
		st.CommitSteps(cctx, commits)
		f.metrics.commit.Observe(time.Since(start).Seconds())
		cancel()
	}

	// 5. Answer.
	for _, s := range committing {
		f.answer(s)
	}
	return out, release
}

// stepRun is one job of a batch on its way through the step algorithm.
type stepRun struct {
	job  wire.Job
	ctx  context.Context // the request's, with the step's span
	span trace.Span
	log  *slog.Logger
	out  *wire.Result // where the job's result goes

	w    *workflow.Workflow
	step workflow.Step // the job's step: its node, iteration or dynamic definition
	load *store.StepLoad

	// Set by run: what to commit, and what the answer will carry besides
	// the successors the commit makes ready.
	commit  *store.Commit
	next    []wire.NextJob
	outcome string

	child *workflow.RunResult // subflows: the finished child run of a step awaiting it (subflow.go)
}

func (s *stepRun) key() store.StepKey { return store.StepKey{RunID: s.job.RunID, NodeID: s.job.Key()} }

func (s *stepRun) finish(r wire.Result) { *s.out = r }

func keys(steps []*stepRun) []store.StepKey {
	out := make([]store.StepKey, len(steps))
	for i, s := range steps {
		out[i] = s.key()
	}
	return out
}

// decode reads a job event; a result instead when it is malformed.
func (f *Function) decode(ctx context.Context, e event.Event) (*stepRun, *wire.Result) {
	if e.Type() != wire.JobEventType {
		r := f.reject(http.StatusBadRequest, "bad_event", "event type %q: want %q", e.Type(), wire.JobEventType)
		return nil, &r
	}
	job, err := wire.ParseJob(e.Data())
	if err != nil {
		r := f.reject(http.StatusBadRequest, "bad_job", "%v", err)
		return nil, &r
	}
	if tp, ok := e.Extensions()["traceparent"].(string); ok {
		ctx = telemetry.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
	}
	ctx, span := telemetry.Tracer().Start(ctx, "stepflow.function.step", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("stepflow.run_id", job.RunID), attribute.String("stepflow.node_id", job.NodeID),
			attribute.String("stepflow.step_key", job.Key()), attribute.Int("stepflow.attempt", job.Attempt)))
	log := f.log.With("run_id", job.RunID, "node_id", job.NodeID, "attempt", job.Attempt)
	if job.StepKey != "" {
		log = log.With("step_key", job.StepKey)
	}
	return &stepRun{job: job, ctx: ctx, span: span, log: log}, nil
}

// prepare decides, from what was loaded, whether the job's node runs; when
// it does not, it sets the job's result.
func (f *Function) prepare(ctx context.Context, st *store.Store, s *stepRun, ld *store.StepLoad) bool {
	job, log := s.job, s.log
	if ld.Run == nil {
		s.finish(f.reject(http.StatusUnprocessableEntity, "unknown_run", "run %q does not exist", job.RunID))
		return false
	}
	if ld.Run.Status != workflow.RunRunning {
		s.finish(f.done("run_" + string(ld.Run.Status)))
		return false
	}
	w, err := f.workflowFor(ctx, st, ld.Run.Digest, job.BlueprintID)
	if err != nil {
		if errors.Is(err, errTransient) || ctx.Err() != nil {
			s.finish(f.unavailable(log, "blueprint", err))
		} else {
			s.finish(f.reject(http.StatusUnprocessableEntity, "unknown_blueprint", "run %s: %v", job.RunID, err))
		}
		return false
	}
	step, ok := f.stepOf(s, w, ld)
	if !ok {
		return false
	}
	if ld.Run.Digest == "" {
		// Started the Flowcraft way: pin the registered blueprint and
		// create the start steps, then read the step again.
		if err := st.PinBlueprint(ctx, job.RunID, w); err != nil {
			s.finish(f.unavailable(log, "pin blueprint", err))
			return false
		}
		if ld, err = st.LoadStep(ctx, job.RunID, job.Key()); err != nil {
			s.finish(f.unavailable(log, "load", err))
			return false
		}
	}
	s.w, s.step, s.load = w, step, ld
	switch step := ld.Step; {
	case step == nil:
		// Not made ready (a stray or forged job): nothing to do.
		log.Warn("job for a node that is not ready; ignored")
		s.finish(f.done("not_ready"))
	case step.State.Terminal() || step.State == workflow.StepAwaitingFallback:
		next, err := f.reemit(ctx, st, w, job, step)
		if err != nil {
			s.finish(f.unavailable(log, "reemit", err))
		} else {
			s.finish(f.reply(next, "reemitted"))
		}
	case job.Attempt <= step.Attempts:
		s.finish(f.done("stale_attempt"))
	case step.State == workflow.StepAwaitingChild && !f.childDone(ctx, st, s): // subflows (subflow.go)
	case step.State == workflow.StepSleeping && step.WakeAt != nil && time.Until(*step.WakeAt) > earlyTolerance:
		s.finish(f.reply([]wire.NextJob{{Job: job, DelayMs: time.Until(*step.WakeAt).Milliseconds()}}, "early"))
	default:
		return true
	}
	return false
}

// heldElsewhere answers a job whose step's lease another delivery holds
// (or a second copy in the batch): 200 when the step is done with (the run
// is over, the step finished, or the job's attempt is behind it), for the
// holder's delivery, which is not acked before its answer, re-emits what
// the step made ready; 409 (retried later) while the step may still run.
// It re-emits nothing itself: under duplicated deliveries every copy that
// re-emitted would multiply the copies of the next step, iteration after
// iteration. (Should the holder be this job's own earlier delivery whose
// answer the bridge gave up on, its successors wait for the reconciler.)
func (f *Function) heldElsewhere(s *stepRun, ld *store.StepLoad) {
	switch {
	case ld.Run != nil && ld.Run.Status != workflow.RunRunning:
		s.finish(f.done("run_" + string(ld.Run.Status)))
	case ld.Step != nil && (ld.Step.State.Terminal() || s.job.Attempt <= ld.Step.Attempts):
		s.finish(f.done("duplicate"))
	default:
		s.finish(f.reject(http.StatusConflict, "leased", "step %s/%s is being run by another delivery", s.job.RunID, s.job.Key()))
	}
}

// stepOf names the job's step in w: a blueprint node's step by its key,
// or a dynamic node by the definition its row holds. A key that is no
// step of the job's node is refused (422).
func (f *Function) stepOf(s *stepRun, w *workflow.Workflow, ld *store.StepLoad) (workflow.Step, bool) {
	job := s.job
	key := job.Key()
	if step, ok := w.Step(key); ok {
		if step.Node.ID != job.NodeID {
			s.finish(f.reject(http.StatusUnprocessableEntity, "unknown_step", "step %q of blueprint %q is a step of node %q, not of nodeId %q", key, w.Blueprint.ID, step.Node.ID, job.NodeID))
			return workflow.Step{}, false
		}
		return step, true
	}
	if ld.Step != nil && ld.Step.Definition != nil && job.StepKey == "" {
		step, err := w.DynamicStep(*ld.Step.Definition)
		if err != nil {
			s.finish(f.reject(http.StatusUnprocessableEntity, "unknown_node", "run %s: %v", job.RunID, err))
			return workflow.Step{}, false
		}
		return step, true
	}
	if _, ok := w.Node(job.NodeID); ok {
		s.finish(f.reject(http.StatusUnprocessableEntity, "unknown_step", "blueprint %q (%s) has no step %q of node %q (a loop's node runs as <node>#<iteration>)", w.Blueprint.ID, w.Digest, key, job.NodeID))
		return workflow.Step{}, false
	}
	s.finish(f.reject(http.StatusUnprocessableEntity, "unknown_node", "blueprint %q (%s) has no node %q", w.Blueprint.ID, w.Digest, job.NodeID))
	return workflow.Step{}, false
}

// commitTimeout bounds a batch's commit once its request is gone.
const commitTimeout = 15 * time.Second

// run runs the job's node and decides what to commit: the result and its
// routing, a retry, a fallback, a sleep or the run's failure. A panic in
// deciding (the node's own panics are its failed attempts) fails this job
// alone, with 500, instead of the whole process.
func (f *Function) run(s *stepRun, st *store.Store, cfg Config) {
	defer func() {
		if p := recover(); p != nil {
			s.commit = nil
			f.metrics.replies.WithLabelValues("500", "panic").Inc()
			s.log.Error("step panicked; nothing committed", "panic", p, "stack", string(debug.Stack()))
			s.finish(wire.Result{Status: http.StatusInternalServerError, Error: fmt.Sprintf("internal error in step %s/%s: %v", s.job.RunID, s.job.Key(), p)})
		}
	}()
	ctx, job, log, w := s.ctx, s.job, s.log, s.w
	node, key := s.step.Node, s.step.Key
	step := s.load.Step
	limit := cfg.StepTimeout
	if node.Timeout > 0 {
		limit = node.Timeout
	}
	var outputs map[string]any
	if node.AllOutputs || len(node.OutputRefs) > 0 {
		var ids []string
		if !node.AllOutputs {
			ids = node.OutputRefs
		}
		var err error
		if outputs, err = st.Outputs(ctx, nil, job.RunID, ids); err != nil {
			s.finish(f.unavailable(log, "load outputs", err))
			return
		}
	}
	input := node.ResolveInput(step.Input, s.load.Context, outputs)
	// The node sees the outputs it names as _outputs.<id>, as in the local
	// runner; they are not changes, so they are not written back.
	nodeValues := copyMap(s.load.Context)
	for id, v := range outputs {
		nodeValues[workflow.OutputKey(id)] = v
	}
	lookup := &outputLookup{ctx: ctx, st: st, w: w, runID: job.RunID, outputs: outputs}
	nodeCtx := workflow.NewMapContext(nodeValues).WithLookup(lookup.get)
	var resumed *time.Time
	if step.State == workflow.StepSleeping {
		resumed = step.WakeAt
	}
	attemptCtx, cancel := context.WithTimeout(ctx, limit)
	attemptCtx, cancelAttempt := context.WithCancelCause(attemptCtx)
	hooks := &stepWebhooks{base: cfg.PublicURL} // a webhook node's endpoint
	attemptCtx = workflow.WithWebhookEndpoints(attemptCtx, hooks)
	stopWatching := f.watchRun(attemptCtx, st, job.RunID, cancelAttempt)
	attemptCtx, nodeSpan := telemetry.Tracer().Start(attemptCtx, "stepflow.node "+node.Uses, trace.WithAttributes(attribute.String("stepflow.node_type", node.Uses)))
	started := time.Now()
	res, runErr := workflow.Invoke(attemptCtx, node.Func, workflow.NodeInput{
		RunID: job.RunID, NodeID: node.ID, StepKey: key, Iteration: s.step.Iteration, Attempt: job.Attempt, Input: input,
		Params: node.Params, Context: nodeCtx, Resumed: resumed, Child: s.child,
	})
	if runErr != nil {
		nodeSpan.RecordError(runErr)
		nodeSpan.SetStatus(codes.Error, runErr.Error())
	}
	nodeSpan.End()
	stopWatching()
	if runErr == nil && attemptCtx.Err() != nil {
		runErr = attemptCtx.Err()
	}
	timedOut := errors.Is(attemptCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	finished := time.Now()
	f.metrics.stepDuration.WithLabelValues(node.Uses).Observe(finished.Sub(started).Seconds())
	if ctx.Err() != nil {
		// The request itself was cancelled (bridge timeout or shutdown):
		// commit nothing; the job will be delivered again.
		s.finish(f.unavailable(log, "run node", ctx.Err()))
		return
	}
	if err := lookup.failed(); err != nil {
		// The node read an output PostgreSQL could not give: what it
		// did is not committed; the job will be delivered again.
		s.finish(f.unavailable(log, "load output", err))
		return
	}
	if timedOut {
		runErr = fmt.Errorf("node %s timed out after %s", node.ID, limit)
	}
	var outputJSON []byte
	if runErr == nil && res.Output != nil {
		outputJSON, runErr = encodeOutput(node.ID, res.Output, cfg.MaxOutputBytes)
	}

	o := store.Outcome{
		RunID: job.RunID, NodeID: key, Definition: s.step.Dynamic, LoadedAttempts: step.Attempts, Attempts: job.Attempt,
		StartedAt: started, FinishedAt: finished,
	}
	verdict := node.Outcome(job.Attempt, runErr)
	if !f.startChild(ctx, st, s, &o, &verdict, &runErr) { // subflows (subflow.go)
		return
	}
	o.State = verdict.State
	switch verdict.State {
	case workflow.StepSleeping:
		wake := verdict.Wake
		// The same attempt resumes at wake: it does not count.
		o.WakeAt, o.Attempts = &wake, step.Attempts
		s.next = []wire.NextJob{{Job: job, DelayMs: max(0, time.Until(wake).Milliseconds())}}
		s.outcome = "suspended"
	case workflow.StepRetrying:
		wake := finished.Add(verdict.Delay)
		o.Error, o.WakeAt = runErr.Error(), &wake
		retry := job
		retry.Attempt = verdict.Attempt
		s.next = []wire.NextJob{{Job: retry, DelayMs: verdict.Delay.Milliseconds()}}
		s.outcome = "retried"
		log.Warn("node attempt failed; retrying", "err", runErr, "delay", verdict.Delay)
	case workflow.StepAwaitingFallback:
		o.Error = runErr.Error()
		// The fallback runs in the step's iteration.
		o.Fallback, _ = w.FallbackStep(key)
		o.FallbackInput = input
		s.outcome = "fallback"
		log.Warn("node failed; running its fallback", "err", runErr, "fallback", o.Fallback)
	case workflow.StepFailed:
		o.Error = runErr.Error()
		s.outcome = "failed"
		log.Warn("node failed; failing the run", "err", runErr)
	case workflow.StepAwaiting:
		// Held by no worker and no message until the run is resumed here.
		s.outcome = "awaiting"
	case workflow.StepAwaitingChild:
		// Held by no worker and no message until its child run finishes
		// (startChild set the child and the attempts).
	default:
		o.Result, o.OutputJSON, o.WebhookHash = res, outputJSON, hooks.hash
		o.ContextSet, o.ContextDeleted = nodeCtx.Changes()
		env := workflow.Env{Context: nodeCtx.Snapshot(), Outputs: outputs}
		var err error
		o.Routing, err = w.RouteStep(s.step, res, env)
		if err == nil {
			o.Recovered, err = f.recovered(w, s.step, res, env)
		}
		if err != nil {
			// A condition or transform that cannot be evaluated fails the
			// run: retrying would evaluate it the same way.
			o.State, o.Error, o.Routing, o.Recovered = workflow.StepFailed, err.Error(), workflow.Routing{}, nil
			s.outcome = "failed"
			log.Warn("routing failed; failing the run", "err", err)
		} else {
			s.outcome = "succeeded"
		}
	}
	if timedOut {
		s.outcome = "timed_out"
	}
	f.metrics.steps.WithLabelValues(s.outcome, node.Uses).Inc()
	s.span.SetAttributes(attribute.String("stepflow.outcome", s.outcome))
	log.Debug("node attempt", "uses", node.Uses, "outcome", s.outcome,
		"started", started.UnixMicro(), "finished", finished.UnixMicro())
	s.commit = &store.Commit{W: w, O: o}
}

// answer turns a committed step into its job's result.
func (f *Function) answer(s *stepRun) {
	c := s.commit
	if c.Err != nil {
		s.finish(f.unavailable(s.log, "commit", c.Err))
		return
	}
	if !c.Res.Applied {
		s.log.Info("result not committed: run no longer running or step already finished", "run_status", c.Res.RunStatus)
		s.finish(f.done("not_applied"))
		return
	}
	if c.Res.Finished {
		f.metrics.runs.WithLabelValues(string(c.Res.RunStatus)).Inc()
		s.log.Info("run finished", "status", c.Res.RunStatus)
	}
	if c.Res.RunStatus == workflow.RunAwaiting {
		s.log.Info("run awaiting a resume")
	}
	next := append(s.next, childJobs(c.Res)...) // subflows (subflow.go)
	for _, key := range c.Res.Ready {
		next = append(next, wire.NextJob{Job: wire.NewJob(s.job.RunID, s.job.BlueprintID, s.w.StepNode(key), key, 1)})
	}
	s.finish(f.reply(next, s.outcome))
}

// recovered routes a fallback's result along the edges of the step it
// stands in for (and of that step's own backer, for fallback chains), in
// the fallback's iteration. The map is by step key.
func (f *Function) recovered(w *workflow.Workflow, step workflow.Step, res workflow.NodeResult, env workflow.Env) (map[string]workflow.Routing, error) {
	if step.Dynamic != nil {
		return nil, nil // a dynamic node backs nothing
	}
	var out map[string]workflow.Routing
	for backed, ok := w.BackedBy(step.Node.ID); ok; backed, ok = w.BackedBy(backed) {
		key := backed
		if step.InLoop {
			key = w.StepKey(backed, step.Iteration)
		}
		r, err := w.Route(key, res, env)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = map[string]workflow.Routing{}
		}
		out[key] = r
	}
	return out, nil
}

// reemit re-sends what a finished step's stored routing decision made
// ready and is still pending, without running anything or re-evaluating a
// condition (a successor that already ran needs nothing, so a duplicate
// does not replay the finished part of the graph). Duplicate jobs are
// harmless: each is absorbed by its step row.
func (f *Function) reemit(ctx context.Context, st *store.Store, w *workflow.Workflow, job wire.Job, step *store.Step) ([]wire.NextJob, error) {
	targets := successorSteps(w, step)
	if len(targets) == 0 {
		return nil, nil
	}
	pending, err := st.PendingAmong(ctx, job.RunID, targets)
	if err != nil {
		return nil, err
	}
	next := make([]wire.NextJob, 0, len(pending))
	for _, p := range pending {
		var delay int64
		if p.WakeAt != nil {
			delay = max(0, time.Until(*p.WakeAt).Milliseconds())
		}
		next = append(next, wire.NextJob{Job: wire.NewJob(job.RunID, job.BlueprintID, p.Node, p.NodeID, p.Attempts+1), DelayMs: delay})
	}
	return next, nil
}

// successorSteps are the keys of the steps that a finished step's commit
// may have made ready: the steps of the targets of its taken edges (in a
// loop, those of its iteration and the next, or the loop's entries), the
// dynamic nodes its result created, and the fallback of a step awaiting
// it. Listing a step that some other commit made ready is harmless: a
// duplicate job of a pending step is absorbed by its row.
func successorSteps(w *workflow.Workflow, step *store.Step) []string {
	switch step.State {
	case workflow.StepSucceeded, workflow.StepRecovered:
	case workflow.StepAwaitingFallback:
		if fb, ok := w.FallbackStep(step.NodeID); ok {
			return []string{fb}
		}
		return nil
	default:
		return nil
	}
	it := 0
	if s, ok := w.Step(step.NodeID); ok {
		it = s.Iteration
	} else if d := step.Definition; d != nil {
		if s, ok := w.Step(d.Source); ok {
			it = s.Iteration // a worker gathers in its creator's iteration
		}
	}
	var out []string
	for _, t := range step.Taken {
		out = append(out, t)
		if _, ok := w.InLoop(t); ok {
			out = append(out, w.StepKey(t, it), w.StepKey(t, it+1), w.StepKey(t, 0), w.StepKey(t, 1))
		}
	}
	for _, d := range step.Dynamic {
		out = append(out, d.ID)
	}
	return out
}

var errTransient = errors.New("transient")

func (f *Function) reply(jobs []wire.NextJob, reason string) wire.Result {
	f.metrics.replies.WithLabelValues("200", reason).Inc()
	return wire.Result{Status: http.StatusOK, Jobs: jobs}
}

func (f *Function) done(reason string) wire.Result {
	f.metrics.replies.WithLabelValues("200", reason).Inc()
	return wire.Result{Status: http.StatusOK}
}

func (f *Function) reject(status int, reason, format string, args ...any) wire.Result {
	msg := fmt.Sprintf(format, args...)
	f.metrics.replies.WithLabelValues(fmt.Sprint(status), reason).Inc()
	f.log.Warn("job rejected", "status", status, "reason", reason, "detail", msg)
	return wire.Result{Status: status, Error: msg}
}

func (f *Function) unavailable(log *slog.Logger, what string, err error) wire.Result {
	f.metrics.replies.WithLabelValues("503", what).Inc()
	log.Warn("step could not complete; the job will be retried", "stage", what, "err", err)
	return wire.Result{Status: http.StatusServiceUnavailable, Error: fmt.Sprintf("%s: %v", what, err)}
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// cancelPoll is how often a running node's run is checked for cancellation.
const cancelPoll = 250 * time.Millisecond

// errRunStopped cancels a node attempt whose run was cancelled (or ended)
// while it ran.
var errRunStopped = errors.New("run is no longer running")

// watchRun cancels the node attempt when its run stops running (stepflow
// cancel), checking every cancelPoll while the node runs; nodes shorter
// than that cost nothing. (The step's lease is kept by keepLeases.) It
// returns a function that stops watching.
func (f *Function) watchRun(ctx context.Context, st *store.Store, runID string, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(cancelPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				status, err := st.Status(ctx, runID)
				if err == nil && status != workflow.RunRunning {
					cancel(fmt.Errorf("%w (%s)", errRunStopped, status))
					return
				}
			}
		}
	}()
	return func() { close(done) }
}
