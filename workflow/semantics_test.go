package workflow

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// graph compiles (without a registry) a blueprint of noop nodes described
// by space-separated tokens, nodes in order of first mention:
//
//	a->b        edge a → b
//	a-ok->b     edge a → b with action "ok"
//	j:any       node j joins with strategy "any"
//	a~>f        node f is the fallback of a
//	n           node n (no edges)
func graph(t testing.TB, spec string) *Workflow {
	t.Helper()
	bp := &Blueprint{ID: "g"}
	index := map[string]int{}
	node := func(id string) *Node {
		if i, ok := index[id]; ok {
			return &bp.Nodes[i]
		}
		index[id] = len(bp.Nodes)
		bp.Nodes = append(bp.Nodes, Node{ID: id, Uses: NodeNoop})
		return &bp.Nodes[len(bp.Nodes)-1]
	}
	for _, tok := range strings.Fields(spec) {
		switch {
		case strings.Contains(tok, "~>"):
			a, f, _ := strings.Cut(tok, "~>")
			node(a)
			node(f)
			n := node(a)
			if n.Config == nil {
				n.Config = &NodeConfig{}
			}
			n.Config.Fallback = f
		case strings.Contains(tok, "->"):
			src, dst, _ := strings.Cut(tok, "->")
			e := Edge{}
			if s, action, ok := strings.Cut(src, "-"); ok {
				src, e.Action = s, action
			}
			e.Source, e.Target = src, dst
			node(src)
			node(dst)
			bp.Edges = append(bp.Edges, e)
		case strings.HasSuffix(tok, ":any"):
			n := node(strings.TrimSuffix(tok, ":any"))
			if n.Config == nil {
				n.Config = &NodeConfig{}
			}
			n.Config.JoinStrategy = JoinAny
		default:
			node(tok)
		}
	}
	w, err := Compile(bp, nil)
	if err != nil {
		t.Fatalf("graph %q: %v", spec, err)
	}
	return w
}

func TestRoute(t *testing.T) {
	t.Parallel()
	const branches = `{"id":"r","nodes":[
		{"id":"x","uses":"noop","params":{"limit":100,"currency":"EUR"}},
		{"id":"a","uses":"noop"},{"id":"b","uses":"noop"},{"id":"c","uses":"noop"},{"id":"d","uses":"noop"}],
	"edges":[
		{"source":"x","target":"a","action":"approve"},
		{"source":"x","target":"b","action":"reject"},
		{"source":"x","target":"c"},
		{"source":"x","target":"d","action":"approve","condition":"result.output.amount > params.limit"}]}`
	// one edge x → y with the given condition and transform.
	one := func(cond, transform string) string {
		return fmt.Sprintf(`{"id":"r","nodes":[{"id":"x","uses":"noop","params":{"limit":100,"currency":"EUR"}},{"id":"y","uses":"noop"},{"id":"z","uses":"noop"}],
			"edges":[{"source":"x","target":"y","condition":%q,"transform":%q},{"source":"x","target":"z"}]}`, cond, transform)
	}
	amount := func(n float64) any { return map[string]any{"amount": n} }

	tests := []struct {
		name           string
		doc            string
		res            NodeResult
		env            Env
		wantTaken      []string
		wantDeliveries map[string]any
		wantErr        string
	}{
		{name: "action picks its edges", doc: branches,
			res:       NodeResult{Output: amount(50), Action: "approve"},
			wantTaken: []string{"a"}, wantDeliveries: map[string]any{"a": amount(50)}},
		{name: "action edges with holding condition", doc: branches,
			res:       NodeResult{Output: amount(500), Action: "approve"},
			wantTaken: []string{"a", "d"}, wantDeliveries: map[string]any{"a": amount(500), "d": amount(500)}},
		{name: "other action", doc: branches,
			res:       NodeResult{Output: amount(1), Action: "reject"},
			wantTaken: []string{"b"}, wantDeliveries: map[string]any{"b": amount(1)}},
		{name: "action no edge carries falls back to action-less edges", doc: branches,
			res:       NodeResult{Output: amount(1), Action: "escalate"},
			wantTaken: []string{"c"}, wantDeliveries: map[string]any{"c": amount(1)}},
		{name: "no action takes action-less edges", doc: branches,
			res:       NodeResult{Output: amount(1)},
			wantTaken: []string{"c"}, wantDeliveries: map[string]any{"c": amount(1)}},
		{name: "action carried but condition false takes nothing",
			doc: `{"id":"r","nodes":[{"id":"x","uses":"noop"},{"id":"a","uses":"noop"},{"id":"c","uses":"noop"}],
				"edges":[{"source":"x","target":"a","action":"approve","condition":"result.output.amount > 1000"},{"source":"x","target":"c"}]}`,
			res:       NodeResult{Output: amount(5), Action: "approve"},
			wantTaken: nil, wantDeliveries: map[string]any{}},
		{name: "no outgoing edges",
			doc: `{"id":"r","nodes":[{"id":"x","uses":"noop"}]}`,
			res: NodeResult{Output: 1}, wantTaken: nil, wantDeliveries: map[string]any{}},
		{name: "condition reads result.output", doc: one("result.output.amount > 100", ""),
			res: NodeResult{Output: amount(101)}, wantTaken: []string{"y", "z"},
			wantDeliveries: map[string]any{"y": amount(101), "z": amount(101)}},
		{name: "condition reads result.output false", doc: one("result.output.amount > 100", ""),
			res: NodeResult{Output: amount(100)}, wantTaken: []string{"z"},
			wantDeliveries: map[string]any{"z": amount(100)}},
		{name: "condition reads result.action on an action-less edge", doc: one(`result.action == "late"`, ""),
			res: NodeResult{Output: 1.0, Action: "late"}, wantTaken: []string{"y", "z"},
			wantDeliveries: map[string]any{"y": 1.0, "z": 1.0}},
		{name: "condition reads input (the source output)", doc: one("input.amount == result.output.amount", ""),
			res: NodeResult{Output: amount(3)}, wantTaken: []string{"y", "z"},
			wantDeliveries: map[string]any{"y": amount(3), "z": amount(3)}},
		{name: "condition reads context", doc: one(`context.tier == "gold"`, ""),
			res: NodeResult{Output: 1.0}, env: Env{Context: map[string]any{"tier": "gold"}},
			wantTaken: []string{"y", "z"}, wantDeliveries: map[string]any{"y": 1.0, "z": 1.0}},
		{name: "condition reads context false", doc: one(`context.tier == "gold"`, ""),
			res: NodeResult{Output: 1.0}, env: Env{Context: map[string]any{"tier": "silver"}},
			wantTaken: []string{"z"}, wantDeliveries: map[string]any{"z": 1.0}},
		{name: "condition reads params of the source", doc: one("result.output.amount > params.limit", ""),
			res: NodeResult{Output: amount(150)}, wantTaken: []string{"y", "z"},
			wantDeliveries: map[string]any{"y": amount(150), "z": amount(150)}},
		{name: "condition reads outputs", doc: one("outputs.check.ok", ""),
			res: NodeResult{Output: 1.0}, env: Env{Outputs: map[string]any{"check": map[string]any{"ok": true}}},
			wantTaken: []string{"y", "z"}, wantDeliveries: map[string]any{"y": 1.0, "z": 1.0}},
		{name: "condition reads outputs through context", doc: one(`context["_outputs.check"].ok == false`, ""),
			res: NodeResult{Output: 1.0}, env: Env{Outputs: map[string]any{"check": map[string]any{"ok": false}}},
			wantTaken: []string{"y", "z"}, wantDeliveries: map[string]any{"y": 1.0, "z": 1.0}},
		{name: "condition reads the source's own output through outputs and context", doc: one(`outputs.x.amount == 9 && context["_outputs.x"].amount == 9`, ""),
			res: NodeResult{Output: amount(9)}, env: Env{Outputs: map[string]any{"x": "stale"}},
			wantTaken: []string{"y", "z"}, wantDeliveries: map[string]any{"y": amount(9), "z": amount(9)}},
		{name: "transform on an edge", doc: one("", "input.amount * 2"),
			res: NodeResult{Output: amount(21)}, wantTaken: []string{"y", "z"},
			wantDeliveries: map[string]any{"y": 42.0, "z": amount(21)}},
		{name: "transform builds an object from output and params", doc: one("", `{"total": result.output.amount, "cur": params.currency}`),
			res: NodeResult{Output: amount(7)}, wantTaken: []string{"y", "z"},
			wantDeliveries: map[string]any{"y": map[string]any{"total": 7.0, "cur": "EUR"}, "z": amount(7)}},
		{name: "transform not applied when its condition fails", doc: one("false", "1/0"),
			res: NodeResult{Output: 1.0}, wantTaken: []string{"z"}, wantDeliveries: map[string]any{"z": 1.0}},
		{name: "Go-typed output is routed in JSON form", doc: one("result.output.amount == 5", ""),
			res: NodeResult{Output: map[string]int{"amount": 5}}, wantTaken: []string{"y", "z"},
			wantDeliveries: map[string]any{"y": amount(5), "z": amount(5)}},
		{name: "condition runtime error names the edge", doc: one("result.output.items[3] > 1", ""),
			res: NodeResult{Output: map[string]any{"items": []any{}}}, wantErr: "edge x → y: condition"},
		{name: "non-boolean condition is an error", doc: one("result.output.amount", ""),
			res: NodeResult{Output: amount(1)}, wantErr: "edge x → y: condition \"result.output.amount\""},
		{name: "transform runtime error names the edge", doc: one("", "result.output.items[3]"),
			res: NodeResult{Output: map[string]any{"items": []any{}}}, wantErr: "edge x → y: transform"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := mustCompile(t, nil, tt.doc)
			got, err := w.Route("x", tt.res, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Route error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Route: %v", err)
			}
			if !equal(got.Taken, tt.wantTaken) {
				t.Errorf("Taken = %v, want %v", got.Taken, tt.wantTaken)
			}
			if !equal(got.Deliveries, tt.wantDeliveries) {
				t.Errorf("Deliveries = %#v, want %#v", got.Deliveries, tt.wantDeliveries)
			}
		})
	}
}

func TestAdvance(t *testing.T) {
	t.Parallel()
	type states = func(f *fakeStates)
	tests := []struct {
		name        string
		spec        string
		states      states
		resolved    []string
		wantReady   []ReadyNode
		wantSkipped []string
	}{
		{name: "linear chain", spec: "a->b b->c",
			states:    func(f *fakeStates) { f.took("a", map[string]any{"b": 1.0}) },
			resolved:  []string{"a"},
			wantReady: []ReadyNode{{ID: "b", Input: 1.0}}},
		{name: "linear chain untaken skips the rest", spec: "a->b b->c",
			states:      func(f *fakeStates) { f.took("a", nil) },
			resolved:    []string{"a"},
			wantSkipped: []string{"b", "c"}},
		{name: "fan-out", spec: "a->b a->c",
			states:    func(f *fakeStates) { f.took("a", map[string]any{"b": "B", "c": "C"}) },
			resolved:  []string{"a"},
			wantReady: []ReadyNode{{ID: "b", Input: "B"}, {ID: "c", Input: "C"}}},
		{name: "all join waits for every predecessor", spec: "a->j b->j",
			states:   func(f *fakeStates) { f.took("a", map[string]any{"j": 1.0}) },
			resolved: []string{"a"}},
		{name: "all join waits for a running predecessor", spec: "a->j b->j",
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"j": 1.0})
				f.status["b"] = StepStatus{State: StepRetrying}
			},
			resolved: []string{"a"}},
		{name: "all join fires with a map of deliveries", spec: "a->j b->j",
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"j": 1.0})
				f.took("b", map[string]any{"j": 2.0})
			},
			resolved:  []string{"b"},
			wantReady: []ReadyNode{{ID: "j", Input: map[string]any{"a": 1.0, "b": 2.0}}}},
		{name: "all join map holds only taken edges", spec: "a->j b->j",
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"j": 1.0})
				f.took("b", nil)
			},
			resolved:  []string{"b"},
			wantReady: []ReadyNode{{ID: "j", Input: map[string]any{"a": 1.0}}}},
		{name: "all join with every edge untaken is skipped", spec: "a->j b->j j->k",
			states: func(f *fakeStates) {
				f.took("a", nil)
				f.took("b", nil)
			},
			resolved:    []string{"a", "b"},
			wantSkipped: []string{"j", "k"}},
		{name: "any join fires at the first taken arrival with its delivery", spec: "a->j b->j c->j j:any",
			states:    func(f *fakeStates) { f.took("b", map[string]any{"j": "from b"}) },
			resolved:  []string{"b"},
			wantReady: []ReadyNode{{ID: "j", Input: "from b"}}},
		{name: "any join never fires twice", spec: "a->j b->j c->j j:any",
			states: func(f *fakeStates) {
				f.took("b", map[string]any{"j": "from b"})
				f.status["j"] = StepStatus{State: StepSucceeded}
				f.took("a", map[string]any{"j": "from a"})
			},
			resolved: []string{"a"}},
		{name: "any join waits past an untaken arrival", spec: "a->j b->j c->j j:any",
			states:   func(f *fakeStates) { f.took("a", nil) },
			resolved: []string{"a"}},
		{name: "any join with every edge untaken is skipped", spec: "a->j b->j c->j j:any",
			states: func(f *fakeStates) {
				f.took("a", nil)
				f.took("b", nil)
				f.took("c", nil)
			},
			resolved:    []string{"c"},
			wantSkipped: []string{"j"}},
		{name: "exclusive branch skips the other branch, join waits", spec: "x-yes->a x-no->b a->j b->j",
			states:      func(f *fakeStates) { f.took("x", map[string]any{"a": 1.0}) },
			resolved:    []string{"x"},
			wantReady:   []ReadyNode{{ID: "a", Input: 1.0}},
			wantSkipped: []string{"b"}},
		{name: "exclusive branch join fires when the taken branch resolves", spec: "x-yes->a x-no->b a->j b->j",
			states: func(f *fakeStates) {
				f.took("x", map[string]any{"a": 1.0})
				f.status["b"] = StepStatus{State: StepSkipped}
				f.took("a", map[string]any{"j": 2.0})
			},
			resolved:  []string{"a"},
			wantReady: []ReadyNode{{ID: "j", Input: map[string]any{"a": 2.0}}}},
		{name: "untaken terminal branch is skipped", spec: "a->b a->c",
			states:      func(f *fakeStates) { f.took("a", map[string]any{"c": 1.0}) },
			resolved:    []string{"a"},
			wantReady:   []ReadyNode{{ID: "c", Input: 1.0}},
			wantSkipped: []string{"b"}},
		{name: "skip propagates across levels", spec: "a->b b->c c->d a->e",
			states:      func(f *fakeStates) { f.took("a", map[string]any{"e": 1.0}) },
			resolved:    []string{"a"},
			wantReady:   []ReadyNode{{ID: "e", Input: 1.0}},
			wantSkipped: []string{"b", "c", "d"}},
		{name: "skip propagates through a diamond", spec: "s->a s->b a->c b->c c->d s->e",
			states:      func(f *fakeStates) { f.took("s", map[string]any{"e": 1.0}) },
			resolved:    []string{"s"},
			wantReady:   []ReadyNode{{ID: "e", Input: 1.0}},
			wantSkipped: []string{"a", "b", "c", "d"}},
		{name: "propagated skip stops at a join with a live branch", spec: "s->a s->b a->x x->j b->j",
			states:      func(f *fakeStates) { f.took("s", map[string]any{"b": 1.0}) },
			resolved:    []string{"s"},
			wantReady:   []ReadyNode{{ID: "b", Input: 1.0}},
			wantSkipped: []string{"a", "x"}},
		{name: "propagated skip fires a join whose other edge is taken", spec: "s->a s->b a->x x->j b->j",
			states: func(f *fakeStates) {
				f.took("b", map[string]any{"j": "B"})
				f.took("s", map[string]any{"b": 1.0})
			},
			resolved:    []string{"s"},
			wantReady:   []ReadyNode{{ID: "j", Input: map[string]any{"b": "B"}}},
			wantSkipped: []string{"a", "x"}},
		{name: "a node with a step is never made ready again", spec: "a->b",
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"b": 1.0})
				f.status["b"] = StepStatus{State: StepReady}
			},
			resolved: []string{"a"}},
		{name: "recovered node routes along its own edges", spec: "a->b a~>f",
			states: func(f *fakeStates) {
				f.resolve("a", StepRecovered, Routing{Taken: []string{"b"}, Deliveries: map[string]any{"b": "fallback output"}})
				f.took("f", nil)
			},
			resolved:  []string{"f", "a"},
			wantReady: []ReadyNode{{ID: "b", Input: "fallback output"}}},
		{name: "fallback routes along its own edges", spec: "a->b a~>f f->audit",
			states: func(f *fakeStates) {
				f.took("f", map[string]any{"audit": "F"})
				f.resolve("a", StepRecovered, Routing{Taken: []string{"b"}, Deliveries: map[string]any{"b": "F"}})
			},
			resolved:  []string{"f", "a"},
			wantReady: []ReadyNode{{ID: "audit", Input: "F"}, {ID: "b", Input: "F"}}},
		{name: "unneeded fallback is skipped so a join behind it fires", spec: "a->j f->j a~>f",
			states:      func(f *fakeStates) { f.took("a", map[string]any{"j": 1.0}) },
			resolved:    []string{"a"},
			wantReady:   []ReadyNode{{ID: "j", Input: map[string]any{"a": 1.0}}},
			wantSkipped: []string{"f"}},
		{name: "fallback of a skipped node is skipped with its successors", spec: "s->a a~>f f->g s->t",
			states:      func(f *fakeStates) { f.took("s", map[string]any{"t": 1.0}) },
			resolved:    []string{"s"},
			wantReady:   []ReadyNode{{ID: "t", Input: 1.0}},
			wantSkipped: []string{"a", "f", "g"}},
		{name: "failed node awaiting its fallback routes nothing", spec: "a->b a~>f",
			states: func(f *fakeStates) {
				f.status["a"] = StepStatus{State: StepAwaitingFallback}
			},
			resolved: []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := graph(t, tt.spec)
			f := newFakeStates()
			tt.states(f)
			tr := w.Advance(tt.resolved, f)
			if !equal(tr.Ready, tt.wantReady) {
				t.Errorf("Ready = %#v, want %#v", tr.Ready, tt.wantReady)
			}
			if !equal(tr.Skipped, tt.wantSkipped) {
				t.Errorf("Skipped = %v, want %v", tr.Skipped, tt.wantSkipped)
			}
		})
	}
}

// simulate runs a workflow the way a durable runtime does, one resolution
// at a time: it pops a ready node (pick chooses which), routes results[id]
// (default: output = id, no action), stores the routing and applies Advance.
// It returns how often each node was made ready and the final states.
func simulate(t *testing.T, w *Workflow, results map[string]NodeResult, pick func(ready []string) int) (map[string]int, *fakeStates) {
	t.Helper()
	f := newFakeStates()
	readyCount := map[string]int{}
	var ready []string
	for _, id := range w.StartNodes() {
		f.status[id] = StepStatus{State: StepReady}
		ready = append(ready, id)
		readyCount[id]++
	}
	for len(ready) > 0 {
		i := pick(ready)
		id := ready[i]
		ready = append(ready[:i:i], ready[i+1:]...)
		res, ok := results[id]
		if !ok {
			res = NodeResult{Output: id}
		}
		r, err := w.Route(id, res, Env{})
		if err != nil {
			t.Fatalf("Route(%s): %v", id, err)
		}
		f.resolve(id, StepSucceeded, r)
		tr := w.Advance([]string{id}, f)
		f.apply(tr)
		for _, rn := range tr.Ready {
			readyCount[rn.ID]++
			ready = append(ready, rn.ID)
		}
	}
	return readyCount, f
}

func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// TestJoinsFireOnce feeds the arrivals of every predecessor one at a time,
// in every order, and checks that each join is made ready exactly once and
// every node ends decided.
func TestJoinsFireOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		spec    string
		results map[string]NodeResult
		// node → wanted number of times made ready (0: skipped)
		want map[string]int
	}{
		{name: "any join with three predecessors", spec: "s->a s->b s->c a->j b->j c->j j:any j->k",
			want: map[string]int{"s": 1, "a": 1, "b": 1, "c": 1, "j": 1, "k": 1}},
		{name: "all join with three predecessors", spec: "s->a s->b s->c a->j b->j c->j j->k",
			want: map[string]int{"s": 1, "a": 1, "b": 1, "c": 1, "j": 1, "k": 1}},
		{name: "exclusive action branches converge on an all join", spec: "s->x x-yes->a x-no->b s->c a->j b->j c->j",
			results: map[string]NodeResult{"x": {Output: "x", Action: "yes"}},
			want:    map[string]int{"s": 1, "x": 1, "a": 1, "b": 0, "c": 1, "j": 1}},
		{name: "any join behind exclusive branches", spec: "s->x x-yes->a x-no->b s->c a->j b->j c->j j:any",
			results: map[string]NodeResult{"x": {Output: "x", Action: "no"}},
			want:    map[string]int{"s": 1, "x": 1, "a": 0, "b": 1, "c": 1, "j": 1}},
		{name: "untaken terminal branch", spec: "s-go->a s-stop->b b->c",
			results: map[string]NodeResult{"s": {Output: "s", Action: "go"}},
			want:    map[string]int{"s": 1, "a": 1, "b": 0, "c": 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := graph(t, tt.spec)
			// pick by a fixed permutation of the node order: the ready node
			// earliest in perm runs first.
			for _, perm := range permutations(len(w.NodeIDs())) {
				rank := map[string]int{}
				for i, id := range w.NodeIDs() {
					rank[id] = perm[i]
				}
				counts, f := simulate(t, w, tt.results, func(ready []string) int {
					best := 0
					for i, id := range ready {
						if rank[id] < rank[ready[best]] {
							best = i
						}
					}
					return best
				})
				for id, want := range tt.want {
					if counts[id] != want {
						t.Fatalf("order %v: %s made ready %d times, want %d", perm, id, counts[id], want)
					}
					st, _ := f.Status(id)
					wantState := StepSucceeded
					if want == 0 {
						wantState = StepSkipped
					}
					if st.State != wantState {
						t.Fatalf("order %v: %s is %q, want %q", perm, id, st.State, wantState)
					}
				}
			}
		})
	}
}

func TestAnyJoinInputIsFirstArrival(t *testing.T) {
	t.Parallel()
	w := graph(t, "s->a s->b s->c a->j b->j c->j j:any")
	for _, first := range []string{"a", "b", "c"} {
		f := newFakeStates()
		f.took("s", map[string]any{"a": 0.0, "b": 0.0, "c": 0.0})
		var fired []ReadyNode
		for _, id := range []string{first, "a", "b", "c"} {
			if _, done := f.status[id]; done && f.status[id].State != StepReady {
				continue
			}
			f.took(id, map[string]any{"j": "from " + id})
			tr := w.Advance([]string{id}, f)
			f.apply(tr)
			fired = append(fired, tr.Ready...)
		}
		if want := []ReadyNode{{ID: "j", Input: "from " + first}}; !equal(fired, want) {
			t.Errorf("first arrival %s: ready %v, want %v", first, fired, want)
		}
	}
}

func TestResolveInput(t *testing.T) {
	t.Parallel()
	w := mustCompile(t, nil, `{"id":"in","nodes":[
		{"id":"a","uses":"noop"},
		{"id":"b","uses":"noop"},
		{"id":"plain","uses":"noop"},
		{"id":"byNode","uses":"noop","inputs":"a"},
		{"id":"byNodeWithoutOutput","uses":"noop","inputs":"b"},
		{"id":"byContextKey","uses":"noop","inputs":"user"},
		{"id":"underscore","uses":"noop","inputs":"_token"},
		{"id":"outputsKey","uses":"noop","inputs":"_outputs.a"},
		{"id":"outputsKeyFromContext","uses":"noop","inputs":"_outputs.b"},
		{"id":"missing","uses":"noop","inputs":"nowhere"},
		{"id":"mapped","uses":"noop","inputs":{"x":"a","y":"_token","z":"user","w":"_outputs.a","m":"nowhere","n":"b"}}]}`)
	ctx := map[string]any{
		"user":       map[string]any{"name": "ada"},
		"_token":     "secret",
		"a":          "context value shadowed by node a",
		"b":          "context b",
		"_outputs.b": "stored output of b",
	}
	outputs := map[string]any{"a": map[string]any{"total": 3.0}}
	edge := map[string]any{"from": "edge"}
	tests := []struct {
		node string
		want any
	}{
		{"plain", edge},
		{"byNode", outputs["a"]},
		{"byNodeWithoutOutput", "context b"},
		{"byContextKey", ctx["user"]},
		{"underscore", "secret"},
		{"outputsKey", outputs["a"]},
		{"outputsKeyFromContext", "stored output of b"},
		{"missing", nil},
		{"mapped", map[string]any{"x": outputs["a"], "y": "secret", "z": ctx["user"], "w": outputs["a"], "m": nil, "n": "context b"}},
		{"unknown-node", edge},
	}
	for _, tt := range tests {
		t.Run(tt.node, func(t *testing.T) {
			t.Parallel()
			if got := w.ResolveInput(tt.node, edge, ctx, outputs); !equal(got, tt.want) {
				t.Errorf("ResolveInput(%s) = %#v, want %#v", tt.node, got, tt.want)
			}
		})
	}
}

func TestGraphQueries(t *testing.T) {
	t.Parallel()
	w := graph(t, "a->c b->c c->d c->e a~>f f->d lone")
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"StartNodes exclude fallbacks, declaration order", w.StartNodes(), []string{"a", "b", "lone"}},
		{"NodeIDs", w.NodeIDs(), []string{"a", "c", "b", "d", "e", "f", "lone"}},
		{"Predecessors of a join", w.Predecessors("c"), []string{"a", "b"}},
		{"Predecessors fed by a fallback", w.Predecessors("d"), []string{"c", "f"}},
		{"Predecessors of a start", w.Predecessors("a"), []string(nil)},
		{"Successors", w.Successors("c"), []string{"d", "e"}},
		{"Successors of a sink", w.Successors("e"), []string(nil)},
		{"Successors of a fallback", w.Successors("f"), []string{"d"}},
	}
	for _, tt := range tests {
		if !equal(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if got, ok := w.BackedBy("f"); !ok || got != "a" {
		t.Errorf("BackedBy(f) = %q, %v; want a, true", got, ok)
	}
	if _, ok := w.BackedBy("a"); ok {
		t.Errorf("BackedBy(a) reports a node; a is no fallback")
	}
}

func TestCompiledNodeDefaults(t *testing.T) {
	t.Parallel()
	w := mustCompile(t, nil, `{"id":"d","nodes":[
		{"id":"plain","uses":"noop"},
		{"id":"zero","uses":"noop","config":{"maxRetries":0}},
		{"id":"three","uses":"noop","config":{"maxRetries":3,"retryDelay":250,"timeout":1500}},
		{"id":"any","uses":"noop","config":{"joinStrategy":"any"}},
		{"id":"all","uses":"noop","config":{"joinStrategy":"all","fallback":"plain2"}},
		{"id":"plain2","uses":"noop"}]}`)
	tests := []struct {
		id       string
		attempts int
		delay    time.Duration
		timeout  time.Duration
		join     string
		fallback string
	}{
		{"plain", 1, 0, 0, JoinAll, ""},
		{"zero", 1, 0, 0, JoinAll, ""},
		{"three", 3, 250 * time.Millisecond, 1500 * time.Millisecond, JoinAll, ""},
		{"any", 1, 0, 0, JoinAny, ""},
		{"all", 1, 0, 0, JoinAll, "plain2"},
	}
	for _, tt := range tests {
		n, ok := w.Node(tt.id)
		if !ok {
			t.Fatalf("Node(%s) missing", tt.id)
		}
		if n.MaxAttempts != tt.attempts || n.RetryDelay != tt.delay || n.Timeout != tt.timeout || n.JoinStrategy != tt.join || n.Fallback != tt.fallback {
			t.Errorf("%s: attempts %d delay %s timeout %s join %q fallback %q; want %d %s %s %q %q", tt.id,
				n.MaxAttempts, n.RetryDelay, n.Timeout, n.JoinStrategy, n.Fallback,
				tt.attempts, tt.delay, tt.timeout, tt.join, tt.fallback)
		}
	}
}

func TestOutputRefs(t *testing.T) {
	t.Parallel()
	w := mustCompile(t, NewRegistry(), `{"id":"refs","nodes":[
		{"id":"a","uses":"noop"},{"id":"b","uses":"noop"},{"id":"c","uses":"noop"},{"id":"d","uses":"noop"},
		{"id":"x","uses":"noop","inputs":{"p":"a","t":"_token","o":"_outputs.b","u":"user"}},
		{"id":"y","uses":"noop"},
		{"id":"dyn","uses":"noop"},
		{"id":"t","uses":"transform","params":{"expression":"outputs.d + 1"}}],
	"edges":[
		{"source":"x","target":"y","condition":"outputs.c.ok && context[\"_outputs.d\"] != nil"},
		{"source":"dyn","target":"t","condition":"outputs[result.action] != nil"}]}`)
	tests := []struct {
		id   string
		refs []string
		all  bool
	}{
		{"x", []string{"a", "b", "c", "d"}, false},
		{"dyn", []string{}, true},
		{"t", []string{"d"}, false},
		{"y", []string{}, false},
	}
	for _, tt := range tests {
		n, _ := w.Node(tt.id)
		if !equal(n.OutputRefs, tt.refs) || n.AllOutputs != tt.all {
			t.Errorf("%s: OutputRefs %v AllOutputs %v; want %v %v", tt.id, n.OutputRefs, n.AllOutputs, tt.refs, tt.all)
		}
	}
}

func TestStepStatePredicates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s                           StepState
		resolved, pending, terminal bool
	}{
		{StepReady, false, true, false},
		{StepRetrying, false, true, false},
		{StepSleeping, false, true, false},
		{StepAwaitingFallback, false, false, false},
		{StepSucceeded, true, false, true},
		{StepRecovered, true, false, true},
		{StepSkipped, true, false, true},
		{StepFailed, false, false, true},
	}
	for _, tt := range tests {
		if tt.s.Resolved() != tt.resolved || tt.s.Pending() != tt.pending || tt.s.Terminal() != tt.terminal {
			t.Errorf("%s: Resolved %v Pending %v Terminal %v; want %v %v %v", tt.s,
				tt.s.Resolved(), tt.s.Pending(), tt.s.Terminal(), tt.resolved, tt.pending, tt.terminal)
		}
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	type point struct {
		X int `json:"x"`
	}
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"nil", nil, nil},
		{"int", 3, 3.0},
		{"struct", point{X: 2}, map[string]any{"x": 2.0}},
		{"typed map", map[string]int{"n": 1}, map[string]any{"n": 1.0}},
		{"nested int in a generic map", map[string]any{"n": 1, "s": []any{2}}, map[string]any{"n": 1.0, "s": []any{2.0}}},
		{"already JSON", map[string]any{"n": 1.0}, map[string]any{"n": 1.0}},
	}
	for _, tt := range tests {
		if got := Normalize(tt.in); !equal(got, tt.want) {
			t.Errorf("%s: Normalize = %#v, want %#v", tt.name, got, tt.want)
		}
	}
}
