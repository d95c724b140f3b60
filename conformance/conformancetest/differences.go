package conformancetest

import (
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/workflow"
)

// Difference is how stepflow's result of a case differs from Flowcraft's
// on purpose (docs/semantics.md, "Where stepflow differs from Flowcraft",
// says the same).
type Difference struct {
	Reason string
	// Keys are node ids or context keys whose values differ; for a node id
	// both _outputs.<id> and the bare key are left out of the comparison,
	// the rest of the case is compared.
	Keys []string
	// Message is stepflow's error message where Flowcraft's differs.
	Message string
	// Check replaces the comparison for a case whose outcome differs as a
	// whole: it asserts what stepflow does instead.
	Check func(t *testing.T, o Outcome)
	// AwaitingKeys are left out, besides Keys, when the run is compared
	// as it awaits (before a resume).
	AwaitingKeys []string
}

const (
	startInput = "stepflow gives a start node without inputs the run's initial input; Flowcraft gives it nothing (or _inputs.<id> from the initial context)"
	noWait     = "a webhook must lead to the wait node its request resumes (a validation error otherwise); Flowcraft's webhook does not pause and needs none"
)

// Differences are the cases whose stepflow result differs from
// Flowcraft's on purpose, by case name.
var Differences = map[string]Difference{
	"start-node-input": {Reason: startInput, Keys: []string{"plain", "seeded"}},
	"fan-in-all": {Reason: "an all join without inputs gets a map of source id → value over its taken edges; Flowcraft gives it the value of the edge processed last",
		Keys: []string{"join"}},
	"fan-in-uneven": {Reason: "an any join starts once, at its first arrival; Flowcraft runs it again for every later arrival (flowcraftBug)",
		Keys: []string{"any-join", "anyRuns"}},
	"cycle-without-controller": {Reason: "a cycle that does not pass through a loop-controller is a validation error; Flowcraft runs nothing of it and reports completed (flowcraftBug)",
		Check: failsValidation("edges: cycle: a → b → a")},
	"condition-errors": {Reason: "a condition that cannot be evaluated fails the run, naming the edge; Flowcraft logs it and does not take the edge (and hides _outputs.* from conditions)",
		Check: failsWith("start", `edge start → unknown-name: condition "missing > 0"`)},
	"property-evaluator": {Reason: "stepflow has one expression language (expr) for every blueprint: age >= 18 and input.n * 2 evaluate; Flowcraft's default PropertyEvaluator reads dotted paths only",
		Keys: []string{"by-operator", "math-transform"}},
	"transform-with-string-inputs": {Reason: "a node with inputs gets what its inputs name, whatever its incoming edges carry, transforms included; Flowcraft applies the edge's transform to the inputs value",
		Keys: []string{"transformed"}},
	"retries-exhausted": {Reason: "once a run has failed, no further node starts; Flowcraft goes on running the other branches",
		Keys: []string{"good", "after-good"}},
	"fallback": {Reason: "a recovered node's output is its fallback's; Flowcraft records null",
		Keys: []string{"primary"}},
	"fallback-masks-failure": {Reason: "a node that fails without a fallback fails the run, whatever fallbacks ran elsewhere; Flowcraft reports completed (flowcraftBug)",
		Check: failsWith("bad", "bad down")},
	"failed-attempt-writes": {Reason: "the context writes of a failed attempt are dropped, and a recovered node's output is its fallback's; Flowcraft keeps the writes and records null",
		Keys: []string{"written", "writer"}},
	"timeout-not-enforced": {Reason: "config.timeout limits each attempt; Flowcraft's in-process runtime ignores it (flowcraftBug)",
		Check: failsWith("slow", "timed out after 5ms")},
	"unknown-uses": {Reason: "a node type nobody registered is a validation error, before the run starts; Flowcraft fails the node when it is reached",
		Check: failsValidation(`unknown node type "not-registered"`)},
	"batch-chunked": {Reason: "chunkSize runs the workers a chunk at a time and gathers every item; Flowcraft processes the first chunk only and fails (flowcraftBug)",
		Check: checkChunkedBatch},
	"loop-docs-example": {Reason: "a loop entered at its body's first node runs the body first (do … while): the guide's example counts to 5; in Flowcraft the body never runs (flowcraftBug)",
		Check: checkDocsLoop},
	"loop-counter":          {Reason: startInput, Keys: []string{"initialize"}},
	"loop-multi-node-body":  {Reason: startInput, Keys: []string{"init"}},
	"loop-conditional-exit": {Reason: startInput, Keys: []string{"initialize"}},
	"loop-runaway": {Reason: "a loop stops at params.maxIterations (default 1000) and the run fails, naming the controller; Flowcraft's run rejects after 10000 traversal steps",
		Check: failsWith("forever", `loop-controller "forever": maxIterations 1000 reached`)},
	"subflow-outputs":          {Reason: startInput, Keys: []string{"prepare"}},
	"subflow-docs-object-form": {Reason: startInput, Keys: []string{"prepare-data"}},
	"subflow-failing-child": {Reason: "the error names the child's failing node and its own error, where Flowcraft's repeats its wrapper",
		Message: "Sub-workflow 'broken' did not complete successfully. Status: failed. Error: node 'bad': child broke"},
	"sleep-invalid": {Reason: `sleep also takes Go durations such as "500ms"; Flowcraft takes only milliseconds and <n>s|m|h|d`,
		Check: completes},
	"subflow-json-wait-resume": {Reason: "a resume of a subflow node whose child awaits resumes the child, whatever the node's uses key: the child goes on and its output is the node's; Flowcraft forwards the resume only for uses \"SubflowNode\" and takes the output as the node's own for \"subflow\" (flowcraftBug)",
		Keys: []string{"sub", "after"}},
	"wait-parallel-branch": {Reason: "a run awaits only once nothing else is pending: side-after has run when it awaits; Flowcraft stops the traversal after the step in which the wait ran",
		AwaitingKeys: []string{"side-after"}},
	"wait-resume-action": {Reason: "a resume's action routes the wait node's edges like any action: approve runs; Flowcraft ignores the action (flowcraftBug)",
		Keys: []string{"approve"}},
	"webhook-no-adapter":   {Reason: noWait, Check: failsValidation(`webhook "hook" has no wait node after it`)},
	"webhook-stub-adapter": {Reason: noWait, Check: failsValidation(`webhook "hook" has no wait node after it`)},
}

func failsValidation(substr string) func(*testing.T, Outcome) {
	return func(t *testing.T, o Outcome) {
		t.Helper()
		var ve *workflow.ValidationError
		if !errors.As(o.Err, &ve) || !strings.Contains(o.Err.Error(), substr) {
			t.Errorf("err = %v, want a validation error with %q", o.Err, substr)
		}
	}
}

func failsWith(node, substr string) func(*testing.T, Outcome) {
	return func(t *testing.T, o Outcome) {
		t.Helper()
		if o.Err != nil {
			t.Fatalf("run: %v", o.Err)
		}
		res := o.Result
		if res.Status != workflow.RunFailed || len(res.Errors) == 0 || res.Errors[0].NodeID != node || !strings.Contains(res.Errors[0].Message, substr) {
			t.Errorf("status %s, errors %+v; want failed by %s with %q", res.Status, res.Errors, node, substr)
		}
	}
}

func completes(t *testing.T, o Outcome) {
	t.Helper()
	if o.Err != nil || o.Result.Status != workflow.RunCompleted {
		t.Fatalf("err %v, result %+v; want completed", o.Err, o.Result)
	}
}

// checkChunkedBatch: five items in chunks of 2 are all doubled, in item
// order, and each chunk starts once the one before has finished.
func checkChunkedBatch(t *testing.T, o Outcome) {
	completes(t, o)
	res := o.Result
	want := []any{2.0, 4.0, 6.0, 8.0, 10.0}
	if !reflect.DeepEqual(res.Context["doubled"], want) || !reflect.DeepEqual(res.Context[workflow.OutputKey("after")], want) {
		t.Errorf("doubled %v, after %v; want %v", res.Context["doubled"], res.Context[workflow.OutputKey("after")], want)
	}
	var workers []workflow.StepRecord
	for _, st := range res.Steps {
		if strings.HasPrefix(st.NodeID, "fn_batch_worker_") {
			workers = append(workers, st)
		}
	}
	if len(workers) != 5 {
		t.Fatalf("%d worker steps, want 5: %+v", len(workers), res.Steps)
	}
	// In item order: a worker's id ends in _<item index>.
	slices.SortFunc(workers, func(a, b workflow.StepRecord) int { return itemIndex(a.NodeID) - itemIndex(b.NodeID) })
	for _, w := range workers {
		if w.StartedAt == nil || w.FinishedAt == nil {
			t.Fatalf("worker %s has no start or end time: %+v", w.NodeID, w)
		}
	}
	for i := 2; i < 5; i++ {
		prevChunk := workers[(i/2-1)*2 : i/2*2]
		for _, p := range prevChunk {
			if workers[i].StartedAt.Before(*p.FinishedAt) {
				t.Errorf("worker %d started at %s, before %s of the previous chunk finished at %s", i, workers[i].StartedAt, p.NodeID, p.FinishedAt)
			}
		}
	}
}

// itemIndex is the item index a batch worker's id ends in (-1 if none).
func itemIndex(id string) int {
	i, err := strconv.Atoi(id[strings.LastIndexByte(id, '_')+1:])
	if err != nil {
		return -1
	}
	return i
}

// checkDocsLoop: the loops guide's counter runs its body five times.
func checkDocsLoop(t *testing.T, o Outcome) {
	completes(t, o)
	res := o.Result
	if res.Context["count"] != 5.0 {
		t.Errorf("count = %v, want 5", res.Context["count"])
	}
	var iterations []int
	for _, st := range res.Steps {
		if st.NodeID == "increment" {
			iterations = append(iterations, st.Iteration)
		}
	}
	if !reflect.DeepEqual(iterations, []int{1, 2, 3, 4, 5}) {
		t.Errorf("increment ran at iterations %v, want 1…5", iterations)
	}
}
