package function_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

type outcome struct {
	jobs []wire.NextJob
	err  error
}

// handleAll calls Handle with every event at once (released together) and
// returns the outcomes in order.
func (tb *testBundle) handleAll(events ...event.Event) []outcome {
	out := make([]outcome, len(events))
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, e := range events {
		wg.Go(func() {
			<-gate
			resp, err := tb.f.Handle(tb.ctx, e)
			out[i].err = err
			if resp != nil {
				var r wire.Reply
				if derr := resp.DataAs(&r); derr != nil {
					out[i].err = fmt.Errorf("reply data: %w", derr)
				}
				out[i].jobs = r.Jobs
			}
		})
	}
	close(gate)
	wg.Wait()
	return out
}

// Predecessors of a join commit at the same time: the all-join and the
// any-join are each made ready exactly once, the all-join with every
// predecessor's output.
func TestJoinsFireOnceUnderConcurrentCommits(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	const width = 6
	var nodes, edges []string
	nodes = append(nodes, `{"id": "src", "uses": "noop"}`,
		`{"id": "all", "uses": "probe"}`, `{"id": "any", "uses": "probe", "config": {"joinStrategy": "any"}}`)
	for i := range width {
		b := fmt.Sprintf("b%d", i)
		nodes = append(nodes, fmt.Sprintf(`{"id": %q, "uses": "probe"}`, b))
		edges = append(edges, fmt.Sprintf(`{"source": "src", "target": %q}`, b),
			fmt.Sprintf(`{"source": %q, "target": "all"}`, b), fmt.Sprintf(`{"source": %q, "target": "any"}`, b))
	}
	bp := decodeBlueprint(t, `{"id": "fan", "nodes": [`+strings.Join(nodes, ",")+`], "edges": [`+strings.Join(edges, ",")+`]}`)

	for round := range 3 {
		runID, starts := tb.createRun(bp, nil)
		branches := tb.mustHandle(starts[0])
		if len(branches) != width {
			t.Fatalf("src made %d branches ready, want %d", len(branches), width)
		}
		events := make([]event.Event, len(branches))
		for i, j := range branches {
			events[i] = jobEvent(j.Job)
		}
		var joins []wire.Job
		for i, o := range tb.handleAll(events...) {
			if o.err != nil {
				t.Fatalf("round %d: branch %s: %v", round, branches[i].NodeID, o.err)
			}
			for _, j := range o.jobs {
				joins = append(joins, j.Job)
			}
		}
		got := make([]string, len(joins))
		for i, j := range joins {
			got[i] = j.ID()
		}
		slices.Sort(got)
		if want := []string{runID + ":all:1", runID + ":any:1"}; !slices.Equal(got, want) {
			t.Fatalf("round %d: joins made ready %q, want each once: %q", round, got, want)
		}
		tb.deliverAll(nil, joins...)
		r := tb.assertCompleted(runID, nil)
		all, _ := r.StatusData[workflow.OutputKey("all")].(map[string]any)
		if in, _ := all["input"].(map[string]any); len(in) != width {
			t.Errorf("round %d: the all-join got input from %d predecessors, want %d: %v", round, len(in), width, all["input"])
		}
	}
	if n := tb.probes.count("all"); n != 3 {
		t.Errorf("all-join ran %d times in 3 runs", n)
	}
	if n := tb.probes.count("any"); n != 3 {
		t.Errorf("any-join ran %d times in 3 runs", n)
	}
}

const gatedBlueprint = `{"id": "gated", "nodes": [
  {"id": "slow", "uses": "gated"},
  {"id": "next", "uses": "probe"}],
 "edges": [{"source": "slow", "target": "next"}]}`

// Deliveries of one job while its node runs are turned away with 409 and
// never run the node a second time.
func TestConcurrentDuplicatesRunTheNodeOnce(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.createRun(decodeBlueprint(t, gatedBlueprint), nil)
	first := make(chan outcome, 1)
	go func() {
		jobs, err := tb.f.Handle(tb.ctx, jobEvent(starts[0]))
		o := outcome{err: err}
		if jobs != nil {
			var r wire.Reply
			_ = jobs.DataAs(&r)
			o.jobs = r.Jobs
		}
		first <- o
	}()
	tb.waitEntered()

	dups := make([]event.Event, 8)
	for i := range dups {
		dups[i] = jobEvent(starts[0])
	}
	for i, o := range tb.handleAll(dups...) {
		if status(o.err) != http.StatusConflict {
			t.Errorf("duplicate %d while the node runs: %v %q, want 409", i, o.err, targets(o.jobs))
		}
	}
	tb.gate.release <- "done"
	o := <-first
	if o.err != nil {
		t.Fatalf("first delivery: %v", o.err)
	}
	assertTargets(t, "first delivery", o.jobs, "next:1")
	// Afterwards a duplicate re-emits, runs nothing.
	assertTargets(t, "late duplicate", tb.mustHandle(starts[0]), "next:1")
	if n := tb.gate.count(); n != 1 {
		t.Errorf("the node ran %d times", n)
	}
	if s := tb.step(runID, "slow"); s.Attempts != 1 || s.State != workflow.StepSucceeded {
		t.Errorf("slow: %s after %d attempts", s.State, s.Attempts)
	}
}

// When the lease is lost (Redis flushed, or expired under a slow node), a
// second delivery may run the node again, but only one result is
// committed: the late one changes nothing and makes nothing ready again.
func TestLostLeaseCommitsOneResult(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID, starts := tb.createRun(decodeBlueprint(t, gatedBlueprint), nil)
	lease := wire.LeaseKey(tb.redisPrefix, runID, "slow")
	results := make(chan outcome, 2)
	deliver := func() {
		resp, err := tb.f.Handle(tb.ctx, jobEvent(starts[0]))
		o := outcome{err: err}
		if resp != nil {
			var r wire.Reply
			_ = resp.DataAs(&r)
			o.jobs = r.Jobs
		}
		results <- o
	}

	go deliver()
	tb.waitEntered()
	if err := tb.rdb.Del(tb.ctx, lease).Err(); err != nil { // the lease is lost
		t.Fatal(err)
	}
	go deliver()
	tb.waitEntered() // the second delivery runs the node too

	tb.gate.release <- "second" // one of them finishes first and commits
	won := <-results
	if won.err != nil {
		t.Fatalf("first to finish: %v", won.err)
	}
	assertTargets(t, "first to finish", won.jobs, "next:1")
	tb.gate.release <- "late"
	late := <-results
	if late.err != nil || len(late.jobs) != 0 {
		t.Errorf("late finisher: %v %q, want 200 without jobs", late.err, targets(late.jobs))
	}
	s := tb.step(runID, "slow")
	if s.Attempts != 1 || s.Output != "second" {
		t.Errorf("slow: output %v after %d attempts, want the first committed result", s.Output, s.Attempts)
	}
	tb.deliverAll(nil, won.jobs[0].Job)
	tb.assertCompleted(runID, map[string]any{"slow": "second"})
	if n := tb.probes.count("next"); n != 1 {
		t.Errorf("next ran %d times", n)
	}
}
