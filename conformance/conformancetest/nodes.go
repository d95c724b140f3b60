package conformancetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/stepflow/stepflow/workflow"
)

// Nodes are the Go mirrors of the corpus's test nodes
// (conformance/README.md, "Test nodes"), with JavaScript's arithmetic on
// the values the cases give them. A nil input is JavaScript's undefined.
var Nodes = map[string]workflow.NodeFunc{
	"const": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: in.Params["value"]}, nil
	},
	"echo": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: in.Input}, nil
	},
	"double": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: jsNumber(toNumber(in.Input) * 2)}, nil
	},
	"add-one": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		if s, ok := in.Input.(string); ok {
			return workflow.NodeResult{Output: s + "1"}, nil
		}
		return workflow.NodeResult{Output: jsNumber(toNumber(in.Input) + 1)}, nil
	},
	"to-upper": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: strings.ToUpper(jsString(in.Input))}, nil
	},
	"inspect": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: map[string]any{"hasInput": in.Input != nil, "input": in.Input}}, nil
	},
	"get": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		key, _ := in.Params["key"].(string)
		v, _ := in.Context.Get(key)
		return workflow.NodeResult{Output: v}, nil
	},
	"set": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		key, _ := in.Params["key"].(string)
		in.Context.Set(key, in.Params["value"])
		return workflow.NodeResult{Output: in.Input}, nil
	},
	"increment": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		key, _ := in.Params["key"].(string)
		if key == "" {
			key = "count"
		}
		v, _ := in.Context.Get(key)
		next := toNumber(orZero(v)) + 1
		in.Context.Set(key, next)
		return workflow.NodeResult{Output: next}, nil
	},
	"emit-action": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		action, _ := in.Params["action"].(string)
		return workflow.NodeResult{Output: in.Input, Action: action}, nil
	},
	"sum": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		xs, ok := in.Input.([]any)
		if !ok {
			return workflow.NodeResult{}, fmt.Errorf("input.reduce is not a function")
		}
		total := 0.0
		for _, x := range xs {
			total += toNumber(x)
		}
		return workflow.NodeResult{Output: jsNumber(total)}, nil
	},
	"delay-echo": func(ctx context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		m, _ := in.Input.(map[string]any)
		t := time.NewTimer(time.Duration(toNumber(m["ms"]) * float64(time.Millisecond)))
		defer t.Stop()
		select {
		case <-t.C:
			return workflow.NodeResult{Output: m["value"]}, nil
		case <-ctx.Done():
			return workflow.NodeResult{}, ctx.Err()
		}
	},
	"fail-always": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		msg, ok := in.Params["message"].(string)
		if !ok {
			msg = "fail-always failed"
		}
		return workflow.NodeResult{}, errors.New(msg)
	},
	"fail-then-succeed": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		failures := 1.0
		if f, ok := in.Params["failures"].(float64); ok {
			failures = f
		}
		if float64(in.Attempt) <= failures {
			return workflow.NodeResult{}, fmt.Errorf("attempt %d failed", in.Attempt)
		}
		return workflow.NodeResult{Output: map[string]any{"attempts": in.Attempt}}, nil
	},
	"set-then-fail": func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		key, _ := in.Params["key"].(string)
		in.Context.Set(key, in.Params["value"])
		return workflow.NodeResult{}, errors.New("set-then-fail failed")
	},
	// The implementation Flowcraft's builder registers for an object given
	// as a node (subflow-docs-object-form): calling it throws.
	"not-a-function": func(context.Context, workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{}, errors.New("this.implementation is not a function")
	},
}

// toNumber is JavaScript's Number(v) for JSON values.
func toNumber(v any) float64 {
	switch v := v.(type) {
	case float64:
		return v
	case bool:
		if v {
			return 1
		}
		return 0
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return math.NaN()
		}
		return f
	case nil:
		return math.NaN() // undefined
	}
	return math.NaN()
}

// jsNumber is how JSON carries a number: NaN becomes null.
func jsNumber(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return f
}

// jsString is JavaScript's String(v) for the values the cases use.
func jsString(v any) string {
	switch v := v.(type) {
	case nil:
		return "undefined"
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

func orZero(v any) any {
	if v == nil {
		return 0.0
	}
	return v
}
