package workflow

import (
	"fmt"
	"strings"
)

// StepState is the state of one node of one run, as stored.
type StepState string

const (
	// In flight: the node has to run (again).
	StepReady    StepState = "ready"
	StepRetrying StepState = "retrying" // an attempt failed; the next is due at a wake time
	StepSleeping StepState = "sleeping" // the node suspended itself until a wake time
	// Waiting for its fallback node to produce the result in its place.
	StepAwaitingFallback StepState = "awaiting_fallback"
	// Finished.
	StepSucceeded StepState = "succeeded"
	StepRecovered StepState = "recovered" // failed, and its fallback's result stands in
	StepSkipped   StepState = "skipped"   // on a dead path: every incoming edge untaken
	StepFailed    StepState = "failed"    // attempts exhausted without a fallback, or its routing failed
)

// Resolved reports whether the node's outgoing edges are decided.
func (s StepState) Resolved() bool {
	return s == StepSucceeded || s == StepRecovered || s == StepSkipped
}

// Pending reports whether the node still has to run.
func (s StepState) Pending() bool {
	return s == StepReady || s == StepRetrying || s == StepSleeping
}

// Terminal reports whether the node will not change any more.
func (s StepState) Terminal() bool { return s.Resolved() || s == StepFailed }

// StepStatus is the routing-relevant part of a stored step.
type StepStatus struct {
	State StepState
	// Taken lists the targets of the node's taken outgoing edges; stored
	// with the result, never re-evaluated.
	Taken []string
}

// TookEdgeTo reports whether target is among the taken edges.
func (s StepStatus) TookEdgeTo(target string) bool {
	for _, t := range s.Taken {
		if t == target {
			return true
		}
	}
	return false
}

// States gives the semantics read access to a run's steps.
type States interface {
	// Status returns the node's step; ok is false when it has none yet.
	Status(node string) (st StepStatus, ok bool)
	// Delivery returns the value the taken edge source → target carries.
	Delivery(source, target string) any
}

// Routing is the stored decision of which outgoing edges a result took and
// what each carries.
type Routing struct {
	Taken      []string       // targets, in edge order
	Deliveries map[string]any // target → value (transform applied)
}

// Route applies Flowcraft's rule to a node's result: the edges whose action
// equals the result's action and whose condition holds; if no edge carries
// that action, the action-less edges whose condition holds. Each taken edge
// carries the source's output, or its transform of it.
//
// env supplies context, params and outputs; Route fills in result, input
// and the node's own entry in outputs.
func (w *Workflow) Route(nodeID string, res NodeResult, env Env) (Routing, error) {
	edges := w.out[nodeID]
	r := Routing{Deliveries: map[string]any{}}
	if len(edges) == 0 {
		return r, nil
	}
	// Expressions see the output as it will be stored (JSON), whatever Go
	// type the node returned.
	res.Output = normalize(res.Output)
	env.Result = &res
	env.Input = res.Output
	// The node's own output is stored with its routing; its expressions
	// read it as outputs.<id> (and context["_outputs.<id>"]) too.
	outputs := make(map[string]any, len(env.Outputs)+1)
	for k, v := range env.Outputs {
		outputs[k] = v
	}
	outputs[nodeID] = res.Output
	env.Outputs = outputs
	if n := w.nodes[nodeID]; n != nil && env.Params == nil {
		env.Params = n.Params
	}
	matching := edges[:0:0]
	if res.Action != "" {
		for _, e := range edges {
			if e.Action == res.Action {
				matching = append(matching, e)
			}
		}
	}
	if len(matching) == 0 {
		for _, e := range edges {
			if e.Action == "" {
				matching = append(matching, e)
			}
		}
	}
	for _, e := range matching {
		if e.Condition != nil {
			ok, err := e.Condition.EvalBool(env)
			if err != nil {
				return Routing{}, fmt.Errorf("edge %s → %s: condition %q: %w", e.Source, e.Target, e.Condition.Source, err)
			}
			if !ok {
				continue
			}
		}
		value := res.Output
		if e.Transform != nil {
			v, err := e.Transform.Eval(env)
			if err != nil {
				return Routing{}, fmt.Errorf("edge %s → %s: transform %q: %w", e.Source, e.Target, e.Transform.Source, err)
			}
			value = v
		}
		r.Taken = append(r.Taken, e.Target)
		r.Deliveries[e.Target] = normalize(value)
	}
	return r, nil
}

// ReadyNode is a node made ready, with the input its incoming edges give it.
type ReadyNode struct {
	ID    string
	Input any
}

// Transition is what follows from some nodes becoming resolved.
type Transition struct {
	Ready   []ReadyNode // nodes to start, each exactly once
	Skipped []string    // nodes on dead paths, in the order they were decided
}

// Advance decides, after the nodes in resolved had their routing stored
// (states must already show them resolved), which downstream nodes become
// ready and which are skipped. Skips propagate: a node whose incoming
// edges are all untaken is skipped, which may resolve its successors.
//
// A join with strategy "all" is ready when every incoming edge is resolved
// and at least one is taken; "any" is ready at its first taken arrival. A
// node that already has a step is never made ready again, which is what
// makes each node start exactly once.
//
// A fallback node whose node resolved without it (succeeded or skipped) will
// never run: it is skipped too, so that a join behind the fallback's own
// outgoing edges still fires. Runtimes store every node in Skipped.
func (w *Workflow) Advance(resolved []string, states States) Transition {
	var tr Transition
	decided := map[string]bool{}
	skipped := map[string]bool{}
	status := func(id string) (StepStatus, bool) {
		if skipped[id] {
			return StepStatus{State: StepSkipped}, true
		}
		return states.Status(id)
	}
	queue := []string{}
	var skip func(id string)
	// skipFallbackOf skips the fallback of id, which resolved without it.
	skipFallbackOf := func(id string) {
		n := w.nodes[id]
		if n == nil || n.Fallback == "" || decided[n.Fallback] {
			return
		}
		if _, exists := states.Status(n.Fallback); exists {
			return
		}
		skip(n.Fallback)
	}
	skip = func(id string) {
		decided[id] = true
		skipped[id] = true
		tr.Skipped = append(tr.Skipped, id)
		queue = append(queue, w.Successors(id)...)
		skipFallbackOf(id)
	}
	for _, id := range resolved {
		if st, ok := states.Status(id); ok && (st.State == StepSucceeded || st.State == StepSkipped) {
			skipFallbackOf(id)
		}
		queue = append(queue, w.Successors(id)...)
	}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		if decided[t] {
			continue
		}
		if _, exists := states.Status(t); exists {
			continue
		}
		in := w.in[t]
		var takenFrom []string
		unresolved := 0
		for _, e := range in {
			st, ok := status(e.Source)
			if !ok || !st.State.Resolved() {
				unresolved++
				continue
			}
			if st.TookEdgeTo(t) {
				takenFrom = append(takenFrom, e.Source)
			}
		}
		n := w.nodes[t]
		switch {
		case n.JoinStrategy == JoinAny && len(takenFrom) > 0,
			unresolved == 0 && len(takenFrom) > 0:
			decided[t] = true
			tr.Ready = append(tr.Ready, ReadyNode{ID: t, Input: w.edgeInput(t, takenFrom, states)})
		case unresolved == 0:
			skip(t)
		}
	}
	return tr
}

// edgeInput is what a node's incoming edges give it: the single delivery
// for a node with one incoming edge or an "any" join (its first arrival),
// or a map of source id → delivery over the taken edges of an "all" join.
func (w *Workflow) edgeInput(target string, takenFrom []string, states States) any {
	if len(w.in[target]) == 1 || w.nodes[target].JoinStrategy == JoinAny {
		return states.Delivery(takenFrom[0], target)
	}
	m := make(map[string]any, len(takenFrom))
	for _, s := range takenFrom {
		m[s] = states.Delivery(s, target)
	}
	return m
}

// ResolveInput computes a node's input the Flowcraft way. A node with
// `inputs` reads them: a key starting with "_" is a context key; any other
// key is the output of the node with that id when it has one
// (_outputs.<key>), else the context key. A node without `inputs` gets
// edgeInput (what its incoming edges delivered; for a start node, the run's
// initial input).
//
// ctx holds the run's context keys; outputs holds the outputs of the nodes
// the node's OutputRefs name.
func (w *Workflow) ResolveInput(nodeID string, edgeInput any, ctx map[string]any, outputs map[string]any) any {
	n := w.nodes[nodeID]
	if n == nil || n.Inputs == nil {
		return edgeInput
	}
	lookup := func(key string) any {
		if strings.HasPrefix(key, outputsPrefix) {
			if v, ok := outputs[strings.TrimPrefix(key, outputsPrefix)]; ok {
				return v
			}
			return ctx[key]
		}
		if strings.HasPrefix(key, "_") {
			return ctx[key]
		}
		if v, ok := outputs[key]; ok {
			return v
		}
		return ctx[key]
	}
	if n.Inputs.Map == nil {
		return lookup(n.Inputs.Key)
	}
	m := make(map[string]any, len(n.Inputs.Map))
	for field, key := range n.Inputs.Map {
		m[field] = lookup(key)
	}
	return m
}
