package workflow_test

import (
	"testing"

	"github.com/stepflow/stepflow/workflow"
)

// WithLookup answers keys the node has not changed before the values,
// once per key; what the node sets or deletes wins.
func TestMapContextWithLookup(t *testing.T) {
	calls := map[string]int{}
	c := workflow.NewMapContext(map[string]any{"start": "initial", "other": 1}).WithLookup(func(key string) (any, bool) {
		calls[key]++
		if key == "start" {
			return "output", true
		}
		return nil, false
	})
	for range 2 {
		if v, _ := c.Get("start"); v != "output" {
			t.Fatalf("start: %v, want the lookup's output", v)
		}
		if v, _ := c.Get("other"); v != 1 {
			t.Fatalf("other: %v, want the value the lookup does not know", v)
		}
	}
	if calls["start"] != 1 || calls["other"] != 1 {
		t.Errorf("lookups %v, want one per key", calls)
	}
	c.Set("x", 2)
	c.Delete("other")
	if v, _ := c.Get("x"); v != 2.0 && v != 2 {
		t.Errorf("x: %v, want what the node set", v)
	}
	if _, ok := c.Get("other"); ok {
		t.Error("other found after the node deleted it")
	}
	if calls["x"] != 0 {
		t.Errorf("the lookup was asked for a key the node set")
	}
	set, deleted := c.Changes()
	if len(set) != 1 || len(deleted) != 1 {
		t.Errorf("changes %v %v: a looked-up key is no change", set, deleted)
	}
}
