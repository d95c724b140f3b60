// Package reconciler finds runs that stopped moving and republishes what
// is missing, from what PostgreSQL knows.
//
// Every step that has to run has a row in the steps table in a pending
// state (ready, retrying, sleeping): successors are made ready in the same
// transaction that finishes their predecessor, with routing decisions,
// skips and joins already applied. So the frontier of a stalled run is
// exactly its pending rows; the reconciler never re-evaluates a condition
// and cannot resurrect an untaken branch.
//
// Reconciler.Run is one pass (the CronJob form); Service runs passes on a
// cron schedule, with metrics and health endpoints (the long-lived form).
package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// Defaults.
const (
	DefaultThreshold = 300 * time.Second
	DefaultBatchSize = 100
	DefaultSchedule  = "@every 30s"
	// OverdueGrace is how long past its wake time a delayed step may
	// still be in the delay queues before it is presumed lost.
	OverdueGrace = 10 * time.Second
)

// Publisher publishes one job after delay, with a broker confirm.
type Publisher func(ctx context.Context, job jobqueue.Job, delay time.Duration) error

// Options configure a Reconciler.
type Options struct {
	Store       *store.Store
	Redis       redis.UniversalClient // for lease checks (one Redis or a cluster); nil: no lease checks
	RedisPrefix string
	Publish     Publisher
	// Channel and Queue give access to the dead-letter queue <Queue>.dlq;
	// a nil Channel skips dead-letter ingestion.
	Channel func() (*amqp.Channel, error)
	Queue   string
	// Blueprints by id, for runs started the Flowcraft way whose start
	// jobs were lost before any ran (optional).
	Blueprints map[string]*workflow.Workflow
	Threshold  time.Duration // a running run with no step finished for this long is stalled
	BatchSize  int
	Logger     *slog.Logger
}

// Stats summarises one reconcile pass.
type Stats struct {
	StalledRuns    int `json:"stalledRuns"`    // running runs with no step finished within the threshold
	ReconciledRuns int `json:"reconciledRuns"` // stalled runs whose missing jobs were republished
	FailedRuns     int `json:"failedRuns"`     // runs that could not be reconciled (see the log)
	Republished    int `json:"republishedJobs"`
	DeadLetters    int `json:"deadLetters"`      // dead letters recorded
	DeadLetterRuns int `json:"deadLetteredRuns"` // runs failed because their job was dead-lettered
	// AwaitingChildRuns: running runs with no step finished within the
	// threshold that only wait for child runs still running (subflows):
	// not stalled, and left alone.
	AwaitingChildRuns int `json:"awaitingChildRuns"`
}

// Reconciler repairs stalled runs.
type Reconciler struct{ o Options }

// New validates options and applies defaults.
func New(o Options) (*Reconciler, error) {
	if o.Store == nil || o.Publish == nil {
		return nil, errors.New("reconciler: Store and Publish are required")
	}
	if o.Threshold <= 0 {
		o.Threshold = DefaultThreshold
	}
	if o.Queue == "" {
		o.Queue = jobqueue.DefaultQueue
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Reconciler{o: o}, nil
}

// Run does one pass: it claims stalled runs in batches (FOR UPDATE SKIP
// LOCKED and a claim stamp, so reconcilers running at once share the work
// without doing it twice) and republishes each run's missing jobs.
func (r *Reconciler) Run(ctx context.Context) (Stats, error) {
	var total Stats
	var err error
	// Dead letters first: a run whose job was dead-lettered is failed with
	// the reason, not republished.
	total.DeadLetters, total.DeadLetterRuns, err = r.IngestDeadLetters(ctx)
	if err != nil {
		// Dead letters wait for the next pass; stalled runs are repaired now.
		r.o.Logger.Error("cannot record dead letters", "err", err)
	}
	seen := map[string]bool{}
	for {
		st, n, err := r.batch(ctx, seen)
		total.StalledRuns += st.StalledRuns
		total.ReconciledRuns += st.ReconciledRuns
		total.FailedRuns += st.FailedRuns
		total.Republished += st.Republished
		total.AwaitingChildRuns += st.AwaitingChildRuns
		if err != nil {
			return total, err
		}
		if n < r.o.BatchSize {
			return total, nil
		}
	}
}

func (r *Reconciler) batch(ctx context.Context, seen map[string]bool) (Stats, int, error) {
	s := r.o.Store
	var stats Stats
	runs, err := s.ClaimStalled(ctx, r.o.Threshold, r.o.BatchSize, keys(seen))
	if err != nil {
		return stats, 0, err
	}
	for _, run := range runs {
		seen[run.RunID] = true
		// Subflows (children.go): continue the steps whose child run
		// finished; a run that only waits for running children is not
		// stalled, and is looked at again a threshold later.
		kids, err := r.children(ctx, run)
		if err == nil && kids.waiting() {
			stats.AwaitingChildRuns++
			if err := s.ReleaseClaim(ctx, run.RunID, true); err != nil {
				return stats, len(runs), err
			}
			continue
		}
		stats.StalledRuns++
		published, touch := kids.continued, kids.continued > 0
		if err == nil && !kids.onlyChildren {
			var p int
			var t bool
			p, t, err = r.repair(ctx, run)
			published, touch = published+p, touch || t
		}
		if err != nil {
			stats.FailedRuns++
			r.o.Logger.Error("cannot reconcile run", "run_id", run.RunID, "err", err)
		}
		stats.Republished += published
		if touch {
			stats.ReconciledRuns++
		}
		// A repaired run is touched as its claim is released, so it is not
		// stalled any more; one that only waits for a timer is looked at
		// again next pass.
		if err := s.ReleaseClaim(ctx, run.RunID, touch); err != nil {
			return stats, len(runs), err
		}
	}
	return stats, len(runs), nil
}

// repair republishes the pending steps of one run that are not leased.
// touch reports whether the run was repaired (and so gets its updated_at
// bumped); a run that only waits for a future timer is left alone.
func (r *Reconciler) repair(ctx context.Context, run store.StalledRun) (published int, touch bool, err error) {
	pend, err := r.o.Store.PendingSteps(ctx, nil, run.RunID)
	if err != nil {
		return 0, false, err
	}
	if !run.Pinned {
		// Started the Flowcraft way and no job of it ever ran: its start
		// jobs died before the function pinned its blueprint.
		return r.restartUnpinned(ctx, run)
	}
	if len(pend) == 0 {
		return r.resync(ctx, run)
	}
	now := time.Now()
	for _, p := range pend {
		if p.WakeAt != nil && p.WakeAt.Add(OverdueGrace).After(now) {
			continue // its delayed job is still on its way
		}
		if r.o.Redis != nil {
			n, err := r.o.Redis.Exists(ctx, wire.LeaseKey(r.o.RedisPrefix, run.RunID, p.NodeID)).Result()
			if err == nil && n > 0 {
				continue // being run right now
			}
		}
		job := jobqueue.NewJob(run.RunID, run.BlueprintID, p.Node, p.NodeID, p.Attempts+1)
		if err := r.o.Publish(ctx, job, 0); err != nil {
			return published, false, fmt.Errorf("republish %s: %w", job.ID(), err)
		}
		published++
		r.o.Logger.Info("republished a missing job", "run_id", run.RunID, "step_key", p.NodeID, "attempt", job.Attempt, "state", p.State)
	}
	return published, published > 0, nil
}

// resync repairs a run that is running with nothing pending, which no
// commit leaves behind (a lost or hand-edited row can): the store decides
// its frontier again from its step rows, and the jobs of the nodes that
// were missing are published; a run with nothing left to run is completed,
// or failed.
func (r *Reconciler) resync(ctx context.Context, run store.StalledRun) (int, bool, error) {
	bp, err := r.o.Store.LoadBlueprint(ctx, run.Digest)
	if err != nil {
		return 0, false, fmt.Errorf("run is running with nothing pending, and its blueprint cannot be read: %w", err)
	}
	w, err := workflow.Compile(bp, nil)
	if err != nil {
		return 0, false, fmt.Errorf("run is running with nothing pending, and its blueprint %s does not compile: %w", bp.ID, err)
	}
	res, err := r.o.Store.ResyncRun(ctx, run.RunID, w)
	if err != nil {
		return 0, false, err
	}
	n := 0
	for _, id := range res.Ready {
		job := jobqueue.NewJob(run.RunID, run.BlueprintID, w.StepNode(id), id, 1)
		if err := r.o.Publish(ctx, job, 0); err != nil {
			// The step row is ready: the next pass republishes it.
			return n, true, fmt.Errorf("republish %s: %w", job.ID(), err)
		}
		n++
	}
	r.o.Logger.Warn("run was running with nothing pending; rebuilt its frontier from its steps",
		"run_id", run.RunID, "status", res.Status, "made_ready", res.Ready, "skipped", res.Skipped, "pending", res.Pending)
	return n, true, nil
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// restartUnpinned republishes the start jobs of a run started without a
// pinned blueprint, when the reconciler knows the blueprint by id.
func (r *Reconciler) restartUnpinned(ctx context.Context, run store.StalledRun) (int, bool, error) {
	id := run.BlueprintID
	if id == "" {
		var err error
		if id, err = r.o.Store.ContextBlueprintID(ctx, run.RunID); err != nil {
			return 0, false, err
		}
	}
	w := r.o.Blueprints[id]
	if w == nil {
		return 0, false, fmt.Errorf("run has no pinned blueprint and blueprint %q is not registered with the reconciler (--blueprints)", id)
	}
	n := 0
	for _, node := range w.StartNodes() {
		job := jobqueue.Job{RunID: run.RunID, BlueprintID: id, NodeID: node, Attempt: 1}
		if err := r.o.Publish(ctx, job, 0); err != nil {
			return n, false, fmt.Errorf("republish %s: %w", job.ID(), err)
		}
		n++
	}
	r.o.Logger.Info("republished the start jobs of an unpinned run", "run_id", run.RunID, "blueprint", id, "jobs", n)
	return n, true, nil
}
