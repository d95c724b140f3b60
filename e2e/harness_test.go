package e2e

// The harness: setup(t) gives each test its own tables, queue topology and
// Redis prefix, starts a real step function (func-go's CloudEvents handler
// over httptest), a real bridge and a client, and returns them in a
// testBundle with the helpers the tests share.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/function"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/schema"
	"github.com/stepflow/stepflow/workflow"
)

// defaultParallel is how many tests run at once when -test.parallel is not
// given: most of a test's time is spent waiting on timers and the services,
// so more than GOMAXPROCS at once keeps the package well under its budget.
const defaultParallel = 4

func TestMain(m *testing.M) {
	testenv.SetDefaultParallel(defaultParallel)
	code := m.Run()
	sharedPool.Close()
	os.Exit(code)
}

// sharedPool serves the tests' own queries (each test uses its own tables).
var sharedPool = &testenv.SharedPool{MaxConns: 6}

// testBundle is one test's stack and what it observes.
type testBundle struct {
	t   *testing.T
	ctx context.Context // cancelled at the end of the test's cleanup

	tables      schema.Tables
	prefix      string // table name prefix, t_<8hex>_
	queue       string
	redisPrefix string

	pool   *pgxpool.Pool // the tests' own queries
	store  *store.Store  // over pool: the steps a test inspects, a reconciler's store
	rdb    *redis.Client
	conn   *amqp.Connection
	pubCh  *amqp.Channel // confirm mode, for hand-published messages
	getCh  *amqp.Channel // for reading the DLQ
	amqpMu sync.Mutex

	f             *function.Function
	fnMetrics     *prometheus.Registry
	bridge        *bridge.Bridge
	bridgeMetrics *prometheus.Registry
	srv           *httptest.Server
	client        *client.Client
	pub           *jobqueue.Publisher // publishes jobs as the reconciler does

	logger *slog.Logger // the test log, for the services the test builds
	nodes  *nodeLog
	http   *httpLog
	gates  *gates
}

// options adjust a bundle before it starts.
type options struct {
	blueprints []*workflow.Blueprint
	bridgeCfg  func(*bridge.Config)
}

type option func(*options)

// withBlueprints registers blueprints in the function at construction
// (Options.Blueprints), for runs started the Flowcraft way.
func withBlueprints(bps ...*workflow.Blueprint) option {
	return func(o *options) { o.blueprints = append(o.blueprints, bps...) }
}

// withBridge adjusts the bridge's configuration.
func withBridge(adjust func(*bridge.Config)) option {
	return func(o *options) { o.bridgeCfg = adjust }
}

func setup(t *testing.T, opts ...option) *testBundle {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb := &testBundle{
		t:           t,
		ctx:         ctx,
		prefix:      testenv.TablePrefix(),
		queue:       "e2e-" + uuid.NewString(),
		redisPrefix: "e2e:" + uuid.NewString() + ":",
		nodes:       &nodeLog{counts: map[string]int{}},
		http:        &httpLog{},
		gates:       &gates{m: map[string]*gate{}},
	}
	tb.tables = testenv.PrefixedTables(tb.prefix)
	// Cleanups run last-registered first: logs are silenced after
	// everything else has stopped.
	logs := &testLogSink{t: t}
	t.Cleanup(logs.close)
	t.Cleanup(cancel)

	tb.pool = sharedPool.Get(t)
	tb.connectRedis()
	tb.connectRabbitMQ()
	tb.migrate()
	st, err := store.New(tb.pool, tb.tables)
	if err != nil {
		t.Fatal(err)
	}
	tb.store = st

	reg := nodes.Registry()
	registerTestNodes(reg, tb)
	countEveryNode(reg, tb.nodes)

	logger := slog.New(logs.handler())
	tb.logger = logger
	tb.fnMetrics = prometheus.NewRegistry()
	tb.f = function.New(function.Options{Registry: reg, Blueprints: o.blueprints, Logger: logger, Registerer: tb.fnMetrics})
	if err := tb.f.StartWith(ctx, function.Config{
		PostgresURL: testenv.PostgresURL(),
		RedisURL:    testenv.RedisURL(),
		Tables:      tb.tables,
		RedisPrefix: tb.redisPrefix,
		StepTimeout: 5 * time.Second,
		PGMaxConns:  8,
	}); err != nil {
		t.Fatalf("start the step function: %v", err)
	}
	t.Cleanup(func() { _ = tb.f.Stop(context.Background()) })

	// Served as `stepflow function` serves it: stepflow's own CloudEvents
	// handler for "/", and the health endpoints.
	mux := http.NewServeMux()
	mux.Handle("/health/", tb.f.Health())
	mux.Handle("/", tb.f)
	tb.srv = httptest.NewServer(tb.http.wrap(mux))
	t.Cleanup(tb.closeServer)

	tb.bridgeMetrics = prometheus.NewRegistry()
	cfg := bridge.Config{
		AMQPURL:        testenv.RabbitMQURL(),
		Queue:          tb.queue,
		FunctionURL:    tb.srv.URL + "/",
		RequestTimeout: 10 * time.Second,
		BackoffBase:    20 * time.Millisecond,
		BackoffMax:     500 * time.Millisecond,
		MaxAttempts:    5,
		ShutdownGrace:  2 * time.Second,
		Logger:         logger,
		Registerer:     tb.bridgeMetrics,
	}
	if o.bridgeCfg != nil {
		o.bridgeCfg(&cfg)
	}
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatalf("bridge.New: %v", err)
	}
	tb.bridge = b
	runCtx, stopBridge := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- b.Run(runCtx) }()
	t.Cleanup(func() {
		stopBridge()
		select {
		case err := <-runErr:
			if err != nil {
				t.Errorf("bridge.Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("bridge.Run did not return within 15s of cancel")
		}
	})
	// Release every gate once the test is over, so that a node still
	// waiting (a product bug kept it running) lets the bridge drain.
	t.Cleanup(tb.gates.releaseAll)

	c, err := client.New(ctx, client.Config{PostgresURL: testenv.PostgresURL(), AMQPURL: testenv.RabbitMQURL(), Queue: tb.queue, Tables: tb.tables})
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	tb.client = c
	t.Cleanup(c.Close)
	tb.pub = jobqueue.NewPublisher(testenv.RabbitMQURL(), tb.queue)
	t.Cleanup(tb.pub.Close)

	testenv.Eventually(t, 15*time.Second, "the bridge to consume its queue", b.Ready)
	return tb
}

// closeServer closes the function's HTTP server, waiting a bounded time
// for its requests: a request wedged in the CloudEvents SDK's receive
// handler (see TestFunctionHTTPDoesNotWedge) never returns, and
// httptest.Server.Close would wait for it forever.
func (tb *testBundle) closeServer() {
	done := make(chan struct{})
	go func() {
		tb.srv.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		tb.t.Logf("the function's HTTP server still has %d request(s) in its handler 3 s after the bridge stopped; leaving them (the CloudEvents receive-handler wedge, see TestFunctionHTTPDoesNotWedge)", tb.http.inflight.Load())
	}
}

// migrate creates the test's tables, plus a log of final status writes
// (a trigger on the statuses table), and drops them all at cleanup.
func (tb *testBundle) migrate() {
	t := tb.t
	statuses := pgx.Identifier{tb.tables.Statuses}.Sanitize()
	logTable := pgx.Identifier{tb.prefix + "final_writes"}.Sanitize()
	fn := pgx.Identifier{tb.prefix + "log_final_write"}.Sanitize()
	// Registered first, so it runs after testenv's cleanup has dropped the
	// statuses table and with it the trigger that uses fn.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, stmt := range []string{
			`DROP TABLE IF EXISTS ` + logTable,
			`DROP FUNCTION IF EXISTS ` + fn + `()`,
		} {
			if _, err := tb.pool.Exec(ctx, stmt); err != nil {
				t.Errorf("cleanup: %s: %v", stmt, err)
			}
		}
	})
	testenv.MigrateTables(t, tb.pool, tb.tables)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A write that sets or changes a final status (or what it records) is
	// logged; touching updated_at alone is not.
	ddl := `CREATE TABLE ` + logTable + ` (run_id text, status text, status_data jsonb, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION ` + fn + `() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status IN ('completed', 'failed', 'cancelled') AND (TG_OP = 'INSERT' OR
     (OLD.status, OLD.status_data, OLD.error, OLD.finished_at) IS DISTINCT FROM (NEW.status, NEW.status_data, NEW.error, NEW.finished_at)) THEN
    INSERT INTO ` + logTable + ` (run_id, status, status_data) VALUES (NEW.run_id, NEW.status, NEW.status_data);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER final_writes AFTER INSERT OR UPDATE ON ` + statuses + ` FOR EACH ROW EXECUTE FUNCTION ` + fn + `();`
	if _, err := tb.pool.Exec(ctx, ddl); err != nil {
		t.Fatalf("create the final-status log: %v", err)
	}
}

func (tb *testBundle) connectRedis() {
	tb.rdb = testenv.Redis(tb.t)
	tb.t.Cleanup(func() { testenv.DeleteRedisKeys(tb.t, tb.rdb, tb.redisPrefix) })
}

func (tb *testBundle) connectRabbitMQ() {
	t := tb.t
	tb.conn = testenv.RabbitMQ(t)
	tb.pubCh = tb.channel(true)
	tb.getCh = tb.channel(false)
	if err := jobqueue.DeclareTopology(tb.pubCh, tb.queue); err != nil {
		t.Fatalf("declare the topology of %s: %v", tb.queue, err)
	}
	// After the bridge has stopped.
	t.Cleanup(func() { testenv.DeleteQueues(t, tb.conn, jobqueue.TopologyQueues(tb.queue)...) })
}

func (tb *testBundle) channel(confirm bool) *amqp.Channel {
	ch, err := tb.conn.Channel()
	if err != nil {
		tb.t.Fatalf("RabbitMQ: open channel: %v", err)
	}
	if confirm {
		if err := ch.Confirm(false); err != nil {
			tb.t.Fatalf("RabbitMQ: confirm mode: %v", err)
		}
	}
	return ch
}

// --- blueprints and runs ---------------------------------------------------

// exampleInput reads examples/<name>.input.json.
func exampleInput(t *testing.T, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "examples", name+".input.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// blueprint decodes an inline blueprint.
func blueprint(t *testing.T, src string) *workflow.Blueprint {
	t.Helper()
	bp, err := workflow.Decode([]byte(src))
	if err != nil {
		t.Fatalf("decode blueprint: %v\n%s", err, src)
	}
	return bp
}

// start starts a run through the client.
func (tb *testBundle) start(bp *workflow.Blueprint, input map[string]any) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runID, err := tb.client.Start(ctx, bp, input, client.StartOptions{})
	if err != nil {
		tb.t.Fatalf("start %s: %v", bp.ID, err)
	}
	return runID
}

// wait waits for a run's final status, failing the test (with the run's
// steps) if it takes longer than timeout.
func (tb *testBundle) wait(runID string, timeout time.Duration) *workflow.RunResult {
	tb.t.Helper()
	res, err := tb.waitErr(runID, timeout)
	if err != nil {
		tb.t.Fatal(err)
	}
	return res
}

func (tb *testBundle) waitErr(runID string, timeout time.Duration) (*workflow.RunResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := tb.client.Wait(ctx, runID)
	if err == nil {
		return res, nil
	}
	cur, _ := tb.client.Result(context.Background(), runID)
	return nil, fmt.Errorf("wait for run %s: %v; now: %s", runID, err, toJSON(cur))
}

// steps reads a run's step rows (with their stored inputs and outputs).
func (tb *testBundle) steps(runID string) map[string]*store.Step {
	tb.t.Helper()
	rows, err := tb.store.Steps(context.Background(), runID)
	if err != nil {
		tb.t.Fatalf("read steps of %s: %v", runID, err)
	}
	m := map[string]*store.Step{}
	for _, s := range rows {
		m[s.NodeID] = s
	}
	return m
}

// step reads one step row (nil when the node has none).
func (tb *testBundle) step(runID, nodeID string) *store.Step {
	tb.t.Helper()
	return tb.steps(runID)[nodeID]
}

// finalWrites lists the writes that set (or changed) a run's final status.
func (tb *testBundle) finalWrites(runID string) []string {
	tb.t.Helper()
	rows, err := tb.pool.Query(context.Background(), `SELECT status FROM `+pgx.Identifier{tb.prefix + "final_writes"}.Sanitize()+` WHERE run_id = $1 ORDER BY at`, runID)
	if err != nil {
		tb.t.Fatalf("read the final-status log: %v", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.t.Fatalf("read the final-status log: %v", err)
	}
	return out
}

// --- RabbitMQ --------------------------------------------------------------

// publishRaw puts a message on the test's queue as a foreign publisher
// would, and waits for the broker's confirm.
func (tb *testBundle) publishRaw(msg amqp.Publishing) {
	tb.t.Helper()
	tb.amqpMu.Lock()
	defer tb.amqpMu.Unlock()
	testenv.PublishConfirmed(tb.t, tb.pubCh, tb.queue, msg)
}

// publishJob enqueues a job the way stepflow does (jobqueue.Publish).
func (tb *testBundle) publishJob(job jobqueue.Job) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tb.pub.Publish(ctx, job, 0); err != nil {
		tb.t.Fatalf("publish %s: %v", job.ID(), err)
	}
}

// deadLetters waits until the DLQ has yielded n messages and returns them.
func (tb *testBundle) deadLetters(n int, timeout time.Duration) []amqp.Delivery {
	tb.t.Helper()
	var got []amqp.Delivery
	testenv.Eventually(tb.t, timeout, fmt.Sprintf("%d message(s) on %s", n, jobqueue.DeadLetterQueue(tb.queue)), func() bool {
		tb.amqpMu.Lock()
		defer tb.amqpMu.Unlock()
		for len(got) < n {
			d, ok, err := tb.getCh.Get(jobqueue.DeadLetterQueue(tb.queue), true)
			if err != nil {
				tb.t.Fatalf("read the DLQ: %v", err)
			}
			if !ok {
				break
			}
			got = append(got, d)
		}
		return len(got) >= n
	})
	return got
}

// queueDepth returns the number of ready messages on q.
func (tb *testBundle) queueDepth(q string) int {
	tb.t.Helper()
	return testenv.QueueDepth(tb.t, tb.conn, q)
}

func headerString(h amqp.Table, key string) string {
	switch v := h[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// --- metrics ---------------------------------------------------------------

// counter sums the values of the named metric whose labels include want.
func counter(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			}
		}
	}
	return total
}

// --- observing nodes -------------------------------------------------------

// invocation is one call of a node implementation.
type invocation struct {
	RunID, NodeID string
	Attempt       int
	Input         any
	Start, End    time.Time
	Err           error
}

// nodeLog records every node call of a bundle's function.
type nodeLog struct {
	mu     sync.Mutex
	counts map[string]int // run/node → calls
	calls  []invocation
}

func (l *nodeLog) count(runID, nodeID string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[runID+"/"+nodeID]
}

// of returns the calls of one node of one run, in the order they ended.
func (l *nodeLog) of(runID, nodeID string) []invocation {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []invocation
	for _, c := range l.calls {
		if c.RunID == runID && c.NodeID == nodeID {
			out = append(out, c)
		}
	}
	return out
}

// countEveryNode wraps every node type of reg so that each call is
// counted (at its start) and recorded (at its end).
func countEveryNode(reg *workflow.Registry, l *nodeLog) {
	for _, name := range reg.Names() {
		fn, _ := reg.Lookup(name)
		reg.Register(name, func(ctx context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
			l.mu.Lock()
			l.counts[in.RunID+"/"+in.NodeID]++
			l.mu.Unlock()
			start := time.Now()
			res, err := fn(ctx, in)
			l.mu.Lock()
			l.calls = append(l.calls, invocation{RunID: in.RunID, NodeID: in.NodeID, Attempt: in.Attempt, Input: in.Input, Start: start, End: time.Now(), Err: err})
			l.mu.Unlock()
			return res, err
		})
	}
}

// gate is what a `gate` node of one run waits on.
type gate struct {
	started, release, cancelled chan struct{}
	startOnce, releaseOnce      sync.Once
	cancelOnce                  sync.Once
}

type gates struct {
	mu sync.Mutex
	m  map[string]*gate
}

func (g *gates) get(runID, nodeID string) *gate {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := runID + "/" + nodeID
	if g.m[k] == nil {
		g.m[k] = &gate{started: make(chan struct{}), release: make(chan struct{}), cancelled: make(chan struct{})}
	}
	return g.m[k]
}

func (g *gate) open() { g.releaseOnce.Do(func() { close(g.release) }) }

func (g *gates) releaseAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, x := range g.m {
		x.open()
	}
}

// waitStarted waits until the gate node of runID/nodeID is running.
func (tb *testBundle) waitStarted(runID, nodeID string, timeout time.Duration) *gate {
	tb.t.Helper()
	g := tb.gates.get(runID, nodeID)
	select {
	case <-g.started:
	case <-time.After(timeout):
		tb.t.Fatalf("node %s of run %s did not start within %s", nodeID, runID, timeout)
	}
	return g
}

// registerTestNodes adds the nodes only the tests use:
//
//	gate     signals that it started, then waits until the test opens it
//	         (passing its input through) or its context ends (an error)
func registerTestNodes(reg *workflow.Registry, tb *testBundle) {
	reg.Register("gate", func(ctx context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		g := tb.gates.get(in.RunID, in.NodeID)
		g.startOnce.Do(func() { close(g.started) })
		select {
		case <-g.release:
			return workflow.NodeResult{Output: in.Input}, nil
		case <-ctx.Done():
			g.cancelOnce.Do(func() { close(g.cancelled) })
			return workflow.NodeResult{}, fmt.Errorf("gate: %w", ctx.Err())
		}
	})
}

// --- observing HTTP --------------------------------------------------------

// request is one job the bridge POSTed to the function: a one-job request,
// or one job of a batch (with the batch's times and its own result's status).
type request struct {
	RunID, NodeID string
	Attempt       int
	Status        int
	Start, End    time.Time
}

// httpLog records the job POSTs the function serves.
type httpLog struct {
	mu       sync.Mutex
	reqs     []request
	inflight atomic.Int64
	posts    atomic.Int64 // HTTP requests, a batch counting once
}

func (l *httpLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			h.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		batch := cehttp.IsHTTPBatch(r.Header)
		var bodies [][]byte // the jobs, in request order
		if batch {
			msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(body)))
			evs, _ := binding.ToEvents(context.Background(), msg, msg.BodyReader)
			for _, ev := range evs {
				bodies = append(bodies, ev.Data())
			}
		} else {
			bodies = [][]byte{body}
		}
		l.posts.Add(1)
		l.inflight.Add(1)
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK, keep: batch}
		start := time.Now()
		h.ServeHTTP(rec, r)
		l.inflight.Add(-1)
		end := time.Now()
		statuses := make([]int, len(bodies))
		for i := range statuses {
			statuses[i] = rec.status // a one-job reply, or a batch failed as a whole
		}
		if batch && rec.status == http.StatusOK {
			msg := cehttp.NewMessage(rec.Header(), io.NopCloser(bytes.NewReader(rec.body.Bytes())))
			results, _ := binding.ToEvents(context.Background(), msg, msg.BodyReader)
			for i, ev := range results {
				var res wire.Result
				if i < len(statuses) && json.Unmarshal(ev.Data(), &res) == nil {
					statuses[i] = res.Status
				}
			}
		}
		l.mu.Lock()
		for i, b := range bodies {
			var job struct {
				RunID   string `json:"runId"`
				NodeID  string `json:"nodeId"`
				Attempt int    `json:"attempt"`
			}
			_ = json.Unmarshal(b, &job)
			l.reqs = append(l.reqs, request{RunID: job.RunID, NodeID: job.NodeID, Attempt: max(job.Attempt, 1), Status: statuses[i], Start: start, End: end})
		}
		l.mu.Unlock()
	})
}

// of returns the finished requests for one node of one run.
func (l *httpLog) of(runID, nodeID string) []request {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []request
	for _, r := range l.reqs {
		if r.RunID == runID && r.NodeID == nodeID {
			out = append(out, r)
		}
	}
	return out
}

func (l *httpLog) all() []request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]request(nil), l.reqs...)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	keep   bool         // keep a copy of the body (a batch reply, read for its results)
	body   bytes.Buffer // with keep
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.keep {
		r.body.Write(b)
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// --- logs ------------------------------------------------------------------

// testLogSink sends the function's and bridge's warnings to the test log
// (all levels with E2E_LOG=debug) and drops them once the test is over.
type testLogSink struct {
	t      *testing.T
	mu     sync.Mutex
	closed bool
}

func (s *testLogSink) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

func (s *testLogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (s *testLogSink) handler() slog.Handler {
	level := slog.LevelWarn
	if strings.EqualFold(os.Getenv("E2E_LOG"), "debug") {
		level = slog.LevelDebug
	}
	return slog.NewTextHandler(s, &slog.HandlerOptions{Level: level})
}

// --- assertions ------------------------------------------------------------

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(b)
}

// wantStep describes a step's expected state and attempts.
type wantStep struct {
	state    workflow.StepState
	attempts int
}

// assertSteps checks a result's steps: exactly the given nodes, each in
// the given state with the given attempts.
func assertSteps(t *testing.T, res *workflow.RunResult, want map[string]wantStep) {
	t.Helper()
	got := map[string]wantStep{}
	for _, s := range res.Steps {
		got[s.NodeID] = wantStep{s.State, s.Attempts}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("steps of run %s:\n got %v\nwant %v", res.RunID, got, want)
	}
}
