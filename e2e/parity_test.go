package e2e

// docs/semantics.md: "The same rules hold for the local runner
// (workflow.Run) and the distributed runtime". These tests run blueprints
// on both and compare.

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// runBoth runs bp locally and on the stack, and checks both complete with
// the same output, which must equal want.
func runBoth(t *testing.T, tb *testBundle, bp *workflow.Blueprint, input map[string]any, want string) {
	t.Helper()
	local, err := workflow.Run(tb.ctx, bp, nodes.Registry(), input, workflow.RunOptions{})
	if err != nil {
		t.Fatalf("local run: %v", err)
	}
	if local.Status != workflow.RunCompleted {
		t.Fatalf("local run: status %s, errors %v (the test's expectation is wrong)", local.Status, local.Errors)
	}
	testenv.AssertJSON(t, "local runner's output", local.Output, json.RawMessage(want))

	runID := tb.start(bp, input)
	res := tb.wait(runID, 20*time.Second)
	if res.Status != workflow.RunCompleted {
		t.Fatalf("distributed run: status %s, errors %+v; the local runner completes with %s", res.Status, res.Errors, toJSON(local.Output))
	}
	testenv.AssertJSON(t, "distributed output", res.Output, json.RawMessage(want))
}

// A transform node's expression reads another node's output
// (semantics.md, Expressions: `outputs` — "node outputs by id" — for the
// transform node too).
func TestTransformNodeReadsOutputs(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := blueprint(t, `{"id":"outputs-in-transform","metadata":{"version":"1"},
	  "nodes":[
	    {"id":"start","uses":"noop"},
	    {"id":"mid","uses":"transform","params":{"expression":"{'y': input.x + 1}"}},
	    {"id":"calc","uses":"transform","params":{"expression":"{'x': outputs.start.x, 'y': input.y, 'ctx': context['_outputs.start'].x}"}}],
	  "edges":[{"source":"start","target":"mid"},{"source":"mid","target":"calc"}]}`)

	runBoth(t, tb, bp, map[string]any{"x": 4}, `{"x":4,"y":5,"ctx":4}`)
}

// A fallback's result is routed along the edges of the node it stands in
// for; an edge expression there that reads another node's output must see
// it, as it would had the node itself succeeded.
func TestFallbackRoutingReadsOutputs(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := blueprint(t, `{"id":"fallback-outputs","metadata":{"version":"1"},
	  "nodes":[
	    {"id":"start","uses":"noop"},
	    {"id":"primary","uses":"fail","params":{"message":"down"},"config":{"fallback":"backup"}},
	    {"id":"backup","uses":"transform","params":{"expression":"{'by': 'backup'}"}},
	    {"id":"end","uses":"noop"}],
	  "edges":[
	    {"source":"start","target":"primary"},
	    {"source":"primary","target":"end","transform":"{'order': outputs.start.id, 'by': result.output.by}"}]}`)

	runBoth(t, tb, bp, map[string]any{"id": 7}, `{"order":7,"by":"backup"}`)
}
