package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
)

// Channel returns the client's confirm-mode RabbitMQ channel, dialling if
// needed.
func (c *Client) Channel() (*amqp.Channel, error) { return c.channel() }

// DeadLetters lists recorded dead letters (see reconciler.IngestDeadLetters).
func (c *Client) DeadLetters(ctx context.Context, f store.DeadLetterFilter) ([]store.DeadLetter, error) {
	return c.store.DeadLetters(ctx, f)
}

// Replayed reports what a replay did.
type Replayed struct {
	Runs       []string `json:"runs"`                 // runs set running again and re-driven
	Jobs       int      `json:"jobs"`                 // jobs published
	Unplayable []string `json:"unplayable,omitempty"` // dead letters that are not jobs (garbage bodies), by id
}

// ReplayDeadLetters re-drives the recorded dead letters of runID (every
// run when runID is ""): a run failed by a dead letter is set running
// again and its frontier — the dead-lettered job and every pending step —
// is published, so it resumes from the step that failed.
func (c *Client) ReplayDeadLetters(ctx context.Context, runID string) (Replayed, error) {
	var out Replayed
	dls, err := c.store.DeadLetters(ctx, store.DeadLetterFilter{RunID: runID})
	if err != nil {
		return out, err
	}
	byRun := map[string][]store.DeadLetter{}
	var order []string
	for _, dl := range dls {
		var job jobqueue.Job
		if dl.RunID == "" || json.Unmarshal(dl.Body, &job) != nil || job.Validate() != nil {
			out.Unplayable = append(out.Unplayable, dl.DeadLetterID)
			continue
		}
		if _, ok := byRun[dl.RunID]; !ok {
			order = append(order, dl.RunID)
		}
		byRun[dl.RunID] = append(byRun[dl.RunID], dl)
	}
	for _, run := range order {
		ids := make([]int64, 0, len(byRun[run]))
		for _, dl := range byRun[run] {
			ids = append(ids, dl.ID)
		}
		running, err := c.store.ReviveRun(ctx, run, ids)
		if err != nil {
			return out, err
		}
		if !running {
			continue // finished or cancelled meanwhile: nothing to re-drive
		}
		out.Runs = append(out.Runs, run)
		n, err := c.redrive(ctx, run, byRun[run])
		out.Jobs += n
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (c *Client) redrive(ctx context.Context, runID string, dls []store.DeadLetter) (int, error) {
	run, err := c.store.GetRun(ctx, runID)
	if err != nil {
		return 0, err
	}
	pending, err := c.store.PendingSteps(ctx, nil, runID)
	if err != nil {
		return 0, err
	}
	sent := map[string]bool{}
	n := 0
	now := time.Now()
	for _, p := range pending {
		job := jobqueue.Job{RunID: runID, BlueprintID: run.BlueprintID, NodeID: p.NodeID, Attempt: p.Attempts + 1}
		var delay time.Duration
		if p.WakeAt != nil {
			delay = max(0, p.WakeAt.Sub(now))
		}
		if err := c.Publish(ctx, job, delay); err != nil {
			return n, fmt.Errorf("replay %s: %w", job.ID(), err)
		}
		sent[p.NodeID] = true
		n++
	}
	for _, dl := range dls {
		var job jobqueue.Job
		_ = json.Unmarshal(dl.Body, &job)
		if sent[job.NodeID] {
			continue
		}
		if err := c.Publish(ctx, job, 0); err != nil {
			return n, fmt.Errorf("replay %s: %w", job.ID(), err)
		}
		sent[job.NodeID] = true
		n++
	}
	return n, nil
}
