package nodes

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/workflow"
)

// The batch example prices each line in a worker step of its own, two at
// a time, and gathers them in line order.
func TestBatchExample(t *testing.T) {
	t.Parallel()
	got := runExample(t, loadExample(t, "batch"), "run-b", exampleInput(t, "batch"))
	lines := []any{
		map[string]any{"sku": "KB-101", "qty": 1, "amount": 89.9},
		map[string]any{"sku": "MS-202", "qty": 2, "amount": 49.0},
		map[string]any{"sku": "CB-303", "qty": 3, "amount": 14.97},
	}
	assertOutputs(t, got, map[string]any{"lines_gather": lines, "total": map[string]any{"lines": 3, "total": 153.87}})
	if !reflect.DeepEqual(got.Context["lines"], workflow.Normalize(lines)) {
		t.Errorf("context lines = %v, want the gathered lines", got.Context["lines"])
	}
	batch := workflow.BatchID("run-b", "lines_scatter")
	var workers []string
	for _, key := range got.Order {
		if strings.HasPrefix(key, PriceLine+"_") {
			workers = append(workers, key)
		}
	}
	if len(workers) != 3 || workers[2] != PriceLine+"_"+batch+"_2" {
		t.Errorf("workers finished %v, want the three price-line_%s_<i>, the third last (chunks of 2)", workers, batch)
	}
}

// The loop example counts down in three iterations, each a step of its own.
func TestLoopExample(t *testing.T) {
	t.Parallel()
	got := runExample(t, loadExample(t, "loop"), "run-l", nil)
	want := []string{"init", "countdown#0", "tick#1", "countdown#1", "tick#2", "countdown#2", "tick#3", "countdown#3", "liftoff"}
	if !reflect.DeepEqual(got.Order, want) {
		t.Errorf("steps finished in order %v, want %v", got.Order, want)
	}
	assertOutputs(t, got, map[string]any{"liftoff": map[string]any{"liftoff": true, "last": 0}, "tick": 0})
	if got.Context["n"] != 0.0 {
		t.Errorf("n = %v, want 0", got.Context["n"])
	}
}

// The subflow example runs examples/subflows/pricing.json as its child and
// reads back its total.
func TestSubflowExample(t *testing.T) {
	t.Parallel()
	child := loadBlueprintFile(t, filepath.Join("..", "subflows", "pricing.json"))
	if _, err := workflow.Compile(child, Registry()); err != nil {
		t.Fatalf("pricing: %v", err)
	}
	w := loadExample(t, "subflow")
	children := map[string]*workflow.Blueprint{child.ID: child}
	if err := workflow.ValidateSubflows(w.Blueprint, children); err != nil {
		t.Fatal(err)
	}
	got := runExampleWith(t, w, workflow.RunOptions{RunID: "run-s", Blueprints: children}, exampleInput(t, "subflow"))
	assertOutputs(t, got, map[string]any{"receipt": map[string]any{"items": 3, "due": 153.87}})
	if !reflect.DeepEqual(got.Context["total"], map[string]any{"lines": 3.0, "total": 153.87}) {
		t.Errorf("total = %v, want the child's total", got.Context["total"])
	}
}

func loadBlueprintFile(t *testing.T, path string) *workflow.Blueprint {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bp, err := workflow.Decode(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return bp
}

func TestBatchAndLoopNodes(t *testing.T) {
	t.Parallel()
	counter := func(v any) workflow.Context { return workflow.NewMapContext(map[string]any{"n": v}) }
	runNodeCases(t, []nodeCase{
		{name: "price-line prices a line", uses: PriceLine, in: workflow.NodeInput{Input: map[string]any{"sku": "A", "qty": 3.0, "price": 0.1}},
			want: workflow.NodeResult{Output: map[string]any{"sku": "A", "qty": 3, "amount": 0.3}}},
		{name: "price-line wants a line", uses: PriceLine, in: workflow.NodeInput{Input: "A"}, wantErr: "want an order line"},
		{name: "price-line wants a whole qty", uses: PriceLine, in: workflow.NodeInput{Input: map[string]any{"qty": 1.5, "price": 1.0}}, wantErr: "qty must be a whole number"},
		{name: "price-line wants a price", uses: PriceLine, in: workflow.NodeInput{Input: map[string]any{"qty": 1.0, "price": -1.0}}, wantErr: "price must be a number"},
		{name: "decrement counts down", uses: Decrement, in: workflow.NodeInput{Params: map[string]any{"key": "n"}, Context: counter(2.0)},
			want: workflow.NodeResult{Output: 1.0}},
		{name: "decrement wants a number", uses: Decrement, in: workflow.NodeInput{Params: map[string]any{"key": "n"}, Context: counter("x")}, wantErr: `context key "n" holds`},
	})
	if err := checkDecrementParams(map[string]any{}); err == nil || !strings.Contains(err.Error(), "key: required") {
		t.Errorf("checkDecrementParams({}) = %v", err)
	}
}
