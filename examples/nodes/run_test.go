package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/workflow"
)

// trace is what a local run of an example did.
type trace struct {
	Outputs  map[string]any    // node id → output (a recovered node: its fallback's)
	Actions  map[string]string // node id → action, when not empty
	Attempts map[string]int    // node id → attempts made
	Errors   map[string][]string
	Skipped  []string
	Order    []string // nodes in the order they finished
}

// localStates is the States a local run keeps in memory.
type localStates struct {
	status     map[string]workflow.StepStatus
	deliveries map[[2]string]any
}

func (s *localStates) Status(id string) (workflow.StepStatus, bool) {
	st, ok := s.status[id]
	return st, ok
}

func (s *localStates) Delivery(source, target string) any {
	return s.deliveries[[2]string{source, target}]
}

// runExample runs a compiled example one node at a time with the
// workflow package's own routing, join and input rules, so the tests can
// assert what each node outputs for an example input. Retry delays are
// not waited for and a suspended node is resumed at once: the runtimes
// prove timing; this proves the blueprints and the nodes fit together.
func runExample(t *testing.T, w *workflow.Workflow, runID string, input any) trace {
	t.Helper()
	tr := trace{Outputs: map[string]any{}, Actions: map[string]string{}, Attempts: map[string]int{}, Errors: map[string][]string{}}
	rc := workflow.NewMapContext(nil)
	states := &localStates{status: map[string]workflow.StepStatus{}, deliveries: map[[2]string]any{}}
	var queue []workflow.ReadyNode
	for _, id := range w.StartNodes() {
		queue = append(queue, workflow.ReadyNode{ID: id, Input: workflow.Normalize(input)})
		states.status[id] = workflow.StepStatus{State: workflow.StepReady}
	}
	attempt := func(id string, edgeInput any) (workflow.NodeResult, error) {
		n, _ := w.Node(id)
		in := w.ResolveInput(id, edgeInput, rc.Snapshot(), tr.Outputs)
		rc.Set(workflow.InputKey(id), in)
		var err error
		for a := 1; a <= n.MaxAttempts; a++ {
			tr.Attempts[id]++
			ni := workflow.NodeInput{RunID: runID, NodeID: id, Attempt: a, Input: in, Params: n.Params, Context: rc}
			var res workflow.NodeResult
			for {
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if n.Timeout > 0 {
					ctx, cancel = context.WithTimeout(ctx, n.Timeout)
				}
				res, err = workflow.Invoke(ctx, n.Func, ni)
				cancel()
				var s *workflow.SuspendError
				if !errors.As(err, &s) {
					break
				}
				ni.Resumed = &s.Until
			}
			if err == nil {
				return res, nil
			}
			tr.Errors[id] = append(tr.Errors[id], err.Error())
		}
		return workflow.NodeResult{}, err
	}
	for len(queue) > 0 {
		ready := queue[0]
		queue = queue[1:]
		res, err := attempt(ready.ID, ready.Input)
		if err != nil {
			n, _ := w.Node(ready.ID)
			if n.Fallback == "" {
				t.Fatalf("run %s: node %s failed: %v", runID, ready.ID, err)
			}
			if res, err = attempt(n.Fallback, ready.Input); err != nil {
				t.Fatalf("run %s: fallback %s of %s failed: %v", runID, n.Fallback, ready.ID, err)
			}
			tr.Outputs[n.Fallback] = res.Output
		}
		tr.Outputs[ready.ID] = res.Output
		rc.Set(workflow.OutputKey(ready.ID), res.Output)
		if res.Action != "" {
			tr.Actions[ready.ID] = res.Action
		}
		tr.Order = append(tr.Order, ready.ID)
		routing, err := w.Route(ready.ID, res, workflow.Env{Context: rc.Snapshot(), Outputs: tr.Outputs})
		if err != nil {
			t.Fatalf("run %s: route %s: %v", runID, ready.ID, err)
		}
		states.status[ready.ID] = workflow.StepStatus{State: workflow.StepSucceeded, Taken: routing.Taken}
		for target, v := range routing.Deliveries {
			states.deliveries[[2]string{ready.ID, target}] = v
		}
		next := w.Advance([]string{ready.ID}, states)
		for _, id := range next.Skipped {
			states.status[id] = workflow.StepStatus{State: workflow.StepSkipped}
			tr.Skipped = append(tr.Skipped, id)
		}
		for _, r := range next.Ready {
			states.status[r.ID] = workflow.StepStatus{State: workflow.StepReady}
			queue = append(queue, r)
		}
	}
	for _, id := range w.NodeIDs() {
		st, ok := states.status[id]
		if _, backs := w.BackedBy(id); !backs && (!ok || !st.State.Resolved()) {
			t.Errorf("run %s: node %s never resolved (state %q)", runID, id, st.State)
		}
	}
	return tr
}

func exampleInput(t *testing.T, name string) any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", name+".input.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func assertOutputs(t *testing.T, got trace, want map[string]any) {
	t.Helper()
	for id, w := range want {
		if g := got.Outputs[id]; !reflect.DeepEqual(g, workflow.Normalize(w)) {
			t.Errorf("output of %s = %#v\nwant %#v", id, g, workflow.Normalize(w))
		}
	}
}

func TestOrderExample(t *testing.T) {
	t.Parallel()
	w := loadExample(t, "order")
	order := map[string]any{
		"orderId": "A-1001", "total": 138.9, "customer": "ada@example.com",
		"items": []any{
			map[string]any{"sku": "KB-101", "qty": 1, "price": 89.9},
			map[string]any{"sku": "MS-202", "qty": 2, "price": 24.5},
		},
	}

	t.Run("big order from order.input.json", func(t *testing.T) {
		t.Parallel()
		got := runExample(t, w, "run-42", exampleInput(t, "order"))
		assertOutputs(t, got, map[string]any{
			"validate":        order,
			"review":          map[string]any{"reviewed": true},
			"reserve":         map[string]any{"reserved": []any{"KB-101", "MS-202"}, "warehouse": "central"},
			"payment-gateway": order,
			"charge":          map[string]any{"chargeId": "ch-run-42", "amount": 138.9, "currency": "EUR"},
			"ship":            map[string]any{"trackingId": "trk-run-42", "carrier": "DHL"},
			"notify":          map[string]any{"notified": "ada@example.com", "channel": "email"},
		})
		if got.Actions["validate"] != ActionBig {
			t.Errorf("validate action %q, want big", got.Actions["validate"])
		}
		if got.Attempts["payment-gateway"] != 2 || !reflect.DeepEqual(got.Errors["payment-gateway"], []string{"flaky: attempt 1 of 1 planned failures"}) {
			t.Errorf("payment-gateway: %d attempts, errors %q; want 2 attempts, one planned failure", got.Attempts["payment-gateway"], got.Errors["payment-gateway"])
		}
		if len(got.Skipped) != 0 {
			t.Errorf("skipped %q, want nothing skipped", got.Skipped)
		}
	})

	t.Run("small order skips review and still ships", func(t *testing.T) {
		t.Parallel()
		got := runExample(t, w, "run-7", map[string]any{"customer": "bob@example.com", "items": []any{map[string]any{"sku": "PEN-1", "qty": 2, "price": 1.25}}})
		assertOutputs(t, got, map[string]any{
			"charge": map[string]any{"chargeId": "ch-run-7", "amount": 2.5, "currency": "EUR"},
			"ship":   map[string]any{"trackingId": "trk-run-7", "carrier": "DHL"},
			"notify": map[string]any{"notified": "bob@example.com", "channel": "email"},
		})
		if got.Actions["validate"] != ActionSmall {
			t.Errorf("validate action %q, want small", got.Actions["validate"])
		}
		if !reflect.DeepEqual(got.Skipped, []string{"review"}) {
			t.Errorf("skipped %q, want [review]", got.Skipped)
		}
		if _, ran := got.Outputs["review"]; ran {
			t.Error("review ran for a small order")
		}
	})
}

func TestDocumentsExample(t *testing.T) {
	t.Parallel()
	w := loadExample(t, "documents")
	text := "Der Bericht beschreibt, wie das Team die neue Plattform in drei Monaten aufgebaut hat. Die Kunden sind mit dem Ergebnis zufrieden, und die Kosten liegen unter dem Plan."

	t.Run("German from documents.input.json", func(t *testing.T) {
		t.Parallel()
		got := runExample(t, w, "run-d", exampleInput(t, "documents"))
		assertOutputs(t, got, map[string]any{
			"extract":      map[string]any{"text": text, "words": 28},
			"detect":       map[string]any{"text": text, "language": "de"},
			"translate-de": map[string]any{"text": "[de→en] " + text, "language": "en", "translatedFrom": "de"},
			"summarize":    map[string]any{"summary": "[de→en] Der Bericht beschreibt, wie das Team die neue Plattform in drei …", "truncated": true, "language": "en"},
		})
		if !reflect.DeepEqual(got.Skipped, []string{"translate-fr"}) {
			t.Errorf("skipped %q, want [translate-fr]", got.Skipped)
		}
	})

	for _, tt := range []struct {
		doc, lang, summary string
		skipped            []string
	}{
		{"The plan is on time and the team is happy.", "en", "The plan is on time and the team is happy.", []string{"translate-de", "translate-fr"}},
		{"Le projet est en avance et les clients sont contents.", "fr", "[fr→en] Le projet est en avance et les clients sont contents.", []string{"translate-de"}},
	} {
		t.Run(tt.lang, func(t *testing.T) {
			t.Parallel()
			got := runExample(t, w, "run-"+tt.lang, map[string]any{"document": tt.doc})
			want := map[string]any{"summary": tt.summary, "truncated": false, "language": "en"}
			assertOutputs(t, got, map[string]any{"summarize": want})
			if got.Actions["detect"] != tt.lang {
				t.Errorf("detect action %q, want %q", got.Actions["detect"], tt.lang)
			}
			if !reflect.DeepEqual(got.Skipped, tt.skipped) {
				t.Errorf("skipped %q, want %q", got.Skipped, tt.skipped)
			}
		})
	}
}

func TestSmallExamples(t *testing.T) {
	t.Parallel()
	in := map[string]any{"n": 1}
	tests := []struct {
		name     string
		last     string
		want     any
		attempts map[string]int
	}{
		{name: "chain10", last: "s10", want: in, attempts: map[string]int{"s1": 1, "s10": 1}},
		{name: "fanout", last: "end", want: map[string]any{"b1": in, "b2": in, "b3": in, "b4": in, "b5": in, "b6": in, "b7": in, "b8": in}, attempts: map[string]int{"join": 1}},
		{name: "sleep", last: "end", want: in, attempts: map[string]int{"wait": 1}},
		{name: "retry", last: "end", want: in, attempts: map[string]int{"unstable": 3}},
		{name: "fallback", last: "end", want: map[string]any{"recoveredBy": "backup"}, attempts: map[string]int{"primary": 2, "backup": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			got := runExample(t, loadExample(t, tt.name), "run-"+tt.name, in)
			assertOutputs(t, got, map[string]any{tt.last: tt.want})
			if last := got.Order[len(got.Order)-1]; last != tt.last {
				t.Errorf("last node %s, want %s", last, tt.last)
			}
			for id, n := range tt.attempts {
				if got.Attempts[id] != n {
					t.Errorf("%s: %d attempts, want %d (errors %q)", id, got.Attempts[id], n, got.Errors[id])
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s; a local run waits for nothing", d)
			}
		})
	}
}

// TestReadmeChart keeps the chart in examples/README.md in step with
// order.json.
func TestReadmeChart(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	chart := "```mermaid\n" + workflow.Mermaid(loadExample(t, "order").Blueprint) + "```\n"
	if !strings.Contains(string(readme), chart) {
		t.Errorf("examples/README.md does not hold the current chart of order.json:\n%s", chart)
	}
}
