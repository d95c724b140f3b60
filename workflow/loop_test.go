package workflow

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// loopDoc is a blueprint with a counter loop: init → ctl, ctl continue →
// inc (adds 1 to context key n) → ctl, ctl break → done. extraNodes and
// extraEdges are JSON fragments appended to its lists.
func loopDoc(cond string, ctlParams string, extraNodes, extraEdges string) string {
	if ctlParams != "" {
		ctlParams = "," + ctlParams
	}
	return fmt.Sprintf(`{"id":"loop","nodes":[
		{"id":"init","uses":"set","params":{"set":{"n":0}}},
		{"id":"ctl","uses":"loop-controller","params":{"condition":%q%s},"config":{"joinStrategy":"any"}},
		{"id":"inc","uses":"add","params":{"key":"n"}},
		{"id":"done","uses":"echo"}%s],
	"edges":[
		{"source":"init","target":"ctl"},
		{"source":"ctl","target":"inc","action":"continue"},
		{"source":"inc","target":"ctl"},
		{"source":"ctl","target":"done","action":"break","transform":"context[\"inc\"]"}%s]}`, cond, ctlParams, extraNodes, extraEdges)
}

// loopNodes are testNodes plus add: adds 1 to the number at context key
// params.key and outputs it.
func loopNodes() *testNodes {
	tn := newTestNodes()
	tn.Register("add", func(_ context.Context, in NodeInput) (NodeResult, error) {
		key, _ := in.Params["key"].(string)
		v, _ := in.Context.Get(key)
		n, _ := v.(float64)
		in.Context.Set(key, n+1)
		return NodeResult{Output: n + 1}, nil
	})
	return tn
}

func TestLoopValidation(t *testing.T) {
	t.Parallel()
	const ctl = `{"id":"c","uses":"loop-controller","params":{"condition":"true"}}`
	doc := func(nodes, edges string) string {
		return `{"id":"v","nodes":[{"id":"s","uses":"noop"},` + nodes + `],"edges":[` + edges + `]}`
	}
	tests := []struct {
		name string
		doc  string
		want []problem // empty: valid
	}{
		{"a loop through its controller", doc(ctl+`,{"id":"a","uses":"noop"},{"id":"z","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"c","target":"a","action":"continue"},{"source":"a","target":"c"},{"source":"c","target":"z","action":"break"}`), nil},
		{"entered at the body's start", doc(ctl+`,{"id":"a","uses":"noop"}`,
			`{"source":"s","target":"a"},{"source":"a","target":"c"},{"source":"c","target":"a","action":"continue"}`), nil},
		{"a body of two nodes with a join", doc(ctl+`,{"id":"a","uses":"noop"},{"id":"b1","uses":"noop"},{"id":"b2","uses":"noop"},{"id":"j","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"c","target":"a","action":"continue"},{"source":"a","target":"b1"},{"source":"a","target":"b2"},{"source":"b1","target":"j"},{"source":"b2","target":"j"},{"source":"j","target":"c"}`), nil},
		{"a cycle that avoids the controller", doc(ctl+`,{"id":"a","uses":"noop"},{"id":"b","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"c","target":"a","action":"continue"},{"source":"a","target":"b"},{"source":"b","target":"a"},{"source":"b","target":"c"}`),
			[]problem{{"edges", "cycle: a → b → a"}}},
		{"no continue edge", doc(ctl+`,{"id":"a","uses":"noop"}`, `{"source":"s","target":"c"},{"source":"c","target":"a"},{"source":"a","target":"c"}`),
			[]problem{{"nodes[1]", `loop-controller "c" has no continue edge`}}},
		{"a continue edge that never comes back", doc(ctl+`,{"id":"a","uses":"noop"}`, `{"source":"s","target":"c"},{"source":"c","target":"a","action":"continue"}`),
			[]problem{{"edges[1]", `leads to "a", which never leads back to "c"`}}},
		{"leaving from the body", doc(ctl+`,{"id":"a","uses":"noop"},{"id":"x","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"c","target":"a","action":"continue"},{"source":"a","target":"c"},{"source":"a","target":"x"}`),
			[]problem{{"edges[3]", `edge a → x leaves the loop of "c" from its body`}}},
		{"entering in the middle", doc(ctl+`,{"id":"a","uses":"noop"},{"id":"b","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"c","target":"a","action":"continue"},{"source":"a","target":"b"},{"source":"b","target":"c"},{"source":"s","target":"b"}`),
			[]problem{{"edges[4]", `edge s → b enters the loop of "c" in its middle`}}},
		{"entered twice", doc(ctl+`,{"id":"a","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"s","target":"a"},{"source":"c","target":"a","action":"continue"},{"source":"a","target":"c"}`),
			[]problem{{"edges", `entered both at its loop-controller and at "a"`}}},
		{"nested loops", doc(ctl+`,{"id":"c2","uses":"loop-controller","params":{"condition":"true"}},{"id":"a","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"c","target":"c2","action":"continue"},{"source":"c2","target":"a","action":"continue"},{"source":"a","target":"c2"},{"source":"c2","target":"c","action":"break"}`),
			[]problem{{"nodes[1]", "nested loops are not supported"}}},
		{"a # in a loop node's id", doc(ctl+`,{"id":"a#1","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"c","target":"a#1","action":"continue"},{"source":"a#1","target":"c"}`),
			[]problem{{"nodes[2].id", `must not contain "#"`}}},
		{"an id that is a loop step's key", doc(ctl+`,{"id":"a","uses":"noop"},{"id":"a#2","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"c","target":"a","action":"continue"},{"source":"a","target":"c"},{"source":"c","target":"a#2","action":"break"}`),
			[]problem{{"nodes[3].id", `step key of an iteration of loop node "a"`}}},
		{"controller without condition", doc(`{"id":"c","uses":"loop-controller"},{"id":"a","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"c","target":"a","action":"continue"},{"source":"a","target":"c"}`),
			[]problem{{"nodes[1].params", "condition: required"}}},
		{"bad maxIterations", doc(`{"id":"c","uses":"loop-controller","params":{"condition":"true","maxIterations":0}},{"id":"a","uses":"noop"}`,
			`{"source":"s","target":"c"},{"source":"c","target":"a","action":"continue"},{"source":"a","target":"c"}`),
			[]problem{{"nodes[1].params", "maxIterations: must be a whole number of at least 1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if len(tt.want) == 0 {
				if _, err := Compile(mustDecode(t, tt.doc), NewRegistry()); err != nil {
					t.Fatalf("Compile: %v, want it valid", err)
				}
				return
			}
			probs := validationProblems(t, tt.doc, NewRegistry())
			for _, want := range tt.want {
				if !hasProblem(probs, want) {
					t.Errorf("no problem %s: …%s…; got %v", want.path, want.msg, probs)
				}
			}
		})
	}
}

func TestRunLoops(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		doc        string
		wantStatus RunStatus
		wantN      float64 // context n at the end
		wantIncs   []string
		wantOut    map[string]any // outputs by node id
		wantErr    string
	}{
		{name: "while: the controller checks first", doc: loopDoc("n < 3", "", "", ""),
			wantStatus: RunCompleted, wantN: 3, wantIncs: []string{"inc#1", "inc#2", "inc#3"},
			wantOut: map[string]any{"ctl": nil, "done": 3.0, "inc": 3.0}},
		{name: "a condition false at once runs no iteration", doc: loopDoc("n < 0", "", "", ""),
			wantStatus: RunCompleted, wantN: 0, wantOut: map[string]any{"done": nil}},
		{name: "maxIterations stops a runaway loop", doc: loopDoc("true", `"maxIterations":4`, "", ""),
			wantStatus: RunFailed, wantN: 4, wantIncs: []string{"inc#1", "inc#2", "inc#3", "inc#4"},
			wantErr: `loop-controller "ctl": maxIterations 4 reached (it would start iteration 5)`},
		{name: "a conditional edge out of the controller is tried first",
			doc:        loopDoc("n < 10", "", `,{"id":"early","uses":"echo"}`, `,{"source":"ctl","target":"early","condition":"n >= 2","action":"break"}`),
			wantStatus: RunCompleted, wantN: 2, wantIncs: []string{"inc#1", "inc#2"},
			wantOut: map[string]any{"early": nil}},
		{name: "do … while: entered at the body's start", doc: `{"id":"dw","nodes":[
				{"id":"init","uses":"set","params":{"set":{"n":5}}},
				{"id":"inc","uses":"add","params":{"key":"n"}},
				{"id":"ctl","uses":"loop-controller","params":{"condition":"n < 3"}}],
			"edges":[{"source":"init","target":"inc"},{"source":"inc","target":"ctl"},{"source":"ctl","target":"inc","action":"continue"}]}`,
			wantStatus: RunCompleted, wantN: 6, wantIncs: []string{"inc#1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runDoc(t, loopNodes().Registry, tt.doc, nil)
			if res.Status != tt.wantStatus {
				t.Fatalf("status %s, errors %v; want %s", res.Status, res.Errors, tt.wantStatus)
			}
			if res.Context["n"] != tt.wantN {
				t.Errorf("n = %v, want %v", res.Context["n"], tt.wantN)
			}
			var incs []string
			for _, st := range res.Steps {
				if st.NodeID == "inc" && st.State == StepSucceeded {
					incs = append(incs, st.StepKey)
					if want := fmt.Sprintf("inc#%d", st.Iteration); st.StepKey != want {
						t.Errorf("step %s reports iteration %d", st.StepKey, st.Iteration)
					}
				}
			}
			if !equal(incs, tt.wantIncs) && (len(incs) > 0 || len(tt.wantIncs) > 0) {
				t.Errorf("inc steps %v, want %v", incs, tt.wantIncs)
			}
			for id, want := range tt.wantOut {
				if got, ok := res.Context[OutputKey(id)]; !ok && want != nil || !equal(got, want) {
					t.Errorf("output of %s = %#v (set %v), want %#v", id, got, ok, want)
				}
			}
			if tt.wantErr != "" && (len(res.Errors) == 0 || res.Errors[0].NodeID != "ctl" || res.Errors[0].Message != tt.wantErr) {
				t.Errorf("errors %+v, want ctl: %s", res.Errors, tt.wantErr)
			}
		})
	}
}

// Each iteration's join waits for that iteration's arrivals only, and
// dead paths inside the body are decided per iteration.
func TestRunLoopJoinsPerIteration(t *testing.T) {
	t.Parallel()
	reg := loopNodes()
	res := runDoc(t, reg.Registry, `{"id":"j","nodes":[
		{"id":"init","uses":"set","params":{"set":{"n":0}}},
		{"id":"ctl","uses":"loop-controller","params":{"condition":"n < 4"}},
		{"id":"inc","uses":"add","params":{"key":"n"}},
		{"id":"even","uses":"echo"},{"id":"odd","uses":"echo"},
		{"id":"join","uses":"echo"},
		{"id":"after","uses":"echo"}],
	"edges":[
		{"source":"init","target":"ctl"},
		{"source":"ctl","target":"inc","action":"continue"},
		{"source":"inc","target":"even","condition":"int(result.output) % 2 == 0"},
		{"source":"inc","target":"odd","condition":"int(result.output) % 2 == 1"},
		{"source":"even","target":"join"},{"source":"odd","target":"join"},
		{"source":"join","target":"ctl"},
		{"source":"ctl","target":"after","action":"break","transform":"outputs.join"}]}`, nil)
	if res.Status != RunCompleted {
		t.Fatalf("status %s, errors %v", res.Status, res.Errors)
	}
	states := map[string]StepState{}
	for _, st := range res.Steps {
		states[st.StepKey] = st.State
	}
	for i := 1; i <= 4; i++ {
		ran, skipped := "odd", "even"
		if i%2 == 0 {
			ran, skipped = skipped, ran
		}
		if states[fmt.Sprintf("%s#%d", ran, i)] != StepSucceeded || states[fmt.Sprintf("%s#%d", skipped, i)] != StepSkipped || states[fmt.Sprintf("join#%d", i)] != StepSucceeded {
			t.Errorf("iteration %d: %s %s, %s %s, join %s", i, ran, states[fmt.Sprintf("%s#%d", ran, i)], skipped, states[fmt.Sprintf("%s#%d", skipped, i)], states[fmt.Sprintf("join#%d", i)])
		}
	}
	if reg.callsOf("join") != 4 {
		t.Errorf("join ran %d times, want once per iteration (4)", reg.callsOf("join"))
	}
	// join's last input: a map of the taken edges of iteration 4.
	if want := map[string]any{"even": 4.0}; !equal(res.Context[OutputKey("after")], want) {
		t.Errorf("after got %v, want %v", res.Context[OutputKey("after")], want)
	}
}

// A loop that is never entered is skipped, and so is what follows its
// exit; an all join behind it still fires.
func TestRunLoopNotEntered(t *testing.T) {
	t.Parallel()
	res := runDoc(t, loopNodes().Registry, `{"id":"s","nodes":[
		{"id":"start","uses":"const","params":{"value":1}},
		{"id":"ctl","uses":"loop-controller","params":{"condition":"true"}},
		{"id":"inc","uses":"add","params":{"key":"n"}},
		{"id":"done","uses":"echo"},{"id":"other","uses":"echo"},{"id":"join","uses":"echo"}],
	"edges":[
		{"source":"start","target":"ctl","condition":"result.output > 5"},
		{"source":"start","target":"other"},
		{"source":"ctl","target":"inc","action":"continue"},{"source":"inc","target":"ctl"},
		{"source":"ctl","target":"done","action":"break"},
		{"source":"done","target":"join"},{"source":"other","target":"join"}]}`, nil)
	if res.Status != RunCompleted {
		t.Fatalf("status %s, errors %v", res.Status, res.Errors)
	}
	for key, want := range map[string]StepState{"ctl#0": StepSkipped, "done": StepSkipped, "join": StepSucceeded} {
		var got StepState
		for _, st := range res.Steps {
			if st.StepKey == key || st.StepKey == "" && st.NodeID == key {
				got = st.State
			}
		}
		if got != want {
			t.Errorf("%s: %q, want %s", key, got, want)
		}
	}
}

// Advance and DecideRun keep iterations apart by step key and report the
// loop's exit.
func TestAdvanceLoopSteps(t *testing.T) {
	t.Parallel()
	w := mustCompile(t, nil, loopDoc("n < 3", "", "", ""))
	f := newFakeStates()
	f.took("init", map[string]any{"ctl": "i"})
	tr := w.Advance([]string{"init"}, f)
	if want := []ReadyNode{{ID: "ctl#0", Input: "i"}}; !equal(tr.Ready, want) {
		t.Fatalf("after init: ready %+v, want %+v", tr.Ready, want)
	}
	f.apply(tr)
	f.took("ctl#0", map[string]any{"inc": nil})
	if tr = w.Advance([]string{"ctl#0"}, f); len(tr.Ready) != 1 || tr.Ready[0].ID != "inc#1" || len(tr.LoopExits) != 0 {
		t.Fatalf("after ctl#0 continued: %+v, want inc#1 ready", tr)
	}
	f.apply(tr)
	f.took("inc#1", map[string]any{"ctl": 1.0})
	if tr = w.Advance([]string{"inc#1"}, f); len(tr.Ready) != 1 || tr.Ready[0].ID != "ctl#1" {
		t.Fatalf("after inc#1: %+v, want ctl#1 ready", tr)
	}
	f.apply(tr)
	// ctl#1 breaks: the loop's exit step ctl resolves, done becomes ready
	// with what the break edge carried.
	f.took("ctl#1", map[string]any{"done": "carried"})
	d := w.DecideRun(RunRunning, 1, []AppliedStep{{NodeID: "ctl#1", State: StepSucceeded, Taken: []string{"done"}}}, f)
	want := RunDecision{Status: RunRunning, Pending: 1, Finisher: -1,
		Ready:     []OwnedReady{{ReadyNode: ReadyNode{ID: "done", Input: "carried"}, Owner: 0}},
		LoopExits: []LoopExit{{Loop: "ctl", Step: "ctl#1"}}}
	if !equal(d, want) {
		t.Errorf("DecideRun = %+v\nwant %+v", d, want)
	}
}

func TestStepKeys(t *testing.T) {
	t.Parallel()
	w := mustCompile(t, nil, loopDoc("n < 3", "", `,{"id":"x#1","uses":"noop"}`, `,{"source":"done","target":"x#1"}`))
	tests := []struct {
		key    string
		ok     bool
		node   string
		iter   int
		inLoop bool
	}{
		{key: "init", ok: true, node: "init"},
		{key: "inc#3", ok: true, node: "inc", iter: 3, inLoop: true},
		{key: "ctl#0", ok: true, node: "ctl", iter: 0, inLoop: true},
		{key: "ctl", ok: true, node: "ctl"}, // the loop's exit step
		{key: "x#1", ok: true, node: "x#1"}, // not a loop node: its id
		{key: "inc"},                        // a body node has no step outside iterations
		{key: "inc#01"},
		{key: "done#2"},
		{key: "ghost"},
	}
	for _, tt := range tests {
		s, ok := w.Step(tt.key)
		if ok != tt.ok || ok && (s.Node.ID != tt.node || s.Iteration != tt.iter || s.InLoop != tt.inLoop || s.Key != tt.key) {
			t.Errorf("Step(%q) = %+v, %v; want node %q iteration %d inLoop %v (ok %v)", tt.key, s, ok, tt.node, tt.iter, tt.inLoop, tt.ok)
		}
	}
	if got := w.StepKey("inc", 7) + " " + w.StepKey("done", 7); got != "inc#7 done" {
		t.Errorf("StepKey = %q", got)
	}
	if fb, ok := w.FallbackStep("inc#2"); ok {
		t.Errorf("FallbackStep(inc#2) = %q; inc has no fallback", fb)
	}
	if c, ok := w.InLoop("inc"); !ok || c != "ctl" || w.MaxIterations("ctl") != DefaultMaxIterations {
		t.Errorf("InLoop(inc) = %q %v, MaxIterations %d", c, ok, w.MaxIterations("ctl"))
	}
	if strings.Contains(Mermaid(w.Blueprint), "no such node") {
		t.Error("Mermaid lost a node")
	}
}

// Two loops in a row, and a batch in the second loop's body: each
// iteration scatters a batch of its own and gathers only its workers.
func TestRunLoopCompositions(t *testing.T) {
	t.Parallel()
	tn := loopNodes()
	tn.Register("square", func(_ context.Context, in NodeInput) (NodeResult, error) {
		n, _ := in.Input.(float64)
		return NodeResult{Output: n * n}, nil
	})
	res := runDoc(t, tn.Registry, `{"id":"c","nodes":[
		{"id":"init","uses":"set","params":{"set":{"n":0,"m":0}}},
		{"id":"first","uses":"loop-controller","params":{"condition":"n < 2"}},
		{"id":"inc","uses":"add","params":{"key":"n"}},
		{"id":"second","uses":"loop-controller","params":{"condition":"m < 3"}},
		{"id":"bump","uses":"add","params":{"key":"m"}},
		{"id":"items","uses":"transform","params":{"expression":"map(1..int(input), #)"}},
		{"id":"sq_scatter","uses":"batch-scatter","params":{"workerUsesKey":"square","gatherNodeId":"sq_gather","outputKey":"squares"}},
		{"id":"sq_gather","uses":"batch-gather","params":{"outputKey":"squares"}},
		{"id":"done","uses":"echo"}],
	"edges":[
		{"source":"init","target":"first"},
		{"source":"first","target":"inc","action":"continue"},{"source":"inc","target":"first"},
		{"source":"first","target":"second","action":"break"},
		{"source":"second","target":"bump","action":"continue"},
		{"source":"bump","target":"items"},{"source":"items","target":"sq_scatter"},
		{"source":"sq_scatter","target":"sq_gather"},{"source":"sq_gather","target":"second"},
		{"source":"second","target":"done","action":"break","transform":"context.squares"}]}`, nil)
	if res.Status != RunCompleted {
		t.Fatalf("status %s, errors %v", res.Status, res.Errors)
	}
	if res.Context["n"] != 2.0 || res.Context["m"] != 3.0 {
		t.Errorf("n %v m %v, want 2 and 3", res.Context["n"], res.Context["m"])
	}
	if want := []any{1.0, 4.0, 9.0}; !equal(res.Output, want) {
		t.Errorf("output %v, want the last iteration's squares %v", res.Output, want)
	}
	batches := map[string]bool{}
	for i := 1; i <= 3; i++ {
		batches[BatchID("local", fmt.Sprintf("sq_scatter#%d", i))] = true
	}
	n, gathers := 0, 0
	for _, st := range res.Steps {
		switch {
		case st.Uses == "square":
			n++
			if parts := strings.Split(st.NodeID, "_"); !batches[parts[1]] { // square_<batch>_<i>
				t.Errorf("worker %s is of no iteration's batch", st.NodeID)
			}
		case st.NodeID == "sq_gather":
			gathers++
		}
	}
	if n != 1+2+3 || gathers != 3 {
		t.Errorf("%d workers and %d gathers, want 6 (1+2+3) and 3", n, gathers)
	}
}
