package reconciler_test

// The harness: setup(t) gives each test its own tables (t_<8hex>_…, migrated
// with schema.Migrate and dropped in cleanup), its own queue topology
// (rt-<uuid>, every jobqueue.TopologyQueues queue deleted in cleanup) and its
// own Redis prefix (its keys deleted in cleanup), a started step function
// that the test calls directly (no bridge: the test is the bridge, and can
// drop any job it likes), and a client that starts runs on the real queue.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/function"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/schema"
	"github.com/stepflow/stepflow/workflow"
)

// staleThreshold is the threshold the tests reconcile with; a run is made
// stalled by setting its updated_at an hour back (deterministic, no waiting).
const staleThreshold = time.Minute

type testBundle struct {
	t   *testing.T
	ctx context.Context

	tables      schema.Tables
	queue       string
	redisPrefix string

	pool   *pgxpool.Pool // the test's own queries
	store  *store.Store
	rdb    *redis.Client
	conn   *amqp.Connection
	getCh  *amqp.Channel // reads and inspects the queues
	pubCh  *amqp.Channel // confirm mode: the test's own publishes (dead letters)
	f      *function.Function
	client *client.Client
	pub    *jobqueue.Publisher // what the reconcilers publish through
	log    *slog.Logger
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	tb := &testBundle{
		t:           t,
		ctx:         ctx,
		queue:       "rt-" + uuid.NewString(),
		redisPrefix: "rt:" + testenv.RandomHex(6) + ":",
		log:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}

	// PostgreSQL: own tables, dropped at the end (before the pool closes:
	// cleanups run last-in first-out).
	tb.pool = testenv.Pool(t, 3)
	tb.tables = testenv.Tables(t, tb.pool)
	var err error
	if tb.store, err = store.New(tb.pool, tb.tables); err != nil {
		t.Fatal(err)
	}

	// Redis: own prefix, keys deleted at the end.
	tb.rdb = testenv.Redis(t)
	t.Cleanup(func() { testenv.DeleteRedisKeys(t, tb.rdb, tb.redisPrefix) })

	// RabbitMQ: own topology, deleted at the end.
	tb.conn = testenv.RabbitMQ(t)
	t.Cleanup(func() { testenv.DeleteQueues(t, tb.conn, jobqueue.TopologyQueues(tb.queue)...) })
	if tb.getCh, err = tb.conn.Channel(); err != nil {
		t.Fatal(err)
	}
	if err := jobqueue.DeclareTopology(tb.getCh, tb.queue); err != nil {
		t.Fatal(err)
	}
	if tb.pubCh, err = tb.conn.Channel(); err != nil {
		t.Fatal(err)
	}
	if err := tb.pubCh.Confirm(false); err != nil {
		t.Fatal(err)
	}

	// The step function, called directly.
	tb.f = function.New(function.Options{Registry: nodes.Registry(), Logger: tb.log})
	if err := tb.f.StartWith(ctx, tb.functionConfig()); err != nil {
		t.Fatalf("start function: %v", err)
	}
	t.Cleanup(func() { _ = tb.f.Stop(context.Background()) })

	tb.client = tb.newClient()
	tb.pub = tb.newPublisher()
	return tb
}

func (tb *testBundle) functionConfig() function.Config {
	return function.Config{
		PostgresURL: testenv.PostgresURL(),
		RedisURL:    testenv.RedisURL(),
		Tables:      tb.tables,
		RedisPrefix: tb.redisPrefix,
		StepTimeout: 10 * time.Second,
		PGMaxConns:  3,
	}
}

// newClient returns a client of the test's tables and queue (its own pool
// and AMQP connection), closed at the end of the test.
func (tb *testBundle) newClient() *client.Client {
	tb.t.Helper()
	c, err := client.New(tb.ctx, client.Config{PostgresURL: testenv.PostgresURL(), AMQPURL: testenv.RabbitMQURL(), Queue: tb.queue, Tables: tb.tables})
	if err != nil {
		tb.t.Fatalf("client: %v", err)
	}
	tb.t.Cleanup(c.Close)
	return c
}

// newPublisher returns a publisher to the test's queue with its own AMQP
// connection, closed at the end of the test.
func (tb *testBundle) newPublisher() *jobqueue.Publisher {
	p := jobqueue.NewPublisher(testenv.RabbitMQURL(), tb.queue)
	tb.t.Cleanup(p.Close)
	return p
}

// newReconciler returns a reconciler over the test's tables, queue and
// Redis prefix that publishes through pub (the test's publisher when nil; a
// given pub comes with a pool of its own, as another process would have).
func (tb *testBundle) newReconciler(pub *jobqueue.Publisher, opts ...func(*reconciler.Options)) *reconciler.Reconciler {
	tb.t.Helper()
	st := tb.store
	if pub == nil {
		pub = tb.pub
	} else {
		var err error
		if st, err = store.New(testenv.Pool(tb.t, 3), tb.tables); err != nil {
			tb.t.Fatal(err)
		}
	}
	o := reconciler.Options{
		Store:       st,
		Redis:       tb.rdb,
		RedisPrefix: tb.redisPrefix,
		Publish:     pub.Publish,
		Channel:     pub.Channel,
		Queue:       tb.queue,
		Threshold:   staleThreshold,
		Logger:      tb.log,
	}
	for _, fn := range opts {
		fn(&o)
	}
	r, err := reconciler.New(o)
	if err != nil {
		tb.t.Fatalf("reconciler.New: %v", err)
	}
	return r
}

// reconcile runs one pass and fails the test on error.
func (tb *testBundle) reconcile(r *reconciler.Reconciler) reconciler.Stats {
	tb.t.Helper()
	st, err := r.Run(tb.ctx)
	if err != nil {
		tb.t.Fatalf("reconcile: %v (stats %+v)", err, st)
	}
	return st
}

// ---- runs ----

func decodeBlueprint(t *testing.T, src string) *workflow.Blueprint {
	t.Helper()
	bp, err := workflow.Decode([]byte(src))
	if err != nil {
		t.Fatalf("blueprint: %v", err)
	}
	return bp
}

// start starts a run with the client (which publishes its start jobs to the
// queue) and takes those start jobs off the queue, for the test to deliver
// or drop.
func (tb *testBundle) start(bp *workflow.Blueprint, input map[string]any) (string, []wire.Job) {
	tb.t.Helper()
	runID, err := tb.client.Start(tb.ctx, bp, input, client.StartOptions{RunID: "run-" + testenv.RandomHex(6)})
	if err != nil {
		tb.t.Fatalf("start: %v", err)
	}
	jobs := tb.takeQueued()
	if len(jobs) == 0 {
		tb.t.Fatalf("start of %s published no start job", runID)
	}
	return runID, jobs
}

func jobEvent(job wire.Job, source string) event.Event {
	e := event.New()
	e.SetID(job.ID())
	e.SetType(wire.JobEventType)
	e.SetSource(source)
	e.SetSubject(job.RunID)
	if err := e.SetData(event.ApplicationJSON, job); err != nil {
		panic(err)
	}
	return e
}

// deliver calls the step function with job, as the bridge would, and
// returns the jobs of its reply.
func (tb *testBundle) deliver(job wire.Job) []wire.Job {
	tb.t.Helper()
	resp, err := tb.f.Handle(tb.ctx, jobEvent(job, tb.queue))
	if err != nil {
		tb.t.Fatalf("deliver %s: %v", job.ID(), err)
	}
	if resp == nil {
		return nil
	}
	if resp.Type() != wire.JobsEventType {
		tb.t.Fatalf("deliver %s: reply type %q, want %q", job.ID(), resp.Type(), wire.JobsEventType)
	}
	var r wire.Reply
	if err := resp.DataAs(&r); err != nil {
		tb.t.Fatalf("deliver %s: reply data: %v", job.ID(), err)
	}
	out := make([]wire.Job, 0, len(r.Jobs))
	for _, j := range r.Jobs {
		out = append(out, j.Job)
	}
	return out
}

// deliverAll delivers jobs and everything that follows from them, until
// nothing follows.
func (tb *testBundle) deliverAll(jobs ...wire.Job) {
	tb.t.Helper()
	for n := 0; len(jobs) > 0; n++ {
		if n > 1000 {
			tb.t.Fatalf("run does not settle: still %d jobs after 1000 deliveries", len(jobs))
		}
		j := jobs[0]
		jobs = append(jobs[1:], tb.deliver(j)...)
	}
}

// takeQueued takes every message now in the main queue. Publishers wait for
// the broker's confirm, so what they published is there.
func (tb *testBundle) takeQueued() []wire.Job {
	tb.t.Helper()
	var out []wire.Job
	for {
		d, ok, err := tb.getCh.Get(tb.queue, true)
		if err != nil {
			tb.t.Fatalf("get from %s: %v", tb.queue, err)
		}
		if !ok {
			return out
		}
		var j wire.Job
		if err := json.Unmarshal(d.Body, &j); err != nil {
			tb.t.Fatalf("queued message %q is not a job: %v", d.Body, err)
		}
		if d.MessageId != j.ID() {
			tb.t.Errorf("queued job %s has message id %q", j.ID(), d.MessageId)
		}
		if d.DeliveryMode != amqp.Persistent {
			tb.t.Errorf("queued job %s is not persistent", j.ID())
		}
		out = append(out, j)
	}
}

// queueDepths counts the messages of every queue of the topology.
func (tb *testBundle) queueDepths() map[string]int {
	tb.t.Helper()
	out := map[string]int{}
	for _, name := range jobqueue.TopologyQueues(tb.queue) {
		q, err := tb.getCh.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			tb.t.Fatalf("inspect %s: %v", name, err)
		}
		if q.Messages > 0 {
			out[name] = q.Messages
		}
	}
	return out
}

func (tb *testBundle) assertNothingQueued() {
	tb.t.Helper()
	if d := tb.queueDepths(); len(d) > 0 {
		tb.t.Errorf("queues hold messages: %v", d)
	}
}

// age makes a run stalled: its last step finished an hour ago.
func (tb *testBundle) age(runID string) time.Time {
	tb.t.Helper()
	var at time.Time
	if err := tb.pool.QueryRow(tb.ctx, `UPDATE `+tb.tables.Quoted().Statuses+` SET updated_at = now() - interval '1 hour' WHERE run_id = $1 RETURNING updated_at`, runID).Scan(&at); err != nil {
		tb.t.Fatalf("age run %s: %v", runID, err)
	}
	return at
}

func (tb *testBundle) run(runID string) *store.Run {
	tb.t.Helper()
	r, err := tb.store.GetRun(tb.ctx, runID)
	if err != nil {
		tb.t.Fatal(err)
	}
	return r
}

func (tb *testBundle) steps(runID string) map[string]*store.Step {
	tb.t.Helper()
	steps, err := tb.store.Steps(tb.ctx, runID)
	if err != nil {
		tb.t.Fatal(err)
	}
	out := map[string]*store.Step{}
	for _, s := range steps {
		out[s.NodeID] = s
	}
	return out
}

func (tb *testBundle) setWakeAt(runID, nodeID string, at string) {
	tb.t.Helper()
	tag, err := tb.pool.Exec(tb.ctx, `UPDATE `+tb.tables.Quoted().Steps+` SET wake_at = now() + $3::interval WHERE run_id = $1 AND node_id = $2`, runID, nodeID, at)
	if err != nil || tag.RowsAffected() != 1 {
		tb.t.Fatalf("set wake_at of %s/%s: %v (%d rows)", runID, nodeID, err, tag.RowsAffected())
	}
}

// assertCompleted checks the run completed with these outputs.
func (tb *testBundle) assertCompleted(runID string, outputs map[string]any) {
	tb.t.Helper()
	r := tb.run(runID)
	if r.Status != workflow.RunCompleted {
		tb.t.Fatalf("run %s is %s (%s), want completed", runID, r.Status, r.Error)
	}
	for id, want := range outputs {
		got, ok := r.StatusData[workflow.OutputKey(id)]
		if !ok {
			tb.t.Errorf("status_data has no %s: %v", workflow.OutputKey(id), r.StatusData)
			continue
		}
		testenv.AssertJSON(tb.t, fmt.Sprintf("output of %s", id), got, want)
	}
}

func jobIDs(jobs []wire.Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID()
	}
	return out
}
