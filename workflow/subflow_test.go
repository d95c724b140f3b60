package workflow

import (
	"context"
	"strings"
	"testing"
)

// subflowNodes are testNodes plus runid (outputs its run's id) and
// double (outputs twice its input).
func subflowNodes() *testNodes {
	tn := newTestNodes()
	tn.Register("runid", func(_ context.Context, in NodeInput) (NodeResult, error) {
		return NodeResult{Output: in.RunID}, nil
	})
	tn.Register("double", func(_ context.Context, in NodeInput) (NodeResult, error) {
		n, _ := in.Input.(float64)
		return NodeResult{Output: 2 * n}, nil
	})
	return tn
}

var subflowChildren = map[string]string{
	"math": `{"id":"math","nodes":[{"id":"twice","uses":"double","inputs":"a"}]}`,
	"two-ends": `{"id":"two-ends","nodes":[{"id":"seed","uses":"echo"},{"id":"twice","uses":"double"},{"id":"same","uses":"echo"}],
		"edges":[{"source":"seed","target":"twice"},{"source":"seed","target":"same"}]}`,
	"broken": `{"id":"broken","nodes":[{"id":"bad","uses":"fail","params":{"message":"child broke"}}]}`,
	"whoami": `{"id":"whoami","nodes":[{"id":"me","uses":"runid"}]}`,
	"self":   `{"id":"self","nodes":[{"id":"sub","uses":"subflow","params":{"blueprintId":"self"}}]}`,
}

func childBlueprints(t *testing.T) map[string]*Blueprint {
	out := map[string]*Blueprint{}
	for id, doc := range subflowChildren {
		out[id] = mustDecode(t, doc)
	}
	return out
}

func TestRunSubflows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		sub        string // the subflow node's params and config
		input      map[string]any
		wantStatus RunStatus
		want       map[string]any // context keys
		wantErr    string
		wantCalls  map[string]int
	}{
		{name: "inputs and outputs", sub: `"uses":"subflow","params":{"blueprintId":"math","inputs":{"a":"val"},"outputs":{"result":"twice"}}`,
			input: map[string]any{"val": 21}, wantStatus: RunCompleted,
			want: map[string]any{"result": 42.0, "_outputs.sub": map[string]any{"a": 21.0, "_outputs.twice": 42.0, "twice": 42.0}, "_outputs.after": map[string]any{"a": 21.0, "_outputs.twice": 42.0, "twice": 42.0}}},
		{name: "an inputs key names a node: its output", sub: `"uses":"SubflowNode","params":{"blueprintId":"math","inputs":{"a":"start"}}`,
			wantStatus: RunCompleted, want: map[string]any{"_outputs.sub": 6.0}},
		{name: "without inputs the child's start nodes get the node's input; several ends give a map", sub: `"uses":"subflow","params":{"blueprintId":"two-ends"}`,
			wantStatus: RunCompleted, want: map[string]any{"_outputs.sub": map[string]any{"twice": 6.0, "same": 3.0}}},
		{name: "the child's run id derives from the parent's and the step", sub: `"uses":"subflow","params":{"blueprintId":"whoami"}`,
			wantStatus: RunCompleted, want: map[string]any{"_outputs.sub": ChildRunID("parent", "sub", 1)}},
		{name: "a failed child fails the step", sub: `"uses":"subflow","params":{"blueprintId":"broken"}`,
			wantStatus: RunFailed, wantErr: "Sub-workflow 'broken' did not complete successfully. Status: failed. Error: node 'bad': child broke"},
		{name: "retries run the child again, then the fallback stands in", sub: `"uses":"subflow","params":{"blueprintId":"broken"},"config":{"maxRetries":2,"fallback":"rescue"}`,
			wantStatus: RunCompleted, want: map[string]any{"_outputs.after": "rescued"}, wantCalls: map[string]int{"bad": 2, "rescue": 1}},
		{name: "a missing child blueprint", sub: `"uses":"subflow","params":{"blueprintId":"ghost"}`,
			wantStatus: RunFailed, wantErr: `subflow: no blueprint "ghost" among those given (broken, math, self, two-ends, whoami)`},
		{name: "a subflow that runs itself stops at a depth", sub: `"uses":"subflow","params":{"blueprintId":"self"}`,
			wantStatus: RunFailed, wantErr: "runs nested more than 64 deep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tn := subflowNodes()
			doc := `{"id":"parent","nodes":[{"id":"start","uses":"const","params":{"value":3}},{"id":"sub",` + tt.sub + `},
				{"id":"after","uses":"echo"},{"id":"rescue","uses":"const","params":{"value":"rescued"}}],
				"edges":[{"source":"start","target":"sub"},{"source":"sub","target":"after"}]}`
			res, err := Run(t.Context(), mustDecode(t, doc), tn.Registry, tt.input, RunOptions{RunID: "parent", Blueprints: childBlueprints(t)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tt.wantStatus {
				t.Fatalf("status %s, errors %+v; want %s", res.Status, res.Errors, tt.wantStatus)
			}
			for k, want := range tt.want {
				if got := res.Context[k]; !equal(got, normalize(want)) {
					t.Errorf("%s = %#v, want %#v", k, got, want)
				}
			}
			if tt.wantErr != "" && (len(res.Errors) == 0 || res.Errors[0].NodeID != "sub" || !strings.Contains(res.Errors[0].Message, tt.wantErr)) {
				t.Errorf("errors %+v, want sub: %s", res.Errors, tt.wantErr)
			}
			for id, n := range tt.wantCalls {
				if got := tn.callsOf(id); got != n {
					t.Errorf("%s called %d times, want %d", id, got, n)
				}
			}
		})
	}
}

func TestValidateSubflows(t *testing.T) {
	t.Parallel()
	set := childBlueprints(t)
	tests := []struct {
		name, doc, want string // want: "" for valid
	}{
		{"a known child", `{"id":"p","nodes":[{"id":"s","uses":"subflow","params":{"blueprintId":"math"}}]}`, ""},
		{"a missing child", `{"id":"p","nodes":[{"id":"a","uses":"noop"},{"id":"s","uses":"SubflowNode","params":{"blueprintId":"nope"}}]}`,
			`nodes[1].params.blueprintId: no blueprint "nope" among those given`},
		{"a blueprint running itself", subflowChildren["self"], "subflow cycle: self → self"},
	}
	for _, tt := range tests {
		err := ValidateSubflows(mustDecode(t, tt.doc), set)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: ValidateSubflows = %v, want %q", tt.name, err, tt.want)
		}
	}
	if probs := validationProblems(t, `{"id":"p","nodes":[{"id":"s","uses":"subflow","params":{"inputs":{"a":1}}}]}`, NewRegistry()); !hasProblem(probs, problem{"nodes[0].params", "blueprintId: required"}) || !hasProblem(probs, problem{"nodes[0].params", "inputs.a: must be a string"}) {
		t.Errorf("subflow params: %v", probs)
	}
	id := ChildRunID("r", "s", 1)
	if id != ChildRunID("r", "s", 1) || id == ChildRunID("r", "s", 2) || ChildRunID("r", "s#1", 1) == ChildRunID("r", "s#2", 1) {
		t.Error("ChildRunID is not a function of run, step and attempt alone")
	}
}

// A child (or grandchild) that awaits makes the run await at its subflow
// step; a resume of that step goes to the awaiting step below, and the
// child's end continues the run. Without a resume the run ends awaiting;
// a child awaiting at two steps refuses a resume through its parent.
func TestRunSubflowChildAwaits(t *testing.T) {
	t.Parallel()
	children := map[string]*Blueprint{
		"ask":  mustDecode(t, `{"id":"ask","nodes":[{"id":"gate","uses":"wait"},{"id":"got","uses":"echo"}],"edges":[{"source":"gate","target":"got"}]}`),
		"mid":  mustDecode(t, `{"id":"mid","nodes":[{"id":"inner","uses":"subflow","params":{"blueprintId":"ask"}}]}`),
		"twin": mustDecode(t, `{"id":"twin","nodes":[{"id":"a","uses":"wait"},{"id":"b","uses":"wait"}]}`),
	}
	parent := func(child string) *Blueprint {
		return mustDecode(t, `{"id":"parent","nodes":[{"id":"sub","uses":"subflow","params":{"blueprintId":"`+child+`"}},{"id":"after","uses":"echo"}],
			"edges":[{"source":"sub","target":"after"}]}`)
	}
	for _, child := range []string{"ask", "mid"} {
		t.Run(child, func(t *testing.T) {
			t.Parallel()
			var awaited []*RunResult
			res, err := Run(t.Context(), parent(child), subflowNodes().Registry, nil, RunOptions{RunID: "parent", Blueprints: children,
				OnAwait: func(r *RunResult) (Resume, bool) {
					awaited = append(awaited, r)
					return Resume{Node: "sub", Output: map[string]any{"ok": true}}, len(awaited) == 1
				}})
			if err != nil {
				t.Fatal(err)
			}
			if len(awaited) != 1 || awaited[0].Status != RunAwaiting {
				t.Fatalf("awaited %+v; want once, awaiting", awaited)
			}
			if res.Status != RunCompleted || !equal(res.Context["after"], map[string]any{"ok": true}) {
				t.Fatalf("status %s, errors %+v, after = %v; want completed with the resume's output through the child", res.Status, res.Errors, res.Context["after"])
			}
		})
	}
	t.Run("no resume", func(t *testing.T) {
		t.Parallel()
		res, err := Run(t.Context(), parent("mid"), subflowNodes().Registry, nil, RunOptions{RunID: "parent", Blueprints: children})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != RunAwaiting || len(res.Steps) != 1 || res.Steps[0].State != StepAwaitingChild {
			t.Fatalf("status %s, steps %+v; want awaiting at sub, awaiting_child", res.Status, res.Steps)
		}
	})
	t.Run("two awaiting steps", func(t *testing.T) {
		t.Parallel()
		res, err := Run(t.Context(), parent("twin"), subflowNodes().Registry, nil, RunOptions{RunID: "parent", Blueprints: children,
			OnAwait: func(r *RunResult) (Resume, bool) { return Resume{Node: "sub"}, true }})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != RunFailed || len(res.Errors) == 0 || !strings.Contains(res.Errors[0].Message, "awaits at 2 steps (a, b)") {
			t.Fatalf("status %s, errors %+v; want failed naming a and b", res.Status, res.Errors)
		}
	})
}
