package console

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

// These tests render runs made of data: the shapes of runs that the
// engine's loops, batches and pauses will record (step keys node#N,
// dynamic workers, awaiting steps), before the engine records them.

// loopAndBatch has a loop (body → controller → body) and a batch whose
// scatter spawns workers of "double".
const loopAndBatch = `{"id": "shapes", "nodes": [
  {"id": "start", "uses": "noop"},
  {"id": "inc", "uses": "transform", "params": {"expression": "input + 1"}},
  {"id": "ctl", "uses": "loop-controller", "params": {"condition": "inc < 5"}},
  {"id": "items_scatter", "uses": "batch-scatter", "params": {"workerUsesKey": "double", "gatherNodeId": "items_gather"}},
  {"id": "items_gather", "uses": "batch-gather", "params": {"gatherNodeId": "items_gather", "outputKey": "doubled"}},
  {"id": "approve", "uses": "wait"}
], "edges": [
  {"source": "start", "target": "inc"}, {"source": "inc", "target": "ctl"},
  {"source": "ctl", "target": "inc", "action": "continue"}, {"source": "ctl", "target": "items_scatter", "action": "break"},
  {"source": "items_scatter", "target": "items_gather"}, {"source": "items_gather", "target": "approve"}
]}`

func step(key string, state workflow.StepState, attempts int) client.StepDetail {
	now := time.Now()
	return client.StepDetail{StepRecord: workflow.StepRecord{NodeID: key, State: state, Attempts: attempts, StartedAt: &now}, ReadyAt: now}
}

func shapes(t *testing.T) (*workflow.Blueprint, []client.StepDetail) {
	t.Helper()
	bp, err := workflow.Decode([]byte(loopAndBatch))
	if err != nil {
		t.Fatal(err)
	}
	steps := []client.StepDetail{step("start", workflow.StepSucceeded, 1)}
	for i := 1; i <= 5; i++ {
		steps = append(steps, step(fmt.Sprintf("inc#%d", i), workflow.StepSucceeded, 1), step(fmt.Sprintf("ctl#%d", i), workflow.StepSucceeded, 1))
	}
	steps = append(steps, step("items_scatter", workflow.StepSucceeded, 1))
	for i := range 200 {
		st := workflow.StepSucceeded
		switch {
		case i == 7:
			st = workflow.StepFailed
		case i == 8:
			st = workflow.StepRetrying
		}
		steps = append(steps, step(fmt.Sprintf("double_b1_%d", i), st, 1))
	}
	steps = append(steps, step("items_gather_scatter_next", workflow.StepReady, 0), step("approve", workflow.StepAwaiting, 1))
	return bp, steps
}

func TestStepsAreGroupedByWhatTheyAreOccurrencesOf(t *testing.T) {
	t.Parallel()
	bp, details := shapes(t)
	st := groupSteps(bp, details)
	var got []string
	for _, g := range st.Groups {
		got = append(got, fmt.Sprintf("%s/%s:%d:%s:%s", g.Node, g.Kind, len(g.Steps), g.State, g.Summary()))
	}
	want := []string{
		"start/:1:succeeded:",
		"inc/iterations:5:succeeded:×5 iterations, 5 done",
		"ctl/iterations:5:succeeded:×5 iterations, 5 done",
		"items_scatter/:1:succeeded:",
		"items_scatter/workers:200:failed:×200 workers, 199 done",
		"/dynamic:1:ready:×1 dynamic steps, 0 done",
		"approve/:1:awaiting:",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("groups\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	w := st.byKey[workersKey("items_scatter")]
	if w.Counts != "1 failed, 1 running, 198 succeeded" || w.Uses != "double" || !w.Many() {
		t.Errorf("the workers' counts %q (uses %q)", w.Counts, w.Uses)
	}
	for _, tc := range []struct{ key, owner, kind string }{
		{"inc", "inc", groupSingle},
		{"inc#12", "inc", groupIterations},
		{"inc#", "inc#", groupDynamic},
		{"nothing#3", "nothing#3", groupDynamic},
		{"double_b1_3", "items_scatter", groupWorkers},
		{"other_7", "other", groupDynamic},
	} {
		nodes := map[string]*workflow.Node{}
		for i := range bp.Nodes {
			nodes[bp.Nodes[i].ID] = &bp.Nodes[i]
		}
		owner, kind, _ := stepOwner(nodes, []workflow.Node{bp.Nodes[3]}, tc.key)
		if owner != tc.owner || kind != tc.kind {
			t.Errorf("stepOwner(%q) = %q %q, want %q %q", tc.key, owner, kind, tc.owner, tc.kind)
		}
	}
}

func TestDisplayStates(t *testing.T) {
	t.Parallel()
	for stored, drawn := range map[workflow.StepState]string{
		workflow.StepReady: stateReady, workflow.StepRetrying: stateRunning, workflow.StepAwaitingFallback: stateRunning,
		workflow.StepSleeping: stateAwaiting, workflow.StepAwaiting: stateAwaiting,
		workflow.StepSucceeded: stateSucceeded, workflow.StepRecovered: stateSucceeded,
		workflow.StepFailed: stateFailed, workflow.StepSkipped: stateSkipped, "a-new-state": stateReady,
	} {
		if got := displayState(stored); got != drawn {
			t.Errorf("displayState(%s) = %s, want %s", stored, got, drawn)
		}
	}
	if got := aggregate([]string{stateSucceeded, stateAwaiting, stateSkipped}); got != stateAwaiting {
		t.Errorf("aggregate = %s, want awaiting", got)
	}
	if got := aggregate(nil); got != statePending {
		t.Errorf("aggregate of nothing = %s, want pending", got)
	}
}

// The page of an awaiting run with a loop, a batch and a parent: the
// summaries in the table and on the graph, the loop's edge back, the
// resume form with the wait node's actions, the links.
func TestRunPageSummarisesIterationsAndWorkers(t *testing.T) {
	t.Parallel()
	con, err := New(&client.Client{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	bp, steps := shapes(t)
	bp.Edges = append(bp.Edges, workflow.Edge{Source: "approve", Target: "start", Action: "again"})
	d := &client.RunDetail{
		Run:       client.RunSummary{RunID: "shaped", BlueprintID: "shapes", Status: workflow.RunAwaiting, CreatedAt: time.Now()},
		Blueprint: bp, Steps: steps, Context: map[string]any{},
		Parent:   &client.RunLink{RunID: "the-parent", Step: "sub"},
		Children: []client.RunLink{{RunID: "child-1", Step: "items_scatter", Status: workflow.RunCompleted}},
	}
	var buf bytes.Buffer
	if err := con.pages["run"].ExecuteTemplate(&buf, "page", con.runPage(d, 0)); err != nil {
		t.Fatal(err)
	}
	body := buf.String()
	for _, want := range []string{
		`<strong>×5 iterations, 5 done</strong>`,
		`<strong>×200 workers, 199 done</strong> <span class="counts">1 failed, 1 running, 198 succeeded</span> <span class="uses">double</span>`,
		`data-node="inc" data-state="succeeded"`, `transform · succeeded</text><text class="badge"`, `">×5 iterations, 5 done</text>`,
		`data-node="items_scatter" data-state="failed"`, `batch-scatter · succeeded</text><text class="badge"`, `">×200 workers, 199 done</text>`,
		`data-node="approve" data-state="awaiting"`,
		`<g class="edge back">`,
		`<input type="hidden" name="node" value="approve">`, `<option value="again">again</option>`,
		`Parent run</dt><dd><a href="/runs/the-parent">the-parent</a> (its step sub)`,
		`<a href="/runs/child-1">child-1</a> from items_scatter <span class="status st-completed">completed</span>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page has no %q", want)
		}
	}
	if strings.Count(body, `data-step="double_b1_`) != 200 {
		t.Errorf("the workers' rows: %d, want 200 under their summary", strings.Count(body, `data-step="double_b1_`))
	}
}
