package conformance

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The corpus is generated outside CI; these checks keep the committed
// files usable: well formed, complete, self-consistent and documented.
func TestCorpus(t *testing.T) {
	cases, err := Load(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 25 {
		t.Fatalf("%d cases, want at least 25", len(cases))
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			checkCase(t, c)
			if !strings.Contains(string(readme), "| `"+c.Name+"` |") {
				t.Errorf("README.md's case table has no row for %s", c.Name)
			}
		})
	}
}

func checkCase(t *testing.T, c Case) {
	t.Helper()
	for field, v := range map[string]string{"description": c.Description, "flowcraftVersion": c.FlowcraftVersion, "expected.status": c.Expected.Status} {
		if v == "" {
			t.Errorf("%s is missing", field)
		}
	}
	if c.FlowcraftVersion != "2.10.1" {
		t.Errorf("flowcraftVersion %q, want 2.10.1", c.FlowcraftVersion)
	}
	if c.Builder != "createFlow" && c.Builder != "json" {
		t.Errorf("builder %q, want createFlow or json", c.Builder)
	}
	if c.Evaluator != "UnsafeEvaluator" && c.Evaluator != "PropertyEvaluator" {
		t.Errorf("evaluator %q, want UnsafeEvaluator or PropertyEvaluator", c.Evaluator)
	}
	if c.Input == nil {
		t.Error("input is missing")
	}
	if c.Nodes == nil {
		t.Error("nodes is missing")
	}
	if c.Blueprints == nil {
		t.Error("blueprints is missing")
	}

	bp := checkBlueprint(t, "blueprint", c.Blueprint)
	uses := usesKeys(bp)
	for id, raw := range c.Blueprints {
		child := checkBlueprint(t, "blueprints."+id, raw)
		if child["id"] != id {
			t.Errorf("blueprints.%s has id %v", id, child["id"])
		}
		uses = append(uses, usesKeys(child)...)
	}
	for _, u := range uses {
		if _, ok := c.Nodes[u]; !ok && !slices.Contains(Builtins, u) && !reportsMissing(c.Expected, u) {
			t.Errorf("uses %q is neither a built-in nor in nodes (nor reported missing)", u)
		}
	}
	for key, name := range c.Nodes {
		if !slices.Contains(TestNodes, name) && !slices.Contains([]string{"flowcraft:SubflowNode", "flowcraft:WebhookNode", "not-a-function"}, name) {
			t.Errorf("nodes[%q] = %q, which is no test node", key, name)
		}
		if !slices.Contains(uses, key) {
			t.Errorf("nodes[%q] is not used by any blueprint", key)
		}
	}

	checkResult(t, "expected", c.Expected)
	if len(c.Expected.AfterResume) != len(c.Resume) {
		t.Errorf("%d resume steps but %d results after resume", len(c.Resume), len(c.Expected.AfterResume))
	}
	for i, r := range c.Expected.AfterResume {
		checkResult(t, "expected.afterResume", r)
		step := c.Resume[i]
		if step.Via != "resume" && step.Via != "scheduler" {
			t.Errorf("resume[%d].via %q, want resume or scheduler", i, step.Via)
		}
		if step.NodeID == "" {
			t.Errorf("resume[%d] names no node", i)
		}
	}
	if len(c.Resume) > 0 && c.Expected.Status != "awaiting" {
		t.Errorf("resume steps after a run that is %s, not awaiting", c.Expected.Status)
	}
}

// reportsMissing tells whether the run failed because nothing implements
// uses: a case may leave a key unregistered on purpose.
func reportsMissing(r Result, uses string) bool {
	for _, e := range r.Errors {
		if e.Message == "Implementation for '"+uses+"' not found." {
			return true
		}
	}
	return false
}

// checkBlueprint decodes a blueprint into a map and checks the fields
// every blueprint has.
func checkBlueprint(t *testing.T, where string, raw json.RawMessage) map[string]any {
	t.Helper()
	var bp map[string]any
	if err := json.Unmarshal(raw, &bp); err != nil {
		t.Errorf("%s: %v", where, err)
		return nil
	}
	if id, _ := bp["id"].(string); id == "" {
		t.Errorf("%s has no id", where)
	}
	nodes, ok := bp["nodes"].([]any)
	if !ok || len(nodes) == 0 {
		t.Errorf("%s has no nodes", where)
	}
	if _, ok := bp["edges"].([]any); !ok {
		t.Errorf("%s has no edges array", where)
	}
	ids := map[string]bool{}
	for i, n := range nodes {
		node, _ := n.(map[string]any)
		id, _ := node["id"].(string)
		if id == "" || node["uses"] == nil {
			t.Errorf("%s.nodes[%d] lacks id or uses", where, i)
		}
		if ids[id] {
			t.Errorf("%s: node id %q used twice", where, id)
		}
		ids[id] = true
	}
	return bp
}

// usesKeys are the implementation keys a blueprint refers to: its nodes'
// uses and its batch scatters' workerUsesKey.
func usesKeys(bp map[string]any) []string {
	var keys []string
	nodes, _ := bp["nodes"].([]any)
	for _, n := range nodes {
		node, _ := n.(map[string]any)
		if u, ok := node["uses"].(string); ok {
			keys = append(keys, u)
		}
		if params, ok := node["params"].(map[string]any); ok {
			if w, ok := params["workerUsesKey"].(string); ok {
				keys = append(keys, w)
			}
		}
	}
	return keys
}

func checkResult(t *testing.T, where string, r Result) {
	t.Helper()
	switch r.Status {
	case "completed", "awaiting", "stalled":
		if r.Context == nil {
			t.Errorf("%s: %s without a context", where, r.Status)
		}
	case "failed":
		if r.Context == nil || len(r.Errors) == 0 {
			t.Errorf("%s: failed without a context or errors", where)
		}
	case "threw":
		if r.Thrown == nil || r.Thrown.Message == "" {
			t.Errorf("%s: threw without the error", where)
		}
	case "timeout":
	default:
		t.Errorf("%s: status %q", where, r.Status)
	}
	if r.Status == "awaiting" {
		if ids, _ := r.Context["_awaitingNodeIds"].([]any); len(ids) == 0 {
			t.Errorf("%s: awaiting without _awaitingNodeIds", where)
		}
	}
	for _, e := range r.Errors {
		if e.NodeID == "" || e.Message == "" {
			t.Errorf("%s: error without nodeId or message: %+v", where, e)
		}
	}
	for _, p := range r.UndefinedPaths {
		if len(p) == 0 {
			t.Errorf("%s: empty undefined path", where)
		}
	}
}

// The embedded copy is the directory's.
func TestEmbedded(t *testing.T) {
	fromDir, err := Load(".")
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	if len(embedded) != len(fromDir) {
		t.Fatalf("embedded %d cases, directory %d", len(embedded), len(fromDir))
	}
	for i := range fromDir {
		if embedded[i].Name != fromDir[i].Name {
			t.Errorf("case %d: embedded %s, directory %s", i, embedded[i].Name, fromDir[i].Name)
		}
	}
}

// Load refuses what would make a case ambiguous.
func TestLoadRefuses(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"invalid JSON":    {"a.json": `{"name":"a",`},
		"unknown field":   {"a.json": `{"name":"a","surprise":1}`},
		"name ≠ file":     {"a.json": `{"name":"b"}`},
		"trailing data":   {"a.json": `{"name":"a"} {}`},
		"unknown in deep": {"a.json": `{"name":"a","expected":{"status":"completed","extra":true}}`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for f, body := range files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := Load(dir); err == nil {
				t.Fatal("Load accepted it")
			}
		})
	}
}
