package function_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepflow/stepflow/function"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// runBatch calls HandleBatch in the background; the results come on the
// returned channel.
func (tb *testBundle) runBatch(ctx context.Context, jobs ...wire.Job) <-chan []wire.Result {
	out := make(chan []wire.Result, 1)
	go func() { out <- tb.f.HandleBatch(ctx, jobEvents(jobs...)) }()
	return out
}

func (tb *testBundle) results(ch <-chan []wire.Result) []wire.Result {
	tb.t.Helper()
	select {
	case rs := <-ch:
		return rs
	case <-time.After(20 * time.Second):
		tb.t.Fatal("the batch did not answer within 20s")
		return nil
	}
}

// A job's lease lasts until its outcome is committed: a fast job batched
// with a slow one keeps its lease renewed while it waits for the slow one.
func TestBatchKeepsLeasesUntilCommitted(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, waitJobs := tb.createRun(decodeBlueprint(t, gatedBlueprint), nil)
	pairRun, pairJobs := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)

	done := tb.runBatch(tb.ctx, waitJobs[0], pairJobs[0])
	tb.waitEntered()
	key := wire.LeaseKey(tb.redisPrefix, pairRun, "first")
	ttl := func() time.Duration {
		d, err := tb.rdb.PTTL(tb.ctx, key).Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", key, err)
		}
		return d
	}
	acquired := time.Now()
	if d := ttl(); d <= 0 {
		t.Fatalf("first's lease: TTL %s, want it held while the batch runs", d)
	}
	// Past the first renewal (every LeaseTTL/3) the TTL must be back near
	// LeaseTTL; unrenewed it would be LeaseTTL minus the time waited.
	wait := function.LeaseTTL / 2
	time.Sleep(time.Until(acquired.Add(wait)))
	if d, unrenewed := ttl(), function.LeaseTTL-time.Since(acquired); d < unrenewed+function.LeaseTTL/6 {
		t.Fatalf("first's lease TTL is %s after %s of waiting for its batch (%s unrenewed): not renewed", d, wait, unrenewed)
	}

	tb.gate.release <- "opened"
	rs := tb.results(done)
	assertResult(t, "slow", rs[0], http.StatusOK, "", "next:1")
	assertResult(t, "first", rs[1], http.StatusOK, "", "second:1")
	if keys := tb.leaseKeys(); len(keys) != 0 {
		t.Errorf("leases left after the batch: %q", keys)
	}
}

// panicky is an output whose JSON encoding panics: routing it panics
// outside the node, where no attempt catches it.
type panicky struct{}

func (panicky) MarshalJSON() ([]byte, error) { panic("MarshalJSON bug") }

// A panic while deciding one job's outcome fails that job alone (500,
// nothing committed); the rest of the batch commits, the process lives.
func TestBatchPanicFailsOnlyItsJob(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.reg.Register("panicky", func(context.Context, workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: panicky{}}, nil
	})
	badRun, badJobs := tb.createRun(decodeBlueprint(t, `{"id": "bad", "nodes": [{"id": "p", "uses": "panicky"}, {"id": "q", "uses": "probe"}],
		"edges": [{"source": "p", "target": "q"}]}`), nil)
	_, pairJobs := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)

	rs := tb.batch(jobEvents(badJobs[0], pairJobs[0])...)

	assertResult(t, "panicking job", rs[0], http.StatusInternalServerError, "MarshalJSON bug")
	assertResult(t, "its batch-mate", rs[1], http.StatusOK, "", "second:1")
	if s := tb.step(badRun, "p"); s.State != workflow.StepReady || s.Attempts != 0 {
		t.Errorf("the panicking step: %s at %d attempts, want still ready at 0", s.State, s.Attempts)
	}
}

// A request cancelled while a slow node of its batch runs still commits
// the jobs whose nodes finished; the slow one commits nothing.
func TestBatchCancelledRequestCommitsFinishedJobs(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(o *options) { o.noStart = true })
	metrics := prometheus.NewRegistry()
	tb.f = function.New(function.Options{Registry: tb.reg, Logger: tb.log, Registerer: metrics})
	// The gated node must end by the cancel alone. The default step time
	// limit (10 s) is no longer than the waits below, so on a loaded
	// machine it could end the node first and commit its timeout; the
	// test's context (a minute) ends long before this limit.
	tb.startFunction(tb.f, 10*time.Minute)
	waitRun, waitJobs := tb.createRun(decodeBlueprint(t, gatedBlueprint), nil)
	pairRun, pairJobs := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)

	ctx, cancel := context.WithCancel(tb.ctx)
	defer cancel()
	done := tb.runBatch(ctx, waitJobs[0], pairJobs[0])
	tb.waitEntered()
	// first runs beside the gated node; wait until its attempt is counted.
	// The function counts it after checking that the request is still
	// alive, and commits it from there on; a cancel between the node's
	// return and that check would lose it, so its call alone is not enough.
	testenv.Eventually(t, 10*time.Second, "first's attempt to be counted", func() bool {
		return stepsCounted(t, metrics) == 1
	})
	cancel() // the bridge gave up on the request

	rs := tb.results(done)
	assertResult(t, "the cancelled node", rs[0], http.StatusServiceUnavailable, "canceled")
	assertResult(t, "first, committed after the cancel", rs[1], http.StatusOK, "", "second:1")
	if s := tb.step(waitRun, "slow"); s.State != workflow.StepReady || s.Attempts != 0 {
		t.Errorf("slow: %s at %d attempts, want still ready at 0", s.State, s.Attempts)
	}
	if s := tb.step(pairRun, "first"); s.State != workflow.StepSucceeded || s.Attempts != 1 {
		t.Fatalf("first: %s at %d attempts, want its finished attempt committed", s.State, s.Attempts)
	}
	// The batch gives up its leases before it answers, but only within a
	// second (releaseLeases); past that a lease is left to expire, and a
	// redelivery meanwhile is refused (409) as the bridge would retry it.
	// The redelivery below is the one that comes once the lease is gone.
	lease := wire.LeaseKey(tb.redisPrefix, pairRun, "first")
	testenv.Eventually(t, function.LeaseTTL+5*time.Second, "first's lease to be released or to expire", func() bool {
		n, err := tb.rdb.Exists(tb.ctx, lease).Result()
		return err == nil && n == 0
	})
	// Its redelivery runs nothing and re-emits the stored routing.
	if got := tb.mustHandle(pairJobs[0]); fmt.Sprint(targets(got)) != "[second:1]" {
		t.Errorf("first's redelivery: %q, want [second:1] re-emitted", targets(got))
	}
	if n := tb.probes.count("first"); n != 1 {
		t.Errorf("first ran %d times, want 1", n)
	}
}

// stepsCounted is the function's stepflow_steps_total, all outcomes and
// node types together.
func stepsCounted(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() == "stepflow_steps_total" {
			for _, m := range f.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}
