package workflow

import (
	"strings"
	"testing"
)

func TestExpressions(t *testing.T) {
	t.Parallel()
	env := Env{
		Context: map[string]any{"age": 20.0, "member": true, "count": 3.0, "input": "context's input", "len": 2.0},
		Outputs: map[string]any{"start": 1.0, "increment": 4.0},
		Input:   "edge input",
		Result:  &NodeResult{Output: 12.0, Action: "go"},
	}
	tests := []struct {
		src     string
		want    any
		wantErr string
	}{
		{src: "age >= 18", want: true},
		{src: "member && age >= 18", want: true},
		{src: "count < 5", want: true},                       // count is expr's builtin too: here a context key
		{src: "len + 1", want: 3.0},                          // so is len
		{src: "count([1, 2, 3], # > 1) + len([1])", want: 3}, // builtins still callable
		{src: "context.start === 1", want: true},
		{src: `context["_outputs.start"] === start`, want: true},
		{src: "increment !== 4", want: false},
		{src: `"a===b" == 'a===b'`, want: true}, // string literals are left alone
		{src: "input", want: "edge input"},      // stepflow's names win over context keys
		{src: "result.output > age", want: false},
		{src: "missing == nil", want: true},
		{src: "missing > 0", wantErr: "invalid operation"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			x, err := compileExpression(tt.src)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			got, err := x.Eval(env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Eval = %v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !equal(got, normalize(tt.want)) {
				t.Errorf("Eval = %#v, %v; want %#v", got, err, tt.want)
			}
		})
	}
}

func TestConditionTruth(t *testing.T) {
	t.Parallel()
	env := Env{Context: map[string]any{"yes": true, "n": 3.0}}
	tests := []struct {
		src     string
		want    bool
		wantErr bool
	}{
		{src: "yes", want: true},
		{src: "missing", want: false}, // undefined in Flowcraft: not taken
		{src: "context.missing"},      // nil too
		{src: "n", wantErr: true},     // a number is not a condition
	}
	for _, tt := range tests {
		x, err := compileExpression(tt.src)
		if err != nil {
			t.Fatalf("%s: compile: %v", tt.src, err)
		}
		got, err := x.EvalBool(env)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%s: EvalBool = %v, %v; want %v (error %v)", tt.src, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestExpressionNames(t *testing.T) {
	t.Parallel()
	x, err := compileExpression(`age >= 18 && context.start > outputs.x && context["_outputs.y"] != nil && result.output`)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(x.Names, []string{"age", "start"}) || !equal(x.Refs, []string{"x", "y"}) || x.AllOutputs {
		t.Errorf("Names %v Refs %v AllOutputs %v; want [age start] [x y] false", x.Names, x.Refs, x.AllOutputs)
	}
}
