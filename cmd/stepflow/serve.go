package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/function"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/redisconn"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ---- function ----

type functionFlags struct {
	listen, blueprints string
	stepTimeout        time.Duration
	publicURL          string // the webhooks' base; dev shares the API's --public-url
	maxOutputBytes     string
}

func addFunctionFlags(fs *pflag.FlagSet, f *functionFlags, withPublicURL bool) {
	if withPublicURL {
		fs.StringVar(&f.publicURL, "public-url", envOr("STEPFLOW_PUBLIC_URL", function.DefaultPublicURL), "base URL the API server (which serves /webhooks/) is reached at: webhook nodes output their URLs under it (env STEPFLOW_PUBLIC_URL)")
	}
	fs.StringVar(&f.listen, "listen-address", envOr("LISTEN_ADDRESS", "127.0.0.1:8080"), "address the function serves CloudEvents, /health/* and /metrics on (env LISTEN_ADDRESS)")
	fs.StringVar(&f.blueprints, "blueprints", os.Getenv("BLUEPRINTS_DIR"), "register every *.json blueprint of this folder, for runs started by other clients (env BLUEPRINTS_DIR)")
	fs.DurationVar(&f.stepTimeout, "step-timeout", function.DefaultStepTimeout, "time limit of a node without its own timeout (env STEP_TIMEOUT)")
	fs.StringVar(&f.maxOutputBytes, "max-output-bytes", envOr("STEPFLOW_MAX_OUTPUT_BYTES", fmt.Sprint(function.DefaultMaxOutputBytes)), "largest node output, in bytes of JSON: a larger one fails the node's attempt (env STEPFLOW_MAX_OUTPUT_BYTES)")
}

func newFunctionCmd() *cobra.Command {
	var c conn
	var ff functionFlags
	cmd := &cobra.Command{
		Use:   "function",
		Short: "Serve the step function over HTTP (CloudEvents), as Knative would",
		Long: `Function serves the step function as a plain process: POST a binary-mode
CloudEvent of type dev.stepflow.job.v1 to run one node, or a CloudEvents batch
(application/cloudevents-batch+json) of them to run each. It answers
/health/readiness (false until PostgreSQL and Redis answer), /health/liveness
and /metrics, and drains on SIGTERM. It serves the built-in and example node
types. (As a Knative function, the repository root serves the same through
func-go: see docs/knative.md.)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.validate(); err != nil {
				return err
			}
			if ff.stepTimeout <= 0 {
				return exitCode(2, fmt.Errorf("--step-timeout %s: must be positive", ff.stepTimeout))
			}
			return serveFunction(cmd.Context(), c, ff)
		},
	}
	addConnFlags(cmd.Flags(), &c, "postgres", "redis")
	addFunctionFlags(cmd.Flags(), &ff, true)
	return cmd
}

func serveFunction(ctx context.Context, c conn, ff functionFlags) error {
	reg := newRegistry()
	f := function.New(function.Options{Registry: registry(), Logger: slog.Default(), Registerer: reg})
	env := c.functionEnv()
	env["BLUEPRINTS_DIR"] = ff.blueprints
	env["STEP_TIMEOUT"] = ff.stepTimeout.String()
	env["STEPFLOW_MAX_OUTPUT_BYTES"] = ff.maxOutputBytes
	env["STEPFLOW_PUBLIC_URL"] = ff.publicURL
	cfg, err := function.ConfigFromMap(env)
	if err != nil {
		return exitCode(2, err)
	}
	if err := f.StartWith(ctx, cfg); err != nil {
		return exitCode(1, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	addPprof(mux)
	mux.Handle("/health/", f.Health())
	mux.Handle("/", f)
	ln, err := net.Listen("tcp", ff.listen)
	if err != nil {
		return exitCode(2, fmt.Errorf("--listen-address %s: %w", ff.listen, err))
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 90 * time.Second}
	slog.Info("step function listening", "address", ln.Addr().String(), "postgres", redact(c.postgresURL), "redis", redact(c.redisURL))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err = <-served:
	case <-ctx.Done():
		// Drain: finish the steps being run, refuse new ones.
		slog.Info("step function draining")
		sctx, cancel := context.WithTimeout(context.Background(), ff.stepTimeout+5*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
	}
	stopErr := f.Stop(context.Background())
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, stopErr)
}

// ---- bridge ----

type bridgeFlags struct {
	cfg         bridge.Config
	httpAddress string
	handOn      bool
}

// addBridgeFlags adds the bridge's flags. httpFlag and batchFlag name the
// two that dev, which also runs the reconciler, names otherwise.
func addBridgeFlags(fs *pflag.FlagSet, b *bridgeFlags, withFunctionURL bool, httpFlag, batchFlag string) {
	if withFunctionURL {
		fs.StringVar(&b.cfg.FunctionURL, "function-url", envOr("FUNCTION_URL", "http://127.0.0.1:8080/"), "URL of the step function (env FUNCTION_URL)")
		fs.StringVar(&b.cfg.ReadinessURL, "readiness-url", os.Getenv("FUNCTION_READINESS_URL"), "function readiness URL, default FUNCTION_URL with path /health/readiness (env FUNCTION_READINESS_URL)")
	}
	fs.IntVar(&b.cfg.Prefetch, "prefetch", bridge.DefaultPrefetch, "unacknowledged deliveries held (env BRIDGE_PREFETCH)")
	fs.IntVar(&b.cfg.Concurrency, "concurrency", bridge.DefaultConcurrency, "requests to the function in flight at once, each of up to --"+batchFlag+" jobs (env BRIDGE_CONCURRENCY)")
	fs.IntVar(&b.cfg.BatchSize, batchFlag, bridge.DefaultBatchSize, "most jobs sent to the function in one request (a CloudEvents batch); 1 sends each job alone in binary mode, for a function that takes no batches (a batch refused with 400/415 also switches batching off) (env BRIDGE_BATCH_SIZE)")
	fs.DurationVar(&b.cfg.RequestTimeout, "request-timeout", bridge.DefaultRequestTimeout, "time limit of one call to the function, a whole batch (env BRIDGE_REQUEST_TIMEOUT)")
	fs.IntVar(&b.cfg.MaxAttempts, "max-attempts", bridge.DefaultMaxAttempts, "transport attempts before a job is dead-lettered (env BRIDGE_MAX_ATTEMPTS)")
	fs.DurationVar(&b.cfg.BackoffBase, "backoff-base", bridge.DefaultBackoffBase, "first transport retry delay, doubled each attempt (env BRIDGE_BACKOFF_BASE)")
	fs.DurationVar(&b.cfg.BackoffMax, "backoff-max", bridge.DefaultBackoffMax, "largest transport retry delay (env BRIDGE_BACKOFF_MAX)")
	fs.DurationVar(&b.cfg.ShutdownGrace, "shutdown-grace", bridge.DefaultShutdownGrace, "how long in-flight deliveries may finish on SIGTERM before they are requeued (env BRIDGE_SHUTDOWN_GRACE)")
	fs.IntVar(&b.cfg.PauseAfter, "pause-after", bridge.DefaultPauseAfter, "calls to the function failing without an HTTP answer (refused, reset, timed out) this many times in a row make the bridge stop consuming, hand back what it holds and report not ready until the function's readiness answers (env BRIDGE_PAUSE_AFTER)")
	fs.BoolVar(&b.handOn, "hand-on", true, "send a reply's jobs, once published, straight to the function when a request slot is free and nothing waits, instead of waiting for the queue to deliver them; their published copies stay the durable ones and are acked without a call once the jobs are done (env BRIDGE_HAND_ON)")
	fs.IntVar(&b.cfg.PublishCopies, "publish-copies", 1, "publish every reply job this many times: fault injection only, stepflow absorbs duplicates (env BRIDGE_PUBLISH_COPIES)")
	fs.StringVar(&b.httpAddress, httpFlag, envOr("BRIDGE_HTTP_ADDRESS", "127.0.0.1:9091"), "address of /health/* and /metrics (env BRIDGE_HTTP_ADDRESS)")
}

func newBridgeCmd() *cobra.Command {
	var c conn
	var bf bridgeFlags
	cmd := &cobra.Command{
		Use:   "bridge",
		Short: "Consume the job queue and call the step function with CloudEvents",
		Long: `Bridge consumes the job queue with manual acks and POSTs the jobs to the step
function as a CloudEvents batch (up to --batch-size jobs per request: what has
arrived when a request slot frees; a lone job goes at once), or with
--batch-size 1 each job alone as a binary-mode CloudEvent. Each job's answer
decides: publish the next jobs (with publisher confirms) then ack; ack; retry
later with backoff; or dead-letter to <queue>.dlq with the reason. Delays
(retries, sleeps) wait in TTL queues and hold no worker. On SIGTERM it stops
consuming, lets in-flight requests finish within the grace period and
requeues the rest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBridge(cmd.Context(), c, bf)
		},
	}
	addConnFlags(cmd.Flags(), &c, "amqp")
	addBridgeFlags(cmd.Flags(), &bf, true, "http-address", "batch-size")
	return cmd
}

func runBridge(ctx context.Context, c conn, bf bridgeFlags) error {
	reg := newRegistry()
	cfg := bf.cfg
	cfg.AMQPURL, cfg.Queue, cfg.QueueType, cfg.Logger, cfg.Registerer = c.amqpURL, c.queue, c.queueType, slog.Default(), reg
	cfg.NoHandOn = !bf.handOn
	if err := cfg.Validate(); err != nil {
		return exitCode(2, err)
	}
	b, err := bridge.New(cfg)
	if err != nil {
		return exitCode(2, err)
	}
	stopHTTP, err := serveOps(bf.httpAddress, reg, b.Ready)
	if err != nil {
		return exitCode(2, err)
	}
	defer stopHTTP()
	slog.Info("bridge starting", "queue", cfg.Queue, "queue_type", cfg.QueueType, "function", cfg.FunctionURL, "rabbitmq", redact(cfg.AMQPURL), "http", bf.httpAddress)
	return b.Run(ctx)
}

// serveOps serves /health/readiness, /health/liveness and /metrics.
func serveOps(addr string, reg *prometheus.Registry, ready func() bool) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	addPprof(mux)
	mux.HandleFunc("/health/liveness", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ALIVE") })
	mux.HandleFunc("/health/readiness", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "READY")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http address %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// ---- reconciler ----

type reconcilerFlags struct {
	blueprints  string
	schedule    string
	threshold   time.Duration
	batch       int
	httpAddress string
}

func addReconcilerFlags(fs *pflag.FlagSet, r *reconcilerFlags, service bool, httpFlag string) {
	fs.DurationVar(&r.threshold, "threshold", reconciler.DefaultThreshold, "a running run with no step finished for this long is stalled (env RECONCILE_THRESHOLD)")
	if httpFlag != "reconciler-http-address" { // dev shares the function's --blueprints
		fs.StringVar(&r.blueprints, "blueprints", os.Getenv("BLUEPRINTS_DIR"), "blueprints (*.json) of runs started by other clients, to restart those whose start jobs were lost (env BLUEPRINTS_DIR)")
	}
	fs.IntVar(&r.batch, "batch-size", reconciler.DefaultBatchSize, "stalled runs locked and repaired per transaction (env RECONCILE_BATCH_SIZE)")
	if service {
		fs.StringVar(&r.schedule, "schedule", envOr("RECONCILE_SCHEDULE", reconciler.DefaultSchedule), `when to reconcile: a cron spec ("*/1 * * * *") or "@every 30s" (env RECONCILE_SCHEDULE)`)
		fs.StringVar(&r.httpAddress, httpFlag, envOr("RECONCILER_HTTP_ADDRESS", "127.0.0.1:9092"), "address of /health/* and /metrics (env RECONCILER_HTTP_ADDRESS)")
	}
}

func (r reconcilerFlags) validate() error {
	if r.threshold <= 0 {
		return exitCode(2, fmt.Errorf("--threshold %s: must be positive", r.threshold))
	}
	if r.batch <= 0 {
		return exitCode(2, fmt.Errorf("--batch-size %d: must be positive", r.batch))
	}
	if r.schedule != "" {
		if err := reconciler.ValidateSchedule(r.schedule); err != nil {
			return exitCode(2, fmt.Errorf("--schedule %q: %w", r.schedule, err))
		}
	}
	return nil
}

// newReconciler builds a reconciler and what it needs; close releases it.
func newReconciler(ctx context.Context, c conn, rf reconcilerFlags) (*reconciler.Reconciler, func(), error) {
	pool, err := store.Connect(ctx, c.postgresURL, 4)
	if err != nil {
		return nil, nil, err
	}
	pub := jobqueue.NewTopologyPublisher(c.amqpURL, jobqueue.Topology{Queue: c.queue, Type: jobqueue.QueueType(c.queueType)})
	closeAll := func() { pub.Close(); pool.Close() }
	st, err := store.New(pool, c.tables)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	rdb, err := redisconn.Open(c.redisURL)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	var blueprints map[string]*workflow.Workflow
	if rf.blueprints != "" {
		if blueprints, err = loadBlueprintDir(rf.blueprints); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("BLUEPRINTS_DIR %s: %w", rf.blueprints, err)
		}
	}
	rec, err := reconciler.New(reconciler.Options{
		Blueprints: blueprints,
		Store:      st, Redis: rdb, RedisPrefix: c.redisPrefix, Publish: pub.Publish,
		Channel: pub.Channel, Queue: c.queue,
		Threshold: rf.threshold, BatchSize: rf.batch, Logger: slog.Default(),
	})
	if err != nil {
		closeAll()
		_ = rdb.Close()
		return nil, nil, err
	}
	return rec, func() { closeAll(); _ = rdb.Close() }, nil
}

func newReconcilerCmd() *cobra.Command {
	var c conn
	var rf reconcilerFlags
	cmd := &cobra.Command{
		Use:   "reconciler",
		Short: "Repair stalled runs on a cron schedule (long-lived service)",
		Long: `Reconciler wakes on a cron schedule, finds running runs with no step finished
within the threshold, and republishes the jobs they are missing (from the steps
recorded in PostgreSQL, never re-evaluating a condition). Several reconcilers
can run at once: runs are claimed with FOR UPDATE SKIP LOCKED.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.validate(); err != nil {
				return err
			}
			if err := rf.validate(); err != nil {
				return err
			}
			return runReconcilerService(cmd.Context(), c, rf)
		},
	}
	addConnFlags(cmd.Flags(), &c, "postgres", "redis", "amqp")
	addReconcilerFlags(cmd.Flags(), &rf, true, "http-address")
	return cmd
}

func runReconcilerService(ctx context.Context, c conn, rf reconcilerFlags) error {
	rec, closeRec, err := newReconciler(ctx, c, rf)
	if err != nil {
		return exitCode(1, err)
	}
	defer closeRec()
	svc, err := reconciler.NewService(rec, reconciler.ServiceOptions{Schedule: rf.schedule, Registry: newRegistry(), Routes: addPprof, Logger: slog.Default()})
	if err != nil {
		return exitCode(2, err)
	}
	ln, err := net.Listen("tcp", rf.httpAddress)
	if err != nil {
		return exitCode(2, fmt.Errorf("http address %s: %w", rf.httpAddress, err))
	}
	return svc.Run(ctx, ln)
}

func newReconcileCmd() *cobra.Command {
	var c conn
	var rf reconcilerFlags
	var once bool
	cmd := &cobra.Command{
		Use:   "reconcile --once",
		Short: "Repair stalled runs once and print the stats as JSON (for a CronJob)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !once {
				return exitCode(2, errors.New(`reconcile needs --once (for a long-lived service use "stepflow reconciler")`))
			}
			if err := c.validate(); err != nil {
				return err
			}
			if err := rf.validate(); err != nil {
				return err
			}
			rec, closeRec, err := newReconciler(cmd.Context(), c, rf)
			if err != nil {
				return exitCode(1, err)
			}
			defer closeRec()
			st, err := rec.Run(cmd.Context())
			if err != nil {
				return exitCode(1, err)
			}
			b, _ := json.Marshal(st)
			fmt.Println(string(b))
			return nil
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "run one pass and exit (required)")
	addConnFlags(cmd.Flags(), &c, "postgres", "redis", "amqp")
	addReconcilerFlags(cmd.Flags(), &rf, false, "")
	return cmd
}

// ---- dev ----

func newDevCmd() *cobra.Command {
	var c conn
	var ff functionFlags
	var bf bridgeFlags
	var rf reconcilerFlags
	var af apiFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Migrate, then run function, bridge, reconciler and the HTTP API in one process (local work)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.validate(); err != nil {
				return err
			}
			if err := rf.validate(); err != nil {
				return err
			}
			rf.blueprints = ff.blueprints
			af.blueprints = ff.blueprints
			// Webhook URLs are the API's: under its --public-url, else
			// its address.
			if ff.publicURL = af.publicURL; ff.publicURL == "" {
				ff.publicURL = "http://" + loopbackHost(af.address)
			}
			ao, err := af.options()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			if _, err := migrate(ctx, c); err != nil {
				return exitCode(1, err)
			}
			bf.cfg.FunctionURL = "http://" + loopbackHost(ff.listen) + "/"
			errs := make(chan error, 4)
			go func() { errs <- serveFunction(ctx, c, ff) }()
			go func() { errs <- runBridge(ctx, c, bf) }()
			go func() { errs <- runReconcilerService(ctx, c, rf) }()
			go func() { errs <- serveAPI(ctx, c, ao) }()
			var first error
			for range 4 {
				if err := <-errs; err != nil && first == nil {
					first = err
				}
				cancel()
			}
			return first
		},
	}
	addConnFlags(cmd.Flags(), &c, "postgres", "redis", "amqp")
	// --public-url is the API's; the function gets it in RunE.
	addFunctionFlags(cmd.Flags(), &ff, false)
	addBridgeFlags(cmd.Flags(), &bf, false, "bridge-http-address", "bridge-batch-size") // --batch-size is the reconciler's
	addReconcilerFlags(cmd.Flags(), &rf, true, "reconciler-http-address")
	addAPIFlags(cmd.Flags(), &af, false) // --blueprints is the function's
	return cmd
}

// loopbackHost is a listen address as this machine reaches it: ":8080"
// is 127.0.0.1:8080.
func loopbackHost(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "127.0.0.1" + addr
	}
	return addr
}

// loadBlueprintDir compiles every *.json blueprint of dir (example inputs,
// *.input.json, excepted).
func loadBlueprintDir(dir string) (map[string]*workflow.Workflow, error) {
	bps, err := readBlueprintDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]*workflow.Workflow{}
	for id, bp := range bps {
		w, err := workflow.Compile(bp, nil)
		if err != nil {
			return nil, err
		}
		out[id] = w
	}
	if len(out) == 0 {
		return nil, errors.New("no *.json blueprint")
	}
	return out, nil
}

// addPprof serves Go's profiles under /debug/pprof/ when --pprof is set.
func addPprof(mux *http.ServeMux) {
	if !pprofEnabled {
		return
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
