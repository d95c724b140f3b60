package workflow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// batchDoc scatters the context key items to workers of type worker,
// gathered into context key out; after echoes out.
func batchDoc(worker string, chunk int) string {
	chunkParam := ""
	if chunk > 0 {
		chunkParam = fmt.Sprintf(`,"chunkSize":%d`, chunk)
	}
	return fmt.Sprintf(`{"id":"b","nodes":[
		{"id":"b_scatter","uses":"batch-scatter","inputs":"items","params":{"workerUsesKey":%q,"outputKey":"out","gatherNodeId":"b_gather"%s}},
		{"id":"b_gather","uses":"batch-gather","params":{"outputKey":"out","gatherNodeId":"b_gather"},"config":{"joinStrategy":"all"}},
		{"id":"after","uses":"echo","inputs":"out"}],
	"edges":[{"source":"b_scatter","target":"b_gather"},{"source":"b_gather","target":"after"}]}`, worker, chunkParam)
}

func batchNodes() *testNodes {
	tn := newTestNodes()
	tn.Register("square", func(_ context.Context, in NodeInput) (NodeResult, error) {
		n, _ := in.Input.(float64)
		return NodeResult{Output: n * n}, nil
	})
	tn.Register("fail-on-3", func(_ context.Context, in NodeInput) (NodeResult, error) {
		if in.Input == 3.0 {
			return NodeResult{}, errors.New("three")
		}
		return NodeResult{Output: in.Input}, nil
	})
	return tn
}

func TestRunBatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		worker     string
		chunk      int
		items      any
		wantStatus RunStatus
		want       any
		wantErr    string
	}{
		{name: "one worker per item, results in item order", worker: "square", items: []any{1, 2, 3, 4}, wantStatus: RunCompleted, want: []any{1.0, 4.0, 9.0, 16.0}},
		{name: "chunks", worker: "square", chunk: 3, items: []any{1, 2, 3, 4, 5, 6, 7}, wantStatus: RunCompleted, want: []any{1.0, 4.0, 9.0, 16.0, 25.0, 36.0, 49.0}},
		{name: "an empty array gathers []", worker: "square", items: []any{}, wantStatus: RunCompleted, want: []any{}},
		{name: "no input gathers []", worker: "square", wantStatus: RunCompleted, want: []any{}},
		{name: "not an array", worker: "square", items: "abc", wantStatus: RunFailed, wantErr: "Input for batch-scatter node 'b_scatter' must be an array."},
		{name: "a failing worker fails the run", worker: "fail-on-3", items: []any{1, 2, 3}, wantStatus: RunFailed, wantErr: "three"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			input := map[string]any{}
			if tt.items != nil {
				input["items"] = tt.items
			}
			res := runDoc(t, batchNodes().Registry, batchDoc(tt.worker, tt.chunk), input)
			if res.Status != tt.wantStatus {
				t.Fatalf("status %s, errors %v; want %s", res.Status, res.Errors, tt.wantStatus)
			}
			if tt.wantErr != "" {
				if len(res.Errors) == 0 || res.Errors[0].Message != tt.wantErr {
					t.Errorf("errors %+v, want %q", res.Errors, tt.wantErr)
				}
				return
			}
			if !equal(res.Context["out"], tt.want) || !equal(res.Context[OutputKey("after")], tt.want) || !equal(res.Output, tt.want) {
				t.Errorf("out %v, after %v, output %v; want %v", res.Context["out"], res.Context[OutputKey("after")], res.Output, tt.want)
			}
		})
	}
}

// Worker ids and their inputs follow Flowcraft's names, with a batch id
// derived from the run and the scatter's step: the same again for the
// same run, another for another run.
func TestBatchIDsAreDerived(t *testing.T) {
	t.Parallel()
	reg := batchNodes().Registry
	w := mustCompile(t, reg, batchDoc("square", 0))
	ids := func(runID string) []any {
		res, err := w.Run(t.Context(), map[string]any{"items": []any{5, 6}}, RunOptions{RunID: runID})
		if err != nil || res.Status != RunCompleted {
			t.Fatalf("run: %v %+v", err, res)
		}
		batch := BatchID(runID, "b_scatter")
		want := []any{"square_" + batch + "_0", "square_" + batch + "_1"}
		if got := res.Context["b_gather_allWorkerIds"]; !equal(got, want) {
			t.Errorf("allWorkerIds %v, want %v", got, want)
		}
		if got := res.Context["_batch.b_scatter_"+batch+"_item_1"]; got != 6.0 {
			t.Errorf("item 1 stored as %v, want 6", got)
		}
		if res.Context["b_scatter_currentIndex"] != 2.0 || res.Context["b_gather_hasMore"] != false {
			t.Errorf("currentIndex %v hasMore %v", res.Context["b_scatter_currentIndex"], res.Context["b_gather_hasMore"])
		}
		var workers []string
		for _, st := range res.Steps {
			if strings.HasPrefix(st.NodeID, "square_") {
				workers = append(workers, st.NodeID)
			}
		}
		if !equal(workers, []string{"square_" + batch + "_0", "square_" + batch + "_1"}) {
			t.Errorf("worker steps %v, want them after the scatter, in item order", workers)
		}
		return res.Context["b_gather_allWorkerIds"].([]any)
	}
	a, again, other := ids("run-a"), ids("run-a"), ids("run-b")
	if !equal(a, again) || equal(a, other) {
		t.Errorf("run-a: %v then %v; run-b: %v", a, again, other)
	}
	if BatchID("r", "s#1") == BatchID("r", "s#2") {
		t.Error("two iterations of a scatter share a batch id")
	}
}

// Any Go node may create dynamic nodes; Route checks them.
func TestDynamicNodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		result  NodeResult
		want    any    // what sink got
		wantErr string // the run's error
	}{
		{name: "leaves that nothing gathers", result: NodeResult{Output: "o", DynamicNodes: []DynamicNode{
			{ID: "d1", Uses: "echo"}, {ID: "d2", Uses: "echo", Inputs: &Inputs{Key: "seed"}}}}},
		{name: "gathered into a successor", result: NodeResult{Output: 7.0, Gather: "sink", DynamicNodes: []DynamicNode{
			{ID: "d1", Uses: "square"}, {ID: "d2", Uses: "const", Params: map[string]any{"value": "c"}, Wave: 1}}},
			want: []any{49.0, "c"}},
		{name: "a gather that is no successor", result: NodeResult{Gather: "maker"}, wantErr: `gather into "maker", which is not a successor of "maker"`},
		{name: "an id twice", result: NodeResult{DynamicNodes: []DynamicNode{{ID: "d", Uses: "echo"}, {ID: "d", Uses: "echo"}}}, wantErr: `dynamic node "d": created twice`},
		{name: "a blueprint node's id", result: NodeResult{DynamicNodes: []DynamicNode{{ID: "sink", Uses: "echo"}}}, wantErr: "a blueprint node has that id"},
		{name: "an unknown type", result: NodeResult{DynamicNodes: []DynamicNode{{ID: "d", Uses: "nope"}}}, wantErr: `unknown node type "nope"`},
		{name: "a gap between waves", result: NodeResult{DynamicNodes: []DynamicNode{{ID: "d", Uses: "echo", Wave: 2}}}, wantErr: "wave 2 but not wave 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := batchNodes()
			reg.Register("maker", func(context.Context, NodeInput) (NodeResult, error) { return tt.result, nil })
			reg.Register("sink", func(_ context.Context, in NodeInput) (NodeResult, error) {
				in.Context.Set("got", in.Input)
				return NodeResult{}, nil
			})
			res := runDoc(t, reg.Registry, `{"id":"d","nodes":[{"id":"maker","uses":"maker"},{"id":"sink","uses":"sink"}],
				"edges":[{"source":"maker","target":"sink"}]}`, map[string]any{"seed": "s"})
			if tt.wantErr != "" {
				if res.Status != RunFailed || len(res.Errors) == 0 || !strings.Contains(res.Errors[0].Message, tt.wantErr) {
					t.Errorf("status %s, errors %+v; want failed with %q", res.Status, res.Errors, tt.wantErr)
				}
				return
			}
			if res.Status != RunCompleted {
				t.Fatalf("status %s, errors %v", res.Status, res.Errors)
			}
			if tt.want != nil && !equal(res.Context["got"], tt.want) {
				t.Errorf("sink got %v, want %v", res.Context["got"], tt.want)
			}
			for _, d := range tt.result.DynamicNodes {
				if !hasStep(res, d.ID) {
					t.Errorf("dynamic node %s did not run", d.ID)
				}
			}
			if len(tt.result.DynamicNodes) == 2 && tt.result.Gather == "" {
				if res.Context[OutputKey("d1")] != "o" || res.Context[OutputKey("d2")] != "s" {
					t.Errorf("d1 %v (want its creator's output), d2 %v (want its inputs)", res.Context[OutputKey("d1")], res.Context[OutputKey("d2")])
				}
			}
		})
	}
}

// The gather waits for every worker: Advance does not make it ready while
// one is unresolved, and gives it the workers' outputs in order.
func TestAdvanceGather(t *testing.T) {
	t.Parallel()
	w := mustCompile(t, batchNodes().Registry, batchDoc("square", 0))
	f := &dynStates{fakeStates: newFakeStates(), defs: map[string]DynamicNode{}}
	res := NodeResult{Output: "s", Gather: "b_gather", DynamicNodes: []DynamicNode{{ID: "w0", Uses: "square"}, {ID: "w1", Uses: "square"}}}
	r, err := w.Route("b_scatter", res, Env{})
	if err != nil {
		t.Fatal(err)
	}
	f.status["b_scatter"] = StepStatus{State: StepSucceeded, Taken: r.Taken, Dynamic: r.Dynamic, Gather: r.Gather}
	f.deliveries["b_scatter"] = r.Deliveries
	for _, d := range r.Dynamic {
		f.defs[d.ID] = d
		if d.Source != "b_scatter" || d.Gather != "b_gather" {
			t.Errorf("Route left %+v without its source and gather", d)
		}
	}
	tr := w.Advance([]string{"b_scatter"}, f)
	if len(tr.Ready) != 2 || tr.Ready[0].ID != "w0" || tr.Ready[1].ID != "w1" || tr.Ready[0].Dynamic == nil {
		t.Fatalf("after the scatter: %+v, want the two workers ready, with their definitions", tr)
	}
	f.apply(tr)
	finish := func(id string, out any) Transition {
		s, err := w.DynamicStep(f.defs[id])
		if err != nil {
			t.Fatal(err)
		}
		r, err := w.RouteStep(s, NodeResult{Output: out}, Env{})
		if err != nil {
			t.Fatal(err)
		}
		f.resolve(id, StepSucceeded, r)
		return w.Advance([]string{id}, f)
	}
	if tr := finish("w1", 1.0); len(tr.Ready) != 0 {
		t.Fatalf("gather ready with w0 unfinished: %+v", tr)
	}
	tr = finish("w0", 0.0)
	if want := []ReadyNode{{ID: "b_gather", Input: []any{0.0, 1.0}}}; !equal(tr.Ready, want) {
		t.Errorf("after both workers: %+v, want %+v", tr.Ready, want)
	}
	f.apply(tr)
	d := w.DecideRun(RunRunning, 1, []AppliedStep{{NodeID: "b_scatter", State: StepSucceeded, Taken: r.Taken}}, f)
	if len(d.Ready) != 0 {
		t.Errorf("DecideRun made %+v ready again", d.Ready)
	}
}

type dynStates struct {
	*fakeStates
	defs map[string]DynamicNode
}

func (d *dynStates) Dynamic(key string) (DynamicNode, bool) {
	n, ok := d.defs[key]
	return n, ok
}

func TestBatchValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		want problem
	}{
		{"scatter without params", `{"id":"v","nodes":[{"id":"s","uses":"batch-scatter"}]}`, problem{"nodes[0].params", "workerUsesKey: required"}},
		{"bad chunkSize", strings.Replace(batchDoc("noop", 0), `"gatherNodeId":"b_gather"}`, `"gatherNodeId":"b_gather","chunkSize":0}`, 1), problem{"nodes[0].params", "chunkSize: must be a whole number of at least 1"}},
		{"unknown worker", batchDoc("nope", 0), problem{"nodes[0].params.workerUsesKey", `unknown node type "nope"`}},
		{"gather not a successor", strings.Replace(batchDoc("noop", 0), `{"source":"b_scatter","target":"b_gather"},`, `{"source":"b_scatter","target":"after"},`, 1),
			problem{"nodes[0].params.gatherNodeId", `"b_gather" is not a successor of "b_scatter"`}},
		{"gather of no scatter", `{"id":"v","nodes":[{"id":"g","uses":"batch-gather","params":{"outputKey":"o"}}]}`, problem{"nodes[0]", "is the gatherNodeId of no batch-scatter"}},
		{"gather without outputKey", `{"id":"v","nodes":[{"id":"g","uses":"batch-gather"}]}`, problem{"nodes[0].params", "outputKey: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := NewRegistry().Register("echo", noop)
			if probs := validationProblems(t, tt.doc, reg); !hasProblem(probs, tt.want) {
				t.Errorf("no problem %s: …%s…; got %v", tt.want.path, tt.want.msg, probs)
			}
		})
	}
}

// countedStates is dynStates with a count of each wave's resolved dynamic
// nodes (DynamicCounts), which records the statuses asked of them.
type countedStates struct {
	*dynStates
	resolved map[int]int
	asked    []string
}

func (c *countedStates) ResolvedInWave(_ string, wave int) int { return c.resolved[wave] }

func (c *countedStates) Status(id string) (StepStatus, bool) {
	if _, ok := c.defs[id]; ok {
		c.asked = append(c.asked, id)
	}
	return c.dynStates.Status(id)
}

// With DynamicCounts, a dynamic node's resolution asks no finished
// sibling's status, and decides as the siblings' statuses do: the next wave when
// its wave is done, the gather after the last.
func TestAdvanceCountsDynamicNodes(t *testing.T) {
	t.Parallel()
	w := mustCompile(t, NewRegistry(), `{"id":"c","nodes":[{"id":"split","uses":"noop"},{"id":"join","uses":"noop"}],"edges":[{"source":"split","target":"join"}]}`)
	var ds []DynamicNode
	defs := map[string]DynamicNode{}
	for i := range 4 {
		d := DynamicNode{ID: fmt.Sprintf("d%d", i), Uses: "noop", Wave: i / 2}
		ds = append(ds, d)
	}
	r, err := w.Route("split", NodeResult{Output: "x", DynamicNodes: ds, Gather: "join"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range r.Dynamic {
		defs[d.ID] = d
	}
	plain := &dynStates{fakeStates: newFakeStates(), defs: defs}
	counted := &countedStates{dynStates: &dynStates{fakeStates: newFakeStates(), defs: defs}, resolved: map[int]int{}}
	for _, f := range []*fakeStates{plain.fakeStates, counted.fakeStates} {
		f.resolve("split", StepSucceeded, r)
		f.status["split"] = StepStatus{State: StepSucceeded, Taken: r.Taken, Dynamic: r.Dynamic, Gather: r.Gather}
	}
	w.Advance([]string{"split"}, plain)
	for i, id := range []string{"d1", "d0", "d3", "d2"} {
		for _, f := range []*fakeStates{plain.fakeStates, counted.fakeStates} {
			f.status[id] = StepStatus{State: StepSucceeded, Taken: []string{"join"}}
			f.deliveries[id] = map[string]any{"join": id}
		}
		counted.resolved[defs[id].Wave]++
		counted.asked = nil
		want, got := w.Advance([]string{id}, plain), w.Advance([]string{id}, counted)
		if !equal(got.Ready, want.Ready) {
			t.Errorf("after %s: counted %+v, by status %+v", id, got.Ready, want.Ready)
		}
		// Only its own status, and at a wave's end whether the next
		// wave's nodes exist yet.
		for _, asked := range counted.asked {
			if asked != id && !slices.ContainsFunc(want.Ready, func(rn ReadyNode) bool { return rn.ID == asked }) {
				t.Errorf("after %s (%d of 4): asked the status of sibling %s", id, i+1, asked)
			}
		}
		for _, rn := range want.Ready {
			plain.status[rn.ID] = StepStatus{State: StepReady}
			counted.status[rn.ID] = StepStatus{State: StepReady}
		}
	}
	if st, _ := plain.Status("join"); st.State != StepReady {
		t.Errorf("join is %q after every worker, want ready", st.State)
	}
}
