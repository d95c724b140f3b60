package workflow

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Step is one occurrence of a node in a run, named by its step key:
//
//	"<node>"              a node outside loops; for a loop-controller, its
//	                      loop's exit step (recorded, never run)
//	"<node>#<iteration>"  a node in a loop's scope at an iteration
//	"<dynamic id>"        a dynamic node (a batch worker)
//
// A runtime stores, leases and publishes steps by key; a job without one
// means the node id.
type Step struct {
	Key       string
	Node      *CompiledNode // what runs
	Iteration int           // in a loop's scope: the iteration, from 0 (a controller's entry) or 1 (its body)
	InLoop    bool          // the step is in a loop's scope
	Dynamic   *DynamicNode  // set for a dynamic node
}

// Step names the step of a blueprint node by key ("charge", "increment#3").
// ok is false for a key no blueprint node has, such as a dynamic node's
// (see DynamicStep).
func (w *Workflow) Step(key string) (Step, bool) {
	if n := w.nodes[key]; n != nil {
		if w.loopOf[key] != nil && n.Uses != NodeLoopController {
			return Step{}, false // a loop's body node exists only at iterations
		}
		return Step{Key: key, Node: n}, true
	}
	if node, it, ok := splitIteration(key); ok && w.loopOf[node] != nil {
		return Step{Key: key, Node: w.nodes[node], Iteration: it, InLoop: true}, true
	}
	return Step{}, false
}

// StepNode is the node a step key runs: a blueprint node's id, or for a
// dynamic node (a key no blueprint step has) the key itself. A job names
// both (wire's nodeId and stepKey).
func (w *Workflow) StepNode(key string) string {
	if s, ok := w.Step(key); ok {
		return s.Node.ID
	}
	return key
}

// DynamicStep is the step of a dynamic node that a committed result
// created (Routing.Dynamic).
func (w *Workflow) DynamicStep(d DynamicNode) (Step, error) {
	n, err := w.compileDynamic(d)
	if err != nil {
		return Step{}, err
	}
	dc := d
	return Step{Key: d.ID, Node: n, Dynamic: &dc}, nil
}

// stepIn is the key of node's step in the iteration of s (node outside
// loops: its id).
func (w *Workflow) stepIn(node string, s Step) string {
	if s.InLoop && w.loopOf[node] != nil {
		return w.StepKey(node, s.Iteration)
	}
	return node
}

// FallbackStep returns the key of the step that runs in place of the step
// key when its attempts are exhausted: its node's fallback, in the same
// iteration.
func (w *Workflow) FallbackStep(key string) (string, bool) {
	s, ok := w.Step(key)
	if !ok || s.Node.Fallback == "" {
		return "", false
	}
	return w.stepIn(s.Node.Fallback, s), true
}

// backedStep returns the key of the step that fallback step key stands
// in for.
func (w *Workflow) backedStep(key string) (string, bool) {
	s, ok := w.Step(key)
	if !ok {
		return "", false
	}
	backed, ok := w.backedBy[s.Node.ID]
	if !ok {
		return "", false
	}
	return w.stepIn(backed, s), true
}

// DynamicNode is a node a step's result creates at run time
// (NodeResult.DynamicNodes), such as a batch worker. It is data: a runtime
// stores the dynamic nodes with the result of the step that created them
// (Routing.Dynamic), in the same commit, and runs each as a step keyed by
// its ID. Route checks them and fills in Source and Gather.
type DynamicNode struct {
	// ID is the dynamic node's step key: unique in the run, not a blueprint
	// node id, without "#". Derive it from the run and the creating step
	// (see BatchID), so that a redelivered step creates the same nodes.
	ID   string `json:"id"`
	Uses string `json:"uses"`
	// Inputs are resolved as a blueprint node's are. Without, the node
	// gets its creator's output.
	Inputs *Inputs        `json:"inputs,omitempty"`
	Params map[string]any `json:"params,omitempty"`
	Config *DynamicConfig `json:"config,omitempty"`
	// Wave orders the creator's dynamic nodes: those of wave w+1 start
	// when every one of wave w has finished (batch-scatter's chunkSize).
	// The waves used must be 0, 1, … without gaps.
	Wave int `json:"wave,omitempty"`
	// Source is the key of the step that created the node, Gather the
	// node its outputs go to (the result's Gather); Route sets both.
	Source string `json:"source,omitempty"`
	Gather string `json:"gather,omitempty"`
}

// DynamicConfig is the part of NodeConfig a dynamic node may set.
type DynamicConfig struct {
	MaxRetries *int   `json:"maxRetries,omitempty"`
	RetryDelay *int64 `json:"retryDelay,omitempty"`
	Timeout    *int64 `json:"timeout,omitempty"`
}

// DynamicStates is implemented by the States of a runtime that runs
// dynamic nodes: it finds the stored definition of a dynamic node by key.
type DynamicStates interface {
	States
	Dynamic(key string) (DynamicNode, bool)
}

// DynamicCounts may be implemented by a runtime's DynamicStates that
// counts, for each step whose result created dynamic nodes, how many of
// each wave have resolved. Advance then asks the count instead of every
// sibling's status, so that each worker of a batch of N costs its commit
// a constant number of questions, not N.
type DynamicCounts interface {
	// ResolvedInWave is the number of the dynamic nodes of wave that step
	// source created that have resolved.
	ResolvedInWave(source string, wave int) int
}

// compileDynamic makes d runnable: its implementation from the
// workflow's registry and its config's defaults.
func (w *Workflow) compileDynamic(d DynamicNode) (*CompiledNode, error) {
	n := &CompiledNode{Node: Node{ID: d.ID, Uses: d.Uses, Params: d.Params, Inputs: d.Inputs}, MaxAttempts: 1, JoinStrategy: JoinAll}
	if c := d.Config; c != nil {
		if c.MaxRetries != nil && *c.MaxRetries > 0 {
			n.MaxAttempts = *c.MaxRetries
		}
		if c.RetryDelay != nil && *c.RetryDelay > 0 && *c.RetryDelay <= maxDurationMs {
			n.RetryDelay = time.Duration(*c.RetryDelay) * time.Millisecond
		}
		if c.Timeout != nil && *c.Timeout > 0 && *c.Timeout <= maxDurationMs {
			n.Timeout = time.Duration(*c.Timeout) * time.Millisecond
		}
	}
	if w.reg != nil {
		fn, ok := w.reg.Lookup(d.Uses)
		if !ok {
			return nil, fmt.Errorf("dynamic node %q: unknown node type %q", d.ID, d.Uses)
		}
		n.Func = fn
	}
	n.OutputRefs = w.inputRefs(n.Inputs)
	return n, nil
}

// acceptDynamic checks the dynamic nodes of the result of step s and
// returns them with Source and Gather set.
func (w *Workflow) acceptDynamic(s Step, res NodeResult) ([]DynamicNode, string, error) {
	if len(res.DynamicNodes) == 0 && res.Gather == "" {
		return nil, "", nil
	}
	if s.Dynamic != nil {
		return nil, "", errors.New("a dynamic node cannot create dynamic nodes")
	}
	if g := res.Gather; g != "" {
		found := false
		for _, e := range w.out[s.Node.ID] {
			found = found || e.Target == g
		}
		if !found {
			return nil, "", fmt.Errorf("dynamic nodes gather into %q, which is not a successor of %q", g, s.Node.ID)
		}
	}
	out := make([]DynamicNode, len(res.DynamicNodes))
	seen := map[string]bool{}
	waves := map[int]bool{}
	maxWave := 0
	for i, d := range res.DynamicNodes {
		switch {
		case d.ID == "" || d.Uses == "":
			return nil, "", fmt.Errorf("dynamic node %d: id and uses are required", i)
		case strings.Contains(d.ID, iterationSep):
			return nil, "", fmt.Errorf("dynamic node %q: an id must not contain %q", d.ID, iterationSep)
		case w.nodes[d.ID] != nil:
			return nil, "", fmt.Errorf("dynamic node %q: a blueprint node has that id", d.ID)
		case seen[d.ID]:
			return nil, "", fmt.Errorf("dynamic node %q: created twice", d.ID)
		case d.Wave < 0:
			return nil, "", fmt.Errorf("dynamic node %q: wave %d is negative", d.ID, d.Wave)
		}
		if w.reg != nil {
			if _, ok := w.reg.Lookup(d.Uses); !ok {
				return nil, "", fmt.Errorf("dynamic node %q: unknown node type %q", d.ID, d.Uses)
			}
		}
		seen[d.ID] = true
		waves[d.Wave] = true
		maxWave = max(maxWave, d.Wave)
		d.Params, _ = normalize(d.Params).(map[string]any)
		d.Source, d.Gather = s.Key, res.Gather
		out[i] = d
	}
	for wv := 0; wv < maxWave; wv++ {
		if !waves[wv] {
			return nil, "", fmt.Errorf("dynamic nodes use wave %d but not wave %d", maxWave, wv)
		}
	}
	return out, res.Gather, nil
}
