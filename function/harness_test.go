package function_test

// The harness: setup(t) gives each test its own tables (t_<8hex>_…, migrated
// with schema.Migrate and dropped in cleanup) and Redis prefix (its keys
// deleted in cleanup), and a started step function whose registry holds the
// example nodes plus "probe", a node whose calls the test counts and whose
// behaviour its params choose. Tests call Handle directly with CloudEvents,
// as func-go's handler would.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/function"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/schema"
	"github.com/stepflow/stepflow/workflow"
)

const testSource = "test-queue"

type testBundle struct {
	t   *testing.T
	ctx context.Context

	tables      schema.Tables
	redisPrefix string
	pool        *pgxpool.Pool
	store       *store.Store
	rdb         *redis.Client
	reg         *workflow.Registry
	log         *slog.Logger
	f           *function.Function
	probes      *probeCalls
	gate        *gate
}

type options struct {
	blueprints  []*workflow.Blueprint
	stepTimeout time.Duration
	noStart     bool
}

func setup(t *testing.T, opts ...func(*options)) *testBundle {
	t.Helper()
	var o options
	for _, fn := range opts {
		fn(&o)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	tb := &testBundle{
		t:           t,
		ctx:         ctx,
		redisPrefix: "ft:" + testenv.RandomHex(6) + ":",
		log:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		probes:      &probeCalls{n: map[string]int{}},
		gate:        &gate{entered: make(chan int, 100), release: make(chan string, 100)},
	}
	tb.reg = nodes.Registry()
	tb.reg.Register("probe", tb.probes.node)
	tb.reg.Register("gated", tb.gate.node)

	tb.pool = testenv.Pool(t, 3)
	tb.tables = testenv.Tables(t, tb.pool)
	var err error
	if tb.store, err = store.New(tb.pool, tb.tables); err != nil {
		t.Fatal(err)
	}

	tb.rdb = testenv.Redis(t)
	t.Cleanup(func() { testenv.DeleteRedisKeys(t, tb.rdb, tb.redisPrefix) })

	tb.f = tb.newFunction(o.blueprints...)
	if !o.noStart {
		tb.startFunction(tb.f, o.stepTimeout)
	}
	return tb
}

func withBlueprints(bps ...*workflow.Blueprint) func(*options) {
	return func(o *options) { o.blueprints = bps }
}

func withStepTimeout(d time.Duration) func(*options) {
	return func(o *options) { o.stepTimeout = d }
}

// newFunction returns an unstarted function with the test's registry.
func (tb *testBundle) newFunction(bps ...*workflow.Blueprint) *function.Function {
	return function.New(function.Options{Registry: tb.reg, Blueprints: bps, Logger: tb.log})
}

func (tb *testBundle) config(stepTimeout time.Duration) function.Config {
	if stepTimeout == 0 {
		stepTimeout = 10 * time.Second
	}
	return function.Config{
		PostgresURL: testenv.PostgresURL(),
		RedisURL:    testenv.RedisURL(),
		Tables:      tb.tables,
		RedisPrefix: tb.redisPrefix,
		StepTimeout: stepTimeout,
		PGMaxConns:  3,
	}
}

func (tb *testBundle) startFunction(f *function.Function, stepTimeout time.Duration) {
	tb.t.Helper()
	if err := f.StartWith(tb.ctx, tb.config(stepTimeout)); err != nil {
		tb.t.Fatalf("start function: %v", err)
	}
	tb.t.Cleanup(func() { _ = f.Stop(context.Background()) })
}

// redisKeys lists the test's Redis keys.
func (tb *testBundle) redisKeys(ctx context.Context) ([]string, error) {
	return testenv.RedisKeys(ctx, tb.rdb, tb.redisPrefix)
}

// ---- the probe node ----

// probeCalls counts the probe node's calls by node id.
type probeCalls struct {
	mu sync.Mutex
	n  map[string]int
}

func (p *probeCalls) count(nodeID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[nodeID]
}

// node is the probe: it counts its call, then, as its params say:
//
//	set: {key: value}        writes context keys
//	setAttempt: "prefix"     writes context key prefix<attempt> = true
//	read: "key"              outputs {"read": context[key]}
//	failAttempts: n          fails attempts 1..n
//	fail: "message"          fails every attempt with message
//	action: "a"              result action
//
// Otherwise it outputs {"node": id, "attempt": n, "input": input}.
func (p *probeCalls) node(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	p.mu.Lock()
	p.n[in.NodeID]++
	p.mu.Unlock()
	if set, ok := in.Params["set"].(map[string]any); ok {
		for k, v := range set {
			in.Context.Set(k, v)
		}
	}
	if prefix, ok := in.Params["setAttempt"].(string); ok {
		in.Context.Set(fmt.Sprint(prefix, in.Attempt), true)
	}
	if n, ok := in.Params["failAttempts"].(float64); ok && in.Attempt <= int(n) {
		return workflow.NodeResult{}, fmt.Errorf("probe %s: planned failure of attempt %d", in.NodeID, in.Attempt)
	}
	if msg, ok := in.Params["fail"].(string); ok {
		return workflow.NodeResult{}, errors.New(msg)
	}
	action, _ := in.Params["action"].(string)
	if key, ok := in.Params["read"].(string); ok {
		v, _ := in.Context.Get(key)
		return workflow.NodeResult{Output: map[string]any{"read": v}, Action: action}, nil
	}
	return workflow.NodeResult{Output: map[string]any{"node": in.NodeID, "attempt": in.Attempt, "input": in.Input}, Action: action}, nil
}

// gate is a node that reports each call (its attempt's call number) on
// entered and then holds it until the test sends the output it is to
// return on release.
type gate struct {
	mu      sync.Mutex
	calls   int
	entered chan int
	release chan string
}

func (g *gate) node(ctx context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	g.mu.Lock()
	g.calls++
	n := g.calls
	g.mu.Unlock()
	g.entered <- n
	select {
	case out := <-g.release:
		return workflow.NodeResult{Output: out}, nil
	case <-ctx.Done():
		return workflow.NodeResult{}, ctx.Err()
	}
}

func (g *gate) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

// waitEntered waits for the next call of the gated node.
func (tb *testBundle) waitEntered() int {
	tb.t.Helper()
	select {
	case n := <-tb.gate.entered:
		return n
	case <-time.After(10 * time.Second):
		tb.t.Fatalf("the gated node was not called within 10s")
		return 0
	}
}

// ---- runs and jobs ----

func decodeBlueprint(t *testing.T, src string) *workflow.Blueprint {
	t.Helper()
	bp, err := workflow.Decode([]byte(src))
	if err != nil {
		t.Fatalf("blueprint: %v", err)
	}
	return bp
}

// createRun records a run of bp (pinned snapshot, ready start steps) as the
// client does, and returns its start jobs.
func (tb *testBundle) createRun(bp *workflow.Blueprint, input map[string]any) (string, []wire.Job) {
	tb.t.Helper()
	w, err := workflow.Compile(bp, tb.reg)
	if err != nil {
		tb.t.Fatalf("compile: %v", err)
	}
	runID := "run-" + testenv.RandomHex(6)
	starts, err := tb.store.CreateRun(tb.ctx, runID, w, input)
	if err != nil {
		tb.t.Fatalf("create run: %v", err)
	}
	jobs := make([]wire.Job, len(starts))
	for i, id := range starts {
		jobs[i] = wire.Job{RunID: runID, BlueprintID: bp.ID, NodeID: id, Attempt: 1}
	}
	return runID, jobs
}

func jobEvent(job wire.Job) event.Event {
	e := event.New()
	e.SetID(job.ID())
	e.SetType(wire.JobEventType)
	e.SetSource(testSource)
	e.SetSubject(job.RunID)
	if err := e.SetData(event.ApplicationJSON, job); err != nil {
		panic(err)
	}
	return e
}

// handle calls f (the test's function when nil) with job.
func (tb *testBundle) handle(f *function.Function, job wire.Job) ([]wire.NextJob, error) {
	tb.t.Helper()
	if f == nil {
		f = tb.f
	}
	resp, err := f.Handle(tb.ctx, jobEvent(job))
	if err != nil {
		if resp != nil {
			tb.t.Errorf("Handle returned both an event and an error %v", err)
		}
		return nil, err
	}
	return replyJobs(tb.t, resp), nil
}

func replyJobs(t *testing.T, resp *event.Event) []wire.NextJob {
	t.Helper()
	if resp == nil {
		return nil
	}
	if resp.Type() != wire.JobsEventType {
		t.Fatalf("reply type %q, want %q", resp.Type(), wire.JobsEventType)
	}
	var r wire.Reply
	if err := resp.DataAs(&r); err != nil {
		t.Fatalf("reply data %s: %v", resp.Data(), err)
	}
	if len(r.Jobs) == 0 {
		t.Errorf("reply event without jobs: %s (nothing to publish must be a reply without an event)", resp.Data())
	}
	return r.Jobs
}

// mustHandle is handle for a job that must succeed (200).
func (tb *testBundle) mustHandle(job wire.Job) []wire.NextJob {
	tb.t.Helper()
	jobs, err := tb.handle(nil, job)
	if err != nil {
		tb.t.Fatalf("Handle %s: %v", job.ID(), err)
	}
	return jobs
}

// deliverAll delivers jobs and what follows from them, ignoring delays.
func (tb *testBundle) deliverAll(f *function.Function, jobs ...wire.Job) {
	tb.t.Helper()
	for n := 0; len(jobs) > 0; n++ {
		if n > 1000 {
			tb.t.Fatalf("run does not settle after 1000 deliveries")
		}
		j := jobs[0]
		jobs = jobs[1:]
		next, err := tb.handle(f, j)
		if err != nil {
			tb.t.Fatalf("Handle %s: %v", j.ID(), err)
		}
		for _, nj := range next {
			jobs = append(jobs, nj.Job)
		}
	}
}

// status returns the HTTP status an error reply carries (0: not a result).
func status(err error) int {
	var res *cehttp.Result
	if protocol.ResultAs(err, &res) {
		return res.StatusCode
	}
	return 0
}

func (tb *testBundle) run(runID string) *store.Run {
	tb.t.Helper()
	r, err := tb.store.GetRun(tb.ctx, runID)
	if err != nil {
		tb.t.Fatal(err)
	}
	return r
}

func (tb *testBundle) step(runID, nodeID string) *store.Step {
	tb.t.Helper()
	steps, err := tb.store.Steps(tb.ctx, runID)
	if err != nil {
		tb.t.Fatal(err)
	}
	for _, s := range steps {
		if s.NodeID == nodeID {
			return s
		}
	}
	return nil
}

func (tb *testBundle) exec(sql string, args ...any) {
	tb.t.Helper()
	if _, err := tb.pool.Exec(tb.ctx, sql, args...); err != nil {
		tb.t.Fatalf("%s: %v", sql, err)
	}
}

func (tb *testBundle) assertCompleted(runID string, outputs map[string]any) *store.Run {
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
		testenv.AssertJSON(tb.t, "output of "+id, got, want)
	}
	return r
}

func targets(jobs []wire.NextJob) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = fmt.Sprintf("%s:%d", j.NodeID, j.Attempt)
	}
	return out
}
