package client

import (
	"context"

	"github.com/stepflow/stepflow/workflow"
)

// links reads the runs related to runID by subflows: the run whose step
// started it (nil for a run that is no child) and the child runs its own
// steps started, oldest first.
func (c *Client) links(ctx context.Context, runID string) (*workflow.RunLink, []workflow.RunLink, error) {
	p, err := c.store.Parent(ctx, runID)
	if err != nil {
		return nil, nil, err
	}
	var parent *workflow.RunLink
	if p != nil {
		parent = &workflow.RunLink{RunID: p.RunID, BlueprintID: p.BlueprintID, Step: p.Step, Status: p.Status}
	}
	kids, err := c.store.Children(ctx, runID)
	if err != nil {
		return nil, nil, err
	}
	var children []workflow.RunLink
	for _, k := range kids {
		children = append(children, workflow.RunLink{RunID: k.RunID, BlueprintID: k.BlueprintID, Step: k.Step, Status: k.Status})
	}
	return parent, children, nil
}
