package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// problem is an expected validation problem: its exact path and a part of
// its message.
type problem struct{ path, msg string }

func hasProblem(probs []Problem, want problem) bool {
	for _, p := range probs {
		if p.Path == want.path && strings.Contains(p.Msg, want.msg) {
			return true
		}
	}
	return false
}

func validationProblems(t *testing.T, doc string, reg *Registry) []Problem {
	t.Helper()
	_, err := Compile(mustDecode(t, doc), reg)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Compile error = %v, want a *ValidationError", err)
	}
	if err.Error() == "" || !strings.Contains(err.Error(), ve.Problems[0].String()) {
		t.Errorf("Error() = %q does not list %q", err.Error(), ve.Problems[0])
	}
	return ve.Problems
}

func TestValidationProblems(t *testing.T) {
	t.Parallel()
	// nodes builds a nodes array of noop nodes with the given ids.
	nodes := func(ids ...string) string {
		var parts []string
		for _, id := range ids {
			parts = append(parts, fmt.Sprintf(`{"id":%q,"uses":"noop"}`, id))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	doc := func(nodes, edges string) string {
		return fmt.Sprintf(`{"id":"v","nodes":%s,"edges":%s}`, nodes, edges)
	}
	tests := []struct {
		name string
		doc  string
		want []problem
	}{
		{"blueprint id required", `{"nodes":[{"id":"a","uses":"noop"}]}`,
			[]problem{{"id", "required"}}},
		{"at least one node", `{"id":"v","nodes":[]}`,
			[]problem{{"nodes", "at least one node"}}},
		{"node id required", doc(`[{"uses":"noop"}]`, `[]`),
			[]problem{{"nodes[0].id", "required"}}},
		{"uses required", doc(`[{"id":"a"}]`, `[]`),
			[]problem{{"nodes[0].uses", "required"}}},
		{"duplicate node ids", doc(nodes("a", "b", "a"), `[]`),
			[]problem{{"nodes[2].id", `duplicate node id "a"`}}},
		{"unknown uses", doc(`[{"id":"a","uses":"charge"}]`, `[]`),
			[]problem{{"nodes[0].uses", `unknown node type "charge" (registered: SubflowNode, WebhookNode, batch-gather, batch-scatter, loop-controller, noop, sleep, subflow, transform, wait, webhook)`}}},
		{"edge source names a missing node", doc(nodes("a"), `[{"source":"x","target":"a"}]`),
			[]problem{{"edges[0].source", `no node with id "x"`}}},
		{"edge target names a missing node", doc(nodes("a"), `[{"source":"a","target":"y"}]`),
			[]problem{{"edges[0].target", `no node with id "y"`}}},
		{"edge ends required", doc(nodes("a"), `[{}]`),
			[]problem{{"edges[0].source", "required"}, {"edges[0].target", "required"}}},
		{"two-node cycle", doc(nodes("s", "a", "b"), `[{"source":"s","target":"a"},{"source":"a","target":"b"},{"source":"b","target":"a"}]`),
			[]problem{{"edges", "cycle: a → b → a"}}},
		{"three-node cycle", doc(nodes("a", "b", "c"), `[{"source":"a","target":"b"},{"source":"b","target":"c"},{"source":"c","target":"a"}]`),
			[]problem{{"edges", "cycle: a → b → c → a"}}},
		{"self loop", doc(nodes("s", "a"), `[{"source":"s","target":"a"},{"source":"a","target":"a"}]`),
			[]problem{{"edges", "cycle: a → a"}}},
		{"condition with a syntax error", doc(nodes("a", "b"), `[{"source":"a","target":"b","condition":"result.output >"}]`),
			[]problem{{"edges[0].condition", "does not compile"}}},
		{"condition comparing literals of different types", doc(nodes("a", "b"), `[{"source":"a","target":"b","condition":"'a' > 1"}]`),
			[]problem{{"edges[0].condition", "does not compile"}}},
		{"transform that does not compile", doc(nodes("a", "b"), `[{"source":"a","target":"b","transform":"input.("}]`),
			[]problem{{"edges[0].transform", "does not compile"}}},
		{"bad joinStrategy", doc(`[{"id":"a","uses":"noop","config":{"joinStrategy":"first"}}]`, `[]`),
			[]problem{{"nodes[0].config.joinStrategy", `must be "all" or "any", got "first"`}}},
		{"negative maxRetries", doc(`[{"id":"a","uses":"noop","config":{"maxRetries":-1}}]`, `[]`),
			[]problem{{"nodes[0].config.maxRetries", "must not be negative, got -1"}}},
		{"negative retryDelay", doc(`[{"id":"a","uses":"noop","config":{"retryDelay":-5}}]`, `[]`),
			[]problem{{"nodes[0].config.retryDelay", "must not be negative, got -5"}}},
		{"negative timeout", doc(`[{"id":"a","uses":"noop","config":{"timeout":-10}}]`, `[]`),
			[]problem{{"nodes[0].config.timeout", "must not be negative, got -10"}}},
		{"timeout beyond time.Duration", doc(`[{"id":"a","uses":"noop","config":{"timeout":18446744073710}}]`, `[]`),
			[]problem{{"nodes[0].config.timeout", "must be at most 9223372036854 ms"}}},
		{"retryDelay beyond time.Duration", doc(`[{"id":"a","uses":"noop","config":{"retryDelay":9223372036855}}]`, `[]`),
			[]problem{{"nodes[0].config.retryDelay", "must be at most 9223372036854 ms"}}},
		{"duplicate edges", doc(nodes("a", "b"), `[{"source":"a","target":"b"},{"source":"a","target":"b","action":"x"}]`),
			[]problem{{"edges[1]", "duplicate edge a → b (also edges[0])"}}},
		{"transform node without expression", doc(`[{"id":"t","uses":"transform"}]`, `[]`),
			[]problem{{"nodes[0].params", "expression: required"}}},
		{"transform node expression does not compile", doc(`[{"id":"t","uses":"transform","params":{"expression":"input +"}}]`, `[]`),
			[]problem{{"nodes[0].params", "expression does not compile"}}},
		{"transform node action not a string", doc(`[{"id":"t","uses":"transform","params":{"expression":"1","action":3}}]`, `[]`),
			[]problem{{"nodes[0].params", "action: must be a string expression"}}},
		{"transform node action does not compile", doc(`[{"id":"t","uses":"transform","params":{"expression":"1","action":"nope("}}]`, `[]`),
			[]problem{{"nodes[0].params", "action does not compile"}}},
		{"sleep without duration", doc(`[{"id":"s","uses":"sleep"}]`, `[]`),
			[]problem{{"nodes[0].params", "duration: required"}}},
		{"sleep with a bad duration", doc(`[{"id":"s","uses":"sleep","params":{"duration":"soon"}}]`, `[]`),
			[]problem{{"nodes[0].params", `duration "soon"`}}},
		{"sleep negative", doc(`[{"id":"s","uses":"sleep","params":{"duration":"-1s"}}]`, `[]`),
			[]problem{{"nodes[0].params", "must be between 0 and a year"}}},
		{"sleep too long", doc(`[{"id":"s","uses":"sleep","params":{"duration":"366d"}}]`, `[]`),
			[]problem{{"nodes[0].params", "must be at most a year"}}},
		{"fallback names a missing node", doc(`[{"id":"a","uses":"noop","config":{"fallback":"ghost"}}]`, `[]`),
			[]problem{{"nodes[0].config.fallback", `no node with id "ghost"`}}},
		{"fallback is the node itself", doc(`[{"id":"a","uses":"noop","config":{"fallback":"a"}}]`, `[]`),
			[]problem{{"nodes[0].config.fallback", `node "a" cannot be its own fallback`}}},
		{"fallback backs two nodes", doc(`[{"id":"a","uses":"noop","config":{"fallback":"f"}},{"id":"b","uses":"noop","config":{"fallback":"f"}},{"id":"f","uses":"noop"}]`, `[]`),
			[]problem{{"nodes[1].config.fallback", `node "f" is already the fallback of "a"`}}},
		{"fallback is an edge target", doc(`[{"id":"a","uses":"noop","config":{"fallback":"f"}},{"id":"f","uses":"noop"}]`, `[{"source":"a","target":"f"}]`),
			[]problem{{"nodes[0].config.fallback", `fallback node "f" is the target of an edge`}}},
		{"fallback cycle", doc(`[{"id":"s","uses":"noop"},{"id":"a","uses":"noop","config":{"fallback":"b"}},{"id":"b","uses":"noop","config":{"fallback":"a"}}]`, `[]`),
			[]problem{{"nodes", "fallback cycle: a → b → a"}}},
		{"fallback whose edges lead back to its node", doc(`[{"id":"s","uses":"noop"},{"id":"a","uses":"noop"},{"id":"b","uses":"noop","config":{"fallback":"f"}},{"id":"f","uses":"noop"}]`,
			`[{"source":"s","target":"a"},{"source":"a","target":"b"},{"source":"f","target":"a"}]`),
			[]problem{{"nodes", "fallback cycle: a → b ⇢ f → a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			probs := validationProblems(t, tt.doc, NewRegistry())
			for _, want := range tt.want {
				if !hasProblem(probs, want) {
					t.Errorf("no problem %s: …%s…; got %v", want.path, want.msg, probs)
				}
			}
			if len(probs) != len(tt.want) {
				t.Errorf("got %d problems %v, want %d", len(probs), probs, len(tt.want))
			}
		})
	}
}

// TestValidationReportsEverything checks that one blueprint with many
// problems gets all of them in one error.
func TestValidationReportsEverything(t *testing.T) {
	t.Parallel()
	doc := `{"id":"many","nodes":[
		{"id":"a","uses":"noop","config":{"maxRetries":-2,"timeout":-1,"retryDelay":-3,"joinStrategy":"most","fallback":"nope"}},
		{"id":"a","uses":"noop"},
		{"id":"b","uses":"charge"},
		{"id":"c","uses":"noop"},
		{"id":"t","uses":"transform","params":{}},
		{"id":"z","uses":"sleep","params":{"duration":"forever"}},
		{"id":"f1","uses":"noop","config":{"fallback":"f2"}},
		{"id":"f2","uses":"noop","config":{"fallback":"f1"}}],
	"edges":[
		{"source":"a","target":"ghost"},
		{"source":"b","target":"c","condition":"1 +"},
		{"source":"b","target":"c"},
		{"source":"c","target":"b","transform":"(("}]}`
	want := []problem{
		{"nodes[0].config.maxRetries", "negative"},
		{"nodes[0].config.retryDelay", "negative"},
		{"nodes[0].config.timeout", "negative"},
		{"nodes[0].config.joinStrategy", `got "most"`},
		{"nodes[0].config.fallback", `no node with id "nope"`},
		{"nodes[1].id", "duplicate"},
		{"nodes[2].uses", `unknown node type "charge"`},
		{"nodes[4].params", "expression: required"},
		{"nodes[5].params", `duration "forever"`},
		{"edges[0].target", `no node with id "ghost"`},
		{"edges[1].condition", "does not compile"},
		{"edges[2]", "duplicate edge b → c (also edges[1])"},
		{"edges[3].transform", "does not compile"},
		{"edges", "cycle: b → c → b"},
		{"nodes", "fallback cycle: f1 → f2 → f1"},
	}
	probs := validationProblems(t, doc, NewRegistry())
	for _, w := range want {
		if !hasProblem(probs, w) {
			t.Errorf("missing problem %s: …%s…", w.path, w.msg)
		}
	}
	if len(probs) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(probs), len(want), probs)
	}
}

func TestValidationWithoutRegistry(t *testing.T) {
	t.Parallel()
	bp := mustDecode(t, `{"id":"v","nodes":[{"id":"a","uses":"anything"}]}`)
	w, err := Compile(bp, nil)
	if err != nil {
		t.Fatalf("Compile with a nil registry checks uses: %v", err)
	}
	if n, _ := w.Node("a"); n.Func != nil {
		t.Errorf("node compiled without a registry carries a Func")
	}
	if _, err := w.Run(context.Background(), nil, RunOptions{}); !errors.Is(err, errUnknownNode) {
		t.Errorf("Run of a workflow without Funcs: %v, want errUnknownNode", err)
	}
	if err := Validate(nil, nil); err == nil {
		t.Errorf("Validate(nil) = nil, want an error")
	}
	if err := Validate(bp, NewRegistry()); err == nil || !strings.Contains(err.Error(), `unknown node type "anything"`) {
		t.Errorf("Validate = %v, want unknown node type", err)
	}
}

func TestRegistryParamValidator(t *testing.T) {
	t.Parallel()
	reg := NewRegistry().RegisterValidated("charge", noop, func(p map[string]any) error {
		if _, ok := p["currency"].(string); !ok {
			return errors.New("currency: required")
		}
		return nil
	})
	probs := validationProblems(t, `{"id":"v","nodes":[{"id":"ok","uses":"charge","params":{"currency":"EUR"}},{"id":"bad","uses":"charge"}]}`, reg)
	if want := (problem{"nodes[1].params", "currency: required"}); !hasProblem(probs, want) || len(probs) != 1 {
		t.Errorf("problems %v, want only %v", probs, want)
	}
	if got, want := reg.Names(), []string{"SubflowNode", "WebhookNode", "batch-gather", "batch-scatter", "charge", "loop-controller", "noop", "sleep", "subflow", "transform", "wait", "webhook"}; !equal(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
}

func TestDecodeStrict(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		path string // wanted DecodeError.Path
		msg  string // part of the wanted message
	}{
		{"unknown top-level field", `{"id":"d","nodes":[],"edgez":[]}`, "edgez", "unknown field"},
		{"unknown node field", `{"id":"d","nodes":[{"id":"a","uses":"noop","input":"x"}]}`, "nodes[0].input", "unknown field"},
		{"unknown config field", `{"id":"d","nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop","config":{"maxRety":3}}]}`, "nodes[1].config.maxRety", "unknown field"},
		{"misspelled config", `{"id":"d","nodes":[{"id":"a","uses":"noop","_sourceLocation":{"line":1},"confg":{}}]}`, "nodes[0].confg", "unknown field"},
		{"source location not an object", `{"id":"d","nodes":[],"edges":[{"source":"a","target":"b","_sourceLocation":"a.ts:3"}]}`, "edges[0]._sourceLocation", "expected an object, got a string"},
		{"unknown edge field", `{"id":"d","nodes":[],"edges":[{"source":"a","target":"b","when":"x"}]}`, "edges[0].when", "unknown field"},
		{"field names are case sensitive", `{"ID":"d","nodes":[]}`, "ID", "unknown field"},
		{"id not a string", `{"id":7,"nodes":[]}`, "id", "expected a string, got a number"},
		{"metadata not an object", `{"id":"d","metadata":"v3","nodes":[]}`, "metadata", "expected an object, got a string"},
		{"nodes not an array", `{"id":"d","nodes":{}}`, "nodes", "expected an array, got an object"},
		{"edges not an array", `{"id":"d","nodes":[],"edges":"a->b"}`, "edges", "expected an array, got a string"},
		{"node not an object", `{"id":"d","nodes":["a"]}`, "nodes[0]", "expected an object, got a string"},
		{"null node", `{"id":"d","nodes":[null]}`, "nodes[0]", "expected an object, got null"},
		{"edge not an object", `{"id":"d","nodes":[],"edges":[[]]}`, "edges[0]", "expected an object, got an array"},
		{"uses not a string", `{"id":"d","nodes":[{"id":"a","uses":true}]}`, "nodes[0].uses", "expected a string, got a boolean"},
		{"params not an object", `{"id":"d","nodes":[{"id":"a","uses":"noop","params":[1]}]}`, "nodes[0].params", "expected an object, got an array"},
		{"config not an object", `{"id":"d","nodes":[{"id":"a","uses":"noop","config":3}]}`, "nodes[0].config", "expected an object, got a number"},
		{"maxRetries a string", `{"id":"d","nodes":[{"id":"a","uses":"noop","config":{"maxRetries":"3"}}]}`, "nodes[0].config.maxRetries", "expected an integer, got a string"},
		{"maxRetries a fraction", `{"id":"d","nodes":[{"id":"a","uses":"noop","config":{"maxRetries":1.5}}]}`, "nodes[0].config.maxRetries", "expected an integer, got 1.5"},
		{"timeout out of range", `{"id":"d","nodes":[{"id":"a","uses":"noop","config":{"timeout":1e30}}]}`, "nodes[0].config.timeout", "expected an integer, got 1e30"},
		{"fallback not a string", `{"id":"d","nodes":[{"id":"a","uses":"noop","config":{"fallback":["b"]}}]}`, "nodes[0].config.fallback", "expected a string, got an array"},
		{"inputs a number", `{"id":"d","nodes":[{"id":"a","uses":"noop","inputs":3}]}`, "nodes[0].inputs", "expected a string or an object of strings, got a number"},
		{"inputs map value not a string", `{"id":"d","nodes":[{"id":"a","uses":"noop","inputs":{"x":{"y":1}}}]}`, "nodes[0].inputs.x", "expected a string"},
		{"condition not a string", `{"id":"d","nodes":[],"edges":[{"source":"a","target":"b","condition":true}]}`, "edges[0].condition", "expected a string, got a boolean"},
		{"param number out of range", `{"id":"d","nodes":[{"id":"a","uses":"noop","params":{"deep":[1,1e400]}}]}`, "nodes[0].params.deep[1]", "number 1e400 is out of range"},
		{"metadata number out of range", `{"id":"d","metadata":{"v":-1e999},"nodes":[]}`, "metadata.v", "out of range"},
		{"top level an array", `[]`, "", "expected a JSON object, got an array"},
		{"top level null", `null`, "", "expected a JSON object, got null"},
		{"malformed JSON", `{"id":"d",`, "", "malformed JSON"},
		{"empty document", ``, "", "malformed JSON"},
		{"trailing value", `{"id":"d","nodes":[]} {"id":"e"}`, "", "data after the top-level value"},
		{"trailing garbage", `{"id":"d","nodes":[]}}`, "", "after top-level value"},
		{"too big", `{"id":"` + strings.Repeat("x", MaxBlueprintBytes) + `"}`, "", "more than the"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bp, err := Decode([]byte(tt.doc))
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode = %v, %v; want a *DecodeError", bp, err)
			}
			if de.Path != tt.path || !strings.Contains(de.Msg, tt.msg) {
				t.Errorf("DecodeError path %q msg %q; want path %q msg containing %q", de.Path, de.Msg, tt.path, tt.msg)
			}
			if tt.path != "" && !strings.Contains(err.Error(), tt.path+": ") {
				t.Errorf("Error() = %q does not name %s", err.Error(), tt.path)
			}
		})
	}
	// The message the brief quotes, verbatim.
	_, err := Decode([]byte(`{"id":"d","nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop","config":{"maxRety":3}}]}`))
	if err == nil || !strings.Contains(err.Error(), "nodes[1].config.maxRety: unknown field") {
		t.Errorf("Decode error = %v", err)
	}
}

func TestDecodeAccepts(t *testing.T) {
	t.Parallel()
	maxRetries, timeout := 3, int64(10000)
	tests := []struct {
		name string
		doc  string
		want *Blueprint
	}{
		{"the design's example", `{"id":"order","metadata":{"version":"3"},
			"nodes":[{"id":"charge","uses":"charge","params":{"currency":"EUR"},
			          "config":{"maxRetries":3,"timeout":10000,"fallback":"refund"}},
			         {"id":"ship","uses":"ship","inputs":"charge"},
			         {"id":"notify","uses":"notify","inputs":{"order":"charge","who":"_user"},"config":{"joinStrategy":"any"}}],
			"edges":[{"source":"charge","target":"ship","action":"paid"},
			         {"source":"charge","target":"notify","condition":"result.output.amount > 100","transform":"input.amount"}]}`,
			&Blueprint{ID: "order", Metadata: map[string]any{"version": "3"},
				Nodes: []Node{
					{ID: "charge", Uses: "charge", Params: map[string]any{"currency": "EUR"},
						Config: &NodeConfig{MaxRetries: &maxRetries, Timeout: &timeout, Fallback: "refund"}},
					{ID: "ship", Uses: "ship", Inputs: &Inputs{Key: "charge"}},
					{ID: "notify", Uses: "notify", Inputs: &Inputs{Map: map[string]string{"order": "charge", "who": "_user"}},
						Config: &NodeConfig{JoinStrategy: "any"}}},
				Edges: []Edge{
					{Source: "charge", Target: "ship", Action: "paid"},
					{Source: "charge", Target: "notify", Condition: "result.output.amount > 100", Transform: "input.amount"}}}},
		{"nulls are absent values", `{"id":"n","metadata":null,"nodes":[{"id":"a","uses":"noop","params":null,"inputs":null,"config":{"maxRetries":null,"fallback":null}}],"edges":null}`,
			&Blueprint{ID: "n", Nodes: []Node{{ID: "a", Uses: "noop", Config: &NodeConfig{}}}}},
		{"Flowcraft compiler's source locations and metadata", `{"id":"s","metadata":{"cycleEntryPoints":["a"],"anything":{"x":1}},
			"nodes":[{"id":"a","uses":"noop","_sourceLocation":{"file":"flows/greet.ts","line":4,"column":3}}],
			"edges":[{"source":"a","target":"a","_sourceLocation":{"file":"flows/greet.ts","line":6,"column":3}}]}`,
			&Blueprint{ID: "s", Metadata: map[string]any{"cycleEntryPoints": []any{"a"}, "anything": map[string]any{"x": 1.0}},
				Nodes: []Node{{ID: "a", Uses: "noop", SourceLocation: map[string]any{"file": "flows/greet.ts", "line": 4.0, "column": 3.0}}},
				Edges: []Edge{{Source: "a", Target: "a", SourceLocation: map[string]any{"file": "flows/greet.ts", "line": 6.0, "column": 3.0}}}}},
		{"params and metadata hold any JSON", `{"id":"p","metadata":{"tags":["x"],"v":3},"nodes":[{"id":"a","uses":"noop","params":{"n":1,"deep":{"list":[true,null,"s"]}}}]}`,
			&Blueprint{ID: "p", Metadata: map[string]any{"tags": []any{"x"}, "v": 3.0},
				Nodes: []Node{{ID: "a", Uses: "noop", Params: map[string]any{"n": 1.0, "deep": map[string]any{"list": []any{true, nil, "s"}}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := mustDecode(t, tt.doc)
			if !equal(got, tt.want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(tt.want)
				t.Errorf("Decode =\n%s\nwant\n%s", g, w)
			}
		})
	}
	if v := mustDecode(t, `{"id":"x","metadata":{"version":3},"nodes":[]}`).Version(); v != "3" {
		t.Errorf("Version() = %q, want 3", v)
	}
	if v := mustDecode(t, `{"id":"x","nodes":[]}`).Version(); v != "" {
		t.Errorf("Version() = %q, want empty", v)
	}
}

func TestDigest(t *testing.T) {
	t.Parallel()
	const base = `{"id":"d","metadata":{"version":"1","owner":"ops"},
		"nodes":[{"id":"a","uses":"noop","params":{"x":1,"y":{"p":true,"q":[1,2]}},"inputs":{"k":"a","j":"_c"},"config":{"maxRetries":2,"timeout":100}},
		         {"id":"b","uses":"noop"}],
		"edges":[{"source":"a","target":"b","condition":"true"}]}`
	digest := mustDecode(t, base).Digest()
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(digest) {
		t.Fatalf("Digest = %q, want sha256:<64 hex>", digest)
	}
	same := []struct{ name, doc string }{
		{"same document", base},
		{"reordered keys and whitespace", `{ "edges" : [ { "condition":"true", "target":"b", "source":"a" } ],
			"nodes":[{"config":{"timeout":100,"maxRetries":2},"inputs":{"j":"_c","k":"a"},"params":{"y":{"q":[1,2],"p":true},"x":1},"uses":"noop","id":"a"},
			         {"uses":"noop","id":"b"}],
			"metadata":{"owner":"ops","version":"1"}, "id":"d" }`},
		{"same number spelled differently", strings.Replace(base, `"x":1`, `"x":1.0`, 1)},
	}
	for _, tt := range same {
		if got := mustDecode(t, tt.doc).Digest(); got != digest {
			t.Errorf("%s: Digest %s, want %s", tt.name, got, digest)
		}
	}
	different := []struct{ name, old, new string }{
		{"a param value", `"x":1`, `"x":2`},
		{"a nested param", `"p":true`, `"p":false`},
		{"a config value", `"maxRetries":2`, `"maxRetries":3`},
		{"a condition", `"condition":"true"`, `"condition":"false"`},
		{"metadata", `"version":"1"`, `"version":"2"`},
		{"an inputs key", `"j":"_c"`, `"j":"_d"`},
		{"the node order", `{"id":"a","uses":"noop","params":{"x":1,"y":{"p":true,"q":[1,2]}},"inputs":{"k":"a","j":"_c"},"config":{"maxRetries":2,"timeout":100}},
		         {"id":"b","uses":"noop"}`, `{"id":"b","uses":"noop"},{"id":"a","uses":"noop","params":{"x":1,"y":{"p":true,"q":[1,2]}},"inputs":{"k":"a","j":"_c"},"config":{"maxRetries":2,"timeout":100}}`},
	}
	for _, tt := range different {
		doc := strings.Replace(base, tt.old, tt.new, 1)
		if doc == base {
			t.Fatalf("%s: replacement did not apply", tt.name)
		}
		if got := mustDecode(t, doc).Digest(); got == digest {
			t.Errorf("changing %s kept the digest", tt.name)
		}
	}
	w := mustCompile(t, nil, base)
	if w.Digest != digest {
		t.Errorf("Workflow.Digest = %s, want the blueprint's %s", w.Digest, digest)
	}
}
