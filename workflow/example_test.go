package workflow_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/stepflow/stepflow/workflow"
)

// ExampleRun runs a blueprint in-process, as a unit test of your own nodes
// would: register the nodes, decode the blueprint, Run it, and check the
// status and the outputs (`_outputs.<id>` in the final context).
func ExampleRun() {
	reg := workflow.NewRegistry().
		Register("charge", func(ctx context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
			order := in.Input.(map[string]any)
			amount := order["amount"].(float64)
			in.Context.Set("charged", amount) // committed only if this attempt succeeds
			if amount > 100 {
				return workflow.NodeResult{Output: map[string]any{"amount": amount}, Action: "review"}, nil
			}
			return workflow.NodeResult{Output: map[string]any{"amount": amount}, Action: "paid"}, nil
		}).
		Register("ship", func(ctx context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
			return workflow.NodeResult{Output: fmt.Sprintf("shipped %v", in.Input)}, nil
		})

	bp, err := workflow.Decode([]byte(`{
	  "id": "order",
	  "nodes": [
	    {"id": "charge", "uses": "charge", "config": {"maxRetries": 3, "retryDelay": 200}},
	    {"id": "ship",   "uses": "ship"},
	    {"id": "review", "uses": "noop"}
	  ],
	  "edges": [
	    {"source": "charge", "target": "ship",   "action": "paid", "transform": "input.amount"},
	    {"source": "charge", "target": "review", "action": "review"}
	  ]}`))
	if err != nil {
		fmt.Println(err)
		return
	}

	res, err := workflow.Run(context.Background(), bp, reg, map[string]any{"amount": 42}, workflow.RunOptions{})
	if err != nil { // only an invalid blueprint gets here; node failures are a failed status
		fmt.Println(err)
		return
	}
	fmt.Println("status:", res.Status)
	fmt.Println("output:", res.Output)
	fmt.Println("charged:", res.Context["charged"])
	fmt.Println("_outputs.charge:", res.Context[workflow.OutputKey("charge")])
	var steps []string
	for _, s := range res.Steps {
		steps = append(steps, s.NodeID+"="+string(s.State))
	}
	fmt.Println("steps:", strings.Join(steps, " "))
	// Output:
	// status: completed
	// output: shipped 42
	// charged: 42
	// _outputs.charge: map[amount:42]
	// steps: charge=succeeded ship=succeeded review=skipped
}
