package client_test

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

const approval = inprocess.ApprovalBlueprint

func TestWaitReturnsWhenTheRunAwaitsThenResume(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	id := tb.start(decode(t, approval), map[string]any{"doc": "a.pdf"}, client.StartOptions{})
	res := tb.wait(id)
	if res.Status != workflow.RunAwaiting || res.Output != nil {
		t.Fatalf("Wait: %s, output %v; want awaiting", res.Status, res.Output)
	}
	var states []string
	for _, s := range res.Steps {
		states = append(states, s.NodeID+":"+string(s.State))
	}
	if want := []string{"start:succeeded", "review:awaiting"}; !reflect.DeepEqual(states, want) {
		t.Errorf("steps %v, want %v", states, want)
	}
	list, err := tb.client.Runs(tb.ctx, client.RunFilter{Status: workflow.RunAwaiting})
	if err != nil || len(list.Runs) != 1 || list.Runs[0].RunID != id {
		t.Errorf("Runs(status awaiting) = %+v, %v; want the run", list, err)
	}

	r, err := tb.client.Resume(tb.ctx, id, workflow.Resume{Node: "review", Output: map[string]any{"by": "ada"}, Action: "reject"})
	if err != nil || r.Node != "review" || r.Status != workflow.RunRunning || !reflect.DeepEqual(r.Ready, []string{"reject"}) {
		t.Fatalf("Resume: %+v, %v", r, err)
	}
	if done := tb.wait(id); done.Status != workflow.RunCompleted || done.Output != "rejected by ada" {
		t.Errorf("after the resume: %s, output %v", done.Status, done.Output)
	}
	_, err = tb.client.Resume(tb.ctx, id, workflow.Resume{Node: "review", Action: "approve"})
	if !errors.Is(err, client.ErrNotAwaiting) || !strings.Contains(err.Error(), "is completed") {
		t.Errorf("resume of a completed run: %v", err)
	}
}

func TestResumeRefusals(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	id := tb.start(decode(t, approval), nil, client.StartOptions{})
	tb.wait(id)
	tests := []struct {
		run string
		r   workflow.Resume
		is  error
		msg string
	}{
		{"nope", workflow.Resume{Node: "review"}, client.ErrRunNotFound, "run nope"},
		{id, workflow.Resume{}, client.ErrInvalid, "node is required"},
		{id, workflow.Resume{Node: "ghost"}, client.ErrInvalid, `has no node "ghost" (its wait nodes: review)`},
		{id, workflow.Resume{Node: "approve"}, client.ErrNotAwaiting, "not a wait node"},
	}
	for _, tt := range tests {
		if _, err := tb.client.Resume(tb.ctx, tt.run, tt.r); !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("Resume(%s, %+v): %v; want %v with %q", tt.run, tt.r, err, tt.is, tt.msg)
		}
	}
	if res := tb.wait(id); res.Status != workflow.RunAwaiting {
		t.Errorf("after refusals: %s", res.Status)
	}
}

// Many clients resume one step at once: exactly one wins, and the node
// after it runs once.
func TestRacingResumesOneWins(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	id := tb.start(decode(t, approval), nil, client.StartOptions{})
	tb.wait(id)
	const n = 32
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, refused := 0, 0
	for i := range n {
		wg.Go(func() {
			action := []string{"approve", "reject"}[i%2]
			_, err := tb.client.Resume(tb.ctx, id, workflow.Resume{Node: "review", Output: map[string]any{"by": action}, Action: action})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, client.ErrNotAwaiting):
				refused++
			default:
				t.Errorf("resume %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if won != 1 || refused != n-1 {
		t.Fatalf("%d won, %d refused; want 1 and %d", won, refused, n-1)
	}
	res := tb.wait(id)
	ran := 0
	for _, s := range res.Steps {
		if (s.NodeID == "approve" || s.NodeID == "reject") && s.State == workflow.StepSucceeded {
			ran++
			if s.Attempts != 1 {
				t.Errorf("%s ran %d attempts", s.NodeID, s.Attempts)
			}
		}
	}
	if res.Status != workflow.RunCompleted || ran != 1 {
		t.Errorf("status %s, %d of approve/reject ran; want completed, one", res.Status, ran)
	}
}

// A parent whose child awaits at two steps refuses a resume of its
// subflow step, naming them; the child resumed by id at one of them, the
// parent's resume goes to the other, and the child's end continues the
// parent.
func TestResumeForwardedToTheChild(t *testing.T) {
	t.Parallel()
	child := decode(t, `{"id": "two-gates", "nodes": [{"id": "a", "uses": "wait"}, {"id": "b", "uses": "wait"},
	  {"id": "both", "uses": "transform", "params": {"expression": "input"}}],
	  "edges": [{"source": "a", "target": "both"}, {"source": "b", "target": "both"}]}`)
	tb := setup(t, inprocess.Options{Blueprints: []*workflow.Blueprint{child}})
	id := tb.start(decode(t, `{"id": "gated", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "two-gates"}}]}`), nil, client.StartOptions{})
	childID := workflow.ChildRunID(id, "sub", 1)
	if res := tb.wait(id); res.Status != workflow.RunAwaiting {
		t.Fatalf("parent: %s; want awaiting with its child", res.Status)
	}
	_, err := tb.client.Resume(tb.ctx, id, workflow.Resume{Node: "sub", Output: "x"})
	if !errors.Is(err, client.ErrNotAwaiting) || !strings.Contains(err.Error(), "awaits at 2 steps (a, b): resume the child run by id") || !strings.Contains(err.Error(), childID) {
		t.Fatalf("resume through a child awaiting twice: %v; want ErrNotAwaiting naming a, b and %s", err, childID)
	}
	if r, err := tb.client.Resume(tb.ctx, childID, workflow.Resume{Node: "a", Output: "from a"}); err != nil || r.Status != workflow.RunAwaiting {
		t.Fatalf("resume the child at a: %+v, %v; want it still awaiting (at b)", r, err)
	}
	if res := tb.wait(id); res.Status != workflow.RunAwaiting {
		t.Fatalf("parent after a: %s; want awaiting", res.Status)
	}
	r, err := tb.client.Resume(tb.ctx, id, workflow.Resume{Node: "sub", Output: "from b"})
	if err != nil || r.RunID != id || r.Node != "sub" || r.Child == nil || r.Child.RunID != childID || r.Child.Node != "b" || !reflect.DeepEqual(r.Child.Ready, []string{"both"}) {
		t.Fatalf("resume through the parent: %+v (child %+v), %v; want forwarded to %s at b", r, r.Child, err, childID)
	}
	res := tb.wait(id)
	if want := map[string]any{"a": "from a", "b": "from b"}; res.Status != workflow.RunCompleted || !reflect.DeepEqual(res.Output, want) {
		t.Fatalf("parent: %s, output %v; want completed with %v", res.Status, res.Output, want)
	}
}

// Racing resumes of a parent's subflow step whose child awaits: one is
// forwarded and wins, the others are refused, and the child's step after
// its wait runs once.
func TestRacingForwardedResumesOneWins(t *testing.T) {
	t.Parallel()
	child := decode(t, `{"id": "one-gate", "nodes": [{"id": "ask", "uses": "wait"}, {"id": "then", "uses": "transform", "params": {"expression": "input"}}],
	  "edges": [{"source": "ask", "target": "then"}]}`)
	tb := setup(t, inprocess.Options{Blueprints: []*workflow.Blueprint{child}})
	id := tb.start(decode(t, `{"id": "gated-once", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "one-gate"}}]}`), nil, client.StartOptions{})
	if res := tb.wait(id); res.Status != workflow.RunAwaiting {
		t.Fatalf("parent: %s; want awaiting with its child", res.Status)
	}
	const n = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []any
	refused := 0
	for i := range n {
		wg.Go(func() {
			_, err := tb.client.Resume(tb.ctx, id, workflow.Resume{Node: "sub", Output: float64(i)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, float64(i))
			case errors.Is(err, client.ErrNotAwaiting):
				refused++
			default:
				t.Errorf("resume %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if len(won) != 1 || refused != n-1 {
		t.Fatalf("%d won, %d refused; want 1 and %d", len(won), refused, n-1)
	}
	res := tb.wait(id)
	if res.Status != workflow.RunCompleted || res.Output != won[0] {
		t.Errorf("parent: %s, output %v; want completed with the winner's %v", res.Status, res.Output, won[0])
	}
	cres, err := tb.client.Result(tb.ctx, workflow.ChildRunID(id, "sub", 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cres.Steps {
		if s.NodeID == "then" && s.Attempts != 1 {
			t.Errorf("then ran %d attempts; want 1", s.Attempts)
		}
	}
}
