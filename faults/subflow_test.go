package faults

// A crash between a child run's end and its parent's continuation.

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// The child's finishing commit names the parent step's continuation, which
// the function's answer carries to the bridge to publish. Here the bridge
// is frozen (SIGSTOP) while the child's last slow node runs, so the
// function commits the child's end and answers into a socket nobody
// reads; then the bridge is killed: the answer, and with it the
// continuation, is gone. Restarted, the bridge redelivers the child's last
// job (it was never acked), and the reconciler finds the parent waiting
// for a child that has finished. The parent continues exactly once: its
// subflow step commits once with the child's output, the node after it
// runs once, and the run ends with the local runner's context.
func TestSubflowCrashBeforeContinuation(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs(filepath.Join("testdata", "children"))
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, caseOptions{env: []string{"BLUEPRINTS_DIR=" + dir}})
	parent := &run{id: "subflow-crash-" + testenv.RandomHex(4), bp: loadBlueprint(t, "subflow.json"), input: map[string]any{"order": 7.0},
		children: map[string]*workflow.Blueprint{"crash-child": loadBlueprint(t, filepath.Join("children", "crash-child.json"))}}
	expect(t, []*run{parent})
	if _, err := b.client.Start(b.ctx, parent.bp, parent.input, client.StartOptions{RunID: parent.id}); err != nil {
		t.Fatal(err)
	}
	child := workflow.ChildRunID(parent.id, "sub", 1)
	q := b.tables.Quoted()

	testenv.Eventually(t, runsDeadline, "the child's slow node to run (its lease taken)", func() bool {
		n, err := b.rdb.Exists(b.ctx, wire.LeaseKey(b.redisPrefix, child, "slow")).Result()
		return err == nil && n == 1
	})
	if err := syscall.Kill(b.br.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP bridge: %v", err)
	}
	t.Log("bridge frozen while the child's slow node runs")
	testenv.Eventually(t, 30*time.Second, "the child run to complete (the function's commit)", func() bool {
		return b.runStatus(child) == workflow.RunCompleted
	})
	if st := b.stepState(parent.id, "sub"); st != workflow.StepAwaitingChild {
		t.Fatalf("the parent's sub step is %s once the child completed with the bridge frozen; want awaiting_child (not continued yet)", st)
	}
	b.br.Kill9() // a stopped process takes SIGKILL: the answer carrying the continuation dies with it
	t.Log("bridge killed: the child has ended, its parent's continuation is lost")
	b.br.Restart()

	testenv.Eventually(t, runsDeadline, "the parent to complete", func() bool { return b.runStatus(parent.id).Final() })
	b.waitQuiet()
	for _, p := range b.stopOrder() {
		p.Stop()
	}
	depths, err := b.queueDepths()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range jobqueue.TopologyQueues(b.queue) {
		if d := depths[name]; name != jobqueue.DeadLetterQueue(b.queue) && d.Messages != 0 {
			t.Errorf("queue %s holds %d messages after every process stopped", name, d.Messages)
		}
	}
	b.checkDeadLetters(b.ctx, nil)

	// The parent: completed once, with the local runner's context; its
	// steps as the local runner's, each committed by one attempt.
	var status string
	var data map[string]any
	if err := b.pool.QueryRow(b.ctx, `SELECT status, status_data FROM `+q.Statuses+` WHERE run_id = $1`, parent.id).Scan(&status, &data); err != nil {
		t.Fatal(err)
	}
	if status != string(workflow.RunCompleted) {
		t.Fatalf("parent %s ended %s", parent.id, status)
	}
	if g, w := canonical(data), canonical(parent.expected.Context); g != w {
		t.Errorf("the parent's context differs from the local runner's:\n got  %s\n want %s", g, w)
	}
	lg, err := readLogs(b.stopOrder()...)
	if err != nil {
		t.Fatal(err)
	}
	b.checkSteps(b.ctx, []*run{parent}, lg)
	for _, node := range []string{"sub", "after"} {
		if n := lg.succeeded(parent.id, node); n != 1 {
			t.Errorf("the parent's %s succeeded in %d attempts, want 1 (a continuation run twice)", node, n)
		}
	}
	if n := len(lg.attempts[stepKey{parent.id, "after"}]); n != 1 {
		t.Errorf("the parent's after ran %d times, want once", n)
	}
	// The child: completed once, each of its steps succeeded at attempt 1,
	// slow's node run once (the crash came after its commit).
	rows, err := b.pool.Query(b.ctx, `SELECT node_id || ' ' || state || ' ' || attempts FROM `+q.Steps+` WHERE run_id = $1 ORDER BY node_id`, child)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := "[a succeeded 1 slow succeeded 1]"; fmt.Sprint(steps) != want {
		t.Errorf("the child's steps %v, want %s", steps, want)
	}
	if n := len(lg.attempts[stepKey{child, "slow"}]); n != 1 {
		t.Errorf("the child's slow ran %d times, want once", n)
	}
	if st := b.runStatus(child); st != workflow.RunCompleted {
		t.Errorf("the child run is %s, want completed", st)
	}
	t.Logf("log counters (all incarnations):\n%s", lg.summary())
}

// runStatus reads a run's status ("" when it has no row).
func (b *bundle) runStatus(runID string) workflow.RunStatus {
	b.t.Helper()
	var st string
	err := b.pool.QueryRow(b.ctx, `SELECT status FROM `+b.tables.Quoted().Statuses+` WHERE run_id = $1`, runID).Scan(&st)
	if err != nil && err != pgx.ErrNoRows {
		b.t.Fatal(err)
	}
	return workflow.RunStatus(st)
}

// stepState reads a step's state ("" when it has no row).
func (b *bundle) stepState(runID, step string) workflow.StepState {
	b.t.Helper()
	var st string
	err := b.pool.QueryRow(b.ctx, `SELECT state FROM `+b.tables.Quoted().Steps+` WHERE run_id = $1 AND node_id = $2`, runID, step).Scan(&st)
	if err != nil && err != pgx.ErrNoRows {
		b.t.Fatal(err)
	}
	return workflow.StepState(st)
}

// succeeded counts the succeeded attempts the function logged for a step.
func (l *logs) succeeded(runID, step string) int {
	n := 0
	for _, a := range l.attempts[stepKey{runID, step}] {
		if a.Outcome == "succeeded" {
			n++
		}
	}
	return n
}
