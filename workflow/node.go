package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"time"
)

// NodeFunc is a node implementation. It runs one attempt of one node.
//
// It returns the node's result (output and optional action) or an error.
// An error fails the attempt; the runtime runs the node again until it has
// made maxRetries attempts in all, then runs the node's fallback, or fails
// the run with the error's message. A panic is turned into an error. The
// error of Suspend is not a failure: it puts the node to sleep.
type NodeFunc func(ctx context.Context, in NodeInput) (NodeResult, error)

// NodeInput is what a node receives for one attempt.
type NodeInput struct {
	RunID  string
	NodeID string
	// StepKey names this occurrence of the node (see Step): NodeID outside
	// loops, "<node>#<iteration>" in one, a dynamic node's id. Empty from a
	// runtime that predates step keys: NodeID then.
	StepKey string
	// Iteration is the loop iteration of a step in a loop's scope.
	Iteration int
	Attempt   int // 1-based
	Input     any
	Params    map[string]any
	// Context reads and writes the run's context. The writes of an attempt
	// that succeeds become visible to the rest of the run atomically with
	// the step's result; those of any other attempt are dropped.
	Context Context
	// Resumed is set when the node is called again after it suspended
	// itself (see Suspend): it carries the time the node asked to wake.
	Resumed *time.Time
	// Child is set when the node is called again after it started a child
	// run (see StartChild): the child run as it finished.
	Child *RunResult
}

// Key is the step key of the input's step (NodeID when the runtime gave
// none).
func (in NodeInput) Key() string {
	if in.StepKey != "" {
		return in.StepKey
	}
	return in.NodeID
}

// NodeResult is what a node attempt produced.
type NodeResult struct {
	Output any    `json:"output,omitempty"`
	Action string `json:"action,omitempty"`
	// DynamicNodes are nodes this step creates; each runs as a step of its
	// own once this one has succeeded (see DynamicNode). Gather, when set,
	// names a successor of this node that waits for all of them and gets
	// their outputs, in order, as its input, even when there are none.
	DynamicNodes []DynamicNode `json:"dynamicNodes,omitempty"`
	Gather       string        `json:"gather,omitempty"`
}

// Context is the run's context accessor handed to nodes.
type Context interface {
	Get(key string) (any, bool)
	Set(key string, value any)
	Delete(key string)
}

// suspendError is what Suspend returns; CompiledNode.Outcome recognises it.
type suspendError struct{ Until time.Time }

func (e *suspendError) Error() string {
	return "suspended until " + e.Until.UTC().Format(time.RFC3339Nano)
}

// Suspend returns the error a node returns to be called again at t without
// holding a worker meanwhile (the built-in sleep node uses it). A durable
// runtime stores the wake time; the local runner simply waits. The node is
// called again as the same attempt, with NodeInput.Resumed set to t.
func Suspend(t time.Time) error { return &suspendError{Until: t} }

// panicError is the error a panicking node attempt becomes.
type panicError struct {
	Value any
	Stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("node panicked: %v", e.Value) }

// Invoke runs fn with panic recovery, so a panic is an ordinary node error.
func Invoke(ctx context.Context, fn NodeFunc, in NodeInput) (res NodeResult, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return fn(ctx, in)
}

// Registry maps `uses` keys to node implementations. It is safe for
// concurrent use.
type Registry struct {
	mu     sync.RWMutex
	nodes  map[string]NodeFunc
	checks map[string]ParamValidator
}

// NewRegistry returns a registry holding the built-in nodes (noop,
// transform, sleep, batch-scatter, batch-gather, loop-controller,
// subflow); Register adds the others.
func NewRegistry() *Registry {
	r := &Registry{nodes: map[string]NodeFunc{}, checks: map[string]ParamValidator{}}
	registerBuiltins(r)
	return r
}

// Register adds or replaces a node implementation.
func (r *Registry) Register(uses string, fn NodeFunc) *Registry {
	if uses == "" || fn == nil {
		panic("workflow: Register needs a name and a function")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes[uses] = fn
	return r
}

// RegisterValidated adds a node implementation whose params are checked by
// check when a blueprint using it is compiled.
func (r *Registry) RegisterValidated(uses string, fn NodeFunc, check ParamValidator) *Registry {
	r.Register(uses, fn)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks[uses] = check
	return r
}

func (r *Registry) validator(uses string) ParamValidator {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.checks[uses]
}

// Lookup returns the implementation registered for uses.
func (r *Registry) Lookup(uses string) (NodeFunc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fn, ok := r.nodes[uses]
	return fn, ok
}

// Names lists the registered keys, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.nodes))
	for k := range r.nodes {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// errUnknownNode is returned (wrapped) by Workflow.Run for a workflow
// compiled without a registry; with one, Compile reports an unknown node
// type as a validation problem.
var errUnknownNode = errors.New("unknown node type")

// MapContext is an in-memory Context that records its changes, used by the
// local runner and by runtimes that apply the changes with a step's commit.
type MapContext struct {
	mu      sync.Mutex
	values  map[string]any
	changed map[string]bool // key → set (true) or deleted (false)

	// lookup, when set, answers a key the node has not changed before
	// values do (WithLookup); looked remembers its answers.
	lookup func(key string) (any, bool)
	looked map[string]bool
}

// WithLookup makes Get ask lookup first for a key the node has not set or
// deleted, and remember its answer; a key lookup does not know falls back
// to the values. A distributed runtime uses it to read a node's output at
// its bare key (or _outputs.<id>) on demand, as Flowcraft's context holds
// it, without loading every output for every node. lookup is called
// without the context's lock held.
func (c *MapContext) WithLookup(lookup func(key string) (any, bool)) *MapContext {
	c.lookup = lookup
	return c
}

// NewMapContext wraps values (not copied).
func NewMapContext(values map[string]any) *MapContext {
	if values == nil {
		values = map[string]any{}
	}
	return &MapContext{values: values, changed: map[string]bool{}}
}

func (c *MapContext) Get(key string) (any, bool) {
	c.mu.Lock()
	_, changed := c.changed[key]
	if c.lookup == nil || changed || c.looked[key] {
		defer c.mu.Unlock()
		v, ok := c.values[key]
		return v, ok
	}
	c.mu.Unlock()
	found, ok := c.lookup(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, changed := c.changed[key]; !changed && !c.looked[key] {
		if c.looked == nil {
			c.looked = map[string]bool{} // most nodes never ask: allocated on the first lookup
		}
		c.looked[key] = true
		if ok {
			c.values[key] = found
		}
	}
	v, ok := c.values[key]
	return v, ok
}

func (c *MapContext) Set(key string, value any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.values[key] = normalize(value)
	c.changed[key] = true
}

func (c *MapContext) Delete(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.values, key)
	c.changed[key] = false
}

// Changes returns the keys set (with their values) and the keys deleted
// since the context was created.
func (c *MapContext) Changes() (set map[string]any, deleted []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	set = map[string]any{}
	for k, isSet := range c.changed {
		if isSet {
			set[k] = c.values[k]
		} else {
			deleted = append(deleted, k)
		}
	}
	sort.Strings(deleted)
	return set, deleted
}

// Snapshot returns a shallow copy of the values.
func (c *MapContext) Snapshot() map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]any, len(c.values))
	for k, v := range c.values {
		out[k] = v
	}
	return out
}

// normalize turns a Go value into its JSON-decoded form (maps, slices,
// float64, string, bool, nil), so that what a node sets reads back the same
// locally and after a round trip through Postgres.
func normalize(v any) any {
	if isJSONValue(v) {
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return v
	}
	return out
}

// isJSONValue reports whether v is already in JSON-decoded form, nested
// values included (a map[string]any holding an int is not).
func isJSONValue(v any) bool {
	switch v := v.(type) {
	case nil, string, bool, float64:
		return true
	case map[string]any:
		for _, e := range v {
			if !isJSONValue(e) {
				return false
			}
		}
		return true
	case []any:
		for _, e := range v {
			if !isJSONValue(e) {
				return false
			}
		}
		return true
	}
	return false
}

// Normalize returns v in its JSON-decoded form (see MapContext.Set).
func Normalize(v any) any { return normalize(v) }
