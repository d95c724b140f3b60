package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/workflow"
)

// Resumed is what a resume did.
type Resumed struct {
	RunID string `json:"runId"`
	// Node is the step resumed (for a webhook, its wait step).
	Node string `json:"node"`
	// Status is the run's status afterwards: running, awaiting (what
	// follows awaits too) or completed (the wait node was the last).
	Status workflow.RunStatus `json:"status"`
	// Ready are the steps the resume made ready, whose jobs it published.
	Ready []string `json:"ready,omitempty"`
	// Child, for a resume of a subflow step whose child run awaits, is the
	// resume of the child's awaiting step it was forwarded to (itself
	// forwarded on when that step is a subflow's awaiting a grandchild).
	Child *Resumed `json:"child,omitempty"`
}

// Resume resumes a run at an awaiting step (a wait node's, named by
// r.Node): r.Output becomes the step's output and r.Action routes its
// edges like any node's action. In one transaction it records that
// result, makes ready what it leads to and sets the run running; then it
// publishes the ready steps' jobs.
//
// A subflow step whose child run awaits (the parent run then awaits too)
// is resumed by forwarding: the child's one awaiting step is resumed with
// r.Output and r.Action (and on down, when that step is a subflow's whose
// own child awaits), the child goes on, and its end continues the parent.
// The answer is the parent's, with the child's resume in Child. A child
// with several awaiting steps gets ErrNotAwaiting naming them (resume the
// child run by id); a child that does not await, ErrNotAwaiting too.
//
// Exactly once: of two resumes of one step (or racing ones), one wins and
// the other gets ErrNotAwaiting, changing nothing. A run that does not
// exist gets ErrRunNotFound; a node the run's blueprint has not, or an
// output its edges cannot route, ErrInvalid. Should a job not reach
// RabbitMQ after the commit, the resume stands (the run is running with
// the job's step ready) and the error says so: the reconciler republishes
// the job once the run counts as stalled.
func (c *Client) Resume(ctx context.Context, runID string, r workflow.Resume) (*Resumed, error) {
	if r.Node == "" {
		return nil, invalid(errors.New("resume: node is required (the awaiting wait node)"))
	}
	child, err := c.forward(ctx, runID, r.Node)
	if err != nil || child == nil {
		if err != nil {
			return nil, err
		}
		return c.resume(ctx, store.ResumeRequest{RunID: runID, Resume: r})
	}
	cr := r
	cr.Node = child.Awaiting[0]
	done, err := c.Resume(ctx, child.RunID, cr)
	if done == nil {
		return nil, err
	}
	// The child's resume set the parent's status in its transaction.
	res := &Resumed{RunID: runID, Node: r.Node, Child: done}
	run, rerr := c.store.GetRun(ctx, runID)
	if rerr != nil {
		return res, errors.Join(err, fmt.Errorf("run %s is resumed through its child run %s, but its status was not read: %w", runID, done.RunID, rerr))
	}
	res.Status = run.Status
	return res, err
}

// forward returns the child run a resume of step node of runID goes to
// when the step awaits a child run that awaits at exactly one step; nil
// when the step does not await a child (the resume is the run's own).
func (c *Client) forward(ctx context.Context, runID, node string) (*store.AwaitedChild, error) {
	child, err := c.store.AwaitedChildOf(ctx, runID, node)
	if err != nil || child == nil {
		return nil, err
	}
	notAwaiting := func(format string, args ...any) error {
		return &sentinelError{err: fmt.Errorf("resume run %s at %s: step %s runs child run %s, which "+format, append([]any{runID, node, node, child.RunID}, args...)...), is: ErrNotAwaiting}
	}
	switch {
	case !child.Found:
		return nil, notAwaiting("does not exist")
	case child.Status != workflow.RunAwaiting:
		return nil, notAwaiting("is %s: it does not await a resume", child.Status)
	case len(child.Awaiting) == 0:
		return nil, notAwaiting("has no awaiting step")
	case len(child.Awaiting) > 1:
		return nil, notAwaiting("awaits at %d steps (%s): resume the child run by id at one of them (stepflow resume %s --node %s)",
			len(child.Awaiting), strings.Join(child.Awaiting, ", "), child.RunID, child.Awaiting[0])
	}
	return child, nil
}

// ResumeWebhook resumes a run as a request to the endpoint of its webhook
// step does (POST /webhooks/<run>/<step>/<token>): with output (the
// request's JSON body) and action at the wait node that follows the
// webhook. The token must be the endpoint's, and the endpoint unused
// (ErrWebhookNotFound, ErrWebhookUsed otherwise); when the wait node does
// not await yet, ErrNotAwaiting (the sender may try again). It then
// resumes as Resume does, and uses the endpoint up in the same
// transaction.
func (c *Client) ResumeWebhook(ctx context.Context, runID, step, token string, output any, action string) (*Resumed, error) {
	res, err := c.resume(ctx, store.ResumeRequest{RunID: runID, Webhook: step, Token: token, Resume: workflow.Resume{Output: output, Action: action}})
	if errors.Is(err, ErrRunNotFound) {
		// A webhook's URL does not tell which of its parts is wrong.
		return nil, &sentinelError{err: fmt.Errorf("run %s, webhook %s: %w", runID, step, store.ErrWebhookNotFound), is: ErrWebhookNotFound}
	}
	return res, err
}

func (c *Client) resume(ctx context.Context, req store.ResumeRequest) (*Resumed, error) {
	run, err := c.store.GetRun(ctx, req.RunID)
	if err != nil {
		return nil, ownError(err)
	}
	if run.Digest == "" {
		return nil, &sentinelError{err: fmt.Errorf("run %s has not run a step yet: it does not await a resume", req.RunID), is: ErrNotAwaiting}
	}
	w, err := c.workflow(ctx, run.Digest)
	if err != nil {
		return nil, err
	}
	done, err := c.store.Resume(ctx, w, req)
	if err != nil {
		return nil, ownError(err)
	}
	res := &Resumed{RunID: req.RunID, Node: done.Node, Status: done.RunStatus, Ready: done.Ready}
	for _, id := range done.Ready {
		job := jobqueue.NewJob(req.RunID, run.BlueprintID, w.StepNode(id), id, 1)
		if err := c.pub.Publish(ctx, job, 0); err != nil {
			return res, fmt.Errorf("run %s is resumed at %s but the job of %s was not published (the reconciler will republish it): %w", req.RunID, done.Node, id, err)
		}
	}
	if k := done.Continue; k != nil {
		// Subflows: the resume ended a child run, which continues its parent.
		job := jobqueue.NewJob(k.RunID, k.BlueprintID, k.Node, k.NodeID, k.Attempt)
		if err := c.pub.Publish(ctx, job, 0); err != nil {
			return res, fmt.Errorf("run %s is resumed at %s and finished, but the continuation of its parent run %s was not published (the reconciler will republish it): %w", req.RunID, done.Node, k.RunID, err)
		}
	}
	return res, nil
}

// workflow compiles the blueprint snapshot digest, once per client.
func (c *Client) workflow(ctx context.Context, digest string) (*workflow.Workflow, error) {
	if w, ok := c.compiled.Load(digest); ok {
		return w.(*workflow.Workflow), nil
	}
	bp, err := c.store.LoadBlueprint(ctx, digest)
	if err != nil {
		return nil, ownError(err)
	}
	w, err := workflow.Compile(bp, nil)
	if err != nil {
		return nil, fmt.Errorf("blueprint %s (%s): %w", bp.ID, digest, err)
	}
	c.compiled.Store(digest, w)
	return w, nil
}
