package e2e

// The Flowcraft conformance corpus (conformance/*.json) on the
// distributed stack: the same table of cases, Go mirrors of their test
// nodes, differences and comparison as the local runner's test
// (workflow/conformance_test.go), through conformancetest. Every case runs
// on one in-process stack (a step function, a bridge and a reconciler over
// the real PostgreSQL, Redis and RabbitMQ) whose function serves the
// mirrors of all the cases' test nodes and their child blueprints; each
// case is a run of its own, started and resumed through the client.

import (
	"context"
	"testing"
	"time"

	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/conformance"
	"github.com/stepflow/stepflow/conformance/conformancetest"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

// notOnStack are the cases the stack cannot run yet, each with why. They
// run through the local runner only until the engine runs what they need;
// the test fails for a name here that is no case.
var notOnStack = map[string]string{}

// caseTimeout bounds one case's run on the stack, resumes included. The
// longest, loop-runaway, is 2,000 steps one after another (its loop runs
// to maxIterations), beside every other case and package of the suite.
const caseTimeout = 3 * time.Minute

func TestConformance(t *testing.T) {
	t.Parallel()
	conformanceOnStack(t, nil)
}

// The same table with every job the bridge publishes published twice
// (each node's successors, a batch's workers and its gather, a child
// run's jobs and its parent's continuation), and the first job of each
// run published twice by hand: at-least-once delivery changes no result.
func TestConformanceDuplicated(t *testing.T) {
	t.Parallel()
	conformanceOnStack(t, func(c *bridge.Config) { c.PublishCopies = 2 })
}

// conformanceOnStack runs every case not in notOnStack on one in-process
// stack, its bridge adjusted by bridgeCfg (nil: as it is).
func conformanceOnStack(t *testing.T, bridgeCfg func(*bridge.Config)) {
	cases, err := conformance.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	conformancetest.CheckDifferences(t, cases)
	var onStack []conformance.Case
	names := map[string]bool{}
	for _, c := range cases {
		names[c.Name] = true
		if _, out := notOnStack[c.Name]; !out {
			onStack = append(onStack, c)
		}
	}
	for name := range notOnStack {
		if !names[name] {
			t.Errorf("notOnStack names %q, which is no corpus case", name)
		}
	}
	reg, err := conformancetest.Registry(onStack...)
	if err != nil {
		t.Fatal(err)
	}
	children, err := conformancetest.Children(onStack...)
	if err != nil {
		t.Fatal(err)
	}
	var childList []*workflow.Blueprint
	for _, bp := range children {
		childList = append(childList, bp)
	}
	stack := inprocess.ForTest(t, inprocess.Options{Registry: reg, Blueprints: childList, Bridge: bridgeCfg})
	var again *jobqueue.Publisher // the first jobs published again, with duplicated delivery
	if bridgeCfg != nil {
		again = jobqueue.NewTopologyPublisher(stack.AMQPURL, jobqueue.Topology{Queue: stack.Queue})
		t.Cleanup(again.Close)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cl, err := client.New(ctx, client.Config{
		PostgresURL: stack.PostgresURL, AMQPURL: stack.AMQPURL, Queue: stack.Queue, QueueType: stack.QueueType,
		Tables: stack.Tables, Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)

	for _, c := range onStack {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			conformancetest.Check(t, c, runOnStack(t, cl, again, c))
		})
	}
}

// runOnStack starts c's blueprint through the client and waits for the
// run; each time it awaits with a resume of the case's left, it resumes
// it (a sleep the stack wakes by itself). With again, the run's start
// jobs are published once more.
func runOnStack(t *testing.T, cl *client.Client, again *jobqueue.Publisher, c conformance.Case) conformancetest.Outcome {
	t.Helper()
	bp, err := conformancetest.Blueprint(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
	defer cancel()
	var o conformancetest.Outcome
	runID, err := cl.Start(ctx, bp, c.Input, client.StartOptions{RunID: "conformance-" + c.Name})
	if err != nil {
		o.Err = err
		return o
	}
	if again != nil {
		w, err := workflow.Compile(bp, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range w.StartNodes() {
			if err := again.Publish(ctx, jobqueue.Job{RunID: runID, BlueprintID: bp.ID, NodeID: id, Attempt: 1}, 0); err != nil {
				t.Fatalf("publish the start job %s again: %v", id, err)
			}
		}
	}
	for {
		res, err := cl.Wait(ctx, runID)
		if err != nil {
			cur, _ := cl.Result(context.Background(), runID)
			t.Fatalf("wait for run %s: %v; now: %s", runID, err, toJSON(cur))
		}
		if res.Status != workflow.RunAwaiting {
			o.Result = res
			return o
		}
		i := len(o.Awaited)
		o.Awaited = append(o.Awaited, res)
		if i >= len(c.Resume) || c.Resume[i].Via != "resume" {
			o.Result = res
			return o
		}
		r := c.Resume[i]
		if _, err := cl.Resume(ctx, runID, workflow.Resume{Node: r.NodeID, Output: r.Output, Action: r.Action}); err != nil {
			t.Fatalf("resume %d (%s) of run %s: %v", i, r.NodeID, runID, err)
		}
	}
}
