package faults

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// The load every case runs: runsPerCase runs of testdata/faults.json,
// started by startWorkers goroutines at one start every startEvery, so the
// starts span about two seconds and a fault injected after faultAfter
// starts finds runs at every stage: finished, in flight, not started yet.
const (
	runsPerCase  = 200
	startWorkers = 16
	startEvery   = 10 * time.Millisecond
	faultAfter   = 80
)

// run is one run of the load, with what the local runner says it must end
// with.
type run struct {
	id       string
	bp       *workflow.Blueprint
	input    map[string]any
	expected *workflow.RunResult
	// children are the child blueprints of its subflows, by id.
	children map[string]*workflow.Blueprint
}

// load starts runs concurrently through client.Start.
type load struct {
	b       *bundle
	runs    []*run
	started atomic.Int64
	every   time.Duration // between two starts; 0: startEvery

	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

// newLoad prepares n runs with distinct inputs and computes each one's
// expected result with the local runner (workflow.Run, the oracle).
func (b *bundle) newLoad(n int) *load {
	b.t.Helper()
	base := 1 + rand.IntN(1_000_000)
	l := &load{b: b}
	runPrefix := "r-" + testenv.RandomHex(4) + "-"
	for i := range n {
		l.runs = append(l.runs, &run{
			id:    fmt.Sprintf("%s%03d", runPrefix, i),
			bp:    b.bp,
			input: map[string]any{"n": base + i, "tag": b.t.Name()},
		})
	}
	expect(b.t, l.runs)
	return l
}

// expect fills in each run's expected result, running the local runner
// concurrently.
func expect(t *testing.T, runs []*run) {
	t.Helper()
	reg := nodes.Registry()
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	errs := make([]error, len(runs))
	for i, r := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := workflow.Run(ctx, r.bp, reg, r.input, workflow.RunOptions{RunID: r.id, Blueprints: r.children})
			if err == nil && res.Status != workflow.RunCompleted {
				err = fmt.Errorf("local run of %s ended %s: %v", r.bp.ID, res.Status, res.Errors)
			}
			r.expected, errs[i] = res, err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("oracle: %v", err)
		}
	}
}

// start starts the runs in the background, paced.
func (l *load) start() {
	jobs := make(chan *run)
	for range startWorkers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for r := range jobs {
				l.startOne(r)
			}
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer close(jobs)
		tick := time.NewTicker(cmp.Or(l.every, startEvery))
		defer tick.Stop()
		for _, r := range l.runs {
			select {
			case <-l.b.ctx.Done():
				return
			case <-tick.C:
			}
			jobs <- r
		}
	}()
}

func (l *load) startOne(r *run) {
	ctx, cancel := context.WithTimeout(l.b.ctx, 30*time.Second)
	defer cancel()
	id, err := l.b.client.Start(ctx, r.bp, r.input, client.StartOptions{RunID: r.id})
	if err != nil && id == "" {
		l.mu.Lock()
		l.errs = append(l.errs, fmt.Errorf("start %s: %w", r.id, err))
		l.mu.Unlock()
		return
	}
	// A run recorded but whose start job was not published is the
	// reconciler's to repair: it counts as started.
	l.started.Add(1)
}

// waitStarted waits until at least n runs have started.
func (l *load) waitStarted(n int) {
	l.b.t.Helper()
	if err := testenv.Poll(l.b.ctx, 60*time.Second, 5*time.Millisecond, func() (bool, error) {
		return l.started.Load() >= int64(n), nil
	}); err != nil {
		l.b.t.Fatalf("%d runs started: %v (only %d)", n, err, l.started.Load())
	}
}

// waitAllStarted waits for every start and fails the test on a start
// error.
func (l *load) waitAllStarted() {
	l.b.t.Helper()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.errs {
		l.b.t.Error(err)
	}
	if len(l.errs) > 0 {
		l.b.t.FailNow()
	}
}

// midRun records, right before a fault, how far the load got, and fails
// the test if the fault would not land mid-run (every started run already
// finished and nothing left to start).
func (l *load) midRun(fault string) {
	b := l.b
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	var finished int
	ids := l.ids()
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM `+b.tables.Quoted().Statuses+` WHERE run_id = ANY($1) AND status <> 'running'`, ids).Scan(&finished); err != nil {
		b.t.Fatal(err)
	}
	started := int(l.started.Load())
	b.t.Logf("%s: %d of %d runs started, %d finished, %d in flight", fault, started, len(l.runs), finished, started-finished)
	if started-finished <= 0 && started == len(l.runs) {
		b.t.Fatalf("%s would not land mid-run: every run already finished", fault)
	}
}

func (l *load) ids() []string {
	ids := make([]string, len(l.runs))
	for i, r := range l.runs {
		ids[i] = r.id
	}
	return ids
}

// canonical renders a JSON value in one canonical form (sorted keys,
// JSON numbers), for exact comparisons.
func canonical(v any) string {
	b, err := json.Marshal(workflow.Normalize(v))
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	var back any
	if err := json.Unmarshal(b, &back); err != nil {
		return string(b)
	}
	out, _ := json.Marshal(back)
	return string(out)
}
