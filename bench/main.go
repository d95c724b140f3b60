// Command bench measures stepflow on the services it runs on: it builds the
// stepflow binary, migrates its own tables, starts `stepflow function` and
// `stepflow bridge` as separate processes, and measures
//
//   - W: a fan-out workflow (start → b1..b8 → join (all) → end, 11 noop
//     steps), N runs started at once: steps/s, runs/s, per-step latency;
//   - C: a 10-node noop chain: single-run latency over sequential runs,
//     then steps/s for N runs at once;
//   - L: a long chain (500 nodes) with 1 KB outputs: mean step latency of
//     the last 50 steps over that of the first 50;
//   - B: one run scattering 2,000 items to noop workers, then gathering
//     them: items/s and the gather's delay after the last worker;
//   - R: resume latency through the API;
//   - baselines in the same run against the same services: RabbitMQ publish
//     with confirm + consume + ack, a PostgreSQL upsert+select transaction,
//     Redis pipelined SETs, loopback HTTP POSTs;
//   - CPU seconds and peak RSS of the bridge and the function, and CPU of
//     the services (from /proc).
//
// It prints a table on stdout, progress on stderr, and with --json FILE
// writes the figures as JSON. Every run is checked (completed, every step
// succeeded once, the expected output); a wrong result fails the benchmark.
//
//	go run ./bench [--json FILE] [--n 2000] [--quick] [--prefetch P] [--concurrency C] [--batch-size B] [--pg-conns K] [--keep]
//	               [--function stepflow|func] [--func-bin PATH] [--workloads baselines,C,L,W,B,R] [--b-items 2000]
//
// --workloads runs only the named parts (in their fixed order); the
// figures of the others are left out of the table and the JSON.
//
// --function func measures the function that `func run --builder=host`
// builds from the repository root (the Knative function route, see
// docs/knative.md) instead of `stepflow function` (the image route); the
// func CLI is the one scripts/func-check.sh builds.
//
// See docs/benchmarks.md.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/function"
)

type config struct {
	N            int
	Prefetch     int
	Concurrency  int
	BatchSize    int
	PGConns      int
	JSONPath     string
	Keep         bool
	Quick        bool
	CRuns        int // sequential single runs of the chain
	Warmup       int // single runs before those, not counted
	LNodes       int // long chain length
	RRuns        int // awaiting runs resumed one at a time
	BItems       int // items of B's batch
	Workloads    map[string]bool
	BaselineDur  time.Duration // each baseline's duration
	PollInterval time.Duration // single-run completion polling

	PostgresURL, RedisURL, AMQPURL string
	RepoRoot                       string

	Function string // functionStepflow or functionFunc
	FuncBin  string // the func CLI, for functionFunc

	// Bin is a stepflow binary to measure instead of building the
	// working tree (--stepflow-bin): for A/B runs of two builds.
	Bin string
}

// The function routes --function chooses between.
const (
	functionStepflow = "stepflow" // `stepflow function`, as the stepflow image runs it
	functionFunc     = "func"     // `func run --builder=host`: what func build makes of the root
)

// defaultFuncBin is where scripts/func-check.sh builds the func CLI.
func defaultFuncBin() string {
	if v := os.Getenv("FUNC_BIN"); v != "" {
		return v
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "stepflow", "func-v0.50.1", "func")
}

func defaultConfig() *config {
	return &config{
		N:            2000,
		Prefetch:     bridge.DefaultPrefetch,
		Concurrency:  bridge.DefaultConcurrency,
		BatchSize:    bridge.DefaultBatchSize,
		PGConns:      function.DefaultPGMaxConns,
		CRuns:        50,
		Warmup:       3,
		LNodes:       500,
		RRuns:        200,
		BItems:       2000,
		Workloads:    allWorkloads(),
		BaselineDur:  3 * time.Second,
		PollInterval: 500 * time.Microsecond,
		PostgresURL:  envOr("POSTGRES_URL", function.DefaultPostgresURL),
		RedisURL:     envOr("REDIS_URL", function.DefaultRedisURL),
		AMQPURL:      envOr("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
		Function:     functionStepflow,
		FuncBin:      defaultFuncBin(),
	}
}

// applyQuick makes the smoke-test sizes; flags given explicitly win.
func (c *config) applyQuick(set map[string]bool) {
	c.Quick = true
	if !set["n"] {
		c.N = 50
	}
	if !set["c-runs"] {
		c.CRuns = 10
	}
	c.Warmup = 2
	c.RRuns = 20
	if !set["b-items"] {
		c.BItems = 200
	}
	if !set["l-nodes"] {
		c.LNodes = 60
	}
	c.BaselineDur = 500 * time.Millisecond
}

// workloadNames are the parts of the benchmark --workloads chooses from,
// in the order they run.
var workloadNames = []string{"baselines", "C", "L", "W", "B", "R"}

func selectedWorkloads(on map[string]bool) []string {
	var out []string
	for _, w := range workloadNames {
		if on[w] {
			out = append(out, w)
		}
	}
	return out
}

func allWorkloads() map[string]bool {
	m := map[string]bool{}
	for _, w := range workloadNames {
		m[w] = true
	}
	return m
}

// parseWorkloads reads --workloads: a comma-separated list of
// workloadNames.
func parseWorkloads(list string) (map[string]bool, error) {
	m := map[string]bool{}
	for _, w := range strings.Split(list, ",") {
		w = strings.TrimSpace(w)
		if !slices.Contains(workloadNames, w) {
			return nil, fmt.Errorf("--workloads: %q is no workload (want a comma-separated list of %s)", w, strings.Join(workloadNames, ", "))
		}
		m[w] = true
	}
	return m, nil
}

// checkFunction validates --function and, for func, that the CLI exists.
func (c *config) checkFunction() error {
	switch c.Function {
	case functionStepflow:
		return nil
	case functionFunc:
		if st, err := os.Stat(c.FuncBin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("--function func: no func CLI at %s (make func-check builds it there; or set --func-bin)", c.FuncBin)
		}
		return nil
	default:
		return fmt.Errorf("--function %q: want stepflow or func", c.Function)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// findRepoRoot walks up from the working directory to the stepflow module.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/stepflow/stepflow\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the stepflow repository (no go.mod of github.com/stepflow/stepflow above the working directory)")
		}
		dir = parent
	}
}

func main() {
	var err error
	cfg := defaultConfig()
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.IntVar(&cfg.N, "n", cfg.N, "runs started at once in W and in C's throughput test")
	fs.IntVar(&cfg.Prefetch, "prefetch", cfg.Prefetch, "bridge --prefetch (and the AMQP baseline's prefetch)")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "bridge --concurrency (and the baselines' concurrency)")
	fs.IntVar(&cfg.BatchSize, "batch-size", cfg.BatchSize, "bridge --batch-size: most jobs per request to the function (1: one binary-mode event per request)")
	fs.IntVar(&cfg.PGConns, "pg-conns", cfg.PGConns, "function POSTGRES_MAX_CONNS (and the PostgreSQL baseline's pool size)")
	fs.StringVar(&cfg.JSONPath, "json", "", "write the figures as JSON to this file")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the benchmark's tables (bench_<id>_*) for inspection")
	fs.BoolVar(&cfg.Quick, "quick", false, "smoke mode: N=50, 10 single runs, a 60-node L chain, 20 resumes, 0.5 s baselines")
	fs.IntVar(&cfg.LNodes, "l-nodes", cfg.LNodes, "length of L's chain")
	fs.IntVar(&cfg.BItems, "b-items", cfg.BItems, "items of B's batch (200 with --quick)")
	workloads := fs.String("workloads", strings.Join(workloadNames, ","), "the parts to run, comma-separated: "+strings.Join(workloadNames, ", "))
	fs.DurationVar(&cfg.PollInterval, "poll-interval", cfg.PollInterval, "how often a single run's status row is polled")
	fs.StringVar(&cfg.Function, "function", cfg.Function, "the function measured: stepflow (`stepflow function`, the image route) or func (`func run --builder=host`, the Knative function route)")
	fs.StringVar(&cfg.FuncBin, "func-bin", cfg.FuncBin, "the func CLI for --function func (env FUNC_BIN; make func-check builds it there)")
	fs.IntVar(&cfg.CRuns, "c-runs", cfg.CRuns, "C's sequential single runs (after the warm-up runs)")
	fs.StringVar(&cfg.Bin, "stepflow-bin", "", "measure this stepflow binary instead of building the working tree (A/B runs)")
	_ = fs.Parse(os.Args[1:])
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.Quick {
		cfg.applyQuick(set)
	}
	wl, err := parseWorkloads(*workloads)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	cfg.Workloads = wl
	if set["c-runs"] && cfg.CRuns < 1 {
		fmt.Fprintln(os.Stderr, "bench: --c-runs must be positive")
		os.Exit(2)
	}
	if cfg.LNodes < 10 {
		fmt.Fprintln(os.Stderr, "bench: --l-nodes must be at least 10")
		os.Exit(2)
	}
	if cfg.N < 1 || cfg.BItems < 1 || cfg.Prefetch < 1 || cfg.Concurrency < 1 || cfg.BatchSize < 1 || cfg.PGConns < 1 || cfg.PollInterval <= 0 {
		fmt.Fprintln(os.Stderr, "bench: --n, --b-items, --prefetch, --concurrency, --batch-size, --pg-conns and --poll-interval must be positive")
		os.Exit(2)
	}
	if err := cfg.checkFunction(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	root, err := findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	cfg.RepoRoot = root

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		os.Exit(1)
	}
	printTable(os.Stdout, res)
}

// ---- results ----

// Result is everything the benchmark reports; its JSON is the --json file.
type Result struct {
	W         *BatchResult       `json:"W"`
	C         *CResult           `json:"C"`
	L         *LongResult        `json:"L"`
	B         *ScatterResult     `json:"B,omitempty"`
	R         *ResumeResult      `json:"R"`
	Baselines *Baselines         `json:"baselines"`
	Fractions map[string]float64 `json:"fractions"`
	// Peak RSS (VmHWM) right after W, and at the end.
	RSSMB    map[string]float64 `json:"rss_mb"`
	RSSMBEnd map[string]float64 `json:"rss_mb_end"`
	// CPU seconds during W, by process (bridge, function, bench = this
	// program, postgres, redis, rabbitmq, other, machine = all busy time).
	CPUS         map[string]float64            `json:"cpu_s"`
	CPUMSPerStep map[string]float64            `json:"cpu_ms_per_step"` // W
	CPUByPhase   map[string]map[string]float64 `json:"cpu_s_by_phase"`
	Services     map[string]map[string]float64 `json:"services_memory"`
	LogLines     map[string]int                `json:"process_log_lines"` // warnings and errors the processes logged
	// The bridge's stepflow_bridge_deliveries_total by outcome, at the end.
	BridgeOutcomes map[string]float64 `json:"bridge_outcomes"`
	// Mean durations of the processes' histograms (ms), over the run.
	SpanMeansMS map[string]float64 `json:"span_means_ms"`
	Machine     map[string]any     `json:"machine"`
	Config      map[string]any     `json:"config"`
	ElapsedS    float64            `json:"elapsed_s"`
}

// CResult is the chain's single-run latency and throughput.
type CResult struct {
	SingleResult
	StepsPerS float64      `json:"steps_per_s"`
	RunsPerS  float64      `json:"runs_per_s"`
	Batch     *BatchResult `json:"batch"`
}

type logger struct {
	mu sync.Mutex
	w  io.Writer
	t0 time.Time
}

func (l *logger) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "[%6.1fs] %s\n", time.Since(l.t0).Seconds(), fmt.Sprintf(format, args...))
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }
func round3(x float64) float64 {
	if x < 0 {
		return -round3(-x)
	}
	return float64(int64(x*1000+0.5)) / 1000
}

// phase runs f and records the CPU each process used meanwhile.
type phases struct {
	s   *stack
	out map[string]map[string]float64
	log *logger
}

func (p *phases) run(name string, f func() error) error {
	start := sampleCPU(p.s.pids())
	t0 := time.Now()
	err := f()
	d := cpuDelta(start, sampleCPU(p.s.pids()))
	d["wall_s"] = round3(time.Since(t0).Seconds())
	p.out[name] = d
	if err == nil {
		p.log.printf("%s: CPU s bridge %.2f, function %.2f, bench %.2f, postgres %.2f, redis %.2f, rabbitmq %.2f, other %.2f (machine busy %.2f of %.2f available)",
			name, d["bridge"], d["function"], d["bench"], d["postgres"], d["redis"], d["rabbitmq"], d["other"], d["machine"], d["wall_s"]*float64(runtime.NumCPU()))
	}
	return err
}

// run is the whole benchmark.
func run(ctx context.Context, cfg *config, logw io.Writer) (res *Result, err error) {
	log := &logger{w: logw, t0: time.Now()}
	log.printf("stepflow benchmark: function %s, N=%d, prefetch %d, concurrency %d, batch size %d, pool %d%s", cfg.Function, cfg.N, cfg.Prefetch, cfg.Concurrency, cfg.BatchSize, cfg.PGConns, map[bool]string{true: " (quick)", false: ""}[cfg.Quick])
	s, err := newStack(ctx, cfg, log)
	var extraTables []string
	if s != nil {
		extraTables = append(extraTables, "bench_"+s.id+"_kv")
		defer func() {
			if err != nil {
				s.failed = true
			}
			s.cleanup(extraTables, []string{s.queue + "-baseline"})
		}()
	}
	if err != nil {
		return nil, err
	}
	res = &Result{Fractions: map[string]float64{}, Config: map[string]any{
		"function": cfg.Function, "n": cfg.N, "prefetch": cfg.Prefetch, "concurrency": cfg.Concurrency, "batch_size": cfg.BatchSize, "pg_conns": cfg.PGConns,
		"c_single_runs": cfg.CRuns, "c_warmup_runs": cfg.Warmup, "l_nodes": cfg.LNodes, "r_runs": cfg.RRuns, "b_items": cfg.BItems,
		"workloads":  selectedWorkloads(cfg.Workloads),
		"baseline_s": cfg.BaselineDur.Seconds(), "poll_interval_ms": float64(cfg.PollInterval.Microseconds()) / 1000,
		"quick": cfg.Quick, "starters": 16, "log_level": "warn",
		"queue": s.queue, "tables": "bench_" + s.id + "_*", "redis_prefix": s.redisPrefix,
	}}
	res.Machine = machine(ctx, s)
	if err := s.build(ctx); err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	ph := &phases{s: s, out: map[string]map[string]float64{}, log: log}
	res.CPUByPhase = ph.out

	on := cfg.Workloads
	if on["baselines"] {
		if err := ph.run("baselines", func() (err error) { res.Baselines, err = runBaselines(ctx, s); return err }); err != nil {
			return nil, err
		}
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	var clients []*client.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range 4 {
		c, err := client.New(ctx, client.Config{PostgresURL: cfg.PostgresURL, AMQPURL: cfg.AMQPURL, Queue: s.queue, Tables: s.tables})
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
	}

	chain10 := chainBlueprint("bench-chain10", 10, false)
	if on["C"] {
		res.C = &CResult{}
		if err := ph.run("C_single", func() error {
			single, err := runSingles(ctx, s, clients[0], chain10, "cs-", cfg.CRuns, cfg.Warmup)
			if err == nil {
				res.C.SingleResult = *single
			}
			return err
		}); err != nil {
			return nil, err
		}
	}

	if on["L"] {
		if err := ph.run("L", func() error {
			// A first run, not measured, so that compiling the long blueprint
			// (client and function) does not weigh on the first steps.
			if _, err := runLong(ctx, s, clients[0], cfg.LNodes, "lwarm"); err != nil {
				return err
			}
			res.L, err = runLong(ctx, s, clients[0], cfg.LNodes, "lrun")
			return err
		}); err != nil {
			return nil, err
		}
	}

	identity := func(in map[string]any) any { return in }
	if on["W"] {
		w := &batch{name: "W", prefix: "w-", bp: fanoutBlueprint(), n: cfg.N, steps: 11, sink: "end",
			input: func(i int) map[string]any { return map[string]any{"k": i, "tag": "w"} },
			expected: func(in map[string]any) any {
				out := map[string]any{}
				for b := 1; b <= 8; b++ {
					out[fmt.Sprintf("b%d", b)] = in
				}
				return out
			}}
		if err := ph.run("W", func() (err error) { res.W, err = runBatch(ctx, s, clients, w); return err }); err != nil {
			return nil, err
		}
		res.RSSMB = rss(s)
		res.CPUS = ph.out["W"]
		res.Services = serviceMemory()
		res.CPUMSPerStep = map[string]float64{}
		for k, v := range res.CPUS {
			if k != "wall_s" {
				res.CPUMSPerStep[k] = round3(v * 1000 / float64(res.W.Steps))
			}
		}
	}

	if on["B"] {
		if err := ph.run("B", func() (err error) { res.B, err = runScatter(ctx, s, clients[0], cfg.BItems, "brun"); return err }); err != nil {
			return nil, err
		}
	}

	if on["C"] {
		c := &batch{name: "C", prefix: "cn-", bp: chain10, n: cfg.N, steps: 10, sink: chainID(10),
			input:    func(i int) map[string]any { return map[string]any{"k": i, "tag": "c"} },
			expected: identity}
		if err := ph.run("C_batch", func() (err error) { res.C.Batch, err = runBatch(ctx, s, clients, c); return err }); err != nil {
			return nil, err
		}
		res.C.StepsPerS, res.C.RunsPerS = res.C.Batch.StepsPerS, res.C.Batch.RunsPerS
	}

	if on["R"] {
		if err := ph.run("R", func() (err error) { res.R, err = runResume(ctx, s, clients[0], cfg.RRuns, cfg.Warmup); return err }); err != nil {
			return nil, err
		}
	}
	res.RSSMBEnd = rss(s)

	// Nothing may be left behind: no message in any queue (a dead letter
	// means a job failed), the processes still up.
	if err := s.alive(); err != nil {
		return nil, err
	}
	depths, err := s.queueDepths()
	if err != nil {
		return nil, err
	}
	for q, n := range depths {
		if n > 0 {
			return nil, fmt.Errorf("%d messages left in %s after every run completed", n, q)
		}
	}
	res.LogLines = s.warnings()
	res.BridgeOutcomes = s.bridgeOutcomes(ctx)
	res.SpanMeansMS = s.spanMeans(ctx)

	b := res.Baselines
	type rate struct {
		name string
		v    float64
	}
	var rates []rate
	if res.W != nil {
		rates = append(rates, rate{"W.steps_per_s", res.W.StepsPerS})
	}
	if res.C != nil {
		rates = append(rates, rate{"C.steps_per_s", res.C.StepsPerS})
	}
	for _, f := range rates {
		if b == nil {
			break
		}
		res.Fractions[f.name+"/pg_tx_per_s"] = round3(f.v / b.PGTxPerS)
		res.Fractions[f.name+"/amqp_msgs_per_s"] = round3(f.v / b.AMQPMsgsPerS)
		res.Fractions[f.name+"/amqp_sync_msgs_per_s"] = round3(f.v / b.AMQPSyncMsgsPerS)
		res.Fractions[f.name+"/http_req_per_s"] = round3(f.v / b.HTTPReqPerS)
		res.Fractions[f.name+"/redis_ops_per_s"] = round3(f.v / b.RedisOpsPerS)
	}
	res.ElapsedS = round1(time.Since(log.t0).Seconds())
	if cfg.JSONPath != "" {
		out, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(cfg.JSONPath), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(cfg.JSONPath, append(out, '\n'), 0o644); err != nil {
			return nil, err
		}
		log.printf("wrote %s", cfg.JSONPath)
	}
	log.printf("done in %.1f s", res.ElapsedS)
	return res, nil
}

func rss(s *stack) map[string]float64 {
	out := map[string]float64{}
	for name, pid := range s.pids() {
		if v, ok := procStatusKB(pid, "VmHWM"); ok {
			out[name] = round1(v / 1024)
		}
	}
	return out
}

// machine describes where the benchmark ran.
func machine(ctx context.Context, s *stack) map[string]any {
	m := map[string]any{
		"cores":      runtime.NumCPU(),
		"go_version": runtime.Version(),
		"date":       time.Now().UTC().Format(time.RFC3339),
		"os_arch":    runtime.GOOS + "/" + runtime.GOARCH,
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu_model"] = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if v, ok := fileKB("/proc/meminfo", "MemTotal"); ok {
		m["mem_gb"] = round1(v / 1024 / 1024)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadavg_at_start"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	var pgv, sc, fsync string
	if err := s.pool.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('synchronous_commit'), current_setting('fsync')`).Scan(&pgv, &sc, &fsync); err == nil {
		m["postgres"] = fmt.Sprintf("%s (synchronous_commit=%s, fsync=%s)", pgv, sc, fsync)
	}
	if info, err := s.rdb.Info(ctx, "server", "persistence").Result(); err == nil {
		var ver, aof string
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
				ver = v
			}
			if v, ok := strings.CutPrefix(line, "aof_enabled:"); ok {
				aof = v
			}
		}
		m["redis"] = fmt.Sprintf("%s (aof_enabled=%s)", ver, aof)
	}
	// The code measured: the repository's commit, and whether the work tree
	// had changes to tracked files.
	if out, err := exec.CommandContext(ctx, "git", "-C", s.cfg.RepoRoot, "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit := strings.TrimSpace(string(out))
		if st, err := exec.CommandContext(ctx, "git", "-C", s.cfg.RepoRoot, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			commit += " (with uncommitted changes)"
		}
		if s.cfg.Bin != "" {
			commit = s.cfg.Bin + " (--stepflow-bin; the repository at " + commit + ")"
		}
		m["stepflow_commit"] = commit
	}
	if conn, err := amqp.Dial(s.cfg.AMQPURL); err == nil {
		if v, ok := conn.Properties["version"].(string); ok {
			m["rabbitmq"] = v
		}
		_ = conn.Close()
	}
	return m
}

// ---- the table ----

func printTable(w io.Writer, r *Result) {
	b := r.Baselines
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	frac := func(v, base float64, name string) string {
		return fmt.Sprintf("%.3f of %s (%.0f)", v/base, name, base)
	}
	fracs := func(v float64) string {
		if b == nil {
			return ""
		}
		return frac(v, b.PGTxPerS, "pg_tx_per_s") + "; " + frac(v, b.AMQPMsgsPerS, "amqp_msgs_per_s")
	}
	fmt.Fprintf(tw, "figure\tvalue\tvs baseline\n")
	fmt.Fprintf(tw, "function route\t%v\t%s\n", r.Config["function"], map[any]string{functionFunc: "func run --builder=host (func-go HTTP scaffolding)", functionStepflow: "stepflow function"}[r.Config["function"]])
	if r.W != nil {
		fmt.Fprintf(tw, "W steps/s (fan-out, %d runs × 11 steps)\t%.0f\t%s\n", r.W.Runs, r.W.StepsPerS, fracs(r.W.StepsPerS))
		fmt.Fprintf(tw, "W runs/s\t%.1f\t\n", r.W.RunsPerS)
		fmt.Fprintf(tw, "W step latency p50 / p95 / p99 ms\t%.1f / %.1f / %.1f\tenqueue → node done (finished_at); to commit start p50 %.1f\n",
			r.W.StepLatencyMS.P50, r.W.StepLatencyMS.P95, r.W.StepLatencyMS.P99, r.W.StepCommitLatencyMS.P50)
	}
	if r.B != nil {
		vs := fmt.Sprintf("workers alone %.0f items/s", r.B.WorkerItemsPerS)
		if f := fracs(r.B.ItemsPerS); f != "" {
			vs += "; " + f
		}
		fmt.Fprintf(tw, "B items/s (one run, %d noop workers, then gather)\t%.0f\t%s\n", r.B.Items, r.B.ItemsPerS, vs)
		fmt.Fprintf(tw, "B gather start / done after the last worker ms\t%.2f / %.2f\tthe last worker's node done → the gather's node started / done\n", r.B.GatherDelayMS, r.B.GatherDoneDelayMS)
	}
	if r.C != nil {
		fmt.Fprintf(tw, "C single run p50 / p90 ms (10 steps)\t%.2f / %.2f\tpolled every %.1f ms; committed p50 %.2f; step p50 %.2f ms\n",
			r.C.SingleRunMS.P50, r.C.SingleRunMS.P90, r.C.PollIntervalMS, r.C.SingleRunCommittedMS.P50, r.C.StepLatencyMS.P50)
		fmt.Fprintf(tw, "C steps/s (chain, %d runs × 10 steps)\t%.0f\t%s\n", r.C.Batch.Runs, r.C.StepsPerS, fracs(r.C.StepsPerS))
		fmt.Fprintf(tw, "C single: a step's ready → node start / node / → commit ms\t%.2f / %.3f / %.3f\tmeans over the chain's steps but the first; ready → node start p50 %.3f\n",
			r.C.StepBreakdown.ReadyToNodeStartMS, r.C.StepBreakdown.NodeMS, r.C.StepBreakdown.NodeDoneToCommitMS, r.C.StepBreakdown.ReadyToNodeStartP50MS)
	}
	fmt.Fprintf(tw, "bridge deliveries by outcome\t%v\t\n", r.BridgeOutcomes)
	fmt.Fprintf(tw, "mean ms: bridge's call to the function / its confirm wait / function commit\t%.3f / %.3f / %.3f\t\n",
		r.SpanMeansMS["bridge_function_request_mean_ms"], r.SpanMeansMS["bridge_publish_confirm_mean_ms"], r.SpanMeansMS["function_commit_mean_ms"])
	if r.L != nil {
		fmt.Fprintf(tw, "L growth ratio (last %d / first %d, %d nodes)\t%.3f\tmean step %.2f → %.2f ms; medians %.3f; fitted line %.3f\n", r.L.Window, r.L.Window, r.L.Nodes,
			r.L.GrowthRatio, r.L.FirstMeanMS, r.L.LastMeanMS, r.L.MedianGrowthRatio, r.L.FittedGrowthRatio)
	}
	if r.R != nil {
		fmt.Fprintf(tw, "R resume → next node done p50 / p90 ms (%d runs, one at a time)\t%.2f / %.2f\tPOST /api/v1/runs/{id}/resume answered in p50 %.2f ms\n",
			r.R.Runs, r.R.ResumeToNextDoneMS.P50, r.R.ResumeToNextDoneMS.P90, r.R.APICallMS.P50)
	}
	if b != nil {
		fmt.Fprintf(tw, "baseline amqp msgs/s (pipelined confirms)\t%.0f\t\n", b.AMQPMsgsPerS)
		ofW := func(name string, base float64) string {
			if r.W == nil {
				return ""
			}
			return frac(r.W.StepsPerS, base, name) + " (W)"
		}
		fmt.Fprintf(tw, "baseline amqp msgs/s (%v publishers, confirm each)\t%.0f\t%s\n", r.Config["concurrency"], b.AMQPSyncMsgsPerS, ofW("amqp_sync_msgs_per_s", b.AMQPSyncMsgsPerS))
		fmt.Fprintf(tw, "baseline pg tx/s\t%.0f\t\n", b.PGTxPerS)
		fmt.Fprintf(tw, "baseline redis ops/s\t%.0f\t\n", b.RedisOpsPerS)
		fmt.Fprintf(tw, "baseline http req/s\t%.0f\t%s\n", b.HTTPReqPerS, ofW("http_req_per_s", b.HTTPReqPerS))
	}
	if r.W != nil {
		fmt.Fprintf(tw, "peak RSS MB bridge / function (after W)\t%.1f / %.1f\t\n", r.RSSMB["bridge"], r.RSSMB["function"])
		fmt.Fprintf(tw, "CPU s during W: bridge / function / bench\t%.2f / %.2f / %.2f\tper step %.3f / %.3f / %.3f ms\n",
			r.CPUS["bridge"], r.CPUS["function"], r.CPUS["bench"], r.CPUMSPerStep["bridge"], r.CPUMSPerStep["function"], r.CPUMSPerStep["bench"])
		fmt.Fprintf(tw, "CPU s during W: postgres / redis / rabbitmq / other\t%.2f / %.2f / %.2f / %.2f\tper step %.3f / %.3f / %.3f ms\n",
			r.CPUS["postgres"], r.CPUS["redis"], r.CPUS["rabbitmq"], r.CPUS["other"], r.CPUMSPerStep["postgres"], r.CPUMSPerStep["redis"], r.CPUMSPerStep["rabbitmq"])
		if b != nil && b.CPUMSPerOp != nil {
			op := b.CPUMSPerOp
			fmt.Fprintf(tw, "postgres CPU ms: per W step / per baseline tx\t%.3f / %.3f\t%.1f×\n", r.CPUMSPerStep["postgres"], op["postgres"]["postgres"], r.CPUMSPerStep["postgres"]/op["postgres"]["postgres"])
			fmt.Fprintf(tw, "rabbitmq CPU ms: per W step / per baseline msg (confirm each)\t%.3f / %.3f\t%.1f×\n", r.CPUMSPerStep["rabbitmq"], op["amqp_sync"]["rabbitmq"], r.CPUMSPerStep["rabbitmq"]/op["amqp_sync"]["rabbitmq"])
		}
		fmt.Fprintf(tw, "machine busy during W\t%.2f of %.2f CPU s\t%.0f%%\n", r.CPUS["machine"], r.CPUS["wall_s"]*float64(r.Machine["cores"].(int)),
			100*r.CPUS["machine"]/(r.CPUS["wall_s"]*float64(r.Machine["cores"].(int))))
	}
	tw.Flush()
	if r.W != nil && r.CPUS["other"] > 0.1*r.CPUS["machine"] {
		fmt.Fprintf(w, "\nWARNING: other processes used %.1f of the %.1f busy CPU seconds during W: the machine was not quiet, every figure is lower than it would be.\n",
			r.CPUS["other"], r.CPUS["machine"])
	}
	var keys []string
	for k := range r.Machine {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(w)
	for _, k := range keys {
		fmt.Fprintf(w, "%s: %v\n", k, r.Machine[k])
	}
}
