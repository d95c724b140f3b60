package workflow

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"
)

// ChildRun is a run a node asks its runtime to start (see StartChild):
// the blueprint to run, found by id among the blueprints the runtime was
// given, and its initial context.
type ChildRun struct {
	BlueprintID string         `json:"blueprintId"`
	Context     map[string]any `json:"context"`
	// Input, when not nil, is what the child's start nodes get instead of
	// its initial context.
	Input any `json:"input,omitempty"`
}

// childError is what StartChild returns; CompiledNode.Outcome recognises
// it.
type childError struct{ Run ChildRun }

func (e *childError) Error() string {
	return "waiting for a child run of blueprint " + e.Run.BlueprintID
}

// StartChild returns the error a node returns to have its runtime run c
// as a child run. The step waits, holding no worker, until the child has
// finished; then the node is called again as the same attempt, with
// NodeInput.Child set to the child's result. The subflow node uses it.
func StartChild(c ChildRun) error { return &childError{Run: c} }

// ChildRunID is the id of the child run that attempt of the step stepKey
// of run parentRunID starts: derived from all three, so that a redelivered
// step finds its child instead of starting another, and a retry starts a
// fresh one.
func ChildRunID(parentRunID, stepKey string, attempt int) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, fmt.Appendf(nil, "stepflow:child:%s\x00%s\x00%d", parentRunID, stepKey, attempt)).String()
}

func isSubflow(uses string) bool { return uses == NodeSubflow || uses == NodeSubflowClass }

// subflowNode runs params.blueprintId as a child run, with Flowcraft's
// rules. With params.inputs {childKey: parentKey} the child's context is
// those keys (the parent's context key, else the output of the node of
// that id); without, the child's start nodes get this node's input. With
// params.outputs {parentKey: childKey} each parent key is set to the
// child's output of node childKey (else its context key childKey) and the
// node outputs the child's whole final context; without, it outputs the
// child run's output. A child that does not complete fails the node.
func subflowNode(_ context.Context, in NodeInput) (NodeResult, error) {
	id, _ := in.Params["blueprintId"].(string)
	if in.Child == nil {
		run := ChildRun{BlueprintID: id, Context: map[string]any{}}
		if inputs, ok := in.Params["inputs"].(map[string]any); ok {
			for childKey, v := range inputs {
				key, _ := v.(string)
				value, ok := in.Context.Get(key)
				if !ok || value == nil {
					value, _ = in.Context.Get(OutputKey(key))
				}
				run.Context[childKey] = value
			}
		} else {
			run.Input = in.Input
		}
		return NodeResult{}, StartChild(run)
	}
	child := in.Child
	if child.Status != RunCompleted {
		reason := "unknown error"
		if len(child.Errors) > 0 {
			e := child.Errors[0]
			reason = e.Message
			if e.NodeID != "" {
				reason = fmt.Sprintf("node '%s': %s", e.NodeID, e.Message)
			}
		}
		//lint:ignore ST1005 Flowcraft's message, word for word
		return NodeResult{}, fmt.Errorf("Sub-workflow '%s' did not complete successfully. Status: %s. Error: %s", id, child.Status, reason)
	}
	outputs, ok := in.Params["outputs"].(map[string]any)
	if !ok {
		return NodeResult{Output: child.Output}, nil
	}
	for parentKey, v := range outputs {
		key, _ := v.(string)
		value := child.Context[OutputKey(key)]
		if value == nil {
			value = child.Context[key]
		}
		in.Context.Set(parentKey, value)
	}
	return NodeResult{Output: child.Context}, nil
}

func checkSubflowParams(p map[string]any) error {
	var errs []error
	if s, _ := p["blueprintId"].(string); s == "" {
		errs = append(errs, errors.New("blueprintId: required (the id of the blueprint to run as the child)"))
	}
	for _, k := range []string{"inputs", "outputs"} {
		v, present := p[k]
		if !present || v == nil {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: must be an object of key → key", k))
			continue
		}
		for _, field := range sortedAnyKeys(m) {
			if _, ok := m[field].(string); !ok {
				errs = append(errs, fmt.Errorf("%s.%s: must be a string (a context key or node id)", k, field))
			}
		}
	}
	return errors.Join(errs...)
}

// ValidateSubflows checks bp's subflow nodes against the blueprints a
// runtime will find children among: every params.blueprintId names one
// of them, and no blueprint runs itself through its subflows.
func ValidateSubflows(bp *Blueprint, blueprints map[string]*Blueprint) error {
	var probs []Problem
	for i, n := range bp.Nodes {
		if !isSubflow(n.Uses) {
			continue
		}
		id, _ := n.Params["blueprintId"].(string)
		if _, ok := blueprints[id]; id != "" && !ok && id != bp.ID {
			probs = append(probs, Problem{Path: fmt.Sprintf("nodes[%d].params.blueprintId", i), Msg: fmt.Sprintf("no blueprint %q among those given (%s)", id, knownIDs(blueprints))})
		}
	}
	if c := subflowCycle(bp, blueprints); c != nil {
		probs = append(probs, Problem{Path: "nodes", Msg: "subflow cycle: " + strings.Join(c, " → ")})
	}
	if len(probs) > 0 {
		return &ValidationError{BlueprintID: bp.ID, Problems: probs}
	}
	return nil
}

func knownIDs(m map[string]*Blueprint) string {
	if len(m) == 0 {
		return "none"
	}
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return strings.Join(ids, ", ")
}

// subflowCycle finds a chain of subflows from bp back to a blueprint on
// the chain.
func subflowCycle(bp *Blueprint, blueprints map[string]*Blueprint) []string {
	var path []string
	onPath := map[string]bool{}
	done := map[string]bool{}
	var visit func(b *Blueprint) []string
	visit = func(b *Blueprint) []string {
		path = append(path, b.ID)
		onPath[b.ID] = true
		for _, n := range b.Nodes {
			if !isSubflow(n.Uses) {
				continue
			}
			id, _ := n.Params["blueprintId"].(string)
			if onPath[id] {
				for i, p := range path {
					if p == id {
						return append(append([]string{}, path[i:]...), id)
					}
				}
			}
			child := blueprints[id]
			if id == bp.ID {
				child = bp
			}
			if child != nil && !done[id] {
				if c := visit(child); c != nil {
					return c
				}
			}
		}
		path = path[:len(path)-1]
		onPath[b.ID] = false
		done[b.ID] = true
		return nil
	}
	return visit(bp)
}
