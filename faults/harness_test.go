package faults

// The harness: setup(t) gives each case its own tables, queue topology,
// Redis key prefix and TCP proxies, starts the real stepflow function,
// bridge and reconciler processes behind those proxies, and returns a
// bundle with the load generator and the checks every case shares.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/schema"
	"github.com/stepflow/stepflow/workflow"
)

// Redis databases. Other test packages use database 0. The Redis-loss case
// FLUSHDBs its own database — this suite's stand-in for FLUSHALL: it wipes
// everything stepflow keeps in Redis (the step leases) without touching
// other packages' keys or the other cases of this package, which run at the
// same time and share a second database, each under its own key prefix.
const (
	flushRedisDB  = 9
	sharedRedisDB = 8
)

// The settings the processes under test run with.
var (
	bridgeArgs = []string{"--backoff-base", "50ms", "--backoff-max", "1s", "--max-attempts", "40"}
	// The reconciler republishes the pending steps of runs with no step
	// finished for 3 s, every second.
	reconcilerArgs = []string{"--schedule", "@every 1s", "--threshold", "3s"}
)

// Deadlines.
const (
	// every run final: under 30 s on an idle machine; the margin is for
	// the shared services under other load (benchmarks, other packages).
	runsDeadline  = 120 * time.Second
	quietDeadline = 30 * time.Second // queues empty, bridge idle
)

// caseOptions adjust a bundle.
type caseOptions struct {
	bridgeArgs  []string // extra bridge flags
	redisDB     int      // default sharedRedisDB
	noProcesses bool     // start no stepflow process (the case serves what it needs itself)
	env         []string // extra environment of every process (KEY=value)
}

// bundle is one case's stack.
type bundle struct {
	t   *testing.T
	ctx context.Context
	dir string // process logs

	tables      schema.Tables
	queue       string
	redisPrefix string
	redisDB     int

	pool   *pgxpool.Pool // the test's own queries, direct
	rdb    *redis.Client // direct
	amqp   *amqp.Connection
	client *client.Client // direct: starts runs

	pg, redis, rabbit *proxy // what the processes connect to

	fnAddr, brAddr, recAddr string
	fn, br, rec             *proc

	// More processes, for the cases that run several of each
	// (scale_test.go): started by addPair and addReconciler, stopped and
	// read by verify with the three above.
	env                        []string // what every process runs with
	moreFunctions, moreBridges []*proc
	moreReconcilers            []*proc
	moreBridgeAddrs            []string

	bp *workflow.Blueprint
}

func setup(t *testing.T, o caseOptions) *bundle {
	t.Helper()
	if testing.Short() {
		t.Skip("fault injection runs hundreds of workflows against the real services; skipped with -short")
	}
	if o.redisDB == 0 {
		o.redisDB = sharedRedisDB
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b := &bundle{
		t:           t,
		ctx:         ctx,
		dir:         logDir(t),
		queue:       "faults-" + uuid.NewString(),
		redisPrefix: "faults:" + uuid.NewString() + ":",
		redisDB:     o.redisDB,
		pool:        sharedPool.Get(t),
		bp:          loadBlueprint(t, "faults.json"),
	}
	b.tables = testenv.Tables(t, b.pool)
	b.connectRedis()
	b.connectRabbitMQ()

	pgu, err := url.Parse(testenv.PostgresURL())
	if err != nil {
		t.Fatalf("POSTGRES_URL: %v", err)
	}
	au, err := url.Parse(testenv.RabbitMQURL())
	if err != nil {
		t.Fatalf("RABBITMQ_URL: %v", err)
	}
	b.pg = newProxy(t, "postgres", pgu.Host)
	b.redis = newProxy(t, "redis", redisAddr)
	b.rabbit = newProxy(t, "rabbitmq", au.Host)
	pgu.Host, au.Host = b.pg.Addr(), b.rabbit.Addr()

	procEnv := []string{
		"LOG_LEVEL=debug", "LOG_FORMAT=json",
		"STEPFLOW_PPROF=1", // diagnose reads goroutine dumps when a case is stuck
		"POSTGRES_URL=" + pgu.String(),
		"POSTGRES_MAX_CONNS=4", // seven cases at once, and other packages, share max_connections
		"REDIS_URL=" + fmt.Sprintf("redis://%s/%d", b.redis.Addr(), b.redisDB),
		"REDIS_PREFIX=" + b.redisPrefix,
		"RABBITMQ_URL=" + au.String(),
		"STEPFLOW_QUEUE=" + b.queue,
		"STEPFLOW_CONTEXTS_TABLE=" + b.tables.Contexts,
		"STEPFLOW_STATUSES_TABLE=" + b.tables.Statuses,
		"STEPFLOW_STEPS_TABLE=" + b.tables.Steps,
		"STEPFLOW_BLUEPRINTS_TABLE=" + b.tables.Blueprints,
		"STEPFLOW_DEAD_LETTERS_TABLE=" + b.tables.DeadLetters,
	}
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v := os.Getenv(k); v != "" {
			procEnv = append(procEnv, k+"="+v)
		}
	}
	procEnv = append(procEnv, o.env...)
	b.env = procEnv
	b.fnAddr, b.brAddr, b.recAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	b.fn = newProc(t, "function", b.dir, "http://"+b.fnAddr+"/health/readiness", procEnv,
		"function", "--listen-address", b.fnAddr)
	b.br = newProc(t, "bridge", b.dir, "http://"+b.brAddr+"/health/readiness", procEnv,
		append(append([]string{"bridge", "--function-url", "http://" + b.fnAddr + "/", "--http-address", b.brAddr}, bridgeArgs...), o.bridgeArgs...)...)
	b.rec = newProc(t, "reconciler", b.dir, "http://"+b.recAddr+"/health/readiness", procEnv,
		append([]string{"reconciler", "--http-address", b.recAddr}, reconcilerArgs...)...)
	// Whatever happens, no process outlives its test (before the log
	// folder and the tables go).
	t.Cleanup(func() {
		for _, p := range []*proc{b.br, b.rec, b.fn} {
			p.signal(9, 10*time.Second)
		}
	})
	if !o.noProcesses {
		b.fn.Start()
		b.br.Start()
		b.rec.Start()
	}

	cl, err := client.New(ctx, client.Config{PostgresURL: testenv.PostgresURL(), AMQPURL: testenv.RabbitMQURL(), Queue: b.queue, Tables: b.tables})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	b.client = cl
	return b
}

// logDir is where the processes' logs go: a temporary folder, or
// $FAULTS_LOG_DIR/<test> (kept) to read them after a failure.
func logDir(t *testing.T) string {
	if root := os.Getenv("FAULTS_LOG_DIR"); root != "" {
		dir := filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

func loadBlueprint(t *testing.T, name string) *workflow.Blueprint {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	bp, err := workflow.Decode(data)
	if err != nil {
		t.Fatalf("testdata/%s: %v", name, err)
	}
	return bp
}

func (b *bundle) connectRedis() {
	t := b.t
	b.rdb = redis.NewClient(&redis.Options{Addr: redisAddr, DB: b.redisDB})
	t.Cleanup(func() { _ = b.rdb.Close() })
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s does not answer: %v", redisAddr, err)
	}
	t.Cleanup(func() { testenv.DeleteRedisKeys(t, b.rdb, b.redisPrefix) })
}

// connectRabbitMQ dials the broker directly, declares the case's queue
// topology (so it can be inspected from the start) and deletes all of it
// when the case ends.
func (b *bundle) connectRabbitMQ() {
	t := b.t
	b.amqp = testenv.RabbitMQ(t)
	t.Cleanup(func() { testenv.DeleteQueues(t, b.amqp, jobqueue.TopologyQueues(b.queue)...) })
	ch, err := b.amqp.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := jobqueue.DeclareTopology(ch, b.queue); err != nil {
		t.Fatal(err)
	}
	_ = ch.Close()
}

// queueDepths reads the ready-message count and consumer count of every
// queue of the case's topology.
func (b *bundle) queueDepths() (map[string]amqp.Queue, error) {
	ch, err := b.amqp.Channel()
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	out := map[string]amqp.Queue{}
	for _, name := range jobqueue.TopologyQueues(b.queue) {
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", name, err)
		}
		out[name] = q
	}
	return out, nil
}

// publishRaw publishes a hand-made message to the case's main queue and
// waits for the broker's confirm.
func (b *bundle) publishRaw(msg amqp.Publishing) {
	t := b.t
	t.Helper()
	ch, err := b.amqp.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	testenv.PublishConfirmed(t, ch, b.queue, msg)
}

// bridgeInflightAt scrapes the in-flight deliveries gauge of the bridge
// serving its metrics at addr.
func (b *bundle) bridgeInflightAt(addr string) (float64, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "stepflow_bridge_inflight_deliveries "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no stepflow_bridge_inflight_deliveries in /metrics")
}

// hold keeps a fault in place for its stated duration: the one sleep of
// this suite, as conditions are polled with testenv.Poll.
func hold(d time.Duration) { time.Sleep(d) }

// flushRedis wipes the case's whole Redis database.
func (b *bundle) flushRedis() {
	b.t.Helper()
	if b.redisDB != flushRedisDB {
		b.t.Fatalf("FLUSHDB on database %d: only database %d is reserved for that", b.redisDB, flushRedisDB)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	n, _ := b.rdb.DBSize(ctx).Result()
	if err := b.rdb.FlushDB(ctx).Err(); err != nil {
		b.t.Fatalf("FLUSHDB: %v", err)
	}
	b.t.Logf("FLUSHDB of Redis database %d: %d keys (step leases) dropped", b.redisDB, n)
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
