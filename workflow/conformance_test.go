package workflow_test

// The Flowcraft conformance corpus (conformance/*.json) run through the
// local runner: every case's blueprint with Go mirrors of its test nodes,
// compared with what Flowcraft 2.10.1 did. Where stepflow deliberately
// does something else, differences says what and why (docs/semantics.md,
// "Where stepflow differs from Flowcraft", says the same).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/conformance"
	"github.com/stepflow/stepflow/workflow"
)

// difference is how stepflow's result of a case differs from Flowcraft's.
type difference struct {
	reason string
	// keys are node ids or context keys whose values differ; for a node id
	// both _outputs.<id> and the bare key are left out of the comparison,
	// the rest of the case is compared.
	keys []string
	// message is stepflow's error message where Flowcraft's differs.
	message string
	// check replaces the comparison for a case whose outcome differs as a
	// whole: it asserts what stepflow does instead.
	check func(t *testing.T, res *workflow.RunResult, err error)
	// awaitingKeys are left out, besides keys, when the run is compared as
	// it awaits (before a resume).
	awaitingKeys []string
}

const (
	startInput = "stepflow gives a start node without inputs the run's initial input; Flowcraft gives it nothing (or _inputs.<id> from the initial context)"
	childWaits = "a child run that pauses at a wait node fails its subflow node: pausing inside a subflow is not supported yet (a resume names a step of the run itself)"
	noWait     = "a webhook must lead to the wait node its request resumes (a validation error otherwise); Flowcraft's webhook does not pause and needs none"
)

var differences = map[string]difference{
	"start-node-input": {reason: startInput, keys: []string{"plain", "seeded"}},
	"fan-in-all": {reason: "an all join without inputs gets a map of source id → value over its taken edges; Flowcraft gives it the value of the edge processed last",
		keys: []string{"join"}},
	"fan-in-uneven": {reason: "an any join starts once, at its first arrival; Flowcraft runs it again for every later arrival (flowcraftBug)",
		keys: []string{"any-join", "anyRuns"}},
	"cycle-without-controller": {reason: "a cycle that does not pass through a loop-controller is a validation error; Flowcraft runs nothing of it and reports completed (flowcraftBug)",
		check: failsValidation("edges: cycle: a → b → a")},
	"condition-errors": {reason: "a condition that cannot be evaluated fails the run, naming the edge; Flowcraft logs it and does not take the edge (and hides _outputs.* from conditions)",
		check: failsWith("start", `edge start → unknown-name: condition "missing > 0"`)},
	"property-evaluator": {reason: "stepflow has one expression language (expr) for every blueprint: age >= 18 and input.n * 2 evaluate; Flowcraft's default PropertyEvaluator reads dotted paths only",
		keys: []string{"by-operator", "math-transform"}},
	"transform-with-string-inputs": {reason: "a node with inputs gets what its inputs name, whatever its incoming edges carry, transforms included; Flowcraft applies the edge's transform to the inputs value",
		keys: []string{"transformed"}},
	"retries-exhausted": {reason: "once a run has failed, no further node starts; Flowcraft goes on running the other branches",
		keys: []string{"good", "after-good"}},
	"fallback": {reason: "a recovered node's output is its fallback's; Flowcraft records null",
		keys: []string{"primary"}},
	"fallback-masks-failure": {reason: "a node that fails without a fallback fails the run, whatever fallbacks ran elsewhere; Flowcraft reports completed (flowcraftBug)",
		check: failsWith("bad", "bad down")},
	"failed-attempt-writes": {reason: "the context writes of a failed attempt are dropped, and a recovered node's output is its fallback's; Flowcraft keeps the writes and records null",
		keys: []string{"written", "writer"}},
	"timeout-not-enforced": {reason: "config.timeout limits each attempt; Flowcraft's in-process runtime ignores it (flowcraftBug)",
		check: failsWith("slow", "timed out after 5ms")},
	"unknown-uses": {reason: "a node type nobody registered is a validation error, before the run starts; Flowcraft fails the node when it is reached",
		check: failsValidation(`unknown node type "not-registered"`)},
	"batch-chunked": {reason: "chunkSize runs the workers a chunk at a time and gathers every item; Flowcraft processes the first chunk only and fails (flowcraftBug)",
		check: checkChunkedBatch},
	"loop-docs-example": {reason: "a loop entered at its body's first node runs the body first (do … while): the guide's example counts to 5; in Flowcraft the body never runs (flowcraftBug)",
		check: checkDocsLoop},
	"loop-counter":          {reason: startInput, keys: []string{"initialize"}},
	"loop-multi-node-body":  {reason: startInput, keys: []string{"init"}},
	"loop-conditional-exit": {reason: startInput, keys: []string{"initialize"}},
	"loop-runaway": {reason: "a loop stops at params.maxIterations (default 1000) and the run fails, naming the controller; Flowcraft's run rejects after 10000 traversal steps",
		check: failsWith("forever", `loop-controller "forever": maxIterations 1000 reached`)},
	"subflow-outputs":          {reason: startInput, keys: []string{"prepare"}},
	"subflow-docs-object-form": {reason: startInput, keys: []string{"prepare-data"}},
	"subflow-failing-child": {reason: "the error names the child's failing node and its own error, where Flowcraft's repeats its wrapper",
		message: "Sub-workflow 'broken' did not complete successfully. Status: failed. Error: node 'bad': child broke"},
	"sleep-invalid": {reason: `sleep also takes Go durations such as "500ms"; Flowcraft takes only milliseconds and <n>s|m|h|d`,
		check: completes},
	"subflow-wait-resume":      {reason: childWaits, check: failsWith("sub", "Status: awaiting")},
	"subflow-json-wait-resume": {reason: childWaits, check: failsWith("sub", "Status: awaiting")},
	"wait-parallel-branch": {reason: "a run awaits only once nothing else is pending: side-after has run when it awaits; Flowcraft stops the traversal after the step in which the wait ran",
		awaitingKeys: []string{"side-after"}},
	"wait-resume-action": {reason: "a resume's action routes the wait node's edges like any action: approve runs; Flowcraft ignores the action (flowcraftBug)",
		keys: []string{"approve"}},
	"webhook-no-adapter":   {reason: noWait, check: failsValidation(`webhook "hook" has no wait node after it`)},
	"webhook-stub-adapter": {reason: noWait, check: failsValidation(`webhook "hook" has no wait node after it`)},
}

func TestConformance(t *testing.T) {
	t.Parallel()
	cases, err := conformance.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, c := range cases {
		names[c.Name] = true
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			res, awaited, err := runCase(t, c)
			d := differences[c.Name]
			if d.check != nil {
				d.check(t, res, err)
				return
			}
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			want := c.Expected
			// A sleep is a timer the local runner simply waits for: its run
			// ends as Flowcraft's does once its scheduler resumed it. A
			// resume is applied when the run awaits, which is compared as
			// Flowcraft's awaited.
			for i, r := range c.Resume {
				if r.Via == "resume" {
					if len(awaited) <= i {
						t.Fatalf("the run awaited %d times, want a resume %d (%s)", len(awaited), i, r.NodeID)
					}
					if string(awaited[i].Status) != want.Status {
						t.Fatalf("before resume %d: status %s, want %s", i, awaited[i].Status, want.Status)
					}
					compareContext(t, want, awaited[i].Context, append(slices.Clone(d.keys), d.awaitingKeys...))
				}
				want = c.Expected.AfterResume[i]
			}
			if string(res.Status) != want.Status {
				t.Fatalf("status %s, want %s; errors %+v", res.Status, want.Status, res.Errors)
			}
			compareContext(t, want, res.Context, d.keys)
			if want.Status == "failed" {
				wantMsg := d.message
				if wantMsg == "" {
					wantMsg = innermostMessage(want.Errors[0].OriginalError)
				}
				if len(res.Errors) == 0 || res.Errors[0].NodeID != want.Errors[0].NodeID || res.Errors[0].Message != wantMsg {
					t.Errorf("errors %+v, want node %s: %q", res.Errors, want.Errors[0].NodeID, wantMsg)
				}
			}
		})
	}
	for name := range differences {
		if !names[name] {
			t.Errorf("differences names %q, which is no corpus case", name)
		}
	}
}

// runCase runs c's blueprint with the Go mirrors of its test nodes and its
// child blueprints.
func runCase(t *testing.T, c conformance.Case) (*workflow.RunResult, []*workflow.RunResult, error) {
	t.Helper()
	reg := workflow.NewRegistry()
	for uses, name := range c.Nodes {
		switch name {
		case "flowcraft:SubflowNode":
			continue // a built-in of stepflow's too
		case "flowcraft:WebhookNode":
			continue // a built-in of stepflow's too
		}
		fn, ok := corpusNodes[name]
		if !ok {
			t.Fatalf("no Go mirror of test node %q (uses %s)", name, uses)
		}
		reg.Register(uses, fn)
	}
	bp, err := workflow.Decode(c.Blueprint)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	children := map[string]*workflow.Blueprint{}
	for id, raw := range c.Blueprints {
		if children[id], err = workflow.Decode(raw); err != nil {
			t.Fatalf("decode child %s: %v", id, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The case's resumes, in order, each when the run awaits.
	var awaited []*workflow.RunResult
	onAwait := func(r *workflow.RunResult) (workflow.Resume, bool) {
		i := len(awaited)
		awaited = append(awaited, r)
		if i >= len(c.Resume) || c.Resume[i].Via != "resume" {
			return workflow.Resume{}, false
		}
		return workflow.Resume{Node: c.Resume[i].NodeID, Output: c.Resume[i].Output, Action: c.Resume[i].Action}, true
	}
	res, err := workflow.Run(ctx, bp, reg, c.Input, workflow.RunOptions{RunID: "conformance-" + c.Name, Blueprints: children, OnAwait: onAwait})
	return res, awaited, err
}

// uuidPattern matches the ids Flowcraft draws (normalised in the corpus)
// and the batch ids stepflow derives; they are compared as opaque ids.
var uuidPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// flowcraftOnly says whether a context key is Flowcraft's bookkeeping,
// which stepflow does not keep in the context: the edge values at
// _inputs.<id>, the execution id, the awaiting state.
func flowcraftOnly(key string) bool {
	for _, p := range []string{"_inputs.", "_executionId", "_awaiting", "_subflowState."} {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// comparable is a context (or a nested object) as the comparison sees it:
// Flowcraft's bookkeeping and the ignored keys left out, ids made opaque.
func comparable(v any, ignore map[string]bool, top bool) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			if flowcraftOnly(k) || (top && ignore[k]) {
				continue
			}
			out[uuidPattern.ReplaceAllString(k, "<id>")] = comparable(x, ignore, false)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = comparable(x, ignore, false)
		}
		return out
	case string:
		return uuidPattern.ReplaceAllString(v, "<id>")
	}
	return v
}

// compareContext compares stepflow's final context with Flowcraft's. A
// value Flowcraft left undefined (want.UndefinedPaths) may be nil or
// absent.
func compareContext(t *testing.T, want conformance.Result, got map[string]any, keys []string) {
	t.Helper()
	ignore := map[string]bool{}
	for _, k := range keys {
		ignore[k], ignore[workflow.OutputKey(k)] = true, true
	}
	undefined := map[string]bool{}
	for _, p := range want.UndefinedPaths {
		parts := make([]string, len(p))
		for i, x := range p {
			parts[i] = uuidPattern.ReplaceAllString(fmt.Sprint(x), "<id>")
		}
		undefined[strings.Join(parts, "/")] = true
	}
	w := comparable(want.Context, ignore, true)
	g := comparable(workflow.Normalize(got), ignore, true)
	var diffs []string
	var walk func(path []string, w, g any)
	walk = func(path []string, w, g any) {
		wm, wok := w.(map[string]any)
		gm, gok := g.(map[string]any)
		if !wok || !gok {
			if !reflect.DeepEqual(w, g) {
				diffs = append(diffs, fmt.Sprintf("%s = %s, want %s", strings.Join(path, "/"), toJSON(g), toJSON(w)))
			}
			return
		}
		for _, k := range unionKeys(wm, gm) {
			p := append(slices.Clone(path), k)
			wv, inW := wm[k]
			gv, inG := gm[k]
			switch {
			case inW && inG:
				walk(p, wv, gv)
			case inW:
				diffs = append(diffs, fmt.Sprintf("%s missing, want %s", strings.Join(p, "/"), toJSON(wv)))
			case gv != nil || !undefined[strings.Join(p, "/")]:
				diffs = append(diffs, fmt.Sprintf("%s = %s, which Flowcraft does not set", strings.Join(p, "/"), toJSON(gv)))
			}
		}
	}
	walk(nil, w, g)
	for _, d := range diffs {
		t.Errorf("context: %s", d)
	}
}

func unionKeys(a, b map[string]any) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// innermostMessage is the message of the error a node threw: the deepest
// cause that is an Error (Flowcraft wraps a node's error in "Node '<id>'
// execution failed").
func innermostMessage(e *conformance.ErrorInfo) string {
	msg := ""
	for ; e != nil && !e.PlainObject; e = e.Cause {
		msg = e.Message
	}
	return msg
}

func failsValidation(substr string) func(*testing.T, *workflow.RunResult, error) {
	return func(t *testing.T, _ *workflow.RunResult, err error) {
		t.Helper()
		var ve *workflow.ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), substr) {
			t.Errorf("err = %v, want a validation error with %q", err, substr)
		}
	}
}

func failsWith(node, substr string) func(*testing.T, *workflow.RunResult, error) {
	return func(t *testing.T, res *workflow.RunResult, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if res.Status != workflow.RunFailed || len(res.Errors) == 0 || res.Errors[0].NodeID != node || !strings.Contains(res.Errors[0].Message, substr) {
			t.Errorf("status %s, errors %+v; want failed by %s with %q", res.Status, res.Errors, node, substr)
		}
	}
}

func completes(t *testing.T, res *workflow.RunResult, err error) {
	t.Helper()
	if err != nil || res.Status != workflow.RunCompleted {
		t.Fatalf("err %v, result %+v; want completed", err, res)
	}
}

// checkChunkedBatch: five items in chunks of 2 are all doubled, in item
// order, and each chunk starts once the one before has finished.
func checkChunkedBatch(t *testing.T, res *workflow.RunResult, err error) {
	completes(t, res, err)
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
	for i := 2; i < 5; i++ {
		prevChunk := workers[(i/2-1)*2 : i/2*2]
		for _, p := range prevChunk {
			if workers[i].StartedAt.Before(*p.FinishedAt) {
				t.Errorf("worker %d started at %s, before %s of the previous chunk finished at %s", i, workers[i].StartedAt, p.NodeID, p.FinishedAt)
			}
		}
	}
}

// checkDocsLoop: the loops guide's counter runs its body five times.
func checkDocsLoop(t *testing.T, res *workflow.RunResult, err error) {
	completes(t, res, err)
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
