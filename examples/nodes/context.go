package nodes

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/stepflow/stepflow/workflow"
)

// setContext writes each key of params.values into the run's context and
// passes its input through.
func setContext(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
	values, err := contextValues(in.Params)
	if err != nil {
		return workflow.NodeResult{}, fmt.Errorf("set-context: params.%w", err)
	}
	if in.Context == nil {
		return workflow.NodeResult{}, errors.New("set-context: the runtime gave the node no run context")
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		in.Context.Set(k, values[k])
	}
	return workflow.NodeResult{Output: in.Input}, nil
}

// reservedPrefixes are the context keys the runtime writes itself; a node
// that overwrote them would change other nodes' recorded inputs and
// outputs.
var reservedPrefixes = []string{workflow.OutputKey(""), workflow.InputKey("")}

func contextValues(p map[string]any) (map[string]any, error) {
	v, ok := p["values"]
	if !ok || v == nil {
		return nil, errors.New("values: required, an object of context keys to set")
	}
	values, ok := object(v)
	if !ok {
		return nil, fmt.Errorf("values: must be an object, got %s", show(v))
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" {
			return nil, errors.New("values: a key must not be empty")
		}
		for _, prefix := range reservedPrefixes {
			if strings.HasPrefix(k, prefix) {
				return nil, fmt.Errorf("values.%s: keys starting with %q are the runtime's", k, prefix)
			}
		}
	}
	return values, nil
}

func checkSetContextParams(p map[string]any) error {
	_, err := contextValues(p)
	return err
}
