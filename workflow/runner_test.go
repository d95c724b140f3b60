package workflow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// runTimeout bounds every run of these tests, so a hang fails instead of
// blocking the package.
const runTimeout = 30 * time.Second

func runDoc(t *testing.T, reg *Registry, doc string, input map[string]any) *RunResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), runTimeout)
	defer cancel()
	res, err := Run(ctx, mustDecode(t, doc), reg, input, RunOptions{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func stepOf(t *testing.T, res *RunResult, id string) StepRecord {
	t.Helper()
	for _, s := range res.Steps {
		if s.NodeID == id {
			return s
		}
	}
	t.Fatalf("no step for %s in %+v", id, res.Steps)
	return StepRecord{}
}

func hasStep(res *RunResult, id string) bool {
	for _, s := range res.Steps {
		if s.NodeID == id {
			return true
		}
	}
	return false
}

// builtin reports whether a step ran a built-in node (not counted by
// testNodes).
func builtin(res *RunResult, id string) bool {
	for _, s := range res.Steps {
		if s.NodeID == id {
			return s.Uses == NodeNoop || s.Uses == NodeTransform || s.Uses == NodeSleep
		}
	}
	return false
}

// outputsOf returns the _outputs.<id> entries of a run's context, by id.
func outputsOf(res *RunResult) map[string]any {
	out := map[string]any{}
	for k, v := range res.Context {
		if id, ok := strings.CutPrefix(k, "_outputs."); ok {
			out[id] = v
		}
	}
	return out
}

func TestRunScenarios(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		doc        string
		input      map[string]any
		wantStatus RunStatus
		// wantOutputs is every _outputs.<id> of the final context, exactly.
		wantOutputs map[string]any
		// wantStates is every step's state (a node missing here has no step).
		wantStates   map[string]StepState
		wantAttempts map[string]int // default 1 for run nodes, 0 for skipped ones
		wantOutput   any
		wantContext  map[string]any // user keys that must be in the final context
	}{
		{name: "linear chain",
			doc: `{"id":"s","nodes":[
				{"id":"a","uses":"const","params":{"value":{"n":1}}},
				{"id":"b","uses":"transform","params":{"expression":"input.n + 1"}},
				{"id":"c","uses":"echo"}],
			"edges":[{"source":"a","target":"b"},{"source":"b","target":"c"}]}`,
			wantStatus:  RunCompleted,
			wantOutputs: map[string]any{"a": map[string]any{"n": 1.0}, "b": 2.0, "c": 2.0},
			wantStates:  map[string]StepState{"a": StepSucceeded, "b": StepSucceeded, "c": StepSucceeded},
			wantOutput:  2.0},
		{name: "start node gets the initial input object",
			doc:         `{"id":"s","nodes":[{"id":"a","uses":"echo"},{"id":"b","uses":"echo"}]}`,
			input:       map[string]any{"order": "o-1", "n": 3},
			wantStatus:  RunCompleted,
			wantOutputs: map[string]any{"a": map[string]any{"order": "o-1", "n": 3.0}, "b": map[string]any{"order": "o-1", "n": 3.0}},
			wantStates:  map[string]StepState{"a": StepSucceeded, "b": StepSucceeded},
			wantOutput:  map[string]any{"a": map[string]any{"order": "o-1", "n": 3.0}, "b": map[string]any{"order": "o-1", "n": 3.0}},
			wantContext: map[string]any{"order": "o-1", "n": 3.0}},
		{name: "start node without input gets an empty object",
			doc:         `{"id":"s","nodes":[{"id":"a","uses":"echo"}]}`,
			wantStatus:  RunCompleted,
			wantOutputs: map[string]any{"a": map[string]any{}},
			wantStates:  map[string]StepState{"a": StepSucceeded},
			wantOutput:  map[string]any{}},
		{name: "fan-out and all join",
			doc: `{"id":"s","nodes":[
				{"id":"s","uses":"const","params":{"value":5}},
				{"id":"l","uses":"transform","params":{"expression":"input * 2"}},
				{"id":"r","uses":"transform","params":{"expression":"input + 1"}},
				{"id":"j","uses":"echo"}],
			"edges":[{"source":"s","target":"l"},{"source":"s","target":"r"},{"source":"l","target":"j"},{"source":"r","target":"j"}]}`,
			wantStatus:  RunCompleted,
			wantOutputs: map[string]any{"s": 5.0, "l": 10.0, "r": 6.0, "j": map[string]any{"l": 10.0, "r": 6.0}},
			wantStates:  map[string]StepState{"s": StepSucceeded, "l": StepSucceeded, "r": StepSucceeded, "j": StepSucceeded},
			wantOutput:  map[string]any{"l": 10.0, "r": 6.0}},
		{name: "exclusive action branches converge on an all join",
			doc: `{"id":"s","nodes":[
				{"id":"x","uses":"const","params":{"value":"X","action":"yes"}},
				{"id":"a","uses":"echo"},{"id":"b","uses":"echo"},{"id":"j","uses":"echo"}],
			"edges":[{"source":"x","target":"a","action":"yes"},{"source":"x","target":"b","action":"no"},
			         {"source":"a","target":"j"},{"source":"b","target":"j"}]}`,
			wantStatus:  RunCompleted,
			wantOutputs: map[string]any{"x": "X", "a": "X", "j": map[string]any{"a": "X"}},
			wantStates:  map[string]StepState{"x": StepSucceeded, "a": StepSucceeded, "b": StepSkipped, "j": StepSucceeded},
			wantOutput:  map[string]any{"a": "X"}},
		{name: "untaken terminal branch is skipped across levels",
			doc: `{"id":"s","nodes":[
				{"id":"s","uses":"const","params":{"value":1,"action":"go"}},
				{"id":"a","uses":"echo"},{"id":"b","uses":"echo"},{"id":"c","uses":"echo"},{"id":"d","uses":"echo"}],
			"edges":[{"source":"s","target":"a","action":"go"},{"source":"s","target":"b","action":"stop"},
			         {"source":"b","target":"c"},{"source":"c","target":"d"}]}`,
			wantStatus:  RunCompleted,
			wantOutputs: map[string]any{"s": 1.0, "a": 1.0},
			wantStates:  map[string]StepState{"s": StepSucceeded, "a": StepSucceeded, "b": StepSkipped, "c": StepSkipped, "d": StepSkipped},
			wantOutput:  1.0},
		{name: "conditions read result.output, params, context and outputs",
			doc: `{"id":"s","nodes":[
				{"id":"s","uses":"const","params":{"value":{"amount":150},"limit":100}},
				{"id":"big","uses":"echo"},{"id":"small","uses":"echo"},{"id":"vip","uses":"echo"},{"id":"chk","uses":"echo"},{"id":"none","uses":"echo"}],
			"edges":[
				{"source":"s","target":"big","condition":"result.output.amount > params.limit"},
				{"source":"s","target":"small","condition":"result.output.amount <= params.limit"},
				{"source":"s","target":"vip","condition":"context.tier == \"gold\""},
				{"source":"s","target":"chk","condition":"outputs.s.amount == 150 && context[\"_outputs.s\"].amount == 150"},
				{"source":"s","target":"none","condition":"context.tier == \"silver\""}]}`,
			input:      map[string]any{"tier": "gold"},
			wantStatus: RunCompleted,
			wantOutputs: map[string]any{"s": map[string]any{"amount": 150.0}, "big": map[string]any{"amount": 150.0},
				"vip": map[string]any{"amount": 150.0}, "chk": map[string]any{"amount": 150.0}},
			wantStates: map[string]StepState{"s": StepSucceeded, "big": StepSucceeded, "small": StepSkipped,
				"vip": StepSucceeded, "chk": StepSucceeded, "none": StepSkipped},
			wantOutput: map[string]any{"big": map[string]any{"amount": 150.0}, "vip": map[string]any{"amount": 150.0}, "chk": map[string]any{"amount": 150.0}}},
		{name: "transform on an edge",
			doc: `{"id":"s","nodes":[{"id":"s","uses":"const","params":{"value":{"amount":21}}},{"id":"t","uses":"echo"}],
			"edges":[{"source":"s","target":"t","transform":"input.amount * 2"}]}`,
			wantStatus:  RunCompleted,
			wantOutputs: map[string]any{"s": map[string]any{"amount": 21.0}, "t": 42.0},
			wantStates:  map[string]StepState{"s": StepSucceeded, "t": StepSucceeded},
			wantOutput:  42.0},
		{name: "inputs string and map resolution",
			doc: `{"id":"s","nodes":[
				{"id":"s","uses":"const","params":{"value":{"n":1}}},
				{"id":"u","uses":"echo","inputs":"s"},
				{"id":"m","uses":"echo","inputs":{"from":"s","user":"user","tok":"_token","out":"_outputs.s","none":"nothing"}}],
			"edges":[{"source":"s","target":"u","transform":"999"},{"source":"s","target":"m"}]}`,
			input:      map[string]any{"user": "ada", "_token": "t0k"},
			wantStatus: RunCompleted,
			wantOutputs: map[string]any{"s": map[string]any{"n": 1.0}, "u": map[string]any{"n": 1.0},
				"m": map[string]any{"from": map[string]any{"n": 1.0}, "user": "ada", "tok": "t0k", "out": map[string]any{"n": 1.0}, "none": nil}},
			wantStates: map[string]StepState{"s": StepSucceeded, "u": StepSucceeded, "m": StepSucceeded},
			wantOutput: map[string]any{"u": map[string]any{"n": 1.0},
				"m": map[string]any{"from": map[string]any{"n": 1.0}, "user": "ada", "tok": "t0k", "out": map[string]any{"n": 1.0}, "none": nil}}},
		{name: "transform node reads outputs and branches on its action",
			doc: `{"id":"s","nodes":[
				{"id":"s","uses":"const","params":{"value":{"n":3}}},
				{"id":"t","uses":"transform","params":{"expression":"outputs.s.n * 10","action":"result.output > 5 ? \"big\" : \"small\""}},
				{"id":"big","uses":"echo"},{"id":"small","uses":"echo"}],
			"edges":[{"source":"s","target":"t"},{"source":"t","target":"big","action":"big"},{"source":"t","target":"small","action":"small"}]}`,
			wantStatus:   RunCompleted,
			wantOutputs:  map[string]any{"s": map[string]any{"n": 3.0}, "t": 30.0, "big": 30.0},
			wantStates:   map[string]StepState{"s": StepSucceeded, "t": StepSucceeded, "big": StepSucceeded, "small": StepSkipped},
			wantOutput:   30.0,
			wantAttempts: map[string]int{"s": 1, "t": 1, "big": 1}},
		{name: "fallback stands in for a node after its last attempt",
			doc: `{"id":"s","nodes":[
				{"id":"s","uses":"const","params":{"value":"order-1"}},
				{"id":"a","uses":"fail","params":{"message":"card declined"},"config":{"maxRetries":2,"fallback":"fb"}},
				{"id":"fb","uses":"echo","params":{"action":"fallback"}},
				{"id":"handled","uses":"echo"},{"id":"next","uses":"echo"},{"id":"audit","uses":"echo"}],
			"edges":[{"source":"s","target":"a"},
			         {"source":"a","target":"handled","action":"fallback"},{"source":"a","target":"next"},
			         {"source":"fb","target":"audit"}]}`,
			wantStatus:  RunCompleted,
			wantOutputs: map[string]any{"s": "order-1", "a": "order-1", "fb": "order-1", "handled": "order-1", "audit": "order-1"},
			wantStates: map[string]StepState{"s": StepSucceeded, "a": StepRecovered, "fb": StepSucceeded,
				"handled": StepSucceeded, "next": StepSkipped, "audit": StepSucceeded},
			wantAttempts: map[string]int{"s": 1, "a": 2, "fb": 1, "handled": 1, "audit": 1},
			wantOutput:   map[string]any{"handled": "order-1", "audit": "order-1"}},
		{name: "fallback chain",
			doc: `{"id":"s","nodes":[
				{"id":"a","uses":"fail","params":{"message":"a down"},"config":{"fallback":"f1"}},
				{"id":"f1","uses":"fail","params":{"message":"f1 down"},"config":{"fallback":"f2"}},
				{"id":"f2","uses":"const","params":{"value":"saved"}},
				{"id":"b","uses":"echo"}],
			"edges":[{"source":"a","target":"b"}]}`,
			wantStatus:  RunCompleted,
			wantOutputs: map[string]any{"a": "saved", "f1": "saved", "f2": "saved", "b": "saved"},
			wantStates:  map[string]StepState{"a": StepRecovered, "f1": StepRecovered, "f2": StepSucceeded, "b": StepSucceeded},
			wantOutput:  "saved"},
		{name: "unneeded fallback is skipped and a join behind it fires",
			doc: `{"id":"s","nodes":[
				{"id":"a","uses":"const","params":{"value":1},"config":{"fallback":"f"}},
				{"id":"f","uses":"const","params":{"value":2}},
				{"id":"j","uses":"echo"}],
			"edges":[{"source":"a","target":"j"},{"source":"f","target":"j"}]}`,
			wantStatus:  RunCompleted,
			wantOutputs: map[string]any{"a": 1.0, "j": map[string]any{"a": 1.0}},
			wantStates:  map[string]StepState{"a": StepSucceeded, "f": StepSkipped, "j": StepSucceeded},
			wantOutput:  map[string]any{"a": 1.0}},
		{name: "failure without fallback fails the run with the node's message",
			doc: `{"id":"s","nodes":[
				{"id":"s","uses":"const","params":{"value":1}},
				{"id":"a","uses":"fail","params":{"message":"inventory unavailable"},"config":{"maxRetries":3}},
				{"id":"b","uses":"echo"}],
			"edges":[{"source":"s","target":"a"},{"source":"a","target":"b"}]}`,
			wantStatus:   RunFailed,
			wantOutputs:  map[string]any{"s": 1.0},
			wantStates:   map[string]StepState{"s": StepSucceeded, "a": StepFailed},
			wantAttempts: map[string]int{"s": 1, "a": 3}},
		{name: "failing fallback fails the run",
			doc: `{"id":"s","nodes":[
				{"id":"a","uses":"fail","params":{"message":"a down"},"config":{"fallback":"f"}},
				{"id":"f","uses":"fail","params":{"message":"f down"}}]}`,
			wantStatus:  RunFailed,
			wantOutputs: map[string]any{},
			wantStates:  map[string]StepState{"a": StepAwaitingFallback, "f": StepFailed}},
		{name: "panic fails the run",
			doc:         `{"id":"s","nodes":[{"id":"p","uses":"panic","params":{"message":"kaboom"}}]}`,
			wantStatus:  RunFailed,
			wantOutputs: map[string]any{},
			wantStates:  map[string]StepState{"p": StepFailed}},
		{name: "condition error fails the run",
			doc: `{"id":"s","nodes":[{"id":"a","uses":"const","params":{"value":{}}},{"id":"b","uses":"echo"}],
			"edges":[{"source":"a","target":"b","condition":"result.output.list[2] == 1"}]}`,
			wantStatus:  RunFailed,
			wantOutputs: map[string]any{},
			wantStates:  map[string]StepState{"a": StepFailed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tn := newTestNodes()
			res := runDoc(t, tn.Registry, tt.doc, tt.input)
			if res.Status != tt.wantStatus {
				t.Fatalf("status %s, want %s (errors %v)", res.Status, tt.wantStatus, res.Errors)
			}
			if got := outputsOf(res); !equal(got, tt.wantOutputs) {
				t.Errorf("outputs\n got %#v\nwant %#v", got, tt.wantOutputs)
			}
			if len(res.Steps) != len(tt.wantStates) {
				t.Errorf("%d steps %+v, want %d", len(res.Steps), res.Steps, len(tt.wantStates))
			}
			for id, want := range tt.wantStates {
				st := stepOf(t, res, id)
				if st.State != want {
					t.Errorf("step %s is %q, want %q", id, st.State, want)
				}
				wantAttempts, ok := tt.wantAttempts[id]
				if !ok {
					wantAttempts = 1
				}
				if want != StepSkipped && want != StepAwaitingFallback && st.Attempts != wantAttempts {
					t.Errorf("step %s made %d attempts, want %d", id, st.Attempts, wantAttempts)
				}
				if want == StepSkipped && (st.Attempts != 0 || tn.callsOf(id) != 0) {
					t.Errorf("skipped step %s ran (%d attempts, %d calls)", id, st.Attempts, tn.callsOf(id))
				}
				if counted := tn.callsOf(id) > 0 || !builtin(res, id); want != StepSkipped && counted && tn.callsOf(id) != st.Attempts {
					t.Errorf("step %s: %d attempts recorded, %d calls made", id, st.Attempts, tn.callsOf(id))
				}
			}
			if tt.wantStatus == RunCompleted {
				if !equal(res.Output, tt.wantOutput) {
					t.Errorf("output %#v, want %#v", res.Output, tt.wantOutput)
				}
				if len(res.Errors) != 0 {
					t.Errorf("completed run has errors %v", res.Errors)
				}
			} else if len(res.Errors) != 1 {
				t.Errorf("errors %v, want exactly one", res.Errors)
			}
			for k, want := range tt.wantContext {
				if got := res.Context[k]; !equal(got, want) {
					t.Errorf("context[%s] = %#v, want %#v", k, got, want)
				}
			}
		})
	}
}

func TestRunFailureMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		doc      string
		wantNode string
		wantMsg  string
	}{
		{"node error", `{"id":"f","nodes":[{"id":"a","uses":"fail","params":{"message":"inventory unavailable"},"config":{"maxRetries":2}}]}`,
			"a", "inventory unavailable"},
		{"panic", `{"id":"f","nodes":[{"id":"p","uses":"panic","params":{"message":"kaboom"}}]}`,
			"p", "node panicked: kaboom"},
		{"failing fallback", `{"id":"f","nodes":[{"id":"a","uses":"fail","params":{"message":"a down"},"config":{"fallback":"f"}},{"id":"f","uses":"fail","params":{"message":"f down"}}]}`,
			"f", "f down"},
		{"condition error", `{"id":"f","nodes":[{"id":"a","uses":"const","params":{"value":{}}},{"id":"b","uses":"echo"}],
			"edges":[{"source":"a","target":"b","condition":"result.output.list[2] == 1"}]}`,
			"a", `edge a → b: condition "result.output.list[2] == 1"`},
		{"transform error", `{"id":"f","nodes":[{"id":"a","uses":"const","params":{"value":{}}},{"id":"b","uses":"echo"}],
			"edges":[{"source":"a","target":"b","transform":"result.output.list[2]"}]}`,
			"a", `edge a → b: transform "result.output.list[2]"`},
		{"recovered node's routing error", `{"id":"f","nodes":[{"id":"a","uses":"fail","params":{"message":"x"},"config":{"fallback":"fb"}},{"id":"fb","uses":"const","params":{"value":{}}},{"id":"b","uses":"echo"}],
			"edges":[{"source":"a","target":"b","condition":"result.output.list[2] == 1"}]}`,
			"a", `edge a → b: condition`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runDoc(t, newTestNodes().Registry, tt.doc, nil)
			if res.Status != RunFailed || len(res.Errors) != 1 {
				t.Fatalf("status %s errors %v, want failed with one error", res.Status, res.Errors)
			}
			e := res.Errors[0]
			if e.NodeID != tt.wantNode || !strings.HasPrefix(e.Message, tt.wantMsg) {
				t.Errorf("error %+v, want node %s message starting %q", e, tt.wantNode, tt.wantMsg)
			}
			if st := stepOf(t, res, tt.wantNode); st.State != StepFailed || st.Error != e.Message {
				t.Errorf("step %s: state %s error %q; want failed with %q", tt.wantNode, st.State, st.Error, e.Message)
			}
			if res.Output != nil {
				t.Errorf("failed run has output %v", res.Output)
			}
		})
	}
}

func TestInvokeRecoversPanics(t *testing.T) {
	t.Parallel()
	_, err := Invoke(t.Context(), func(context.Context, NodeInput) (NodeResult, error) {
		var m map[string]int
		//lint:ignore SA5000 the node writes to a nil map on purpose: a runtime panic, as a buggy node's would be
		m["x"] = 1
		return NodeResult{}, nil
	}, NodeInput{})
	var pe *panicError
	if !errors.As(err, &pe) {
		t.Fatalf("Invoke error = %v, want a *panicError", err)
	}
	if !strings.Contains(pe.Error(), "node panicked: assignment to entry in nil map") || len(pe.Stack) == 0 {
		t.Errorf("panicError %q with %d bytes of stack", pe.Error(), len(pe.Stack))
	}
}

func TestRunRetriesWithBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		maxRetries   int
		succeedOn    int
		retryDelayMs int
		wantStatus   RunStatus
		wantAttempts int
		// minimum total backoff: attempt k (k ≥ 2) waits at least
		// retryDelay·2^(k-2)/2.
		minElapsed time.Duration
	}{
		{"succeeds on the third of three attempts", 3, 3, 40, RunCompleted, 3, 20*time.Millisecond + 40*time.Millisecond},
		{"succeeds on the second attempt", 3, 2, 40, RunCompleted, 2, 20 * time.Millisecond},
		{"no delay configured", 3, 3, 0, RunCompleted, 3, 0},
		{"exhausts its attempts", 2, 3, 30, RunFailed, 2, 15 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tn := newTestNodes()
			doc := fmt.Sprintf(`{"id":"r","nodes":[
				{"id":"f","uses":"flaky","params":{"succeedOn":%d},"config":{"maxRetries":%d,"retryDelay":%d}},
				{"id":"r","uses":"read","params":{"keys":["try1","try2","try3"]}}],
				"edges":[{"source":"f","target":"r"}]}`, tt.succeedOn, tt.maxRetries, tt.retryDelayMs)
			began := time.Now()
			res := runDoc(t, tn.Registry, doc, nil)
			elapsed := time.Since(began)
			if res.Status != tt.wantStatus {
				t.Fatalf("status %s, want %s (errors %v)", res.Status, tt.wantStatus, res.Errors)
			}
			st := stepOf(t, res, "f")
			if st.Attempts != tt.wantAttempts || tn.callsOf("f") != tt.wantAttempts {
				t.Errorf("%d attempts recorded, %d calls; want %d", st.Attempts, tn.callsOf("f"), tt.wantAttempts)
			}
			if elapsed < tt.minElapsed {
				t.Errorf("run took %s, less than the minimum backoff %s", elapsed, tt.minElapsed)
			}
			// Only the successful attempt's context writes survive.
			for k := 1; k <= 3; k++ {
				key := fmt.Sprintf("try%d", k)
				_, has := res.Context[key]
				if want := res.Status == RunCompleted && k == tt.wantAttempts; has != want {
					t.Errorf("context has %s: %v, want %v", key, has, want)
				}
			}
			if res.Status == RunCompleted {
				want := map[string]any{"try1": "missing", "try2": "missing", "try3": "missing"}
				want[fmt.Sprintf("try%d", tt.wantAttempts)] = true
				if got := res.Context["_outputs.r"]; !equal(got, want) {
					t.Errorf("downstream read %v, want %v", got, want)
				}
				if got := res.Context["_outputs.f"]; !equal(got, map[string]any{"attempt": float64(tt.wantAttempts)}) {
					t.Errorf("_outputs.f = %#v", got)
				}
			} else if msg := res.Errors[0].Message; msg != fmt.Sprintf("flaky attempt %d", tt.wantAttempts) {
				t.Errorf("error %q, want the last attempt's message", msg)
			}
		})
	}
}

func TestRunTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		config       string
		wantStatus   RunStatus
		wantAttempts int
	}{
		{"single attempt times out", `{"timeout":50}`, RunFailed, 1},
		{"every attempt times out", `{"timeout":20,"maxRetries":3}`, RunFailed, 3},
		{"second attempt beats the timeout", `{"timeout":50,"maxRetries":2}`, RunCompleted, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tn := newTestNodes()
			// slow blocks on its context on attempt 1, and always when
			// params.always is set.
			tn.Register("slow", func(ctx context.Context, in NodeInput) (NodeResult, error) {
				if in.Attempt == 1 || tt.wantStatus == RunFailed {
					<-ctx.Done()
					return NodeResult{}, fmt.Errorf("fetch: %w", ctx.Err())
				}
				return NodeResult{Output: "fast"}, nil
			})
			doc := fmt.Sprintf(`{"id":"t","nodes":[{"id":"s","uses":"slow","config":%s}]}`, tt.config)
			res := runDoc(t, tn.Registry, doc, nil)
			if res.Status != tt.wantStatus {
				t.Fatalf("status %s, want %s (errors %v)", res.Status, tt.wantStatus, res.Errors)
			}
			st := stepOf(t, res, "s")
			if st.Attempts != tt.wantAttempts {
				t.Errorf("%d attempts, want %d", st.Attempts, tt.wantAttempts)
			}
			if tt.wantStatus == RunFailed {
				if len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Message, "timed out after") {
					t.Errorf("errors %v, want one saying timed out", res.Errors)
				}
			} else if res.Output != "fast" {
				t.Errorf("output %v", res.Output)
			}
		})
	}
}

// TestRunLateSuccessIsATimeout: a node that ignores its context and
// returns after its timeout has still timed out.
func TestRunLateSuccessIsATimeout(t *testing.T) {
	t.Parallel()
	reg := NewRegistry().Register("late", func(ctx context.Context, in NodeInput) (NodeResult, error) {
		<-ctx.Done()
		return NodeResult{Output: "too late"}, nil
	})
	res := runDoc(t, reg, `{"id":"t","nodes":[{"id":"l","uses":"late","config":{"timeout":20}}]}`, nil)
	if res.Status != RunFailed || !strings.Contains(res.Errors[0].Message, "timed out after 20ms") {
		t.Fatalf("status %s errors %v, want failed: timed out after 20ms", res.Status, res.Errors)
	}
}

func TestRunContextWrites(t *testing.T) {
	t.Parallel()
	tn := newTestNodes()
	tn.Register("setThenFail", func(_ context.Context, in NodeInput) (NodeResult, error) {
		in.Context.Set("doomed", true)
		in.Context.Delete("keep")
		return NodeResult{}, errors.New("nope")
	})
	tests := []struct {
		name        string
		doc         string
		wantStatus  RunStatus
		wantContext map[string]any // "absent" marks a key that must be missing
	}{
		{"writes are visible downstream",
			`{"id":"c","nodes":[
				{"id":"w","uses":"set","params":{"set":{"k":"v","n":{"deep":1}},"delete":["gone"]}},
				{"id":"r","uses":"read","params":{"keys":["k","n","gone","keep"]}}],
			"edges":[{"source":"w","target":"r"}]}`,
			RunCompleted,
			map[string]any{"k": "v", "n": map[string]any{"deep": 1.0}, "gone": "absent", "keep": 1.0,
				"_outputs.r": map[string]any{"k": "v", "n": map[string]any{"deep": 1.0}, "gone": "missing", "keep": 1.0}}},
		{"conditions see the node's own writes",
			`{"id":"c","nodes":[{"id":"w","uses":"set","params":{"set":{"route":"left"}}},{"id":"l","uses":"echo"},{"id":"r","uses":"echo"}],
			"edges":[{"source":"w","target":"l","condition":"context.route == \"left\""},{"source":"w","target":"r","condition":"context.route == \"right\""}]}`,
			RunCompleted,
			map[string]any{"route": "left", "_outputs.l": map[string]any{"gone": 1.0, "keep": 1.0}, "_outputs.r": "absent"}},
		{"writes of a failed attempt are discarded",
			`{"id":"c","nodes":[{"id":"x","uses":"setThenFail"}]}`,
			RunFailed,
			map[string]any{"doomed": "absent", "keep": 1.0}},
		{"writes of a failed node are discarded when its fallback stands in",
			`{"id":"c","nodes":[{"id":"x","uses":"setThenFail","config":{"fallback":"f"}},{"id":"f","uses":"set","params":{"set":{"by":"fallback"}}}]}`,
			RunCompleted,
			map[string]any{"doomed": "absent", "keep": 1.0, "by": "fallback"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runDoc(t, tn.Registry, tt.doc, map[string]any{"gone": 1, "keep": 1})
			if res.Status != tt.wantStatus {
				t.Fatalf("status %s, want %s (errors %v)", res.Status, tt.wantStatus, res.Errors)
			}
			for k, want := range tt.wantContext {
				got, has := res.Context[k]
				if want == "absent" {
					if has {
						t.Errorf("context[%s] = %v, want absent", k, got)
					}
					continue
				}
				if !equal(got, want) {
					t.Errorf("context[%s] = %#v, want %#v", k, got, want)
				}
			}
		})
	}
}

// TestRunRetryReadsFreshContext: an attempt after a backoff reads the
// context as it is when the attempt starts (a parallel branch wrote to it
// meanwhile), not as it was when the previous attempt failed.
func TestRunRetryReadsFreshContext(t *testing.T) {
	t.Parallel()
	failed := make(chan struct{})
	reg := NewRegistry().
		Register("retry", func(_ context.Context, in NodeInput) (NodeResult, error) {
			if in.Attempt == 1 {
				close(failed)
				return NodeResult{}, errors.New("not yet")
			}
			v, ok := in.Context.Get("other")
			if !ok {
				v = "missing"
			}
			return NodeResult{Output: v}, nil
		}).
		Register("writer", func(_ context.Context, in NodeInput) (NodeResult, error) {
			<-failed
			in.Context.Set("other", "written")
			return NodeResult{}, nil
		})
	// The retry waits 200-400ms; the writer commits within microseconds of
	// the first failure.
	res := runDoc(t, reg, `{"id":"f","nodes":[{"id":"a","uses":"retry","config":{"maxRetries":2,"retryDelay":400}},{"id":"b","uses":"writer"}]}`, nil)
	if res.Status != RunCompleted || res.Context["_outputs.a"] != "written" {
		t.Fatalf("status %s, a read %v; want completed, written", res.Status, res.Context["_outputs.a"])
	}
}

func TestRunNormalizesGoOutputs(t *testing.T) {
	t.Parallel()
	type charge struct {
		Amount int    `json:"amount"`
		Ref    string `json:"ref"`
	}
	reg := NewRegistry().Register("charge", func(context.Context, NodeInput) (NodeResult, error) {
		return NodeResult{Output: charge{Amount: 120, Ref: "c-1"}}, nil
	})
	res := runDoc(t, reg, `{"id":"n","nodes":[{"id":"c","uses":"charge"},{"id":"big","uses":"noop"}],
		"edges":[{"source":"c","target":"big","condition":"result.output.amount > 100"}]}`, nil)
	want := map[string]any{"amount": 120.0, "ref": "c-1"}
	if res.Status != RunCompleted || !equal(res.Context["_outputs.c"], want) || !equal(res.Context["_outputs.big"], want) {
		t.Fatalf("status %s context %#v; want _outputs.c and _outputs.big = %v", res.Status, res.Context, want)
	}
}

func TestRunSleep(t *testing.T) {
	t.Parallel()
	var resumed atomic.Bool
	reg := NewRegistry().Register("after", func(_ context.Context, in NodeInput) (NodeResult, error) {
		resumed.Store(true)
		return NodeResult{Output: in.Input}, nil
	})
	began := time.Now()
	res := runDoc(t, reg, `{"id":"z","nodes":[{"id":"z","uses":"sleep","params":{"duration":"60ms"}},{"id":"a","uses":"after"}],
		"edges":[{"source":"z","target":"a"}]}`, map[string]any{"k": "v"})
	elapsed := time.Since(began)
	if res.Status != RunCompleted {
		t.Fatalf("status %s (errors %v)", res.Status, res.Errors)
	}
	if elapsed < 60*time.Millisecond {
		t.Errorf("run took %s, less than the 60ms sleep", elapsed)
	}
	st := stepOf(t, res, "z")
	if st.State != StepSucceeded || st.Attempts != 1 {
		t.Errorf("sleep step %s with %d attempts, want succeeded with 1", st.State, st.Attempts)
	}
	if want := map[string]any{"k": "v"}; !equal(res.Context["_outputs.z"], want) || !equal(res.Output, want) || !resumed.Load() {
		t.Errorf("sleep passed %#v through, output %#v; want %v", res.Context["_outputs.z"], res.Output, want)
	}
}

func TestRunCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
	}{
		{"while a node runs", `{"id":"c","nodes":[{"id":"s","uses":"signal"},{"id":"b","uses":"block"}],"edges":[{"source":"s","target":"b"}]}`},
		{"while a retry waits its backoff", `{"id":"c","nodes":[{"id":"s","uses":"signal","params":{"fail":true},"config":{"maxRetries":2,"retryDelay":3600000}}]}`},
		{"while a node sleeps", `{"id":"c","nodes":[{"id":"s","uses":"signal"},{"id":"z","uses":"sleep","params":{"duration":"1h"}}],"edges":[{"source":"s","target":"z"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			started := make(chan struct{})
			tn := newTestNodes()
			tn.Register("signal", func(_ context.Context, in NodeInput) (NodeResult, error) {
				if in.Attempt == 1 {
					close(started)
				}
				if in.Params["fail"] == true {
					return NodeResult{}, errors.New("try later")
				}
				return NodeResult{Output: 1}, nil
			})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			type outcome struct {
				res *RunResult
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				res, err := Run(ctx, mustDecode(t, tt.doc), tn.Registry, nil, RunOptions{})
				done <- outcome{res, err}
			}()
			<-started
			cancelled := time.Now()
			cancel()
			select {
			case o := <-done:
				if o.err != nil {
					t.Fatalf("Run: %v", o.err)
				}
				if o.res.Status != RunCancelled {
					t.Errorf("status %s, want cancelled", o.res.Status)
				}
				if len(o.res.Errors) != 1 || !strings.Contains(o.res.Errors[0].Message, "run cancelled") {
					t.Errorf("errors %v, want one saying run cancelled", o.res.Errors)
				}
				if d := time.Since(cancelled); d > 2*time.Second {
					t.Errorf("Run returned %s after cancel", d)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10s of cancel")
			}
		})
	}
}

func TestRunAnyJoinFiresOnce(t *testing.T) {
	t.Parallel()
	const doc = `{"id":"any","nodes":[
		{"id":"s","uses":"const","params":{"value":0}},
		{"id":"a","uses":"const","params":{"value":"A"}},
		{"id":"b","uses":"const","params":{"value":"B"}},
		{"id":"c","uses":"const","params":{"value":"C"}},
		{"id":"j","uses":"echo","config":{"joinStrategy":"any"}},
		{"id":"k","uses":"echo"}],
	"edges":[{"source":"s","target":"a"},{"source":"s","target":"b"},{"source":"s","target":"c"},
	         {"source":"a","target":"j"},{"source":"b","target":"j"},{"source":"c","target":"j"},{"source":"j","target":"k"}]}`
	for i := range 25 {
		tn := newTestNodes()
		res := runDoc(t, tn.Registry, doc, nil)
		if res.Status != RunCompleted {
			t.Fatalf("run %d: status %s (errors %v)", i, res.Status, res.Errors)
		}
		if tn.callsOf("j") != 1 || tn.callsOf("k") != 1 {
			t.Fatalf("run %d: j called %d times, k %d; want once each", i, tn.callsOf("j"), tn.callsOf("k"))
		}
		j := res.Context["_outputs.j"]
		if j != "A" && j != "B" && j != "C" {
			t.Fatalf("run %d: _outputs.j = %#v, want one predecessor's output", i, j)
		}
		if res.Context["_outputs.k"] != j || res.Output != j {
			t.Errorf("run %d: k got %v, output %v; want %v", i, res.Context["_outputs.k"], res.Output, j)
		}
		if len(res.Steps) != 6 {
			t.Errorf("run %d: %d steps, want 6", i, len(res.Steps))
		}
	}
}

func TestRunFanOut200(t *testing.T) {
	t.Parallel()
	const width = 200
	var nodes, edges []string
	nodes = append(nodes, `{"id":"start","uses":"const","params":{"value":1}}`, `{"id":"join","uses":"echo"}`)
	for i := range width {
		id := fmt.Sprintf("n%03d", i)
		nodes = append(nodes, fmt.Sprintf(`{"id":%q,"uses":"transform","params":{"expression":"input + %d"}}`, id, i))
		edges = append(edges, fmt.Sprintf(`{"source":"start","target":%q}`, id), fmt.Sprintf(`{"source":%q,"target":"join"}`, id))
	}
	doc := fmt.Sprintf(`{"id":"wide","nodes":[%s],"edges":[%s]}`, strings.Join(nodes, ","), strings.Join(edges, ","))
	tn := newTestNodes()
	began := time.Now()
	res := runDoc(t, tn.Registry, doc, nil)
	if res.Status != RunCompleted {
		t.Fatalf("status %s (errors %v)", res.Status, res.Errors)
	}
	joined, _ := res.Output.(map[string]any)
	if len(joined) != width {
		t.Fatalf("join got %d inputs, want %d", len(joined), width)
	}
	for i := range width {
		if got := joined[fmt.Sprintf("n%03d", i)]; got != float64(1+i) {
			t.Fatalf("join input n%03d = %v, want %d", i, got, 1+i)
		}
	}
	if len(res.Steps) != width+2 || tn.callsOf("join") != 1 {
		t.Errorf("%d steps, join called %d times", len(res.Steps), tn.callsOf("join"))
	}
	t.Logf("%d-node fan-out ran in %s", width, time.Since(began))
}

func TestRunRecordsSteps(t *testing.T) {
	t.Parallel()
	var mu = make(chan struct{}, 1)
	var seen []StepRecord
	opts := RunOptions{RunID: "run-42", OnStep: func(r StepRecord) {
		mu <- struct{}{}
		seen = append(seen, r)
		<-mu
	}}
	bp := mustDecode(t, `{"id":"rec","nodes":[
		{"id":"a","uses":"const","params":{"value":1,"action":"go"}},
		{"id":"b","uses":"noop"},{"id":"c","uses":"noop"}],
	"edges":[{"source":"a","target":"b","action":"go"},{"source":"a","target":"c","action":"stop"}]}`)
	var runID string
	tn := newTestNodes()
	tn.Register("const", func(_ context.Context, in NodeInput) (NodeResult, error) {
		runID = in.RunID
		return NodeResult{Output: in.Params["value"], Action: in.Params["action"].(string)}, nil
	})
	res, err := Run(t.Context(), bp, tn.Registry, nil, opts)
	if err != nil || res.Status != RunCompleted {
		t.Fatalf("Run: %v %+v", err, res)
	}
	if res.RunID != "run-42" || runID != "run-42" || res.BlueprintID != "rec" {
		t.Errorf("run id %q (node saw %q), blueprint %q", res.RunID, runID, res.BlueprintID)
	}
	var states []string
	for _, r := range seen {
		states = append(states, r.NodeID+":"+string(r.State))
	}
	if want := []string{"a:succeeded", "c:skipped", "b:succeeded"}; !equal(states, want) {
		t.Errorf("OnStep saw %v, want %v", states, want)
	}
	a := stepOf(t, res, "a")
	if a.Action != "go" || a.Uses != "const" || a.StartedAt == nil || a.FinishedAt == nil || a.FinishedAt.Before(*a.StartedAt) {
		t.Errorf("step a = %+v", a)
	}
	if c := stepOf(t, res, "c"); c.StartedAt != nil || c.Attempts != 0 {
		t.Errorf("skipped step c = %+v", c)
	}
	if res.DurationMs <= 0 {
		t.Errorf("DurationMs = %v", res.DurationMs)
	}
	if !res.Status.Final() || RunRunning.Final() {
		t.Errorf("Final() wrong")
	}
}

// TestRunReportsEveryNode: a completed run decides every node of the
// blueprint (run, recovered or skipped); none is left without a step.
func TestRunReportsEveryNode(t *testing.T) {
	t.Parallel()
	docs := []string{
		`{"id":"a","nodes":[{"id":"a","uses":"const","params":{"value":1},"config":{"fallback":"f"}},{"id":"f","uses":"noop"},{"id":"g","uses":"noop"}],
		  "edges":[{"source":"f","target":"g"}]}`,
		`{"id":"b","nodes":[{"id":"s","uses":"const","params":{"value":1,"action":"x"}},{"id":"a","uses":"noop","config":{"fallback":"f"}},{"id":"f","uses":"noop"},{"id":"g","uses":"noop"}],
		  "edges":[{"source":"s","target":"a","action":"y"},{"source":"f","target":"g"}]}`,
	}
	for _, doc := range docs {
		res := runDoc(t, newTestNodes().Registry, doc, nil)
		bp := mustDecode(t, doc)
		if res.Status != RunCompleted || len(res.Steps) != len(bp.Nodes) {
			t.Errorf("%s: status %s with %d steps for %d nodes: %+v", bp.ID, res.Status, len(res.Steps), len(bp.Nodes), res.Steps)
		}
		for _, s := range res.Steps {
			if !s.State.Terminal() {
				t.Errorf("%s: step %s left %s", bp.ID, s.NodeID, s.State)
			}
		}
	}
}
