package client

import (
	"context"
	"errors"

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

// CheckSubflows checks, before a run of bp starts, that every blueprint
// its subflows name (and theirs, in turn) can be found where the step
// function finds children: among known (the function's BLUEPRINTS_DIR, as
// the caller knows it) or the stored snapshots. A missing one, or a chain
// of subflows that runs a blueprint inside itself, is an error that
// errors.Is ErrInvalid and errors.As a *workflow.ValidationError naming
// the node's params.blueprintId.
func (c *Client) CheckSubflows(ctx context.Context, bp *workflow.Blueprint, known map[string]*workflow.Blueprint) error {
	set := make(map[string]*workflow.Blueprint, len(known))
	for id, b := range known {
		set[id] = b
	}
	// Look up, breadth first, the children that known lacks.
	queue := []*workflow.Blueprint{bp}
	looked := map[string]bool{bp.ID: true}
	for len(queue) > 0 {
		b := queue[0]
		queue = queue[1:]
		for _, n := range b.Nodes {
			if n.Uses != workflow.NodeSubflow && n.Uses != workflow.NodeSubflowClass {
				continue
			}
			id, _ := n.Params["blueprintId"].(string)
			if id == "" || looked[id] {
				continue
			}
			looked[id] = true
			child := set[id]
			if child == nil {
				stored, err := c.Blueprint(ctx, id)
				if errors.Is(err, ErrBlueprintNotFound) {
					continue // ValidateSubflows names it
				}
				if err != nil {
					return err
				}
				set[id], child = stored, stored
			}
			queue = append(queue, child)
		}
	}
	if err := workflow.ValidateSubflows(bp, set); err != nil {
		return invalid(err)
	}
	return nil
}
