// Package conformancetest runs the Flowcraft conformance corpus
// (package conformance) against a runner of stepflow's: the Go mirrors of
// the cases' test nodes (Nodes, Registry), the cases' blueprints decoded
// (Blueprints), the differences stepflow chooses on purpose
// (Differences) and the comparison of a run's outcome with Flowcraft's
// (Check). The local runner's test (workflow/conformance_test.go) and the
// distributed stack's (e2e/conformance_test.go) share it: one table of
// cases, two runners.
//
// It is imported by tests only. Like workflow it imports no I/O package,
// so workflow's external tests can use it.
package conformancetest

import (
	"fmt"
	"sort"

	"github.com/stepflow/stepflow/conformance"
	"github.com/stepflow/stepflow/workflow"
)

// Registry registers the Go mirror of each test node the cases name under
// the uses key they name it by, in a registry with stepflow's built-ins.
// Several cases may share one registry: a uses key two cases give to
// different test nodes is an error, as is a test node without a mirror.
func Registry(cases ...conformance.Case) (*workflow.Registry, error) {
	reg := workflow.NewRegistry()
	by := map[string]string{} // uses → "<test node> (<case>)"
	for _, c := range cases {
		for _, uses := range sortedKeys(c.Nodes) {
			name := c.Nodes[uses]
			switch name {
			case "flowcraft:SubflowNode", "flowcraft:WebhookNode":
				continue // built-ins of stepflow's too
			}
			fn, ok := Nodes[name]
			if !ok {
				return nil, fmt.Errorf("case %s: no Go mirror of test node %q (uses %s)", c.Name, name, uses)
			}
			if prev, dup := by[uses]; dup {
				if prev != name {
					return nil, fmt.Errorf("case %s: uses %s is test node %q, another case's is %q", c.Name, uses, name, prev)
				}
				continue
			}
			by[uses] = name
			reg.Register(uses, fn)
		}
	}
	return reg, nil
}

// Blueprint decodes a case's blueprint.
func Blueprint(c conformance.Case) (*workflow.Blueprint, error) {
	bp, err := workflow.Decode(c.Blueprint)
	if err != nil {
		return nil, fmt.Errorf("case %s: decode its blueprint: %w", c.Name, err)
	}
	return bp, nil
}

// Children decodes the child blueprints of the cases, by id. Two cases may
// share a child only if it is the same blueprint.
func Children(cases ...conformance.Case) (map[string]*workflow.Blueprint, error) {
	out := map[string]*workflow.Blueprint{}
	digests := map[string]string{}
	for _, c := range cases {
		for _, id := range sortedKeys(c.Blueprints) {
			bp, err := workflow.Decode(c.Blueprints[id])
			if err != nil {
				return nil, fmt.Errorf("case %s: decode child blueprint %s: %w", c.Name, id, err)
			}
			d := bp.Digest()
			if prev, dup := digests[id]; dup && prev != d {
				return nil, fmt.Errorf("case %s: child blueprint %s differs from another case's of that id", c.Name, id)
			}
			digests[id] = d
			out[id] = bp
		}
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
