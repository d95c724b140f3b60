package e2e

// Subflows on the real stack: the child is a run of its own, started by
// its parent step's commit, and its end continues the parent.

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// A subflow's child waits at a gate: a redelivered subflow job starts no
// second child; cancelling the parent cancels the child, whose running
// node is stopped; status links the two.
func TestSubflowCancelCascadesOnTheStack(t *testing.T) {
	t.Parallel()
	child := blueprint(t, `{"id": "gated-child", "nodes": [{"id": "hold", "uses": "gate"}, {"id": "then", "uses": "noop"}],
	  "edges": [{"source": "hold", "target": "then"}]}`)
	tb := setup(t, withBlueprints(child))
	parent := blueprint(t, `{"id": "gated-parent", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "gated-child"}}, {"id": "after", "uses": "noop"}],
	  "edges": [{"source": "sub", "target": "after"}]}`)
	runID := tb.start(parent, map[string]any{"x": 1})
	childID := workflow.ChildRunID(runID, "sub", 1)
	g := tb.waitStarted(childID, "hold", 20*time.Second)

	// The subflow job again, as a redelivery would bring it.
	tb.publishJob(jobqueue.Job{RunID: runID, BlueprintID: "gated-parent", NodeID: "sub", Attempt: 1})
	testenv.Eventually(t, 10*time.Second, "the redelivered job to be answered", func() bool {
		return len(tb.http.of(runID, "sub")) >= 2
	})
	res, err := tb.client.Result(tb.ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Children) != 1 || res.Children[0] != (workflow.RunLink{RunID: childID, BlueprintID: "gated-child", Step: "sub", Status: workflow.RunRunning}) {
		t.Fatalf("children %+v; want only %s, running", res.Children, childID)
	}
	if n := tb.nodes.count(childID, "hold"); n != 1 {
		t.Errorf("the child's gate ran %d times; want 1", n)
	}
	cres, err := tb.client.Result(tb.ctx, childID)
	if err != nil || cres.Parent == nil || *cres.Parent != (workflow.RunLink{RunID: runID, BlueprintID: "gated-parent", Step: "sub", Status: workflow.RunRunning}) {
		t.Fatalf("the child's parent: %+v, %v", cres, err)
	}

	if st, err := tb.client.Cancel(tb.ctx, runID); err != nil || st != workflow.RunCancelled {
		t.Fatalf("cancel: %s, %v", st, err)
	}
	select {
	case <-g.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the child's running node was not stopped within 10s of its parent's cancel")
	}
	cres = tb.wait(childID, 10*time.Second)
	if cres.Status != workflow.RunCancelled {
		t.Errorf("child is %s; want cancelled", cres.Status)
	}
	if s := tb.step(childID, "then"); s != nil {
		t.Errorf("the cancelled child went on: then is %s", s.State)
	}
	if s := tb.step(runID, "after"); s != nil {
		t.Errorf("the cancelled parent went on: after is %s", s.State)
	}
}

// A child that pauses at a wait node keeps its parent waiting (running,
// holding nothing); resuming the child run finishes it, and its end
// continues the parent: through the commit of the child's last step, or
// through the resume itself when the wait node is the child's last step.
func TestSubflowChildAwaitsAResume(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, child, want string }{
		{"a step after the wait", `{"id": "approval-child", "nodes": [{"id": "ask", "uses": "wait"}, {"id": "done", "uses": "transform", "inputs": "ask", "params": {"expression": "input.ok"}}],
		  "edges": [{"source": "ask", "target": "done"}]}`, `{"approved": "yes"}`},
		{"the wait last", `{"id": "approval-child", "nodes": [{"id": "ask", "uses": "wait"}]}`, `{"approved": {"ok": "yes"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tb := setup(t, withBlueprints(blueprint(t, tc.child)))
			parent := blueprint(t, `{"id": "approval-parent", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "approval-child"}},
			  {"id": "after", "uses": "transform", "inputs": "sub", "params": {"expression": "{'approved': input}"}}],
			  "edges": [{"source": "sub", "target": "after"}]}`)
			runID := tb.start(parent, nil)
			childID := workflow.ChildRunID(runID, "sub", 1)
			testenv.Eventually(t, 20*time.Second, "the child run to start", func() bool {
				_, err := tb.client.Result(tb.ctx, childID)
				return err == nil
			})
			if res := tb.wait(childID, 20*time.Second); res.Status != workflow.RunAwaiting {
				t.Fatalf("child is %s; want awaiting", res.Status)
			}
			if r, err := tb.client.Result(tb.ctx, runID); err != nil || r.Status != workflow.RunRunning {
				t.Fatalf("parent: %+v, %v; want running while its child awaits", r, err)
			}
			if _, err := tb.client.Resume(tb.ctx, childID, workflow.Resume{Node: "ask", Output: map[string]any{"ok": "yes"}}); err != nil {
				t.Fatal(err)
			}
			// No reconciler runs here: the parent goes on only if the
			// child's end published its continuation.
			res := tb.wait(runID, 20*time.Second)
			if res.Status != workflow.RunCompleted {
				t.Fatalf("parent: %s (%+v); want completed", res.Status, res.Errors)
			}
			testenv.AssertJSON(t, "parent's output", res.Output, json.RawMessage(tc.want))
		})
	}
}
