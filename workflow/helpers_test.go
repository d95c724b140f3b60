package workflow

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
)

// mustDecode decodes a blueprint written as JSON in a test.
func mustDecode(t testing.TB, doc string) *Blueprint {
	t.Helper()
	bp, err := Decode([]byte(doc))
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, doc)
	}
	return bp
}

// mustCompile decodes and compiles a blueprint against reg (nil: no
// registry check).
func mustCompile(t testing.TB, reg *Registry, doc string) *Workflow {
	t.Helper()
	w, err := Compile(mustDecode(t, doc), reg)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return w
}

// fakeStates is a run's steps as a durable runtime stores them: a status
// per node and the deliveries of its taken edges.
type fakeStates struct {
	status     map[string]StepStatus
	deliveries map[string]map[string]any // source → target → value
}

func newFakeStates() *fakeStates {
	return &fakeStates{status: map[string]StepStatus{}, deliveries: map[string]map[string]any{}}
}

func (f *fakeStates) Status(id string) (StepStatus, bool) {
	st, ok := f.status[id]
	return st, ok
}

func (f *fakeStates) Delivery(source, target string) any { return f.deliveries[source][target] }

// resolve records a node's routing as a runtime does after Route.
func (f *fakeStates) resolve(id string, state StepState, r Routing) {
	f.status[id] = StepStatus{State: state, Taken: r.Taken}
	f.deliveries[id] = r.Deliveries
}

// apply records a transition as a runtime does: skipped nodes get a
// skipped step, ready nodes a ready one.
func (f *fakeStates) apply(tr Transition) {
	for _, id := range tr.Skipped {
		f.status[id] = StepStatus{State: StepSkipped}
	}
	for _, rn := range tr.Ready {
		f.status[rn.ID] = StepStatus{State: StepReady}
	}
}

// took is a shorthand for a resolved step that took edges to targets,
// each carrying the value in deliveries.
func (f *fakeStates) took(id string, deliveries map[string]any) *fakeStates {
	f.resolve(id, StepSucceeded, Routing{Taken: sortedTargets(deliveries), Deliveries: deliveries})
	return f
}

func sortedTargets(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sortStrings(out)
	return out
}

// testNodes is a registry with the built-ins plus nodes the tests drive
// through params, and counters of their calls.
type testNodes struct {
	*Registry
	mu    sync.Mutex
	calls map[string]int // node id → attempts started
}

func newTestNodes() *testNodes {
	tn := &testNodes{Registry: NewRegistry(), calls: map[string]int{}}
	count := func(in NodeInput) int {
		tn.mu.Lock()
		defer tn.mu.Unlock()
		tn.calls[in.NodeID]++
		return tn.calls[in.NodeID]
	}
	// echo: output = input; action = params.action.
	tn.Register("echo", func(_ context.Context, in NodeInput) (NodeResult, error) {
		count(in)
		a, _ := in.Params["action"].(string)
		return NodeResult{Output: in.Input, Action: a}, nil
	})
	// const: output = params.value; action = params.action.
	tn.Register("const", func(_ context.Context, in NodeInput) (NodeResult, error) {
		count(in)
		a, _ := in.Params["action"].(string)
		return NodeResult{Output: in.Params["value"], Action: a}, nil
	})
	// fail: always fails with params.message.
	tn.Register("fail", func(_ context.Context, in NodeInput) (NodeResult, error) {
		count(in)
		msg, _ := in.Params["message"].(string)
		return NodeResult{}, errors.New(msg)
	})
	// flaky: sets "try<attempt>" in the context, then fails until attempt
	// params.succeedOn; on success outputs {"attempt": n}.
	tn.Register("flaky", func(_ context.Context, in NodeInput) (NodeResult, error) {
		n := count(in)
		if n != in.Attempt {
			return NodeResult{}, fmt.Errorf("call %d reported attempt %d", n, in.Attempt)
		}
		in.Context.Set(fmt.Sprintf("try%d", in.Attempt), true)
		on, _ := in.Params["succeedOn"].(float64)
		if in.Attempt < int(on) {
			return NodeResult{}, fmt.Errorf("flaky attempt %d", in.Attempt)
		}
		return NodeResult{Output: map[string]any{"attempt": in.Attempt}}, nil
	})
	// panic: panics with params.message.
	tn.Register("panic", func(_ context.Context, in NodeInput) (NodeResult, error) {
		count(in)
		panic(in.Params["message"])
	})
	// block: waits for its context to end, then returns its error.
	tn.Register("block", func(ctx context.Context, in NodeInput) (NodeResult, error) {
		count(in)
		<-ctx.Done()
		return NodeResult{}, ctx.Err()
	})
	// set: writes params.set into the context; outputs its input.
	tn.Register("set", func(_ context.Context, in NodeInput) (NodeResult, error) {
		count(in)
		set, _ := in.Params["set"].(map[string]any)
		for k, v := range set {
			in.Context.Set(k, v)
		}
		del, _ := in.Params["delete"].([]any)
		for _, k := range del {
			in.Context.Delete(k.(string))
		}
		return NodeResult{Output: in.Input}, nil
	})
	// read: outputs the context values of params.keys ("missing" when absent).
	tn.Register("read", func(_ context.Context, in NodeInput) (NodeResult, error) {
		count(in)
		out := map[string]any{}
		for _, k := range in.Params["keys"].([]any) {
			v, ok := in.Context.Get(k.(string))
			if !ok {
				v = "missing"
			}
			out[k.(string)] = v
		}
		return NodeResult{Output: out}, nil
	})
	return tn
}

func (tn *testNodes) callsOf(id string) int {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.calls[id]
}

func equal(a, b any) bool { return reflect.DeepEqual(a, b) }
