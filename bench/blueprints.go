package main

// The benchmark's blueprints: W's fan-out and the chains of C and L.

import (
	"encoding/json"
	"fmt"

	"github.com/stepflow/stepflow/workflow"
)

func mustDecode(v any) *workflow.Blueprint {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	bp, err := workflow.Decode(b)
	if err != nil {
		panic(fmt.Sprintf("bench blueprint: %v", err))
	}
	return bp
}

type node = map[string]any
type edge = map[string]any

// fanoutBlueprint is examples/fanout.json: start → b1..b8 → join (all) → end,
// 11 noop nodes.
func fanoutBlueprint() *workflow.Blueprint {
	nodes := []node{{"id": "start", "uses": "noop"}}
	var edges []edge
	for i := 1; i <= 8; i++ {
		b := fmt.Sprintf("b%d", i)
		nodes = append(nodes, node{"id": b, "uses": "noop"})
		edges = append(edges, edge{"source": "start", "target": b}, edge{"source": b, "target": "join"})
	}
	nodes = append(nodes, node{"id": "join", "uses": "noop", "config": map[string]any{"joinStrategy": "all"}}, node{"id": "end", "uses": "noop"})
	edges = append(edges, edge{"source": "join", "target": "end"})
	return mustDecode(map[string]any{"id": "bench-fanout", "metadata": map[string]any{"version": "1"}, "nodes": nodes, "edges": edges})
}

func chainID(i int) string { return fmt.Sprintf("n%03d", i) }

// chainBlueprint is n nodes in a chain. noop nodes pass their input on; with
// transform, each node outputs {"i": input.i + 1, "pad": input.pad}.
func chainBlueprint(id string, n int, transform bool) *workflow.Blueprint {
	var nodes []node
	var edges []edge
	for i := 1; i <= n; i++ {
		nd := node{"id": chainID(i), "uses": "noop"}
		if transform {
			nd = node{"id": chainID(i), "uses": "transform", "params": map[string]any{"expression": `{"i": input.i + 1, "pad": input.pad}`}}
		}
		nodes = append(nodes, nd)
		if i > 1 {
			edges = append(edges, edge{"source": chainID(i - 1), "target": chainID(i)})
		}
	}
	return mustDecode(map[string]any{"id": id, "metadata": map[string]any{"version": "1"}, "nodes": nodes, "edges": edges})
}

// normalize gives a value the shape it has after a JSON round trip.
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}
