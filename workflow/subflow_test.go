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
