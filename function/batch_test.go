package function_test

// Batches (HandleBatch and the application/cloudevents-batch+json form of
// ServeHTTP) against the real PostgreSQL and Redis: every job of a batch
// must get what it would get alone, whatever else the batch holds.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// ---- helpers ----

func jobEvents(jobs ...wire.Job) []event.Event {
	out := make([]event.Event, len(jobs))
	for i, j := range jobs {
		out[i] = jobEvent(j)
	}
	return out
}

// batch calls the test's function with events as one batch.
func (tb *testBundle) batch(events ...event.Event) []wire.Result {
	tb.t.Helper()
	rs := tb.f.HandleBatch(tb.ctx, events)
	if len(rs) != len(events) {
		tb.t.Fatalf("HandleBatch answered %d results for %d events", len(rs), len(events))
	}
	return rs
}

// assertResult checks one result of a batch: its status, that an error
// result names the problem and carries no jobs, and (for 200) its jobs as
// node:attempt, order aside.
func assertResult(t *testing.T, what string, r wire.Result, code int, mention string, jobs ...string) {
	t.Helper()
	if r.Status != code {
		t.Errorf("%s: status %d (%q, jobs %q), want %d", what, r.Status, r.Error, targets(r.Jobs), code)
		return
	}
	if code != http.StatusOK {
		if !strings.Contains(r.Error, mention) {
			t.Errorf("%s: error %q does not mention %q", what, r.Error, mention)
		}
		if len(r.Jobs) != 0 {
			t.Errorf("%s: error result carries jobs %q", what, targets(r.Jobs))
		}
		return
	}
	if r.Error != "" {
		t.Errorf("%s: 200 with error %q", what, r.Error)
	}
	got := targets(r.Jobs)
	slices.Sort(got)
	want := slices.Clone(jobs)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: jobs %q, want %q", what, got, want)
	}
}

func (tb *testBundle) pending(runID string) int {
	tb.t.Helper()
	return tb.run(runID).Pending
}

// leaseKeys returns the lease keys under the test's Redis prefix.
func (tb *testBundle) leaseKeys() []string {
	tb.t.Helper()
	keys, err := tb.redisKeys(tb.ctx)
	if err != nil {
		tb.t.Fatalf("scan Redis: %v", err)
	}
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, tb.redisPrefix+"lease:") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// waitLeases waits until the lease keys are exactly want (sorted), for at
// most within; it returns what it last saw.
func (tb *testBundle) waitLeases(within time.Duration, want ...string) []string {
	tb.t.Helper()
	slices.Sort(want)
	var got []string
	_ = testenv.Poll(tb.ctx, within, 10*time.Millisecond, func() (bool, error) {
		got = tb.leaseKeys()
		return slices.Equal(got, want), nil
	})
	return got
}

// fanBlueprint: start → b1..bN → join (all) → end, all probes. b1's edge to
// the join is taken only when the run's context has skip != true, so that
// with skip the first branch of a batch routes nowhere.
func fanBlueprint(t *testing.T, width int) *workflow.Blueprint {
	t.Helper()
	nodes := []string{`{"id": "start", "uses": "probe"}`,
		`{"id": "join", "uses": "probe", "config": {"joinStrategy": "all"}}`,
		`{"id": "end", "uses": "probe"}`}
	edges := []string{`{"source": "join", "target": "end"}`}
	for i := 1; i <= width; i++ {
		b := fmt.Sprintf("b%d", i)
		nodes = append(nodes, fmt.Sprintf(`{"id": %q, "uses": "probe"}`, b))
		edges = append(edges, fmt.Sprintf(`{"source": "start", "target": %q}`, b))
		if i == 1 {
			edges = append(edges, `{"source": "b1", "target": "join", "condition": "context.skip != true"}`)
		} else {
			edges = append(edges, fmt.Sprintf(`{"source": %q, "target": "join"}`, b))
		}
	}
	return decodeBlueprint(t, `{"id": "fan", "nodes": [`+strings.Join(nodes, ",")+`], "edges": [`+strings.Join(edges, ",")+`]}`)
}

const fanWidth = 8

type fanRun struct {
	id       string
	input    map[string]any
	skip     bool
	branches []wire.Job // b1..bN, in node order
}

// startFan creates a fan run and runs its start node alone; it checks the
// branches made ready and the pending count.
func (tb *testBundle) startFan(bp *workflow.Blueprint, skip bool) fanRun {
	tb.t.Helper()
	in := map[string]any{"skip": skip, "tag": testenv.RandomHex(3)}
	runID, starts := tb.createRun(bp, in)
	next := tb.mustHandle(starts[0])
	want := make([]string, fanWidth)
	for i := range want {
		want[i] = fmt.Sprintf("b%d:1", i+1)
	}
	assertTargetSet(tb.t, "after start", next, want...)
	if p := tb.pending(runID); p != fanWidth {
		tb.t.Fatalf("run %s after start: pending %d, want %d", runID, p, fanWidth)
	}
	r := fanRun{id: runID, input: in, skip: skip}
	for i := 1; i <= fanWidth; i++ {
		r.branches = append(r.branches, job(runID, "fan", fmt.Sprintf("b%d", i), 1))
	}
	return r
}

// outputs is what a fan run's nodes output (the probe's echo of its input).
func (r fanRun) outputs() map[string]any {
	probe := func(id string, in any) map[string]any {
		return map[string]any{"node": id, "attempt": 1, "input": in}
	}
	out := map[string]any{}
	out["start"] = probe("start", r.input)
	joinIn := map[string]any{}
	for i := 1; i <= fanWidth; i++ {
		b := fmt.Sprintf("b%d", i)
		out[b] = probe(b, out["start"])
		if i > 1 || !r.skip {
			joinIn[b] = out[b]
		}
	}
	out["join"] = probe("join", joinIn)
	out["end"] = probe("end", out["join"])
	return out
}

// joinCarriers returns the indexes of the results that carry a job for
// run's join, checking that every job in rs is either nothing or that join
// job (of the job's own run) without delay.
func joinCarriers(t *testing.T, jobs []wire.Job, rs []wire.Result, runID string) []int {
	t.Helper()
	var at []int
	for i, r := range rs {
		for _, nj := range r.Jobs {
			if nj.RunID != jobs[i].RunID {
				t.Errorf("result %d (job %s) carries a job of another run: %s", i, jobs[i].ID(), nj.ID())
			}
			if nj.RunID == runID {
				if nj.NodeID != "join" || nj.Attempt != 1 || nj.DelayMs != 0 || nj.BlueprintID != "fan" {
					t.Errorf("result %d (job %s) carries %+v, want only join:1 undelayed", i, jobs[i].ID(), nj)
				}
				at = append(at, i)
			}
		}
	}
	return at
}

// assertBranchesDone checks the branch steps of a run after a batch ran
// them all and its join was made ready.
func (tb *testBundle) assertBranchesDone(r fanRun) {
	t := tb.t
	t.Helper()
	for i := 1; i <= fanWidth; i++ {
		b := fmt.Sprintf("b%d", i)
		s := tb.step(r.id, b)
		if s == nil || s.State != workflow.StepSucceeded || s.Attempts != 1 {
			t.Errorf("run %s: %s is %+v, want succeeded after 1 attempt", r.id, b, s)
			continue
		}
		var want []string
		if i > 1 || !r.skip {
			want = []string{"join"}
		}
		if !slices.Equal(s.Taken, want) {
			t.Errorf("run %s: %s took %q, want %q", r.id, b, s.Taken, want)
		}
	}
	j := tb.step(r.id, "join")
	if j == nil || j.State != workflow.StepReady || j.Attempts != 0 {
		t.Fatalf("run %s: join is %+v, want ready, not run", r.id, j)
	}
	testenv.AssertJSON(t, "join's input in run "+r.id, j.Input, r.outputs()["join"].(map[string]any)["input"])
	if p := tb.pending(r.id); p != 1 {
		t.Errorf("run %s: pending %d after every branch, want 1 (the join)", r.id, p)
	}
}

// ---- 1. fan-out ----

// The 8 branches of a run in one batch: each succeeds, the join is made
// ready once, by a branch that routes to it, and the run completes.
func TestBatchFanOutOneRun(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := fanBlueprint(t, fanWidth)
	r := tb.startFan(bp, true) // b1, first in the batch, routes nowhere

	rs := tb.batch(jobEvents(r.branches...)...)

	for i, res := range rs {
		if res.Status != http.StatusOK {
			t.Fatalf("branch %s: status %d (%s), want 200", r.branches[i].NodeID, res.Status, res.Error)
		}
	}
	at := joinCarriers(t, r.branches, rs, r.id)
	if len(at) != 1 {
		t.Fatalf("%d results carry the join (%v), want exactly 1", len(at), at)
	}
	if by := r.branches[at[0]].NodeID; by == "b1" {
		t.Errorf("the join is attributed to b1, which did not route to it")
	}
	for i := 1; i <= fanWidth; i++ {
		if n := tb.probes.count(fmt.Sprintf("b%d", i)); n != 1 {
			t.Errorf("b%d ran %d times", i, n)
		}
	}
	tb.assertBranchesDone(r)
	if keys := tb.leaseKeys(); len(keys) != 0 {
		t.Errorf("leases left after the batch: %q", keys)
	}

	// A redelivery of the whole batch runs nothing and makes nothing ready
	// again: each branch re-emits the join while it is pending.
	again := tb.batch(jobEvents(r.branches...)...)
	for i, res := range again {
		want := []string{"join:1"}
		if i == 0 {
			want = nil // b1 took no edge
		}
		assertResult(t, "redelivered "+r.branches[i].NodeID, res, http.StatusOK, "", want...)
	}
	if n := tb.probes.count("b2"); n != 1 {
		t.Errorf("redelivery ran b2 again (%d calls)", n)
	}

	tb.deliverAll(nil, rs[at[0]].Jobs[0].Job)
	tb.assertCompleted(r.id, r.outputs())
	if n := tb.probes.count("join"); n != 1 {
		t.Errorf("join ran %d times", n)
	}
	if p := tb.pending(r.id); p != 0 {
		t.Errorf("completed run: pending %d", p)
	}
}

// Branches of three runs interleaved in one batch, one run only half
// there: each run is decided on its own steps only.
func TestBatchFanOutRunsInterleaved(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := fanBlueprint(t, fanWidth)
	a, b, c := tb.startFan(bp, true), tb.startFan(bp, false), tb.startFan(bp, true)

	// Batch 1: all of a and b, c's b8, b6, b4, b2, interleaved.
	var jobs []wire.Job
	for i := range fanWidth {
		jobs = append(jobs, a.branches[i], b.branches[fanWidth-1-i])
		if i%2 == 0 {
			jobs = append(jobs, c.branches[fanWidth-1-i])
		}
	}
	rs := tb.batch(jobEvents(jobs...)...)
	for i, res := range rs {
		if res.Status != http.StatusOK {
			t.Fatalf("batch 1: %s: status %d (%s)", jobs[i].ID(), res.Status, res.Error)
		}
	}
	joins := map[string]wire.Job{}
	for _, r := range []fanRun{a, b, c} {
		at := joinCarriers(t, jobs, rs, r.id)
		switch {
		case r.id == c.id && len(at) != 0:
			t.Errorf("batch 1: run c's join made ready with half its branches (results %v)", at)
		case r.id != c.id && len(at) != 1:
			t.Errorf("batch 1: run %s's join carried by %d results, want 1", r.id, len(at))
		case r.id != c.id:
			if jobs[at[0]].RunID != r.id || (r.skip && jobs[at[0]].NodeID == "b1") {
				t.Errorf("batch 1: run %s's join attributed to %s", r.id, jobs[at[0]].ID())
			}
			joins[r.id] = rs[at[0]].Jobs[0].Job
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	tb.assertBranchesDone(a)
	tb.assertBranchesDone(b)
	if p := tb.pending(c.id); p != fanWidth/2 {
		t.Errorf("run c after half its branches: pending %d, want %d", p, fanWidth/2)
	}
	if s := tb.step(c.id, "join"); s != nil {
		t.Errorf("run c has a join step (%s) with half its branches done", s.State)
	}

	// Batch 2: c's other half, with a's and b's joins.
	jobs = []wire.Job{c.branches[0], joins[a.id], c.branches[2], c.branches[4], joins[b.id], c.branches[6]}
	rs = tb.batch(jobEvents(jobs...)...)
	at := joinCarriers(t, []wire.Job{jobs[0], jobs[2], jobs[3], jobs[5]}, []wire.Result{rs[0], rs[2], rs[3], rs[5]}, c.id)
	if len(at) != 1 {
		t.Fatalf("batch 2: run c's join carried by %d results, want 1", len(at))
	}
	for _, i := range []int{0, 2, 3, 5} {
		if rs[i].Status != http.StatusOK {
			t.Errorf("batch 2: %s: status %d (%s)", jobs[i].ID(), rs[i].Status, rs[i].Error)
		}
		if len(rs[i].Jobs) > 0 {
			joins[c.id] = rs[i].Jobs[0].Job
		}
	}
	assertResult(t, "batch 2: a's join", rs[1], http.StatusOK, "", "end:1")
	assertResult(t, "batch 2: b's join", rs[4], http.StatusOK, "", "end:1")
	tb.assertBranchesDone(c)

	// Batch 3: the ends of a and b, c's join; batch 4: c's end.
	jobs = []wire.Job{job(a.id, "fan", "end", 1), joins[c.id], job(b.id, "fan", "end", 1)}
	rs = tb.batch(jobEvents(jobs...)...)
	assertResult(t, "batch 3: a's end", rs[0], http.StatusOK, "")
	assertResult(t, "batch 3: c's join", rs[1], http.StatusOK, "", "end:1")
	assertResult(t, "batch 3: b's end", rs[2], http.StatusOK, "")
	rs = tb.batch(jobEvent(job(c.id, "fan", "end", 1)))
	assertResult(t, "batch 4: c's end", rs[0], http.StatusOK, "")

	for _, r := range []fanRun{a, b, c} {
		tb.assertCompleted(r.id, r.outputs())
		if p := tb.pending(r.id); p != 0 {
			t.Errorf("run %s completed with pending %d", r.id, p)
		}
	}
	for _, id := range []string{"start", "b1", "b8", "join", "end"} {
		if n := tb.probes.count(id); n != 3 {
			t.Errorf("%s ran %d times in 3 runs", id, n)
		}
	}
}

// ---- 2. mixed outcomes ----

func TestBatchMixedOutcomes(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := func(src string) *workflow.Blueprint { return decodeBlueprint(t, src) }
	cancelled, cancelledStarts := tb.createRun(bp(`{"id": "cx", "nodes": [{"id": "cx_a", "uses": "probe"}, {"id": "cx_b", "uses": "probe"}],
	  "edges": [{"source": "cx_a", "target": "cx_b"}]}`), nil)
	if st, err := tb.store.Cancel(tb.ctx, cancelled); err != nil || st != workflow.RunCancelled {
		t.Fatalf("cancel: %s %v", st, err)
	}
	dupRun, dupStarts := tb.createRun(bp(`{"id": "dup", "nodes": [{"id": "dup_a", "uses": "probe"}, {"id": "dup_b", "uses": "probe"}],
	  "edges": [{"source": "dup_a", "target": "dup_b"}]}`), nil)
	staleRun, staleStarts := tb.createRun(bp(`{"id": "stale", "nodes": [
	  {"id": "wob", "uses": "probe", "params": {"failAttempts": 1}, "config": {"maxRetries": 3, "retryDelay": 10}},
	  {"id": "wob_after", "uses": "probe"}], "edges": [{"source": "wob", "target": "wob_after"}]}`), nil)
	assertTargets(t, "stale run, attempt 1 alone", tb.mustHandle(staleStarts[0]), "wob:2")
	retryRun, retryStarts := tb.createRun(bp(`{"id": "rt", "nodes": [
	  {"id": "rt_charge", "uses": "probe", "params": {"fail": "card declined"}, "config": {"maxRetries": 3, "retryDelay": 200}},
	  {"id": "rt_ship", "uses": "probe"}], "edges": [{"source": "rt_charge", "target": "rt_ship"}]}`), nil)
	failRun, failStarts := tb.createRun(bp(`{"id": "ff", "nodes": [
	  {"id": "ff_a", "uses": "probe", "params": {"fail": "boom"}}, {"id": "ff_b", "uses": "probe"}],
	  "edges": [{"source": "ff_a", "target": "ff_b"}]}`), nil)
	// A run whose failing node and a sibling are in the same batch.
	sibRun, sibStarts := tb.createRun(bp(`{"id": "sib", "nodes": [
	  {"id": "sib_start", "uses": "noop"},
	  {"id": "sib_bad", "uses": "probe", "params": {"fail": "sibling boom"}},
	  {"id": "sib_good", "uses": "probe", "params": {"set": {"good": true}}},
	  {"id": "sib_after", "uses": "probe"}],
	  "edges": [{"source": "sib_start", "target": "sib_bad"}, {"source": "sib_start", "target": "sib_good"},
	            {"source": "sib_good", "target": "sib_after"}]}`), map[string]any{"v": 1})
	assertTargetSet(t, "sib start", tb.mustHandle(sibStarts[0]), "sib_bad:1", "sib_good:1")
	okRun, okStarts := tb.createRun(bp(`{"id": "ok", "nodes": [{"id": "ok_a", "uses": "probe", "params": {"set": {"done": "yes"}}}]}`), map[string]any{"n": 2})

	malformed := jobEvent(job(dupRun, "dup", "dup_a", 1))
	if err := malformed.SetData(event.ApplicationJSON, []byte(`{"runId": 7}`)); err != nil {
		t.Fatal(err)
	}
	wrongType := jobEvent(job(okRun, "ok", "ok_a", 1))
	wrongType.SetType("dev.stepflow.other")
	events := []event.Event{
		jobEvent(dupStarts[0]),                          // 0: runs
		jobEvent(cancelledStarts[0]),                    // 1: run cancelled
		jobEvent(failStarts[0]),                         // 2: fails for good
		jobEvent(job("no-such-run", "dup", "dup_a", 1)), // 3: unknown run
		malformed, // 4: malformed body
		jobEvent(job(sibRun, "sib", "sib_bad", 1)),      // 5: fails its run
		jobEvent(dupStarts[0]),                          // 6: duplicate of 0
		jobEvent(staleStarts[0]),                        // 7: stale attempt
		jobEvent(retryStarts[0]),                        // 8: fails, retries left
		wrongType,                                       // 9: not a job event
		jobEvent(job(sibRun, "sib", "sib_good", 1)),     // 10: sibling of a failure
		jobEvent(okStarts[0]),                           // 11: completes its run
		jobEvent(job(dupRun, "dup", "no_such_node", 1)), // 12: unknown node
	}
	before := time.Now()
	rs := tb.batch(events...)
	after := time.Now()

	assertResult(t, "first of a duplicated job", rs[0], http.StatusOK, "", "dup_b:1")
	assertResult(t, "job of a cancelled run", rs[1], http.StatusOK, "")
	assertResult(t, "node failing for good", rs[2], http.StatusOK, "")
	assertResult(t, "unknown run", rs[3], http.StatusUnprocessableEntity, `run "no-such-run" does not exist`)
	assertResult(t, "malformed job", rs[4], http.StatusBadRequest, "not a job JSON object")
	assertResult(t, "failing sibling", rs[5], http.StatusOK, "")
	assertResult(t, "second of a duplicated job", rs[6], http.StatusConflict, "being run by another delivery")
	assertResult(t, "stale attempt", rs[7], http.StatusOK, "")
	assertResult(t, "failure with retries left", rs[8], http.StatusOK, "", "rt_charge:2")
	assertResult(t, "wrong event type", rs[9], http.StatusBadRequest, `event type "dev.stepflow.other"`)
	assertResult(t, "job of the ok run", rs[11], http.StatusOK, "")
	assertResult(t, "unknown node", rs[12], http.StatusUnprocessableEntity, `no node "no_such_node"`)

	// The duplicated job ran once and committed.
	if n := tb.probes.count("dup_a"); n != 1 {
		t.Errorf("dup_a ran %d times", n)
	}
	if s := tb.step(dupRun, "dup_a"); s == nil || s.State != workflow.StepSucceeded || s.Attempts != 1 {
		t.Errorf("dup_a: %+v, want succeeded after 1 attempt", s)
	}
	if s := tb.step(dupRun, "dup_b"); s == nil || s.State != workflow.StepReady {
		t.Errorf("dup_b: %+v, want ready", s)
	}
	if p := tb.pending(dupRun); p != 1 {
		t.Errorf("dup run: pending %d, want 1", p)
	}

	// The cancelled run: nothing ran, nothing changed.
	if n := tb.probes.count("cx_a"); n != 0 {
		t.Errorf("node of a cancelled run ran %d times", n)
	}
	if s := tb.step(cancelled, "cx_a"); s.State != workflow.StepReady || s.Attempts != 0 {
		t.Errorf("step of a cancelled run: %s after %d attempts", s.State, s.Attempts)
	}
	if r := tb.run(cancelled); r.Status != workflow.RunCancelled {
		t.Errorf("cancelled run is %s", r.Status)
	}

	// Failed for good.
	r := tb.run(failRun)
	if r.Status != workflow.RunFailed || r.Error != "boom" || r.Pending != 0 || r.FinishedAt == nil {
		t.Errorf("failed run: %s %q pending %d finished %v, want failed %q", r.Status, r.Error, r.Pending, r.FinishedAt, "boom")
	}
	if r.StatusData["nodeId"] != "ff_a" || r.StatusData["error"] != "boom" {
		t.Errorf("failed run's status_data %v", r.StatusData)
	}
	if s := tb.step(failRun, "ff_a"); s.State != workflow.StepFailed || s.Attempts != 1 || s.Error != "boom" {
		t.Errorf("ff_a: %s after %d attempts (%q)", s.State, s.Attempts, s.Error)
	}
	if s := tb.step(failRun, "ff_b"); s != nil {
		t.Errorf("ff_b has a step (%s) in a failed run", s.State)
	}

	// The run that failed beside a succeeding sibling: failed, and the
	// sibling's answer is one it could get alone (no jobs if the failure
	// came first; its successor, with a step, if it came first).
	r = tb.run(sibRun)
	if r.Status != workflow.RunFailed || r.Error != "sibling boom" || r.Pending != 0 {
		t.Errorf("sib run: %s %q pending %d, want failed %q, nothing pending", r.Status, r.Error, r.Pending, "sibling boom")
	}
	if rs[10].Status != http.StatusOK {
		t.Errorf("sibling of a failure: status %d (%s)", rs[10].Status, rs[10].Error)
	}
	for _, nj := range rs[10].Jobs {
		if nj.RunID != sibRun || nj.NodeID != "sib_after" || tb.step(sibRun, "sib_after") == nil {
			t.Errorf("sibling of a failure replied %s without a step for it", nj.ID())
		}
	}
	if len(rs[10].Jobs) == 0 {
		if s := tb.step(sibRun, "sib_after"); s != nil {
			t.Errorf("sib_after has a step (%s) no answer published", s.State)
		}
	}

	// The stale attempt ran nothing.
	if n := tb.probes.count("wob"); n != 1 {
		t.Errorf("wob ran %d times, want 1", n)
	}
	if s := tb.step(staleRun, "wob"); s.State != workflow.StepRetrying || s.Attempts != 1 {
		t.Errorf("wob: %s after %d attempts, want retrying after 1", s.State, s.Attempts)
	}

	// The retry: attempt 2 after retryDelay with equal jitter (100–200 ms).
	if len(rs[8].Jobs) == 1 {
		nj := rs[8].Jobs[0]
		if nj.DelayMs < 100 || nj.DelayMs > 200 || nj.RunID != retryRun || nj.BlueprintID != "rt" {
			t.Errorf("retry job %+v, want %s rt_charge:2 delayed 100–200 ms", nj, retryRun)
		}
		s := tb.step(retryRun, "rt_charge")
		if s.State != workflow.StepRetrying || s.Attempts != 1 || s.Error != "card declined" || s.WakeAt == nil {
			t.Errorf("rt_charge: %s after %d attempts (%q), wake_at %v", s.State, s.Attempts, s.Error, s.WakeAt)
		} else {
			due := time.Duration(nj.DelayMs) * time.Millisecond
			if s.WakeAt.Before(before.Add(due).Add(-time.Second)) || s.WakeAt.After(after.Add(due).Add(time.Second)) {
				t.Errorf("rt_charge wake_at %s does not match the %s delay", s.WakeAt, due)
			}
		}
		if r := tb.run(retryRun); r.Status != workflow.RunRunning || r.Pending != 1 {
			t.Errorf("retrying run: %s pending %d", r.Status, r.Pending)
		}
	}

	// The ok run completed normally.
	tb.assertCompleted(okRun, map[string]any{"ok_a": map[string]any{"node": "ok_a", "attempt": 1, "input": map[string]any{"n": 2}}})
	if r := tb.run(okRun); r.StatusData["done"] != "yes" {
		t.Errorf("ok run's context write is missing: %v", r.StatusData)
	}

	if keys := tb.leaseKeys(); len(keys) != 0 {
		t.Errorf("leases left after the batch: %q", keys)
	}

	// The duplicate, retried alone, re-emits what its twin made ready.
	assertTargets(t, "duplicate retried", tb.mustHandle(dupStarts[0]), "dup_b:1")

	// Two copies of the finished job in one batch: the first re-emits,
	// its twin is answered 200 at once (the step is done with), not 409
	// to come back again and again.
	twins := tb.f.HandleBatch(tb.ctx, jobEvents(dupStarts[0], dupStarts[0]))
	assertResult(t, "first of two copies of a finished job", twins[0], http.StatusOK, "", "dup_b:1")
	assertResult(t, "second of two copies of a finished job", twins[1], http.StatusOK, "")
}

// A run cancelled while its node runs in a batch: that job is answered
// 200 without jobs and commits nothing; the rest of the batch commits.
func TestBatchRunCancelledWhileItsNodeRuns(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	gated, gatedStarts := tb.createRun(decodeBlueprint(t, gatedBlueprint), nil)
	other, otherStarts := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)
	done := make(chan []wire.Result, 1)
	go func() { done <- tb.f.HandleBatch(tb.ctx, jobEvents(gatedStarts[0], otherStarts[0])) }()
	tb.waitEntered()
	if st, err := tb.store.Cancel(tb.ctx, gated); err != nil || st != workflow.RunCancelled {
		t.Fatalf("cancel: %s %v", st, err)
	}
	var rs []wire.Result
	select {
	case rs = <-done: // the node was stopped when its run was seen cancelled
	case <-time.After(5 * time.Second):
		tb.gate.release <- "too late"
		rs = <-done
	}
	assertResult(t, "cancelled run's job", rs[0], http.StatusOK, "")
	assertResult(t, "other run's job", rs[1], http.StatusOK, "", "second:1")
	if s := tb.step(gated, "next"); s != nil {
		t.Errorf("cancelled run got a next step (%s)", s.State)
	}
	if s := tb.step(gated, "slow"); s.State != workflow.StepReady || s.Attempts != 0 {
		t.Errorf("the cancelled run's step: %s after %d attempts, want nothing committed", s.State, s.Attempts)
	}
	if r := tb.run(gated); r.Status != workflow.RunCancelled {
		t.Errorf("cancelled run is %s", r.Status)
	}
	if s := tb.step(other, "first"); s.State != workflow.StepSucceeded {
		t.Errorf("other run's first is %s", s.State)
	}
	if keys := tb.leaseKeys(); len(keys) != 0 {
		t.Errorf("leases left: %q", keys)
	}
}

// ---- 3. a held lease ----

func TestBatchLeaseHeld(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	held, heldStarts := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)
	free1, free1Starts := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)
	free2, free2Starts := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)
	key := wire.LeaseKey(tb.redisPrefix, held, "first")
	ok, err := tb.rdb.SetNX(tb.ctx, key, "other-delivery", time.Minute).Result()
	if err != nil || !ok {
		t.Fatalf("take the lease %s: %v %v", key, ok, err)
	}

	rs := tb.batch(jobEvents(free1Starts[0], heldStarts[0], free2Starts[0])...)

	assertResult(t, "free job before", rs[0], http.StatusOK, "", "second:1")
	assertResult(t, "leased job", rs[1], http.StatusConflict, "being run by another delivery")
	assertResult(t, "free job after", rs[2], http.StatusOK, "", "second:1")
	if n := tb.probes.count("first"); n != 2 {
		t.Errorf("first ran %d times, want 2 (not under the held lease)", n)
	}
	if s := tb.step(held, "first"); s.State != workflow.StepReady || s.Attempts != 0 {
		t.Errorf("leased step changed: %s after %d attempts", s.State, s.Attempts)
	}
	for _, id := range []string{free1, free2} {
		if s := tb.step(id, "first"); s.State != workflow.StepSucceeded {
			t.Errorf("run %s: first is %s", id, s.State)
		}
		if p := tb.pending(id); p != 1 {
			t.Errorf("run %s: pending %d, want 1", id, p)
		}
	}
	// The batch's own leases are gone; the other delivery's is untouched.
	if keys := tb.leaseKeys(); !slices.Equal(keys, []string{key}) {
		t.Errorf("lease keys after the batch: %q, want only the held %q", keys, key)
	}
	if v, err := tb.rdb.Get(tb.ctx, key).Result(); err != nil || v != "other-delivery" {
		t.Errorf("held lease is now %q (%v)", v, err)
	}
	if ttl, err := tb.rdb.PTTL(tb.ctx, key).Result(); err != nil || ttl < 50*time.Second {
		t.Errorf("held lease's TTL is %s (%v), want it untouched", ttl, err)
	}

	// Once the other delivery is done, the job runs.
	if err := tb.rdb.Del(tb.ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	rs = tb.batch(jobEvent(heldStarts[0]))
	assertResult(t, "after the lease", rs[0], http.StatusOK, "", "second:1")
	if keys := tb.leaseKeys(); len(keys) != 0 {
		t.Errorf("leases left: %q", keys)
	}
}

// ---- 4. HTTP ----

type batchReply struct {
	status int
	header http.Header
	body   string
	events []event.Event
}

func postBatch(t *testing.T, ctx context.Context, url, contentType string, body []byte) batchReply {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	r := batchReply{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), wire.BatchContentType) {
		if err := json.Unmarshal(b, &r.events); err != nil {
			t.Fatalf("batch reply is not a JSON array of CloudEvents: %v: %s", err, b)
		}
	}
	return r
}

func marshalBatch(t *testing.T, elems ...any) []byte {
	t.Helper()
	b, err := json.Marshal(elems)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withoutAttribute is e in structured JSON, without the named attribute.
func withoutAttribute(t *testing.T, e event.Event, attr string) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m[attr]; !ok {
		t.Fatalf("event JSON has no %q: %s", attr, b)
	}
	delete(m, attr)
	b, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// batchResults checks a batch reply's envelope against the request's events
// (200, content type, one result event per event, same ids in order) and
// returns the results.
func batchResults(t *testing.T, r batchReply, ids []string, subjects []string) []wire.Result {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("batch: status %d %q, want 200", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != wire.BatchContentType {
		t.Errorf("batch reply content type %q, want %q", ct, wire.BatchContentType)
	}
	if len(r.events) != len(ids) {
		t.Fatalf("batch reply holds %d events for %d jobs: %s", len(r.events), len(ids), r.body)
	}
	out := make([]wire.Result, len(ids))
	for i, e := range r.events {
		if e.ID() != ids[i] {
			t.Errorf("result %d: id %q, want %q (same ids, same order)", i, e.ID(), ids[i])
		}
		if e.Type() != wire.ResultEventType || e.Type() != "dev.stepflow.result.v1" {
			t.Errorf("result %d: type %q, want %q", i, e.Type(), wire.ResultEventType)
		}
		if e.Source() != wire.FunctionSource {
			t.Errorf("result %d: source %q", i, e.Source())
		}
		if subjects != nil && e.Subject() != subjects[i] {
			t.Errorf("result %d: subject %q, want %q", i, e.Subject(), subjects[i])
		}
		if err := e.Validate(); err != nil {
			t.Errorf("result %d is not a valid CloudEvent: %v", i, err)
		}
		if err := e.DataAs(&out[i]); err != nil {
			t.Fatalf("result %d: data %s: %v", i, e.Data(), err)
		}
	}
	return out
}

func TestBatchHTTP(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	srv := httptest.NewServer(tb.f)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	pair := decodeBlueprint(t, pairBlueprint)

	t.Run("a batch: 200, one result per job, same ids in order", func(t *testing.T) {
		r1, s1 := tb.createRun(pair, map[string]any{"k": 1})
		r2, s2 := tb.createRun(pair, map[string]any{"k": 2})
		jobs := []wire.Job{s1[0], job("ghost-run", "pair", "first", 1), s2[0]}
		events := jobEvents(jobs...)
		ids := []string{jobs[0].ID(), jobs[1].ID(), jobs[2].ID()}
		rep := postBatch(t, ctx, srv.URL, wire.BatchContentType, marshalBatch(t, events[0], events[1], events[2]))
		rs := batchResults(t, rep, ids, []string{r1, "ghost-run", r2})
		assertResult(t, "job of run 1", rs[0], http.StatusOK, "", "second:1")
		assertResult(t, "unknown run", rs[1], http.StatusUnprocessableEntity, `run "ghost-run" does not exist`)
		assertResult(t, "job of run 2", rs[2], http.StatusOK, "", "second:1")
		if len(rs[0].Jobs) == 1 && rs[0].Jobs[0].RunID != r1 {
			t.Errorf("run 1's result carries %s", rs[0].Jobs[0].ID())
		}
		if len(rs[2].Jobs) == 1 && rs[2].Jobs[0].RunID != r2 {
			t.Errorf("run 2's result carries %s", rs[2].Jobs[0].ID())
		}
		for _, id := range []string{r1, r2} {
			if s := tb.step(id, "first"); s.State != workflow.StepSucceeded || s.Attempts != 1 {
				t.Errorf("run %s: first is %s after %d attempts", id, s.State, s.Attempts)
			}
		}
		// The leases are given up once the answer is out: well within
		// their time to live, so not by expiry.
		if keys := tb.waitLeases(2 * time.Second); len(keys) != 0 {
			t.Errorf("leases left 2s after the batch: %q", keys)
		}

		// The raw JSON of a result.
		var raw []map[string]any
		if err := json.Unmarshal([]byte(rep.body), &raw); err != nil {
			t.Fatal(err)
		}
		if raw[1]["datacontenttype"] != event.ApplicationJSON {
			t.Errorf("result datacontenttype %v", raw[1]["datacontenttype"])
		}
		testenv.AssertJSON(t, "raw data of the 422 result", raw[1]["data"], map[string]any{"status": 422, "error": `run "ghost-run" does not exist`})
	})

	t.Run("content type with parameters is a batch", func(t *testing.T) {
		runID, starts := tb.createRun(pair, nil)
		rep := postBatch(t, ctx, srv.URL, wire.BatchContentType+"; charset=utf-8", marshalBatch(t, jobEvent(starts[0])))
		rs := batchResults(t, rep, []string{starts[0].ID()}, []string{runID})
		assertResult(t, "job", rs[0], http.StatusOK, "", "second:1")
	})

	t.Run("an invalid element gets its own 400, the others run", func(t *testing.T) {
		good, goodStarts := tb.createRun(pair, nil)
		bad, badStarts := tb.createRun(pair, nil)
		noSource := withoutAttribute(t, jobEvent(badStarts[0]), "source")
		noID := withoutAttribute(t, jobEvent(badStarts[0]), "id")
		rep := postBatch(t, ctx, srv.URL, wire.BatchContentType, marshalBatch(t, noSource, jobEvent(goodStarts[0]), noID))
		rs := batchResults(t, rep, []string{badStarts[0].ID(), goodStarts[0].ID(), "batch-event-2"}, nil)
		assertResult(t, "element without source", rs[0], http.StatusBadRequest, "source")
		assertResult(t, "valid element", rs[1], http.StatusOK, "", "second:1")
		assertResult(t, "element without id", rs[2], http.StatusBadRequest, "id")
		if s := tb.step(bad, "first"); s.State != workflow.StepReady || s.Attempts != 0 {
			t.Errorf("invalid element's step changed: %s after %d attempts", s.State, s.Attempts)
		}
		if s := tb.step(good, "first"); s.State != workflow.StepSucceeded {
			t.Errorf("valid element's step is %s", s.State)
		}
	})

	t.Run("rejected batches: 400, nothing runs", func(t *testing.T) {
		runID, starts := tb.createRun(pair, nil)
		tooMany := make([]any, wire.MaxBatch+1)
		for i := range tooMany {
			e := jobEvent(starts[0])
			e.SetID(fmt.Sprintf("%s/%d", starts[0].ID(), i))
			tooMany[i] = e
		}
		atMax := marshalBatch(t, tooMany[:wire.MaxBatch]...)
		for _, tc := range []struct {
			name, contentType string
			body              []byte
			mention           string
		}{
			{"empty array", wire.BatchContentType, []byte(`[]`), "1 to 256"},
			{"null", wire.BatchContentType, []byte(`null`), "1 to 256"},
			{"more than MaxBatch events", wire.BatchContentType, marshalBatch(t, tooMany...), fmt.Sprint(wire.MaxBatch + 1)},
			{"not JSON", wire.BatchContentType, []byte(`this is not JSON`), "not a CloudEvents batch"},
			{"a JSON object, not an array", wire.BatchContentType, mustJSON(t, jobEvent(starts[0])), "not a CloudEvents batch"},
			{"truncated array", wire.BatchContentType, atMax[:len(atMax)/2], "not a CloudEvents batch"},
		} {
			rep := postBatch(t, ctx, srv.URL, tc.contentType, tc.body)
			if rep.status != http.StatusBadRequest || !strings.Contains(rep.body, tc.mention) {
				t.Errorf("%s: status %d body %q, want 400 mentioning %q", tc.name, rep.status, rep.body, tc.mention)
			}
		}
		if s := tb.step(runID, "first"); s.State != workflow.StepReady || s.Attempts != 0 {
			t.Errorf("a rejected batch ran its job: %s after %d attempts", s.State, s.Attempts)
		}
		if keys := tb.waitLeases(2 * time.Second); len(keys) != 0 {
			t.Errorf("leases left: %q", keys)
		}

		// MaxBatch events are accepted (all but one are duplicates: 409).
		rep := postBatch(t, ctx, srv.URL, wire.BatchContentType, atMax)
		ids := make([]string, wire.MaxBatch)
		for i := range ids {
			ids[i] = fmt.Sprintf("%s/%d", starts[0].ID(), i)
		}
		rs := batchResults(t, rep, ids, nil)
		assertResult(t, "first of MaxBatch copies", rs[0], http.StatusOK, "", "second:1")
		for i := 1; i < len(rs); i++ {
			if rs[i].Status != http.StatusConflict {
				t.Fatalf("copy %d of one job in a batch: status %d, want 409", i, rs[i].Status)
			}
		}
	})

	t.Run("the one-event forms still work", func(t *testing.T) {
		runID, starts := tb.createRun(pair, nil)
		r := post(t, ctx, srv.URL, jobEvent(starts[0]))
		if r.status != http.StatusOK || r.event == nil {
			t.Fatalf("binary mode: status %d body %q, want 200 with a jobs event", r.status, r.body)
		}
		if r.event.Type() != wire.JobsEventType || r.event.Subject() != runID {
			t.Errorf("binary mode reply: type %q subject %q", r.event.Type(), r.event.Subject())
		}
		assertTargets(t, "binary mode", replyJobs(t, r.event), "second:1")
		// Nothing follows: 200 without an event.
		if keys := tb.waitLeases(2 * time.Second); len(keys) != 0 {
			t.Fatalf("leases left: %q", keys)
		}
		last := post(t, ctx, srv.URL, jobEvent(job(runID, "pair", "second", 1)))
		if last.status != http.StatusOK || last.event != nil || last.body != "" {
			t.Errorf("last step: %d event %v body %q, want 200 without an event", last.status, last.event, last.body)
		}
		tb.assertCompleted(runID, nil)
		// Errors are plain statuses.
		r = post(t, ctx, srv.URL, jobEvent(job("ghost-run", "pair", "first", 1)))
		if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, `run "ghost-run" does not exist`) {
			t.Errorf("binary mode, unknown run: %d %q", r.status, r.body)
		}
		// Structured mode, one event.
		other, otherStarts := tb.createRun(pair, nil)
		body, err := json.Marshal(jobEvent(otherStarts[0]))
		if err != nil {
			t.Fatal(err)
		}
		rep := postBatch(t, ctx, srv.URL, event.ApplicationCloudEventsJSON, body)
		if rep.status != http.StatusOK || rep.header.Get("Ce-Type") != wire.JobsEventType {
			t.Errorf("structured mode: %d %v %q, want 200 with a jobs event", rep.status, rep.header, rep.body)
		} else if !strings.Contains(rep.body, `"second"`) {
			t.Errorf("structured mode reply %q does not name the next job", rep.body)
		}
		if s := tb.step(other, "first"); s.State != workflow.StepSucceeded {
			t.Errorf("structured mode: first is %s", s.State)
		}
	})
}

// ---- 5. fallback ----

const fallbackBlueprint = `{"id": "fb", "nodes": [
  {"id": "fb_start", "uses": "probe"},
  {"id": "charge", "uses": "probe", "params": {"fail": "card declined"}, "config": {"fallback": "refund"}},
  {"id": "refund", "uses": "probe"},
  {"id": "audit", "uses": "probe"},
  {"id": "fb_join", "uses": "probe"}],
 "edges": [{"source": "fb_start", "target": "charge"}, {"source": "fb_start", "target": "audit"},
           {"source": "charge", "target": "fb_join"}, {"source": "audit", "target": "fb_join"}]}`

// A node failing into its fallback beside its sibling, then the fallback
// beside a step of another run: each commits as it would alone.
func TestBatchFallback(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	fb := decodeBlueprint(t, fallbackBlueprint)
	pair := decodeBlueprint(t, pairBlueprint)
	runID, starts := tb.createRun(fb, map[string]any{"amount": 5})
	otherRun, otherStarts := tb.createRun(pair, map[string]any{"o": true})
	assertTargetSet(t, "fb start", tb.mustHandle(starts[0]), "charge:1", "audit:1")

	// Batch 1: charge fails for good (its fallback follows) beside its
	// sibling audit and another run's first step.
	rs := tb.batch(jobEvents(job(runID, "fb", "charge", 1), otherStarts[0], job(runID, "fb", "audit", 1))...)
	assertResult(t, "charge", rs[0], http.StatusOK, "", "refund:1")
	assertResult(t, "other run's first", rs[1], http.StatusOK, "", "second:1")
	assertResult(t, "audit", rs[2], http.StatusOK, "") // the join waits for charge
	if len(rs[0].Jobs) == 1 && rs[0].Jobs[0].DelayMs != 0 {
		t.Errorf("fallback delayed %d ms", rs[0].Jobs[0].DelayMs)
	}
	if s := tb.step(runID, "charge"); s.State != workflow.StepAwaitingFallback || s.Error != "card declined" || s.Attempts != 1 {
		t.Errorf("charge: %s after %d attempts (%q), want awaiting_fallback", s.State, s.Attempts, s.Error)
	}
	if s := tb.step(runID, "refund"); s == nil || s.State != workflow.StepReady {
		t.Errorf("refund: %+v, want ready", s)
	}
	if s := tb.step(runID, "fb_join"); s != nil {
		t.Errorf("fb_join made %s before charge is recovered", s.State)
	}
	if p := tb.pending(runID); p != 1 {
		t.Errorf("fb run after batch 1: pending %d, want 1 (refund)", p)
	}
	if p := tb.pending(otherRun); p != 1 {
		t.Errorf("other run after batch 1: pending %d, want 1", p)
	}

	// Batch 2: the fallback beside the other run's last step.
	rs = tb.batch(jobEvents(job(otherRun, "pair", "second", 1), job(runID, "fb", "refund", 1))...)
	assertResult(t, "other run's second", rs[0], http.StatusOK, "")
	assertResult(t, "refund", rs[1], http.StatusOK, "", "fb_join:1")
	if s := tb.step(runID, "charge"); s.State != workflow.StepRecovered {
		t.Errorf("charge is %s after its fallback, want recovered", s.State)
	}
	if p := tb.pending(runID); p != 1 {
		t.Errorf("fb run after batch 2: pending %d, want 1 (fb_join)", p)
	}
	second := map[string]any{"node": "first", "attempt": 1, "input": map[string]any{"o": true}}
	tb.assertCompleted(otherRun, map[string]any{"first": second,
		"second": map[string]any{"node": "second", "attempt": 1, "input": second}})

	// Redeliveries in a batch answer what they answer alone: charge
	// re-emits what its recovery routed to while that is pending; refund
	// (no edges of its own) whatever its stored routing says.
	rs = tb.batch(jobEvents(job(runID, "fb", "charge", 1), job(runID, "fb", "refund", 1))...)
	assertResult(t, "charge redelivered", rs[0], http.StatusOK, "", "fb_join:1")
	alone := tb.mustHandle(job(runID, "fb", "refund", 1))
	assertResult(t, "refund redelivered", rs[1], http.StatusOK, "", targets(alone)...)

	tb.deliverAll(nil, job(runID, "fb", "fb_join", 1))
	start := map[string]any{"node": "fb_start", "attempt": 1, "input": map[string]any{"amount": 5}}
	refund := map[string]any{"node": "refund", "attempt": 1, "input": start}
	audit := map[string]any{"node": "audit", "attempt": 1, "input": start}
	tb.assertCompleted(runID, map[string]any{"charge": refund, "refund": refund, "audit": audit,
		"fb_join": map[string]any{"node": "fb_join", "attempt": 1, "input": map[string]any{"charge": refund, "audit": audit}}})
	for id, want := range map[string]int{"charge": 1, "refund": 1, "audit": 1, "fb_join": 1} {
		if n := tb.probes.count(id); n != want {
			t.Errorf("%s ran %d times, want %d", id, n, want)
		}
	}
}

// ---- 6. concurrency ----

// sendConcurrently sends each batch from its own goroutine, all released
// at once, and returns the results by batch.
func (tb *testBundle) sendConcurrently(batches [][]wire.Job) [][]wire.Result {
	out := make([][]wire.Result, len(batches))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, b := range batches {
		wg.Go(func() {
			<-start
			out[i] = tb.f.HandleBatch(tb.ctx, jobEvents(b...))
		})
	}
	close(start)
	wg.Wait()
	return out
}

// Fan-out runs whose branch jobs are shuffled across concurrent batches:
// no deadlock (never 503), each join made ready once, every run completes.
func TestBatchConcurrentFanOuts(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := fanBlueprint(t, fanWidth)
	const runs, batches = 20, 4

	// Several rounds, each with its own shuffles: a lock-order deadlock
	// needs two commits to interleave, which a single round may miss.
	for round, dup := range []bool{false, true, false, true, false} {
		name := fmt.Sprintf("round %d, each job once", round)
		if dup {
			name = fmt.Sprintf("round %d, each job twice", round)
		}
		var fans []fanRun
		var all []wire.Job
		for i := range runs {
			r := tb.startFan(bp, i%2 == 0)
			fans = append(fans, r)
			all = append(all, r.branches...)
			if dup {
				all = append(all, r.branches...)
			}
		}
		joinsBefore := tb.probes.count("join")

		// joins[run] counts the results that carried its join.
		joins := map[string]int{}
		todo := all
		for try := 0; len(todo) > 0; try++ {
			if try == 20 {
				t.Fatalf("%s: %d jobs still turned away (409) after 20 tries", name, len(todo))
			}
			rand.Shuffle(len(todo), func(i, j int) { todo[i], todo[j] = todo[j], todo[i] })
			split := make([][]wire.Job, batches)
			for i, j := range todo {
				split[i%batches] = append(split[i%batches], j)
			}
			var again []wire.Job
			for b, rs := range tb.sendConcurrently(split) {
				for i, r := range rs {
					j := split[b][i]
					switch r.Status {
					case http.StatusOK:
					case http.StatusConflict:
						again = append(again, j)
						continue
					default:
						t.Fatalf("%s, try %d: %s: status %d (%s), want 200 or 409", name, try, j.ID(), r.Status, r.Error)
					}
					for _, nj := range r.Jobs {
						if nj.RunID != j.RunID || nj.NodeID != "join" || nj.Attempt != 1 {
							t.Errorf("%s: %s carries %s, want nothing or its run's join", name, j.ID(), nj.ID())
							continue
						}
						joins[nj.RunID]++
					}
				}
			}
			todo = again
		}
		for _, r := range fans {
			switch n := joins[r.id]; {
			case n == 0:
				t.Errorf("%s: run %s's join was never made ready", name, r.id)
			case n > 1 && !dup:
				t.Errorf("%s: run %s's join carried by %d results, want exactly 1", name, r.id, n)
			}
			tb.assertBranchesDone(r)
		}
		if t.Failed() {
			t.FailNow()
		}

		// The joins, then the ends, as concurrent batches too.
		for _, node := range []string{"join", "end"} {
			var jobs []wire.Job
			for _, r := range fans {
				jobs = append(jobs, job(r.id, "fan", node, 1))
			}
			split := [][]wire.Job{jobs[:runs/2], jobs[runs/2:]}
			for b, rs := range tb.sendConcurrently(split) {
				for i, r := range rs {
					want := []string{"end:1"}
					if node == "end" {
						want = nil
					}
					assertResult(t, name+": "+split[b][i].ID(), r, http.StatusOK, "", want...)
				}
			}
		}
		for _, r := range fans {
			tb.assertCompleted(r.id, r.outputs())
			if p := tb.pending(r.id); p != 0 {
				t.Errorf("%s: run %s completed with pending %d", name, r.id, p)
			}
		}
		if n := tb.probes.count("join") - joinsBefore; n != runs {
			t.Errorf("%s: joins ran %d times in %d runs", name, n, runs)
		}
		if keys := tb.leaseKeys(); len(keys) != 0 {
			t.Errorf("%s: leases left: %q", name, keys)
		}
	}
	if n := tb.probes.count("b5"); n != 5*runs {
		t.Errorf("b5 ran %d times in %d runs", n, 5*runs)
	}
}

// ---- an outcome PostgreSQL cannot store ----

// A node whose output PostgreSQL rejects (a string with a NUL character:
// jsonb has no \u0000) cannot be committed: alone its job is answered 503.
// In a batch it must not take the other jobs down with it: they commit and
// get what they get alone.
func TestBatchUnstorableOutcomeFailsOnlyItsJob(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	poisonBP := decodeBlueprint(t, `{"id": "poison", "nodes": [
	  {"id": "nul", "uses": "transform", "params": {"expression": "\"x\\u0000y\""}},
	  {"id": "after_nul", "uses": "probe"}],
	 "edges": [{"source": "nul", "target": "after_nul"}]}`)
	pair := decodeBlueprint(t, pairBlueprint)

	// Alone.
	poison, poisonStarts := tb.createRun(poisonBP, nil)
	_, err := tb.handle(nil, poisonStarts[0])
	aloneStatus := status(err)
	if aloneStatus < 400 {
		t.Fatalf("the unstorable outcome alone: %v, want an error status", err)
	}

	// In a batch, between two healthy jobs of other runs.
	before, beforeStarts := tb.createRun(pair, nil)
	after, afterStarts := tb.createRun(pair, nil)
	rs := tb.batch(jobEvents(beforeStarts[0], poisonStarts[0], afterStarts[0])...)

	if rs[1].Status != aloneStatus {
		t.Errorf("the unstorable outcome in a batch: status %d (%s), want %d as alone", rs[1].Status, rs[1].Error, aloneStatus)
	}
	assertResult(t, "healthy job before it", rs[0], http.StatusOK, "", "second:1")
	assertResult(t, "healthy job after it", rs[2], http.StatusOK, "", "second:1")
	for _, id := range []string{before, after} {
		if s := tb.step(id, "first"); s.State != workflow.StepSucceeded {
			t.Errorf("run %s: its first step is %s after the batch, want succeeded (committed despite another job's bad outcome)", id, s.State)
		}
	}
	if s := tb.step(poison, "nul"); s.State != workflow.StepReady || s.Attempts != 0 {
		t.Errorf("the unstorable step: %s after %d attempts, want ready, untouched", s.State, s.Attempts)
	}
}

// ---- skips and an any-join over several steps of a run ----

// Two runs' parallel steps in one batch: where their conditions route
// nowhere the skips propagate (and a run with nothing left completes);
// an any-join fed by three of them is made ready once.
func TestBatchSkipsAndAnyJoin(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "sk", "nodes": [
	  {"id": "sk_start", "uses": "probe"},
	  {"id": "p1", "uses": "probe"}, {"id": "p2", "uses": "probe"}, {"id": "p3", "uses": "probe"},
	  {"id": "x", "uses": "probe"}, {"id": "y", "uses": "probe"},
	  {"id": "anyj", "uses": "probe", "config": {"joinStrategy": "any"}}],
	 "edges": [{"source": "sk_start", "target": "p1"}, {"source": "sk_start", "target": "p2"}, {"source": "sk_start", "target": "p3"},
	  {"source": "p1", "target": "x", "condition": "context.go == true"},
	  {"source": "p2", "target": "x", "condition": "context.go == true"},
	  {"source": "x", "target": "y"},
	  {"source": "p1", "target": "anyj", "condition": "context.any == true"},
	  {"source": "p2", "target": "anyj", "condition": "context.any == true"},
	  {"source": "p3", "target": "anyj", "condition": "context.any == true"}]}`)
	// stop: nothing taken anywhere; any: only the any-join; both: everything.
	stop, stopStarts := tb.createRun(bp, map[string]any{"go": false, "any": false})
	anyRun, anyStarts := tb.createRun(bp, map[string]any{"go": false, "any": true})
	both, bothStarts := tb.createRun(bp, map[string]any{"go": true, "any": true})
	for _, s := range [][]wire.Job{stopStarts, anyStarts, bothStarts} {
		assertTargetSet(t, "sk_start", tb.mustHandle(s[0]), "p1:1", "p2:1", "p3:1")
	}

	var jobs []wire.Job
	for _, p := range []string{"p3", "p1", "p2"} {
		for _, id := range []string{stop, anyRun, both} {
			jobs = append(jobs, job(id, "sk", p, 1))
		}
	}
	rs := tb.batch(jobEvents(jobs...)...)

	ready := map[string][]string{} // run → jobs made ready, as node:attempt
	for i, r := range rs {
		if r.Status != http.StatusOK {
			t.Fatalf("%s: status %d (%s)", jobs[i].ID(), r.Status, r.Error)
		}
		for _, nj := range r.Jobs {
			if nj.RunID != jobs[i].RunID {
				t.Errorf("%s carries %s", jobs[i].ID(), nj.ID())
			}
			ready[nj.RunID] = append(ready[nj.RunID], targets([]wire.NextJob{nj})...)
		}
	}
	for id, want := range map[string][]string{stop: nil, anyRun: {"anyj:1"}, both: {"anyj:1", "x:1"}} {
		got := ready[id]
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("run %s: made ready %q, want %q", id, got, want)
		}
	}

	// stop: x and y skipped, nothing pending: completed by the batch.
	for _, n := range []string{"x", "y", "anyj"} {
		if s := tb.step(stop, n); s == nil || s.State != workflow.StepSkipped {
			t.Errorf("run stop: %s is %+v, want skipped", n, s)
		}
	}
	start := func(in map[string]any) map[string]any {
		return map[string]any{"node": "sk_start", "attempt": 1, "input": in}
	}
	p := func(id string, in map[string]any) map[string]any {
		return map[string]any{"node": id, "attempt": 1, "input": start(in)}
	}
	stopIn := map[string]any{"go": false, "any": false}
	tb.assertCompleted(stop, map[string]any{"p1": p("p1", stopIn), "p2": p("p2", stopIn), "p3": p("p3", stopIn)})

	// any: x, y skipped; the any-join pending.
	for _, n := range []string{"x", "y"} {
		if s := tb.step(anyRun, n); s == nil || s.State != workflow.StepSkipped {
			t.Errorf("run any: %s is %+v, want skipped", n, s)
		}
	}
	if pn := tb.pending(anyRun); pn != 1 {
		t.Errorf("run any: pending %d, want 1", pn)
	}
	// both: x (an all-join of p1 and p2) and the any-join pending.
	if pn := tb.pending(both); pn != 2 {
		t.Errorf("run both: pending %d, want 2", pn)
	}
	bothIn := map[string]any{"go": true, "any": true}
	if s := tb.step(both, "x"); s == nil || s.State != workflow.StepReady {
		t.Errorf("run both: x is %+v, want ready", s)
	} else {
		testenv.AssertJSON(t, "x's input", s.Input, map[string]any{"p1": p("p1", bothIn), "p2": p("p2", bothIn)})
	}

	tb.deliverAll(nil, job(anyRun, "sk", "anyj", 1), job(both, "sk", "anyj", 1), job(both, "sk", "x", 1))
	// The any-join's input is one arrival: the delivery of one of the
	// three (all arrived in the same commit).
	anyIn := map[string]any{"go": false, "any": true}
	r := tb.assertCompleted(anyRun, nil)
	out, _ := r.StatusData[workflow.OutputKey("anyj")].(map[string]any)
	in, _ := out["input"].(map[string]any)
	if from, _ := in["node"].(string); !slices.Contains([]string{"p1", "p2", "p3"}, from) {
		t.Errorf("run any: the any-join's input %v is no predecessor's delivery", in)
	} else {
		testenv.AssertJSON(t, "the any-join's output", out, map[string]any{"node": "anyj", "attempt": 1, "input": p(from, anyIn)})
	}
	tb.assertCompleted(both, nil)
	if n := tb.probes.count("anyj"); n != 2 {
		t.Errorf("anyj ran %d times in 2 runs", n)
	}
}
