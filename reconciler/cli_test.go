package reconciler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/reconciler"
	"github.com/stepflow/stepflow/workflow"
)

// `stepflow reconcile --once` (the CronJob form) against tables holding
// stalled, healthy and dead-lettered runs prints the pass's stats as JSON.
func TestReconcileOnceCommandPrintsStats(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	bin := filepath.Join(t.TempDir(), "stepflow")
	buildCtx, cancel := context.WithTimeout(tb.ctx, 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(buildCtx, "go", "build", "-o", bin, "../cmd/stepflow")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/stepflow: %v\n%s", err, out)
	}

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
	cmd.Env = append(os.Environ(),
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
		"LOG_LEVEL=warn",
	)
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
