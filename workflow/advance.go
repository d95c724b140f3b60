package workflow

// ReadyNode is a step made ready, with the input its incoming edges give
// it.
type ReadyNode struct {
	ID    string // the step key
	Input any
	// Dynamic is set when the step is a dynamic node: its definition, as
	// its creator's routing stored it.
	Dynamic *DynamicNode
}

// LoopExit is a loop that is over: the controller's step Step did not
// take its continue edge (or was skipped). A runtime records Step's
// result (state, taken edges, deliveries, output) once more under Loop,
// the controller's id, which is the step the loop's outgoing edges leave
// from.
type LoopExit struct {
	Loop string
	Step string
}

// Transition is what follows from some steps becoming resolved.
type Transition struct {
	Ready     []ReadyNode // steps to start, each exactly once
	Skipped   []string    // steps on dead paths, in the order they were decided
	LoopExits []LoopExit  // loops that ended, to record
}

// Advance decides, after the steps in resolved had their routing stored
// (states must already show them resolved), which steps become ready and
// which are skipped. Skips propagate: a step whose incoming edges are all
// untaken is skipped, which may resolve its successors.
//
// A join with strategy "all" is ready when every incoming edge is resolved
// and at least one is taken; "any" is ready at its first taken arrival. A
// step that already exists is never made ready again, which is what makes
// each step start exactly once.
//
// In a loop, each iteration's steps have keys of their own: a body node's
// incoming edges come from the same iteration, the continue edge of the
// controller's step #n leads to iteration n+1, and a controller step that
// does not continue ends the loop (Transition.LoopExits), after which the
// controller's outgoing edges resolve. Dynamic nodes that a resolved step
// created become ready wave by wave; an edge into the node that gathers
// them resolves only once all of them have, and that node gets their
// outputs, in order, as its input.
//
// A fallback step whose node resolved without it (succeeded or skipped)
// will never run: it is skipped too, so that a join behind the fallback's
// own outgoing edges still fires. Runtimes store every step in Skipped.
func (w *Workflow) Advance(resolved []string, states States) Transition {
	a := &advance{w: w, states: states, decided: map[string]bool{}, overlay: map[string]StepStatus{}, alias: map[string]string{}}
	a.dyn, _ = states.(DynamicStates)
	a.counts, _ = states.(DynamicCounts)
	for _, key := range resolved {
		st, ok := states.Status(key)
		if ok && (st.State == StepSucceeded || st.State == StepSkipped) {
			a.skipFallbackOf(key)
		}
		a.resolvedStep(key, st)
	}
	for len(a.queue) > 0 {
		t := a.queue[0]
		a.queue = a.queue[1:]
		a.consider(t)
	}
	return a.tr
}

type advance struct {
	w       *Workflow
	states  States
	dyn     DynamicStates // nil when the runtime runs no dynamic nodes
	counts  DynamicCounts // nil when it does not count them
	tr      Transition
	decided map[string]bool
	overlay map[string]StepStatus // steps decided in this call: skips, loop exits
	alias   map[string]string     // loop exit step → the controller step it copies
	queue   []string
}

func (a *advance) status(key string) (StepStatus, bool) {
	if st, ok := a.overlay[key]; ok {
		return st, true
	}
	return a.states.Status(key)
}

func (a *advance) exists(key string) bool {
	if a.decided[key] {
		return true
	}
	_, ok := a.states.Status(key)
	return ok
}

func (a *advance) delivery(source, target string) any {
	if s, ok := a.alias[source]; ok {
		source = s
	}
	return a.states.Delivery(source, target)
}

// edgeRef is an incoming edge of a step with the key of its source's step.
type edgeRef struct {
	e   *compiledEdge
	src string
}

// resolvedStep queues what may follow from step key having resolved
// with status st.
func (a *advance) resolvedStep(key string, st StepStatus) {
	w := a.w
	s, ok := w.Step(key)
	if !ok {
		if a.dyn != nil {
			if d, ok := a.dyn.Dynamic(key); ok {
				a.dynamicResolved(d)
			}
		}
		return
	}
	l := w.loops[s.Node.ID]
	if l != nil && s.InLoop {
		if st.State != StepSkipped && st.TookEdgeTo(l.start) {
			a.queue = append(a.queue, w.StepKey(l.start, s.Iteration+1))
		} else {
			a.exitLoop(l, key, st)
		}
		return
	}
	if st.State == StepSucceeded || st.State == StepRecovered {
		a.readyDynamic(key, st.Dynamic, 0)
	}
	for _, e := range w.out[s.Node.ID] {
		if l != nil && e == l.cont {
			continue // the exit step's edges are the ones that leave
		}
		a.queue = append(a.queue, a.targetKey(s, e))
	}
}

// targetKey is the key of the step edge e leads to from step s.
func (a *advance) targetKey(s Step, e *compiledEdge) string {
	w := a.w
	if s.InLoop {
		return w.stepIn(e.Target, s)
	}
	if l := w.loopOf[e.Target]; l != nil {
		if e.Target == l.start && l.entryAtStart {
			return w.StepKey(e.Target, 1)
		}
		return w.StepKey(e.Target, 0)
	}
	return e.Target
}

// inEdges are the incoming edges of step s with their sources' steps:
// for a step in a loop, those of its iteration.
func (a *advance) inEdges(s Step) []edgeRef {
	w := a.w
	node := s.Node.ID
	var out []edgeRef
	l := w.loopOf[node]
	if l == nil || !s.InLoop {
		for _, e := range w.in[node] {
			out = append(out, edgeRef{e, e.Source})
		}
		return out
	}
	switch node {
	case l.controller:
		for _, e := range w.in[node] {
			inside := l.scope[e.Source]
			switch {
			case s.Iteration == 0 && !inside:
				out = append(out, edgeRef{e, e.Source})
			case s.Iteration > 0 && inside:
				out = append(out, edgeRef{e, w.StepKey(e.Source, s.Iteration)})
			}
		}
	case l.start:
		if s.Iteration == 1 && l.entryAtStart {
			for _, e := range w.in[node] {
				if !l.scope[e.Source] {
					out = append(out, edgeRef{e, e.Source})
				}
			}
		} else if s.Iteration > 0 {
			out = append(out, edgeRef{l.cont, w.StepKey(l.controller, s.Iteration-1)})
		}
	default:
		for _, e := range w.in[node] {
			if l.scope[e.Source] {
				out = append(out, edgeRef{e, w.StepKey(e.Source, s.Iteration)})
			}
		}
	}
	return out
}

// consider decides step t, a successor of a resolved step.
func (a *advance) consider(t string) {
	if a.exists(t) {
		return
	}
	s, ok := a.w.Step(t)
	if !ok {
		return
	}
	node := s.Node.ID
	in := a.inEdges(s)
	var takenFrom []edgeRef
	var gathered []any
	gathers := false
	unresolved := 0
	for _, er := range in {
		st, ok := a.status(er.src)
		if !ok || !st.State.Resolved() {
			unresolved++
			continue
		}
		if st.Gather == node {
			if !a.allResolved(er.src, st.Dynamic) {
				unresolved++
				continue
			}
			gathers = true
			for _, d := range st.Dynamic {
				gathered = append(gathered, a.delivery(d.ID, node))
			}
		}
		if st.TookEdgeTo(node) {
			takenFrom = append(takenFrom, er)
		}
	}
	switch {
	case s.Node.JoinStrategy == JoinAny && len(takenFrom) > 0,
		unresolved == 0 && len(takenFrom) > 0:
		a.decided[t] = true
		var input any
		switch {
		case gathers && gathered == nil:
			input = []any{}
		case gathers:
			input = gathered
		default:
			input = a.edgeInput(s, in, takenFrom)
		}
		a.tr.Ready = append(a.tr.Ready, ReadyNode{ID: t, Input: input})
	case unresolved == 0:
		a.skip(t)
	}
}

func (a *advance) allResolved(source string, ds []DynamicNode) bool {
	if a.counts != nil {
		for wave, size := range waveSizes(ds) {
			if a.counts.ResolvedInWave(source, wave) < size {
				return false
			}
		}
		return true
	}
	for _, d := range ds {
		if st, ok := a.status(d.ID); !ok || !st.State.Resolved() {
			return false
		}
	}
	return true
}

// edgeInput is what a step's incoming edges give it: the single delivery
// for a step with one incoming edge or an "any" join (its first arrival),
// or a map of source node id → delivery over the taken edges of an "all"
// join.
func (a *advance) edgeInput(s Step, in, takenFrom []edgeRef) any {
	if len(in) == 1 || s.Node.JoinStrategy == JoinAny {
		return a.delivery(takenFrom[0].src, s.Node.ID)
	}
	m := make(map[string]any, len(takenFrom))
	for _, er := range takenFrom {
		m[er.e.Source] = a.delivery(er.src, s.Node.ID)
	}
	return m
}

func (a *advance) skip(key string) {
	a.decided[key] = true
	st := StepStatus{State: StepSkipped}
	a.overlay[key] = st
	a.tr.Skipped = append(a.tr.Skipped, key)
	a.resolvedStep(key, st)
	a.skipFallbackOf(key)
}

// skipFallbackOf skips the fallback of step key, which resolved without
// it.
func (a *advance) skipFallbackOf(key string) {
	fb, ok := a.w.FallbackStep(key)
	if !ok || a.exists(fb) {
		return
	}
	if s, _ := a.w.Step(key); s.Node != nil && a.w.loops[s.Node.ID] != nil && !s.InLoop {
		return // a loop's exit step runs nothing, so has no fallback
	}
	a.skip(fb)
}

// exitLoop records that loop l ended with the controller's step key.
func (a *advance) exitLoop(l *loop, key string, st StepStatus) {
	exit := l.controller
	if a.exists(exit) {
		return
	}
	a.decided[exit] = true
	exitSt := StepStatus{State: st.State, Taken: st.Taken}
	a.overlay[exit] = exitSt
	a.alias[exit] = key
	a.tr.LoopExits = append(a.tr.LoopExits, LoopExit{Loop: exit, Step: key})
	a.resolvedStep(exit, exitSt)
}

// dynamicResolved queues what follows a resolved dynamic node: the next
// wave of its creator's dynamic nodes once its own wave is done, and the
// node that gathers them.
func (a *advance) dynamicResolved(d DynamicNode) {
	cst, ok := a.status(d.Source)
	if !ok {
		return
	}
	waveDone, hasNext := true, false
	size := 0
	for _, sib := range cst.Dynamic {
		switch sib.Wave {
		case d.Wave:
			size++
			if a.counts != nil {
				continue
			}
			if st, ok := a.status(sib.ID); !ok || !st.State.Resolved() {
				waveDone = false
			}
		case d.Wave + 1:
			hasNext = true
		}
	}
	if a.counts != nil {
		waveDone = a.counts.ResolvedInWave(d.Source, d.Wave) >= size
	}
	if waveDone && hasNext {
		a.readyDynamic(d.Source, cst.Dynamic, d.Wave+1)
	}
	if d.Gather != "" {
		if cs, ok := a.w.Step(d.Source); ok {
			a.queue = append(a.queue, a.w.stepIn(d.Gather, cs))
		}
	}
}

// waveSizes is the number of dynamic nodes in each wave.
func waveSizes(ds []DynamicNode) []int {
	var sizes []int
	for _, d := range ds {
		for len(sizes) <= d.Wave {
			sizes = append(sizes, 0)
		}
		sizes[d.Wave]++
	}
	return sizes
}

// readyDynamic makes the dynamic nodes of wave that step source created
// ready.
func (a *advance) readyDynamic(source string, ds []DynamicNode, wave int) {
	for i := range ds {
		d := ds[i]
		if d.Wave != wave || a.exists(d.ID) {
			continue
		}
		a.decided[d.ID] = true
		var input any
		if d.Inputs == nil {
			input = a.delivery(source, d.ID)
		}
		a.tr.Ready = append(a.tr.Ready, ReadyNode{ID: d.ID, Input: input, Dynamic: &d})
	}
}
