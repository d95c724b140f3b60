package workflow

import (
	"fmt"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
)

// Env is what an expression (edge condition or transform, transform node)
// can read:
//
//	result   the source node's result: {"output": …, "action": …}
//	input    the value coming in: for an edge, the source's output; for a
//	         transform node, the node's input
//	context  the run's context (user keys, and _outputs.<id> for the node
//	         outputs the expression names)
//	params   the source node's params (edge) or the node's own (transform)
//	outputs  node outputs by node id: outputs.charge, outputs["b-1"]
type Env struct {
	Result  *NodeResult
	Input   any
	Context map[string]any
	Params  map[string]any
	Outputs map[string]any
}

// exprEnv is the typed shape expressions compile and run against; its
// interface-typed fields keep member access dynamic.
type exprEnv struct {
	Result  any            `expr:"result"`
	Input   any            `expr:"input"`
	Context map[string]any `expr:"context"`
	Params  map[string]any `expr:"params"`
	Outputs map[string]any `expr:"outputs"`
}

func (e Env) vars() exprEnv {
	var result any
	if e.Result != nil {
		result = map[string]any{"output": e.Result.Output, "action": e.Result.Action}
	}
	ctx := e.Context
	if len(e.Outputs) > 0 {
		ctx = make(map[string]any, len(e.Context)+len(e.Outputs))
		for k, v := range e.Context {
			ctx[k] = v
		}
		for id, v := range e.Outputs {
			ctx[OutputKey(id)] = v
		}
	}
	if ctx == nil {
		ctx = map[string]any{}
	}
	params := e.Params
	if params == nil {
		params = map[string]any{}
	}
	outputs := e.Outputs
	if outputs == nil {
		outputs = map[string]any{}
	}
	return exprEnv{Result: result, Input: e.Input, Context: ctx, Params: params, Outputs: outputs}
}

// expression is a compiled condition or transform.
type expression struct {
	Source  string
	program *vm.Program
	// Refs are the node ids whose outputs the expression names statically
	// (outputs.x, outputs["x"], context["_outputs.x"]); AllOutputs is set
	// when it reads outputs or context dynamically.
	Refs       []string
	AllOutputs bool
}

// compileExpression compiles src against the expression environment.
func compileExpression(src string) (*expression, error) {
	program, err := expr.Compile(src, expr.Env(exprEnv{}))
	if err != nil {
		return nil, err
	}
	x := &expression{Source: src, program: program}
	x.Refs, x.AllOutputs = outputRefs(program.Node())
	return x, nil
}

// Eval runs the expression.
func (x *expression) Eval(env Env) (any, error) {
	out, err := expr.Run(x.program, env.vars())
	if err != nil {
		return nil, err
	}
	return normalize(out), nil
}

// EvalBool runs a condition; a non-boolean result is an error.
func (x *expression) EvalBool(env Env) (bool, error) {
	out, err := expr.Run(x.program, env.vars())
	if err != nil {
		return false, err
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("condition %q returned %T, not a boolean", x.Source, out)
	}
	return b, nil
}

type refVisitor struct {
	refs    map[string]bool
	all     bool
	claimed map[ast.Node]bool
}

func (v *refVisitor) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.MemberNode:
		id, ok := n.Node.(*ast.IdentifierNode)
		if !ok {
			return
		}
		prop, isStr := n.Property.(*ast.StringNode)
		switch id.Value {
		case "outputs":
			v.claimed[id] = true
			if isStr {
				v.refs[prop.Value] = true
			} else {
				v.all = true
			}
		case "context":
			v.claimed[id] = true
			if !isStr {
				v.all = true
			} else if len(prop.Value) > len(outputsPrefix) && prop.Value[:len(outputsPrefix)] == outputsPrefix {
				v.refs[prop.Value[len(outputsPrefix):]] = true
			}
		}
	case *ast.IdentifierNode:
		// A bare `outputs` or `context` (passed whole to a builtin, say) is
		// a dynamic read. Whether it is bare is known only once its member
		// access, if any, has claimed it, and ast.Walk visits children
		// before their parent: a second walk decides (see outputRefs).
	}
}

func outputRefs(root ast.Node) ([]string, bool) {
	v := &refVisitor{refs: map[string]bool{}, claimed: map[ast.Node]bool{}}
	ast.Walk(&root, v)
	// Any identifier outputs/context that no member access claimed is a
	// dynamic use.
	bare := &bareVisitor{claimed: v.claimed}
	ast.Walk(&root, bare)
	refs := make([]string, 0, len(v.refs))
	for r := range v.refs {
		refs = append(refs, r)
	}
	sortStrings(refs)
	return refs, v.all || bare.found
}

type bareVisitor struct {
	claimed map[ast.Node]bool
	found   bool
}

func (b *bareVisitor) Visit(node *ast.Node) {
	if id, ok := (*node).(*ast.IdentifierNode); ok && (id.Value == "outputs" || id.Value == "context") && !b.claimed[id] {
		b.found = true
	}
}
