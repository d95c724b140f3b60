package workflow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Built-in node types, available in every registry. NodeSubflowClass is
// the name Flowcraft's builder gives a subflow node (.node(id, SubflowNode));
// it means the same as NodeSubflow.
const (
	NodeNoop           = "noop"
	NodeTransform      = "transform"
	NodeSleep          = "sleep"
	NodeBatchScatter   = "batch-scatter"
	NodeBatchGather    = "batch-gather"
	NodeLoopController = "loop-controller"
	NodeSubflow        = "subflow"
	NodeSubflowClass   = "SubflowNode"
)

func registerBuiltins(r *Registry) {
	r.Register(NodeNoop, noop)
	r.RegisterValidated(NodeTransform, transformNode, checkTransformParams)
	r.RegisterValidated(NodeSleep, sleepNode, checkSleepParams)
	r.RegisterValidated(NodeBatchScatter, batchScatter, checkScatterParams)
	r.RegisterValidated(NodeBatchGather, batchGather, checkGatherParams)
	r.RegisterValidated(NodeLoopController, loopController, checkLoopParams)
	r.RegisterValidated(NodeSubflow, subflowNode, checkSubflowParams)
	r.RegisterValidated(NodeSubflowClass, subflowNode, checkSubflowParams)
	r.Register(NodeWait, waitNode)
	r.Register(NodeWebhook, webhookNode)
	r.Register(NodeWebhookClass, webhookNode)
}

// noop passes its input through.
func noop(_ context.Context, in NodeInput) (NodeResult, error) {
	return NodeResult{Output: in.Input}, nil
}

var exprCache sync.Map // source → *expression

func cachedExpression(src string) (*expression, error) {
	if x, ok := exprCache.Load(src); ok {
		return x.(*expression), nil
	}
	x, err := compileExpression(src)
	if err != nil {
		return nil, err
	}
	exprCache.Store(src, x)
	return x, nil
}

// transformNode computes its output from params.expression and, when
// params.action is set, its action from that second expression (which also
// sees the output as result.output), so a JSON-only blueprint can compute
// values and branch.
func transformNode(_ context.Context, in NodeInput) (NodeResult, error) {
	src, _ := in.Params["expression"].(string)
	x, err := cachedExpression(src)
	if err != nil {
		return NodeResult{}, fmt.Errorf("params.expression: %w", err)
	}
	values := contextValues(in.Context)
	env := Env{Input: in.Input, Params: in.Params, Context: values, Outputs: outputsIn(values)}
	out, err := x.Eval(env)
	if err != nil {
		return NodeResult{}, fmt.Errorf("params.expression %q: %w", src, err)
	}
	res := NodeResult{Output: out}
	if a, ok := in.Params["action"].(string); ok && a != "" {
		ax, err := cachedExpression(a)
		if err != nil {
			return NodeResult{}, fmt.Errorf("params.action: %w", err)
		}
		env.Result = &NodeResult{Output: out}
		v, err := ax.Eval(env)
		if err != nil {
			return NodeResult{}, fmt.Errorf("params.action %q: %w", a, err)
		}
		switch v := v.(type) {
		case nil:
		case string:
			res.Action = v
		default:
			res.Action = fmt.Sprint(v)
		}
	}
	return res, nil
}

func contextValues(c Context) map[string]any {
	if mc, ok := c.(*MapContext); ok {
		return mc.Snapshot()
	}
	if s, ok := c.(interface{ Snapshot() map[string]any }); ok {
		return s.Snapshot()
	}
	return map[string]any{}
}

// outputsIn collects the node outputs a context holds (_outputs.<id>), so
// a transform node's expressions can read them as outputs.<id>, as edge
// expressions do.
func outputsIn(values map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range values {
		if strings.HasPrefix(k, outputsPrefix) {
			out[strings.TrimPrefix(k, outputsPrefix)] = v
		}
	}
	return out
}

func checkTransformParams(p map[string]any) error {
	src, ok := p["expression"].(string)
	if !ok || src == "" {
		return errors.New("expression: required (an expr expression computing the output)")
	}
	var errs []error
	if _, err := compileExpression(src); err != nil {
		errs = append(errs, fmt.Errorf("expression does not compile: %s", oneLine(err)))
	}
	if a, present := p["action"]; present {
		s, ok := a.(string)
		if !ok {
			errs = append(errs, errors.New("action: must be a string expression"))
		} else if _, err := compileExpression(s); err != nil {
			errs = append(errs, fmt.Errorf("action does not compile: %s", oneLine(err)))
		}
	}
	return errors.Join(errs...)
}

// nodeExpressions are the expressions a node itself evaluates (the
// transform node's params, a loop-controller's condition), for output
// reference analysis.
func (n *CompiledNode) nodeExpressions() []*expression {
	var keys []string
	switch n.Uses {
	case NodeTransform:
		keys = []string{"expression", "action"}
	case NodeLoopController:
		keys = []string{"condition"}
	default:
		return nil
	}
	var out []*expression
	for _, k := range keys {
		if s, ok := n.Params[k].(string); ok {
			if x, err := cachedExpression(s); err == nil {
				out = append(out, x)
			}
		}
	}
	return out
}

// contextReads are the context keys a built-in node reads by name (a
// subflow's params.inputs): a node id among them is that node's output.
func (n *CompiledNode) contextReads() []string {
	if !isSubflow(n.Uses) {
		return nil
	}
	m, _ := n.Params["inputs"].(map[string]any)
	var out []string
	for _, v := range m {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// intParam reads a whole number param (JSON numbers are float64).
func intParam(p map[string]any, key string) (int, bool) {
	f, ok := p[key].(float64)
	if !ok || f != float64(int(f)) {
		return 0, false
	}
	return int(f), true
}

// checkBuiltins checks what built-in nodes' params say about the rest of
// the blueprint (a batch's gather and workers).
func (w *Workflow) checkBuiltins(reg *Registry, add func(path, format string, args ...any)) {
	index := map[string]int{}
	for i, n := range w.Blueprint.Nodes {
		if _, dup := index[n.ID]; !dup {
			index[n.ID] = i
		}
	}
	w.checkBatches(reg, index, add)
	w.checkWebhooks(index, add)
}
