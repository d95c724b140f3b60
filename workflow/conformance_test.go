package workflow_test

// The Flowcraft conformance corpus (conformance/*.json) run through the
// local runner: every case's blueprint with Go mirrors of its test nodes,
// compared with what Flowcraft 2.10.1 did, except where stepflow differs
// on purpose (conformancetest.Differences). e2e/conformance_test.go runs
// the same table on the distributed stack.

import (
	"context"
	"testing"
	"time"

	"github.com/stepflow/stepflow/conformance"
	"github.com/stepflow/stepflow/conformance/conformancetest"
	"github.com/stepflow/stepflow/workflow"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	cases, err := conformance.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	conformancetest.CheckDifferences(t, cases)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			conformancetest.Check(t, c, runCase(t, c))
		})
	}
}

// runCase runs c's blueprint with the Go mirrors of its test nodes and its
// child blueprints, applying the case's resumes, in order, each when the
// run awaits.
func runCase(t *testing.T, c conformance.Case) conformancetest.Outcome {
	t.Helper()
	reg, err := conformancetest.Registry(c)
	if err != nil {
		t.Fatal(err)
	}
	bp, err := conformancetest.Blueprint(c)
	if err != nil {
		t.Fatal(err)
	}
	children, err := conformancetest.Children(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var o conformancetest.Outcome
	onAwait := func(r *workflow.RunResult) (workflow.Resume, bool) {
		i := len(o.Awaited)
		o.Awaited = append(o.Awaited, r)
		if i >= len(c.Resume) || c.Resume[i].Via != "resume" {
			return workflow.Resume{}, false
		}
		return workflow.Resume{Node: c.Resume[i].NodeID, Output: c.Resume[i].Output, Action: c.Resume[i].Action}, true
	}
	o.Result, o.Err = workflow.Run(ctx, bp, reg, c.Input, workflow.RunOptions{RunID: "conformance-" + c.Name, Blueprints: children, OnAwait: onAwait})
	return o
}
