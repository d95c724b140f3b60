package function_test

// Loops and batches through the step function against the real PostgreSQL
// and Redis: each iteration and each batch worker is a step of its own,
// keyed by its step key, and the run ends as the local runner (which
// passes Flowcraft's conformance corpus) ends it.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// local runs bp in-process: what the stack must agree with.
func (tb *testBundle) local(bp *workflow.Blueprint, runID string, input map[string]any) *workflow.RunResult {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	res, err := workflow.Run(ctx, bp, tb.reg, input, workflow.RunOptions{RunID: runID})
	if err != nil {
		tb.t.Fatalf("local run: %v", err)
	}
	return res
}

// assertLikeLocal checks that the stack's run runID of bp ended as the
// local runner's run of the same blueprint, input and run id.
func (tb *testBundle) assertLikeLocal(bp *workflow.Blueprint, runID string, input map[string]any) *workflow.RunResult {
	tb.t.Helper()
	want := tb.local(bp, runID, input)
	got := tb.run(runID)
	if got.Status != want.Status {
		tb.t.Fatalf("run %s is %s (%s), the local run %s (%+v)", runID, got.Status, got.Error, want.Status, want.Errors)
	}
	if want.Status == workflow.RunCompleted {
		testenv.AssertJSON(tb.t, "final context", got.StatusData, want.Context)
	}
	return want
}

// createRunWithID is createRun with a chosen run id (so that batch ids,
// which derive from it, match a local run's).
func (tb *testBundle) createRunWithID(runID string, bp *workflow.Blueprint, input map[string]any) []wire.Job {
	tb.t.Helper()
	w, err := workflow.Compile(bp, tb.reg)
	if err != nil {
		tb.t.Fatalf("compile: %v", err)
	}
	starts, err := tb.store.CreateRun(tb.ctx, runID, w, input)
	if err != nil {
		tb.t.Fatalf("create run: %v", err)
	}
	jobs := make([]wire.Job, len(starts))
	for i, id := range starts {
		jobs[i] = wire.Job{RunID: runID, BlueprintID: bp.ID, NodeID: id, Attempt: 1}
	}
	return jobs
}

func stepKeys(t *testing.T, tb *testBundle, runID string) []string {
	t.Helper()
	steps, err := tb.store.Steps(tb.ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range steps {
		out = append(out, s.NodeID+"="+string(s.State))
	}
	slices.Sort(out)
	return out
}

func TestLoopRunsItsIterationsAsSteps(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "loop")
	runID := "loop-" + testenv.RandomHex(6)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, nil)...)
	tb.assertLikeLocal(bp, runID, nil)
	r := tb.run(runID)
	testenv.AssertJSON(t, "liftoff's output", r.StatusData["_outputs.liftoff"], map[string]any{"liftoff": true, "last": 0})
	testenv.AssertJSON(t, "tick's (last) output", r.StatusData["tick"], 0)
	want := []string{"countdown#0=succeeded", "countdown#1=succeeded", "countdown#2=succeeded", "countdown#3=succeeded", "countdown=succeeded",
		"init=succeeded", "liftoff=succeeded", "tick#1=succeeded", "tick#2=succeeded", "tick#3=succeeded"}
	if got := stepKeys(t, tb, runID); !slices.Equal(got, want) {
		t.Errorf("steps %v, want %v", got, want)
	}
	tick := tb.step(runID, "tick#2")
	if tick.Node != "tick" || tick.Iteration != 2 {
		t.Errorf("step tick#2 is stored as node %q iteration %d, want tick 2", tick.Node, tick.Iteration)
	}
}

func TestLoopJobsCarryStepKeys(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "loop")
	runID, starts := tb.createRun(bp, nil)
	next := tb.mustHandle(starts[0]) // init → countdown#0
	if len(next) != 1 || next[0].NodeID != "countdown" || next[0].StepKey != "countdown#0" || next[0].ID() != runID+":countdown#0:1" {
		t.Fatalf("after init: %+v, want the job of countdown#0", next)
	}
	next = tb.mustHandle(next[0].Job) // countdown#0 → tick#1
	if len(next) != 1 || next[0].NodeID != "tick" || next[0].StepKey != "tick#1" {
		t.Fatalf("after countdown#0: %+v, want the job of tick#1", next)
	}
	tick1 := next[0].Job
	again := tb.mustHandle(tick1)
	if len(again) != 1 || again[0].StepKey != "countdown#1" {
		t.Fatalf("after tick#1: %+v, want the job of countdown#1", again)
	}
	// A redelivery of tick#1 runs nothing and re-emits countdown#1.
	redelivered := tb.mustHandle(tick1)
	if len(redelivered) != 1 || redelivered[0].StepKey != "countdown#1" {
		t.Fatalf("tick#1 redelivered: %+v, want countdown#1 re-emitted", redelivered)
	}
	if n := tb.run(runID).Pending; n != 1 {
		t.Errorf("pending %d after a redelivery, want 1", n)
	}
	// A job naming a step of another node, or a loop node without its
	// iteration, is refused.
	for _, bad := range []wire.Job{
		{RunID: runID, BlueprintID: bp.ID, NodeID: "init", StepKey: "tick#1", Attempt: 1},
		{RunID: runID, BlueprintID: bp.ID, NodeID: "tick", Attempt: 1},
	} {
		if _, err := tb.handle(nil, bad); status(err) != 422 || !strings.Contains(err.Error(), "tick") {
			t.Errorf("job %+v: %v (status %d), want 422 naming the step", bad, err, status(err))
		}
	}
}

func TestLoopMaxIterationsFailsTheRunNamingTheController(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "runaway", "nodes": [
		{"id": "init", "uses": "set-context", "params": {"values": {"n": 10}}},
		{"id": "spin", "uses": "loop-controller", "params": {"condition": "n > 0", "maxIterations": 3}, "config": {"joinStrategy": "any"}},
		{"id": "tick", "uses": "decrement", "params": {"key": "n"}},
		{"id": "after", "uses": "noop"}],
		"edges": [{"source": "init", "target": "spin"}, {"source": "spin", "target": "tick", "action": "continue"},
			{"source": "tick", "target": "spin"}, {"source": "spin", "target": "after", "action": "break"}]}`)
	runID := "runaway-" + testenv.RandomHex(6)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, nil)...)
	local := tb.assertLikeLocal(bp, runID, nil)
	r := tb.run(runID)
	if r.Status != workflow.RunFailed || !strings.Contains(r.Error, `loop-controller "spin": maxIterations 3`) || r.StatusData["nodeId"] != "spin" {
		t.Fatalf("run %s: %q, status data %v; want failed by spin's maxIterations", r.Status, r.Error, r.StatusData)
	}
	if len(local.Errors) == 0 || !strings.Contains(r.Error, local.Errors[0].Message) {
		t.Errorf("error %q, the local run's %+v", r.Error, local.Errors)
	}
	if s := tb.step(runID, "spin#3"); s == nil || s.State != workflow.StepFailed {
		t.Errorf("step spin#3: %+v, want failed", s)
	}
}

func TestLoopFallbackRunsInItsIteration(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "loop-fallback", "nodes": [
		{"id": "init", "uses": "set-context", "params": {"values": {"n": 2}}},
		{"id": "check", "uses": "loop-controller", "params": {"condition": "n > 0"}, "config": {"joinStrategy": "any"}},
		{"id": "work", "uses": "probe", "params": {"fail": "down"}, "config": {"fallback": "rescue"}},
		{"id": "rescue", "uses": "decrement", "params": {"key": "n"}},
		{"id": "end", "uses": "noop"}],
		"edges": [{"source": "init", "target": "check"}, {"source": "check", "target": "work", "action": "continue"},
			{"source": "work", "target": "check"}, {"source": "check", "target": "end", "action": "break"}]}`)
	runID := "fb-" + testenv.RandomHex(6)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, nil)...)
	tb.assertLikeLocal(bp, runID, nil)
	for _, k := range []string{"work#1", "work#2"} {
		if s := tb.step(runID, k); s == nil || s.State != workflow.StepRecovered {
			t.Errorf("step %s: %+v, want recovered", k, s)
		}
	}
	for _, k := range []string{"rescue#1", "rescue#2"} {
		if s := tb.step(runID, k); s == nil || s.State != workflow.StepSucceeded {
			t.Errorf("step %s: %+v, want succeeded", k, s)
		}
	}
}

func TestBatchExampleGathersInItemOrder(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := testenv.Example(t, "batch")
	input := map[string]any{"items": []any{
		map[string]any{"sku": "KB-101", "qty": 1, "price": 89.9},
		map[string]any{"sku": "MS-202", "qty": 2, "price": 24.5},
		map[string]any{"sku": "CB-303", "qty": 3, "price": 4.99},
	}}
	runID := "batch-" + testenv.RandomHex(6)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, input)...)
	tb.assertLikeLocal(bp, runID, input)
}

// batchBlueprint scatters input.items over probe workers, chunk at a
// time (0: all at once), into gather, which end follows.
func batchBlueprint(t *testing.T, chunk int) *workflow.Blueprint {
	t.Helper()
	chunkParam := ""
	if chunk > 0 {
		chunkParam = fmt.Sprintf(`, "chunkSize": %d`, chunk)
	}
	return decodeBlueprint(t, `{"id": "probe-batch", "nodes": [
		{"id": "scatter", "uses": "batch-scatter", "inputs": "items", "params": {"workerUsesKey": "probe", "gatherNodeId": "gather"`+chunkParam+`}},
		{"id": "gather", "uses": "batch-gather", "params": {"outputKey": "results"}},
		{"id": "end", "uses": "transform", "inputs": "results", "params": {"expression": "len(input)"}}],
		"edges": [{"source": "scatter", "target": "gather"}, {"source": "gather", "target": "end"}]}`)
}

func items(n int) map[string]any {
	xs := make([]any, n)
	for i := range xs {
		xs[i] = i
	}
	return map[string]any{"items": xs}
}

// assertGathered checks that the run's gather got every worker's output
// in item order, and that each worker ran once.
func (tb *testBundle) assertGathered(runID string, n int) {
	tb.t.Helper()
	r := tb.run(runID)
	results, _ := r.StatusData["results"].([]any)
	if len(results) != n {
		tb.t.Fatalf("results has %d entries, want %d: %v", len(results), n, r.StatusData["results"])
	}
	batch := workflow.BatchID(runID, "scatter")
	for i, res := range results {
		m, _ := res.(map[string]any)
		worker := fmt.Sprintf("probe_%s_%d", batch, i)
		if m["node"] != worker || m["input"] != float64(i) {
			tb.t.Errorf("results[%d] = %v, want the output of %s for item %d", i, res, worker, i)
		}
		if c := tb.probes.count(worker); c != 1 {
			tb.t.Errorf("worker %s ran %d times, want once", worker, c)
		}
	}
}

func TestBatchOf50GathersInItemOrder(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := batchBlueprint(t, 0)
	runID := "b50-" + testenv.RandomHex(6)
	input := items(50)
	starts := tb.createRunWithID(runID, bp, input)
	workers := tb.mustHandle(starts[0])
	if len(workers) != 50 {
		t.Fatalf("the scatter's reply has %d jobs, want its 50 workers", len(workers))
	}
	// Delivered in reverse: the gather still waits for every worker and
	// gets their outputs in item order.
	var rest []wire.Job
	for i := len(workers) - 1; i >= 0; i-- {
		next := tb.mustHandle(workers[i].Job)
		if i > 0 && len(next) > 0 {
			t.Fatalf("worker %d of 50 made %v ready before the last worker finished", 50-i, targets(next))
		}
		for _, nj := range next {
			rest = append(rest, nj.Job)
		}
	}
	if len(rest) != 1 || rest[0].NodeID != "gather" {
		t.Fatalf("the last worker made %v ready, want gather", rest)
	}
	tb.deliverAll(nil, rest...)
	tb.assertGathered(runID, 50)
	tb.assertLikeLocal(bp, runID, input)
	var counted []int32
	if err := tb.pool.QueryRow(tb.ctx, `SELECT dynamic_resolved FROM `+tb.tables.Steps+` WHERE run_id = $1 AND node_id = 'scatter'`, runID).Scan(&counted); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(counted, []int32{50}) {
		t.Errorf("the scatter counts %v resolved workers, want [50]", counted)
	}
}

func TestBatchChunksRunAWaveAtATime(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := batchBlueprint(t, 4)
	runID := "chunk-" + testenv.RandomHex(6)
	input := items(10)
	starts := tb.createRunWithID(runID, bp, input)
	wave := tb.mustHandle(starts[0])
	var sizes []int
	for len(wave) > 0 && wave[0].NodeID != "gather" {
		sizes = append(sizes, len(wave))
		var next []wire.NextJob
		for i, j := range wave {
			got := tb.mustHandle(j.Job)
			if i < len(wave)-1 && len(got) > 0 {
				t.Fatalf("a worker before its wave's last made %v ready", targets(got))
			}
			next = append(next, got...)
		}
		wave = next
	}
	if !slices.Equal(sizes, []int{4, 4, 2}) {
		t.Errorf("waves of %v workers, want [4 4 2]", sizes)
	}
	tb.deliverAll(nil, wave[0].Job)
	tb.assertGathered(runID, 10)
	tb.assertLikeLocal(bp, runID, input)
}

func TestBatchRedeliveredScatterCreatesNoSecondSet(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := batchBlueprint(t, 0)
	runID := "redeliver-" + testenv.RandomHex(6)
	input := items(5)
	starts := tb.createRunWithID(runID, bp, input)
	first := tb.mustHandle(starts[0])
	again := tb.mustHandle(starts[0]) // the same job, delivered again
	if got, want := targets(again), targets(first); !slices.Equal(got, want) || len(first) != 5 {
		t.Fatalf("the redelivered scatter re-emitted %v, want the same 5 workers %v", got, want)
	}
	countRows := func() int {
		var n int
		if err := tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM `+tb.tables.Steps+` WHERE run_id = $1`, runID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := countRows(); n != 6 {
		t.Fatalf("%d step rows after the redelivered scatter, want the scatter and its 5 workers", n)
	}
	if p := tb.run(runID).Pending; p != 5 {
		t.Errorf("pending %d, want 5", p)
	}
	// A redelivered worker runs once; its redelivery re-emits nothing
	// while the gather is not ready.
	if next := tb.mustHandle(first[0].Job); len(next) != 0 {
		t.Fatalf("worker 0 made %v ready", targets(next))
	}
	if next := tb.mustHandle(first[0].Job); len(next) != 0 {
		t.Fatalf("worker 0 redelivered made %v ready", targets(next))
	}
	var jobs []wire.Job
	for _, j := range first {
		jobs = append(jobs, j.Job)
	}
	tb.deliverAll(nil, jobs...)
	tb.assertGathered(runID, 5)
	tb.assertLikeLocal(bp, runID, input)
	if n := countRows(); n != 8 {
		t.Errorf("%d step rows, want 8 (scatter, 5 workers, gather, end)", n)
	}
}

func TestBatchOfNoItemsGathersAnEmptyList(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := batchBlueprint(t, 0)
	runID := "empty-" + testenv.RandomHex(6)
	input := items(0)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, input)...)
	tb.assertLikeLocal(bp, runID, input)
	testenv.AssertJSON(t, "results", tb.run(runID).StatusData["results"], []any{})
}

func TestGoNodeCreatesDynamicNodes(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.reg.Register("split", func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		var ds []workflow.DynamicNode
		for i, part := range []string{"a", "b", "c"} {
			ds = append(ds, workflow.DynamicNode{ID: fmt.Sprintf("part_%s_%d", workflow.BatchID(in.RunID, in.Key()), i), Uses: "transform",
				Params: map[string]any{"expression": fmt.Sprintf("%q + %q", part, "!")}})
		}
		return workflow.NodeResult{Output: "split", DynamicNodes: ds, Gather: "join"}, nil
	})
	tb.f = tb.newFunction()
	tb.startFunction(tb.f, 0)
	bp := decodeBlueprint(t, `{"id": "split", "nodes": [{"id": "split", "uses": "split"}, {"id": "join", "uses": "transform", "params": {"expression": "input"}}],
		"edges": [{"source": "split", "target": "join"}]}`)
	runID := "split-" + testenv.RandomHex(6)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, nil)...)
	tb.assertLikeLocal(bp, runID, nil)
	testenv.AssertJSON(t, "join's output", tb.run(runID).StatusData["join"], []any{"a!", "b!", "c!"})
}

// A batch in a loop's body: each iteration scatters a batch of its own
// (the batch id derives from the scatter's step key) and gathers it.
func TestBatchInALoop(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := decodeBlueprint(t, `{"id": "batch-loop", "nodes": [
		{"id": "init", "uses": "set-context", "params": {"values": {"n": 2, "items": [1, 2, 3]}}},
		{"id": "again", "uses": "loop-controller", "params": {"condition": "n > 0"}, "config": {"joinStrategy": "any"}},
		{"id": "scatter", "uses": "batch-scatter", "inputs": "items", "params": {"workerUsesKey": "probe", "gatherNodeId": "gather", "chunkSize": 2}},
		{"id": "gather", "uses": "batch-gather", "params": {"outputKey": "results"}},
		{"id": "tick", "uses": "decrement", "params": {"key": "n"}},
		{"id": "done", "uses": "transform", "inputs": "results", "params": {"expression": "len(input)"}}],
		"edges": [{"source": "init", "target": "again"}, {"source": "again", "target": "scatter", "action": "continue"},
			{"source": "scatter", "target": "gather"}, {"source": "gather", "target": "tick"}, {"source": "tick", "target": "again"},
			{"source": "again", "target": "done", "action": "break"}]}`)
	runID := "bl-" + testenv.RandomHex(6)
	tb.deliverAll(nil, tb.createRunWithID(runID, bp, nil)...)
	for _, it := range []string{"scatter#1", "scatter#2"} {
		batch := workflow.BatchID(runID, it)
		for i := range 3 {
			if c := tb.probes.count(fmt.Sprintf("probe_%s_%d", batch, i)); c != 1 {
				t.Errorf("worker %d of %s ran %d times, want once", i, it, c)
			}
		}
	}
	for _, k := range []string{"gather#1", "gather#2"} {
		if s := tb.step(runID, k); s == nil || s.State != workflow.StepSucceeded || len(s.Output.([]any)) != 3 {
			t.Errorf("step %s: %+v, want succeeded with 3 results", k, s)
		}
	}
	tb.assertLikeLocal(bp, runID, nil)
	testenv.AssertJSON(t, "done's output", tb.run(runID).StatusData["done"], 3)
}
