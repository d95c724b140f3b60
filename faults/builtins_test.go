package faults

// Flowcraft's graph built-ins under faults: a batch whose function is
// killed while its workers run, a batch whose scatter job is delivered
// again (before and after its commit, and every job published twice), and
// a loop that loses its next iteration's job and is repaired by the
// reconciler. Each is checked by verify against the local runner: every
// run completes with the local runner's context, every step (each worker,
// each iteration) committed by exactly one attempt, nothing left in the
// queues, no dead letter.

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

const (
	batchItems   = 500
	batchScatter = "items_scatter"
	batchGather  = "items_gather"
)

// workerID matches the step key of a worker of batch.json's scatter:
// <workerUsesKey>_<batchId>_<item index>.
var workerID = regexp.MustCompile(`^noop_([0-9a-f-]{36})_(\d+)$`)

// batchRun is one run of testdata/batch.json over n items, with the local
// runner's result.
func (b *bundle) batchRun(id string, n int) *run {
	b.t.Helper()
	items := make([]any, n)
	for i := range items {
		items[i] = map[string]any{"item": float64(i), "run": id}
	}
	r := &run{id: id, bp: loadBlueprint(b.t, "batch.json"), input: map[string]any{"items": items}}
	expect(b.t, []*run{r})
	return r
}

// startRuns starts runs through the client, one after another.
func (b *bundle) startRuns(runs ...*run) *load {
	b.t.Helper()
	l := &load{b: b, runs: runs}
	for _, r := range runs {
		l.startOne(r)
	}
	l.waitAllStarted()
	return l
}

// workerRows counts a run's worker step rows, and those succeeded.
func (b *bundle) workerRows(runID string) (rows, succeeded int) {
	b.t.Helper()
	q := b.tables.Quoted()
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*), count(*) FILTER (WHERE state = 'succeeded') FROM `+q.Steps+
		` WHERE run_id = $1 AND node_id ~ '^noop_'`, runID).Scan(&rows, &succeeded); err != nil {
		b.t.Fatal(err)
	}
	return rows, succeeded
}

// checkBatch: the run's workers are one set (one batch id), one row per
// item, and the gather's output (the context key gathered) is every item
// exactly once, in item order.
func (b *bundle) checkBatch(r *run, n int) {
	t := b.t
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `SELECT node_id FROM `+b.tables.Quoted().Steps+` WHERE run_id = $1 AND node_id NOT IN ($2, $3, 'count')`, r.id, batchScatter, batchGather)
	if err != nil {
		t.Fatal(err)
	}
	batches := map[string]int{}
	seen := make([]int, n)
	for rows.Next() {
		var node string
		if err := rows.Scan(&node); err != nil {
			t.Fatal(err)
		}
		m := workerID.FindStringSubmatch(node)
		if m == nil {
			t.Errorf("run %s: step %s is neither the scatter, the gather, count nor a worker", r.id, node)
			continue
		}
		batches[m[1]]++
		i, _ := strconv.Atoi(m[2])
		if i >= n {
			t.Errorf("run %s: worker %s for item %d of %d", r.id, node, i, n)
			continue
		}
		seen[i]++
	}
	rows.Close()
	if len(batches) != 1 {
		t.Errorf("run %s: workers of %d batch ids %v, want one set", r.id, len(batches), batches)
	}
	for i, c := range seen {
		if c != 1 {
			t.Errorf("run %s: item %d has %d worker steps, want 1", r.id, i, c)
		}
	}
	res, err := b.client.Result(b.ctx, r.id)
	if err != nil {
		t.Fatal(err)
	}
	gathered, _ := res.Context["gathered"].([]any)
	if len(gathered) != n {
		t.Fatalf("run %s: gathered %d items, want %d", r.id, len(gathered), n)
	}
	for i, g := range gathered {
		if want := map[string]any{"item": float64(i), "run": r.id}; canonical(g) != canonical(want) {
			t.Errorf("run %s: gathered[%d] = %s, want %s (every item once, in item order)", r.id, i, canonical(g), canonical(want))
			break
		}
	}
}

// The function is SIGKILLed while a batch of 500 items runs (some workers
// done, others in flight or waiting), and restarted: every worker still
// commits once, the gather runs after the last of them and gathers every
// item exactly once, in order, and the run completes.
func TestBatchKill9Function(t *testing.T) {
	t.Parallel()
	// One job per request, two at a time: the batch takes long enough for
	// the kill to find it half done.
	b := setup(t, caseOptions{bridgeArgs: []string{"--batch-size", "1", "--concurrency", "2"}})
	r := b.batchRun("batch-kill-"+testenv.RandomHex(4), batchItems)
	l := b.startRuns(r)

	var done int
	if err := testenv.Poll(b.ctx, runsDeadline, 5*time.Millisecond, func() (bool, error) {
		_, done = b.workerRows(r.id)
		return done >= batchItems/5, nil
	}); err != nil {
		t.Fatalf("a fifth of the workers never succeeded (%d): %v", done, err)
	}
	b.fn.Kill9()
	rows, done := b.workerRows(r.id)
	t.Logf("kill -9 function: %d worker steps, %d succeeded", rows, done)
	if done >= batchItems {
		t.Fatalf("the kill came after every worker had succeeded: it tests nothing")
	}
	hold(time.Second)
	b.fn.Restart()
	b.verify(l, verifyOptions{})
	b.checkBatch(r, batchItems)
}

// The scatter's job is delivered again — a copy published right after the
// start (racing the first), two after the scatter committed, and one after
// the run completed (with the gather's): there is one set of workers, each
// committed once, one gather, and the completed run does not change.
func TestBatchScatterRedelivered(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{})
	b.scatterAgain(t)
}

func (b *bundle) scatterAgain(t *testing.T) {
	t.Helper()
	r := b.batchRun("batch-again-"+testenv.RandomHex(4), batchItems)
	pub := jobqueue.NewPublisher(testenv.RabbitMQURL(), b.queue)
	t.Cleanup(pub.Close)
	scatterJob := jobqueue.Job{RunID: r.id, BlueprintID: r.bp.ID, NodeID: batchScatter, Attempt: 1}
	publish := func(job jobqueue.Job, why string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		if err := pub.Publish(ctx, job, 0); err != nil {
			t.Fatalf("publish %s's job again (%s): %v", job.NodeID, why, err)
		}
	}
	l := b.startRuns(r)
	publish(scatterJob, "racing the first delivery")

	q := b.tables.Quoted()
	testenv.Eventually(t, runsDeadline, "the scatter to commit", func() bool {
		var state string
		err := b.pool.QueryRow(b.ctx, `SELECT state FROM `+q.Steps+` WHERE run_id = $1 AND node_id = $2`, r.id, batchScatter).Scan(&state)
		return err == nil && state == string(workflow.StepSucceeded)
	})
	publish(scatterJob, "after the scatter's commit")
	publish(scatterJob, "after the scatter's commit, once more")
	rows, done := b.workerRows(r.id)
	t.Logf("the scatter's job published again after its commit: %d worker steps, %d succeeded", rows, done)

	testenv.Eventually(t, runsDeadline, "the run to complete", func() bool { return b.runStatus(r.id) == workflow.RunCompleted })
	before := b.finalStatus(r.id)
	publish(scatterJob, "after the run completed")
	gatherJob := scatterJob
	gatherJob.NodeID = batchGather
	publish(gatherJob, "after the run completed")
	lg := b.verify(l, verifyOptions{})
	b.checkBatch(r, batchItems)
	if after := b.finalStatus(r.id); after != before {
		t.Errorf("the completed run changed after its scatter's and gather's jobs came again:\n before %s\n after  %s", before, after)
	}
	for _, node := range []string{batchScatter, batchGather} {
		if n := len(lg.attempts[stepKey{r.id, node}]); n != 1 {
			t.Errorf("%s ran %d attempts, want 1 (a delivery after its commit answers from the commit)", node, n)
		}
	}
}

// finalStatus renders a run's status row (status, status_data, finished_at).
func (b *bundle) finalStatus(runID string) string {
	b.t.Helper()
	var status string
	var data []byte
	var fin *time.Time
	if err := b.pool.QueryRow(b.ctx, `SELECT status, status_data, finished_at FROM `+b.tables.Quoted().Statuses+` WHERE run_id = $1`, runID).Scan(&status, &data, &fin); err != nil {
		b.t.Fatal(err)
	}
	return fmt.Sprintf("%s %v %d bytes of status_data (%x…)", status, fin, len(data), data[:min(len(data), 16)])
}

// A loop loses the job of its next iteration: the bridge is stopped while
// the loops run, the queue purged, the bridge started again. Nothing would
// continue those runs but the reconciler, which finds them stalled and
// republishes the iteration each one is missing: every loop counts down to
// 0 as the local runner's does, each iteration's steps committed once.
func TestLoopReconciled(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{})
	bp := loadBlueprint(t, "loop.json")
	const runs, from = 10, 150
	var rs []*run
	prefix := "loop-" + testenv.RandomHex(4) + "-"
	for i := range runs {
		rs = append(rs, &run{id: fmt.Sprintf("%s%02d", prefix, i), bp: bp, input: map[string]any{"n": float64(from + i)}})
	}
	expect(t, rs)
	l := b.startRuns(rs...)
	ids := l.ids()
	q := b.tables.Quoted()
	testenv.Eventually(t, runsDeadline, "every loop to pass its 10th iteration", func() bool {
		var n int
		err := b.pool.QueryRow(b.ctx, `SELECT count(DISTINCT run_id) FROM `+q.Steps+` WHERE run_id = ANY($1) AND node_id = 'dec#10'`, ids).Scan(&n)
		return err == nil && n == runs
	})
	b.br.Stop()
	ch, err := b.amqp.Channel()
	if err != nil {
		t.Fatal(err)
	}
	purged, err := ch.QueuePurge(b.queue, false)
	_ = ch.Close()
	if err != nil {
		t.Fatal(err)
	}
	var running int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM `+q.Statuses+` WHERE run_id = ANY($1) AND status = 'running'`, ids).Scan(&running); err != nil {
		t.Fatal(err)
	}
	t.Logf("bridge stopped mid-loop: %d jobs purged, %d of %d loops still running", purged, running, runs)
	if purged == 0 || running == 0 {
		t.Fatalf("the purge lost no loop's job (%d purged, %d running): it tests nothing", purged, running)
	}
	b.br.Restart()
	lg := b.verify(l, verifyOptions{})
	if n := lg.count["reconciler republished a missing job"]; n < running {
		t.Errorf("the reconciler republished %d jobs, want at least one for each of the %d loops whose job was purged", n, running)
	}
	for _, r := range rs {
		if got, err := b.client.Result(b.ctx, r.id); err != nil || got.Context["n"] != 0.0 {
			t.Errorf("run %s: n = %v (%v), want 0", r.id, got.Context["n"], err)
		}
	}
}
