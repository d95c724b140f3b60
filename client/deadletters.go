package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/store"
)

// DeadLetter is a job the bridge dead-lettered, as the reconciler recorded
// it (reconciler.IngestDeadLetters). Its JSON is what `stepflow dlq list
// --json` prints.
type DeadLetter struct {
	ID           int64          `json:"id"`                  // the record's id, in recording order
	DeadLetterID string         `json:"deadLetterId"`        // the bridge's id of the dead-lettering
	MessageID    string         `json:"messageId,omitempty"` // the AMQP message id (a job's "runId:nodeId:attempt")
	RunID        string         `json:"runId,omitempty"`     // "" when the body names no run
	NodeID       string         `json:"nodeId,omitempty"`
	BlueprintID  string         `json:"blueprintId,omitempty"`
	Body         []byte         `json:"-"` // the message body as it was dead-lettered
	Headers      map[string]any `json:"headers,omitempty"`
	Code         string         `json:"errorCode"` // the function's HTTP status, or timeout, connection, bad-reply
	Reason       string         `json:"errorReason"`
	Attempts     int            `json:"attempts"`   // transport attempts the bridge made
	JobAttempt   int            `json:"jobAttempt"` // the job's node attempt; 0 for a body that is no job
	FirstFailure *time.Time     `json:"firstFailure,omitempty"`
	At           time.Time      `json:"deadLetteredAt"`
	ReplayedAt   *time.Time     `json:"replayedAt,omitempty"` // nil until ReplayDeadLetters re-drives it
}

// DeadLetterFilter selects dead letters.
type DeadLetterFilter struct {
	RunID    string // "" for every run
	Replayed bool   // include the ones already replayed
	Limit    int    // at most this many, oldest first; 0: 1000
	AfterID  int64  // only those recorded after the one with this ID: the next page
}

// DeadLetters lists recorded dead letters, oldest first (see
// reconciler.IngestDeadLetters).
func (c *Client) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	dls, err := c.store.DeadLetters(ctx, store.DeadLetterFilter{RunID: f.RunID, Replayed: f.Replayed, Limit: f.Limit, AfterID: f.AfterID})
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(dls))
	for _, dl := range dls {
		out = append(out, DeadLetter{
			ID: dl.ID, DeadLetterID: dl.DeadLetterID, MessageID: dl.MessageID,
			RunID: dl.RunID, NodeID: dl.NodeID, BlueprintID: dl.BlueprintID,
			Body: dl.Body, Headers: dl.Headers, Code: dl.Code, Reason: dl.Reason,
			Attempts: dl.Attempts, JobAttempt: dl.JobAttempt, FirstFailure: dl.FirstFailure,
			At: dl.At, ReplayedAt: dl.ReplayedAt,
		})
	}
	return out, nil
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
		job := jobqueue.NewJob(runID, run.BlueprintID, p.Node, p.NodeID, p.Attempts+1)
		var delay time.Duration
		if p.WakeAt != nil {
			delay = max(0, p.WakeAt.Sub(now))
		}
		if err := c.pub.Publish(ctx, job, delay); err != nil {
			return n, fmt.Errorf("replay %s: %w", job.ID(), err)
		}
		sent[p.NodeID] = true
		n++
	}
	for _, dl := range dls {
		var job jobqueue.Job
		_ = json.Unmarshal(dl.Body, &job)
		if sent[job.Key()] {
			continue
		}
		if err := c.pub.Publish(ctx, job, 0); err != nil {
			return n, fmt.Errorf("replay %s: %w", job.ID(), err)
		}
		sent[job.Key()] = true
		n++
	}
	return n, nil
}
