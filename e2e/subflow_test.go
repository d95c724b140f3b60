package e2e

// Subflows on the real stack: the child is a run of its own, started by
// its parent step's commit, and its end continues the parent.

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stepflow/stepflow/client"
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

// A child that pauses at a wait node makes its parent awaiting at the
// subflow step (Flowcraft's behaviour); a grandchild's pause makes the
// whole chain awaiting. A resume of the parent's subflow step goes to the
// child's (or grandchild's) wait step, or the child run is resumed by id;
// either way the chain runs again, a second resume is refused, and the
// child's end continues the parent: through the commit of the child's
// last step, or through the resume itself when the wait node is last.
func TestSubflowChildAwaitsAResume(t *testing.T) {
	t.Parallel()
	const nested = `{"id": "approval-mid", "nodes": [{"id": "inner", "uses": "subflow", "params": {"blueprintId": "approval-child"}}]}`
	for _, tc := range []struct{ name, child, mid, want string }{
		{"a step after the wait", `{"id": "approval-child", "nodes": [{"id": "ask", "uses": "wait"}, {"id": "done", "uses": "transform", "inputs": "ask", "params": {"expression": "input.ok"}}],
		  "edges": [{"source": "ask", "target": "done"}]}`, "", `{"approved": "yes"}`},
		{"the wait last", `{"id": "approval-child", "nodes": [{"id": "ask", "uses": "wait"}]}`, "", `{"approved": {"ok": "yes"}}`},
		{"a grandchild", `{"id": "approval-child", "nodes": [{"id": "ask", "uses": "wait"}]}`, nested, `{"approved": {"ok": "yes"}}`},
	} {
		for _, via := range []string{"parent", "child"} {
			t.Run(tc.name+", resumed through the "+via, func(t *testing.T) {
				t.Parallel()
				bps := []*workflow.Blueprint{blueprint(t, tc.child)}
				childBlueprint := "approval-child"
				if tc.mid != "" {
					bps, childBlueprint = append(bps, blueprint(t, tc.mid)), "approval-mid"
				}
				tb := setup(t, withBlueprints(bps...))
				parent := blueprint(t, `{"id": "approval-parent", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "`+childBlueprint+`"}},
				  {"id": "after", "uses": "transform", "inputs": "sub", "params": {"expression": "{'approved': input}"}}],
				  "edges": [{"source": "sub", "target": "after"}]}`)
				runID := tb.start(parent, nil)
				chain := []string{runID, workflow.ChildRunID(runID, "sub", 1)}
				if tc.mid != "" {
					chain = append(chain, workflow.ChildRunID(chain[1], "inner", 1))
				}
				waiting := chain[len(chain)-1] // the run whose wait node awaits
				// The parent awaits once the run at the bottom does.
				res := tb.wait(runID, 20*time.Second)
				if res.Status != workflow.RunAwaiting {
					t.Fatalf("parent: %s (%+v); want awaiting", res.Status, res.Errors)
				}
				if s := tb.step(runID, "sub"); s == nil || s.State != workflow.StepAwaitingChild {
					t.Fatalf("parent's sub: %+v; want awaiting_child", s)
				}
				for _, id := range chain {
					if r, err := tb.client.Result(tb.ctx, id); err != nil || r.Status != workflow.RunAwaiting {
						t.Fatalf("run %s of the chain: %+v, %v; want awaiting", id, r, err)
					}
				}
				resumeRun, resumeNode := runID, "sub"
				if via == "child" {
					resumeRun, resumeNode = waiting, "ask"
				}
				r, err := tb.client.Resume(tb.ctx, resumeRun, workflow.Resume{Node: resumeNode, Output: map[string]any{"ok": "yes"}})
				if err != nil {
					t.Fatal(err)
				}
				if via == "parent" {
					// The answer names the run resumed at the bottom.
					bottom := r
					for bottom.Child != nil {
						bottom = bottom.Child
					}
					if r.RunID != runID || r.Node != "sub" || bottom.RunID != waiting || bottom.Node != "ask" {
						t.Errorf("resumed %+v (at the bottom %+v); want %s at sub, forwarded to %s at ask", r, bottom, runID, waiting)
					}
				}
				// No reconciler runs here: the parent goes on only if the
				// child's end published its continuation.
				res = tb.wait(runID, 20*time.Second)
				if res.Status != workflow.RunCompleted {
					t.Fatalf("parent: %s (%+v); want completed", res.Status, res.Errors)
				}
				testenv.AssertJSON(t, "parent's output", res.Output, json.RawMessage(tc.want))
				// The step was resumed once: again, through either run, is refused.
				for _, again := range []struct{ run, node string }{{runID, "sub"}, {waiting, "ask"}} {
					if _, err := tb.client.Resume(tb.ctx, again.run, workflow.Resume{Node: again.node, Output: "twice"}); !errors.Is(err, client.ErrNotAwaiting) {
						t.Errorf("resume %s at %s again: %v; want ErrNotAwaiting", again.run, again.node, err)
					}
				}
			})
		}
	}
}
