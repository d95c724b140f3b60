package workflow

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// loop is a loop-controller with the nodes it repeats.
//
// The controller's step at iteration n (n ≥ 0) decides whether iteration
// n+1 of the body runs: its continue edge makes <start>#<n+1> ready. The
// body's edges back to the controller reach its step of the same
// iteration. A loop is entered at the controller (its step #0: "while")
// or at the body's start node (its step #1, as Flowcraft's loops guide
// wires it: "do … while"). When a controller step does not take its
// continue edge, the loop is over: its result is recorded once more under
// the controller's bare id, the loop's exit step, whose edges lead out.
type loop struct {
	controller string
	start      string          // target of the continue edge
	cont       *compiledEdge   // the continue edge
	scope      map[string]bool // the body, the controller and their fallbacks
	// entryAtStart: the loop is entered at start (#1), not at the
	// controller (#0).
	entryAtStart  bool
	maxIterations int
}

// Loop-controller defaults.
const (
	// DefaultMaxIterations bounds a loop whose controller sets no
	// params.maxIterations.
	DefaultMaxIterations = 1000
	// ActionContinue and ActionBreak are the loop-controller's actions.
	ActionContinue = "continue"
	ActionBreak    = "break"
)

// iterationSep separates a node id from its iteration in a step key.
const iterationSep = "#"

// analyzeLoops finds each loop-controller's loop and checks the rules of
// loops: every cycle passes through exactly one loop-controller; a loop
// is entered at its controller or at the first node of its body and left
// through its controller's edges. Other cycles are reported as cycles.
func (w *Workflow) analyzeLoops(add func(path, format string, args ...any)) {
	controllers := map[string]bool{}
	for _, id := range w.order {
		if w.nodes[id].Uses == NodeLoopController {
			controllers[id] = true
		}
	}
	notFromController := func(e *compiledEdge) bool { return !controllers[e.Source] }
	for _, c := range w.cycles(notFromController) {
		add("edges", "cycle: %s", strings.Join(c, " → "))
	}
	if len(controllers) == 0 {
		return
	}
	w.loops = map[string]*loop{}
	w.loopOf = map[string]*loop{}
	nodeIndex := map[string]int{}
	for i, n := range w.Blueprint.Nodes {
		if _, dup := nodeIndex[n.ID]; !dup {
			nodeIndex[n.ID] = i
		}
	}
	for _, c := range w.order {
		if !controllers[c] {
			continue
		}
		path := fmt.Sprintf("nodes[%d]", nodeIndex[c])
		l := &loop{controller: c, maxIterations: DefaultMaxIterations}
		if n, ok := intParam(w.nodes[c].Params, "maxIterations"); ok {
			l.maxIterations = n
		}
		var conts []*compiledEdge
		for _, e := range w.out[c] {
			if e.Action == ActionContinue {
				conts = append(conts, e)
			}
		}
		switch {
		case len(conts) == 0:
			add(path, "loop-controller %q has no continue edge (an edge with action %q to the first node of the loop's body)", c, ActionContinue)
			continue
		case len(conts) > 1:
			add(path, "loop-controller %q has %d continue edges; a loop has one", c, len(conts))
			continue
		case conts[0].Target == c:
			add(fmt.Sprintf("edges[%d]", conts[0].Index), "loop-controller %q continues to itself; its continue edge goes to the first node of the loop's body", c)
			continue
		}
		l.cont, l.start = conts[0], conts[0].Target
		body := w.loopBody(c, l.start)
		if !body[l.start] {
			add(fmt.Sprintf("edges[%d]", l.cont.Index), "the continue edge of loop-controller %q leads to %q, which never leads back to %q", c, l.start, c)
			continue
		}
		l.scope = map[string]bool{c: true}
		nested := false
		for id := range body {
			if controllers[id] {
				add(path, "loop-controllers %q and %q share a cycle: nested loops are not supported (run the inner loop as a subflow)", c, id)
				nested = true
			}
			l.scope[id] = true
		}
		if nested {
			continue
		}
		// A fallback runs in place of its node, in the node's iteration.
		for _, id := range sortedSet(l.scope) {
			for fb := w.nodes[id].Fallback; fb != "" && !l.scope[fb]; fb = w.nodes[fb].Fallback {
				l.scope[fb] = true
			}
		}
		w.checkLoopEdges(l, add)
		w.loops[c] = l
		for id := range l.scope {
			w.loopOf[id] = l
		}
	}
	for i, n := range w.Blueprint.Nodes {
		if l := w.loopOf[n.ID]; l != nil && strings.Contains(n.ID, iterationSep) {
			add(fmt.Sprintf("nodes[%d].id", i), "%q is in the loop of %q: the ids of a loop's nodes must not contain %q (step keys append #<iteration>)", n.ID, l.controller, iterationSep)
		}
		if base, _, ok := splitIteration(n.ID); ok && w.loopOf[base] != nil {
			add(fmt.Sprintf("nodes[%d].id", i), "%q is the step key of an iteration of loop node %q", n.ID, base)
		}
	}
}

// loopBody returns the nodes on a path from start back to controller that
// does not pass through controller: the loop's body.
func (w *Workflow) loopBody(controller, start string) map[string]bool {
	forward := map[string]bool{}
	queue := []string{start}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if id == controller || forward[id] {
			continue
		}
		forward[id] = true
		queue = append(queue, w.Successors(id)...)
	}
	body := map[string]bool{}
	seen := map[string]bool{}
	queue = w.Predecessors(controller)
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if id == controller || seen[id] {
			continue
		}
		seen[id] = true
		if forward[id] {
			body[id] = true
		}
		queue = append(queue, w.Predecessors(id)...)
	}
	return body
}

// checkLoopEdges checks how l's scope connects to the rest: entries at
// the controller or the start, exits from the controller only.
func (w *Workflow) checkLoopEdges(l *loop, add func(path, format string, args ...any)) {
	entryAtController, entryAtStart := false, false
	for _, id := range sortedSet(l.scope) {
		for _, e := range w.out[id] {
			path := fmt.Sprintf("edges[%d]", e.Index)
			switch {
			case !l.scope[e.Target] && id != l.controller:
				add(path, "edge %s → %s leaves the loop of %q from its body; a loop is left through its loop-controller's edges", e.Source, e.Target, l.controller)
			case id == l.controller && l.scope[e.Target] && e != l.cont:
				add(path, "edge %s → %s: a loop-controller's only edge into its loop is its continue edge", e.Source, e.Target)
			}
		}
		for _, e := range w.in[id] {
			if l.scope[e.Source] {
				continue
			}
			switch id {
			case l.controller:
				entryAtController = true
			case l.start:
				entryAtStart = true
			default:
				add(fmt.Sprintf("edges[%d]", e.Index), "edge %s → %s enters the loop of %q in its middle; enter a loop at its loop-controller or at %q, the first node of its body", e.Source, e.Target, l.controller, l.start)
			}
		}
	}
	switch {
	case entryAtController && entryAtStart:
		add("edges", "the loop of %q is entered both at its loop-controller and at %q; enter it at one of them", l.controller, l.start)
	case !entryAtController && !entryAtStart:
		add("edges", "nothing leads into the loop of %q: add an edge to %q (or to %q, to run the body before the first check)", l.controller, l.controller, l.start)
	}
	l.entryAtStart = entryAtStart
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// splitIteration splits "<node>#<n>" into node and n.
func splitIteration(key string) (node string, iteration int, ok bool) {
	i := strings.LastIndex(key, iterationSep)
	if i <= 0 || i == len(key)-1 {
		return "", 0, false
	}
	n, err := strconv.Atoi(key[i+1:])
	if err != nil || n < 0 || strconv.Itoa(n) != key[i+1:] {
		return "", 0, false
	}
	return key[:i], n, true
}

// StepKey is the key of node's step at iteration: "<node>#<iteration>"
// for a node in a loop (its body, its controller and their fallbacks),
// the node id otherwise (iteration is then ignored). Join arrivals, leases
// and stored steps are all keyed by step key, so one iteration never
// meets another's arrivals. The bare id of a loop-controller is its loop's
// exit step.
func (w *Workflow) StepKey(node string, iteration int) string {
	if w.loopOf[node] != nil {
		return node + iterationSep + strconv.Itoa(iteration)
	}
	return node
}

// InLoop reports whether node is in a loop's scope (its steps are keyed
// by iteration), and names the loop's controller.
func (w *Workflow) InLoop(node string) (controller string, ok bool) {
	if l := w.loopOf[node]; l != nil {
		return l.controller, true
	}
	return "", false
}

// MaxIterations is the iteration limit of the loop of controller.
func (w *Workflow) MaxIterations(controller string) int {
	if l := w.loops[controller]; l != nil {
		return l.maxIterations
	}
	return 0
}

// loopController is the loop-controller node: it evaluates
// params.condition against the run's context (bare keys, as edge
// conditions see them) and answers action continue (output nil) while it
// holds, break (output nil) once it does not. The routing of its step
// then starts the next iteration or ends the loop.
func loopController(_ context.Context, in NodeInput) (NodeResult, error) {
	src, _ := in.Params["condition"].(string)
	x, err := cachedExpression(src)
	if err != nil {
		return NodeResult{}, fmt.Errorf("params.condition: %w", err)
	}
	values := contextValues(in.Context)
	ok, err := x.EvalBool(Env{Input: in.Input, Params: in.Params, Context: values, Outputs: outputsIn(values)})
	if err != nil {
		return NodeResult{}, fmt.Errorf("loop-controller '%s': condition %q: %w", in.NodeID, src, err)
	}
	if ok {
		return NodeResult{Action: ActionContinue}, nil
	}
	return NodeResult{Action: ActionBreak}, nil
}

func checkLoopParams(p map[string]any) error {
	var errs []error
	src, ok := p["condition"].(string)
	if !ok || src == "" {
		errs = append(errs, errors.New("condition: required (an expression; the loop continues while it holds)"))
	} else if _, err := compileExpression(src); err != nil {
		errs = append(errs, fmt.Errorf("condition does not compile: %s", oneLine(err)))
	}
	if v, present := p["maxIterations"]; present && v != nil {
		if n, ok := intParam(p, "maxIterations"); !ok || n < 1 {
			errs = append(errs, fmt.Errorf("maxIterations: must be a whole number of at least 1, got %v", v))
		}
	}
	return errors.Join(errs...)
}
