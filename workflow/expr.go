package workflow

import (
	"fmt"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	exprbuiltin "github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// Env is what an expression (edge condition or transform, transform node,
// loop condition) can read:
//
//	result   the source node's result: {"output": …, "action": …}
//	input    the value coming in: for an edge, the source's output; for a
//	         transform node, the node's input
//	context  the run's context (user keys, and _outputs.<id> and the bare
//	         key <id> for the node outputs the expression names)
//	params   the source node's params (edge) or the node's own (transform)
//	outputs  node outputs by node id: outputs.charge, outputs["b-1"]
//
// Every context key is also a name of its own, as in Flowcraft: `age >= 18`
// reads the context key age, `increment < 5` the output of node increment.
// The five names above win over context keys spelled the same.
type Env struct {
	Result  *NodeResult
	Input   any
	Context map[string]any
	Params  map[string]any
	Outputs map[string]any
}

// reservedNames are the names Env always binds.
var reservedNames = map[string]bool{"result": true, "input": true, "context": true, "params": true, "outputs": true}

// vars is the variable map an expression runs against: the context keys
// bare, then the reserved names.
func (e Env) vars() map[string]any {
	var result any
	if e.Result != nil {
		result = map[string]any{"output": e.Result.Output, "action": e.Result.Action}
	}
	ctx := e.Context
	if len(e.Outputs) > 0 {
		ctx = make(map[string]any, len(e.Context)+2*len(e.Outputs))
		for k, v := range e.Context {
			ctx[k] = v
		}
		for id, v := range e.Outputs {
			ctx[OutputKey(id)] = v
			ctx[id] = v // a node's output is also the bare key <id>
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
	vars := make(map[string]any, len(ctx)+len(reservedNames))
	for k, v := range ctx {
		vars[k] = v
	}
	vars["result"], vars["input"], vars["context"], vars["params"], vars["outputs"] = result, e.Input, ctx, params, outputs
	return vars
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
	// Names are the context keys it names: bare names (`age`) and
	// context.x / context["x"]. A workflow counts those that are node ids
	// as output references too.
	Names []string
}

// compileExpression compiles src. Names that are not bound are context
// keys, read at run time (a missing one is nil), so only syntax errors
// and type errors among literals fail here. JavaScript's === and !== mean
// == and != (Flowcraft blueprints are written in JavaScript's syntax).
func compileExpression(src string) (*expression, error) {
	code := jsEquality(src)
	tree, err := parser.Parse(code)
	if err != nil {
		return nil, err
	}
	opts := []expr.Option{expr.Env(map[string]any{}), expr.AllowUndefinedVariables()}
	v := &refVisitor{refs: map[string]bool{}, names: map[string]bool{}, claimed: map[ast.Node]bool{}}
	ast.Walk(&tree.Node, v)
	for name := range v.names {
		// A bare name that is also one of expr's builtins (count, len, …) is
		// a context key here, as in Flowcraft's `count < 5`; builtins
		// called as functions keep working.
		if _, isBuiltin := exprbuiltin.Index[name]; isBuiltin {
			opts = append(opts, expr.DisableBuiltin(name))
		}
	}
	program, err := expr.Compile(code, opts...)
	if err != nil {
		return nil, err
	}
	x := &expression{Source: src, program: program}
	x.Refs, x.AllOutputs, x.Names = v.result(tree.Node)
	return x, nil
}

// jsEquality rewrites === and !== outside string literals to == and !=.
func jsEquality(src string) string {
	if !strings.Contains(src, "==") {
		return src
	}
	var b strings.Builder
	var quote byte
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case quote != 0:
			if c == '\\' && i+1 < len(src) {
				b.WriteByte(c)
				i++
				c = src[i]
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case (c == '=' || c == '!') && strings.HasPrefix(src[i+1:], "=="):
			b.WriteByte(c)
			b.WriteByte('=')
			i += 2
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Eval runs the expression.
func (x *expression) Eval(env Env) (any, error) { return x.evalVars(env.vars()) }

// EvalBool runs a condition. A missing value (nil) counts as false, as an
// undefined one does in Flowcraft; any other non-boolean is an error.
func (x *expression) EvalBool(env Env) (bool, error) { return x.evalBoolVars(env.vars()) }

// evalVars and evalBoolVars run against vars (Env.vars), for callers that
// evaluate several expressions in one environment.
func (x *expression) evalVars(vars map[string]any) (any, error) {
	out, err := expr.Run(x.program, vars)
	if err != nil {
		return nil, err
	}
	return normalize(out), nil
}

func (x *expression) evalBoolVars(vars map[string]any) (bool, error) {
	out, err := expr.Run(x.program, vars)
	if err != nil {
		return false, err
	}
	switch b := out.(type) {
	case bool:
		return b, nil
	case nil:
		return false, nil
	}
	return false, fmt.Errorf("condition %q returned %T, not a boolean", x.Source, out)
}

type refVisitor struct {
	refs    map[string]bool
	names   map[string]bool
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
			switch {
			case !isStr:
				v.all = true
			case strings.HasPrefix(prop.Value, outputsPrefix) && len(prop.Value) > len(outputsPrefix):
				v.refs[prop.Value[len(outputsPrefix):]] = true
			default:
				v.names[prop.Value] = true
			}
		}
	case *ast.IdentifierNode:
		// A bare `outputs` or `context` (passed whole to a builtin, say) is
		// a dynamic read. Whether it is bare is known only once its member
		// access, if any, has claimed it, and ast.Walk visits children
		// before their parent: a second walk decides (see result).
		if !reservedNames[n.Value] {
			v.names[n.Value] = true
		}
	}
}

// result finishes the analysis: any identifier outputs/context that no
// member access claimed is a dynamic use.
func (v *refVisitor) result(root ast.Node) (refs []string, all bool, names []string) {
	bare := &bareVisitor{claimed: v.claimed}
	ast.Walk(&root, bare)
	for r := range v.refs {
		refs = append(refs, r)
	}
	for n := range v.names {
		names = append(names, n)
	}
	sortStrings(refs)
	sortStrings(names)
	return refs, v.all || bare.found, names
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
