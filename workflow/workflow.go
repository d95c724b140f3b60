package workflow

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Join strategies.
const (
	JoinAll = "all"
	JoinAny = "any"
)

// Context key prefixes, as in Flowcraft.
const (
	outputsPrefix = "_outputs."
	inputsPrefix  = "_inputs."
)

// OutputKey is the context key of a node's output: "_outputs.<id>".
func OutputKey(nodeID string) string { return outputsPrefix + nodeID }

// InputKey is the context key of a node's input: "_inputs.<id>".
func InputKey(nodeID string) string { return inputsPrefix + nodeID }

// Workflow is a validated, compiled blueprint: the graph indexes and the
// compiled expressions the runtime needs. It is immutable and safe for
// concurrent use.
type Workflow struct {
	Blueprint *Blueprint
	Digest    string

	nodes    map[string]*CompiledNode
	order    []string
	in, out  map[string][]*compiledEdge
	starts   []string
	backedBy map[string]string // fallback node → the node it stands in for
	loops    map[string]*loop  // loop-controller → its loop
	loopOf   map[string]*loop  // node in a loop's scope → the loop
	reg      *Registry         // for dynamic nodes; nil when compiled without
}

// CompiledNode is a node with its defaults applied.
type CompiledNode struct {
	Node
	MaxAttempts  int
	RetryDelay   time.Duration
	Timeout      time.Duration // 0: none of its own (a runtime may apply a default limit)
	Fallback     string
	JoinStrategy string
	Func         NodeFunc // nil when compiled without a registry
	// OutputRefs are the node ids whose outputs this node's input
	// resolution, own expressions (a transform's params) and outgoing
	// expressions (for a fallback, those of the nodes it stands in for too)
	// read; AllOutputs is set when they read outputs dynamically.
	OutputRefs []string
	AllOutputs bool
}

// compiledEdge is an edge with its expressions compiled.
type compiledEdge struct {
	Edge
	Index     int
	Condition *expression
	Transform *expression
}

// Problem is one thing wrong with a blueprint.
type Problem struct {
	Path string // JSON location, e.g. "edges[3].condition"
	Msg  string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// ValidationError lists every problem found in a blueprint.
type ValidationError struct {
	BlueprintID string
	Problems    []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "blueprint %q is invalid (%d problem", e.BlueprintID, len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

// ParamValidator checks a node's params when a blueprint is compiled.
type ParamValidator func(params map[string]any) error

// Compile validates bp and builds its Workflow. With a nil registry, the
// `uses` and params of each node are not checked and nodes carry no Func.
func Compile(bp *Blueprint, reg *Registry) (*Workflow, error) {
	if bp == nil {
		return nil, &ValidationError{Problems: []Problem{{Msg: "no blueprint"}}}
	}
	w := &Workflow{
		Blueprint: bp,
		Digest:    bp.Digest(),
		nodes:     map[string]*CompiledNode{},
		in:        map[string][]*compiledEdge{},
		out:       map[string][]*compiledEdge{},
		backedBy:  map[string]string{},
		reg:       reg,
	}
	var probs []Problem
	add := func(path, format string, args ...any) {
		probs = append(probs, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if bp.ID == "" {
		add("id", "required")
	}
	if len(bp.Nodes) == 0 {
		add("nodes", "a blueprint needs at least one node")
	}
	for i := range bp.Nodes {
		n := bp.Nodes[i]
		path := fmt.Sprintf("nodes[%d]", i)
		switch {
		case n.ID == "":
			add(path+".id", "required")
			continue
		case w.nodes[n.ID] != nil:
			add(path+".id", "duplicate node id %q", n.ID)
			continue
		}
		cn := &CompiledNode{Node: n, MaxAttempts: 1, JoinStrategy: JoinAll}
		if n.Uses == "" {
			add(path+".uses", "required")
		} else if reg != nil {
			fn, ok := reg.Lookup(n.Uses)
			if !ok {
				add(path+".uses", "unknown node type %q (registered: %s)", n.Uses, strings.Join(reg.Names(), ", "))
			} else {
				cn.Func = fn
				if check := reg.validator(n.Uses); check != nil {
					if err := check(n.Params); err != nil {
						add(path+".params", "%v", err)
					}
				}
			}
		}
		if c := n.Config; c != nil {
			if c.MaxRetries != nil {
				switch {
				case *c.MaxRetries < 0:
					add(path+".config.maxRetries", "must not be negative, got %d", *c.MaxRetries)
				case *c.MaxRetries > 0:
					cn.MaxAttempts = *c.MaxRetries
				}
			}
			if c.RetryDelay != nil {
				switch {
				case *c.RetryDelay < 0:
					add(path+".config.retryDelay", "must not be negative, got %d", *c.RetryDelay)
				case *c.RetryDelay > maxDurationMs:
					add(path+".config.retryDelay", "must be at most %d ms, got %d", maxDurationMs, *c.RetryDelay)
				default:
					cn.RetryDelay = time.Duration(*c.RetryDelay) * time.Millisecond
				}
			}
			if c.Timeout != nil {
				switch {
				case *c.Timeout < 0:
					add(path+".config.timeout", "must not be negative, got %d", *c.Timeout)
				case *c.Timeout > maxDurationMs:
					add(path+".config.timeout", "must be at most %d ms, got %d", maxDurationMs, *c.Timeout)
				default:
					cn.Timeout = time.Duration(*c.Timeout) * time.Millisecond
				}
			}
			switch c.JoinStrategy {
			case "", JoinAll:
			case JoinAny:
				cn.JoinStrategy = JoinAny
			default:
				add(path+".config.joinStrategy", "must be %q or %q, got %q", JoinAll, JoinAny, c.JoinStrategy)
			}
			cn.Fallback = c.Fallback
		}
		w.nodes[n.ID] = cn
		w.order = append(w.order, n.ID)
	}

	type pair struct{ s, t string }
	seen := map[pair]int{}
	for i, e := range bp.Edges {
		path := fmt.Sprintf("edges[%d]", i)
		ok := true
		for _, f := range []struct{ name, id string }{{"source", e.Source}, {"target", e.Target}} {
			if f.id == "" {
				add(path+"."+f.name, "required")
				ok = false
			} else if w.nodes[f.id] == nil {
				add(path+"."+f.name, "no node with id %q", f.id)
				ok = false
			}
		}
		ce := &compiledEdge{Edge: e, Index: i}
		if e.Condition != "" {
			x, err := compileExpression(e.Condition)
			if err != nil {
				add(path+".condition", "does not compile: %s", oneLine(err))
			}
			ce.Condition = x
		}
		if e.Transform != "" {
			x, err := compileExpression(e.Transform)
			if err != nil {
				add(path+".transform", "does not compile: %s", oneLine(err))
			}
			ce.Transform = x
		}
		if !ok {
			continue
		}
		if j, dup := seen[pair{e.Source, e.Target}]; dup {
			add(path, "duplicate edge %s → %s (also edges[%d]); merge their conditions", e.Source, e.Target, j)
			continue
		}
		seen[pair{e.Source, e.Target}] = i
		w.out[e.Source] = append(w.out[e.Source], ce)
		w.in[e.Target] = append(w.in[e.Target], ce)
	}

	// Fallbacks: must exist, not be the node itself, stand in for one node
	// only and not be the target of an edge (a fallback runs only when its
	// node gives up).
	for i, id := range w.order {
		n := w.nodes[id]
		if n.Fallback == "" {
			continue
		}
		path := fmt.Sprintf("nodes[%d].config.fallback", i)
		switch {
		case w.nodes[n.Fallback] == nil:
			add(path, "no node with id %q", n.Fallback)
			n.Fallback = ""
		case n.Fallback == id:
			add(path, "node %q cannot be its own fallback", id)
			n.Fallback = ""
		case w.backedBy[n.Fallback] != "":
			add(path, "node %q is already the fallback of %q", n.Fallback, w.backedBy[n.Fallback])
			n.Fallback = ""
		case len(w.in[n.Fallback]) > 0:
			add(path, "fallback node %q is the target of an edge; a fallback runs only when %q fails", n.Fallback, id)
			n.Fallback = ""
		default:
			w.backedBy[n.Fallback] = id
		}
	}
	w.analyzeLoops(add)
	w.checkBuiltins(reg, add)
	for _, c := range w.fallbackCycles() {
		add("nodes", "fallback cycle: %s", strings.Join(c, " → "))
	}
	for _, c := range w.cyclesThroughFallbacks() {
		add("nodes", "fallback cycle: %s (x ⇢ y: y is the fallback of x)", c)
	}

	for _, id := range w.order {
		if len(w.in[id]) == 0 && w.backedBy[id] == "" {
			w.starts = append(w.starts, id)
		}
	}
	if len(w.order) > 0 && len(w.starts) == 0 && len(probs) == 0 {
		add("nodes", "no start node (every node is the target of an edge or a fallback)")
	}
	for _, id := range w.order {
		w.nodes[id].OutputRefs, w.nodes[id].AllOutputs = w.outputRefs(id)
	}
	if len(probs) > 0 {
		return nil, &ValidationError{BlueprintID: bp.ID, Problems: probs}
	}
	return w, nil
}

func oneLine(err error) string {
	s := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// cycles returns each elementary cycle found by a depth-first search over
// the edges follow accepts, named by its nodes with the first repeated at
// the end.
func (w *Workflow) cycles(follow func(*compiledEdge) bool) [][]string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var found [][]string
	var visit func(id string)
	visit = func(id string) {
		color[id] = grey
		stack = append(stack, id)
		for _, e := range w.out[id] {
			if !follow(e) {
				continue
			}
			switch color[e.Target] {
			case white:
				visit(e.Target)
			case grey:
				start := 0
				for i := range stack {
					if stack[i] == e.Target {
						start = i
					}
				}
				c := append(append([]string{}, stack[start:]...), e.Target)
				found = append(found, c)
			}
		}
		stack = stack[:len(stack)-1]
		color[id] = black
	}
	for _, id := range w.order {
		if color[id] == white {
			visit(id)
		}
	}
	return found
}

func (w *Workflow) fallbackCycles() [][]string {
	var found [][]string
	reported := map[string]bool{}
	for _, id := range w.order {
		path := []string{id}
		seen := map[string]bool{id: true}
		cur := id
		for {
			next := w.nodes[cur].Fallback
			if next == "" {
				break
			}
			path = append(path, next)
			if seen[next] {
				if !reported[next] {
					for _, p := range path {
						reported[p] = true
					}
					found = append(found, path)
				}
				break
			}
			seen[next] = true
			cur = next
		}
	}
	return found
}

// cyclesThroughFallbacks finds cycles made of edges and fallback links
// (a node → its fallback, which runs only after the node failed) that use
// both: a fallback whose edges lead back to the node it stands in for
// waits on itself, so such a run could never finish. Cycles of edges only
// and chains of fallbacks only are reported by cycles and fallbackCycles.
func (w *Workflow) cyclesThroughFallbacks() []string {
	type link struct {
		to       string
		fallback bool
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var via []bool // via[i]: stack[i] was reached over a fallback link
	var found []string
	var visit func(id string)
	visit = func(id string) {
		color[id] = grey
		stack = append(stack, id)
		links := make([]link, 0, len(w.out[id])+1)
		for _, e := range w.out[id] {
			if w.nodes[id].Uses == NodeLoopController {
				break // a cycle through a loop-controller is a loop
			}
			links = append(links, link{to: e.Target})
		}
		if fb := w.nodes[id].Fallback; fb != "" {
			links = append(links, link{to: fb, fallback: true})
		}
		for _, l := range links {
			switch color[l.to] {
			case white:
				via = append(via, l.fallback)
				visit(l.to)
				via = via[:len(via)-1]
			case grey:
				start := 0
				for i := range stack {
					if stack[i] == l.to {
						start = i
					}
				}
				kinds := append(append([]bool{}, via[start+1:]...), l.fallback)
				fallbacks := 0
				for _, k := range kinds {
					if k {
						fallbacks++
					}
				}
				if fallbacks == 0 || fallbacks == len(kinds) {
					continue
				}
				var b strings.Builder
				b.WriteString(stack[start])
				for i, k := range kinds {
					next := l.to
					if start+i+1 < len(stack) {
						next = stack[start+i+1]
					}
					if k {
						b.WriteString(" ⇢ ")
					} else {
						b.WriteString(" → ")
					}
					b.WriteString(next)
				}
				found = append(found, b.String())
			}
		}
		stack = stack[:len(stack)-1]
		color[id] = black
	}
	via = append(via, false) // the root is reached over nothing
	for _, id := range w.order {
		if color[id] == white {
			visit(id)
		}
	}
	return found
}

func (w *Workflow) outputRefs(id string) ([]string, bool) {
	n := w.nodes[id]
	refs := map[string]bool{}
	for _, r := range w.inputRefs(n.Inputs) {
		refs[r] = true
	}
	all := false
	addExpr := func(x *expression) {
		for _, r := range x.Refs {
			refs[r] = true
		}
		for _, name := range x.Names {
			if w.nodes[name] != nil {
				refs[name] = true // a bare node id is that node's output
			}
		}
		all = all || x.AllOutputs
	}
	// A fallback's result is also routed along the edges of the nodes it
	// stands in for, so their expressions' references count too.
	routed := []string{id}
	seen := map[string]bool{id: true}
	for backed, ok := w.backedBy[id]; ok && !seen[backed]; backed, ok = w.backedBy[backed] {
		seen[backed] = true
		routed = append(routed, backed)
	}
	for _, src := range routed {
		for _, e := range w.out[src] {
			for _, x := range []*expression{e.Condition, e.Transform} {
				if x != nil {
					addExpr(x)
				}
			}
		}
	}
	for _, x := range n.nodeExpressions() {
		addExpr(x)
	}
	for _, key := range n.contextReads() {
		if w.nodes[key] != nil {
			refs[key] = true
		} else if r, ok := strings.CutPrefix(key, outputsPrefix); ok {
			refs[r] = true
		}
	}
	out := make([]string, 0, len(refs))
	for r := range refs {
		out = append(out, r)
	}
	sort.Strings(out)
	return out, all
}

// inputRefs are the node ids whose outputs inputs may read: keys that
// name a node (a node's output, when it has one) or _outputs.<id>.
func (w *Workflow) inputRefs(in *Inputs) []string {
	if in == nil {
		return nil
	}
	var out []string
	addKey := func(key string) {
		switch {
		case strings.HasPrefix(key, outputsPrefix):
			out = append(out, strings.TrimPrefix(key, outputsPrefix))
		case strings.HasPrefix(key, "_"):
		case w.nodes[key] != nil:
			out = append(out, key)
		}
	}
	if in.Map != nil {
		for _, k := range in.Map {
			addKey(k)
		}
	} else {
		addKey(in.Key)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// Node returns the compiled node with the given id.
func (w *Workflow) Node(id string) (*CompiledNode, bool) {
	n, ok := w.nodes[id]
	return n, ok
}

// NodeIDs returns the node ids in declaration order.
func (w *Workflow) NodeIDs() []string { return append([]string(nil), w.order...) }

// StartNodes are the nodes with no incoming edges that are not fallbacks,
// in declaration order.
func (w *Workflow) StartNodes() []string { return append([]string(nil), w.starts...) }

// Predecessors returns the sources of id's incoming edges.
func (w *Workflow) Predecessors(id string) []string {
	var out []string
	for _, e := range w.in[id] {
		out = append(out, e.Source)
	}
	return out
}

// Successors returns the targets of id's outgoing edges.
func (w *Workflow) Successors(id string) []string {
	var out []string
	for _, e := range w.out[id] {
		out = append(out, e.Target)
	}
	return out
}

// BackedBy returns the node that fallback node id stands in for.
func (w *Workflow) BackedBy(id string) (string, bool) {
	n, ok := w.backedBy[id]
	return n, ok
}

// maxDurationMs is the largest retryDelay or timeout (ms) a blueprint may
// set: about 292 years, the range of time.Duration.
const maxDurationMs = int64(1<<63-1) / int64(time.Millisecond)

func sortStrings(s []string) { sort.Strings(s) }

// Validate decodes nothing and runs nothing: it compiles bp and returns the
// validation error, if any.
func Validate(bp *Blueprint, reg *Registry) error {
	_, err := Compile(bp, reg)
	return err
}
