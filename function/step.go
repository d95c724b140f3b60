package function

import (
	"context"
	"errors"
	"fmt"
	"github.com/stepflow/stepflow/internal/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"log/slog"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// LeaseTTL is how long a step's lease lives unless renewed. It is renewed
// every LeaseTTL/3 while the node runs, so a killed function's leases free
// their steps within LeaseTTL, whatever the node's time limit.
const LeaseTTL = 5 * time.Second

// earlyTolerance: a sleeping step woken this much before its due time runs.
const earlyTolerance = 50 * time.Millisecond

// Handle runs one job: the step algorithm.
//
//  1. Decode the job (malformed → 400). Take the step's lease in Redis
//     (held by another delivery → 409, the bridge retries later), so two
//     deliveries of one job never run its node at the same time.
//  2. Load the run, the step and the context in one round trip. A run that
//     is not running → 200 without jobs. A finished step is not run again:
//     its stored routing decision is re-emitted.
//  3. Run the node with its time limit.
//  4. Commit the result, routing, context changes, successors and run
//     bookkeeping in one transaction (see store.CommitStep).
//  5. Reply with the jobs to publish: successors, a delayed retry, a
//     fallback, or the wake-up of a sleeping node.
//
// Error replies carry a status the bridge acts on: 4xx dead-letters the
// job, 409 and 503 are retried.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	st, rdb, cfg := f.deps()
	if st == nil {
		return f.reject(http.StatusServiceUnavailable, "not_started", "step function is not started")
	}
	if e.Type() != wire.JobEventType {
		return f.reject(http.StatusBadRequest, "bad_event", "event type %q: want %q", e.Type(), wire.JobEventType)
	}
	job, err := wire.ParseJob(e.Data())
	if err != nil {
		return f.reject(http.StatusBadRequest, "bad_job", "%v", err)
	}
	log := f.log.With("run_id", job.RunID, "node_id", job.NodeID, "attempt", job.Attempt)
	if tp, ok := e.Extensions()["traceparent"].(string); ok {
		ctx = telemetry.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
	}
	ctx, span := telemetry.Tracer().Start(ctx, "stepflow.function.step", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("stepflow.run_id", job.RunID), attribute.String("stepflow.node_id", job.NodeID),
			attribute.Int("stepflow.attempt", job.Attempt)))
	defer span.End()

	// 1. Lease, before reading anything: a second delivery either waits
	// for the first to commit or sees its result.
	l, ok, err := acquireLease(ctx, rdb, cfg.RedisPrefix, job.RunID, job.NodeID, LeaseTTL)
	if err != nil {
		return f.unavailable(log, "lease", err)
	}
	if !ok {
		return f.reject(http.StatusConflict, "leased", "step %s/%s is being run by another delivery", job.RunID, job.NodeID)
	}
	defer l.release()

	// 2. Load.
	ld, err := st.LoadStep(ctx, job.RunID, job.NodeID)
	if err != nil {
		return f.unavailable(log, "load", err)
	}
	if ld.Run == nil {
		return f.reject(http.StatusUnprocessableEntity, "unknown_run", "run %q does not exist", job.RunID)
	}
	if ld.Run.Status != workflow.RunRunning {
		return f.done("run_" + string(ld.Run.Status))
	}
	w, err := f.workflowFor(ctx, st, ld.Run.Digest, job.BlueprintID)
	if err != nil {
		if errors.Is(err, errTransient) || ctx.Err() != nil {
			return f.unavailable(log, "blueprint", err)
		}
		return f.reject(http.StatusUnprocessableEntity, "unknown_blueprint", "run %s: %v", job.RunID, err)
	}
	node, ok := w.Node(job.NodeID)
	if !ok {
		return f.reject(http.StatusUnprocessableEntity, "unknown_node", "blueprint %q (%s) has no node %q", w.Blueprint.ID, w.Digest, job.NodeID)
	}
	if ld.Run.Digest == "" {
		// Started the Flowcraft way: pin the registered blueprint and
		// create the start steps, then read the step again.
		if err := st.PinBlueprint(ctx, job.RunID, w); err != nil {
			return f.unavailable(log, "pin blueprint", err)
		}
		if ld, err = st.LoadStep(ctx, job.RunID, job.NodeID); err != nil {
			return f.unavailable(log, "load", err)
		}
	}
	step := ld.Step
	switch {
	case step == nil:
		// Not made ready (a stray or forged job): nothing to do.
		log.Warn("job for a node that is not ready; ignored")
		return f.done("not_ready")
	case step.State.Terminal() || step.State == workflow.StepAwaitingFallback:
		next, err := f.reemit(ctx, st, w, job, step)
		if err != nil {
			return f.unavailable(log, "reemit", err)
		}
		return f.reply(e, next, "reemitted")
	case job.Attempt <= step.Attempts:
		return f.done("stale_attempt")
	case step.State == workflow.StepSleeping && step.WakeAt != nil && time.Until(*step.WakeAt) > earlyTolerance:
		return f.reply(e, []wire.NextJob{{Job: job, DelayMs: time.Until(*step.WakeAt).Milliseconds()}}, "early")
	}

	limit := cfg.StepTimeout
	if node.Timeout > 0 {
		limit = node.Timeout
	}

	// 3. Run the node.
	var outputs map[string]any
	if node.AllOutputs || len(node.OutputRefs) > 0 {
		var ids []string
		if !node.AllOutputs {
			ids = node.OutputRefs
		}
		if outputs, err = st.Outputs(ctx, nil, job.RunID, ids); err != nil {
			return f.unavailable(log, "load outputs", err)
		}
	}
	input := w.ResolveInput(node.ID, step.Input, ld.Context, outputs)
	// The node sees the outputs it names as _outputs.<id>, as in the local
	// runner; they are not changes, so they are not written back.
	nodeValues := copyMap(ld.Context)
	for id, v := range outputs {
		nodeValues[workflow.OutputKey(id)] = v
	}
	nodeCtx := workflow.NewMapContext(nodeValues)
	var resumed *time.Time
	if step.State == workflow.StepSleeping {
		resumed = step.WakeAt
	}
	attemptCtx, cancel := context.WithTimeout(ctx, limit)
	attemptCtx, cancelAttempt := context.WithCancelCause(attemptCtx)
	stopWatching := f.watchRun(attemptCtx, st, job.RunID, l, cancelAttempt)
	attemptCtx, nodeSpan := telemetry.Tracer().Start(attemptCtx, "stepflow.node "+node.Uses, trace.WithAttributes(attribute.String("stepflow.node_type", node.Uses)))
	started := time.Now()
	res, runErr := workflow.Invoke(attemptCtx, node.Func, workflow.NodeInput{
		RunID: job.RunID, NodeID: node.ID, Attempt: job.Attempt, Input: input,
		Params: node.Params, Context: nodeCtx, Resumed: resumed,
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
		return f.unavailable(log, "run node", ctx.Err())
	}
	if timedOut {
		runErr = fmt.Errorf("node %s timed out after %s", node.ID, limit)
	}

	// 4. Decide and commit.
	o := store.Outcome{
		RunID: job.RunID, NodeID: node.ID, LoadedAttempts: step.Attempts, Attempts: job.Attempt,
		StartedAt: started, FinishedAt: finished,
	}
	var next []wire.NextJob
	var outcome string
	var suspend *workflow.SuspendError
	switch {
	case errors.As(runErr, &suspend):
		wake := suspend.Until
		o.State, o.WakeAt, o.Attempts = workflow.StepSleeping, &wake, step.Attempts
		next = []wire.NextJob{{Job: job, DelayMs: max(0, time.Until(wake).Milliseconds())}}
		outcome = "suspended"
	case runErr != nil && job.Attempt < node.MaxAttempts:
		delay := node.RetryDelayFor(job.Attempt + 1)
		wake := finished.Add(delay)
		o.State, o.Error, o.WakeAt = workflow.StepRetrying, runErr.Error(), &wake
		retry := job
		retry.Attempt++
		next = []wire.NextJob{{Job: retry, DelayMs: delay.Milliseconds()}}
		outcome = "retried"
		log.Warn("node attempt failed; retrying", "err", runErr, "delay", delay)
	case runErr != nil && node.Fallback != "":
		o.State, o.Error = workflow.StepAwaitingFallback, runErr.Error()
		o.Fallback, o.FallbackInput = node.Fallback, input
		outcome = "fallback"
		log.Warn("node failed; running its fallback", "err", runErr, "fallback", node.Fallback)
	case runErr != nil:
		o.State, o.Error = workflow.StepFailed, runErr.Error()
		outcome = "failed"
		log.Warn("node failed; failing the run", "err", runErr)
	default:
		o.State, o.Result = workflow.StepSucceeded, res
		o.ContextSet, o.ContextDeleted = nodeCtx.Changes()
		env := workflow.Env{Context: nodeCtx.Snapshot(), Outputs: outputs}
		o.Routing, err = w.Route(node.ID, res, env)
		if err == nil {
			o.Recovered, err = f.recovered(w, node.ID, res, env)
		}
		if err != nil {
			// A condition or transform that cannot be evaluated fails the
			// run: retrying would evaluate it the same way.
			o.State, o.Error, o.Routing, o.Recovered = workflow.StepFailed, err.Error(), workflow.Routing{}, nil
			outcome = "failed"
			log.Warn("routing failed; failing the run", "err", err)
		} else {
			outcome = "succeeded"
		}
	}
	if timedOut {
		outcome = "timed_out"
	}
	f.metrics.steps.WithLabelValues(outcome, node.Uses).Inc()
	span.SetAttributes(attribute.String("stepflow.outcome", outcome))
	log.Debug("node attempt", "uses", node.Uses, "outcome", outcome,
		"started", started.UnixMicro(), "finished", finished.UnixMicro())
	committed, err := st.CommitStep(ctx, w, o)
	if err != nil {
		return f.unavailable(log, "commit", err)
	}
	if !committed.Applied {
		log.Info("result not committed: run no longer running or step already finished", "run_status", committed.RunStatus)
		return f.done("not_applied")
	}
	if committed.RunStatus.Final() {
		f.metrics.runs.WithLabelValues(string(committed.RunStatus)).Inc()
		log.Info("run finished", "status", committed.RunStatus)
	}
	// 5. Reply.
	for _, id := range committed.Ready {
		next = append(next, wire.NextJob{Job: wire.Job{RunID: job.RunID, BlueprintID: job.BlueprintID, NodeID: id, Attempt: 1}})
	}
	return f.reply(e, next, outcome)
}

// recovered routes a fallback's result along the edges of the node it
// stands in for (and of that node's own backer, for fallback chains).
func (f *Function) recovered(w *workflow.Workflow, nodeID string, res workflow.NodeResult, env workflow.Env) (map[string]workflow.Routing, error) {
	var out map[string]workflow.Routing
	for backed, ok := w.BackedBy(nodeID); ok; backed, ok = w.BackedBy(backed) {
		r, err := w.Route(backed, res, env)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = map[string]workflow.Routing{}
		}
		out[backed] = r
	}
	return out, nil
}

// reemit re-sends what a finished step's stored routing decision made
// ready and is still pending, without running anything or re-evaluating a
// condition (a successor that already ran needs nothing, so a duplicate
// does not replay the finished part of the graph). Duplicate jobs are
// harmless: each is absorbed by its step row.
func (f *Function) reemit(ctx context.Context, st *store.Store, w *workflow.Workflow, job wire.Job, step *store.Step) ([]wire.NextJob, error) {
	var targets []string
	switch step.State {
	case workflow.StepSucceeded, workflow.StepRecovered:
		targets = step.Taken
	case workflow.StepAwaitingFallback:
		if n, ok := w.Node(step.NodeID); ok && n.Fallback != "" {
			targets = []string{n.Fallback}
		}
	}
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
		next = append(next, wire.NextJob{Job: wire.Job{RunID: job.RunID, BlueprintID: job.BlueprintID, NodeID: p.NodeID, Attempt: p.Attempts + 1}, DelayMs: delay})
	}
	return next, nil
}

var errTransient = errors.New("transient")

func (f *Function) reply(req event.Event, jobs []wire.NextJob, reason string) (*event.Event, error) {
	if len(jobs) == 0 {
		return f.done(reason)
	}
	resp := event.New()
	resp.SetID(req.ID() + "/reply")
	resp.SetType(wire.JobsEventType)
	resp.SetSource(wire.FunctionSource)
	if s := req.Subject(); s != "" {
		resp.SetSubject(s)
	}
	if err := resp.SetData(event.ApplicationJSON, wire.Reply{Jobs: jobs}); err != nil {
		return nil, cehttp.NewResult(http.StatusInternalServerError, "encode reply: %v", err)
	}
	f.metrics.replies.WithLabelValues("200", reason).Inc()
	return &resp, nil
}

func (f *Function) done(reason string) (*event.Event, error) {
	f.metrics.replies.WithLabelValues("200", reason).Inc()
	return nil, nil
}

func (f *Function) reject(status int, reason, format string, args ...any) (*event.Event, error) {
	f.metrics.replies.WithLabelValues(fmt.Sprint(status), reason).Inc()
	f.log.Warn("job rejected", "status", status, "reason", reason, "detail", fmt.Sprintf(format, args...))
	return nil, cehttp.NewResult(status, format, args...)
}

func (f *Function) unavailable(log *slog.Logger, what string, err error) (*event.Event, error) {
	f.metrics.replies.WithLabelValues("503", what).Inc()
	log.Warn("step could not complete; the job will be retried", "stage", what, "err", err)
	return nil, cehttp.NewResult(http.StatusServiceUnavailable, "%s: %v", what, err)
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

// watchRun renews the step's lease and cancels the node attempt when its
// run stops running (stepflow cancel), checking every cancelPoll while the
// node runs; nodes shorter than that cost nothing. It returns a function
// that stops watching.
func (f *Function) watchRun(ctx context.Context, st *store.Store, runID string, l *lease, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(cancelPoll)
		defer t.Stop()
		lastRenew := time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if time.Since(lastRenew) >= LeaseTTL/3 {
					// Keep the lease while the node runs.
					if err := l.renew(ctx, LeaseTTL); err == nil {
						lastRenew = time.Now()
					}
				}
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
