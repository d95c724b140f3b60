package workflow

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMermaid(t *testing.T) {
	t.Parallel()
	intp := func(n int) *int { return &n }
	tests := []struct {
		name string
		bp   *Blueprint
		want string
	}{
		{
			name: "nil blueprint",
			bp:   nil,
			want: "flowchart TD\n",
		},
		{
			name: "chain with generated ids",
			bp: &Blueprint{ID: "c", Nodes: []Node{
				{ID: "a-1", Uses: "noop"},
				{ID: "b.2", Uses: "transform"},
			}, Edges: []Edge{{Source: "a-1", Target: "b.2"}}},
			want: `flowchart TD
    n0["a-1<br/>noop"]
    n1["b.2<br/>transform"]
    n0 --> n1
`,
		},
		{
			name: "action, condition and both",
			bp: &Blueprint{ID: "r", Nodes: []Node{
				{ID: "check", Uses: "validate-order"},
				{ID: "big", Uses: "manual-review"},
				{ID: "small", Uses: "noop"},
				{ID: "vip", Uses: "noop"},
			}, Edges: []Edge{
				{Source: "check", Target: "big", Action: "big"},
				{Source: "check", Target: "small", Condition: "result.output.total <= 100"},
				{Source: "check", Target: "vip", Action: "big", Condition: `input.tier == "gold"`, Transform: "input"},
			}},
			want: `flowchart TD
    n0["check<br/>validate-order"]
    n1["big<br/>manual-review"]
    n2["small<br/>noop"]
    n3["vip<br/>noop"]
    n0 -->|"action: big"| n1
    n0 -->|"if result.output.total #60;= 100"| n2
    n0 -->|"action: big; if input.tier == #34;gold#34;"| n3
`,
		},
		{
			name: "a batch's workers are one box; a subflow a subroutine",
			bp: &Blueprint{ID: "b", Nodes: []Node{
				{ID: "s", Uses: NodeBatchScatter, Params: map[string]any{"workerUsesKey": "double", "gatherNodeId": "g"}},
				{ID: "g", Uses: NodeBatchGather},
				{ID: "sub", Uses: NodeSubflow, Params: map[string]any{"blueprintId": "child"}},
			}, Edges: []Edge{{Source: "s", Target: "g"}, {Source: "g", Target: "sub"}}},
			want: `flowchart TD
    n0["s<br/>batch-scatter"]
    n1["g<br/>batch-gather"]
    n2[["sub<br/>subflow"]]
    n3(["workers<br/>double ×item"])
    n0 --> n1
    n1 --> n2
    n0 -.->|"each item"| n3
    n3 -.-> n1
`,
		},
		{
			name: "any join is a hexagon, all join a rectangle",
			bp: &Blueprint{ID: "j", Nodes: []Node{
				{ID: "a", Uses: "noop"},
				{ID: "b", Uses: "noop"},
				{ID: "first", Uses: "noop", Config: &NodeConfig{JoinStrategy: JoinAny}},
				{ID: "every", Uses: "noop", Config: &NodeConfig{JoinStrategy: JoinAll}},
			}, Edges: []Edge{
				{Source: "a", Target: "first"},
				{Source: "b", Target: "first"},
				{Source: "a", Target: "every"},
				{Source: "b", Target: "every"},
			}},
			want: `flowchart TD
    n0["a<br/>noop"]
    n1["b<br/>noop"]
    n2{{"first<br/>noop"}}
    n3["every<br/>noop"]
    n0 --> n2
    n1 --> n2
    n0 --> n3
    n1 --> n3
`,
		},
		{
			name: "fallback is dotted",
			bp: &Blueprint{ID: "f", Nodes: []Node{
				{ID: "charge", Uses: "fail", Config: &NodeConfig{MaxRetries: intp(2), Fallback: "refund"}},
				{ID: "refund", Uses: "noop"},
				{ID: "done", Uses: "noop"},
			}, Edges: []Edge{{Source: "charge", Target: "done"}}},
			want: `flowchart TD
    n0["charge<br/>fail"]
    n1["refund<br/>noop"]
    n2["done<br/>noop"]
    n0 --> n2
    n0 -.->|fallback| n1
`,
		},
		{
			name: "special characters are entity codes",
			bp: &Blueprint{ID: "x", Nodes: []Node{
				{ID: `say "hi" <b>`, Uses: "a|b"},
				{ID: "#1 & `2`", Uses: "multi\nline\ttabs"},
			}, Edges: []Edge{
				{Source: `say "hi" <b>`, Target: "#1 & `2`", Action: "a|b", Condition: "x > 1 &&\n  y < 2 || z == \"#\""},
			}},
			want: "flowchart TD\n" +
				`    n0["say #34;hi#34; #60;b#62;<br/>a#124;b"]` + "\n" +
				`    n1["#35;1 #38; #96;2#96;<br/>multi line tabs"]` + "\n" +
				`    n0 -->|"action: a#124;b; if x #62; 1 #38;#38; y #60; 2 #124;#124; z == #34;#35;#34;"| n1` + "\n",
		},
		{
			name: "dangling references get a node of their own",
			bp: &Blueprint{ID: "d", Nodes: []Node{
				{ID: "a", Uses: "noop", Config: &NodeConfig{Fallback: "ghost"}},
			}, Edges: []Edge{{Source: "a", Target: "missing"}, {Source: "missing", Target: "a"}}},
			want: `flowchart TD
    n0["a<br/>noop"]
    n1["missing<br/>(no such node)"]
    n0 --> n1
    n1 --> n0
    n2["ghost<br/>(no such node)"]
    n0 -.->|fallback| n2
`,
		},
		{
			name: "duplicate ids keep their own shapes",
			bp: &Blueprint{ID: "dup", Nodes: []Node{
				{ID: "a", Uses: "noop"},
				{ID: "a", Uses: "fail", Config: &NodeConfig{Fallback: "b"}},
				{ID: "b", Uses: "noop"},
			}, Edges: []Edge{{Source: "a", Target: "b"}}},
			want: `flowchart TD
    n0["a<br/>noop"]
    n1["a<br/>fail"]
    n2["b<br/>noop"]
    n0 --> n2
    n1 -.->|fallback| n2
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Mermaid(tt.bp)
			if got != tt.want {
				t.Errorf("Mermaid() =\n%s\nwant\n%s", got, tt.want)
			}
			if again := Mermaid(tt.bp); again != got {
				t.Errorf("Mermaid() is not deterministic:\n%s\nthen\n%s", got, again)
			}
		})
	}
}

// TestMermaidExamples renders every example blueprint: one node line per
// node, one line per edge and fallback, nothing unescaped.
func TestMermaidExamples(t *testing.T) {
	t.Parallel()
	paths, err := filepath.Glob(filepath.Join("..", "examples", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, path := range paths {
		if strings.HasSuffix(path, ".input.json") {
			continue
		}
		n++
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			bp, err := Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			out := Mermaid(bp)
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if lines[0] != "flowchart TD" {
				t.Fatalf("first line %q, want flowchart TD", lines[0])
			}
			fallbacks, batches := 0, 0
			for _, node := range bp.Nodes {
				if node.Config != nil && node.Config.Fallback != "" {
					fallbacks++
				}
				if node.Uses == NodeBatchScatter {
					batches++
				}
			}
			if want := 1 + len(bp.Nodes) + len(bp.Edges) + fallbacks + 3*batches; len(lines) != want {
				t.Errorf("%d lines, want %d (header, nodes, edges, fallbacks, a box and two lines per batch):\n%s", len(lines), want, out)
			}
			if strings.Contains(out, "no such node") {
				t.Errorf("an example references a missing node:\n%s", out)
			}
			for _, node := range bp.Nodes {
				if !strings.Contains(out, `"`+mermaidText(node.ID)+"<br/>"+node.Uses+`"`) {
					t.Errorf("no label for node %s (%s):\n%s", node.ID, node.Uses, out)
				}
			}
		})
	}
	if n == 0 {
		t.Fatal("no example blueprints found in ../examples")
	}
}
