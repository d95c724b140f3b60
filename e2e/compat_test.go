package e2e

// Flowcraft compatibility and blueprint pinning.

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// flowcraftStart starts a run as the Flowcraft adapter does: a context row
// {"blueprintId", "blueprintVersion", ...initial keys}, a status row naming
// only the adapter's columns, and one plain JSON job per start node (no
// message id, no content type).
func (tb *testBundle) flowcraftStart(blueprintID string, initial map[string]any, startNodes ...string) string {
	tb.t.Helper()
	runID := uuid.NewString()
	ctxData := map[string]any{"blueprintId": blueprintID, "blueprintVersion": "1"}
	for k, v := range initial {
		ctxData[k] = v
	}
	q := tb.tables.Quoted()
	ctx := context.Background()
	if _, err := tb.pool.Exec(ctx, `INSERT INTO `+q.Contexts+` (run_id, context_data) VALUES ($1, $2)`, runID, ctxData); err != nil {
		tb.t.Fatalf("insert the Flowcraft context row: %v", err)
	}
	if _, err := tb.pool.Exec(ctx, `INSERT INTO `+q.Statuses+` (run_id, status, status_data, updated_at) VALUES ($1, 'running', NULL, now())`, runID); err != nil {
		tb.t.Fatalf("insert the Flowcraft status row: %v", err)
	}
	for _, node := range startNodes {
		body, _ := json.Marshal(map[string]string{"runId": runID, "blueprintId": blueprintID, "nodeId": node})
		tb.publishRaw(amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
	}
	return runID
}

// statusRow reads a run's status and status_data as the Flowcraft adapter
// would.
func (tb *testBundle) statusRow(runID string) (string, map[string]any) {
	tb.t.Helper()
	var status string
	var data map[string]any
	err := tb.pool.QueryRow(context.Background(), `SELECT status, status_data FROM `+tb.tables.Quoted().Statuses+` WHERE run_id = $1`, runID).Scan(&status, &data)
	if err != nil {
		tb.t.Fatalf("read the status row of %s: %v", runID, err)
	}
	return status, data
}

const greetBlueprint = `{"id":"greet","metadata":{"version":"1"},
  "nodes":[
    {"id":"hello","uses":"transform","params":{"expression":"'hello ' + input.name"}},
    {"id":"double","uses":"transform","params":{"expression":"input.count * 2"}},
    {"id":"combine","uses":"noop"}],
  "edges":[{"source":"hello","target":"combine"},{"source":"double","target":"combine"}]}`

// A run started by hand, as the Flowcraft adapter starts one, with the
// blueprint given to the function at construction.
func TestFlowcraftStart(t *testing.T) {
	t.Parallel()
	bp := blueprint(t, greetBlueprint)
	tb := setup(t, withBlueprints(bp))

	runID := tb.flowcraftStart("greet", map[string]any{"name": "ada", "count": 3}, "hello", "double")
	res := tb.wait(runID, 20*time.Second)

	if res.Status != workflow.RunCompleted {
		t.Fatalf("status %s, want completed; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"hello":"hello ada","double":6}`))
	assertSteps(t, res, map[string]wantStep{
		"hello": {workflow.StepSucceeded, 1}, "double": {workflow.StepSucceeded, 1}, "combine": {workflow.StepSucceeded, 1},
	})
	status, data := tb.statusRow(runID)
	if status != "completed" {
		t.Errorf("status column %q, want completed", status)
	}
	testenv.AssertJSON(t, "status_data", data, json.RawMessage(`{"blueprintId":"greet","blueprintVersion":"1","name":"ada","count":3,
		"_outputs.hello":"hello ada","_outputs.double":6,"_outputs.combine":{"hello":"hello ada","double":6},
		"hello":"hello ada","double":6,"combine":{"hello":"hello ada","double":6}}`))
	for _, id := range []string{"hello", "double", "combine"} {
		if n := tb.nodes.count(runID, id); n != 1 {
			t.Errorf("node %s ran %d times, want 1", id, n)
		}
	}
	// The start nodes got the initial keys, without the adapter's own.
	if c := tb.nodes.of(runID, "hello"); len(c) == 1 {
		testenv.AssertJSON(t, "hello's input", c[0].Input, json.RawMessage(`{"name":"ada","count":3}`))
	}
	if w := tb.finalWrites(runID); len(w) != 1 || w[0] != "completed" {
		t.Errorf("final status writes %v, want [completed]", w)
	}
}

// pinV1 and pinV2 are two versions of one blueprint id: the last node's
// transform differs.
const (
	pinV1 = `{"id":"pinned","metadata":{"version":"1"},
  "nodes":[{"id":"first","uses":"gate"},{"id":"last","uses":"transform","params":{"expression":"'v1'"}}],
  "edges":[{"source":"first","target":"last"}]}`
	pinV2 = `{"id":"pinned","metadata":{"version":"2"},
  "nodes":[{"id":"first","uses":"gate"},{"id":"last","uses":"transform","params":{"expression":"'v2'"}}],
  "edges":[{"source":"first","target":"last"}]}`
)

// A run keeps the blueprint version it started with when a changed
// blueprint with the same id is registered mid-run.
func TestRunKeepsPinnedBlueprint(t *testing.T) {
	t.Parallel()
	v1, v2 := blueprint(t, pinV1), blueprint(t, pinV2)

	t.Run("client", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, withBlueprints(v1))
		runID := tb.start(v1, nil)
		g := tb.waitStarted(runID, "first", 10*time.Second)
		if err := tb.f.Register(v2); err != nil {
			t.Fatalf("Register v2: %v", err)
		}
		g.open()
		res := tb.wait(runID, 20*time.Second)
		if res.Status != workflow.RunCompleted || res.Output != "v1" {
			t.Fatalf("status %s, output %v: want completed with v1's output", res.Status, res.Output)
		}
		// A run started now gets v2.
		runID2 := tb.start(v2, nil)
		tb.gates.get(runID2, "first").open()
		if res := tb.wait(runID2, 20*time.Second); res.Output != "v2" {
			t.Errorf("a run of v2 output %v, want v2", res.Output)
		}
	})

	t.Run("flowcraft", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, withBlueprints(v1))
		runID := tb.flowcraftStart("pinned", nil, "first")
		g := tb.waitStarted(runID, "first", 10*time.Second)
		if err := tb.f.Register(v2); err != nil {
			t.Fatalf("Register v2: %v", err)
		}
		g.open()
		res := tb.wait(runID, 20*time.Second)
		if res.Status != workflow.RunCompleted || res.Output != "v1" {
			t.Fatalf("status %s, output %v: want completed with v1's output (pinned when its first step ran)", res.Status, res.Output)
		}
		// A Flowcraft run started now uses the registered v2.
		runID2 := tb.flowcraftStart("pinned", nil, "first")
		tb.gates.get(runID2, "first").open()
		if res := tb.wait(runID2, 20*time.Second); res.Output != "v2" {
			t.Errorf("a Flowcraft run started after Register(v2) output %v, want v2", res.Output)
		}
	})
}
