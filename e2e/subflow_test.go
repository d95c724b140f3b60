package e2e

// Subflows on the real stack: the child is a run of its own, started by
// its parent step's commit, and its end continues the parent.

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/conformance"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// conformanceNodes mirror the corpus's test nodes that the subflow cases
// use (conformance/README.md, "Test nodes"; the whole set is in
// workflow/conformance_nodes_test.go).
var conformanceNodes = map[string]workflow.NodeFunc{
	"const": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: in.Params["value"]}, nil
	},
	"echo": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: in.Input}, nil
	},
	"double": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: jsNumber(toNumber(in.Input) * 2)}, nil
	},
	"add-one": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		if s, ok := in.Input.(string); ok {
			return workflow.NodeResult{Output: s + "1"}, nil
		}
		return workflow.NodeResult{Output: jsNumber(toNumber(in.Input) + 1)}, nil
	},
	"to-upper": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		s, _ := in.Input.(string)
		return workflow.NodeResult{Output: strings.ToUpper(s)}, nil
	},
	"set": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		key, _ := in.Params["key"].(string)
		in.Context.Set(key, in.Params["value"])
		return workflow.NodeResult{Output: in.Input}, nil
	},
	"fail-always": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		msg, ok := in.Params["message"].(string)
		if !ok {
			msg = "fail-always failed"
		}
		return workflow.NodeResult{}, errors.New(msg)
	},
	"not-a-function": func(context.Context, workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{}, errors.New("this.implementation is not a function")
	},
}

func toNumber(v any) float64 {
	switch v := v.(type) {
	case float64:
		return v
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return math.NaN()
		}
		return f
	}
	return math.NaN()
}

func jsNumber(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return f
}

// childAwaits: in these cases the child pauses at a wait node. The local
// runner fails the subflow node then; on the stack the parent waits for
// the child, which a resume of the child run goes on
// (TestSubflowChildAwaitsAResume).
var childAwaits = map[string]bool{"subflow-wait-resume": true, "subflow-json-wait-resume": true}

// runIDPattern matches run ids, which differ between the two runs.
var runIDPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// The corpus's subflow cases run on the stack as in process, where the
// conformance tests compare them with Flowcraft: the same status
// (Flowcraft's), the same final context, the same error.
func TestSubflowConformanceOnTheStack(t *testing.T) {
	t.Parallel()
	cases, err := conformance.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cases {
		if !strings.HasPrefix(c.Name, "subflow") || childAwaits[c.Name] {
			continue
		}
		n++
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			fns := map[string]workflow.NodeFunc{}
			reg := workflow.NewRegistry()
			for uses, name := range c.Nodes {
				if strings.HasPrefix(name, "flowcraft:") {
					continue // stepflow's built-ins
				}
				fn, ok := conformanceNodes[name]
				if !ok {
					t.Fatalf("no Go mirror of test node %q (uses %s)", name, uses)
				}
				fns[uses] = fn
				reg.Register(uses, fn)
			}
			bp, err := workflow.Decode(c.Blueprint)
			if err != nil {
				t.Fatal(err)
			}
			children := map[string]*workflow.Blueprint{}
			var childList []*workflow.Blueprint
			for id, raw := range c.Blueprints {
				if children[id], err = workflow.Decode(raw); err != nil {
					t.Fatal(err)
				}
				childList = append(childList, children[id])
			}
			local, err := workflow.Run(t.Context(), bp, reg, c.Input, workflow.RunOptions{Blueprints: children})
			if err != nil {
				t.Fatalf("local run: %v", err)
			}
			if string(local.Status) != c.Expected.Status {
				t.Fatalf("local run %s, Flowcraft %s: the conformance test of workflow/ would fail", local.Status, c.Expected.Status)
			}

			tb := setup(t, withNodes(fns), withBlueprints(childList...))
			runID := tb.start(bp, c.Input)
			res := tb.wait(runID, 30*time.Second)
			if res.Status != local.Status {
				t.Fatalf("status on the stack %s (errors %+v); in process and in Flowcraft %s", res.Status, res.Errors, local.Status)
			}
			if res.Status == workflow.RunCompleted {
				got := runIDPattern.ReplaceAllString(toJSON(res.Context), "<id>")
				want := runIDPattern.ReplaceAllString(toJSON(local.Context), "<id>")
				if got != want {
					t.Errorf("final context on the stack\n%s\nin process\n%s", got, want)
				}
				testenv.AssertJSON(t, "output", res.Output, local.Output)
			} else if len(res.Errors) == 0 || len(local.Errors) == 0 || res.Errors[0] != local.Errors[0] {
				t.Errorf("errors on the stack %+v; in process %+v", res.Errors, local.Errors)
			}
			// One child per subflow node that ran, each linked to its
			// parent's step, each finished.
			var subflows []string
			for _, s := range local.Steps {
				if s.Uses == "subflow" || s.Uses == "SubflowNode" {
					subflows = append(subflows, s.NodeID)
				}
			}
			if len(res.Children) != len(subflows) {
				t.Errorf("children %+v; want one for each of %v", res.Children, subflows)
			}
			for _, k := range res.Children {
				if k.RunID != workflow.ChildRunID(runID, k.Step, 1) || !k.Status.Final() || children[k.BlueprintID] == nil {
					t.Errorf("child %+v: want the first attempt's child of a case blueprint, finished", k)
				}
			}
		})
	}
	if n == 0 {
		t.Fatal("no subflow case in the corpus")
	}
}

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
