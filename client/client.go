package client

import (
	"context"
	"fmt"
	"github.com/stepflow/stepflow/internal/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/schema"
	"github.com/stepflow/stepflow/workflow"
)

// Config says where runs live and where jobs go.
type Config struct {
	PostgresURL string
	AMQPURL     string
	Queue       string // default "flowcraft-jobs"
	// QueueType is the type of the job queue's queues, declared on the
	// first publish: "classic" (default) or "quorum", as the bridge has it.
	QueueType string
	Tables    schema.Tables
	// Registry holds the node types the step function serves. When set,
	// Start refuses a blueprint with a node of another type, naming it,
	// rather than record a run whose job would be dead-lettered; nil
	// leaves node types unchecked.
	Registry *workflow.Registry
}

// Client talks to PostgreSQL and RabbitMQ. It is safe for concurrent use.
type Client struct {
	cfg   Config
	store *store.Store
	pub   *jobqueue.Publisher
	// compiled holds the runs' blueprint snapshots, compiled, by digest
	// (Resume routes with them).
	compiled sync.Map
}

// New opens a connection pool on PostgreSQL and a publisher on RabbitMQ;
// neither dials until it is first used (see Ping).
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Queue == "" {
		cfg.Queue = jobqueue.DefaultQueue
	}
	if cfg.Tables == (schema.Tables{}) {
		cfg.Tables = schema.DefaultTables()
	}
	qt, err := jobqueue.ParseQueueType(cfg.QueueType)
	if err != nil {
		return nil, fmt.Errorf("client: QueueType: %w", err)
	}
	pool, err := store.Connect(ctx, cfg.PostgresURL, 4)
	if err != nil {
		return nil, err
	}
	st, err := store.New(pool, cfg.Tables)
	if err != nil {
		pool.Close()
		return nil, err
	}
	pub := jobqueue.NewTopologyPublisher(cfg.AMQPURL, jobqueue.Topology{Queue: cfg.Queue, Type: qt})
	return &Client{cfg: cfg, store: st, pub: pub}, nil
}

// Close releases the connections.
func (c *Client) Close() {
	c.pub.Close()
	c.store.Close()
}

// Ping checks that PostgreSQL answers: New connects lazily, so a wrong
// address shows only at the first query otherwise.
func (c *Client) Ping(ctx context.Context) error { return c.store.Ping(ctx) }

// PingRabbitMQ checks that RabbitMQ gives the client a channel with the job
// queue's topology declared, dialling first if it has no connection (or
// the broker closed it): the channel Start publishes on.
func (c *Client) PingRabbitMQ(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		_, err := c.pub.Channel()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("connect to RabbitMQ: %w", ctx.Err())
	}
}

// StartOptions tune Start.
type StartOptions struct {
	// RunID names the run (default: a new UUID).
	RunID string
}

// Start records a run of bp with the given input (its initial context)
// and publishes its start jobs. The blueprint is pinned to the run: later
// changes to it do not affect this run. A blueprint, input or run id that
// cannot make a run is refused with an error that errors.Is ErrInvalid
// (for the blueprint, also errors.As a *workflow.ValidationError, whose
// problems name their JSON paths); nothing is recorded then.
func (c *Client) Start(ctx context.Context, bp *workflow.Blueprint, input map[string]any, opts StartOptions) (string, error) {
	w, err := workflow.Compile(bp, c.cfg.Registry)
	if err != nil {
		return "", invalid(err)
	}
	runID := opts.RunID
	if runID == "" {
		runID = uuid.NewString()
	}
	// Every job of the run must be a message the bridge and the function
	// take (ids within bounds, UTF-8): a run recorded with a job that can
	// never be published would stay running forever.
	for _, id := range w.NodeIDs() {
		key := id // a loop's node: its longest step key
		if c, ok := w.InLoop(id); ok {
			key = w.StepKey(id, w.MaxIterations(c)+1)
		}
		if err := jobqueue.NewJob(runID, bp.ID, id, key, 1).Validate(); err != nil {
			return "", invalid(fmt.Errorf("start run %.40q: %w", runID, err))
		}
	}
	// The run's trace starts here (or joins the caller's span).
	ctx, span := telemetry.Tracer().Start(ctx, "stepflow.run.start", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("stepflow.run_id", runID), attribute.String("stepflow.blueprint_id", bp.ID)))
	defer span.End()
	starts, err := c.store.CreateRun(ctx, runID, w, input)
	if err != nil {
		if isEncodeError(err) {
			return "", invalid(err) // an input that is no JSON
		}
		return "", ownError(err)
	}
	for _, id := range starts {
		job := jobqueue.Job{RunID: runID, BlueprintID: bp.ID, NodeID: id, Attempt: 1}
		if err := c.pub.Publish(ctx, job, 0); err != nil {
			return runID, fmt.Errorf("run %s is recorded but its start job %s was not published (the reconciler will republish it): %w", runID, id, err)
		}
	}
	return runID, nil
}

// Cancel stops a run: no further step of it starts. It returns the run's
// status afterwards (cancelled, or the final status it already had). The
// child runs its subflow steps started (and theirs) are cancelled with it.
func (c *Client) Cancel(ctx context.Context, runID string) (workflow.RunStatus, error) {
	st, err := c.store.Cancel(ctx, runID)
	return st, ownError(err)
}

// Wait polls the run until it reaches a final status or awaits a resume
// (workflow.RunAwaiting: nothing runs until Resume), then returns its
// result.
func (c *Client) Wait(ctx context.Context, runID string) (*workflow.RunResult, error) {
	delay := 5 * time.Millisecond
	for {
		run, err := c.store.GetRun(ctx, runID)
		if err != nil && ctx.Err() == nil {
			return nil, ownError(err)
		}
		if run != nil && (run.Status.Final() || run.Status == workflow.RunAwaiting) {
			return c.Result(ctx, runID)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("run %s: %w", runID, ErrTimeout)
		case <-t.C:
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// Result reads a run as a RunResult (the same shape `stepflow run --local`
// prints), whatever its status.
func (c *Client) Result(ctx context.Context, runID string) (*workflow.RunResult, error) {
	run, err := c.store.GetRun(ctx, runID)
	if err != nil {
		return nil, ownError(err)
	}
	steps, err := c.store.Steps(ctx, runID)
	if err != nil {
		return nil, err
	}
	res := &workflow.RunResult{RunID: runID, BlueprintID: run.BlueprintID, Status: run.Status, Steps: []workflow.StepRecord{}}
	var w *workflow.Workflow
	if run.Digest != "" {
		if bp, err := c.store.LoadBlueprint(ctx, run.Digest); err == nil {
			w, _ = workflow.Compile(bp, nil)
		}
	}
	// Steps in the local runner's order (blueprint order, a loop iteration
	// by iteration, batch workers after their creator); a loop's exit
	// step runs nothing and is not listed.
	outputs := map[string]any{}
	for _, st := range orderSteps(w, steps) {
		rec := stepRecord(w, st)
		if st.State == workflow.StepSucceeded || st.State == workflow.StepRecovered {
			outputs[rec.NodeID] = st.Output // the last iteration's stands
		}
		rec.StepKey = ""
		if st.NodeID != rec.NodeID {
			rec.StepKey = st.NodeID
		}
		if st.StartedAt != nil && st.FinishedAt != nil {
			rec.DurationMs = float64(st.FinishedAt.Sub(*st.StartedAt).Microseconds()) / 1000
		}
		res.Steps = append(res.Steps, rec)
	}
	if run.Status == workflow.RunCompleted && run.StatusData != nil {
		res.Context = run.StatusData
	} else {
		ctxData, err := c.store.Context(ctx, runID)
		if err != nil {
			return nil, err
		}
		for id, v := range outputs {
			ctxData[workflow.OutputKey(id)] = v
			ctxData[id] = v // Flowcraft's bare key, as a completed run stores it
		}
		res.Context = ctxData
	}
	if run.Status == workflow.RunCompleted && w != nil {
		res.Output = w.FinalOutput(outputs)
	}
	if run.Status == workflow.RunFailed || run.Status == workflow.RunCancelled {
		msg := run.Error
		if msg == "" {
			msg = string(run.Status)
		}
		nodeID, _ := run.StatusData["nodeId"].(string)
		res.Errors = []workflow.StepError{{NodeID: nodeID, Message: msg}}
	}
	end := time.Now()
	if run.FinishedAt != nil {
		end = *run.FinishedAt
	}
	res.DurationMs = float64(end.Sub(run.CreatedAt).Microseconds()) / 1000
	if res.Parent, res.Children, err = c.links(ctx, runID); err != nil { // subflows (children.go)
		return nil, err
	}
	return res, nil
}
