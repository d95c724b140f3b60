package main

// The stack under test: the stepflow binary built from this repository, its
// own tables, queue and Redis prefix, and the function and bridge started as
// separate processes, as they are deployed.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/schema"
)

type stack struct {
	cfg *config
	log *logger

	id          string // 8 hex digits naming everything this run creates
	dir         string // binary and process logs
	bin         string
	tables      schema.Tables
	queue       string
	redisPrefix string

	pool *pgxpool.Pool // this program's own queries
	rdb  *redis.Client

	fnAddr, brAddr string
	fn, br         *process
	// With --function func: fn is `func run`, fnBin the function binary it
	// compiled and started (its child), whose CPU and memory are the
	// function's.
	fnBin  int
	failed bool // keep the logs
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newStack(ctx context.Context, cfg *config, log *logger) (*stack, error) {
	s := &stack{cfg: cfg, log: log, id: randHex(4)}
	prefix := "bench_" + s.id + "_"
	s.tables = schema.Tables{
		Contexts:    prefix + "contexts",
		Statuses:    prefix + "statuses",
		Steps:       prefix + "steps",
		Blueprints:  prefix + "blueprints",
		DeadLetters: prefix + "dead_letters",
	}
	s.queue = "bench-" + s.id
	s.redisPrefix = "bench:" + s.id + ":"
	dir, err := os.MkdirTemp("", "stepflow-bench-"+s.id+"-")
	if err != nil {
		return nil, err
	}
	s.dir = dir
	s.pool, err = pgxpool.New(ctx, cfg.PostgresURL)
	if err != nil {
		return s, fmt.Errorf("postgres: %w", err)
	}
	if err := s.pool.Ping(ctx); err != nil {
		return s, fmt.Errorf("postgres %s: %w", cfg.PostgresURL, err)
	}
	ropts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return s, fmt.Errorf("redis url: %w", err)
	}
	s.rdb = redis.NewClient(ropts)
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return s, fmt.Errorf("redis %s: %w", cfg.RedisURL, err)
	}
	conn, err := amqp.Dial(cfg.AMQPURL)
	if err != nil {
		return s, fmt.Errorf("rabbitmq: %w", err)
	}
	_ = conn.Close()
	return s, nil
}

// build compiles ./cmd/stepflow of the repository into the stack's folder.
func (s *stack) build(ctx context.Context) error {
	if s.cfg.Bin != "" {
		bin, err := filepath.Abs(s.cfg.Bin)
		if err != nil {
			return err
		}
		if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("--stepflow-bin %s: not an executable file", s.cfg.Bin)
		}
		s.bin = bin
		s.log.printf("measuring %s (--stepflow-bin)", bin)
		return nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goBin = filepath.Join(root, "bin", "go")
		} else {
			goBin = "/usr/local/go/bin/go"
		}
	}
	s.bin = filepath.Join(s.dir, "stepflow")
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", s.bin, "./cmd/stepflow")
	cmd.Dir = s.cfg.RepoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build ./cmd/stepflow: %w\n%s", err, out)
	}
	s.log.printf("built %s in %.1f s", s.bin, time.Since(t0).Seconds())
	return nil
}

// env is the processes' environment: this one's, without OpenTelemetry
// settings (tracing is off as deployed by default), plus the stack's.
func (s *stack) env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"LOG_LEVEL=warn",
		"POSTGRES_URL="+s.cfg.PostgresURL,
		"REDIS_URL="+s.cfg.RedisURL,
		"RABBITMQ_URL="+s.cfg.AMQPURL,
		"REDIS_PREFIX="+s.redisPrefix,
		"STEPFLOW_QUEUE="+s.queue,
		"STEPFLOW_CONTEXTS_TABLE="+s.tables.Contexts,
		"STEPFLOW_STATUSES_TABLE="+s.tables.Statuses,
		"STEPFLOW_STEPS_TABLE="+s.tables.Steps,
		"STEPFLOW_BLUEPRINTS_TABLE="+s.tables.Blueprints,
		"STEPFLOW_DEAD_LETTERS_TABLE="+s.tables.DeadLetters,
	)
}

// migrate creates the stack's tables with `stepflow migrate`.
func (s *stack) migrate(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, s.bin, "migrate")
	cmd.Env = s.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("stepflow migrate: %w\n%s", err, out)
	}
	s.log.printf("migrated tables %s*", "bench_"+s.id+"_")
	return nil
}

type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
	// group: the process leads its own process group (func run and the
	// function it starts), stopped with SIGINT.
	group bool
	// logFrom: log bytes written before the process was ready (func run's
	// compile output), not counted by warnings.
	logFrom int64
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (s *stack) spawn(name string, args []string, env []string) (*process, error) {
	return s.spawnBin(name, s.bin, args, env, false)
}

func (s *stack) spawnBin(name, bin string, args []string, env []string, group bool) (*process, error) {
	logPath := filepath.Join(s.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	// The processes die with this program, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: group}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{}), group: group}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start runs the function (`stepflow function`, or `func run` with
// --function func) and `stepflow bridge` and waits until both report ready.
func (s *stack) start(ctx context.Context) error {
	var err error
	if s.fnAddr, err = freeAddr(); err != nil {
		return err
	}
	if s.brAddr, err = freeAddr(); err != nil {
		return err
	}
	t0 := time.Now()
	fnEnv := s.env("POSTGRES_MAX_CONNS=" + strconv.Itoa(s.cfg.PGConns))
	fnReady := 30 * time.Second
	if s.cfg.Function == functionFunc {
		// func run compiles the function (go mod tidy, go build) before it
		// starts it; the function reads the stack's settings from the
		// environment func run passes on.
		s.fn, err = s.spawnBin("function", s.cfg.FuncBin, []string{"run", "--builder=host", "--json",
			"--address", s.fnAddr, "--path", s.cfg.RepoRoot}, fnEnv, true)
		fnReady = 5 * time.Minute
	} else {
		s.fn, err = s.spawn("function", []string{"function", "--listen-address", s.fnAddr}, fnEnv)
	}
	if err != nil {
		return err
	}
	s.br, err = s.spawn("bridge", []string{"bridge",
		"--function-url", "http://" + s.fnAddr + "/",
		"--http-address", s.brAddr,
		"--prefetch", strconv.Itoa(s.cfg.Prefetch),
		"--concurrency", strconv.Itoa(s.cfg.Concurrency),
		"--batch-size", strconv.Itoa(s.cfg.BatchSize),
		"--shutdown-grace", "5s",
	}, s.env())
	if err != nil {
		return err
	}
	if err := s.waitReady(ctx, s.fn, "http://"+s.fnAddr+"/health/readiness", fnReady); err != nil {
		return err
	}
	if err := s.waitReady(ctx, s.br, "http://"+s.brAddr+"/health/readiness", 30*time.Second); err != nil {
		return err
	}
	fnPid := s.fn.pid()
	if s.cfg.Function == functionFunc {
		if s.fnBin, err = onlyChild(fnPid); err != nil {
			return fmt.Errorf("the function func run started: %w", err)
		}
		if st, err := os.Stat(s.fn.log); err == nil {
			s.fn.logFrom = st.Size()
		}
		fnPid = s.fnBin
	}
	s.log.printf("function (%s, pid %d, %s) and bridge (pid %d) ready in %.2f s", s.cfg.Function, fnPid, s.fnAddr, s.br.pid(), time.Since(t0).Seconds())
	return nil
}

// onlyChild returns the one child process of pid (func run's function).
func onlyChild(pid int) (int, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil {
		return 0, err
	}
	var kids []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	if len(kids) != 1 {
		return 0, fmt.Errorf("process %d has %d children (%v), want 1", pid, len(kids), kids)
	}
	return kids[0], nil
}

func (s *stack) waitReady(ctx context.Context, p *process, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	hc := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready (%v); log: %s\n%s", p.name, p.err, p.log, tail(p.log, 20))
		}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready at %s within %s; log: %s\n%s", p.name, url, within, p.log, tail(p.log, 20))
}

// alive fails when the function or the bridge has exited.
func (s *stack) alive() error {
	for _, p := range []*process{s.fn, s.br} {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited during the benchmark (%v); log: %s\n%s", p.name, p.err, p.log, tail(p.log, 20))
		}
	}
	return nil
}

func (s *stack) pids() map[string]int {
	m := map[string]int{}
	if s.fn != nil && !s.fn.exited() {
		m["function"] = s.fn.pid()
		if s.fnBin != 0 {
			m["function"], m["func_cli"] = s.fnBin, s.fn.pid()
		}
	}
	if s.br != nil && !s.br.exited() {
		m["bridge"] = s.br.pid()
	}
	return m
}

// stop sends SIGTERM to the bridge, then the function, and waits for them
// (SIGKILL after 10 s). func run gets SIGINT, which it passes on to the
// function before it removes its .func/runs folder; its process group is
// killed if it does not stop.
func (s *stack) stop() {
	for _, p := range []*process{s.br, s.fn} {
		if p == nil || p.exited() {
			continue
		}
		sig := syscall.SIGTERM
		if p.group {
			sig = syscall.SIGINT
		}
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			if p.group {
				_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
			}
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// warnings returns the log lines the processes wrote (they log at warn).
func (s *stack) warnings() map[string]int {
	out := map[string]int{}
	for _, p := range []*process{s.fn, s.br} {
		if p == nil {
			continue
		}
		b, err := os.ReadFile(p.log)
		if err != nil {
			continue
		}
		b = b[min(p.logFrom, int64(len(b))):]
		out[p.name] = len(strings.Split(strings.TrimSpace(string(b)), "\n"))
		if len(strings.TrimSpace(string(b))) == 0 {
			out[p.name] = 0
		}
	}
	return out
}

// cleanup stops the processes and removes what the run created: queues,
// tables (unless --keep), Redis keys, and the temporary folder (unless the
// run failed: then the process logs stay).
func (s *stack) cleanup(extraTables []string, extraQueues []string) {
	s.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var errs []error
	if conn, err := amqp.Dial(s.cfg.AMQPURL); err == nil {
		queues := append(jobqueue.TopologyQueues(s.queue), extraQueues...)
		for _, q := range queues {
			ch, err := conn.Channel()
			if err != nil {
				errs = append(errs, err)
				break
			}
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				errs = append(errs, fmt.Errorf("delete queue %s: %w", q, err))
			}
			_ = ch.Close()
		}
		_ = conn.Close()
	} else {
		errs = append(errs, err)
	}
	if s.pool != nil {
		q := s.tables.Quoted()
		drop := []string{q.Steps, q.Statuses, q.Contexts, q.Blueprints, q.DeadLetters}
		for _, t := range extraTables {
			drop = append(drop, pgx.Identifier{t}.Sanitize())
		}
		if s.cfg.Keep {
			s.log.printf("--keep: tables %s* kept", "bench_"+s.id+"_")
			drop = drop[5:]
		}
		if len(drop) > 0 {
			if _, err := s.pool.Exec(ctx, "DROP TABLE IF EXISTS "+strings.Join(drop, ", ")); err != nil {
				errs = append(errs, fmt.Errorf("drop tables: %w", err))
			}
		}
		if !s.cfg.Keep {
			if _, err := s.pool.Exec(ctx, `DO $$ BEGIN
  IF to_regclass('`+schema.MigrationsTable+`') IS NOT NULL THEN
    DELETE FROM `+schema.MigrationsTable+` WHERE tables = '`+s.tables.Statuses+`';
  END IF;
END $$`); err != nil {
				errs = append(errs, fmt.Errorf("forget migrations: %w", err))
			}
		}
		s.pool.Close()
	}
	if s.rdb != nil {
		iter := s.rdb.Scan(ctx, 0, s.redisPrefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 1000 {
				_ = s.rdb.Del(ctx, keys...).Err()
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			_ = s.rdb.Del(ctx, keys...).Err()
		}
		if err := iter.Err(); err != nil {
			errs = append(errs, fmt.Errorf("redis cleanup: %w", err))
		}
		_ = s.rdb.Close()
	}
	if err := errors.Join(errs...); err != nil {
		s.log.printf("cleanup: %v", err)
	}
	if s.failed {
		s.log.printf("process logs kept in %s", s.dir)
	} else if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// queueDepths returns the ready messages of every queue of the stack's
// topology.
func (s *stack) queueDepths() (map[string]int, error) {
	conn, err := amqp.Dial(s.cfg.AMQPURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	out := map[string]int{}
	for _, q := range jobqueue.TopologyQueues(s.queue) {
		ch, err := conn.Channel()
		if err != nil {
			return nil, err
		}
		info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err == nil {
			out[q] = info.Messages
			_ = ch.Close()
		}
	}
	return out, nil
}

// scrape reads the Prometheus text of http://addr/metrics: every sample
// by its name with labels (nil when it does not answer).
func scrape(ctx context.Context, addr string) map[string]float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// bridgeOutcomes reads the bridge's deliveries by outcome from its
// /metrics (nil when it does not answer).
func (s *stack) bridgeOutcomes(ctx context.Context) map[string]float64 {
	const prefix = `stepflow_bridge_deliveries_total{outcome="`
	out := map[string]float64{}
	for k, v := range scrape(ctx, s.brAddr) {
		if name, ok := strings.CutPrefix(k, prefix); ok && v > 0 {
			out[strings.TrimSuffix(name, `"}`)] = v
		}
	}
	return out
}

// spanMeans are the mean durations (ms) of the bridge's and the
// function's histograms of a step's parts, over the whole benchmark: the
// bridge's call to the function, its wait for publish confirms, and the
// function's node and commit.
func (s *stack) spanMeans(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	for _, m := range []struct {
		addr, metric, name string
	}{
		{s.brAddr, "stepflow_bridge_function_request_seconds", "bridge_function_request"},
		{s.brAddr, "stepflow_bridge_publish_confirm_seconds", "bridge_publish_confirm"},
		{s.fnAddr, "stepflow_function_commit_seconds", "function_commit"},
	} {
		samples := scrape(ctx, m.addr)
		var sum, n float64
		for k, v := range samples {
			switch {
			case strings.HasPrefix(k, m.metric+"_sum"):
				sum += v
			case strings.HasPrefix(k, m.metric+"_count"):
				n += v
			}
		}
		if n > 0 {
			out[m.name+"_mean_ms"] = round3(sum / n * 1000)
		}
	}
	return out
}
