package reconciler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

var stepflowBuild struct {
	once sync.Once
	dir  string
	err  error
	out  []byte
}

// stepflowBinary builds cmd/stepflow once for the package's tests.
func stepflowBinary(t *testing.T) string {
	t.Helper()
	b := &stepflowBuild
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "stepflow-bin-"); b.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		b.out, b.err = exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(b.dir, "stepflow"), "../cmd/stepflow").CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("go build ../cmd/stepflow: %v\n%s", b.err, b.out)
	}
	return filepath.Join(b.dir, "stepflow")
}

// commandEnv is the environment of a stepflow command over the test's
// services, tables, queue and Redis prefix, plus extra.
func (tb *testBundle) commandEnv(extra ...string) []string {
	return append(append(os.Environ(),
		"POSTGRES_URL="+testenv.PostgresURL(),
		"REDIS_URL="+testenv.RedisURL(),
		"RABBITMQ_URL="+testenv.RabbitMQURL(),
		"STEPFLOW_QUEUE="+tb.queue,
		"REDIS_PREFIX="+tb.redisPrefix,
		"STEPFLOW_CONTEXTS_TABLE="+tb.tables.Contexts,
		"STEPFLOW_STATUSES_TABLE="+tb.tables.Statuses,
		"STEPFLOW_STEPS_TABLE="+tb.tables.Steps,
		"STEPFLOW_BLUEPRINTS_TABLE="+tb.tables.Blueprints,
		"STEPFLOW_DEAD_LETTERS_TABLE="+tb.tables.DeadLetters,
		"RECONCILE_THRESHOLD="+staleThreshold.String(),
	), extra...)
}

// `stepflow reconcile --once` (the CronJob form) against tables holding
// stalled, healthy and dead-lettered runs prints the pass's stats as JSON.
func TestReconcileOnceCommandPrintsStats(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	bin := stepflowBinary(t)

	// Two stalled runs missing b, one healthy run, one run whose b was
	// dead-lettered (stalled too, but failed by its dead letter first).
	var want []wire.Job
	for range 2 {
		runID := tb.chainMissingB()
		tb.age(runID)
		want = append(want, job(runID, "chain", "b", 1))
	}
	healthy := tb.chainMissingB()
	deadRun := tb.chainMissingB()
	tb.age(deadRun)
	tb.publishDeadLetter(jobDeadLetter(job(deadRun, "chain", "b", 1), "422", "unknown node"))

	cmd := exec.CommandContext(tb.ctx, bin, "reconcile", "--once")
	cmd.Env = tb.commandEnv("LOG_LEVEL=warn")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("stepflow reconcile --once: %v\nstdout: %s\nstderr: %s", err, stdout.Bytes(), stderr.Bytes())
	}

	var keys map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &keys); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout.Bytes())
	}
	for _, k := range []string{"stalledRuns", "reconciledRuns", "failedRuns"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("stats JSON %s lacks %q", stdout.Bytes(), k)
		}
	}
	var st reconciler.Stats
	dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("stats JSON %s: %v", stdout.Bytes(), err)
	}
	if w := (reconciler.Stats{StalledRuns: 2, ReconciledRuns: 2, Republished: 2, DeadLetters: 1, DeadLetterRuns: 1}); st != w {
		t.Errorf("stats %+v, want %+v\nstderr: %s", st, w, stderr.Bytes())
	}

	republished := tb.takeQueued()
	assertJobs(t, "republished by the command", republished, want...)
	tb.assertNothingQueued()
	if r := tb.run(healthy); r.Status != workflow.RunRunning {
		t.Errorf("healthy run is %s", r.Status)
	}
	if r := tb.run(deadRun); r.Status != workflow.RunFailed {
		t.Errorf("dead-lettered run is %s, want failed", r.Status)
	}
	tb.deliverAll(republished...)
	for _, j := range want {
		tb.assertCompleted(j.RunID, chainOutputs)
	}
	if ids := jobIDs(republished); slices.Contains(ids, healthy+":b:1") || slices.Contains(ids, deadRun+":b:1") {
		t.Errorf("republished %q includes a run that was not to be repaired", ids)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if stepflowBuild.dir != "" {
		_ = os.RemoveAll(stepflowBuild.dir)
	}
	os.Exit(code)
}

// `stepflow reconciler` (the long-lived service) repairs a stalled run on
// its schedule, serves its health and metrics on its HTTP address, and
// stops on SIGTERM.
func TestReconcilerCommandServes(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bin := stepflowBinary(t)
	runID := tb.chainMissingB()
	tb.age(runID)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // the command listens there
	cmd := exec.CommandContext(tb.ctx, bin, "reconciler")
	cmd.Env = tb.commandEnv("RECONCILE_SCHEDULE=@every 1s", "RECONCILER_HTTP_ADDRESS="+addr)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // refused once it has exited
		<-exited
	})

	// The pass publishes the missing job before it counts the run.
	base := "http://" + addr
	err = testenv.Poll(t.Context(), 30*time.Second, 50*time.Millisecond, func() (bool, error) {
		select {
		case <-exited:
			t.Fatalf("stepflow reconciler exited: %v\n%s", waitErr, logs.Bytes())
		default:
		}
		return strings.Contains(body(base+"/metrics"), `stepflow_reconcile_runs_total{result="reconciled"} 1`), nil
	})
	if err != nil {
		t.Fatalf("no run reconciled on a 1s schedule: %v; /metrics:\n%s", err, body(base+"/metrics"))
	}
	if b := body(base + "/health/readiness"); b != "READY" {
		t.Errorf("readiness %q, want READY", b)
	}
	if b := body(base + "/health/liveness"); b != "ALIVE" {
		t.Errorf("liveness %q, want ALIVE", b)
	}
	assertJobs(t, "republished by the service", tb.takeQueued(), job(runID, "chain", "b", 1))

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("stepflow reconciler after SIGTERM: %v\n%s", waitErr, logs.Bytes())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stepflow reconciler still running 30s after SIGTERM")
	}
	if !strings.Contains(logs.String(), "reconciler stopped") {
		t.Errorf("logs lack the stop:\n%s", logs.Bytes())
	}
}

// body is what GET url answers; "" when it does not answer.
func body(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
