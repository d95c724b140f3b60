package nodes

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
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
	Skipped  []string
	Order    []string // steps in the order they finished (a loop's by step key)
	Context  map[string]any
}

// runExample runs a compiled example with the local runner (workflow.Run,
// the same semantics as the distributed runtime) and collects what each
// node did, so the tests can assert outputs for an example input.
func runExample(t *testing.T, w *workflow.Workflow, runID string, input any) trace {
	t.Helper()
	return runExampleWith(t, w, workflow.RunOptions{RunID: runID}, input)
}

// runExampleWith is runExample with the run's options (a subflow's
// blueprints).
func runExampleWith(t *testing.T, w *workflow.Workflow, opts workflow.RunOptions, input any) trace {
	t.Helper()
	runID := opts.RunID
	in, _ := workflow.Normalize(input).(map[string]any)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := w.Run(ctx, in, opts)
	if err != nil {
		t.Fatalf("run %s: %v", runID, err)
	}
	if res.Status != workflow.RunCompleted {
		t.Fatalf("run %s: %s %v", runID, res.Status, res.Errors)
	}
	tr := trace{Outputs: map[string]any{}, Actions: map[string]string{}, Attempts: map[string]int{}, Context: res.Context}
	for k, v := range res.Context {
		if id, ok := strings.CutPrefix(k, "_outputs."); ok {
			tr.Outputs[id] = v
		}
	}
	steps := append([]workflow.StepRecord(nil), res.Steps...)
	sort.SliceStable(steps, func(i, j int) bool {
		a, b := steps[i].FinishedAt, steps[j].FinishedAt
		return a != nil && (b == nil || a.Before(*b))
	})
	for _, st := range steps {
		tr.Attempts[st.NodeID] = st.Attempts
		if st.Action != "" {
			tr.Actions[st.NodeID] = st.Action
		}
		switch st.State {
		case workflow.StepSkipped:
			tr.Skipped = append(tr.Skipped, st.NodeID)
		case workflow.StepSucceeded, workflow.StepRecovered:
			key := st.NodeID
			if st.StepKey != "" {
				key = st.StepKey
			}
			tr.Order = append(tr.Order, key)
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
		if got.Attempts["payment-gateway"] != 2 {
			t.Errorf("payment-gateway: %d attempts, want 2 (one planned failure)", got.Attempts["payment-gateway"])
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
					t.Errorf("%s: %d attempts, want %d", id, got.Attempts[id], n)
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
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
