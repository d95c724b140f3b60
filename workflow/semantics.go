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
	// Waiting for the child run the node started (a subflow); the node is
	// called again, as the same attempt, once the child has finished.
	StepAwaitingChild StepState = "awaiting_child"
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
	// Dynamic and Gather are the dynamic nodes the step's result created
	// and the node that gathers them (Routing.Dynamic, Routing.Gather),
	// stored with its result.
	Dynamic []DynamicNode
	Gather  string
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
//
// Steps are named by step key (see Step): for a node outside loops, its
// id. A runtime that runs dynamic nodes implements DynamicStates too.
type States interface {
	// Status returns the step's status; ok is false when it has none yet.
	Status(step string) (st StepStatus, ok bool)
	// Delivery returns the value the taken edge from step source to the
	// node target carries.
	Delivery(source, target string) any
}

// Routing is the stored decision of which outgoing edges a result took and
// what each carries, with the dynamic nodes the result created.
type Routing struct {
	Taken      []string       // target node ids, in edge order
	Deliveries map[string]any // target → value (transform applied)
	// Dynamic are the result's dynamic nodes, checked, with Source and
	// Gather set; Gather is the node that receives their outputs. A
	// runtime stores both with the step, in the same commit.
	Dynamic []DynamicNode
	Gather  string
}

// Route applies Flowcraft's rule to the result of the step key (for a
// node outside loops, its id): the edges whose action equals the result's
// action and whose condition holds; if no edge carries that action, the
// action-less edges whose condition holds. Out of a loop-controller, the
// edges with a condition are tried first, whatever their action. Each
// taken edge carries the source's output, or its transform of it.
//
// env supplies context, params and outputs; Route fills in result, input
// and the node's own entry in outputs.
func (w *Workflow) Route(key string, res NodeResult, env Env) (Routing, error) {
	s, ok := w.Step(key)
	switch {
	case ok:
		return w.RouteStep(s, res, env)
	case w.nodes[key] != nil:
		return Routing{}, fmt.Errorf("node %q is in a loop: route its steps by key (%s)", key, w.StepKey(key, 1))
	case len(res.DynamicNodes) > 0 || res.Gather != "":
		return Routing{}, fmt.Errorf("route %q: no such step", key)
	}
	return Routing{Deliveries: map[string]any{}}, nil
}

// RouteStep is Route for a step (see Step and DynamicStep): a dynamic
// node's result goes to the node that gathers it.
func (w *Workflow) RouteStep(s Step, res NodeResult, env Env) (Routing, error) {
	r := Routing{Deliveries: map[string]any{}}
	// Expressions see the output as it will be stored (JSON), whatever Go
	// type the node returned.
	res.Output = normalize(res.Output)
	if s.Dynamic != nil {
		if len(res.DynamicNodes) > 0 || res.Gather != "" {
			return Routing{}, fmt.Errorf("dynamic node %q: a dynamic node cannot create dynamic nodes", s.Key)
		}
		if g := s.Dynamic.Gather; g != "" {
			r.Taken, r.Deliveries[g] = []string{g}, res.Output
		}
		return r, nil
	}
	var err error
	if r.Dynamic, r.Gather, err = w.acceptDynamic(s, res); err != nil {
		return Routing{}, fmt.Errorf("node %s: %w", s.Key, err)
	}
	for _, d := range r.Dynamic {
		if d.Inputs == nil {
			r.Deliveries[d.ID] = res.Output
		}
	}
	nodeID := s.Node.ID
	edges := w.out[nodeID]
	if len(edges) == 0 {
		return r, nil
	}
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
	if env.Params == nil {
		env.Params = s.Node.Params
	}
	vars := env.vars() // one environment for every edge's expressions
	holds := func(e *compiledEdge) (bool, error) {
		if e.Condition == nil {
			return true, nil
		}
		ok, err := e.Condition.evalBoolVars(vars)
		if err != nil {
			return false, fmt.Errorf("edge %s → %s: condition %q: %w", e.Source, e.Target, e.Condition.Source, err)
		}
		return ok, nil
	}
	pick := func(candidates func(*compiledEdge) bool) ([]*compiledEdge, error) {
		var out []*compiledEdge
		for _, e := range edges {
			if !candidates(e) {
				continue
			}
			ok, err := holds(e)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, e)
			}
		}
		return out, nil
	}
	loop := w.loops[nodeID]
	if !s.InLoop {
		loop = nil
	}
	var taken []*compiledEdge
	if loop != nil {
		// Flowcraft tries a controller's conditional edges first: any that
		// holds is taken, whatever the action.
		if taken, err = pick(func(e *compiledEdge) bool { return e.Condition != nil }); err != nil {
			return Routing{}, err
		}
	}
	if len(taken) == 0 {
		action := ""
		for _, e := range edges {
			if res.Action != "" && e.Action == res.Action {
				action = res.Action // some edge carries the action
			}
		}
		if taken, err = pick(func(e *compiledEdge) bool { return e.Action == action }); err != nil {
			return Routing{}, err
		}
	}
	for _, e := range taken {
		value := res.Output
		if e.Transform != nil {
			v, err := e.Transform.evalVars(vars)
			if err != nil {
				return Routing{}, fmt.Errorf("edge %s → %s: transform %q: %w", e.Source, e.Target, e.Transform.Source, err)
			}
			value = v
		}
		r.Taken = append(r.Taken, e.Target)
		r.Deliveries[e.Target] = normalize(value)
	}
	if loop != nil {
		return r, w.checkIterations(loop, s, r)
	}
	return r, nil
}

// checkIterations fails the routing of controller step s when it would
// start an iteration beyond the loop's maxIterations.
func (w *Workflow) checkIterations(l *loop, s Step, r Routing) error {
	for _, t := range r.Taken {
		if t == l.start && s.Iteration+1 > l.maxIterations {
			return fmt.Errorf("loop-controller %q: maxIterations %d reached (it would start iteration %d)", l.controller, l.maxIterations, s.Iteration+1)
		}
	}
	return nil
}

// ResolveInput computes the input of the step key (for a node outside
// loops, its id) the Flowcraft way; see CompiledNode.ResolveInput.
func (w *Workflow) ResolveInput(key string, edgeInput any, ctx map[string]any, outputs map[string]any) any {
	s, ok := w.Step(key)
	if !ok {
		return edgeInput
	}
	return s.Node.ResolveInput(edgeInput, ctx, outputs)
}

// ResolveInput computes the node's input the Flowcraft way. A node with
// `inputs` reads them: a key starting with "_" is a context key; any other
// key is the output of the node with that id when it has one
// (_outputs.<key>), else the context key (a dotted key is a key, not a
// path). A node without `inputs` gets edgeInput (what its incoming edges
// delivered; for a start node, the run's initial input).
//
// ctx holds the run's context keys; outputs holds the outputs of the nodes
// the node's OutputRefs name.
func (n *CompiledNode) ResolveInput(edgeInput any, ctx map[string]any, outputs map[string]any) any {
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
