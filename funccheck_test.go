//go:build funccheck

package stepflow_test

// The function that `func run --builder=host` serves, with a real bridge in
// front of it. This file is built only with -tags funccheck: its home is
// `make func-check` (scripts/func-check.sh), which builds the func CLI,
// starts `func run`, migrates the default tables and runs
//
//	STEPFLOW_FUNC_URL=http://HOST:PORT go test -tags funccheck -run TestFuncRun -count=1 .
//
// STEPFLOW_FUNC_URL is the running function; STEPFLOW_BIN the stepflow binary
// (default bin/stepflow, which `make build` makes). The function uses the
// default tables and Redis prefix; the test uses a queue of its own.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/schema"
)

const (
	funcCheckRuns        = 120
	funcCheckConcurrency = 8
	funcCheckRequests    = 24
)

// 120 fan-out runs (examples/fanout.json, 11 steps each) through a bridge
// at concurrency 8 with its default batches, in front of `func run`: every
// run completes, no request times out or is retried, the function reads
// the batches (the bridge never falls back to one job per request), 24
// concurrent requests are all answered, and /metrics answers.
func TestFuncRunBehindBridge(t *testing.T) {
	fnURL := strings.TrimRight(os.Getenv("STEPFLOW_FUNC_URL"), "/")
	if fnURL == "" {
		t.Fatal("STEPFLOW_FUNC_URL is not set: run this test through make func-check, which starts func run")
	}
	bin := os.Getenv("STEPFLOW_BIN")
	if bin == "" {
		bin = filepath.Join("bin", "stepflow")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	tables := schema.DefaultTables()
	queue := "stepflow-func-check-" + testenv.RandomHex(4)
	amqpConn := testenv.RabbitMQ(t)
	t.Cleanup(func() { testenv.DeleteQueues(t, amqpConn, jobqueue.TopologyQueues(queue)...) })

	br := startBridge(t, bin, fnURL, queue)

	cl, err := client.New(ctx, client.Config{PostgresURL: testenv.PostgresURL(), AMQPURL: testenv.RabbitMQURL(), Queue: queue, Tables: tables})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	bp := readBlueprint(t, "fanout")
	prefix := "func-check-" + testenv.RandomHex(4) + "-"
	t0 := time.Now()
	var wg sync.WaitGroup
	startErrs := make(chan error, funcCheckRuns)
	next := make(chan int, funcCheckRuns)
	for i := range funcCheckRuns {
		next <- i
	}
	close(next)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				if _, err := cl.Start(ctx, bp, map[string]any{"k": i}, client.StartOptions{RunID: prefix + strconv.Itoa(i)}); err != nil {
					startErrs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(startErrs)
	for err := range startErrs {
		t.Fatalf("start: %v", err)
	}
	pool := testenv.Pool(t, 2)
	waitCompleted(t, ctx, pool, tables, prefix, br)
	t.Logf("%d fan-out runs (%d steps) completed in %.2f s through the bridge and func run", funcCheckRuns, funcCheckRuns*11, time.Since(t0).Seconds())

	// The bridge's view: batches sent, none refused, nothing retried or
	// dead-lettered, nothing logged at warn or above.
	m := scrape(t, br.url+"/metrics")
	if v := m.value(t, "stepflow_bridge_batches_refused"); v != 0 {
		t.Errorf("stepflow_bridge_batches_refused = %v, want 0: func run refused a batch", v)
	}
	for _, outcome := range []string{"retried", "dead_lettered", "requeued"} {
		if v := m.value(t, `stepflow_bridge_deliveries_total{outcome="`+outcome+`"}`); v != 0 {
			t.Errorf("%v deliveries %s, want 0 (a request timed out or failed)", v, outcome)
		}
	}
	if got, want := m.value(t, `stepflow_bridge_deliveries_total{outcome="reply_published"}`)+m.value(t, `stepflow_bridge_deliveries_total{outcome="ack"}`)+m.value(t, `stepflow_bridge_deliveries_total{outcome="handed_on_copy"}`), float64(funcCheckRuns*11); got != want {
		t.Errorf("%v deliveries settled with the function's answer or as the copy of a job handed on, want %v (one per step)", got, want)
	}
	requests, single := m.value(t, "stepflow_bridge_batch_size_count"), m.value(t, `stepflow_bridge_batch_size_bucket{le="1"}`)
	if requests == single {
		t.Errorf("all %v requests held one job: the bridge sent no batch", requests)
	}
	t.Logf("bridge: %v requests for %d jobs, %v of them with more than one job", requests, funcCheckRuns*11, requests-single)
	if lines := br.logLines(); len(lines) > 0 {
		t.Errorf("the bridge logged at warn or above:\n%s", strings.Join(lines, "\n"))
	}

	// 24 requests at once straight to func run, each answered.
	concurrentRequests(t, ctx, fnURL)

	// The function's /metrics: the step function's figures, batches read.
	fm := scrape(t, fnURL+"/metrics")
	if jobs, reqs := fm.value(t, "stepflow_function_request_jobs_sum"), fm.value(t, "stepflow_function_request_jobs_count"); jobs <= reqs {
		t.Errorf("the function read %v jobs in %v requests: no batch reached it", jobs, reqs)
	}
	if v := fm.value(t, "go_goroutines"); v <= 0 {
		t.Errorf("go_goroutines = %v", v)
	}
}

type bridgeProc struct {
	url  string
	cmd  *exec.Cmd
	log  string
	done chan error
}

// logLines returns the lines the bridge logged (at LOG_LEVEL=warn: warnings
// and errors only).
func (b *bridgeProc) logLines() []string {
	data, _ := os.ReadFile(b.log)
	var out []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			out = append(out, sc.Text())
		}
	}
	return out
}

func startBridge(t *testing.T, bin, fnURL, queue string) *bridgeProc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logPath := filepath.Join(t.TempDir(), "bridge.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "bridge",
		"--function-url", fnURL+"/",
		"--http-address", addr,
		"--concurrency", strconv.Itoa(funcCheckConcurrency),
		"--shutdown-grace", "5s")
	cmd.Env = append(os.Environ(), "STEPFLOW_QUEUE="+queue, "LOG_LEVEL=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s bridge: %v", bin, err)
	}
	b := &bridgeProc{url: "http://" + addr, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { b.done <- cmd.Wait(); logFile.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-b.done
		}
	})
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		if resp, err := http.Get(b.url + "/health/readiness"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b
			}
		}
		select {
		case err := <-b.done:
			t.Fatalf("the bridge exited before it was ready (%v):\n%s", err, strings.Join(b.logLines(), "\n"))
		case <-deadline:
			t.Fatalf("the bridge was not ready within 30 s:\n%s", strings.Join(b.logLines(), "\n"))
		case <-tick.C:
		}
	}
}

// waitCompleted polls the statuses table until every run of prefix has
// completed; a run that ends otherwise, the bridge exiting, or two minutes
// without completing them all fail the test.
func waitCompleted(t *testing.T, ctx context.Context, pool *pgxpool.Pool, tables schema.Tables, prefix string, br *bridgeProc) {
	t.Helper()
	q := `SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status NOT IN ('running', 'completed')) FROM ` +
		tables.Quoted().Statuses + ` WHERE run_id LIKE $1`
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(2 * time.Minute)
	for {
		var done, bad int
		if err := pool.QueryRow(ctx, q, prefix+"%").Scan(&done, &bad); err != nil {
			t.Fatal(err)
		}
		if bad > 0 {
			t.Fatalf("%d runs ended not completed", bad)
		}
		if done == funcCheckRuns {
			return
		}
		select {
		case err := <-br.done:
			t.Fatalf("the bridge exited (%v) with %d of %d runs completed:\n%s", err, done, funcCheckRuns, strings.Join(br.logLines(), "\n"))
		case <-deadline:
			t.Fatalf("%d of %d runs completed within 2 minutes:\n%s", done, funcCheckRuns, strings.Join(br.logLines(), "\n"))
		case <-tick.C:
		}
	}
}

// concurrentRequests sends 24 requests at once, a third each binary,
// structured and batched, for runs that do not exist: each must be
// answered (422, or a batch of 422 results) within 10 s.
func concurrentRequests(t *testing.T, ctx context.Context, fnURL string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, funcCheckRequests)
	for i := range funcCheckRequests {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			j := wire.Job{RunID: fmt.Sprintf("func-check-none-%d-%s", i, testenv.RandomHex(3)), BlueprintID: "fanout", NodeID: "start", Attempt: 1}
			var r reply
			var err error
			switch i % 3 {
			case 0:
				r, err = postBinary(t, ctx, fnURL+"/", jobEvent(t, j))
			case 1:
				r, err = postStructured(t, ctx, fnURL+"/", jobEvent(t, j))
			default:
				var results []wire.Result
				r, results, err = postBatch(t, ctx, fnURL+"/", []event.Event{jobEvent(t, j)})
				if err == nil && (len(results) != 1 || results[0].Status != http.StatusUnprocessableEntity) {
					err = fmt.Errorf("batch results %+v, want one 422", results)
				}
				if err == nil {
					r.status = http.StatusUnprocessableEntity
				}
			}
			switch {
			case err != nil:
				errs <- fmt.Errorf("request %d: %w", i, err)
			case r.status != http.StatusUnprocessableEntity:
				errs <- fmt.Errorf("request %d: %d %s, want 422", i, r.status, r.body)
			}
		})
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		t.Error(err)
		n++
	}
	t.Logf("%d concurrent requests to func run, %d answered", funcCheckRequests, funcCheckRequests-n)
}

// metrics is a scraped Prometheus text exposition: series → value.
type metrics map[string]float64

func scrape(t *testing.T, url string) metrics {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	m := metrics{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

func (m metrics) value(t *testing.T, series string) float64 {
	t.Helper()
	v, ok := m[series]
	if !ok {
		t.Errorf("metric %s not exported", series)
	}
	return v
}
